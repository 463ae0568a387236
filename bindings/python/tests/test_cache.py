"""Caches: sequences (add, remove, fork, length), append, read-back accuracy, statistics."""
import unittest

import numpy as np

import kvbits

import support

H, D = support.SHAPE.n_kv_heads, support.SHAPE.head_dim


class CacheCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.ctx = kvbits.Context("cpu", n_threads=2)
        cls.plan = support.calibrate(cls.ctx)

    @classmethod
    def tearDownClass(cls):
        cls.plan.close()
        cls.ctx.close()

    def setUp(self):
        self.cache = kvbits.Cache(self.ctx, self.plan, max_pages=32, page_size=16)
        self.rng = np.random.default_rng(11)

    def tearDown(self):
        self.cache.close()

    def kv(self, n):
        return support.activations(self.rng, n, H, D), support.activations(self.rng, n, H, D)


class TestSequences(CacheCase):
    def test_add_append_length_stats(self):
        a, b = self.cache.add_sequence(), self.cache.add_sequence()
        self.assertNotEqual(a, b)
        self.assertEqual((self.cache.length(a), self.cache.length(b, 1)), (0, 0))
        k, v = self.kv(27)
        self.cache.append(0, [a, b], [20, 7], k, v)
        self.assertEqual([self.cache.length(s, layer) for s in (a, b) for layer in (0, 1)], [20, 0, 7, 0])
        s = self.cache.stats()
        self.assertEqual((s.page_size, s.pages_total, s.sequences, s.tokens), (16, 32, 2, 27))
        self.assertEqual(s.fp16_region_bytes, 0)
        # Every page holds page_size tokens of every layer and KV head: ceil(20/16) + ceil(7/16) pages.
        self.assertEqual(s.pages_used, 3)
        # Pages of 16 tokens are padded to 64-byte multiples per (layer, KV head).
        page_bytes = s.pool_bytes // s.pages_total
        self.assertEqual(s.pool_bytes, 32 * page_bytes)
        self.assertEqual(page_bytes % 64, 0)
        self.assertTrue(0 <= page_bytes - 16 * self.plan.info().bytes_per_token_total < 64 * 8, page_bytes)
        self.assertEqual(s.packed_bytes_used, 3 * page_bytes)
        self.cache.append(1, [b, a], [7, 20], *self.kv(27))  # order of the batch is the caller's
        self.assertEqual([self.cache.length(s, 1) for s in (a, b)], [20, 7])
        self.assertEqual(self.cache.stats().pages_used, 3)

    def test_pages_of_64_tokens_have_no_padding(self):
        with kvbits.Cache(self.ctx, self.plan, max_pages=4) as cache:  # the default page size
            s = cache.stats()
            self.assertEqual((s.page_size, s.pages_total, s.pages_used), (64, 4, 0))
            self.assertEqual(s.pool_bytes, 4 * 64 * self.plan.info().bytes_per_token_total)

    def test_zero_token_entries(self):
        a, b = self.cache.add_sequence(), self.cache.add_sequence()
        k, v = self.kv(5)
        self.cache.append(0, [a, b], [0, 5], k, v)
        self.assertEqual((self.cache.length(a), self.cache.length(b)), (0, 5))
        self.cache.append(0, [a], [0], k[:0], v[:0])
        self.assertEqual(self.cache.length(a), 0)

    def test_single_sequence_as_int(self):
        a = self.cache.add_sequence()
        self.cache.append(0, a, 3, *self.kv(3))
        self.assertEqual(self.cache.length(a), 3)

    def test_remove_and_reuse(self):
        a, b = self.cache.add_sequence(), self.cache.add_sequence()
        self.cache.append(0, a, 17, *self.kv(17))
        self.assertEqual(self.cache.stats().pages_used, 2)
        self.cache.remove_sequence(a)
        s = self.cache.stats()
        self.assertEqual((s.sequences, s.pages_used, s.tokens), (1, 0, 0))
        with self.assertRaises(kvbits.NotFound) as cm:
            self.cache.length(a)
        self.assertEqual(cm.exception.function, "kvb_cache_seq_length")
        self.assertIn(f"id {a}", cm.exception.message)
        with self.assertRaises(kvbits.NotFound):
            self.cache.remove_sequence(a)
        c = self.cache.add_sequence()
        self.assertEqual(c, a)  # ids are small integers, reused after removal
        self.assertEqual(self.cache.length(c), 0)
        self.assertEqual(self.cache.length(b), 0)

    def test_fork_shares_pages(self):
        a = self.cache.add_sequence()
        for layer in range(2):
            self.cache.append(layer, a, 40, *self.kv(40))
        used = self.cache.stats().pages_used
        self.assertEqual(used, 3)
        f = self.cache.fork(a, 32)  # two whole pages: shared, nothing copied
        self.assertEqual([self.cache.length(f, layer) for layer in range(2)], [32, 32])
        self.assertEqual(self.cache.stats().pages_used, used)
        for layer in range(2):
            ka, va = self.cache.read(a, layer, 0, 32)
            kf, vf = self.cache.read(f, layer)
            np.testing.assert_array_equal(kf, ka)
            np.testing.assert_array_equal(vf, va)
        before = self.cache.read(a, 0)
        k, v = self.kv(5)
        self.cache.append(0, f, 5, k, v)
        after = self.cache.read(a, 0)
        np.testing.assert_array_equal(after[0], before[0])  # the source never sees the fork's tokens
        self.assertEqual((self.cache.length(a), self.cache.length(f)), (40, 37))
        with self.assertRaises(kvbits.InvalidArgument) as cm:
            self.cache.fork(a, 41)
        self.assertIn("41", cm.exception.message)
        with self.assertRaises(kvbits.NotFound):
            self.cache.fork(99, 0)

    def test_read_ranges(self):
        a = self.cache.add_sequence()
        self.cache.append(0, a, 10, *self.kv(10))
        k_all, v_all = self.cache.read(a, 0)
        self.assertEqual(k_all.shape, (10, H, D))
        k_mid, v_none = self.cache.read(a, 0, 3, 4, values=False)
        self.assertIsNone(v_none)
        np.testing.assert_array_equal(k_mid, k_all[3:7])
        k_none, v_tail = self.cache.read(a, 0, 6, keys=False)
        self.assertIsNone(k_none)
        np.testing.assert_array_equal(v_tail, v_all[6:])
        with self.assertRaises(kvbits.InvalidArgument) as cm:
            self.cache.read(a, 0, 8, 5)  # past the end
        self.assertEqual(cm.exception.function, "kvb_cache_read")
        with self.assertRaises(kvbits.InvalidArgument):
            self.cache.read(a, 0, keys=False, values=False)


