#!/usr/bin/env python3
"""kvbits decode vs PyTorch SDPA (flash backend, fp16, enable_gqa=True), same process, same GPU.

For each (model shape, batch, context, bits): a Block-GTQ plan is calibrated on LLM-like
synthetic keys (the kvbits calibrator, CPU), a kvbits cache on the CUDA backend is filled with the
same fp16 K/V tensors that SDPA reads, and both decode one query token per sequence for one layer.
Each timed call starts with L2 evicted (a 256 MiB memset between calls, outside the timed span,
as a real model's other layers would), CUDA events, median of --iters calls after warm-ups.
Both sides are timed as CUDA-graph replays (GPU work only; a serving loop captures its decode
step) and as eager calls (host dispatch included: Python, PyTorch's dispatcher, kvbits' checks).

Printed per row: SDPA µs, kvbits µs, the ratio SDPA / kvbits (>1: kvbits faster), the bytes
each reads (fp16 K/V; the packed pages), and the relative error of kvbits' output vs SDPA's
(quantization error, not a kernel error).

Usage (on a GPU machine, the library built with CUDA):
    KVBITS_LIBRARY=path/to/libkvbits.so PYTHONPATH=bindings/python \\
        python3 bench/sdpa_side_by_side.py [--quick] [--iters N] [--json FILE] [--kernels]
"""
import argparse
import json
import math
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import kvbits

SHAPES = {  # name: (n_q_heads, n_kv_heads, head_dim)
    "Qwen2.5-3B": (16, 2, 128),
    "Qwen2.5-7B": (28, 4, 128),
    "Llama-3.1-8B": (32, 8, 128),
}

QUICK = [("Qwen2.5-3B", 1, 131072, 3), ("Llama-3.1-8B", 32, 32768, 3)]
FULL = [(s, b, c, bits) for s in SHAPES for b in (1, 8, 32) for c in (4096, 16384, 65536, 131072)
        for bits in (2, 3, 4)]


def synthetic_keys(rng, n_tokens, n_heads, head_dim):
    """LLM-like keys: per-RoPE-block energies spanning orders of magnitude with a frequency trend,
    a few outlier channels (the same construction idea as the quality lab's synthetic panel)."""
    half = head_dim // 2
    freq_scale = np.exp(-np.linspace(0.0, 4.0, half))  # high-frequency blocks carry little energy
    scale = np.concatenate([freq_scale, freq_scale])    # split-half RoPE: dims i and i + D/2 pair up
    x = rng.standard_normal((n_tokens, n_heads, head_dim)) * scale
    x[:, :, [half - 3, head_dim - 3]] += 4.0  # outlier channels (a constant offset)
    return x.astype(np.float32)


def calibrate(shape, bits, seed=1):
    n_q, n_kv, d = SHAPES[shape]
    ms = kvbits.ModelShape(n_layers=1, n_q_heads=n_q, n_kv_heads=n_kv, head_dim=d)
    rng = np.random.default_rng(seed)
    with kvbits.Context("cpu") as cpu, kvbits.Calibrator(cpu, ms) as cal:
        k = synthetic_keys(rng, 2048, n_kv, d)
        q = synthetic_keys(rng, 2048, n_q, d)
        cal.observe(0, q=q, k=k)
        return cal.build_plan(k_avg_bits=bits, v_bits=bits, sink_tokens=0, window_tokens=0,
                              date="2026-01-01T00:00:00Z")


