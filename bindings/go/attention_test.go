package kvbits

import (
	"math"
	"testing"
)

// attentionCase: a 3-bit cache holding three sequences of different lengths in layer 1,
// appended in one call.
type attentionCase struct {
	cache *Cache
	seqs  []uint64
	lens  []uint32
	k, v  [][]float32 // read back per sequence: what the packed cache really holds
}

func newAttentionCase(t *testing.T, sink int64) *attentionCase {
	ctx := newTestContext(t)
	plan := calibratedPlan(t, ctx, testShape(), nil)
	cache := newTestCache(t, ctx, plan, func(p *CacheParams) { p.SinkTokens, p.WindowTokens = sink, 0 })
	c := &attentionCase{cache: cache, lens: []uint32{37, 5, 70}}
	var total uint32
	for range c.lens {
		id, err := cache.AddSequence()
		must(t, "AddSequence", err)
		c.seqs = append(c.seqs, id)
	}
	for _, n := range c.lens {
		total += n
	}
	seed := uint32(77)
	k, v := filled(int(total)*32, 16, &seed), filled(int(total)*32, 16, &seed)
	must(t, "Append", cache.Append(1, c.seqs, c.lens, k, v))
	for i, s := range c.seqs {
		kr, vr, err := cache.Read(s, 1, 0, c.lens[i])
		must(t, "Read", err)
		c.k, c.v = append(c.k, kr), append(c.v, vr)
	}
	return c
}

// Decode equals plain softmax attention over the read-back keys and values (GQA, 1/sqrt(D)
// and a custom scale), with fp32, fp16 and bf16 queries.
func TestDecodeMatchesReference(t *testing.T) {
	for _, sink := range []int64{0, 4} {
		c := newAttentionCase(t, sink)
		seed := uint32(99)
		q := filled(3*64, 16, &seed)
		for _, scale := range []float32{0, 0.1} {
			out, lse := make([]float32, 3*64), make([]float32, 3*4)
			var params *AttentionParams
			refScale := 1 / math.Sqrt(16)
			if scale != 0 {
				params, refScale = &AttentionParams{Scale: scale}, float64(scale)
			}
			must(t, "Decode", c.cache.Decode(1, c.seqs, q, out, lse, params))
			for i := range c.seqs {
				ro, rl := refAttention(q[i*64:(i+1)*64], c.k[i], c.v[i], int(c.lens[i]), 4, 2, 16, refScale)
				if e := relErr(out[i*64:(i+1)*64], ro); e > 1e-5 {
					t.Errorf("sink %d scale %g seq %d: out relative error %.2e", sink, scale, i, e)
				}
				if e := relErr(lse[i*4:(i+1)*4], rl); e > 1e-5 {
					t.Errorf("sink %d scale %g seq %d: lse relative error %.2e", sink, scale, i, e)
				}
			}
		}
		// Half queries give exactly what their fp32 values give; lse may be omitted.
		ref := make([]float32, 3*64)
		for _, h := range []struct {
			dtype DType
			to    func(float32) uint16
			from  func(uint16) float32
		}{{F16, f32ToF16, f16ToF32}, {BF16, f32ToBF16, bf16ToF32}} {
			qh := convert(q, h.to)
			must(t, "Decode", c.cache.Decode(1, c.seqs, back(qh, h.from), ref, nil, nil))
			out := make([]float32, 3*64)
			must(t, "DecodeHalf", c.cache.DecodeHalf(1, c.seqs, qh, h.dtype, out, nil, nil))
			if !equalF32(out, ref) {
				t.Errorf("%s queries differ from their fp32 values", h.dtype)
			}
		}
	}
}

// Extend is causal attention of the last qLen tokens of each sequence.
func TestExtendMatchesReference(t *testing.T) {
	c := newAttentionCase(t, 0)
	qLen := []uint32{3, 0, 5}
	seed := uint32(123)
	q := filled(8*64, 16, &seed)
	out, lse := make([]float32, 8*64), make([]float32, 8*4)
	must(t, "Extend", c.cache.Extend(1, c.seqs, qLen, q, out, lse, nil))
	row := 0
	for i := range c.seqs {
		for j := uint32(0); j < qLen[i]; j++ {
			visible := int(c.lens[i] - qLen[i] + j + 1)
			ro, rl := refAttention(q[row*64:(row+1)*64], c.k[i], c.v[i], visible, 4, 2, 16, 0.25)
			if e := relErr(out[row*64:(row+1)*64], ro); e > 1e-5 {
				t.Errorf("seq %d query %d: out relative error %.2e", i, j, e)
			}
			if e := relErr(lse[row*4:(row+1)*4], rl); e > 1e-5 {
				t.Errorf("seq %d query %d: lse relative error %.2e", i, j, e)
			}
			row++
		}
	}
	// Half queries, and a batch with no queries at all (nothing to do, nothing written).
	qh := convert(q, f32ToF16)
	ref := make([]float32, 8*64)
	must(t, "Extend", c.cache.Extend(1, c.seqs, qLen, back(qh, f16ToF32), ref, nil, nil))
	must(t, "ExtendHalf", c.cache.ExtendHalf(1, c.seqs, qLen, qh, F16, out, nil, nil))
	if !equalF32(out, ref) {
		t.Error("fp16 extend queries differ from their fp32 values")
	}
	must(t, "Extend with no queries", c.cache.Extend(1, c.seqs, []uint32{0, 0, 0}, nil, nil, nil, nil))
}
