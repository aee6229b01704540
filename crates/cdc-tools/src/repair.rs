//! `cdc-tools repair`: puts one key, or a whole mirror table, back in line with the source
//! database, and re-derives the facts it touches.
//!
//! Enters: a source table (mapped to its mirror by `CAPTURED_TABLES`, as the function maps
//! it), optionally a key, PostgreSQL and ClickHouse settings. Leaves: the mirror rows rewritten
//! from the source, rows with implausible versions removed, and the scope's facts (one item's,
//! an order's, a product's, a customer's or all) deleted and re-derived; prints what it did, or
//! fails: it never reports success for a row it did not write.
//!
//! The rewritten rows are updates (`op` `u`) at a version on the mirror's own scale
//! (docs/versions.md, "One scale per mirror"): the source's current WAL position on an `lsn`
//! mirror, the current time in µs on a `micros` one; a `binlog` mirror is refused. Why that
//! version is correct (docs/sales-fact.md, "Implausible versions"): it is taken before the rows
//! are read, so every change the rows do not reflect comes later and carries a greater version;
//! the rewritten rows lose to it. A transaction still open on the same key while the repair
//! runs can break that order: repair a key when nothing writes it, and `verify` afterwards.
//! Not snapshot reads (`r`): those rank below every streamed change of their row.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use crate::capture::catalog_table;
use crate::capture::debezium::Converter;
use crate::postgres::{self, DEFAULT_PG_URL};
use cdc_core::change::{Version, VersionScale};
use cdc_core::rederive::Scope;
use cdc_core::tables::{CapturedSource, MirrorTarget, SourceTable, TableMapping};
use cdc_lambda::pipeline::Pipeline;
use cdc_lambda::sqs::message::{Message, MessageId, MessageOutcome};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// PostgreSQL connection string (may carry a password: never shown in help). TLS with
    /// `sslmode=require`, `verify-ca` or `verify-full` (and `sslrootcert=FILE`).
    #[arg(long, env = "CDC_PG_URL", default_value = DEFAULT_PG_URL, hide_env_values = true, hide_default_value = true)]
    pub pg_url: String,
    /// The source schema of the table.
    #[arg(long, default_value = "public")]
    pub schema: String,
    /// The source table, as `CAPTURED_TABLES` names it (by default `customers`, `products`,
    /// `orders` or `order_items`); it must feed a sales mirror.
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
    // The function's own configuration: its table mapping (`CAPTURED_TABLES`) and warehouse
    // options, so that repair writes where the function writes.
    let config = cdc_lambda::config::Config::from_env()?;
    let settings = config.clickhouse_settings().await.map_err(|e| anyhow::anyhow!(e.detail))?;
    // Redacted as the function redacts: a repair never writes a PII column in plain.
    let redactor = config.redactor().await.map_err(|e| anyhow::anyhow!(e.detail))?;
    let pipeline = Pipeline::new(config.decode.clone(), config.warehouse(&settings)).with_redactor(redactor);
    let repaired = repair(&pipeline, &args).await?;
    println!(
        "repair {}.{}{}: {} rows rewritten from the source, {} deleted, {} facts re-derived",
        args.schema,
        args.table,
        args.key.map_or(String::new(), |k| format!(" key {k}")),
        repaired.rows_rewritten,
        repaired.rows_deleted,
        repaired.facts
    );
    Ok(())
}

/// Repairs through `pipeline`, whose decode options carry the table mapping. The pipeline's
/// warehouse inserts without deduplication from here on
/// ([`cdc_clickhouse::Warehouse::set_insert_deduplication`]): repair deletes rows and facts,
/// then may insert the very blocks it deleted.
pub async fn repair(pipeline: &Pipeline, args: &Args) -> anyhow::Result<Repaired> {
    let deadline = Instant::now() + REPAIR_TIME;
    let warehouse = pipeline.warehouse();
    warehouse.set_insert_deduplication(false);
    pipeline.migrate(deadline).await?;
    let mut repaired = Repaired::default();

    let table = if args.facts_only {
        // No source read, so no database name: any entry of this schema and table will do.
        mirror_of(&pipeline.decode_options().tables, None, &args.schema, &args.table)?
    } else {
        let source = Source::connect(args).await?;
        let table = mirror_of(&pipeline.decode_options().tables, Some(&source.database), &args.schema, &args.table)?;
        let at = version_for(pipeline, &source, table, deadline).await?;
        // Rows no source can have written go first: they would out-rank the rewritten ones.
        warehouse.purge_implausible(table, args.key, MUTATION_WAIT).await?;
        let (rewritten, deleted) = rewrite_from_source(pipeline, args, &source, table, at).await?;
        repaired.rows_rewritten = rewritten;
        repaired.rows_deleted = deleted;
        table
    };
    let scope = match (table, args.key) {
        (_, None) => Scope::All,
        (SourceTable::Orders, Some(k)) => Scope::Order(k),
        (SourceTable::Customers, Some(k)) => Scope::Customer(k),
        (SourceTable::Products, Some(k)) => Scope::Product(k),
        (SourceTable::OrderItems, Some(k)) => Scope::Item(k),
    };
    // Facts derived from removed rows may carry versions nothing can out-rank (an item's own
    // purged row too): remove the scope's facts, then derive them again from the repaired
    // mirrors.
    warehouse.delete_facts(scope, MUTATION_WAIT).await?;
    let (facts, unfinished) = pipeline.rederive(scope, deadline).await?;
    anyhow::ensure!(unfinished.is_none(), "re-derivation did not finish within {REPAIR_TIME:?}");
    repaired.facts = facts;
    Ok(repaired)
}

