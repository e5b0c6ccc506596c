//! The code an idle daemon keeps mapped: after a pass, only what the idle loop runs.
//!
//! Why: start-up and a pass run most of the binary (configuration, git, SQLite, TLS, DaCHS's
//! output, the granule stage), and every page of code they touched stays in the process's page
//! tables, 64 KB at a time (the kernel maps a fault's neighbours too). Measured after a pass and
//! 200 scrapes (scripts/bench-footprint.sh): 7 MB of the binary and 1.4 MB of libcrypto mapped,
//! of which the idle loop (timers, /metrics, the control socket) runs a small part. Mapped code
//! is what the kernel reclaims last; unmapped, the same pages stay in the page cache, where they
//! are reclaimed first when DaCHS or PostgreSQL need the memory, and the next pass maps what it
//! runs again from there (a few hundred minor faults, well under a millisecond). Only before a
//! long wait: see [`WORTH_RELEASING`].

/// The least wait before the next pass for which the code is released: at a shorter interval
/// the next pass maps it back within seconds, and the resident size would only swing with every
/// pass (the default interval is five minutes).
pub const WORTH_RELEASING: std::time::Duration = std::time::Duration::from_secs(30);

/// One mapping to let go of: its start and length.
#[derive(Debug, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub len: usize,
}

/// One mapping as `/proc/self/smaps` describes it, as far as this module needs.
struct Mapping {
    span: Span,
    /// Mapped privately from a file, readable and executable, not writable: code.
    code_from_file: bool,
    /// Some of its pages are private copies (its `Anonymous:` is not 0).
    written: bool,
    /// Its `Rss:` in KiB.
    rss_kib: u64,
}

/// Every mapping of an smaps text, in its order; lines that are not understood are skipped.
fn mappings(smaps: &str) -> Vec<Mapping> {
    let mut out: Vec<Mapping> = Vec::new();
    for line in smaps.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(first) = fields.next() else {
            continue;
        };
        if let Some((a, b)) = first.split_once('-')
            && let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
        {
            // A new mapping: `start-end perms offset dev inode path`.
            let perms = fields.next();
            let path = fields.nth(3);
            out.push(Mapping {
                span: Span {
                    start: a,
                    len: b.saturating_sub(a),
                },
                code_from_file: perms == Some("r-xp")
                    && path.is_some_and(|p| p.starts_with('/'))
                    && b > a,
                written: false,
                rss_kib: 0,
            });
        } else if let Some(m) = out.last_mut() {
            match first {
                "Anonymous:" => m.written = fields.next() != Some("0"),
                "Rss:" => m.rss_kib = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0),
                _ => {}
            }
        }
    }
    out
}

/// The mappings of `/proc/self/smaps` that may be dropped from the page tables without losing
/// anything: code mapped privately from a file and never written to. A mapping with private
/// copies of its pages (a debugger's breakpoints, a uprobe) is left alone, as is every
/// mapping that is not code (read-only data may be relocated data made read-only after start).
pub fn releasable(smaps: &str) -> Vec<Span> {
    mappings(smaps)
        .into_iter()
        .filter(|m| m.code_from_file && !m.written)
        .map(|m| m.span)
        .collect()
}

/// Drops the process's unwritten code pages from its page tables (see the module's comment);
/// returns the bytes of address space released. Linux only; elsewhere, and when /proc cannot be
/// read, it does nothing.
pub fn release_code() -> usize {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return 0;
    };
    let mut released = 0;
    for span in releasable(&smaps) {
        // SAFETY: the span is a private file mapping of code with no private copy of any page
        // (smaps said so a moment ago): its pages come back from the file exactly as they were.
        // madvise changes no mapping and fails harmlessly on one that went away meanwhile.
        let rc = unsafe {
            libc::madvise(
                span.start as *mut libc::c_void,
                span.len,
                libc::MADV_DONTNEED,
            )
        };
        if rc == 0 {
            released += span.len;
        }
    }
    released
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0c0000000-55d0c0100000 r--p 00000000 fe:00 131 /usr/bin/vespa-agent
Rss:                 400 kB
Anonymous:             0 kB
55d0c0100000-55d0c0900000 r-xp 00100000 fe:00 131 /usr/bin/vespa-agent
Size:               8192 kB
Rss:                7000 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me
55d0c0900000-55d0c0a00000 rw-p 00900000 fe:00 131 /usr/bin/vespa-agent
Anonymous:            64 kB
7f0000000000-7f0000400000 r-xp 00028000 fe:00 77 /usr/lib/x86_64-linux-gnu/libc.so.6
Rss:                1400 kB
Anonymous:             4 kB
7f0000500000-7f0000600000 r-xp 00000000 fe:00 78 /usr/lib/x86_64-linux-gnu/libcrypto.so.3
Rss:                1000 kB
Anonymous:             0 kB
7f0000700000-7f0000800000 rw-p 00000000 00:00 0 
Anonymous:          1024 kB
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0                          [vdso]
Anonymous:             0 kB
7f0000900000-7f0000a00000 r-xp 00000000 00:05 9 /memfd:x (deleted)
";

    #[test]
    fn only_unwritten_code_mapped_from_files_is_released() {
        assert_eq!(
            releasable(SMAPS),
            vec![
                // The binary's code; not its read-only data, nor its written data.
                Span {
                    start: 0x55d0c0100000,
                    len: 0x800000
                },
                // libc has a written page (a breakpoint): left alone.
                Span {
                    start: 0x7f0000500000,
                    len: 0x100000
                },
                // Not the anonymous mapping nor the vDSO; the last mapping has no
                // Anonymous line and is taken as the file says.
                Span {
                    start: 0x7f0000900000,
                    len: 0x100000
                },
            ]
        );
        assert!(releasable("").is_empty());
        assert!(releasable("garbage\n-\nzz-yy r-xp 0 0 0 /x\n").is_empty());
    }

    fn code_rss_kib() -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        mappings(&smaps)
            .iter()
            .filter(|m| m.code_from_file)
            .map(|m| m.rss_kib)
            .sum()
    }

    #[test]
    fn released_code_leaves_the_page_tables_and_runs_again() {
        let before = code_rss_kib();
        assert!(release_code() > 0);
        let after = code_rss_kib();
        assert!(
            after < before,
            "code resident: {before} KiB before, {after} after"
        );
        // The code still runs: this very function, and what it calls, came back from the file.
        assert_eq!(releasable(SMAPS).len(), 3);
    }
}
