//! The state store: `<state-dir>/state.db`, SQLite in WAL mode, one writer.
//!
//! The store is the agent's memory of what it did (passes, and later revisions and granules).
//! It is never replaced silently: a damaged database, or one a newer vespa-agent migrated,
//! stops the agent with an error that says what to do, and the file stays as it was.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

/// The schema, one step per version. Step N takes a database from version N to N+1; a step is
/// never edited once released (add a new one instead).
const MIGRATIONS: &[&str] = &[
    // 1: the reconcile passes.
    "CREATE TABLE passes (
        id          INTEGER PRIMARY KEY,
        trigger     TEXT NOT NULL,
        started_ms  INTEGER NOT NULL,
        finished_ms INTEGER,
        outcome     TEXT CHECK (outcome IN ('success', 'failure', 'interrupted')),
        stage       TEXT,
        error       TEXT
    );",
    // 2: commits seen (and whether they were applied or failed), and the desired and applied
    // revisions.
    "CREATE TABLE commits (
        sha         TEXT PRIMARY KEY,
        first_seen_ms INTEGER NOT NULL,
        updated_ms  INTEGER NOT NULL,
        outcome     TEXT CHECK (outcome IN ('applied', 'failed')),
        stage       TEXT,
        error       TEXT
    );
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
    // 3: the resources deployed into DaCHS, each with the hash of its managed files, so that a
    // pass over an unchanged revision runs no DaCHS command, and a resource that leaves the
    // repository can still be dropped by its RD id.
    "CREATE TABLE resources (
        dir         TEXT PRIMARY KEY,
        rd_id       TEXT NOT NULL,
        hash        TEXT NOT NULL,
        published   INTEGER NOT NULL,
        tables      TEXT NOT NULL,
        sha         TEXT NOT NULL,
        updated_ms  INTEGER NOT NULL
    );",
    // 4: every granule brought onto the node, with its provenance and import state.
    "CREATE TABLE granules (
        resource    TEXT NOT NULL,
        collection  TEXT NOT NULL,
        path        TEXT NOT NULL,
        size        INTEGER NOT NULL,
        version     TEXT NOT NULL,
        sha256      TEXT NOT NULL,
        source_url  TEXT NOT NULL,
        sha         TEXT NOT NULL,
        mtime_ms    INTEGER NOT NULL,
        fetched_ms  INTEGER NOT NULL,
        state       TEXT NOT NULL CHECK (state IN ('pending', 'imported', 'failed')),
        error       TEXT,
        PRIMARY KEY (resource, collection, path)
    );",
    // 5: what the automatic rebuild policy decided, and what became of it: the repair's rate
    // limit and the decisions counted in /metrics both survive a restart of the daemon.
    "CREATE TABLE rebuilds (
        id          INTEGER PRIMARY KEY,
        at_ms       INTEGER NOT NULL,
        level       TEXT NOT NULL CHECK (level IN ('repair', 'vm')),
        action      TEXT NOT NULL,
        reason      TEXT NOT NULL
    );",
    // 6: the few granules not imported, indexed apart: an incremental import reads the pending
    // ones and the metrics count them at every pass, each a sweep of 100,000 records without it.
    "CREATE INDEX granules_waiting ON granules (state, resource, collection)
        WHERE state <> 'imported';",
];

/// Keys of the `meta` table.
pub const DESIRED: &str = "desired_revision";
pub const APPLIED: &str = "applied_revision";
/// Set by the daemon when it starts an automatic repair; read, and removed, by `rebuild`.
pub const REBUILD_REQUEST: &str = "rebuild_request";

/// One decision of the rebuild policy, or what became of one.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RebuildRecord {
    pub at_ms: i64,
    /// repair (level 1) or vm (level 2).
    pub level: String,
    /// started, dry-run, refused, postponed, failed, succeeded, not-needed.
    pub action: String,
    pub reason: String,
}

impl RebuildRecord {
    /// A decision taken now.
    pub fn now(level: &str, action: &str, reason: &str) -> RebuildRecord {
        RebuildRecord {
            at_ms: now_ms(),
            level: level.to_owned(),
            action: action.to_owned(),
            reason: reason.to_owned(),
        }
    }
}

/// How many rebuild records the store keeps.
const REBUILDS_KEPT: i64 = 200;

/// What the store remembers of a commit.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CommitRecord {
    pub sha: String,
    pub outcome: Option<String>,
    pub stage: Option<String>,
    pub error: Option<String>,
}

/// A resource as deployed into DaCHS.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ResourceRecord {
    pub dir: String,
    pub rd_id: String,
    /// Over the resource's managed files (everything but its granule directories).
    pub hash: String,
    pub published: bool,
    /// `schema.table` of its ADQL tables.
    pub tables: Vec<String>,
    /// The commit it was deployed from.
    pub sha: String,
}

/// Runs `f` with the daemon's store. The store is only touched between awaits; a poisoned
/// lock means a panic in an earlier pass, and the connection itself is still consistent
/// (SQLite transactions).
pub fn with_store<T>(store: &std::sync::Mutex<StateStore>, f: impl FnOnce(&StateStore) -> T) -> T {
    f(&store.lock().unwrap_or_else(|e| e.into_inner()))
}

/// A granule on the node: where it came from and whether DaCHS has it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct GranuleRecord {
    pub resource: String,
    pub collection: String,
    /// Relative to the collection's target directory.
    pub path: String,
    pub size: u64,
    /// The source's change marker (ETag, or size and mtime).
    pub version: String,
    pub sha256: String,
    pub source_url: String,
    /// The commit whose configuration brought it.
    pub sha: String,
    /// The mtime given to the file, for DaCHS's re-import rule.
    pub mtime_ms: i64,
    pub fetched_ms: i64,
    /// pending (not yet imported), imported, failed (the import refused it).
    pub state: String,
    pub error: Option<String>,
}

