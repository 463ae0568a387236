package kvbits

import (
	"math"
	"testing"
	"unsafe"
)

func TestCacheSequencesAndStats(t *testing.T) {
	ctx := newTestContext(t)
	plan := calibratedPlan(t, ctx, testShape(), nil)
	info, _ := plan.Info()
	cache := newTestCache(t, ctx, plan, func(p *CacheParams) { p.MaxSequences = 3 })
	d := DefaultCacheParams()
	if d.PageSize != 64 || d.MaxPages != 0 || d.SinkTokens != -1 || d.WindowTokens != -1 || d.MaxSequences != 1024 {
		t.Errorf("DefaultCacheParams() = %+v", d)
	}
	s0, err := cache.Stats()
	must(t, "Stats", err)
	// 64 pages of 16 tokens, each page holding every layer and KV head.
	if s0.PageSize != 16 || s0.PagesTotal != 64 || s0.PagesUsed != 0 || s0.Sequences != 0 || s0.Tokens != 0 ||
		s0.PoolBytes < 64*16*info.BytesPerTokenTotal {
		t.Errorf("empty cache stats %+v (plan: %d bytes per token)", s0, info.BytesPerTokenTotal)
	}
	a, err := cache.AddSequence()
	must(t, "AddSequence", err)
	b, err := cache.AddSequence()
	must(t, "AddSequence", err)
	if a == b || a == SeqNone || b == SeqNone {
		t.Fatalf("ids %d %d", a, b)
	}
	seed := uint32(11)
	row := 2 * 16
	for layer := uint32(0); layer < 2; layer++ {
		k, v := filled(40*row, 16, &seed), filled(40*row, 16, &seed)
		must(t, "Append", cache.Append(layer, []uint64{a, b}, []uint32{30, 10}, k, v))
	}
	for _, c := range []struct {
		seq  uint64
		want uint32
	}{{a, 30}, {b, 10}} {
		if n, err := cache.SequenceLength(c.seq, 1); err != nil || n != c.want {
			t.Errorf("length of %d: %d %v, want %d", c.seq, n, err, c.want)
		}
	}
	s1, _ := cache.Stats()
	// 30 tokens take 2 pages of 16, 10 tokens take 1.
	pageBytes := s1.PoolBytes / s1.PagesTotal
	if s1.Sequences != 2 || s1.Tokens != 40 || s1.PagesUsed != 3 || s1.PackedBytesUsed != 3*pageBytes {
		t.Errorf("stats after append %+v", s1)
	}

	// A fork shares the prefix's pages: same read-back, no new page until it writes.
	f, err := cache.ForkSequence(a, 20)
	must(t, "ForkSequence", err)
	if n, _ := cache.SequenceLength(f, 0); n != 20 {
		t.Errorf("fork length %d, want 20", n)
	}
	ka, va, err := cache.Read(a, 0, 0, 20)
	must(t, "Read", err)
	kf, vf, err := cache.Read(f, 0, 0, 20)
	must(t, "Read", err)
	if !equalF32(ka, kf) || !equalF32(va, vf) {
		t.Error("a fork reads back other values than its source")
	}
	if s, _ := cache.Stats(); s.PagesUsed != 3 || s.Sequences != 3 || s.Tokens != 60 {
		t.Errorf("stats after fork %+v", s)
	}
	_, err = cache.AddSequence()
	wantStatus(t, "fourth sequence of 3", err, ErrCapacityExhausted)
	_, err = cache.ForkSequence(a, 31)
	wantStatus(t, "fork past the end", err, ErrInvalidArgument) // checked before capacity

	must(t, "RemoveSequence", cache.RemoveSequence(a))
	wantStatus(t, "remove twice", cache.RemoveSequence(a), ErrNotFound)
	_, err = cache.SequenceLength(a, 0)
	wantStatus(t, "length of removed", err, ErrNotFound)
	// The fork's 20 tokens span both of a's pages: they stay in use.
	if s, _ := cache.Stats(); s.PagesUsed != 3 || s.Sequences != 2 || s.Tokens != 30 {
		t.Errorf("stats after remove %+v", s)
	}
	kf2, _, err := cache.Read(f, 0, 0, 20)
	must(t, "Read", err)
	if !equalF32(kf, kf2) {
		t.Error("removing the source changed the fork")
	}
}

// 8-bit codes read back within a fraction of a percent; fp16 sink tokens read back exactly.
func TestAppendReadEightBit(t *testing.T) {
	ctx := newTestContext(t)
	opts := DefaultPlanOptions()
	opts.KAvgBits, opts.KMinBits, opts.VBits = 8, 8, 8
	plan := calibratedPlan(t, ctx, testShape(), &opts)
	cache := newTestCache(t, ctx, plan, func(p *CacheParams) { p.SinkTokens = 3 })
	seq, err := cache.AddSequence()
	must(t, "AddSequence", err)
	const n, row = 50, 32
	seed := uint32(21)
	k, v := filled(n*row, 16, &seed), filled(n*row, 16, &seed)
	must(t, "Append", cache.Append(0, []uint64{seq}, []uint32{n}, k, v))
	gk, gv, err := cache.Read(seq, 0, 0, n)
	must(t, "Read", err)
	for i := 0; i < 3*row; i++ {
		if gk[i] != f16ToF32(f32ToF16(k[i])) || gv[i] != f16ToF32(f32ToF16(v[i])) {
			t.Fatalf("sink value %d: %g %g, want fp16 of %g %g", i, gk[i], gv[i], k[i], v[i])
		}
	}
	worst := 0.0
	for _, pair := range [][2][]float32{{k, gk}, {v, gv}} {
		for h := 3 * 2; h < n*2; h++ { // every packed (token, head) vector of 16 values
			in, got := pair[0][h*16:(h+1)*16], pair[1][h*16:(h+1)*16]
			worst = math.Max(worst, dist(in, got)/norm(in))
		}
	}
	if worst > 0.01 || worst == 0 {
		t.Errorf("8-bit read-back: worst relative L2 error %.5f, want (0, 0.01]", worst)
	}
	t.Logf("8-bit read-back: worst relative L2 error %.5f", worst)
	// ReadInto one side, from the middle.
	vOnly := make([]float32, 4*row)
	must(t, "ReadInto", cache.ReadInto(seq, 0, 10, 4, nil, vOnly))
	if !equalF32(vOnly, gv[10*row:14*row]) {
		t.Error("ReadInto of tokens [10, 14) differs from Read")
	}
}

