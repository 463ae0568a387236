package kvbits

/*
#include <stdlib.h>
#include <kvbits.h>
*/
import "C"

import (
	"math"
	"runtime"
	"sync"
	"unsafe"
)

// SeqNone is never a valid sequence id (KVB_SEQ_NONE).
const SeqNone uint64 = math.MaxUint64

// CacheParams configures a cache (kvb_cache_params). Start from DefaultCacheParams and set
// MaxPages, which has no default.
type CacheParams struct {
	PageSize     uint32      // tokens per page, 1..4096; default 64
	MaxPages     uint64      // pool capacity in pages, 1..2^32-1; must be set
	SinkTokens   int64       // fp16 sink tokens per sequence, 0..2^24; -1 = the plan's
	WindowTokens int64       // fp16 recent window per sequence, 0..2^24; -1 = the plan's
	Model        *ModelShape // optional: your model; a plan made for another is refused
	MaxSequences uint32      // 1..2^24; default 1024
	// KV heads [KVHeadBegin, KVHeadEnd) of the plan (tensor parallelism: one cache per GPU);
	// 0/0 (default) = every head. Such a cache takes and gives only those heads (KVHeads,
	// NKVHeads, NQHeads), with results bit-identical to those heads of a cache of every head.
	KVHeadBegin, KVHeadEnd uint32
}

// DefaultCacheParams returns kvb_cache_params_default's values (MaxPages 0: set it).
func DefaultCacheParams() CacheParams {
	var p C.kvb_cache_params
	C.kvb_cache_params_default(&p)
	return CacheParams{PageSize: uint32(p.page_size), MaxPages: uint64(p.max_pages),
		SinkTokens: int64(p.sink_tokens), WindowTokens: int64(p.window_tokens),
		MaxSequences: uint32(p.max_sequences)}
}

// CacheStats are a cache's memory statistics (kvb_cache_stats).
type CacheStats struct {
	PageSize        uint32 // tokens per page
	PagesTotal      uint64 // pool capacity
	PagesUsed       uint64 // pages holding tokens of some sequence
	PoolBytes       uint64 // bytes of page storage, all layers and KV heads (allocated)
	PackedBytesUsed uint64 // bytes of the pages in use
	FP16RegionBytes uint64 // sink + window buffers currently allocated
	Sequences       uint64 // live sequences
	Tokens          uint64 // sum over sequences of their layer-0 length
}

// Cache is a paged, packed KV cache of one plan on one context. Sequences share a pool of
// pages; each has its own length per layer. Calls on one cache are serialised by a mutex.
type Cache struct {
	mu   sync.Mutex
	ptr  *C.kvb_cache
	info PlanInfo // the plan's shape, for checking slice lengths before calling C
	// The cache's KV heads [kvBegin, kvEnd) and the KV and query heads its tensors hold.
	kvBegin, kvEnd, nKV, nQ uint32
}

// NewCache creates an empty cache; its whole page pool is allocated now. The cache keeps the
// context and the plan alive, so they may be closed before it.
func NewCache(ctx *Context, plan *Plan, params CacheParams) (*Cache, error) {
	const op = "NewCache"
	cp, err := ctx.acquire(op)
	if err != nil {
		return nil, err
	}
	defer ctx.mu.RUnlock()
	pp, err := plan.acquire(op)
	if err != nil {
		return nil, err
	}
	defer plan.mu.RUnlock()
	info, err := planInfo(op, pp)
	if err != nil {
		return nil, err
	}

	var p C.kvb_cache_params
	C.kvb_cache_params_default(&p)
	p.page_size, p.max_pages = C.uint32_t(params.PageSize), C.uint64_t(params.MaxPages)
	p.sink_tokens, p.window_tokens = C.int64_t(params.SinkTokens), C.int64_t(params.WindowTokens)
	p.max_sequences = C.uint32_t(params.MaxSequences)
	p.kv_head_begin, p.kv_head_end = C.uint32_t(params.KVHeadBegin), C.uint32_t(params.KVHeadEnd)
	if params.Model != nil {
		// The struct passed to C may not point into Go memory: the shape goes to C memory.
		m := (*C.kvb_model_shape)(C.malloc(C.sizeof_kvb_model_shape))
		defer C.free(unsafe.Pointer(m))
		*m = params.Model.toC()
		p.model = m
	}
	e := errBuf()
	var ptr *C.kvb_cache
	if err := toError(op, C.kvb_cache_create(cp, pp, &p, &ptr, e), e); err != nil {
		return nil, err
	}
	var begin, end C.uint32_t
	if err := toError(op, C.kvb_cache_kv_heads(ptr, &begin, &end, e), e); err != nil {
		C.kvb_cache_destroy(ptr)
		return nil, err
	}
	c := &Cache{ptr: ptr, info: info, kvBegin: uint32(begin), kvEnd: uint32(end)}
	c.nKV = c.kvEnd - c.kvBegin
	c.nQ = c.nKV * (info.NQHeads / info.NKVHeads)
	runtime.SetFinalizer(c, (*Cache).Close)
	return c, nil
}

