"""The cross-language check in Python: load the fixture's plan, append every sequence in one
call, decode, and write out.f32 / lse.f32 (README.md in this folder has the contract).

    python3 bindings/crosslang/crosslang.py FIXTURE OUT
"""
import os
import sys

import numpy as np

import kvbits


def read_case(path):
    case = {}
    with open(path) as f:
        for line in f:
            if line.strip():
                key, *values = line.split()
                case[key] = [int(v) for v in values]
    return case


def main(fixture, out_dir):
    case = read_case(os.path.join(fixture, "case.txt"))
    tokens = case["tokens"]
    (n_seqs,), (h,), (q_heads,), (d,), (layer,) = (case[k] for k in ("sequences", "n_kv_heads", "n_q_heads",
                                                                       "head_dim", "layer"))
    if len(tokens) != n_seqs:
        raise ValueError(f"case.txt: {len(tokens)} token counts for {n_seqs} sequences")

    def load(name, shape):  # little-endian fp32 on disk, native float32 in memory
        return np.fromfile(os.path.join(fixture, name), dtype="<f4").reshape(shape).astype(np.float32)

    k, v = load("k.f32", (sum(tokens), h, d)), load("v.f32", (sum(tokens), h, d))
    q = load("q.f32", (n_seqs, q_heads, d))
    with kvbits.Context("cpu", n_threads=2) as ctx, kvbits.Plan.load(os.path.join(fixture, "plan.kvbplan")) as plan, \
            kvbits.Cache(ctx, plan, max_pages=256, page_size=case["page_size"][0]) as cache:
        seqs = [cache.add_sequence() for _ in range(n_seqs)]
        cache.append(layer, seqs, tokens, k, v)
        out, lse = cache.decode(layer, seqs, q)
    os.makedirs(out_dir, exist_ok=True)
    out.astype("<f4").tofile(os.path.join(out_dir, "out.f32"))
    lse.astype("<f4").tofile(os.path.join(out_dir, "lse.f32"))
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: crosslang.py FIXTURE OUT")
    try:
        sys.exit(main(sys.argv[1], sys.argv[2]))
    except (kvbits.Error, OSError, KeyError, ValueError) as e:
        sys.exit(f"crosslang.py: {e}")
