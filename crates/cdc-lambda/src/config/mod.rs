//! The configuration, read once per process from the environment: the only reader of process
//! environment variables in the function (the AWS SDK reads its own `AWS_*` variables). The
//! function at cold start and the tools (`invoke`, `poll`, `migrate`, `repair`) build the same
//! [`Config`], so a value means the same thing everywhere.
//!
//! Every value is checked here, once: a boolean is `1/true/yes/on` or `0/false/no/off` (any case,
//! trimmed), a number is a whole number in its range, an enum one of its words. Anything else is
//! a [`ConfigError`] naming the variable, never a silent default. An empty value reads as unset
//! (the deployment template passes empty strings for optional settings). The errors are systemic:
//! no message can be processed under a configuration that cannot work, so in Lambda messages wait
//! for the fix instead of being dead-lettered (docs/error-policy.md, "Configuration").

use std::collections::BTreeSet;
use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use cdc_clickhouse::config::ClickHouseSettings;
use cdc_clickhouse::{SchemaEvolution, Warehouse, WarehouseOptions};
use cdc_core::decode::DecodeOptions;
use cdc_core::error::Classify;
use cdc_core::redact::{RedactionKey, Redactor, Rules};
use cdc_core::rederive::TaskKey;
use cdc_core::tables::{MirrorTarget, SourceTable, TableMapping};

use crate::handler::{HandlerConfig, PipelineFactory};
use crate::pipeline::{DEFAULT_REGRESSION_SLACK, Pipeline, SystemicError};
use crate::secrets::{self, AwsSecretStore, CredentialSource, Credentials};
use crate::sqs::backoff::Backoff;

pub(crate) mod values;
pub use values::ConfigError;
pub(crate) use values::{ClickHouseSource, parse_bool};

/// Longest duration any `*_SECONDS` variable accepts (a year): larger values would overflow the
/// clock arithmetic of deadlines and retry ages.
const MAX_SECONDS: u64 = 365 * 24 * 3600;
/// Lambda's longest timeout: a larger settling margin could never leave time for work.
const MAX_DEADLINE_MARGIN_MS: u64 = 15 * 60 * 1000;
/// Longest value echoed in an error (values of variables that hold no secret only).
const MAX_ECHOED: usize = 64;

/// Everything the function and the tools read from the environment (README, "Configuration").
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) clickhouse: ClickHouseSource,
    pub warehouse: WarehouseOptions,
    pub decode: DecodeOptions,
    pub handler: HandlerConfig,
    /// `TASK_KEY_SECRET_ARN`: the secret whose value signs follow-up tasks.
    task_key_secret_arn: Option<String>,
    /// `REDACT_COLUMNS` and `REDACTION_KEY_SECRET_ARN`: what is redacted, and the hash key.
    pub(crate) redaction: RedactionConfig,
    /// `VERSION_REGRESSION_SLACK_SECONDS`: the longest transaction the source runs
    /// (docs/versions.md, "Positions that restart").
    pub regression_slack: Duration,
}

/// What the configuration redacts, and where the hash key is (docs/privacy.md).
#[derive(Debug, Clone, Default)]
pub(crate) struct RedactionConfig {
    rules: Rules,
    key_secret_arn: Option<String>,
}

/// A value cut for an error message: bounded, control characters replaced.
fn echo(value: &str) -> String {
    let mut out: String = value.chars().take(MAX_ECHOED).map(|c| if c.is_control() { '?' } else { c }).collect();
    if value.chars().nth(MAX_ECHOED).is_some() {
        out.push('…');
    }
    out
}

/// Typed reads over a variable lookup.
struct Vars<L> {
    lookup: L,
}

