//! The `dachs` command line: each command run as the DaCHS admin account (the child takes that
//! account's ids and groups when the agent is root), with a time limit, its output captured into the log, and its result
//! judged the way DaCHS 2.7 really reports it, not by the exit code alone:
//! `dachs val` exits 0 on most failures (the verdict is the last line of stdout), and
//! `dachs imp` exits 101 when it skipped bad sources.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum DachsError {
    #[error("cannot run `{command}`: {reason}")]
    Spawn { command: String, reason: String },
    #[error("`{command}` did not finish within {seconds} s and was killed")]
    Timeout { command: String, seconds: u64 },
    /// The command ran and said no; `message` is DaCHS's own (file, line, reason).
    #[error("`{command}` failed: {message}")]
    Failed { command: String, message: String },
}

impl DachsError {
    /// A small fixed set, for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            DachsError::Spawn { .. } => "dachs_spawn",
            DachsError::Timeout { .. } => "dachs_timeout",
            DachsError::Failed { .. } => "dachs_failed",
        }
    }

    pub fn message(&self) -> String {
        match self {
            DachsError::Failed { message, .. } => message.clone(),
            e => e.to_string(),
        }
    }
}

/// What one command did.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// How to run `dachs`.
pub struct Dachs {
    pub bin: PathBuf,
    pub user: String,
    pub timeout: Duration,
    /// The working directory of every command: DaCHS writes debugging files such as
    /// `badDocument.xml` there, and a failure to write one hides the real error.
    pub workdir: PathBuf,
    /// `GAVOSETTINGS` for every command: another DaCHS instance than the system's (a scratch
    /// one of `check-service`).
    pub settings: Option<PathBuf>,
    /// Time spent inside DaCHS commands, for telling the agent's own cost apart.
    spent_us: AtomicU64,
    /// Commands started, for proving that an idle pass starts none.
    started: AtomicU64,
}

/// The account `dachs` runs as: ids, supplementary groups and home, read before any fork.
struct Account {
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
    home: String,
}

/// An account's uid, primary gid and home directory, from the password database.
pub(crate) fn passwd(user: &str) -> Option<(libc::uid_t, libc::gid_t, String)> {
    let name = std::ffi::CString::new(user).ok()?;
    // SAFETY: getpwnam returns static storage or null, read at once; one pass at a time looks
    // accounts up.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return None;
    }
    Some(unsafe {
        (
            (*pw).pw_uid,
            (*pw).pw_gid,
            std::ffi::CStr::from_ptr((*pw).pw_dir)
                .to_string_lossy()
                .into_owned(),
        )
    })
}

impl Account {
    fn lookup(user: &str) -> Option<Account> {
        let name = std::ffi::CString::new(user).ok()?;
        let (uid, gid, home) = passwd(user)?;
        let mut n: libc::c_int = 64;
        loop {
            let mut groups = vec![0 as libc::gid_t; n as usize];
            let want = n;
            // SAFETY: `groups` holds `n` entries; getgrouplist writes at most that many and
            // sets `n` to the count it has (or needs).
            let r = unsafe { libc::getgrouplist(name.as_ptr(), gid, groups.as_mut_ptr(), &mut n) };
            if r >= 0 {
                groups.truncate(n as usize);
                return Some(Account {
                    uid,
                    gid,
                    groups,
                    home,
                });
            }
            if n <= want {
                n = want * 2;
            }
            if n > 65_536 {
                return None;
            }
        }
    }
}

