//! Reads that inspect the warehouse from outside the function: `cdc-tools verify` (the live rows of
//! a mirror or of `sales_fact`, as text in a normal form, to compare with the source) and
//! `cdc-tools freshness` (whether a probe's marker is visible yet).
//!
//! Enters: table and column names. Leaves: typed rows, or a classified [`SinkError`]. Only
//! names travel into the SQL text, quoted; values come back to the caller, never into logs.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::dialect::quote_ident;
use crate::queries;
use crate::{SinkError, Warehouse};

/// One row as read for a comparison: each requested column's text in its normal form, `None`
/// for NULL.
type TextRow = Vec<Option<String>>;

/// The normal form a column is read in, so that another system's text of the same value can be
/// compared with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextForm {
    /// ClickHouse's own text of the value (`toString`): integers, decimals, floats, booleans,
    /// timestamps as the server prints them.
    Plain,
    /// A string column as stored (other types as `toString`): text, JSON, UUIDs, enums.
    Text,
    /// Bytes as lower-case hex.
    Hex,
    /// Days since 1970-01-01: a `Date`/`Date32` column (current servers) or `Int32` days (18.16).
    EpochDays,
    /// Microseconds since the epoch: a `DateTime64`/`DateTime` column (current servers) or
    /// `Int64` µs (18.16; also time of day and intervals).
    EpochMicros,
}

/// A column to read and the form to read it in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextColumn {
    pub(crate) name: String,
    form: TextForm,
}

impl TextColumn {
    pub fn new(name: impl Into<String>, form: TextForm) -> Self {
        Self { name: name.into(), form }
    }
}

/// The expression that reads `column` (a name, quoted here) in `form`, given its type in the
/// table; `None` when the table has no such column (it only ever carried NULL so far).
pub fn text_expr(column: &str, form: TextForm, ch_type: Option<&str>) -> String {
    let Some(ty) = ch_type else { return "NULL".to_string() };
    let c = quote_ident(column);
    let base = strip_wrappers(ty);
    match form {
        TextForm::Hex => format!("lower(hex({c}))"),
        TextForm::EpochDays if base.starts_with("Date") => format!("toString(toInt32({c}))"),
        TextForm::EpochMicros if base.starts_with("DateTime64") => format!("toString(toUnixTimestamp64Micro({c}))"),
        TextForm::EpochMicros if base.starts_with("DateTime") => {
            format!("toString(toInt64(toUnixTimestamp({c})) * 1000000)")
        }
        TextForm::Text if base == "String" => c,
        _ => format!("toString({c})"),
    }
}

/// `Nullable(T)` / `LowCardinality(T)` → `T`.
fn strip_wrappers(ty: &str) -> &str {
    let mut t = ty.trim();
    loop {
        let inner =
            t.strip_prefix("Nullable(").or_else(|| t.strip_prefix("LowCardinality(")).and_then(|r| r.strip_suffix(')'));
        match inner {
            Some(i) => t = i.trim(),
            None => return t,
        }
    }
}

