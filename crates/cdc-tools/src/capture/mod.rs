//! Capture: PostgreSQL logical decoding (wal2json, format 2) → Debezium events → SQS.
//!
//! Enters: the changes of a logical replication slot. Leaves: one SQS message per row change, the
//! body exactly what Debezium Server's SQS sink sends for the PostgreSQL connector with
//! `schemas.enable=true` ([`debezium`]).
//!
//! Delivery is at-least-once: each step PEEKS the slot (nothing is consumed), publishes every
//! event, and only after SQS accepted all of them ADVANCES the slot past the last peeked row. A crash
//! anywhere in between leaves the slot where it was, so a restart re-sends (never skips) changes;
//! the processor's source-position versions make the duplicates harmless.
//!
//! Snapshot: changes committed before the slot existed are not in the WAL stream. With
//! `--snapshot initial` (the default) a newly created slot is followed by a snapshot of the tables
//! (op `r`); `always` snapshots on every start (safe after a crash in the middle of a snapshot).
//! Snapshot events carry the slot's `restart_lsn` as `source.lsn`: no greater than the position of
//! any change the slot will still stream, so a streamed change always out-ranks a snapshot image of
//! the same row downstream, whatever the arrival order.

pub mod debezium;
pub(crate) mod publish;
pub mod wal2json;

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use debezium::{ColumnDef, ConvertError, Converter, Event, TableDef};
use publish::Publisher;
use wal2json::{OPTIONS, Record};

use crate::postgres::{self, DEFAULT_PG_URL};

const DEFAULT_TABLES: &str = "public.customers,public.products,public.orders,public.order_items";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum SnapshotMode {
    /// Never read the tables; stream only.
    Never,
    /// Snapshot the tables when this run created the slot.
    Initial,
    /// Snapshot the tables on every start.
    Always,
}

/// `cdc-tools capture`: stream PostgreSQL changes to SQS as Debezium events.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// PostgreSQL connection string (libpq `key=value` form or a `postgresql://` URL).
    #[arg(long, env = "CDC_PG_URL", default_value = DEFAULT_PG_URL, hide_env_values = true)]
    pub(crate) pg_url: String,
    /// Logical replication slot (created with the wal2json plugin when missing).
    #[arg(long, env = "CDC_SLOT", default_value = "cdc_processor")]
    pub(crate) slot: String,
    /// SQS queue URL; when absent the queue is looked up (or created) by --queue-name.
    #[arg(long, env = "CDC_QUEUE_URL")]
    pub(crate) queue_url: Option<String>,
    #[arg(long, env = "CDC_QUEUE_NAME", default_value = "cdc-events")]
    pub(crate) queue_name: String,
    /// Create the queue named by --queue-name when it does not exist.
    #[arg(long)]
    pub(crate) create_queue: bool,
    /// SQS endpoint (a local SQS server). Without it the SDK reads `AWS_ENDPOINT_URL_SQS`, then
    /// `AWS_ENDPOINT_URL`, itself.
    #[arg(long)]
    pub(crate) endpoint_url: Option<String>,
    /// Debezium `topic.prefix`, reported as `source.name`.
    #[arg(long, default_value = "cdc")]
    server_name: String,
    /// Tables to capture, `schema.table`, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = DEFAULT_TABLES)]
    pub(crate) tables: Vec<String>,
    /// Process what is in the slot now, then exit.
    #[arg(long)]
    once: bool,
    /// Stop after this many seconds (default: run until interrupted).
    #[arg(long, value_name = "SECONDS")]
    pub(crate) duration: Option<f64>,
    /// Most rows to peek per step (whole transactions are always returned).
    #[arg(long, default_value_t = 5000)]
    max_batch: u32,
    /// Idle sleep between empty peeks, milliseconds.
    #[arg(long, default_value_t = 50)]
    pub(crate) poll_ms: u64,
    /// SendMessageBatch calls in flight.
    #[arg(long, default_value_t = 8)]
    pub(crate) concurrency: usize,
    #[arg(long, value_enum, default_value = "initial")]
    pub(crate) snapshot: SnapshotMode,
}