impl Dachs {
    /// `inputs` is DaCHS's inputs directory; commands run in its sibling `tmp` (DaCHS's own,
    /// writable by the DaCHS account), or in the system's temporary directory.
    pub fn new(bin: PathBuf, user: String, timeout: Duration, inputs: &std::path::Path) -> Dachs {
        let tmp = inputs.parent().map(|root| root.join("tmp"));
        let workdir = tmp
            .filter(|t| t.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        Dachs {
            bin,
            user,
            timeout,
            workdir,
            settings: None,
            spent_us: AtomicU64::new(0),
            started: AtomicU64::new(0),
        }
    }

    pub fn from_settings(d: &crate::config::DachsSettings) -> Dachs {
        Dachs::new(
            d.bin.clone(),
            d.user.clone(),
            d.command_timeout,
            &d.inputs_dir,
        )
    }

    pub fn time_spent(&self) -> Duration {
        Duration::from_micros(self.spent_us.load(Ordering::Relaxed))
    }

    pub fn commands_started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    /// Root switches to the DaCHS account so that nothing in /var/gavo ends up owned by root;
    /// any other user runs `dachs` as itself. The child sets its groups, gid and uid itself
    /// before exec (as `runuser` would, without PAM: the agent needs no audit or login-session
    /// privileges, only CAP_SETUID and CAP_SETGID), and gets the account's HOME, USER, LOGNAME.
    fn command(&self, args: &[&str]) -> Command {
        let as_root = unsafe { libc::geteuid() } == 0;
        let mut c = Command::new(&self.bin);
        if as_root && self.user != "root" {
            match Account::lookup(&self.user) {
                Some(a) => {
                    c.env("HOME", &a.home)
                        .env("USER", &self.user)
                        .env("LOGNAME", &self.user);
                    let Account {
                        uid, gid, groups, ..
                    } = a;
                    // SAFETY: between fork and exec only async-signal-safe calls are made
                    // (umask, setgroups, setgid, setuid: plain system calls on data prepared
                    // before). DaCHS gets the usual umask whatever the agent's own (the unit's
                    // is 0077): what `dachs imp` writes must stay readable by DaCHS's server.
                    unsafe {
                        c.pre_exec(move || {
                            libc::umask(0o022);
                            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                                || libc::setgid(gid) != 0
                                || libc::setuid(uid) != 0
                            {
                                return Err(std::io::Error::last_os_error());
                            }
                            Ok(())
                        });
                    }
                }
                // No such account: let the spawn fail with a message naming it.
                None => {
                    c = Command::new("runuser");
                    c.args(["-u", &self.user, "--"]).arg(&self.bin);
                }
            }
        }
        self.instance(&mut c);
        c.args(args);
        c
    }

    /// Points a `dachs` command at this instance's gavo.rc, when it is not the system's.
    fn instance(&self, c: &mut Command) {
        if let Some(rc) = &self.settings {
            c.env("GAVOSETTINGS", rc);
        }
    }

    /// Runs `dachs <args>` and returns what it did, whatever its exit code.
    pub async fn run(&self, args: &[&str]) -> Result<Run, DachsError> {
        self.finish(
            format!("dachs {}", args.join(" ")),
            self.command(args),
            self.timeout,
        )
        .await
    }

    /// `dachs test -t <tag> <rd>` within `limit`: the RD's regression suites run against the
    /// running server. Its exit code is trustworthy (unlike `dachs val`'s): 0 when every test
    /// passed or none ran. A run that fails without DaCHS's tally is an error.
    pub async fn regression_tests(
        &self,
        rd: &str,
        tag: &str,
        limit: Duration,
    ) -> Result<Regression, DachsError> {
        let seconds = limit.as_secs().max(1).to_string();
        let mut args = vec!["test", "-v", "-T", &seconds];
        if !tag.is_empty() {
            args.extend(["-t", tag]);
        }
        args.push(rd);
        let shown = format!("dachs {}", args.join(" "));
        let run = self
            .finish(shown.clone(), self.command(&args), limit)
            .await?;
        match (run.code, regression_tally(&run.stdout)) {
            (Some(0), Some(r)) if r.bad == 0 => Ok(r),
            (Some(0), None) => Ok(Regression::default()),
            (_, Some(r)) if r.bad > 0 => Ok(r),
            _ => Err(DachsError::Failed {
                command: shown,
                message: error_message(&run),
            }),
        }
    }

    /// Runs `dachs <args>` as the agent's own user: `dachs serve start` must run as root, which
    /// drops to the server's account itself.
    pub async fn run_unswitched(&self, args: &[&str]) -> Result<Run, DachsError> {
        let mut c = Command::new(&self.bin);
        self.instance(&mut c);
        c.args(args);
        self.finish(format!("dachs {}", args.join(" ")), c, self.timeout)
            .await
    }

    /// Runs a program as the agent's own user (restarting the server needs root), with the
    /// same time limit and logging as a `dachs` command.
    pub async fn run_program(&self, argv: &[String]) -> Result<Run, DachsError> {
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..]);
        self.finish(argv.join(" "), c, self.timeout).await
    }

    /// Runs a prepared command in the working directory, output captured, killed if the pass
    /// is abandoned or the time limit passes.
    async fn finish(
        &self,
        shown: String,
        mut command: Command,
        limit: Duration,
    ) -> Result<Run, DachsError> {
        command
            .current_dir(&self.workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let started = Instant::now();
        self.started.fetch_add(1, Ordering::Relaxed);
        let child = command.spawn().map_err(|e| DachsError::Spawn {
            command: shown.clone(),
            reason: e.to_string(),
        })?;
        let waited = tokio::time::timeout(limit, child.wait_with_output()).await;
        let elapsed = started.elapsed();
        self.spent_us
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        let out = match waited {
            Err(_) => {
                tracing::error!(command = %shown, seconds = limit.as_secs(), "dachs command timed out");
                return Err(DachsError::Timeout {
                    command: shown,
                    seconds: limit.as_secs(),
                });
            }
            Ok(Err(e)) => {
                return Err(DachsError::Spawn {
                    command: shown,
                    reason: e.to_string(),
                });
            }
            Ok(Ok(out)) => out,
        };
        let run = Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        tracing::info!(
            command = %shown,
            code = run.code,
            seconds = elapsed.as_secs_f64(),
            "dachs command finished"
        );
        for line in run.stdout.lines().chain(run.stderr.lines()) {
            tracing::debug!(command = %shown, "{line}");
        }
        Ok(run)
    }

    /// `dachs val <rd>`: passes only with exit code 0 and an `OK` verdict.
    pub async fn validate(&self, rd: &str) -> Result<(), DachsError> {
        let run = self.run(&["val", rd]).await?;
        judge_val(&run).map_err(|message| DachsError::Failed {
            command: format!("dachs val {rd}"),
            message,
        })
    }

    /// `dachs val -c <rd>`: whether the RD's tables match those in the database. A mismatch
    /// (a new or removed column) is a structural change that `imp` alone does not apply.
    pub async fn matches_database(&self, rd: &str) -> Result<bool, DachsError> {
        let run = self.run(&["val", "-c", rd]).await?;
        Ok(judge_val(&run).is_ok())
    }

    /// `dachs imp <rd>`: every data element imported, or an error with DaCHS's message.
    pub async fn import(&self, rd: &str) -> Result<(), DachsError> {
        self.checked(&["imp", rd]).await
    }

    /// `dachs imp -c <rd>`: bad sources are skipped, not fatal. Returns the skipped ones as
    /// (absolute path, DaCHS's reason); an error when the import as a whole failed.
    pub async fn import_continuing(&self, rd: &str) -> Result<Vec<(String, String)>, DachsError> {
        let run = self.run(&["imp", "-c", rd]).await?;
        match run.code {
            Some(0) => Ok(Vec::new()),
            Some(101) => Ok(skipped_sources(&format!("{}\n{}", run.stdout, run.stderr))),
            _ => Err(DachsError::Failed {
                command: format!("dachs imp -c {rd}"),
                message: error_message(&run),
            }),
        }
    }

    pub async fn drop_rd(&self, rd: &str) -> Result<(), DachsError> {
        self.checked(&["drop", rd]).await
    }

    pub async fn publish(&self, rd: &str) -> Result<(), DachsError> {
        self.checked(&["pub", rd]).await
    }

    pub async fn unpublish(&self, rd: &str) -> Result<(), DachsError> {
        self.checked(&["pub", "-u", rd]).await
    }

    /// Makes the running server read the RD now instead of within 10 s. Only ever called with
    /// an RD that passed `dachs val`: expiring a broken one takes its tables down.
    pub async fn expire(&self, rd: &str) -> Result<(), DachsError> {
        self.checked(&["serve", "expireRDs", rd]).await
    }

    async fn checked(&self, args: &[&str]) -> Result<(), DachsError> {
        let run = self.run(args).await?;
        if run.code == Some(0) {
            return Ok(());
        }
        Err(DachsError::Failed {
            command: format!("dachs {}", args.join(" ")),
            message: error_message(&run),
        })
    }
}

