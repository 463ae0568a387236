//! Proves that src/lib.rs matches kvbits.h: the header is parsed here, a C probe generated from
//! it is compiled with the system C compiler (`$CC`, default `cc`) and prints the size,
//! alignment and field offsets of every struct, the value of every constant and the size and
//! signedness of every typedef; Rust computes the same numbers for its declarations (offsets
//! through `addr_of!` on a `MaybeUninit`) and both lists must be equal. Function signatures and
//! struct field types are compared as text after mapping the C types to Rust.
mod parse;
use kvbits_sys::*;
use parse::*;
use std::collections::BTreeSet;
use std::mem::{align_of, size_of, MaybeUninit};
use std::process::Command;
use std::ptr::addr_of;

// ---- the C probe -------------------------------------------------------------------------

fn probe_source(h: &Header) -> String {
    let mut s = String::from(
        "#include <stdio.h>\n#include <stddef.h>\n#include \"kvbits.h\"\n\
         #define PROBE_ALIGN(T) offsetof(struct { char c; T t; }, t)\nint main(void) {\n",
    );
    for (name, fields) in &h.structs {
        s += &format!("  printf(\"struct {n} %zu %zu\\n\", sizeof({n}), (size_t)PROBE_ALIGN({n}));\n", n = name);
        for f in fields {
            s += &format!(
                "  printf(\"field {n}.{f} %zu %zu\\n\", offsetof({n}, {f}), sizeof((({n}*)0)->{f}));\n",
                n = name,
                f = f.name
            );
        }
    }
    for c in h.defines.iter().chain(&h.enum_constants) {
        s += &format!("  printf(\"const {c} %llu\\n\", (unsigned long long)({c}));\n", c = c);
    }
    for t in h.scalar_typedefs.iter().map(|(n, _)| n).chain(&h.enum_typedefs) {
        s += &format!("  printf(\"typedef {t} %zu %d\\n\", sizeof({t}), (int)(({t})-1 < ({t})0));\n", t = t);
    }
    s + "  return 0;\n}\n"
}

