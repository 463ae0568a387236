//! Calibration: observe query and key activations, then build a plan (`kvb_calibrator_*`).
use crate::check;
use crate::context::Context;
use crate::error::{call, Error, Result, Status};
use crate::plan::Plan;
use crate::types::{Codebooks, Dtype, HalfDtype, Method, ModelShape, Score};
use kvbits_sys as ffi;
use std::ffi::{c_void, CString};
use std::ptr::{self, NonNull};

/// Options of [`Calibrator::build_plan`] (`kvb_plan_options`); `Default` gives the library's
/// defaults (Block-GTQ, 3 key bits on average, 3 value bits).
#[derive(Clone, Debug, PartialEq)]
pub struct PlanOptions {
    pub method: Method,
    /// Average key code bits per dim, in [k_min_bits, k_max_bits].
    pub k_avg_bits: f64,
    /// 1..8.
    pub k_min_bits: i32,
    /// k_min_bits..8.
    pub k_max_bits: i32,
    /// 1..8.
    pub v_bits: i32,
    pub score: Score,
    pub codebooks: Codebooks,
    /// First tokens of every sequence kept in fp16.
    pub sink_tokens: u32,
    /// Last tokens of every sequence kept in fp16.
    pub window_tokens: u32,
    /// Layers kept at 16 bits (boundary / sliding-window layers).
    pub fp16_layers: Vec<u32>,
    /// Base seed of the generated rotations.
    pub rotation_seed: u64,
    /// Recorded in the plan: what the calibration data was.
    pub corpus: Option<String>,
    /// Recorded as given (ISO-8601); no clock is read, so the same inputs give the same bytes.
    pub date: Option<String>,
    /// 32 hex digits: XXH3-128 of the model file.
    pub model_fingerprint_hex: Option<String>,
}

impl Default for PlanOptions {
    fn default() -> PlanOptions {
        let mut raw: ffi::kvb_plan_options = unsafe { std::mem::zeroed() };
        unsafe { ffi::kvb_plan_options_default(&mut raw) };
        PlanOptions {
            method: Method::from_raw(raw.method).unwrap_or(Method::BlockGtq),
            k_avg_bits: raw.k_avg_bits,
            k_min_bits: raw.k_min_bits,
            k_max_bits: raw.k_max_bits,
            v_bits: raw.v_bits,
            score: Score::from_raw(raw.score).unwrap_or(Score::Product),
            codebooks: Codebooks::from_raw(raw.codebooks).unwrap_or(Codebooks::LloydMax),
            sink_tokens: raw.sink_tokens,
            window_tokens: raw.window_tokens,
            fp16_layers: Vec::new(),
            rotation_seed: raw.rotation_seed,
            corpus: None,
            date: None,
            model_fingerprint_hex: None,
        }
    }
}

fn optional_cstring(what: &str, text: &Option<String>) -> Result<Option<CString>> {
    match text {
        None => Ok(None),
        Some(t) => CString::new(t.as_bytes())
            .map(Some)
            .map_err(|_| Error::invalid(format!("PlanOptions.{} contains a NUL byte", what))),
    }
}

fn cstr_ptr(s: &Option<CString>) -> *const ffi::c_char {
    s.as_ref().map_or(ptr::null(), |c| c.as_ptr())
}

/// Accumulates per-RoPE-block energies of queries and keys (fp64), then allocates bits and
/// builds plans (`kvb_calibrator`). `Send` but not `Sync`: mutating calls take `&mut self`.
///
/// ```
/// fn send<T: Send>() {}
/// send::<kvbits::Calibrator>();
/// ```
/// ```compile_fail
/// fn sync<T: Sync>() {}
/// sync::<kvbits::Calibrator>(); // a calibrator needs external synchronisation
/// ```
pub struct Calibrator {
    raw: NonNull<ffi::kvb_calibrator>,
    shape: ModelShape,
}

// kvbits.h: "kvb_calibrator: needs external synchronisation, like a cache." &mut self gives it.
unsafe impl Send for Calibrator {}

impl Calibrator {
    /// An empty calibrator for a model shape (`kvb_calibrator_create`). It keeps `ctx` alive.
    pub fn new(ctx: &Context, shape: &ModelShape) -> Result<Calibrator> {
        let raw_shape = shape.to_raw();
        let mut out: *mut ffi::kvb_calibrator = ptr::null_mut();
        call(|err| unsafe { ffi::kvb_calibrator_create(ctx.as_ptr(), &raw_shape, &mut out, err) })?;
        let raw = NonNull::new(out).ok_or_else(|| Error::new(Status::Internal, "no calibrator returned"))?;
        Ok(Calibrator { raw, shape: *shape })
    }

    /// The shape given at creation.
    pub fn shape(&self) -> &ModelShape {
        &self.shape
    }

