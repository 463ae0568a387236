package kvbits

import (
	"fmt"
	"strings"
	"sync"
	"testing"
)

// work runs a small serving loop on its own cache (prompt, then decode steps) and returns every
// decode output. The same seed gives the same outputs, whatever else runs at the same time.
func work(ctx *Context, plan *Plan, seed uint32) ([]float32, error) {
	p := DefaultCacheParams()
	p.PageSize, p.MaxPages = 8, 64
	cache, err := NewCache(ctx, plan, p)
	if err != nil {
		return nil, err
	}
	defer cache.Close()
	a, err := cache.AddSequence()
	if err != nil {
		return nil, err
	}
	b, err := cache.AddSequence()
	if err != nil {
		return nil, err
	}
	seqs := []uint64{a, b}
	var outs []float32
	for step := 0; step < 6; step++ {
		n := []uint32{1, 1}
		if step == 0 {
			n = []uint32{1 + seed%7, 9}
		}
		rows := int(n[0] + n[1])
		for layer := uint32(0); layer < 2; layer++ {
			k, v := filled(rows*32, 16, &seed), filled(rows*32, 16, &seed)
			if err := cache.Append(layer, seqs, n, k, v); err != nil {
				return nil, err
			}
			out, lse := make([]float32, 2*64), make([]float32, 2*4)
			if err := cache.Decode(layer, seqs, filled(2*64, 16, &seed), out, lse, nil); err != nil {
				return nil, err
			}
			outs = append(append(outs, out...), lse...)
		}
	}
	return outs, nil
}

// Many goroutines, each with its own cache on one shared plan and context, get exactly the
// results of running alone. Run with -race to check the binding's own synchronisation.
func TestGoroutinesOwnCachesSharedPlanAndContext(t *testing.T) {
	ctx := newTestContext(t)
	plan := calibratedPlan(t, ctx, testShape(), nil)
	const workers = 16
	alone := make([][]float32, workers)
	for i := range alone {
		var err error
		alone[i], err = work(ctx, plan, uint32(1000+i))
		must(t, "work", err)
	}
	got := make([][]float32, workers)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for rep := 0; rep < 3 && errs[i] == nil; rep++ {
				got[i], errs[i] = work(ctx, plan, uint32(1000+i))
			}
		}(i)
	}
	wg.Wait()
	for i := range got {
		if errs[i] != nil {
			t.Fatalf("worker %d: %v", i, errs[i])
		}
		if !equalF32(got[i], alone[i]) {
			t.Errorf("worker %d: results differ from running alone", i)
		}
	}
}

// One cache shared by goroutines is safe (the binding serialises its calls), and every
// goroutine's failures come back as its own errors, never another goroutine's.
func TestSharedCacheErrorsArePerCall(t *testing.T) {
	ctx := newTestContext(t)
	cache := newTestCache(t, ctx, calibratedPlan(t, ctx, testShape(), nil), func(p *CacheParams) { p.MaxPages = 512 })
	var wg sync.WaitGroup
	fails := make([]error, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			seed := uint32(g)
			seq, err := cache.AddSequence()
			if err != nil {
				fails[g] = err
				return
			}
			for i := 0; i < 50; i++ {
				ok := func(err error) bool {
					if err != nil && fails[g] == nil {
						fails[g] = err
					}
					return err == nil
				}
				if !ok(cache.Append(0, []uint64{seq}, []uint32{1}, filled(32, 16, &seed), filled(32, 16, &seed))) {
					return
				}
				// Each goroutine asks for its own unknown sequence: the message must name it.
				bogus := uint64(1000 + g)
				err := cache.RemoveSequence(bogus)
				if e, ok := err.(*Error); !ok || e.Status != ErrNotFound || !containsID(e.Message, bogus) {
					fails[g] = fmt.Errorf("goroutine %d got %v", g, err)
					return
				}
			}
			if n, err := cache.SequenceLength(seq, 0); err != nil || n != 50 {
				fails[g] = fmt.Errorf("goroutine %d: length %d %v", g, n, err)
			}
		}(g)
	}
	wg.Wait()
	for _, err := range fails {
		if err != nil {
			t.Error(err)
		}
	}
}

func containsID(msg string, id uint64) bool { return strings.Contains(msg, fmt.Sprint(id)) }
