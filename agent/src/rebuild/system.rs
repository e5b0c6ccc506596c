//! The system half of a rebuild: the Debian packages, PostgreSQL, DaCHS's database and DaCHS's
//! server, each inspected and, when broken, repaired with the commands an operator would type.
//! Every repair can be run again on a node where it already ran, or ran half-way.

use std::path::Path;
use std::process::Command;

/// PostgreSQL first (DaCHS's postinst needs it running), then DaCHS.
pub const PG_PACKAGES: [&str; 2] = ["postgresql-15", "postgresql-15-pgsphere"];
pub const DACHS_PACKAGE: &str = "gavodachs2-server";
/// pg_sphere's extension script, from which the fix for PostgreSQL >= 15.19 removes two
/// obsolete operators (../shared/dachs/README.md, Fix A).
pub const PGSPHERE_SQL: &str = "/usr/share/postgresql/15/extension/pg_sphere--1.2.0.sql";
const PGSPHERE_FIRST: &str = "-- a minimal set of backwards-compatible operators for GAVO DaCHS";
const PGSPHERE_END: &str = "-- debugging";
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";
pub const DATABASE: &str = "gavo";

#[derive(Debug, thiserror::Error)]
#[error("{command}: {message}")]
pub struct SystemError {
    pub command: String,
    pub message: String,
}

/// Runs a command; its output when it succeeds, its last lines of stderr when not.
pub fn run(argv: &[&str]) -> Result<String, SystemError> {
    let command = argv.join(" ");
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .map_err(|e| SystemError {
            command: command.clone(),
            message: e.to_string(),
        })?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = err.lines().rev().take(5).collect();
    Err(SystemError {
        command,
        message: format!(
            "{}: {}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
        ),
    })
}

pub fn under_systemd() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

pub fn installed(package: &str) -> bool {
    run(&["dpkg-query", "-W", "-f", "${Status}", package])
        .is_ok_and(|s| s.trim() == "install ok installed")
}

/// Packages that are missing or not completely installed.
pub fn missing_packages() -> Vec<&'static str> {
    PG_PACKAGES
        .iter()
        .copied()
        .chain([DACHS_PACKAGE])
        .filter(|p| !installed(p))
        .collect()
}

fn apt_install(packages: &[&str]) -> Result<(), SystemError> {
    let mut argv = vec![
        "apt-get",
        "-o",
        "DPkg::Lock::Timeout=900",
        "-o",
        "Dpkg::Options::=--force-confold",
        "-y",
        "-q",
        "install",
    ];
    argv.extend_from_slice(packages);
    run(&argv).map(|_| ())
}

/// Removes the two obsolete DaCHS compatibility operators from pg_sphere's script (the fix for
/// PostgreSQL 15.20); does nothing when they are gone or the file is not there.
pub fn fix_pgsphere(path: &Path) -> Result<bool, String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(false);
    };
    let fixed = remove_compat_operators(&text);
    if fixed == text {
        return Ok(false);
    }
    crate::apply::server::write(path, &fixed)?;
    Ok(true)
}

fn remove_compat_operators(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut skipping = false;
    for line in text.split_inclusive('\n') {
        if line.starts_with(PGSPHERE_FIRST) {
            skipping = true;
        } else if skipping && line.starts_with(PGSPHERE_END) {
            skipping = false;
        }
        if !skipping {
            out.push_str(line);
        }
    }
    out
}

/// Installs what is missing, in the order that works on a fresh Debian 12: PostgreSQL, running;
/// the pg_sphere fix; DaCHS with every service start held back until its postinst has run
/// `dachs init` (under systemd the two race, and the install fails).
pub fn install_packages(missing: &[&str]) -> Result<(), SystemError> {
    run(&["apt-get", "-o", "DPkg::Lock::Timeout=900", "-q", "update"])?;
    let pg: Vec<&str> = missing
        .iter()
        .copied()
        .filter(|p| PG_PACKAGES.contains(p))
        .collect();
    if !pg.is_empty() {
        apt_install(&pg)?;
    }
    start_postgresql()?;
    fix_pgsphere(Path::new(PGSPHERE_SQL)).map_err(|message| SystemError {
        command: format!("fix {PGSPHERE_SQL}"),
        message,
    })?;
    if missing.contains(&DACHS_PACKAGE) {
        std::fs::write(POLICY_RC_D, "#!/bin/sh\nexit 101\n")
            .and_then(|()| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(POLICY_RC_D, std::fs::Permissions::from_mode(0o755))
            })
            .map_err(|e| SystemError {
                command: format!("write {POLICY_RC_D}"),
                message: e.to_string(),
            })?;
        // A postinst that failed half-way on an earlier run is finished by dpkg --configure.
        let done = apt_install(&[DACHS_PACKAGE])
            .or_else(|_| run(&["dpkg", "--configure", "-a"]).map(drop));
        let _ = std::fs::remove_file(POLICY_RC_D);
        done?;
    }
    Ok(())
}

