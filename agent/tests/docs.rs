//! The README and doc/ stay true to the code: every `vespa-agent` command and flag they show
//! exists (the clap definitions), every configuration key (the table `check-config` checks
//! against), every metric, every file or folder of the repository, every `VESPA_*` variable and
//! every MESSAGE_ID; every relative link leads somewhere. A rename in the code fails here
//! until the prose follows.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::CommandFactory;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The pages checked, with their text.
fn pages() -> Vec<(PathBuf, String)> {
    let mut out = vec![root().join("README.md")];
    for e in std::fs::read_dir(root().join("doc")).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "md") {
            out.push(e.path());
        }
    }
    out.sort();
    out.into_iter()
        .map(|p| {
            let t = std::fs::read_to_string(&p).unwrap();
            (p, t)
        })
        .collect()
}

/// What stands as code: `spans` and the lines of fenced blocks.
fn code(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            out.push(line.to_owned());
            continue;
        }
        let mut parts = line.split('`');
        parts.next();
        while let Some(span) = parts.next() {
            out.push(span.to_owned());
            parts.next();
        }
    }
    out
}

/// Every text of the code the pages may name (the agent, the harness, the scripts).
fn sources() -> String {
    let mut all = String::new();
    let mut todo = vec![
        root().join("agent/src"),
        root().join("agent/tests"),
        root().join("tests"),
        root().join("scripts"),
        root().join("packaging"),
    ];
    while let Some(p) = todo.pop() {
        if p.is_dir() {
            if p.ends_with("fuzz-corpus") {
                continue;
            }
            todo.extend(std::fs::read_dir(&p).unwrap().flatten().map(|e| e.path()));
        } else if let Ok(t) = std::fs::read_to_string(&p) {
            all.push_str(&t);
        }
    }
    all
}

fn words(s: &str) -> Vec<&str> {
    s.split(|c: char| c.is_whitespace() || "()[]{},;|\"'".contains(c))
        .filter(|w| !w.is_empty())
        .collect()
}

