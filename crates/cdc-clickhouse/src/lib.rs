//! ClickHouse I/O: schema, RowBinary inserts and lookups, with retries. Every statement's text is
//! written in two files: [`schema`] (DDL) and [`queries`] (everything else).
//!
//! Enters: encoded rows and key sets. Leaves: rows read back, or a classified [`SinkError`].
//! One [`Warehouse`] per cold start; it learns the server's [`Dialect`] and creates the schema on
//! first use, so a new user never runs DDL by hand.

pub mod config;
pub mod dialect;
mod error;
mod generic;
pub mod generic_values;
mod history;
mod http;
pub mod inspect;
pub mod queries;
#[cfg(feature = "raw-sql")]
mod raw;
mod retry;
pub mod rowbinary;
pub mod schema;
mod state_rows;
mod writes;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clickhouse::Client;
use serde::Deserialize;
use tokio::sync::OnceCell;

use crate::config::ClickHouseSettings;
use cdc_core::change::{Version, VersionScale};
use cdc_core::error::Classify;
use cdc_core::fact::{CustomerState, FactRow, ItemState, OrderState, ProductState, Snapshot};
use cdc_core::mirror::NULL_FOREIGN_KEY;
use cdc_core::rederive::Scope;
use cdc_core::tables::SourceTable;
use cdc_core::watermark::Watermark;
use dialect::Dialect;
pub use error::SinkError;
#[cfg(feature = "raw-sql")]
pub use raw::RawSql;
use retry::RetryPolicy;
use schema::FkIndex;
use state_rows::StateRow;
pub use writes::{BASE_MISSING, Failure, Failures, MirrorWrite};

/// Lookups carry at most one page of keys (`pipeline::PAGE`) in `IN (...)`, up to ~200 KiB of
/// text; the limit leaves room above the server's 256 KiB default.
const MAX_QUERY_SIZE: &str = "4194304";

pub struct Warehouse {
    client: Client,
    /// `client` with `insert_deduplicate = 0`, for inserts while deduplication is off
    /// ([`Warehouse::set_insert_deduplication`]).
    undeduplicated: Client,
    /// Whether inserts may be deduplicated by the server (replicated and Cloud tables drop a
    /// block they saw before; the default, which makes retried inserts idempotent).
    deduplicate_inserts: std::sync::atomic::AtomicBool,
    database: String,
    /// `CLICKHOUSE_CLUSTER`: create the schema `ON CLUSTER` with replicated engines.
    cluster: Option<String>,
    /// `CLICKHOUSE_INSERT_QUORUM`, as sent with every statement (checked against what the server
    /// makes of it before the first statement of the schema, [`Warehouse::check_insert_quorum`]).
    insert_quorum: Option<String>,
    dialect: OnceCell<Dialect>,
    schema_ready: OnceCell<()>,
    /// Columns of the generic mirrors as last read from ClickHouse, by table (`None`: to be
    /// read again, see `forget_generic`).
    generic_columns: std::sync::Mutex<HashMap<String, Option<Vec<cdc_core::generic::Column>>>>,
    /// Statements sent (each attempt counts): lets tests check that the round trips of an
    /// invocation do not grow with its batch.
    statements: AtomicU64,
    /// `SCHEMA_EVOLUTION`: whether a column a change carries may be added to its mirror.
    schema_evolution: SchemaEvolution,
    /// How the methods that take a deadline retry a transient failure.
    retry: RetryPolicy,
    /// `HISTORY_TABLES`: the sales mirrors whose every change is also kept in a history table.
    history: std::collections::BTreeSet<SourceTable>,
}

/// `SCHEMA_EVOLUTION`: what a mirror does with a source column it has no column for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SchemaEvolution {
    /// The column is added on its first value (generic mirrors, the sales mirrors' extra
    /// columns), up to [`cdc_core::identifier::MAX_COLUMNS`] per table.
    #[default]
    Add,
    /// No column is ever added to an existing table: a change that needs one is poison
    /// (`schema.evolution_off`). A generic mirror is still created from its first changes.
    Off,
}

