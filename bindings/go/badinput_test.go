package kvbits

import (
	"math"
	"reflect"
	"testing"
)

// snapshot is everything observable about a cache: stats, lengths, read-back of every layer.
type snapshot struct {
	stats   CacheStats
	lengths []uint32
	data    [][]float32
}

func takeSnapshot(t *testing.T, c *Cache, seqs []uint64) snapshot {
	t.Helper()
	var s snapshot
	var err error
	s.stats, err = c.Stats()
	must(t, "Stats", err)
	for _, seq := range seqs {
		for layer := uint32(0); layer < 2; layer++ {
			n, err := c.SequenceLength(seq, layer)
			must(t, "SequenceLength", err)
			s.lengths = append(s.lengths, n)
			if n > 0 {
				k, v, err := c.Read(seq, layer, 0, n)
				must(t, "Read", err)
				s.data = append(s.data, k, v)
			}
		}
	}
	return s
}

// Every refused call returns the documented status with a message, writes no output and
// leaves the cache exactly as it was.
func TestBadInputLeavesCacheUnchanged(t *testing.T) {
	ctx := newTestContext(t)
	plan := calibratedPlan(t, ctx, testShape(), nil)
	cache := newTestCache(t, ctx, plan, func(p *CacheParams) { p.MaxPages = 4 })
	a, _ := cache.AddSequence()
	b, _ := cache.AddSequence()
	empty, _ := cache.AddSequence() // no tokens in any layer
	seed := uint32(5)
	const row, qrow = 32, 64
	must(t, "Append", cache.Append(0, []uint64{a, b}, []uint32{20, 6}, filled(26*row, 16, &seed), filled(26*row, 16, &seed)))
	must(t, "Append", cache.Append(1, []uint64{a}, []uint32{3}, filled(3*row, 16, &seed), filled(3*row, 16, &seed)))
	seqs := []uint64{a, b, empty}
	before := takeSnapshot(t, cache, seqs)

	k4, v4 := filled(4*row, 16, &seed), filled(4*row, 16, &seed)
	nan := append([]float32(nil), k4...)
	nan[70] = float32(math.NaN())
	q2 := filled(2*qrow, 16, &seed)
	sentinel := float32(-12345)
	out := make([]float32, 2*qrow)
	lse := make([]float32, 2*4)
	resetOut := func() {
		for i := range out {
			out[i] = sentinel
		}
		for i := range lse {
			lse[i] = sentinel
		}
	}
	pool := filled(100*row, 16, &seed) // 100 tokens: more than 4 pages of 16 hold
	cases := []struct {
		name string
		want Status
		call func() error
	}{
		{"append: k one token short", ErrShapeMismatch, func() error {
			return cache.Append(0, []uint64{a, b}, []uint32{2, 3}, k4, v4)
		}},
		{"append: v one value long", ErrShapeMismatch, func() error {
			return cache.Append(0, []uint64{a}, []uint32{4}, k4, append(v4, 1))
		}},
		{"append: nTokens shorter than seqs", ErrShapeMismatch, func() error {
			return cache.Append(0, []uint64{a, b}, []uint32{4}, k4, v4)
		}},
		{"append: no sequences", ErrInvalidArgument, func() error {
			return cache.Append(0, nil, nil, nil, nil)
		}},
		{"append: unknown sequence", ErrNotFound, func() error {
			return cache.Append(0, []uint64{a, 99}, []uint32{2, 2}, k4, v4)
		}},
		{"append: sequence twice", ErrInvalidArgument, func() error {
			return cache.Append(0, []uint64{a, a}, []uint32{2, 2}, k4, v4)
		}},
		{"append: layer 2", ErrInvalidArgument, func() error {
			return cache.Append(2, []uint64{a}, []uint32{4}, k4, v4)
		}},
		{"append: NaN", ErrInvalidArgument, func() error {
			return cache.Append(0, []uint64{b, a}, []uint32{2, 2}, nan, v4)
		}},
		{"append: pool full", ErrCapacityExhausted, func() error {
			return cache.Append(0, []uint64{b}, []uint32{100}, pool, pool)
		}},
		{"append half: dtype f32", ErrInvalidArgument, func() error {
			return cache.AppendHalf(0, []uint64{a}, []uint32{4}, make([]uint16, 4*row), make([]uint16, 4*row), F32)
		}},
		{"decode: q one query short", ErrShapeMismatch, func() error {
			return cache.Decode(0, []uint64{a, b}, q2[:qrow], out, lse, nil)
		}},
		{"decode: out too short", ErrShapeMismatch, func() error {
			return cache.Decode(0, []uint64{a, b}, q2, out[:qrow], nil, nil)
		}},
		{"decode: lse too long", ErrShapeMismatch, func() error {
			return cache.Decode(0, []uint64{a}, q2[:qrow], out[:qrow], lse, nil)
		}},
		{"decode: no sequences", ErrInvalidArgument, func() error {
			return cache.Decode(0, nil, nil, nil, nil, nil)
		}},
		{"decode: unknown sequence", ErrNotFound, func() error {
			return cache.Decode(0, []uint64{a, 99}, q2, out, lse, nil)
		}},
		{"decode: sequence with no tokens", ErrInvalidArgument, func() error {
			return cache.Decode(0, []uint64{a, empty}, q2, out, lse, nil)
		}},
		{"decode: layer 2", ErrInvalidArgument, func() error {
			return cache.Decode(2, []uint64{a, b}, q2, out, lse, nil)
		}},
		{"decode: NaN scale", ErrInvalidArgument, func() error {
			return cache.Decode(0, []uint64{a, b}, q2, out, lse, &AttentionParams{Scale: float32(math.NaN())})
		}},
		{"decode: negative scale", ErrInvalidArgument, func() error {
			return cache.Decode(0, []uint64{a, b}, q2, out, lse, &AttentionParams{Scale: -1})
		}},
		{"decode: precision 2", ErrInvalidArgument, func() error {
			return cache.Decode(0, []uint64{a, b}, q2, out, lse, &AttentionParams{Precision: 2})
		}},
		{"decode half: dtype 3", ErrInvalidArgument, func() error {
			return cache.DecodeHalf(0, []uint64{a, b}, make([]uint16, 2*qrow), 3, out, lse, nil)
		}},
		{"extend: more queries than tokens", ErrInvalidArgument, func() error {
			return cache.Extend(0, []uint64{b}, []uint32{7}, filled(7*qrow, 16, &seed), make([]float32, 7*qrow), nil, nil)
		}},
		{"extend: qLen longer than seqs", ErrShapeMismatch, func() error {
			return cache.Extend(0, []uint64{a}, []uint32{1, 1}, q2, out, lse, nil)
		}},
		{"extend: q for 1 of 2 queries", ErrShapeMismatch, func() error {
			return cache.Extend(0, []uint64{a, b}, []uint32{1, 1}, q2[:qrow], out, lse, nil)
		}},
		{"read: past the end", ErrInvalidArgument, func() error {
			_, _, err := cache.Read(b, 0, 4, 3)
			return err
		}},
		{"read: zero tokens", ErrInvalidArgument, func() error {
			_, _, err := cache.Read(b, 0, 0, 0)
			return err
		}},
		{"read: unknown sequence", ErrNotFound, func() error {
			_, _, err := cache.Read(99, 0, 0, 1)
			return err
		}},
		{"read into: kOut too short", ErrShapeMismatch, func() error {
			return cache.ReadInto(b, 0, 0, 2, make([]float32, row), nil)
		}},
		{"read into: no outputs", ErrNullPointer, func() error {
			return cache.ReadInto(b, 0, 0, 2, nil, nil)
		}},
		{"read into: past the end", ErrInvalidArgument, func() error {
			return cache.ReadInto(b, 0, 5, 2, make([]float32, 2*row), nil)
		}},
		{"fork: unknown source", ErrNotFound, func() error {
			_, err := cache.ForkSequence(99, 1)
			return err
		}},
		{"fork: prefix longer than layer 1", ErrInvalidArgument, func() error {
			_, err := cache.ForkSequence(a, 4) // layer 1 holds 3
			return err
		}},
		{"remove: unknown sequence", ErrNotFound, func() error { return cache.RemoveSequence(99) }},
		{"length: layer 2", ErrInvalidArgument, func() error {
			_, err := cache.SequenceLength(a, 2)
			return err
		}},
	}
	for _, c := range cases {
		resetOut()
		wantStatus(t, c.name, c.call(), c.want)
		for i := range out {
			if out[i] != sentinel {
				t.Fatalf("%s: out[%d] written", c.name, i)
			}
		}
		for i := range lse {
			if lse[i] != sentinel {
				t.Fatalf("%s: lse[%d] written", c.name, i)
			}
		}
		if after := takeSnapshot(t, cache, seqs); !reflect.DeepEqual(before, after) {
			t.Fatalf("%s: the cache changed", c.name)
		}
	}
	// The same cache still works.
	must(t, "Decode", cache.Decode(0, []uint64{a, b}, q2, out, lse, nil))
}

func TestNewCacheBadParams(t *testing.T) {
	ctx := newTestContext(t)
	plan := calibratedPlan(t, ctx, testShape(), nil)
	other := testShape()
	other.NLayers = 3
	for _, c := range []struct {
		name string
		want Status
		edit func(*CacheParams)
	}{
		{"max_pages unset", ErrInvalidArgument, func(p *CacheParams) { p.MaxPages = 0 }},
		{"page_size 0", ErrInvalidArgument, func(p *CacheParams) { p.PageSize = 0 }},
		{"sink -2", ErrInvalidArgument, func(p *CacheParams) { p.SinkTokens = -2 }},
		{"another model", ErrShapeMismatch, func(p *CacheParams) { p.Model = &other }},
	} {
		p := DefaultCacheParams()
		p.MaxPages = 8
		c.edit(&p)
		cache, err := NewCache(ctx, plan, p)
		wantStatus(t, c.name, err, c.want)
		if cache != nil {
			t.Errorf("%s: a cache came back", c.name)
		}
	}
	p := DefaultCacheParams()
	p.MaxPages = 8
	shape := testShape()
	p.Model = &shape
	cache, err := NewCache(ctx, plan, p)
	must(t, "NewCache with the right model", err)
	cache.Close()
}
