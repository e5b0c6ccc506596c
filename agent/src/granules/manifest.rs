//! The checksum manifest a collection may publish beside its data, for stores that return no
//! checksum of their own (Davrods). Its format, documented in vespa-service.toml(5):
//!
//! ```text
//! # comments and blank lines are ignored
//! <path> TAB <size> TAB <checksum> [TAB md5:<hex>] [TAB pid:<handle>]
//! ```
//!
//! `<checksum>` is `sha256:<64 hex digits>` or iRODS's own `sha2:<base64 of the 32 bytes>`.

use std::collections::BTreeMap;

/// What the manifest says of one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    pub size: u64,
    /// Lower-case hex.
    pub sha256: String,
    pub pid: Option<String>,
}

pub type Manifest = BTreeMap<String, Expected>;

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let s = s.trim_end_matches('=');
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = A.iter().position(|&a| a == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

pub(crate) fn sha256_of(field: &str) -> Option<String> {
    if let Some(hex) = field.strip_prefix("sha256:") {
        return (hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()))
            .then(|| hex.to_ascii_lowercase());
    }
    let raw = base64_decode(field.strip_prefix("sha2:")?)?;
    (raw.len() == 32).then(|| raw.iter().map(|b| format!("{b:02x}")).collect())
}

/// Parses a manifest; an error names the line and what is wrong with it.
pub fn parse(name: &str, text: &str) -> Result<Manifest, String> {
    let mut out = Manifest::new();
    for (i, line) in text.lines().enumerate() {
        let at = |m: &str| format!("{name}:{}: {m}", i + 1);
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        if fields.len() < 3 {
            return Err(at("expected `path<TAB>size<TAB>checksum`"));
        }
        let path = fields[0];
        if path.is_empty() || !super::plain(path) {
            return Err(at(&format!("`{path}` is not a plain relative path")));
        }
        let size = fields[1]
            .parse::<u64>()
            .map_err(|_| at(&format!("size `{}` is not a number", fields[1])))?;
        let sha256 = sha256_of(fields[2]).ok_or_else(|| {
            at("the checksum must be sha256:<64 hex digits> or sha2:<base64 of 32 bytes>")
        })?;
        let mut pid = None;
        for extra in &fields[3..] {
            if let Some(p) = extra.strip_prefix("pid:") {
                pid = Some(p.to_owned());
            } else if !extra.starts_with("md5:") {
                return Err(at(&format!("unknown field `{extra}` (md5:… or pid:…)")));
            }
        }
        if out
            .insert(path.to_owned(), Expected { size, sha256, pid })
            .is_some()
        {
            return Err(at(&format!("`{path}` is listed twice")));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A_SHA: &str = "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb";

    #[test]
    fn both_checksum_spellings_are_read() {
        let text = format!(
            "# VESPA granules\n\ng1.csv\t1\tsha256:{A_SHA}\tmd5:0cc175b9c0f1b6a831c399e269772661\n\
             sub/g2.csv\t1\tsha2:ypeBEsobvcr6wjGzmiPcTaeG7/gUfE5yuYB3ha/uSLs=\tpid:21.T12995/abc\n"
        );
        let m = parse("MANIFEST", &text).unwrap();
        assert_eq!(m["g1.csv"].sha256, A_SHA);
        assert_eq!(m["sub/g2.csv"].sha256, A_SHA);
        assert_eq!(m["sub/g2.csv"].pid.as_deref(), Some("21.T12995/abc"));
    }

    #[test]
    fn bad_lines_are_named() {
        for (text, want) in [
            ("g.csv 1 sha256:x\n", "MANIFEST:1: expected"),
            ("# ok\ng.csv\tten\tsha256:x\n", "MANIFEST:2: size `ten`"),
            ("g.csv\t1\tsha256:abc\n", "checksum must be"),
            ("g.csv\t1\tsha2:AAAA\n", "checksum must be"),
            ("../g.csv\t1\tsha256:x\n", "not a plain relative path"),
            (
                &format!("g.csv\t1\tsha256:{A_SHA}\tcolor:red\n"),
                "unknown field",
            ),
            (
                &format!("g.csv\t1\tsha256:{A_SHA}\ng.csv\t1\tsha256:{A_SHA}\n"),
                "listed twice",
            ),
        ] {
            let e = parse("MANIFEST", text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
