//! ClickHouse I/O: schema, RowBinary inserts and lookups, with retries.
//!
//! Enters: encoded rows and key sets. Leaves: rows read back, or a classified [`SinkError`].
//! One [`Warehouse`] per cold start; it learns the server's [`Dialect`] and creates the schema on
//! first use, so a new user never runs DDL by hand.

pub mod dialect;
pub mod error;
mod http;
pub mod retry;
pub mod rowbinary;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use clickhouse::Client;
use serde::Deserialize;
use tokio::sync::OnceCell;

use crate::config::ClickHouseSettings;
use crate::tables::SourceTable;
use dialect::Dialect;
pub use error::SinkError;

/// Lookups may carry thousands of keys in `IN (...)`; the default 256 KiB query limit is not
/// enough for a truncation's re-derivation.
const MAX_QUERY_SIZE: &str = "67108864";

pub struct Warehouse {
    client: Client,
    database: String,
    dialect: OnceCell<Dialect>,
    schema_ready: OnceCell<()>,
    /// Statements sent (each attempt counts): lets tests check that the round trips of an
    /// invocation do not grow with its batch.
    statements: AtomicU64,
}

impl Warehouse {
    pub fn new(settings: &ClickHouseSettings) -> Self {
        let client = Client::with_http_client(http::client(settings))
            .with_url(&settings.url)
            .with_user(&settings.user)
            .with_password(&settings.password)
            // The crate's schema check uses settings unknown to old servers (NOTES §3); every
            // row layout here is fixed by our own queries instead.
            .with_validation(false)
            .with_compression(clickhouse::Compression::None);
        Self {
            client,
            database: settings.database.clone(),
            dialect: OnceCell::new(),
            schema_ready: OnceCell::new(),
            statements: AtomicU64::new(0),
        }
    }

    pub fn database(&self) -> &str {
        &self.database
    }

    /// How many statements this warehouse has sent so far.
    pub fn statements_sent(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    fn count_statement(&self) {
        self.statements.fetch_add(1, Ordering::Relaxed);
    }

    /// The server's dialect, asked once.
    pub async fn dialect(&self) -> Result<Dialect, SinkError> {
        self.dialect
            .get_or_try_init(|| async {
                let version = self.server_version().await?;
                Dialect::for_version(&version).ok_or(SinkError::UnsupportedServer(version))
            })
            .await
            .copied()
    }

    pub async fn server_version(&self) -> Result<String, SinkError> {
        self.count_statement();
        let version: String =
            self.client.query("SELECT version()").fetch_one().await.map_err(SinkError::from_client)?;
        Ok(version)
    }

    /// Creates the database, tables and views if missing (idempotent); once per process.
    pub async fn ensure_schema(&self) -> Result<(), SinkError> {
        self.schema_ready
            .get_or_try_init(|| async {
                let dialect = self.dialect().await?;
                for statement in dialect::schema_statements(dialect, &self.database) {
                    self.execute(&statement).await?;
                }
                Ok(())
            })
            .await
            .copied()
    }

    pub async fn execute(&self, sql: &str) -> Result<(), SinkError> {
        self.count_statement();
        self.client.query(sql).execute().await.map_err(SinkError::from_client)
    }

    /// One `INSERT ... FORMAT RowBinary` of pre-encoded rows.
    pub async fn insert_rowbinary(&self, table: &str, columns: &[&str], rows: Bytes) -> Result<(), SinkError> {
        self.count_statement();
        let sql = dialect::insert_statement(&self.database, table, columns);
        let mut insert = self
            .client
            .insert_formatted_with(sql)
            .with_timeouts(Some(Duration::from_secs(30)), Some(Duration::from_secs(60)));
        insert.send(rows).await.map_err(SinkError::from_client)?;
        insert.end().await.map_err(SinkError::from_client)
    }

    /// Runs a SELECT and decodes its RowBinary rows. `wait_end_of_query` makes the server buffer
    /// the result, so an exception mid-query arrives as an HTTP error rather than as text
    /// appended to a 200 response (NOTES §3).
    pub async fn fetch<T>(&self, sql: &str) -> Result<Vec<T>, SinkError>
    where
        T: clickhouse::RowOwned + clickhouse::RowRead,
    {
        self.count_statement();
        self.client
            .query(sql)
            .with_setting("wait_end_of_query", "1")
            .with_setting("max_query_size", MAX_QUERY_SIZE)
            .fetch_all::<T>()
            .await
            .map_err(SinkError::from_client)
    }

    /// Runs a SELECT and returns its result as TabSeparated text (reports, tests).
    pub async fn fetch_tsv(&self, sql: &str) -> Result<String, SinkError> {
        self.count_statement();
        let mut cursor = self
            .client
            .query(sql)
            .with_setting("wait_end_of_query", "1")
            .fetch_bytes("TabSeparated")
            .map_err(SinkError::from_client)?;
        let mut out = Vec::new();
        while let Some(chunk) = cursor.next().await.map_err(SinkError::from_client)? {
            out.extend_from_slice(&chunk);
        }
        String::from_utf8(out).map_err(|_| SinkError::Protocol("result is not UTF-8".into()))
    }

    /// The latest truncation position per source table (absent: never truncated).
    pub async fn truncations(&self) -> Result<HashMap<SourceTable, u64>, SinkError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Truncation {
            table_name: String,
            version: u64,
        }
        let rows: Vec<Truncation> = self.fetch(&dialect::truncations_query(&self.database)).await?;
        Ok(rows
            .into_iter()
            .filter_map(|t| SourceTable::from_name(&t.table_name).map(|table| (table, t.version)))
            .collect())
    }

    /// Ids from a single-column `SELECT` of Int64.
    pub async fn fetch_ids(&self, sql: &str) -> Result<Vec<i64>, SinkError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Id {
            id: i64,
        }
        Ok(self.fetch::<Id>(sql).await?.into_iter().map(|r| r.id).collect())
    }
}
