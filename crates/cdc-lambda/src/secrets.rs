//! ClickHouse credentials: from AWS Secrets Manager in AWS, from the environment locally.
//!
//! Enters: the [`ClickHouseSource`] of the configuration: the secret `CLICKHOUSE_SECRET_ARN` names
//! (a JSON secret: `password`, and optionally `url`, or `host` + `port` (+ `secure`, default
//! true), `username`, `database`, `ca_bundle` (PEM text)) over the `CLICKHOUSE_*` variables,
//! which give the defaults for what the secret leaves out, or the variables alone. Leaves:
//! [`ClickHouseSettings`].
//!
//! Why the split: the deployment passes URL, user and database as plain environment variables, so
//! changing them never touches the secret; the secret holds the password the operator set (and
//! may override the rest). A secret still holding the deployment's placeholder
//! (`{"placeholder": true}`) is "not configured yet": a systemic fault, never a message's.
//!
//! The secret is cached across invocations (one `GetSecretValue` per TTL, default 5 minutes,
//! `CLICKHOUSE_SECRET_TTL_SECONDS`), and fetched again at once when ClickHouse rejects the
//! credentials: Secrets Manager rotation changes the password while warm instances still hold
//! the old one. Secret values never reach a log line or an error message: errors name the field
//! that was wrong, never its value.

use std::future::Future;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::Mutex;

use cdc_clickhouse::config::ClickHouseSettings;
use cdc_core::error::{Classify, ErrorClass};

use crate::config::values::{ClickHouseSource, ConfigError, parse_bool};

pub(crate) const DEFAULT_TTL: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Secrets Manager did not answer or refused (`detail` is the SDK's error text, which names
    /// the error code and the secret's ARN, never its value).
    #[error("could not fetch the ClickHouse secret: {detail}")]
    Fetch { detail: String },
    #[error("the ClickHouse secret is not a JSON object with the expected fields: {problem}")]
    Parse { problem: &'static str },
    /// The secret still holds the deployment's placeholder: the operator has not set it yet.
    #[error("the ClickHouse secret is not configured yet (it still holds the deployment placeholder)")]
    NotConfigured,
    /// The function's configuration is unusable: no credentials can be chosen until it is fixed.
    #[error(transparent)]
    Config(ConfigError),
}

impl Classify for SecretError {
    // Without credentials no message of the batch can be processed: the environment is at
    // fault, so the invocation fails as a whole and nothing is dead-lettered.
    fn class(&self) -> ErrorClass {
        ErrorClass::Systemic
    }
    fn code(&self) -> &'static str {
        match self {
            SecretError::Fetch { .. } => "secret.fetch",
            SecretError::Parse { .. } => "secret.parse",
            SecretError::NotConfigured => "secret.not_configured",
            SecretError::Config(e) => e.code(),
        }
    }
}

/// The JSON the secret holds. `port` may be a number or a string (the RDS rotation templates
/// write numbers; hand-made secrets often strings). `user`/`dbname` are accepted as aliases.
#[derive(Deserialize)]
struct SecretJson {
    url: Option<String>,
    host: Option<String>,
    port: Option<serde_json::Value>,
    secure: Option<serde_json::Value>,
    #[serde(alias = "user")]
    username: Option<String>,
    password: Option<String>,
    #[serde(alias = "dbname")]
    database: Option<String>,
    ca_bundle: Option<String>,
    #[serde(default)]
    placeholder: Option<serde_json::Value>,
}

/// Parses the secret string with the built-in defaults (no URL): the secret must name one.
#[cfg(test)]
fn parse_secret(secret: &str) -> Result<ClickHouseSettings, SecretError> {
    parse_secret_over(secret, None)
}