/// Totals of one capture run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct CaptureStats {
    /// Rows read from the slot (including begin/commit records).
    pub(crate) rows: u64,
    /// Events published (row changes and snapshot reads).
    pub(crate) events: u64,
    snapshot_events: u64,
    steps: u64,
    body_bytes: u64,
    pub(crate) seconds: f64,
}

impl CaptureStats {
    fn events_per_second(&self) -> f64 {
        if self.seconds > 0.0 { self.events as f64 / self.seconds } else { 0.0 }
    }
}

/// A connected capture: one PostgreSQL session, one converter, one SQS publisher.
pub(crate) struct Capture {
    pg: tokio_postgres::Client,
    converter: Converter,
    publisher: Publisher,
    args: Args,
    peek_sql: String,
    created_slot: bool,
}

impl Capture {
    /// Connects, checks `wal_level` and the plugin, creates the slot if missing.
    pub(crate) async fn connect(args: Args) -> anyhow::Result<Self> {
        let pg = postgres::connect(&args.pg_url).await?;
        // wal2json prints timestamptz in the session's time zone and DateStyle, bytea in the
        // session's bytea_output (the converter reads the hex form) and intervals in its
        // IntervalStyle (the converter reads `postgres`).
        pg.batch_execute(
            "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET extra_float_digits = 3; SET bytea_output = 'hex'; \
             SET IntervalStyle = 'postgres'",
        )
        .await
        .context("setting session time zone")?;
        let wal_level: String = pg.query_one("SHOW wal_level", &[]).await?.get(0);
        if wal_level != "logical" {
            bail!(
                "PostgreSQL wal_level is '{wal_level}', logical decoding needs wal_level = logical \
                 (set it in postgresql.conf and restart the server; scripts/postgres.sh start does this)"
            );
        }
        let database: String = pg.query_one("SELECT current_database()", &[]).await?.get(0);
        let created_slot = ensure_slot(&pg, &args.slot, &database).await?;
        let publisher = Publisher::connect(
            args.endpoint_url.as_deref(),
            args.queue_url.as_deref(),
            &args.queue_name,
            args.create_queue,
            args.concurrency,
        )
        .await?;
        let options: String = OPTIONS.iter().map(|(k, v)| format!(", '{k}', '{v}'")).collect();
        let peek_sql = format!(
            "SELECT lsn::text, data FROM pg_logical_slot_peek_changes($1, NULL, $2{options}, 'add-tables', $3)"
        );
        let converter = Converter::new(args.server_name.clone(), database);
        let mut capture = Self { pg, converter, publisher, args, peek_sql, created_slot };
        for qualified in capture.args.tables.clone() {
            let (schema, table) = split_table(&qualified)?;
            capture.load_table(schema, table).await?;
        }
        Ok(capture)
    }

    /// True when `connect` created the slot (so changes before it are only in a snapshot).
    fn created_slot(&self) -> bool {
        self.created_slot
    }

    /// Reads the configured tables in one REPEATABLE READ snapshot and publishes them as op `r`.
    /// Returns the number of events published.
    pub(crate) async fn snapshot(&mut self) -> anyhow::Result<u64> {
        let restart: String = self
            .pg
            .query_one("SELECT restart_lsn::text FROM pg_replication_slots WHERE slot_name = $1", &[&self.args.slot])
            .await?
            .get(0);
        let lsn = cdc_core::wire::parse_pg_lsn(&restart).context("slot restart_lsn")?;
        let now = now_us();
        let mut events: Vec<Event> = Vec::new();
        self.pg.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?;
        let result: anyhow::Result<()> = async {
            for qualified in self.args.tables.clone() {
                let (schema, table) = split_table(&qualified)?;
                let columns = self.load_table(schema, table).await?;
                let select: Vec<String> = columns.iter().map(|c| format!("{}::text", quote_ident(&c.name))).collect();
                let sql = format!("SELECT {} FROM {}.{}", select.join(", "), quote_ident(schema), quote_ident(table));
                for row in self.pg.query(sql.as_str(), &[]).await? {
                    let values: Vec<Option<String>> = (0..columns.len()).map(|i| row.get(i)).collect();
                    events.push(self.converter.snapshot_event(schema, table, &values, lsn, "true", now)?);
                }
            }
            Ok(())
        }
        .await;
        self.pg.batch_execute("COMMIT").await?;
        result?;
        // Debezium marks the first and last records of a snapshot.
        let n = events.len();
        for (i, event) in events.iter_mut().enumerate() {
            let marker = if i + 1 == n {
                "last"
            } else if i == 0 {
                "first"
            } else {
                continue;
            };
            event.body = event.body.replacen("\"snapshot\":\"true\"", &format!("\"snapshot\":\"{marker}\""), 1);
        }
        self.publisher.publish(&events).await?;
        Ok(n as u64)
    }

