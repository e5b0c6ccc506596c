//! The provider's own regression tests as the last step of a deploy: once the resource is
//! imported, expired and answers TAP, its `<regSuite>`s run against the local server (`dachs
//! test -t <tag>`, within a time limit). A failing test fails the deploy like any other step:
//! the resource is rolled back and the commit refused with the failing tests' titles and
//! DaCHS's words. An RD without suites, or whose tests are all tagged for another environment,
//! passes without running `dachs test`.

use std::path::Path;
use std::time::Instant;

use super::{ApplyContext, StepResult, local_step};
use crate::dachs::cli::DachsError;
use crate::dachs::rd;
use crate::service::Resource;

/// The state store's meta key under which a resource's last regression result is kept.
pub fn result_key(dir: &str) -> String {
    format!("regression:{dir}")
}

/// Runs the suites of the RD at `rd_path` (deployed as `res`, from commit `sha`).
pub async fn gate(cx: &ApplyContext<'_>, res: &Resource, rd_path: &Path, sha: &str) -> StepResult {
    let Some(settings) = cx.regression else {
        return Ok(());
    };
    let xml = std::fs::read_to_string(rd_path).map_err(|e| local_step("regression", e))?;
    let tests = rd::regression_test_count(&xml, &settings.tag);
    if tests == 0 {
        return Ok(());
    }
    cx.runtime
        .set_activity(format!("running the regression tests of {}", res.dir));
    let rd_id = res.rd_id();
    let started = Instant::now();
    let run = cx
        .dachs
        .regression_tests(&rd_id, &settings.tag, settings.timeout)
        .await;
    let seconds = started.elapsed().as_secs_f64();
    let m = cx.metrics;
    m.regression_duration
        .with_label_values(&[&res.dir])
        .set(seconds);
    let short = &sha[..sha.len().min(12)];
    let (verdict, outcome) = match run {
        Ok(r) if r.bad == 0 => {
            m.regression_tests
                .with_label_values(&["passed"])
                .inc_by(r.total);
            (
                format!("{} of {} tests passed in {seconds:.1} s", r.total, r.total),
                Ok(()),
            )
        }
        Ok(r) => {
            m.regression_tests
                .with_label_values(&["passed"])
                .inc_by(r.total - r.bad);
            m.regression_tests
                .with_label_values(&["failed"])
                .inc_by(r.bad);
            let message = r.message();
            (
                format!("FAILED: {message}"),
                Err(DachsError::Failed {
                    command: command(&settings.tag, &rd_id),
                    message,
                }),
            )
        }
        Err(e) => {
            m.regression_tests
                .with_label_values(&["failed"])
                .inc_by(tests as u64);
            (format!("FAILED: {e}"), Err(e))
        }
    };
    let record = format!(
        "{verdict} (commit {short}, {})",
        humantime::format_rfc3339_seconds(std::time::SystemTime::now())
    );
    let _ = crate::state::with_store(cx.store, |s| s.set_meta(&result_key(&res.dir), &record));
    match outcome {
        Ok(()) => {
            tracing::info!(resource = %res.dir, tests, seconds, "regression tests passed");
            Ok(())
        }
        Err(e) => {
            tracing::error!(message_id = crate::journal::REGRESSION_FAILED, resource = %res.dir, error = %e.message(), "regression tests failed; the deploy is rolled back");
            Err(("regression", e))
        }
    }
}

fn command(tag: &str, rd: &str) -> String {
    match tag {
        "" => format!("dachs test {rd}"),
        t => format!("dachs test -t {t} {rd}"),
    }
}
