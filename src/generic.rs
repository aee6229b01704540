//! Generic mirrors: any captured table, typed from what its events carry.
//!
//! Enters: a [`ChangeEvent`] of a table the mapping sends to a [`GenericTable`]. Leaves:
//! [`GenericRow`]s (key values, the other columns as they came, version, deletion flag), and,
//! at insert time, their RowBinary encoding against the columns the ClickHouse table really has.
//!
//! A column's ClickHouse type is chosen from its first non-NULL value ([`ColumnType::of`]); a
//! later value is converted to the column's type when that is exact, and otherwise is an
//! incompatible schema change: a systemic error naming table and column, never a silent
//! conversion. The rules, and why NULL-only columns wait: docs/generic-mirrors.md.

use std::sync::Arc;

use crate::change::{ChangeEvent, Decimal, Op, Row, Special, Value, Version};
use crate::error::{Classify, ErrorClass};
use crate::sink::dialect::Dialect;
use crate::sink::rowbinary;
use crate::tables::GenericTable;

/// Scale of a decimal column whose first value has no more digits than this: the same
/// `Decimal(38, 6)` as the sales mirrors, so that the usual NUMERIC(p, s ≤ 6) columns never need
/// widening when a later value has more fraction digits than the first.
const MIN_DECIMAL_SCALE: u32 = 6;
const DECIMAL_PRECISION: u32 = 38;

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
    pub fn of(value: &Value, dialect: Dialect) -> Option<ColumnType> {
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
            Value::Timestamp(_) => match dialect {
                Dialect::Modern => ColumnType::Timestamp,
                Dialect::Legacy => ColumnType::Int64,
            },
        })
    }

    /// The type's name in DDL.
    pub fn sql(self, dialect: Dialect) -> String {
        match (self, dialect) {
            (ColumnType::Int64, _) => "Int64".into(),
            (ColumnType::Float64, _) => "Float64".into(),
            (ColumnType::Bool, Dialect::Modern) => "Bool".into(),
            (ColumnType::Bool, Dialect::Legacy) => "UInt8".into(),
            (ColumnType::Decimal { scale }, _) => format!("Decimal({DECIMAL_PRECISION}, {scale})"),
            (ColumnType::String, _) => "String".into(),
            (ColumnType::Date, Dialect::Modern) => "Date32".into(),
            (ColumnType::Date, Dialect::Legacy) => "Int32".into(),
            (ColumnType::Timestamp, _) => "DateTime64(6, 'UTC')".into(),
        }
    }

    /// Reads a type as `system.columns` names it: `(type, nullable)`, or `None` for a type this
    /// processor does not write (an operator changed the column to something else).
    pub fn parse(sql: &str) -> Option<(ColumnType, bool)> {
        let (inner, nullable) = match sql.strip_prefix("Nullable(").and_then(|s| s.strip_suffix(')')) {
            Some(inner) => (inner, true),
            None => (sql, false),
        };
        let inner = inner.strip_prefix("LowCardinality(").and_then(|s| s.strip_suffix(')')).unwrap_or(inner);
        let ty = match inner {
            "Int64" => ColumnType::Int64,
            "Float64" => ColumnType::Float64,
            "Bool" | "UInt8" => ColumnType::Bool,
            "String" => ColumnType::String,
            "Date32" | "Int32" => ColumnType::Date,
            "DateTime64(6, 'UTC')" => ColumnType::Timestamp,
            _ => {
                let args = inner.strip_prefix("Decimal(")?.strip_suffix(')')?;
                let (precision, scale) = args.split_once(',')?;
                let (precision, scale) = (precision.trim().parse::<u32>().ok()?, scale.trim().parse::<u32>().ok()?);
                // Decimal128 is the only width encoded here (16 bytes in RowBinary).
                if !(19..=38).contains(&precision) || scale > precision {
                    return None;
                }
                ColumnType::Decimal { scale }
            }
        };
        Some((ty, nullable))
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
    pub fn has_unavailable(&self) -> bool {
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

/// Encodes one row: `columns` in order (key columns first, as the table has them), then
/// `_version` and `_is_deleted`. On a fault, returns the column it happened in.
pub fn encode_row(
    out: &mut Vec<u8>,
    dialect: Dialect,
    columns: &[Column],
    row: &GenericRow,
) -> Result<(), (String, ValueFault)> {
    for column in columns {
        encode_column(out, dialect, column, row.value(&column.name)).map_err(|fault| (column.name.clone(), fault))?;
    }
    rowbinary::put_u64(out, row.version.0);
    rowbinary::put_u8(out, u8::from(row.is_deleted));
    Ok(())
}

/// Encodes one value into `column` (a `Nullable` column writes its NULL flag first).
pub fn encode_column(out: &mut Vec<u8>, dialect: Dialect, column: &Column, value: &Value) -> Result<(), ValueFault> {
    if column.nullable {
        if *value == Value::Null {
            rowbinary::put_u8(out, 1);
            return Ok(());
        }
        rowbinary::put_u8(out, 0);
    }
    encode_value(out, dialect, column.ty, value)
}

/// 2^53: integers up to this are exact in a Float64.
const EXACT_IN_F64: i64 = 1 << 53;

fn encode_value(out: &mut Vec<u8>, dialect: Dialect, ty: ColumnType, value: &Value) -> Result<(), ValueFault> {
    use ColumnType as T;
    use Value as V;
    match (ty, value) {
        (_, V::Unavailable) => return Err(ValueFault::Missing),
        // NULL into a column ClickHouse holds without `Nullable` (an operator's change): only
        // altering the column can help, as for any other value the column cannot take.
        (_, V::Null) => return Err(ValueFault::Incompatible),
        (T::Int64, V::Int(v) | V::Time(v) | V::Interval(v) | V::Timestamp(v)) => rowbinary::put_i64(out, *v),
        (T::Int64, V::Decimal(d)) => {
            let whole = d.rescale(0).ok_or(ValueFault::Incompatible)?;
            rowbinary::put_i64(
                out,
                i64::try_from(whole.unscaled).map_err(|_| ValueFault::Unstorable("value.out_of_range"))?,
            );
        }
        (T::Float64, V::Float(f)) => rowbinary::put_f64(out, *f),
        (T::Float64, V::Int(v)) if v.abs() <= EXACT_IN_F64 => rowbinary::put_f64(out, *v as f64),
        (T::Float64, V::Special(s)) => rowbinary::put_f64(
            out,
            match s {
                Special::NaN => f64::NAN,
                Special::PositiveInfinity => f64::INFINITY,
                Special::NegativeInfinity => f64::NEG_INFINITY,
            },
        ),
        (T::Bool, V::Bool(b)) => rowbinary::put_u8(out, u8::from(*b)),
        (T::Decimal { scale }, V::Decimal(_) | V::Int(_)) => {
            let d = match value {
                V::Decimal(d) => *d,
                V::Int(v) => Decimal::new(i128::from(*v), 0),
                _ => return Err(ValueFault::Incompatible),
            };
            // More fraction digits than the column keeps: only a wider column could hold it.
            let stored = d.rescale(scale).ok_or(if d.scale > scale {
                ValueFault::Incompatible
            } else {
                ValueFault::Unstorable("value.decimal_not_exact")
            })?;
            if stored.unscaled.unsigned_abs() >= 10u128.pow(DECIMAL_PRECISION) {
                return Err(ValueFault::Unstorable("value.decimal_not_exact"));
            }
            rowbinary::put_i128(out, stored.unscaled);
        }
        (T::Decimal { .. }, V::Special(Special::NaN)) => return Err(ValueFault::Unstorable("value.decimal_nan")),
        (T::Decimal { .. }, V::Special(_)) => return Err(ValueFault::Unstorable("value.decimal_not_exact")),
        (T::String, V::Text(s) | V::Uuid(s) | V::Json(s)) => rowbinary::put_string(out, s),
        (T::String, V::Bytes(b)) => rowbinary::put_bytes(out, b),
        (T::String, V::Int(v)) => rowbinary::put_string(out, &v.to_string()),
        (T::String, V::Decimal(d)) => rowbinary::put_string(out, &d.to_string()),
        (T::String, V::Bool(b)) => rowbinary::put_string(out, if *b { "true" } else { "false" }),
        (T::String, V::Array(_)) => rowbinary::put_string(out, &json_text(value)),
        (T::Date, V::Date(days)) => {
            // Date32 holds 1900-01-01 ..= 2299-12-31.
            if dialect == Dialect::Modern && !(-25_567..=120_529).contains(days) {
                return Err(ValueFault::Unstorable("value.out_of_range"));
            }
            rowbinary::put_i32(out, *days);
        }
        (T::Timestamp, V::Timestamp(us)) => rowbinary::put_timestamp(out, dialect, *us),
        (T::Timestamp, V::Date(days)) => rowbinary::put_timestamp(out, dialect, i64::from(*days) * 86_400_000_000),
        (T::Timestamp, V::Special(Special::PositiveInfinity)) => rowbinary::put_timestamp(out, dialect, i64::MAX),
        (T::Timestamp, V::Special(Special::NegativeInfinity)) => rowbinary::put_timestamp(out, dialect, i64::MIN),
        _ => return Err(ValueFault::Incompatible),
    }
    Ok(())
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

/// Reads one value of `ty` back from RowBinary (TOAST completion reads stored rows this way);
/// `None` when the bytes end early.
pub fn read_value(input: &mut &[u8], ty: ColumnType, nullable: bool) -> Option<Value> {
    fn take<const N: usize>(input: &mut &[u8]) -> Option<[u8; N]> {
        let (head, rest) = input.split_first_chunk::<N>()?;
        *input = rest;
        Some(*head)
    }
    if nullable && take::<1>(input)?[0] == 1 {
        return Some(Value::Null);
    }
    Some(match ty {
        ColumnType::Int64 => Value::Int(i64::from_le_bytes(take(input)?)),
        ColumnType::Float64 => Value::Float(f64::from_le_bytes(take(input)?)),
        ColumnType::Bool => Value::Bool(take::<1>(input)?[0] != 0),
        ColumnType::Decimal { scale } => Value::Decimal(Decimal::new(i128::from_le_bytes(take(input)?), scale)),
        ColumnType::Date => Value::Date(i32::from_le_bytes(take(input)?)),
        ColumnType::Timestamp => Value::Timestamp(i64::from_le_bytes(take(input)?)),
        ColumnType::String => {
            let mut len: u64 = 0;
            let mut shift = 0;
            loop {
                let byte = take::<1>(input)?[0];
                len |= u64::from(byte & 0x7f) << shift;
                if byte & 0x80 == 0 {
                    break;
                }
                shift += 7;
                if shift > 63 {
                    return None;
                }
            }
            let len = usize::try_from(len).ok()?;
            if input.len() < len {
                return None;
            }
            let (bytes, rest) = input.split_at(len);
            *input = rest;
            match std::str::from_utf8(bytes) {
                Ok(text) => Value::Text(text.to_owned()),
                Err(_) => Value::Bytes(bytes.to_vec()),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::{InputFormat, TableRef};
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
    fn types_come_from_the_first_value_and_read_back_from_clickhouse_names() {
        let m = Dialect::Modern;
        assert_eq!(ColumnType::of(&Value::Decimal(Decimal::new(125, 2)), m), Some(ColumnType::Decimal { scale: 6 }));
        assert_eq!(ColumnType::of(&Value::Decimal(Decimal::new(1, 9)), m), Some(ColumnType::Decimal { scale: 9 }));
        assert_eq!(ColumnType::of(&Value::Null, m), None);
        assert_eq!(ColumnType::of(&Value::Timestamp(1), Dialect::Legacy), Some(ColumnType::Int64));
        for ty in [
            ColumnType::Int64,
            ColumnType::Float64,
            ColumnType::Bool,
            ColumnType::Decimal { scale: 6 },
            ColumnType::String,
            ColumnType::Date,
            ColumnType::Timestamp,
        ] {
            assert_eq!(ColumnType::parse(&format!("Nullable({})", ty.sql(m))), Some((ty, true)), "{ty:?}");
        }
        assert_eq!(ColumnType::parse("Decimal(38, 4)"), Some((ColumnType::Decimal { scale: 4 }, false)));
        assert_eq!(ColumnType::parse("LowCardinality(String)"), Some((ColumnType::String, false)));
        assert_eq!(ColumnType::parse("Decimal(18, 2)"), None, "Decimal64 is not written here");
        assert_eq!(ColumnType::parse("Array(Int64)"), None);
    }

    fn encode(ty: ColumnType, value: Value) -> Result<Vec<u8>, ValueFault> {
        let mut out = Vec::new();
        encode_value(&mut out, Dialect::Modern, ty, &value).map(|()| out)
    }

    #[test]
    fn values_convert_only_exactly() {
        let dec = |u, s| Value::Decimal(Decimal::new(u, s));
        assert_eq!(encode(ColumnType::Decimal { scale: 6 }, dec(125, 2)).unwrap(), 1_250_000i128.to_le_bytes());
        assert_eq!(encode(ColumnType::Decimal { scale: 6 }, dec(1, 7)), Err(ValueFault::Incompatible));
        assert_eq!(
            encode(ColumnType::Decimal { scale: 6 }, Value::Special(Special::NaN)),
            Err(ValueFault::Unstorable("value.decimal_nan"))
        );
        assert_eq!(encode(ColumnType::Int64, dec(500, 2)).unwrap(), 5i64.to_le_bytes());
        assert_eq!(encode(ColumnType::Int64, dec(501, 2)), Err(ValueFault::Incompatible));
        assert_eq!(encode(ColumnType::Int64, Value::Text("1".into())), Err(ValueFault::Incompatible));
        assert_eq!(encode(ColumnType::Float64, Value::Int(1 << 54)), Err(ValueFault::Incompatible));
        // Anything textual widens into a String column (int → text in the source).
        assert_eq!(encode(ColumnType::String, Value::Int(12)).unwrap(), b"\x0212");
        assert_eq!(encode(ColumnType::Date, Value::Date(200_000)), Err(ValueFault::Unstorable("value.out_of_range")));
        // No retry makes a non-Nullable column take NULL; a placeholder may yet be completed.
        assert_eq!(encode(ColumnType::Int64, Value::Null), Err(ValueFault::Incompatible));
        assert_eq!(encode(ColumnType::Int64, Value::Unavailable), Err(ValueFault::Missing));
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

    #[test]
    fn rows_read_back_what_was_written() {
        let t = table(&["id"]);
        let columns = vec![
            Column { name: "id".into(), ty: ColumnType::Int64, nullable: false },
            Column { name: "amount".into(), ty: ColumnType::Decimal { scale: 6 }, nullable: true },
            Column { name: "body".into(), ty: ColumnType::String, nullable: true },
            Column { name: "gone".into(), ty: ColumnType::Float64, nullable: true },
        ];
        let r = GenericRow {
            table: t,
            key: vec![Value::Int(3)],
            columns: row(&[("amount", Value::Decimal(Decimal::new(5, 1))), ("body", Value::Bytes(vec![0xff, 0]))]),
            version: Version(9),
            is_deleted: false,
        };
        let mut out = Vec::new();
        encode_row(&mut out, Dialect::Modern, &columns, &r).unwrap();
        let mut input = out.as_slice();
        let back: Vec<Value> = columns.iter().map(|c| read_value(&mut input, c.ty, c.nullable).unwrap()).collect();
        assert_eq!(
            back,
            vec![Value::Int(3), Value::Decimal(Decimal::new(500_000, 6)), Value::Bytes(vec![0xff, 0]), Value::Null]
        );
        assert_eq!(input, [9, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(read_value(&mut &[0u8, 5][..], ColumnType::String, true), None, "truncated input");
    }
}
