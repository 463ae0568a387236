"""The raw-address calls (for torch / CUDA tensors) give what the numpy calls give."""
import unittest

import numpy as np

import kvbits

import support

Q, H, D = support.SHAPE.n_q_heads, support.SHAPE.n_kv_heads, support.SHAPE.head_dim


class TestRawPointers(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.ctx = kvbits.Context("cpu", n_threads=2)
        cls.plan = support.calibrate(cls.ctx)

    @classmethod
    def tearDownClass(cls):
        cls.plan.close()
        cls.ctx.close()

    def test_same_results_as_numpy_calls(self):
        rng = np.random.default_rng(2)
        k, v = support.activations(rng, 30, H, D), support.activations(rng, 30, H, D)
        q = support.activations(rng, 5, Q, D).astype(np.float16)
        with kvbits.Cache(self.ctx, self.plan, max_pages=8, page_size=16) as by_array, \
                kvbits.Cache(self.ctx, self.plan, max_pages=8, page_size=16) as by_pointer:
            seqs = [by_array.add_sequence(), by_array.add_sequence()]
            self.assertEqual(seqs, [by_pointer.add_sequence(), by_pointer.add_sequence()])
            by_array.append(0, seqs, [18, 12], k, v)
            by_pointer.append_ptr(0, seqs, [18, 12], k.ctypes.data, v.ctypes.data, kvbits.DType.F32, stream=0)
            for s in seqs:
                np.testing.assert_array_equal(by_pointer.read(s, 0)[0], by_array.read(s, 0)[0])
                np.testing.assert_array_equal(by_pointer.read(s, 0)[1], by_array.read(s, 0)[1])

            want_out, want_lse = by_array.decode(0, seqs, q[:2])
            out, lse = np.empty((2, Q, D), np.float32), np.empty((2, Q), np.float32)
            by_pointer.decode_ptr(0, seqs, q.ctypes.data, "f16", out.ctypes.data, lse.ctypes.data)
            np.testing.assert_array_equal(out, want_out)
            np.testing.assert_array_equal(lse, want_lse)
            out_only = np.empty((2, Q, D), np.float32)
            by_pointer.decode_ptr(0, seqs, q.ctypes.data, "f16", out_only.ctypes.data)  # lse is optional
            np.testing.assert_array_equal(out_only, want_out)

            want_out, want_lse = by_array.extend(0, seqs, [3, 2], q, scale=0.1)
            out, lse = np.empty((5, Q, D), np.float32), np.empty((5, Q), np.float32)
            by_pointer.extend_ptr(0, seqs, [3, 2], q.ctypes.data, kvbits.DType.F16, out.ctypes.data,
                                  lse.ctypes.data, scale=0.1)
            np.testing.assert_array_equal(out, want_out)
            np.testing.assert_array_equal(lse, want_lse)

    def test_null_and_bad_pointers(self):
        with kvbits.Cache(self.ctx, self.plan, max_pages=8) as cache:
            s = cache.add_sequence()
            k = np.zeros((1, H, D), np.float32)
            with self.assertRaises(kvbits.NullPointer) as cm:
                cache.append_ptr(0, s, 1, 0, k.ctypes.data, "f32")
            self.assertEqual(cm.exception.message, "k must not be NULL")
            with self.assertRaises(kvbits.NullPointer) as cm:
                cache.append_ptr(0, s, 1, k.ctypes.data, None, "f32")
            self.assertEqual(cm.exception.message, "v must not be NULL")
            with self.assertRaises(kvbits.InvalidArgument):
                cache.append_ptr(0, s, 1, -8, k.ctypes.data, "f32")
            with self.assertRaises(kvbits.InvalidArgument):
                cache.append_ptr(0, s, 1, k.ctypes.data, k.ctypes.data, "f8")
            cache.append_ptr(0, s, 1, k.ctypes.data, k.ctypes.data, 0)
            with self.assertRaises(kvbits.NullPointer) as cm:
                cache.decode_ptr(0, s, np.zeros((1, Q, D), np.float32).ctypes.data, "f32", 0)
            self.assertEqual(cm.exception.message, "out must not be NULL")
            self.assertEqual(cache.length(s), 1)


if __name__ == "__main__":
    unittest.main()