/// What `dachs test` said: its tally, and each failed test with DaCHS's words.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Regression {
    pub total: u64,
    pub bad: u64,
    /// `FAIL <title>` or `ERROR <title>`, each with the lines `-v` adds under it.
    pub failed: Vec<String>,
}

impl Regression {
    /// The failures in one bounded message.
    pub fn message(&self) -> String {
        crate::text::bounded(
            format!(
                "{} of {} regression tests failed: {}",
                self.bad,
                self.total,
                self.failed.join("; ")
            ),
            MESSAGE_MAX,
        )
    }
}

/// `N of M bad.` and the tab-indented `FAIL`/`ERROR` lines under `From <rd>:`, with what `-v`
/// prints below each; `None` when the tally is missing.
pub fn regression_tally(stdout: &str) -> Option<Regression> {
    let mut lines = stdout.lines();
    let (bad, total) = lines.by_ref().find_map(|l| {
        let (bad, rest) = l.trim().split_once(" of ")?;
        let (total, _) = rest.split_once(" bad.")?;
        Some((bad.parse().ok()?, total.parse().ok()?))
    })?;
    let mut failed: Vec<String> = Vec::new();
    for line in lines {
        let t = line.trim();
        if t.is_empty() || t.starts_with("From ") {
            continue;
        }
        if line.starts_with('\t') && (t.starts_with("FAIL ") || t.starts_with("ERROR ")) {
            failed.push(t.to_owned());
        } else if let Some(last) = failed.last_mut() {
            last.push(' ');
            last.push_str(t);
        }
    }
    Some(Regression { total, bad, failed })
}

