//! Raw FFI declarations for libkvbits, written by hand to match `capi/kvbits.h` one to one:
//! every constant, typedef, struct and function of the header, with the C names. The header is
//! the specification (ownership, statuses, thread safety); read it alongside this crate.
//!
//! The safe API is the `kvbits` crate. This crate only declares; `tests/header_match.rs` parses
//! the installed header and checks names, types, sizes, alignments, field offsets and constant
//! values against these declarations.
#![allow(non_camel_case_types)]

use std::marker::{PhantomData, PhantomPinned};
pub use std::os::raw::{c_char, c_uint, c_void};

// ---- version ------------------------------------------------------------------------------

pub const KVB_VERSION_MAJOR: u32 = 0;
pub const KVB_VERSION_MINOR: u32 = 1;
pub const KVB_VERSION_PATCH: u32 = 0;
/// MAJOR*10000 + MINOR*100 + PATCH of the header these declarations mirror.
pub const KVB_VERSION_NUMBER: u32 = KVB_VERSION_MAJOR * 10000 + KVB_VERSION_MINOR * 100 + KVB_VERSION_PATCH;

// ---- status and errors --------------------------------------------------------------------

pub type kvb_status = i32;
pub const KVB_OK: kvb_status = 0;
pub const KVB_ERR_INVALID_ARGUMENT: kvb_status = 1;
pub const KVB_ERR_NULL_POINTER: kvb_status = 2;
pub const KVB_ERR_SHAPE_MISMATCH: kvb_status = 3;
pub const KVB_ERR_UNSUPPORTED: kvb_status = 4;
pub const KVB_ERR_CORRUPT_DATA: kvb_status = 5;
pub const KVB_ERR_VERSION_UNSUPPORTED: kvb_status = 6;
pub const KVB_ERR_IO: kvb_status = 7;
pub const KVB_ERR_OUT_OF_MEMORY: kvb_status = 8;
pub const KVB_ERR_CAPACITY_EXHAUSTED: kvb_status = 9;
pub const KVB_ERR_NOT_FOUND: kvb_status = 10;
pub const KVB_ERR_INTERNAL: kvb_status = 11;
pub const KVB_ERR_DEVICE: kvb_status = 12;

pub const KVB_ERROR_MESSAGE_CAPACITY: usize = 512;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct kvb_error {
    pub struct_size: u32,
    pub status: kvb_status,
    pub message: [c_char; KVB_ERROR_MESSAGE_CAPACITY],
}

// ---- element types and enums --------------------------------------------------------------

pub type kvb_dtype = i32;
pub const KVB_DTYPE_F32: kvb_dtype = 0;
pub const KVB_DTYPE_F16: kvb_dtype = 1;
pub const KVB_DTYPE_BF16: kvb_dtype = 2;

pub type kvb_backend = i32;
pub const KVB_BACKEND_CPU: kvb_backend = 0;
pub const KVB_BACKEND_CUDA: kvb_backend = 1;
pub const KVB_BACKEND_AUTO: kvb_backend = 2;

// The C enums below only name values: structs carry them as int32_t fields.
pub type kvb_rope_layout = c_uint;
pub const KVB_ROPE_SPLIT_HALF: kvb_rope_layout = 0;
pub const KVB_ROPE_INTERLEAVED: kvb_rope_layout = 1;

pub type kvb_method = c_uint;
pub const KVB_METHOD_BLOCK_GTQ: kvb_method = 0;
pub const KVB_METHOD_UNIFORM_TQ_MSE: kvb_method = 1;

pub type kvb_score = c_uint;
pub const KVB_SCORE_ENERGY: kvb_score = 0;
pub const KVB_SCORE_PRODUCT: kvb_score = 1;

