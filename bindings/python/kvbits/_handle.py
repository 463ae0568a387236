"""The base of every object that owns a library handle.

close() (or leaving a `with` block) frees the handle at once; __del__ is only a backstop. The
library keeps what a cache or calibrator depends on alive by itself, so objects may be closed in
any order. A per-object lock serialises calls, as the C API requires for caches and calibrators,
and keeps close() from racing a call in another thread.
"""
import ctypes as C
import threading

from . import _library
from .errors import NullPointer


class Handle:
    _destroy = None  # name of the kvb_*_destroy function
    _kind = "object"

    def __init__(self, ptr):
        self._ptr = C.c_void_p(ptr) if ptr else None
        self._lock = threading.RLock()

    @property
    def closed(self):
        return self._ptr is None

    def _handle(self):
        """The raw handle, or NullPointer when the object was closed."""
        if self._ptr is None:
            raise NullPointer(f"this kvbits.{self._kind} is closed")
        return self._ptr

    def close(self):
        """Frees the handle now; later calls raise kvbits.NullPointer. Calling it again is a no-op."""
        lock = getattr(self, "_lock", None)
        if lock is None:  # __init__ did not get far
            return
        with lock:
            ptr, self._ptr = self._ptr, None
            if ptr is not None:
                getattr(_library.lib(), self._destroy)(ptr)

    def __enter__(self):
        self._handle()
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: modules may already be gone
            pass
