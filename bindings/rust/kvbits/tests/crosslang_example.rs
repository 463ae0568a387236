//! examples/crosslang.rs on a fixture written here: its out.f32 / lse.f32 must be the bytes the
//! same decode gives in this process, and a broken fixture must fail with a message.
mod common;
use common::*;
use kvbits::{Cache, CacheParams};
use std::path::{Path, PathBuf};
use std::process::Command;

fn example_binary() -> PathBuf {
    // cargo test builds examples next to the test binaries: target/<profile>/examples.
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().unwrap().parent().unwrap().join("examples").join("crosslang");
    assert!(path.is_file(), "{} missing: run through `cargo test`, which builds the examples", path.display());
    path
}

fn write_f32(path: &Path, values: &[f32]) {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap();
}

fn read_bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {}", path.display(), e))
}

#[test]
fn crosslang_example_writes_the_in_process_decode_bytes() {
    let dir = std::env::temp_dir().join(format!("kvbits-rust-crosslang-{}", std::process::id()));
    let (fixture, out) = (dir.join("fixture"), dir.join("out"));
    std::fs::create_dir_all(&fixture).unwrap();
    let ctx = cpu();
    let plan = plan3(&ctx);
    plan.save_file(fixture.join("plan.kvbplan")).unwrap();
    let tokens = [5u32, 17, 9];
    let (page_size, layer) = (16u32, 1u32);
    std::fs::write(
        fixture.join("case.txt"),
        format!(
            "page_size {}\nsequences 3\ntokens 5 17 9\nn_kv_heads {}\nn_q_heads {}\nhead_dim {}\nlayer {}\n",
            page_size, SHAPE.2, SHAPE.1, SHAPE.3, layer
        ),
    )
    .unwrap();
    let mut rng = Rng::new(61);
    let k = activations(&mut rng, 31 * 2, 32);
    let v = activations(&mut rng, 31 * 2, 32);
    let q = activations(&mut rng, 3 * 4, 32);
    write_f32(&fixture.join("k.f32"), &k);
    write_f32(&fixture.join("v.f32"), &v);
    write_f32(&fixture.join("q.f32"), &q);

    let status = Command::new(example_binary()).arg(&fixture).arg(&out).status().unwrap();
    assert!(status.success());

    let mut cache =
        Cache::new(&ctx, &plan, &CacheParams { page_size, max_pages: 256, ..CacheParams::default() }).unwrap();
    let seqs: Vec<u64> = (0..3).map(|_| cache.seq_add().unwrap()).collect();
    cache.append(layer, &seqs, &tokens, &k, &v).unwrap();
    let mut want = vec![0f32; q.len()];
    let mut want_lse = vec![0f32; 3 * 4];
    cache.decode(layer, &seqs, &q, &mut want, Some(&mut want_lse), None).unwrap();
    let bytes = |x: &[f32]| x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>();
    assert_eq!(read_bytes(&out.join("out.f32")), bytes(&want));
    assert_eq!(read_bytes(&out.join("lse.f32")), bytes(&want_lse));

    // A plan of another head_dim: non-zero exit, and the library's message on stderr.
    std::fs::write(
        fixture.join("case.txt"),
        "page_size 16\nsequences 3\ntokens 5 17 9\nn_kv_heads 2\nn_q_heads 4\nhead_dim 64\nlayer 1\n",
    )
    .unwrap();
    let run = Command::new(example_binary()).arg(&fixture).arg(&out).output().unwrap();
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("shape_mismatch") && stderr.contains("head_dim"), "{}", stderr);
    std::fs::remove_dir_all(&dir).unwrap();
}
