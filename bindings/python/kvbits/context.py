"""Contexts: one backend (the CPU reference with its worker threads, or one CUDA device)."""
import ctypes as C
import enum

from . import _library, _structs as S
from ._handle import Handle
from ._tensors import integer
from .errors import InvalidArgument


class Backend(enum.IntEnum):
    CPU = 0
    CUDA = 1
    AUTO = 2  # CUDA when this build and machine have a device, else CPU


def _to_backend(value):
    if isinstance(value, str):
        try:
            return Backend[value.upper()]
        except KeyError:
            raise InvalidArgument(f"backend {value!r} is not one of 'cpu', 'cuda', 'auto'") from None
    try:
        return Backend(integer(value, "backend", 0, 2))
    except ValueError:
        raise InvalidArgument(f"backend {value!r} is not a kvbits.Backend") from None


class Context(Handle):
    """A kvb_context. `Context()` picks CUDA when available (AUTO); Context('cpu', n_threads=2)."""

    _destroy = "kvb_context_destroy"
    _kind = "Context"

    def __init__(self, backend=Backend.AUTO, device=0, n_threads=0):
        super().__init__(None)
        params = S.ContextParams()
        _library.lib().kvb_context_params_default(C.byref(params))
        params.backend = _to_backend(backend)
        params.device = integer(device, "device", 0, 2**31 - 1)
        params.n_threads = integer(n_threads, "n_threads")
        out = C.c_void_p()
        _library.call("kvb_context_create", C.byref(params), C.byref(out))
        self._ptr = out

    @property
    def backend(self):
        """The backend the context runs on (never AUTO)."""
        return self.backend_and_device()[0]

    @property
    def device(self):
        """The CUDA device ordinal (0 on the CPU)."""
        return self.backend_and_device()[1]

    def backend_and_device(self):
        b, d = C.c_int32(), C.c_int32()
        with self._lock:
            _library.call("kvb_context_backend", self._handle(), C.byref(b), C.byref(d))
        return Backend(b.value), d.value

    def last_error(self):
        """The message of the latest failed call made with this context or its caches and
        calibrators ('' when none failed). Prefer the exception's own message: it is per call."""
        with self._lock:
            ptr = self._handle()
            n = _library.lib().kvb_context_last_error(ptr, None, 0)
            buf = C.create_string_buffer(n + 1)
            _library.lib().kvb_context_last_error(ptr, buf, n + 1)
        return buf.value.decode("utf-8", "replace")

    def supports(self, plan):
        """Raises kvbits.Unsupported (saying what is missing) unless caches of `plan` can run
        on this context; returns True otherwise."""
        with self._lock:
            _library.call("kvb_plan_supported", self._handle(), plan._handle())
        return True
