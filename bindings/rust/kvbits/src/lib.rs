//! Safe Rust API for kvbits: a KV cache stored at 2-4 bits per value (Block-GTQ /
//! TurboQuant-MSE) with attention computed on the packed cache.
//!
//! The flow is context → plan → cache → append → attention; every handle frees itself on drop,
//! every fallible call returns [`Result`], whose [`Error`] carries the library's [`Status`] and
//! message.
//!
//! ```
//! use kvbits::{Cache, CacheParams, Calibrator, Context, ModelShape, PlanOptions};
//!
//! # fn main() -> kvbits::Result<()> {
//! let ctx = Context::cpu(2)?;
//! // A plan is normally loaded with Plan::load_file; here one is calibrated on made-up data.
//! let shape = ModelShape::new(1, 4, 2, 16);
//! let mut cal = Calibrator::new(&ctx, &shape)?;
//! let n = 64;
//! let q: Vec<f32> = (0..n * 4 * 16).map(|i| ((i * 7919 % 97) as f32 - 48.0) / 16.0).collect();
//! let k: Vec<f32> = (0..n * 2 * 16).map(|i| ((i * 104729 % 89) as f32 - 44.0) / 16.0).collect();
//! cal.observe(0, Some(&q), Some(&k), n)?;
//! let plan = cal.build_plan(&PlanOptions::default())?;
//!
//! let mut cache = Cache::new(&ctx, &plan, &CacheParams { page_size: 16, max_pages: 64, ..Default::default() })?;
//! let seq = cache.seq_add()?;
//! cache.append(0, &[seq], &[3], &k[..3 * 2 * 16], &k[..3 * 2 * 16])?; // 3 tokens: K and V
//! let mut out = vec![0f32; 4 * 16];
//! cache.decode(0, &[seq], &q[..4 * 16], &mut out, None, None)?;
//! assert!(out.iter().all(|x| x.is_finite()));
//! # Ok(())
//! # }
//! ```
//!
//! Thread safety follows `kvbits.h`: [`Plan`] and [`Context`] are `Send + Sync`; [`Cache`] and
//! [`Calibrator`] are `Send` only (one call at a time; `&mut self` for calls that change them).
//! A cache keeps its context and plan alive, so no Rust lifetime ties them.
mod attention;
mod cache;
mod calibrator;
mod check;
mod context;
mod error;
mod plan;
mod types;

pub use attention::{AttentionParams, Precision};
pub use cache::{Cache, CacheParams, CacheStats, SeqId};
pub use calibrator::{Calibrator, PlanOptions};
pub use context::{Context, ContextParams};
pub use error::{status_string, Error, Result, Status};
pub use kvbits_sys as sys;
pub use plan::{Plan, PlanInfo};
pub use types::{Backend, Codebooks, Dtype, HalfDtype, Method, ModelShape, RopeLayout, Score};

/// Version of the header this binding was written against: MAJOR*10000 + MINOR*100 + PATCH.
pub const HEADER_VERSION_NUMBER: u32 = sys::KVB_VERSION_NUMBER;

/// Version of the library actually loaded (`kvb_version_number`), comparable as an integer.
pub fn version_number() -> u32 {
    unsafe { sys::kvb_version_number() }
}

/// Version string of the library actually loaded (`kvb_version_string`), e.g. "0.1.0".
pub fn version_string() -> &'static str {
    // Static storage in the library.
    let text = unsafe { std::ffi::CStr::from_ptr(sys::kvb_version_string()) };
    text.to_str().unwrap_or("")
}
