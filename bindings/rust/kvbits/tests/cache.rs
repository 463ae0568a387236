//! The cache: parameters, sequences, append (f32 and half), read-back, statistics, and bad
//! input leaving the cache unchanged.
mod common;
use common::*;
use kvbits::{Cache, CacheParams, CacheStats, HalfDtype, ModelShape, SeqId, Status};

fn relative_l2(got: &[f32], want: &[f32]) -> f64 {
    let err: f64 = got.iter().zip(want).map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2)).sum();
    let norm: f64 = want.iter().map(|b| f64::from(*b).powi(2)).sum();
    (err / norm).sqrt()
}

/// Lengths of every layer of `seq`, and the statistics: what a failed call must not change.
fn snapshot(cache: &Cache, seqs: &[SeqId]) -> (Vec<u32>, CacheStats) {
    let mut lengths = Vec::new();
    for &s in seqs {
        for layer in 0..SHAPE.0 {
            lengths.push(cache.seq_length(s, layer).unwrap());
        }
    }
    (lengths, cache.stats().unwrap())
}

#[test]
fn default_params_are_the_library_defaults() {
    let p = CacheParams::default();
    assert_eq!((p.page_size, p.max_pages, p.max_sequences), (64, 0, 1024));
    assert_eq!((p.sink_tokens, p.window_tokens, p.model), (None, None, None));
}

#[test]
fn read_back_of_an_8_bit_plan_is_close_to_the_input() {
    let ctx = cpu();
    let plan8 = plan8(&ctx);
    let plan3 = plan3(&ctx);
    let mut rng = Rng::new(21);
    let n = 20u32;
    let k = activations(&mut rng, n as usize * 2, 32);
    let v = activations(&mut rng, n as usize * 2, 32);
    let mut errors = Vec::new();
    for plan in [&plan8, &plan3] {
        let mut cache = cache(&ctx, plan);
        let seq = cache.seq_add().unwrap();
        cache.append(0, &[seq], &[n], &k, &v).unwrap();
        let (rk, rv) = cache.read_kv(seq, 0, 0, n).unwrap();
        errors.push((relative_l2(&rk, &k), relative_l2(&rv, &v)));
    }
    let ((k8, v8), (k3, v3)) = (errors[0], errors[1]);
    assert!(k8 < 0.01 && v8 < 0.01, "8-bit relative L2 error K {} V {}", k8, v8);
    assert!(k3 > 0.05 && k3 < 0.3 && v3 > 0.05 && v3 < 0.3, "3-bit relative L2 error K {} V {}", k3, v3);
}

#[test]
fn sequences_add_remove_fork_and_report_lengths() {
    let ctx = cpu();
    let plan = plan3(&ctx);
    let mut cache = cache(&ctx, &plan);
    let a = cache.seq_add().unwrap();
    let b = cache.seq_add().unwrap();
    assert_ne!(a, b);
    let mut rng = Rng::new(8);
    let k = activations(&mut rng, 30 * 2, 32);
    let v = activations(&mut rng, 30 * 2, 32);
    for layer in 0..2 {
        cache.append(layer, &[a, b], &[20, 10], &k, &v).unwrap();
    }
    assert_eq!(cache.seq_length(a, 1).unwrap(), 20);
    assert_eq!(cache.seq_length(b, 0).unwrap(), 10);

    let stats = cache.stats().unwrap();
    assert_eq!((stats.page_size, stats.pages_total, stats.sequences, stats.tokens), (8, 64, 2, 30));
    // Pages of 8 tokens: 3 for a's 20 tokens, 2 for b's 10 (per layer, all heads in one page).
    assert_eq!(stats.pages_used, 5);
    assert_eq!(stats.packed_bytes_used * stats.pages_total, stats.pool_bytes * stats.pages_used);
    assert_eq!(stats.fp16_region_bytes, 0);

    // A fork shares a's first 12 tokens of every layer, copy-on-write.
    let f = cache.seq_fork(a, 12).unwrap();
    assert_eq!((cache.seq_length(f, 0).unwrap(), cache.seq_length(f, 1).unwrap()), (12, 12));
    assert_eq!(cache.read_kv(f, 1, 0, 12).unwrap(), cache.read_kv(a, 1, 0, 12).unwrap());
    let before = cache.read_kv(a, 0, 0, 20).unwrap();
    cache.append(0, &[f], &[3], &k[..3 * 64], &v[..3 * 64]).unwrap();
    assert_eq!(cache.seq_length(f, 0).unwrap(), 15);
    assert_eq!(cache.read_kv(a, 0, 0, 20).unwrap(), before, "writing the fork must not touch its source");
    assert_eq!(cache.stats().unwrap().sequences, 3);

    cache.seq_remove(b).unwrap();
    expect_err(cache.seq_length(b, 0), Status::NotFound);
    expect_err(cache.seq_remove(b), Status::NotFound);
    assert_eq!(cache.stats().unwrap().sequences, 2);
    // Ids are reused after removal.
    assert_eq!(cache.seq_add().unwrap(), b);
}

