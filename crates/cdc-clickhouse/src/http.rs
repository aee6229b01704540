//! The HTTP(S) connection to ClickHouse.
//!
//! The `clickhouse` crate's default client leaves Nagle's algorithm on: the last small chunk of
//! every streamed INSERT then waits for the server's delayed ACK (~40 ms on Linux), which made
//! each insert cost ~45 ms instead of ~5 ms here. This client sets `TCP_NODELAY`, keeps idle
//! connections shorter than ClickHouse's own 3 s keep-alive, and speaks TLS (rustls) for
//! `https://` URLs such as ClickHouse Cloud's: the public (webpki) roots plus, when configured,
//! the settings' CA bundle, for a ClickHouse behind a private CA. Whether plaintext is allowed at
//! all is decided before a client is built (`ClickHouseSettings::validate`).

use std::sync::Arc;
use std::time::Duration;

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::config::{ClickHouseSettings, parse_pem_certificates};

/// The trusted roots: webpki's public roots and the settings' CA bundle (unusable entries are
/// skipped here; `validate` refuses a bundle without any usable certificate).
fn tls_config(settings: &ClickHouseSettings) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(pem) = &settings.ca_bundle {
        let (added, ignored) = roots.add_parsable_certificates(parse_pem_certificates(pem));
        tracing::debug!(added, ignored, "ClickHouse CA bundle loaded");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        // Fixed inputs, not outside ones: the aws-lc-rs provider supports TLS 1.2 and 1.3.
        .expect("the aws-lc-rs provider supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// Generic over the request body: the `clickhouse` crate's body type is private, and its
/// `HttpClient` impl picks it.
pub(crate) fn client<B>(settings: &ClickHouseSettings) -> Client<hyper_rustls::HttpsConnector<HttpConnector>, B>
where
    B: hyper::body::Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_keepalive(Some(Duration::from_secs(60)));
    connector.set_connect_timeout(Some(Duration::from_secs(10)));
    connector.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config(settings))
        .https_or_http()
        .enable_http1()
        .wrap_connector(connector);
    Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(2)).build(https)
}
