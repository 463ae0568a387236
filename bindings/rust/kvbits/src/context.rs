//! Contexts: one backend (the CPU with its worker threads, or one CUDA device).
use crate::error::{call, Error, Result, Status};
use crate::types::Backend;
use kvbits_sys as ffi;
use std::ptr::{self, NonNull};

/// Parameters of [`Context::new`] (`kvb_context_params`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContextParams {
    /// Default [`Backend::Auto`].
    pub backend: Backend,
    /// CUDA device ordinal, >= 0; default 0.
    pub device: i32,
    /// CPU worker threads, 0..1024; 0 (default) = hardware concurrency.
    pub n_threads: u32,
}

impl Default for ContextParams {
    fn default() -> ContextParams {
        let mut raw: ffi::kvb_context_params = unsafe { std::mem::zeroed() };
        unsafe { ffi::kvb_context_params_default(&mut raw) };
        ContextParams {
            backend: Backend::from_raw(raw.backend).unwrap_or(Backend::Auto),
            device: raw.device,
            n_threads: raw.n_threads,
        }
    }
}

/// A backend and its workers (`kvb_context`). Thread-safe: `Send + Sync`; work submitted from
/// several threads takes turns on its one worker pool. Caches and calibrators made from it keep
/// it alive, so it may be dropped before them.
pub struct Context {
    raw: NonNull<ffi::kvb_context>,
}

// kvbits.h: "kvb_context: thread-safe."
unsafe impl Send for Context {}
unsafe impl Sync for Context {}

impl Context {
    /// Creates a context (`kvb_context_create`).
    pub fn new(params: &ContextParams) -> Result<Context> {
        let mut raw: ffi::kvb_context_params = unsafe { std::mem::zeroed() };
        unsafe { ffi::kvb_context_params_default(&mut raw) };
        raw.backend = params.backend.raw();
        raw.device = params.device;
        raw.n_threads = params.n_threads;
        let mut out: *mut ffi::kvb_context = ptr::null_mut();
        call(|err| unsafe { ffi::kvb_context_create(&raw, &mut out, err) })?;
        NonNull::new(out)
            .map(|raw| Context { raw })
            .ok_or_else(|| Error::new(Status::Internal, "kvb_context_create returned no context"))
    }

    /// A CPU context with `n_threads` workers (0 = one per core).
    pub fn cpu(n_threads: u32) -> Result<Context> {
        Context::new(&ContextParams { backend: Backend::Cpu, device: 0, n_threads })
    }

    /// The backend the context runs on (never [`Backend::Auto`]) and its device (0 for the CPU).
    pub fn backend(&self) -> Result<(Backend, i32)> {
        let mut backend: ffi::kvb_backend = -1;
        let mut device: i32 = -1;
        call(|err| unsafe { ffi::kvb_context_backend(self.raw.as_ptr(), &mut backend, &mut device, err) })?;
        let b = Backend::from_raw(backend).ok_or_else(|| {
            Error::new(Status::Unsupported, format!("unknown backend {} (a newer library?)", backend))
        })?;
        Ok((b, device))
    }

    /// The message of the most recent failed call made with this context or with a cache or
    /// calibrator created from it ("" if none failed yet). Each `Error` already carries its own
    /// call's message; this is for code that only kept the status.
    pub fn last_error(&self) -> String {
        let raw = self.raw.as_ptr();
        let n = unsafe { ffi::kvb_context_last_error(raw, ptr::null_mut(), 0) };
        // Another thread may lengthen the text between the two calls: retry until it fits.
        let mut cap = n + 1;
        loop {
            let mut buf = vec![0 as ffi::c_char; cap];
            let full = unsafe { ffi::kvb_context_last_error(raw, buf.as_mut_ptr(), cap) };
            if full < cap {
                let bytes: Vec<u8> = buf[..full].iter().map(|&c| c as u8).collect();
                return String::from_utf8_lossy(&bytes).into_owned();
            }
            cap = full + 1;
        }
    }

    /// The raw handle, for calling `kvbits-sys` directly; it stays owned by `self`.
    pub fn as_ptr(&self) -> *mut ffi::kvb_context {
        self.raw.as_ptr()
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        unsafe { ffi::kvb_context_destroy(self.raw.as_ptr()) }
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("backend", &self.backend().ok()).finish()
    }
}
