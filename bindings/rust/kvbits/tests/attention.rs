//! Decode and extend against a plain softmax attention over the read-back K/V.
mod common;
use common::*;
use kvbits::{AttentionParams, Cache, CacheParams, HalfDtype, Precision, SeqId, Status};

const HEADS: (usize, usize, usize) = (SHAPE.1 as usize, SHAPE.2 as usize, SHAPE.3 as usize);
const TOLERANCE: f64 = 1e-5;

/// A cache with sequences of the given lengths in layer 1 (random K, V); returns their ids.
fn filled_cache(
    ctx: &kvbits::Context,
    plan: &kvbits::Plan,
    lengths: &[u32],
    params: &CacheParams,
) -> (Cache, Vec<SeqId>) {
    let mut cache = Cache::new(ctx, plan, params).unwrap();
    let seqs: Vec<SeqId> = lengths.iter().map(|_| cache.seq_add().unwrap()).collect();
    let total: u32 = lengths.iter().sum();
    let mut rng = Rng::new(31);
    let k = activations(&mut rng, total as usize * HEADS.1, HEADS.2);
    let v = activations(&mut rng, total as usize * HEADS.1, HEADS.2);
    cache.append(1, &seqs, lengths, &k, &v).unwrap();
    (cache, seqs)
}

fn params() -> CacheParams {
    CacheParams { page_size: 8, max_pages: 64, ..CacheParams::default() }
}

#[test]
fn decode_equals_softmax_attention_over_the_read_back_cache() {
    let ctx = cpu();
    let plan = plan3(&ctx);
    let lengths = [37u32, 1, 16];
    for (cache_params, what) in [
        (params(), "packed"),
        (CacheParams { sink_tokens: Some(3), window_tokens: Some(5), ..params() }, "sink+window"),
    ] {
        let (cache, seqs) = filled_cache(&ctx, &plan, &lengths, &cache_params);
        let mut rng = Rng::new(41);
        let q = activations(&mut rng, seqs.len() * HEADS.0, HEADS.2);
        let mut out = vec![0f32; q.len()];
        let mut lse = vec![0f32; seqs.len() * HEADS.0];
        cache.decode(1, &seqs, &q, &mut out, Some(&mut lse), None).unwrap();
        for (i, (&seq, &n)) in seqs.iter().zip(&lengths).enumerate() {
            let (k, v) = cache.read_kv(seq, 1, 0, n).unwrap();
            let qi = &q[i * q_row()..][..q_row()];
            let (want, want_lse) = reference_attention(qi, &k, &v, n as usize, HEADS, 1.0 / (HEADS.2 as f64).sqrt());
            let err = max_relative_error(&out[i * q_row()..][..q_row()], &want, HEADS.2);
            assert!(err < TOLERANCE, "{} sequence {}: relative error {}", what, i, err);
            for h in 0..HEADS.0 {
                let got = f64::from(lse[i * HEADS.0 + h]);
                assert!(
                    (got - want_lse[h]).abs() <= TOLERANCE * want_lse[h].abs().max(1.0),
                    "lse {} vs {}",
                    got,
                    want_lse[h]
                );
            }
        }
        // A one-token sequence returns its value exactly (weight 1).
        let (_, v1) = cache.read_kv(seqs[1], 1, 0, 1).unwrap();
        for h in 0..HEADS.0 {
            let kvh = h / (HEADS.0 / HEADS.1);
            for d in 0..HEADS.2 {
                let got = out[q_row() + h * HEADS.2 + d];
                assert!((got - v1[kvh * HEADS.2 + d]).abs() <= 1e-6 * v1[kvh * HEADS.2 + d].abs().max(1.0));
            }
        }
    }
}

#[test]
fn decode_honours_the_scale_and_half_queries() {
    let ctx = cpu();
    let plan = plan3(&ctx);
    let (cache, seqs) = filled_cache(&ctx, &plan, &[20, 9], &params());
    let mut rng = Rng::new(43);
    let q16 = f16_bits(&mut rng, 2 * q_row());
    let q: Vec<f32> = q16.iter().map(|&b| f16_to_f32(b)).collect();
    let scale = AttentionParams { scale: 0.05, ..Default::default() };
    let mut out32 = vec![0f32; q.len()];
    let mut out16 = vec![1f32; q.len()];
    cache.decode(1, &seqs, &q, &mut out32, None, Some(&scale)).unwrap();
    cache.decode_half(1, &seqs, &q16, HalfDtype::F16, &mut out16, None, Some(&scale)).unwrap();
    assert_eq!(out16, out32, "f16 queries are widened exactly");
    // The CPU backend computes in fp32 at either precision: the same bytes.
    let fp32 = AttentionParams { scale: 0.05, precision: Precision::Fp32 };
    let mut out_fp32 = vec![2f32; q.len()];
    cache.decode(1, &seqs, &q, &mut out_fp32, None, Some(&fp32)).unwrap();
    assert_eq!(out_fp32, out32, "precision changes nothing on the CPU backend");
    let (k, v) = cache.read_kv(seqs[0], 1, 0, 20).unwrap();
    let (want, _) = reference_attention(&q[..q_row()], &k, &v, 20, HEADS, 0.05);
    assert!(max_relative_error(&out32[..q_row()], &want, HEADS.2) < TOLERANCE);
    let (want_default, _) = reference_attention(&q[..q_row()], &k, &v, 20, HEADS, 1.0 / (HEADS.2 as f64).sqrt());
    assert!(max_relative_error(&out32[..q_row()], &want_default, HEADS.2) > 1e-3, "the scale must matter");

    let qb: Vec<u16> = q.iter().map(|&x| bf16_bits(x)).collect();
    let qbf: Vec<f32> = qb.iter().map(|&b| bf16_to_f32(b)).collect();
    cache.decode(1, &seqs, &qbf, &mut out32, None, None).unwrap();
    cache.decode_half(1, &seqs, &qb, HalfDtype::Bf16, &mut out16, None, None).unwrap();
    assert_eq!(out16, out32, "bf16 queries are widened exactly");
}

