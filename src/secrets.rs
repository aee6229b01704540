//! ClickHouse credentials: from AWS Secrets Manager in AWS, from the environment locally.
//!
//! Enters: `CLICKHOUSE_SECRET_ARN` (a JSON secret: `url`, or `host` + `port` (+ `secure`), and
//! `username`, `password`, `database`) or the `CLICKHOUSE_*` variables of
//! [`ClickHouseSettings::from_env`]. Leaves: [`ClickHouseSettings`].
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

use crate::config::ClickHouseSettings;
use crate::error::{Classify, ErrorClass};

pub const DEFAULT_TTL: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Secrets Manager did not answer or refused (`detail` is the SDK's error text, which names
    /// the error code and the secret's ARN, never its value).
    #[error("could not fetch the ClickHouse secret: {detail}")]
    Fetch { detail: String },
    #[error("the ClickHouse secret is not a JSON object with the expected fields: {problem}")]
    Parse { problem: &'static str },
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
}

/// Parses the secret string. The password may be empty (ClickHouse's `default` user often has
/// none); everything else that is present must be usable.
pub fn parse_secret(secret: &str) -> Result<ClickHouseSettings, SecretError> {
    let json: SecretJson =
        serde_json::from_str(secret).map_err(|_| SecretError::Parse { problem: "not a JSON object" })?;
    let url = match (json.url.filter(|u| !u.trim().is_empty()), json.host.filter(|h| !h.trim().is_empty())) {
        (Some(url), _) => {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(SecretError::Parse { problem: "url must start with http:// or https://" });
            }
            url.trim_end_matches('/').to_string()
        }
        (None, Some(host)) => {
            let secure = match &json.secure {
                None | Some(serde_json::Value::Null) => false,
                Some(serde_json::Value::Bool(b)) => *b,
                Some(serde_json::Value::String(s)) => matches!(s.to_ascii_lowercase().as_str(), "true" | "1" | "yes"),
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
            format!("{scheme}://{}:{port}", host.trim())
        }
        (None, None) => return Err(SecretError::Parse { problem: "neither url nor host is set" }),
    };
    let user = json.username.filter(|u| !u.is_empty()).ok_or(SecretError::Parse { problem: "username is missing" })?;
    Ok(ClickHouseSettings {
        url,
        user,
        password: json.password.unwrap_or_default(),
        database: json.database.filter(|d| !d.is_empty()).unwrap_or_else(|| "analytics".to_string()),
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
    cached: Mutex<Option<(ClickHouseSettings, Instant)>>,
}

impl<S: SecretStore> SecretCache<S> {
    pub fn new(store: S, secret_id: impl Into<String>, ttl: Duration) -> Self {
        Self { store, secret_id: secret_id.into(), ttl, cached: Mutex::new(None) }
    }

    async fn fetch(&self) -> Result<ClickHouseSettings, SecretError> {
        let settings = parse_secret(&self.store.secret_string(&self.secret_id).await?)?;
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

/// What `CLICKHOUSE_SECRET_ARN` selects: the secret (AWS) or the environment (local).
pub enum Credentials<S = AwsSecretStore> {
    Secret(SecretCache<S>),
    Env(StaticCredentials),
}

impl Credentials<AwsSecretStore> {
    /// `CLICKHOUSE_SECRET_ARN` set: the secret, cached for `CLICKHOUSE_SECRET_TTL_SECONDS`
    /// (default 300). Otherwise [`ClickHouseSettings::from_env`].
    pub fn from_env(client: aws_sdk_secretsmanager::Client) -> Self {
        match std::env::var("CLICKHOUSE_SECRET_ARN").ok().filter(|s| !s.trim().is_empty()) {
            Some(arn) => {
                let ttl = std::env::var("CLICKHOUSE_SECRET_TTL_SECONDS")
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
                    .map(Duration::from_secs)
                    .unwrap_or(DEFAULT_TTL);
                Credentials::Secret(SecretCache::new(AwsSecretStore::new(client), arn, ttl))
            }
            None => Credentials::Env(StaticCredentials(ClickHouseSettings::from_env())),
        }
    }
}

impl<S: SecretStore> CredentialSource for Credentials<S> {
    async fn current(&self) -> Result<ClickHouseSettings, SecretError> {
        match self {
            Credentials::Secret(c) => c.current().await,
            Credentials::Env(c) => c.current().await,
        }
    }
    async fn refresh(&self) -> Result<ClickHouseSettings, SecretError> {
        match self {
            Credentials::Secret(c) => c.refresh().await,
            Credentials::Env(c) => c.refresh().await,
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
        assert_eq!(s.url, "http://10.0.0.5:8123");
        assert_eq!(s.database, "dw");
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
    pub struct FakeStore {
        pub value: StdMutex<Result<String, ()>>,
        pub fetches: AtomicUsize,
    }

    impl FakeStore {
        pub fn new(password: &str) -> Self {
            Self { value: StdMutex::new(Ok(secret_json(password))), fetches: AtomicUsize::new(0) }
        }
        pub fn rotate(&self, password: &str) {
            *self.value.lock().unwrap() = Ok(secret_json(password));
        }
        pub fn break_it(&self) {
            *self.value.lock().unwrap() = Err(());
        }
    }

    pub fn secret_json(password: &str) -> String {
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