// fp16 and bf16 inputs: fp16 tokens (all sink here) read back exactly as the input's fp16.
func TestAppendHalf(t *testing.T) {
	ctx := newTestContext(t)
	plan := calibratedPlan(t, ctx, testShape(), nil)
	seed := uint32(33)
	const n, row = 12, 32
	k32, v32 := filled(n*row, 16, &seed), filled(n*row, 16, &seed)
	for _, c := range []struct {
		dtype DType
		to    func(float32) uint16
		from  func(uint16) float32
	}{{F16, f32ToF16, f16ToF32}, {BF16, f32ToBF16, bf16ToF32}} {
		cache := newTestCache(t, ctx, plan, func(p *CacheParams) { p.SinkTokens = n })
		a, _ := cache.AddSequence()
		b, _ := cache.AddSequence()
		k, v := convert(k32, c.to), convert(v32, c.to)
		must(t, "AppendHalf", cache.AppendHalf(1, []uint64{a}, []uint32{n}, k, v, c.dtype))
		// The same values given as fp32 are stored the same.
		must(t, "Append", cache.Append(1, []uint64{b}, []uint32{n}, back(k, c.from), back(v, c.from)))
		ka, va, err := cache.Read(a, 1, 0, n)
		must(t, "Read", err)
		kb, vb, err := cache.Read(b, 1, 0, n)
		must(t, "Read", err)
		for i := range ka {
			wk, wv := f16ToF32(f32ToF16(c.from(k[i]))), f16ToF32(f32ToF16(c.from(v[i])))
			if ka[i] != wk || va[i] != wv || kb[i] != wk || vb[i] != wv {
				t.Fatalf("%s value %d: read %g %g / %g %g, want %g %g", c.dtype, i, ka[i], va[i], kb[i], vb[i], wk, wv)
			}
		}
	}
}

// The unsafe.Pointer variants reach the same C calls (host memory on the CPU backend).
func TestPointerVariants(t *testing.T) {
	ctx := newTestContext(t)
	plan := calibratedPlan(t, ctx, testShape(), nil)
	cache := newTestCache(t, ctx, plan, nil)
	a, _ := cache.AddSequence()
	b, _ := cache.AddSequence()
	seed := uint32(44)
	const n, row, qrow = 9, 32, 64
	k, v := filled(n*row, 16, &seed), filled(n*row, 16, &seed)
	q := filled(qrow, 16, &seed)
	must(t, "Append", cache.Append(0, []uint64{a}, []uint32{n}, k, v))
	must(t, "AppendPtr", cache.AppendPtr(0, []uint64{b}, []uint32{n}, unsafe.Pointer(&k[0]), unsafe.Pointer(&v[0]), F32, nil))
	ka, _, _ := cache.Read(a, 0, 0, n)
	kb, _, _ := cache.Read(b, 0, 0, n)
	if !equalF32(ka, kb) {
		t.Error("AppendPtr stored other values than Append")
	}
	out1, lse1 := make([]float32, qrow), make([]float32, 4)
	out2, lse2 := make([]float32, qrow), make([]float32, 4)
	must(t, "Decode", cache.Decode(0, []uint64{a}, q, out1, lse1, nil))
	must(t, "DecodePtr", cache.DecodePtr(0, []uint64{b}, unsafe.Pointer(&q[0]), F32, unsafe.Pointer(&out2[0]),
		unsafe.Pointer(&lse2[0]), nil, nil))
	if !equalF32(out1, out2) || !equalF32(lse1, lse2) {
		t.Error("DecodePtr differs from Decode")
	}
	must(t, "ExtendPtr", cache.ExtendPtr(0, []uint64{b}, []uint32{1}, unsafe.Pointer(&q[0]), F32,
		unsafe.Pointer(&out2[0]), nil, nil, nil))
	if !equalF32(out1, out2) {
		t.Error("ExtendPtr of the last token differs from Decode")
	}
	err := cache.AppendPtr(0, []uint64{b}, []uint32{n}, unsafe.Pointer(&k[0]), nil, F32, nil)
	wantStatus(t, "AppendPtr v nil", err, ErrNullPointer)
	err = cache.AppendPtr(0, []uint64{b}, []uint32{n}, unsafe.Pointer(&k[0]), unsafe.Pointer(&v[0]), 9, nil)
	wantStatus(t, "AppendPtr dtype 9", err, ErrInvalidArgument)
	err = cache.ExtendPtr(0, []uint64{b}, nil, unsafe.Pointer(&q[0]), F32, unsafe.Pointer(&out2[0]), nil, nil, nil)
	wantStatus(t, "ExtendPtr without qLen", err, ErrShapeMismatch)
}

func equalF32(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}

func dist(a, b []float32) float64 {
	var s float64
	for i := range a {
		d := float64(a[i]) - float64(b[i])
		s += d * d
	}
	return math.Sqrt(s)
}

func norm(a []float32) float64 {
	var s float64
	for _, x := range a {
		s += float64(x) * float64(x)
	}
	return math.Sqrt(s)
}