/// The sales mirror the function feeds from source table `schema.table` of `database` (`None`:
/// of any database), by the function's table mapping.
fn mirror_of(mapping: &TableMapping, database: Option<&str>, schema: &str, table: &str) -> anyhow::Result<SourceTable> {
    let target = match database {
        Some(database) => mapping.table(Some(database), schema, table),
        None => mapping.entries().find_map(|(source, target)| match source {
            CapturedSource::Table { schema: s, table: t, .. } if s == schema && t == table => Some(target),
            _ => None,
        }),
    };
    match target {
        Some(MirrorTarget::Sales(mirror)) => Ok(*mirror),
        Some(MirrorTarget::Generic(generic)) => anyhow::bail!(
            "{schema}.{table} feeds the generic mirror `{}`: repair cannot rewrite generic mirrors yet, only the \
             four sales mirrors (docs/sales-fact.md, \"Implausible versions\")",
            generic.name
        ),
        None => anyhow::bail!(
            "{schema}.{table} is not in CAPTURED_TABLES (the table mapping the function uses; set it as the \
             function has it): the function would skip every row repair sends, so nothing would be repaired"
        ),
    }
}

/// The source database: a connection and its name (events name it; the mapping may too).
struct Source {
    pg: tokio_postgres::Client,
    database: String,
}

impl Source {
    async fn connect(args: &Args) -> anyhow::Result<Source> {
        let pg = postgres::connect(&args.pg_url).await?;
        let database: String = pg.query_one("SELECT current_database()", &[]).await?.get(0);
        Ok(Source { pg, database })
    }
}

/// Where the rewrite writes: the source's position (`lsn`, also in the events), and the
/// version on the mirror's scale that every rewritten row and deletion carries.
#[derive(Debug, Clone, Copy)]
struct At {
    lsn: u64,
    version: u64,
    scale: VersionScale,
}

/// The version the rewrite writes at, on the scale the mirror is pinned to. Both are read
/// before the rows (module docs).
async fn version_for(
    pipeline: &Pipeline,
    source: &Source,
    table: SourceTable,
    deadline: Instant,
) -> anyhow::Result<At> {
    let pinned = pipeline.warehouse().version_scales(deadline).await?.get(table.name()).copied();
    let lsn_text: String = source.pg.query_one("SELECT pg_current_wal_lsn()::text", &[]).await?.get(0);
    let lsn = cdc_core::wire::parse_pg_lsn(&lsn_text).context("pg_current_wal_lsn")?;
    match pinned {
        // Unpinned: the rewrite pins it to `lsn`, as a Debezium feed would.
        None | Some(VersionScale::Lsn) => Ok(At { lsn, version: lsn, scale: VersionScale::Lsn }),
        // A µs feed (DMS without positions, the platform): now outranks every change that
        // committed before the rows are read, and loses to every later one.
        Some(VersionScale::Micros) => {
            let now_us = u64::try_from(cdc_lambda::telemetry::now_ms()).context("clock before 1970")? * 1000;
            Ok(At { lsn, version: now_us, scale: VersionScale::Micros })
        }
        Some(scale @ (VersionScale::Binlog | VersionScale::Load)) => anyhow::bail!(
            "the {} mirror is pinned to the `{}` version scale (a MySQL source via DMS): repair reads PostgreSQL \
             and has no position on that scale to write at, so it refuses rather than write rows that rank \
             arbitrarily (docs/versions.md, \"One scale per mirror\")",
            table.name(),
            scale.as_str()
        ),
    }
}

