"""Paged packed KV caches: sequences, append, read-back, statistics, and attention on them.

numpy methods (append, read, decode, extend) check every shape and dtype before calling.
The *_ptr methods take raw addresses instead (torch.Tensor.data_ptr(), a CUDA stream's
handle): the caller guarantees sizes, dtypes and contiguity, as in C.
"""
import ctypes as C
import dataclasses

import numpy as np

from . import _library, _structs as S
from ._handle import Handle
from ._tensors import (U32_MAX, U64_MAX, input_array, integer, integer_array, output_array, pointer,
                       to_dtype)
from .errors import InvalidArgument, ShapeMismatch
from .plan import ModelShape

SEQ_NONE = U64_MAX  # never a valid sequence id


@dataclasses.dataclass(frozen=True)
class CacheStats:
    """What kvb_cache_get_stats reports."""
    page_size: int
    pages_total: int
    pages_used: int
    pool_bytes: int
    packed_bytes_used: int
    fp16_region_bytes: int
    sequences: int
    tokens: int  # sum over sequences of their layer-0 length


# kvb_attention_params.precision: how the CUDA backend forms its products (the CPU backend
# computes in fp32 either way). "fp16" (default): fp16 tensor-core operands, fp32 accumulation;
# "fp32": fp32-grade products (decode only; a CUDA extend refuses it).
PRECISIONS = {"fp16": 0, "fp32": 1}


