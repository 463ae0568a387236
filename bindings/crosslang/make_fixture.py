"""Writes the cross-language fixture: a plan calibrated with the Python binding on seeded data,
and the K/V/Q tensors of one decode step (README.md in this folder has the contract).

    python3 bindings/crosslang/make_fixture.py FIXTURE
"""
import os
import sys

import numpy as np

import kvbits

SHAPE = kvbits.ModelShape(n_layers=2, n_q_heads=8, n_kv_heads=4, head_dim=64)
PAGE_SIZE = 16
TOKENS = [37, 5, 20]  # per sequence: pages full, partial and shared across the batch
LAYER = 1
SEED = 20260101


def activations(rng, rows, heads, head_dim):
    """Gaussian rows with uneven RoPE-block energies, so the allocation is not uniform."""
    profile = np.tile(np.linspace(0.3, 2.0, head_dim // 2), 2)
    return (rng.standard_normal((rows, heads, head_dim)) * profile).astype(np.float32)


def main(folder):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(SEED)
    with kvbits.Context("cpu", n_threads=2) as ctx, kvbits.Calibrator(ctx, SHAPE) as cal:
        for layer in range(SHAPE.n_layers):
            cal.observe(layer, q=activations(rng, 256, SHAPE.n_q_heads, SHAPE.head_dim),
                        k=activations(rng, 256, SHAPE.n_kv_heads, SHAPE.head_dim))
        with cal.build_plan(k_avg_bits=3, v_bits=3, corpus="kvbits cross-language fixture (seeded gaussians)",
                            date="2026-01-01T00:00:00Z") as plan:
            plan.save(os.path.join(folder, "plan.kvbplan"))
    total, d = sum(TOKENS), SHAPE.head_dim
    tensors = {"k.f32": activations(rng, total, SHAPE.n_kv_heads, d),
               "v.f32": activations(rng, total, SHAPE.n_kv_heads, d),
               "q.f32": activations(rng, len(TOKENS), SHAPE.n_q_heads, d)}
    for name, array in tensors.items():
        array.astype("<f4").tofile(os.path.join(folder, name))
    with open(os.path.join(folder, "case.txt"), "w") as f:
        f.write(f"page_size {PAGE_SIZE}\nsequences {len(TOKENS)}\ntokens {' '.join(map(str, TOKENS))}\n"
                f"n_kv_heads {SHAPE.n_kv_heads}\nn_q_heads {SHAPE.n_q_heads}\nhead_dim {d}\nlayer {LAYER}\n")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: make_fixture.py FIXTURE")
    sys.exit(main(sys.argv[1]))
