//! The cross-language fixture runner (bindings/crosslang/test.sh compares its output byte for
//! byte with the C, Python and Go runners):
//!
//!     cargo run --release --example crosslang -- FIXTURE OUT
//!
//! FIXTURE holds plan.kvbplan, case.txt (`key value...` lines: page_size, sequences, tokens,
//! n_kv_heads, n_q_heads, head_dim, layer) and little-endian fp32 k.f32, v.f32
//! [sum(tokens), n_kv_heads, head_dim] and q.f32 [sequences, n_q_heads, head_dim]. On a CPU
//! context with 2 threads it appends every sequence to `layer` in one call, decodes once per
//! sequence and writes OUT/out.f32 [sequences, n_q_heads, head_dim] and OUT/lse.f32
//! [sequences, n_q_heads]. Any error exits non-zero with the library's message.
use kvbits::{Cache, CacheParams, Context, Plan};
use std::collections::HashMap;
use std::path::Path;
use std::process::exit;

type AnyResult<T> = Result<T, Box<dyn std::error::Error>>;

struct Case {
    page_size: u32,
    tokens: Vec<u32>,
    n_kv_heads: u32,
    n_q_heads: u32,
    head_dim: u32,
    layer: u32,
}

fn read_case(path: &Path) -> AnyResult<Case> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {}", path.display(), e))?;
    let mut fields: HashMap<String, Vec<u32>> = HashMap::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let mut words = line.split_whitespace();
        let key = words.next().unwrap_or_default().to_string();
        let values = words
            .map(|w| w.parse::<u32>().map_err(|_| format!("{}: `{}`: {:?} is not a count", path.display(), key, w)))
            .collect::<Result<Vec<u32>, String>>()?;
        fields.insert(key, values);
    }
    let one = |key: &str| -> AnyResult<u32> {
        match fields.get(key).map(Vec::as_slice) {
            Some([v]) => Ok(*v),
            _ => Err(format!("{}: needs one `{} N` line", path.display(), key).into()),
        }
    };
    let case = Case {
        page_size: one("page_size")?,
        tokens: fields.get("tokens").cloned().ok_or_else(|| format!("{}: no `tokens` line", path.display()))?,
        n_kv_heads: one("n_kv_heads")?,
        n_q_heads: one("n_q_heads")?,
        head_dim: one("head_dim")?,
        layer: one("layer")?,
    };
    let n = one("sequences")?;
    if case.tokens.len() != n as usize {
        return Err(format!("{}: `sequences {}` but {} token counts", path.display(), n, case.tokens.len()).into());
    }
    Ok(case)
}

fn read_f32(path: &Path, count: usize) -> AnyResult<Vec<f32>> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {}", path.display(), e))?;
    if bytes.len() != count * 4 {
        return Err(
            format!("{}: {} bytes, expected {} ({} fp32)", path.display(), bytes.len(), count * 4, count).into()
        );
    }
    Ok(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}

fn write_f32(path: &Path, values: &[f32]) -> AnyResult<()> {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes).map_err(|e| format!("{}: {}", path.display(), e).into())
}

fn run(fixture: &Path, out_dir: &Path) -> AnyResult<()> {
    let case = read_case(&fixture.join("case.txt"))?;
    let ctx = Context::cpu(2)?;
    let plan = Plan::load_file(fixture.join("plan.kvbplan"))?;
    let info = plan.info()?;
    plan.check_shape(info.n_layers, case.n_q_heads, case.n_kv_heads, case.head_dim)?;
    let params = CacheParams { page_size: case.page_size, max_pages: 256, ..CacheParams::default() };
    let mut cache = Cache::new(&ctx, &plan, &params)?;
    let seqs = case.tokens.iter().map(|_| cache.seq_add()).collect::<kvbits::Result<Vec<_>>>()?;

    let total: usize = case.tokens.iter().map(|&t| t as usize).sum();
    let kv = total * (case.n_kv_heads * case.head_dim) as usize;
    let k = read_f32(&fixture.join("k.f32"), kv)?;
    let v = read_f32(&fixture.join("v.f32"), kv)?;
    let q_row = (case.n_q_heads * case.head_dim) as usize;
    let q = read_f32(&fixture.join("q.f32"), seqs.len() * q_row)?;

    cache.append(case.layer, &seqs, &case.tokens, &k, &v)?;
    let mut out = vec![0f32; seqs.len() * q_row];
    let mut lse = vec![0f32; seqs.len() * case.n_q_heads as usize];
    cache.decode(case.layer, &seqs, &q, &mut out, Some(&mut lse), None)?;

    std::fs::create_dir_all(out_dir).map_err(|e| format!("{}: {}", out_dir.display(), e))?;
    write_f32(&out_dir.join("out.f32"), &out)?;
    write_f32(&out_dir.join("lse.f32"), &lse)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: crosslang FIXTURE OUT");
        exit(2);
    }
    if let Err(e) = run(Path::new(&args[1]), Path::new(&args[2])) {
        eprintln!("crosslang (rust): {}", e);
        exit(1);
    }
}