/// `dachs val`'s verdict: `Ok` only for exit code 0 and a last stdout line that is `OK` (after
/// warnings) or ends in `-- OK`.
pub fn judge_val(run: &Run) -> Result<(), String> {
    let last = run
        .stdout
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("");
    if run.code == Some(0) && (last == "OK" || last.ends_with("-- OK")) {
        return Ok(());
    }
    Err(error_message(run))
}

/// The most of DaCHS's words a message keeps: whole for what DaCHS says of one failure, bounded
/// against a command that prints without end.
pub const MESSAGE_MAX: usize = 2000;

/// DaCHS's own words about a failure: the `*** Error:` lines and `[ERROR]` findings, joined on
/// one line, or the end of its output when it printed neither. A `*** Error:` is DaCHS's last
/// word, kept whole across the blank lines between its paragraphs ("While parsing source ...,
/// near start:", then the cause); at most [`MESSAGE_MAX`] characters.
pub fn error_message(run: &Run) -> String {
    crate::text::bounded(dachs_words(run), MESSAGE_MAX)
}

fn dachs_words(run: &Run) -> String {
    let mut found = Vec::new();
    let text = format!("{}\n{}", run.stdout, run.stderr);
    let mut lines = text.lines().map(str::trim).peekable();
    while let Some(line) = lines.next() {
        let start = line
            .find("*** Error:")
            .map(|i| &line[i + "*** Error:".len()..])
            .or_else(|| line.find("[ERROR]").map(|i| &line[i + "[ERROR]".len()..]))
            .or_else(|| line.find("*X*X* ").map(|i| &line[i + "*X*X* ".len()..]));
        let Some(first) = start else { continue };
        let last_word = line.contains("*** Error:");
        let mut msg = first.trim().to_owned();
        // A failed row is dumped first (`Row` and one `key -> value` line per column); the
        // reason is the paragraph after it.
        if msg == "Row" {
            while lines.peek().is_some_and(|l| !l.is_empty()) {
                lines.next();
            }
            while lines.peek().is_some_and(|l| l.is_empty()) {
                lines.next();
            }
            msg = lines.next().unwrap_or("").to_owned();
        }
        // DaCHS wraps long messages onto indented continuation lines.
        let ends = |l: &str| {
            l == "Fail"
                || l.contains("[ERROR]")
                || l.contains("*** Error:")
                || l.starts_with("Hint:")
        };
        while let Some(next) = lines.peek() {
            if next.is_empty() {
                // A paragraph break inside the last word goes on; elsewhere it ends the finding.
                let mut ahead = lines.clone().skip_while(|l| l.is_empty());
                if !last_word || ahead.next().is_none_or(ends) {
                    break;
                }
                lines.next();
                continue;
            }
            if ends(next) {
                break;
            }
            msg.push(' ');
            msg.push_str(next);
            lines.next();
        }
        if !msg.is_empty() && !found.contains(&msg) {
            found.push(msg);
        }
    }
    if found.is_empty() {
        let tail: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let tail = tail[tail.len().saturating_sub(3)..].join(" | ");
        let code = run
            .code
            .map_or("a signal".to_owned(), |c| format!("exit code {c}"));
        return if tail.is_empty() {
            format!("{code}, no output")
        } else {
            format!("{code}: {tail}")
        };
    }
    found.join("; ")
}

