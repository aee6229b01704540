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

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio_postgres::NoTls;

use crate::capture::DEFAULT_PG_URL;
use crate::change::Decimal;

/// ClickHouse connection options shared by `verify` and `freshness`.
#[derive(Debug, Clone, clap::Args)]
pub struct ClickHouseArgs {
    #[arg(long, env = "CLICKHOUSE_URL", default_value = "http://127.0.0.1:8123")]
    pub clickhouse_url: String,
    #[arg(long, env = "CLICKHOUSE_USER", default_value = "default")]
    pub clickhouse_user: String,
    #[arg(long, env = "CLICKHOUSE_PASSWORD", default_value = "", hide_env_values = true)]
    pub clickhouse_password: String,
    #[arg(long, env = "CLICKHOUSE_DATABASE", default_value = "analytics")]
    pub clickhouse_database: String,
}

impl ClickHouseArgs {
    pub fn client(&self) -> clickhouse::Client {
        clickhouse::Client::default()
            .with_url(&self.clickhouse_url)
            .with_user(&self.clickhouse_user)
            .with_password(&self.clickhouse_password)
            .with_validation(false)
    }
}

/// `cdc-processor verify`: compare PostgreSQL with ClickHouse; exit non-zero on any difference.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[arg(long, env = "CDC_PG_URL", default_value = DEFAULT_PG_URL)]
    pub pg_url: String,
    #[command(flatten)]
    pub clickhouse: ClickHouseArgs,
    /// Keep comparing until there is no difference or this many seconds passed (0 = once).
    #[arg(long, default_value_t = 0.0)]
    pub wait: f64,
    /// Print up to this many differing ids per table.
    #[arg(long, default_value_t = 5)]
    pub show: usize,
}

/// The differences of one table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableDiff {
    pub table: String,
    pub source_rows: usize,
    pub clickhouse_rows: usize,
    pub missing: Vec<i64>,
    pub extra: Vec<i64>,
    /// Ids whose values differ, with the differing column names.
    pub wrong: Vec<(i64, Vec<&'static str>)>,
}