impl<L: Fn(&str) -> Option<String>> Vars<L> {
    /// The trimmed value; empty reads as unset.
    fn text(&self, name: &str) -> Option<String> {
        (self.lookup)(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
    }

    fn flag(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.text(name) {
            None => Ok(default),
            Some(v) => parse_bool(&v).ok_or_else(|| ConfigError::BadValue {
                name,
                expected: "one of 1/true/yes/on or 0/false/no/off",
                value: Some(echo(&v)),
            }),
        }
    }

    fn number<T: FromStr + PartialOrd>(
        &self,
        name: &'static str,
        default: T,
        range: std::ops::RangeInclusive<T>,
        expected: &'static str,
    ) -> Result<T, ConfigError> {
        match self.text(name) {
            None => Ok(default),
            Some(v) => v.parse::<T>().ok().filter(|n| range.contains(n)).ok_or_else(|| ConfigError::BadValue {
                name,
                expected,
                value: Some(echo(&v)),
            }),
        }
    }

    fn seconds(&self, name: &'static str, default: Duration) -> Result<Duration, ConfigError> {
        let expected = "a whole number of seconds from 0 to 31536000";
        self.number(name, default.as_secs(), 0..=MAX_SECONDS, expected).map(Duration::from_secs)
    }
}

/// `HISTORY_TABLES`: sales mirrors by name, `all` for the four, `none` for none; `None` for
/// anything else (a generic mirror keeps no history yet: docs/history.md).
fn history_tables(text: &str) -> Option<BTreeSet<SourceTable>> {
    match text.trim().to_ascii_lowercase().as_str() {
        "all" => return Some(SourceTable::ALL.into_iter().collect()),
        "none" => return Some(BTreeSet::new()),
        _ => {}
    }
    text.split(',').map(str::trim).filter(|name| !name.is_empty()).map(SourceTable::from_name).collect()
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Self::from_lookup(process_var)
    }

    /// Builds the configuration from any lookup (tests pass a map).
    fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let vars = Vars { lookup };
        let clickhouse = clickhouse_source(&vars)?;

        let schema_evolution = match vars.text("SCHEMA_EVOLUTION") {
            None => SchemaEvolution::default(),
            Some(v) => SchemaEvolution::parse(&v).ok_or(ConfigError::BadValue {
                name: "SCHEMA_EVOLUTION",
                expected: "add or off",
                value: Some(echo(&v)),
            })?,
        };
        let insert_quorum = match vars.text("CLICKHOUSE_INSERT_QUORUM") {
            None => None,
            Some(v) if v.eq_ignore_ascii_case("auto") => Some("auto".to_string()),
            Some(v) => Some(v.parse::<u64>().map(|n| n.to_string()).map_err(|_| ConfigError::BadValue {
                name: "CLICKHOUSE_INSERT_QUORUM",
                expected: "auto or a whole number of replicas",
                value: Some(echo(&v)),
            })?),
        };
        let history = match vars.text("HISTORY_TABLES") {
            None => BTreeSet::new(),
            Some(v) => history_tables(&v).ok_or(ConfigError::BadValue {
                name: "HISTORY_TABLES",
                expected: "a comma-separated list of customers, products, orders, order_items (or all, or none)",
                value: Some(echo(&v)),
            })?,
        };
        let warehouse = WarehouseOptions {
            insert_quorum,
            cluster: vars.text("CLICKHOUSE_CLUSTER"),
            schema_evolution,
            history,
            ..WarehouseOptions::default()
        };

        let tables = TableMapping::parse(&vars.text("CAPTURED_TABLES").unwrap_or_default())
            .map_err(|e| ConfigError::CapturedTables { detail: e.to_string() })?;
        let decode = DecodeOptions {
            reject_unknown_tables: vars.flag("REJECT_UNKNOWN_TABLES", false)?,
            platform_feeds_sales: vars.flag("PLATFORM_FEEDS_SALES", false)?,
            tables,
        };

