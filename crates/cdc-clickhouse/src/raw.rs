//! Statements written by the caller, for tests and benchmarks only (cargo feature `raw-sql`):
//! they set up odd schemas, read what a test asserts, and time raw inserts. The function and the
//! tools speak to ClickHouse only through [`Warehouse`]'s domain methods.

use std::future::Future;

use bytes::Bytes;

use crate::{SinkError, Warehouse};

/// Raw SQL on a [`Warehouse`] (see the module's documentation).
pub trait RawSql {
    /// Runs a statement that returns nothing.
    fn execute(&self, sql: &str) -> impl Future<Output = Result<(), SinkError>> + Send;
    /// One `INSERT ... FORMAT RowBinary` of pre-encoded rows.
    fn insert_rowbinary(
        &self,
        table: &str,
        columns: &[&str],
        rows: Bytes,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;
    /// Runs a SELECT and decodes its rows.
    fn fetch<T>(&self, sql: &str) -> impl Future<Output = Result<Vec<T>, SinkError>> + Send
    where
        T: clickhouse::RowOwned + clickhouse::RowRead + Send;
    /// Runs a SELECT and returns its result in `format`, as bytes.
    fn fetch_raw(&self, sql: &str, format: &str) -> impl Future<Output = Result<Vec<u8>, SinkError>> + Send;
    /// Runs a SELECT and returns its result as TabSeparated text.
    fn fetch_tsv(&self, sql: &str) -> impl Future<Output = Result<String, SinkError>> + Send;
}

impl RawSql for Warehouse {
    fn execute(&self, sql: &str) -> impl Future<Output = Result<(), SinkError>> + Send {
        self.sql_execute(sql)
    }

    fn insert_rowbinary(
        &self,
        table: &str,
        columns: &[&str],
        rows: Bytes,
    ) -> impl Future<Output = Result<(), SinkError>> + Send {
        self.sql_insert(table, columns, rows)
    }

    fn fetch<T>(&self, sql: &str) -> impl Future<Output = Result<Vec<T>, SinkError>> + Send
    where
        T: clickhouse::RowOwned + clickhouse::RowRead + Send,
    {
        self.sql_fetch(sql)
    }

    fn fetch_raw(&self, sql: &str, format: &str) -> impl Future<Output = Result<Vec<u8>, SinkError>> + Send {
        self.sql_fetch_raw(sql, format)
    }

    async fn fetch_tsv(&self, sql: &str) -> Result<String, SinkError> {
        let bytes = self.sql_fetch_raw(sql, "TabSeparated").await?;
        String::from_utf8(bytes).map_err(|_| SinkError::Protocol("result is not UTF-8".into()))
    }
}
