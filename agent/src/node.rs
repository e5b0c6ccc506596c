//! The node resources that decide whether DaCHS stays healthy, read each pass: free space on
//! the filesystems of the DaCHS inputs and of PostgreSQL's data, available memory and load
//! (sysinfo). Only these few, labelled by their role for DaCHS: the rest is node_exporter's.

use std::path::Path;

/// Where PostgreSQL keeps its data on Debian.
pub const POSTGRES_DATA: &str = "/var/lib/postgresql";

/// Free and total bytes of the filesystem holding `path` (for an unprivileged user: blocks
/// reserved for root do not count as free).
pub fn filesystem(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `c` is a valid NUL-terminated path and `st` a plain struct statvfs fills in.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let frsize = st.f_frsize as u64;
    Ok((st.f_bavail as u64 * frsize, st.f_blocks as u64 * frsize))
}

/// Available and total memory in bytes (zeros when unreadable), and the one-minute load.
pub fn memory_and_load() -> (u64, u64, f64) {
    let (available, total) = match sysinfo::System::new() {
        Ok(mut sys) => {
            sys.refresh_memory();
            (sys.available_memory(), sys.total_memory())
        }
        Err(_) => (0, 0),
    };
    let load = sysinfo::System::load_average().map_or(0.0, |l| l.one);
    (available, total, load)
}

/// Sets the node gauges: filesystems by role (`gavo`: the inputs directory's, `postgresql`),
/// memory, load. A path that does not exist (no PostgreSQL here) leaves its series out.
pub fn observe(metrics: &crate::metrics::Metrics, inputs: &Path) {
    for (role, path) in [("gavo", inputs), ("postgresql", Path::new(POSTGRES_DATA))] {
        match filesystem(path) {
            Ok((free, size)) => {
                metrics
                    .filesystem_free
                    .with_label_values(&[role])
                    .set(free as i64);
                metrics
                    .filesystem_size
                    .with_label_values(&[role])
                    .set(size as i64);
            }
            Err(_) => {
                let _ = metrics.filesystem_free.remove_label_values(&[role]);
                let _ = metrics.filesystem_size.remove_label_values(&[role]);
            }
        }
    }
    let (available, total, load) = memory_and_load();
    metrics.memory_available.set(available as i64);
    metrics.memory_total.set(total as i64);
    metrics.load1.set(load);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_filesystem_and_memory_read_sensibly() {
        let (free, size) = filesystem(Path::new("/")).unwrap();
        assert!(size > 0 && free <= size);
        assert!(filesystem(Path::new("/no/such/dir")).is_err());
        let (available, total, load) = memory_and_load();
        assert!(total > 0 && available <= total && load >= 0.0);
    }
}