        let defaults = HandlerConfig::default();
        let backoff_defaults = Backoff::default();
        let handler = HandlerConfig {
            dead_letter_queue_url: vars.text("DEAD_LETTER_QUEUE_URL"),
            source_queue_url: vars.text("SOURCE_QUEUE_URL"),
            backoff: Backoff {
                base: vars.seconds("BACKOFF_BASE_SECONDS", backoff_defaults.base)?,
                cap: vars.seconds("BACKOFF_CAP_SECONDS", backoff_defaults.cap)?,
            },
            deadline_margin: Duration::from_millis(vars.number(
                "DEADLINE_MARGIN_MS",
                defaults.deadline_margin.as_millis() as u64,
                0..=MAX_DEADLINE_MARGIN_MS,
                "a whole number of milliseconds from 0 to 900000",
            )?),
            requeue: vars.flag("REQUEUE_ON_OUTAGE", defaults.requeue)?,
            retry_max_age: vars.seconds("RETRY_MAX_AGE_SECONDS", defaults.retry_max_age)?,
            default_timeout: Duration::from_secs(vars.number(
                "LOCAL_TIMEOUT_SECONDS",
                defaults.default_timeout.as_secs(),
                1..=MAX_SECONDS,
                "a whole number of seconds from 1 to 31536000",
            )?),
            function_name: vars.text("AWS_LAMBDA_FUNCTION_NAME").unwrap_or(defaults.function_name),
        };

        let rules = Rules::parse(&vars.text("REDACT_COLUMNS").unwrap_or_default())
            .map_err(|e| ConfigError::Redaction { detail: e.to_string() })?;
        for (_, target) in decode.tables.entries() {
            if let MirrorTarget::Generic(table) = target {
                rules
                    .check_key(&table.name, &table.key)
                    .map_err(|e| ConfigError::Redaction { detail: e.to_string() })?;
            }
        }
        let key_secret_arn = vars.text("REDACTION_KEY_SECRET_ARN");
        if rules.hashes() && key_secret_arn.is_none() {
            // Never a plain value where a hash was asked for, and never a key of one process
            // (hashes must agree across instances and with `verify`).
            return Err(ConfigError::Missing {
                name: "REDACTION_KEY_SECRET_ARN",
                why: "REDACT_COLUMNS hashes a column, and the hash key comes from Secrets Manager",
            });
        }
        Ok(Config {
            clickhouse,
            warehouse,
            decode,
            handler,
            task_key_secret_arn: vars.text("TASK_KEY_SECRET_ARN"),
            redaction: RedactionConfig { rules, key_secret_arn },
            regression_slack: vars.seconds("VERSION_REGRESSION_SLACK_SECONDS", DEFAULT_REGRESSION_SLACK)?,
        })
    }

    /// The redactor this configuration describes, its key fetched from Secrets Manager once
    /// per process (`verify` and `repair` use it too, so their hashes agree with the function's).
    pub async fn redactor(&self) -> Result<Redactor, SystemicError> {
        self.redaction.redactor().await
    }

    /// The pipeline factory this configuration describes (decoder options, warehouse options,
    /// task key), for the handler.
    pub fn pipeline_builder(&self) -> PipelineBuilder {
        PipelineBuilder {
            decode: self.decode.clone(),
            warehouse: self.warehouse.clone(),
            task_key_secret_arn: self.task_key_secret_arn.clone(),
            redaction: self.redaction.clone(),
            regression_slack: self.regression_slack,
        }
    }

    /// A warehouse for `settings` with this configuration's options (tools).
    pub fn warehouse(&self, settings: &ClickHouseSettings) -> Warehouse {
        Warehouse::with_options(settings, &self.warehouse)
    }

    /// The credential source: the secret (cached) or the variables.
    pub(crate) fn credentials(&self, client: aws_sdk_secretsmanager::Client) -> Credentials {
        Credentials::from_source(&self.clickhouse, client)
    }

    /// The ClickHouse settings the function uses, for the tools: the secret over the variables,
    /// or the variables alone, checked as the function checks them (TLS policy, CA bundle).
    pub async fn clickhouse_settings(&self) -> Result<ClickHouseSettings, SystemicError> {
        let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let settings = self
            .credentials(aws_sdk_secretsmanager::Client::new(&aws))
            .current()
            .await
            .map_err(|e| SystemicError { code: e.code(), detail: e.to_string(), is_auth: false })?;
        settings.validate().map_err(|e| SystemicError { code: e.code(), detail: e.to_string(), is_auth: false })?;
        Ok(settings)
    }
}