#[test]
fn every_command_and_flag_named_exists() {
    let cli = vespa_agent::cli::Cli::command();
    let global: BTreeSet<String> = cli
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_owned))
        .chain(["help", "version"].map(String::from))
        .collect();
    let mut checked = 0;
    let mut wrong = Vec::new();
    for (page, text) in pages() {
        for span in code(&text) {
            let w = words(&span);
            for (i, word) in w.iter().enumerate() {
                // `vespa-agent plan`, not `-p vespa-agent`, `vespa-agent.service` or a path.
                if *word != "vespa-agent" || (i > 0 && w[i - 1] == "-p") {
                    continue;
                }
                let mut args = w[i + 1..].iter().take_while(|a| !a.starts_with('#'));
                let mut sub = None;
                for a in args.by_ref() {
                    if let Some(flag) = a.strip_prefix("--") {
                        let flag = flag.split('=').next().unwrap();
                        let known = global.contains(flag)
                            || sub.is_some_and(|s: &clap::Command| {
                                s.get_arguments().any(|x| x.get_long() == Some(flag))
                            });
                        if !known && !flag.chars().all(|c| c.is_ascii_uppercase()) {
                            wrong.push(format!("{}: `{span}`: no flag --{flag}", page.display()));
                        }
                        checked += 1;
                    } else if sub.is_none() && a.chars().all(|c| c.is_ascii_lowercase() || c == '-')
                    {
                        match cli.find_subcommand(a) {
                            Some(s) => sub = Some(s),
                            None => {
                                wrong.push(format!("{}: `{span}`: no command {a}", page.display()))
                            }
                        }
                        checked += 1;
                    } else if sub.is_none() {
                        break;
                    }
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(checked > 10, "only {checked} commands and flags found");
}

#[test]
fn every_configuration_key_named_exists() {
    let keys: BTreeSet<&str> = vespa_agent::config::KEYS.iter().map(|k| k.key).collect();
    let sections: BTreeSet<&str> = keys.iter().map(|k| k.split('.').next().unwrap()).collect();
    let mut checked = 0;
    let mut wrong = Vec::new();
    for (page, text) in pages() {
        for span in code(&text) {
            let span = span.trim();
            // `reconcile.interval`, `[rebuild] automatic`, `[openstack]`.
            let (section, key) = if let Some(rest) = span.strip_prefix('[') {
                let (s, k) = rest.split_once(']').unwrap_or((rest, ""));
                (s, k.trim())
            } else if let Some((s, k)) = span.split_once('.') {
                (s, k)
            } else {
                continue;
            };
            if !sections.contains(section) {
                continue;
            }
            let key = key
                .split([' ', '='])
                .next()
                .unwrap()
                .trim_end_matches([',', '.', ':']);
            // A file like `agent.toml` or `agent.d` is not a key.
            if [
                "toml", "d", "db", "lock", "sock", "git", "rs", "service", "json", "yml", "md",
                "sh", "",
            ]
            .contains(&key)
                || key.contains(['/', '*'])
            {
                if span.starts_with('[') && key.is_empty() {
                    checked += 1;
                }
                continue;
            }
            checked += 1;
            if !keys.contains(format!("{section}.{key}").as_str()) {
                wrong.push(format!(
                    "{}: `{span}`: no key {section}.{key}",
                    page.display()
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(checked > 20, "only {checked} keys found");
}

#[test]
fn every_metric_variable_message_id_and_file_named_exists() {
    let src = sources();
    let mut wrong = Vec::new();
    let mut checked = 0;
    for (page, text) in pages() {
        let here = page.display().to_string();
        for w in text.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
            let metric = w
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count");
            if metric.starts_with("vespa_agent_") && metric.len() > 12 {
                checked += 1;
                if !src.contains(&format!("\"{metric}\"")) {
                    wrong.push(format!("{here}: no metric {metric}"));
                }
            }
            if w.starts_with("VESPA_") && w.len() > 6 {
                checked += 1;
                if !src.contains(w) {
                    wrong.push(format!("{here}: nothing reads {w}"));
                }
            }
            if w.len() == 32 && w.chars().all(|c| c.is_ascii_hexdigit()) {
                checked += 1;
                if !src.contains(w) {
                    wrong.push(format!("{here}: no MESSAGE_ID {w}"));
                }
            }
        }
        let tops = [
            "agent/",
            "tests/",
            "scripts/",
            "packaging/",
            "man/",
            "doc/",
            "examples/",
            "cloud-init/",
            "fuzz/",
            ".ci/",
        ];
        for span in code(&text) {
            let w = words(&span);
            for (i, w) in w.iter().enumerate() {
                // `run-tests.py --only tests/apply` names a test binary, not a file.
                if i > 0 && words(&span)[i - 1] == "--only" {
                    continue;
                }
                let path = w.trim_start_matches("./").trim_end_matches(['.', ':']);
                if !tops.iter().any(|t| path.starts_with(t)) || path.contains(['<', '*', '$']) {
                    continue;
                }
                checked += 1;
                if !root().join(path).exists() {
                    wrong.push(format!("{here}: `{span}`: no file {path}"));
                }
            }
        }
        // Relative links: [text](target).
        for link in text.split("](").skip(1) {
            let target = link.split([')', '#']).next().unwrap();
            if target.is_empty() || target.contains("://") {
                continue;
            }
            checked += 1;
            if !page.parent().unwrap().join(target).exists() {
                wrong.push(format!("{here}: a link to {target}, which is not there"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(checked > 30, "only {checked} names found");
}

#[test]
fn the_readme_is_a_front_door() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    assert!(
        readme.len() <= 12 * 1024,
        "README.md is {} bytes: the reference belongs in man/ and doc/",
        readme.len()
    );
    for must in [
        "bash scripts/demo.sh",
        "bash scripts/test.sh",
        "cargo test -p vespa-agent",
    ] {
        assert!(readme.contains(must), "README.md lacks `{must}`");
    }
}
