//! The modules of `crates/followd/src` import each other one way only: surfaces → pipeline →
//! commands → graph and store, with the shared state and registries below them. This reads the
//! sources, draws the graph of `crate::` imports between top-level modules and fails on a cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The top-level module a source file belongs to (`cmd/follow.rs` → `cmd`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    match first {
        "lib.rs" | "main.rs" => None,
        f => Some(f.trim_end_matches(".rs").to_owned()),
    }
}

/// The top-level modules named by `crate::…` paths in the code (comments left out).
fn imports(text: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        for part in code.split("crate::").skip(1) {
            // `crate::{a, b::c}` names several modules at once.
            let names: Vec<&str> = match part.strip_prefix('{') {
                Some(group) => group.split('}').next().unwrap_or("").split(',').collect(),
                None => vec![part],
            };
            for n in names {
                let ident: String = n.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if modules.contains(&ident) {
                    out.insert(ident);
                }
            }
        }
    }
    out
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module graph: each top-level module and the others it imports.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let modules: BTreeSet<String> = all.iter().filter_map(|f| module_of(&src, f)).collect();
    let mut g: BTreeMap<String, BTreeSet<String>> = modules.iter().map(|m| (m.clone(), BTreeSet::new())).collect();
    for f in &all {
        let Some(m) = module_of(&src, f) else { continue };
        let text = std::fs::read_to_string(f).unwrap();
        let mut deps = imports(&text, &modules);
        deps.remove(&m);
        g.get_mut(&m).unwrap().extend(deps);
    }
    g
}

/// A cycle in `g`, if there is one, as the modules along it.
fn cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(m: &str, g: &BTreeMap<String, BTreeSet<String>>, path: &mut Vec<String>, done: &mut BTreeSet<String>) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == m) {
            let mut c = path[i..].to_vec();
            c.push(m.to_owned());
            return Some(c);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_owned());
        for d in &g[m] {
            if let Some(c) = visit(d, g, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    g.keys().find_map(|m| visit(m, g, &mut Vec::new(), &mut done))
}

#[test]
fn the_modules_import_each_other_without_a_cycle() {
    let g = graph();
    assert!(g.len() > 10, "found only {g:?}");
    if let Some(c) = cycle(&g) {
        panic!("module cycle: {}\nthe graph: {g:#?}", c.join(" → "));
    }
    // The layers of the request path, top to bottom.
    let below = |a: &str, b: &str| g[a].contains(b);
    assert!(below("surface", "pipeline") && below("pipeline", "cmd"), "{g:#?}");
    for lower in ["cmd", "body", "apps", "state"] {
        for upper in ["surface", "pipeline", "docs"] {
            assert!(!below(lower, upper), "{lower} imports {upper}: {g:#?}");
        }
    }
}

#[test]
fn the_cycle_check_sees_a_cycle() {
    let mut g = BTreeMap::new();
    g.insert("a".to_owned(), BTreeSet::from(["b".to_owned()]));
    g.insert("b".to_owned(), BTreeSet::from(["c".to_owned()]));
    g.insert("c".to_owned(), BTreeSet::from(["a".to_owned()]));
    assert_eq!(cycle(&g).unwrap(), ["a", "b", "c", "a"]);
    g.get_mut("c").unwrap().clear();
    assert_eq!(cycle(&g), None);
    let modules = BTreeSet::from(["cmd".to_owned(), "state".to_owned(), "body".to_owned()]);
    let text = "use crate::{cmd::Reply, state};\n/// crate::body in a comment\nlet x = crate::body::Body::parse;";
    assert_eq!(imports(text, &modules), BTreeSet::from(["cmd".to_owned(), "state".to_owned(), "body".to_owned()]));
}