/// The `CLICKHOUSE_*` variables and the secret's name.
fn clickhouse_source<L: Fn(&str) -> Option<String>>(vars: &Vars<L>) -> Result<ClickHouseSource, ConfigError> {
    let secret_arn = vars.text("CLICKHOUSE_SECRET_ARN");
    let url = match vars.text("CLICKHOUSE_URL") {
        Some(url) => {
            // The value is not echoed: a malformed URL may carry credentials.
            cdc_clickhouse::config::parse_url(&url).map_err(|_| ConfigError::BadValue {
                name: "CLICKHOUSE_URL",
                expected: "an http:// or https:// URL with a host and no user information",
                value: None,
            })?;
            url.trim_end_matches('/').to_string()
        }
        None if secret_arn.is_some() => String::new(),
        None => {
            return Err(ConfigError::Missing {
                name: "CLICKHOUSE_URL",
                why: "ClickHouse's HTTP(S) URL, unless CLICKHOUSE_SECRET_ARN names a secret that gives it",
            });
        }
    };
    let ca_bundle = match vars.text("CLICKHOUSE_CA_BUNDLE") {
        None => None,
        // Whether it holds a certificate is checked with the rest of the TLS policy
        // (`ClickHouseSettings::validate`, `config.ca_bundle`).
        Some(path) => Some(std::fs::read_to_string(&path).map_err(|_| ConfigError::BadValue {
            name: "CLICKHOUSE_CA_BUNDLE",
            expected: "the path of a readable PEM file",
            value: Some(echo(&path)),
        })?),
    };
    let settings = ClickHouseSettings {
        url,
        user: vars.text("CLICKHOUSE_USER").unwrap_or_else(|| "default".to_string()),
        // Untrimmed: a password is taken as given.
        password: (vars.lookup)("CLICKHOUSE_PASSWORD").unwrap_or_default(),
        database: vars.text("CLICKHOUSE_DATABASE").unwrap_or_else(|| "analytics".to_string()),
        ca_bundle,
        allow_plaintext: vars.flag("CLICKHOUSE_ALLOW_PLAINTEXT", false)?,
    };
    Ok(match secret_arn {
        Some(arn) => ClickHouseSource::Secret {
            arn,
            ttl: vars.seconds("CLICKHOUSE_SECRET_TTL_SECONDS", secrets::DEFAULT_TTL)?,
            base: settings,
        },
        None => {
            // Read for its syntax even when unused, so a typo never waits for a secret to appear.
            vars.seconds("CLICKHOUSE_SECRET_TTL_SECONDS", secrets::DEFAULT_TTL)?;
            ClickHouseSource::Env(settings)
        }
    })
}

/// The one read of the process environment in the function (a value that is not Unicode reads
/// as unset; every variable here is text).
fn process_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// `RUST_LOG`, for the log subscriber, which starts before the rest of the configuration is
/// read (so that a configuration error can be logged).
pub fn log_filter() -> Option<String> {
    Vars { lookup: process_var }.text("RUST_LOG")
}

/// The metrics' `FunctionName` (`AWS_LAMBDA_FUNCTION_NAME`, set by Lambda) when the
/// configuration as a whole could not be read.
pub(crate) fn function_name_or_local() -> String {
    Vars { lookup: process_var }
        .text("AWS_LAMBDA_FUNCTION_NAME")
        .unwrap_or_else(|| HandlerConfig::default().function_name)
}

/// Builds the pipeline for given ClickHouse settings: at cold start and after a credential
/// rotation.
#[derive(Debug, Clone)]
pub struct PipelineBuilder {
    decode: DecodeOptions,
    warehouse: WarehouseOptions,
    task_key_secret_arn: Option<String>,
    redaction: RedactionConfig,
    regression_slack: Duration,
}

