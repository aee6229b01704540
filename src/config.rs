//! Configuration, read once per cold start from the environment.

/// Where and how to reach ClickHouse. From `CLICKHOUSE_*` variables locally, from the Secrets
/// Manager secret named by `CLICKHOUSE_SECRET_ARN` in AWS.
#[derive(Clone, PartialEq, Eq)]
pub struct ClickHouseSettings {
    pub url: String,
    pub user: String,
    pub password: String,
    pub database: String,
}

impl std::fmt::Debug for ClickHouseSettings {
    // The password never reaches a log line, not even through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseSettings")
            .field("url", &self.url)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("database", &self.database)
            .finish()
    }
}

impl ClickHouseSettings {
    /// `CLICKHOUSE_URL` (default `http://127.0.0.1:8123`), `CLICKHOUSE_USER` (`default`),
    /// `CLICKHOUSE_PASSWORD` (empty), `CLICKHOUSE_DATABASE` (`analytics`).
    pub fn from_env() -> Self {
        let var = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_string());
        Self {
            url: var("CLICKHOUSE_URL", "http://127.0.0.1:8123"),
            user: var("CLICKHOUSE_USER", "default"),
            password: var("CLICKHOUSE_PASSWORD", ""),
            database: var("CLICKHOUSE_DATABASE", "analytics"),
        }
    }
}
