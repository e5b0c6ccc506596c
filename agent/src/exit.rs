//! Exit codes, after sysexits(3), so that systemd and scripts can tell failures apart. A
//! configuration error is 78 (EX_CONFIG): the unit's `RestartPreventExitStatus=78` then stops a
//! restart loop that could not succeed.

use crate::config::ConfigError;
use crate::state::StateError;

pub const OK: u8 = 0;
/// A failure without a more precise code (a failed pass of `sync`, for example).
pub const FAILURE: u8 = 1;
/// EX_DATAERR: the state store is damaged or from a newer version.
pub const DATAERR: u8 = 65;
/// EX_UNAVAILABLE: a service the agent needs (another agent holding the lock, the listen
/// address) is not available.
pub const UNAVAILABLE: u8 = 69;
/// EX_IOERR: reading or writing local files failed.
pub const IOERR: u8 = 74;
/// EX_CONFIG.
pub const CONFIG: u8 = 78;

/// The exit code for an error: the first cause in the chain that has a known meaning.
pub fn code_for(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if cause.downcast_ref::<ConfigError>().is_some()
            || cause.downcast_ref::<crate::web::WebConfigError>().is_some()
        {
            return CONFIG;
        }
        if let Some(e) = cause.downcast_ref::<StateError>() {
            return for_state(e);
        }
        if cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::AddrInUse)
        {
            return UNAVAILABLE;
        }
    }
    FAILURE
}

/// A second agent holding the lock is "unavailable"; a damaged or newer store is bad data; the
/// rest is the disk.
fn for_state(e: &StateError) -> u8 {
    match e {
        StateError::Locked { .. } => UNAVAILABLE,
        StateError::Corrupt { .. } | StateError::TooNew { .. } => DATAERR,
        StateError::Dir { .. } | StateError::Sqlite { .. } => IOERR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StateStore;

    #[test]
    fn a_second_writer_exits_unavailable() {
        let t = tempfile::tempdir().unwrap();
        let _first = StateStore::open(t.path()).unwrap();
        let e = StateStore::open(t.path()).unwrap_err();
        assert_eq!(
            code_for(&anyhow::Error::new(e).context("opening")),
            UNAVAILABLE
        );
    }
}
