package kvbits

import (
	"bytes"
	"math"
	"testing"
)

// Half-precision observations give the same plan as the same values in fp32.
func TestCalibratorHalfInputs(t *testing.T) {
	ctx := newTestContext(t)
	shape := testShape()
	d := int(shape.HeadDim)
	for _, c := range []struct {
		dtype DType
		to    func(float32) uint16
		from  func(uint16) float32
	}{{F16, f32ToF16, f16ToF32}, {BF16, f32ToBF16, bf16ToF32}} {
		half, err := NewCalibrator(ctx, shape)
		must(t, "NewCalibrator", err)
		full, err := NewCalibrator(ctx, shape)
		must(t, "NewCalibrator", err)
		seed := uint32(5)
		for l := uint32(0); l < shape.NLayers; l++ {
			q := convert(filled(48*int(shape.NQHeads)*d, d, &seed), c.to)
			k := convert(filled(48*int(shape.NKVHeads)*d, d, &seed), c.to)
			must(t, "ObserveHalf", half.ObserveHalf(l, q, k, c.dtype))
			// Queries and keys may also come separately.
			must(t, "Observe q", full.Observe(l, back(q, c.from), nil))
			must(t, "Observe k", full.Observe(l, nil, back(k, c.from)))
		}
		p1, err := half.BuildPlan(nil)
		must(t, "BuildPlan", err)
		p2, err := full.BuildPlan(nil)
		must(t, "BuildPlan", err)
		b1, _ := p1.Bytes()
		b2, _ := p2.Bytes()
		if len(b1) == 0 || !bytes.Equal(b1, b2) {
			t.Errorf("%s: plans from half and fp32 observations differ", c.dtype)
		}
		for _, h := range []interface{ Close() error }{half, full, p1, p2} {
			h.Close()
		}
	}
}

// Options reach the plan: bits, method, layers kept in fp16.
func TestCalibratorOptions(t *testing.T) {
	ctx := newTestContext(t)
	cal := observed(t, ctx, testShape(), 32, 9)
	if s := DefaultModelShape(); s != (ModelShape{RopeLayout: RopeSplitHalf, RopeTheta: 10000}) {
		t.Errorf("DefaultModelShape() = %+v", s)
	}
	if s := cal.Shape(); s.RotaryDim != 16 || s.NQHeads != 4 {
		t.Errorf("Shape() = %+v: rotary dim 0 resolves to head_dim", s)
	}
	d := DefaultPlanOptions()
	if d.Method != MethodBlockGTQ || d.KAvgBits != 3 || d.KMinBits != 1 || d.KMaxBits != 8 || d.VBits != 3 ||
		d.Score != ScoreProduct || d.Codebooks != CodebooksLloydMax || d.RotationSeed != 42 {
		t.Errorf("DefaultPlanOptions() = %+v", d)
	}
	o := d
	o.Method, o.KAvgBits, o.VBits = MethodUniformTQMSE, 2, 4
	plan, err := cal.BuildPlan(&o)
	must(t, "BuildPlan", err)
	defer plan.Close()
	info, _ := plan.Info()
	if info.Method != MethodUniformTQMSE || info.KAvgBits != 2 || info.VBits != 4 || info.CalibTokens != 32 {
		t.Errorf("uniform K2V4 plan: %+v", info)
	}
	// 16 dims: 2 bits each for K, 4 for V = 12 code bytes, plus fp16 scales (one per group).
	if n, _ := plan.BytesPerToken(0, 0); n < 12 || n > 16 {
		t.Errorf("K2V4 at head_dim 16: %d bytes per token per head", n)
	}
}

func TestCalibratorBadInput(t *testing.T) {
	ctx := newTestContext(t)
	shape := testShape()
	cal, err := NewCalibrator(ctx, shape)
	must(t, "NewCalibrator", err)
	defer cal.Close()
	_, err = cal.BuildPlan(nil)
	wantStatus(t, "BuildPlan with nothing observed", err, ErrInvalidArgument)
	seed := uint32(3)
	q := filled(10*4*16, 16, &seed)
	k := filled(10*2*16, 16, &seed)
	wantStatus(t, "q one value short", cal.Observe(0, q[1:], k), ErrShapeMismatch)
	wantStatus(t, "k for 9 tokens", cal.Observe(0, q, k[32:]), ErrShapeMismatch)
	wantStatus(t, "k alone, partial token", cal.Observe(0, nil, k[1:]), ErrShapeMismatch)
	wantStatus(t, "nothing", cal.Observe(0, nil, nil), ErrNullPointer)
	wantStatus(t, "layer 2", cal.Observe(2, q, k), ErrInvalidArgument)
	wantStatus(t, "dtype f32 for []uint16", cal.ObserveHalf(0, make([]uint16, 64), nil, F32), ErrInvalidArgument)
	bad := append([]float32(nil), q...)
	bad[17] = float32(math.NaN())
	wantStatus(t, "NaN", cal.Observe(0, bad, k), ErrInvalidArgument)
	// Nothing above was accumulated: one good chunk per layer builds the same plan as in a
	// fresh calibrator.
	must(t, "Observe", cal.Observe(0, q, k))
	must(t, "Observe", cal.Observe(1, q, k))
	fresh, err := NewCalibrator(ctx, shape)
	must(t, "NewCalibrator", err)
	defer fresh.Close()
	must(t, "Observe", fresh.Observe(0, q, k))
	must(t, "Observe", fresh.Observe(1, q, k))
	p1, err := cal.BuildPlan(nil)
	must(t, "BuildPlan", err)
	p2, err := fresh.BuildPlan(nil)
	must(t, "BuildPlan", err)
	b1, _ := p1.Bytes()
	b2, _ := p2.Bytes()
	if !bytes.Equal(b1, b2) {
		t.Error("a refused observation changed the calibrator")
	}
	for _, c := range []struct {
		name string
		edit func(*PlanOptions)
	}{
		{"k_avg_bits 9", func(o *PlanOptions) { o.KAvgBits = 9 }},
		{"v_bits 0", func(o *PlanOptions) { o.VBits = 0 }},
		{"method 5", func(o *PlanOptions) { o.Method = 5 }},
		{"three fp16 layers of two", func(o *PlanOptions) { o.FP16Layers = []uint32{0, 1, 1} }},
		{"fingerprint not hex", func(o *PlanOptions) { o.ModelFingerprintHex = "xyz" }},
	} {
		o := DefaultPlanOptions()
		c.edit(&o)
		p, err := cal.BuildPlan(&o)
		wantStatus(t, c.name, err, ErrInvalidArgument)
		if p != nil {
			t.Errorf("%s: a plan came back", c.name)
		}
	}
	bad2 := shape
	bad2.NQHeads = 3 // not a multiple of n_kv_heads
	_, err = NewCalibrator(ctx, bad2)
	wantStatus(t, "NewCalibrator GQA 3/2", err, ErrInvalidArgument)
}
