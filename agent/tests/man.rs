//! The man pages vespa-agent(8) and vespa-agent.toml(5) are generated from the same sources as
//! `--help` (the clap definitions) and `check-config` (the table of keys), plus hand-written
//! sections in man/src/; so is the defaults file the package ships in
//! /usr/lib/vespa-agent/agent.d. This test fails when a committed file differs from what the
//! code generates; `VESPA_WRITE_MAN=1 cargo test --test man` writes them anew.

use std::path::{Path, PathBuf};

use clap::CommandFactory;

/// The pages' date in their title line: the day they were last revised. Change it with them.
const DATE: &str = "2026-12-05";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Text for roff: backslashes and hyphens escaped, no line taken for a request.
fn esc(s: &str) -> String {
    s.replace('\\', "\\e")
        .replace('-', "\\-")
        .lines()
        .map(|l| {
            if l.starts_with('.') || l.starts_with('\'') {
                format!("\\&{l}")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap()
}

/// One `.TP` per subcommand with its own options, which clap_mangen's SUBCOMMANDS lists only by
/// name.
fn commands(cmd: &clap::Command) -> String {
    let mut out = String::from(".SH COMMANDS\n");
    for sub in cmd.get_subcommands() {
        let args: Vec<&clap::Arg> = sub
            .get_arguments()
            .filter(|a| a.get_long().is_some() && !a.is_hide_set())
            .collect();
        let mut synopsis = format!("\\fBvespa\\-agent {}\\fR", esc(sub.get_name()));
        for a in &args {
            let value = a
                .get_value_names()
                .filter(|_| a.get_action().takes_values())
                .map(|v| format!(" \\fI{}\\fR", esc(v[0].as_str())))
                .unwrap_or_default();
            synopsis.push_str(&format!(
                " [\\fB\\-\\-{}\\fR{value}]",
                esc(a.get_long().unwrap())
            ));
        }
        let about = sub
            .get_long_about()
            .or(sub.get_about())
            .map(|s| s.to_string())
            .unwrap_or_default();
        out.push_str(&format!(".TP\n{synopsis}\n{}\n", esc(&about)));
        if !args.is_empty() {
            out.push_str(".RS\n");
            for a in &args {
                let help = a
                    .get_long_help()
                    .or(a.get_help())
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                out.push_str(&format!(
                    ".TP\n\\fB\\-\\-{}\\fR\n{}\n",
                    esc(a.get_long().unwrap()),
                    esc(&help)
                ));
            }
            out.push_str(".RE\n");
        }
    }
    out
}

fn vespa_agent_8() -> String {
    let cmd = vespa_agent::cli::Cli::command();
    let man = clap_mangen::Man::new(cmd.clone())
        .section("8")
        .date(DATE)
        .manual("System Manager's Manual")
        .source(format!("vespa-agent {}", env!("CARGO_PKG_VERSION")));
    let mut out = Vec::new();
    man.render_title(&mut out).unwrap();
    man.render_name_section(&mut out).unwrap();
    man.render_synopsis_section(&mut out).unwrap();
    man.render_description_section(&mut out).unwrap();
    man.render_options_section(&mut out).unwrap();
    let mut page = String::from_utf8(out).unwrap();
    page.push_str(&commands(&cmd));
    page.push_str(&read("man/src/vespa-agent.8.tail"));
    page
}

fn vespa_agent_toml_5() -> String {
    let mut page =
        read("man/src/vespa-agent.toml.5.head").replacen("\"\"", &format!("\"{DATE}\""), 1);
    let mut table = "";
    for k in vespa_agent::config::KEYS {
        let (t, name) = k.key.split_once('.').unwrap();
        if t != table {
            table = t;
            page.push_str(&format!(".SS [{t}]\n"));
        }
        let default = match k.default {
            Some(d) => format!(" = \\fI{}\\fR", esc(&format!("{d:?}"))),
            None => String::new(),
        };
        let secret = if k.secret { " (secret)" } else { "" };
        page.push_str(&format!(
            ".TP\n\\fB{}\\fR{default}{secret}\n{}\n",
            esc(name),
            esc(k.help)
        ));
    }
    page.push_str(&read("man/src/vespa-agent.toml.5.tail"));
    page
}

/// Every key with its built-in default (or, commented out, a key without one), as the
/// package's lowest-priority configuration layer: a node's operator reads there what applies
/// when /etc/vespa-agent says nothing.
fn defaults_toml() -> String {
    let mut out = String::from(
        "# vespa-agent's built-in defaults: the agent has the same values compiled in, so this\n\
         # file documents them. It is replaced on upgrade; put changes in a file in\n\
         # /etc/vespa-agent/agent.d/ instead (see vespa-agent.toml(5)).\n",
    );
    let mut table = "";
    for k in vespa_agent::config::KEYS {
        let (t, name) = k.key.split_once('.').unwrap();
        if t != table {
            table = t;
            out.push_str(&format!("\n[{t}]\n"));
        }
        out.push_str(&format!("# {}\n", k.help));
        match k.default {
            Some(d) => out.push_str(&format!("{name} = {}\n", toml_string(d))),
            None => out.push_str(&format!("# {name} = (not set)\n")),
        }
    }
    out
}

fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

#[test]
fn the_shipped_defaults_are_the_built_in_ones() {
    let dir = root().join("packaging/agent.d");
    let merged = vespa_agent::config::merge_files(&[dir.join("00-defaults.toml")]).unwrap();
    for k in vespa_agent::config::KEYS {
        let got = merged.get(k.key).map(|v| v.value.as_str());
        assert_eq!(got, k.default, "{}", k.key);
    }
}

#[test]
fn the_man_pages_are_what_the_code_generates() {
    for (file, page) in [
        ("man/vespa-agent.8", vespa_agent_8()),
        ("man/vespa-agent.toml.5", vespa_agent_toml_5()),
        ("packaging/agent.d/00-defaults.toml", defaults_toml()),
    ] {
        let path = root().join(file);
        if std::env::var_os("VESPA_WRITE_MAN").is_some() {
            std::fs::write(&path, &page).unwrap();
            continue;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == page,
            "{file} is stale: run `VESPA_WRITE_MAN=1 cargo test --test man` and commit it"
        );
    }
}

#[test]
fn every_command_and_key_is_in_a_page() {
    let eight = vespa_agent_8();
    for sub in vespa_agent::cli::Cli::command().get_subcommands() {
        assert!(
            eight.contains(&format!("\\fBvespa\\-agent {}\\fR", esc(sub.get_name()))),
            "{}",
            sub.get_name()
        );
    }
    let five = vespa_agent_toml_5();
    for k in vespa_agent::config::KEYS {
        let name = k.key.split_once('.').unwrap().1;
        assert!(
            five.contains(&format!("\\fB{}\\fR", esc(name))),
            "{}",
            k.key
        );
    }
}
