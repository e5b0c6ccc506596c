//! The HTTP clients the agent opens towards other servers (DaCHS's TAP service, WebDAV and the
//! iRODS HTTP API, GitLab, OpenStack), all sharing one TLS configuration.
//!
//! Why one: building a TLS configuration may parse the system's whole CA bundle (about 150
//! certificates, 150,000 allocations; see `trust` for why it usually does not) and keeps its
//! own copy of it. A pass builds several clients; each building its own cost tens of
//! milliseconds of CPU per pass and left the heap fragmented across the allocator's arenas. The
//! configuration is built once, at start (`trust::init`) or when the first client is, and
//! shared (it is reference-counted); a failure to build it is kept and reported by every client
//! built after.

use std::sync::OnceLock;
use std::time::Duration;

const USER_AGENT: &str = concat!("vespa-agent/", env!("CARGO_PKG_VERSION"));

fn tls() -> Result<native_tls::TlsConnector, String> {
    static TLS: OnceLock<Result<native_tls::TlsConnector, String>> = OnceLock::new();
    TLS.get_or_init(|| {
        let mut b = native_tls::TlsConnector::builder();
        // What reqwest asks for when it builds the configuration itself (HTTP/1 only).
        b.request_alpns(&["http/1.1"]);
        b.build().map_err(|e| format!("the TLS configuration: {e}"))
    })
    .clone()
}

/// Builds the shared TLS configuration now, while `trust::init` has the environment it reads.
pub fn prepare() -> Result<(), String> {
    tls().map(drop)
}

/// An async client whose every wait (connect, headers, body) is bounded by `timeout`, and its
/// connect by `connect_timeout`.
pub fn client(timeout: Duration, connect_timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls()?)
        .timeout(timeout)
        .connect_timeout(connect_timeout)
        .user_agent(USER_AGENT)
        .build()
        .map_err(|e| crate::error_chain(&e))
}

/// The blocking twin of [`client`], for the transfers that run on blocking threads.
pub fn blocking_client(
    timeout: Duration,
    connect_timeout: Duration,
) -> Result<reqwest::blocking::Client, String> {
    reqwest::blocking::Client::builder()
        .tls_backend_preconfigured(tls()?)
        .timeout(timeout)
        .connect_timeout(connect_timeout)
        .user_agent(USER_AGENT)
        .build()
        .map_err(|e| crate::error_chain(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_share_one_tls_configuration_and_still_build() {
        let t = Duration::from_secs(1);
        for _ in 0..3 {
            client(t, t).unwrap();
            blocking_client(t, t).unwrap();
        }
    }
}