impl Warehouse {
    /// Whether a table (or view) of this name exists in the warehouse's database.
    pub async fn has_table(&self, name: &str) -> Result<bool, SinkError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Count {
            n: u64,
        }
        let rows: Vec<Count> = self.sql_fetch(&queries::has_table_query(self.database(), name)).await?;
        Ok(rows.first().is_some_and(|c| c.n > 0))
    }

    /// The columns of a table and their types, by name (empty when there is no such table).
    async fn column_types(&self, table: &str) -> Result<BTreeMap<String, String>, SinkError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Described {
            name: String,
            r#type: String,
        }
        let rows: Vec<Described> = self.sql_fetch(&queries::columns_query(self.database(), table)).await?;
        Ok(rows.into_iter().map(|r| (r.name, r.r#type)).collect())
    }

    /// The live rows of a mirror (or of `sales_fact`), each column read as text in its form
    /// ([`text_expr`]; a column the table does not have reads NULL). Read from the table's
    /// `<table>_current` view when it exists (it also hides rows older than a truncation),
    /// otherwise `FINAL WHERE _is_deleted = 0`. A table that does not exist is an error.
    pub async fn live_rows_as_text(&self, table: &str, columns: &[TextColumn]) -> Result<Vec<TextRow>, SinkError> {
        let types = self.column_types(table).await?;
        let select: Vec<String> =
            columns.iter().map(|c| text_expr(&c.name, c.form, types.get(&c.name).map(String::as_str))).collect();
        let current = format!("{table}_current");
        let view = self.has_table(&current).await?.then_some(current.as_str());
        let sql = queries::live_rows_query(self.database(), table, view, &select);
        let bytes = self.sql_fetch_raw(&sql, "TabSeparated").await?;
        let text = std::str::from_utf8(&bytes).map_err(|_| SinkError::Protocol("result is not UTF-8".into()))?;
        let mut rows = Vec::new();
        for line in text.lines().filter(|l| !l.is_empty()) {
            let values: TextRow = line.split('\t').map(unescape_tsv).collect();
            if values.len() != columns.len() {
                return Err(SinkError::Protocol(format!(
                    "{} columns for {table}, expected {}",
                    values.len(),
                    columns.len()
                )));
            }
            rows.push(values);
        }
        Ok(rows)
    }

    /// The name of a live customer in the `customers` mirror (`None`: no live row), as the
    /// freshness probe reads its markers.
    pub async fn live_customer_name(&self, id: i64) -> Result<Option<String>, SinkError> {
        self.first_name(&queries::live_customer_name_query(self.database(), id)).await
    }

    /// The denormalized customer name of a live `sales_fact` row (`None`: no live row): the
    /// freshness probe's marker after the fact re-derivation.
    pub async fn live_fact_customer_name(&self, order_item_id: i64) -> Result<Option<String>, SinkError> {
        self.first_name(&queries::live_fact_customer_name_query(self.database(), order_item_id)).await
    }

    async fn first_name(&self, sql: &str) -> Result<Option<String>, SinkError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Name {
            name: String,
        }
        let rows: Vec<Name> = self.sql_fetch(sql).await?;
        Ok(rows.into_iter().next().map(|r| r.name))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsv_unescapes() {
        assert_eq!(unescape_tsv("\\N"), None);
        assert_eq!(unescape_tsv("a\\tb\\\\c\\'"), Some("a\tb\\c'".to_string()));
        assert_eq!(unescape_tsv("São"), Some("São".to_string()));
    }

    #[test]
    fn expressions_follow_the_column_type() {
        use TextForm as F;
        assert_eq!(text_expr("x", F::EpochMicros, None), "NULL");
        assert_eq!(
            text_expr("x", F::EpochMicros, Some("Nullable(DateTime64(6, 'UTC'))")),
            "toString(toUnixTimestamp64Micro(`x`))"
        );
        assert_eq!(
            text_expr("x", F::EpochMicros, Some("DateTime")),
            "toString(toInt64(toUnixTimestamp(`x`)) * 1000000)"
        );
        assert_eq!(text_expr("x", F::EpochMicros, Some("Nullable(Int64)")), "toString(`x`)");
        assert_eq!(text_expr("d", F::EpochDays, Some("Nullable(Date32)")), "toString(toInt32(`d`))");
        assert_eq!(text_expr("d", F::EpochDays, Some("Nullable(Int32)")), "toString(`d`)");
        assert_eq!(text_expr("b", F::Hex, Some("Nullable(String)")), "lower(hex(`b`))");
        assert_eq!(text_expr("t", F::Text, Some("Nullable(String)")), "`t`");
        assert_eq!(text_expr("t", F::Text, Some("LowCardinality(Nullable(String))")), "`t`");
        assert_eq!(text_expr("t", F::Text, Some("UUID")), "toString(`t`)");
        assert_eq!(text_expr("f", F::Plain, Some("Nullable(UInt8)")), "toString(`f`)");
        assert_eq!(text_expr("p", F::Plain, Some("Decimal(38, 10)")), "toString(`p`)");
        // Names are quoted: a backquote in a name cannot end the identifier.
        assert_eq!(text_expr("a`b", F::Plain, Some("Int64")), "toString(`a\\`b`)");
    }
}