/// Rewrites the key's (or every) row from PostgreSQL as an update at `at`, through the
/// pipeline; keys the source no longer has become deletions. Fails if a row the source has did
/// not land.
async fn rewrite_from_source(
    pipeline: &Pipeline,
    args: &Args,
    source: &Source,
    table: SourceTable,
    at: At,
) -> anyhow::Result<(usize, usize)> {
    let pg = &source.pg;
    let mut converter = Converter::new("repair", source.database.clone());
    let def = catalog_table(pg, "repair", &args.schema, &args.table).await?;
    let key_column = table.spec().key;
    let columns: Vec<String> =
        def.columns.iter().map(|c| format!("\"{}\"::text", c.name.replace('"', "\"\""))).collect();
    // The next chunk starts after the last key read, wherever the key sits among the columns.
    let key_index = def.columns.iter().position(|c| c.name == key_column).context("the table has no key column")?;
    converter.add_table(def);
    let now_us = cdc_lambda::telemetry::now_ms() * 1000;
    let relation = format!("\"{}\".\"{}\"", args.schema.replace('"', "\"\""), args.table.replace('"', "\"\""));

    let mut rewritten = 0;
    let mut source_keys = HashSet::new();
    // The last key read; `None` before the first chunk (not i64::MIN: that is a key too).
    let mut after: Option<i64> = None;
    loop {
        let rows = match (args.key, after) {
            (Some(_), Some(_)) => break,
            (Some(key), None) => {
                let sql = format!("SELECT {} FROM {relation} WHERE {key_column} = $1", columns.join(", "));
                pg.query(sql.as_str(), &[&key]).await?
            }
            (None, None) => {
                let sql = format!("SELECT {} FROM {relation} ORDER BY {key_column} LIMIT {CHUNK}", columns.join(", "));
                pg.query(sql.as_str(), &[]).await?
            }
            (None, Some(after)) => {
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
            let key = values[key_index].as_deref().and_then(|k| k.parse::<i64>().ok()).context("key")?;
            source_keys.insert(key);
            bodies.push(converter.update_event(&args.schema, &args.table, &values, at.lsn, now_us)?.body);
        }
        rewritten += process(pipeline, bodies, at).await?;
        after = Some(match args.key {
            Some(key) => key,
            None => match rows.last() {
                Some(row) if rows.len() == CHUNK => {
                    row.get::<_, Option<String>>(key_index).and_then(|k| k.parse().ok()).context("key")?
                }
                _ => break,
            },
        });
    }

    // Live in ClickHouse, not rewritten: gone from the source. A key the source has among them
    // is a row whose rewrite did not land (or lost to a greater version): fail rather than
    // delete it or report success.
    let warehouse = pipeline.warehouse();
    // One key: a key lookup, not a scan of the table.
    let gone = warehouse.live_keys_below(table, args.key, at.version).await?;
    let lost = gone.iter().filter(|k| source_keys.contains(k)).count();
    anyhow::ensure!(
        lost == 0,
        "{lost} rows of the source were sent but did not win their key in the {} mirror; nothing was deleted",
        table.name()
    );
    if let Some(key) = args.key.filter(|k| source_keys.contains(k)) {
        // Dead rows never show in `live_keys_below`: check the key's newest version directly.
        let newest = warehouse.max_version(table, key).await?;
        anyhow::ensure!(
            newest >= at.version,
            "the rewritten row of key {key} did not land in the {} mirror (its newest version is below the \
             repair's)",
            table.name()
        );
    }
    let mut deleted = 0;
    for chunk in gone.chunks(CHUNK) {
        let bodies = chunk
            .iter()
            .map(|key| deletion_body(&source.database, &args.schema, &args.table, key_column, *key, at.lsn, now_us))
            .collect();
        deleted += process(pipeline, bodies, at).await?;
    }
    Ok((rewritten, deleted))
}

/// A Debezium deletion (no schema block) of one key at `lsn`.
fn deletion_body(
    database: &str,
    schema: &str,
    table: &str,
    key_column: &str,
    key: i64,
    lsn: u64,
    now_us: i64,
) -> String {
    json!({
        "before": {key_column: key},
        "after": null,
        "source": {"version": "repair", "connector": "postgresql", "name": "repair", "ts_ms": now_us / 1000,
                   "snapshot": "false", "db": database, "schema": schema, "table": table, "lsn": lsn},
        "op": "d",
        "ts_ms": now_us / 1000,
    })
    .to_string()
}

/// Runs bodies through the pipeline at `at`; any failure stops the repair with its code, and so
/// does a message that wrote no row (skipped as outside the mapping, or superseded).
async fn process(pipeline: &Pipeline, bodies: Vec<String>, at: At) -> anyhow::Result<usize> {
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
        .process_at(&messages, Instant::now() + REPAIR_TIME, Version(at.version), at.scale)
        .await
        .map_err(|e| anyhow::anyhow!("ClickHouse refused the repair: {e}"))?;
    for report in &reports {
        match &report.outcome {
            MessageOutcome::Failed { code, .. } => anyhow::bail!("a repaired row failed: {code}"),
            MessageOutcome::Skipped(reason) => {
                anyhow::bail!("the function skipped a repaired row ({reason}): nothing of it was written")
            }
            MessageOutcome::Delivered => {}
        }
        anyhow::ensure!(report.rows_inserted() > 0, "a repaired row wrote nothing to its mirror");
        anyhow::ensure!(report.follow_ups.is_empty(), "a re-derivation did not finish within {REPAIR_TIME:?}");
    }
    Ok(messages.len())
}
