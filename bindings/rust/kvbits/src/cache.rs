//! The paged, packed KV cache: sequences, append, read-back, statistics (`kvb_cache_*`).
use crate::check;
use crate::context::Context;
use crate::error::{call, Error, Result, Status};
use crate::plan::Plan;
use crate::types::{Dtype, HalfDtype, ModelShape};
use kvbits_sys as ffi;
use std::ffi::c_void;
use std::ptr::{self, NonNull};

/// A sequence id, chosen by the cache (small integers, reused after removal).
pub type SeqId = u64;

/// Parameters of [`Cache::new`] (`kvb_cache_params`). `Default` gives the library's defaults
/// except `max_pages`, which is 0 there and must be set.
#[derive(Clone, Debug, PartialEq)]
pub struct CacheParams {
    /// Tokens per page, 1..4096; default 64.
    pub page_size: u32,
    /// Pool capacity in pages, 1..2^32-1; the whole pool is allocated at creation.
    pub max_pages: u64,
    /// fp16 sink tokens per sequence, 0..2^24; `None` = the plan's.
    pub sink_tokens: Option<u32>,
    /// fp16 recent window per sequence, 0..2^24; `None` = the plan's.
    pub window_tokens: Option<u32>,
    /// Your model's shape: a plan made for another model is then refused (`ShapeMismatch`).
    pub model: Option<ModelShape>,
    /// 1..2^24; default 1024.
    pub max_sequences: u32,
    /// KV heads `(begin, end)` of the plan (tensor parallelism: one cache per GPU); `None` =
    /// every head. Such a cache holds only those heads: [`Cache::shape`] then has
    /// `n_kv_heads = end - begin` and `n_q_heads = (end - begin) * group`, and its results are
    /// bit-identical to those heads of a cache of every head.
    pub kv_heads: Option<(u32, u32)>,
}

impl Default for CacheParams {
    fn default() -> CacheParams {
        let mut raw: ffi::kvb_cache_params = unsafe { std::mem::zeroed() };
        unsafe { ffi::kvb_cache_params_default(&mut raw) };
        CacheParams {
            page_size: raw.page_size,
            max_pages: raw.max_pages,
            sink_tokens: None,
            window_tokens: None,
            model: None,
            max_sequences: raw.max_sequences,
            kv_heads: None,
        }
    }
}

/// Memory statistics of a cache (`kvb_cache_stats`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheStats {
    /// Tokens per page.
    pub page_size: u32,
    /// Pool capacity in pages.
    pub pages_total: u64,
    /// Pages holding tokens of some sequence.
    pub pages_used: u64,
    /// Bytes of page storage, all layers and KV heads (allocated).
    pub pool_bytes: u64,
    /// Bytes of the pages in use.
    pub packed_bytes_used: u64,
    /// Sink + window buffers currently allocated.
    pub fp16_region_bytes: u64,
    /// Live sequences.
    pub sequences: u64,
    /// Sum over sequences of their layer-0 length.
    pub tokens: u64,
}

/// A paged, packed KV cache of one plan on one context (`kvb_cache`).
///
/// `Send` but not `Sync`: calls that change the cache take `&mut self`, and a `&Cache` cannot
/// reach another thread, which is the external synchronisation the header asks for. The cache
/// keeps its context and plan alive, so they may be dropped before it.
///
/// Tensors are dense, row-major host slices checked against the plan's shape before each call;
/// on CUDA contexts the library stages them to the device. The `*_raw` methods take device (or
/// host) pointers instead.
///
/// ```
/// fn send<T: Send>() {}
/// send::<kvbits::Cache>();
/// ```
/// ```compile_fail
/// fn sync<T: Sync>() {}
/// sync::<kvbits::Cache>(); // a cache needs external synchronisation
/// ```
pub struct Cache {
    raw: NonNull<ffi::kvb_cache>,
    shape: ModelShape,
    kv_heads: (u32, u32),
    stream: *mut c_void,
}

// kvbits.h: "kvb_cache: needs external synchronisation"; !Sync plus &mut self provide it, and
// the handle may move between threads.
unsafe impl Send for Cache {}

