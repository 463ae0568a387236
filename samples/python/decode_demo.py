"""decode_demo: the kvbits Python binding in one page: a context, a bit plan, a packed KV cache
with two sequences, and one decode step of attention on it.

    python3 samples/python/decode_demo.py [PLAN_FILE]

With a plan file (from `kvbits calibrate` or `python3 -m kvbits.hf_calibrate`) the demo uses
that model's shape; without one it first calibrates a small 3-bit plan on made-up activations.
Real code passes its model's post-RoPE keys, values and queries where this demo makes up numbers.
"""
import sys

import numpy as np

import kvbits


def activations(rng, rows, heads, head_dim):
    """Made-up head vectors, larger in higher dims so RoPE blocks differ in energy as in real models."""
    scale = 0.5 + 1.5 * np.arange(head_dim) / head_dim
    return (rng.standard_normal((rows, heads, head_dim)) * scale).astype(np.float32)


def calibrate(ctx, rng):
    shape = kvbits.ModelShape(n_layers=2, n_q_heads=4, n_kv_heads=2, head_dim=64)  # split-half RoPE, theta 1e4
    with kvbits.Calibrator(ctx, shape) as cal:
        for layer in range(shape.n_layers):
            cal.observe(layer, q=activations(rng, 256, shape.n_q_heads, shape.head_dim),
                        k=activations(rng, 256, shape.n_kv_heads, shape.head_dim))
        return cal.build_plan(k_avg_bits=3, v_bits=3)  # Block-GTQ


def reference(q, k, v):
    """fp64 softmax attention of one query [n_q, D] over k, v [T, n_kv, D] (GQA groups)."""
    group = q.shape[0] // k.shape[1]
    kk = np.repeat(k.astype(np.float64), group, axis=1)
    logits = np.einsum("hd,thd->ht", q.astype(np.float64), kk) / np.sqrt(q.shape[1])
    w = np.exp(logits - logits.max(axis=1, keepdims=True))
    return np.einsum("ht,thd->hd", w / w.sum(axis=1, keepdims=True), np.repeat(v.astype(np.float64), group, axis=1))


def main():
    rng = np.random.default_rng(7)
    with kvbits.Context("cpu") as ctx:
        plan = kvbits.Plan.load(sys.argv[1]) if len(sys.argv) > 1 else calibrate(ctx, rng)
        with plan:
            ctx.supports(plan)  # raises kvbits.Unsupported, saying why, when it cannot run here
            info = plan.info()
            print(f"plan: {info.n_layers} layers, {info.n_q_heads} query heads, {info.n_kv_heads} KV heads, "
                  f"head_dim {info.head_dim}; {info.k_avg_bits:.2f} key bits, {info.v_bits} value bits")
            print(f"      {info.bytes_per_token_per_head:.1f} bytes per token per KV head (fp16: {4 * info.head_dim})")
            cache = kvbits.Cache(ctx, plan, max_pages=64, page_size=16)
        H, Q, D = info.n_kv_heads, info.n_q_heads, info.head_dim
        with cache:
            seqs = [cache.add_sequence(), cache.add_sequence()]
            prompt = [20, 7]
            for layer in range(info.n_layers):  # both prompts in one call per layer
                k, v = activations(rng, sum(prompt), H, D), activations(rng, sum(prompt), H, D)
                cache.append(layer, seqs, prompt, k, v)
            worst = 0.0
            for layer in range(info.n_layers):  # one decode step: the new token's K/V, then attend
                cache.append(layer, seqs, [1, 1], activations(rng, 2, H, D), activations(rng, 2, H, D))
                q = activations(rng, 2, Q, D)
                out, lse = cache.decode(layer, seqs, q)
                for i, seq in enumerate(seqs):
                    print(f"layer {layer}, sequence {i}: out[head 0] = "
                          + " ".join(f"{x:+.4f}" for x in out[i, 0, :4]) + f" ..., lse {lse[i, 0]:.4f}")
                    want = reference(q[i], *cache.read(seq, layer))
                    worst = max(worst, float(np.abs(out[i] - want).max() / np.abs(want).max()))
            print(f"decode vs numpy fp64 attention on the read-back cache: max relative error {worst:.1e}")
            s = cache.stats()
            print(f"cache: {s.sequences} sequences, {s.tokens} tokens, {s.pages_used} of {s.pages_total} pages used")
            print(f"bytes used: {s.packed_bytes_used} in pages of {s.page_size} tokens + {s.fp16_region_bytes} fp16 "
                  f"sink/window (the same tokens in fp16: {s.tokens * info.n_layers * 4 * H * D})")
    return 0 if worst < 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
