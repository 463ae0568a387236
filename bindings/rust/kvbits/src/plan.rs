//! Bit plans: load, save, serialise and query (`kvb_plan_*`).
use crate::context::Context;
use crate::error::{call, Error, Result, Status};
use crate::types::{Method, ModelShape, RopeLayout};
use kvbits_sys as ffi;
use std::ffi::CString;
use std::path::Path;
use std::ptr::{self, NonNull};

/// A validated, immutable bit plan (`kvb_plan`): `Send + Sync`, shareable by any number of
/// threads, contexts and caches. Caches built on it keep it alive, so it may be dropped first.
pub struct Plan {
    raw: NonNull<ffi::kvb_plan>,
}

// kvbits.h: "kvb_plan: immutable once created: any number of threads ... may use one plan at once."
unsafe impl Send for Plan {}
unsafe impl Sync for Plan {}

/// What a plan holds (`kvb_plan_info`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PlanInfo {
    pub n_layers: u32,
    pub n_q_heads: u32,
    pub n_kv_heads: u32,
    pub head_dim: u32,
    pub rotary_dim: u32,
    pub rope_layout: RopeLayout,
    pub rope_theta: f64,
    pub method: Method,
    /// Requested average key code bits per dim.
    pub k_avg_bits: f64,
    /// Value bits of the first quantised head (all heads share it today).
    pub v_bits: u32,
    pub sink_tokens: u32,
    pub window_tokens: u32,
    pub n_fp16_layers: u32,
    /// Packed bytes per token per KV head, averaged over all (layer, KV head), scales included.
    pub bytes_per_token_per_head: f64,
    /// Packed bytes per token for the whole model.
    pub bytes_per_token_total: u64,
    pub calib_tokens: u64,
}

impl PlanInfo {
    /// The model shape the plan was made for.
    pub fn shape(&self) -> ModelShape {
        ModelShape {
            n_layers: self.n_layers,
            n_q_heads: self.n_q_heads,
            n_kv_heads: self.n_kv_heads,
            head_dim: self.head_dim,
            rotary_dim: self.rotary_dim,
            rope_layout: self.rope_layout,
            rope_theta: self.rope_theta,
        }
    }
}

pub(crate) fn path_to_cstring(path: &Path) -> Result<CString> {
    #[cfg(unix)]
    let bytes = {
        use std::os::unix::ffi::OsStrExt;
        path.as_os_str().as_bytes().to_vec()
    };
    #[cfg(not(unix))]
    let bytes =
        path.to_str().ok_or_else(|| Error::invalid(format!("path {:?} is not valid UTF-8", path)))?.as_bytes().to_vec();
    CString::new(bytes).map_err(|_| Error::invalid(format!("path {:?} contains a NUL byte", path)))
}

impl Plan {
    /// Loads and fully validates a plan file (`kvb_plan_load_file`).
    pub fn load_file<P: AsRef<Path>>(path: P) -> Result<Plan> {
        let path = path_to_cstring(path.as_ref())?;
        let mut out: *mut ffi::kvb_plan = ptr::null_mut();
        call(|err| unsafe { ffi::kvb_plan_load_file(path.as_ptr(), &mut out, err) })?;
        Plan::wrap(out)
    }

    /// Loads and validates a plan from bytes (`kvb_plan_load_memory`); the bytes are not kept.
    pub fn from_bytes(bytes: &[u8]) -> Result<Plan> {
        let mut out: *mut ffi::kvb_plan = ptr::null_mut();
        call(|err| unsafe { ffi::kvb_plan_load_memory(bytes.as_ptr().cast(), bytes.len(), &mut out, err) })?;
        Plan::wrap(out)
    }

    pub(crate) fn wrap(raw: *mut ffi::kvb_plan) -> Result<Plan> {
        NonNull::new(raw).map(|raw| Plan { raw }).ok_or_else(|| Error::new(Status::Internal, "kvbits returned no plan"))
    }

    /// Writes the plan atomically (`kvb_plan_save_file`): the previous file, if any, stays
    /// intact on failure. The same plan always gives the same bytes.
    pub fn save_file<P: AsRef<Path>>(&self, path: P) -> Result<()> {
        let path = path_to_cstring(path.as_ref())?;
        call(|err| unsafe { ffi::kvb_plan_save_file(self.raw.as_ptr(), path.as_ptr(), err) })
    }

