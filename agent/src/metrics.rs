//! The Prometheus metrics. One [`Metrics`] value owns the registry and is passed to whoever
//! updates or serves it, so tests can build as many as they like and nothing hides in globals.

use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub passes: IntCounterVec,
    pub pass_duration: Histogram,
    pub last_success: Gauge,
    pub heartbeat: Gauge,
    pub reloads: IntCounterVec,
    pub last_reload_ok: IntGauge,
    pub web_reloads: IntCounterVec,
    pub web_last_reload_ok: IntGauge,
    pub http_refused: IntCounterVec,
    pub dachs_up: IntGauge,
    pub stage_errors: IntCounterVec,
    pub syncs: IntCounterVec,
    pub fetch_duration: Histogram,
    pub source_last_success: Gauge,
    pub revision: GaugeVec,
    pub failed_commits: IntGauge,
    pub desired_refused: GaugeVec,
    pub webhooks: IntCounterVec,
    pub drift_resources: IntGauge,
    pub granules: IntGaugeVec,
    pub granule_bytes: IntCounter,
    pub granule_failures: IntCounterVec,
    pub granule_retries: IntCounter,
    pub granule_transfer_duration: Histogram,
    pub granule_import_duration: Histogram,
    pub drift_detected: IntCounter,
    pub regression_tests: IntCounterVec,
    pub regression_duration: GaugeVec,
    pub gitlab_reports: IntCounterVec,
    pub filesystem_free: IntGaugeVec,
    pub filesystem_size: IntGaugeVec,
    pub memory_available: IntGauge,
    pub memory_total: IntGauge,
    pub load1: Gauge,
    pub table_up: IntGaugeVec,
    pub table_rows: IntGaugeVec,
    pub table_query_duration: GaugeVec,
    pub rebuild_decisions: IntCounterVec,
    pub unhealthy_seconds: Gauge,
}

/// The reasons `vespa_agent_granule_failures_total` counts: a fixed set, so the series count
/// cannot grow with what goes wrong.
pub const GRANULE_FAILURE_REASONS: [&str; 11] = [
    "source",
    "bad_listing",
    "transfer",
    "changed_in_transfer",
    "checksum_mismatch",
    "unverifiable",
    "disk_reserve",
    "local",
    "unsupported",
    "import_failed",
    "import_refused",
];

