//! Finds libkvbits and tells cargo how to link it. Standard library only (no crates.io).
//!
//! Order of lookup:
//! 1. `KVBITS_LIB_DIR`: the folder holding libkvbits.so (header from `KVBITS_INCLUDE_DIR`, else
//!    `KVBITS_LIB_DIR/../include`).
//! 2. `pkg-config kvbits` (the binary named by `PKG_CONFIG`, default `pkg-config`), unless
//!    `KVBITS_NO_PKG_CONFIG` is set.
//! 3. With `KVBITS_NO_PKG_CONFIG`: plain `-lkvbits`, found on the linker's default paths.
//!
//! The header folder, when known, is exported to dependants as `DEP_KVBITS_INCLUDE` and to this
//! crate's tests as `KVBITS_SYS_INCLUDE_DIR` (the layout test compiles a C probe against it).
use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    for var in [
        "KVBITS_LIB_DIR",
        "KVBITS_INCLUDE_DIR",
        "KVBITS_NO_PKG_CONFIG",
        "PKG_CONFIG",
        "PKG_CONFIG_PATH",
        "PKG_CONFIG_LIBDIR",
        "PKG_CONFIG_SYSROOT_DIR",
    ] {
        println!("cargo:rerun-if-env-changed={}", var);
    }
    println!("cargo:rerun-if-changed=build.rs");

    let include_env = env::var_os("KVBITS_INCLUDE_DIR").map(PathBuf::from);
    let mut include_dir = if let Some(lib_dir) = env::var_os("KVBITS_LIB_DIR").map(PathBuf::from) {
        println!("cargo:rustc-link-search=native={}", lib_dir.display());
        println!("cargo:rustc-link-lib=dylib=kvbits");
        println!("cargo:lib_dir={}", lib_dir.display());
        include_env.or_else(|| Some(lib_dir.join("..").join("include")))
    } else if env::var_os("KVBITS_NO_PKG_CONFIG").is_none() {
        let found = probe_pkg_config().unwrap_or_else(|why| {
            panic!(
                "kvbits-sys: could not find libkvbits through pkg-config: {}\n\
                 Install kvbits (it ships kvbits.pc) and point PKG_CONFIG_PATH at the folder of \
                 kvbits.pc, or set KVBITS_LIB_DIR to the folder of libkvbits.so, or set \
                 KVBITS_NO_PKG_CONFIG=1 to link -lkvbits from the default linker paths.",
                why
            )
        });
        include_env.or(found)
    } else {
        println!("cargo:rustc-link-lib=dylib=kvbits");
        include_env
    };

    // Inside the kvbits source tree the header is also at ../../../capi (a fallback for the
    // layout test when nothing else says where the header is).
    if include_dir.as_ref().map_or(true, |d| !d.join("kvbits.h").is_file()) {
        let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
        let in_tree = manifest.join("..").join("..").join("..").join("capi");
        if in_tree.join("kvbits.h").is_file() {
            include_dir = Some(in_tree);
        }
    }
    if let Some(dir) = include_dir.filter(|d| d.join("kvbits.h").is_file()) {
        println!("cargo:include={}", dir.display());
        println!("cargo:rustc-env=KVBITS_SYS_INCLUDE_DIR={}", dir.display());
    }
}

/// Runs `pkg-config --libs kvbits`, emits the link flags and returns the include folder
/// (`--variable=includedir`; None when pkg-config gives none).
fn probe_pkg_config() -> Result<Option<PathBuf>, String> {
    let pkg_config = env::var("PKG_CONFIG").unwrap_or_else(|_| "pkg-config".to_string());
    let libs = run(&pkg_config, &["--libs", "kvbits"])?;
    let mut linked = false;
    for flag in libs.split_whitespace() {
        if let Some(dir) = flag.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={}", dir);
            println!("cargo:lib_dir={}", dir);
        } else if let Some(lib) = flag.strip_prefix("-l") {
            println!("cargo:rustc-link-lib={}", lib);
            linked |= lib == "kvbits";
        }
    }
    if !linked {
        return Err(format!("`{} --libs kvbits` printed no -lkvbits: {:?}", pkg_config, libs.trim()));
    }
    let include = run(&pkg_config, &["--variable=includedir", "kvbits"])?;
    let include = include.trim();
    Ok(if include.is_empty() || !Path::new(include).is_dir() { None } else { Some(PathBuf::from(include)) })
}

fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program).args(args).output().map_err(|e| format!("cannot run `{}`: {}", program, e))?;
    if !out.status.success() {
        return Err(format!(
            "`{} {}` failed ({}): {}",
            program,
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    String::from_utf8(out.stdout).map_err(|_| format!("`{}` printed non-UTF-8 output", program))
}
