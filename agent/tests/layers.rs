//! Data flows one way (doc/architecture.md): no two modules of the agent reach each other, even
//! through others. This test reads every file of agent/src, takes the modules each one uses
//! (`use crate::..`, `use super::..`, a child's `use child::..`, and paths like `crate::a::f()`
//! written inline; test modules left out), and fails on every import cycle it finds, naming
//! the files and what each takes from the next.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every module file: its module path (`granules::stage`) and its text.
fn modules() -> BTreeMap<Module, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![src()];
    while let Some(dir) = todo.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let rel = p.strip_prefix(src()).unwrap();
            let mut m: Module = rel
                .iter()
                .map(|c| c.to_string_lossy().trim_end_matches(".rs").to_owned())
                .collect();
            match m.last().map(String::as_str) {
                Some("mod") => {
                    m.pop();
                }
                Some("lib" | "main") if m.len() == 1 => continue,
                // A module's unit tests in a file of their own.
                Some("tests") => continue,
                _ => {}
            }
            out.insert(m, code_of(&std::fs::read_to_string(&p).unwrap()));
        }
    }
    out
}

/// The text without comments, string literals and test modules.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]") {
        Some(i) => &text[..i],
        None => text,
    };
    let mut out = String::new();
    for line in text.lines() {
        let mut in_str = false;
        let mut prev = ' ';
        let mut kept = String::new();
        for (i, c) in line.char_indices() {
            if !in_str && c == '/' && line[i..].starts_with("//") {
                break;
            }
            if c == '"' && prev != '\\' {
                in_str = !in_str;
            } else if !in_str {
                kept.push(c);
            }
            prev = c;
        }
        out.push_str(&kept);
        out.push('\n');
    }
    out
}

/// The paths a `use` tree names: `a::{b, c::{d, e}}` gives `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str) -> Vec<Vec<String>> {
    let tree = tree.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out = Vec::new();
    expand_into(&tree, Vec::new(), &mut out);
    out
}

fn expand_into(tree: &str, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let Some(open) = tree.find('{') else {
        let mut p = prefix;
        let head = tree.split(" as ").next().unwrap_or(tree);
        p.extend(segments(head));
        if !p.is_empty() {
            out.push(p);
        }
        return;
    };
    let mut p = prefix;
    p.extend(segments(&tree[..open]));
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    // Split at the commas of this level only.
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                expand_into(&inner[start..i], p.clone(), out);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < inner.len() {
        expand_into(&inner[start..], p, out);
    }
}

fn segments(path: &str) -> impl Iterator<Item = String> + '_ {
    path.split("::")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// Every path the module's code names, as written.
fn named_paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("use ") {
        let before = rest[..i].chars().last();
        let after = &rest[i + 4..];
        let end = after.find(';').unwrap_or(after.len());
        if before.is_none_or(|c| !c.is_alphanumeric() && c != '_') {
            out.extend(expand(&after[..end]));
        }
        rest = &after[end.min(after.len())..];
    }
    // Inline paths: `crate::a::b(..)`, `super::x`.
    for start in ["crate::", "super::"] {
        let mut rest = code;
        while let Some(i) = rest.find(start) {
            let tail = &rest[i..];
            let len = tail
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(tail.len());
            out.push(
                tail[..len]
                    .split("::")
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
            );
            rest = &tail[len..];
        }
    }
    out
}

/// A child module named inline without a prefix: `stage::run(..)` in granules.
fn children_named(m: &Module, code: &str, all: &BTreeMap<Module, String>) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for child in all
        .keys()
        .filter(|c| c.len() == m.len() + 1 && c.starts_with(m))
    {
        let name = child.last().unwrap();
        let needle = format!("{name}::");
        let mut rest = code;
        while let Some(i) = rest.find(&needle) {
            let before = rest[..i].chars().last();
            if before.is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == ':')) {
                out.push(vec![name.clone()]);
            }
            rest = &rest[i + needle.len()..];
        }
    }
    out
}

/// The module file a path leads to from `from`, if it is one of the agent's own.
fn target(from: &Module, path: &[String], all: &BTreeMap<Module, String>) -> Option<Module> {
    let mut abs: Module = match path.first().map(String::as_str) {
        Some("crate") => Vec::new(),
        Some("super") => from[..from.len().saturating_sub(1)].to_vec(),
        Some("self") => from.clone(),
        // A child module named without a prefix (`use follow::Follow` in config).
        Some(first) if all.contains_key(&[from.as_slice(), &[first.to_owned()]].concat()) => {
            from.clone()
        }
        _ => return None,
    };
    let mut rest = &path[usize::from(matches!(
        path.first().map(String::as_str),
        Some("crate" | "super" | "self")
    ))..];
    while rest.first().is_some_and(|s| s == "super") {
        abs.pop();
        rest = &rest[1..];
    }
    abs.extend(rest.iter().cloned());
    // The longest prefix that is a module file.
    (1..=abs.len())
        .rev()
        .map(|n| abs[..n].to_vec())
        .find(|m| all.contains_key(m))
}

type Edges = BTreeMap<Module, BTreeMap<Module, BTreeSet<String>>>;

/// Which module file uses which, and what it takes.
fn edges(all: &BTreeMap<Module, String>) -> Edges {
    let mut edges = Edges::new();
    for (m, code) in all {
        let mut paths = named_paths(code);
        paths.extend(children_named(m, code, all));
        for p in paths {
            if let Some(t) = target(m, &p, all)
                && &t != m
            {
                let what = p.last().cloned().unwrap_or_default();
                edges
                    .entry(m.clone())
                    .or_default()
                    .entry(t)
                    .or_default()
                    .insert(what);
            }
        }
    }
    edges
}