/// What comparing a collection's listing needs of a granule the node holds: a few fields of its
/// record, so that a collection of 100,000 loads with two strings per file instead of eight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldGranule {
    pub path: String,
    pub version: String,
    pub mtime_ms: i64,
    /// For a granule in state failed: the checksum of the bytes it had (empty if it never came)
    /// and the reason.
    pub failed: Option<(String, Option<String>)>,
}

impl From<&GranuleRecord> for HeldGranule {
    fn from(g: &GranuleRecord) -> HeldGranule {
        HeldGranule {
            path: g.path.clone(),
            version: g.version.clone(),
            mtime_ms: g.mtime_ms,
            failed: (g.state == "failed").then(|| (g.sha256.clone(), g.error.clone())),
        }
    }
}

/// How many passes the store remembers.
const PASSES_KEPT: i64 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state directory {}: {source}", path.display())]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "another vespa-agent is using {} (it holds {}); stop it first (systemctl stop vespa-agent)",
        dir.display(),
        lock.display()
    )]
    Locked { dir: PathBuf, lock: PathBuf },
    #[error(
        "state store {} is damaged or not a SQLite database ({detail}). It was left untouched: \
         move it aside and the agent starts a new one (the node re-derives its state from its \
         sources), or restore it from a backup",
        path.display()
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error(
        "state store {} has schema version {found}, written by a newer vespa-agent (this one \
         knows versions up to {known}). It was left untouched: run the newer vespa-agent, or move \
         the file aside to start a new one",
        path.display()
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("state store {}: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
}

/// What a rebuild decision can become, per level: the actions of a [`RebuildRecord`] and the
/// labels of `vespa_agent_rebuild_decisions_total`.
pub const REBUILD_ACTIONS: [(&str, &[&str]); 2] = [
    (
        "repair",
        &["started", "dry-run", "refused", "failed", "succeeded"],
    ),
    (
        "vm",
        &["started", "dry-run", "refused", "failed", "not-needed"],
    ),
];

/// How a pass ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Failure,
    /// The process stopped (killed, crashed, power lost) before the pass finished.
    Interrupted,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Interrupted => "interrupted",
        }
    }

    fn parse(s: &str) -> Option<Outcome> {
        match s {
            "success" => Some(Outcome::Success),
            "failure" => Some(Outcome::Failure),
            "interrupted" => Some(Outcome::Interrupted),
            _ => None,
        }
    }
}

/// One pass as remembered.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PassRecord {
    pub id: i64,
    pub trigger: String,
    pub started_ms: i64,
    pub finished_ms: Option<i64>,
    /// `None` while the pass runs.
    pub outcome: Option<Outcome>,
    pub stage: Option<String>,
    pub error: Option<String>,
}

impl PassRecord {
    pub fn duration(&self) -> Option<Duration> {
        let ms = self.finished_ms? - self.started_ms;
        Some(Duration::from_millis(ms.max(0) as u64))
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The writer's handle. Only one process may hold it: the lock file is held (flock) for the
/// handle's lifetime, and released by the kernel if the process dies.
pub struct StateStore {
    conn: Connection,
    path: PathBuf,
    _lock: std::fs::File,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore")
            .field("path", &self.path)
            .finish()
    }
}

pub fn db_path(state_dir: &Path) -> PathBuf {
    state_dir.join("state.db")
}

impl StateStore {
    /// Opens (creating if needed) the store in `state_dir`, migrating it to the current schema,
    /// after checking the whole file's structure: what the daemon does at its start.
    pub fn open(state_dir: &Path) -> Result<StateStore, StateError> {
        StateStore::open_checked(state_dir, true)
    }

    /// [`StateStore::open`] without the check of the whole file, for a one-shot command: the
    /// check reads every page (at 100,000 granules 30 ms or more, a tenth of a small import's
    /// own time), the command reads a few, and a damaged one among those fails it with the same
    /// error. The daemon checks the whole file again when it starts.
    pub fn open_for_command(state_dir: &Path) -> Result<StateStore, StateError> {
        StateStore::open_checked(state_dir, false)
    }

    fn open_checked(state_dir: &Path, check: bool) -> Result<StateStore, StateError> {
        let dir_err = |source| StateError::Dir {
            path: state_dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(state_dir).map_err(dir_err)?;
        let lock = take_lock(state_dir)?;
        let path = db_path(state_dir);
        let conn = Connection::open(&path).map_err(|e| classify(&path, e))?;
        configure(&conn, &path)?;
        if check {
            check_structure(&conn, &path)?;
        }
        let store = StateStore {
            conn,
            path,
            _lock: lock,
        };
        store.migrate()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, e: rusqlite::Error) -> StateError {
        classify(&self.path, e)
    }

    fn migrate(&self) -> Result<(), StateError> {
        let known = MIGRATIONS.len() as i64;
        let found = schema_version(&self.conn, &self.path)?;
        if found > known {
            return Err(StateError::TooNew {
                path: self.path.clone(),
                found,
                known,
            });
        }
        for (i, step) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            // Each step and its version bump commit together, so a crash mid-migration leaves
            // the previous version intact.
            let sql = format!(
                "BEGIN IMMEDIATE; {step} PRAGMA user_version = {}; COMMIT;",
                i + 1
            );
            if let Err(e) = self.conn.execute_batch(&sql) {
                let _ = self.conn.execute_batch("ROLLBACK;");
                return Err(self.err(e));
            }
            tracing::info!(version = i + 1, path = %self.path.display(), "state store migrated");
        }
        Ok(())
    }

