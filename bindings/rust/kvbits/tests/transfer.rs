//! Head-range caches (tensor parallelism) and sequence export/import through the safe API.
mod common;
use common::*;
use kvbits::{Cache, CacheParams, Status};

const GROUP: usize = (SHAPE.1 / SHAPE.2) as usize;
const D: usize = SHAPE.3 as usize;

fn params(kv_heads: Option<(u32, u32)>) -> CacheParams {
    CacheParams {
        page_size: 4,
        max_pages: 32,
        sink_tokens: Some(1),
        window_tokens: Some(2),
        kv_heads,
        ..CacheParams::default()
    }
}

/// Rows [n][heads][D] -> rows [n][end - begin][D].
fn cut(x: &[f32], n: usize, heads: usize, begin: usize, end: usize) -> Vec<f32> {
    (0..n).flat_map(|t| x[(t * heads + begin) * D..(t * heads + end) * D].iter().copied()).collect()
}

#[test]
fn a_head_range_matches_the_full_cache_and_moves_between_caches() {
    let ctx = cpu();
    let plan = plan3(&ctx);
    let heads = SHAPE.2 as usize;
    let mut full = Cache::new(&ctx, &plan, &params(None)).unwrap();
    let mut part = Cache::new(&ctx, &plan, &params(Some((1, 2)))).unwrap();
    assert_eq!((full.kv_heads(), part.kv_heads()), ((0, 2), (1, 2)));
    assert_eq!((part.shape().n_kv_heads, part.shape().n_q_heads), (1, GROUP as u32));
    let (a, b) = (full.seq_add().unwrap(), part.seq_add().unwrap());
    assert_eq!(a, b);
    let mut rng = Rng::new(5);
    let n = 13usize;
    for layer in 0..SHAPE.0 {
        let k = activations(&mut rng, n * heads, D);
        let v = activations(&mut rng, n * heads, D);
        full.append(layer, &[a], &[n as u32], &k, &v).unwrap();
        part.append(layer, &[a], &[n as u32], &cut(&k, n, heads, 1, 2), &cut(&v, n, heads, 1, 2)).unwrap();
    }
    let (fk, _) = full.read_kv(a, 1, 0, n as u32).unwrap();
    let (pk, _) = part.read_kv(a, 1, 0, n as u32).unwrap();
    assert_eq!(pk, cut(&fk, n, heads, 1, 2));

    // Export, import into a cache of the same range: the same bytes again.
    let bytes = part.export_seq(a).unwrap();
    assert_eq!(bytes.len(), part.export_size(a).unwrap());
    assert_eq!(&bytes[..6], b"KVBSEQ");
    let mut twin = Cache::new(&ctx, &plan, &params(Some((1, 2)))).unwrap();
    let id = twin.import_seq(&bytes).unwrap();
    assert_eq!(twin.export_seq(id).unwrap(), bytes);
    assert_eq!(twin.read_kv(id, 1, 0, n as u32).unwrap().0, pk);

    // Another range, a corrupted byte, a truncation: refused, nothing changes.
    let e = full.import_seq(&bytes).unwrap_err();
    assert_eq!(e.status(), Status::ShapeMismatch, "{}", e);
    let before = twin.stats().unwrap();
    let mut bad = bytes.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert_eq!(twin.import_seq(&bad).unwrap_err().status(), Status::CorruptData);
    assert_eq!(twin.import_seq(&bytes[..bytes.len() - 1]).unwrap_err().status(), Status::CorruptData);
    assert_eq!(twin.import_seq(&[]).unwrap_err().status(), Status::CorruptData);
    assert_eq!(twin.stats().unwrap(), before);
    assert_eq!(part.export_seq(77).unwrap_err().status(), Status::NotFound);
    let e = Cache::new(&ctx, &plan, &params(Some((1, 3)))).err().expect("a range past the heads");
    assert_eq!(e.status(), Status::InvalidArgument);
}