    /// One peek → publish → advance cycle. Returns (rows read, events published, body bytes).
    async fn step(&mut self) -> anyhow::Result<(u64, u64, u64)> {
        let max = i32::try_from(self.args.max_batch).unwrap_or(i32::MAX);
        let tables = self.args.tables.join(",");
        let rows = self
            .pg
            .query(self.peek_sql.as_str(), &[&self.args.slot, &max, &tables])
            .await
            .map_err(|e| explain_pg_error(e, &self.args.slot))?;
        let Some(last) = rows.last() else { return Ok((0, 0, 0)) };
        let last_lsn: String = last.get(0);
        let now = now_us();
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            let data: &str = row.get(1);
            let record: Record<'_> = serde_json::from_str(data).context("parsing a wal2json record")?;
            let converted = match self.converter.convert(&record, now) {
                Err(ConvertError::UnknownTable { schema, table }) => {
                    self.load_table(&schema, &table).await?;
                    self.converter.convert(&record, now)
                }
                other => other,
            };
            // The slot stays where it is: a restart meets the same change again, so the error must
            // say where it is (names and position only, never the value).
            events.extend(converted.with_context(|| {
                format!(
                    "converting the change of {}.{} at {} (the slot was not advanced)",
                    record.schema.as_deref().unwrap_or("?"),
                    record.table.as_deref().unwrap_or("?"),
                    record.lsn.as_deref().unwrap_or("?")
                )
            })?);
        }
        let bytes = events.iter().map(|e| e.body.len() as u64).sum();
        self.publisher.publish(&events).await.context("publishing to SQS (the slot was not advanced)")?;
        self.pg
            .execute("SELECT pg_replication_slot_advance($1, $2::text::pg_lsn)", &[&self.args.slot, &last_lsn])
            .await
            .context("advancing the replication slot")?;
        Ok((rows.len() as u64, events.len() as u64, bytes))
    }

    /// Columns (from the catalog) of a table, remembered by the converter for deletes/truncates.
    async fn load_table(&mut self, schema: &str, table: &str) -> anyhow::Result<Vec<ColumnDef>> {
        let def = catalog_table(&self.pg, self.converter.server(), schema, table).await?;
        let columns = def.columns.clone();
        self.converter.add_table(def);
        Ok(columns)
    }
}

/// A table's columns (in order) and primary key, from PostgreSQL's catalog.
pub(crate) async fn catalog_table(
    pg: &tokio_postgres::Client,
    server: &str,
    schema: &str,
    table: &str,
) -> anyhow::Result<TableDef> {
    let rows = pg
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull, \
                    coalesce(a.attnum = ANY (i.indkey), false) \
             FROM pg_attribute a \
             JOIN pg_class c ON c.oid = a.attrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary \
             WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
            &[&schema, &table],
        )
        .await?;
    if rows.is_empty() {
        bail!(
            "table {schema}.{table} does not exist (apply crates/cdc-tools/sql/source_schema.sql: scripts/postgres.sh schema)"
        );
    }
    let columns: Vec<ColumnDef> = rows
        .iter()
        .map(|r| ColumnDef::new(r.get::<_, String>(0), r.get::<_, String>(1), !r.get::<_, bool>(2)))
        .collect();
    let key = rows.iter().filter(|r| r.get::<_, bool>(3)).map(|r| r.get::<_, String>(0)).collect();
    Ok(TableDef::new(server, schema, table, columns, key))
}

