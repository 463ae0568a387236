//! The calibrator: observe (fp32 and half inputs), build plans, options, bad input.
mod common;
use common::*;
use kvbits::{Calibrator, HalfDtype, Method, ModelShape, PlanOptions, Status};

#[test]
fn the_same_observations_build_the_same_plan_bytes() {
    let ctx = cpu();
    let a = calibrator(&ctx, &shape(), 5).build_plan(&PlanOptions::default()).unwrap();
    let b = calibrator(&ctx, &shape(), 5).build_plan(&PlanOptions::default()).unwrap();
    let c = calibrator(&ctx, &shape(), 6).build_plan(&PlanOptions::default()).unwrap();
    assert_eq!(a.to_bytes().unwrap(), b.to_bytes().unwrap());
    assert_ne!(a.to_bytes().unwrap(), c.to_bytes().unwrap());
}

#[test]
fn plan_options_reach_the_plan() {
    let ctx = cpu();
    let cal = calibrator(&ctx, &shape(), 5);
    let defaults = PlanOptions::default();
    assert_eq!((defaults.k_avg_bits, defaults.v_bits, defaults.rotation_seed), (3.0, 3, 42));
    let options = PlanOptions {
        method: Method::UniformTqMse,
        k_avg_bits: 4.0,
        k_min_bits: 4,
        k_max_bits: 4,
        v_bits: 2,
        sink_tokens: 4,
        window_tokens: 8,
        fp16_layers: vec![1],
        corpus: Some("synthetic".into()),
        date: Some("2026-01-01T00:00:00Z".into()),
        ..PlanOptions::default()
    };
    let plan = cal.build_plan(&options).unwrap();
    let info = plan.info().unwrap();
    assert_eq!(info.method, Method::UniformTqMse);
    assert_eq!(info.k_avg_bits, 4.0);
    assert_eq!(info.v_bits, 2);
    assert_eq!((info.sink_tokens, info.window_tokens, info.n_fp16_layers), (4, 8, 1));
    // Layer 1 is fp16: 2 heads x (K + V) x 32 dims x 2 bytes.
    assert_eq!(plan.bytes_per_token(1, 0).unwrap(), 128);
    assert!(plan.bytes_per_token(0, 0).unwrap() < 64);
    // A different rotation seed gives different bytes.
    let other = cal.build_plan(&PlanOptions { rotation_seed: 7, ..options.clone() }).unwrap();
    assert_ne!(other.to_bytes().unwrap(), plan.to_bytes().unwrap());
}

#[test]
fn bad_plan_options_are_refused_with_their_name() {
    let ctx = cpu();
    let cal = calibrator(&ctx, &shape(), 5);
    let msg = expect_err(cal.build_plan(&PlanOptions { v_bits: 9, ..PlanOptions::default() }), Status::InvalidArgument);
    assert!(msg.contains("v_bits"), "{}", msg);
    expect_err(
        cal.build_plan(&PlanOptions { fp16_layers: vec![2], ..PlanOptions::default() }),
        Status::InvalidArgument,
    );
    let msg = expect_err(
        cal.build_plan(&PlanOptions { corpus: Some("a\0b".into()), ..PlanOptions::default() }),
        Status::InvalidArgument,
    );
    assert!(msg.contains("corpus"), "{}", msg);
}

#[test]
fn block_gtq_needs_samples_of_every_layer() {
    let ctx = cpu();
    let s = shape();
    let mut cal = Calibrator::new(&ctx, &s).unwrap();
    expect_err(cal.build_plan(&PlanOptions::default()), Status::InvalidArgument);
    let mut rng = Rng::new(1);
    let q = activations(&mut rng, 16 * 4, 32);
    let k = activations(&mut rng, 16 * 2, 32);
    cal.observe(0, Some(&q), Some(&k), 16).unwrap();
    expect_err(cal.build_plan(&PlanOptions::default()), Status::InvalidArgument); // layer 1 unseen
    cal.observe(1, Some(&q), None, 16).unwrap();
    cal.observe(1, None, Some(&k), 16).unwrap();
    cal.build_plan(&PlanOptions::default()).unwrap();
}

