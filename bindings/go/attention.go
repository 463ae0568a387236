package kvbits

/*
#include <kvbits.h>
*/
import "C"

import "unsafe"

// Precision says how the CUDA backend forms its products (kvb_attention_params.precision); the
// CPU backend computes in fp32 either way.
type Precision uint32

const (
	// PrecisionFP16 (the default): fp16 tensor-core operands with fp32 accumulation.
	PrecisionFP16 Precision = C.KVB_PRECISION_FP16
	// PrecisionFP32: fp32-grade products (decode only; a CUDA extend refuses it).
	PrecisionFP32 Precision = C.KVB_PRECISION_FP32
)

// AttentionParams tunes Decode and Extend (kvb_attention_params); nil means the defaults.
type AttentionParams struct {
	Scale     float32   // softmax scale, finite and >= 0; 0 = 1/sqrt(head_dim)
	Precision Precision // PrecisionFP16 (zero value, the default) or PrecisionFP32
}

func (p *AttentionParams) toC() C.kvb_attention_params {
	var c C.kvb_attention_params
	C.kvb_attention_params_default(&c)
	if p != nil {
		c.scale = C.float(p.Scale)
		c.precision = C.uint32_t(p.Precision)
	}
	return c
}

// Decode attends one query token per sequence over everything (seq, layer) holds:
// q and out are [len(seqs), n_q_heads, head_dim]; lse is [len(seqs), n_q_heads] (the
// natural-log sum-exp of the scaled logits) or nil. The query's own key and value must have
// been appended first. The cache is not modified; on failure out and lse are not written.
func (c *Cache) Decode(layer uint32, seqs []uint64, q, out, lse []float32, params *AttentionParams) error {
	return c.attendHost("Cache.Decode", layer, seqs, nil, tensorOf(q), F32, out, lse, params)
}

// DecodeHalf is Decode with fp16 or bf16 queries (bit patterns, dtype F16 or BF16).
func (c *Cache) DecodeHalf(layer uint32, seqs []uint64, q []uint16, dtype DType, out, lse []float32,
	params *AttentionParams) error {
	const op = "Cache.DecodeHalf"
	if err := checkHalf(op, dtype); err != nil {
		return err
	}
	return c.attendHost(op, layer, seqs, nil, tensorOf(q), dtype, out, lse, params)
}

// DecodePtr is Decode for tensors the caller addresses directly (device memory on a CUDA
// context): q in dtype, out and lse fp32 (lse may be nil), stream a cudaStream_t or nil.
// Their sizes cannot be checked here.
func (c *Cache) DecodePtr(layer uint32, seqs []uint64, q unsafe.Pointer, dtype DType, out, lse unsafe.Pointer,
	params *AttentionParams, stream unsafe.Pointer) error {
	return c.attendPtr("Cache.DecodePtr", layer, seqs, nil, q, dtype, out, lse, params, stream)
}

// Extend attends qLen[i] query tokens of sequence i, which are the last qLen[i] tokens (seq,
// layer) holds (appended already); causal. q and out are [sum(qLen), n_q_heads, head_dim],
// lse [sum(qLen), n_q_heads] or nil. qLen[i] may be 0.
func (c *Cache) Extend(layer uint32, seqs []uint64, qLen []uint32, q, out, lse []float32,
	params *AttentionParams) error {
	return c.attendHost("Cache.Extend", layer, seqs, qLen, tensorOf(q), F32, out, lse, params)
}

// ExtendHalf is Extend with fp16 or bf16 queries.
func (c *Cache) ExtendHalf(layer uint32, seqs []uint64, qLen []uint32, q []uint16, dtype DType, out,
	lse []float32, params *AttentionParams) error {
	const op = "Cache.ExtendHalf"
	if err := checkHalf(op, dtype); err != nil {
		return err
	}
	return c.attendHost(op, layer, seqs, qLen, tensorOf(q), dtype, out, lse, params)
}