#[test]
fn sink_and_window_tokens_read_back_exactly() {
    let ctx = cpu();
    let plan = plan3(&ctx);
    let params = CacheParams {
        page_size: 4,
        max_pages: 32,
        sink_tokens: Some(2),
        window_tokens: Some(3),
        ..CacheParams::default()
    };
    let mut cache = Cache::new(&ctx, &plan, &params).unwrap();
    let seq = cache.seq_add().unwrap();
    let mut rng = Rng::new(12);
    let n = 12usize;
    let bits = f16_bits(&mut rng, 2 * n * kv_row());
    let exact: Vec<f32> = bits.iter().map(|&b| f16_to_f32(b)).collect();
    let (k, v) = exact.split_at(n * kv_row());
    cache.append(0, &[seq], &[n as u32], k, v).unwrap();
    let (rk, rv) = cache.read_kv(seq, 0, 0, n as u32).unwrap();
    let row = kv_row();
    // Sink [0, 2) and window [9, 12) are held in fp16: exact. The middle is packed: not exact.
    for t in [0usize, 1, 9, 10, 11] {
        assert_eq!(&rk[t * row..][..row], &k[t * row..][..row], "token {}", t);
        assert_eq!(&rv[t * row..][..row], &v[t * row..][..row], "token {}", t);
    }
    assert_ne!(&rk[5 * row..][..row], &k[5 * row..][..row]);
    assert!(cache.stats().unwrap().fp16_region_bytes > 0);
}

#[test]
fn half_appends_store_what_their_exact_f32_values_store() {
    let ctx = cpu();
    let plan = plan3(&ctx);
    let mut cache = cache(&ctx, &plan);
    let (a, b, c, d) =
        (cache.seq_add().unwrap(), cache.seq_add().unwrap(), cache.seq_add().unwrap(), cache.seq_add().unwrap());
    let mut rng = Rng::new(13);
    let n = 9usize;
    let k16 = f16_bits(&mut rng, n * kv_row());
    let v16 = f16_bits(&mut rng, n * kv_row());
    cache.append_half(0, &[a], &[n as u32], &k16, &v16, HalfDtype::F16).unwrap();
    let k: Vec<f32> = k16.iter().map(|&x| f16_to_f32(x)).collect();
    let v: Vec<f32> = v16.iter().map(|&x| f16_to_f32(x)).collect();
    cache.append(0, &[b], &[n as u32], &k, &v).unwrap();
    assert_eq!(cache.read_kv(a, 0, 0, n as u32).unwrap(), cache.read_kv(b, 0, 0, n as u32).unwrap());

    let kb: Vec<u16> = activations(&mut rng, n * 2, 32).iter().map(|&x| bf16_bits(x)).collect();
    let vb: Vec<u16> = activations(&mut rng, n * 2, 32).iter().map(|&x| bf16_bits(x)).collect();
    cache.append_half(0, &[c], &[n as u32], &kb, &vb, HalfDtype::Bf16).unwrap();
    let k: Vec<f32> = kb.iter().map(|&x| bf16_to_f32(x)).collect();
    let v: Vec<f32> = vb.iter().map(|&x| bf16_to_f32(x)).collect();
    cache.append(0, &[d], &[n as u32], &k, &v).unwrap();
    assert_eq!(cache.read_kv(c, 0, 0, n as u32).unwrap(), cache.read_kv(d, 0, 0, n as u32).unwrap());
    assert_ne!(cache.read_kv(a, 0, 0, n as u32).unwrap(), cache.read_kv(c, 0, 0, n as u32).unwrap());
}

#[test]
fn bad_appends_leave_the_cache_unchanged() {
    let ctx = cpu();
    let plan = plan3(&ctx);
    let mut cache = cache(&ctx, &plan);
    let a = cache.seq_add().unwrap();
    let b = cache.seq_add().unwrap();
    let mut rng = Rng::new(14);
    let k = activations(&mut rng, 5 * 2, 32);
    let v = activations(&mut rng, 5 * 2, 32);
    cache.append(0, &[a, b], &[3, 2], &k, &v).unwrap();
    let before = snapshot(&cache, &[a, b]);
    let contents = (cache.read_kv(a, 0, 0, 3).unwrap(), cache.read_kv(b, 0, 0, 2).unwrap());

    // Wrong slice lengths: refused in Rust, with the expected count in the message.
    let msg = expect_err(cache.append(0, &[a, b], &[3, 2], &k[1..], &v), Status::InvalidArgument);
    assert!(msg.contains("k has 319 elements; expected 320"), "{}", msg);
    let msg = expect_err(cache.append(0, &[a, b], &[3, 2], &k, &v[..64]), Status::InvalidArgument);
    assert!(msg.contains("v has 64 elements"), "{}", msg);
    let msg = expect_err(cache.append(0, &[a, b], &[5], &k, &v), Status::InvalidArgument);
    assert!(msg.contains("n_tokens"), "{}", msg);
    expect_err(cache.append_half(0, &[a], &[1], &[0u16; 63], &[0u16; 64], HalfDtype::F16), Status::InvalidArgument);
    // Refused by the library.
    expect_err(cache.append(0, &[a, 77], &[3, 2], &k, &v), Status::NotFound);
    expect_err(cache.append(0, &[a, a], &[3, 2], &k, &v), Status::InvalidArgument);
    expect_err(cache.append(2, &[a, b], &[3, 2], &k, &v), Status::InvalidArgument);
    expect_err(cache.append(0, &[], &[], &[], &[]), Status::InvalidArgument);
    let mut nan = k.clone();
    nan[300] = f32::NAN;
    expect_err(cache.append(0, &[a, b], &[3, 2], &nan, &v), Status::InvalidArgument);

    assert_eq!(snapshot(&cache, &[a, b]), before);
    assert_eq!((cache.read_kv(a, 0, 0, 3).unwrap(), cache.read_kv(b, 0, 0, 2).unwrap()), contents);
}