    /// The plan file's bytes (`kvb_plan_serialize`).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut size: usize = 0;
        call(|err| unsafe { ffi::kvb_plan_serialize(self.raw.as_ptr(), ptr::null_mut(), 0, &mut size, err) })?;
        let mut buf = vec![0u8; size];
        let mut written: usize = 0;
        call(|err| unsafe {
            ffi::kvb_plan_serialize(self.raw.as_ptr(), buf.as_mut_ptr().cast(), buf.len(), &mut written, err)
        })?;
        buf.truncate(written);
        Ok(buf)
    }

    /// Shape, method, bits and costs of the plan (`kvb_plan_get_info`).
    pub fn info(&self) -> Result<PlanInfo> {
        let mut raw: ffi::kvb_plan_info = unsafe { std::mem::zeroed() };
        raw.struct_size = std::mem::size_of::<ffi::kvb_plan_info>() as u32;
        call(|err| unsafe { ffi::kvb_plan_get_info(self.raw.as_ptr(), &mut raw, err) })?;
        Ok(PlanInfo {
            n_layers: raw.n_layers,
            n_q_heads: raw.n_q_heads,
            n_kv_heads: raw.n_kv_heads,
            head_dim: raw.head_dim,
            rotary_dim: raw.rotary_dim,
            rope_layout: RopeLayout::from_raw(raw.rope_layout)?,
            rope_theta: raw.rope_theta,
            method: Method::from_raw(raw.method)?,
            k_avg_bits: raw.k_avg_bits,
            v_bits: raw.v_bits,
            sink_tokens: raw.sink_tokens,
            window_tokens: raw.window_tokens,
            n_fp16_layers: raw.n_fp16_layers,
            bytes_per_token_per_head: raw.bytes_per_token_per_head,
            bytes_per_token_total: raw.bytes_per_token_total,
            calib_tokens: raw.calib_tokens,
        })
    }

    /// Packed bytes per token of one (layer, KV head) (`kvb_plan_bytes_per_token`).
    pub fn bytes_per_token(&self, layer: u32, kv_head: u32) -> Result<u64> {
        let mut bytes: u64 = 0;
        call(|err| unsafe { ffi::kvb_plan_bytes_per_token(self.raw.as_ptr(), layer, kv_head, &mut bytes, err) })?;
        Ok(bytes)
    }

    /// Checks that the plan was made for this shape (`kvb_plan_check_shape`);
    /// [`Status::ShapeMismatch`] names the field otherwise.
    pub fn check_shape(&self, n_layers: u32, n_q_heads: u32, n_kv_heads: u32, head_dim: u32) -> Result<()> {
        call(|err| unsafe {
            ffi::kvb_plan_check_shape(self.raw.as_ptr(), n_layers, n_q_heads, n_kv_heads, head_dim, err)
        })
    }

    /// Same for every field of a model shape, RoPE included (`kvb_plan_check_model`).
    pub fn check_model(&self, model: &ModelShape) -> Result<()> {
        let raw = model.to_raw();
        call(|err| unsafe { ffi::kvb_plan_check_model(self.raw.as_ptr(), &raw, err) })
    }

    /// Can caches of this plan be created and attended on `ctx`? (`kvb_plan_supported`);
    /// [`Status::Unsupported`] says what is missing.
    pub fn supported_on(&self, ctx: &Context) -> Result<()> {
        call(|err| unsafe { ffi::kvb_plan_supported(ctx.as_ptr(), self.raw.as_ptr(), err) })
    }

    /// The raw handle, for calling `kvbits-sys` directly; it stays owned by `self`.
    pub fn as_ptr(&self) -> *mut ffi::kvb_plan {
        self.raw.as_ptr()
    }
}

impl Drop for Plan {
    fn drop(&mut self) {
        unsafe { ffi::kvb_plan_destroy(self.raw.as_ptr()) }
    }
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan").field("info", &self.info().ok()).finish()
    }
}