impl SchemaEvolution {
    /// `add` or `off` (any case); anything else is refused, never guessed.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "add" => Some(SchemaEvolution::Add),
            "off" => Some(SchemaEvolution::Off),
            _ => None,
        }
    }
}

/// What a [`Warehouse`] takes besides the connection settings (`CLICKHOUSE_INSERT_QUORUM`,
/// `CLICKHOUSE_CLUSTER`, `SCHEMA_EVOLUTION`), parsed by the caller's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WarehouseOptions {
    /// `insert_quorum` for every insert: with the number of replicas of the shard, replicated
    /// tables acknowledge an insert only once every replica has it, so that lookups see it on
    /// any replica (docs/sales-fact.md, "Replicas").
    pub insert_quorum: Option<String>,
    /// Create the schema `ON CLUSTER` this cluster, with replicated engines.
    pub cluster: Option<String>,
    pub schema_evolution: SchemaEvolution,
    /// The longest the server may spend on one statement (`max_execution_time`); `None`: the
    /// retry policy's attempt timeout. A statement the client gave up on (its attempt timed out,
    /// the invocation ended) would otherwise keep running on the server, holding its resources.
    pub statement_timeout: Option<Duration>,
    /// The sales mirrors that keep every change in `<table>_history` (docs/history.md).
    pub history: std::collections::BTreeSet<SourceTable>,
}

impl Warehouse {
    /// A warehouse with the default options: no insert quorum, no cluster, evolution `add`.
    pub fn new(settings: &ClickHouseSettings) -> Self {
        Self::with_options(settings, &WarehouseOptions::default())
    }

    pub fn with_options(settings: &ClickHouseSettings, options: &WarehouseOptions) -> Self {
        let client = Client::with_http_client(http::client(settings))
            .with_url(&settings.url)
            .with_user(&settings.user)
            .with_password(&settings.password)
            // The crate's schema check uses settings unknown to old servers (docs/platform-facts.md §3); every
            // row layout here is fixed by our own queries instead.
            .with_validation(false)
            .with_compression(clickhouse::Compression::None);
        let retry = RetryPolicy::default();
        let statement_timeout = options.statement_timeout.unwrap_or(retry.attempt_timeout);
        let client = client.with_setting("max_execution_time", statement_timeout.as_secs().max(1).to_string());
        // A quorum the server cannot reach within the statement's bound fails there and then
        // (code 319, transient: retried, and the replicated table drops the retry's block if the
        // first one landed after all), instead of holding the insert for the server's default
        // of 600 s after the client has given up.
        let client = match &options.insert_quorum {
            Some(quorum) => client
                .with_setting("insert_quorum", quorum.clone())
                .with_setting("insert_quorum_timeout", statement_timeout.as_millis().max(1).to_string()),
            None => client,
        };
        // `insert_deduplicate` is known to every supported server (18.16 too); current servers
        // also get a fresh `insert_deduplication_token` per insert (`sql_insert`).
        let undeduplicated = client.clone().with_setting("insert_deduplicate", "0");
        Self {
            client,
            undeduplicated,
            deduplicate_inserts: std::sync::atomic::AtomicBool::new(true),
            schema_evolution: options.schema_evolution,
            cluster: options.cluster.clone(),
            insert_quorum: options.insert_quorum.clone(),
            database: settings.database.clone(),
            dialect: OnceCell::new(),
            schema_ready: OnceCell::new(),
            generic_columns: std::sync::Mutex::default(),
            statements: AtomicU64::new(0),
            retry,
            history: options.history.clone(),
        }
    }

    /// Overrides `SCHEMA_EVOLUTION` (tests, tools).
    pub fn with_schema_evolution(mut self, evolution: SchemaEvolution) -> Self {
        self.schema_evolution = evolution;
        self
    }

    /// Turns the server's insert deduplication on or off for this warehouse's inserts from now
    /// on. `repair` turns it off: after it deletes rows or facts, it inserts what may be the
    /// very blocks inserted before, which a replicated or Cloud table would otherwise drop as
    /// duplicates while the insert reports success. Without deduplication a retried insert may
    /// land twice: harmless for the `ReplacingMergeTree` tables (same key, same version).
    pub fn set_insert_deduplication(&self, on: bool) {
        self.deduplicate_inserts.store(on, Ordering::Relaxed);
    }

