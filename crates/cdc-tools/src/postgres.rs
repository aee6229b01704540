//! The one way the tools connect to PostgreSQL.
//!
//! Enters: a connection string (libpq `key=value` form or a `postgresql://` URL, from
//! `--pg-url` / `CDC_PG_URL`). Leaves: a client whose connection runs on its own task.
//!
//! The string may carry a password: every `--pg-url` argument hides its environment value from
//! `--help` (`hide_env_values`), and nothing here puts the string into an error or a log line.
//!
//! TLS follows libpq's `sslmode` (rustls, the workspace's TLS stack): `require` encrypts without
//! checking the server's certificate (libpq's meaning; with `sslrootcert` it is checked),
//! `verify-ca` and `verify-full` check it against `sslrootcert=FILE` (PEM) or, without it, the
//! public (webpki) roots, and both check the host name too (stricter than libpq's `verify-ca`).
//! Absent, `disable`, `allow` or `prefer`: no TLS, as before.

use std::sync::Arc;

use anyhow::Context;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::NoTls;

/// The local cluster `scripts/postgres.sh` starts.
pub(crate) const DEFAULT_PG_URL: &str = "host=127.0.0.1 port=5432 user=postgres dbname=sales";

/// Connects to PostgreSQL and drives the connection on a task of its own; when it closes with an
/// error, the error is logged and the client's next call fails.
pub async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let tls = TlsSettings::parse(url)?;
    let failed = "connecting to PostgreSQL (is it running? scripts/postgres.sh start)";
    match tls.mode {
        TlsMode::Off => {
            let (pg, connection) = tokio_postgres::connect(&tls.conn, NoTls).await.context(failed)?;
            spawn(connection);
            Ok(pg)
        }
        TlsMode::Encrypt | TlsMode::Verify => {
            let connector = tokio_postgres_rustls::MakeRustlsConnect::new(tls.client_config()?);
            let (pg, connection) = tokio_postgres::connect(&tls.conn, connector).await.context(failed)?;
            spawn(connection);
            Ok(pg)
        }
    }
}

fn spawn<S, T>(connection: tokio_postgres::Connection<S, T>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::error!(error = %err, "PostgreSQL connection closed");
        }
    });
}

/// What the connection string's `sslmode` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TlsMode {
    /// Plaintext (`disable`, `allow`, `prefer` or no `sslmode`).
    Off,
    /// `require`: encrypted, the certificate not checked.
    Encrypt,
    /// `verify-ca`, `verify-full`, or `require` with `sslrootcert`: the certificate and host
    /// name checked.
    Verify,
}

/// The connection string as `tokio-postgres` takes it (it knows only `disable`, `prefer` and
/// `require`, and no `sslrootcert`), and the TLS it needs.
#[derive(Debug, PartialEq, Eq)]
struct TlsSettings {
    conn: String,
    mode: TlsMode,
    root_cert: Option<String>,
}

impl TlsSettings {
    /// Reads `sslmode` and `sslrootcert` from either form of connection string. Errors name the
    /// option, never the string (it may carry a password).
    fn parse(conn: &str) -> anyhow::Result<TlsSettings> {
        let url = conn.starts_with("postgres://") || conn.starts_with("postgresql://");
        let (base, options) = if url {
            match conn.split_once('?') {
                Some((base, query)) => (base, query.split('&').map(str::to_owned).collect()),
                None => (conn, Vec::new()),
            }
        } else {
            ("", key_value_tokens(conn))
        };
        let mut mode = TlsMode::Off;
        let mut root_cert = None;
        let mut kept: Vec<String> = Vec::new();
        for option in options {
            let (key, value) = option.split_once('=').unwrap_or((option.as_str(), ""));
            let value = if url { percent_decode(value) } else { unquote(value) };
            match key.trim() {
                "sslrootcert" => {
                    root_cert = Some(value);
                    continue;
                }
                "sslmode" => {
                    mode = match value.as_str() {
                        "disable" | "allow" | "prefer" => TlsMode::Off,
                        "require" => TlsMode::Encrypt,
                        "verify-ca" | "verify-full" => TlsMode::Verify,
                        _ => anyhow::bail!(
                            "the PostgreSQL connection string's sslmode is not disable, allow, prefer, require, \
                             verify-ca or verify-full"
                        ),
                    };
                    // What tokio-postgres knows: `allow` tries plaintext first, as it does here.
                    let known = if mode == TlsMode::Off { "prefer" } else { "require" };
                    kept.push(format!("sslmode={known}"));
                    continue;
                }
                _ => kept.push(option.clone()),
            }
        }
        if mode == TlsMode::Encrypt && root_cert.is_some() {
            mode = TlsMode::Verify; // libpq: a root certificate makes `require` check it
        }
        let conn = match (url, kept.is_empty()) {
            (true, true) => base.to_owned(),
            (true, false) => format!("{base}?{}", kept.join("&")),
            (false, _) => kept.join(" "),
        };
        Ok(TlsSettings { conn, mode, root_cert })
    }