    /// Observes one chunk of one layer: `q` [n_tokens, n_q_heads, head_dim] and `k`
    /// [n_tokens, n_kv_heads, head_dim]; either may be `None` to observe only the other side.
    /// On failure nothing is accumulated.
    pub fn observe(&mut self, layer: u32, q: Option<&[f32]>, k: Option<&[f32]>, n_tokens: usize) -> Result<()> {
        self.check_lengths(q.map(<[f32]>::len), k.map(<[f32]>::len), n_tokens)?;
        let q = q.map_or(ptr::null(), |s| s.as_ptr().cast::<c_void>());
        let k = k.map_or(ptr::null(), |s| s.as_ptr().cast::<c_void>());
        unsafe { self.observe_raw(layer, q, k, n_tokens, Dtype::F32) }
    }

    /// [`observe`](Self::observe) for fp16 or bf16 inputs given as raw `u16` bit patterns.
    pub fn observe_half(
        &mut self,
        layer: u32,
        q: Option<&[u16]>,
        k: Option<&[u16]>,
        n_tokens: usize,
        dtype: HalfDtype,
    ) -> Result<()> {
        self.check_lengths(q.map(<[u16]>::len), k.map(<[u16]>::len), n_tokens)?;
        let q = q.map_or(ptr::null(), |s| s.as_ptr().cast::<c_void>());
        let k = k.map_or(ptr::null(), |s| s.as_ptr().cast::<c_void>());
        unsafe { self.observe_raw(layer, q, k, n_tokens, dtype.into()) }
    }

    fn check_lengths(&self, q: Option<usize>, k: Option<usize>, n_tokens: usize) -> Result<()> {
        let s = &self.shape;
        let t = ("n_tokens", n_tokens as u64);
        if let Some(len) = q {
            check::len("q", len, &[t, ("n_q_heads", s.n_q_heads.into()), ("head_dim", s.head_dim.into())])?;
        }
        if let Some(len) = k {
            check::len("k", len, &[t, ("n_kv_heads", s.n_kv_heads.into()), ("head_dim", s.head_dim.into())])?;
        }
        Ok(())
    }

    /// [`observe`](Self::observe) on raw host pointers (`kvb_calibrator_observe`).
    ///
    /// # Safety
    /// `q` (unless null) must point to `n_tokens * n_q_heads * head_dim` readable elements of
    /// `dtype`, and `k` (unless null) to `n_tokens * n_kv_heads * head_dim`, for the whole call.
    pub unsafe fn observe_raw(
        &mut self,
        layer: u32,
        q: *const c_void,
        k: *const c_void,
        n_tokens: usize,
        dtype: Dtype,
    ) -> Result<()> {
        let raw = self.raw.as_ptr();
        call(|err| ffi::kvb_calibrator_observe(raw, layer, q, k, n_tokens, dtype.raw(), err))
    }

    /// Allocates bits from everything observed so far and builds a validated plan
    /// (`kvb_calibrator_build_plan`). The calibrator is unchanged and may observe more.
    pub fn build_plan(&self, options: &PlanOptions) -> Result<Plan> {
        let corpus = optional_cstring("corpus", &options.corpus)?;
        let date = optional_cstring("date", &options.date)?;
        let fingerprint = optional_cstring("model_fingerprint_hex", &options.model_fingerprint_hex)?;
        let n_fp16 = u32::try_from(options.fp16_layers.len())
            .map_err(|_| Error::invalid("PlanOptions.fp16_layers has more than 2^32 - 1 entries"))?;
        let mut raw: ffi::kvb_plan_options = unsafe { std::mem::zeroed() };
        unsafe { ffi::kvb_plan_options_default(&mut raw) };
        raw.method = options.method.raw();
        raw.k_avg_bits = options.k_avg_bits;
        raw.k_min_bits = options.k_min_bits;
        raw.k_max_bits = options.k_max_bits;
        raw.v_bits = options.v_bits;
        raw.score = options.score.raw();
        raw.codebooks = options.codebooks.raw();
        raw.sink_tokens = options.sink_tokens;
        raw.window_tokens = options.window_tokens;
        raw.n_fp16_layers = n_fp16;
        raw.fp16_layers = if n_fp16 == 0 { ptr::null() } else { options.fp16_layers.as_ptr() };
        raw.rotation_seed = options.rotation_seed;
        raw.corpus = cstr_ptr(&corpus);
        raw.date = cstr_ptr(&date);
        raw.model_fingerprint_hex = cstr_ptr(&fingerprint);
        let mut out: *mut ffi::kvb_plan = ptr::null_mut();
        call(|err| unsafe { ffi::kvb_calibrator_build_plan(self.raw.as_ptr(), &raw, &mut out, err) })?;
        Plan::wrap(out)
    }

    /// The raw handle, for calling `kvbits-sys` directly; it stays owned by `self`.
    pub fn as_ptr(&self) -> *mut ffi::kvb_calibrator {
        self.raw.as_ptr()
    }
}

impl Drop for Calibrator {
    fn drop(&mut self) {
        unsafe { ffi::kvb_calibrator_destroy(self.raw.as_ptr()) }
    }
}

impl std::fmt::Debug for Calibrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Calibrator").field("shape", &self.shape).finish()
    }
}