impl Cache {
    /// Creates an empty cache of `plan` on `ctx` (`kvb_cache_create`); the whole page pool is
    /// allocated now.
    pub fn new(ctx: &Context, plan: &Plan, params: &CacheParams) -> Result<Cache> {
        let info = plan.info()?;
        let model = params.model.map(|m| m.to_raw());
        let mut raw: ffi::kvb_cache_params = unsafe { std::mem::zeroed() };
        unsafe { ffi::kvb_cache_params_default(&mut raw) };
        raw.page_size = params.page_size;
        raw.max_pages = params.max_pages;
        raw.sink_tokens = params.sink_tokens.map_or(-1, i64::from);
        raw.window_tokens = params.window_tokens.map_or(-1, i64::from);
        raw.model = model.as_ref().map_or(ptr::null(), |m| m as *const ffi::kvb_model_shape);
        raw.max_sequences = params.max_sequences;
        if let Some((begin, end)) = params.kv_heads {
            raw.kv_head_begin = begin;
            raw.kv_head_end = end;
        }
        let mut out: *mut ffi::kvb_cache = ptr::null_mut();
        call(|err| unsafe { ffi::kvb_cache_create(ctx.as_ptr(), plan.as_ptr(), &raw, &mut out, err) })?;
        let raw = NonNull::new(out).ok_or_else(|| Error::new(Status::Internal, "no cache returned"))?;
        let (mut begin, mut end) = (0u32, 0u32);
        call(|err| unsafe { ffi::kvb_cache_kv_heads(raw.as_ptr(), &mut begin, &mut end, err) })?;
        let mut shape = info.shape();
        let group = shape.n_q_heads / shape.n_kv_heads;
        shape.n_kv_heads = end - begin;
        shape.n_q_heads = (end - begin) * group;
        Ok(Cache { raw, shape, kv_heads: (begin, end), stream: ptr::null_mut() })
    }

    /// The shape of the cache's plan: slice lengths are checked against it. For a cache of a
    /// KV-head range, its heads only (`n_kv_heads = end - begin`, `n_q_heads` their query heads).
    pub fn shape(&self) -> &ModelShape {
        &self.shape
    }

    /// The KV heads `(begin, end)` of the plan this cache holds (`kvb_cache_kv_heads`).
    pub fn kv_heads(&self) -> (u32, u32) {
        self.kv_heads
    }

    /// Sets the CUDA stream (`cudaStream_t`) that the slice-taking methods pass to the library;
    /// null (the initial value) is the default stream. The CPU backend ignores it.
    ///
    /// # Safety
    /// `stream` must be null or a valid CUDA stream of the context's device, and stay valid
    /// until it is replaced or the cache is dropped.
    pub unsafe fn set_stream(&mut self, stream: *mut c_void) {
        self.stream = stream;
    }

    /// The stream set by [`set_stream`](Self::set_stream) (null by default).
    pub fn stream(&self) -> *mut c_void {
        self.stream
    }

    /// Adds an empty sequence (`kvb_cache_seq_add`).
    pub fn seq_add(&mut self) -> Result<SeqId> {
        let mut id = ffi::KVB_SEQ_NONE;
        call(|err| unsafe { ffi::kvb_cache_seq_add(self.raw.as_ptr(), &mut id, err) })?;
        Ok(id)
    }

    /// Removes a sequence; its pages return to the pool (`kvb_cache_seq_remove`).
    pub fn seq_remove(&mut self, seq: SeqId) -> Result<()> {
        call(|err| unsafe { ffi::kvb_cache_seq_remove(self.raw.as_ptr(), seq, err) })
    }

    /// Adds a sequence sharing the first `prefix_len` tokens of `src` in every layer,
    /// copy-on-write (`kvb_cache_seq_fork`).
    pub fn seq_fork(&mut self, src: SeqId, prefix_len: u32) -> Result<SeqId> {
        let mut id = ffi::KVB_SEQ_NONE;
        call(|err| unsafe { ffi::kvb_cache_seq_fork(self.raw.as_ptr(), src, prefix_len, &mut id, err) })?;
        Ok(id)
    }

    /// Tokens held by (seq, layer) (`kvb_cache_seq_length`).
    pub fn seq_length(&self, seq: SeqId, layer: u32) -> Result<u32> {
        let mut len: u32 = 0;
        call(|err| unsafe { ffi::kvb_cache_seq_length(self.raw.as_ptr(), seq, layer, &mut len, err) })?;
        Ok(len)
    }

