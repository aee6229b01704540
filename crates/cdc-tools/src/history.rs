//! `cdc-tools history` (one key's versions with their validity) and `cdc-tools as-of` (a table
//! or `sales_fact` as it was at a time), read from the history tables `HISTORY_TABLES` keeps.
//! The queries, and why their answer equals the source at that time: docs/history.md.
//!
//! ClickHouse is reached as the function reaches it (`cdc_lambda::config`). Output is
//! TabSeparated with a header line, printed page by page: memory stays bounded by the page.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context;
use cdc_clickhouse::Warehouse;
use cdc_core::change::Decimal;
use cdc_core::fact::{FACT_COLUMNS, FactKind, FactRow, FactValue};
use cdc_core::tables::SourceTable;

/// Keys (or order items) read and printed per page.
const PAGE: usize = 5_000;
/// How long one page's reads may retry a transient failure.
const PAGE_DEADLINE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, clap::Args)]
pub struct HistoryArgs {
    /// A table that keeps history: customers, products, orders or order_items.
    #[arg(long, value_parser = parse_table)]
    table: SourceTable,
    /// The key whose versions to print.
    #[arg(long, allow_negative_numbers = true)]
    key: i64,
}

#[derive(Debug, Clone, clap::Args)]
pub struct AsOfArgs {
    /// A table that keeps history, or `sales_fact` (needs all four).
    #[arg(long)]
    table: String,
    /// The time: RFC 3339 (`2024-11-01T00:00:00Z`) or microseconds since the epoch.
    #[arg(long, value_parser = parse_time)]
    at: i64,
}

fn parse_table(name: &str) -> Result<SourceTable, String> {
    SourceTable::from_name(name).ok_or_else(|| format!("not a table that keeps history: {name}"))
}

/// Microseconds since the epoch from RFC 3339 text or a number of microseconds.
fn parse_time(text: &str) -> Result<i64, String> {
    if let Ok(micros) = text.parse::<i64>() {
        return Ok(micros);
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_micros())
        .map_err(|e| format!("not an RFC 3339 time or microseconds since the epoch: {e}"))
}

async fn warehouse() -> anyhow::Result<Warehouse> {
    let config = cdc_lambda::config::Config::from_env()?;
    let settings = config.clickhouse_settings().await.map_err(|e| anyhow::anyhow!(e.detail))?;
    Ok(Warehouse::new(&settings))
}

/// Fails clearly when a table keeps no history (rather than with the server's unknown table).
async fn require_history(warehouse: &Warehouse, table: SourceTable) -> anyhow::Result<()> {
    let name = cdc_clickhouse::schema::history_table(table);
    anyhow::ensure!(
        warehouse.has_table(&name).await?,
        "{} keeps no history in database {}: add it to HISTORY_TABLES (docs/history.md)",
        table.name(),
        warehouse.database()
    );
    Ok(())
}

pub async fn history(args: HistoryArgs) -> anyhow::Result<()> {
    let warehouse = warehouse().await?;
    require_history(&warehouse, args.table).await?;
    let text = warehouse.key_history(args.table, args.key, Instant::now() + PAGE_DEADLINE).await?;
    print!("{text}");
    Ok(())
}

pub async fn as_of(args: AsOfArgs) -> anyhow::Result<()> {
    let warehouse = warehouse().await?;
    let mut out = std::io::stdout().lock();
    if args.table == cdc_clickhouse::schema::FACT_TABLE {
        for table in SourceTable::ALL {
            require_history(&warehouse, table).await?;
        }
        return facts_as_of(&warehouse, args.at, &mut out).await;
    }
    let table = parse_table(&args.table).map_err(anyhow::Error::msg)?;
    require_history(&warehouse, table).await?;
    let mut after = None;
    let mut first = true;
    loop {
        let deadline = Instant::now() + PAGE_DEADLINE;
        let keys = warehouse.history_keys(table, args.at, after, PAGE, deadline).await?;
        let Some(&last) = keys.last() else { break };
        let text = warehouse.table_as_of(table, args.at, &keys, deadline).await?;
        // Each page repeats the header line; print it once.
        let body = if first { text.as_str() } else { text.split_once('\n').map_or("", |(_, rest)| rest) };
        out.write_all(body.as_bytes()).context("stdout")?;
        first = false;
        after = Some(last);
    }
    Ok(())
}

/// `sales_fact` as of `at_us`: the order items the history knows by then, page by page, each
/// fact derived from the four tables as of then.
async fn facts_as_of(warehouse: &Warehouse, at_us: i64, out: &mut impl Write) -> anyhow::Result<()> {
    let columns: Vec<&str> = fact_columns().map(|c| c.name).collect();
    writeln!(out, "{}", columns.join("\t")).context("stdout")?;
    let mut after = None;
    loop {
        let deadline = Instant::now() + PAGE_DEADLINE;
        let items = warehouse.history_keys(SourceTable::OrderItems, at_us, after, PAGE, deadline).await?;
        let Some(&last) = items.last() else { break };
        for fact in warehouse.facts_as_of(&items, at_us, deadline).await? {
            writeln!(out, "{}", fact_line(&fact)).context("stdout")?;
        }
        after = Some(last);
    }
    Ok(())
}

/// The columns an analyst reads: all but the version and the deletion flag.
fn fact_columns() -> impl Iterator<Item = &'static cdc_core::fact::FactColumn> {
    FACT_COLUMNS.iter().filter(|c| !matches!(c.kind, FactKind::Version | FactKind::Flag))
}

/// One fact as a TabSeparated line, values as ClickHouse prints them.
fn fact_line(fact: &FactRow) -> String {
    let fields: Vec<String> = fact_columns()
        .map(|column| match (column.value)(fact) {
            FactValue::Int64(v) => v.to_string(),
            FactValue::Int32(v) => v.to_string(),
            FactValue::Decimal(v) => Decimal::new(v, 6).to_string(),
            FactValue::Text(s) => escape(s),
            FactValue::Timestamp(us) => chrono::DateTime::from_timestamp_micros(us)
                .map_or_else(|| us.to_string(), |t| t.format("%Y-%m-%d %H:%M:%S%.6f").to_string()),
            FactValue::Version(_) | FactValue::Flag(_) => String::new(),
        })
        .collect();
    fields.join("\t")
}

/// A TabSeparated field.
fn escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\t', "\\t").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc_3339_or_microseconds() {
        assert_eq!(parse_time("2024-01-01T00:00:00Z"), Ok(1_704_067_200_000_000));
        assert_eq!(parse_time("2024-01-01T01:00:00.5+01:00"), Ok(1_704_067_200_500_000));
        assert_eq!(parse_time("1704067200000000"), Ok(1_704_067_200_000_000));
        assert!(parse_time("yesterday").is_err());
        assert!(parse_table("notes").is_err());
    }

    #[test]
    fn a_fact_line_has_one_field_per_analyst_column_with_text_escaped() {
        let fact = cdc_core::fact::Snapshot::default().derive(1);
        assert!(fact.is_deleted, "nothing known: a deletion");
        let line = fact_line(&FactRow { customer_name: "a\tb".into(), ..fact });
        assert_eq!(line.split('\t').count(), fact_columns().count(), "the tab in the name is escaped");
        assert!(line.contains("a\\tb"));
    }
}