impl TableDiff {
    pub fn differences(&self) -> usize {
        self.missing.len() + self.extra.len() + self.wrong.len()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub tables: Vec<TableDiff>,
}

impl VerifyReport {
    pub fn differences(&self) -> usize {
        self.tables.iter().map(TableDiff::differences).sum()
    }
    pub fn is_clean(&self) -> bool {
        self.differences() == 0
    }
    /// One line per table, ids of the first `show` differences of each kind.
    pub fn render(&self, show: usize) -> String {
        let mut out = String::new();
        for t in &self.tables {
            out.push_str(&format!(
                "verify: {:<12} postgres={:<7} clickhouse={:<7} missing={} extra={} wrong={}\n",
                t.table,
                t.source_rows,
                t.clickhouse_rows,
                t.missing.len(),
                t.extra.len(),
                t.wrong.len()
            ));
            if !t.missing.is_empty() {
                out.push_str(&format!("  missing ids: {:?}\n", &t.missing[..t.missing.len().min(show)]));
            }
            if !t.extra.is_empty() {
                out.push_str(&format!("  extra ids: {:?}\n", &t.extra[..t.extra.len().min(show)]));
            }
            for (id, cols) in t.wrong.iter().take(show) {
                out.push_str(&format!("  wrong id {id}: columns {cols:?}\n"));
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

/// One compared column: its name, how PostgreSQL and ClickHouse print it, how to compare it.
struct Col {
    name: &'static str,
    pg: &'static str,
    ch: &'static str,
    kind: Kind,
}

const fn col(name: &'static str, pg: &'static str, ch: &'static str, kind: Kind) -> Col {
    Col { name, pg, ch, kind }
}

struct Check {
    table: &'static str,
    /// FROM clause (PostgreSQL).
    pg_from: &'static str,
    cols: &'static [Col],
}

use Kind::*;

macro_rules! pg_ts {
    ($e:literal) => {
        concat!("to_char(", $e, " AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')")
    };
}

const CHECKS: &[Check] = &[
    Check {
        table: "customers",
        pg_from: "customers",
        cols: &[
            col("id", "id::text", "toString(id)", Int),
            col("email", "email", "email", Text),
            col("name", "name", "name", Text),
            col("country", "country", "toString(country)", Text),
            col("city", "city", "toString(city)", Text),
            col("created_at", pg_ts!("created_at"), "toString(created_at)", Timestamp),
        ],
    },
    Check {
        table: "products",
        pg_from: "products",
        cols: &[
            col("id", "id::text", "toString(id)", Int),
            col("name", "name", "name", Text),
            col("category", "category", "toString(category)", Text),
            col("price", "price::text", "toString(price)", Decimal),
            col("created_at", pg_ts!("created_at"), "toString(created_at)", Timestamp),
        ],
    },
    Check {
        table: "orders",
        pg_from: "orders",
        cols: &[
            col("id", "id::text", "toString(id)", Int),
            col("customer_id", "customer_id::text", "toString(customer_id)", Int),
            col("order_date", pg_ts!("order_date"), "toString(order_date)", Timestamp),
            col("status", "status", "toString(status)", Text),
            col("total", "total::text", "toString(total)", Decimal),
        ],
    },
    Check {
        table: "order_items",
        pg_from: "order_items",
        cols: &[
            col("id", "id::text", "toString(id)", Int),
            col("order_id", "order_id::text", "toString(order_id)", Int),
            col("product_id", "product_id::text", "toString(product_id)", Int),
            col("quantity", "quantity::text", "toString(quantity)", Int),
            col("price", "price::text", "toString(price)", Decimal),
        ],
    },
    Check {
        table: "sales_fact",
        pg_from: "order_items oi JOIN orders o ON o.id = oi.order_id \
                  JOIN customers c ON c.id = o.customer_id JOIN products p ON p.id = oi.product_id",
        cols: &[
            col("order_item_id", "oi.id::text", "toString(order_item_id)", Int),
            col("order_id", "oi.order_id::text", "toString(order_id)", Int),
            col("customer_id", "o.customer_id::text", "toString(customer_id)", Int),
            col("product_id", "oi.product_id::text", "toString(product_id)", Int),
            col("quantity", "oi.quantity::text", "toString(quantity)", Int),
            col("unit_price", "oi.price::text", "toString(unit_price)", Decimal),
            col("revenue", "(oi.quantity * oi.price)::text", "toString(revenue)", Decimal),
            col("order_status", "o.status", "toString(order_status)", Text),
            col("order_date", pg_ts!("o.order_date"), "toString(order_date)", Timestamp),
            col("customer_name", "c.name", "customer_name", Text),
            col("customer_country", "c.country", "toString(customer_country)", Text),
            col("customer_city", "c.city", "toString(customer_city)", Text),
            col("product_name", "p.name", "product_name", Text),
            col("product_category", "p.category", "toString(product_category)", Text),
        ],
    },
];

type Rows = BTreeMap<i64, Vec<Option<String>>>;

async fn pg_rows(pg: &tokio_postgres::Client, check: &Check) -> anyhow::Result<Rows> {
    let select: Vec<&str> = check.cols.iter().map(|c| c.pg).collect();
    let sql = format!("SELECT {} FROM {}", select.join(", "), check.pg_from);
    let mut out = Rows::new();
    for row in pg.query(sql.as_str(), &[]).await.with_context(|| format!("reading {} from PostgreSQL", check.table))? {
        let values: Vec<Option<String>> = (0..check.cols.len()).map(|i| row.get(i)).collect();
        let id = values.first().cloned().flatten().and_then(|v| v.parse().ok()).context("row without id")?;
        out.insert(id, values);
    }
    Ok(out)
}

/// Whether `db.name` exists in ClickHouse.
async fn ch_has_table(ch: &clickhouse::Client, db: &str, name: &str) -> anyhow::Result<bool> {
    let sql = format!(
        "SELECT count() FROM system.tables WHERE database = '{}' AND name = '{}'",
        escape_ch(db),
        escape_ch(name)
    );
    let bytes = ch.query(&sql).fetch_bytes("TabSeparated")?.collect().await?;
    Ok(String::from_utf8_lossy(&bytes).trim() != "0")
}

async fn ch_rows(ch: &clickhouse::Client, db: &str, check: &Check) -> anyhow::Result<Rows> {
    let select: Vec<&str> = check.cols.iter().map(|c| c.ch).collect();
    let current = format!("{}_current", check.table);
    let from = if ch_has_table(ch, db, &current).await? {
        format!("`{}`.`{current}`", escape_ident(db))
    } else {
        format!("`{}`.`{}` FINAL WHERE _is_deleted = 0", escape_ident(db), check.table)
    };
    let sql = format!("SELECT {} FROM {from}", select.join(", "));
    let bytes = ch
        .query(&sql)
        .fetch_bytes("TabSeparated")?
        .collect()
        .await
        .with_context(|| format!("reading {} from ClickHouse", check.table))?;
    let text = std::str::from_utf8(&bytes).context("ClickHouse sent non-UTF-8 text")?;
    let mut out = Rows::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let values: Vec<Option<String>> = line.split('\t').map(unescape_tsv).collect();
        if values.len() != check.cols.len() {
            bail!("ClickHouse returned {} columns for {}, expected {}", values.len(), check.table, check.cols.len());
        }
        let id = values.first().cloned().flatten().and_then(|v| v.parse().ok()).context("row without id")?;
        out.insert(id, values);
    }
    Ok(out)
}

/// TabSeparated field → value (`\N` is NULL; backslash escapes undone).
fn unescape_tsv(field: &str) -> Option<String> {
    if field == "\\N" {
        return None;
    }
    if !field.contains('\\') {
        return Some(field.to_string());
    }
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('0') => out.push('\0'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    Some(out)
}

fn escape_ch(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\'', "\\'")
}

fn escape_ident(s: &str) -> String {
    s.replace('`', "``")
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
            _ => false,
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
    let mut d = TableDiff {
        table: check.table.to_string(),
        source_rows: pg.len(),
        clickhouse_rows: ch.len(),
        ..Default::default()
    };
    for (id, pv) in pg {
        match ch.get(id) {
            None => d.missing.push(*id),
            Some(cv) => {
                let cols: Vec<&'static str> = check
                    .cols
                    .iter()
                    .enumerate()
                    .filter(|(i, c)| !same(c.kind, pv[*i].as_deref(), cv[*i].as_deref()))
                    .map(|(_, c)| c.name)
                    .collect();
                if !cols.is_empty() {
                    d.wrong.push((*id, cols));
                }
            }
        }
    }
    d.extra = ch.keys().filter(|id| !pg.contains_key(id)).copied().collect();
    d
}

/// Compares once.
pub async fn compare(
    pg: &tokio_postgres::Client,
    ch: &clickhouse::Client,
    database: &str,
) -> anyhow::Result<VerifyReport> {
    let mut report = VerifyReport::default();
    for check in CHECKS {
        // ClickHouse first: rows applied there after the PostgreSQL read would otherwise look
        // "extra" during a live run. (Verify is meant for a quiesced pipeline; `--wait` retries.)
        let c = ch_rows(ch, database, check).await?;
        let p = pg_rows(pg, check).await?;
        report.tables.push(diff(check, &p, &c));
    }
    Ok(report)
}

/// Compares, retrying for up to `args.wait` seconds until there is no difference.
pub async fn verify(args: &Args) -> anyhow::Result<VerifyReport> {
    let (pg, connection) = tokio_postgres::connect(&args.pg_url, NoTls).await.context("connecting to PostgreSQL")?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::error!(error = %err, "PostgreSQL connection closed");
        }
    });
    let ch = args.clickhouse.client();
    let deadline = Instant::now() + Duration::from_secs_f64(args.wait.max(0.0));
    loop {
        let report = compare(&pg, &ch, &args.clickhouse.clickhouse_database).await?;
        if report.is_clean() || Instant::now() >= deadline {
            return Ok(report);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `cdc-processor verify`: prints per-table counts; an error (non-zero exit) on any difference.
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
    fn timestamps_compare_at_the_clickhouse_resolution() {
        let pg = "2026-11-22 02:14:32.019849";
        assert!(same(Timestamp, Some(pg), Some("2026-11-22 02:14:32.019849")));
        assert!(same(Timestamp, Some(pg), Some("2026-11-22 02:14:32")));
        assert!(!same(Timestamp, Some(pg), Some("2026-11-22 02:14:33")));
        assert!(!same(Timestamp, Some(pg), Some("2026-11-22 02:14:32.019848")));
        assert!(same(Timestamp, Some("2026-11-22 02:14:32.010000"), Some("2026-11-22 02:14:32.01")));
    }

    #[test]
    fn tsv_unescapes() {
        assert_eq!(unescape_tsv("\\N"), None);
        assert_eq!(unescape_tsv("a\\tb\\\\c\\'"), Some("a\tb\\c'".to_string()));
        assert_eq!(unescape_tsv("São"), Some("São".to_string()));
    }

    #[test]
    fn diff_counts_missing_extra_wrong() {
        let check = &CHECKS[2];
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
        let pg: Rows = [row(1, "paid"), row(2, "paid"), row(3, "paid")].into_iter().collect();
        let mut ch: Rows = [row(2, "paid"), row(3, "shipped"), row(4, "paid")].into_iter().collect();
        if let Some(r) = ch.get_mut(&2) {
            r[4] = Some("1.500000".into());
            r[2] = Some("2026-01-01 00:00:00".into());
        }
        let d = diff(check, &pg, &ch);
        assert_eq!(d.missing, vec![1]);
        assert_eq!(d.extra, vec![4]);
        assert_eq!(d.wrong, vec![(3, vec!["status"])]);
        assert_eq!(d.differences(), 3);
    }
}
