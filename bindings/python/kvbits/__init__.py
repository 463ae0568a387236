"""kvbits: Python bindings (ctypes + numpy) of the kvbits C API (capi/kvbits.h).

    import numpy as np, kvbits
    with kvbits.Context("cpu") as ctx, kvbits.Plan.load("model.kvbplan") as plan, \\
         kvbits.Cache(ctx, plan, max_pages=1024) as cache:
        seq = cache.add_sequence()
        cache.append(layer, seq, n_tokens, k, v)      # k, v [n_tokens, n_kv_heads, head_dim]
        out, lse = cache.decode(layer, [seq], q)     # q [1, n_q_heads, head_dim]

Errors raise kvbits.Error subclasses (InvalidArgument, NotFound, ...) carrying the status and
the library's message. The library is found through KVBITS_LIBRARY, pkg-config or the loader.
"""
from . import _library
from ._tensors import DType, from_bf16, to_bf16
from .cache import SEQ_NONE, Cache, CacheStats
from .calibrator import Calibrator
from .context import Backend, Context
from .errors import (CapacityExhausted, CorruptData, DeviceError, Error, InternalError, InvalidArgument,
                     IOFailure, LibraryNotFound, NotFound, NullPointer, OutOfMemory, ShapeMismatch, Unsupported,
                     VersionUnsupported)
from .plan import Codebooks, Method, ModelShape, Plan, PlanInfo, RopeLayout, Score

__version__ = "0.1.0"

__all__ = [
    "Backend", "Cache", "CacheStats", "Calibrator", "Codebooks", "Context", "DType", "Method", "ModelShape",
    "Plan", "PlanInfo", "RopeLayout", "Score", "SEQ_NONE", "from_bf16", "to_bf16", "library_path",
    "library_version", "library_version_number", "status_string",
    "Error", "InvalidArgument", "NullPointer", "ShapeMismatch", "Unsupported", "CorruptData",
    "VersionUnsupported", "IOFailure", "OutOfMemory", "CapacityExhausted", "NotFound", "InternalError",
    "DeviceError", "LibraryNotFound",
]


def library_version():
    """Version string of the loaded libkvbits ("0.1.0")."""
    return _library.lib().kvb_version_string().decode()


def library_version_number():
    """MAJOR*10000 + MINOR*100 + PATCH of the loaded libkvbits."""
    return int(_library.lib().kvb_version_number())


def library_path():
    """Where the loaded libkvbits came from."""
    return _library.lib().path


def status_string(status):
    """The library's name of a status ("corrupt_data"; "unknown_status" for other values)."""
    from ._tensors import integer
    return _library.lib().kvb_status_string(integer(status, "status", -2**31, 2**31 - 1)).decode()