/// Every cycle of the graph, each edge of it with what it takes, as one report.
fn cycles(nodes: &BTreeSet<Module>, edges: &Edges) -> String {
    let names: Vec<&Module> = nodes.iter().collect();
    let index_of: BTreeMap<&Module, usize> =
        names.iter().enumerate().map(|(i, m)| (*m, i)).collect();
    let next: Vec<Vec<usize>> = names
        .iter()
        .map(|m| {
            edges
                .get(*m)
                .map(|t| t.keys().filter_map(|k| index_of.get(k).copied()).collect())
                .unwrap_or_default()
        })
        .collect();
    let mut found = Vec::new();
    let mut state = Tarjan {
        next: &next,
        index: vec![None; names.len()],
        low: vec![0; names.len()],
        on_stack: vec![false; names.len()],
        stack: Vec::new(),
        counter: 0,
        found: &mut found,
    };
    for v in 0..names.len() {
        if state.index[v].is_none() {
            state.visit(v);
        }
    }
    let mut report = String::new();
    for c in &found {
        report.push_str("cycle:\n");
        for &a in c {
            for &b in c {
                if let Some(what) = edges.get(names[a]).and_then(|t| t.get(names[b])) {
                    report.push_str(&format!(
                        "  {} -> {}: {}\n",
                        names[a].join("::"),
                        names[b].join("::"),
                        what.iter().cloned().collect::<Vec<_>>().join(", ")
                    ));
                }
            }
        }
    }
    report
}

/// Between the agent's parts (`config`, `source`, `granules`, ...: the top-level modules, each
/// a file or a folder), data flows one way: no part uses one that uses it, even through others.
#[test]
fn no_part_of_the_agent_reaches_back_to_one_that_uses_it() {
    let all = modules();
    assert!(
        all.len() > 40,
        "only {} modules found under src/",
        all.len()
    );
    let part = |m: &Module| vec![m[0].clone()];
    let mut folded = Edges::new();
    for (from, to) in edges(&all) {
        for (t, what) in to {
            if part(&from) != part(&t) {
                folded
                    .entry(part(&from))
                    .or_default()
                    .entry(part(&t))
                    .or_default()
                    .extend(
                        what.into_iter()
                            .map(|w| format!("{w} ({})", from.join("::"))),
                    );
            }
        }
    }
    let parts = all.keys().map(part).collect();
    let report = cycles(&parts, &folded);
    assert!(
        report.is_empty(),
        "import cycles between the agent's parts:\n{report}"
    );
}

/// Within a part the files form no cycle either, but for the one Rust idiom of a folder: its
/// files use what their `mod.rs` defines (`super::Entry`) while `mod.rs` uses them.
#[test]
fn no_file_of_the_agent_reaches_back_to_one_that_uses_it() {
    let all = modules();
    let mut edges = edges(&all);
    for (from, to) in edges.iter_mut() {
        to.retain(|t, _| !(t.len() < from.len() && from.starts_with(t)));
    }
    let report = cycles(&all.keys().cloned().collect(), &edges);
    assert!(
        report.is_empty(),
        "import cycles between the agent's files:\n{report}"
    );
}

struct Tarjan<'a> {
    next: &'a [Vec<usize>],
    index: Vec<Option<usize>>,
    low: Vec<usize>,
    on_stack: Vec<bool>,
    stack: Vec<usize>,
    counter: usize,
    found: &'a mut Vec<Vec<usize>>,
}

impl Tarjan<'_> {
    fn visit(&mut self, v: usize) {
        self.index[v] = Some(self.counter);
        self.low[v] = self.counter;
        self.counter += 1;
        self.stack.push(v);
        self.on_stack[v] = true;
        for &w in &self.next[v] {
            match self.index[w] {
                None => {
                    self.visit(w);
                    self.low[v] = self.low[v].min(self.low[w]);
                }
                Some(i) if self.on_stack[w] => self.low[v] = self.low[v].min(i),
                _ => {}
            }
        }
        if Some(self.low[v]) == self.index[v] {
            let mut component = Vec::new();
            loop {
                let w = self.stack.pop().unwrap();
                self.on_stack[w] = false;
                component.push(w);
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                self.found.push(component);
            }
        }
    }
}

#[test]
fn the_check_finds_a_cycle_when_there_is_one() {
    let all: BTreeMap<Module, String> = [
        (vec!["a".to_owned()], "use crate::b::X;\n".to_owned()),
        (
            vec!["b".to_owned()],
            "fn f() { crate::a::y() }\n".to_owned(),
        ),
    ]
    .into_iter()
    .collect();
    let a = vec!["a".to_owned()];
    let b = vec!["b".to_owned()];
    let reached = |m: &Module| -> BTreeSet<Module> {
        named_paths(&all[m])
            .iter()
            .filter_map(|p| target(m, p, &all))
            .collect()
    };
    assert_eq!(reached(&a), [b.clone()].into());
    assert_eq!(reached(&b), [a.clone()].into());
    // And the whole check says so, naming both sides and what each takes.
    let report = cycles(&all.keys().cloned().collect(), &edges(&all));
    assert!(
        report.contains("a -> b: X") && report.contains("b -> a: y"),
        "{report}"
    );
    assert_eq!(
        expand("crate::x::{a, b::{c, d as e}, self}"),
        [
            ["crate", "x", "a"].map(String::from).to_vec(),
            ["crate", "x", "b", "c"].map(String::from).to_vec(),
            ["crate", "x", "b", "d"].map(String::from).to_vec(),
            ["crate", "x", "self"].map(String::from).to_vec(),
        ]
    );
}