// Close frees the cache and its pool. Closing twice is a no-op.
func (c *Cache) Close() error {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ptr != nil {
		C.kvb_cache_destroy(c.ptr)
		c.ptr = nil
		runtime.SetFinalizer(c, nil)
	}
	return nil
}

// acquire locks c for one call; the caller unlocks c.mu (which also keeps c reachable until
// the C call has returned, so the finalizer cannot run underneath it).
func (c *Cache) acquire(op string) (*C.kvb_cache, error) {
	if c == nil {
		return nil, closedError(op, "cache")
	}
	c.mu.Lock()
	if c.ptr == nil {
		c.mu.Unlock()
		return nil, closedError(op, "cache")
	}
	return c.ptr, nil
}

// PlanInfo returns the summary of the cache's plan (its shape sizes the tensors of Append,
// Read, Decode and Extend; for a cache of a KV-head range, NKVHeads and NQHeads do).
func (c *Cache) PlanInfo() PlanInfo {
	if c == nil {
		return PlanInfo{}
	}
	return c.info
}

// AddSequence adds an empty sequence and returns its id (chosen by the cache).
func (c *Cache) AddSequence() (uint64, error) {
	const op = "Cache.AddSequence"
	ptr, err := c.acquire(op)
	if err != nil {
		return SeqNone, err
	}
	defer c.mu.Unlock()
	id := C.uint64_t(SeqNone)
	e := errBuf()
	if err := toError(op, C.kvb_cache_seq_add(ptr, &id, e), e); err != nil {
		return SeqNone, err
	}
	return uint64(id), nil
}

// RemoveSequence removes a sequence; its pages return to the pool.
func (c *Cache) RemoveSequence(seq uint64) error {
	const op = "Cache.RemoveSequence"
	ptr, err := c.acquire(op)
	if err != nil {
		return err
	}
	defer c.mu.Unlock()
	e := errBuf()
	return toError(op, C.kvb_cache_seq_remove(ptr, C.uint64_t(seq), e), e)
}

// ForkSequence adds a sequence sharing the first prefixLen tokens of src (every layer of src
// must hold that many). Pages are shared copy-on-write.
func (c *Cache) ForkSequence(src uint64, prefixLen uint32) (uint64, error) {
	const op = "Cache.ForkSequence"
	ptr, err := c.acquire(op)
	if err != nil {
		return SeqNone, err
	}
	defer c.mu.Unlock()
	id := C.uint64_t(SeqNone)
	e := errBuf()
	if err := toError(op, C.kvb_cache_seq_fork(ptr, C.uint64_t(src), C.uint32_t(prefixLen), &id, e), e); err != nil {
		return SeqNone, err
	}
	return uint64(id), nil
}

// SequenceLength returns the tokens (seq, layer) holds.
func (c *Cache) SequenceLength(seq uint64, layer uint32) (uint32, error) {
	const op = "Cache.SequenceLength"
	ptr, err := c.acquire(op)
	if err != nil {
		return 0, err
	}
	defer c.mu.Unlock()
	var n C.uint32_t
	e := errBuf()
	if err := toError(op, C.kvb_cache_seq_length(ptr, C.uint64_t(seq), C.uint32_t(layer), &n, e), e); err != nil {
		return 0, err
	}
	return uint32(n), nil
}

// Stats returns the cache's memory statistics.
func (c *Cache) Stats() (CacheStats, error) {
	const op = "Cache.Stats"
	ptr, err := c.acquire(op)
	if err != nil {
		return CacheStats{}, err
	}
	defer c.mu.Unlock()
	var s C.kvb_cache_stats
	s.struct_size = C.sizeof_kvb_cache_stats
	e := errBuf()
	if err := toError(op, C.kvb_cache_get_stats(ptr, &s, e), e); err != nil {
		return CacheStats{}, err
	}
	return CacheStats{PageSize: uint32(s.page_size), PagesTotal: uint64(s.pages_total),
		PagesUsed: uint64(s.pages_used), PoolBytes: uint64(s.pool_bytes),
		PackedBytesUsed: uint64(s.packed_bytes_used), FP16RegionBytes: uint64(s.fp16_region_bytes),
		Sequences: uint64(s.sequences), Tokens: uint64(s.tokens)}, nil
}
