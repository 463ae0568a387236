package kvbits

/*
#include <kvbits.h>
*/
import "C"

import "unsafe"

// Append stores post-RoPE keys and values of one layer (all KV heads) for several sequences at
// once: seqs[i] gets nTokens[i] new tokens (0 is allowed for an entry).
// k and v are [sum(nTokens), n_kv_heads, head_dim] fp32, sequence after sequence.
// All or nothing: on failure the cache is unchanged.
func (c *Cache) Append(layer uint32, seqs []uint64, nTokens []uint32, k, v []float32) error {
	return c.appendHost("Cache.Append", layer, seqs, nTokens, tensorOf(k), tensorOf(v), F32)
}

// AppendHalf is Append for fp16 or bf16 bit patterns (dtype F16 or BF16).
func (c *Cache) AppendHalf(layer uint32, seqs []uint64, nTokens []uint32, k, v []uint16, dtype DType) error {
	const op = "Cache.AppendHalf"
	if err := checkHalf(op, dtype); err != nil {
		return err
	}
	return c.appendHost(op, layer, seqs, nTokens, tensorOf(k), tensorOf(v), dtype)
}

func (c *Cache) appendHost(op string, layer uint32, seqs []uint64, nTokens []uint32, k, v tensor,
	dtype DType) error {
	ptr, err := c.acquire(op)
	if err != nil {
		return err
	}
	defer c.mu.Unlock()
	if err := checkCounts(op, seqs, nTokens, "nTokens"); err != nil {
		return err
	}
	want := product(sumTokens(nTokens), c.kvRow())
	why := "sum(nTokens) * n_kv_heads * head_dim"
	if err := checkLen(op, "k", k.n, want, why); err != nil {
		return err
	}
	if err := checkLen(op, "v", v.n, want, why); err != nil {
		return err
	}
	return appendC(op, ptr, layer, seqs, nTokens, k.orDummy().ptr, v.orDummy().ptr, dtype, nil)
}

// AppendPtr is Append for tensors the caller addresses directly, such as device memory on a
// CUDA context, in any dtype; stream is a cudaStream_t (nil: the default stream), ignored by
// the CPU backend. The lengths of k and v cannot be checked: they must hold
// sum(nTokens) * n_kv_heads * head_dim elements of dtype and stay valid during the call.
func (c *Cache) AppendPtr(layer uint32, seqs []uint64, nTokens []uint32, k, v unsafe.Pointer, dtype DType,
	stream unsafe.Pointer) error {
	const op = "Cache.AppendPtr"
	ptr, err := c.acquire(op)
	if err != nil {
		return err
	}
	defer c.mu.Unlock()
	if err := checkCounts(op, seqs, nTokens, "nTokens"); err != nil {
		return err
	}
	return appendC(op, ptr, layer, seqs, nTokens, k, v, dtype, stream)
}

// appendC makes the C call; seqs and nTokens are non-empty and of equal length.
func appendC(op string, ptr *C.kvb_cache, layer uint32, seqs []uint64, nTokens []uint32, k, v unsafe.Pointer,
	dtype DType, stream unsafe.Pointer) error {
	e := errBuf()
	st := C.kvb_cache_append(ptr, C.uint32_t(layer), (*C.uint64_t)(unsafe.Pointer(&seqs[0])),
		(*C.uint32_t)(unsafe.Pointer(&nTokens[0])), C.size_t(len(seqs)), k, v, C.kvb_dtype(dtype), stream, e)
	return toError(op, st, e)
}

// Read returns tokens [pos, pos+n) of (seq, layer) as fp32, each [n, n_kv_heads, head_dim]:
// dequantized for packed tokens, exact for fp16 ones. For tests and debugging.
func (c *Cache) Read(seq uint64, layer, pos, n uint32) (k, v []float32, err error) {
	const op = "Cache.Read"
	ptr, err := c.acquire(op)
	if err != nil {
		return nil, nil, err
	}
	defer c.mu.Unlock()
	// The range is checked before allocating n tokens' worth of memory.
	var length C.uint32_t
	e := errBuf()
	if err := toError(op, C.kvb_cache_seq_length(ptr, C.uint64_t(seq), C.uint32_t(layer), &length, e), e); err != nil {
		return nil, nil, err
	}
	if n == 0 || uint64(pos)+uint64(n) > uint64(length) {
		return nil, nil, newError(op, ErrInvalidArgument,
			"tokens [%d, %d) are not within the %d tokens of sequence %d in layer %d (n must be >= 1)",
			pos, uint64(pos)+uint64(n), length, seq, layer)
	}
	k = make([]float32, uint64(n)*c.kvRow())
	v = make([]float32, uint64(n)*c.kvRow())
	if err := readC(op, ptr, seq, layer, pos, n, k, v); err != nil {
		return nil, nil, err
	}
	return k, v, nil
}

// ReadInto is Read into caller slices of n * n_kv_heads * head_dim values; either (not both)
// may be nil to skip that side. On failure nothing is written.
func (c *Cache) ReadInto(seq uint64, layer, pos, n uint32, kOut, vOut []float32) error {
	const op = "Cache.ReadInto"
	ptr, err := c.acquire(op)
	if err != nil {
		return err
	}
	defer c.mu.Unlock()
	want := product(uint64(n), c.kvRow())
	if kOut != nil {
		if err := checkLen(op, "kOut", uint64(len(kOut)), want, "n * n_kv_heads * head_dim"); err != nil {
			return err
		}
	}
	if vOut != nil {
		if err := checkLen(op, "vOut", uint64(len(vOut)), want, "n * n_kv_heads * head_dim"); err != nil {
			return err
		}
	}
	return readC(op, ptr, seq, layer, pos, n, kOut, vOut)
}

func readC(op string, ptr *C.kvb_cache, seq uint64, layer, pos, n uint32, kOut, vOut []float32) error {
	k, v := tensorOf(kOut), tensorOf(vOut)
	e := errBuf()
	st := C.kvb_cache_read(ptr, C.uint64_t(seq), C.uint32_t(layer), C.uint32_t(pos), C.uint32_t(n),
		(*C.float)(k.ptr), (*C.float)(v.ptr), e)
	return toError(op, st, e)
}

// kvRow is the values per token of k and v: n_kv_heads * head_dim.
func (c *Cache) kvRow() uint64 { return uint64(c.nKV) * uint64(c.info.HeadDim) }

// qRow is the values per query row of q and out: n_q_heads * head_dim.
func (c *Cache) qRow() uint64 { return uint64(c.nQ) * uint64(c.info.HeadDim) }

// checkSeqs refuses an empty batch, as the library does (n_seqs 0 is a bookkeeping bug).
func checkSeqs(op string, seqs []uint64) error {
	if len(seqs) == 0 {
		return newError(op, ErrInvalidArgument, "seqs is empty (n_seqs must be >= 1)")
	}
	return nil
}

// checkCounts is checkSeqs plus a per-sequence count slice of the same length.
func checkCounts(op string, seqs []uint64, counts []uint32, countsName string) error {
	if err := checkSeqs(op, seqs); err != nil {
		return err
	}
	if len(counts) != len(seqs) {
		return newError(op, ErrShapeMismatch, "%s has %d entries, seqs has %d", countsName, len(counts), len(seqs))
	}
	return nil
}