impl Default for PipelineBuilder {
    fn default() -> Self {
        PipelineBuilder {
            decode: DecodeOptions::default(),
            warehouse: WarehouseOptions::default(),
            task_key_secret_arn: None,
            redaction: RedactionConfig::default(),
            regression_slack: DEFAULT_REGRESSION_SLACK,
        }
    }
}

impl PipelineBuilder {
    async fn build_pipeline(&self, settings: ClickHouseSettings) -> Result<Pipeline, SystemicError> {
        let warehouse = Warehouse::with_options(&settings, &self.warehouse);
        Ok(Pipeline::new(self.decode.clone(), warehouse)
            .with_task_key(task_key(self.task_key_secret_arn.as_deref()).await?)
            .with_redactor(self.redaction.redactor().await?)
            .with_regression_slack(self.regression_slack))
    }
}

impl RedactionConfig {
    async fn redactor(&self) -> Result<Redactor, SystemicError> {
        let key = match &self.key_secret_arn {
            Some(arn) if self.rules.hashes() => Some(redaction_key(arn).await?),
            _ => None,
        };
        // `from_env` refused hash rules without a key secret, so this always holds.
        Redactor::new(self.rules.clone(), key).ok_or_else(|| SystemicError {
            code: "config.missing",
            detail: "REDACT_COLUMNS hashes a column and no key was fetched".into(),
            is_auth: false,
        })
    }
}

/// The key that hashes redacted columns, once per process, from the secret
/// `REDACTION_KEY_SECRET_ARN` names. Not fetched yet is systemic: messages wait.
async fn redaction_key(secret_arn: &str) -> Result<RedactionKey, SystemicError> {
    static KEY: tokio::sync::OnceCell<RedactionKey> = tokio::sync::OnceCell::const_new();
    KEY.get_or_try_init(|| key_from_secret(secret_arn, RedactionKey::new)).await.cloned()
}

impl PipelineFactory for PipelineBuilder {
    type Pipeline = Pipeline;
    fn build(&self, settings: ClickHouseSettings) -> impl Future<Output = Result<Pipeline, SystemicError>> + Send {
        let this = self.clone();
        async move { this.build_pipeline(settings).await }
    }
}

/// The key that signs follow-up tasks, once per process: the secret `TASK_KEY_SECRET_ARN` names
/// (every instance of the function shares it), else a random key of this process (local runs:
/// `poll` and `invoke` run one process). Not fetched yet is systemic: messages wait.
pub(crate) async fn task_key(secret_arn: Option<&str>) -> Result<TaskKey, SystemicError> {
    static KEY: tokio::sync::OnceCell<TaskKey> = tokio::sync::OnceCell::const_new();
    let key = KEY.get_or_try_init(|| async {
        let Some(arn) = secret_arn else {
            tracing::warn!(
                "TASK_KEY_SECRET_ARN is not set: follow-up tasks are signed with a key of this process only"
            );
            return Ok(TaskKey::random());
        };
        key_from_secret(arn, TaskKey::new).await
    });
    key.await.cloned()
}

/// A key from the secret `arn` names, through the function's AWS configuration.
async fn key_from_secret<K>(arn: &str, make: impl FnOnce(&[u8]) -> Option<K>) -> Result<K, SystemicError> {
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let store = AwsSecretStore::new(aws_sdk_secretsmanager::Client::new(&config));
    secrets::key(&store, arn, make).await.map_err(|e| SystemicError {
        code: e.code(),
        detail: e.to_string(),
        is_auth: false,
    })
}