/// Parses the secret string; what it leaves out comes from `base` (the environment's settings;
/// an empty `base.url`: `CLICKHOUSE_URL` is unset, so the secret must give the server). The
/// password may be empty (ClickHouse's `default` user often has none); everything else that is
/// present must be usable.
fn parse_secret_over(secret: &str, base: Option<&ClickHouseSettings>) -> Result<ClickHouseSettings, SecretError> {
    let json: SecretJson =
        serde_json::from_str(secret).map_err(|_| SecretError::Parse { problem: "not a JSON object" })?;
    if json.placeholder.as_ref().is_some_and(|p| !matches!(p, serde_json::Value::Bool(false) | serde_json::Value::Null))
    {
        return Err(SecretError::NotConfigured);
    }
    let url = match (json.url.filter(|u| !u.trim().is_empty()), json.host.filter(|h| !h.trim().is_empty())) {
        (Some(url), _) => {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(SecretError::Parse { problem: "url must start with https:// or http://" });
            }
            url.trim_end_matches('/').to_string()
        }
        (None, Some(host)) => {
            // TLS unless the secret says otherwise: a plaintext URL to a non-loopback host is
            // then refused anyway unless CLICKHOUSE_ALLOW_PLAINTEXT is set (cdc-clickhouse config.rs).
            let secure = match &json.secure {
                None | Some(serde_json::Value::Null) => true,
                Some(serde_json::Value::Bool(b)) => *b,
                Some(serde_json::Value::String(s)) => {
                    parse_bool(s).ok_or(SecretError::Parse { problem: "secure must be a boolean" })?
                }
                Some(_) => return Err(SecretError::Parse { problem: "secure must be a boolean" }),
            };
            let port = match &json.port {
                None | Some(serde_json::Value::Null) => {
                    if secure {
                        8443
                    } else {
                        8123
                    }
                }
                Some(serde_json::Value::Number(n)) => n
                    .as_u64()
                    .and_then(|p| u16::try_from(p).ok())
                    .ok_or(SecretError::Parse { problem: "port out of range" })?,
                Some(serde_json::Value::String(s)) => {
                    s.trim().parse::<u16>().map_err(|_| SecretError::Parse { problem: "port is not a number" })?
                }
                Some(_) => return Err(SecretError::Parse { problem: "port is not a number" }),
            };
            let scheme = if secure { "https" } else { "http" };
            let host = host.trim();
            // An IPv6 literal needs brackets in a URL.
            let host =
                if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host.to_string() };
            format!("{scheme}://{host}:{port}")
        }
        (None, None) => match base.filter(|b| !b.url.is_empty()) {
            Some(base) => base.url.clone(),
            None => {
                return Err(SecretError::Parse { problem: "neither url nor host is set (nor CLICKHOUSE_URL)" });
            }
        },
    };
    let user = match (json.username.filter(|u| !u.is_empty()), base) {
        (Some(user), _) => user,
        (None, Some(base)) if !base.user.is_empty() => base.user.clone(),
        _ => return Err(SecretError::Parse { problem: "username is missing" }),
    };
    let database = json
        .database
        .filter(|d| !d.is_empty())
        .or_else(|| base.map(|b| b.database.clone()))
        .unwrap_or_else(|| "analytics".to_string());
    Ok(ClickHouseSettings {
        url,
        user,
        password: json.password.unwrap_or_default(),
        database,
        ca_bundle: json.ca_bundle.filter(|c| !c.trim().is_empty()).or_else(|| base.and_then(|b| b.ca_bundle.clone())),
        allow_plaintext: base.is_some_and(|b| b.allow_plaintext),
    })
}

/// The secret-store port.
pub trait SecretStore: Send + Sync {
    fn secret_string(&self, secret_id: &str) -> impl Future<Output = Result<String, SecretError>> + Send;
}

/// The real adapter over aws-sdk-secretsmanager (endpoint from the SDK configuration, so
/// `AWS_ENDPOINT_URL` points it at moto).
#[derive(Debug, Clone)]
pub struct AwsSecretStore {
    client: aws_sdk_secretsmanager::Client,
}

impl AwsSecretStore {
    pub fn new(client: aws_sdk_secretsmanager::Client) -> Self {
        Self { client }
    }
}

impl SecretStore for AwsSecretStore {
    async fn secret_string(&self, secret_id: &str) -> Result<String, SecretError> {
        let out = self.client.get_secret_value().secret_id(secret_id).send().await.map_err(|e| SecretError::Fetch {
            detail: aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string(),
        })?;
        out.secret_string().map(str::to_string).ok_or(SecretError::Parse { problem: "the secret has no SecretString" })
    }
}

/// A key whose material is a secret's whole string (`TASK_KEY_SECRET_ARN` signs re-derivation
/// tasks, `REDACTION_KEY_SECRET_ARN` hashes redacted columns; the template generates 64
/// characters for each). `make` refuses material shorter than the key needs (32 bytes).
pub(crate) async fn key<K>(
    store: &impl SecretStore,
    secret_id: &str,
    make: impl FnOnce(&[u8]) -> Option<K>,
) -> Result<K, SecretError> {
    let material = store.secret_string(secret_id).await?;
    make(material.trim().as_bytes()).ok_or(SecretError::Parse { problem: "the key is shorter than 32 bytes" })
}

