//! Generic mirrors: any captured table, typed from what its events carry.
//!
//! Enters: a [`ChangeEvent`] of a table the mapping sends to a [`GenericTable`]. Leaves:
//! [`GenericRow`]s (key values, the other columns as they came, version, deletion flag), and
//! the column types they give (their ClickHouse names and RowBinary are `cdc-clickhouse`'s).
//!
//! A column's ClickHouse type is chosen from its first non-NULL value ([`ColumnType::of`]); a
//! later value is converted to the column's type when that is exact, and otherwise is an
//! incompatible schema change: a systemic error naming table and column, never a silent
//! conversion. The rules, and why NULL-only columns wait: docs/generic-mirrors.md.

use std::sync::Arc;

use crate::change::{ChangeEvent, Op, Row, Special, Value, Version};
use crate::error::{Classify, ErrorClass};
use crate::tables::GenericTable;

/// Scale of a decimal column whose first value has no more digits than this: the same
/// `Decimal(38, 6)` as the sales mirrors, so that the usual NUMERIC(p, s ≤ 6) columns never need
/// widening when a later value has more fraction digits than the first.
const MIN_DECIMAL_SCALE: u32 = 6;
pub const DECIMAL_PRECISION: u32 = 38;

/// The ClickHouse type of a generic mirror column (non-key columns are `Nullable` of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColumnType {
    /// Integers of every width, times and intervals (µs), and timestamps on 18.16 (µs).
    Int64,
    Float64,
    /// `Bool` (current servers) / `UInt8` (18.16).
    Bool,
    /// `Decimal(38, scale)`.
    Decimal {
        scale: u32,
    },
    /// Text, UUID, JSON, bytes, and arrays (as JSON text).
    String,
    /// `Date32` (current) / `Int32` days since the epoch (18.16).
    Date,
    /// `DateTime64(6, 'UTC')` (current servers).
    Timestamp,
}

impl ColumnType {
    /// The type a column gets from its first non-NULL value; `None` for NULL and the TOAST
    /// placeholder, which say nothing about the type.
    pub fn of(value: &Value) -> Option<ColumnType> {
        Some(match value {
            Value::Null | Value::Unavailable => return None,
            Value::Bool(_) => ColumnType::Bool,
            Value::Int(_) | Value::Time(_) | Value::Interval(_) => ColumnType::Int64,
            Value::Float(_) | Value::Special(_) => ColumnType::Float64,
            Value::Decimal(d) if d.scale <= DECIMAL_PRECISION => {
                ColumnType::Decimal { scale: d.scale.max(MIN_DECIMAL_SCALE) }
            }
            Value::Decimal(_) => ColumnType::String,
            Value::Text(_) | Value::Uuid(_) | Value::Json(_) | Value::Bytes(_) | Value::Array(_) => ColumnType::String,
            Value::Date(_) => ColumnType::Date,
            // A server without DateTime64 keeps it as Int64 µs (cdc-clickhouse decides).
            Value::Timestamp(_) => ColumnType::Timestamp,
        })
    }
}

/// A column of a generic mirror as ClickHouse has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub ty: ColumnType,
    pub nullable: bool,
}

/// One row of a generic mirror.
#[derive(Debug, Clone, PartialEq)]
pub struct GenericRow {
    pub table: Arc<GenericTable>,
    /// The key columns' values, in the order of [`GenericTable::key`]; never NULL.
    pub key: Vec<Value>,
    /// Every other column the image carried, in source order (none for a deletion).
    pub columns: Row,
    pub version: Version,
    pub is_deleted: bool,
}

impl GenericRow {
    pub(crate) fn has_unavailable(&self) -> bool {
        self.columns.iter().any(|(_, v)| *v == Value::Unavailable)
    }

    /// The value of column `name`: a key value, a carried column, or NULL.
    pub fn value(&self, name: &str) -> &Value {
        match self.table.key.iter().position(|k| k == name) {
            Some(i) => &self.key[i],
            None => self.columns.get(name).unwrap_or(&Value::Null),
        }
    }
}

