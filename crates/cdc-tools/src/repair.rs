//! `cdc-tools repair`: puts one key, or a whole mirror table, back in line with the source
//! database, and re-derives the facts it touches.
//!
//! Enters: a source table, optionally a key, PostgreSQL and ClickHouse settings. Leaves: the
//! mirror rows rewritten at the source's current WAL position, rows with implausible versions
//! removed, and the scope's facts re-derived; prints what it did.
//!
//! Why the current WAL position is a correct version (docs/sales-fact.md, "Implausible
//! versions"): the position is read before the rows, so every change the rows do not reflect
//! comes later in the WAL and carries a greater version; the rewritten rows lose to it. A
//! transaction still open on the same key while the repair runs can break that order: repair
//! a key when nothing writes it, and `verify` afterwards.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use crate::capture::catalog_table;
use crate::capture::debezium::Converter;
use crate::postgres::{self, DEFAULT_PG_URL};
use cdc_clickhouse::Warehouse;
use cdc_core::decode::DecodeOptions;
use cdc_core::rederive::Scope;
use cdc_core::tables::SourceTable;
use cdc_lambda::pipeline::{Pipeline, Process};
use cdc_lambda::sqs::message::{Message, MessageId, MessageOutcome};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[arg(long, env = "CDC_PG_URL", default_value = DEFAULT_PG_URL, hide_env_values = true)]
    pub pg_url: String,
    /// The source schema of the table.
    #[arg(long, default_value = "public")]
    pub schema: String,
    /// `customers`, `products`, `orders` or `order_items`.
    #[arg(long)]
    pub table: String,
    /// One key; without it, every row of the table.
    #[arg(long)]
    pub key: Option<i64>,
    /// Only re-derive the facts of the key (or all facts), without reading the source.
    #[arg(long)]
    pub facts_only: bool,
}

/// Rows written per pipeline call while a whole table is repaired.
const CHUNK: usize = 1_000;
/// How long a repair may take in all.
const REPAIR_TIME: Duration = Duration::from_secs(6 * 3600);
/// How long a mutation (row removal) may take.
const MUTATION_WAIT: Duration = Duration::from_secs(600);

/// What a repair did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Repaired {
    pub rows_rewritten: usize,
    pub rows_deleted: usize,
    pub facts: usize,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let settings = cdc_lambda::config::clickhouse_settings().await.map_err(|e| anyhow::anyhow!(e.detail))?;
    let pipeline = Pipeline::new(
        DecodeOptions::default(),
        Warehouse::with_options(&settings, &cdc_lambda::config::Config::from_env()?.warehouse),
    );
    let repaired = repair(&pipeline, &args).await?;
    println!(
        "repair {}{}: {} rows rewritten from the source, {} deleted, {} facts re-derived",
        args.table,
        args.key.map_or(String::new(), |k| format!(" key {k}")),
        repaired.rows_rewritten,
        repaired.rows_deleted,
        repaired.facts
    );
    Ok(())
}

pub async fn repair(pipeline: &Pipeline, args: &Args) -> anyhow::Result<Repaired> {
    let deadline = Instant::now() + REPAIR_TIME;
    let table = SourceTable::from_name(&args.table)
        .filter(|t| t.name() == args.table)
        .with_context(|| format!("unknown table `{}` (customers, products, orders, order_items)", args.table))?;
    let scope = match (table, args.key) {
        (_, None) => Scope::All,
        (SourceTable::Orders, Some(k)) => Scope::Order(k),
        (SourceTable::Customers, Some(k)) => Scope::Customer(k),
        (SourceTable::Products, Some(k)) => Scope::Product(k),
        // An item's own fact is re-derived by rewriting the item; the scope of its order
        // covers it for a facts-only repair.
        (SourceTable::OrderItems, Some(_)) => Scope::All,
    };
    pipeline.migrate(deadline).await?;
    let warehouse = pipeline.warehouse();
    let mut repaired = Repaired::default();

    if !args.facts_only {
        // Rows no source can have written go first: they would out-rank the rewritten ones.
        warehouse.purge_implausible(table, args.key, MUTATION_WAIT).await?;
        let (rewritten, deleted) = rewrite_from_source(pipeline, args, table).await?;
        repaired.rows_rewritten = rewritten;
        repaired.rows_deleted = deleted;
    }
    // Facts derived from removed rows may carry versions nothing can out-rank: remove the
    // scope's facts, then derive them again from the repaired mirrors.
    if args.key.is_none() || args.facts_only || table != SourceTable::OrderItems {
        warehouse.delete_facts(scope, MUTATION_WAIT).await?;
        let (facts, unfinished) = pipeline.rederive(scope, deadline).await?;
        anyhow::ensure!(unfinished.is_none(), "re-derivation did not finish within {REPAIR_TIME:?}");
        repaired.facts = facts;
    }
    Ok(repaired)
}

