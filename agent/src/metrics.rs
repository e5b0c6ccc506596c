//! The Prometheus metrics. One [`Metrics`] value owns the registry and is passed to whoever
//! updates or serves it, so tests can build as many as they like and nothing hides in globals.

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub passes: IntCounterVec,
    pub pass_duration: Histogram,
    pub last_success: Gauge,
    pub heartbeat: Gauge,
    pub reloads: IntCounterVec,
    pub last_reload_ok: IntGauge,
    pub dachs_up: IntGauge,
    pub stage_errors: IntCounterVec,
}

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
        for result in ["success", "failure"] {
            passes.with_label_values(&[result]);
            reloads.with_label_values(&[result]);
        }

        for c in [
            Box::new(passes.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(pass_duration.clone()),
            Box::new(last_success.clone()),
            Box::new(heartbeat.clone()),
            Box::new(reloads.clone()),
            Box::new(last_reload_ok.clone()),
            Box::new(dachs_up.clone()),
            Box::new(stage_errors.clone()),
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
            dachs_up,
            stage_errors,
        }
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
