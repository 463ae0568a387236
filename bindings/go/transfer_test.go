package kvbits

import (
	"bytes"
	"errors"
	"testing"
)

// cut returns heads [begin, end) of rows [n][heads][d].
func cut(x []float32, n, heads, begin, end, d int) []float32 {
	var out []float32
	for t := 0; t < n; t++ {
		out = append(out, x[(t*heads+begin)*d:(t*heads+end)*d]...)
	}
	return out
}

func TestHeadRangeAndTransfer(t *testing.T) {
	ctx := newTestContext(t)
	shape := testShape() // 4 query heads over 2 KV heads, head_dim 16
	plan := calibratedPlan(t, ctx, shape, nil)
	full := newTestCache(t, ctx, plan, nil)
	part := newTestCache(t, ctx, plan, func(p *CacheParams) { p.KVHeadBegin, p.KVHeadEnd = 1, 2 })
	if b, e := part.KVHeads(); b != 1 || e != 2 || part.NKVHeads() != 1 || part.NQHeads() != 2 {
		t.Fatalf("range cache: heads [%d, %d), %d KV, %d query", b, e, part.NKVHeads(), part.NQHeads())
	}
	if b, e := full.KVHeads(); b != 0 || e != 2 || full.NQHeads() != 4 {
		t.Fatalf("full cache: heads [%d, %d)", b, e)
	}
	a, _ := full.AddSequence()
	if s, _ := part.AddSequence(); s != a {
		t.Fatalf("ids differ: %d %d", a, s)
	}
	seed := uint32(5)
	const n, d = 21, 16
	for layer := uint32(0); layer < 2; layer++ {
		k, v := filled(n*2*d, d, &seed), filled(n*2*d, d, &seed)
		must(t, "Append", full.Append(layer, []uint64{a}, []uint32{n}, k, v))
		must(t, "Append", part.Append(layer, []uint64{a}, []uint32{n}, cut(k, n, 2, 1, 2, d), cut(v, n, 2, 1, 2, d)))
	}
	q := filled(4*d, d, &seed)
	fo, fl := make([]float32, 4*d), make([]float32, 4)
	po, pl := make([]float32, 2*d), make([]float32, 2)
	must(t, "Decode", full.Decode(1, []uint64{a}, q, fo, fl, nil))
	must(t, "Decode", part.Decode(1, []uint64{a}, q[2*d:], po, pl, nil))
	for i := range po {
		if po[i] != fo[2*d+i] {
			t.Fatalf("decode out[%d] = %v, full cache %v", i, po[i], fo[2*d+i])
		}
	}
	if pl[0] != fl[2] || pl[1] != fl[3] {
		t.Fatalf("decode lse %v, full cache %v", pl, fl[2:])
	}

	data, err := part.ExportSequence(a)
	must(t, "ExportSequence", err)
	if size, _ := part.ExportSize(a); size != len(data) || !bytes.HasPrefix(data, []byte("KVBSEQ")) {
		t.Fatalf("export of %d bytes, ExportSize %d", len(data), size)
	}
	twin := newTestCache(t, ctx, plan, func(p *CacheParams) { p.KVHeadBegin, p.KVHeadEnd = 1, 2 })
	id, err := twin.ImportSequence(data)
	must(t, "ImportSequence", err)
	again, _ := twin.ExportSequence(id)
	if !bytes.Equal(again, data) {
		t.Fatal("re-export differs")
	}
	if _, err := full.ImportSequence(data); !errors.Is(err, ErrShapeMismatch) {
		t.Fatalf("import into another range: %v", err)
	}
	before, _ := twin.Stats()
	bad := append([]byte(nil), data...)
	bad[len(bad)-1] ^= 1
	for _, c := range [][]byte{bad, data[:len(data)-1], nil} {
		if id, err := twin.ImportSequence(c); !errors.Is(err, ErrCorruptData) || id != SeqNone {
			t.Fatalf("corrupt import: id %d, %v", id, err)
		}
	}
	if after, _ := twin.Stats(); after != before {
		t.Fatalf("stats changed: %+v -> %+v", before, after)
	}
	if _, err := part.ExportSequence(99); !errors.Is(err, ErrNotFound) {
		t.Fatalf("export of an unknown sequence: %v", err)
	}
	p := DefaultCacheParams()
	p.MaxPages, p.KVHeadBegin, p.KVHeadEnd = 4, 1, 3
	if _, err := NewCache(ctx, plan, p); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("range past the heads: %v", err)
	}
}