/// The sources `dachs imp -c` skipped: `*X*X* Error while importing source <path>; changes from
/// this source will be rolled back, processing will continue. (<reason>)`, possibly wrapped.
pub fn skipped_sources(output: &str) -> Vec<(String, String)> {
    const MARK: &str = "Error while importing source ";
    let mut out = Vec::new();
    let mut lines = output.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(i) = line.find(MARK) else { continue };
        let mut text = line[i + MARK.len()..].trim().to_owned();
        // The reason is in parentheses at the end; a wrapped one continues until they close.
        let open = |t: &str| t.matches('(').count() > t.matches(')').count();
        while let Some(next) = lines.peek() {
            if !open(&text) || next.trim().is_empty() || next.contains(MARK) {
                break;
            }
            text.push(' ');
            text.push_str(next.trim());
            lines.next();
        }
        let (path, rest) = text.split_once(';').unwrap_or((&text, ""));
        let reason = rest
            .split_once("processing will continue.")
            .map_or(rest, |(_, r)| r)
            .trim()
            .trim_start_matches('(')
            .trim_end_matches(')')
            .trim()
            .to_owned();
        out.push((path.trim().to_owned(), reason));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_regression_tally_names_each_failed_test_with_its_details() {
        let out = "1 of 3 bad.  avg 0.11, min 0.10, max 0.11. 18.4/s, par 1.9\n\
                   From vt_reg/q:\n\
                   \tFAIL at least 400 granules\n\
                   \t  only 4 rows\n\
                   \tERROR epn_core answers\n\n";
        let r = regression_tally(out).unwrap();
        assert_eq!((r.bad, r.total), (1, 3));
        assert_eq!(
            r.failed,
            [
                "FAIL at least 400 granules only 4 rows",
                "ERROR epn_core answers"
            ]
        );
        assert!(
            r.message()
                .starts_with("1 of 3 regression tests failed: FAIL at least")
        );
        let passed = regression_tally("0 of 2 bad.  avg 0.10, min 0.10\n").unwrap();
        assert_eq!((passed.bad, passed.total, passed.failed.len()), (0, 2, 0));
        assert_eq!(
            regression_tally("No tests run (probably did not find any).\n"),
            None
        );
        let long = Regression {
            total: 1000,
            bad: 1000,
            failed: vec!["FAIL x".repeat(100); 1000],
        };
        assert!(long.message().chars().count() <= MESSAGE_MAX);
    }

    /// As root, the child runs with the account's ids, groups and home, never root's.
    #[tokio::test]
    async fn root_runs_dachs_as_the_account_with_its_groups() {
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let probe = tmp.path().join("probe");
        std::fs::write(
            &probe,
            "#!/bin/sh\nid -u; id -G; echo \"$HOME $USER $LOGNAME\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&probe, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let as_nobody = Dachs::new(probe, "nobody".into(), Duration::from_secs(10), tmp.path());
        let r = as_nobody.run(&[]).await.unwrap();
        assert_eq!(r.code, Some(0), "{r:?}");
        let lines: Vec<&str> = r.stdout.lines().collect();
        let a = Account::lookup("nobody").unwrap();
        assert_eq!(lines[0], a.uid.to_string());
        let mut groups: Vec<u32> = lines[1].split(' ').map(|g| g.parse().unwrap()).collect();
        groups.sort();
        let mut want = a.groups.clone();
        want.sort();
        want.dedup();
        groups.dedup();
        assert_eq!(groups, want, "root's groups must not leak");
        assert_eq!(lines[2], format!("{} nobody nobody", a.home));
    }

    fn run(code: i32, stdout: &str, stderr: &str) -> Run {
        Run {
            code: Some(code),
            stdout: stdout.into(),
            stderr: stderr.into(),
        }
    }

    /// Outputs copied from DaCHS 2.7 (../shared/dachs/README.md §7 and this machine).
    #[test]
    fn val_verdicts_as_dachs_prints_them() {
        assert!(judge_val(&run(0, "epnlab/q -- OK\n", "")).is_ok());
        let warned = ".vespa-stage/epnlab/q -- [WARNING] .vespa-stage/epnlab/q: RD .vespa-stage/epnlab/q: resource directory '/var/gavo/inputs/epnlab' does not exist\nOK\n";
        assert!(judge_val(&run(0, warned, "")).is_ok());

        let xml = "epnlab/q -- [ERROR] epnlab/q: Malformed RD input, message follows\n  *** Error: /var/gavo/inputs/epnlab/q.rd mismatched tag: line 110, column 2\n  \nFail\n";
        let e = judge_val(&run(0, xml, "")).unwrap_err();
        assert!(e.contains("mismatched tag: line 110, column 2"), "{e}");

        let col = judge_val(&run(
            1,
            "epnlab/q -- ",
            "*** Error: column 'no_such_column' could not be located in table epn_core's columns\n",
        ))
        .unwrap_err();
        assert_eq!(
            col,
            "column 'no_such_column' could not be located in table epn_core's columns"
        );

        let struct_change = ".vespa-stage/epnlab/q -- [ERROR] .vespa-stage/epnlab/q: Table epnlab.epn_core: from column extra_col on: No matches in DB\nFail\n";
        let e = judge_val(&run(0, struct_change, "")).unwrap_err();
        assert!(
            e.contains("from column extra_col on: No matches in DB"),
            "{e}"
        );
    }

    #[test]
    fn a_verdict_is_never_guessed_from_odd_output() {
        for (code, out) in [
            (0, ""),
            (0, "OK but not quite\n"),
            (1, "epnlab/q -- OK\n"),
            (0, "epnlab/q -- OK\nFail\n"),
            (0, "\u{0}\u{1}garbage"),
        ] {
            assert!(judge_val(&run(code, out, "")).is_err(), "{code} {out:?}");
        }
        let killed = Run {
            code: None,
            stdout: String::new(),
            stderr: String::new(),
        };
        assert_eq!(judge_val(&killed).unwrap_err(), "a signal, no output");
        let silent = error_message(&run(1, "", "line one\nline two\n"));
        assert_eq!(silent, "exit code 1: line one | line two");
    }

    #[test]
    fn skipped_sources_are_named_with_their_reason() {
        let out = "Shipped 8/8\n*X*X* Error while importing source /var/gavo/inputs/epnlab/data/g1.csv; changes from this source will be rolled back, processing will continue. (Field time_min: could not convert string to float:\n  'notanumber')\nRows affected: 8\n*X*X* Error while importing source /x/b.csv; changes from this source will be rolled back, processing will continue. (duplicate key)\n";
        assert_eq!(
            skipped_sources(out),
            [
                (
                    "/var/gavo/inputs/epnlab/data/g1.csv".to_owned(),
                    "Field time_min: could not convert string to float: 'notanumber'".to_owned()
                ),
                ("/x/b.csv".to_owned(), "duplicate key".to_owned())
            ]
        );
        assert!(skipped_sources("nothing to see\n*X*X*\n").is_empty());
    }

    #[test]
    fn import_errors_keep_daches_own_words() {
        let stderr = "Making data epnlab/q#import\n*** Error: /var/gavo/inputs/epnlab/q.rd mismatched tag: line 110, column 2\n";
        assert_eq!(
            error_message(&run(1, "", stderr)),
            "/var/gavo/inputs/epnlab/q.rd mismatched tag: line 110, column 2"
        );
        let row = "Rows affected: 0\n*** Error:   Row\n  access_estsize -> '1024'\n  time_scale -> None\n  \nField fillepn: While executing fillepn in <rowmaker without id>: could\nnot convert string to float: 'notanumber'\n";
        assert_eq!(
            error_message(&run(1, "", row)),
            "Field fillepn: While executing fillepn in <rowmaker without id>: could not convert string to float: 'notanumber'"
        );
        // A literal source not there yet: the cause is in the paragraph after the blank line.
        let literal = "Making data vt_lit/q#import\n*** Error: While parsing source\n/var/gavo/inputs/vt_lit/data/granules.csv, near start:\n\nI/O operation failed ([Errno 2] No such file or directory:\n'/var/gavo/inputs/vt_lit/data/granules.csv')\n\nHint: look at the file\n";
        assert_eq!(
            error_message(&run(1, "", literal)),
            "While parsing source /var/gavo/inputs/vt_lit/data/granules.csv, near start: I/O operation failed ([Errno 2] No such file or directory: '/var/gavo/inputs/vt_lit/data/granules.csv')"
        );
        let endless = format!("*** Error: {}\n", "x".repeat(10 * MESSAGE_MAX));
        let bounded = error_message(&run(1, "", &endless));
        assert_eq!(bounded.chars().count(), MESSAGE_MAX);
        assert!(bounded.ends_with('…'));
        let partial = "*X*X* Error while importing source /var/gavo/inputs/epnlab/data/g1.csv; changes from this source will be rolled back, processing will continue. (bad)\n";
        assert!(error_message(&run(101, "", partial)).starts_with("Error while importing source"));
    }
}
