"""Finding and loading libkvbits.so, the C prototypes, and the checked call helper.

The library is located, in order, through
  1. KVBITS_LIBRARY: the path of the library file (or of a folder holding libkvbits.so);
  2. `pkg-config --variable=libdir kvbits`;
  3. ctypes.util.find_library("kvbits") (the system loader's search path).
It is loaded on first use, so `import kvbits` works (and can say what is missing) without it.
"""
import ctypes as C
import ctypes.util
import os
import shutil
import subprocess
import threading

from . import _structs as S
from .errors import LibraryNotFound, VersionUnsupported, error_for_status, OK

# The oldest library whose ABI this binding speaks: 0.1.0 (KVB_VERSION_NUMBER encoding).
MIN_VERSION_NUMBER = 100
MAJOR = 0

_LIB_NAMES = ("libkvbits.so", "libkvbits.so.0", "libkvbits.dylib")

_lock = threading.Lock()
_lib = None

_p = C.c_void_p  # handles and tensor pointers travel as plain addresses
_err = C.POINTER(S.KvbError)
_u32, _i32, _u64, _size = C.c_uint32, C.c_int32, C.c_uint64, C.c_size_t

# name: (restype, argtypes)
_PROTOTYPES = {
    "kvb_version_number": (_u32, []),
    "kvb_version_string": (C.c_char_p, []),
    "kvb_status_string": (C.c_char_p, [_i32]),
    "kvb_error_init": (None, [_err]),
    "kvb_model_shape_default": (None, [C.POINTER(S.ModelShapeStruct)]),
    "kvb_context_params_default": (None, [C.POINTER(S.ContextParams)]),
    "kvb_context_create": (_i32, [C.POINTER(S.ContextParams), C.POINTER(_p), _err]),
    "kvb_context_destroy": (None, [_p]),
    "kvb_context_backend": (_i32, [_p, C.POINTER(_i32), C.POINTER(_i32), _err]),
    "kvb_context_last_error": (_size, [_p, C.c_char_p, _size]),
    "kvb_plan_load_file": (_i32, [C.c_char_p, C.POINTER(_p), _err]),
    "kvb_plan_load_memory": (_i32, [_p, _size, C.POINTER(_p), _err]),
    "kvb_plan_save_file": (_i32, [_p, C.c_char_p, _err]),
    "kvb_plan_serialize": (_i32, [_p, _p, _size, C.POINTER(_size), _err]),
    "kvb_plan_destroy": (None, [_p]),
    "kvb_plan_get_info": (_i32, [_p, C.POINTER(S.PlanInfoStruct), _err]),
    "kvb_plan_bytes_per_token": (_i32, [_p, _u32, _u32, C.POINTER(_u64), _err]),
    "kvb_plan_check_shape": (_i32, [_p, _u32, _u32, _u32, _u32, _err]),
    "kvb_plan_check_model": (_i32, [_p, C.POINTER(S.ModelShapeStruct), _err]),
    "kvb_plan_supported": (_i32, [_p, _p, _err]),
    "kvb_calibrator_create": (_i32, [_p, C.POINTER(S.ModelShapeStruct), C.POINTER(_p), _err]),
    "kvb_calibrator_destroy": (None, [_p]),
    "kvb_calibrator_observe": (_i32, [_p, _u32, _p, _p, _size, _i32, _err]),
    "kvb_plan_options_default": (None, [C.POINTER(S.PlanOptionsStruct)]),
    "kvb_calibrator_build_plan": (_i32, [_p, C.POINTER(S.PlanOptionsStruct), C.POINTER(_p), _err]),
    "kvb_cache_params_default": (None, [C.POINTER(S.CacheParams)]),
    "kvb_cache_create": (_i32, [_p, _p, C.POINTER(S.CacheParams), C.POINTER(_p), _err]),
    "kvb_cache_destroy": (None, [_p]),
    "kvb_cache_seq_add": (_i32, [_p, C.POINTER(_u64), _err]),
    "kvb_cache_seq_remove": (_i32, [_p, _u64, _err]),
    "kvb_cache_seq_fork": (_i32, [_p, _u64, _u32, C.POINTER(_u64), _err]),
    "kvb_cache_seq_length": (_i32, [_p, _u64, _u32, C.POINTER(_u32), _err]),
    "kvb_cache_append": (_i32, [_p, _u32, _p, _p, _size, _p, _p, _i32, _p, _err]),
    "kvb_cache_read": (_i32, [_p, _u64, _u32, _u32, _u32, _p, _p, _err]),
    "kvb_cache_get_stats": (_i32, [_p, C.POINTER(S.CacheStatsStruct), _err]),
    "kvb_cache_kv_heads": (_i32, [_p, C.POINTER(_u32), C.POINTER(_u32), _err]),
    "kvb_cache_seq_export_size": (_i32, [_p, _u64, C.POINTER(_size), _err]),
    "kvb_cache_seq_export": (_i32, [_p, _u64, _p, _size, C.POINTER(_size), _p, _err]),
    "kvb_cache_seq_import": (_i32, [_p, _p, _size, C.POINTER(_u64), _p, _err]),
    "kvb_attention_params_default": (None, [C.POINTER(S.AttentionParams)]),
    "kvb_attention_decode": (_i32, [_p, _u32, _p, _size, _p, _i32, _p, _p, C.POINTER(S.AttentionParams), _p, _err]),
    "kvb_attention_extend": (_i32, [_p, _u32, _p, _p, _size, _p, _i32, _p, _p, C.POINTER(S.AttentionParams), _p,
                                    _err]),
}