/// Where the handler gets ClickHouse settings from.
pub trait CredentialSource: Send + Sync {
    /// The settings to use now: cached while fresh.
    fn current(&self) -> impl Future<Output = Result<ClickHouseSettings, SecretError>> + Send;
    /// The settings fetched again now, after ClickHouse rejected the current ones.
    fn refresh(&self) -> impl Future<Output = Result<ClickHouseSettings, SecretError>> + Send;
}

/// A secret in a [`SecretStore`], cached with a TTL.
pub struct SecretCache<S> {
    store: S,
    secret_id: String,
    ttl: Duration,
    /// Defaults for what the secret leaves out (the environment's settings).
    base: Option<ClickHouseSettings>,
    cached: Mutex<Option<(ClickHouseSettings, Instant)>>,
}

impl<S: SecretStore> SecretCache<S> {
    pub fn new(store: S, secret_id: impl Into<String>, ttl: Duration) -> Self {
        Self { store, secret_id: secret_id.into(), ttl, base: None, cached: Mutex::new(None) }
    }

    /// Takes what the secret leaves out (URL, user, database, CA bundle) from `base`.
    fn with_base(mut self, base: ClickHouseSettings) -> Self {
        self.base = Some(base);
        self
    }

    async fn fetch(&self) -> Result<ClickHouseSettings, SecretError> {
        let settings = parse_secret_over(&self.store.secret_string(&self.secret_id).await?, self.base.as_ref())?;
        *self.cached.lock().await = Some((settings.clone(), Instant::now()));
        Ok(settings)
    }
}

impl<S: SecretStore> CredentialSource for SecretCache<S> {
    async fn current(&self) -> Result<ClickHouseSettings, SecretError> {
        let cached = self.cached.lock().await.clone();
        match cached {
            Some((settings, at)) if at.elapsed() < self.ttl => Ok(settings),
            stale => match self.fetch().await {
                Ok(settings) => Ok(settings),
                // Secrets Manager briefly unavailable: the settings we had still work unless
                // they were rotated, and an auth failure will force a refresh then.
                Err(e) => match stale {
                    Some((settings, _)) => {
                        tracing::warn!(
                            code = e.code(),
                            "secret refresh failed, keeping the cached ClickHouse settings"
                        );
                        Ok(settings)
                    }
                    None => Err(e),
                },
            },
        }
    }

    async fn refresh(&self) -> Result<ClickHouseSettings, SecretError> {
        self.fetch().await
    }
}

/// Fixed settings (the `CLICKHOUSE_*` environment variables, for local runs and tests).
#[derive(Debug, Clone)]
pub struct StaticCredentials(pub ClickHouseSettings);

impl CredentialSource for StaticCredentials {
    async fn current(&self) -> Result<ClickHouseSettings, SecretError> {
        Ok(self.0.clone())
    }
    async fn refresh(&self) -> Result<ClickHouseSettings, SecretError> {
        Ok(self.0.clone())
    }
}

/// What `CLICKHOUSE_SECRET_ARN` selects: the secret (AWS) or the environment (local); or, when
/// the configuration cannot be read, its error for every caller (messages wait for the fix).
pub enum Credentials<S = AwsSecretStore> {
    Secret(Box<SecretCache<S>>),
    Env(StaticCredentials),
    Misconfigured(ConfigError),
}

impl Credentials<AwsSecretStore> {
    /// The secret, cached for its TTL, over the variables; or the variables alone.
    pub(crate) fn from_source(source: &ClickHouseSource, client: aws_sdk_secretsmanager::Client) -> Self {
        match source {
            ClickHouseSource::Secret { arn, ttl, base } => Credentials::Secret(Box::new(
                SecretCache::new(AwsSecretStore::new(client), arn.clone(), *ttl).with_base(base.clone()),
            )),
            ClickHouseSource::Env(settings) => Credentials::Env(StaticCredentials(settings.clone())),
        }
    }
}

