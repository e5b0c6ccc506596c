//! Crash consistency: full reconcile passes against the real DaCHS, git's smart-HTTP server
//! behind nginx and Apache mod_dav, over granules added, changed and deleted on the WebDAV
//! server and, every other revision, a new commit that changes the RD (so that its passes deploy
//! it again before the granules), with the agent SIGKILLed at random moments (its whole process
//! group, as systemd kills a unit's cgroup; the moments from a seeded RNG, within the time an
//! unharmed pass of the same kind takes, the seed printed; `VESPA_CRASH_SEED` replays a run).
//! After every kill: the state store opens and passes SQLite's integrity check, `current` names
//! a complete revision, and DaCHS holds only whole granule files (every file's rows all there,
//! all of one version). After every recovery (a pass run to its end): DaCHS holds exactly the
//! source's granules, each once, at its current version; no temporary file is left; `plan`
//! finds nothing to do. A prober asks TAP for the table all along and counts the queries that
//! fail.
//!
//! `VESPA_CRASH_KILLS` (default 100) sets how many kills land in a running pass.

use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use harness::churn::*;
use harness::git::GitServer;
use harness::*;

const NAME: &str = "vt_crash";

/// SQLite's own check, and `current` naming a revision with every file of its commit.
fn state_is_consistent(home: &Home, git: &GitServer) -> Result<(), String> {
    let db = home.path("state/state.db");
    let conn =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| format!("the state store does not open: {e}"))?;
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(|e| format!("integrity_check: {e}"))?;
    if check != "ok" {
        return Err(format!("integrity_check: {check}"));
    }
    if let Ok(target) = std::fs::read_link(home.path("state/current")) {
        let sha = target.file_name().unwrap().to_string_lossy().into_owned();
        let listed = git.git(&["ls-tree", "-r", "--name-only", &sha]);
        for f in listed.lines() {
            if !home.path("state").join(&target).join(f).is_file() {
                return Err(format!("current -> {sha} lacks {f}"));
            }
        }
    }
    Ok(())
}

#[test]
fn passes_killed_at_random_moments_lose_and_corrupt_nothing() {
    let Some(mut world) = World::start(NAME) else {
        return;
    };
    let kills_wanted = env_usize("VESPA_CRASH_KILLS", 100);
    let mut seed = seed("VESPA_CRASH_SEED");
    // How long each kind of pass takes unharmed: a kill lands at a moment drawn from it.
    let timed_pass = |world: &World, what: &str| {
        let t = Instant::now();
        let out = world.home.output(&["sync"]);
        let took = t.elapsed();
        assert_eq!(out.code(), 0, "{what}: {out:?}");
        assert_eq!(world.served().unwrap(), world.source.expected(), "{what}");
        eprintln!("{what} takes {:.1} s", took.as_secs_f64());
        took
    };
    let deploy_pass = timed_pass(&world, "a first pass (a deploy and its granules)");
    world.next_granules(&mut seed);
    let granule_pass = timed_pass(&world, "a pass over granule churn alone");

    let prober = Prober::start(NAME);
    let (mut kills, mut kills_in_deploys, mut recoveries) = (0usize, 0usize, 0usize);
    let started = Instant::now();
    while kills < kills_wanted {
        // Every other revision is a commit that changes the RD (its passes deploy it again,
        // then bring the granules); the others churn granules alone, as most passes do.
        let deploys = recoveries % 2 == 0;
        let pass = if deploys {
            world.next_revision(&mut seed);
            deploy_pass
        } else {
            world.next_granules(&mut seed);
            granule_pass
        };
        let home = &world.home;
        // Several kills in a row, each in a pass that the previous kill interrupted.
        for _ in 0..6 {
            let after = Duration::from_millis(next(&mut seed) % (pass.as_millis() as u64 + 1));
            let mut child = home.command(&["sync"]);
            child
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0);
            let mut child = child.spawn().unwrap();
            std::thread::sleep(after);
            if child.try_wait().unwrap().is_none() {
                // SAFETY: kill(2) of the process group made for the child.
                unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
                kills += 1;
                kills_in_deploys += usize::from(deploys);
            }
            let _ = child.wait();
            // Let the killed group's last process go.
            std::thread::sleep(Duration::from_millis(50));
            state_is_consistent(home, &world.git)
                .unwrap_or_else(|e| panic!("after kill {kills} at {after:?}: {e}"));
            match world.served() {
                Ok(rows) => whole_files(&rows)
                    .unwrap_or_else(|e| panic!("after kill {kills} at {after:?}: {e}")),
                Err(e) => eprintln!("after kill {kills}: the table did not answer: {e}"),
            }
        }
        let out = home.output(&["sync"]);
        assert_eq!(
            out.code(),
            0,
            "recovery after revision {}: {out:?}",
            world.version
        );
        recoveries += 1;
        assert_eq!(
            world.served().unwrap(),
            world.source.expected(),
            "after recovery {recoveries}: what DaCHS serves is not the source"
        );
        let left = leftovers(home, NAME);
        assert!(
            left.is_empty(),
            "after recovery {recoveries}: left {left:?}"
        );
        state_is_consistent(home, &world.git).unwrap();
        let plan = home.output(&["plan"]);
        assert_eq!(
            plan.code(),
            0,
            "after recovery {recoveries}: not converged: {plan:?}"
        );
    }
    let (queries, failed, errors) = prober.finish();
    figure(&format!(
        "CRASH: {kills} kill points survived ({kills_in_deploys} in passes that deployed a changed \
         RD), {recoveries} recoveries over {} revisions in {:.0} s; granules lost or duplicated: \
         0; TAP queries: {queries}, failed: {failed} {errors:?}",
        world.version,
        started.elapsed().as_secs_f64()
    ));
    assert_eq!(failed, 0, "failed TAP queries: {errors:?}");
    assert!(
        kills_in_deploys * 4 >= kills,
        "only {kills_in_deploys} of {kills} kills landed in a deploy"
    );
}

/// The checks above can fail: each catches what it looks for.
#[test]
fn the_checks_catch_a_partial_file_mixed_versions_and_a_temporary_file() {
    let row = |uid: &str, v: &str| (uid.to_owned(), v.to_owned());
    let whole: std::collections::BTreeMap<_, _> = [
        row("c0001r0", "v1"),
        row("c0001r1", "v1"),
        row("c0001r2", "v1"),
    ]
    .into();
    assert!(whole_files(&whole).is_ok());
    let mut partial = whole.clone();
    partial.remove("c0001r2");
    assert!(whole_files(&partial).unwrap_err().contains("c0001"));
    let mut mixed = whole.clone();
    mixed.insert("c0001r1".into(), "v2".into());
    assert!(whole_files(&mixed).is_err());

    let home = Home::new(&dachs_url(), "");
    assert!(leftovers(&home, NAME).is_empty());
    home.write("state/revisions/.tmp-abc/q.rd", "");
    home.write("state/.vespa-tmp-state", "");
    assert_eq!(
        leftovers(&home, NAME).len(),
        2,
        "{:?}",
        leftovers(&home, NAME)
    );
}