pub fn postgresql_online() -> bool {
    run(&["pg_lsclusters", "-h"]).is_ok_and(|s| {
        s.lines()
            .any(|l| l.split_whitespace().nth(3) == Some("online"))
    })
}

/// The port of the online cluster (pg_lsclusters' third column). libpq, and so `dachs init`,
/// otherwise assumes 5432, while Debian's psql wrapper finds the cluster by itself.
pub fn cluster_port() -> Option<u16> {
    let out = run(&["pg_lsclusters", "-h"]).ok()?;
    out.lines().find_map(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        (cols.get(3) == Some(&"online")).then(|| cols.get(2)?.parse().ok())?
    })
}

pub fn start_postgresql() -> Result<(), SystemError> {
    if postgresql_online() {
        return Ok(());
    }
    if run(&["pg_lsclusters", "-h"]).is_ok_and(|s| s.trim().is_empty()) {
        // The cluster itself is gone (its directory was wiped): make a new one.
        return run(&["pg_createcluster", "15", "main", "--start"]).map(drop);
    }
    if under_systemd() {
        run(&["systemctl", "start", "postgresql@15-main.service"]).map(drop)
    } else {
        run(&["pg_ctlcluster", "15", "main", "start"]).map(drop)
    }
}

/// One value from psql as the postgres superuser.
fn psql(database: &str, sql: &str) -> Result<String, SystemError> {
    run(&[
        "runuser", "-u", "postgres", "--", "psql", "-X", "-A", "-t", "-q", "-d", database, "-c",
        sql,
    ])
    .map(|s| s.trim().to_owned())
}

pub fn database_exists() -> bool {
    psql(
        "postgres",
        &format!("SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"),
    )
    .is_ok_and(|s| s == "1")
}

/// DaCHS's own schema is in the database (`dachs init` ran to its end).
pub fn database_initialised() -> bool {
    psql(
        DATABASE,
        "SELECT 1 FROM pg_namespace WHERE nspname = 'dc' AND EXISTS \
         (SELECT 1 FROM pg_tables WHERE schemaname = 'dc' AND tablename = 'tablemeta')",
    )
    .is_ok_and(|s| s == "1")
}

pub fn drop_database() -> Result<(), SystemError> {
    run(&[
        "runuser",
        "-u",
        "postgres",
        "--",
        "dropdb",
        "--if-exists",
        "--force",
        DATABASE,
    ])
    .map(drop)
}

/// An empty database for `dachs init`, and DaCHS's superuser role (as the postinst makes them).
pub fn create_database(dachs_user: &str) -> Result<(), SystemError> {
    if !database_exists() {
        run(&[
            "runuser",
            "-u",
            "postgres",
            "--",
            "createdb",
            "--encoding=UTF-8",
            "--template",
            "template0",
            DATABASE,
        ])?;
    }
    let role = psql(
        "postgres",
        &format!("SELECT 1 FROM pg_roles WHERE rolname = '{dachs_user}'"),
    )?;
    if role != "1" {
        run(&[
            "runuser",
            "-u",
            "postgres",
            "--",
            "createuser",
            "-s",
            dachs_user,
        ])?;
    }
    Ok(())
}

pub fn stop_dachs_server(dachs_bin: &Path) {
    // Its database connections would keep the database from being dropped.
    let _ = if under_systemd() {
        run(&["systemctl", "stop", "dachs.service"])
    } else {
        run(&[&dachs_bin.to_string_lossy(), "serve", "stop"])
    };
}

pub fn start_dachs_server(dachs_bin: &Path) -> Result<(), SystemError> {
    if under_systemd() {
        run(&["systemctl", "restart", "dachs.service"]).map(drop)
    } else {
        let bin = dachs_bin.to_string_lossy();
        let _ = run(&[&bin, "serve", "stop"]);
        run(&[&bin, "serve", "start"]).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pgsphere_fix_removes_the_two_operators_once() {
        let script = "CREATE FUNCTION a();\n\
                      -- a minimal set of backwards-compatible operators for GAVO DaCHS\n\
                      CREATE OPERATOR @ (LEFTARG = bigint, COMMUTATOR = '@>');\n\
                      CREATE OPERATOR @ (LEFTARG = spoint, COMMUTATOR = '@>');\n\
                      -- debugging\n\
                      CREATE FUNCTION b();\n";
        let fixed = remove_compat_operators(script);
        assert_eq!(
            fixed,
            "CREATE FUNCTION a();\n-- debugging\nCREATE FUNCTION b();\n"
        );
        assert_eq!(remove_compat_operators(&fixed), fixed);

        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("pg_sphere--1.2.0.sql");
        std::fs::write(&p, script).unwrap();
        assert!(fix_pgsphere(&p).unwrap());
        assert!(!fix_pgsphere(&p).unwrap(), "the second run changes nothing");
        assert!(!fix_pgsphere(&t.path().join("missing.sql")).unwrap());
    }
}