#[test]
fn half_observations_equal_their_exact_f32_values() {
    let ctx = cpu();
    let s = shape();
    let mut rng = Rng::new(3);
    let n = 32usize;
    let (mut f16_cal, mut bf16_cal, mut f32_cal, mut f32b_cal) = (
        Calibrator::new(&ctx, &s).unwrap(),
        Calibrator::new(&ctx, &s).unwrap(),
        Calibrator::new(&ctx, &s).unwrap(),
        Calibrator::new(&ctx, &s).unwrap(),
    );
    for layer in 0..s.n_layers {
        let q16 = f16_bits(&mut rng, n * 4 * 32);
        let k16 = f16_bits(&mut rng, n * 2 * 32);
        f16_cal.observe_half(layer, Some(&q16), Some(&k16), n, HalfDtype::F16).unwrap();
        let q: Vec<f32> = q16.iter().map(|&b| f16_to_f32(b)).collect();
        let k: Vec<f32> = k16.iter().map(|&b| f16_to_f32(b)).collect();
        f32_cal.observe(layer, Some(&q), Some(&k), n).unwrap();

        let qb: Vec<u16> = activations(&mut rng, n * 4, 32).iter().map(|&x| bf16_bits(x)).collect();
        let kb: Vec<u16> = activations(&mut rng, n * 2, 32).iter().map(|&x| bf16_bits(x)).collect();
        bf16_cal.observe_half(layer, Some(&qb), Some(&kb), n, HalfDtype::Bf16).unwrap();
        let q: Vec<f32> = qb.iter().map(|&b| bf16_to_f32(b)).collect();
        let k: Vec<f32> = kb.iter().map(|&b| bf16_to_f32(b)).collect();
        f32b_cal.observe(layer, Some(&q), Some(&k), n).unwrap();
    }
    let o = PlanOptions::default();
    let bytes = |c: &Calibrator| c.build_plan(&o).unwrap().to_bytes().unwrap();
    assert_eq!(bytes(&f16_cal), bytes(&f32_cal));
    assert_eq!(bytes(&bf16_cal), bytes(&f32b_cal));
}

#[test]
fn bad_observations_are_refused_and_accumulate_nothing() {
    let ctx = cpu();
    let s = shape();
    let mut rng = Rng::new(4);
    let n = 16usize;
    let q = activations(&mut rng, n * 4, 32);
    let k = activations(&mut rng, n * 2, 32);

    let mut cal = Calibrator::new(&ctx, &s).unwrap();
    let msg = expect_err(cal.observe(0, Some(&q[1..]), Some(&k), n), Status::InvalidArgument);
    assert!(msg.contains("q has 2047 elements; expected 2048"), "{}", msg);
    let msg = expect_err(cal.observe(0, Some(&q), Some(&k), n + 1), Status::InvalidArgument);
    assert!(msg.starts_with("q has"), "{}", msg);
    expect_err(cal.observe_half(0, None, Some(&[0u16; 5]), n, HalfDtype::F16), Status::InvalidArgument);
    expect_err(cal.observe(2, Some(&q), Some(&k), n), Status::InvalidArgument); // layer out of range
    expect_err(cal.observe(0, None, None, n), Status::NullPointer);
    expect_err(cal.observe(0, Some(&[]), Some(&[]), 0), Status::InvalidArgument);
    let mut bad = k.clone();
    bad[5] = f32::NAN;
    expect_err(cal.observe(0, Some(&q), Some(&bad), n), Status::InvalidArgument);

    // After the refused calls the calibrator holds exactly what a fresh one does.
    let mut fresh = Calibrator::new(&ctx, &s).unwrap();
    for c in [&mut cal, &mut fresh] {
        for layer in 0..2 {
            c.observe(layer, Some(&q), Some(&k), n).unwrap();
        }
    }
    let o = PlanOptions::default();
    assert_eq!(cal.build_plan(&o).unwrap().to_bytes().unwrap(), fresh.build_plan(&o).unwrap().to_bytes().unwrap());
}

#[test]
fn bad_shapes_are_refused_at_creation() {
    let ctx = cpu();
    let msg = expect_err(Calibrator::new(&ctx, &ModelShape::new(1, 4, 2, 33)), Status::InvalidArgument);
    assert!(msg.contains("head_dim"), "{}", msg);
    expect_err(Calibrator::new(&ctx, &ModelShape::new(0, 4, 2, 32)), Status::InvalidArgument);
    expect_err(Calibrator::new(&ctx, &ModelShape::new(1, 3, 2, 32)), Status::InvalidArgument);
}