    /// Marks passes that never finished (the process was killed) as interrupted.
    pub fn close_interrupted(&self) -> Result<usize, StateError> {
        self.conn
            .execute(
                "UPDATE passes SET outcome = 'interrupted', finished_ms = ?1
                 WHERE outcome IS NULL",
                params![now_ms()],
            )
            .map_err(|e| self.err(e))
    }

    pub fn begin_pass(&self, trigger: &str) -> Result<i64, StateError> {
        self.conn
            .execute(
                "INSERT INTO passes (trigger, started_ms) VALUES (?1, ?2)",
                params![trigger, now_ms()],
            )
            .map_err(|e| self.err(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn finish_pass(
        &self,
        id: i64,
        outcome: Outcome,
        stage: Option<&str>,
        error: Option<&str>,
    ) -> Result<(), StateError> {
        self.conn
            .execute(
                "UPDATE passes SET finished_ms = ?2, outcome = ?3, stage = ?4, error = ?5
                 WHERE id = ?1",
                params![id, now_ms(), outcome.as_str(), stage, error],
            )
            .map_err(|e| self.err(e))?;
        self.conn
            .execute(
                "DELETE FROM passes WHERE id <= ?1",
                params![id - PASSES_KEPT],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn last_pass(&self) -> Result<Option<PassRecord>, StateError> {
        last_pass(&self.conn, &self.path)
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>, StateError> {
        meta(&self.conn, &self.path, key)
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StateError> {
        self.conn
            .execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    pub fn commit(&self, sha: &str) -> Result<Option<CommitRecord>, StateError> {
        commit(&self.conn, &self.path, sha)
    }

    pub fn delete_meta(&self, key: &str) -> Result<(), StateError> {
        self.conn
            .execute("DELETE FROM meta WHERE key = ?1", params![key])
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Records a decision of the rebuild policy (or its outcome), keeping the newest few.
    pub fn record_rebuild(&self, r: &RebuildRecord) -> Result<(), StateError> {
        self.conn
            .execute(
                "INSERT INTO rebuilds (at_ms, level, action, reason) VALUES (?1, ?2, ?3, ?4)",
                params![r.at_ms, r.level, r.action, r.reason],
            )
            .and_then(|_| {
                self.conn.execute(
                    "DELETE FROM rebuilds WHERE id <= (SELECT MAX(id) FROM rebuilds) - ?1",
                    params![REBUILDS_KEPT],
                )
            })
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// The newest record of `level` whose action is one of `actions`.
    pub fn last_rebuild(
        &self,
        level: &str,
        actions: &[&str],
    ) -> Result<Option<RebuildRecord>, StateError> {
        let mut best: Option<RebuildRecord> = None;
        for r in self.rebuilds()? {
            if r.level == level && actions.contains(&r.action.as_str()) {
                best = Some(r);
            }
        }
        Ok(best)
    }

    /// Every kept record, oldest first.
    pub fn rebuilds(&self) -> Result<Vec<RebuildRecord>, StateError> {
        rebuilds(&self.conn).map_err(|e| self.err(e))
    }

    /// Records what became of a commit (`outcome`: applied or failed; `None` forgets a failure
    /// so that the commit is tried again).
    pub fn record_commit(
        &self,
        sha: &str,
        outcome: Option<&str>,
        stage: Option<&str>,
        error: Option<&str>,
    ) -> Result<(), StateError> {
        let now = now_ms();
        self.conn
            .execute(
                "INSERT INTO commits (sha, first_seen_ms, updated_ms, outcome, stage, error)
                 VALUES (?1, ?2, ?2, ?3, ?4, ?5)
                 ON CONFLICT (sha) DO UPDATE SET updated_ms = ?2, outcome = ?3, stage = ?4,
                   error = ?5",
                params![sha, now, outcome, stage, error],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    pub fn resources(&self) -> Result<Vec<ResourceRecord>, StateError> {
        resources(&self.conn, &self.path)
    }

    pub fn put_resource(&self, r: &ResourceRecord) -> Result<(), StateError> {
        self.conn
            .execute(
                "INSERT INTO resources (dir, rd_id, hash, published, tables, sha, updated_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (dir) DO UPDATE SET rd_id = ?2, hash = ?3, published = ?4,
                   tables = ?5, sha = ?6, updated_ms = ?7",
                params![
                    r.dir,
                    r.rd_id,
                    r.hash,
                    r.published,
                    r.tables.join(" "),
                    r.sha,
                    now_ms()
                ],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Forgets every deployed resource, every granule and the applied revision, in one
    /// transaction: the next pass deploys as on a fresh node (`vespa-agent rebuild`).
    pub fn forget_deployments(&self) -> Result<(), StateError> {
        self.conn
            .execute_batch(&format!(
                "BEGIN IMMEDIATE; DELETE FROM resources; DELETE FROM granules; \
                 DELETE FROM meta WHERE key = '{APPLIED}'; COMMIT;"
            ))
            .map_err(|e| {
                let _ = self.conn.execute_batch("ROLLBACK");
                self.err(e)
            })
    }

    /// Forgets a resource and its granules (their files went with its directory).
    pub fn remove_resource(&self, dir: &str) -> Result<(), StateError> {
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| self.err(e))?;
        let done = self
            .conn
            .execute("DELETE FROM resources WHERE dir = ?1", params![dir])
            .and_then(|_| {
                self.conn
                    .execute("DELETE FROM granules WHERE resource = ?1", params![dir])
            })
            .and_then(|_| self.conn.execute_batch("COMMIT"));
        if let Err(e) = done {
            let _ = self.conn.execute_batch("ROLLBACK");
            return Err(self.err(e));
        }
        Ok(())
    }

    pub fn granules(
        &self,
        resource: &str,
        collection: &str,
    ) -> Result<Vec<GranuleRecord>, StateError> {
        granules(&self.conn, resource, collection).map_err(|e| self.err(e))
    }

    /// What a sync compares its listing with: the collection's granules, a few fields each.
    pub fn held_granules(
        &self,
        resource: &str,
        collection: &str,
    ) -> Result<Vec<HeldGranule>, StateError> {
        held_granules(&self.conn, resource, collection).map_err(|e| self.err(e))
    }

    /// Only the collection's granules waiting for an import: what an incremental import reads,
    /// without loading every record of a collection of 100,000.
    pub fn pending_granules(
        &self,
        resource: &str,
        collection: &str,
    ) -> Result<Vec<GranuleRecord>, StateError> {
        pending_granules(&self.conn, resource, collection).map_err(|e| self.err(e))
    }

    pub fn put_granule(&self, g: &GranuleRecord) -> Result<(), StateError> {
        self.put_granules(std::slice::from_ref(g))
    }

    /// Records many granules in one transaction: a first import of 100,000 files would
    /// otherwise pay one commit each.
    pub fn put_granules(&self, gs: &[GranuleRecord]) -> Result<(), StateError> {
        let run = || -> rusqlite::Result<()> {
            let tx = self.conn.unchecked_transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO granules (resource, collection, path, size, version, sha256,
                       source_url, sha, mtime_ms, fetched_ms, state, error)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                     ON CONFLICT (resource, collection, path) DO UPDATE SET size = ?4,
                       version = ?5, sha256 = ?6, source_url = ?7, sha = ?8, mtime_ms = ?9,
                       fetched_ms = ?10, state = ?11, error = ?12",
                )?;
                for g in gs {
                    stmt.execute(params![
                        g.resource,
                        g.collection,
                        g.path,
                        g.size as i64,
                        g.version,
                        g.sha256,
                        g.source_url,
                        g.sha,
                        g.mtime_ms,
                        g.fetched_ms,
                        g.state,
                        g.error
                    ])?;
                }
            }
            tx.commit()
        };
        run().map_err(|e| self.err(e))
    }

    /// Forgets granules that left their collection, in one transaction.
    pub fn remove_granules(
        &self,
        resource: &str,
        collection: &str,
        paths: &[String],
    ) -> Result<(), StateError> {
        let run = || -> rusqlite::Result<()> {
            let tx = self.conn.unchecked_transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "DELETE FROM granules WHERE resource = ?1 AND collection = ?2 AND path = ?3",
                )?;
                for p in paths {
                    stmt.execute(params![resource, collection, p])?;
                }
            }
            tx.commit()
        };
        run().map_err(|e| self.err(e))
    }

    /// Granules by state, for the metrics.
    pub fn granule_counts(&self) -> Result<Vec<(String, i64)>, StateError> {
        granule_counts(&self.conn).map_err(|e| self.err(e))
    }

    /// Commits that failed and are not retried, for the failing-commit metric.
    pub fn failed_commits(&self) -> Result<i64, StateError> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM commits WHERE outcome = 'failed'",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))
    }
}

/// A read-only view for `status`, which must work while the daemon runs (WAL lets it read
/// without blocking the writer) and when it is stopped.
pub struct StateReader {
    conn: Connection,
    path: PathBuf,
}

impl StateReader {
    /// `Ok(None)` when there is no store yet (the agent never ran here).
    pub fn open(state_dir: &Path) -> Result<Option<StateReader>, StateError> {
        let path = db_path(state_dir);
        if !path.exists() {
            return Ok(None);
        }
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| classify(&path, e))?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(|e| classify(&path, e))?;
        let found = schema_version(&conn, &path)?;
        let known = MIGRATIONS.len() as i64;
        if found > known {
            return Err(StateError::TooNew { path, found, known });
        }
        Ok(Some(StateReader { conn, path }))
    }

    pub fn last_pass(&self) -> Result<Option<PassRecord>, StateError> {
        last_pass(&self.conn, &self.path)
    }

    pub fn last_success(&self) -> Result<Option<PassRecord>, StateError> {
        query_pass(&self.conn, &self.path, "WHERE outcome = 'success'")
    }

    /// Granules whose path (relative to their collection, or `<resource>/<collection>/<path>`)
    /// is `what` or ends in `/<what>`. Stores before version 4 know none.
    pub fn find_granules(&self, what: &str) -> Result<Vec<GranuleRecord>, StateError> {
        let found = (|| {
            let mut stmt = self.conn.prepare(&format!(
                "SELECT {GRANULE_COLUMNS} FROM granules
                 WHERE path = ?1
                    OR (length(path) > length(?1)
                        AND substr(path, length(path) - length(?1)) = '/' || ?1)
                    OR resource || '/' || collection || '/' || path = ?1
                 ORDER BY resource, collection, path"
            ))?;
            let rows = stmt.query_map(params![what], granule_row)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })();
        match found {
            Ok(v) => Ok(v),
            Err(e) => match classify(&self.path, e) {
                StateError::Sqlite { .. } => Ok(Vec::new()),
                e => Err(e),
            },
        }
    }

    /// What `plan` compares a collection's listing with; stores before version 4 know none.
    pub fn held_granules(
        &self,
        resource: &str,
        collection: &str,
    ) -> Result<Vec<HeldGranule>, StateError> {
        held_granules(&self.conn, resource, collection).or_else(|e| match classify(&self.path, e) {
            StateError::Sqlite { .. } => Ok(Vec::new()),
            e => Err(e),
        })
    }

    /// Granules by state; stores before version 4 know none.
    pub fn granule_counts(&self) -> Result<Vec<(String, i64)>, StateError> {
        granule_counts(&self.conn).or_else(|e| match classify(&self.path, e) {
            StateError::Sqlite { .. } => Ok(Vec::new()),
            e => Err(e),
        })
    }

    /// The rebuild policy's records, oldest first; stores before version 5 know none.
    pub fn rebuilds(&self) -> Result<Vec<RebuildRecord>, StateError> {
        rebuilds(&self.conn).or_else(|e| match classify(&self.path, e) {
            StateError::Sqlite { .. } => Ok(Vec::new()),
            e => Err(e),
        })
    }

    /// Stores before version 3 have no `resources` table yet: nothing deployed.
    pub fn resources(&self) -> Result<Vec<ResourceRecord>, StateError> {
        resources(&self.conn, &self.path).or_else(|e| match e {
            StateError::Sqlite { .. } => Ok(Vec::new()),
            e => Err(e),
        })
    }

    /// Version 1 stores have no `meta` table yet: they know no revision.
    pub fn meta(&self, key: &str) -> Result<Option<String>, StateError> {
        meta(&self.conn, &self.path, key).or_else(|e| match e {
            StateError::Sqlite { .. } => Ok(None),
            e => Err(e),
        })
    }

    pub fn commit(&self, sha: &str) -> Result<Option<CommitRecord>, StateError> {
        commit(&self.conn, &self.path, sha)
    }

    /// The meta entries whose key starts with `prefix`, by key, the prefix cut off.
    pub fn meta_with_prefix(&self, prefix: &str) -> Result<Vec<(String, String)>, StateError> {
        let mut stmt = self
            .conn
            .prepare("SELECT key, value FROM meta WHERE substr(key, 1, ?2) = ?1 ORDER BY key")
            .map_err(|e| classify(&self.path, e))?;
        let rows = stmt
            .query_map(params![prefix, prefix.chars().count() as i64], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(|e| classify(&self.path, e))?;
        rows.map(|r| {
            r.map(|(k, v)| (k[prefix.len()..].to_owned(), v))
                .map_err(|e| classify(&self.path, e))
        })
        .collect()
    }
}

fn rebuilds(conn: &Connection) -> rusqlite::Result<Vec<RebuildRecord>> {
    let mut stmt = conn.prepare("SELECT at_ms, level, action, reason FROM rebuilds ORDER BY id")?;
    let rows = stmt.query_map([], |r| {
        Ok(RebuildRecord {
            at_ms: r.get(0)?,
            level: r.get(1)?,
            action: r.get(2)?,
            reason: r.get(3)?,
        })
    })?;
    rows.collect()
}

/// A collection's granule records in path order.
fn granules(
    conn: &Connection,
    resource: &str,
    collection: &str,
) -> rusqlite::Result<Vec<GranuleRecord>> {
    granule_rows(conn, "FROM granules WHERE", resource, collection)
}

/// The collection's pending granules in path order, from the index of those not imported
/// (named, so that a query the index cannot serve fails rather than sweeps; the repeated
/// `state <> 'imported'` is how SQLite sees that the partial index applies).
fn pending_granules(
    conn: &Connection,
    resource: &str,
    collection: &str,
) -> rusqlite::Result<Vec<GranuleRecord>> {
    granule_rows(
        conn,
        "FROM granules INDEXED BY granules_waiting
         WHERE state <> 'imported' AND state = 'pending' AND",
        resource,
        collection,
    )
}

/// The records `from_where` selects of one collection (it ends where the collection's condition
/// is added), in path order.
fn granule_rows(
    conn: &Connection,
    from_where: &str,
    resource: &str,
    collection: &str,
) -> rusqlite::Result<Vec<GranuleRecord>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {GRANULE_COLUMNS} {from_where} resource = ?1 AND collection = ?2 ORDER BY path"
    ))?;
    let rows = stmt.query_map(params![resource, collection], granule_row)?;
    rows.collect()
}

fn held_granules(
    conn: &Connection,
    resource: &str,
    collection: &str,
) -> rusqlite::Result<Vec<HeldGranule>> {
    // The checksum and the reason only where they are read, so that the rest is NULL and
    // allocates nothing. No ORDER BY: the comparison hashes them.
    let mut stmt = conn.prepare(
        "SELECT path, version, mtime_ms, CASE WHEN state = 'failed' THEN sha256 END,
                CASE WHEN state = 'failed' THEN error END
         FROM granules WHERE resource = ?1 AND collection = ?2",
    )?;
    let rows = stmt.query_map(params![resource, collection], |r| {
        Ok(HeldGranule {
            path: r.get(0)?,
            version: r.get(1)?,
            mtime_ms: r.get(2)?,
            failed: match r.get::<_, Option<String>>(3)? {
                Some(sha256) => Some((sha256, r.get(4)?)),
                None => None,
            },
        })
    })?;
    rows.collect()
}

const COUNT_WAITING: &str = "SELECT COUNT(*) FILTER (WHERE state = 'failed'),
    COUNT(*) FILTER (WHERE state = 'pending') FROM granules WHERE state <> 'imported'";

fn granule_counts(conn: &Connection) -> rusqlite::Result<Vec<(String, i64)>> {
    // The total is SQLite's count of b-tree cells, which reads no record; the others come from
    // the index of those not imported (without it, in a store before version 6, a sweep).
    let total: i64 = conn.query_row("SELECT COUNT(*) FROM granules", [], |r| r.get(0))?;
    let (failed, pending): (i64, i64) =
        conn.query_row(COUNT_WAITING, [], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let imported = total - failed - pending;
    Ok([
        ("failed", failed),
        ("imported", imported),
        ("pending", pending),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .map(|(s, n)| (s.to_owned(), n))
    .collect())
}

const GRANULE_COLUMNS: &str = "resource, collection, path, size, version, sha256, source_url, \
     sha, mtime_ms, fetched_ms, state, error";

fn granule_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<GranuleRecord> {
    Ok(GranuleRecord {
        resource: r.get(0)?,
        collection: r.get(1)?,
        path: r.get(2)?,
        size: r.get::<_, i64>(3)? as u64,
        version: r.get(4)?,
        sha256: r.get(5)?,
        source_url: r.get(6)?,
        sha: r.get(7)?,
        mtime_ms: r.get(8)?,
        fetched_ms: r.get(9)?,
        state: r.get(10)?,
        error: r.get(11)?,
    })
}

fn resources(conn: &Connection, path: &Path) -> Result<Vec<ResourceRecord>, StateError> {
    let err = |e| classify(path, e);
    let mut stmt = conn
        .prepare("SELECT dir, rd_id, hash, published, tables, sha FROM resources ORDER BY dir")
        .map_err(err)?;
    let rows = stmt
        .query_map([], |r| {
            let tables: String = r.get(4)?;
            Ok(ResourceRecord {
                dir: r.get(0)?,
                rd_id: r.get(1)?,
                hash: r.get(2)?,
                published: r.get(3)?,
                tables: tables
                    .split(' ')
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect(),
                sha: r.get(5)?,
            })
        })
        .map_err(err)?;
    rows.collect::<Result<_, _>>().map_err(err)
}

fn meta(conn: &Connection, path: &Path, key: &str) -> Result<Option<String>, StateError> {
    conn.query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| {
        r.get(0)
    })
    .optional()
    .map_err(|e| classify(path, e))
}

fn commit(conn: &Connection, path: &Path, sha: &str) -> Result<Option<CommitRecord>, StateError> {
    conn.query_row(
        "SELECT sha, outcome, stage, error FROM commits WHERE sha = ?1",
        params![sha],
        |r| {
            Ok(CommitRecord {
                sha: r.get(0)?,
                outcome: r.get(1)?,
                stage: r.get(2)?,
                error: r.get(3)?,
            })
        },
    )
    .optional()
    .map_err(|e| classify(path, e))
}

fn take_lock(state_dir: &Path) -> Result<std::fs::File, StateError> {
    let lock_path = state_dir.join("agent.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| StateError::Dir {
            path: lock_path.clone(),
            source,
        })?;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(StateError::Locked {
                dir: state_dir.to_owned(),
                lock: lock_path,
            });
        }
        return Err(StateError::Dir {
            path: lock_path,
            source: err,
        });
    }
    Ok(file)
}

fn configure(conn: &Connection, path: &Path) -> Result<(), StateError> {
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(|e| classify(path, e))?;
    // The first statement reads the file header: that is where a damaged file shows.
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(|e| classify(path, e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StateError::Corrupt {
            path: path.to_owned(),
            detail: format!("cannot switch to WAL mode (got {mode})"),
        });
    }
    // FULL: a pass recorded as done must still be recorded after a power cut.
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
        .map_err(|e| classify(path, e))
}

/// SQLite's check of every page and index of the file.
fn check_structure(conn: &Connection, path: &Path) -> Result<(), StateError> {
    // The file's structure, not the CHECK constraints: re-evaluating those for every row was
    // two thirds of the check (at 100,000 granules 70 ms of every start became 30), and only
    // the agent's own writes, which SQLite checks as they happen, could break them.
    conn.execute_batch("PRAGMA ignore_check_constraints = ON;")
        .map_err(|e| classify(path, e))?;
    let check: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(|e| classify(path, e))?;
    conn.execute_batch("PRAGMA ignore_check_constraints = OFF;")
        .map_err(|e| classify(path, e))?;
    if check != "ok" {
        return Err(StateError::Corrupt {
            path: path.to_owned(),
            detail: check,
        });
    }
    Ok(())
}

fn schema_version(conn: &Connection, path: &Path) -> Result<i64, StateError> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| classify(path, e))
}

/// SQLite reports a damaged file as NOTADB or CORRUPT; everything else is an I/O-level error.
fn classify(path: &Path, e: rusqlite::Error) -> StateError {
    use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
    match e.sqlite_error_code() {
        Some(NotADatabase | DatabaseCorrupt) => StateError::Corrupt {
            path: path.to_owned(),
            detail: e.to_string(),
        },
        _ => StateError::Sqlite {
            path: path.to_owned(),
            source: e,
        },
    }
}

fn last_pass(conn: &Connection, path: &Path) -> Result<Option<PassRecord>, StateError> {
    query_pass(conn, path, "")
}

fn query_pass(
    conn: &Connection,
    path: &Path,
    filter: &str,
) -> Result<Option<PassRecord>, StateError> {
    let sql = format!(
        "SELECT id, trigger, started_ms, finished_ms, outcome, stage, error
         FROM passes {filter} ORDER BY id DESC LIMIT 1"
    );
    conn.query_row(&sql, [], |r| {
        let outcome: Option<String> = r.get(4)?;
        Ok(PassRecord {
            id: r.get(0)?,
            trigger: r.get(1)?,
            started_ms: r.get(2)?,
            finished_ms: r.get(3)?,
            outcome: outcome.as_deref().and_then(Outcome::parse),
            stage: r.get(5)?,
            error: r.get(6)?,
        })
    })
    .optional()
    .map_err(|e| classify(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_are_recorded_and_read_back() {
        let t = tempfile::tempdir().unwrap();
        let s = StateStore::open(t.path()).unwrap();
        let id = s.begin_pass("timer").unwrap();
        assert_eq!(s.last_pass().unwrap().unwrap().outcome, None);
        s.finish_pass(id, Outcome::Failure, Some("dachs"), Some("boom"))
            .unwrap();
        let p = s.last_pass().unwrap().unwrap();
        assert_eq!(
            (p.outcome, p.stage.as_deref(), p.error.as_deref()),
            (Some(Outcome::Failure), Some("dachs"), Some("boom"))
        );
        let r = StateReader::open(t.path()).unwrap().unwrap();
        assert_eq!(r.last_pass().unwrap().unwrap(), p);
        assert_eq!(r.last_success().unwrap(), None);
    }

    #[test]
    fn rebuild_decisions_are_kept_newest_last_and_bounded() {
        let t = tempfile::tempdir().unwrap();
        let s = StateStore::open(t.path()).unwrap();
        let rec = |at_ms, level: &str, action: &str| RebuildRecord {
            at_ms,
            level: level.into(),
            action: action.into(),
            reason: format!("reason {at_ms}"),
        };
        s.record_rebuild(&rec(1, "repair", "started")).unwrap();
        s.record_rebuild(&rec(2, "repair", "failed")).unwrap();
        s.record_rebuild(&rec(3, "vm", "started")).unwrap();
        s.record_rebuild(&rec(4, "repair", "refused")).unwrap();
        let last = s.last_rebuild("repair", &["started", "failed"]).unwrap();
        assert_eq!(last, Some(rec(2, "repair", "failed")));
        assert_eq!(s.last_rebuild("vm", &["refused"]).unwrap(), None);
        for i in 0..REBUILDS_KEPT + 10 {
            s.record_rebuild(&rec(10 + i, "repair", "refused")).unwrap();
        }
        let all = StateReader::open(t.path())
            .unwrap()
            .unwrap()
            .rebuilds()
            .unwrap();
        assert_eq!(all.len() as i64, REBUILDS_KEPT);
        assert_eq!(all.last().unwrap().at_ms, 10 + REBUILDS_KEPT + 9);
        assert!(all.windows(2).all(|w| w[0].at_ms < w[1].at_ms));
        // The request survives a reopen, and goes when deleted.
        s.set_meta(REBUILD_REQUEST, "{}").unwrap();
        drop(s);
        let s = StateStore::open(t.path()).unwrap();
        assert_eq!(s.meta(REBUILD_REQUEST).unwrap().as_deref(), Some("{}"));
        s.delete_meta(REBUILD_REQUEST).unwrap();
        assert_eq!(s.meta(REBUILD_REQUEST).unwrap(), None);
    }

    #[test]
    fn unfinished_pass_becomes_interrupted_on_next_open() {
        let t = tempfile::tempdir().unwrap();
        {
            let s = StateStore::open(t.path()).unwrap();
            s.begin_pass("timer").unwrap();
        }
        let s = StateStore::open(t.path()).unwrap();
        assert_eq!(s.close_interrupted().unwrap(), 1);
        assert_eq!(
            s.last_pass().unwrap().unwrap().outcome,
            Some(Outcome::Interrupted)
        );
    }

    #[test]
    fn second_writer_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let _first = StateStore::open(t.path()).unwrap();
        let e = StateStore::open(t.path()).unwrap_err();
        assert!(matches!(e, StateError::Locked { .. }), "{e}");
    }

    #[test]
    fn garbage_file_is_reported_and_left_untouched() {
        let t = tempfile::tempdir().unwrap();
        let db = db_path(t.path());
        let garbage = b"this is not a database, it is a file someone copied here\n".repeat(100);
        std::fs::write(&db, &garbage).unwrap();
        let e = StateStore::open(t.path()).unwrap_err();
        assert!(matches!(e, StateError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("move it aside"), "{e}");
        assert_eq!(std::fs::read(&db).unwrap(), garbage);
        assert!(matches!(
            StateReader::open(t.path()),
            Err(StateError::Corrupt { .. })
        ));
    }

    #[test]
    fn damaged_pages_are_reported() {
        let t = tempfile::tempdir().unwrap();
        {
            let s = StateStore::open(t.path()).unwrap();
            for _ in 0..200 {
                let id = s.begin_pass("timer").unwrap();
                s.finish_pass(id, Outcome::Success, None, Some(&"x".repeat(500)))
                    .unwrap();
            }
            s.conn
                .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
                .unwrap();
        }
        let db = db_path(t.path());
        let mut bytes = std::fs::read(&db).unwrap();
        assert!(bytes.len() > 3 * 4096);
        for b in &mut bytes[4096 + 8..3 * 4096] {
            *b = 0xA5;
        }
        std::fs::write(&db, &bytes).unwrap();
        let e = StateStore::open(t.path()).unwrap_err();
        assert!(matches!(e, StateError::Corrupt { .. }), "{e}");
        // A one-shot command skips the whole check; the damaged pages it reads fail it the same.
        let e = StateStore::open_for_command(t.path())
            .and_then(|s| s.close_interrupted())
            .unwrap_err();
        assert!(matches!(e, StateError::Corrupt { .. }), "{e}");
        assert_eq!(std::fs::read(&db).unwrap(), bytes);
    }

    #[test]
    fn newer_schema_is_refused_and_left_untouched() {
        let t = tempfile::tempdir().unwrap();
        {
            let s = StateStore::open(t.path()).unwrap();
            s.conn.execute_batch("PRAGMA user_version = 99;").unwrap();
        }
        let e = StateStore::open(t.path()).unwrap_err();
        assert!(matches!(e, StateError::TooNew { found: 99, .. }), "{e}");
        assert!(e.to_string().contains("newer vespa-agent"), "{e}");
        let c = Connection::open(db_path(t.path())).unwrap();
        let v: i64 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, 99);
    }

    #[test]
    fn revisions_and_commit_outcomes_are_remembered() {
        let t = tempfile::tempdir().unwrap();
        let s = StateStore::open(t.path()).unwrap();
        assert_eq!(s.meta(DESIRED).unwrap(), None);
        s.set_meta(DESIRED, "abc").unwrap();
        s.set_meta(DESIRED, "def").unwrap();
        assert_eq!(s.meta(DESIRED).unwrap().as_deref(), Some("def"));
        s.record_commit("def", Some("failed"), Some("validate"), Some("bad"))
            .unwrap();
        assert_eq!(s.failed_commits().unwrap(), 1);
        let c = s.commit("def").unwrap().unwrap();
        assert_eq!(
            (c.outcome.as_deref(), c.stage.as_deref()),
            (Some("failed"), Some("validate"))
        );
        s.record_commit("def", None, None, None).unwrap();
        assert_eq!(s.failed_commits().unwrap(), 0);
        let r = StateReader::open(t.path()).unwrap().unwrap();
        assert_eq!(r.meta(DESIRED).unwrap().as_deref(), Some("def"));
    }

    #[test]
    fn resources_and_their_granules_are_remembered_and_forgotten_together() {
        let t = tempfile::tempdir().unwrap();
        let s = StateStore::open(t.path()).unwrap();
        let r = ResourceRecord {
            dir: "epnlab".into(),
            rd_id: "epnlab/q".into(),
            hash: "h".into(),
            published: true,
            tables: vec!["epnlab.epn_core".into()],
            sha: "abc".into(),
        };
        s.put_resource(&r).unwrap();
        let g = GranuleRecord {
            resource: "epnlab".into(),
            collection: "granules".into(),
            path: "g.csv".into(),
            size: 3,
            version: "v".into(),
            sha256: "x".into(),
            source_url: "file:///g.csv".into(),
            sha: "abc".into(),
            mtime_ms: 1,
            fetched_ms: 2,
            state: "imported".into(),
            error: None,
        };
        s.put_granule(&g).unwrap();
        assert_eq!(s.resources().unwrap(), [r]);
        assert_eq!(
            s.granules("epnlab", "granules").unwrap(),
            std::slice::from_ref(&g)
        );
        // An incremental import loads only what waits for it.
        assert!(s.pending_granules("epnlab", "granules").unwrap().is_empty());
        let waiting = GranuleRecord {
            path: "h.csv".into(),
            state: "pending".into(),
            ..g.clone()
        };
        s.put_granule(&waiting).unwrap();
        assert_eq!(
            s.pending_granules("epnlab", "granules").unwrap(),
            std::slice::from_ref(&waiting)
        );
        assert_eq!(
            s.granules("epnlab", "granules").unwrap(),
            [g.clone(), waiting.clone()]
        );
        // What a sync compares with: the failed ones' checksum and reason, no one else's.
        let refused = GranuleRecord {
            path: "r.csv".into(),
            state: "failed".into(),
            error: Some("bad row".into()),
            ..g.clone()
        };
        s.put_granule(&refused).unwrap();
        assert_eq!(
            s.granule_counts().unwrap(),
            [
                ("failed".to_owned(), 1),
                ("imported".to_owned(), 1),
                ("pending".to_owned(), 1)
            ]
        );
        // Counted from the index of those not imported, not by a sweep of every record.
        let plan: String = s
            .conn
            .query_row(&format!("EXPLAIN QUERY PLAN {COUNT_WAITING}"), [], |r| {
                r.get(3)
            })
            .unwrap();
        assert!(plan.contains("granules_waiting"), "{plan}");
        let mut held = s.held_granules("epnlab", "granules").unwrap();
        held.sort_by(|a, b| a.path.cmp(&b.path));
        let want: Vec<HeldGranule> = [&g, &waiting, &refused].map(HeldGranule::from).into();
        assert_eq!(held, want);
        assert_eq!(
            held.iter().map(|h| h.failed.clone()).collect::<Vec<_>>(),
            [None, None, Some(("x".into(), Some("bad row".into())))]
        );
        s.remove_granules("epnlab", "granules", &["r.csv".to_owned()])
            .unwrap();
        s.remove_granules("epnlab", "granules", &["h.csv".to_owned()])
            .unwrap();
        assert_eq!(s.granule_counts().unwrap(), [("imported".to_owned(), 1)]);
        s.remove_resource("epnlab").unwrap();
        assert!(s.resources().unwrap().is_empty());
        assert!(s.granules("epnlab", "granules").unwrap().is_empty());
    }

    #[test]
    fn the_start_check_leaves_the_constraints_in_force() {
        let t = tempfile::tempdir().unwrap();
        drop(StateStore::open(t.path()).unwrap());
        let s = StateStore::open(t.path()).unwrap();
        let bad = s.conn.execute(
            "INSERT INTO granules VALUES ('r', 'c', 'p', 1, 'v', 'h', 'u', 's', 1, 1, 'bogus', NULL)",
            [],
        );
        assert!(bad.is_err(), "{bad:?}");
    }

    #[test]
    fn a_version_1_store_is_migrated_in_place() {
        let t = tempfile::tempdir().unwrap();
        {
            let c = Connection::open(db_path(t.path())).unwrap();
            c.execute_batch(&format!("{} PRAGMA user_version = 1;", MIGRATIONS[0]))
                .unwrap();
            c.execute(
                "INSERT INTO passes (trigger, started_ms) VALUES ('timer', 1)",
                [],
            )
            .unwrap();
        }
        let s = StateStore::open(t.path()).unwrap();
        assert_eq!(s.last_pass().unwrap().unwrap().trigger, "timer");
        s.set_meta(APPLIED, "x").unwrap();
    }

    #[test]
    fn old_passes_are_pruned() {
        let t = tempfile::tempdir().unwrap();
        let s = StateStore::open(t.path()).unwrap();
        for _ in 0..(PASSES_KEPT + 5) {
            let id = s.begin_pass("timer").unwrap();
            s.finish_pass(id, Outcome::Success, None, None).unwrap();
        }
        let n: i64 = s
            .conn
            .query_row("SELECT COUNT(*) FROM passes", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, PASSES_KEPT);
    }
}
