//! Where and how to reach ClickHouse, and the checks that need no connection. Nothing here reads
//! the process environment: the function's one reader (`cdc_lambda::config::Config`) builds these.
//!
//! Credentials travel only over TLS: [`ClickHouseSettings::validate`] refuses an `http://` URL
//! to any host but the loopback unless `CLICKHOUSE_ALLOW_PLAINTEXT=true` (docs/error-policy.md,
//! "TLS"). A ClickHouse behind a private CA is reached by adding that CA's PEM bundle
//! (`CLICKHOUSE_CA_BUNDLE`, a file, or the secret's `ca_bundle` field) to the public roots.

use cdc_core::error::{Classify, ErrorClass};

/// Where and how to reach ClickHouse: from the `CLICKHOUSE_*` variables locally, from the Secrets
/// Manager secret named by `CLICKHOUSE_SECRET_ARN` in AWS (the variables then give the defaults
/// for what the secret leaves out).
#[derive(Clone, PartialEq, Eq)]
pub struct ClickHouseSettings {
    pub url: String,
    pub user: String,
    pub password: String,
    pub database: String,
    /// Extra trusted roots, PEM text (one or more certificates), added to the public ones.
    pub ca_bundle: Option<String>,
    /// `CLICKHOUSE_ALLOW_PLAINTEXT=true`: accept `http://` to a non-loopback host.
    pub allow_plaintext: bool,
}

impl std::fmt::Debug for ClickHouseSettings {
    // The password never reaches a log line, not even through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseSettings")
            .field("url", &self.url)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("database", &self.database)
            .field("ca_bundle", &self.ca_bundle.as_ref().map(|_| "<pem>"))
            .field("allow_plaintext", &self.allow_plaintext)
            .finish()
    }
}

/// A configuration that can never work: systemic, named at error level, never retried as if the
/// network blinked (docs/error-policy.md).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "refusing to send ClickHouse credentials in clear text to {host}: use https:// (or set \
         CLICKHOUSE_ALLOW_PLAINTEXT=true for a trusted network)"
    )]
    Plaintext { host: String },
    #[error("the ClickHouse URL is not usable: {problem}")]
    BadUrl { problem: &'static str },
    #[error("the ClickHouse CA bundle holds no usable PEM certificate ({source_name})")]
    CaBundle { source_name: &'static str },
}

impl Classify for ConfigError {
    fn class(&self) -> ErrorClass {
        ErrorClass::Systemic
    }
    fn code(&self) -> &'static str {
        match self {
            ConfigError::Plaintext { .. } => "config.plaintext_url",
            ConfigError::BadUrl { .. } => "config.bad_url",
            ConfigError::CaBundle { .. } => "config.ca_bundle",
        }
    }
}

impl ClickHouseSettings {
    /// Local settings without a CA bundle or plaintext opt-in (tests, tools).
    pub fn new(url: impl Into<String>, user: impl Into<String>, password: impl Into<String>, database: &str) -> Self {
        Self {
            url: url.into(),
            user: user.into(),
            password: password.into(),
            database: database.to_string(),
            ca_bundle: None,
            allow_plaintext: false,
        }
    }

    /// Checks what can be checked without a connection: scheme, host, plaintext policy, CA bundle.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let url = parse_url(&self.url)?;
        if !url.https && !self.allow_plaintext && !is_loopback(&url.host) {
            return Err(ConfigError::Plaintext { host: url.host });
        }
        if let Some(pem) = &self.ca_bundle
            && parse_pem_certificates(pem).is_empty()
        {
            return Err(ConfigError::CaBundle { source_name: "CLICKHOUSE_CA_BUNDLE or the secret's ca_bundle" });
        }
        Ok(())
    }
}

/// The parts of a ClickHouse URL the policy needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedUrl {
    pub(crate) https: bool,
    /// Without brackets for IPv6, lower case.
    host: String,
}

pub fn parse_url(url: &str) -> Result<ParsedUrl, ConfigError> {
    let url = url.trim();
    let (https, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err(ConfigError::BadUrl { problem: "it must start with https:// or http://" });
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        // Credentials in the URL would bypass the secret and reach logs with the URL.
        return Err(ConfigError::BadUrl { problem: "it must not carry user information" });
    }
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        authority.split(':').next().unwrap_or_default()
    };
    if host.is_empty() {
        return Err(ConfigError::BadUrl { problem: "it has no host" });
    }
    Ok(ParsedUrl { https, host: host.to_ascii_lowercase() })
}

/// `localhost`, 127.0.0.0/8 and ::1: traffic that never leaves the machine.
fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The DER certificates of a PEM bundle (non-certificate sections and garbage are skipped).
pub(crate) fn parse_pem_certificates(pem: &str) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()).filter_map(Result::ok).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str) -> ClickHouseSettings {
        ClickHouseSettings::new(url, "u", "p", "analytics")
    }

    #[test]
    fn plaintext_is_refused_unless_loopback_or_allowed() {
        for ok in [
            "https://ch.example.com:8443",
            "http://127.0.0.1:8123",
            "http://localhost:8123/",
            "http://[::1]:8123",
            "http://127.8.9.10",
        ] {
            assert_eq!(settings(ok).validate(), Ok(()), "{ok}");
        }
        for bad in ["http://ch.example.internal:8123", "http://10.0.0.5", "http://[fe80::1]:8123", "HTTP://x"] {
            let e = settings(bad).validate().unwrap_err();
            assert_eq!(e.class(), ErrorClass::Systemic, "{bad}");
            assert!(matches!(e.code(), "config.plaintext_url" | "config.bad_url"), "{bad}: {e}");
        }
        assert_eq!(settings("http://10.0.0.5").validate().unwrap_err().code(), "config.plaintext_url");
        let allowed = ClickHouseSettings { allow_plaintext: true, ..settings("http://10.0.0.5:8123") };
        assert_eq!(allowed.validate(), Ok(()));
    }

    #[test]
    fn malformed_urls_are_refused() {
        for bad in ["ftp://h", "https://", "https://user:pw@h:8443", "ch.example.com"] {
            assert_eq!(settings(bad).validate().unwrap_err().code(), "config.bad_url", "{bad}");
        }
        assert!(!settings("https://user:hunter2@h").validate().unwrap_err().to_string().contains("hunter2"));
    }

    #[test]
    fn an_empty_or_garbage_ca_bundle_is_refused() {
        let s = ClickHouseSettings { ca_bundle: Some("not a certificate".into()), ..settings("https://h") };
        assert_eq!(s.validate().unwrap_err().code(), "config.ca_bundle");
    }

    #[test]
    fn debug_never_shows_the_password() {
        let s = ClickHouseSettings::new("https://h", "u", "hunter2", "db");
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