def _candidates():
    """(description, path-or-name) pairs in search order; KVBITS_LIBRARY alone when set."""
    env = os.environ.get("KVBITS_LIBRARY")
    if env:
        if os.path.isdir(env):
            return [("KVBITS_LIBRARY", os.path.join(env, n)) for n in _LIB_NAMES]
        return [("KVBITS_LIBRARY", env)]
    found = []
    if shutil.which("pkg-config"):
        try:
            libdir = subprocess.run(["pkg-config", "--variable=libdir", "kvbits"], capture_output=True,
                                    text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            libdir = ""
        if libdir:
            found += [("pkg-config libdir", os.path.join(libdir, n)) for n in _LIB_NAMES]
    name = ctypes.util.find_library("kvbits")
    if name:
        found.append(("ctypes.util.find_library", name))
    return found


def _load():
    tried = []
    for how, path in _candidates():
        if os.path.sep in path and not os.path.exists(path):
            tried.append(f"{path} ({how}: no such file)")
            continue
        try:
            return C.CDLL(path), path
        except OSError as e:
            tried.append(f"{path} ({how}: {e})")
    hint = ("set KVBITS_LIBRARY to the path of libkvbits.so, or PKG_CONFIG_PATH to the folder of kvbits.pc, "
            "or LD_LIBRARY_PATH to the library's folder")
    raise LibraryNotFound("libkvbits not found; tried: " + ("; ".join(tried) or "nothing") + ". " + hint)


def lib():
    """The loaded library with prototypes set; loads it on first use."""
    global _lib
    if _lib is not None:
        return _lib
    with _lock:
        if _lib is None:
            handle, path = _load()
            for name, (res, args) in _PROTOTYPES.items():
                try:
                    fn = getattr(handle, name)
                except AttributeError:
                    raise LibraryNotFound(f"{path} lacks {name}: not a kvbits library this binding can use")
                fn.restype, fn.argtypes = res, args
            number = handle.kvb_version_number()
            if number // 10000 != MAJOR or number < MIN_VERSION_NUMBER:
                raise VersionUnsupported(
                    f"{path} is kvbits {handle.kvb_version_string().decode()}; this binding needs "
                    f"{MAJOR}.x with x >= {MIN_VERSION_NUMBER // 100 % 100}")
            handle.path = path
            _lib = handle
    return _lib


def call(name, *args):
    """Calls kvb_<name>(*args, &err) and raises the status's exception with err.message."""
    err = S.KvbError()
    err.struct_size = C.sizeof(S.KvbError)
    status = getattr(lib(), name)(*args, C.byref(err))
    if status != OK:
        raise error_for_status(status, err.message.decode("utf-8", "replace"), name)
