"""numpy in, numpy out: element types, shape checks and integer ranges, all checked before a
library call so that a wrong array never reaches C (where sizes cannot be checked)."""
import enum

import numpy as np

from .errors import InvalidArgument, ShapeMismatch

U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1


class DType(enum.IntEnum):
    """kvb_dtype: element type of an input tensor. Outputs are always float32."""
    F32 = 0
    F16 = 1
    BF16 = 2


_DTYPE_NAMES = {"f32": DType.F32, "float32": DType.F32, "f16": DType.F16, "float16": DType.F16,
                "bf16": DType.BF16, "bfloat16": DType.BF16}


def to_dtype(value):
    """A DType from a DType, its int value or a name ('f32', 'float16', 'bf16', ...)."""
    if isinstance(value, DType):
        return value
    if isinstance(value, str) and value.lower() in _DTYPE_NAMES:
        return _DTYPE_NAMES[value.lower()]
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and int(value) in (0, 1, 2):
        return DType(int(value))
    raise InvalidArgument(f"dtype {value!r} is not one of 'f32', 'f16', 'bf16' (or kvbits.DType)")


def _inferred_dtype(arr):
    """The DType an array's numpy dtype stands for, or None (uint16 is bf16 only when asked)."""
    if arr.dtype == np.float32:
        return DType.F32
    if arr.dtype == np.float16:
        return DType.F16
    if arr.dtype.name == "bfloat16" and arr.dtype.itemsize == 2:  # ml_dtypes / JAX arrays
        return DType.BF16
    return None


def input_array(arr, name, shape, dtype=None):
    """Checks a caller's tensor and returns (C-contiguous ndarray, DType).

    float32 and float16 arrays carry their type; bf16 data comes as uint16 (the raw bits) with
    dtype='bf16', or as an ml_dtypes bfloat16 array. A given dtype must agree with the array's.
    """
    if not isinstance(arr, np.ndarray):
        raise InvalidArgument(f"{name} must be a numpy.ndarray, got {type(arr).__name__}")
    want = None if dtype is None else to_dtype(dtype)
    have = _inferred_dtype(arr)
    if want is None:
        if have is None:
            if arr.dtype == np.uint16:
                raise InvalidArgument(f"{name} has dtype uint16: pass dtype='bf16' if it holds bf16 bits")
            raise InvalidArgument(f"{name} has dtype {arr.dtype}; kvbits takes float32, float16, or bf16 bits as "
                                  f"uint16 with dtype='bf16'")
        want = have
    elif want == DType.BF16:
        if arr.dtype != np.uint16 and have != DType.BF16:
            raise InvalidArgument(f"{name} has dtype {arr.dtype}; dtype='bf16' takes uint16 (the bf16 bits)")
    elif have != want:
        raise InvalidArgument(f"{name} has dtype {arr.dtype} but dtype={want.name.lower()} was given")
    check_shape(arr, name, shape)
    return np.ascontiguousarray(arr), want


def check_shape(arr, name, shape):
    if tuple(arr.shape) != tuple(shape):
        raise ShapeMismatch(f"{name} has shape {tuple(arr.shape)}, expected {tuple(shape)}")


def output_array(out, name, shape):
    """A float32 output buffer: a new one, or the caller's, which must fit exactly."""
    if out is None:
        return np.empty(shape, dtype=np.float32)
    if not isinstance(out, np.ndarray):
        raise InvalidArgument(f"{name} must be a numpy.ndarray, got {type(out).__name__}")
    if out.dtype != np.float32:
        raise InvalidArgument(f"{name} has dtype {out.dtype}; outputs are float32")
    if not (out.flags.c_contiguous and out.flags.writeable):
        raise InvalidArgument(f"{name} must be C-contiguous and writeable")
    check_shape(out, name, shape)
    return out


def integer(value, name, lo=0, hi=U32_MAX):
    """A Python int in [lo, hi]; ctypes would otherwise wrap an out-of-range value silently."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidArgument(f"{name} must be an integer, got {type(value).__name__}")
    value = int(value)
    if not lo <= value <= hi:
        raise InvalidArgument(f"{name} is {value}, outside [{lo}, {hi}]")
    return value


def integer_array(values, name, np_type, hi):
    """A 1-D C-contiguous array of integers in [0, hi] from an int or an iterable of ints."""
    if isinstance(values, (int, np.integer)) and not isinstance(values, bool):
        values = [values]
    try:
        items = [integer(v, f"{name}[{i}]", 0, hi) for i, v in enumerate(values)]
    except TypeError:
        raise InvalidArgument(f"{name} must be an integer or a sequence of integers")
    if not items:
        raise InvalidArgument(f"{name} is empty (at least one entry is needed)")
    return np.ascontiguousarray(items, dtype=np_type)


def pointer(value, name):
    """A raw address (e.g. torch.Tensor.data_ptr()) as an int; None and 0 mean NULL."""
    if value is None:
        return None
    return integer(value, name, 0, U64_MAX) or None


def to_bf16(x):
    """float32 values -> their bf16 bits as uint16 (round to nearest even; NaN stays NaN)."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    nan = (bits & 0x7FFFFFFF) > 0x7F800000
    return np.where(nan, (bits >> 16) | 0x40, rounded).astype(np.uint16)


def from_bf16(bits):
    """bf16 bits (uint16) -> float32."""
    return (np.ascontiguousarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
