//! The architecture, kept: the modules of `src/` form layers that import
//! only downward, and no two files import each other in a circle.
//!
//! Every `use crate::…` and `crate::…::` path outside `#[cfg(test)]` modules
//! is an arrow from its file to the file that defines the name (through a
//! `mod.rs` that only re-exports a child's name, to the child). An arrow
//! that climbs [`LAYERS`], or a circle of arrows, fails the test with the
//! file, the line and the name. `lib.rs`'s `//! # Layout` lists the same
//! layers, one line per top-level module, in this order.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The layers, ground first: a module may import from its own layer and
/// the ones before it, never from a later one. A file belongs to the
/// longest module path listed that contains it.
const LAYERS: &[&[&str]] = &[
    // 0. Ground: time, the shared domain types, secrets, bounds, quoting,
    //    counters, a checkup's report, and the sandbox's key material (a
    //    leaf both the simulator and the configuration read).
    &["clock", "domain", "secret", "limit", "text", "metrics", "checkup", "sandbox::keys"],
    // 1. The WeChat Pay protocol (v2, v3), its client and its settings. Below
    //    the store: the protocol needs no storage, and this order makes
    //    "wechat never imports store" a rule.
    &["wechat"],
    // 2. Storage: records, indexes, the writer.
    &["store"],
    // 3. Platform A's keys, request signatures and order tokens.
    &["platform::keys", "platform::auth", "platform::token", "platform"],
    // 4. The domain: orders, notifies, lifecycle, refunds, reconciliation.
    &["pay"],
    // 5. Webhook delivery, above the domain whose outbox it drains.
    &["platform::webhook"],
    // 6. HTTPS certificates.
    &["tls"],
    // 7. The admin page's model.
    &["admin"],
    // 8. Routes per audience.
    &["http"],
    // 9. The accept loop and the control socket.
    &["server", "control"],
    // 10. Configuration: TOML and environment into each module's settings.
    &["config"],
    // 11. The doctor: proves the configuration's credentials against WeChat;
    //     nothing below imports it (the admin page gets its report through
    //     the wiring, as a boxed function).
    &["doctor"],
    // 12. The WeChat Pay simulator: another party, imported by nothing in the
    //     product (only the wiring starts it in sandbox mode).
    &["sandbox"],
    // 13. Wiring and the command line.
    &["app", "cli", "main", "lib"],
];

/// One `crate::` path in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Import {
    /// 1-based line of the path.
    line: usize,
    /// The path's segments after `crate::`.
    path: Vec<String>,
}

/// A parsed crate: each file's module path and its imports.
struct Crate {
    /// Module path (`["store", "order"]`; `[]` for lib.rs) → file name.
    files: BTreeMap<Vec<String>, String>,
    /// Module path → the `crate::` paths it uses.
    imports: BTreeMap<Vec<String>, Vec<Import>>,
    /// (module, name) → the child module a `pub use child::name` hands it on from.
    handed_on: BTreeMap<(Vec<String>, String), Vec<String>>,
}

/// An arrow between two files, with where and what it takes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Arrow {
    from: Vec<String>,
    to: Vec<String>,
    line: usize,
    name: String,
}

/// The module path of a file under `src/`: `store/mod.rs` → `store`.
fn module_of(relative: &str) -> Vec<String> {
    let without = relative.strip_suffix(".rs").unwrap_or(relative);
    let mut parts: Vec<String> = without.split('/').map(str::to_owned).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// The text before the first `#[cfg(test)]` that opens a module.
fn without_tests(text: &str) -> &str {
    let lines: Vec<&str> = text.split('\n').collect();
    let mut offset = 0;
    for (i, line) in lines.iter().enumerate() {
        if line.trim().starts_with("#[cfg(test)]") {
            let next = lines[i + 1..].iter().take(2).map(|l| l.trim()).collect::<Vec<_>>().join(" ");
            let next = next.trim_start_matches("pub(crate) ").trim_start_matches("pub ");
            if next.starts_with("mod ") {
                return &text[..offset];
            }
        }
        offset += line.len() + 1;
    }
    text
}

/// Comments and string literals blanked out (newlines kept, so lines still count).
fn code_only(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let rest = &text[i..];
        let skip_to = if rest.starts_with("//") {
            rest.find('\n').map_or(text.len(), |n| i + n)
        } else if let Some(after) = rest.strip_prefix("/*") {
            after.find("*/").map_or(text.len(), |n| i + 2 + n + 2)
        } else if let Some(after) = rest.strip_prefix("r#\"") {
            after.find("\"#").map_or(text.len(), |n| i + 3 + n + 2)
        } else if rest.starts_with('"') {
            let mut j = 1;
            while j < rest.len() && rest.as_bytes()[j] != b'"' {
                j += if rest.as_bytes()[j] == b'\\' { 2 } else { 1 };
            }
            i + (j + 1).min(rest.len())
        } else if rest.starts_with("'\"'") {
            i + 3
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
            continue;
        };
        out.extend(text[i..skip_to].chars().map(|c| if c == '\n' { '\n' } else { ' ' }));
        i = skip_to;
    }
    out
}