class TestReadBackAccuracy(CacheCase):
    def error_at(self, **options):
        """Relative L2 error of K and V read back from a cache of a plan built with `options`."""
        with support.calibrate(self.ctx, **options) as plan, kvbits.Cache(self.ctx, plan, max_pages=8,
                                                                          page_size=16) as cache:
            a = cache.add_sequence()
            k, v = self.kv(48)
            cache.append(0, a, 48, k, v)
            kr, vr = cache.read(a, 0)
            return (np.linalg.norm(kr - k) / np.linalg.norm(k), np.linalg.norm(vr - v) / np.linalg.norm(v))

    def test_eight_bit_is_close(self):
        k8, v8 = self.error_at(method="uniform_tq_mse", k_avg_bits=8, k_min_bits=8, k_max_bits=8, v_bits=8)
        self.assertLess(k8, 0.01)
        self.assertLess(v8, 0.01)
        k3, v3 = self.error_at()
        # 3 bits: Lloyd-Max on a Gaussian leaves ~18% relative error; 5 bits more is ~30x less.
        self.assertTrue(0.05 < k3 < 0.35 and 0.05 < v3 < 0.35, (k3, v3))
        self.assertGreater(k3, 10 * k8)
        self.assertGreater(v3, 10 * v8)

    def test_fp16_sink_and_window_are_exact(self):
        with kvbits.Cache(self.ctx, self.plan, max_pages=8, page_size=16, sink_tokens=2, window_tokens=3) as cache:
            a = cache.add_sequence()
            k, v = self.kv(30)
            cache.append(0, a, 30, k, v)
            kr, vr = cache.read(a, 0)
            exact = np.r_[0:2, 27:30]
            np.testing.assert_array_equal(kr[exact], k[exact].astype(np.float16).astype(np.float32))
            np.testing.assert_array_equal(vr[exact], v[exact].astype(np.float16).astype(np.float32))
            packed = np.r_[2:27]
            self.assertGreater(np.abs(kr[packed] - k[packed]).max(), 1e-3)
            self.assertGreater(cache.stats().fp16_region_bytes, 0)

    def test_input_dtypes_agree(self):
        """f16 and bf16 inputs holding the same values as an f32 input store the same codes."""
        k, v = self.kv(16)
        k, v = kvbits.from_bf16(kvbits.to_bf16(k)), kvbits.from_bf16(kvbits.to_bf16(v))  # exact in bf16
        k16, v16 = k.astype(np.float16), v.astype(np.float16)
        k, v = k16.astype(np.float32), v16.astype(np.float32)  # and in f16
        seqs = [self.cache.add_sequence() for _ in range(3)]
        self.cache.append(0, seqs[0], 16, k, v)
        self.cache.append(0, seqs[1], 16, k16, v16)
        self.cache.append(0, seqs[2], 16, kvbits.to_bf16(k), kvbits.to_bf16(v), dtype="bf16")
        first = self.cache.read(seqs[0], 0)
        for s in seqs[1:]:
            again = self.cache.read(s, 0)
            np.testing.assert_array_equal(again[0], first[0])
            np.testing.assert_array_equal(again[1], first[1])


class TestBf16Helpers(unittest.TestCase):
    def test_round_trip_and_rounding(self):
        x = np.array([1.0, -2.5, 3.14159265, 1e-30, np.inf, -np.inf, 65504.0, 1.00390625], np.float32)
        bits = kvbits.to_bf16(x)
        self.assertEqual(bits.dtype, np.uint16)
        self.assertEqual(list(bits[:2]), [0x3F80, 0xC020])
        self.assertEqual(bits[2], 0x4049)  # 3.14159 -> 3.140625 (nearest)
        self.assertEqual(bits[7], 0x3F80)  # 1 + 2^-8 is a tie: rounds to even (1.0)
        back = kvbits.from_bf16(bits)
        self.assertTrue(np.isinf(back[4]) and np.isinf(back[5]))
        self.assertTrue(np.isnan(kvbits.from_bf16(kvbits.to_bf16(np.array([np.nan], np.float32))))[0])
        self.assertLess(abs(back[2] - 3.14159265), 2**-7 * 4)


if __name__ == "__main__":
    unittest.main()
