//! Resource faults under a real pass: the disk filling up during a download, the state
//! directory turning read-only, the DaCHS server stopped in the middle of a pass, PostgreSQL
//! stopped while `dachs imp` runs. Each time: the pass fails with an error that says what, DaCHS
//! keeps (or, once back, again) serving whole files only, nothing is corrupted or left behind,
//! and when the fault clears the next pass converges to exactly the source. One test, its phases
//! in turn: they stop the harness's shared PostgreSQL and DaCHS, which no other test of this
//! binary may see.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harness::churn::*;
use harness::node::is_root;
use harness::*;

const NAME: &str = "vt_resfault";

fn sh(script: &str) -> bool {
    Command::new("sh")
        .args(["-c", script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn dachs_up() -> bool {
    tap_query("SELECT TOP 1 table_name FROM tap_schema.tables").is_ok()
}

/// Puts PostgreSQL and DaCHS back, and the state and data directories' mounts away, whatever
/// happened.
struct Restore {
    state: std::path::PathBuf,
    data: std::path::PathBuf,
}

impl Restore {
    fn services(&self) {
        sh("pg_ctlcluster 15 main status || pg_ctlcluster 15 main start");
        if !dachs_up() {
            sh("dachs serve stop; dachs serve start");
        }
        let t = Instant::now();
        while !dachs_up() && t.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(250));
        }
        assert!(dachs_up(), "DaCHS did not come back");
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| self.services());
        sh(&format!("umount '{}'", self.state.display()));
        sh(&format!("umount '{}'", self.data.display()));
    }
}

/// A `sync` of its own, and its output.
fn sync(world: &World) -> Output {
    world.home.output(&["sync"])
}

