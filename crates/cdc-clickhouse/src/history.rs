//! Reading the histories (`HISTORY_TABLES`): one key's changes with their validity, a table as
//! it was at a time, and `sales_fact` as it was at a time, derived by the same
//! [`cdc_core::fact::Snapshot::derive`] as the live facts from the four tables as of then. The
//! argument for why these equal the source at that time: docs/history.md.
//!
//! Enters: a table, a key or a time (µs since the epoch). Leaves: rows, page by page (every read
//! is bounded by the page, never by the warehouse).

use std::collections::HashMap;
use std::time::Instant;

use cdc_core::fact::FactRow;
use cdc_core::tables::SourceTable;

use crate::{SinkError, Warehouse, queries};

impl Warehouse {
    /// Every change of one key, in source order, as rows of the table's SCD2 view (TabSeparated
    /// with names).
    pub async fn key_history(&self, table: SourceTable, key: i64, deadline: Instant) -> Result<String, SinkError> {
        let dialect = self.dialect().await?;
        let sql = queries::key_history_query(dialect, &self.database, table, key);
        self.retry.run(deadline, || self.fetch_text(&sql)).await
    }

    /// The next `limit` keys above `after` that `table`'s history holds by `at_us`.
    pub async fn history_keys(
        &self,
        table: SourceTable,
        at_us: i64,
        after: Option<i64>,
        limit: usize,
        deadline: Instant,
    ) -> Result<Vec<i64>, SinkError> {
        #[derive(clickhouse::Row, serde::Deserialize)]
        struct Key {
            key: i64,
        }
        let sql = queries::history_keys_query(&self.database, table, at_us, after, limit);
        let keys: Vec<Key> = self.retry.run(deadline, || self.sql_fetch(&sql)).await?;
        Ok(keys.into_iter().map(|k| k.key).collect())
    }

    /// The rows of `keys` as `table` held them at `at_us` (live ones only), TabSeparated with
    /// names.
    pub async fn table_as_of(
        &self,
        table: SourceTable,
        at_us: i64,
        keys: &[i64],
        deadline: Instant,
    ) -> Result<String, SinkError> {
        let sql = queries::table_as_of_query(self.dialect().await?, &self.database, table, at_us, keys);
        self.retry.run(deadline, || self.fetch_text(&sql)).await
    }

    /// The `sales_fact` rows of the given order items as they were at `at_us`: what the
    /// derivation reads, read from the histories as of then, then derived. Only live facts.
    pub async fn facts_as_of(
        &self,
        item_ids: &[i64],
        at_us: i64,
        deadline: Instant,
    ) -> Result<Vec<FactRow>, SinkError> {
        let snapshot = self.retry.run(deadline, || self.snapshot_at(item_ids, Some(at_us))).await?;
        Ok(item_ids.iter().map(|id| snapshot.derive(*id)).filter(|fact| !fact.is_deleted).collect())
    }

    /// The latest truncation of each table that keeps history, among those committed by `at_us`.
    pub(crate) async fn truncations_as_of(&self, at_us: i64) -> Result<HashMap<SourceTable, u64>, SinkError> {
        self.truncations_from(&queries::truncations_as_of_query(&self.database, at_us)).await
    }

    async fn fetch_text(&self, sql: &str) -> Result<String, SinkError> {
        let bytes = self.sql_fetch_raw(sql, "TabSeparatedWithNames").await?;
        String::from_utf8(bytes).map_err(|_| SinkError::Protocol("result is not UTF-8".into()))
    }
}
