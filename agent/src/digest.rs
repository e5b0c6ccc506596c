//! The golden state of a node: a digest of what it serves, so that two nodes, or one node before
//! and after a rebuild, can be compared with `vespa-agent status --digest`. It covers the applied
//! revision and, for every table the agent deployed, its row count and a hash of its rows as
//! DaCHS's TAP service returns them. Rows are hashed one by one and the hashes sorted, so the
//! digest does not depend on the order the database happens to return them in.

use sha2::{Digest as _, Sha256};

use crate::dachs::tap::{TapClient, TapError};

#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    #[error("{table}: {source}")]
    Tap { table: String, source: TapError },
    #[error("{table}: {message}")]
    Answer { table: String, message: String },
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TableDigest {
    pub table: String,
    pub rows: u64,
    /// SHA-256 over the sorted SHA-256s of the rows.
    pub sha256: String,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct NodeDigest {
    pub revision: Option<String>,
    pub tables: Vec<TableDigest>,
    /// SHA-256 over [`NodeDigest::lines`] without this one: what to compare.
    pub digest: String,
}

impl NodeDigest {
    pub fn new(revision: Option<String>, mut tables: Vec<TableDigest>) -> NodeDigest {
        tables.sort_by(|a, b| a.table.cmp(&b.table));
        let mut d = NodeDigest {
            revision,
            tables,
            digest: String::new(),
        };
        let body: String = d.body_lines().concat();
        d.digest = hex(&Sha256::digest(body.as_bytes()));
        d
    }

    fn body_lines(&self) -> Vec<String> {
        let mut out = vec![format!(
            "revision {}\n",
            self.revision.as_deref().unwrap_or("none")
        )];
        for t in &self.tables {
            out.push(format!(
                "table {} rows {} sha256 {}\n",
                t.table, t.rows, t.sha256
            ));
        }
        out
    }

    /// The text `status --digest` prints: the parts, then `digest <hex>`.
    pub fn lines(&self) -> String {
        let mut s = self.body_lines().concat();
        s.push_str(&format!("digest {}\n", self.digest));
        s
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The order-independent hash of a table's rows: each row's cells joined with a separator that
/// cannot occur in text (U+001F), hashed, the hashes sorted and hashed together.
pub fn rows_sha256<'a>(rows: impl Iterator<Item = &'a Vec<String>>) -> (u64, String) {
    let mut hashes: Vec<[u8; 32]> = rows
        .map(|r| Sha256::digest(r.join("\u{1f}").as_bytes()).into())
        .collect();
    hashes.sort_unstable();
    let mut all = Sha256::new();
    for h in &hashes {
        all.update(h);
    }
    (hashes.len() as u64, hex(&all.finalize()))
}

/// Reads a whole table over TAP and digests it. The count is asked first, and the rows are
/// asked with exactly that MAXREC, so a table DaCHS would cut is an error, not a wrong digest.
pub async fn table(tap: &TapClient, table: &str) -> Result<TableDigest, DigestError> {
    let tap_err = |source| DigestError::Tap {
        table: table.to_owned(),
        source,
    };
    let answer_err = |message: String| DigestError::Answer {
        table: table.to_owned(),
        message,
    };
    let count = crate::reconcile::pass::count_rows(tap, table).await;
    let n = match (count.rows, count.error) {
        (Some(n), _) => u64::try_from(n).map_err(|_| answer_err(format!("a count of {n}")))?,
        (None, error) => return Err(answer_err(error.unwrap_or_default())),
    };
    // The names passed the RD check: identifiers only, safe in ADQL.
    let all = tap
        .query_max(&format!("SELECT * FROM {table}"), Some(n.max(1)))
        .await
        .map_err(tap_err)?;
    if all.status.as_deref() == Some("OVERFLOW") || all.rows.len() as u64 != n {
        return Err(answer_err(format!(
            "TAP returned {} of {n} rows (the table changed while it was read, or DaCHS cut \
             the answer)",
            all.rows.len()
        )));
    }
    let (rows, sha256) = rows_sha256(all.rows.iter());
    Ok(TableDigest {
        table: table.to_owned(),
        rows,
        sha256,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(r: &[&[&str]]) -> Vec<Vec<String>> {
        r.iter()
            .map(|c| c.iter().map(|s| s.to_string()).collect())
            .collect()
    }

    #[test]
    fn the_row_hash_ignores_order_and_sees_every_cell_and_duplicate() {
        let a = rows(&[&["g1", "1.5"], &["g2", "2.5"]]);
        let b = rows(&[&["g2", "2.5"], &["g1", "1.5"]]);
        assert_eq!(rows_sha256(a.iter()), rows_sha256(b.iter()));
        let changed = rows(&[&["g1", "1.5"], &["g2", "2.6"]]);
        assert_ne!(rows_sha256(a.iter()).1, rows_sha256(changed.iter()).1);
        let doubled = rows(&[&["g1", "1.5"], &["g2", "2.5"], &["g2", "2.5"]]);
        assert_eq!(rows_sha256(doubled.iter()).0, 3);
        assert_ne!(rows_sha256(a.iter()).1, rows_sha256(doubled.iter()).1);
        // Cells are separated: ("ab", "c") is not ("a", "bc").
        let x = rows(&[&["ab", "c"]]);
        let y = rows(&[&["a", "bc"]]);
        assert_ne!(rows_sha256(x.iter()).1, rows_sha256(y.iter()).1);
    }

    #[test]
    fn the_node_digest_covers_the_revision_and_every_table_in_name_order() {
        let t = |name: &str, sha: &str| TableDigest {
            table: name.into(),
            rows: 1,
            sha256: sha.into(),
        };
        let one = NodeDigest::new(Some("abc".into()), vec![t("b.t", "1"), t("a.t", "2")]);
        let two = NodeDigest::new(Some("abc".into()), vec![t("a.t", "2"), t("b.t", "1")]);
        assert_eq!(one, two);
        assert!(
            one.lines()
                .starts_with("revision abc\ntable a.t rows 1 sha256 2\n")
        );
        let other_rev = NodeDigest::new(Some("abd".into()), vec![t("a.t", "2"), t("b.t", "1")]);
        assert_ne!(one.digest, other_rev.digest);
        let other_rows = NodeDigest::new(Some("abc".into()), vec![t("a.t", "3"), t("b.t", "1")]);
        assert_ne!(one.digest, other_rows.digest);
    }
}
