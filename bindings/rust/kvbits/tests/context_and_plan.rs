//! Contexts and plans: create, query, load, save, serialise, shape checks.
mod common;
use common::*;
use kvbits::{Backend, Context, ContextParams, Method, ModelShape, Plan, RopeLayout, Status};

#[test]
fn cpu_context_reports_its_backend() {
    let ctx = Context::cpu(2).unwrap();
    assert_eq!(ctx.backend().unwrap(), (Backend::Cpu, 0));
    assert_eq!(ctx.last_error(), "");
    let defaults = ContextParams::default();
    assert_eq!(defaults, ContextParams { backend: Backend::Auto, device: 0, n_threads: 0 });
    // Auto never reports Auto: it resolves to the backend it picked.
    let auto = Context::new(&defaults).unwrap();
    assert_ne!(auto.backend().unwrap().0, Backend::Auto);
}

#[test]
fn bad_context_params_are_refused() {
    let msg = expect_err(
        Context::new(&ContextParams { backend: Backend::Cpu, device: 0, n_threads: 5000 }),
        Status::InvalidArgument,
    );
    assert!(msg.contains("n_threads"), "{}", msg);
    let msg = expect_err(
        Context::new(&ContextParams { backend: Backend::Cpu, device: -1, n_threads: 1 }),
        Status::InvalidArgument,
    );
    assert!(msg.contains("device"), "{}", msg);
}

#[test]
fn cuda_context_is_created_or_refused_with_a_reason() {
    match Context::new(&ContextParams { backend: Backend::Cuda, device: 0, n_threads: 0 }) {
        Ok(ctx) => assert_eq!(ctx.backend().unwrap(), (Backend::Cuda, 0)),
        Err(e) => {
            assert!(matches!(e.status(), Status::Unsupported | Status::Device), "{}", e);
            assert!(!e.message().is_empty());
        }
    }
}

#[test]
fn plan_info_describes_the_calibrated_shape() {
    let ctx = cpu();
    let plan = plan3(&ctx);
    let info = plan.info().unwrap();
    assert_eq!((info.n_layers, info.n_q_heads, info.n_kv_heads, info.head_dim), SHAPE);
    assert_eq!(info.rotary_dim, SHAPE.3);
    assert_eq!(info.rope_layout, RopeLayout::SplitHalf);
    assert_eq!(info.rope_theta, 10000.0);
    assert_eq!(info.method, Method::BlockGtq);
    assert_eq!(info.k_avg_bits, 3.0);
    assert_eq!(info.v_bits, 3);
    assert_eq!((info.sink_tokens, info.window_tokens, info.n_fp16_layers), (0, 0, 0));
    assert_eq!(info.calib_tokens, 128); // tokens observed (per layer)
                                        // The total is the sum over (layer, KV head); the mean per head is that over 4 heads.
    let mut total = 0;
    for layer in 0..SHAPE.0 {
        for head in 0..SHAPE.2 {
            total += plan.bytes_per_token(layer, head).unwrap();
        }
    }
    assert_eq!(total, info.bytes_per_token_total);
    assert!((info.bytes_per_token_per_head - total as f64 / 4.0).abs() < 1e-9);
    // 3-bit codes for K and V of 32 dims are 24 bytes; scales add a little, fp16 would be 128.
    assert!(info.bytes_per_token_per_head > 24.0 && info.bytes_per_token_per_head < 40.0, "{:?}", info);
    assert_eq!(info.shape(), kvbits::ModelShape { rotary_dim: SHAPE.3, ..shape() });
}

#[test]
fn bytes_per_token_refuses_indices_out_of_range() {
    let ctx = cpu();
    let plan = plan3(&ctx);
    expect_err(plan.bytes_per_token(SHAPE.0, 0), Status::InvalidArgument);
    expect_err(plan.bytes_per_token(0, SHAPE.2), Status::InvalidArgument);
}

#[test]
fn plan_bytes_round_trip_through_memory_and_files() {
    let ctx = cpu();
    let plan = plan3(&ctx);
    let bytes = plan.to_bytes().unwrap();
    assert!(bytes.len() > 64);
    let again = Plan::from_bytes(&bytes).unwrap();
    assert_eq!(again.to_bytes().unwrap(), bytes);
    assert_eq!(again.info().unwrap(), plan.info().unwrap());

    let dir = std::env::temp_dir().join(format!("kvbits-rust-plan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.kvbplan");
    plan.save_file(&path).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    let loaded = Plan::load_file(&path).unwrap();
    assert_eq!(loaded.to_bytes().unwrap(), bytes);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn broken_plan_bytes_and_files_are_refused() {
    let ctx = cpu();
    let bytes = plan3(&ctx).to_bytes().unwrap();
    expect_err(Plan::from_bytes(&bytes[..bytes.len() - 1]), Status::CorruptData);
    expect_err(Plan::from_bytes(&[]), Status::CorruptData);
    let mut flipped = bytes.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40;
    expect_err(Plan::from_bytes(&flipped), Status::CorruptData);
    expect_err(Plan::load_file("/nonexistent-dir/none.kvbplan"), Status::Io);
    let msg = expect_err(Plan::load_file("bad\0name"), Status::InvalidArgument);
    assert!(msg.contains("NUL"), "{}", msg);
    let plan = Plan::from_bytes(&bytes).unwrap();
    expect_err(plan.save_file("/nonexistent-dir/out.kvbplan"), Status::Io);
}

#[test]
fn shape_checks_accept_the_plan_shape_and_name_a_mismatch() {
    let ctx = cpu();
    let plan = plan3(&ctx);
    plan.check_shape(SHAPE.0, SHAPE.1, SHAPE.2, SHAPE.3).unwrap();
    let msg = expect_err(plan.check_shape(SHAPE.0, SHAPE.1, SHAPE.2, 64), Status::ShapeMismatch);
    assert!(msg.contains("head_dim"), "{}", msg);
    plan.check_model(&shape()).unwrap();
    let mut other = shape();
    other.rope_theta = 500000.0;
    expect_err(plan.check_model(&other), Status::ShapeMismatch);
    let bad = ModelShape::new(1, 3, 2, 32); // 3 query heads are not a multiple of 2 KV heads
    expect_err(plan.check_model(&bad), Status::InvalidArgument);
}

#[test]
fn plans_are_supported_on_the_cpu_and_outlive_their_handles() {
    let ctx = cpu();
    let plan = plan3(&ctx);
    plan.supported_on(&ctx).unwrap();
    // The cache keeps the context and plan alive: drop them first.
    let mut cache = cache(&ctx, &plan);
    drop(plan);
    drop(ctx);
    let seq = cache.seq_add().unwrap();
    let data = vec![0.5f32; kv_row()];
    cache.append(1, &[seq], &[1], &data, &data).unwrap();
    assert_eq!(cache.seq_length(seq, 1).unwrap(), 1);
}

#[test]
fn context_last_error_keeps_the_latest_failure() {
    let ctx = cpu();
    let plan = plan3(&ctx);
    let mut cache = cache(&ctx, &plan);
    let err = cache.seq_remove(99).unwrap_err();
    assert_eq!(err.status(), Status::NotFound);
    assert_eq!(ctx.last_error(), err.message());
}