/// Why a change of a generic table cannot become rows (poison: this message's own data).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RowError {
    #[error("the change to {table} carries no row image")]
    MissingImage { table: String },
    #[error("the change to {table} lacks key column `{column}` (or it is NULL)")]
    MissingKey { table: String, column: String },
}

impl Classify for RowError {
    fn class(&self) -> ErrorClass {
        ErrorClass::Poison
    }
    fn code(&self) -> &'static str {
        match self {
            RowError::MissingImage { .. } => "row.missing_image",
            RowError::MissingKey { .. } => "row.missing_key",
        }
    }
}

/// What one change does to a generic mirror.
#[derive(Debug, Clone, PartialEq)]
pub enum GenericChange {
    Rows(Vec<GenericRow>),
    /// Every row with a version below `version` is gone.
    Truncate {
        version: Version,
    },
}

/// Converts one change of a generic table into rows.
pub fn generic_change(table: &Arc<GenericTable>, event: &ChangeEvent) -> Result<GenericChange, RowError> {
    let missing_image = || RowError::MissingImage { table: table.name.clone() };
    let version = event.version;
    let tombstone = |key| GenericRow { table: table.clone(), key, columns: Row::new(), version, is_deleted: true };
    match event.op {
        Op::Truncate => Ok(GenericChange::Truncate { version }),
        Op::Delete => {
            let image = event.before.as_ref().or(event.after.as_ref()).ok_or_else(missing_image)?;
            Ok(GenericChange::Rows(vec![tombstone(key_of(table, image)?)]))
        }
        Op::Create | Op::Read | Op::Update => {
            let after = event.after.as_ref().ok_or_else(missing_image)?;
            let key = key_of(table, after)?;
            let columns: Row = after
                .iter()
                .filter(|(name, _)| !table.key.iter().any(|k| k == name))
                .map(|(name, value)| (name.to_owned(), value.clone()))
                .collect();
            let mut rows = Vec::with_capacity(2);
            // A key change that arrives as one update (DMS, the platform) removes the old key;
            // Debezium sends delete + create.
            if let Some(before) = &event.before
                && let Ok(old_key) = key_of(table, before)
                && old_key != key
            {
                rows.push(tombstone(old_key));
            }
            rows.push(GenericRow { table: table.clone(), key, columns, version, is_deleted: false });
            Ok(GenericChange::Rows(rows))
        }
    }
}

fn key_of(table: &GenericTable, image: &Row) -> Result<Vec<Value>, RowError> {
    table
        .key
        .iter()
        .map(|column| match image.get(column) {
            Some(Value::Null | Value::Unavailable) | None => {
                Err(RowError::MissingKey { table: table.name.clone(), column: column.clone() })
            }
            Some(value) => Ok(value.clone()),
        })
        .collect()
}

/// Why a value cannot be written into its column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueFault {
    /// The value is of another kind than the column, and no exact conversion exists: the
    /// source's schema changed in a way ClickHouse cannot follow in place (systemic).
    Incompatible,
    /// The value itself cannot be stored (NaN in a decimal, out of the type's range): poison.
    Unstorable(&'static str),
    /// A TOAST placeholder that was not completed (its older value may still be in flight).
    Missing,
}

/// A value as JSON text, for arrays kept in a `String` column: numbers as JSON numbers
/// (decimals written exactly), text as strings, NULL as null. Query them with
/// `JSONExtract(column, 'Array(Int64)')` and the like.
pub fn json_text(value: &Value) -> String {
    let mut out = String::new();
    write_json(&mut out, value);
    out
}

