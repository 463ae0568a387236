package kvbits

import (
	"errors"
	"math"
	"testing"
)

// The test model: small enough to be fast, with GQA (2 query heads per KV head) and several
// RoPE blocks per head.
func testShape() ModelShape {
	s := DefaultModelShape()
	s.NLayers, s.NQHeads, s.NKVHeads, s.HeadDim = 2, 4, 2, 16
	return s
}

// fill writes made-up activations: rows of headDim values, roughly Gaussian and larger in
// higher dims so that RoPE blocks differ in energy. The same generator as samples/c/decode_demo.c.
func fill(x []float32, headDim int, seed *uint32) {
	for i := range x {
		var sum float32
		for j := 0; j < 4; j++ {
			*seed = *seed*1664525 + 1013904223
			sum += float32(*seed>>8) / 16777216.0
		}
		x[i] = (sum - 2.0) * (1.0 + float32(i%headDim)*0.25)
	}
}

func filled(n, headDim int, seed *uint32) []float32 {
	x := make([]float32, n)
	fill(x, headDim, seed)
	return x
}

func newTestContext(t testing.TB) *Context {
	t.Helper()
	ctx, err := NewContext(&ContextParams{Backend: BackendCPU, NThreads: 2})
	if err != nil {
		t.Fatalf("NewContext: %v", err)
	}
	t.Cleanup(func() { ctx.Close() })
	return ctx
}

// observed returns a calibrator that has seen nTokens tokens of every layer.
func observed(t testing.TB, ctx *Context, shape ModelShape, nTokens int, seed uint32) *Calibrator {
	t.Helper()
	cal, err := NewCalibrator(ctx, shape)
	if err != nil {
		t.Fatalf("NewCalibrator: %v", err)
	}
	t.Cleanup(func() { cal.Close() })
	d := int(shape.HeadDim)
	for l := uint32(0); l < shape.NLayers; l++ {
		q := filled(nTokens*int(shape.NQHeads)*d, d, &seed)
		k := filled(nTokens*int(shape.NKVHeads)*d, d, &seed)
		if err := cal.Observe(l, q, k); err != nil {
			t.Fatalf("Observe: %v", err)
		}
	}
	return cal
}

// calibratedPlan builds a plan for shape from synthetic activations; opts nil = defaults.
func calibratedPlan(t testing.TB, ctx *Context, shape ModelShape, opts *PlanOptions) *Plan {
	t.Helper()
	plan, err := observed(t, ctx, shape, 64, 1).BuildPlan(opts)
	if err != nil {
		t.Fatalf("BuildPlan: %v", err)
	}
	t.Cleanup(func() { plan.Close() })
	return plan
}

func newTestCache(t testing.TB, ctx *Context, plan *Plan, edit func(*CacheParams)) *Cache {
	t.Helper()
	p := DefaultCacheParams()
	p.PageSize, p.MaxPages = 16, 64
	if edit != nil {
		edit(&p)
	}
	c, err := NewCache(ctx, plan, p)
	if err != nil {
		t.Fatalf("NewCache: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// wantStatus fails unless err is an *Error with the given status and a message.
func wantStatus(t testing.TB, what string, err error, want Status) {
	t.Helper()
	var e *Error
	switch {
	case err == nil:
		t.Errorf("%s: no error, want %s", what, want.String())
	case !errors.As(err, &e):
		t.Errorf("%s: error %T (%v) is not an *Error", what, err, err)
	case e.Status != want || !errors.Is(err, want):
		t.Errorf("%s: status %s (%v), want %s", what, e.Status.String(), err, want.String())
	case e.Message == "":
		t.Errorf("%s: empty message", what)
	}
}

func must(t testing.TB, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// f32ToF16 rounds to the nearest IEEE half (ties to even), as the library stores fp16.
func f32ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	rawExp := int32(b>>23) & 0xff
	mant := b & 0x7fffff
	if rawExp == 0xff {
		if mant != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	}
	exp := rawExp - 127 + 15
	if exp >= 31 {
		return sign | 0x7c00
	}
	if exp <= 0 { // a half subnormal (or zero)
		if exp < -10 {
			return sign
		}
		m := mant | 0x800000
		shift := uint32(14 - exp)
		h := m >> shift
		rem, halfway := m&(1<<shift-1), uint32(1)<<(shift-1)
		if rem > halfway || (rem == halfway && h&1 == 1) {
			h++
		}
		return sign | uint16(h)
	}
	h := uint32(exp)<<10 | mant>>13
	rem := mant & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && h&1 == 1) {
		h++ // a carry into the exponent is right, up to infinity
	}
	return sign | uint16(h)
}

func f16ToF32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case exp == 0:
		v := float32(mant) / (1 << 24)
		if sign != 0 {
			v = -v
		}
		return v
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
}

func f32ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	return uint16((b + 0x7fff + (b>>16)&1) >> 16) // ties to even; test data has no NaN
}

func bf16ToF32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

func convert(x []float32, f func(float32) uint16) []uint16 {
	out := make([]uint16, len(x))
	for i, v := range x {
		out[i] = f(v)
	}
	return out
}

func back(x []uint16, f func(uint16) float32) []float32 {
	out := make([]float32, len(x))
	for i, v := range x {
		out[i] = f(v)
	}
	return out
}

// refAttention is plain softmax attention in float64 for one sequence: q [nQ, D] over k, v
// [T, nKV, D]; query head h reads KV head h / (nQ / nKV). It returns out [nQ, D] and lse [nQ]
// (natural log of the sum of exp of the scaled logits). Only the first `visible` tokens count.
func refAttention(q, k, v []float32, visible, nQ, nKV, d int, scale float64) (out, lse []float64) {
	out = make([]float64, nQ*d)
	lse = make([]float64, nQ)
	group := nQ / nKV
	logits := make([]float64, visible)
	for h := 0; h < nQ; h++ {
		g := h / group
		m := math.Inf(-1)
		for t := 0; t < visible; t++ {
			var s float64
			for i := 0; i < d; i++ {
				s += float64(q[h*d+i]) * float64(k[(t*nKV+g)*d+i])
			}
			logits[t] = s * scale
			m = math.Max(m, logits[t])
		}
		var sum float64
		for t := 0; t < visible; t++ {
			w := math.Exp(logits[t] - m)
			sum += w
			for i := 0; i < d; i++ {
				out[h*d+i] += w * float64(v[(t*nKV+g)*d+i])
			}
		}
		for i := 0; i < d; i++ {
			out[h*d+i] /= sum
		}
		lse[h] = m + math.Log(sum)
	}
	return out, lse
}

// relErr is max|got - want| / max|want|.
func relErr(got []float32, want []float64) float64 {
	var diff, scale float64
	for i := range want {
		diff = math.Max(diff, math.Abs(float64(got[i])-want[i]))
		scale = math.Max(scale, math.Abs(want[i]))
	}
	return diff / scale
}
