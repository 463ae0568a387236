//! Attention on the packed cache: decode and causal extend (`kvb_attention_*`).
use crate::cache::{Cache, SeqId};
use crate::check;
use crate::error::{call, Result};
use crate::types::{Dtype, HalfDtype};
use kvbits_sys as ffi;
use std::ffi::c_void;
use std::ptr;

/// How the CUDA backend forms its products (`kvb_attention_params.precision`); the CPU backend
/// computes in fp32 either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Precision {
    /// fp16 tensor-core operands with fp32 accumulation (the default).
    #[default]
    Fp16,
    /// fp32-grade products (decode only; a CUDA extend refuses it with `Status::Unsupported`).
    Fp32,
}

/// Parameters of attention (`kvb_attention_params`).
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct AttentionParams {
    /// Softmax scale, finite and >= 0; 0 (default) = 1/sqrt(head_dim).
    pub scale: f32,
    /// Precision of the CUDA backend's products.
    pub precision: Precision,
}

impl AttentionParams {
    fn to_raw(self) -> ffi::kvb_attention_params {
        let mut raw: ffi::kvb_attention_params = unsafe { std::mem::zeroed() };
        unsafe { ffi::kvb_attention_params_default(&mut raw) };
        raw.scale = self.scale;
        raw.precision = match self.precision {
            Precision::Fp16 => ffi::KVB_PRECISION_FP16,
            Precision::Fp32 => ffi::KVB_PRECISION_FP32,
        };
        raw
    }
}

/// (raw params or null): the C call reads them only during the call.
fn params_ptr(params: &Option<ffi::kvb_attention_params>) -> *const ffi::kvb_attention_params {
    params.as_ref().map_or(ptr::null(), |p| p as *const _)
}

impl Cache {
    fn check_attention(&self, rows: u64, q: usize, out: usize, lse: Option<usize>) -> Result<()> {
        let s = self.shape();
        let f = [("query rows", rows), ("n_q_heads", s.n_q_heads.into()), ("head_dim", s.head_dim.into())];
        check::len("q", q, &f)?;
        check::len("out", out, &f)?;
        if let Some(lse) = lse {
            check::len("lse", lse, &f[..2])?;
        }
        Ok(())
    }

    /// Decode: one query token per sequence over everything (seq, layer) holds
    /// (`kvb_attention_decode`). `q`, `out` are [seqs.len(), n_q_heads, head_dim]; `lse`
    /// [seqs.len(), n_q_heads] receives the natural-log sum-exp of the scaled logits. The
    /// query's own key and value must have been appended first. `params` `None` = defaults.
    pub fn decode(
        &self,
        layer: u32,
        seqs: &[SeqId],
        q: &[f32],
        out: &mut [f32],
        lse: Option<&mut [f32]>,
        params: Option<&AttentionParams>,
    ) -> Result<()> {
        self.check_attention(seqs.len() as u64, q.len(), out.len(), lse.as_ref().map(|l| l.len()))?;
        let lse = lse.map_or(ptr::null_mut(), |l| l.as_mut_ptr());
        unsafe {
            self.decode_raw(layer, seqs, q.as_ptr().cast(), Dtype::F32, out.as_mut_ptr(), lse, params, self.stream())
        }
    }

    /// [`decode`](Self::decode) with fp16 or bf16 queries given as raw `u16` bits.
    #[allow(clippy::too_many_arguments)]
    pub fn decode_half(
        &self,
        layer: u32,
        seqs: &[SeqId],
        q: &[u16],
        q_dtype: HalfDtype,
        out: &mut [f32],
        lse: Option<&mut [f32]>,
        params: Option<&AttentionParams>,
    ) -> Result<()> {
        self.check_attention(seqs.len() as u64, q.len(), out.len(), lse.as_ref().map(|l| l.len()))?;
        let lse = lse.map_or(ptr::null_mut(), |l| l.as_mut_ptr());
        unsafe {
            self.decode_raw(
                layer,
                seqs,
                q.as_ptr().cast(),
                q_dtype.into(),
                out.as_mut_ptr(),
                lse,
                params,
                self.stream(),
            )
        }
    }

