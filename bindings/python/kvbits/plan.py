"""Bit plans (load from a file or bytes, save, serialise, describe) and model shapes."""
import ctypes as C
import dataclasses
import enum
import os

from . import _library, _structs as S
from ._handle import Handle
from ._tensors import integer
from .errors import InvalidArgument


class RopeLayout(enum.IntEnum):
    SPLIT_HALF = 0   # Hugging Face rotate_half: Llama, Qwen, Mistral
    INTERLEAVED = 1  # llama2.c, GPT-J, GLM


class Method(enum.IntEnum):
    BLOCK_GTQ = 0
    UNIFORM_TQ_MSE = 1


class Score(enum.IntEnum):
    ENERGY = 0   # (Eq + Ek) / 2, the paper's score
    PRODUCT = 1  # Eq * Ek, the default


class Codebooks(enum.IntEnum):
    LLOYD_MAX = 0
    REFERENCE = 1


def enum_value(enum_type, value, name):
    """An enum member from a member, its int value or its name ('block_gtq', 'block-gtq')."""
    if isinstance(value, str):
        key = value.upper().replace("-", "_")
        if key in enum_type.__members__:
            return enum_type[key]
    elif isinstance(value, int) and not isinstance(value, bool):
        try:
            return enum_type(value)
        except ValueError:
            pass
    names = ", ".join(m.lower() for m in enum_type.__members__)
    raise InvalidArgument(f"{name} {value!r} is not one of {names}")


@dataclasses.dataclass
class ModelShape:
    """The attention shape of a model (kvb_model_shape)."""
    n_layers: int
    n_q_heads: int
    n_kv_heads: int
    head_dim: int
    rotary_dim: int = 0  # 0 = head_dim
    rope_layout: RopeLayout = RopeLayout.SPLIT_HALF
    rope_theta: float = 10000.0

    def to_struct(self):
        s = S.ModelShapeStruct()
        _library.lib().kvb_model_shape_default(C.byref(s))
        for f in ("n_layers", "n_q_heads", "n_kv_heads", "head_dim", "rotary_dim"):
            setattr(s, f, integer(getattr(self, f), f"shape.{f}"))
        s.rope_layout = enum_value(RopeLayout, self.rope_layout, "shape.rope_layout")
        try:
            s.rope_theta = float(self.rope_theta)
        except (TypeError, ValueError):
            raise InvalidArgument(f"shape.rope_theta must be a number, got {self.rope_theta!r}") from None
        return s


@dataclasses.dataclass(frozen=True)
class PlanInfo:
    """What kvb_plan_get_info reports."""
    n_layers: int
    n_q_heads: int
    n_kv_heads: int
    head_dim: int
    rotary_dim: int
    rope_layout: RopeLayout
    rope_theta: float
    method: Method
    k_avg_bits: float
    v_bits: int
    sink_tokens: int
    window_tokens: int
    n_fp16_layers: int
    bytes_per_token_per_head: float
    bytes_per_token_total: int
    calib_tokens: int

    @property
    def shape(self):
        return ModelShape(self.n_layers, self.n_q_heads, self.n_kv_heads, self.head_dim, self.rotary_dim,
                          self.rope_layout, self.rope_theta)


class Plan(Handle):
    """A kvb_plan: immutable, safe to share between threads, contexts and caches."""

    _destroy = "kvb_plan_destroy"
    _kind = "Plan"

    @classmethod
    def _adopt(cls, ptr):
        plan = cls.__new__(cls)
        Handle.__init__(plan, ptr.value)
        return plan

    @classmethod
    def load(cls, path):
        """Loads and fully validates a plan file."""
        out = C.c_void_p()
        _library.call("kvb_plan_load_file", os.fsencode(path), C.byref(out))
        return cls._adopt(out)

    @classmethod
    def from_bytes(cls, data):
        """Loads a plan from bytes (bytes, bytearray, memoryview or a uint8 array)."""
        try:
            buf = bytes(memoryview(data).cast("B"))
        except TypeError:
            raise InvalidArgument(f"plan data must be bytes-like, got {type(data).__name__}") from None
        out = C.c_void_p()
        _library.call("kvb_plan_load_memory", C.c_char_p(buf), len(buf), C.byref(out))
        return cls._adopt(out)

    def save(self, path):
        """Writes the plan atomically; the same plan always gives the same bytes."""
        with self._lock:
            _library.call("kvb_plan_save_file", self._handle(), os.fsencode(path))

    def to_bytes(self):
        with self._lock:
            ptr = self._handle()
            size = C.c_size_t()
            _library.call("kvb_plan_serialize", ptr, None, 0, C.byref(size))
            buf = C.create_string_buffer(size.value)
            _library.call("kvb_plan_serialize", ptr, buf, size.value, C.byref(size))
        return buf.raw[:size.value]

    def info(self):
        s = S.new(S.PlanInfoStruct)
        with self._lock:
            _library.call("kvb_plan_get_info", self._handle(), C.byref(s))
        values = {f.name: getattr(s, f.name) for f in dataclasses.fields(PlanInfo)}
        values["rope_layout"] = RopeLayout(values["rope_layout"])
        values["method"] = Method(values["method"])
        return PlanInfo(**values)

    def bytes_per_token(self, layer, kv_head):
        """Packed bytes per token of one (layer, KV head)."""
        out = C.c_uint64()
        with self._lock:
            _library.call("kvb_plan_bytes_per_token", self._handle(), integer(layer, "layer"),
                          integer(kv_head, "kv_head"), C.byref(out))
        return out.value

    def check_shape(self, n_layers, n_q_heads, n_kv_heads, head_dim):
        """Raises kvbits.ShapeMismatch (naming the field) unless the plan was made for this shape."""
        with self._lock:
            _library.call("kvb_plan_check_shape", self._handle(), integer(n_layers, "n_layers"),
                          integer(n_q_heads, "n_q_heads"), integer(n_kv_heads, "n_kv_heads"),
                          integer(head_dim, "head_dim"))

    def check_model(self, shape):
        """Same as check_shape for a full ModelShape (rotary dim, RoPE layout and theta too)."""
        s = shape.to_struct()
        with self._lock:
            _library.call("kvb_plan_check_model", self._handle(), C.byref(s))
