"""Decode and extend attention against an fp64 numpy softmax over the read-back K/V."""
import unittest

import numpy as np

import kvbits

import support

Q, H, D = support.SHAPE.n_q_heads, support.SHAPE.n_kv_heads, support.SHAPE.head_dim
TOL = 1e-5  # relative: max |kvbits - numpy| / max |numpy|


class TestAttention(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.ctx = kvbits.Context("cpu", n_threads=2)
        cls.plan = support.calibrate(cls.ctx)

    @classmethod
    def tearDownClass(cls):
        cls.plan.close()
        cls.ctx.close()

    def setUp(self):
        self.rng = np.random.default_rng(5)
        self.cache = kvbits.Cache(self.ctx, self.plan, max_pages=32, page_size=16)
        self.seqs = [self.cache.add_sequence(), self.cache.add_sequence()]
        self.lengths = [37, 9]
        for layer in range(2):
            n = sum(self.lengths)
            self.cache.append(layer, self.seqs, self.lengths, support.activations(self.rng, n, H, D),
                              support.activations(self.rng, n, H, D))

    def tearDown(self):
        self.cache.close()

    def queries(self, rows):
        return support.activations(self.rng, rows, Q, D)

    def check_decode(self, q, q_float, layer=1, scale=None, dtype=None):
        out, lse = self.cache.decode(layer, self.seqs, q, scale=scale, dtype=dtype)
        self.assertEqual((out.shape, lse.shape, out.dtype, lse.dtype), ((2, Q, D), (2, Q), np.float32, np.float32))
        for i, seq in enumerate(self.seqs):
            k, v = self.cache.read(seq, layer)
            want_out, want_lse = support.attention(q_float[i], k, v, scale)
            self.assertLess(support.relative_error(out[i], want_out), TOL)
            self.assertLess(support.relative_error(lse[i], want_lse), TOL)
        return out, lse

    def test_decode_f32(self):
        q = self.queries(2)
        out, lse = self.check_decode(q, q)
        # The answer depends on the data: another layer holds other keys.
        other, _ = self.cache.decode(0, self.seqs, q)
        self.assertGreater(support.relative_error(other, out), 0.01)

    def test_decode_scale(self):
        q = self.queries(2)
        self.check_decode(q, q, scale=0.05)
        default, _ = self.cache.decode(1, self.seqs, q)
        explicit, _ = self.cache.decode(1, self.seqs, q, scale=1 / np.sqrt(D))
        np.testing.assert_allclose(explicit, default, rtol=1e-6, atol=1e-7)
        with self.assertRaises(kvbits.InvalidArgument) as cm:
            self.cache.decode(1, self.seqs, q, scale=-1.0)
        self.assertIn("scale", cm.exception.message)

    def test_decode_precision(self):
        # The CPU backend computes in fp32 at either precision: the same bytes.
        q = self.queries(2)
        fp16, lse16 = self.cache.decode(1, self.seqs, q, precision="fp16")
        fp32, lse32 = self.cache.decode(1, self.seqs, q, precision="fp32")
        np.testing.assert_array_equal(fp16, fp32)
        np.testing.assert_array_equal(lse16, lse32)
        with self.assertRaises(kvbits.InvalidArgument) as cm:
            self.cache.decode(1, self.seqs, q, precision="fp8")
        self.assertIn("precision", cm.exception.message)

    def test_decode_f16_and_bf16_queries(self):
        q = self.queries(2)
        q16 = q.astype(np.float16)
        self.check_decode(q16, q16.astype(np.float32))
        qb = kvbits.to_bf16(q)
        self.check_decode(qb, kvbits.from_bf16(qb), dtype="bf16")
        with self.assertRaises(kvbits.InvalidArgument):
            self.cache.decode(1, self.seqs, qb)  # uint16 without dtype='bf16'

    def test_decode_same_sequence_twice(self):
        q = self.queries(1)
        out, lse = self.cache.decode(1, [self.seqs[0], self.seqs[0]], np.concatenate([q, q]))
        np.testing.assert_array_equal(out[0], out[1])
        np.testing.assert_array_equal(lse[0], lse[1])

    def test_decode_into_given_buffers(self):
        q = self.queries(2)
        out, lse = np.full((2, Q, D), 7, np.float32), np.full((2, Q), 7, np.float32)
        got = self.cache.decode(1, self.seqs, q, out=out, lse=lse)
        self.assertIs(got[0], out)
        self.assertIs(got[1], lse)
        want, want_lse = self.cache.decode(1, self.seqs, q)
        np.testing.assert_array_equal(out, want)
        np.testing.assert_array_equal(lse, want_lse)
        with self.assertRaises(kvbits.ShapeMismatch):
            self.cache.decode(1, self.seqs, q, out=np.empty((2, Q, D + 1), np.float32))
        with self.assertRaises(kvbits.InvalidArgument):
            self.cache.decode(1, self.seqs, q, out=np.empty((2, Q, D), np.float64))

    def test_extend_causal(self):
        q_len = [3, 2]
        q = self.queries(sum(q_len))
        out, lse = self.cache.extend(1, self.seqs, q_len, q)
        self.assertEqual((out.shape, lse.shape), ((5, Q, D), (5, Q)))
        row = 0
        for seq, n_total, n_q in zip(self.seqs, self.lengths, q_len):
            k, v = self.cache.read(seq, 1)
            for i in range(n_q):
                visible = n_total - n_q + i + 1  # the query at position p sees tokens [0, p]
                want_out, want_lse = support.attention(q[row], k[:visible], v[:visible])
                self.assertLess(support.relative_error(out[row], want_out), TOL)
                self.assertLess(support.relative_error(lse[row], want_lse), TOL)
                row += 1
        # Causality is real: the first query of a sequence differs from attending to everything.
        full_out, _ = support.attention(q[0], *self.cache.read(self.seqs[0], 1))
        self.assertGreater(support.relative_error(out[0], full_out), 1e-3)

    def test_extend_of_one_is_decode(self):
        q = self.queries(2)
        ext, ext_lse = self.cache.extend(1, self.seqs, [1, 1], q)
        dec, dec_lse = self.cache.decode(1, self.seqs, q)
        np.testing.assert_allclose(ext, dec, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(ext_lse, dec_lse, rtol=1e-6)

    def test_extend_zero_entry(self):
        q = self.queries(2)
        out, _ = self.cache.extend(1, self.seqs, [0, 2], q)
        k, v = self.cache.read(self.seqs[1], 1)
        want, _ = support.attention(q[1], k, v)
        self.assertLess(support.relative_error(out[1], want), TOL)

    def test_extend_longer_than_sequence(self):
        with self.assertRaises(kvbits.InvalidArgument) as cm:
            self.cache.extend(1, self.seqs, [3, 10], self.queries(13))
        self.assertIn("fewer than its 10 queries", cm.exception.message)


if __name__ == "__main__":
    unittest.main()
