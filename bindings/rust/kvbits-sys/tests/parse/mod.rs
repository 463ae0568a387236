//! Text parsers for tests/header_match.rs: kvbits.h (structs, typedefs, enums, constants,
//! prototypes) and the declarations of src/lib.rs. Deliberately small: a header construct they
//! do not know makes them panic, so a header change cannot slip past the comparison.
use std::path::PathBuf;

// ---- the header, parsed --------------------------------------------------------------------

pub struct Field {
    pub name: String,
    pub c_type: String,
    pub array_len: Option<String>,
}

#[derive(Default)]
pub struct Header {
    pub defines: Vec<String>,                   // #define KVB_* with a value
    pub enum_constants: Vec<String>,            // members of enums, named or not
    pub scalar_typedefs: Vec<(String, String)>, // (name, C type)
    pub enum_typedefs: Vec<String>,
    pub opaque: Vec<String>,
    pub structs: Vec<(String, Vec<Field>)>,
    pub functions: Vec<(String, String)>, // (name, expected Rust signature without whitespace)
}

pub fn header_path() -> PathBuf {
    let dir = match option_env!("KVBITS_SYS_INCLUDE_DIR") {
        Some(dir) => dir,
        None => {
            panic!("build.rs found no kvbits.h (set KVBITS_INCLUDE_DIR or install kvbits with its pkg-config file)")
        }
    };
    PathBuf::from(dir).join("kvbits.h")
}