#[test]
fn extend_is_causal_softmax_attention_over_the_read_back_cache() {
    let ctx = cpu();
    let plan = plan3(&ctx);
    let lengths = [19u32, 6];
    let q_len = [5u32, 6];
    let (cache, seqs) = filled_cache(&ctx, &plan, &lengths, &params());
    let rows: usize = q_len.iter().sum::<u32>() as usize;
    let mut rng = Rng::new(47);
    let q = activations(&mut rng, rows * HEADS.0, HEADS.2);
    let mut out = vec![0f32; q.len()];
    let mut lse = vec![0f32; rows * HEADS.0];
    cache.extend(1, &seqs, &q_len, &q, &mut out, Some(&mut lse), None).unwrap();
    let mut row = 0;
    for (i, &seq) in seqs.iter().enumerate() {
        let (k, v) = cache.read_kv(seq, 1, 0, lengths[i]).unwrap();
        for j in 0..q_len[i] {
            let visible = (lengths[i] - q_len[i] + j + 1) as usize; // tokens [0, p]
            let qr = &q[row * q_row()..][..q_row()];
            let (want, want_lse) = reference_attention(qr, &k, &v, visible, HEADS, 1.0 / (HEADS.2 as f64).sqrt());
            let err = max_relative_error(&out[row * q_row()..][..q_row()], &want, HEADS.2);
            assert!(err < TOLERANCE, "sequence {} query {}: relative error {}", i, j, err);
            for h in 0..HEADS.0 {
                let got = f64::from(lse[row * HEADS.0 + h]);
                assert!((got - want_lse[h]).abs() <= TOLERANCE * want_lse[h].abs().max(1.0));
            }
            row += 1;
        }
    }

    // The last query of each sequence sees everything: it equals decode with that query.
    let last: Vec<f32> = [4usize, 10].iter().flat_map(|&r| q[r * q_row()..][..q_row()].to_vec()).collect();
    let mut dec = vec![0f32; last.len()];
    cache.decode(1, &seqs, &last, &mut dec, None, None).unwrap();
    let ext_last: Vec<f32> = [4usize, 10].iter().flat_map(|&r| out[r * q_row()..][..q_row()].to_vec()).collect();
    assert_eq!(dec, ext_last);

    // Half queries and an entry without queries.
    let q16 = f16_bits(&mut rng, 3 * q_row());
    let q32: Vec<f32> = q16.iter().map(|&b| f16_to_f32(b)).collect();
    let (mut a, mut b) = (vec![0f32; q32.len()], vec![0f32; q32.len()]);
    cache.extend(1, &seqs, &[0, 3], &q32, &mut a, None, None).unwrap();
    cache.extend_half(1, &seqs, &[0, 3], &q16, HalfDtype::F16, &mut b, None, None).unwrap();
    assert_eq!(a, b);
}

