//! What the configuration's values are, for the modules that build on them: the error a bad
//! value is, the one boolean syntax, and where the ClickHouse settings come from. Reading the
//! environment stays in the parent module, the crate's only reader of it.

use std::time::Duration;

use cdc_clickhouse::config::ClickHouseSettings;
use cdc_core::error::{Classify, ErrorClass};

use crate::pipeline::SystemicError;

/// A configuration that cannot work: a required variable missing or a value that does not parse.
/// Messages name the variable; they echo the value only for variables that never hold a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} is required: {why}")]
    Missing { name: &'static str, why: &'static str },
    #[error("{name} must be {expected}{}", value.as_ref().map(|v| format!(" (got {v:?})")).unwrap_or_default())]
    BadValue { name: &'static str, expected: &'static str, value: Option<String> },
    #[error("CAPTURED_TABLES cannot be used: {detail}")]
    CapturedTables { detail: String },
    #[error("REDACT_COLUMNS cannot be used: {detail}")]
    Redaction { detail: String },
}

impl Classify for ConfigError {
    fn class(&self) -> ErrorClass {
        ErrorClass::Systemic
    }
    fn code(&self) -> &'static str {
        match self {
            ConfigError::Missing { .. } => "config.missing",
            ConfigError::BadValue { .. } => "config.bad_value",
            ConfigError::CapturedTables { .. } => "config.captured_tables",
            ConfigError::Redaction { .. } => "config.redaction",
        }
    }
}

impl ConfigError {
    /// The variable at fault.
    pub(crate) fn variable(&self) -> &'static str {
        match self {
            ConfigError::Missing { name, .. } | ConfigError::BadValue { name, .. } => name,
            ConfigError::CapturedTables { .. } => "CAPTURED_TABLES",
            ConfigError::Redaction { .. } => "REDACT_COLUMNS",
        }
    }
}

impl From<ConfigError> for SystemicError {
    fn from(e: ConfigError) -> Self {
        SystemicError { code: e.code(), detail: e.to_string(), is_auth: false }
    }
}

/// Where the ClickHouse settings come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ClickHouseSource {
    /// No secret: the `CLICKHOUSE_*` variables alone (`CLICKHOUSE_URL` required).
    Env(ClickHouseSettings),
    /// `CLICKHOUSE_SECRET_ARN`: the secret, cached for `ttl`, over `base` (the variables). An
    /// empty `base.url` means `CLICKHOUSE_URL` is unset: the secret must then name the server.
    Secret { arn: String, ttl: Duration, base: ClickHouseSettings },
}

/// The one boolean syntax: `1/true/yes/on` or `0/false/no/off`, any case, trimmed; `None` for
/// anything else.
pub(crate) fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}