pub type kvb_codebooks = c_uint;
pub const KVB_CODEBOOKS_LLOYD_MAX: kvb_codebooks = 0;
pub const KVB_CODEBOOKS_REFERENCE: kvb_codebooks = 1;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct kvb_model_shape {
    pub struct_size: u32,
    pub n_layers: u32,
    pub n_q_heads: u32,
    pub n_kv_heads: u32,
    pub head_dim: u32,
    pub rotary_dim: u32,
    pub rope_layout: i32,
    pub reserved: u32,
    pub rope_theta: f64,
}

// ---- opaque handles -----------------------------------------------------------------------

/// Opaque; only ever behind a pointer. Neither Send, Sync nor Unpin.
#[repr(C)]
pub struct kvb_context {
    _private: [u8; 0],
    _marker: PhantomData<(*mut u8, PhantomPinned)>,
}

/// Opaque; only ever behind a pointer.
#[repr(C)]
pub struct kvb_plan {
    _private: [u8; 0],
    _marker: PhantomData<(*mut u8, PhantomPinned)>,
}

/// Opaque; only ever behind a pointer.
#[repr(C)]
pub struct kvb_calibrator {
    _private: [u8; 0],
    _marker: PhantomData<(*mut u8, PhantomPinned)>,
}

/// Opaque; only ever behind a pointer.
#[repr(C)]
pub struct kvb_cache {
    _private: [u8; 0],
    _marker: PhantomData<(*mut u8, PhantomPinned)>,
}

// ---- contexts -----------------------------------------------------------------------------

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct kvb_context_params {
    pub struct_size: u32,
    pub backend: kvb_backend,
    pub device: i32,
    pub n_threads: u32,
    pub reserved: [u32; 8],
}

// ---- plans --------------------------------------------------------------------------------

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct kvb_plan_info {
    pub struct_size: u32,
    pub n_layers: u32,
    pub n_q_heads: u32,
    pub n_kv_heads: u32,
    pub head_dim: u32,
    pub rotary_dim: u32,
    pub rope_layout: i32,
    pub rope_theta: f64,
    pub method: i32,
    pub k_avg_bits: f64,
    pub v_bits: u32,
    pub sink_tokens: u32,
    pub window_tokens: u32,
    pub n_fp16_layers: u32,
    pub bytes_per_token_per_head: f64,
    pub bytes_per_token_total: u64,
    pub calib_tokens: u64,
}

// ---- calibration --------------------------------------------------------------------------

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct kvb_plan_options {
    pub struct_size: u32,
    pub method: i32,
    pub k_avg_bits: f64,
    pub k_min_bits: i32,
    pub k_max_bits: i32,
    pub v_bits: i32,
    pub score: i32,
    pub codebooks: i32,
    pub sink_tokens: u32,
    pub window_tokens: u32,
    pub n_fp16_layers: u32,
    pub fp16_layers: *const u32,
    pub rotation_seed: u64,
    pub corpus: *const c_char,
    pub date: *const c_char,
    pub model_fingerprint_hex: *const c_char,
    pub reserved: [u32; 8],
}

// ---- caches -------------------------------------------------------------------------------

