package kvbits

/*
#include <kvbits.h>
*/
import "C"

import "unsafe"

// KVHeads returns the cache's KV heads [begin, end) of its plan (kvb_cache_kv_heads).
func (c *Cache) KVHeads() (begin, end uint32) {
	if c == nil {
		return 0, 0
	}
	return c.kvBegin, c.kvEnd
}

// NKVHeads is the number of KV heads of every K/V row the cache takes and gives back.
func (c *Cache) NKVHeads() uint32 { return c.nKV }

// NQHeads is the number of query heads of every q and out row of Decode and Extend.
func (c *Cache) NQHeads() uint32 { return c.nQ }

// ExportSize returns the bytes ExportSequence writes for seq (kvb_cache_seq_export_size).
func (c *Cache) ExportSize(seq uint64) (int, error) {
	const op = "Cache.ExportSize"
	ptr, err := c.acquire(op)
	if err != nil {
		return 0, err
	}
	defer c.mu.Unlock()
	var n C.size_t
	e := errBuf()
	if err := toError(op, C.kvb_cache_seq_export_size(ptr, C.uint64_t(seq), &n, e), e); err != nil {
		return 0, err
	}
	return int(n), nil
}

// ExportSequence returns every layer of seq as bytes (kvb_cache_seq_export, docs/transfer.md):
// a versioned header and the cache's own page and fp16 rows. ImportSequence on a cache of the
// same plan, KV-head range, page size and sink/window restores it bit for bit.
func (c *Cache) ExportSequence(seq uint64) ([]byte, error) {
	const op = "Cache.ExportSequence"
	ptr, err := c.acquire(op)
	if err != nil {
		return nil, err
	}
	defer c.mu.Unlock()
	var n, written C.size_t
	e := errBuf()
	if err := toError(op, C.kvb_cache_seq_export_size(ptr, C.uint64_t(seq), &n, e), e); err != nil {
		return nil, err
	}
	buf := make([]byte, int(n)) // never empty: an export holds at least its header
	st := C.kvb_cache_seq_export(ptr, C.uint64_t(seq), unsafe.Pointer(&buf[0]), n, &written, nil, e)
	if err := toError(op, st, e); err != nil {
		return nil, err
	}
	return buf[:int(written)], nil
}

// ImportSequence adds the sequence exported in data and returns its id
// (kvb_cache_seq_import). A corrupt, truncated or foreign export fails (ErrCorruptData,
// ErrShapeMismatch, ...) and leaves the cache unchanged.
func (c *Cache) ImportSequence(data []byte) (uint64, error) {
	const op = "Cache.ImportSequence"
	ptr, err := c.acquire(op)
	if err != nil {
		return SeqNone, err
	}
	defer c.mu.Unlock()
	var one [1]byte
	p := unsafe.Pointer(&one[0]) // non-null for an empty slice: the library reports the truncation
	if len(data) > 0 {
		p = unsafe.Pointer(&data[0])
	}
	id := C.uint64_t(SeqNone)
	e := errBuf()
	if err := toError(op, C.kvb_cache_seq_import(ptr, p, C.size_t(len(data)), &id, nil, e), e); err != nil {
		return SeqNone, err
	}
	return uint64(id), nil
}