    /// The rustls configuration of [`TlsMode::Encrypt`] or [`TlsMode::Verify`].
    fn client_config(&self) -> anyhow::Result<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS versions")?;
        if self.mode == TlsMode::Encrypt {
            return Ok(builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
                .with_no_client_auth());
        }
        let roots = match &self.root_cert {
            Some(path) => {
                use rustls::pki_types::pem::PemObject;
                let pem = std::fs::read(path).context("reading the PostgreSQL sslrootcert file")?;
                let mut roots = rustls::RootCertStore::empty();
                let certificates = rustls::pki_types::CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok);
                let (added, _) = roots.add_parsable_certificates(certificates);
                anyhow::ensure!(added > 0, "the PostgreSQL sslrootcert file holds no usable PEM certificate");
                roots
            }
            None => rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() },
        };
        Ok(builder.with_root_certificates(roots).with_no_client_auth())
    }
}

/// `sslmode=require` without a root certificate: libpq encrypts and accepts any certificate
/// (protects from eavesdropping, not from an impostor; `verify-full` does). The handshake's
/// signatures are still checked, so the session is bound to the certificate presented.
#[derive(Debug)]
struct EncryptOnly(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The `key=value` options of a libpq string, each as written (a value may be single-quoted,
/// with `\` escapes, and hold spaces).
fn key_value_tokens(conn: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut token = String::new();
    let (mut quoted, mut escaped) = (false, false);
    for c in conn.chars() {
        match c {
            _ if escaped => {
                token.push(c);
                escaped = false;
            }
            '\\' => {
                token.push(c);
                escaped = true;
            }
            '\'' => {
                token.push(c);
                quoted = !quoted;
            }
            c if c.is_whitespace() && !quoted => {
                if !token.is_empty() {
                    tokens.push(std::mem::take(&mut token));
                }
            }
            c => token.push(c),
        }
    }
    if !token.is_empty() {
        tokens.push(token);
    }
    tokens
}

/// A libpq value without its quotes and escapes.
fn unquote(value: &str) -> String {
    let inner = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')).unwrap_or(value);
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        out.push(if c == '\\' { chars.next().unwrap_or('\\') } else { c });
    }
    out
}

/// A URL query value with its `%XX` escapes decoded (bytes as UTF-8, lossy).
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_postgres::config::SslMode;

    fn parsed(conn: &str) -> TlsSettings {
        TlsSettings::parse(conn).unwrap()
    }

    /// What tokio-postgres makes of the rewritten string.
    fn ssl_mode(settings: &TlsSettings) -> SslMode {
        settings.conn.parse::<tokio_postgres::Config>().unwrap().get_ssl_mode()
    }

    #[test]
    fn no_sslmode_or_disable_stays_plaintext_and_unchanged() {
        let plain = "host=127.0.0.1 port=5432 user=postgres dbname=sales";
        assert_eq!(parsed(plain), TlsSettings { conn: plain.into(), mode: TlsMode::Off, root_cert: None });
        let url = "postgresql://u:p@db:5432/sales";
        assert_eq!(parsed(url).conn, url);
        assert_eq!(parsed(url).mode, TlsMode::Off);
        for off in ["disable", "allow", "prefer"] {
            let s = parsed(&format!("host=db sslmode={off}"));
            assert_eq!(s.mode, TlsMode::Off, "{off}");
            assert_ne!(ssl_mode(&s), SslMode::Require);
        }
    }

    #[test]
    fn require_encrypts_and_verify_modes_check_the_certificate() {
        let s = parsed("host=db user=u password='a b\\'c' sslmode=require");
        assert_eq!((s.mode, ssl_mode(&s)), (TlsMode::Encrypt, SslMode::Require));
        // The quoted password survives the rewrite.
        let config = s.conn.parse::<tokio_postgres::Config>().unwrap();
        assert_eq!(config.get_password(), Some(&b"a b'c"[..]));

        for verify in ["verify-ca", "verify-full"] {
            let s = parsed(&format!("postgresql://u:p@db.example/sales?connect_timeout=5&sslmode={verify}"));
            assert_eq!((s.mode, ssl_mode(&s)), (TlsMode::Verify, SslMode::Require), "{verify}");
            assert_eq!(s.conn, "postgresql://u:p@db.example/sales?connect_timeout=5&sslmode=require");
        }
        // libpq: a root certificate makes `require` check the certificate; tokio-postgres does
        // not know the option, so it is taken out of the string.
        let s = parsed("postgresql://db/sales?sslmode=require&sslrootcert=%2Fetc%2Frds.pem");
        assert_eq!((s.mode, s.root_cert.as_deref()), (TlsMode::Verify, Some("/etc/rds.pem")));
        assert_eq!(s.conn, "postgresql://db/sales?sslmode=require");
        let s = parsed("host=db sslrootcert='/etc/my ca.pem' sslmode=verify-full");
        assert_eq!((s.conn.as_str(), s.root_cert.as_deref()), ("host=db sslmode=require", Some("/etc/my ca.pem")));
    }

    #[test]
    fn a_bad_sslmode_is_refused_without_echoing_the_string() {
        let e = TlsSettings::parse("postgresql://u:Secret-pw@db/sales?sslmode=verify").unwrap_err();
        assert!(!format!("{e:#}").contains("Secret-pw"), "{e:#}");
    }

    #[test]
    fn each_tls_mode_builds_its_client_configuration() {
        assert!(parsed("host=db sslmode=require").client_config().is_ok());
        assert!(parsed("host=db sslmode=verify-full").client_config().is_ok());
        let missing = parsed("host=db sslmode=verify-full sslrootcert=/nonexistent/ca.pem").client_config();
        assert!(missing.is_err());
    }
}