    fn kv_factors(&self, n_tokens: &[u32]) -> [(&'static str, u64); 3] {
        [
            ("sum(n_tokens)", check::sum(n_tokens)),
            ("n_kv_heads", self.shape.n_kv_heads.into()),
            ("head_dim", self.shape.head_dim.into()),
        ]
    }

    /// Appends post-RoPE keys and values of one layer for several sequences at once: `seqs[i]`
    /// gets `n_tokens[i]` new tokens; `k`, `v` are [sum(n_tokens), n_kv_heads, head_dim],
    /// sequence after sequence (`kvb_cache_append`). All-or-nothing.
    pub fn append(&mut self, layer: u32, seqs: &[SeqId], n_tokens: &[u32], k: &[f32], v: &[f32]) -> Result<()> {
        check::same_len("seqs", seqs.len(), "n_tokens", n_tokens.len())?;
        let f = self.kv_factors(n_tokens);
        check::len("k", k.len(), &f)?;
        check::len("v", v.len(), &f)?;
        let stream = self.stream;
        unsafe { self.append_raw(layer, seqs, n_tokens, k.as_ptr().cast(), v.as_ptr().cast(), Dtype::F32, stream) }
    }

    /// [`append`](Self::append) for fp16 or bf16 keys and values given as raw `u16` bits.
    pub fn append_half(
        &mut self,
        layer: u32,
        seqs: &[SeqId],
        n_tokens: &[u32],
        k: &[u16],
        v: &[u16],
        dtype: HalfDtype,
    ) -> Result<()> {
        check::same_len("seqs", seqs.len(), "n_tokens", n_tokens.len())?;
        let f = self.kv_factors(n_tokens);
        check::len("k", k.len(), &f)?;
        check::len("v", v.len(), &f)?;
        let stream = self.stream;
        unsafe { self.append_raw(layer, seqs, n_tokens, k.as_ptr().cast(), v.as_ptr().cast(), dtype.into(), stream) }
    }

    /// [`append`](Self::append) on raw pointers, for device memory and explicit streams.
    ///
    /// # Safety
    /// `k` and `v` must each point to `sum(n_tokens) * n_kv_heads * head_dim` elements of
    /// `dtype`, in host memory or (on a CUDA context) device memory of the context's device,
    /// readable until the work on `stream` is done. `stream` must be null or a valid
    /// `cudaStream_t` of that device. `seqs` and `n_tokens` are host slices (checked here).
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn append_raw(
        &mut self,
        layer: u32,
        seqs: &[SeqId],
        n_tokens: &[u32],
        k: *const c_void,
        v: *const c_void,
        dtype: Dtype,
        stream: *mut c_void,
    ) -> Result<()> {
        check::same_len("seqs", seqs.len(), "n_tokens", n_tokens.len())?;
        let raw = self.raw.as_ptr();
        call(|err| {
            ffi::kvb_cache_append(
                raw,
                layer,
                seqs.as_ptr(),
                n_tokens.as_ptr(),
                seqs.len(),
                k,
                v,
                dtype.raw(),
                stream,
                err,
            )
        })
    }

    /// Reads tokens [pos, pos + n_tokens) of (seq, layer) back as fp32 (`kvb_cache_read`):
    /// dequantized for packed tokens, exact for fp16 ones. Either output may be `None` (not
    /// both); each is [n_tokens, n_kv_heads, head_dim]. For tests and debugging.
    pub fn read(
        &self,
        seq: SeqId,
        layer: u32,
        pos: u32,
        n_tokens: u32,
        k_out: Option<&mut [f32]>,
        v_out: Option<&mut [f32]>,
    ) -> Result<()> {
        let f = [
            ("n_tokens", u64::from(n_tokens)),
            ("n_kv_heads", self.shape.n_kv_heads.into()),
            ("head_dim", self.shape.head_dim.into()),
        ];
        if let Some(k) = k_out.as_ref() {
            check::len("k_out", k.len(), &f)?;
        }
        if let Some(v) = v_out.as_ref() {
            check::len("v_out", v.len(), &f)?;
        }
        let k = k_out.map_or(ptr::null_mut(), |s| s.as_mut_ptr());
        let v = v_out.map_or(ptr::null_mut(), |s| s.as_mut_ptr());
        call(|err| unsafe { ffi::kvb_cache_read(self.raw.as_ptr(), seq, layer, pos, n_tokens, k, v, err) })
    }

    /// [`read`](Self::read) into new vectors: (keys, values).
    pub fn read_kv(&self, seq: SeqId, layer: u32, pos: u32, n_tokens: u32) -> Result<(Vec<f32>, Vec<f32>)> {
        let n = check::elements(
            "read",
            &[
                ("n_tokens", u64::from(n_tokens)),
                ("n_kv_heads", self.shape.n_kv_heads.into()),
                ("head_dim", self.shape.head_dim.into()),
            ],
        )?;
        let (mut k, mut v) = (vec![0f32; n], vec![0f32; n]);
        self.read(seq, layer, pos, n_tokens, Some(&mut k), Some(&mut v))?;
        Ok((k, v))
    }

    /// Memory statistics (`kvb_cache_get_stats`).
    pub fn stats(&self) -> Result<CacheStats> {
        let mut raw: ffi::kvb_cache_stats = unsafe { std::mem::zeroed() };
        raw.struct_size = std::mem::size_of::<ffi::kvb_cache_stats>() as u32;
        call(|err| unsafe { ffi::kvb_cache_get_stats(self.raw.as_ptr(), &mut raw, err) })?;
        Ok(CacheStats {
            page_size: raw.page_size,
            pages_total: raw.pages_total,
            pages_used: raw.pages_used,
            pool_bytes: raw.pool_bytes,
            packed_bytes_used: raw.packed_bytes_used,
            fp16_region_bytes: raw.fp16_region_bytes,
            sequences: raw.sequences,
            tokens: raw.tokens,
        })
    }

    /// Bytes [`export_seq`](Self::export_seq) writes for `seq` (`kvb_cache_seq_export_size`).
    pub fn export_size(&self, seq: SeqId) -> Result<usize> {
        let mut n = 0usize;
        call(|err| unsafe { ffi::kvb_cache_seq_export_size(self.raw.as_ptr(), seq, &mut n, err) })?;
        Ok(n)
    }

    /// Every layer of `seq` as bytes (`kvb_cache_seq_export`, docs/transfer.md): a versioned
    /// header and the cache's own page and fp16 rows. [`import_seq`](Self::import_seq) on a
    /// cache of the same plan, KV-head range, page size and sink/window restores it bit for bit.
    pub fn export_seq(&self, seq: SeqId) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; self.export_size(seq)?];
        let n = unsafe { self.export_raw(seq, buf.as_mut_ptr().cast(), buf.len(), self.stream)? };
        buf.truncate(n);
        Ok(buf)
    }

    /// Adds the sequence exported in `data` and returns its id (`kvb_cache_seq_import`). A
    /// corrupt, truncated or foreign export fails (`CorruptData`, `ShapeMismatch`, ...) and
    /// leaves the cache unchanged.
    pub fn import_seq(&mut self, data: &[u8]) -> Result<SeqId> {
        let stream = self.stream;
        // A non-null pointer even for an empty slice: the library then reports the truncation.
        static NOTHING: u8 = 0;
        let ptr: *const c_void = if data.is_empty() { (&NOTHING as *const u8).cast() } else { data.as_ptr().cast() };
        unsafe { self.import_raw(ptr, data.len(), stream) }
    }

    /// [`export_seq`](Self::export_seq) into raw memory; returns the bytes written.
    ///
    /// # Safety
    /// `buf` must point to `capacity` writable bytes in host memory or (on a CUDA context)
    /// device memory of the context's device; `stream` null or a valid `cudaStream_t` of it.
    pub unsafe fn export_raw(
        &self,
        seq: SeqId,
        buf: *mut c_void,
        capacity: usize,
        stream: *mut c_void,
    ) -> Result<usize> {
        let mut n = 0usize;
        call(|err| ffi::kvb_cache_seq_export(self.raw.as_ptr(), seq, buf, capacity, &mut n, stream, err))?;
        Ok(n)
    }

    /// [`import_seq`](Self::import_seq) from raw memory.
    ///
    /// # Safety
    /// `buf` must point to `size` readable bytes in host memory or (on a CUDA context) device
    /// memory of the context's device; `stream` null or a valid `cudaStream_t` of it.
    pub unsafe fn import_raw(&mut self, buf: *const c_void, size: usize, stream: *mut c_void) -> Result<SeqId> {
        let mut id = ffi::KVB_SEQ_NONE;
        call(|err| ffi::kvb_cache_seq_import(self.raw.as_ptr(), buf, size, &mut id, stream, err))?;
        Ok(id)
    }

    /// The raw handle, for calling `kvbits-sys` directly; it stays owned by `self`.
    pub fn as_ptr(&self) -> *mut ffi::kvb_cache {
        self.raw.as_ptr()
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        unsafe { ffi::kvb_cache_destroy(self.raw.as_ptr()) }
    }
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("shape", &self.shape).field("stats", &self.stats().ok()).finish()
    }
}
