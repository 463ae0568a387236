"""Loading the library, versions, status names, exception classes and the ctypes struct layouts."""
import ctypes as C
import os
import shutil
import subprocess
import sys
import unittest

import numpy as np

import kvbits
from kvbits import _library, _structs as S, errors

import support

PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(kvbits.__file__)))


def run_python(code, **env_changes):
    """Runs `code` in a fresh interpreter with the environment changed; returns (rc, output)."""
    env = dict(os.environ)
    for key, value in env_changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    env["PYTHONPATH"] = PACKAGE_DIR + os.pathsep + env.get("PYTHONPATH", "")
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout + p.stderr


class TestLibrary(unittest.TestCase):
    def test_version(self):
        self.assertEqual(kvbits.library_version(), "0.1.0")
        self.assertEqual(kvbits.library_version_number(), 100)
        self.assertTrue(os.path.exists(kvbits.library_path()) or "/" not in kvbits.library_path())

    def test_status_strings_match_the_library(self):
        for status, name in errors.STATUS_NAMES.items():
            self.assertEqual(kvbits.status_string(status), name)
        self.assertEqual(kvbits.status_string(99), "unknown_status")
        self.assertEqual(kvbits.status_string(-1), "unknown_status")

    def test_exception_classes(self):
        expected = {1: kvbits.InvalidArgument, 2: kvbits.NullPointer, 3: kvbits.ShapeMismatch,
                    4: kvbits.Unsupported, 5: kvbits.CorruptData, 6: kvbits.VersionUnsupported,
                    7: kvbits.IOFailure, 8: kvbits.OutOfMemory, 9: kvbits.CapacityExhausted,
                    10: kvbits.NotFound, 11: kvbits.InternalError, 12: kvbits.DeviceError}
        for status, cls in expected.items():
            e = errors.error_for_status(status, "the message", "kvb_x")
            self.assertIs(type(e), cls)
            self.assertIsInstance(e, kvbits.Error)
            self.assertEqual((e.status, e.message, e.function), (status, "the message", "kvb_x"))
            self.assertEqual(str(e), f"kvb_x: {kvbits.status_string(status)}: the message")
        unknown = errors.error_for_status(77, "m")
        self.assertIs(type(unknown), kvbits.Error)
        self.assertEqual(unknown.status_name, "unknown_status")

    def test_error_carries_the_library_message(self):
        with self.assertRaises(kvbits.InvalidArgument) as cm:
            kvbits.Context("cpu", n_threads=5000)
        self.assertEqual(cm.exception.function, "kvb_context_create")
        self.assertEqual(cm.exception.message, "kvb_context_params.n_threads must be at most 1024, got 5000")

    def test_explicit_library_path_missing(self):
        rc, out = run_python("import kvbits\ntry:\n    kvbits.library_version()\nexcept kvbits.LibraryNotFound as e:"
                             "\n    print('NOT FOUND', e)", KVBITS_LIBRARY="/nonexistent/libkvbits.so")
        self.assertEqual(rc, 0, out)
        self.assertIn("NOT FOUND libkvbits not found; tried: /nonexistent/libkvbits.so (KVBITS_LIBRARY: no such file)",
                      out)

    def test_explicit_library_folder(self):
        folder = os.path.dirname(os.path.abspath(kvbits.library_path()))
        rc, out = run_python("import kvbits; print(kvbits.library_version(), kvbits.library_path())",
                             KVBITS_LIBRARY=folder)
        self.assertEqual(rc, 0, out)
        self.assertEqual(out.split()[0], "0.1.0")
        self.assertTrue(out.split()[1].startswith(folder))

    @unittest.skipUnless(shutil.which("pkg-config") and
                         subprocess.run(["pkg-config", "--exists", "kvbits"]).returncode == 0,
                         "pkg-config does not know kvbits here")
    def test_found_through_pkg_config(self):
        libdir = subprocess.run(["pkg-config", "--variable=libdir", "kvbits"], capture_output=True,
                                text=True).stdout.strip()
        rc, out = run_python("import kvbits; print(kvbits.library_path())", KVBITS_LIBRARY=None)
        self.assertEqual(rc, 0, out)
        self.assertEqual(os.path.dirname(out.strip()), libdir)

    def test_import_does_not_need_the_library(self):
        rc, out = run_python("import kvbits; print(kvbits.DType.BF16.value)", KVBITS_LIBRARY="/nonexistent/x.so")
        self.assertEqual((rc, out.strip()), (0, "2"))