    /// [`decode`](Self::decode) on raw pointers, for device memory and explicit streams.
    ///
    /// # Safety
    /// `q` must point to `seqs.len() * n_q_heads * head_dim` elements of `q_dtype`, `out` to as
    /// many writable `f32`, `lse` be null or point to `seqs.len() * n_q_heads` writable `f32`:
    /// host memory, or (on a CUDA context) device memory of the context's device, valid until
    /// the work on `stream` is done. `stream` must be null or a valid `cudaStream_t` of that
    /// device. `out` and `lse` must not overlap `q`.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn decode_raw(
        &self,
        layer: u32,
        seqs: &[SeqId],
        q: *const c_void,
        q_dtype: Dtype,
        out: *mut f32,
        lse: *mut f32,
        params: Option<&AttentionParams>,
        stream: *mut c_void,
    ) -> Result<()> {
        let p = params.map(|p| p.to_raw());
        let raw = self.as_ptr();
        call(|err| {
            ffi::kvb_attention_decode(
                raw,
                layer,
                seqs.as_ptr(),
                seqs.len(),
                q,
                q_dtype.raw(),
                out,
                lse,
                params_ptr(&p),
                stream,
                err,
            )
        })
    }

    /// Extend (chunked prefill, speculative verification): `q_len[i]` queries for sequence `i`,
    /// its last `q_len[i]` tokens (appended already), causal (`kvb_attention_extend`). `q`,
    /// `out` are [sum(q_len), n_q_heads, head_dim], `lse` [sum(q_len), n_q_heads].
    #[allow(clippy::too_many_arguments)]
    pub fn extend(
        &self,
        layer: u32,
        seqs: &[SeqId],
        q_len: &[u32],
        q: &[f32],
        out: &mut [f32],
        lse: Option<&mut [f32]>,
        params: Option<&AttentionParams>,
    ) -> Result<()> {
        check::same_len("seqs", seqs.len(), "q_len", q_len.len())?;
        self.check_attention(check::sum(q_len), q.len(), out.len(), lse.as_ref().map(|l| l.len()))?;
        let lse = lse.map_or(ptr::null_mut(), |l| l.as_mut_ptr());
        unsafe {
            self.extend_raw(
                layer,
                seqs,
                q_len,
                q.as_ptr().cast(),
                Dtype::F32,
                out.as_mut_ptr(),
                lse,
                params,
                self.stream(),
            )
        }
    }

    /// [`extend`](Self::extend) with fp16 or bf16 queries given as raw `u16` bits.
    #[allow(clippy::too_many_arguments)]
    pub fn extend_half(
        &self,
        layer: u32,
        seqs: &[SeqId],
        q_len: &[u32],
        q: &[u16],
        q_dtype: HalfDtype,
        out: &mut [f32],
        lse: Option<&mut [f32]>,
        params: Option<&AttentionParams>,
    ) -> Result<()> {
        check::same_len("seqs", seqs.len(), "q_len", q_len.len())?;
        self.check_attention(check::sum(q_len), q.len(), out.len(), lse.as_ref().map(|l| l.len()))?;
        let lse = lse.map_or(ptr::null_mut(), |l| l.as_mut_ptr());
        unsafe {
            self.extend_raw(
                layer,
                seqs,
                q_len,
                q.as_ptr().cast(),
                q_dtype.into(),
                out.as_mut_ptr(),
                lse,
                params,
                self.stream(),
            )
        }
    }

    /// [`extend`](Self::extend) on raw pointers, for device memory and explicit streams.
    ///
    /// # Safety
    /// As [`decode_raw`](Self::decode_raw), with `sum(q_len)` query rows instead of
    /// `seqs.len()`. `seqs` and `q_len` are host slices (their lengths are checked here).
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn extend_raw(
        &self,
        layer: u32,
        seqs: &[SeqId],
        q_len: &[u32],
        q: *const c_void,
        q_dtype: Dtype,
        out: *mut f32,
        lse: *mut f32,
        params: Option<&AttentionParams>,
        stream: *mut c_void,
    ) -> Result<()> {
        check::same_len("seqs", seqs.len(), "q_len", q_len.len())?;
        let p = params.map(|p| p.to_raw());
        let raw = self.as_ptr();
        call(|err| {
            ffi::kvb_attention_extend(
                raw,
                layer,
                seqs.as_ptr(),
                q_len.as_ptr(),
                seqs.len(),
                q,
                q_dtype.raw(),
                out,
                lse,
                params_ptr(&p),
                stream,
                err,
            )
        })
    }
}
