"""Bad input raises the status's exception with the library's message and changes nothing."""
import unittest

import numpy as np

import kvbits

import support

Q, H, D = support.SHAPE.n_q_heads, support.SHAPE.n_kv_heads, support.SHAPE.head_dim


class TestBadInput(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.ctx = kvbits.Context("cpu", n_threads=2)
        cls.plan = support.calibrate(cls.ctx)

    @classmethod
    def tearDownClass(cls):
        cls.plan.close()
        cls.ctx.close()

    def setUp(self):
        self.rng = np.random.default_rng(9)
        self.cache = kvbits.Cache(self.ctx, self.plan, max_pages=4, page_size=16)
        self.a, self.b = self.cache.add_sequence(), self.cache.add_sequence()
        self.cache.append(0, [self.a, self.b], [20, 5], *self.kv(25))
        self.cache.append(1, [self.a], [3], *self.kv(3))

    def tearDown(self):
        self.cache.close()

    def kv(self, n):
        return support.activations(self.rng, n, H, D), support.activations(self.rng, n, H, D)

    def snapshot(self):
        lengths = {(s, layer): self.cache.length(s, layer) for s in (self.a, self.b) for layer in range(2)}
        reads = {key: self.cache.read(*key) for key, n in lengths.items() if n}
        return self.cache.stats(), lengths, reads

    def assert_unchanged(self, before):
        stats, lengths, reads = self.snapshot()
        self.assertEqual(stats, before[0])
        self.assertEqual(lengths, before[1])
        for key, (k, v) in reads.items():
            np.testing.assert_array_equal(k, before[2][key][0])
            np.testing.assert_array_equal(v, before[2][key][1])

    def expect(self, cls, fn, *args, library_message=None, contains=None, **kwargs):
        """Runs a call that must fail with `cls`; checks the message and that nothing changed."""
        before = self.snapshot()
        with self.assertRaises(cls) as cm:
            fn(*args, **kwargs)
        e = cm.exception
        self.assertIs(type(e), cls)
        if library_message is not None:
            self.assertIsNotNone(e.function, "expected a library error")
            self.assertEqual(e.message, library_message)
            self.assertEqual(self.ctx.last_error(), library_message)  # the context saw the same text
        if contains is not None:
            self.assertIn(contains, e.message)
        self.assert_unchanged(before)
        return e

    def test_append_checked_in_python(self):
        k, v = self.kv(4)
        self.expect(kvbits.ShapeMismatch, self.cache.append, 0, [self.a], [5], k, v, contains="expected (5, 4, 32)")
        self.expect(kvbits.ShapeMismatch, self.cache.append, 0, [self.a], [4], k[:, :3], v)
        self.expect(kvbits.ShapeMismatch, self.cache.append, 0, [self.a, self.b], [4], k, v)
        self.expect(kvbits.InvalidArgument, self.cache.append, 0, [self.a], [4], k.astype(np.float64), v)
        self.expect(kvbits.InvalidArgument, self.cache.append, 0, [self.a], [4], k, v.astype(np.float16))
        self.expect(kvbits.InvalidArgument, self.cache.append, 0, [self.a], [4], k, v, dtype="f16")
        self.expect(kvbits.InvalidArgument, self.cache.append, 0, [self.a], [4], k.tolist(), v)
        self.expect(kvbits.InvalidArgument, self.cache.append, -1, [self.a], [4], k, v)
        self.expect(kvbits.InvalidArgument, self.cache.append, 0, [2**64], [4], k, v)
        self.expect(kvbits.InvalidArgument, self.cache.append, 0, [self.a], [-4], k, v)
        self.expect(kvbits.InvalidArgument, self.cache.append, 0, [], [], k[:0], v[:0])
        self.expect(kvbits.InvalidArgument, self.cache.append, 0, [self.a], [4], k, v, dtype="f64")

    def test_append_checked_by_the_library(self):
        k, v = self.kv(6)
        self.expect(kvbits.NotFound, self.cache.append, 0, [self.a, 77], [3, 3], k, v,
                    library_message="sequence 77 is not in the cache (never added or removed)")
        self.expect(kvbits.InvalidArgument, self.cache.append, 0, [self.a, self.a], [3, 3], k, v,
                    library_message=f"sequence {self.a} is listed twice")
        self.expect(kvbits.InvalidArgument, self.cache.append, 2, [self.a], [6], k, v,
                    library_message="layer 2 out of range (2 layers)")
        bad = v.copy()
        bad[5, 2, 7] = np.inf  # in the second sequence's rows: the first must not be appended either
        e = self.expect(kvbits.InvalidArgument, self.cache.append, 0, [self.a, self.b], [3, 3], k, bad)
        self.assertIn("finite", e.message)

    def test_capacity(self):
        # 4 pages of 16: a holds 2 pages in layer 0, b one; 20 more tokens for b need 2 more pages.
        k, v = self.kv(40)
        e = self.expect(kvbits.CapacityExhausted, self.cache.append, 0, [self.b], [40], k, v)
        self.assertEqual(e.function, "kvb_cache_append")
        self.assertTrue(e.message)
        # A length no pool of this size could ever hold is refused up front, naming the limit.
        big = np.zeros((100, H, D), np.float32)
        self.expect(kvbits.CapacityExhausted, self.cache.append, 0, [self.b], [100], big, big,
                    contains="at most 64")
        self.cache.append(0, [self.b], [11], *self.kv(11))  # exactly what is left still fits
        self.assertEqual(self.cache.length(self.b), 16)

    def test_decode(self):
        q = support.activations(self.rng, 2, Q, D)
        out, lse = np.full((2, Q, D), 3, np.float32), np.full((2, Q), 3, np.float32)
        self.expect(kvbits.ShapeMismatch, self.cache.decode, 0, [self.a, self.b], q[:1])
        self.expect(kvbits.InvalidArgument, self.cache.decode, 0, [self.a, self.b], q.astype(np.float64))
        self.expect(kvbits.NotFound, self.cache.decode, 0, [self.a, 5], q,
                    library_message="sequence 5 is not in the cache (never added or removed)")
        self.expect(kvbits.InvalidArgument, self.cache.decode, 1, [self.a, self.b], q,
                    contains="holds 0 tokens in layer 1")
        nan_q = q.copy()
        nan_q[1, 3, 0] = np.nan
        self.expect(kvbits.InvalidArgument, self.cache.decode, 0, [self.a, self.b], nan_q, out=out, lse=lse)
        np.testing.assert_array_equal(out, 3)  # outputs are not written on failure
        np.testing.assert_array_equal(lse, 3)

    def test_extend(self):
        q = support.activations(self.rng, 4, Q, D)
        self.expect(kvbits.ShapeMismatch, self.cache.extend, 0, [self.a, self.b], [2], q)
        self.expect(kvbits.ShapeMismatch, self.cache.extend, 0, [self.a, self.b], [2, 1], q)
        self.expect(kvbits.InvalidArgument, self.cache.extend, 0, [self.a, self.b], [-1, 5], q)
        self.expect(kvbits.InvalidArgument, self.cache.extend, 1, [self.a, self.b], [2, 2], q,
                    contains="fewer than its 2 queries")

    def test_removed_sequence(self):
        self.cache.remove_sequence(self.b)
        q = support.activations(self.rng, 1, Q, D)
        with self.assertRaises(kvbits.NotFound) as cm:
            self.cache.decode(0, [self.b], q)
        self.assertEqual(cm.exception.message, f"sequence {self.b} is not in the cache (never added or removed)")
        with self.assertRaises(kvbits.NotFound):
            self.cache.read(self.b, 0)
        with self.assertRaises(kvbits.NotFound):
            self.cache.append(0, [self.b], [1], *self.kv(1))
        self.assertEqual(self.cache.stats().sequences, 1)

    def test_cache_parameters(self):
        with self.assertRaises(kvbits.InvalidArgument) as cm:
            kvbits.Cache(self.ctx, self.plan, max_pages=0)
        self.assertEqual(cm.exception.function, "kvb_cache_create")
        self.assertIn("max_pages", cm.exception.message)
        with self.assertRaises(kvbits.InvalidArgument):
            kvbits.Cache(self.ctx, self.plan, max_pages=4, page_size=0)
        with self.assertRaises(kvbits.InvalidArgument):
            kvbits.Cache(self.ctx, self.plan, max_pages=4, sink_tokens=-2)
        with self.assertRaises(kvbits.ShapeMismatch) as cm:
            kvbits.Cache(self.ctx, self.plan, max_pages=4, model=kvbits.ModelShape(2, 8, 2, 32))
        self.assertIn("kv_heads", cm.exception.message)
        with kvbits.Cache(self.ctx, self.plan, max_pages=4, model=kvbits.ModelShape(2, 8, 4, 32)) as ok:
            self.assertEqual(ok.stats().pages_total, 4)
        with self.assertRaises(kvbits.OutOfMemory):
            kvbits.Cache(self.ctx, self.plan, max_pages=2**32 - 1, page_size=4096)

    def test_max_sequences(self):
        with kvbits.Cache(self.ctx, self.plan, max_pages=4, max_sequences=2) as cache:
            cache.add_sequence(), cache.add_sequence()
            with self.assertRaises(kvbits.CapacityExhausted):
                cache.add_sequence()
            self.assertEqual(cache.stats().sequences, 2)


class TestClosedObjects(unittest.TestCase):
    def test_closed_cache(self):
        with kvbits.Context("cpu", n_threads=1) as ctx, support.calibrate(ctx) as plan:
            with kvbits.Cache(ctx, plan, max_pages=4) as cache:
                a = cache.add_sequence()
            self.assertTrue(cache.closed)
            k = np.zeros((1, 4, 32), np.float32)
            for call in (lambda: cache.add_sequence(), lambda: cache.length(a), lambda: cache.stats(),
                         lambda: cache.append(0, a, 1, k, k), lambda: cache.read(a, 0),
                         lambda: cache.decode(0, a, np.zeros((1, 8, 32), np.float32)),
                         lambda: cache.fork(a, 0), lambda: cache.remove_sequence(a)):
                with self.assertRaises(kvbits.NullPointer) as cm:
                    call()
                self.assertEqual(str(cm.exception), "null_pointer: this kvbits.Cache is closed")
            cache.close()  # again: a no-op

    def test_closed_plan_and_context(self):
        ctx = kvbits.Context("cpu", n_threads=1)
        plan = support.calibrate(ctx)
        cache = kvbits.Cache(ctx, plan, max_pages=4)
        plan.close()
        ctx.close()
        for call in (lambda: plan.info(), lambda: plan.to_bytes(), lambda: kvbits.Cache(ctx, plan, max_pages=4),
                     lambda: ctx.last_error(), lambda: kvbits.Calibrator(ctx, support.SHAPE)):
            with self.assertRaises(kvbits.NullPointer):
                call()
        # The cache keeps its own references: it still works after plan and context are closed.
        a = cache.add_sequence()
        kv = np.ones((3, 4, 32), np.float32)
        cache.append(0, a, 3, kv, kv)
        out, _ = cache.decode(0, a, np.ones((1, 8, 32), np.float32))
        v = cache.read(a, 0)[1]
        # Three equal tokens: the output of query head h is the value row of its KV head h // 2.
        np.testing.assert_allclose(out[0], v[0][np.arange(8) // 2], rtol=1e-5, atol=1e-6)
        cache.close()


if __name__ == "__main__":
    unittest.main()
