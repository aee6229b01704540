//! Verification: PostgreSQL's current state against ClickHouse's current state.
//!
//! Enters: a PostgreSQL connection and ClickHouse settings. Leaves: a [`VerifyReport`] with, per
//! mirror table and for `sales_fact`, the rows missing from ClickHouse, the extra rows there, and
//! the rows present in both whose values differ. `run` prints it and fails on any difference.
//!
//! Sides: PostgreSQL's four tables and its inner join `order_items ⋈ orders ⋈ customers ⋈
//! products`; ClickHouse's mirrors and `sales_fact`, read as `<table>_current` when that view
//! exists (it also hides rows older than a truncation), otherwise `FINAL WHERE _is_deleted = 0`.
//! Values are compared in a normal form: decimals exactly whatever their scale or text form,
//! timestamps at microseconds, or at seconds when ClickHouse's column has no fraction (the 18.16
//! server's `DateTime`). Only counts and ids are printed, never row values.
//!
//! Every other captured table (from `CAPTURED_TABLES`) is compared with its generic mirror
//! ([`generic`]): the columns come from PostgreSQL's catalog, each read on both sides in a normal
//! form chosen by its PostgreSQL type and its ClickHouse column type, rows matched by the key
//! columns. A column ClickHouse does not have yet (it only ever carried NULL) reads as NULL. Only
//! key values and column names are printed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::postgres::{self, DEFAULT_PG_URL};
use cdc_clickhouse::Warehouse;
use cdc_clickhouse::inspect::{TextColumn, TextForm};
use cdc_core::change::{Decimal, Value};
use cdc_core::redact::Redactor;
use cdc_core::tables::{ColumnKind, SourceTable};
use generic::{VerifyTable, compare_generic, verify_tables};

mod generic;

/// `cdc-tools verify`: compare PostgreSQL with ClickHouse; exit non-zero on any difference.
/// ClickHouse is reached as the function reaches it ([`cdc_lambda::config::clickhouse_settings`]:
/// the `CLICKHOUSE_*` variables or the secret `CLICKHOUSE_SECRET_ARN` names, TLS checked).
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[arg(long, env = "CDC_PG_URL", default_value = DEFAULT_PG_URL, hide_env_values = true)]
    pub(crate) pg_url: String,
    /// Keep comparing until there is no difference or this many seconds passed (0 = once).
    #[arg(long, default_value_t = 0.0)]
    pub(crate) wait: f64,
    /// Print up to this many differing ids per table.
    #[arg(long, default_value_t = 5)]
    show: usize,
    /// The processor's table mapping: every relational entry besides the four sales tables is
    /// compared with its generic mirror (`SOURCE[=TARGET][(KEY ...)]`, comma-separated).
    #[arg(long, env = "CAPTURED_TABLES")]
    captured_tables: Option<String>,
}

/// One part of a row's key, in a normal form both sides print alike.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum KeyPart {
    Int(i64),
    Text(String),
}

/// A row's key: one part per key column (`id` for the sales tables).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Key(pub Vec<KeyPart>);

impl Key {
    pub(crate) fn id(id: i64) -> Self {
        Key(vec![KeyPart::Int(id)])
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|p| match p {
                KeyPart::Int(i) => i.to_string(),
                KeyPart::Text(t) => format!("{t:?}"),
            })
            .collect();
        match parts.as_slice() {
            [one] => f.write_str(one),
            _ => write!(f, "({})", parts.join(", ")),
        }
    }
}

/// The differences of one table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TableDiff {
    pub(crate) table: String,
    source_rows: usize,
    clickhouse_rows: usize,
    missing: Vec<Key>,
    extra: Vec<Key>,
    /// Keys whose values differ, with the differing column names.
    wrong: Vec<(Key, Vec<String>)>,
}