fn run_probe(h: &Header) -> BTreeSet<String> {
    let header = header_path();
    let dir = std::env::temp_dir().join(format!("kvbits-sys-probe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("probe.c");
    let exe = dir.join("probe");
    std::fs::write(&src, probe_source(h)).unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let built = Command::new(&cc)
        .arg("-std=c99")
        .arg("-I")
        .arg(header.parent().unwrap())
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the C compiler `{}`: {}", cc, e));
    assert!(built.status.success(), "probe did not compile:\n{}", String::from_utf8_lossy(&built.stderr));
    let out = Command::new(&exe).output().expect("run probe");
    assert!(out.status.success());
    std::fs::remove_dir_all(&dir).ok();
    String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect()
}

// ---- the same numbers from the Rust declarations ----------------------------------------------

fn pointee_size<T>(_: *const T) -> usize {
    size_of::<T>()
}

macro_rules! layout {
    ($out:ident, $t:ident { $($f:ident),* $(,)? }) => {{
        $out.insert(format!("struct {} {} {}", stringify!($t), size_of::<$t>(), align_of::<$t>()));
        let value = MaybeUninit::<$t>::uninit();
        let base = value.as_ptr();
        $(
            // addr_of! makes no reference to the uninitialised struct.
            let field = unsafe { addr_of!((*base).$f) };
            $out.insert(format!("field {}.{} {} {}", stringify!($t), stringify!($f),
                                field as usize - base as usize, pointee_size(field)));
        )*
    }};
}

macro_rules! constants {
    ($out:ident, $($c:ident),* $(,)?) => { $( $out.insert(format!("const {} {}", stringify!($c), $c as u64)); )* };
}

macro_rules! typedefs {
    ($out:ident, $($t:ident),* $(,)?) => { $(
        let zero: $t = 0;
        $out.insert(format!("typedef {} {} {}", stringify!($t), size_of::<$t>(), (zero.wrapping_sub(1) < zero) as i32));
    )* };
}

fn rust_facts() -> BTreeSet<String> {
    let mut s = BTreeSet::new();
    layout!(s, kvb_error { struct_size, status, message });
    layout!(
        s,
        kvb_model_shape {
            struct_size,
            n_layers,
            n_q_heads,
            n_kv_heads,
            head_dim,
            rotary_dim,
            rope_layout,
            reserved,
            rope_theta
        }
    );
    layout!(s, kvb_context_params { struct_size, backend, device, n_threads, reserved });
    layout!(
        s,
        kvb_plan_info {
            struct_size,
            n_layers,
            n_q_heads,
            n_kv_heads,
            head_dim,
            rotary_dim,
            rope_layout,
            rope_theta,
            method,
            k_avg_bits,
            v_bits,
            sink_tokens,
            window_tokens,
            n_fp16_layers,
            bytes_per_token_per_head,
            bytes_per_token_total,
            calib_tokens
        }
    );
    layout!(
        s,
        kvb_plan_options {
            struct_size,
            method,
            k_avg_bits,
            k_min_bits,
            k_max_bits,
            v_bits,
            score,
            codebooks,
            sink_tokens,
            window_tokens,
            n_fp16_layers,
            fp16_layers,
            rotation_seed,
            corpus,
            date,
            model_fingerprint_hex,
            reserved
        }
    );
    layout!(
        s,
        kvb_cache_params {
            struct_size,
            page_size,
            max_pages,
            sink_tokens,
            window_tokens,
            model,
            max_sequences,
            kv_head_begin,
            kv_head_end,
            reserved
        }
    );
    layout!(
        s,
        kvb_cache_stats {
            struct_size,
            page_size,
            pages_total,
            pages_used,
            pool_bytes,
            packed_bytes_used,
            fp16_region_bytes,
            sequences,
            tokens
        }
    );
    layout!(s, kvb_attention_params { struct_size, scale, precision, reserved });
    constants!(
        s,
        KVB_VERSION_MAJOR,
        KVB_VERSION_MINOR,
        KVB_VERSION_PATCH,
        KVB_VERSION_NUMBER,
        KVB_OK,
        KVB_ERR_INVALID_ARGUMENT,
        KVB_ERR_NULL_POINTER,
        KVB_ERR_SHAPE_MISMATCH,
        KVB_ERR_UNSUPPORTED,
        KVB_ERR_CORRUPT_DATA,
        KVB_ERR_VERSION_UNSUPPORTED,
        KVB_ERR_IO,
        KVB_ERR_OUT_OF_MEMORY,
        KVB_ERR_CAPACITY_EXHAUSTED,
        KVB_ERR_NOT_FOUND,
        KVB_ERR_INTERNAL,
        KVB_ERR_DEVICE,
        KVB_ERROR_MESSAGE_CAPACITY,
        KVB_DTYPE_F32,
        KVB_DTYPE_F16,
        KVB_DTYPE_BF16,
        KVB_BACKEND_CPU,
        KVB_BACKEND_CUDA,
        KVB_BACKEND_AUTO,
        KVB_ROPE_SPLIT_HALF,
        KVB_ROPE_INTERLEAVED,
        KVB_METHOD_BLOCK_GTQ,
        KVB_METHOD_UNIFORM_TQ_MSE,
        KVB_SCORE_ENERGY,
        KVB_SCORE_PRODUCT,
        KVB_CODEBOOKS_LLOYD_MAX,
        KVB_CODEBOOKS_REFERENCE,
        KVB_SEQ_NONE,
        KVB_PRECISION_FP16,
        KVB_PRECISION_FP32
    );
    typedefs!(s, kvb_status, kvb_dtype, kvb_backend, kvb_rope_layout, kvb_method, kvb_score, kvb_codebooks);
    s
}

/// Every function of the header, referenced so that the linker must resolve each one.
fn rust_function_names() -> BTreeSet<String> {
    macro_rules! names {
        ($($f:ident),* $(,)?) => { {
            let addresses: Vec<(&str, usize)> = vec![$((stringify!($f), $f as *const () as usize)),*];
            addresses.iter().map(|(n, a)| { assert_ne!(*a, 0, "{} resolved to address 0", n); n.to_string() }).collect()
        } };
    }
    names!(
        kvb_version_number,
        kvb_version_string,
        kvb_status_string,
        kvb_error_init,
        kvb_model_shape_default,
        kvb_context_params_default,
        kvb_context_create,
        kvb_context_destroy,
        kvb_context_backend,
        kvb_context_last_error,
        kvb_plan_load_file,
        kvb_plan_load_memory,
        kvb_plan_save_file,
        kvb_plan_serialize,
        kvb_plan_destroy,
        kvb_plan_get_info,
        kvb_plan_bytes_per_token,
        kvb_plan_check_shape,
        kvb_plan_check_model,
        kvb_plan_supported,
        kvb_calibrator_create,
        kvb_calibrator_destroy,
        kvb_calibrator_observe,
        kvb_plan_options_default,
        kvb_calibrator_build_plan,
        kvb_cache_params_default,
        kvb_cache_create,
        kvb_cache_destroy,
        kvb_cache_seq_add,
        kvb_cache_seq_remove,
        kvb_cache_seq_fork,
        kvb_cache_seq_length,
        kvb_cache_append,
        kvb_cache_read,
        kvb_cache_get_stats,
        kvb_cache_kv_heads,
        kvb_cache_seq_export_size,
        kvb_cache_seq_export,
        kvb_cache_seq_import,
        kvb_attention_params_default,
        kvb_attention_decode,
        kvb_attention_extend
    )
}

// ---- the tests -------------------------------------------------------------------------------

fn header() -> Header {
    let path = header_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {}", path.display(), e));
    parse_header(&text)
}

fn lib_rs() -> String {
    strip_rust_comments_and_attributes(include_str!("../src/lib.rs"))
}

fn diff(c: &BTreeSet<String>, rust: &BTreeSet<String>) -> String {
    let only_c: Vec<&String> = c.difference(rust).collect();
    let only_rust: Vec<&String> = rust.difference(c).collect();
    format!("only in the C header: {:#?}\nonly in the Rust declarations: {:#?}", only_c, only_rust)
}

#[test]
fn header_parse_finds_everything_it_should() {
    // Guards the parser itself: if it silently found nothing, every comparison would pass.
    let h = header();
    assert_eq!(h.structs.len(), 8);
    assert_eq!(h.functions.len(), 42);
    assert_eq!(h.opaque.len(), 4);
    assert_eq!(h.enum_typedefs.len(), 4);
    assert_eq!(h.scalar_typedefs.len(), 3);
    assert_eq!(h.defines.len(), 21, "{:?}", h.defines);
    assert_eq!(h.enum_constants.len(), 14);
}

#[test]
fn sizes_alignments_offsets_constants_and_typedefs_match_the_c_compiler() {
    let h = header();
    let c = run_probe(&h);
    let rust = rust_facts();
    assert!(c.len() > 100, "probe printed only {} lines", c.len());
    assert!(c == rust, "{}", diff(&c, &rust));
}

#[test]
fn every_function_has_the_header_signature() {
    let h = header();
    let expected: BTreeSet<String> = h.functions.iter().map(|(_, sig)| sig.clone()).collect();
    let actual: BTreeSet<String> = rust_signatures(&lib_rs()).into_iter().map(|(_, sig)| sig).collect();
    assert!(expected == actual, "{}", diff(&expected, &actual));
    let names: BTreeSet<String> = h.functions.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(names, rust_function_names(), "the address table must list every header function");
}

#[test]
fn every_struct_field_has_the_header_type() {
    let h = header();
    let src = lib_rs();
    for (name, fields) in &h.structs {
        let expected: Vec<(String, String)> = fields
            .iter()
            .map(|f| {
                let t = rust_type(&f.c_type);
                let t = match &f.array_len {
                    Some(n) => format!("[{};{}]", t, n),
                    None => t,
                };
                (f.name.clone(), nospace(&t))
            })
            .collect();
        assert_eq!(rust_struct_fields(&src, name), expected, "struct {}", name);
    }
}

#[test]
fn every_typedef_and_opaque_handle_is_declared() {
    let h = header();
    let src = lib_rs();
    for (name, c_type) in &h.scalar_typedefs {
        assert_eq!(rust_typedef(&src, name), Some(nospace(&rust_type(c_type))), "typedef {}", name);
    }
    for name in &h.enum_typedefs {
        assert!(rust_typedef(&src, name).is_some(), "enum typedef {} missing", name);
    }
    for name in &h.opaque {
        let fields = rust_struct_fields(&src, name);
        assert_eq!(fields.first().map(|f| f.0.as_str()), Some("_private"), "{} must be opaque", name);
    }
}
