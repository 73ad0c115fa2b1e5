//! The crates' shape, checked: `relay-proto` is sans-IO (no tokio, quinn or axum among its
//! dependencies); the gateway's engine is sans-IO (no tokio, socket or clock in its files, none
//! of the IO modules among its imports); and no module of `relay-proto`, `relay-shell` or the
//! gateway imports another that imports it back.
//!
//! "Imports" means a `crate::module` path in code (not in a comment) outside a file's
//! `#[cfg(test)] mod tests`: the graph is between a crate's top-level modules (a file and its
//! submodule folder are one).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
        .to_path_buf()
}

/// `src/a/b.rs` → `a`; `src/lib.rs` → `lib`.
fn top_module(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let first = rel
        .components()
        .next()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .unwrap_or_default();
    first.trim_end_matches(".rs").to_string()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Module → the crate's modules it names.
fn graph(crate_dir: &str) -> BTreeMap<String, BTreeSet<String>> {
    let src = root().join(crate_dir).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let module = top_module(&src, &f);
        let text = std::fs::read_to_string(&f).expect("readable source");
        let code = match text.find("#[cfg(test)]\nmod tests") {
            Some(i) => &text[..i],
            None => &text[..],
        };
        // Paths in comments (doc links) are not imports.
        let code: String = code
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let deps = g.entry(module.clone()).or_default();
        for (i, _) in code.match_indices("crate::") {
            let name: String = code[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && name != module && name.chars().all(|c| !c.is_uppercase()) {
                deps.insert(name);
            }
        }
    }
    g
}

/// Strongly connected components of more than one module (Tarjan).
fn knots(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<BTreeSet<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        let n = t.index.len();
        t.index.insert(v, n);
        t.low.insert(v, n);
        t.stack.push(v);
        t.on.insert(v);
        let deps: Vec<&'a str> =
            t.g.get(v)
                .map_or(Vec::new(), |d| d.iter().map(String::as_str).collect());
        for w in deps {
            if !t.g.contains_key(w) {
                continue; // a name that is no module (a macro, a re-export)
            }
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = BTreeSet::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                comp.insert(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

#[test]
fn the_relay_crates_have_no_import_cycles() {
    for dir in ["relay/proto", "relay/shell"] {
        let k = knots(&graph(dir));
        assert!(k.is_empty(), "{dir}: modules that import each other: {k:?}");
    }
}

#[test]
fn relay_proto_has_no_io_dependencies() {
    let manifest =
        std::fs::read_to_string(root().join("relay/proto/Cargo.toml")).expect("manifest");
    let deps = manifest
        .split("[dependencies]")
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .unwrap_or_default();
    for io in ["tokio", "quinn", "axum", "hyper", "reqwest", "socket2"] {
        assert!(
            !deps.lines().any(|l| l.trim_start().starts_with(io)),
            "relay-proto depends on {io}: it must stay sans-IO"
        );
    }
}

#[test]
fn the_gateway_has_no_import_cycles() {
    let k = knots(&graph("gateway"));
    assert!(
        k.is_empty(),
        "gateway: modules that import each other: {k:?}"
    );
}

/// The gateway's modules that do IO or run tasks: the engine may name none of them.
const GATEWAY_IO: &[&str] = &[
    "adapters",
    "cluster_bridge",
    "control",
    "front",
    "ice_tcp",
    "mailbox",
    "node",
    "recorder",
    "server",
    "turn",
    "udp",
    "worker",
];

#[test]
fn the_engine_is_sans_io() {
    let src = root().join("gateway/src/engine");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() >= 10, "the engine is its concept files");
    for f in files.iter().filter(|f| !f.ends_with("tests.rs")) {
        let text = std::fs::read_to_string(f).expect("readable source");
        let code: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for io in [
            "tokio",
            "UdpSocket",
            "TcpStream",
            "Instant::now",
            "SystemTime::now",
            "thread::",
        ] {
            assert!(
                !code.contains(io),
                "{}: the engine must not use {io}",
                f.display()
            );
        }
    }
    let g = graph("gateway");
    let engine = g.get("engine").expect("the engine module");
    for m in GATEWAY_IO {
        assert!(!engine.contains(*m), "the engine imports the IO module {m}");
    }
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let edge = |g: &mut BTreeMap<String, BTreeSet<String>>, a: &str, b: &str| {
        g.entry(a.into()).or_default().insert(b.into());
        g.entry(b.into()).or_default();
    };
    edge(&mut g, "a", "b");
    edge(&mut g, "b", "c");
    edge(&mut g, "c", "a");
    edge(&mut g, "c", "d");
    edge(&mut g, "d", "e");
    let k = knots(&g);
    assert_eq!(k.len(), 1);
    assert_eq!(
        k[0],
        ["a", "b", "c"].iter().map(|s| s.to_string()).collect()
    );
}