    /// Whether changes of `table` are also written to its history table.
    pub fn keeps_history(&self, table: SourceTable) -> bool {
        self.history.contains(&table)
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
            self.client.query(queries::SERVER_VERSION).fetch_one().await.map_err(SinkError::from_client)?;
        Ok(version)
    }

    /// The schema made ready ([`Warehouse::ensure_schema`]) and the server's dialect, retried
    /// while transient until `deadline`.
    pub async fn prepare(&self, deadline: Instant) -> Result<Dialect, SinkError> {
        self.retry
            .run(deadline, || async {
                self.ensure_schema().await?;
                self.dialect().await
            })
            .await
    }

    /// Creates the database, tables and views if missing (idempotent), and gives the tables read
    /// by key that an earlier release created the current block sizes; once per process.
    pub async fn ensure_schema(&self) -> Result<(), SinkError> {
        self.schema_ready
            .get_or_try_init(|| async {
                let dialect = self.dialect().await?;
                self.check_insert_quorum().await?;
                let cluster = self.cluster.as_deref();
                let statements = schema::schema_statements(dialect, &self.database, cluster)
                    .into_iter()
                    .chain(schema::history_statements(dialect, &self.database, cluster, &self.history));
                for statement in statements {
                    self.sql_execute(&statement).await?;
                }
                self.add_refill_columns().await?;
                if dialect == Dialect::Modern {
                    self.upgrade_block_sizes().await;
                }
                Ok(())
            })
            .await
            .copied()
    }