class TestStructLayouts(unittest.TestCase):
    """Each ctypes mirror has the C struct's size and field offsets (checked through the library)."""

    def defaults_into(self, struct_type, fn_name):
        buf = (C.c_uint8 * 1024)(*([0xAB] * 1024))
        fn = getattr(_library.lib(), fn_name)
        saved = fn.argtypes
        fn.argtypes = [C.c_void_p]
        try:
            fn(buf)
        finally:
            fn.argtypes = saved
        raw = bytes(buf)
        c_size = int.from_bytes(raw[:4], "little")
        self.assertEqual(c_size, C.sizeof(struct_type), f"{struct_type.__name__} size")
        return struct_type.from_buffer_copy(raw[:c_size])

    def test_input_structs(self):
        e = self.defaults_into(S.KvbError, "kvb_error_init")
        self.assertEqual((e.status, e.message), (0, b""))
        m = self.defaults_into(S.ModelShapeStruct, "kvb_model_shape_default")
        self.assertEqual((m.rope_layout, m.rope_theta, m.n_layers, m.reserved), (0, 10000.0, 0, 0))
        c = self.defaults_into(S.ContextParams, "kvb_context_params_default")
        self.assertEqual((c.backend, c.device, c.n_threads, list(c.reserved)), (2, 0, 0, [0] * 8))
        o = self.defaults_into(S.PlanOptionsStruct, "kvb_plan_options_default")
        self.assertEqual((o.method, o.k_avg_bits, o.k_min_bits, o.k_max_bits, o.v_bits, o.score, o.codebooks,
                          o.rotation_seed, o.n_fp16_layers, list(o.reserved)), (0, 3.0, 1, 8, 3, 1, 0, 42, 0, [0] * 8))
        self.assertFalse(o.fp16_layers or o.corpus or o.date or o.model_fingerprint_hex)
        p = self.defaults_into(S.CacheParams, "kvb_cache_params_default")
        self.assertEqual((p.page_size, p.max_pages, p.sink_tokens, p.window_tokens, p.max_sequences,
                          p.kv_head_begin, p.kv_head_end, list(p.reserved)), (64, 0, -1, -1, 1024, 0, 0, [0] * 5))
        self.assertFalse(p.model)
        a = self.defaults_into(S.AttentionParams, "kvb_attention_params_default")
        self.assertEqual((a.scale, a.precision, list(a.reserved)), (0.0, 0, [0] * 5))

    def output_struct(self, struct_type, fn_name, handle):
        """Asks for 16 bytes more than the mirror: the library zeroes what it does not know, so
        those bytes read zero only if the C struct ends where the mirror does."""
        size = C.sizeof(struct_type)
        buf = (C.c_uint8 * (size + 16))(*([0xAB] * (size + 16)))
        C.c_uint32.from_buffer(buf).value = size + 16
        fn = getattr(_library.lib(), fn_name)
        saved = fn.argtypes
        fn.argtypes = [C.c_void_p, C.c_void_p, C.c_void_p]
        try:
            self.assertEqual(fn(handle, buf, None), 0)
        finally:
            fn.argtypes = saved
        self.assertEqual(bytes(buf)[size:], bytes(16))
        return struct_type.from_buffer_copy(bytes(buf)[:size])

    def test_output_structs(self):
        with kvbits.Context("cpu", n_threads=1) as ctx, support.calibrate(ctx, n_tokens=40) as plan, \
                kvbits.Cache(ctx, plan, max_pages=8, page_size=16) as cache:
            info = self.output_struct(S.PlanInfoStruct, "kvb_plan_get_info", plan._handle())
            self.assertEqual((info.n_layers, info.n_q_heads, info.n_kv_heads, info.head_dim, info.rotary_dim),
                             (2, 8, 4, 32, 32))
            self.assertEqual((info.k_avg_bits, info.v_bits, info.rope_theta), (3.0, 3, 10000.0))
            self.assertEqual(info.calib_tokens, plan.info().calib_tokens)
            self.assertGreater(info.calib_tokens, 0)  # the last field: nonzero, so the end is where it should be
            seq = cache.add_sequence()
            k = np.ones((5, 4, 32), np.float32)
            cache.append(0, seq, 5, k, k)
            stats = self.output_struct(S.CacheStatsStruct, "kvb_cache_get_stats", cache._handle())
            self.assertEqual((stats.page_size, stats.pages_total, stats.sequences, stats.tokens), (16, 8, 1, 5))


if __name__ == "__main__":
    unittest.main()
