#!/usr/bin/env python3
"""End-to-end tests of the `kvbits` CLI on real activations of the bundled stories260K model.

Usage: test_cli.py KVBITS_BIN LLAMA2C_BIN DATA_DIR
"""
import os
import subprocess
import sys
import tempfile
import unittest
import xml.etree.ElementTree as ET

KVBITS, LLAMA2C, DATA = sys.argv[1], sys.argv[2], sys.argv[3]
del sys.argv[1:4]


def run(*args, ok=True):
    p = subprocess.run(list(args), capture_output=True, text=True, timeout=300)
    if ok and p.returncode != 0:
        raise AssertionError(f"{args} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


class Cli(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.dir = cls.tmp.name
        cls.dump = os.path.join(cls.dir, "acts.safetensors")
        run(LLAMA2C, "capture", "--model", os.path.join(DATA, "stories260K", "stories260K.bin"),
            "--tokenizer", os.path.join(DATA, "stories260K", "tok512.bin"),
            "--sequences", "4", "--tokens", "128", "--seed", "5", "--out", cls.dump)
        cls.plans = {}
        for k in (2, 3):
            path = os.path.join(cls.dir, f"k{k}.kvbplan")
            out = run(KVBITS, "calibrate", "--dump", cls.dump, "--k-bits", str(k), "--v-bits", str(k),
                      "--out", path, "--date", "2026-01-01T00:00:00Z").stdout
            assert "compression" in out, out
            cls.plans[k] = path

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def read(self, k):
        with open(self.plans[k], "rb") as f:
            return f.read()

    def test_calibrate_is_deterministic(self):
        again = os.path.join(self.dir, "again.kvbplan")
        run(KVBITS, "calibrate", "--dump", self.dump, "--k-bits", "3", "--v-bits", "3", "--out", again,
            "--date", "2026-01-01T00:00:00Z", "--quiet")
        with open(again, "rb") as f:
            self.assertEqual(f.read(), self.read(3))

    def test_fingerprint_from_dump_equals_fingerprint_of_the_model_file(self):
        a = os.path.join(self.dir, "fp.kvbplan")
        run(KVBITS, "calibrate", "--dump", self.dump, "--k-bits", "3", "--v-bits", "3", "--out", a,
            "--date", "2026-01-01T00:00:00Z", "--quiet",
            "--fingerprint-file", os.path.join(DATA, "stories260K", "stories260K.bin"))
        with open(a, "rb") as f:
            self.assertEqual(f.read(), self.read(3))
        out = run(KVBITS, "inspect", a, "--no-table").stdout
        self.assertIn("48be2bfe231b489d0c9b5a18d38a945f", out)

    def test_inspect_shows_a_non_uniform_allocation(self):
        for k in (2, 3):
            svg = os.path.join(self.dir, f"k{k}.svg")
            out = run(KVBITS, "inspect", self.plans[k], "--svg", svg).stdout
            rows = [l.split() for l in out.splitlines() if l[:5].strip().isdigit()]
            self.assertEqual(len(rows), 5 * 4, out)  # 5 layers x 4 KV heads
            widths = [r[2] for r in rows]
            for w in widths:
                self.assertEqual(len(w), 4)  # head_dim 8 -> 4 blocks
                self.assertEqual(sum(int(c) for c in w), 4 * k)  # the whole budget is spent
            self.assertTrue(any(len(set(w)) > 1 for w in widths), f"uniform allocation: {widths}")
            root = ET.parse(svg).getroot()
            rects = [e for e in root.iter() if e.tag.endswith("rect")]
            self.assertGreaterEqual(len(rects), 5 * 4 * 4)

    def test_uniform_method_allocates_uniformly(self):
        path = os.path.join(self.dir, "u.kvbplan")
        run(KVBITS, "calibrate", "--dump", self.dump, "--k-bits", "3", "--method", "uniform", "--out", path, "-q")
        out = run(KVBITS, "inspect", path).stdout
        rows = [l.split() for l in out.splitlines() if l[:5].strip().isdigit()]
        self.assertEqual({r[2] for r in rows}, {"3333"})

    def test_verify_accepts_good_plans(self):
        for k in (2, 3):
            p = run(KVBITS, "verify", self.plans[k])
            self.assertIn("OK", p.stdout)
        run(KVBITS, "verify", self.plans[3], "--dump", self.dump)

    def test_verify_rejects_every_truncation_and_bit_flip(self):
        data = self.read(3)
        bad = os.path.join(self.dir, "bad.kvbplan")
        cases = [data[:n] for n in range(0, len(data), max(1, len(data) // 97))]
        for i in range(0, len(data), max(1, len(data) // 199)):
            for bit in (0, 7):
                b = bytearray(data)
                b[i] ^= 1 << bit
                cases.append(bytes(b))
        cases.append(b"XXXXXXXX" + data[8:])
        for c in cases:
            with open(bad, "wb") as f:
                f.write(c)
            p = run(KVBITS, "verify", bad, ok=False)
            self.assertEqual(p.returncode, 1, f"accepted a corrupted plan ({len(c)} bytes)")
            self.assertIn("INVALID", p.stderr)

    def test_verify_reports_missing_file(self):
        p = run(KVBITS, "verify", os.path.join(self.dir, "missing.kvbplan"), ok=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("io_error", p.stderr)

    def test_help_everywhere_and_usage_errors(self):
        for sub in ([], ["calibrate"], ["inspect"], ["verify"], ["eval"]):
            p = run(KVBITS, *sub, "--help")
            self.assertIn("--help", p.stdout)
        p = run(KVBITS, "calibrate", "--dump", self.dump, ok=False)  # no --out
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("--out", p.stderr)
        p = run(KVBITS, "calibrate", "--dump", self.dump, "--out", os.path.join(self.dir, "x"),
                "--k-bits", "12", ok=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("invalid_argument", p.stderr)
        p = run(KVBITS, "calibrate", "--dump", self.dump, "--out", os.path.join(self.dir, "x"),
                "--kv-heads", "3", ok=False)
        self.assertEqual(p.returncode, 1)

    def test_shape_mismatch_against_dump_is_reported(self):
        p = run(KVBITS, "calibrate", "--dump", self.dump, "--head-dim", "16", "--rotary-dim", "16",
                "--out", os.path.join(self.dir, "y"), ok=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("shape_mismatch", p.stderr)

    def eval_report(self, name, *args):
        out_dir = os.path.join(self.dir, name)
        out = run(KVBITS, "eval", *args, "--report", out_dir, "--date", "2026-01-01").stdout
        with open(os.path.join(out_dir, "report.md"), encoding="utf-8") as f:
            return out, out_dir, f.read()

    def test_eval_on_dumps_writes_tables_and_plots(self):
        test_dump = os.path.join(self.dir, "test.safetensors")
        run(LLAMA2C, "capture", "--model", os.path.join(DATA, "stories260K", "stories260K.bin"),
            "--sequences", "2", "--tokens", "128", "--seed", "6", "--out", test_dump)
        out, out_dir, md = self.eval_report("rep", "--calib", self.dump, "--test", test_dump,
                                            "--seq-tokens", "128", "--bits", "3", "--kl-window", "16")
        self.assertIn("RoPE-logit MAE", out)
        self.assertIn("date: 2026-01-01", md)
        for label in ("uniform TQ-MSE", "Block-GTQ (paper score)", "Block-GTQ (product score)", "KIVI"):
            self.assertIn(label, md)
        rows = [l for l in md.splitlines() if l.startswith("| ") and l[2].isdigit()]
        self.assertEqual(len(rows), 1 + 5 + 4, md)  # summary row, 5 layers, 4 methods x 1 bit width
        for svg in ("mae_per_layer_3bit.svg", "kl_vs_bits.svg", "top10_vs_bits.svg",
                    "allocation_bgt-energy_3bit.svg", "allocation_bgt-product_3bit.svg"):
            self.assertIn(svg, md)
            ET.parse(os.path.join(out_dir, svg))  # well-formed
        # The same inputs give the same report.
        _, _, again = self.eval_report("rep2", "--calib", self.dump, "--test", test_dump,
                                       "--seq-tokens", "128", "--bits", "3", "--kl-window", "16")
        self.assertEqual(md.replace("rep2", "rep"), again.replace("rep2", "rep"))

    def test_eval_on_the_synthetic_panel(self):
        out, _, md = self.eval_report("syn", "--synthetic", "64", "--sequences", "1", "--seq-tokens", "64",
                                      "--bits", "2", "--methods", "uniform,kivi", "--no-attention")
        self.assertIn("synthetic LLM-like, head_dim 64", md)
        self.assertIn("KIVI", out)
        self.assertNotIn("kl_vs_bits.svg", md)

    def test_eval_usage_errors(self):
        p = run(KVBITS, "eval", ok=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("--synthetic", p.stderr)
        p = run(KVBITS, "eval", "--synthetic", "96", ok=False)
        self.assertNotEqual(p.returncode, 0)
        p = run(KVBITS, "eval", "--calib", self.dump, ok=False)  # --test missing
        self.assertNotEqual(p.returncode, 0)
        p = run(KVBITS, "eval", "--calib", self.dump, "--test", self.dump, "--seq-tokens", "100", ok=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("multiple of 100", p.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
