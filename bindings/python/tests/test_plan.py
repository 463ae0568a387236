"""Plans: calibrate, describe, serialise, save/load, shape checks, corrupt input."""
import dataclasses
import os
import tempfile
import unittest

import numpy as np

import kvbits

import support


class TestPlan(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.ctx = kvbits.Context("cpu", n_threads=2)
        cls.plan = support.calibrate(cls.ctx, corpus="seeded gaussians")
        cls.tmp = tempfile.TemporaryDirectory()

    @classmethod
    def tearDownClass(cls):
        cls.plan.close()
        cls.ctx.close()
        cls.tmp.cleanup()

    def test_info(self):
        info = self.plan.info()
        self.assertEqual(info.shape, dataclasses.replace(support.SHAPE, rotary_dim=32))  # 0 meant head_dim
        self.assertEqual((info.method, info.k_avg_bits, info.v_bits), (kvbits.Method.BLOCK_GTQ, 3.0, 3))
        self.assertEqual((info.rope_layout, info.rope_theta), (kvbits.RopeLayout.SPLIT_HALF, 10000.0))
        self.assertEqual((info.sink_tokens, info.window_tokens, info.n_fp16_layers), (0, 0, 0))
        # 128 tokens per layer, each query head and KV head a sample: counted once per token.
        self.assertGreater(info.calib_tokens, 0)
        per_head = [self.plan.bytes_per_token(layer, h) for layer in range(2) for h in range(4)]
        self.assertEqual(info.bytes_per_token_total, sum(per_head))
        self.assertAlmostEqual(info.bytes_per_token_per_head, sum(per_head) / len(per_head), places=9)
        # K3V3 at head_dim 32: 3 bits per dim for K and V (24 bytes) plus fp16 scales; far below fp16's 128.
        self.assertTrue(24 <= info.bytes_per_token_per_head < 40, info.bytes_per_token_per_head)

    def test_bytes_round_trip(self):
        data = self.plan.to_bytes()
        with kvbits.Plan.from_bytes(data) as again:
            self.assertEqual(again.to_bytes(), data)
            self.assertEqual(again.info(), self.plan.info())
        with kvbits.Plan.from_bytes(bytearray(data)) as again:
            self.assertEqual(again.to_bytes(), data)
        with kvbits.Plan.from_bytes(np.frombuffer(data, np.uint8)) as again:
            self.assertEqual(again.to_bytes(), data)

    def test_file_round_trip(self):
        path = os.path.join(self.tmp.name, "p.kvbplan")
        self.plan.save(path)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), self.plan.to_bytes())
        with kvbits.Plan.load(path) as loaded:
            self.assertEqual(loaded.to_bytes(), self.plan.to_bytes())

    def test_deterministic(self):
        with support.calibrate(self.ctx, corpus="seeded gaussians") as again:
            self.assertEqual(again.to_bytes(), self.plan.to_bytes())
        with support.calibrate(self.ctx, seed=1, corpus="seeded gaussians") as other:
            self.assertNotEqual(other.to_bytes(), self.plan.to_bytes())

    def test_check_shape_and_model(self):
        self.plan.check_shape(2, 8, 4, 32)
        self.plan.check_model(support.SHAPE)
        with self.assertRaises(kvbits.ShapeMismatch) as cm:
            self.plan.check_shape(2, 8, 4, 64)
        self.assertIn("head_dim", cm.exception.message)
        with self.assertRaises(kvbits.ShapeMismatch) as cm:
            self.plan.check_model(kvbits.ModelShape(2, 8, 4, 32, rope_theta=500000.0))
        self.assertIn("theta", cm.exception.message)
        with self.assertRaises(kvbits.InvalidArgument):
            self.plan.check_model(kvbits.ModelShape(2, 8, 4, 31))  # odd head_dim is no shape at all

    def test_bytes_per_token_bad_index(self):
        with self.assertRaises(kvbits.InvalidArgument) as cm:
            self.plan.bytes_per_token(2, 0)
        self.assertEqual(cm.exception.function, "kvb_plan_bytes_per_token")
        with self.assertRaises(kvbits.InvalidArgument):
            self.plan.bytes_per_token(-1, 0)  # refused in Python: ctypes would wrap it

    def test_truncated_bytes(self):
        data = self.plan.to_bytes()
        for cut in (0, 8, 63, len(data) // 2, len(data) - 1):
            with self.assertRaises(kvbits.CorruptData, msg=f"cut at {cut}") as cm:
                kvbits.Plan.from_bytes(data[:cut])
            self.assertEqual(cm.exception.function, "kvb_plan_load_memory")
            self.assertTrue(cm.exception.message)

    def test_flipped_byte(self):
        data = bytearray(self.plan.to_bytes())
        data[len(data) // 2] ^= 0x40
        with self.assertRaises(kvbits.CorruptData) as cm:
            kvbits.Plan.from_bytes(bytes(data))
        self.assertTrue(cm.exception.message)

    def test_missing_file(self):
        path = os.path.join(self.tmp.name, "nope.kvbplan")
        with self.assertRaises(kvbits.IOFailure) as cm:
            kvbits.Plan.load(path)
        self.assertIn("nope.kvbplan", cm.exception.message)

    def test_save_into_missing_folder(self):
        with self.assertRaises(kvbits.IOFailure):
            self.plan.save(os.path.join(self.tmp.name, "no", "such", "dir.kvbplan"))

    def test_not_bytes(self):
        with self.assertRaises(kvbits.InvalidArgument):
            kvbits.Plan.from_bytes(12)

    def test_context_supports(self):
        self.assertTrue(self.ctx.supports(self.plan))
        self.assertEqual(self.ctx.backend, kvbits.Backend.CPU)
        self.assertEqual(self.ctx.device, 0)


if __name__ == "__main__":
    unittest.main()