// ExtendPtr is Extend for tensors the caller addresses directly (see DecodePtr).
func (c *Cache) ExtendPtr(layer uint32, seqs []uint64, qLen []uint32, q unsafe.Pointer, dtype DType, out,
	lse unsafe.Pointer, params *AttentionParams, stream unsafe.Pointer) error {
	if qLen == nil {
		qLen = []uint32{} // nil means decode to attendPtr; an extend without q_len is refused below
	}
	return c.attendPtr("Cache.ExtendPtr", layer, seqs, qLen, q, dtype, out, lse, params, stream)
}

// attendHost checks slice lengths, then runs decode (qLen nil) or extend.
func (c *Cache) attendHost(op string, layer uint32, seqs []uint64, qLen []uint32, q tensor, dtype DType,
	out, lse []float32, params *AttentionParams) error {
	ptr, err := c.acquire(op)
	if err != nil {
		return err
	}
	defer c.mu.Unlock()
	rows := uint64(len(seqs))
	if qLen != nil {
		if err := checkCounts(op, seqs, qLen, "qLen"); err != nil {
			return err
		}
		rows = sumTokens(qLen)
	} else if err := checkSeqs(op, seqs); err != nil {
		return err
	}
	rowsName := "len(seqs)"
	if qLen != nil {
		rowsName = "sum(qLen)"
	}
	want := product(rows, c.qRow())
	if err := checkLen(op, "q", q.n, want, rowsName+" * n_q_heads * head_dim"); err != nil {
		return err
	}
	if err := checkLen(op, "out", uint64(len(out)), want, rowsName+" * n_q_heads * head_dim"); err != nil {
		return err
	}
	var lsePtr unsafe.Pointer
	if lse != nil {
		if err := checkLen(op, "lse", uint64(len(lse)), product(rows, uint64(c.nQ)),
			rowsName+" * n_q_heads"); err != nil {
			return err
		}
		lsePtr = tensorOf(lse).orDummy().ptr
	}
	outPtr := tensorOf(out).orDummy().ptr
	return attendC(op, ptr, layer, seqs, qLen, q.orDummy().ptr, dtype, outPtr, lsePtr, params, nil)
}

func (c *Cache) attendPtr(op string, layer uint32, seqs []uint64, qLen []uint32, q unsafe.Pointer, dtype DType,
	out, lse unsafe.Pointer, params *AttentionParams, stream unsafe.Pointer) error {
	ptr, err := c.acquire(op)
	if err != nil {
		return err
	}
	defer c.mu.Unlock()
	if qLen != nil {
		if err := checkCounts(op, seqs, qLen, "qLen"); err != nil {
			return err
		}
	} else if err := checkSeqs(op, seqs); err != nil {
		return err
	}
	return attendC(op, ptr, layer, seqs, qLen, q, dtype, out, lse, params, stream)
}

// attendC makes the C call: decode when qLen is nil, else extend (qLen as long as seqs).
func attendC(op string, ptr *C.kvb_cache, layer uint32, seqs []uint64, qLen []uint32, q unsafe.Pointer,
	dtype DType, out, lse unsafe.Pointer, params *AttentionParams, stream unsafe.Pointer) error {
	p := params.toC()
	e := errBuf()
	s := (*C.uint64_t)(unsafe.Pointer(&seqs[0]))
	var st C.kvb_status
	if qLen == nil {
		st = C.kvb_attention_decode(ptr, C.uint32_t(layer), s, C.size_t(len(seqs)), q, C.kvb_dtype(dtype),
			(*C.float)(out), (*C.float)(lse), &p, stream, e)
	} else {
		st = C.kvb_attention_extend(ptr, C.uint32_t(layer), s, (*C.uint32_t)(unsafe.Pointer(&qLen[0])),
			C.size_t(len(seqs)), q, C.kvb_dtype(dtype), (*C.float)(out), (*C.float)(lse), &p, stream, e)
	}
	return toError(op, st, e)
}
