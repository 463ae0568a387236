//! kvbits from Rust in one page: a context, a bit plan, a packed KV cache with two sequences,
//! and one decode step of attention on it (the Rust twin of samples/c/decode_demo.c).
//!
//!     cargo run --release -- [PLAN_FILE]
//!
//! With a plan file (made by `kvbits calibrate`) the sample uses that model's shape. Without one
//! it first calibrates a small 3-bit plan from synthetic activations, as you would from a few
//! hundred tokens of your model's real queries and keys. Real code passes post-RoPE keys,
//! values and queries from its model where this sample makes up numbers.
use kvbits::{Cache, CacheParams, Calibrator, Context, ModelShape, Plan, PlanOptions};

/// Deterministic made-up activations, `rows` head vectors: roughly Gaussian, larger in higher
/// dims so that RoPE blocks differ in energy as they do in real models.
fn fill(rows: usize, head_dim: usize, seed: &mut u32) -> Vec<f32> {
    (0..rows * head_dim)
        .map(|i| {
            let mut sum = 0f32;
            for _ in 0..4 {
                *seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
                sum += (*seed >> 8) as f32 / 16777216.0;
            }
            (sum - 2.0) * (1.0 + (i % head_dim) as f32 * 0.25)
        })
        .collect()
}

fn calibrate(ctx: &Context) -> kvbits::Result<Plan> {
    let shape = ModelShape::new(2, 4, 2, 64); // split-half RoPE, theta 10000
    let mut cal = Calibrator::new(ctx, &shape)?;
    let (n, d) = (256usize, shape.head_dim as usize);
    let mut seed = 1u32;
    for layer in 0..shape.n_layers {
        let q = fill(n * shape.n_q_heads as usize, d, &mut seed);
        let k = fill(n * shape.n_kv_heads as usize, d, &mut seed);
        cal.observe(layer, Some(&q), Some(&k), n)?;
    }
    cal.build_plan(&PlanOptions::default()) // Block-GTQ, 3 key bits on average, 3 value bits
}

fn run() -> kvbits::Result<()> {
    println!("kvbits {} (header {})", kvbits::version_string(), kvbits::HEADER_VERSION_NUMBER);
    // 1. A context: the CPU backend with two workers (Backend::Auto would pick a GPU).
    let ctx = Context::cpu(2)?;

    // 2. A plan: loaded from a file, or calibrated here.
    let plan = match std::env::args().nth(1) {
        Some(path) => Plan::load_file(path)?,
        None => calibrate(&ctx)?,
    };
    plan.supported_on(&ctx)?;
    let info = plan.info()?;
    println!(
        "plan: {} layers, {} query heads, {} KV heads, head_dim {}; {:.2} key bits, {} value bits",
        info.n_layers, info.n_q_heads, info.n_kv_heads, info.head_dim, info.k_avg_bits, info.v_bits
    );
    println!("      {:.1} bytes per token per KV head (fp16: {})", info.bytes_per_token_per_head, 4 * info.head_dim);

    // 3. A cache: a pool of 64 pages of 16 tokens, and two sequences.
    let mut cache = Cache::new(&ctx, &plan, &CacheParams { page_size: 16, max_pages: 64, ..CacheParams::default() })?;
    let seqs = [cache.seq_add()?, cache.seq_add()?];
    let (d, kv_heads, q_heads) = (info.head_dim as usize, info.n_kv_heads as usize, info.n_q_heads as usize);
    let mut seed = 7u32;

    // 4. The prompts: 20 and 7 tokens, every layer, both sequences in one call per layer.
    let prompt = [20u32, 7];
    for layer in 0..info.n_layers {
        let k = fill(27 * kv_heads, d, &mut seed);
        let v = fill(27 * kv_heads, d, &mut seed);
        cache.append(layer, &seqs, &prompt, &k, &v)?;
    }

    // 5. One decode step: append each sequence's new token, then attend with its query.
    let mut out = vec![0f32; 2 * q_heads * d];
    let mut lse = vec![0f32; 2 * q_heads];
    for layer in 0..info.n_layers {
        let k = fill(2 * kv_heads, d, &mut seed);
        let v = fill(2 * kv_heads, d, &mut seed);
        let q = fill(2 * q_heads, d, &mut seed);
        cache.append(layer, &seqs, &[1, 1], &k, &v)?;
        cache.decode(layer, &seqs, &q, &mut out, Some(&mut lse), None)?;
        for i in 0..2 {
            let o = &out[i * q_heads * d..];
            println!(
                "layer {}, sequence {}: out[head 0] = {:+.4} {:+.4} {:+.4} {:+.4} ..., lse {:.4}",
                layer,
                i,
                o[0],
                o[1],
                o[2],
                o[3],
                lse[i * q_heads]
            );
        }
    }

    // 6. What the cache holds and what it costs.
    let stats = cache.stats()?;
    println!(
        "cache: {} sequences, {} tokens, {} of {} pages used",
        stats.sequences, stats.tokens, stats.pages_used, stats.pages_total
    );
    println!(
        "bytes used: {} in pages of {} tokens + {} fp16 sink/window (the same tokens in fp16: {})",
        stats.packed_bytes_used,
        stats.page_size,
        stats.fp16_region_bytes,
        stats.tokens * u64::from(info.n_layers) * 4 * (kv_heads * d) as u64
    );
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("kvbits sample: {}", e);
        std::process::exit(1);
    }
}