/// Never a valid sequence id; written to id outputs on failure.
pub const KVB_SEQ_NONE: u64 = u64::MAX;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct kvb_cache_params {
    pub struct_size: u32,
    pub page_size: u32,
    pub max_pages: u64,
    pub sink_tokens: i64,
    pub window_tokens: i64,
    pub model: *const kvb_model_shape,
    pub max_sequences: u32,
    pub kv_head_begin: u32,
    pub kv_head_end: u32,
    pub reserved: [u32; 5],
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct kvb_cache_stats {
    pub struct_size: u32,
    pub page_size: u32,
    pub pages_total: u64,
    pub pages_used: u64,
    pub pool_bytes: u64,
    pub packed_bytes_used: u64,
    pub fp16_region_bytes: u64,
    pub sequences: u64,
    pub tokens: u64,
}

// ---- attention ----------------------------------------------------------------------------

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct kvb_attention_params {
    pub struct_size: u32,
    pub scale: f32,
    pub precision: u32,
    pub reserved: [u32; 5],
}

/// fp16 tensor-core operands on the CUDA backend (the default).
pub const KVB_PRECISION_FP16: u32 = 0;
/// fp32-grade products on the CUDA backend (decode only).
pub const KVB_PRECISION_FP32: u32 = 1;

// ---- functions ----------------------------------------------------------------------------

extern "C" {
    pub fn kvb_version_number() -> u32;
    pub fn kvb_version_string() -> *const c_char;

    pub fn kvb_status_string(status: kvb_status) -> *const c_char;
    pub fn kvb_error_init(err: *mut kvb_error);

    pub fn kvb_model_shape_default(shape: *mut kvb_model_shape);

    pub fn kvb_context_params_default(params: *mut kvb_context_params);
    pub fn kvb_context_create(
        params: *const kvb_context_params,
        out: *mut *mut kvb_context,
        err: *mut kvb_error,
    ) -> kvb_status;
    pub fn kvb_context_destroy(ctx: *mut kvb_context);
    pub fn kvb_context_backend(
        ctx: *const kvb_context,
        backend_out: *mut kvb_backend,
        device_out: *mut i32,
        err: *mut kvb_error,
    ) -> kvb_status;
    pub fn kvb_context_last_error(ctx: *const kvb_context, buf: *mut c_char, cap: usize) -> usize;

    pub fn kvb_plan_load_file(path: *const c_char, out: *mut *mut kvb_plan, err: *mut kvb_error) -> kvb_status;
    pub fn kvb_plan_load_memory(
        data: *const c_void,
        size: usize,
        out: *mut *mut kvb_plan,
        err: *mut kvb_error,
    ) -> kvb_status;
    pub fn kvb_plan_save_file(plan: *const kvb_plan, path: *const c_char, err: *mut kvb_error) -> kvb_status;
    pub fn kvb_plan_serialize(
        plan: *const kvb_plan,
        buf: *mut c_void,
        capacity: usize,
        size_out: *mut usize,
        err: *mut kvb_error,
    ) -> kvb_status;
    pub fn kvb_plan_destroy(plan: *mut kvb_plan);
    pub fn kvb_plan_get_info(plan: *const kvb_plan, info: *mut kvb_plan_info, err: *mut kvb_error) -> kvb_status;
    pub fn kvb_plan_bytes_per_token(
        plan: *const kvb_plan,
        layer: u32,
        kv_head: u32,
        bytes_out: *mut u64,
        err: *mut kvb_error,
    ) -> kvb_status;
    pub fn kvb_plan_check_shape(
        plan: *const kvb_plan,
        n_layers: u32,
        n_q_heads: u32,
        n_kv_heads: u32,
        head_dim: u32,
        err: *mut kvb_error,
    ) -> kvb_status;
    pub fn kvb_plan_check_model(
        plan: *const kvb_plan,
        model: *const kvb_model_shape,
        err: *mut kvb_error,
    ) -> kvb_status;
    pub fn kvb_plan_supported(ctx: *const kvb_context, plan: *const kvb_plan, err: *mut kvb_error) -> kvb_status;

    pub fn kvb_calibrator_create(
        ctx: *mut kvb_context,
        shape: *const kvb_model_shape,
        out: *mut *mut kvb_calibrator,
        err: *mut kvb_error,
    ) -> kvb_status;
    pub fn kvb_calibrator_destroy(cal: *mut kvb_calibrator);
    pub fn kvb_calibrator_observe(
        cal: *mut kvb_calibrator,
        layer: u32,
        q: *const c_void,
        k: *const c_void,
        n_tokens: usize,
        dtype: kvb_dtype,
        err: *mut kvb_error,
    ) -> kvb_status;
    pub fn kvb_plan_options_default(options: *mut kvb_plan_options);
    pub fn kvb_calibrator_build_plan(
        cal: *const kvb_calibrator,
        options: *const kvb_plan_options,
        out: *mut *mut kvb_plan,
        err: *mut kvb_error,
    ) -> kvb_status;

    pub fn kvb_cache_params_default(params: *mut kvb_cache_params);
    pub fn kvb_cache_create(
        ctx: *mut kvb_context,
        plan: *const kvb_plan,
        params: *const kvb_cache_params,
        out: *mut *mut kvb_cache,
        err: *mut kvb_error,
    ) -> kvb_status;
    pub fn kvb_cache_destroy(cache: *mut kvb_cache);
    pub fn kvb_cache_seq_add(cache: *mut kvb_cache, id_out: *mut u64, err: *mut kvb_error) -> kvb_status;
    pub fn kvb_cache_seq_remove(cache: *mut kvb_cache, seq: u64, err: *mut kvb_error) -> kvb_status;
    pub fn kvb_cache_seq_fork(
        cache: *mut kvb_cache,
        src: u64,
        prefix_len: u32,
        id_out: *mut u64,
        err: *mut kvb_error,
    ) -> kvb_status;
    pub fn kvb_cache_seq_length(
        cache: *const kvb_cache,
        seq: u64,
        layer: u32,
        len_out: *mut u32,
        err: *mut kvb_error,
    ) -> kvb_status;
    pub fn kvb_cache_append(
        cache: *mut kvb_cache,
        layer: u32,
        seqs: *const u64,
        n_tokens: *const u32,
        n_seqs: usize,
        k: *const c_void,
        v: *const c_void,
        dtype: kvb_dtype,
        stream: *mut c_void,
        err: *mut kvb_error,
    ) -> kvb_status;
    pub fn kvb_cache_read(
        cache: *const kvb_cache,
        seq: u64,
        layer: u32,
        pos: u32,
        n_tokens: u32,
        k_out: *mut f32,
        v_out: *mut f32,
        err: *mut kvb_error,
    ) -> kvb_status;
    pub fn kvb_cache_get_stats(cache: *const kvb_cache, stats: *mut kvb_cache_stats, err: *mut kvb_error)
        -> kvb_status;
    pub fn kvb_cache_kv_heads(
        cache: *const kvb_cache,
        begin_out: *mut u32,
        end_out: *mut u32,
        err: *mut kvb_error,
    ) -> kvb_status;

    pub fn kvb_cache_seq_export_size(
        cache: *const kvb_cache,
        seq: u64,
        size_out: *mut usize,
        err: *mut kvb_error,
    ) -> kvb_status;
    pub fn kvb_cache_seq_export(
        cache: *const kvb_cache,
        seq: u64,
        buf: *mut c_void,
        capacity: usize,
        size_out: *mut usize,
        stream: *mut c_void,
        err: *mut kvb_error,
    ) -> kvb_status;
    pub fn kvb_cache_seq_import(
        cache: *mut kvb_cache,
        buf: *const c_void,
        size: usize,
        id_out: *mut u64,
        stream: *mut c_void,
        err: *mut kvb_error,
    ) -> kvb_status;

    pub fn kvb_attention_params_default(params: *mut kvb_attention_params);
    pub fn kvb_attention_decode(
        cache: *mut kvb_cache,
        layer: u32,
        seqs: *const u64,
        n_seqs: usize,
        q: *const c_void,
        q_dtype: kvb_dtype,
        out: *mut f32,
        lse: *mut f32,
        params: *const kvb_attention_params,
        stream: *mut c_void,
        err: *mut kvb_error,
    ) -> kvb_status;
    pub fn kvb_attention_extend(
        cache: *mut kvb_cache,
        layer: u32,
        seqs: *const u64,
        q_len: *const u32,
        n_seqs: usize,
        q: *const c_void,
        q_dtype: kvb_dtype,
        out: *mut f32,
        lse: *mut f32,
        params: *const kvb_attention_params,
        stream: *mut c_void,
        err: *mut kvb_error,
    ) -> kvb_status;
}