#[test]
fn a_full_pool_refuses_the_whole_append() {
    let ctx = cpu();
    let plan = plan3(&ctx);
    let params = CacheParams { page_size: 4, max_pages: 2, max_sequences: 2, ..CacheParams::default() };
    let mut cache = Cache::new(&ctx, &plan, &params).unwrap();
    let a = cache.seq_add().unwrap();
    let b = cache.seq_add().unwrap();
    expect_err(cache.seq_add(), Status::CapacityExhausted);
    let data = vec![0.5f32; 9 * kv_row()];
    cache.append(0, &[a], &[4], &data[..4 * kv_row()], &data[..4 * kv_row()]).unwrap();
    let before = snapshot(&cache, &[a, b]);
    // a would need a second page and b one more: three pages of two.
    expect_err(
        cache.append(0, &[a, b], &[1, 4], &data[..5 * kv_row()], &data[..5 * kv_row()]),
        Status::CapacityExhausted,
    );
    assert_eq!(snapshot(&cache, &[a, b]), before);
    cache.append(0, &[b], &[4], &data[..4 * kv_row()], &data[..4 * kv_row()]).unwrap();
    assert_eq!(cache.stats().unwrap().pages_used, 2);
}

#[test]
fn bad_reads_and_queries_are_refused() {
    let ctx = cpu();
    let plan = plan3(&ctx);
    let mut cache = cache(&ctx, &plan);
    let a = cache.seq_add().unwrap();
    let data = vec![0.25f32; 4 * kv_row()];
    cache.append(0, &[a], &[4], &data, &data).unwrap();
    let mut k = vec![7f32; 4 * kv_row()];
    let msg = expect_err(cache.read(a, 0, 0, 4, Some(&mut k[1..]), None), Status::InvalidArgument);
    assert!(msg.contains("k_out"), "{}", msg);
    expect_err(cache.read(a, 0, 0, 4, None, None), Status::NullPointer);
    expect_err(cache.read(a, 0, 1, 4, Some(&mut k), None), Status::InvalidArgument); // past the end
    expect_err(cache.read(a, 0, 0, 0, Some(&mut []), None), Status::InvalidArgument);
    expect_err(cache.read(9, 0, 0, 4, Some(&mut k), None), Status::NotFound);
    assert!(k.iter().all(|&x| x == 7.0), "a failed read must not write");
    cache.read(a, 0, 0, 4, None, Some(&mut k)).unwrap();
    assert!(k.iter().all(|&x| x != 7.0));
    expect_err(cache.seq_length(a, 2), Status::InvalidArgument);
    expect_err(cache.seq_fork(a, 5), Status::InvalidArgument); // layer 0 holds only 4
    expect_err(cache.seq_fork(42, 0), Status::NotFound);
}

#[test]
fn bad_cache_params_are_refused() {
    let ctx = cpu();
    let plan = plan3(&ctx);
    let ok = CacheParams { page_size: 8, max_pages: 8, ..CacheParams::default() };
    let msg = expect_err(Cache::new(&ctx, &plan, &CacheParams { max_pages: 0, ..ok.clone() }), Status::InvalidArgument);
    assert!(msg.contains("max_pages"), "{}", msg);
    expect_err(Cache::new(&ctx, &plan, &CacheParams { page_size: 0, ..ok.clone() }), Status::InvalidArgument);
    expect_err(Cache::new(&ctx, &plan, &CacheParams { page_size: 4097, ..ok.clone() }), Status::InvalidArgument);
    expect_err(Cache::new(&ctx, &plan, &CacheParams { max_sequences: 0, ..ok.clone() }), Status::InvalidArgument);
    expect_err(
        Cache::new(&ctx, &plan, &CacheParams { sink_tokens: Some(1 << 25), ..ok.clone() }),
        Status::InvalidArgument,
    );
    expect_err(Cache::new(&ctx, &plan, &CacheParams { max_pages: 1 << 40, ..ok.clone() }), Status::InvalidArgument);
    let other = ModelShape::new(2, 8, 2, 32);
    expect_err(Cache::new(&ctx, &plan, &CacheParams { model: Some(other), ..ok.clone() }), Status::ShapeMismatch);
    Cache::new(&ctx, &plan, &CacheParams { model: Some(shape()), ..ok }).unwrap();
}