/// The ClickHouse settings the function uses, for the tools (`migrate`, `repair`, `verify`):
/// [`Config::from_env`] then [`Config::clickhouse_settings`].
pub async fn clickhouse_settings() -> Result<ClickHouseSettings, SystemicError> {
    Config::from_env()?.clickhouse_settings().await
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use cdc_core::error::ErrorClass;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(move |name| map.get(name).cloned())
    }

    const URL: (&str, &str) = ("CLICKHOUSE_URL", "http://127.0.0.1:8123");

    #[test]
    fn booleans_have_one_syntax() {
        for t in ["1", "true", "TRUE", " yes ", "On", "tRuE\n"] {
            assert_eq!(parse_bool(t), Some(true), "{t:?}");
        }
        for f in ["0", "false", "No", " OFF ", "FALSE"] {
            assert_eq!(parse_bool(f), Some(false), "{f:?}");
        }
        for bad in ["", "2", "y", "n", "enabled", "truee", "-1"] {
            assert_eq!(parse_bool(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn defaults_when_only_the_url_is_set() {
        let c = config(&[URL]).unwrap();
        let ClickHouseSource::Env(s) = &c.clickhouse else { panic!("no secret configured: {:?}", c.clickhouse) };
        assert_eq!(s, &ClickHouseSettings::new("http://127.0.0.1:8123", "default", "", "analytics"));
        assert_eq!(c.warehouse, WarehouseOptions::default());
        assert_eq!(c.decode, DecodeOptions::default());
        assert_eq!(c.handler, HandlerConfig::default());
        assert_eq!(c.task_key_secret_arn, None);
        assert_eq!(c.regression_slack, DEFAULT_REGRESSION_SLACK);
    }

    #[test]
    fn every_variable_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "pem text").unwrap();
        let ca = ca.to_str().unwrap();
        let c = config(&[
            ("CLICKHOUSE_URL", "https://ch.example.com:8443/"),
            ("CLICKHOUSE_USER", "cdc"),
            ("CLICKHOUSE_PASSWORD", " p w "),
            ("CLICKHOUSE_DATABASE", "dw"),
            ("CLICKHOUSE_CA_BUNDLE", ca),
            ("CLICKHOUSE_ALLOW_PLAINTEXT", "yes"),
            ("CLICKHOUSE_INSERT_QUORUM", "AUTO"),
            ("CLICKHOUSE_CLUSTER", "main"),
            ("SCHEMA_EVOLUTION", "Off"),
            ("CAPTURED_TABLES", "public.notes"),
            ("REJECT_UNKNOWN_TABLES", "1"),
            ("PLATFORM_FEEDS_SALES", "on"),
            ("DEAD_LETTER_QUEUE_URL", "https://sqs/dlq"),
            ("SOURCE_QUEUE_URL", "https://sqs/q"),
            ("BACKOFF_BASE_SECONDS", "5"),
            ("BACKOFF_CAP_SECONDS", "50"),
            ("DEADLINE_MARGIN_MS", "1234"),
            ("REQUEUE_ON_OUTAGE", "no"),
            ("RETRY_MAX_AGE_SECONDS", "600"),
            ("LOCAL_TIMEOUT_SECONDS", "9"),
            ("AWS_LAMBDA_FUNCTION_NAME", "fn"),
            ("TASK_KEY_SECRET_ARN", "arn:task"),
            ("CLICKHOUSE_SECRET_ARN", "arn:ch"),
            ("CLICKHOUSE_SECRET_TTL_SECONDS", "7"),
            ("HISTORY_TABLES", "orders"),
            ("VERSION_REGRESSION_SLACK_SECONDS", "86400"),
        ])
        .unwrap();
        let ClickHouseSource::Secret { arn, ttl, base } = c.clickhouse else { panic!("a secret is configured") };
        assert_eq!((arn.as_str(), ttl), ("arn:ch", Duration::from_secs(7)));
        assert_eq!(base.url, "https://ch.example.com:8443");
        assert_eq!((base.user.as_str(), base.password.as_str(), base.database.as_str()), ("cdc", " p w ", "dw"));
        assert_eq!(base.ca_bundle.as_deref(), Some("pem text"));
        assert!(base.allow_plaintext);
        assert_eq!(
            c.warehouse,
            WarehouseOptions {
                insert_quorum: Some("auto".into()),
                cluster: Some("main".into()),
                schema_evolution: SchemaEvolution::Off,
                statement_timeout: None,
                history: BTreeSet::from([SourceTable::Orders]),
            }
        );
        assert_eq!(c.regression_slack, Duration::from_secs(86_400));
        assert!(c.decode.reject_unknown_tables && c.decode.platform_feeds_sales);
        assert_eq!(c.decode.tables, TableMapping::parse("public.notes").unwrap());
        assert_eq!(
            c.handler,
            HandlerConfig {
                dead_letter_queue_url: Some("https://sqs/dlq".into()),
                source_queue_url: Some("https://sqs/q".into()),
                backoff: Backoff { base: Duration::from_secs(5), cap: Duration::from_secs(50) },
                deadline_margin: Duration::from_millis(1234),
                requeue: false,
                retry_max_age: Duration::from_secs(600),
                default_timeout: Duration::from_secs(9),
                function_name: "fn".into(),
            }
        );
        assert_eq!(c.task_key_secret_arn.as_deref(), Some("arn:task"));
    }

    #[test]
    fn the_url_is_required_unless_a_secret_gives_it() {
        for unset in [vec![], vec![("CLICKHOUSE_URL", "  ")]] {
            let e = config(&unset).unwrap_err();
            assert_eq!((e.code(), e.variable(), e.class()), ("config.missing", "CLICKHOUSE_URL", ErrorClass::Systemic));
        }
        let c = config(&[("CLICKHOUSE_SECRET_ARN", "arn:ch")]).unwrap();
        let ClickHouseSource::Secret { base, ttl, .. } = c.clickhouse else { panic!("a secret is configured") };
        assert_eq!((base.url.as_str(), ttl), ("", secrets::DEFAULT_TTL));
    }

    #[test]
    fn history_tables_are_sales_mirrors_or_all_and_anything_else_is_refused() {
        assert!(config(&[URL]).unwrap().warehouse.history.is_empty(), "no history unless configured");
        let c = config(&[URL, ("HISTORY_TABLES", " customers, order_items ")]).unwrap();
        assert_eq!(c.warehouse.history, BTreeSet::from([SourceTable::Customers, SourceTable::OrderItems]));
        let c = config(&[URL, ("HISTORY_TABLES", "ALL")]).unwrap();
        assert_eq!(c.warehouse.history.len(), 4);
        assert!(config(&[URL, ("HISTORY_TABLES", "none")]).unwrap().warehouse.history.is_empty());
        for bad in ["customer", "customers,notes", "public.customers"] {
            let e = config(&[URL, ("HISTORY_TABLES", bad)]).unwrap_err();
            assert_eq!((e.code(), e.variable()), ("config.bad_value", "HISTORY_TABLES"), "{bad}");
        }
    }

    #[test]
    fn redaction_rules_are_checked_and_a_hash_needs_its_key_secret() {
        let c = config(&[URL]).unwrap();
        assert!(
            c.redaction.rules.is_empty(),
            "nothing redacted unless configured (the template hashes customers.email)"
        );
        let c = config(&[URL, ("REDACT_COLUMNS", "customers.city:null")]).unwrap();
        assert!(!c.redaction.rules.is_empty());
        let e = config(&[URL, ("REDACT_COLUMNS", "customers.email:hash")]).unwrap_err();
        assert_eq!((e.code(), e.variable()), ("config.missing", "REDACTION_KEY_SECRET_ARN"));
        let c = config(&[URL, ("REDACT_COLUMNS", "customers.email:hash"), ("REDACTION_KEY_SECRET_ARN", "arn:k")]);
        assert_eq!(c.unwrap().redaction.key_secret_arn.as_deref(), Some("arn:k"));
        for bad in ["customers.email", "customers.id:hash", "customers.email:drop"] {
            let e = config(&[URL, ("REDACT_COLUMNS", bad)]).unwrap_err();
            assert_eq!((e.code(), e.variable()), ("config.redaction", "REDACT_COLUMNS"), "{bad}");
        }
        // A generic mirror's key columns identify its rows.
        let e = config(&[URL, ("CAPTURED_TABLES", "public.people"), ("REDACT_COLUMNS", "people.id:null")]).unwrap_err();
        assert_eq!(e.code(), "config.redaction");
    }

    #[test]
    fn a_bad_value_is_an_error_naming_the_variable() {
        for (name, value) in [
            ("SCHEMA_EVOLUTION", "maybe"),
            ("DEADLINE_MARGIN_MS", "abc"),
            ("DEADLINE_MARGIN_MS", "-5"),
            ("DEADLINE_MARGIN_MS", "900001"),
            ("REQUEUE_ON_OUTAGE", "nope"),
            ("REJECT_UNKNOWN_TABLES", "y"),
            ("PLATFORM_FEEDS_SALES", "2"),
            ("CLICKHOUSE_ALLOW_PLAINTEXT", "enabled"),
            ("BACKOFF_BASE_SECONDS", "1.5"),
            ("BACKOFF_CAP_SECONDS", "99999999999999999999"),
            ("RETRY_MAX_AGE_SECONDS", "31536001"),
            ("LOCAL_TIMEOUT_SECONDS", "0"),
            ("CLICKHOUSE_SECRET_TTL_SECONDS", "5m"),
            ("CLICKHOUSE_INSERT_QUORUM", "majority"),
            ("CLICKHOUSE_CA_BUNDLE", "/nonexistent/ca.pem"),
        ] {
            let e = config(&[URL, (name, value)]).unwrap_err();
            assert_eq!((e.code(), e.variable(), e.class()), ("config.bad_value", name, ErrorClass::Systemic), "{name}");
            let text = e.to_string();
            assert!(text.starts_with(name) && text.contains(value), "{name}: {text}");
        }
    }

    #[test]
    fn a_bad_url_is_refused_without_echoing_it() {
        for bad in ["ch.example.com", "ftp://h", "https://", "https://user:hunter2@h"] {
            let e = config(&[("CLICKHOUSE_URL", bad)]).unwrap_err();
            assert_eq!((e.code(), e.variable()), ("config.bad_value", "CLICKHOUSE_URL"), "{bad}");
            assert!(!e.to_string().contains("hunter2"));
        }
    }

    #[test]
    fn an_unusable_table_mapping_is_a_config_error() {
        let e = config(&[URL, ("CAPTURED_TABLES", "public..orders")]).unwrap_err();
        assert_eq!(
            (e.code(), e.variable(), e.class()),
            ("config.captured_tables", "CAPTURED_TABLES", ErrorClass::Systemic)
        );
    }

    #[test]
    fn empty_values_read_as_unset() {
        let c = config(&[
            URL,
            ("CLICKHOUSE_SECRET_ARN", ""),
            ("CLICKHOUSE_CA_BUNDLE", " "),
            ("SCHEMA_EVOLUTION", ""),
            ("REQUEUE_ON_OUTAGE", ""),
            ("CAPTURED_TABLES", ""),
            ("DEAD_LETTER_QUEUE_URL", ""),
        ])
        .unwrap();
        assert!(matches!(c.clickhouse, ClickHouseSource::Env(ClickHouseSettings { ca_bundle: None, .. })));
        assert_eq!(c.warehouse.schema_evolution, SchemaEvolution::Add);
        assert!(c.handler.requeue);
        assert_eq!(c.handler.dead_letter_queue_url, None);
    }

    #[test]
    fn long_values_are_cut_in_errors() {
        let long = "x".repeat(500);
        let e = config(&[URL, ("SCHEMA_EVOLUTION", &long)]).unwrap_err();
        assert!(e.to_string().len() < 200, "{e}");
    }

    #[test]
    fn config_errors_are_systemic_for_the_handler() {
        let e = SystemicError::from(config(&[]).unwrap_err());
        assert_eq!((e.code, e.is_auth), ("config.missing", false));
        assert!(e.detail.contains("CLICKHOUSE_URL"));
    }
}
