//! The journal's MESSAGE_IDs of the agent's key events, so that `journalctl MESSAGE_ID=<id>`
//! finds each kind wherever it happened, with COMMIT= and RESOURCE= on the entries that have
//! them. Documented in doc/operating.md (Journal); never change an id once released.

/// A revision was applied to DaCHS (COMMIT=).
pub const REVISION_APPLIED: &str = "213218f98bfc45de88be0c4012e3a722";
/// A commit was refused, at validate or at apply; the last good revision serves (COMMIT=).
pub const COMMIT_REFUSED: &str = "d99ee3a2b8ea4b318e2c62a2603543cc";
/// A resource's deploy failed and was rolled back (RESOURCE=).
pub const ROLLBACK: &str = "1ef2c5358ac147649fae9cb781fe6a23";
/// Managed files were edited on the node (RESOURCE=).
pub const DRIFT: &str = "865c3d047cbd40f7bb09b255a7a6c0ba";
/// A granule import finished (COMMIT=, counts).
pub const IMPORT_FINISHED: &str = "485faa265ee5495691c12cfb5dd925cb";
/// A granule file was refused, before or by the import (RESOURCE=, GRANULE=, REASON=).
pub const GRANULE_REFUSED: &str = "67e90018e3dd467b9b50d1aa2e041685";
/// A resource's own regression tests failed at its deploy (RESOURCE=, ERROR=).
pub const REGRESSION_FAILED: &str = "57a9cc07ef504b2896dfec603a632d51";

/// Every id, with the name doc/operating.md gives it.
pub const ALL: [(&str, &str); 7] = [
    ("revision applied", REVISION_APPLIED),
    ("commit refused", COMMIT_REFUSED),
    ("rollback", ROLLBACK),
    ("drift", DRIFT),
    ("import finished", IMPORT_FINISHED),
    ("granule refused", GRANULE_REFUSED),
    ("regression tests failed", REGRESSION_FAILED),
];

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_distinct_128_bit_hex_and_documented() {
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../doc/operating.md"))
                .unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for (name, id) in super::ALL {
            assert!(
                id.len() == 32
                    && id
                        .chars()
                        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
                "{id}"
            );
            assert!(seen.insert(id), "{id} twice");
            assert!(
                readme.contains(id),
                "doc/operating.md does not list {name} ({id})"
            );
        }
    }
}
