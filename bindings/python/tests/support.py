"""Shared test data: seeded activations, a small calibrated plan, and an fp64 numpy attention."""
import numpy as np

import kvbits

# A small GQA model: 2 layers, 8 query heads over 4 KV heads, head_dim 32.
SHAPE = kvbits.ModelShape(n_layers=2, n_q_heads=8, n_kv_heads=4, head_dim=32)
DATE = "2026-01-01T00:00:00Z"  # fixed, so plans are byte-reproducible


def activations(rng, n_tokens, n_heads, head_dim):
    """Gaussian rows whose RoPE blocks differ in energy (as in real models), float32."""
    profile = np.concatenate([np.linspace(0.3, 3.0, head_dim // 2)] * 2)  # split-half pairs share a scale
    return (rng.standard_normal((n_tokens, n_heads, head_dim)) * profile).astype(np.float32)


def calibrate(ctx, shape=SHAPE, seed=0, n_tokens=128, **options):
    """A plan calibrated on seeded activations (one chunk per layer)."""
    rng = np.random.default_rng(seed)
    with kvbits.Calibrator(ctx, shape) as cal:
        for layer in range(shape.n_layers):
            cal.observe(layer, q=activations(rng, n_tokens, shape.n_q_heads, shape.head_dim),
                        k=activations(rng, n_tokens, shape.n_kv_heads, shape.head_dim))
        options.setdefault("date", DATE)
        return cal.build_plan(**options)


def attention(q, k, v, scale=None):
    """fp64 softmax attention of one query row over a whole sequence, GQA by head groups.

    q [n_q_heads, D], k, v [T, n_kv_heads, D]; returns out [n_q_heads, D], lse [n_q_heads]."""
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    n_q, d = q.shape
    group = n_q // k.shape[1]
    scale = 1.0 / np.sqrt(d) if scale is None else scale
    out, lse = np.empty((n_q, d)), np.empty(n_q)
    for h in range(n_q):
        logits = k[:, h // group, :] @ q[h] * scale
        m = logits.max()
        w = np.exp(logits - m)
        out[h] = w @ v[:, h // group, :] / w.sum()
        lse[h] = m + np.log(w.sum())
    return out, lse


def relative_error(got, want):
    """max |got - want| / max |want|: one number per tensor, robust to entries near zero."""
    want = np.asarray(want, dtype=np.float64)
    return float(np.max(np.abs(np.asarray(got, dtype=np.float64) - want)) / np.max(np.abs(want)))