    /// Gives the sales mirrors an earlier release created the tie-break of re-completed rows
    /// ([`schema::REFILL_COLUMN`]), which every lookup reads.
    async fn add_refill_columns(&self) -> Result<(), SinkError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Described {
            name: String,
            #[allow(dead_code)]
            r#type: String,
        }
        for table in SourceTable::ALL {
            let columns: Vec<Described> = self.sql_fetch(&queries::columns_query(&self.database, table.name())).await?;
            if !columns.iter().any(|c| c.name == schema::REFILL_COLUMN) {
                self.sql_execute(&schema::add_refill_column(&self.database, self.cluster.as_deref(), table)).await?;
            }
        }
        Ok(())
    }

    /// Refuses an insert quorum the server does not take as given: a server before 22.8 reads
    /// `insert_quorum = 'auto'` as 0 (18.16 does, without an error), which would turn the quorum
    /// off while the operator believes it on, and lookups on another replica would then miss
    /// acknowledged rows (docs/sales-fact.md, "Replicas").
    async fn check_insert_quorum(&self) -> Result<(), SinkError> {
        let Some(configured) = &self.insert_quorum else { return Ok(()) };
        #[derive(clickhouse::Row, Deserialize)]
        struct Value {
            value: String,
        }
        let rows = self.sql_fetch::<Value>(queries::INSERT_QUORUM_SETTING).await?;
        let effective = rows.into_iter().next().map(|v| v.value).unwrap_or_default();
        quorum_taken_as_given(configured, &effective)
    }

    /// Gives the tables read by key that an earlier release created the current compressed
    /// block sizes (current servers only). Best effort: it only makes lookups faster, so a
    /// failure (e.g. a user without the ALTER privilege) is logged and the next cold start
    /// tries again.
    async fn upgrade_block_sizes(&self) {
        #[derive(clickhouse::Row, Deserialize)]
        struct Name {
            name: String,
        }
        let tables = match self.sql_fetch::<Name>(&queries::tables_without_block_sizes_query(&self.database)).await {
            Ok(tables) => tables,
            Err(e) => {
                tracing::warn!(code = e.code(), "could not list tables to give small compressed blocks");
                return;
            }
        };
        for Name { name } in tables {
            let statement = schema::lookup_block_sizes_statement(&self.database, self.cluster.as_deref(), &name);
            if let Err(e) = self.sql_execute(&statement).await {
                tracing::warn!(
                    table = %name,
                    code = e.code(),
                    "could not give a table small compressed blocks; its key lookups stay slower (README, \
                     \"Older ClickHouse\")"
                );
            }
        }
    }

    pub(crate) async fn sql_execute(&self, sql: &str) -> Result<(), SinkError> {
        self.count_statement();
        self.client.query(sql).execute().await.map_err(SinkError::from_client)
    }

    /// One `INSERT ... FORMAT RowBinary` of pre-encoded rows.
    pub(crate) async fn sql_insert(&self, table: &str, columns: &[&str], rows: Bytes) -> Result<(), SinkError> {
        self.count_statement();
        let sql = queries::insert_statement(&self.database, table, columns);
        let client = if self.deduplicate_inserts.load(Ordering::Relaxed) {
            self.client.clone()
        } else if self.dialect().await? == Dialect::Modern {
            // A current engine deduplicates a non-replicated table with a deduplication window
            // even under `insert_deduplicate = 0` (26.9 does): a token no insert had before
            // makes the block new there too. 18.16 knows no such setting and would refuse it.
            self.undeduplicated.clone().with_setting("insert_deduplication_token", unique_token())
        } else {
            self.undeduplicated.clone()
        };
        let mut insert = client
            .insert_formatted_with(sql)
            .with_timeouts(Some(Duration::from_secs(30)), Some(Duration::from_secs(60)));
        insert.send(rows).await.map_err(SinkError::from_client)?;
        insert.end().await.map_err(SinkError::from_client)
    }

    /// Runs a SELECT and decodes its RowBinary rows. `wait_end_of_query` makes the server buffer
    /// the result, so an exception mid-query arrives as an HTTP error rather than as text
    /// appended to a 200 response (docs/platform-facts.md §3).
    pub(crate) async fn sql_fetch<T>(&self, sql: &str) -> Result<Vec<T>, SinkError>
    where
        T: clickhouse::RowOwned + clickhouse::RowRead,
    {
        self.count_statement();
        self.client
            .query(sql)
            .with_setting("wait_end_of_query", "1")
            .with_setting("max_query_size", MAX_QUERY_SIZE)
            // Every lookup must see every insert that completed before it, also on another
            // replica (ClickHouse Cloud, Replicated* tables): docs/sales-fact.md, "Replicas".
            .with_setting("select_sequential_consistency", "1")
            .fetch_all::<T>()
            .await
            .map_err(SinkError::from_client)
    }

    /// Runs a SELECT and returns its result in `format`, as bytes.
    pub(crate) async fn sql_fetch_raw(&self, sql: &str, format: &str) -> Result<Vec<u8>, SinkError> {
        self.count_statement();
        let mut cursor = self
            .client
            .query(sql)
            .with_setting("wait_end_of_query", "1")
            .with_setting("max_query_size", MAX_QUERY_SIZE)
            .with_setting("select_sequential_consistency", "1")
            .fetch_bytes(format)
            .map_err(SinkError::from_client)?;
        let mut out = Vec::new();
        while let Some(chunk) = cursor.next().await.map_err(SinkError::from_client)? {
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// The latest truncation position per source table (absent: never truncated).
    pub(crate) async fn truncations(&self) -> Result<HashMap<SourceTable, u64>, SinkError> {
        self.truncations_from(&queries::truncations_query(&self.database)).await
    }

    async fn truncations_from(&self, sql: &str) -> Result<HashMap<SourceTable, u64>, SinkError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Truncation {
            table_name: String,
            version: u64,
        }
        let rows: Vec<Truncation> = self.sql_fetch(sql).await?;
        Ok(rows
            .into_iter()
            .filter_map(|t| SourceTable::from_name(&t.table_name).map(|table| (table, t.version)))
            .collect())
    }

    /// The version scale each mirror is pinned to, by mirror name (docs/versions.md).
    pub async fn version_scales(&self, deadline: Instant) -> Result<HashMap<String, VersionScale>, SinkError> {
        self.retry.run(deadline, || self.version_scales_once()).await
    }

    async fn version_scales_once(&self) -> Result<HashMap<String, VersionScale>, SinkError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Pinned {
            table_name: String,
            scale: String,
        }
        let rows: Vec<Pinned> = self.sql_fetch(&queries::version_scales_query(&self.database)).await?;
        Ok(rows.into_iter().filter_map(|p| Some((p.table_name, VersionScale::parse(&p.scale)?))).collect())
    }

    /// Pins mirrors that have no scale yet to the given ones (the earliest pin of a mirror wins,
    /// should two invocations pin it at once).
    pub async fn pin_version_scales(&self, pins: &[(&str, VersionScale)], deadline: Instant) -> Result<(), SinkError> {
        let now_us = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros());
        let mut rows = Vec::new();
        for (table, scale) in pins {
            rowbinary::put_string(&mut rows, table);
            rowbinary::put_string(&mut rows, scale.as_str());
            rowbinary::put_u64(&mut rows, u64::try_from(now_us).unwrap_or(u64::MAX));
        }
        let rows = Bytes::from(rows);
        let columns = ["table_name", "scale", "fixed_at"];
        self.retry.run(deadline, || self.sql_insert(schema::VERSION_SCALES_TABLE, &columns, rows.clone())).await
    }

    /// Each mirror's watermark, by mirror name (docs/versions.md, "Positions that restart").
    pub async fn watermarks(&self, deadline: Instant) -> Result<HashMap<String, Watermark>, SinkError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Mark {
            table_name: String,
            version: u64,
            commit_us: i64,
        }
        let sql = queries::watermarks_query(&self.database);
        let rows: Vec<Mark> = self.retry.run(deadline, || self.sql_fetch(&sql)).await?;
        Ok(rows
            .into_iter()
            .map(|m| (m.table_name, Watermark { version: Version(m.version), commit_time_us: m.commit_us }))
            .collect())
    }

    /// Records mirrors' watermarks (the table keeps each mirror's highest).
    pub async fn write_watermarks(&self, marks: &[(&str, Watermark)], deadline: Instant) -> Result<(), SinkError> {
        if marks.is_empty() {
            return Ok(());
        }
        let mut rows = Vec::new();
        for (table, mark) in marks {
            rowbinary::put_string(&mut rows, table);
            rowbinary::put_u64(&mut rows, mark.version.0);
            rowbinary::put_i64(&mut rows, mark.commit_time_us);
        }
        let rows = Bytes::from(rows);
        let columns = ["table_name", "_version", "commit_us"];
        self.retry.run(deadline, || self.sql_insert(schema::WATERMARKS_TABLE, &columns, rows.clone())).await
    }

    /// The newest row (deletions included) of each listed key of a mirror table (see
    /// [`queries::latest_rows_query`]), or with `at_us` of its history as of then; `T` is the
    /// table's state row (`fact::ItemState`...). Retried while transient until `deadline`.
    pub(crate) async fn rows<T: StateRow>(
        &self,
        table: SourceTable,
        keys: &[i64],
        at_us: Option<i64>,
        deadline: Instant,
    ) -> Result<Vec<T>, SinkError> {
        self.retry.run(deadline, || self.rows_once(table, keys, at_us)).await
    }

    /// The newest rows of `keys` (see [`Warehouse::rows`]), or with `at_us` the newest of
    /// those committed by then, read from the table's history.
    async fn rows_once<T: StateRow>(
        &self,
        table: SourceTable,
        keys: &[i64],
        at_us: Option<i64>,
    ) -> Result<Vec<T>, SinkError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let dialect = self.dialect().await?;
        let sql = match at_us {
            None => queries::latest_rows_query(dialect, &self.database, table, keys),
            Some(at) => queries::rows_as_of_query(dialect, &self.database, table, keys, at),
        };
        let rows = self.sql_fetch::<T::Wire>(&sql).await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// What the derivation of the given order items reads: their newest rows (with the
    /// truncation positions), then those of their orders (then the orders' customers) and of
    /// their products, concurrently. Five lookups by primary key, whatever the warehouse's size,
    /// in three sequential round trips.
    pub async fn snapshot(&self, item_ids: &[i64], deadline: Instant) -> Result<Snapshot, SinkError> {
        self.retry.run(deadline, || self.snapshot_once(item_ids)).await
    }

    async fn snapshot_once(&self, item_ids: &[i64]) -> Result<Snapshot, SinkError> {
        self.snapshot_at(item_ids, None).await
    }

    /// [`Warehouse::snapshot`], or with `at_us` what it would have read at that time, from the
    /// four tables' histories (docs/history.md, "As of a time").
    pub(crate) async fn snapshot_at(&self, item_ids: &[i64], at_us: Option<i64>) -> Result<Snapshot, SinkError> {
        if item_ids.is_empty() {
            return Ok(Snapshot::default());
        }
        let truncations = async {
            match at_us {
                None => self.truncations().await,
                Some(at) => self.truncations_as_of(at).await,
            }
        };
        let (truncations, items) =
            tokio::join!(truncations, self.rows_once::<ItemState>(SourceTable::OrderItems, item_ids, at_us));
        let mut snapshot = Snapshot { truncations: truncations?, ..Snapshot::default() };
        snapshot.items = items?.into_iter().map(|r| (r.id, r)).collect();

        let order_ids = distinct(snapshot.items.values().map(|i| i.order_id));
        let product_ids = distinct(snapshot.items.values().map(|i| i.product_id));
        let orders_then_customers = async {
            let orders = self.rows_once::<OrderState>(SourceTable::Orders, &order_ids, at_us).await?;
            let customer_ids = distinct(orders.iter().map(|o| o.customer_id));
            let customers = self.rows_once::<CustomerState>(SourceTable::Customers, &customer_ids, at_us).await?;
            Ok::<_, SinkError>((orders, customers))
        };
        let (orders_and_customers, products) = tokio::join!(
            orders_then_customers,
            self.rows_once::<ProductState>(SourceTable::Products, &product_ids, at_us)
        );
        let (orders, customers) = orders_and_customers?;
        snapshot.orders = orders.into_iter().map(|r| (r.id, r)).collect();
        snapshot.customers = customers.into_iter().map(|r| (r.id, r)).collect();
        snapshot.products = products?.into_iter().map(|r| (r.id, r)).collect();
        Ok(snapshot)
    }

    /// `(parent, child)` pairs of a foreign-key index; see [`queries::children_query`].
    pub async fn children(
        &self,
        index: FkIndex,
        parents: &[i64],
        per_parent: usize,
        total: usize,
        deadline: Instant,
    ) -> Result<Vec<(i64, i64)>, SinkError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Pair {
            parent: i64,
            child: i64,
        }
        if parents.is_empty() {
            return Ok(Vec::new());
        }
        let sql = queries::children_query(&self.database, index, parents, per_parent, total);
        let pairs = self.retry.run(deadline, || self.sql_fetch::<Pair>(&sql)).await?;
        Ok(pairs.into_iter().map(|p| (p.parent, p.child)).collect())
    }

    /// The next page of a re-derivation; see [`queries::page_queries`].
    pub async fn page(
        &self,
        scope: Scope,
        after: Option<i64>,
        limit: usize,
        deadline: Instant,
    ) -> Result<Vec<i64>, SinkError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Id {
            id: i64,
        }
        let statements = queries::page_queries(&self.database, scope, after, limit);
        let answers = futures::future::try_join_all(statements.iter().map(|sql| async move {
            let ids = self.retry.run(deadline, || self.sql_fetch::<Id>(sql)).await?;
            Ok::<_, SinkError>(ids.into_iter().map(|r| r.id).collect::<Vec<i64>>())
        }))
        .await?;
        Ok(queries::merge_pages(answers, limit))
    }

    /// Removes a mirror table's rows with implausible versions ([`queries::IMPLAUSIBLE_VERSION`]),
    /// of one key or of every key, and waits (up to `wait`) until the server has applied it.
    pub async fn purge_implausible(
        &self,
        table: SourceTable,
        key: Option<i64>,
        wait: Duration,
    ) -> Result<(), SinkError> {
        let statement = queries::purge_implausible_statement(&self.database, table, key);
        self.mutate_and_wait(table.name(), &statement, wait).await
    }

    /// Removes the facts of a scope (before a repair derives them again), and waits (up to
    /// `wait`) until the server has applied it.
    pub async fn delete_facts(&self, scope: Scope, wait: Duration) -> Result<(), SinkError> {
        let statement = queries::delete_facts_statement(&self.database, scope);
        self.mutate_and_wait(schema::FACT_TABLE, &statement, wait).await
    }

    /// Runs an `ALTER TABLE ... DELETE` and waits (up to `wait`) until the server has applied
    /// it: mutations run in the background, and a repair must not re-derive before they end.
    async fn mutate_and_wait(&self, table: &str, statement: &str, wait: Duration) -> Result<(), SinkError> {
        self.sql_execute(statement).await?;
        let started = std::time::Instant::now();
        let sql = queries::pending_mutations_query(&self.database, table);
        loop {
            #[derive(clickhouse::Row, Deserialize)]
            struct Pending {
                count: u64,
            }
            let pending = self.sql_fetch::<Pending>(&sql).await?.first().map_or(0, |p| p.count);
            if pending == 0 {
                return Ok(());
            }
            if started.elapsed() > wait {
                return Err(SinkError::Protocol(format!("mutation of {table} still running after {wait:?}")));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Keys of a mirror table (or only `key`) live but last written below `version`; see
    /// [`queries::live_keys_below_query`].
    pub async fn live_keys_below(
        &self,
        table: SourceTable,
        key: Option<i64>,
        version: u64,
    ) -> Result<Vec<i64>, SinkError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Key {
            key: i64,
        }
        let sql = queries::live_keys_below_query(&self.database, table, key, version);
        Ok(self.sql_fetch::<Key>(&sql).await?.into_iter().map(|k| k.key).collect())
    }

    /// The greatest version any row of `key` has in a mirror table (0: none).
    pub async fn max_version(&self, table: SourceTable, key: i64) -> Result<u64, SinkError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Max {
            version: u64,
        }
        let sql = queries::max_version_query(&self.database, table, key);
        Ok(self.sql_fetch::<Max>(&sql).await?.first().map_or(0, |m| m.version))
    }

    /// One INSERT of derived facts.
    pub async fn insert_facts(&self, facts: &[FactRow], deadline: Instant) -> Result<(), SinkError> {
        if facts.is_empty() {
            return Ok(());
        }
        let dialect = self.dialect().await?;
        let mut body = Vec::with_capacity(facts.len() * 160);
        for fact in facts {
            rowbinary::encode_fact_row(&mut body, dialect, fact);
        }
        let body = Bytes::from(body);
        let columns = schema::fact_column_names();
        self.retry.run(deadline, || self.sql_insert(schema::FACT_TABLE, &columns, body.clone())).await
    }
}

