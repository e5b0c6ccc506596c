//! What `check-config` prints: the merged configuration as valid TOML, each value followed by
//! the file and line it came from. Secret keys show the file's path, never its content.

use std::fmt::Write;

use super::{KEYS, Origin, Settings};

pub fn render(settings: &Settings) -> String {
    let merged = &settings.merged;
    let mut out = String::new();
    out.push_str("# vespa-agent configuration, merged from (lowest priority first):\n");
    if merged.files.is_empty() {
        out.push_str("#   (no files: built-in defaults only)\n");
    }
    for f in &merged.files {
        let _ = writeln!(out, "#   {}", f.display());
    }
    out.push_str(
        "# Secrets are shown by the path of their file; their contents are never printed.\n",
    );

    let mut section = "";
    for spec in KEYS {
        let (sec, name) = spec.key.split_once('.').expect("keys are section.name");
        if sec != section {
            let _ = write!(out, "\n[{sec}]\n");
            section = sec;
        }
        match merged.get(spec.key) {
            Some(v) => {
                let quoted = toml::Value::String(v.value.clone()).to_string();
                let origin = match &v.origin {
                    Origin::Default => "default".to_owned(),
                    o => o.to_string(),
                };
                let kind = if spec.secret { "secret file, " } else { "" };
                let _ = writeln!(out, "{name} = {quoted}  # {kind}{origin}");
            }
            None => {
                let _ = writeln!(out, "# {name} is not set: {}", spec.help);
            }
        }
    }
    out
}
