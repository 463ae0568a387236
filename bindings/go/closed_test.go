package kvbits

import (
	"runtime"
	"testing"
	"unsafe"
)

// Every call on a closed (or nil) handle returns ErrNullPointer; Close is idempotent.
func TestClosedHandles(t *testing.T) {
	ctx := newTestContext(t)
	plan := calibratedPlan(t, ctx, testShape(), nil)
	cache := newTestCache(t, ctx, plan, nil)
	seq, _ := cache.AddSequence()
	must(t, "Close", cache.Close())
	must(t, "Close again", cache.Close())
	f := make([]float32, 64)
	var nilCache *Cache
	for _, c := range []*Cache{cache, nilCache} {
		_, err := c.AddSequence()
		wantStatus(t, "AddSequence", err, ErrNullPointer)
		wantStatus(t, "RemoveSequence", c.RemoveSequence(seq), ErrNullPointer)
		_, err = c.ForkSequence(seq, 0)
		wantStatus(t, "ForkSequence", err, ErrNullPointer)
		_, err = c.SequenceLength(seq, 0)
		wantStatus(t, "SequenceLength", err, ErrNullPointer)
		_, err = c.Stats()
		wantStatus(t, "Stats", err, ErrNullPointer)
		wantStatus(t, "Append", c.Append(0, []uint64{seq}, []uint32{1}, f[:32], f[:32]), ErrNullPointer)
		wantStatus(t, "AppendHalf", c.AppendHalf(0, []uint64{seq}, []uint32{1}, nil, nil, F16), ErrNullPointer)
		wantStatus(t, "AppendPtr", c.AppendPtr(0, []uint64{seq}, []uint32{1}, unsafe.Pointer(&f[0]),
			unsafe.Pointer(&f[0]), F32, nil), ErrNullPointer)
		_, _, err = c.Read(seq, 0, 0, 1)
		wantStatus(t, "Read", err, ErrNullPointer)
		wantStatus(t, "ReadInto", c.ReadInto(seq, 0, 0, 1, f[:32], nil), ErrNullPointer)
		wantStatus(t, "Decode", c.Decode(0, []uint64{seq}, f, f, nil, nil), ErrNullPointer)
		wantStatus(t, "DecodeHalf", c.DecodeHalf(0, []uint64{seq}, nil, F16, f, nil, nil), ErrNullPointer)
		wantStatus(t, "DecodePtr", c.DecodePtr(0, []uint64{seq}, unsafe.Pointer(&f[0]), F32,
			unsafe.Pointer(&f[0]), nil, nil, nil), ErrNullPointer)
		wantStatus(t, "Extend", c.Extend(0, []uint64{seq}, []uint32{1}, f, f, nil, nil), ErrNullPointer)
		must(t, "Close", c.Close())
	}

	cal, err := NewCalibrator(ctx, testShape())
	must(t, "NewCalibrator", err)
	must(t, "Close", cal.Close())
	must(t, "Close again", cal.Close())
	wantStatus(t, "Observe", cal.Observe(0, f, nil), ErrNullPointer)
	_, err = cal.BuildPlan(nil)
	wantStatus(t, "BuildPlan", err, ErrNullPointer)

	b, _ := plan.Bytes()
	p2, err := LoadPlanBytes(b)
	must(t, "LoadPlanBytes", err)
	must(t, "Close", p2.Close())
	must(t, "Close again", p2.Close())
	_, err = p2.Bytes()
	wantStatus(t, "Bytes", err, ErrNullPointer)
	_, err = p2.Info()
	wantStatus(t, "Info", err, ErrNullPointer)
	wantStatus(t, "Save", p2.Save(t.TempDir()+"/p.kvbplan"), ErrNullPointer)
	wantStatus(t, "CheckShape", p2.CheckShape(2, 4, 2, 16), ErrNullPointer)
	_, err = p2.BytesPerToken(0, 0)
	wantStatus(t, "BytesPerToken", err, ErrNullPointer)
	wantStatus(t, "PlanSupported closed plan", ctx.PlanSupported(p2), ErrNullPointer)
	_, err = NewCache(ctx, p2, DefaultCacheParams())
	wantStatus(t, "NewCache on a closed plan", err, ErrNullPointer)

	ctx2, err := NewContext(nil)
	must(t, "NewContext", err)
	must(t, "Close", ctx2.Close())
	must(t, "Close again", ctx2.Close())
	_, _, err = ctx2.Backend()
	wantStatus(t, "Backend", err, ErrNullPointer)
	if ctx2.LastError() != "" {
		t.Error("LastError of a closed context")
	}
	_, err = NewCalibrator(ctx2, testShape())
	wantStatus(t, "NewCalibrator on a closed context", err, ErrNullPointer)
	_, err = NewCache(ctx2, plan, DefaultCacheParams())
	wantStatus(t, "NewCache on a closed context", err, ErrNullPointer)
}

// A cache keeps its context and plan alive: closing them first (as finalizers may) is fine.
func TestCacheOutlivesContextAndPlan(t *testing.T) {
	ctx, err := NewContext(&ContextParams{Backend: BackendCPU, NThreads: 1})
	must(t, "NewContext", err)
	plan := calibratedPlan(t, ctx, testShape(), nil)
	p := DefaultCacheParams()
	p.MaxPages = 4
	cache, err := NewCache(ctx, plan, p)
	must(t, "NewCache", err)
	defer cache.Close()
	ctx.Close()
	plan.Close()
	runtime.GC()
	seq, err := cache.AddSequence()
	must(t, "AddSequence", err)
	seed := uint32(8)
	must(t, "Append", cache.Append(0, []uint64{seq}, []uint32{5}, filled(5*32, 16, &seed), filled(5*32, 16, &seed)))
	out := make([]float32, 64)
	must(t, "Decode", cache.Decode(0, []uint64{seq}, filled(64, 16, &seed), out, nil, nil))
}
