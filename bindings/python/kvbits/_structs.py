"""ctypes mirrors of the versioned structs in capi/kvbits.h (same field order and types).

Each struct starts with struct_size, which the binding sets to ctypes.sizeof of its mirror; the
library reads only what both sides know. The tests check every size and field offset against
what the library's *_default() functions write.
"""
import ctypes as C

ERROR_MESSAGE_CAPACITY = 512


class KvbError(C.Structure):
    _fields_ = [("struct_size", C.c_uint32), ("status", C.c_int32),
                ("message", C.c_char * ERROR_MESSAGE_CAPACITY)]


class ModelShapeStruct(C.Structure):
    _fields_ = [("struct_size", C.c_uint32), ("n_layers", C.c_uint32), ("n_q_heads", C.c_uint32),
                ("n_kv_heads", C.c_uint32), ("head_dim", C.c_uint32), ("rotary_dim", C.c_uint32),
                ("rope_layout", C.c_int32), ("reserved", C.c_uint32), ("rope_theta", C.c_double)]


class ContextParams(C.Structure):
    _fields_ = [("struct_size", C.c_uint32), ("backend", C.c_int32), ("device", C.c_int32),
                ("n_threads", C.c_uint32), ("reserved", C.c_uint32 * 8)]


class PlanInfoStruct(C.Structure):
    _fields_ = [("struct_size", C.c_uint32), ("n_layers", C.c_uint32), ("n_q_heads", C.c_uint32),
                ("n_kv_heads", C.c_uint32), ("head_dim", C.c_uint32), ("rotary_dim", C.c_uint32),
                ("rope_layout", C.c_int32), ("rope_theta", C.c_double), ("method", C.c_int32),
                ("k_avg_bits", C.c_double), ("v_bits", C.c_uint32), ("sink_tokens", C.c_uint32),
                ("window_tokens", C.c_uint32), ("n_fp16_layers", C.c_uint32),
                ("bytes_per_token_per_head", C.c_double), ("bytes_per_token_total", C.c_uint64),
                ("calib_tokens", C.c_uint64)]


class PlanOptionsStruct(C.Structure):
    _fields_ = [("struct_size", C.c_uint32), ("method", C.c_int32), ("k_avg_bits", C.c_double),
                ("k_min_bits", C.c_int32), ("k_max_bits", C.c_int32), ("v_bits", C.c_int32),
                ("score", C.c_int32), ("codebooks", C.c_int32), ("sink_tokens", C.c_uint32),
                ("window_tokens", C.c_uint32), ("n_fp16_layers", C.c_uint32),
                ("fp16_layers", C.POINTER(C.c_uint32)), ("rotation_seed", C.c_uint64),
                ("corpus", C.c_char_p), ("date", C.c_char_p), ("model_fingerprint_hex", C.c_char_p),
                ("reserved", C.c_uint32 * 8)]


class CacheParams(C.Structure):
    _fields_ = [("struct_size", C.c_uint32), ("page_size", C.c_uint32), ("max_pages", C.c_uint64),
                ("sink_tokens", C.c_int64), ("window_tokens", C.c_int64),
                ("model", C.POINTER(ModelShapeStruct)), ("max_sequences", C.c_uint32),
                ("kv_head_begin", C.c_uint32), ("kv_head_end", C.c_uint32), ("reserved", C.c_uint32 * 5)]


class CacheStatsStruct(C.Structure):
    _fields_ = [("struct_size", C.c_uint32), ("page_size", C.c_uint32), ("pages_total", C.c_uint64),
                ("pages_used", C.c_uint64), ("pool_bytes", C.c_uint64), ("packed_bytes_used", C.c_uint64),
                ("fp16_region_bytes", C.c_uint64), ("sequences", C.c_uint64), ("tokens", C.c_uint64)]


class AttentionParams(C.Structure):
    _fields_ = [("struct_size", C.c_uint32), ("scale", C.c_float), ("precision", C.c_uint32),
                ("reserved", C.c_uint32 * 5)]


def new(struct_type):
    """A zeroed struct with struct_size set (for output structs without a *_default())."""
    s = struct_type()
    s.struct_size = C.sizeof(struct_type)
    return s
