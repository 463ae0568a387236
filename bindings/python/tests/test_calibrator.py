"""The calibrator: dtypes, partial observations, options, and bad input leaving it unchanged."""
import unittest

import numpy as np

import kvbits

import support

SHAPE = support.SHAPE


def exact_data(seed, n_tokens=64):
    """Per-layer (q, k) whose values are exact in float16 and bfloat16 (multiples of 1/16 up to 4)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(SHAPE.n_layers):
        q = (rng.integers(-64, 65, (n_tokens, SHAPE.n_q_heads, SHAPE.head_dim)) / 16).astype(np.float32)
        k = (rng.integers(-64, 65, (n_tokens, SHAPE.n_kv_heads, SHAPE.head_dim)) / 16).astype(np.float32)
        k[:, :, :4] *= 2  # uneven block energies, so the allocation is not uniform
        out.append((q, k))
    return out


class TestCalibrator(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.ctx = kvbits.Context("cpu", n_threads=2)
        cls.data = exact_data(3)

    @classmethod
    def tearDownClass(cls):
        cls.ctx.close()

    def plan_bytes(self, feed, **options):
        """Plan bytes after feed(calibrator) observed; fixed date so bytes are comparable."""
        with kvbits.Calibrator(self.ctx, SHAPE) as cal:
            feed(cal)
            with cal.build_plan(date=support.DATE, **options) as plan:
                return plan.to_bytes()

    def reference(self):
        def feed(cal):
            for layer, (q, k) in enumerate(self.data):
                cal.observe(layer, q=q, k=k)
        return self.plan_bytes(feed)

    def test_dtypes_give_the_same_plan(self):
        want = self.reference()

        def f16(cal):
            for layer, (q, k) in enumerate(self.data):
                cal.observe(layer, q=q.astype(np.float16), k=k.astype(np.float16))

        def bf16(cal):
            for layer, (q, k) in enumerate(self.data):
                cal.observe(layer, q=kvbits.to_bf16(q), k=kvbits.to_bf16(k), dtype="bf16")

        self.assertEqual(self.plan_bytes(f16), want)
        self.assertEqual(self.plan_bytes(bf16), want)

    def test_q_and_k_in_separate_calls(self):
        def feed(cal):
            for layer, (q, k) in enumerate(self.data):
                cal.observe(layer, q=q)
                cal.observe(layer, k=k)
        with kvbits.Calibrator(self.ctx, SHAPE) as cal:
            feed(cal)
            with cal.build_plan(date=support.DATE) as plan:
                split = plan.info()
        with kvbits.Plan.from_bytes(self.reference()) as plan:
            together = plan.info()
        self.assertEqual(split.bytes_per_token_total, together.bytes_per_token_total)
        self.assertEqual(split.shape, together.shape)

    def test_options_reach_the_plan(self):
        def feed(cal):
            for layer, (q, k) in enumerate(self.data):
                cal.observe(layer, q=q, k=k)
        with kvbits.Calibrator(self.ctx, SHAPE) as cal:
            feed(cal)
            with cal.build_plan(method="uniform_tq_mse", k_avg_bits=4, k_min_bits=4, k_max_bits=4, v_bits=2,
                                sink_tokens=4, window_tokens=8, fp16_layers=[1], corpus="c", date=support.DATE,
                                model_fingerprint_hex="00112233445566778899aabbccddeeff") as plan:
                info = plan.info()
                self.assertEqual((info.method, info.k_avg_bits, info.v_bits), (kvbits.Method.UNIFORM_TQ_MSE, 4.0, 2))
                self.assertEqual((info.sink_tokens, info.window_tokens, info.n_fp16_layers), (4, 8, 1))
                # layer 1 is fp16: 2 * 4 heads... bytes are those of fp16 rows there.
                self.assertEqual(plan.bytes_per_token(1, 0), 2 * 2 * SHAPE.head_dim)
                self.assertLess(plan.bytes_per_token(0, 0), plan.bytes_per_token(1, 0))
            with cal.build_plan(score="energy", codebooks=kvbits.Codebooks.REFERENCE, date=support.DATE) as a, \
                    cal.build_plan(score="product", date=support.DATE) as b:
                self.assertNotEqual(a.to_bytes(), b.to_bytes())

    def test_bad_options(self):
        with kvbits.Calibrator(self.ctx, SHAPE) as cal:
            for layer, (q, k) in enumerate(self.data):
                cal.observe(layer, q=q, k=k)
            with self.assertRaises(kvbits.InvalidArgument) as cm:
                cal.build_plan(k_avg_bits=9)
            self.assertEqual(cm.exception.function, "kvb_calibrator_build_plan")
            self.assertIn("k_avg_bits", cm.exception.message)
            with self.assertRaises(kvbits.InvalidArgument) as cm:
                cal.build_plan(fp16_layers=[0, 1, 1])
            with self.assertRaises(kvbits.InvalidArgument) as cm:
                cal.build_plan(method="fancy")
            self.assertIn("block_gtq", str(cm.exception))
            with self.assertRaises(kvbits.InvalidArgument):
                cal.build_plan(model_fingerprint_hex="xyz")
            with self.assertRaises(kvbits.InvalidArgument):
                cal.build_plan(corpus="a\0b")

    def test_empty_calibrator_refuses_block_gtq(self):
        with kvbits.Calibrator(self.ctx, SHAPE) as cal:
            with self.assertRaises(kvbits.InvalidArgument) as cm:
                cal.build_plan()
            self.assertTrue(cm.exception.message)

    def test_bad_observations_accumulate_nothing(self):
        want = self.reference()

        def feed(cal):
            q, k = self.data[0]
            bad = k.copy()
            bad[3, 1, 5] = np.nan
            with self.assertRaises(kvbits.InvalidArgument) as cm:
                cal.observe(0, q=q, k=bad)  # refused by the library
            self.assertIn("finite", cm.exception.message)
            with self.assertRaises(kvbits.InvalidArgument) as cm:
                cal.observe(2, q=q, k=k)  # layer out of range: the library's message
            self.assertEqual(cm.exception.message, "layer 2 out of range (2 layers)")
            with self.assertRaises(kvbits.ShapeMismatch):
                cal.observe(0, q=q, k=k[:-1])  # token counts differ
            with self.assertRaises(kvbits.ShapeMismatch):
                cal.observe(0, q=q[:, :4], k=k)  # 4 query heads, not 8
            with self.assertRaises(kvbits.InvalidArgument):
                cal.observe(0, q=q.astype(np.float64), k=k)
            with self.assertRaises(kvbits.InvalidArgument):
                cal.observe(0, q=q.view(np.uint32), k=k)
            with self.assertRaises(kvbits.InvalidArgument):
                cal.observe(0, q=q, k=k.astype(np.float16))  # one dtype per call
            with self.assertRaises(kvbits.InvalidArgument):
                cal.observe(0)
            with self.assertRaises(kvbits.InvalidArgument):
                cal.observe(0, q=q.tolist(), k=k)
            with self.assertRaises(kvbits.ShapeMismatch):
                cal.observe(0, k=k[:0])  # no tokens
            with self.assertRaises(kvbits.InvalidArgument):
                cal.observe(-1, q=q, k=k)
            for layer, (q, k) in enumerate(self.data):
                cal.observe(layer, q=q, k=k)

        self.assertEqual(self.plan_bytes(feed), want)

    def test_closed(self):
        cal = kvbits.Calibrator(self.ctx, SHAPE)
        cal.close()
        cal.close()
        self.assertTrue(cal.closed)
        q, k = self.data[0]
        with self.assertRaises(kvbits.NullPointer) as cm:
            cal.observe(0, q=q, k=k)
        self.assertIn("closed", str(cm.exception))
        with self.assertRaises(kvbits.NullPointer):
            cal.build_plan()

    def test_bad_shape(self):
        with self.assertRaises(kvbits.InvalidArgument) as cm:
            kvbits.Calibrator(self.ctx, kvbits.ModelShape(2, 6, 4, 32))  # 6 query heads over 4 KV heads
        self.assertEqual(cm.exception.function, "kvb_calibrator_create")
        self.assertTrue(cm.exception.message)


if __name__ == "__main__":
    unittest.main()