/// Parses a use tree after `crate::` at `at`: `a::b::{c, d::e}` gives
/// `[a,b,c]` and `[a,b,d,e]`. Returns the paths and where the tree ends.
fn use_tree(code: &[u8], mut at: usize, prefix: &[String], out: &mut Vec<Vec<String>>) -> usize {
    let mut path = prefix.to_vec();
    loop {
        while at < code.len() && code[at].is_ascii_whitespace() {
            at += 1;
        }
        if at < code.len() && code[at] == b'{' {
            at += 1;
            loop {
                at = use_tree(code, at, &path, out);
                while at < code.len() && (code[at].is_ascii_whitespace() || code[at] == b',') {
                    at += 1;
                }
                if at >= code.len() || code[at] == b'}' {
                    return at + 1;
                }
            }
        }
        if at < code.len() && code[at] == b'*' {
            out.push(path);
            return at + 1;
        }
        let start = at;
        while at < code.len() && (code[at].is_ascii_alphanumeric() || code[at] == b'_') {
            at += 1;
        }
        let ident = String::from_utf8_lossy(&code[start..at]).into_owned();
        if !ident.is_empty() && ident != "self" {
            path.push(ident);
        }
        if code[at..].starts_with(b"::") {
            at += 2;
            continue;
        }
        out.push(path);
        return at;
    }
}

/// Every `crate::` path in `code`, with its line.
fn imports(code: &str) -> Vec<Import> {
    let bytes = code.as_bytes();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(found) = code[from..].find("crate::") {
        let at = from + found;
        let boundary = at == 0 || !(bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_');
        from = at + "crate::".len();
        if !boundary {
            continue;
        }
        let line = code[..at].matches('\n').count() + 1;
        let mut paths = Vec::new();
        from = use_tree(bytes, from, &[], &mut paths);
        out.extend(paths.into_iter().filter(|p| !p.is_empty()).map(|path| Import { line, path }));
    }
    out
}

impl Crate {
    /// Reads `(path under src/, text)` pairs.
    fn parse(sources: &[(String, String)]) -> Crate {
        let mut files = BTreeMap::new();
        let mut imports_of = BTreeMap::new();
        let mut handed_on = BTreeMap::new();
        let mut definitions: BTreeMap<Vec<String>, BTreeSet<String>> = BTreeMap::new();
        let mut reexports: Vec<(Vec<String>, String, String)> = Vec::new();
        for (relative, text) in sources {
            let module = module_of(relative);
            let code = code_only(without_tests(text));
            for line in code.lines() {
                let words: Vec<&str> = line.split_whitespace().collect();
                let words: Vec<&str> =
                    words.iter().copied().skip_while(|w| w.starts_with("pub") || *w == "async").collect();
                if let [kind, name, ..] = words.as_slice() {
                    if ["struct", "enum", "fn", "type", "const", "static", "trait", "mod"].contains(kind) {
                        let name: String = name.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                        definitions.entry(module.clone()).or_default().insert(name);
                    }
                }
                let trimmed = line.trim_start();
                if let Some(rest) = trimmed.strip_prefix("pub use ").or_else(|| trimmed.strip_prefix("pub(crate) use "))
                {
                    let rest = rest.trim_start_matches("self::");
                    if let Some((child, names)) = rest.split_once("::") {
                        if !child.contains(' ') && child != "crate" && child != "super" {
                            for name in names.trim_end_matches(';').trim_matches(['{', '}']).split(',') {
                                let name = name.split(" as ").last().unwrap_or("").trim().to_owned();
                                if !name.is_empty() {
                                    reexports.push((module.clone(), child.to_owned(), name));
                                }
                            }
                        }
                    }
                }
            }
            imports_of.insert(module.clone(), imports(&code));
            files.insert(module, relative.clone());
        }
        for (module, child, name) in reexports {
            let child_module: Vec<String> = module.iter().cloned().chain([child]).collect();
            if !files.contains_key(&child_module) {
                continue;
            }
            if name == "*" {
                for defined in definitions.get(&child_module).into_iter().flatten() {
                    handed_on.insert((module.clone(), defined.clone()), child_module.clone());
                }
            } else {
                handed_on.insert((module.clone(), name), child_module);
            }
        }
        Crate { files, imports: imports_of, handed_on }
    }

    /// Reads `src/`.
    fn read(src: &Path) -> Crate {
        let mut sources = Vec::new();
        let mut dirs = vec![src.to_path_buf()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let relative = path.strip_prefix(src).unwrap().to_string_lossy().replace('\\', "/");
                    sources.push((relative, std::fs::read_to_string(&path).unwrap()));
                }
            }
        }
        sources.sort();
        Crate::parse(&sources)
    }

    /// Every arrow between two different files.
    fn arrows(&self) -> Vec<Arrow> {
        let mut out = BTreeSet::new();
        for (from, imports) in &self.imports {
            for import in imports {
                let Some(mut to) = (0..=import.path.len())
                    .rev()
                    .map(|n| import.path[..n].to_vec())
                    .find(|p| self.files.contains_key(p))
                else {
                    continue;
                };
                let name = import.path.get(to.len()).cloned().unwrap_or_else(|| "(module)".into());
                while let Some(child) = self.handed_on.get(&(to.clone(), name.clone())) {
                    to = child.clone();
                }
                if &to != from {
                    out.insert(Arrow { from: from.clone(), to, line: import.line, name });
                }
            }
        }
        out.into_iter().collect()
    }

    fn file(&self, module: &[String]) -> &str {
        &self.files[module]
    }
}

