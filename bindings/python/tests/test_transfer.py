"""Head-range caches (tensor parallelism) and sequence export/import through the binding."""
import unittest

import numpy as np

import kvbits

import support

L, HQ, H, D = support.SHAPE.n_layers, support.SHAPE.n_q_heads, support.SHAPE.n_kv_heads, support.SHAPE.head_dim
G = HQ // H


class TransferCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.ctx = kvbits.Context("cpu", n_threads=2)
        cls.plan = support.calibrate(cls.ctx, sink_tokens=2, window_tokens=3)

    @classmethod
    def tearDownClass(cls):
        cls.plan.close()
        cls.ctx.close()

    def filled(self, kv_heads=None, seqs=2, seed=3):
        """A cache (or a head range of one) with `seqs` sequences of 21, 8, ... tokens per layer;
        the full-head K/V that went in are returned too."""
        cache = kvbits.Cache(self.ctx, self.plan, max_pages=32, page_size=4, kv_heads=kv_heads)
        rng = np.random.default_rng(seed)
        ids = [cache.add_sequence() for _ in range(seqs)]
        counts = [21 - 13 * i % 21 for i in range(seqs)]
        b, e = cache.kv_heads
        for layer in range(L):
            k = support.activations(rng, sum(counts), H, D)
            v = support.activations(rng, sum(counts), H, D)
            cache.append(layer, ids, counts, k[:, b:e], v[:, b:e])
        return cache, ids


class TestHeadRanges(TransferCase):
    def test_halves_equal_the_full_cache(self):
        full, ids = self.filled()
        q = support.activations(np.random.default_rng(9), 2, HQ, D)
        want_out, want_lse = full.decode(1, ids, q)
        self.assertEqual((full.kv_heads, full.n_kv_heads, full.n_q_heads), ((0, H), H, HQ))
        for b, e in ((0, 1), (1, 3), (2, 4)):
            with self.subTest(heads=(b, e)):
                part, _ = self.filled(kv_heads=(b, e))
                self.assertEqual((part.kv_heads, part.n_kv_heads, part.n_q_heads), ((b, e), e - b, (e - b) * G))
                out, lse = part.decode(1, ids, q[:, b * G:e * G])
                np.testing.assert_array_equal(out, want_out[:, b * G:e * G])
                np.testing.assert_array_equal(lse, want_lse[:, b * G:e * G])
                k, v = part.read(ids[0], 0)
                fk, fv = full.read(ids[0], 0)
                np.testing.assert_array_equal(k, fk[:, b:e])
                np.testing.assert_array_equal(v, fv[:, b:e])
                self.assertEqual(part.stats().pages_used, full.stats().pages_used)
                with self.assertRaises(kvbits.ShapeMismatch):  # q of every head does not fit
                    part.decode(1, ids, q)
                part.close()
        full.close()

    def test_bad_ranges(self):
        for kv_heads, text in (((0, H + 1), "exceeds the plan's 4 KV heads"), ((2, 2), "must be below"),
                               ((3, 1), "must be below")):
            with self.subTest(kv_heads=kv_heads), self.assertRaisesRegex(kvbits.InvalidArgument, text):
                kvbits.Cache(self.ctx, self.plan, max_pages=4, kv_heads=kv_heads)
        with self.assertRaisesRegex(kvbits.InvalidArgument, "pair"):
            kvbits.Cache(self.ctx, self.plan, max_pages=4, kv_heads=3)


class TestTransfer(TransferCase):
    def test_round_trip_is_bit_exact(self):
        src, ids = self.filled()
        dst = kvbits.Cache(self.ctx, self.plan, max_pages=64, page_size=4)
        q = support.activations(np.random.default_rng(4), 1, HQ, D)
        for seq in ids:
            data = src.export_sequence(seq)
            self.assertIsInstance(data, bytes)
            self.assertEqual(len(data), src.export_size(seq))
            self.assertEqual(data[:6], b"KVBSEQ")
            new = dst.import_sequence(data)
            self.assertEqual(dst.export_sequence(new), data)
            for layer in range(L):
                for a, b in zip(dst.read(new, layer), src.read(seq, layer)):
                    np.testing.assert_array_equal(a, b)
                for a, b in zip(dst.decode(layer, [new], q), src.decode(layer, [seq], q)):
                    np.testing.assert_array_equal(a, b)
        # bytearray and memoryview work as well as bytes.
        self.assertEqual(dst.import_sequence(bytearray(data)), 2)
        self.assertEqual(dst.import_sequence(memoryview(data)), 3)
        src.close()
        dst.close()

    def test_head_range_round_trip_and_mismatch(self):
        part, ids = self.filled(kv_heads=(1, 3))
        data = part.export_sequence(ids[0])
        twin = kvbits.Cache(self.ctx, self.plan, max_pages=32, page_size=4, kv_heads=(1, 3))
        new = twin.import_sequence(data)
        for a, b in zip(twin.read(new, 1), part.read(ids[0], 1)):
            np.testing.assert_array_equal(a, b)
        other = kvbits.Cache(self.ctx, self.plan, max_pages=32, page_size=4, kv_heads=(0, 2))
        with self.assertRaisesRegex(kvbits.ShapeMismatch, r"KV heads \[1, 3\) of 4, this cache KV heads \[0, 2\)"):
            other.import_sequence(data)
        for c in (part, twin, other):
            c.close()

    def test_rejections_leave_the_cache_unchanged(self):
        src, ids = self.filled()
        data = src.export_sequence(ids[0])
        dst, _ = self.filled(seqs=1, seed=8)
        before = (dst.stats(), dst.export_sequence(0))
        bad = bytearray(data)
        bad[len(bad) // 2] ^= 1
        cases = [
            (kvbits.CorruptData, "payload checksum mismatch", bytes(bad)),
            (kvbits.CorruptData, "truncated", data[:10]),
            (kvbits.CorruptData, "truncated", data[:-1]),
            (kvbits.CorruptData, "bad magic", b"X" + data[1:]),
            (kvbits.VersionUnsupported, "version 9", data[:8] + b"\x09" + data[9:]),
            (kvbits.CorruptData, "truncated", b""),
        ]
        for cls, text, payload in cases:
            with self.subTest(text=text), self.assertRaisesRegex(cls, text):
                dst.import_sequence(payload)
            self.assertEqual((dst.stats(), dst.export_sequence(0)), before)
        small = kvbits.Cache(self.ctx, self.plan, max_pages=2, page_size=4)
        with self.assertRaises(kvbits.CapacityExhausted):
            small.import_sequence(data)
        with self.assertRaises(kvbits.NotFound):
            src.export_sequence(99)
        with self.assertRaises(kvbits.InvalidArgument):
            src.import_sequence(12)
        for c in (src, dst, small):
            c.close()

    def test_raw_pointers(self):
        src, ids = self.filled()
        n = src.export_size(ids[1])
        buf = np.zeros(n + 16, np.uint8)
        self.assertEqual(src.export_ptr(ids[1], buf.ctypes.data, buf.size), n)
        self.assertEqual(buf[:n].tobytes(), src.export_sequence(ids[1]))
        with self.assertRaisesRegex(kvbits.InvalidArgument, "too small"):
            src.export_ptr(ids[1], buf.ctypes.data, n - 1)
        with self.assertRaises(kvbits.NullPointer):
            src.export_ptr(ids[1], None, n)
        new = src.import_ptr(buf.ctypes.data, n)
        self.assertEqual(src.export_sequence(new), buf[:n].tobytes())
        src.close()


if __name__ == "__main__":
    unittest.main()