impl TableDiff {
    fn differences(&self) -> usize {
        self.missing.len() + self.extra.len() + self.wrong.len()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct VerifyReport {
    pub(crate) tables: Vec<TableDiff>,
}

impl VerifyReport {
    fn differences(&self) -> usize {
        self.tables.iter().map(TableDiff::differences).sum()
    }
    fn is_clean(&self) -> bool {
        self.differences() == 0
    }
    /// One line per table, ids of the first `show` differences of each kind.
    pub(crate) fn render(&self, show: usize) -> String {
        let mut out = String::new();
        for t in &self.tables {
            out.push_str(&format!(
                "verify: {:<18} postgres={:<7} clickhouse={:<7} missing={} extra={} wrong={}\n",
                t.table,
                t.source_rows,
                t.clickhouse_rows,
                t.missing.len(),
                t.extra.len(),
                t.wrong.len()
            ));
            let keys = |keys: &[Key]| keys.iter().take(show).map(Key::to_string).collect::<Vec<_>>().join(", ");
            if !t.missing.is_empty() {
                out.push_str(&format!("  missing keys: [{}]\n", keys(&t.missing)));
            }
            if !t.extra.is_empty() {
                out.push_str(&format!("  extra keys: [{}]\n", keys(&t.extra)));
            }
            for (key, cols) in t.wrong.iter().take(show) {
                out.push_str(&format!("  wrong key {key}: columns {cols:?}\n"));
            }
        }
        out.push_str(&if self.is_clean() {
            "verify: OK, 0 differences\n".to_string()
        } else {
            format!("verify: FAILED, {} differences\n", self.differences())
        });
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int,
    Text,
    Decimal,
    Timestamp,
}

impl Kind {
    /// How ClickHouse prints a column of this kind for the comparison.
    fn text_form(self) -> TextForm {
        match self {
            Text => TextForm::Text,
            Int | Decimal | Timestamp => TextForm::Plain,
        }
    }
}

/// One compared column: its name (the same in ClickHouse), how PostgreSQL prints it, how to
/// compare it, and the mirror column it holds (`mirror`, `column`): its own, or for `sales_fact`
/// the dimension column it is derived from, whose redaction rule it follows (a hashed
/// `customers.name` reaches `customer_name` hashed).
struct Col {
    name: &'static str,
    pg: String,
    kind: Kind,
    holds: (&'static str, &'static str),
}

/// A `sales_fact` column holding `holds`.
fn col(name: &'static str, pg: &str, kind: Kind, holds: (&'static str, &'static str)) -> Col {
    Col { name, pg: pg.to_owned(), kind, holds }
}

struct Check {
    table: &'static str,
    /// FROM clause (PostgreSQL).
    pg_from: &'static str,
    cols: Vec<Col>,
}

use Kind::*;

/// The checks: each sales mirror, column for column as its table spec declares it, and
/// `sales_fact` against the source's join.
fn checks() -> Vec<Check> {
    let mirrors = SourceTable::ALL.into_iter().map(|table| {
        let spec = table.spec();
        let cols = spec
            .columns
            .iter()
            .map(|c| {
                let (pg, kind) = match c.kind {
                    ColumnKind::Int64 | ColumnKind::Int32 => (format!("{}::text", c.name), Int),
                    ColumnKind::Decimal { .. } => (format!("{}::text", c.name), Decimal),
                    ColumnKind::Text => (c.name.to_owned(), Text),
                    ColumnKind::Timestamp => (pg_timestamp(c.name), Timestamp),
                };
                Col { name: c.name, pg, kind, holds: (spec.name, c.name) }
            })
            .collect();
        Check { table: spec.name, pg_from: spec.name, cols }
    });
    let facts = Check {
        table: "sales_fact",
        pg_from: "order_items oi JOIN orders o ON o.id = oi.order_id \
                  JOIN customers c ON c.id = o.customer_id JOIN products p ON p.id = oi.product_id",
        cols: vec![
            col("order_item_id", "oi.id::text", Int, ("sales_fact", "order_item_id")),
            col("order_id", "oi.order_id::text", Int, ("sales_fact", "order_id")),
            col("customer_id", "o.customer_id::text", Int, ("sales_fact", "customer_id")),
            col("product_id", "oi.product_id::text", Int, ("sales_fact", "product_id")),
            col("quantity", "oi.quantity::text", Int, ("order_items", "quantity")),
            col("unit_price", "oi.price::text", Decimal, ("order_items", "price")),
            col("revenue", "(oi.quantity * oi.price)::text", Decimal, ("sales_fact", "revenue")),
            col("order_status", "o.status", Text, ("orders", "status")),
            col("order_date", &pg_timestamp("o.order_date"), Timestamp, ("orders", "order_date")),
            col("customer_name", "c.name", Text, ("customers", "name")),
            col("customer_country", "c.country", Text, ("customers", "country")),
            col("customer_city", "c.city", Text, ("customers", "city")),
            col("product_name", "p.name", Text, ("products", "name")),
            col("product_category", "p.category", Text, ("products", "category")),
        ],
    };
    mirrors.chain([facts]).collect()
}

/// PostgreSQL's text of a timestamp column, in UTC with microseconds.
fn pg_timestamp(column: &str) -> String {
    format!("to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')")
}

type Rows = BTreeMap<Key, Vec<Option<String>>>;

/// The source's text of a redacted column as the function stores it.
fn redact_text(redactor: &Redactor, mirror: &str, column: &str, value: Option<String>) -> Option<String> {
    let value = value.map_or(Value::Null, Value::Text);
    match redactor.redact_value(mirror, column, value) {
        Some(Value::Text(text)) => Some(text),
        _ => None,
    }
}

/// Applies the redaction rules to PostgreSQL's side of a check.
fn redact_source(rows: &mut Rows, check: &Check, redactor: &Redactor) {
    for (i, col) in check.cols.iter().enumerate() {
        let (mirror, column) = col.holds;
        if redactor.rules().action(mirror, column).is_none() {
            continue;
        }
        for values in rows.values_mut() {
            values[i] = redact_text(redactor, mirror, column, values[i].take());
        }
    }
}

async fn pg_rows(pg: &tokio_postgres::Client, check: &Check) -> anyhow::Result<Rows> {
    let select: Vec<&str> = check.cols.iter().map(|c| c.pg.as_str()).collect();
    let sql = format!("SELECT {} FROM {}", select.join(", "), check.pg_from);
    let mut out = Rows::new();
    for row in pg.query(sql.as_str(), &[]).await.with_context(|| format!("reading {} from PostgreSQL", check.table))? {
        let values: Vec<Option<String>> = (0..check.cols.len()).map(|i| row.get(i)).collect();
        let id = values.first().cloned().flatten().and_then(|v| v.parse().ok()).context("row without id")?;
        out.insert(Key::id(id), values);
    }
    Ok(out)
}

async fn ch_rows(ch: &Warehouse, check: &Check) -> anyhow::Result<Rows> {
    let columns: Vec<TextColumn> = check.cols.iter().map(|c| TextColumn::new(c.name, c.kind.text_form())).collect();
    let mut out = Rows::new();
    let rows = ch
        .live_rows_as_text(check.table, &columns)
        .await
        .with_context(|| format!("reading {} from ClickHouse", check.table))?;
    for values in rows {
        let id = values.first().cloned().flatten().and_then(|v| v.parse().ok()).context("row without id")?;
        out.insert(Key::id(id), values);
    }
    Ok(out)
}

/// Whether a PostgreSQL value and a ClickHouse value are the same value of this kind.
fn same(kind: Kind, pg: Option<&str>, ch: Option<&str>) -> bool {
    match (pg, ch) {
        (None, None) => true,
        (Some(p), Some(c)) => match kind {
            Int => p.trim().parse::<i64>().ok() == c.trim().parse::<i64>().ok() && p.trim().parse::<i64>().is_ok(),
            Text => p == c,
            Decimal => match (Decimal::parse(p.trim()), Decimal::parse(c.trim())) {
                (Some(a), Some(b)) => {
                    let scale = a.scale.max(b.scale);
                    a.rescale(scale).is_some() && a.rescale(scale) == b.rescale(scale)
                }
                _ => false,
            },
            Timestamp => {
                // PostgreSQL: `YYYY-MM-DD HH:MM:SS.ffffff` (UTC). ClickHouse DateTime64(6): the same;
                // DateTime: no fraction, so compare whole seconds (the fraction is truncated).
                match c.split_once('.') {
                    Some(_) => normalize_fraction(p) == normalize_fraction(c),
                    None => p.get(..19) == Some(c),
                }
            }
        },
        // A NULL in the source may be stored as the column default in a non-Nullable column.
        (None, Some(c)) => match kind {
            Text => c.is_empty(),
            // A NULL foreign key is stored as `cdc_core::mirror::NULL_FOREIGN_KEY`.
            Int if c.trim() == cdc_core::mirror::NULL_FOREIGN_KEY.to_string() => true,
            Int | Decimal => Decimal::parse(c.trim()).is_some_and(|d| d.unscaled == 0),
            // The epoch, the default of a timestamp column: 18.16 prints `DateTime` 0 as zeros.
            Timestamp => {
                let seconds = c.split_once('.').map_or(c, |(seconds, _)| seconds);
                let fraction = c.split_once('.').map_or("", |(_, fraction)| fraction);
                ["1970-01-01 00:00:00", "0000-00-00 00:00:00"].contains(&seconds) && fraction.bytes().all(|b| b == b'0')
            }
        },
        (Some(_), None) => false,
    }
}

fn normalize_fraction(ts: &str) -> String {
    match ts.split_once('.') {
        Some((base, frac)) => format!("{base}.{:0<6}", &frac[..frac.len().min(6)]),
        None => format!("{ts}.000000"),
    }
}

fn diff(check: &Check, pg: &Rows, ch: &Rows) -> TableDiff {
    diff_rows(check.table.to_string(), pg, ch, |pv, cv| {
        check
            .cols
            .iter()
            .enumerate()
            .filter(|(i, c)| !same(c.kind, pv[*i].as_deref(), cv[*i].as_deref()))
            .map(|(_, c)| c.name.to_string())
            .collect()
    })
}

/// Rows missing from ClickHouse, extra there, and present on both sides with the columns that
/// `differing` names for them.
fn diff_rows(
    table: String,
    pg: &Rows,
    ch: &Rows,
    differing: impl Fn(&[Option<String>], &[Option<String>]) -> Vec<String>,
) -> TableDiff {
    let mut d = TableDiff { table, source_rows: pg.len(), clickhouse_rows: ch.len(), ..Default::default() };
    for (key, pv) in pg {
        match ch.get(key) {
            None => d.missing.push(key.clone()),
            Some(cv) => {
                let wrong = differing(pv, cv);
                if !wrong.is_empty() {
                    d.wrong.push((key.clone(), wrong));
                }
            }
        }
    }
    d.extra = ch.keys().filter(|k| !pg.contains_key(k)).cloned().collect();
    d
}

/// Compares once.
async fn compare(
    pg: &tokio_postgres::Client,
    ch: &Warehouse,
    tables: &[VerifyTable],
    redactor: &Redactor,
) -> anyhow::Result<VerifyReport> {
    let mut report = VerifyReport::default();
    for check in &checks() {
        // ClickHouse first: rows applied there after the PostgreSQL read would otherwise look
        // "extra" during a live run. (Verify is meant for a quiesced pipeline; `--wait` retries.)
        let c = ch_rows(ch, check).await?;
        let mut p = pg_rows(pg, check).await?;
        redact_source(&mut p, check, redactor);
        report.tables.push(diff(check, &p, &c));
    }
    let current_db: String = pg.query_one("SELECT current_database()", &[]).await?.get(0);
    for table in tables {
        // An entry naming another database is captured from there, not from this connection's.
        if table.pg_database.as_deref().is_some_and(|db| db != current_db) {
            continue;
        }
        report.tables.push(compare_generic(pg, ch, table, redactor).await?);
    }
    Ok(report)
}

/// Compares, retrying for up to `args.wait` seconds until there is no difference.
pub(crate) async fn verify(args: &Args) -> anyhow::Result<VerifyReport> {
    let pg = postgres::connect(&args.pg_url).await?;
    let config = cdc_lambda::config::Config::from_env()?;
    let settings = config.clickhouse_settings().await.map_err(|e| anyhow::anyhow!(e.detail))?;
    // The source's values of redacted columns go through the function's own redaction
    // (the same rules, the same key), so a hashed column compares equal.
    let redactor = config.redactor().await.map_err(|e| anyhow::anyhow!(e.detail))?;
    let ch = Warehouse::new(&settings);
    let tables = match args.captured_tables.as_deref() {
        Some(spec) => verify_tables(spec).context("CAPTURED_TABLES")?,
        None => Vec::new(),
    };
    let deadline = Instant::now() + Duration::from_secs_f64(args.wait.max(0.0));
    loop {
        let report = compare(&pg, &ch, &tables, &redactor).await?;
        if report.is_clean() || Instant::now() >= deadline {
            return Ok(report);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `cdc-tools verify`: prints per-table counts; an error (non-zero exit) on any difference.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let report = verify(&args).await?;
    print!("{}", report.render(args.show));
    if !report.is_clean() {
        bail!("verify found {} differences between PostgreSQL and ClickHouse", report.differences());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_compare_exactly_whatever_the_text_form() {
        assert!(same(Decimal, Some("4.80"), Some("4.8")));
        assert!(same(Decimal, Some("4.82"), Some("4.820000")));
        assert!(!same(Decimal, Some("4.82"), Some("4.821")));
        assert!(same(Decimal, Some("-0.10"), Some("-0.1")));
        assert!(!same(Decimal, Some("1"), Some("x")));
    }

    #[test]
    fn a_null_timestamp_matches_the_stored_default_and_nothing_else() {
        assert!(same(Timestamp, None, Some("1970-01-01 00:00:00.000000")));
        assert!(same(Timestamp, None, Some("0000-00-00 00:00:00")), "18.16's DateTime 0");
        assert!(!same(Timestamp, None, Some("1970-01-01 00:00:01")));
        assert!(!same(Timestamp, None, Some("1970-01-01 00:00:00.000001")));
    }

    #[test]
    fn timestamps_compare_at_the_clickhouse_resolution() {
        let pg = "2026-11-22 02:14:32.019849";
        assert!(same(Timestamp, Some(pg), Some("2026-11-22 02:14:32.019849")));
        assert!(same(Timestamp, Some(pg), Some("2026-11-22 02:14:32")));
        assert!(!same(Timestamp, Some(pg), Some("2026-11-22 02:14:33")));
        assert!(!same(Timestamp, Some(pg), Some("2026-11-22 02:14:32.019848")));
        assert!(same(Timestamp, Some("2026-11-22 02:14:32.010000"), Some("2026-11-22 02:14:32.01")));
    }

    #[test]
    fn the_sources_redacted_values_are_hashed_as_the_function_hashes_them() {
        let key = cdc_core::redact::RedactionKey::new(&[5u8; 32]).unwrap();
        let rules =
            cdc_core::redact::Rules::parse("customers.email:hash,customers.name:hash,customers.city:null").unwrap();
        let redactor = Redactor::new(rules, Some(key.clone())).unwrap();
        let all = checks();
        let customers = all.iter().find(|c| c.table == "customers").unwrap();
        let row = |email: &str, name: &str| {
            let values = customers.cols.iter().map(|c| match c.name {
                "email" => Some(email.to_owned()),
                "name" => Some(name.to_owned()),
                "city" => Some("Paris".to_owned()),
                _ => Some("1".to_owned()),
            });
            values.collect::<Vec<_>>()
        };
        let mut rows = Rows::from([(Key::id(1), row("ada@x.io", "Ada"))]);
        redact_source(&mut rows, customers, &redactor);
        let at = |name: &str| customers.cols.iter().position(|c| c.name == name).unwrap();
        let redacted = &rows[&Key::id(1)];
        assert_eq!(redacted[at("email")], Some(key.hash(b"ada@x.io")));
        assert_eq!(redacted[at("city")], None, "nulled");
        // The fact's dimension columns follow their mirror's rules.
        let facts = all.iter().find(|c| c.table == "sales_fact").unwrap();
        let name_at = facts.cols.iter().position(|c| c.name == "customer_name").unwrap();
        let mut fact_row = vec![Some("x".to_owned()); facts.cols.len()];
        fact_row[0] = Some("7".to_owned());
        let mut rows = Rows::from([(Key::id(7), fact_row)]);
        redact_source(&mut rows, facts, &redactor);
        assert_eq!(rows[&Key::id(7)][name_at], Some(key.hash(b"x")));
        assert_eq!(rows[&Key::id(7)][1], Some("x".to_owned()), "unredacted columns untouched");
    }

    #[test]
    fn diff_counts_missing_extra_wrong() {
        let checks = checks();
        let check = &checks[2];
        assert_eq!(check.table, "orders");
        let row = |id: i64, status: &str| {
            (
                id,
                vec![
                    Some(id.to_string()),
                    Some("1".into()),
                    Some("2026-01-01 00:00:00.000000".into()),
                    Some(status.into()),
                    Some("1.50".into()),
                ],
            )
        };
        let rows =
            |r: Vec<(i64, Vec<Option<String>>)>| -> Rows { r.into_iter().map(|(k, v)| (Key::id(k), v)).collect() };
        let pg = rows(vec![row(1, "paid"), row(2, "paid"), row(3, "paid")]);
        let mut ch = rows(vec![row(2, "paid"), row(3, "shipped"), row(4, "paid")]);
        if let Some(r) = ch.get_mut(&Key::id(2)) {
            r[4] = Some("1.500000".into());
            r[2] = Some("2026-01-01 00:00:00".into());
        }
        let d = diff(check, &pg, &ch);
        assert_eq!(d.missing, vec![Key::id(1)]);
        assert_eq!(d.extra, vec![Key::id(4)]);
        assert_eq!(d.wrong, vec![(Key::id(3), vec!["status".to_string()])]);
        assert_eq!(d.differences(), 3);
    }
}
