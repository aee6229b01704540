//! The HTTP(S) connection to ClickHouse.
//!
//! The `clickhouse` crate's default client leaves Nagle's algorithm on: the last small chunk of
//! every streamed INSERT then waits for the server's delayed ACK (~40 ms on Linux), which made
//! each insert cost ~45 ms instead of ~5 ms here. This client sets `TCP_NODELAY`, keeps idle
//! connections shorter than ClickHouse's own 3 s keep-alive, and speaks TLS (rustls, webpki
//! roots) for `https://` URLs such as ClickHouse Cloud's.

use std::time::Duration;

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Generic over the request body: the `clickhouse` crate's body type is private, and its
/// `HttpClient` impl picks it.
pub fn client<B>() -> Client<hyper_rustls::HttpsConnector<HttpConnector>, B>
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
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .wrap_connector(connector);
    Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(2)).build(https)
}