/// An `insert_deduplication_token` no other insert used: the process's start time, its id and a
/// counter.
fn unique_token() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static STARTED: std::sync::OnceLock<u128> = std::sync::OnceLock::new();
    let started = STARTED
        .get_or_init(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    format!("cdc-repair-{started}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Whether the server's `insert_quorum` (`effective`) is the configured one.
fn quorum_taken_as_given(configured: &str, effective: &str) -> Result<(), SinkError> {
    if configured.eq_ignore_ascii_case(effective.trim()) {
        return Ok(());
    }
    Err(SinkError::UnsupportedSetting(format!(
        "ClickHouse reads CLICKHOUSE_INSERT_QUORUM={configured} as {effective}: set the number of replicas of the \
         shard instead (README, \"ClickHouse clusters and ClickHouse Cloud\")"
    )))
}

/// The distinct keys a lookup reads: a NULL foreign key (`NULL_FOREIGN_KEY`) names no row.
fn distinct(ids: impl Iterator<Item = i64>) -> Vec<i64> {
    ids.filter(|id| *id != NULL_FOREIGN_KEY).collect::<std::collections::BTreeSet<_>>().into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cdc_core::error::{Classify, ErrorClass};

    #[test]
    fn an_insert_quorum_the_server_reads_otherwise_is_refused() {
        assert!(quorum_taken_as_given("2", "2").is_ok());
        assert!(quorum_taken_as_given("auto", "auto").is_ok());
        // 18.16 reads `auto` as 0: no quorum at all.
        let e = quorum_taken_as_given("auto", "0").unwrap_err();
        assert_eq!((e.class(), e.code()), (ErrorClass::Systemic, "clickhouse.unsupported_setting"));
        assert!(e.to_string().contains("CLICKHOUSE_INSERT_QUORUM=auto as 0"), "{e}");
    }
}
