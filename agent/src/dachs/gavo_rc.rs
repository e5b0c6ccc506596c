//! DaCHS's configuration file (`/etc/gavo.rc`, Python configparser syntax): the agent manages
//! four keys from the service repository's `[server]` table and leaves every other line exactly
//! as the operator wrote it (the admin password, ports, database tuning live there).

use crate::service::ServerSettings;

/// (section, key as DaCHS spells it) of each managed key. configparser compares keys without
/// regard to case, and so does the rendering.
const MANAGED: [(&str, &str); 4] = [
    ("web", "serverURL"),
    ("web", "sitename"),
    ("ivoa", "authority"),
    ("general", "maintainerAddress"),
];

fn wanted(s: &ServerSettings) -> [Option<&str>; 4] {
    [
        s.server_url.as_deref(),
        s.sitename.as_deref(),
        s.authority.as_deref(),
        s.maintainer_address.as_deref(),
    ]
}

/// configparser interpolates `%(name)s`; a literal `%` is written `%%`.
fn escape(v: &str) -> String {
    v.replace('%', "%%")
}

/// `key` of a `key: value` or `key = value` line, if it is one (not a comment, not a
/// continuation, not a section header).
fn key_of(line: &str) -> Option<&str> {
    if line.starts_with([' ', '\t']) {
        return None;
    }
    let t = line.trim();
    if t.is_empty() || t.starts_with(['#', ';', '[']) {
        return None;
    }
    let end = t.find([':', '='])?;
    Some(t[..end].trim())
}

fn section_of(line: &str) -> Option<String> {
    let t = line.trim();
    t.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .map(|s| s.trim().to_ascii_lowercase())
}

/// The file with the managed keys set to `server`'s values; keys `server` leaves unset keep
/// whatever the file says. Rendering its own output again changes nothing.
pub fn render(existing: &str, server: &ServerSettings) -> String {
    let values = wanted(server);
    let mut out: Vec<String> = Vec::new();
    let mut done = [false; 4];
    // Where each section's last content line went, to append missing keys there.
    let mut section_end: Vec<(String, usize)> = Vec::new();
    let mut section = "general".to_owned();
    let mut skipping_continuation = false;
    for line in existing.lines() {
        if skipping_continuation && line.starts_with([' ', '\t']) && !line.trim().is_empty() {
            continue;
        }
        skipping_continuation = false;
        if let Some(s) = section_of(line) {
            section = s;
            out.push(line.to_owned());
            section_end.push((section.clone(), out.len()));
            continue;
        }
        let managed = key_of(line).and_then(|k| {
            MANAGED
                .iter()
                .position(|(sec, key)| *sec == section && key.eq_ignore_ascii_case(k))
        });
        match managed.and_then(|i| values[i].map(|v| (i, v))) {
            Some((i, v)) if !done[i] => {
                out.push(format!("{}: {}", MANAGED[i].1, escape(v)));
                done[i] = true;
                skipping_continuation = true;
            }
            // A second occurrence of a managed key would override the first: drop it.
            Some(_) => skipping_continuation = true,
            None => out.push(line.to_owned()),
        }
        if !line.trim().is_empty() {
            match section_end.iter_mut().rev().find(|(s, _)| *s == section) {
                Some(e) => e.1 = out.len(),
                None => section_end.push((section.clone(), out.len())),
            }
        }
    }
    // Missing keys: at the end of their section, or in a new section at the end.
    let mut appended: Vec<(usize, String)> = Vec::new();
    let mut new_sections: Vec<(String, Vec<String>)> = Vec::new();
    for (i, (sec, key)) in MANAGED.iter().enumerate() {
        let Some(v) = values[i].filter(|_| !done[i]) else {
            continue;
        };
        let line = format!("{key}: {}", escape(v));
        match section_end.iter().rev().find(|(s, _)| s == sec) {
            Some((_, at)) => appended.push((*at, line)),
            None => match new_sections.iter_mut().find(|(s, _)| s == sec) {
                Some((_, lines)) => lines.push(line),
                None => new_sections.push((sec.to_string(), vec![line])),
            },
        }
    }
    appended.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
    for (at, line) in appended {
        out.insert(at, line);
    }
    for (sec, lines) in new_sections {
        if out.last().is_some_and(|l| !l.trim().is_empty()) {
            out.push(String::new());
        }
        out.push(format!("[{sec}]"));
        out.extend(lines);
    }
    let mut text = out.join("\n");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(site: Option<&str>) -> ServerSettings {
        ServerSettings {
            server_url: Some("http://vespa.example.org".into()),
            sitename: site.map(Into::into),
            authority: Some("vespa.example.org".into()),
            maintainer_address: Some("ops@example.org".into()),
        }
    }

    const OPERATOR: &str = "[general]\nrootDir: /var/gavo\nlogLevel: info\n\n[web]\nserverURL: http://localhost:8080\nbindAddress: 127.0.0.1\nSiteName: Old name\n  continued on a second line\nadminpasswd: s3cret\n\n# the operator's note\n[db]\nprofile: feed\n";

    #[test]
    fn managed_keys_are_set_and_everything_else_is_kept() {
        let out = render(OPERATOR, &server(Some("VESPA node")));
        assert_eq!(
            out,
            "[general]\nrootDir: /var/gavo\nlogLevel: info\nmaintainerAddress: ops@example.org\n\n[web]\nserverURL: http://vespa.example.org\nbindAddress: 127.0.0.1\nsitename: VESPA node\nadminpasswd: s3cret\n\n# the operator's note\n[db]\nprofile: feed\n\n[ivoa]\nauthority: vespa.example.org\n"
        );
        assert_eq!(
            render(&out, &server(Some("VESPA node"))),
            out,
            "not idempotent"
        );
    }

    #[test]
    fn unset_keys_keep_the_operators_value() {
        let out = render(OPERATOR, &server(None));
        assert!(
            out.contains("SiteName: Old name\n  continued on a second line\n"),
            "{out}"
        );
    }

    #[test]
    fn percent_signs_are_escaped_and_duplicates_dropped() {
        let out = render(
            "[web]\nsitename: a\nsitename = b\n",
            &server(Some("100% VESPA")),
        );
        assert_eq!(out.matches("sitename").count(), 1, "{out}");
        assert!(out.contains("sitename: 100%% VESPA\n"), "{out}");
    }

    #[test]
    fn an_empty_or_odd_file_gets_the_sections_it_needs() {
        let out = render("", &server(Some("n")));
        assert_eq!(
            out,
            "[web]\nserverURL: http://vespa.example.org\nsitename: n\n\n[ivoa]\nauthority: vespa.example.org\n\n[general]\nmaintainerAddress: ops@example.org\n"
        );
        // Keys before any section header (configparser refuses them) are taken as [general].
        let out = render("maintainerAddress: old@x\n", &server(None));
        assert!(
            out.starts_with("maintainerAddress: ops@example.org\n"),
            "{out}"
        );
        let odd = "no separator here\n[web\n=novalue\n";
        let out = render(odd, &server(None));
        assert!(out.starts_with(odd), "{out}");
    }
}
