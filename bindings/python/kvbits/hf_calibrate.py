"""Calibrate a kvbits bit plan for a local Hugging Face causal LM.

    python3 -m kvbits.hf_calibrate --model DIR --texts FILE --out model.kvbplan

DIR is a local model folder (config, weights, tokenizer; nothing is downloaded). FILE holds one
calibration text per line (empty lines are skipped); --token-ids FILE instead takes one
sequence of whitespace-separated token ids per line and needs no tokenizer.
"""
import argparse
import sys


def _parse(argv):
    p = argparse.ArgumentParser(prog="python3 -m kvbits.hf_calibrate", description=__doc__.split("\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="local model folder (transformers format)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--texts", help="file with one calibration text per line")
    src.add_argument("--token-ids", help="file with one whitespace-separated token-id sequence per line")
    p.add_argument("--out", required=True, help="plan file to write")
    p.add_argument("--max-length", type=int, default=512, help="tokens per text at most (default 512)")
    p.add_argument("--max-texts", type=int, default=0, help="use at most this many texts (0: all)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"],
                   help="model weights' dtype when loading (auto: as saved)")
    p.add_argument("--k-bits", type=float, default=3.0, help="average key bits per dim (default 3)")
    p.add_argument("--v-bits", type=int, default=3, help="value bits (default 3)")
    p.add_argument("--min-bits", type=int, default=None)
    p.add_argument("--max-bits", type=int, default=None)
    p.add_argument("--method", default="block-gtq", choices=["block-gtq", "uniform"])
    p.add_argument("--score", default=None, choices=["product", "energy"])
    p.add_argument("--codebooks", default=None, choices=["lloyd-max", "reference"])
    p.add_argument("--sink", type=int, default=None, help="first tokens kept in fp16")
    p.add_argument("--window", type=int, default=None, help="last tokens kept in fp16")
    p.add_argument("--fp16-layers", default="", help="comma-separated layers kept in fp16, e.g. 0,31")
    p.add_argument("--seed", type=int, default=None, help="rotation seed (default 42)")
    p.add_argument("--corpus", default=None, help="what the calibration data was (recorded in the plan)")
    p.add_argument("--date", default=None, help="ISO-8601 date recorded in the plan (none by default)")
    return p.parse_args(argv)


def _read_lines(path, limit):
    with open(path, encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f if line.strip()]
    return lines[:limit] if limit > 0 else lines


def main(argv=None):
    args = _parse(argv)
    import torch
    import transformers

    import kvbits
    from kvbits import hf

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    load = {"local_files_only": True}
    if args.dtype != "auto":
        major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
        key = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"  # renamed in 4.56
        load[key] = getattr(torch, args.dtype)
    model = transformers.AutoModelForCausalLM.from_pretrained(args.model, **load).to(device)

    lines = _read_lines(args.texts or args.token_ids, args.max_texts)
    source = {}
    if args.texts:
        source["texts"] = lines
        source["tokenizer"] = transformers.AutoTokenizer.from_pretrained(args.model, local_files_only=True)
    else:
        source["token_ids"] = [[int(t) for t in line.split()] for line in lines]
    options = {"k_avg_bits": args.k_bits, "v_bits": args.v_bits,
               "method": "uniform_tq_mse" if args.method == "uniform" else "block_gtq",
               "fp16_layers": [int(x) for x in args.fp16_layers.split(",") if x.strip()]}
    if args.method == "uniform":  # uniform TQ-MSE: every block at the average width
        options["k_min_bits"] = options["k_max_bits"] = int(args.k_bits)
    for key, value in (("k_min_bits", args.min_bits), ("k_max_bits", args.max_bits), ("score", args.score),
                       ("codebooks", args.codebooks), ("sink_tokens", args.sink), ("window_tokens", args.window),
                       ("rotation_seed", args.seed), ("corpus", args.corpus), ("date", args.date)):
        if value is not None:
            options[key] = value
    try:
        plan = hf.calibrate(model, max_length=args.max_length, batch_size=args.batch_size, out=args.out,
                            **source, **options)
    except kvbits.Error as e:
        print(f"hf_calibrate: {e}", file=sys.stderr)
        return 1
    with plan:
        info = plan.info()
    print(f"{args.out}: {info.n_layers} layers, {info.n_q_heads} query heads, {info.n_kv_heads} KV heads, "
          f"head_dim {info.head_dim}; {info.method.name.lower()}, {info.k_avg_bits:g} key bits, {info.v_bits} value "
          f"bits; {info.bytes_per_token_per_head:.1f} bytes per token per KV head (fp16: {4 * info.head_dim}); "
          f"{len(lines)} sequences")
    return 0


if __name__ == "__main__":
    sys.exit(main())
