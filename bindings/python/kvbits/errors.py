"""Exceptions: one class per kvb_status, all deriving from kvbits.Error.

Every failed library call raises the class of the status it returned, carrying that status and
the message the library wrote into the call's own kvb_error (no thread-local state involved).
Checks the binding makes in Python before calling (shapes, dtypes, closed objects) raise the
same classes with the status the library would have returned.
"""

# Pinned kvb_status values (capi/kvbits.h).
OK = 0
ERR_INVALID_ARGUMENT = 1
ERR_NULL_POINTER = 2
ERR_SHAPE_MISMATCH = 3
ERR_UNSUPPORTED = 4
ERR_CORRUPT_DATA = 5
ERR_VERSION_UNSUPPORTED = 6
ERR_IO = 7
ERR_OUT_OF_MEMORY = 8
ERR_CAPACITY_EXHAUSTED = 9
ERR_NOT_FOUND = 10
ERR_INTERNAL = 11
ERR_DEVICE = 12

# kvb_status_string's names, so messages read the same with or without the library loaded.
STATUS_NAMES = {
    OK: "ok",
    ERR_INVALID_ARGUMENT: "invalid_argument",
    ERR_NULL_POINTER: "null_pointer",
    ERR_SHAPE_MISMATCH: "shape_mismatch",
    ERR_UNSUPPORTED: "unsupported",
    ERR_CORRUPT_DATA: "corrupt_data",
    ERR_VERSION_UNSUPPORTED: "version_unsupported",
    ERR_IO: "io_error",
    ERR_OUT_OF_MEMORY: "out_of_memory",
    ERR_CAPACITY_EXHAUSTED: "capacity_exhausted",
    ERR_NOT_FOUND: "not_found",
    ERR_INTERNAL: "internal",
    ERR_DEVICE: "device_error",
}


class Error(Exception):
    """A kvbits failure: `status` (int kvb_status), `status_name`, `message` (the library's
    text, or the binding's for checks made in Python) and `function` (the C function, or None
    for a Python-side check)."""

    status = ERR_INTERNAL

    def __init__(self, message, status=None, function=None):
        if status is not None:
            self.status = int(status)
        self.message = message
        self.function = function
        where = f"{function}: " if function else ""
        super().__init__(f"{where}{self.status_name}: {message}")

    @property
    def status_name(self):
        return STATUS_NAMES.get(self.status, "unknown_status")


class InvalidArgument(Error, ValueError):
    status = ERR_INVALID_ARGUMENT


class NullPointer(Error, ValueError):
    """A required handle or pointer is missing; also raised for a closed object."""

    status = ERR_NULL_POINTER


class ShapeMismatch(Error, ValueError):
    status = ERR_SHAPE_MISMATCH


class Unsupported(Error):
    status = ERR_UNSUPPORTED


class CorruptData(Error):
    status = ERR_CORRUPT_DATA


class VersionUnsupported(Error):
    status = ERR_VERSION_UNSUPPORTED


class IOFailure(Error, OSError):
    status = ERR_IO


class OutOfMemory(Error, MemoryError):
    status = ERR_OUT_OF_MEMORY


class CapacityExhausted(Error):
    status = ERR_CAPACITY_EXHAUSTED


class NotFound(Error, LookupError):
    status = ERR_NOT_FOUND


class InternalError(Error):
    status = ERR_INTERNAL


class DeviceError(Error):
    status = ERR_DEVICE


class LibraryNotFound(OSError):
    """libkvbits.so could not be located or loaded; the message lists what was tried."""


_BY_STATUS = {cls.status: cls for cls in (
    InvalidArgument, NullPointer, ShapeMismatch, Unsupported, CorruptData, VersionUnsupported,
    IOFailure, OutOfMemory, CapacityExhausted, NotFound, InternalError, DeviceError)}


def error_for_status(status, message, function=None):
    """The exception for a non-OK status (an unknown one becomes a plain Error)."""
    cls = _BY_STATUS.get(int(status), Error)
    return cls(message, status=status, function=function)
