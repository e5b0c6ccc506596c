//! The listener's TLS, with the system's OpenSSL that the binary already links for its outbound
//! clients: one TLS library in the process, patched by Debian's security updates.

use std::net::IpAddr;

use openssl::pkey::PKey;
use openssl::ssl::{
    AlpnError, SslAcceptor, SslMethod, SslOptions, SslRef, SslVerifyMode, SslVersion,
};
use openssl::stack::Stack;
use openssl::x509::X509;
use openssl::x509::store::X509StoreBuilder;

use super::file::{ClientAuth, Pem, TlsFile, TlsVersion};

/// ALPN: HTTP/1.1 only (what the router serves), in the wire format of a protocol list.
const ALPN_HTTP11: &[u8] = b"\x08http/1.1";

/// What went wrong, in words for the log and `status`; the caller adds the file.
pub fn acceptor(t: &TlsFile) -> Result<SslAcceptor, String> {
    let mut b =
        SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).map_err(ossl("OpenSSL"))?;
    b.set_min_proto_version(Some(version(t.min_version)))
        .map_err(ossl("min_version"))?;
    b.set_max_proto_version(Some(version(t.max_version)))
        .map_err(ossl("max_version"))?;

    let chain = X509::stack_from_pem(&t.cert.text).map_err(ossl(&describe(&t.cert)))?;
    let mut chain = chain.into_iter();
    let leaf = chain
        .next()
        .ok_or_else(|| format!("{} holds no PEM certificate", describe(&t.cert)))?;
    b.set_certificate(&leaf).map_err(ossl(&describe(&t.cert)))?;
    for c in chain {
        b.add_extra_chain_cert(c)
            .map_err(ossl(&describe(&t.cert)))?;
    }
    let key = PKey::private_key_from_pem(&t.key.text)
        .map_err(|_| format!("{} holds no PEM private key", describe(&t.key)))?;
    b.set_private_key(&key).map_err(ossl(&describe(&t.key)))?;
    b.check_private_key().map_err(|_| {
        format!(
            "{} is not the private key of {}",
            describe(&t.key),
            describe(&t.cert)
        )
    })?;

    if let Some(ca) = &t.client_ca {
        let certs = X509::stack_from_pem(&ca.text).map_err(ossl(&describe(ca)))?;
        if certs.is_empty() {
            return Err(format!("{} holds no PEM certificate", describe(ca)));
        }
        let mut store = X509StoreBuilder::new().map_err(ossl("OpenSSL"))?;
        let mut names = Stack::new().map_err(ossl("OpenSSL"))?;
        for c in certs {
            names
                .push(c.subject_name().to_owned().map_err(ossl(&describe(ca)))?)
                .map_err(ossl("OpenSSL"))?;
            store.add_cert(c).map_err(ossl(&describe(ca)))?;
        }
        b.set_verify_cert_store(store.build())
            .map_err(ossl(&describe(ca)))?;
        b.set_client_ca_list(names);
    }
    let fail = SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT;
    match t.client_auth {
        ClientAuth::NoClientCert => b.set_verify(SslVerifyMode::NONE),
        // Asked for, and let in whatever the client sends: Go's semantics of the two names.
        ClientAuth::RequestClientCert => b.set_verify_callback(SslVerifyMode::PEER, |_, _| true),
        ClientAuth::RequireAnyClientCert => b.set_verify_callback(fail, |_, _| true),
        ClientAuth::VerifyClientCertIfGiven => b.set_verify(SslVerifyMode::PEER),
        ClientAuth::RequireAndVerifyClientCert => b.set_verify(fail),
    }

    if !t.cipher_suites.is_empty() {
        b.set_cipher_list(&t.cipher_suites.join(":"))
            .map_err(ossl("cipher_suites"))?;
    }
    if t.prefer_server_cipher_suites {
        b.set_options(SslOptions::CIPHER_SERVER_PREFERENCE);
    } else {
        b.clear_options(SslOptions::CIPHER_SERVER_PREFERENCE);
    }
    if !t.curves.is_empty() {
        b.set_groups_list(&t.curves.join(":"))
            .map_err(ossl("curve_preferences"))?;
    }
    b.set_alpn_select_callback(|_, client| {
        openssl::ssl::select_next_proto(ALPN_HTTP11, client).ok_or(AlpnError::NOACK)
    });
    Ok(b.build())
}

/// Names what an OpenSSL error concerns.
fn ossl(what: &str) -> impl FnOnce(openssl::error::ErrorStack) -> String + '_ {
    move |e| format!("{what}: {e}")
}

fn version(v: TlsVersion) -> SslVersion {
    match v {
        TlsVersion::TLS10 => SslVersion::TLS1,
        TlsVersion::TLS11 => SslVersion::TLS1_1,
        TlsVersion::TLS12 => SslVersion::TLS1_2,
        TlsVersion::TLS13 => SslVersion::TLS1_3,
    }
}

fn describe(p: &Pem) -> String {
    match &p.file {
        Some(f) => format!("{} {}", p.key, f.display()),
        None => p.key.to_owned(),
    }
}

/// Whether the client's certificate names one of `allowed` as a DNS name, IP address, e-mail
/// address or URI among its subject alternative names (the toolkit's `client_allowed_sans`).
pub fn san_allowed(ssl: &SslRef, allowed: &[String]) -> bool {
    if allowed.is_empty() {
        return true;
    }
    let Some(names) = ssl.peer_certificate().and_then(|c| c.subject_alt_names()) else {
        return false;
    };
    names.iter().any(|n| {
        let given = n
            .dnsname()
            .map(str::to_owned)
            .or_else(|| n.email().map(str::to_owned))
            .or_else(|| n.uri().map(str::to_owned))
            .or_else(|| {
                n.ipaddress().and_then(|b| match b.len() {
                    4 => Some(IpAddr::from(<[u8; 4]>::try_from(b).ok()?).to_string()),
                    16 => Some(IpAddr::from(<[u8; 16]>::try_from(b).ok()?).to_string()),
                    _ => None,
                })
            });
        given.is_some_and(|g| {
            allowed
                .iter()
                .any(|a| match (a.parse::<IpAddr>(), g.parse::<IpAddr>()) {
                    (Ok(x), Ok(y)) => x == y,
                    _ => *a == g,
                })
        })
    })
}