def as_graph(fn):
    """fn captured into a CUDA graph (kvbits decode is capturable with device tensors): timing a
    replay measures the GPU work alone, without Python / dispatch overhead between the events."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()  # warm-up outside the capture: workspaces grow here, never inside
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return g.replay


def time_calls(fn, iters, flush):
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(3):
        fn()
    times = []
    for i in range(iters):
        flush.fill_(i & 0xFF)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) * 1000.0)
    return statistics.median(times)


def kernel_times(fn, iters, flush):
    """Mean device µs per call of each CUDA kernel fn launches (torch.profiler / CUPTI; the L2
    flush's own kernel is left out): where a call's time goes, kernel by kernel. A programmatic
    dependent launch (kvbits' merge, and its decode launch at small batches) starts early, so its
    span includes the wait for the launch before it: the spans overlap and do not add up."""
    from torch.profiler import ProfilerActivity, profile
    for _ in range(3):
        fn()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for i in range(iters):
            flush.fill_(i & 0xFF)
            fn()
        torch.cuda.synchronize()
    rows = []
    for ev in prof.key_averages():
        total = getattr(ev, "device_time_total", None)
        if total is None:
            total = ev.cuda_time_total
        if total <= 0 or "fill" in ev.key or "elementwise" in ev.key.lower() or ev.key.startswith("cuda"):
            continue
        rows.append((ev.key, total / iters, ev.count / iters))
    return sorted(rows, key=lambda r: -r[1])


def run_case(shape, batch, ctx_len, bits, iters, flush, ctx, plans, graphs, kernels=False):
    n_q, n_kv, d = SHAPES[shape]
    if (shape, bits) not in plans:
        plans[(shape, bits)] = calibrate(shape, bits)
    plan = plans[(shape, bits)]
    dev = torch.device("cuda")
    gen = torch.Generator(device=dev).manual_seed(7)
    # SDPA layout [B, H, L, D]; kvbits appends [tokens, H, D] per sequence.
    k = (torch.randn(batch, ctx_len, n_kv, d, device=dev, generator=gen) * 0.5).half()
    v = torch.randn(batch, ctx_len, n_kv, d, device=dev, generator=gen).half()
    q = torch.randn(batch, n_q, d, device=dev, generator=gen).half()
    page = 64
    pages = batch * math.ceil(ctx_len / page) + batch
    stream = torch.cuda.current_stream().cuda_stream
    with kvbits.Cache(ctx, plan, max_pages=pages, page_size=page) as cache:
        seqs = [cache.add_sequence() for _ in range(batch)]
        chunk = 16384
        for b, s in enumerate(seqs):
            for t0 in range(0, ctx_len, chunk):
                n = min(chunk, ctx_len - t0)
                kc = k[b, t0:t0 + n].contiguous()
                vc = v[b, t0:t0 + n].contiguous()
                cache.append_ptr(0, [s], [n], kc.data_ptr(), vc.data_ptr(), kvbits.DType.F16, stream=stream)
        torch.cuda.synchronize()
        packed = cache.stats().packed_bytes_used
        out = torch.empty(batch, n_q, d, device=dev, dtype=torch.float32)

        def kv_decode():
            # The current stream: inside a graph capture it is the capturing stream.
            cache.decode_ptr(0, seqs, q.data_ptr(), kvbits.DType.F16, out.data_ptr(),
                             stream=torch.cuda.current_stream().cuda_stream)

        kt, vt = k.transpose(1, 2).contiguous(), v.transpose(1, 2).contiguous()
        q4 = q.unsqueeze(2)  # [B, Hq, 1, D]
        ref = torch.empty(batch, n_q, 1, d, device=dev, dtype=torch.float16)

        def sdpa():
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                ref.copy_(F.scaled_dot_product_attention(q4, kt, vt, enable_gqa=True))

        t_sdpa_eager = time_calls(sdpa, iters, flush)
        t_kv_eager = time_calls(kv_decode, iters, flush)
        t_sdpa, t_kv = t_sdpa_eager, t_kv_eager
        if graphs:
            t_sdpa = time_calls(as_graph(sdpa), iters, flush)
            t_kv = time_calls(as_graph(kv_decode), iters, flush)
        if kernels:
            fn = as_graph(kv_decode) if graphs else kv_decode
            for name, us, n in kernel_times(fn, iters, flush):
                print(f"    kernel {us:8.1f} µs/call  x{n:.0f}  {name[:110]}")
        torch.cuda.synchronize()
        r = ref.squeeze(2).float()
        rel = ((out - r).norm() / r.norm()).item()
        fp16_bytes = 2 * batch * ctx_len * n_kv * d * 2
        return dict(shape=shape, batch=batch, context=ctx_len, bits=bits, sdpa_us=t_sdpa, kvbits_us=t_kv,
                    sdpa_eager_us=t_sdpa_eager, kvbits_eager_us=t_kv_eager, graphs=graphs,
                    ratio=t_sdpa / t_kv, fp16_bytes=fp16_bytes, packed_bytes=packed,
                    kvbits_gbps=packed / t_kv / 1e3, sdpa_gbps=fp16_bytes / t_sdpa / 1e3, rel_err=rel)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the two target rows only")
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--no-graphs", action="store_true",
                    help="time eager calls only (host dispatch overhead included on both sides)")
    ap.add_argument("--kernels", action="store_true",
                    help="also print kvbits' device time per kernel (torch.profiler) for each row")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("sdpa_side_by_side: no CUDA device; nothing to compare", file=sys.stderr)
        return 2
    print(f"device: {torch.cuda.get_device_name()} | torch {torch.__version__} | kvbits {kvbits.library_version()}")
    flush = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
    rows, plans = [], {}
    with kvbits.Context("cuda") as ctx:
        print(f"timing: {'eager calls' if a.no_graphs else 'CUDA graph replays'} (eager µs in brackets)")
        print(f"{'shape':<13}{'batch':>6}{'context':>9}{'bits':>5}{'SDPA µs':>10}{'kvbits µs':>11}"
              f"{'SDPA/kvbits':>12}{'kvbits GB/s':>12}{'rel err':>9}  eager SDPA / kvbits µs")
        for shape, batch, ctx_len, bits in (QUICK if a.quick else FULL):
            free = torch.cuda.mem_get_info()[0]
            need = 2 * batch * ctx_len * SHAPES[shape][1] * SHAPES[shape][2] * 2 * 3
            if need > free * 0.8:
                print(f"{shape:<13}{batch:>6}{ctx_len:>9}{bits:>5}  skipped: needs {need >> 30} GiB of fp16 tensors")
                continue
            t0 = time.time()
            row = run_case(shape, batch, ctx_len, bits, a.iters, flush, ctx, plans, not a.no_graphs, a.kernels)
            rows.append(row)
            print(f"{shape:<13}{batch:>6}{ctx_len:>9}{bits:>5}{row['sdpa_us']:>10.1f}{row['kvbits_us']:>11.1f}"
                  f"{row['ratio']:>11.2f}x{row['kvbits_gbps']:>12.0f}{row['rel_err']:>9.3f}"
                  f"  [{row['sdpa_eager_us']:.1f} / {row['kvbits_eager_us']:.1f}]   ({time.time() - t0:.0f} s)",
                  flush=True)
            torch.cuda.empty_cache()
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
