"""The calibrator: query/key samples -> per-RoPE-block energies -> a bit plan."""
import ctypes as C

import numpy as np

from . import _library, _structs as S
from ._handle import Handle
from ._tensors import input_array, integer
from .errors import InvalidArgument, ShapeMismatch
from .plan import Codebooks, Method, ModelShape, Plan, RopeLayout, Score, enum_value


class Calibrator(Handle):
    """A kvb_calibrator for one model shape on a context.

    observe() takes query and key activations of one layer (pre- or post-RoPE: the statistics
    are the same); build_plan() allocates bits from everything observed so far.
    """

    _destroy = "kvb_calibrator_destroy"
    _kind = "Calibrator"

    def __init__(self, context, shape):
        super().__init__(None)
        if not isinstance(shape, ModelShape):
            raise InvalidArgument(f"shape must be a kvbits.ModelShape, got {type(shape).__name__}")
        s = shape.to_struct()
        out = C.c_void_p()
        _library.call("kvb_calibrator_create", context._handle(), C.byref(s), C.byref(out))
        self._ptr = out
        # A copy of what the library got: observe() sizes the caller's arrays with it.
        self.shape = ModelShape(s.n_layers, s.n_q_heads, s.n_kv_heads, s.head_dim, s.rotary_dim,
                                RopeLayout(s.rope_layout), s.rope_theta)

    def observe(self, layer, q=None, k=None, dtype=None):
        """Observes one chunk of one layer: q [n_tokens, n_q_heads, head_dim] and/or
        k [n_tokens, n_kv_heads, head_dim], float32 / float16 / bf16 (uint16, dtype='bf16')."""
        layer = integer(layer, "layer")
        if q is None and k is None:
            raise InvalidArgument("observe needs q, k or both")
        first, name = (q, "q") if q is not None else (k, "k")
        if not isinstance(first, np.ndarray):
            raise InvalidArgument(f"{name} must be a numpy.ndarray, got {type(first).__name__}")
        if first.ndim != 3 or first.shape[0] < 1:
            raise ShapeMismatch(f"{name} must have shape [n_tokens >= 1, heads, head_dim], got {first.shape}")
        n_tokens = first.shape[0]
        d = self.shape.head_dim
        qa = ka = None
        if q is not None:
            qa, dtype = input_array(q, "q", (n_tokens, self.shape.n_q_heads, d), dtype)
        if k is not None:
            ka, dtype = input_array(k, "k", (n_tokens, self.shape.n_kv_heads, d), dtype)
        with self._lock:
            _library.call("kvb_calibrator_observe", self._handle(), layer,
                          None if qa is None else qa.ctypes.data, None if ka is None else ka.ctypes.data,
                          n_tokens, int(dtype))

    def build_plan(self, *, method=None, k_avg_bits=None, k_min_bits=None, k_max_bits=None, v_bits=None,
                   score=None, codebooks=None, sink_tokens=None, window_tokens=None, fp16_layers=(),
                   rotation_seed=None, corpus=None, date=None, model_fingerprint_hex=None):
        """Builds a validated plan. Options left None keep the library's defaults (Block-GTQ,
        3 key bits on average in [1, 8], 3 value bits, product score, Lloyd-Max codebooks, seed 42).
        `date` is recorded as given (no clock is read), so equal inputs give equal plan bytes."""
        o = S.PlanOptionsStruct()
        _library.lib().kvb_plan_options_default(C.byref(o))
        if method is not None:
            o.method = enum_value(Method, method, "method")
        if score is not None:
            o.score = enum_value(Score, score, "score")
        if codebooks is not None:
            o.codebooks = enum_value(Codebooks, codebooks, "codebooks")
        if k_avg_bits is not None:
            try:
                o.k_avg_bits = float(k_avg_bits)
            except (TypeError, ValueError):
                raise InvalidArgument(f"k_avg_bits must be a number, got {k_avg_bits!r}") from None
        for name, value in (("k_min_bits", k_min_bits), ("k_max_bits", k_max_bits), ("v_bits", v_bits)):
            if value is not None:
                setattr(o, name, integer(value, name, -2**31, 2**31 - 1))
        for name, value in (("sink_tokens", sink_tokens), ("window_tokens", window_tokens)):
            if value is not None:
                setattr(o, name, integer(value, name))
        if rotation_seed is not None:
            o.rotation_seed = integer(rotation_seed, "rotation_seed", 0, 2**64 - 1)
        layers = [integer(x, f"fp16_layers[{i}]") for i, x in enumerate(fp16_layers or ())]
        layer_array = (C.c_uint32 * max(1, len(layers)))(*layers)
        o.n_fp16_layers = len(layers)
        o.fp16_layers = C.cast(layer_array, C.POINTER(C.c_uint32)) if layers else None
        texts = {}
        for name, value in (("corpus", corpus), ("date", date), ("model_fingerprint_hex", model_fingerprint_hex)):
            if value is not None:
                if not isinstance(value, str):
                    raise InvalidArgument(f"{name} must be a str, got {type(value).__name__}")
                if "\0" in value:
                    raise InvalidArgument(f"{name} contains a NUL character")
                texts[name] = value.encode("utf-8")  # kept alive until the call returns
                setattr(o, name, texts[name])
        out = C.c_void_p()
        with self._lock:
            _library.call("kvb_calibrator_build_plan", self._handle(), C.byref(o), C.byref(out))
        return Plan._adopt(out)