def _attention_params(scale, precision=None):
    p = S.AttentionParams()
    _library.lib().kvb_attention_params_default(C.byref(p))
    if scale is not None:
        try:
            p.scale = float(scale)
        except (TypeError, ValueError):
            raise InvalidArgument(f"scale must be a number, got {scale!r}") from None
    if precision is not None:
        if precision not in PRECISIONS:
            raise InvalidArgument(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        p.precision = PRECISIONS[precision]
    return p


class Cache(Handle):
    """A kvb_cache of one plan on one context. Its whole page pool is allocated here.

    Cache(ctx, plan, max_pages=1024, page_size=64); sink_tokens / window_tokens default to the
    plan's; `model` (a ModelShape) makes a plan for another shape fail with ShapeMismatch.
    kv_heads=(begin, end) makes a cache of those KV heads of the plan only (tensor parallelism:
    one per GPU): append, read and attention then take and give n_kv_heads = end - begin KV heads
    and n_q_heads = (end - begin) * group query heads (attributes of the same names), with results
    identical to those heads of a cache of every head.
    """

    _destroy = "kvb_cache_destroy"
    _kind = "Cache"

    def __init__(self, context, plan, max_pages, page_size=None, sink_tokens=None, window_tokens=None,
                 max_sequences=None, model=None, kv_heads=None):
        super().__init__(None)
        p = S.CacheParams()
        _library.lib().kvb_cache_params_default(C.byref(p))
        p.max_pages = integer(max_pages, "max_pages", 0, U64_MAX)
        if page_size is not None:
            p.page_size = integer(page_size, "page_size")
        if max_sequences is not None:
            p.max_sequences = integer(max_sequences, "max_sequences")
        for name, value in (("sink_tokens", sink_tokens), ("window_tokens", window_tokens)):
            if value is not None:
                setattr(p, name, integer(value, name, -1, 2**63 - 1))
        if kv_heads is not None:
            try:
                begin, end = kv_heads
            except (TypeError, ValueError):
                raise InvalidArgument(f"kv_heads must be a (begin, end) pair, got {kv_heads!r}") from None
            p.kv_head_begin = integer(begin, "kv_heads[0]")
            p.kv_head_end = integer(end, "kv_heads[1]")
        shape_struct = None
        if model is not None:
            if not isinstance(model, ModelShape):
                raise InvalidArgument(f"model must be a kvbits.ModelShape, got {type(model).__name__}")
            shape_struct = model.to_struct()
            p.model = C.pointer(shape_struct)
        # The plan's shape, kept so every call can be checked even after the plan is closed.
        self.info = plan.info()
        out = C.c_void_p()
        _library.call("kvb_cache_create", context._handle(), plan._handle(), C.byref(p), C.byref(out))
        self._ptr = out
        begin, end = C.c_uint32(), C.c_uint32()
        _library.call("kvb_cache_kv_heads", self._handle(), C.byref(begin), C.byref(end))
        self.kv_heads = (begin.value, end.value)
        self.n_kv_heads = end.value - begin.value
        self.n_q_heads = self.n_kv_heads * (self.info.n_q_heads // self.info.n_kv_heads)

    # ---- sequences ------------------------------------------------------------------------

    def add_sequence(self):
        """Adds an empty sequence and returns its id."""
        out = C.c_uint64(SEQ_NONE)
        with self._lock:
            _library.call("kvb_cache_seq_add", self._handle(), C.byref(out))
        return out.value

    def remove_sequence(self, seq):
        with self._lock:
            _library.call("kvb_cache_seq_remove", self._handle(), integer(seq, "seq", 0, U64_MAX))

    def fork(self, src, prefix_len):
        """A new sequence sharing the first prefix_len tokens of src (copy-on-write pages)."""
        out = C.c_uint64(SEQ_NONE)
        with self._lock:
            _library.call("kvb_cache_seq_fork", self._handle(), integer(src, "src", 0, U64_MAX),
                          integer(prefix_len, "prefix_len"), C.byref(out))
        return out.value

    def length(self, seq, layer=0):
        """Tokens held by (seq, layer)."""
        out = C.c_uint32()
        with self._lock:
            _library.call("kvb_cache_seq_length", self._handle(), integer(seq, "seq", 0, U64_MAX),
                          integer(layer, "layer"), C.byref(out))
        return out.value

    def stats(self):
        s = S.new(S.CacheStatsStruct)
        with self._lock:
            _library.call("kvb_cache_get_stats", self._handle(), C.byref(s))
        return CacheStats(**{f.name: getattr(s, f.name) for f in dataclasses.fields(CacheStats)})

    # ---- append and read-back -------------------------------------------------------------

    def _batch(self, seqs, counts, counts_name):
        seq_array = integer_array(seqs, "seqs", np.uint64, U64_MAX)
        count_array = integer_array(counts, counts_name, np.uint32, U32_MAX)
        if len(seq_array) != len(count_array):
            raise ShapeMismatch(f"seqs has {len(seq_array)} entries but {counts_name} has {len(count_array)}")
        return seq_array, count_array

    def append(self, layer, seqs, n_tokens, k, v, dtype=None):
        """Appends post-RoPE keys and values of one layer for several sequences at once.

        seqs[i] gets n_tokens[i] tokens (ints are taken as one sequence);
        k, v: [sum(n_tokens), n_kv_heads, head_dim], sequence after sequence. All or nothing."""
        layer = integer(layer, "layer")
        seq_array, count_array = self._batch(seqs, n_tokens, "n_tokens")
        shape = (int(count_array.sum(dtype=np.uint64)), self.n_kv_heads, self.info.head_dim)
        ka, dtype = input_array(k, "k", shape, dtype)
        va, _ = input_array(v, "v", shape, dtype)
        with self._lock:
            _library.call("kvb_cache_append", self._handle(), layer, seq_array.ctypes.data,
                          count_array.ctypes.data, len(seq_array), ka.ctypes.data, va.ctypes.data, int(dtype), None)

    def read(self, seq, layer, pos=0, n_tokens=None, keys=True, values=True):
        """Reads tokens [pos, pos + n_tokens) of (seq, layer) back as float32 (k, v), each
        [n_tokens, n_kv_heads, head_dim] or None when not asked for. n_tokens defaults to the
        rest of the sequence. Dequantized for packed tokens, exact for fp16 sink/window ones."""
        seq, layer, pos = integer(seq, "seq", 0, U64_MAX), integer(layer, "layer"), integer(pos, "pos")
        if not (keys or values):
            raise InvalidArgument("read needs keys, values or both")
        with self._lock:
            if n_tokens is None:
                n_tokens = max(self.length(seq, layer) - pos, 0)
            n_tokens = integer(n_tokens, "n_tokens")
            shape = (n_tokens, self.n_kv_heads, self.info.head_dim)
            k = np.empty(shape, np.float32) if keys else None
            v = np.empty(shape, np.float32) if values else None
            _library.call("kvb_cache_read", self._handle(), seq, layer, pos, n_tokens,
                          None if k is None else k.ctypes.data, None if v is None else v.ctypes.data)
        return k, v

    # ---- sequence transfer (docs/transfer.md) ---------------------------------------------

    def export_size(self, seq):
        """Bytes export_sequence writes for seq."""
        out = C.c_size_t()
        with self._lock:
            _library.call("kvb_cache_seq_export_size", self._handle(), integer(seq, "seq", 0, U64_MAX), C.byref(out))
        return out.value

    def export_sequence(self, seq):
        """Every layer of seq as bytes: a versioned header and the cache's own page and fp16
        rows. import_sequence on a cache of the same plan, KV-head range, page size and
        sink/window (either backend) restores it bit for bit."""
        seq = integer(seq, "seq", 0, U64_MAX)
        with self._lock:
            buf = C.create_string_buffer(self.export_size(seq))
            written = C.c_size_t()
            _library.call("kvb_cache_seq_export", self._handle(), seq, C.cast(buf, C.c_void_p), len(buf),
                          C.byref(written), None)
        return buf.raw[:written.value]

    def import_sequence(self, data):
        """Adds the sequence exported in `data` (bytes-like) and returns its new id. A corrupt,
        truncated or foreign export raises (CorruptData, ShapeMismatch, ...); the cache is then
        unchanged."""
        try:
            view = memoryview(data).cast("B")
        except TypeError:
            raise InvalidArgument(f"data must be bytes-like, got {type(data).__name__}") from None
        buf = (C.c_uint8 * len(view)).from_buffer_copy(view) if len(view) else (C.c_uint8 * 1)()
        out = C.c_uint64(SEQ_NONE)
        with self._lock:
            _library.call("kvb_cache_seq_import", self._handle(), C.cast(buf, C.c_void_p), len(view), C.byref(out),
                          None)
        return out.value

    def export_ptr(self, seq, buf_ptr, capacity, stream=None):
        """export_sequence into raw memory (device memory on a CUDA context); returns the bytes
        written. capacity below export_size(seq) raises InvalidArgument."""
        written = C.c_size_t()
        with self._lock:
            _library.call("kvb_cache_seq_export", self._handle(), integer(seq, "seq", 0, U64_MAX),
                          pointer(buf_ptr, "buf_ptr"), integer(capacity, "capacity", 0, 2**64 - 1),
                          C.byref(written), pointer(stream, "stream"))
        return written.value

    def import_ptr(self, buf_ptr, size, stream=None):
        """import_sequence from raw memory (device memory on a CUDA context) of `size` bytes."""
        out = C.c_uint64(SEQ_NONE)
        with self._lock:
            _library.call("kvb_cache_seq_import", self._handle(), pointer(buf_ptr, "buf_ptr"),
                          integer(size, "size", 0, 2**64 - 1), C.byref(out), pointer(stream, "stream"))
        return out.value

    # ---- attention ------------------------------------------------------------------------

    def decode(self, layer, seqs, q, dtype=None, scale=None, out=None, lse=None, precision=None):
        """Decode attention: one query per sequence over everything (seq, layer) holds.

        q [n_seqs, n_q_heads, head_dim]; returns (out [n_seqs, n_q_heads, head_dim],
        lse [n_seqs, n_q_heads]) float32, written into `out` / `lse` when given. `scale`
        defaults to 1/sqrt(head_dim); `precision` is "fp16" (default) or "fp32" (PRECISIONS). The
        query's own key and value must be appended first."""
        layer = integer(layer, "layer")
        seq_array = integer_array(seqs, "seqs", np.uint64, U64_MAX)
        return self._attend("kvb_attention_decode", layer, seq_array, None, len(seq_array), q, dtype,
                            _attention_params(scale, precision), out, lse)

    def extend(self, layer, seqs, q_len, q, dtype=None, scale=None, out=None, lse=None, precision=None):
        """Causal attention of the last q_len[i] tokens of each sequence (chunked prefill,
        speculative verification): q [sum(q_len), n_q_heads, head_dim], sequence after
        sequence; returns (out [sum(q_len), n_q_heads, head_dim], lse [sum(q_len), n_q_heads])."""
        layer = integer(layer, "layer")
        seq_array, len_array = self._batch(seqs, q_len, "q_len")
        return self._attend("kvb_attention_extend", layer, seq_array, len_array,
                            int(len_array.sum(dtype=np.uint64)), q, dtype, _attention_params(scale, precision),
                            out, lse)

    def _attend(self, fn, layer, seq_array, len_array, rows, q, dtype, params, out, lse):
        info = self.info
        qa, dtype = input_array(q, "q", (rows, self.n_q_heads, info.head_dim), dtype)
        out = output_array(out, "out", (rows, self.n_q_heads, info.head_dim))
        lse = output_array(lse, "lse", (rows, self.n_q_heads))
        lens = () if len_array is None else (len_array.ctypes.data,)
        with self._lock:
            _library.call(fn, self._handle(), layer, seq_array.ctypes.data, *lens, len(seq_array), qa.ctypes.data,
                          int(dtype), out.ctypes.data, lse.ctypes.data, C.byref(params), None)
        return out, lse

    # ---- raw pointers (GPU tensors, foreign buffers) ----------------------------------------

    def append_ptr(self, layer, seqs, n_tokens, k_ptr, v_ptr, dtype, stream=None):
        """append() on raw addresses: k_ptr, v_ptr point at [sum(n_tokens), n_kv_heads,
        head_dim] elements of `dtype` (device memory on a CUDA context); stream is a
        cudaStream_t handle (e.g. torch.cuda.current_stream().cuda_stream), None = default."""
        layer, dtype = integer(layer, "layer"), to_dtype(dtype)
        seq_array, count_array = self._batch(seqs, n_tokens, "n_tokens")
        with self._lock:
            _library.call("kvb_cache_append", self._handle(), layer, seq_array.ctypes.data, count_array.ctypes.data,
                          len(seq_array), pointer(k_ptr, "k_ptr"), pointer(v_ptr, "v_ptr"), int(dtype),
                          pointer(stream, "stream"))

    def decode_ptr(self, layer, seqs, q_ptr, dtype, out_ptr, lse_ptr=None, scale=None, stream=None, precision=None):
        """decode() on raw addresses: q [n_seqs, n_q_heads, head_dim] of `dtype`, out the same
        shape in float32, lse [n_seqs, n_q_heads] float32 or None."""
        layer, dtype = integer(layer, "layer"), to_dtype(dtype)
        seq_array = integer_array(seqs, "seqs", np.uint64, U64_MAX)
        params = _attention_params(scale, precision)
        with self._lock:
            _library.call("kvb_attention_decode", self._handle(), layer, seq_array.ctypes.data, len(seq_array),
                          pointer(q_ptr, "q_ptr"), int(dtype), pointer(out_ptr, "out_ptr"),
                          pointer(lse_ptr, "lse_ptr"), C.byref(params), pointer(stream, "stream"))

    def extend_ptr(self, layer, seqs, q_len, q_ptr, dtype, out_ptr, lse_ptr=None, scale=None, stream=None,
                   precision=None):
        """extend() on raw addresses: q [sum(q_len), n_q_heads, head_dim] of `dtype`, out the
        same shape in float32, lse [sum(q_len), n_q_heads] float32 or None."""
        layer, dtype = integer(layer, "layer"), to_dtype(dtype)
        seq_array, len_array = self._batch(seqs, q_len, "q_len")
        params = _attention_params(scale, precision)
        with self._lock:
            _library.call("kvb_attention_extend", self._handle(), layer, seq_array.ctypes.data,
                          len_array.ctypes.data, len(seq_array), pointer(q_ptr, "q_ptr"), int(dtype),
                          pointer(out_ptr, "out_ptr"), pointer(lse_ptr, "lse_ptr"), C.byref(params),
                          pointer(stream, "stream"))
