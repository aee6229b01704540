//! A generic mirror's values in ClickHouse: the column type a value gives on this server, the
//! type's name in DDL and in `system.columns`, and the RowBinary of a row and back.

use cdc_core::change::{Decimal, Special, Value};
use cdc_core::generic::{Column, ColumnType, DECIMAL_PRECISION, GenericRow, ValueFault, json_text};

use crate::dialect::Dialect;
use crate::rowbinary;

/// The type a column gets from its first non-NULL value on a server of `dialect`.
pub fn column_type_of(value: &Value, dialect: Dialect) -> Option<ColumnType> {
    ColumnType::of(value).map(|ty| stored_type(ty, dialect))
}

/// The type a column of type `ty` is stored as on a server of `dialect`: 18.16 has no
/// `DateTime64`, so a timestamp column is Int64 µs there.
pub fn stored_type(ty: ColumnType, dialect: Dialect) -> ColumnType {
    match (ty, dialect) {
        (ColumnType::Timestamp, Dialect::Legacy) => ColumnType::Int64,
        (ty, _) => ty,
    }
}

/// The type's name in DDL.
pub(crate) fn column_type_sql(ty: ColumnType, dialect: Dialect) -> String {
    match (ty, dialect) {
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
pub(crate) fn parse_column_type(sql: &str) -> Option<(ColumnType, bool)> {
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
pub(crate) fn encode_column(
    out: &mut Vec<u8>,
    dialect: Dialect,
    column: &Column,
    value: &Value,
) -> Result<(), ValueFault> {
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

/// Reads one value of `ty` back from RowBinary (TOAST completion reads stored rows this way);
/// `None` when the bytes end early.
pub(crate) fn read_value(input: &mut &[u8], ty: ColumnType, nullable: bool) -> Option<Value> {
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
    use std::sync::Arc;

    use cdc_core::change::{Row, Version};
    use cdc_core::tables::GenericTable;

    use super::*;

    fn row(pairs: &[(&str, Value)]) -> Row {
        pairs.iter().map(|(n, v)| ((*n).to_owned(), v.clone())).collect()
    }

    #[test]
    fn types_come_from_the_first_value_and_read_back_from_clickhouse_names() {
        let m = Dialect::Modern;
        assert_eq!(column_type_of(&Value::Decimal(Decimal::new(125, 2)), m), Some(ColumnType::Decimal { scale: 6 }));
        assert_eq!(column_type_of(&Value::Decimal(Decimal::new(1, 9)), m), Some(ColumnType::Decimal { scale: 9 }));
        assert_eq!(column_type_of(&Value::Null, m), None);
        assert_eq!(column_type_of(&Value::Timestamp(1), Dialect::Legacy), Some(ColumnType::Int64));
        for ty in [
            ColumnType::Int64,
            ColumnType::Float64,
            ColumnType::Bool,
            ColumnType::Decimal { scale: 6 },
            ColumnType::String,
            ColumnType::Date,
            ColumnType::Timestamp,
        ] {
            assert_eq!(parse_column_type(&format!("Nullable({})", column_type_sql(ty, m))), Some((ty, true)), "{ty:?}");
        }
        assert_eq!(parse_column_type("Decimal(38, 4)"), Some((ColumnType::Decimal { scale: 4 }, false)));
        assert_eq!(parse_column_type("LowCardinality(String)"), Some((ColumnType::String, false)));
        assert_eq!(parse_column_type("Decimal(18, 2)"), None, "Decimal64 is not written here");
        assert_eq!(parse_column_type("Array(Int64)"), None);
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
    fn rows_read_back_what_was_written() {
        let t = Arc::new(GenericTable { name: "notes".into(), key: vec!["id".into()], declared: Vec::new() });
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