impl<S: SecretStore> CredentialSource for Credentials<S> {
    async fn current(&self) -> Result<ClickHouseSettings, SecretError> {
        match self {
            Credentials::Secret(c) => c.current().await,
            Credentials::Env(c) => c.current().await,
            Credentials::Misconfigured(e) => Err(SecretError::Config(e.clone())),
        }
    }
    async fn refresh(&self) -> Result<ClickHouseSettings, SecretError> {
        match self {
            Credentials::Secret(c) => c.refresh().await,
            Credentials::Env(c) => c.refresh().await,
            Credentials::Misconfigured(e) => Err(SecretError::Config(e.clone())),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Mutex as StdMutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn parses_url_form() {
        let s = parse_secret(
            r#"{"url":"https://ch.example.com:8443/","username":"cdc","password":"p","database":"analytics"}"#,
        )
        .unwrap();
        assert_eq!(s.url, "https://ch.example.com:8443");
        assert_eq!(s.user, "cdc");
        assert_eq!(s.password, "p");
        assert_eq!(s.database, "analytics");
    }

    #[test]
    fn parses_host_port_form() {
        let s =
            parse_secret(r#"{"host":"10.0.0.5","port":8123,"username":"cdc","password":"p","database":"dw"}"#).unwrap();
        // TLS unless the secret says otherwise.
        assert_eq!(s.url, "https://10.0.0.5:8123");
        assert_eq!(s.database, "dw");
        let s = parse_secret(r#"{"host":"10.0.0.5","secure":false,"username":"cdc"}"#).unwrap();
        assert_eq!(s.url, "http://10.0.0.5:8123");
        assert_eq!(s.validate().unwrap_err().code(), "config.plaintext_url", "plaintext refused without opt-in");
        let s = parse_secret(r#"{"host":"::1","secure":"false","username":"cdc"}"#).unwrap();
        assert_eq!(s.url, "http://[::1]:8123");
        assert_eq!(s.validate(), Ok(()), "loopback may be plaintext");
        let s = parse_secret(r#"{"host":"ch","port":"9443","secure":true,"user":"u","password":"p","dbname":"x"}"#)
            .unwrap();
        assert_eq!(s.url, "https://ch:9443");
        assert_eq!(s.user, "u");
        assert_eq!(s.database, "x");
        let s = parse_secret(r#"{"host":"ch","secure":"true","username":"u"}"#).unwrap();
        assert_eq!(s.url, "https://ch:8443");
        assert_eq!(s.password, "");
        assert_eq!(s.database, "analytics");
    }

    #[test]
    fn environment_fills_what_the_secret_leaves_out() {
        let base = ClickHouseSettings {
            ca_bundle: Some("PEM".into()),
            ..ClickHouseSettings::new("https://ch.example.com:8443", "cdc", "", "dw")
        };
        let s = parse_secret_over(r#"{"password":"p"}"#, Some(&base)).unwrap();
        assert_eq!((s.url.as_str(), s.user.as_str(), s.password.as_str()), ("https://ch.example.com:8443", "cdc", "p"));
        assert_eq!((s.database.as_str(), s.ca_bundle.as_deref()), ("dw", Some("PEM")));
        let s =
            parse_secret_over(r#"{"url":"https://other:8443","username":"x","password":"p"}"#, Some(&base)).unwrap();
        assert_eq!((s.url.as_str(), s.user.as_str()), ("https://other:8443", "x"));
    }

    #[test]
    fn without_clickhouse_url_the_secret_must_name_the_server() {
        // CLICKHOUSE_URL unset: the configuration's base has an empty URL.
        let base = ClickHouseSettings::new("", "default", "", "analytics");
        let e = parse_secret_over(r#"{"password":"hunter2"}"#, Some(&base)).unwrap_err();
        assert_eq!(e.code(), "secret.parse");
        assert!(e.to_string().contains("CLICKHOUSE_URL") && !e.to_string().contains("hunter2"), "{e}");
        let s = parse_secret_over(r#"{"host":"ch","password":"p"}"#, Some(&base)).unwrap();
        assert_eq!((s.url.as_str(), s.user.as_str()), ("https://ch:8443", "default"));
    }

    #[test]
    fn secure_takes_the_one_boolean_syntax() {
        for (secure, url) in
            [("off", "http://h:8123"), ("No", "http://h:8123"), ("on", "https://h:8443"), ("1", "https://h:8443")]
        {
            let s = parse_secret(&format!(r#"{{"host":"h","secure":"{secure}","username":"u"}}"#)).unwrap();
            assert_eq!(s.url, url, "{secure}");
        }
        let e = parse_secret(r#"{"host":"h","secure":"maybe","username":"u"}"#).unwrap_err();
        assert_eq!(e.code(), "secret.parse");
    }

    #[tokio::test]
    async fn a_misconfigured_function_fails_every_credential_request_with_the_config_error() {
        let error = ConfigError::Missing { name: "CLICKHOUSE_URL", why: "test" };
        let credentials: Credentials<FakeStore> = Credentials::Misconfigured(error);
        for e in [credentials.current().await.unwrap_err(), credentials.refresh().await.unwrap_err()] {
            assert_eq!((e.code(), e.class()), ("config.missing", ErrorClass::Systemic));
            assert!(e.to_string().contains("CLICKHOUSE_URL"));
        }
    }

    #[test]
    fn the_deployment_placeholder_is_not_a_configuration() {
        let base = ClickHouseSettings::new("http://127.0.0.1:8123", "default", "", "analytics");
        let e = parse_secret_over(r#"{"placeholder":true}"#, Some(&base)).unwrap_err();
        assert_eq!((e.code(), e.class()), ("secret.not_configured", ErrorClass::Systemic));
        assert!(parse_secret(r#"{"placeholder":false,"url":"https://h","username":"u"}"#).is_ok());
    }

    #[test]
    fn rejects_bad_secrets_without_echoing_them() {
        for bad in [
            "not json hunter2",
            r#"{"username":"u","password":"hunter2"}"#,
            r#"{"host":"h","port":70000,"username":"u","password":"hunter2"}"#,
            r#"{"host":"h","port":"x","username":"u","password":"hunter2"}"#,
            r#"{"url":"ftp://h","username":"u","password":"hunter2"}"#,
            r#"{"url":"http://h","password":"hunter2"}"#,
        ] {
            let e = parse_secret(bad).unwrap_err();
            assert!(!e.to_string().contains("hunter2"), "{e}");
            assert_eq!(e.class(), ErrorClass::Systemic);
        }
    }

    /// A secret store whose value can be rotated, counting fetches.
    pub(crate) struct FakeStore {
        pub(crate) value: StdMutex<Result<String, ()>>,
        pub(crate) fetches: AtomicUsize,
    }

    impl FakeStore {
        pub(crate) fn new(password: &str) -> Self {
            Self { value: StdMutex::new(Ok(secret_json(password))), fetches: AtomicUsize::new(0) }
        }
        pub(crate) fn rotate(&self, password: &str) {
            *self.value.lock().unwrap() = Ok(secret_json(password));
        }
        fn break_it(&self) {
            *self.value.lock().unwrap() = Err(());
        }
    }

    fn secret_json(password: &str) -> String {
        format!(r#"{{"url":"http://127.0.0.1:8123","username":"cdc","password":"{password}","database":"analytics"}}"#)
    }

    impl SecretStore for FakeStore {
        async fn secret_string(&self, _id: &str) -> Result<String, SecretError> {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            self.value.lock().unwrap().clone().map_err(|_| SecretError::Fetch { detail: "unavailable".into() })
        }
    }

    impl<S: SecretStore> SecretStore for std::sync::Arc<S> {
        async fn secret_string(&self, id: &str) -> Result<String, SecretError> {
            (**self).secret_string(id).await
        }
    }

    #[tokio::test]
    async fn cache_serves_within_ttl_and_refresh_fetches_again() {
        let store = std::sync::Arc::new(FakeStore::new("one"));
        let cache = SecretCache::new(store.clone(), "arn", Duration::from_secs(300));
        assert_eq!(cache.current().await.unwrap().password, "one");
        store.rotate("two");
        assert_eq!(cache.current().await.unwrap().password, "one", "cached within the TTL");
        assert_eq!(store.fetches.load(Ordering::SeqCst), 1);
        assert_eq!(cache.refresh().await.unwrap().password, "two");
        assert_eq!(cache.current().await.unwrap().password, "two");
        assert_eq!(store.fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn expired_cache_fetches_again_and_keeps_stale_value_on_failure() {
        let store = std::sync::Arc::new(FakeStore::new("one"));
        let cache = SecretCache::new(store.clone(), "arn", Duration::ZERO);
        assert_eq!(cache.current().await.unwrap().password, "one");
        store.rotate("two");
        assert_eq!(cache.current().await.unwrap().password, "two");
        store.break_it();
        assert_eq!(cache.current().await.unwrap().password, "two", "stale beats nothing");
        assert!(cache.refresh().await.is_err());
    }

    #[tokio::test]
    async fn first_fetch_failure_is_an_error() {
        let store = FakeStore::new("one");
        store.break_it();
        let cache = SecretCache::new(store, "arn", DEFAULT_TTL);
        assert_eq!(cache.current().await.unwrap_err().code(), "secret.fetch");
    }
}