/// The layer of a module: the longest listed path that contains it.
fn layer_of(module: &[String]) -> Option<usize> {
    let mut best: Option<(usize, usize)> = None;
    for (layer, paths) in LAYERS.iter().enumerate() {
        for path in *paths {
            let parts: Vec<&str> = path.split("::").collect();
            let contains = parts.len() <= module.len() && parts.iter().zip(module).all(|(a, b)| a == b);
            let root = module.is_empty() && *path == "lib";
            if (contains || root) && best.is_none_or(|(len, _)| parts.len() > len) {
                best = Some((parts.len(), layer));
            }
        }
    }
    best.map(|(_, layer)| layer)
}

/// What is wrong: modules in no layer, arrows that climb, and circles.
fn problems(krate: &Crate) -> Vec<String> {
    let mut out = Vec::new();
    for module in krate.files.keys() {
        if layer_of(module).is_none() {
            out.push(format!("{} is in no layer: add its module to LAYERS in tests/layers.rs", krate.file(module)));
        }
    }
    let arrows = krate.arrows();
    for a in &arrows {
        if let (Some(from), Some(to)) = (layer_of(&a.from), layer_of(&a.to)) {
            if to > from {
                out.push(format!(
                    "src/{}:{} imports {} from src/{} (layer {to}, above its own layer {from})",
                    krate.file(&a.from),
                    a.line,
                    a.name,
                    krate.file(&a.to)
                ));
            }
        }
    }
    for circle in circles(&arrows) {
        let mut text = format!("an import circle of {} files:", circle.len());
        for a in arrows.iter().filter(|a| circle.contains(&a.from) && circle.contains(&a.to)) {
            text += &format!("\n    src/{}:{} -> src/{}: {}", krate.file(&a.from), a.line, krate.file(&a.to), a.name);
        }
        out.push(text);
    }
    out
}

/// The strongly connected sets of more than one file (Tarjan).
fn circles(arrows: &[Arrow]) -> Vec<BTreeSet<Vec<String>>> {
    struct State<'a> {
        next: BTreeMap<&'a Vec<String>, Vec<&'a Vec<String>>>,
        index: BTreeMap<&'a Vec<String>, usize>,
        low: BTreeMap<&'a Vec<String>, usize>,
        stack: Vec<&'a Vec<String>>,
        on_stack: BTreeSet<&'a Vec<String>>,
        found: Vec<BTreeSet<Vec<String>>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a Vec<String>) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.next.get(v).cloned().unwrap_or_default() {
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut set = BTreeSet::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                set.insert(w.clone());
                if w == v {
                    break;
                }
            }
            if set.len() > 1 {
                s.found.push(set);
            }
        }
    }
    let mut state = State {
        next: BTreeMap::new(),
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for a in arrows {
        state.next.entry(&a.from).or_default().push(&a.to);
    }
    let nodes: Vec<&Vec<String>> = state.next.keys().copied().collect();
    for v in nodes {
        if !state.index.contains_key(v) {
            visit(&mut state, v);
        }
    }
    state.found
}