/// A `sync` left running while the test breaks something under it.
fn background_sync(world: &World) -> std::process::Child {
    world
        .home
        .command(&["sync"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn recovered(world: &World, what: &str) {
    let out = sync(world);
    assert_eq!(out.code(), 0, "{what}: the pass after the fault: {out:?}");
    assert!(
        world.converged(Duration::from_secs(30)),
        "{what}: DaCHS does not serve the source"
    );
    let left = leftovers(&world.home, NAME);
    assert!(left.is_empty(), "{what}: left {left:?}");
}

/// Whole files only, and every row of a file still at the source served (in its old version or
/// its new): a pass that could not bring everything in loses nothing. (Files that left the
/// source may go: deletions need no space.)
fn nothing_lost(world: &World, before: &std::collections::BTreeMap<String, String>) {
    let now = world.served().unwrap();
    whole_files(&now).unwrap();
    let expected = world.source.expected();
    for uid in before.keys().filter(|u| expected.contains_key(*u)) {
        assert!(now.contains_key(uid), "{uid} was lost; served {now:?}");
    }
}

#[test]
fn a_full_disk_a_read_only_state_dir_a_stopped_dachs_and_a_stopped_postgresql_are_survived() {
    if !is_root() {
        missing("root (the test mounts a filesystem and stops PostgreSQL)");
        return;
    }
    // It restarts the host's DaCHS: no other suite may use it meanwhile.
    harness::lock::own_dachs();
    let Some(mut world) = World::start(NAME) else {
        return;
    };
    let state = world.home.path("state");
    std::fs::create_dir_all(&state).unwrap();
    assert!(
        sh(&format!(
            "mount -t tmpfs -o size=64m tmpfs '{}'",
            state.display()
        )),
        "cannot mount a tmpfs"
    );
    // The granules' directory on a filesystem of its own, small enough to fill, mounted before
    // the first pass: a mount over files the agent brought would hide them, and the import
    // would prune their rows.
    let data = std::path::Path::new("/var/gavo/inputs")
        .join(NAME)
        .join("data");
    std::fs::create_dir_all(&data).unwrap();
    let restore = Restore {
        state: state.clone(),
        data: data.clone(),
    };
    assert!(
        sh(&format!(
            "mount -t tmpfs -o size=1m,mode=0755 tmpfs '{}'",
            data.display()
        )),
        "cannot mount a tmpfs"
    );
    world.home.write(
        "etc/agent.d/50-disk.toml",
        "[granules]\ndisk-reserve = \"0\"\n",
    );
    let mut seed = seed("VESPA_RESOURCE_SEED");
    let out = sync(&world);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(world.converged(Duration::from_secs(30)));

    // 0. The disk fills up: the transfers meet "No space left on device" (no reserve set), then,
    // with space freed but less than the reserve, the reserve stops them before they start.
    let before = world.served().unwrap();
    let filler = data.join("filler.bin");
    sh(&format!("dd if=/dev/zero of='{}' bs=4k", filler.display()));
    world.next_revision(&mut seed);
    let out = sync(&world);
    assert_ne!(out.code(), 0, "a pass with a full disk: {out:?}");
    eprintln!("the disk full: {}", out.stderr.lines().last().unwrap_or(""));
    assert!(
        out.stderr.contains("No space left on device") && out.stderr.contains(NAME),
        "the error does not say where and what: {}",
        out.stderr
    );
    nothing_lost(&world, &before);
    std::fs::write(&filler, vec![0u8; 512 * 1024]).unwrap();
    world.home.write(
        "etc/agent.d/50-disk.toml",
        "[granules]\ndisk-reserve = \"900K\"\n",
    );
    let out = sync(&world);
    assert_ne!(out.code(), 0, "a pass past the disk reserve: {out:?}");
    eprintln!(
        "past the reserve: {}",
        out.stderr.lines().last().unwrap_or("")
    );
    assert!(
        out.stderr.contains("reserve"),
        "the error does not name the reserve: {}",
        out.stderr
    );
    nothing_lost(&world, &before);
    std::fs::remove_file(&filler).unwrap();
    world.home.write(
        "etc/agent.d/50-disk.toml",
        "[granules]\ndisk-reserve = \"0\"\n",
    );
    recovered(&world, "the disk full");

    // 1. The state directory read-only (a full or failing disk remounted by the kernel).
    let before = world.served().unwrap();
    assert!(sh(&format!("mount -o remount,ro '{}'", state.display())));
    world.next_revision(&mut seed);
    let out = sync(&world);
    assert_ne!(out.code(), 0, "a pass with a read-only state dir: {out:?}");
    assert!(
        out.stderr.contains(&state.display().to_string()) && out.stderr.contains("Read-only"),
        "the error does not say where and what: {}",
        out.stderr
    );
    assert_eq!(
        world.served().unwrap(),
        before,
        "DaCHS changed without the state store"
    );
    assert!(sh(&format!("mount -o remount,rw '{}'", state.display())));
    recovered(&world, "read-only state dir");

    // 2. The DaCHS server stopped in the middle of a pass.
    world.next_revision(&mut seed);
    let child = background_sync(&world);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(sh("dachs serve stop"));
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "DaCHS stopped mid-pass: exit {:?}: {}",
        out.status.code(),
        stderr.lines().last().unwrap_or("")
    );
    if !out.status.success() {
        assert!(
            stderr.contains("TAP") || stderr.contains("dachs") || stderr.contains("DaCHS"),
            "the failure does not say DaCHS: {stderr}"
        );
    }
    restore.services();
    whole_files(&world.served().unwrap()).unwrap();
    recovered(&world, "DaCHS stopped mid-pass");

    // 3. PostgreSQL stopped while `dachs imp` runs.
    world.next_revision(&mut seed);
    let child = background_sync(&world);
    let t = Instant::now();
    while !sh("pgrep -f '[d]achs imp'") && t.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(t.elapsed() < Duration::from_secs(60), "no dachs imp ran");
    assert!(sh("pg_ctlcluster 15 main stop -m fast"));
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the pass succeeded without its database"
    );
    eprintln!(
        "PostgreSQL stopped mid-import: {}",
        stderr.lines().last().unwrap_or("")
    );
    restore.services();
    whole_files(&world.served().unwrap()).unwrap();
    recovered(&world, "PostgreSQL stopped mid-import");
    drop(restore);
}
