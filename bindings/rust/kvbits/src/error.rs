//! Statuses and errors: every fallible call returns `Result<T, Error>`, where the error carries
//! the library's status and the message it wrote into the per-call `kvb_error`.
use kvbits_sys as ffi;
use std::ffi::CStr;
use std::fmt;

/// Why a call failed: the `KVB_ERR_*` codes of `kvbits.h` (pinned values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Status {
    /// A value is out of its documented range (also: a slice of the wrong length).
    InvalidArgument,
    /// A required pointer or handle is NULL.
    NullPointer,
    /// Shapes of tensors / plan / model do not agree.
    ShapeMismatch,
    /// Valid, but this build or backend cannot do it.
    Unsupported,
    /// A file or buffer fails validation.
    CorruptData,
    /// Needs a newer format version or an unknown feature.
    VersionUnsupported,
    /// Open/read/write failed.
    Io,
    /// An allocation failed or a size is absurd.
    OutOfMemory,
    /// The cache's page pool or sequence table is full.
    CapacityExhausted,
    /// Unknown (e.g. removed) sequence, missing tensor.
    NotFound,
    /// A bug in kvbits.
    Internal,
    /// The CUDA runtime reported an error.
    Device,
    /// A code this binding does not know (from a newer library).
    Unknown(i32),
}

impl Status {
    /// The status for a non-zero `kvb_status` code.
    pub fn from_code(code: ffi::kvb_status) -> Status {
        match code {
            ffi::KVB_ERR_INVALID_ARGUMENT => Status::InvalidArgument,
            ffi::KVB_ERR_NULL_POINTER => Status::NullPointer,
            ffi::KVB_ERR_SHAPE_MISMATCH => Status::ShapeMismatch,
            ffi::KVB_ERR_UNSUPPORTED => Status::Unsupported,
            ffi::KVB_ERR_CORRUPT_DATA => Status::CorruptData,
            ffi::KVB_ERR_VERSION_UNSUPPORTED => Status::VersionUnsupported,
            ffi::KVB_ERR_IO => Status::Io,
            ffi::KVB_ERR_OUT_OF_MEMORY => Status::OutOfMemory,
            ffi::KVB_ERR_CAPACITY_EXHAUSTED => Status::CapacityExhausted,
            ffi::KVB_ERR_NOT_FOUND => Status::NotFound,
            ffi::KVB_ERR_INTERNAL => Status::Internal,
            ffi::KVB_ERR_DEVICE => Status::Device,
            other => Status::Unknown(other),
        }
    }

    /// The `kvb_status` code.
    pub fn code(self) -> ffi::kvb_status {
        match self {
            Status::InvalidArgument => ffi::KVB_ERR_INVALID_ARGUMENT,
            Status::NullPointer => ffi::KVB_ERR_NULL_POINTER,
            Status::ShapeMismatch => ffi::KVB_ERR_SHAPE_MISMATCH,
            Status::Unsupported => ffi::KVB_ERR_UNSUPPORTED,
            Status::CorruptData => ffi::KVB_ERR_CORRUPT_DATA,
            Status::VersionUnsupported => ffi::KVB_ERR_VERSION_UNSUPPORTED,
            Status::Io => ffi::KVB_ERR_IO,
            Status::OutOfMemory => ffi::KVB_ERR_OUT_OF_MEMORY,
            Status::CapacityExhausted => ffi::KVB_ERR_CAPACITY_EXHAUSTED,
            Status::NotFound => ffi::KVB_ERR_NOT_FOUND,
            Status::Internal => ffi::KVB_ERR_INTERNAL,
            Status::Device => ffi::KVB_ERR_DEVICE,
            Status::Unknown(code) => code,
        }
    }

    /// The library's lower-case name of the status (`kvb_status_string`), e.g. "corrupt_data".
    pub fn name(self) -> &'static str {
        status_string(self.code())
    }
}

/// `kvb_status_string` of any code, "ok" for 0 and "unknown_status" for codes it does not know.
pub fn status_string(code: ffi::kvb_status) -> &'static str {
    // Static storage in the library, so 'static is right.
    let text = unsafe { CStr::from_ptr(ffi::kvb_status_string(code)) };
    text.to_str().unwrap_or("unknown_status")
}

/// A failed call: the status and the library's message (or this binding's, for checks made in
/// Rust before calling, such as slice lengths).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    status: Status,
    message: String,
}

impl Error {
    pub(crate) fn new(status: Status, message: impl Into<String>) -> Error {
        Error { status, message: message.into() }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Error {
        Error::new(Status::InvalidArgument, message)
    }

    /// Why the call failed.
    pub fn status(&self) -> Status {
        self.status
    }

    /// The `kvb_status` code (never 0).
    pub fn code(&self) -> i32 {
        self.status.code()
    }

    /// The human-readable message, never empty.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.status.name(), self.message)
    }
}

impl std::error::Error for Error {}

/// The result of every fallible call.
pub type Result<T> = std::result::Result<T, Error>;

/// Runs one C call with a fresh `kvb_error` and turns its status and message into a `Result`.
pub(crate) fn call<F>(f: F) -> Result<()>
where
    F: FnOnce(*mut ffi::kvb_error) -> ffi::kvb_status,
{
    // All-zero is a valid kvb_error; kvb_error_init then sets struct_size.
    let mut err: ffi::kvb_error = unsafe { std::mem::zeroed() };
    unsafe { ffi::kvb_error_init(&mut err) };
    let status = f(&mut err);
    if status == ffi::KVB_OK {
        return Ok(());
    }
    let mut message = unsafe { CStr::from_ptr(err.message.as_ptr()) }.to_string_lossy().into_owned();
    if message.is_empty() {
        message = format!("kvbits returned {} without a message", status_string(status));
    }
    Err(Error::new(Status::from_code(status), message))
}