/// Rewrites the key's (or every) row from PostgreSQL as a snapshot read at the current WAL
/// position, through the pipeline; keys the source no longer has become deletions.
async fn rewrite_from_source(pipeline: &Pipeline, args: &Args, table: SourceTable) -> anyhow::Result<(usize, usize)> {
    let pg = postgres::connect(&args.pg_url).await?;
    let database: String = pg.query_one("SELECT current_database()", &[]).await?.get(0);
    let mut converter = Converter::new("repair", database);
    let def = catalog_table(&pg, "repair", &args.schema, table.name()).await?;
    let key_column = table.spec().key;
    let columns: Vec<String> =
        def.columns.iter().map(|c| format!("\"{}\"::text", c.name.replace('"', "\"\""))).collect();
    // The next chunk starts after the last key read, wherever the key sits among the columns.
    let key_index = def.columns.iter().position(|c| c.name == key_column).context("the table has no key column")?;
    converter.add_table(def);

    // Read before the rows: every change they miss has a greater position (module docs).
    let lsn_text: String = pg.query_one("SELECT pg_current_wal_lsn()::text", &[]).await?.get(0);
    let lsn = cdc_core::wire::parse_pg_lsn(&lsn_text).context("pg_current_wal_lsn")?;
    let now_us = cdc_lambda::telemetry::now_ms() * 1000;
    let relation = format!("\"{}\".\"{}\"", args.schema.replace('"', "\"\""), table.name());

    let mut rewritten = 0;
    let mut after = i64::MIN;
    loop {
        let rows = match args.key {
            Some(key) => {
                if after != i64::MIN {
                    break;
                }
                let sql = format!("SELECT {} FROM {relation} WHERE {key_column} = $1", columns.join(", "));
                pg.query(sql.as_str(), &[&key]).await?
            }
            None => {
                let sql = format!(
                    "SELECT {} FROM {relation} WHERE {key_column} > $1 ORDER BY {key_column} LIMIT {CHUNK}",
                    columns.join(", ")
                );
                pg.query(sql.as_str(), &[&after]).await?
            }
        };
        let mut bodies = Vec::with_capacity(rows.len());
        for row in &rows {
            let values: Vec<Option<String>> = (0..row.len()).map(|i| row.get(i)).collect();
            bodies.push(converter.snapshot_event(&args.schema, table.name(), &values, lsn, "false", now_us)?.body);
        }
        rewritten += process(pipeline, bodies).await?;
        after = match args.key {
            Some(key) => key,
            None => match rows.last() {
                Some(row) if rows.len() == CHUNK => {
                    row.get::<_, Option<String>>(key_index).and_then(|k| k.parse().ok()).context("key")?
                }
                _ => break,
            },
        };
    }

    // Live in ClickHouse, not rewritten: gone from the source.
    let mut gone = pipeline.warehouse().live_keys_below(table, lsn).await?;
    if let Some(key) = args.key {
        gone.retain(|k| *k == key);
    }
    let mut deleted = 0;
    for chunk in gone.chunks(CHUNK) {
        let bodies =
            chunk.iter().map(|key| deletion_body(&args.schema, table, key_column, *key, lsn, now_us)).collect();
        deleted += process(pipeline, bodies).await?;
    }
    Ok((rewritten, deleted))
}

/// A Debezium deletion (no schema block) of one key at `lsn`.
fn deletion_body(schema: &str, table: SourceTable, key_column: &str, key: i64, lsn: u64, now_us: i64) -> String {
    json!({
        "before": {key_column: key},
        "after": null,
        "source": {"version": "repair", "connector": "postgresql", "name": "repair", "ts_ms": now_us / 1000,
                   "snapshot": "false", "db": "repair", "schema": schema, "table": table.name(), "lsn": lsn},
        "op": "d",
        "ts_ms": now_us / 1000,
    })
    .to_string()
}

/// Runs bodies through the pipeline; any failure stops the repair with its code.
async fn process(pipeline: &Pipeline, bodies: Vec<String>) -> anyhow::Result<usize> {
    if bodies.is_empty() {
        return Ok(0);
    }
    let messages: Vec<Message> = bodies
        .into_iter()
        .enumerate()
        .map(|(i, body)| Message {
            id: MessageId::new(format!("repair-{i}")).expect("non-empty"),
            body,
            receive_count: 1,
            group_id: None,
            receipt_handle: None,
            source_arn: None,
            sent_at_ms: None,
        })
        .collect();
    let reports = pipeline
        .process(&messages, Instant::now() + REPAIR_TIME)
        .await
        .map_err(|e| anyhow::anyhow!("ClickHouse refused the repair: {e}"))?;
    for report in &reports {
        if let MessageOutcome::Failed { code, .. } = &report.outcome {
            anyhow::bail!("a repaired row failed: {code}");
        }
        anyhow::ensure!(report.follow_ups.is_empty(), "a re-derivation did not finish within {REPAIR_TIME:?}");
    }
    Ok(messages.len())
}