pub fn strip_c_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'/' && i + 1 < b.len() && b[i + 1] == b'*' {
            let end = text[i + 2..].find("*/").expect("unterminated comment") + i + 4;
            out.push(' ');
            i = end;
        } else if b[i] == b'/' && i + 1 < b.len() && b[i + 1] == b'/' {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

pub fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub fn nospace(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

/// Maps a C type as written in the header ("const kvb_plan*", "kvb_context**") to Rust.
pub fn rust_type(c_type: &str) -> String {
    let pointers = c_type.matches('*').count();
    let words: Vec<&str> = c_type.split(|c: char| c == '*' || c.is_whitespace()).filter(|w| !w.is_empty()).collect();
    let is_const = words.contains(&"const");
    let base: Vec<&str> = words.into_iter().filter(|w| *w != "const").collect();
    assert_eq!(base.len(), 1, "C type {:?} is not one word plus const and pointers", c_type);
    let base = match base[0] {
        "void" => "c_void",
        "char" => "c_char",
        "float" => "f32",
        "double" => "f64",
        "size_t" => "usize",
        "uint8_t" => "u8",
        "int32_t" => "i32",
        "uint32_t" => "u32",
        "int64_t" => "i64",
        "uint64_t" => "u64",
        other if other.starts_with("kvb_") => other,
        other => panic!("no Rust mapping for C type {:?}", other),
    };
    let mut t = base.to_string();
    for level in 0..pointers {
        t = if level == 0 && is_const { format!("*const {}", t) } else { format!("*mut {}", t) };
    }
    t
}

/// Splits "TYPE name" / "TYPE* name" / "TYPE name[N]" into (type, name, array length).
pub fn split_declaration(decl: &str) -> (String, String, Option<String>) {
    let decl = decl.trim();
    let (decl, array) = match decl.find('[') {
        Some(i) => (&decl[..i], Some(decl[i + 1..decl.len() - 1].trim().to_string())),
        None => (decl, None),
    };
    let name_start = decl.rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).expect("declaration") + 1;
    (decl[..name_start].trim().to_string(), decl[name_start..].to_string(), array)
}

pub fn parse_header(text: &str) -> Header {
    let text = strip_c_comments(text);
    let mut h = Header::default();
    let mut code = String::new();
    for line in text.lines() {
        let t = line.trim_start();
        if let Some(directive) = t.strip_prefix('#') {
            let words: Vec<&str> = directive.split_whitespace().collect();
            if words.len() >= 3 && words[0] == "define" && words[1].starts_with("KVB_") && words[1] != "KVB_API" {
                assert!(!words[1].contains('('), "function-like macro {}", words[1]);
                h.defines.push(words[1].to_string());
            }
            continue;
        }
        code.push_str(line);
        code.push('\n');
    }
    let code = code.replace("extern \"C\" {", " ");

    // Top-level statements end at ';' outside braces; a stray '}' (end of extern "C") is dropped.
    let mut statements = Vec::new();
    let mut depth = 0i32;
    let mut current = String::new();
    for c in code.chars() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => continue,
            '}' => depth -= 1,
            ';' if depth == 0 => {
                statements.push(squash(&current));
                current.clear();
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    assert!(squash(&current).is_empty(), "text after the last statement: {:?}", current);

    for st in statements {
        let brace = st.find('{');
        if let Some(rest) = st.strip_prefix("KVB_API ") {
            let open = rest.find('(').expect("function without (");
            let (ret, name, _) = split_declaration(&rest[..open]);
            let params = &rest[open + 1..rest.rfind(')').expect(")")];
            let mut rust_params = Vec::new();
            if params.trim() != "void" {
                for p in params.split(',') {
                    let (ty, _, arr) = split_declaration(p);
                    assert!(arr.is_none(), "array parameter in {}", name);
                    rust_params.push(rust_type(&ty));
                }
            }
            let ret = if ret == "void" { String::new() } else { format!("->{}", rust_type(&ret)) };
            h.functions.push((name.clone(), nospace(&format!("{}({}){}", name, rust_params.join(","), ret))));
        } else if let (true, Some(b)) = (st.starts_with("typedef struct "), brace) {
            let close = st.rfind('}').unwrap();
            let name = st[close + 1..].trim().to_string();
            let mut fields = Vec::new();
            for decl in st[b + 1..close].split(';').map(str::trim).filter(|d| !d.is_empty()) {
                let mut parts = decl.split(',');
                let (ty, first, arr) = split_declaration(parts.next().unwrap());
                fields.push(Field { name: first, c_type: ty.clone(), array_len: arr });
                for more in parts {
                    fields.push(Field { name: more.trim().to_string(), c_type: ty.clone(), array_len: None });
                }
            }
            h.structs.push((name, fields));
        } else if st.starts_with("typedef struct ") {
            let words: Vec<&str> = st.split_whitespace().collect();
            assert_eq!(words.len(), 4, "opaque typedef {:?}", st);
            h.opaque.push(words[3].to_string());
        } else if st.starts_with("typedef enum ") || st.starts_with("enum ") || st.starts_with("enum{") {
            let b = brace.unwrap();
            let close = st.rfind('}').unwrap();
            for member in st[b + 1..close].split(',').map(str::trim).filter(|m| !m.is_empty()) {
                h.enum_constants.push(member.split('=').next().unwrap().trim().to_string());
            }
            if st.starts_with("typedef") {
                h.enum_typedefs.push(st[close + 1..].trim().to_string());
            }
        } else if let Some(rest) = st.strip_prefix("typedef ") {
            let (ty, name, arr) = split_declaration(rest);
            assert!(arr.is_none());
            h.scalar_typedefs.push((name, ty));
        } else {
            panic!("header statement this test cannot parse (teach it): {:?}", st);
        }
    }
    h
}

// ---- src/lib.rs, parsed as text ----------------------------------------------------------------

pub fn strip_rust_comments_and_attributes(src: &str) -> String {
    let mut out = String::new();
    for line in src.lines() {
        let line = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        let t = line.trim();
        if t.starts_with("#[") || t.starts_with("#![") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// `pub fn name(params) -> ret;` of the extern block, without parameter names or whitespace.
pub fn rust_signatures(src: &str) -> Vec<(String, String)> {
    let start = src.find("extern \"C\" {").expect("extern block") + "extern \"C\" {".len();
    let end = src[start..].rfind('}').unwrap() + start;
    let mut out = Vec::new();
    for decl in src[start..end].split(';').map(str::trim).filter(|d| !d.is_empty()) {
        let decl = decl.strip_prefix("pub fn ").unwrap_or_else(|| panic!("not a pub fn: {:?}", decl));
        let open = decl.find('(').unwrap();
        let close = decl.rfind(')').unwrap();
        let name = decl[..open].trim().to_string();
        let params: Vec<String> = decl[open + 1..close]
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| p.split_once(':').expect("name: type").1.trim().to_string())
            .collect();
        let sig = format!("{}({}){}", name, params.join(","), &decl[close + 1..]);
        out.push((name, nospace(&sig)));
    }
    out
}

/// Fields of `pub struct NAME { pub f: T, ... }` as (name, type without whitespace).
pub fn rust_struct_fields(src: &str, name: &str) -> Vec<(String, String)> {
    let head = format!("pub struct {} {{", name);
    let start = src.find(&head).unwrap_or_else(|| panic!("lib.rs has no `{}`", head)) + head.len();
    let end = src[start..].find('}').unwrap() + start;
    let body = &src[start..end];
    // Split on commas outside brackets ([c_char; N] holds none, but be safe).
    let mut fields = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for c in body.chars().chain(std::iter::once(',')) {
        match c {
            '[' | '<' | '(' => depth += 1,
            ']' | '>' | ')' => depth -= 1,
            ',' if depth == 0 => {
                let f = cur.trim().to_string();
                cur.clear();
                if !f.is_empty() {
                    let f = f.strip_prefix("pub ").unwrap_or(&f).to_string();
                    let (n, t) = f.split_at(f.find(':').unwrap());
                    fields.push((n.trim().to_string(), nospace(&t[1..])));
                }
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    fields
}

pub fn rust_typedef(src: &str, name: &str) -> Option<String> {
    let head = format!("pub type {} =", name);
    let start = src.find(&head)? + head.len();
    Some(nospace(&src[start..start + src[start..].find(';')?]))
}