#[test]
fn modules_import_only_downward_and_in_no_circle() {
    let krate = Crate::read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(krate.files.len() > 50, "src/ was read ({} files)", krate.files.len());
    assert!(krate.arrows().len() > 100, "imports were found ({})", krate.arrows().len());
    let problems = problems(&krate);
    assert!(problems.is_empty(), "the layers are broken:\n{}", problems.join("\n"));
}

/// `lib.rs`'s `//! # Layout` names every top-level module once, in layer order.
#[test]
fn the_layout_in_lib_rs_lists_every_module_in_layer_order() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let layout = lib.split("//! # Layout").nth(1).expect("lib.rs has a # Layout section");
    let layout: String = layout.lines().skip(1).take_while(|l| l.starts_with("//!")).collect::<Vec<_>>().join("\n");
    // One list item per module: `//! - [`name`]: what it is`.
    let listed: Vec<String> = layout
        .lines()
        .filter_map(|l| l.strip_prefix("//! - [`"))
        .filter_map(|rest| rest.split_once("`]").map(|(name, _)| name.to_owned()))
        .collect();
    let declared: BTreeSet<String> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod ").or_else(|| l.strip_prefix("mod ")))
        .map(|l| l.trim_end_matches(';').to_owned())
        .collect();
    let unique: BTreeSet<String> = listed.iter().cloned().collect();
    assert_eq!(unique, declared, "every module once in the layout, and nothing else");
    assert_eq!(unique.len(), listed.len(), "a module is listed twice: {listed:?}");
    let layers: Vec<usize> = listed.iter().map(|m| layer_of(std::slice::from_ref(m)).unwrap()).collect();
    assert!(layers.windows(2).all(|w| w[0] <= w[1]), "the layout is not in layer order: {listed:?} → {layers:?}");
}

/// The test has teeth: an upward import and a circle, in a small crate made
/// up here, are each reported with the file, the line and the name.
#[test]
fn an_upward_import_and_a_circle_are_caught() {
    let source = |path: &str, text: &str| (path.to_owned(), text.to_owned());
    let krate = Crate::parse(&[
        source("lib.rs", "pub mod store;\npub mod pay;\npub mod http;\n"),
        source("store/mod.rs", "//! Store.\nmod order;\npub use order::Order;\n\nuse crate::pay::Payments;\n"),
        source("store/order.rs", "pub struct Order;\n// crate::http::Ignored in a comment\n"),
        source("pay/mod.rs", "use crate::store::{Order};\npub struct Payments;\nfn f() { crate::http::route(); }\n"),
        source(
            "http/mod.rs",
            "pub fn route() {}\nuse crate::pay::Payments;\n#[cfg(test)]\nmod tests {\n use crate::store::X;\n}\n",
        ),
    ]);
    let arrows = krate.arrows();
    let has = |from: &str, to: &str, line: usize, name: &str| {
        arrows.iter().any(|a| a.from == [from] && a.to.join("::") == to && a.line == line && a.name == name)
    };
    assert!(has("store", "pay", 5, "Payments"), "{arrows:?}");
    assert!(has("pay", "store::order", 1, "Order"), "re-exported names lead to the child: {arrows:?}");
    assert!(has("pay", "http", 3, "route"), "{arrows:?}");
    assert!(!arrows.iter().any(|a| a.from == ["store", "order"]), "comments are not imports: {arrows:?}");
    assert!(!arrows.iter().any(|a| a.from == ["http"] && a.to[0] == "store"), "test modules are left out: {arrows:?}");
    let problems = problems(&krate);
    let text = problems.join("\n");
    assert!(
        text.contains("src/store/mod.rs:5 imports Payments from src/pay/mod.rs (layer 4, above its own layer 2)"),
        "{text}"
    );
    assert!(
        text.contains("src/pay/mod.rs:3 imports route from src/http/mod.rs (layer 8, above its own layer 4)"),
        "{text}"
    );
    assert!(text.contains("an import circle of 2 files:"), "{text}");
    assert!(text.contains("src/http/mod.rs:2 -> src/pay/mod.rs: Payments"), "{text}");
}
