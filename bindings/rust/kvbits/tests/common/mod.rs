//! Shared by the integration tests: deterministic data, a calibrated plan, half-precision bit
//! patterns and a plain softmax-attention reference.
#![allow(dead_code)]
use kvbits::{Cache, CacheParams, Calibrator, Context, Error, ModelShape, Plan, PlanOptions, Status};

/// xorshift64*: the same numbers on every machine.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Roughly Gaussian (sum of four uniforms), mean 0.
    pub fn normal(&mut self) -> f32 {
        (self.uniform() + self.uniform() + self.uniform() + self.uniform() - 2.0) * 1.7
    }
}

/// `rows` head vectors of `head_dim`: larger in higher dims so RoPE blocks differ in energy.
pub fn activations(rng: &mut Rng, rows: usize, head_dim: usize) -> Vec<f32> {
    (0..rows * head_dim).map(|i| rng.normal() * (1.0 + (i % head_dim) as f32 * 0.1)).collect()
}

pub const SHAPE: (u32, u32, u32, u32) = (2, 4, 2, 32); // layers, q heads, kv heads, head_dim

pub fn shape() -> ModelShape {
    ModelShape::new(SHAPE.0, SHAPE.1, SHAPE.2, SHAPE.3)
}

pub fn cpu() -> Context {
    Context::cpu(2).expect("CPU context")
}

/// A calibrator that has seen 128 tokens of every layer of `shape` (seeded).
pub fn calibrator(ctx: &Context, shape: &ModelShape, seed: u64) -> Calibrator {
    let mut rng = Rng::new(seed);
    let mut cal = Calibrator::new(ctx, shape).expect("calibrator");
    let n = 128usize;
    for layer in 0..shape.n_layers {
        let q = activations(&mut rng, n * shape.n_q_heads as usize, shape.head_dim as usize);
        let k = activations(&mut rng, n * shape.n_kv_heads as usize, shape.head_dim as usize);
        cal.observe(layer, Some(&q), Some(&k), n).expect("observe");
    }
    cal
}

pub fn plan_with(ctx: &Context, options: &PlanOptions) -> Plan {
    calibrator(ctx, &shape(), 11).build_plan(options).expect("build plan")
}

/// The default 3-bit Block-GTQ plan of SHAPE.
pub fn plan3(ctx: &Context) -> Plan {
    plan_with(ctx, &PlanOptions::default())
}

/// 8 bits for every key and value dim: read-back is close to the input.
pub fn plan8(ctx: &Context) -> Plan {
    plan_with(ctx, &PlanOptions { k_avg_bits: 8.0, k_min_bits: 8, k_max_bits: 8, v_bits: 8, ..PlanOptions::default() })
}

pub fn cache(ctx: &Context, plan: &Plan) -> Cache {
    Cache::new(ctx, plan, &CacheParams { page_size: 8, max_pages: 64, ..CacheParams::default() }).expect("cache")
}

/// Elements per token of K or V in SHAPE.
pub fn kv_row() -> usize {
    (SHAPE.2 * SHAPE.3) as usize
}

/// Elements per token of a query in SHAPE.
pub fn q_row() -> usize {
    (SHAPE.1 * SHAPE.3) as usize
}

/// Asserts the status and that the message is not empty; returns the message.
pub fn expect_err<T: std::fmt::Debug>(result: Result<T, Error>, status: Status) -> String {
    match result {
        Ok(v) => panic!("expected {:?}, got Ok({:?})", status, v),
        Err(e) => {
            assert_eq!(e.status(), status, "message: {}", e.message());
            assert_eq!(e.code(), status.code());
            assert!(!e.message().is_empty(), "empty message for {:?}", status);
            e.message().to_string()
        }
    }
}

/// Random fp16 bit patterns of normal numbers with magnitudes in [2^-3, 2^2).
pub fn f16_bits(rng: &mut Rng, n: usize) -> Vec<u16> {
    (0..n)
        .map(|_| {
            let r = rng.next_u64();
            let sign = ((r & 1) as u16) << 15;
            let exp = (12 + (r >> 1) % 5) as u16; // biased exponent 12..16
            let mantissa = ((r >> 8) & 0x3FF) as u16;
            sign | (exp << 10) | mantissa
        })
        .collect()
}

/// Exact value of an fp16 normal number.
pub fn f16_to_f32(bits: u16) -> f32 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = ((bits >> 10) & 0x1F) as i32;
    let mantissa = (bits & 0x3FF) as f32;
    assert!(exp > 0 && exp < 31, "only normal numbers are generated");
    sign * (1.0 + mantissa / 1024.0) * 2f32.powi(exp - 15)
}

/// bfloat16 bits of `x` by truncation, and their exact value.
pub fn bf16_bits(x: f32) -> u16 {
    (x.to_bits() >> 16) as u16
}

pub fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

/// Softmax attention of one query token (all heads) over `n` tokens of K and V, in f64:
/// returns out [n_q_heads, head_dim] and lse [n_q_heads]. Query head h reads KV head
/// h / (n_q_heads / n_kv_heads).
pub fn reference_attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    n: usize,
    (n_q_heads, n_kv_heads, head_dim): (usize, usize, usize),
    scale: f64,
) -> (Vec<f64>, Vec<f64>) {
    let group = n_q_heads / n_kv_heads;
    let mut out = vec![0f64; n_q_heads * head_dim];
    let mut lse = vec![0f64; n_q_heads];
    for h in 0..n_q_heads {
        let kvh = h / group;
        let qh = &q[h * head_dim..(h + 1) * head_dim];
        let logits: Vec<f64> = (0..n)
            .map(|t| {
                let kt = &k[(t * n_kv_heads + kvh) * head_dim..][..head_dim];
                scale * qh.iter().zip(kt).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum::<f64>()
            })
            .collect();
        let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let weights: Vec<f64> = logits.iter().map(|s| (s - m).exp()).collect();
        let l: f64 = weights.iter().sum();
        for (t, w) in weights.iter().enumerate() {
            let vt = &v[(t * n_kv_heads + kvh) * head_dim..][..head_dim];
            for d in 0..head_dim {
                out[h * head_dim + d] += w * f64::from(vt[d]) / l;
            }
        }
        lse[h] = m + l.ln();
    }
    (out, lse)
}

/// Largest |got - want| relative to the largest |want| of each head: the error measure the
/// attention tests bound.
pub fn max_relative_error(got: &[f32], want: &[f64], head_dim: usize) -> f64 {
    let mut worst = 0f64;
    for (g, w) in got.chunks(head_dim).zip(want.chunks(head_dim)) {
        let norm = w.iter().fold(0f64, |m, x| m.max(x.abs())).max(1e-30);
        for (a, b) in g.iter().zip(w) {
            worst = worst.max((f64::from(*a) - b).abs() / norm);
        }
    }
    worst
}