fn write_json(out: &mut String, value: &Value) {
    use std::fmt::Write;
    match value {
        Value::Null | Value::Unavailable => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(v) | Value::Time(v) | Value::Interval(v) => {
            let _ = write!(out, "{v}");
        }
        Value::Float(f) if f.is_finite() => {
            let _ = write!(out, "{f:?}");
        }
        Value::Decimal(d) => {
            let _ = write!(out, "{d}");
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(out, item);
            }
            out.push(']');
        }
        // Embedded JSON stays JSON.
        Value::Json(text) if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() => out.push_str(text),
        Value::Float(f) => out.push_str(&serde_json::Value::String(f.to_string()).to_string()),
        Value::Special(s) => out.push_str(match s {
            Special::NaN => "\"NaN\"",
            Special::PositiveInfinity => "\"Infinity\"",
            Special::NegativeInfinity => "\"-Infinity\"",
        }),
        Value::Text(s) | Value::Uuid(s) | Value::Json(s) => {
            out.push_str(&serde_json::Value::String(s.clone()).to_string())
        }
        Value::Bytes(b) => {
            let hex: String = b.iter().map(|byte| format!("{byte:02x}")).collect();
            out.push_str(&format!("\"\\\\x{hex}\""));
        }
        Value::Date(days) => {
            let date = chrono::DateTime::from_timestamp(i64::from(*days) * 86_400, 0).map(|t| t.date_naive());
            match date {
                Some(d) => out.push_str(&format!("\"{d}\"")),
                None => out.push_str("null"),
            }
        }
        Value::Timestamp(us) => match chrono::DateTime::from_timestamp_micros(*us) {
            Some(t) => out.push_str(&format!("\"{}\"", t.format("%Y-%m-%dT%H:%M:%S%.6f+00:00"))),
            None => out.push_str("null"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::{Decimal, InputFormat, TableRef};
    use crate::tables::MirrorTarget;

    fn table(key: &[&str]) -> Arc<GenericTable> {
        Arc::new(GenericTable {
            name: "notes".into(),
            key: key.iter().map(|k| (*k).to_owned()).collect(),
            declared: Vec::new(),
        })
    }

    fn event(op: Op, before: Option<Row>, after: Option<Row>) -> ChangeEvent {
        ChangeEvent {
            table: TableRef::new("public", "notes"),
            mirror: MirrorTarget::Generic(table(&["order_id", "line_no"])),
            op,
            before,
            after,
            version: Version(7),
            scale: crate::change::VersionScale::Lsn,
            commit_time_us: None,
            transaction_id: None,
            correlation_id: None,
            format: InputFormat::Debezium,
            snapshot: None,
        }
    }

    fn row(pairs: &[(&str, Value)]) -> Row {
        pairs.iter().map(|(n, v)| ((*n).to_owned(), v.clone())).collect()
    }

    #[test]
    fn composite_keys_split_from_the_other_columns_and_a_moved_key_leaves_a_tombstone() {
        let t = table(&["order_id", "line_no"]);
        let before = row(&[("order_id", Value::Int(1)), ("line_no", Value::Int(1))]);
        let after = row(&[("order_id", Value::Int(1)), ("line_no", Value::Int(2)), ("body", Value::Text("x".into()))]);
        let GenericChange::Rows(rows) = generic_change(&t, &event(Op::Update, Some(before), Some(after))).unwrap()
        else {
            panic!("rows expected")
        };
        assert_eq!(rows.len(), 2);
        assert!(rows[0].is_deleted && rows[0].key == vec![Value::Int(1), Value::Int(1)] && rows[0].columns.is_empty());
        assert_eq!(rows[1].key, vec![Value::Int(1), Value::Int(2)]);
        assert_eq!(rows[1].columns.len(), 1);
        assert_eq!(rows[1].value("body"), &Value::Text("x".into()));
        assert_eq!(rows[1].value("absent"), &Value::Null);
    }

    #[test]
    fn a_missing_or_null_key_column_is_poison() {
        let t = table(&["order_id", "line_no"]);
        let after = row(&[("order_id", Value::Int(1)), ("line_no", Value::Null)]);
        let err = generic_change(&t, &event(Op::Create, None, Some(after))).unwrap_err();
        assert_eq!((err.code(), err.class()), ("row.missing_key", ErrorClass::Poison));
        let err = generic_change(&t, &event(Op::Delete, None, None)).unwrap_err();
        assert_eq!(err.code(), "row.missing_image");
    }

    #[test]
    fn arrays_become_json_text_exactly() {
        let array = Value::Array(vec![
            Value::Int(1),
            Value::Null,
            Value::Decimal(Decimal::new(1050, 2)),
            Value::Text("a\"b".into()),
            Value::Array(vec![Value::Bool(true)]),
        ]);
        assert_eq!(json_text(&array), r#"[1,null,10.50,"a\"b",[true]]"#);
    }
}