/// Runs the capture with the given options and returns its totals.
pub(crate) async fn capture(args: Args) -> anyhow::Result<CaptureStats> {
    let started = Instant::now();
    let deadline = args.duration.map(|s| started + Duration::from_secs_f64(s.max(0.0)));
    let mut capture = Capture::connect(args.clone()).await?;
    let mut stats = CaptureStats::default();
    let snapshot = match args.snapshot {
        SnapshotMode::Never => false,
        SnapshotMode::Initial => capture.created_slot(),
        SnapshotMode::Always => true,
    };
    if snapshot {
        stats.snapshot_events = capture.snapshot().await?;
        stats.events += stats.snapshot_events;
    }
    let poll = Duration::from_millis(args.poll_ms);
    // SIGINT / SIGTERM end the run between steps (a step is never cut in half, though a kill -9
    // at any point is also safe: the slot is only advanced after a complete publish).
    let stop = std::sync::Arc::new(tokio::sync::Notify::new());
    let stopping = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let (stop, stopping) = (stop.clone(), stopping.clone());
        tokio::spawn(async move {
            shutdown_signal().await;
            stopping.store(true, std::sync::atomic::Ordering::SeqCst);
            stop.notify_one();
        });
    }
    loop {
        let (rows, events, bytes) = capture.step().await?;
        stats.rows += rows;
        stats.events += events;
        stats.body_bytes += bytes;
        if rows > 0 {
            stats.steps += 1;
        }
        if args.once && rows == 0 {
            break;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) || stopping.load(std::sync::atomic::Ordering::SeqCst) {
            break;
        }
        if rows == 0 {
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = stop.notified() => break,
            }
        }
    }
    stats.seconds = started.elapsed().as_secs_f64();
    Ok(stats)
}

/// `cdc-tools capture`: runs, then prints one summary line.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let stats = capture(args).await?;
    println!(
        "capture: {} events ({} snapshot) from {} slot rows in {:.1} s ({:.0} events/s, {} body bytes)",
        stats.events,
        stats.snapshot_events,
        stats.rows,
        stats.seconds,
        stats.events_per_second(),
        stats.body_bytes
    );
    Ok(())
}

/// Resolves on SIGINT or SIGTERM (SIGINT only where there are no Unix signals).
pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Creates the slot when missing; returns whether it was created.
async fn ensure_slot(pg: &tokio_postgres::Client, slot: &str, database: &str) -> anyhow::Result<bool> {
    let existing = pg
        .query_opt("SELECT plugin::text, database::text FROM pg_replication_slots WHERE slot_name = $1", &[&slot])
        .await?;
    if let Some(row) = existing {
        let plugin: Option<String> = row.get(0);
        let db: Option<String> = row.get(1);
        if plugin.as_deref() != Some("wal2json") {
            bail!(
                "replication slot {slot} exists but uses plugin {plugin:?}, not wal2json: drop it or choose another --slot"
            );
        }
        if db.as_deref() != Some(database) {
            bail!("replication slot {slot} belongs to database {db:?}, not {database}");
        }
        return Ok(false);
    }
    pg.query_one("SELECT pg_create_logical_replication_slot($1, 'wal2json')", &[&slot])
        .await
        .map_err(|e| explain_pg_error(e, slot))
        .with_context(|| format!("creating logical replication slot {slot}"))?;
    tracing::info!(slot, "created logical replication slot");
    Ok(true)
}

fn explain_pg_error(err: tokio_postgres::Error, slot: &str) -> anyhow::Error {
    let text = err.as_db_error().map(|d| d.message().to_string()).unwrap_or_else(|| err.to_string());
    if text.contains("wal2json") && (text.contains("could not access file") || text.contains("No such file")) {
        return anyhow::anyhow!(
            "the wal2json logical decoding plugin is not installed on the PostgreSQL server \
             (Debian: apt-get install postgresql-15-wal2json; scripts/postgres.sh start installs it)"
        );
    }
    if text.contains("wal_level") {
        return anyhow::anyhow!("{text}: set wal_level = logical and restart PostgreSQL");
    }
    if text.contains("is active for PID") {
        return anyhow::anyhow!("replication slot {slot} is in use by another capture: {text}");
    }
    anyhow::Error::new(err)
}

fn split_table(qualified: &str) -> anyhow::Result<(&str, &str)> {
    match qualified.split_once('.') {
        Some((s, t)) if !s.is_empty() && !t.is_empty() => Ok((s, t)),
        _ => bail!("table {qualified:?} must be written schema.table"),
    }
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}