#[test]
fn bad_attention_calls_are_refused_without_writing_outputs() {
    let ctx = cpu();
    let plan = plan3(&ctx);
    let (mut cache, seqs) = filled_cache(&ctx, &plan, &[4, 2], &params());
    let empty = cache.seq_add().unwrap();
    let q = vec![0.5f32; 2 * q_row()];
    let mut out = vec![9f32; 2 * q_row()];
    let mut lse = vec![9f32; 2 * HEADS.0];
    let msg = expect_err(cache.decode(1, &seqs, &q[1..], &mut out, None, None), Status::InvalidArgument);
    assert!(msg.contains("q has 255 elements; expected 256"), "{}", msg);
    let msg = expect_err(cache.decode(1, &seqs, &q, &mut out[..10], None, None), Status::InvalidArgument);
    assert!(msg.contains("out"), "{}", msg);
    let msg = expect_err(cache.decode(1, &seqs, &q, &mut out, Some(&mut lse[1..]), None), Status::InvalidArgument);
    assert!(msg.contains("lse"), "{}", msg);
    expect_err(cache.decode(1, &[seqs[0], 99], &q, &mut out, None, None), Status::NotFound);
    expect_err(cache.decode(1, &[seqs[0], empty], &q, &mut out, None, None), Status::InvalidArgument);
    expect_err(cache.decode(0, &seqs, &q, &mut out, None, None), Status::InvalidArgument); // layer 0 is empty
    expect_err(cache.decode(2, &seqs, &q, &mut out, None, None), Status::InvalidArgument);
    expect_err(
        cache.decode(1, &seqs, &q, &mut out, None, Some(&AttentionParams { scale: -1.0, ..Default::default() })),
        Status::InvalidArgument,
    );
    expect_err(
        cache.decode(1, &seqs, &q, &mut out, None, Some(&AttentionParams { scale: f32::NAN, ..Default::default() })),
        Status::InvalidArgument,
    );
    let mut nan_q = q.clone();
    nan_q[3] = f32::INFINITY;
    expect_err(cache.decode(1, &seqs, &nan_q, &mut out, Some(&mut lse), None), Status::InvalidArgument);
    expect_err(cache.decode(1, &[], &[], &mut [], None, None), Status::InvalidArgument);

    let msg = expect_err(cache.extend(1, &seqs, &[1], &q, &mut out, None, None), Status::InvalidArgument);
    assert!(msg.contains("q_len"), "{}", msg);
    expect_err(
        cache.extend(1, &seqs, &[1, 3], &vec![0.5; 4 * q_row()], &mut vec![0.0; 4 * q_row()], None, None),
        Status::InvalidArgument,
    ); // 3 > length 2
    expect_err(
        cache.extend_half(1, &seqs, &[1, 1], &[0u16; 7], HalfDtype::Bf16, &mut out, None, None),
        Status::InvalidArgument,
    );

    assert!(out.iter().chain(&lse).all(|&x| x == 9.0), "a failed call must not write its outputs");
    assert_eq!(cache.seq_length(seqs[0], 1).unwrap(), 4);
    assert_eq!(cache.seq_length(seqs[1], 1).unwrap(), 2);
    cache.seq_remove(empty).unwrap();
}

#[test]
fn raw_pointer_variants_match_the_slice_methods() {
    let ctx = cpu();
    let plan = plan3(&ctx);
    let mut cache = cache(&ctx, &plan);
    let a = cache.seq_add().unwrap();
    let b = cache.seq_add().unwrap();
    let mut rng = Rng::new(53);
    let k = activations(&mut rng, 6 * 2, 32);
    let v = activations(&mut rng, 6 * 2, 32);
    cache.append(1, &[a], &[6], &k, &v).unwrap();
    unsafe {
        cache
            .append_raw(1, &[b], &[6], k.as_ptr().cast(), v.as_ptr().cast(), kvbits::Dtype::F32, std::ptr::null_mut())
            .unwrap();
    }
    assert_eq!(cache.read_kv(a, 1, 0, 6).unwrap(), cache.read_kv(b, 1, 0, 6).unwrap());
    // The same query for both: identical sequences give identical rows.
    let one = activations(&mut rng, HEADS.0, HEADS.2);
    let q: Vec<f32> = one.iter().chain(one.iter()).cloned().collect();
    let (mut out, mut out_raw) = (vec![0f32; q.len()], vec![0f32; q.len()]);
    let (mut lse, mut lse_raw) = (vec![0f32; 2 * HEADS.0], vec![0f32; 2 * HEADS.0]);
    cache.decode(1, &[a, b], &q, &mut out, Some(&mut lse), None).unwrap();
    unsafe {
        let (q_ptr, stream) = (q.as_ptr().cast(), cache.stream());
        cache
            .decode_raw(1, &[a, b], q_ptr, kvbits::Dtype::F32, out_raw.as_mut_ptr(), lse_raw.as_mut_ptr(), None, stream)
            .unwrap();
    }
    assert_eq!((&out, &lse), (&out_raw, &lse_raw));
    assert_eq!(&out[..q_row()], &out[q_row()..]);
    assert!(out.iter().any(|&x| x != 0.0));

    let mut ext = vec![0f32; q.len()];
    let mut ext_raw = vec![0f32; q.len()];
    cache.extend(1, &[a, b], &[1, 1], &q, &mut ext, None, None).unwrap();
    unsafe {
        cache
            .extend_raw(
                1,
                &[a, b],
                &[1, 1],
                q.as_ptr().cast(),
                kvbits::Dtype::F32,
                ext_raw.as_mut_ptr(),
                std::ptr::null_mut(),
                None,
                std::ptr::null_mut(),
            )
            .unwrap();
    }
    assert_eq!(ext, ext_raw);
    assert_eq!(ext, out, "one query per sequence: extend is decode");
    let msg = expect_err(
        unsafe {
            cache.extend_raw(
                1,
                &[a, b],
                &[1],
                q.as_ptr().cast(),
                kvbits::Dtype::F32,
                ext_raw.as_mut_ptr(),
                std::ptr::null_mut(),
                None,
                std::ptr::null_mut(),
            )
        },
        Status::InvalidArgument,
    );
    assert!(msg.contains("q_len"), "{}", msg);
}