/// The git revision the binary was built from, set by build.rs.
pub const GIT_REVISION: &str = env!("VESPA_AGENT_GIT_REVISION");

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let passes = IntCounterVec::new(
            Opts::new(
                "vespa_agent_reconcile_passes_total",
                "Reconcile passes by result.",
            ),
            &["result"],
        )
        .expect("valid metric");
        let pass_duration = Histogram::with_opts(
            HistogramOpts::new(
                "vespa_agent_reconcile_pass_duration_seconds",
                "Wall time of one reconcile pass.",
            )
            .buckets(vec![
                0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0,
            ]),
        )
        .expect("valid metric");
        let last_success = Gauge::new(
            "vespa_agent_reconcile_last_success_timestamp_seconds",
            "Unix time of the end of the last successful pass (0: none yet).",
        )
        .expect("valid metric");
        let heartbeat = Gauge::new(
            "vespa_agent_reconcile_heartbeat_timestamp_seconds",
            "Unix time the reconcile loop last showed it is alive.",
        )
        .expect("valid metric");
        let reloads = IntCounterVec::new(
            Opts::new(
                "vespa_agent_config_reloads_total",
                "Configuration reloads (SIGHUP) by result.",
            ),
            &["result"],
        )
        .expect("valid metric");
        let last_reload_ok = IntGauge::new(
            "vespa_agent_config_last_reload_successful",
            "1 if the last configuration reload was accepted, 0 if it was rejected.",
        )
        .expect("valid metric");
        let web_reloads = IntCounterVec::new(
            Opts::new(
                "vespa_agent_web_config_reloads_total",
                "Reloads of http.web-config-file (or a file it names) after a change, by result.",
            ),
            &["result"],
        )
        .expect("valid metric");
        let web_last_reload_ok = IntGauge::new(
            "vespa_agent_web_config_last_reload_successful",
            "1 if the web configuration file in force is the one on disk, 0 if the file on disk was refused and the last good one serves.",
        )
        .expect("valid metric");
        let http_refused = IntCounterVec::new(
            Opts::new(
                "vespa_agent_http_refused_total",
                "Connections and requests the listener refused, by reason (unauthorized, plain_http, tls_handshake, handshake_timeout, client_san, not_tls, closed).",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let dachs_up = IntGauge::new(
            "vespa_agent_dachs_up",
            "1 if the local DaCHS answered the last health query with QUERY_STATUS OK.",
        )
        .expect("valid metric");
        let stage_errors = IntCounterVec::new(
            Opts::new(
                "vespa_agent_reconcile_errors_total",
                "Failed reconcile stages, by stage and a fixed set of error kinds.",
            ),
            &["stage", "kind"],
        )
        .expect("valid metric");
        let syncs = IntCounterVec::new(
            Opts::new(
                "vespa_agent_source_syncs_total",
                "Syncs of the service repository: success (a new revision), noop (unchanged), error.",
            ),
            &["result"],
        )
        .expect("valid metric");
        let fetch_duration = Histogram::with_opts(
            HistogramOpts::new(
                "vespa_agent_source_fetch_duration_seconds",
                "Wall time of asking the repository for its tip and fetching what is new.",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0]),
        )
        .expect("valid metric");
        let source_last_success = Gauge::new(
            "vespa_agent_source_last_success_timestamp_seconds",
            "Unix time of the last sync that reached the repository without error (0: none yet).",
        )
        .expect("valid metric");
        let revision = GaugeVec::new(
            Opts::new(
                "vespa_agent_revision_info",
                "1 for the applied and the desired revision of the service repository.",
            ),
            &["role", "revision"],
        )
        .expect("valid metric");
        let desired_refused = GaugeVec::new(
            Opts::new(
                "vespa_agent_desired_refused_info",
                "1 while the desired commit is refused (the last good one serves); revision and the stage that refused it (verify, validate, apply, ...). Absent otherwise.",
            ),
            &["revision", "stage"],
        )
        .expect("valid metric");
        let failed_commits = IntGauge::new(
            "vespa_agent_source_failed_commits",
            "Commits that failed and are not retried until a newer commit or `sync --retry`.",
        )
        .expect("valid metric");
        let webhooks = IntCounterVec::new(
            Opts::new(
                "vespa_agent_webhook_requests_total",
                "Requests to /hooks/gitlab by result (triggered, deferred, ignored, unauthorized, bad_request, disabled).",
            ),
            &["result"],
        )
        .expect("valid metric");
        let drift_resources = IntGauge::new(
            "vespa_agent_drift_resources",
            "Resources whose managed files on disk differ from the applied revision and were left so (dachs.drift = \"report\").",
        )
        .expect("valid metric");
        let drift_detected = IntCounter::new(
            "vespa_agent_drift_detected_total",
            "Resources found with managed files edited on the node, counted at each pass that found them.",
        )
        .expect("valid metric");
        let regression_tests = IntCounterVec::new(
            Opts::new(
                "vespa_agent_regression_tests_total",
                "The providers' own regression tests (dachs test) run as part of the apply gate, by result (passed, failed).",
            ),
            &["result"],
        )
        .expect("valid metric");
        let regression_duration = GaugeVec::new(
            Opts::new(
                "vespa_agent_regression_suite_duration_seconds",
                "Wall time of the last run of a resource's regression suites.",
            ),
            &["resource"],
        )
        .expect("valid metric");
        let granules = IntGaugeVec::new(
            Opts::new(
                "vespa_agent_granules",
                "Granule files on the node by state: pending (brought in, not yet imported), imported, failed (the import refused it).",
            ),
            &["state"],
        )
        .expect("valid metric");
        let granule_bytes = IntCounter::new(
            "vespa_agent_granule_bytes_total",
            "Bytes of granule files brought onto the node.",
        )
        .expect("valid metric");
        for state in ["pending", "imported", "failed"] {
            granules.with_label_values(&[state]);
        }
        let granule_failures = IntCounterVec::new(
            Opts::new(
                "vespa_agent_granule_failures_total",
                "Granule files (and collections, for source, bad_listing and import_failed) that failed, by reason.",
            ),
            &["reason"],
        )
        .expect("valid metric");
        for r in GRANULE_FAILURE_REASONS {
            granule_failures.with_label_values(&[r]);
        }
        let granule_retries = IntCounter::new(
            "vespa_agent_granule_transfer_retries_total",
            "Granule transfers retried after a fault, each after a backoff.",
        )
        .expect("valid metric");
        let granule_transfer_duration = Histogram::with_opts(
            HistogramOpts::new(
                "vespa_agent_granule_transfer_duration_seconds",
                "Wall time of one granule file's transfer, retries included.",
            )
            .buckets(vec![
                0.001, 0.005, 0.02, 0.1, 0.5, 2.0, 10.0, 60.0, 300.0, 1800.0,
            ]),
        )
        .expect("valid metric");
        let granule_import_duration = Histogram::with_opts(
            HistogramOpts::new(
                "vespa_agent_granule_import_duration_seconds",
                "Wall time of one resource's granule import (dachs imp).",
            )
            .buckets(vec![0.5, 1.0, 2.5, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0]),
        )
        .expect("valid metric");
        let gitlab_reports = IntCounterVec::new(
            Opts::new(
                "vespa_agent_gitlab_reports_total",
                "Commit statuses sent to GitLab, by result: success, token, unreachable, unauthorized, refused.",
            ),
            &["result"],
        )
        .expect("valid metric");
        for r in ["success", "token", "unreachable", "unauthorized", "refused"] {
            gitlab_reports.with_label_values(&[r]);
        }
        let filesystem_free = IntGaugeVec::new(
            Opts::new(
                "vespa_agent_filesystem_free_bytes",
                "Free bytes (for unprivileged users) on the filesystem of the DaCHS inputs (role=gavo) and of PostgreSQL's data (role=postgresql).",
            ),
            &["role"],
        )
        .expect("valid metric");
        let filesystem_size = IntGaugeVec::new(
            Opts::new(
                "vespa_agent_filesystem_size_bytes",
                "Size in bytes of the filesystem of the DaCHS inputs (role=gavo) and of PostgreSQL's data (role=postgresql).",
            ),
            &["role"],
        )
        .expect("valid metric");
        let memory_available = IntGauge::new(
            "vespa_agent_memory_available_bytes",
            "Memory available to new work on the node, in bytes, read at the last pass.",
        )
        .expect("valid metric");
        let memory_total = IntGauge::new(
            "vespa_agent_memory_total_bytes",
            "The node's memory in bytes.",
        )
        .expect("valid metric");
        let load1 = Gauge::new(
            "vespa_agent_load1",
            "The node's one-minute load average, read at the last pass.",
        )
        .expect("valid metric");
        let table_up = IntGaugeVec::new(
            Opts::new(
                "vespa_agent_tap_table_up",
                "1 if the last pass's ADQL count over the deployed table answered with QUERY_STATUS OK.",
            ),
            &["table"],
        )
        .expect("valid metric");
        let table_rows = IntGaugeVec::new(
            Opts::new(
                "vespa_agent_tap_table_rows",
                "Rows of each deployed ADQL table (an epn_core), counted over TAP at the last pass.",
            ),
            &["table"],
        )
        .expect("valid metric");
        let table_query_duration = GaugeVec::new(
            Opts::new(
                "vespa_agent_tap_query_duration_seconds",
                "Wall time of the last pass's ADQL count over each deployed table.",
            ),
            &["table"],
        )
        .expect("valid metric");
        let build_info = GaugeVec::new(
            Opts::new(
                "vespa_agent_build_info",
                "Always 1; the labels say which build is running.",
            ),
            &["version", "revision"],
        )
        .expect("valid metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), GIT_REVISION])
            .set(1.0);
        last_reload_ok.set(1);
        web_last_reload_ok.set(1);
        let rebuild_decisions = IntCounterVec::new(
            Opts::new(
                "vespa_agent_rebuild_decisions_total",
                "Decisions of the automatic rebuild policy and what became of them, by level (repair, vm) and action.",
            ),
            &["level", "action"],
        )
        .expect("valid metric");
        for (level, actions) in crate::state::REBUILD_ACTIONS {
            for action in actions {
                rebuild_decisions.with_label_values(&[level, action]);
            }
        }
        let unhealthy_seconds = Gauge::new(
            "vespa_agent_dachs_unhealthy_seconds",
            "How long DaCHS has failed its health check, as of the last pass (0: it passed).",
        )
        .expect("valid metric");
        for result in ["success", "failure"] {
            passes.with_label_values(&[result]);
            reloads.with_label_values(&[result]);
            web_reloads.with_label_values(&[result]);
        }
        http_refused.with_label_values(&["unauthorized"]);
        for result in ["success", "noop", "error"] {
            syncs.with_label_values(&[result]);
        }

        for c in [
            Box::new(passes.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(pass_duration.clone()),
            Box::new(last_success.clone()),
            Box::new(heartbeat.clone()),
            Box::new(reloads.clone()),
            Box::new(last_reload_ok.clone()),
            Box::new(web_reloads.clone()),
            Box::new(web_last_reload_ok.clone()),
            Box::new(http_refused.clone()),
            Box::new(dachs_up.clone()),
            Box::new(stage_errors.clone()),
            Box::new(syncs.clone()),
            Box::new(fetch_duration.clone()),
            Box::new(source_last_success.clone()),
            Box::new(revision.clone()),
            Box::new(failed_commits.clone()),
            Box::new(desired_refused.clone()),
            Box::new(webhooks.clone()),
            Box::new(drift_resources.clone()),
            Box::new(drift_detected.clone()),
            Box::new(regression_tests.clone()),
            Box::new(regression_duration.clone()),
            Box::new(granules.clone()),
            Box::new(granule_bytes.clone()),
            Box::new(granule_failures.clone()),
            Box::new(granule_retries.clone()),
            Box::new(granule_transfer_duration.clone()),
            Box::new(granule_import_duration.clone()),
            Box::new(gitlab_reports.clone()),
            Box::new(filesystem_free.clone()),
            Box::new(filesystem_size.clone()),
            Box::new(memory_available.clone()),
            Box::new(memory_total.clone()),
            Box::new(load1.clone()),
            Box::new(table_up.clone()),
            Box::new(table_rows.clone()),
            Box::new(table_query_duration.clone()),
            Box::new(rebuild_decisions.clone()),
            Box::new(unhealthy_seconds.clone()),
            Box::new(build_info),
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Metrics {
            registry,
            passes,
            pass_duration,
            last_success,
            heartbeat,
            reloads,
            last_reload_ok,
            web_reloads,
            web_last_reload_ok,
            http_refused,
            dachs_up,
            stage_errors,
            syncs,
            fetch_duration,
            source_last_success,
            revision,
            failed_commits,
            desired_refused,
            webhooks,
            drift_resources,
            drift_detected,
            regression_tests,
            regression_duration,
            granules,
            granule_bytes,
            granule_failures,
            granule_retries,
            granule_transfer_duration,
            granule_import_duration,
            gitlab_reports,
            filesystem_free,
            filesystem_size,
            memory_available,
            memory_total,
            load1,
            table_up,
            table_rows,
            table_query_duration,
            rebuild_decisions,
            unhealthy_seconds,
        }
    }

    /// Sets the info metric of one role (`applied` or `desired`) to a single revision.
    pub fn set_revision(&self, role: &str, sha: &str) {
        for m in self.revision.collect() {
            for metric in m.get_metric() {
                let labels = metric.get_label();
                let is_role = labels
                    .iter()
                    .any(|l| l.name() == "role" && l.value() == role);
                let rev = labels
                    .iter()
                    .find(|l| l.name() == "revision")
                    .map(|l| l.value());
                if let (true, Some(rev)) = (is_role, rev)
                    && rev != sha
                {
                    let _ = self.revision.remove_label_values(&[role, rev]);
                }
            }
        }
        self.revision.with_label_values(&[role, sha]).set(1.0);
    }

    /// The classic Prometheus text format (what promtool and every Prometheus version read).
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("encoding to memory cannot fail");
        String::from_utf8(buf).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_documents_every_metric() {
        let doc =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../doc/metrics.md"))
                .unwrap();
        // Every name this file registers (a vector with no series yet does not show in a scrape).
        let names: std::collections::BTreeSet<&str> = include_str!("metrics.rs")
            .split('"')
            .filter(|t| {
                t.len() > "vespa_agent_".len()
                    && t.starts_with("vespa_agent_")
                    && t.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            })
            .collect();
        for name in &names {
            assert!(
                doc.contains(&format!("`{name}`")),
                "doc/metrics.md does not document {name}"
            );
        }
        assert!(names.len() >= 30, "only {} metrics", names.len());
    }

    #[test]
    fn two_instances_do_not_share_values() {
        let a = Metrics::new();
        let b = Metrics::new();
        a.passes.with_label_values(&["success"]).inc();
        assert!(
            a.render()
                .contains("vespa_agent_reconcile_passes_total{result=\"success\"} 1")
        );
        assert!(
            b.render()
                .contains("vespa_agent_reconcile_passes_total{result=\"success\"} 0")
        );
    }

    #[test]
    fn build_info_and_process_metrics_are_present() {
        let text = Metrics::new().render();
        assert!(text.contains("vespa_agent_build_info{revision="), "{text}");
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
    }
}
