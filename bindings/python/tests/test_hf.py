"""kvbits.hf on small randomly initialised transformers models (no downloads).

Skipped when torch or transformers is missing. Runs on CUDA when available, else on the CPU.
"""
import importlib.util
import os
import subprocess
import sys
import tempfile
import unittest

import numpy as np

import kvbits

HAVE_HF = all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers"))
ATOL = 1e-5
DATE = "2026-01-01T00:00:00Z"

if HAVE_HF:
    import torch
    import transformers
    from kvbits import hf


def small_config(name):
    """2 layers, hidden 256, 8 query heads over 2 KV heads, head_dim 32; None if unknown here."""
    cls = getattr(transformers, name, None)
    if cls is None:
        return None
    return cls(vocab_size=160, hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=8,
               num_key_value_heads=2, head_dim=32, max_position_embeddings=256, rope_theta=10000.0,
               tie_word_embeddings=False)


def cached_keys(past, layer):
    """Layer `layer`'s keys [batch, kv_heads, tokens, dim] from any transformers cache form."""
    if hasattr(past, "layers"):
        return past.layers[layer].keys
    if hasattr(past, "key_cache"):
        return past.key_cache[layer]
    return past[layer][0]


@unittest.skipUnless(HAVE_HF, "torch and transformers are not installed")
class TestHF(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.device = "cuda" if torch.cuda.is_available() else "cpu"
        if cls.device == "cuda":  # full fp32 matmuls, so the 1e-5 checks hold on any GPU
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        cls.tmp = tempfile.TemporaryDirectory()

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def model(self, config_name, seed=0):
        config = small_config(config_name)
        if config is None:
            self.skipTest(f"transformers {transformers.__version__} has no {config_name}")
        torch.manual_seed(seed)
        model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager")
        return model.to(device=self.device, dtype=torch.float32).eval()

    def token_ids(self, batch=2, tokens=24, seed=1):
        g = torch.Generator().manual_seed(seed)
        return torch.randint(0, 160, (batch, tokens), generator=g)

    def check_capture(self, config_name):
        model = self.model(config_name)
        ids = self.token_ids().to(self.device)
        captured = {}
        with hf.QKCapture(model, lambda layer, q, k: captured.__setitem__(layer, (q.clone(), k.clone()))), \
                torch.no_grad():
            out = model(input_ids=ids, use_cache=True, output_attentions=True)
        self.assertEqual(sorted(captured), [0, 1])
        for layer, (q, k) in captured.items():
            self.assertEqual(tuple(q.shape), (2, 24, 8, 32))
            self.assertEqual(tuple(k.shape), (2, 24, 2, 32))
            # Keys: exactly what the model stored in its own cache (post-RoPE, and q/k-normed in Qwen3).
            want_k = cached_keys(out.past_key_values, layer).transpose(1, 2)
            self.assertLessEqual(float((k - want_k).abs().max()), ATOL)
            # Queries: the model's attention probabilities follow from them and the keys.
            qd, kd = q.double(), k.double().repeat_interleave(4, dim=2)  # GQA: 4 query heads per KV head
            logits = torch.einsum("bqhd,bkhd->bhqk", qd, kd) / np.sqrt(32)
            causal = torch.ones(24, 24, dtype=torch.bool, device=q.device).tril()
            probs = logits.masked_fill(~causal, float("-inf")).softmax(-1)
            self.assertLessEqual(float((probs - out.attentions[layer].double()).abs().max()), ATOL)
        # RoPE is applied: position 0 is unrotated, later positions are not the bare projection.
        return model, captured

    def test_capture_llama(self):
        self.check_capture("LlamaConfig")

    def test_capture_qwen2(self):
        self.check_capture("Qwen2Config")

    def test_capture_qwen3_with_qk_norm(self):
        model, _ = self.check_capture("Qwen3Config")
        self.assertTrue(hasattr(model.model.layers[0].self_attn, "q_norm"))

    def test_capture_mistral(self):
        self.check_capture("MistralConfig")

    def test_model_shape(self):
        shape = hf.model_shape(small_config("LlamaConfig"))
        self.assertEqual(shape, kvbits.ModelShape(2, 8, 2, 32, 32, kvbits.RopeLayout.SPLIT_HALF, 10000.0))

    def calibrate_and_check(self, config_name):
        model = self.model(config_name)
        ids = self.token_ids(batch=3, tokens=40, seed=2)
        path = os.path.join(self.tmp.name, f"{config_name}.kvbplan")
        with hf.calibrate(model, token_ids=ids, out=path, k_avg_bits=3, v_bits=3, date=DATE) as plan:
            data = plan.to_bytes()
        with kvbits.Plan.load(path) as loaded:
            self.assertEqual(loaded.to_bytes(), data)
            info = loaded.info()
        self.assertEqual((info.n_layers, info.n_q_heads, info.n_kv_heads, info.head_dim, info.rotary_dim),
                         (2, 8, 2, 32, 32))
        self.assertEqual((info.method, info.k_avg_bits, info.v_bits), (kvbits.Method.BLOCK_GTQ, 3.0, 3))
        self.assertEqual((info.rope_layout, info.rope_theta), (kvbits.RopeLayout.SPLIT_HALF, 10000.0))
        self.assertGreater(info.calib_tokens, 0)

        # The same as feeding the captured tensors to a calibrator by hand.
        with kvbits.Context("cpu") as ctx, kvbits.Calibrator(ctx, hf.model_shape(model.config)) as cal:
            def feed(layer, q, k):
                cal.observe(layer, q=q.reshape(-1, 8, 32).float().cpu().numpy(),
                            k=k.reshape(-1, 2, 32).float().cpu().numpy())
            with hf.QKCapture(model, feed), torch.no_grad():
                for row in ids:
                    model(input_ids=row[None].to(self.device), use_cache=False)
            with cal.build_plan(k_avg_bits=3, v_bits=3, date=DATE) as by_hand:
                self.assertEqual(by_hand.to_bytes(), data)

        # Right-padded batches of unequal lengths: padding is never observed.
        seqs = [ids[0, :40], ids[1, :17], ids[2, :29]]
        with hf.calibrate(model, token_ids=seqs, batch_size=3, date=DATE) as padded, \
                hf.calibrate(model, token_ids=seqs, batch_size=1, date=DATE) as single:
            a, b = padded.info(), single.info()
            self.assertEqual(a.calib_tokens, b.calib_tokens)
            self.assertEqual([padded.bytes_per_token(l, h) for l in range(2) for h in range(2)],
                             [single.bytes_per_token(l, h) for l in range(2) for h in range(2)])

    def test_calibrate_llama(self):
        self.calibrate_and_check("LlamaConfig")

    def test_calibrate_qwen2(self):
        self.calibrate_and_check("Qwen2Config")

    def test_cli(self):
        model = self.model("LlamaConfig")
        folder = os.path.join(self.tmp.name, "llama")
        model.save_pretrained(folder)
        ids_file = os.path.join(self.tmp.name, "ids.txt")
        with open(ids_file, "w") as f:
            for row in self.token_ids(batch=2, tokens=30, seed=4).tolist():
                f.write(" ".join(map(str, row)) + "\n")
        args = ["--model", folder, "--token-ids", ids_file, "--date", DATE, "--k-bits", "4", "--v-bits", "2"]
        self.assertIn("4 key bits, 2 value bits", self.run_cli(args, "cli.kvbplan"))
        try:
            tokenizer = self.word_tokenizer()
        except ImportError as e:
            self.skipTest(f"no tokenizers package: {e}")
        tokenizer.save_pretrained(folder)
        texts = os.path.join(self.tmp.name, "texts.txt")
        with open(texts, "w") as f:
            f.write("the cat sat on the mat\n\nthe dog ran after the cat and the cat ran\n")
        self.assertIn("2 sequences", self.run_cli(["--model", folder, "--texts", texts, "--device", "cpu"],
                                                  "texts.kvbplan"))

    def test_calibrate_texts_in_padded_batches(self):
        model = self.model("LlamaConfig")
        try:
            tokenizer = self.word_tokenizer()
        except ImportError as e:
            self.skipTest(f"no tokenizers package: {e}")
        texts = ["the cat sat on the mat", "the dog ran after the cat and the cat ran", "cat"]
        tokenizer.padding_side = "left"  # calibrate pads on the right whatever the tokenizer says
        with hf.calibrate(model, texts, tokenizer=tokenizer, batch_size=2, date=DATE) as plan:
            self.assertEqual(plan.info().calib_tokens, 6 + 10 + 1)  # words; padding is not counted
        self.assertIsNone(tokenizer.pad_token)  # the tokenizer is left as it was
        self.assertEqual(tokenizer.padding_side, "left")

    def run_cli(self, args, name):
        out = os.path.join(self.tmp.name, name)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(kvbits.__file__))) + os.pathsep + \
            env.get("PYTHONPATH", "")
        p = subprocess.run([sys.executable, "-m", "kvbits.hf_calibrate", *args, "--out", out], env=env,
                           capture_output=True, text=True, timeout=600)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        with kvbits.Plan.load(out) as plan:
            self.assertEqual(plan.info().n_kv_heads, 2)
        return p.stdout

    def word_tokenizer(self):
        """A whitespace word-level tokenizer over a tiny vocabulary, built locally."""
        from tokenizers import Tokenizer, models, pre_tokenizers
        words = ["<unk>", "<eos>", "the", "cat", "sat", "on", "mat", "dog", "ran", "after", "and"]
        tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>")


if __name__ == "__main__":
    unittest.main()
