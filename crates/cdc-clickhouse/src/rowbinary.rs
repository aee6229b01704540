//! RowBinary encoding of mirror and fact rows.
//!
//! Enters: [`MirrorRow`]s and [`FactRow`]s. Leaves: bytes for `INSERT ... FORMAT RowBinary`.
//! RowBinary costs the server ~2.5x less CPU than JSONEachRow (docs/platform-facts.md §3); the column types
//! depend on the server's [`Dialect`], so the encoding is ours rather than serde's.

use crate::dialect::Dialect;
use cdc_core::fact::{FACT_COLUMNS, FactRow, FactValue};
use cdc_core::mirror::{Cell, MirrorRow};

pub(crate) fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_i32(out: &mut Vec<u8>, v: i32) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_u8(out: &mut Vec<u8>, v: u8) {
    out.push(v);
}

pub(crate) fn put_i128(out: &mut Vec<u8>, v: i128) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_f64(out: &mut Vec<u8>, v: f64) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub fn put_string(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

/// A `String` value: its length as a LEB128 varint, then the bytes (which need not be UTF-8).
pub(crate) fn put_bytes(out: &mut Vec<u8>, s: &[u8]) {
    let mut len = s.len() as u64;
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(s);
}

/// An instant in microseconds, as `DateTime64(6)` (modern) or `DateTime` seconds (legacy,
/// clamped to its range 1970..2106 since the type cannot hold anything else).
pub(crate) fn put_timestamp(out: &mut Vec<u8>, dialect: Dialect, micros: i64) {
    match dialect {
        Dialect::Modern => put_i64(out, clamp_datetime64(micros)),
        Dialect::Legacy => {
            let seconds = micros.div_euclid(1_000_000).clamp(0, i64::from(u32::MAX));
            out.extend_from_slice(&(seconds as u32).to_le_bytes());
        }
    }
}

/// DateTime64(6) holds 1900-01-01 .. 2299-12-31; ±infinity and anything beyond are clamped.
fn clamp_datetime64(micros: i64) -> i64 {
    const MIN: i64 = -2_208_988_800_000_000;
    const MAX: i64 = 10_413_791_999_999_999;
    micros.clamp(MIN, MAX)
}

/// Encodes one mirror row. Columns with [`Cell::Unavailable`] must have been resolved first.
pub fn encode_mirror_row(out: &mut Vec<u8>, dialect: Dialect, row: &MirrorRow) {
    let spec = row.table.spec();
    for (column, cell) in spec.columns.iter().zip(&row.cells) {
        use cdc_core::tables::ColumnKind as K;
        match (column.kind, cell) {
            (K::Int64, Cell::Int(v)) => put_i64(out, *v),
            (K::Int32, Cell::Int(v)) => put_i32(out, *v as i32),
            (K::Text, Cell::Text(s)) => put_string(out, s),
            (K::Decimal { .. }, Cell::Decimal(v)) => put_i128(out, *v),
            (K::Timestamp, Cell::Timestamp(us)) => put_timestamp(out, dialect, *us),
            // Unreachable for rows built by `mirror` (cells follow the spec); a default keeps
            // the row's byte layout intact rather than corrupting the whole insert.
            (kind, _) => encode_default(out, dialect, kind),
        }
    }
    put_u64(out, row.version.0);
    put_u8(out, u8::from(row.is_deleted));
}

fn encode_default(out: &mut Vec<u8>, dialect: Dialect, kind: cdc_core::tables::ColumnKind) {
    use cdc_core::tables::ColumnKind as K;
    match kind {
        K::Int64 => put_i64(out, 0),
        K::Int32 => put_i32(out, 0),
        K::Text => put_string(out, ""),
        K::Decimal { .. } => put_i128(out, 0),
        K::Timestamp => put_timestamp(out, dialect, 0),
    }
}

/// Encodes one `sales_fact` row, column by column of [`cdc_core::fact::FACT_COLUMNS`].
pub fn encode_fact_row(out: &mut Vec<u8>, dialect: Dialect, row: &FactRow) {
    for column in FACT_COLUMNS {
        match (column.value)(row) {
            FactValue::Int64(v) => put_i64(out, v),
            FactValue::Int32(v) => put_i32(out, v),
            FactValue::Decimal(v) => put_i128(out, v),
            FactValue::Text(v) => put_string(out, v),
            FactValue::Timestamp(micros) => put_timestamp(out, dialect, micros),
            FactValue::Version(version) => match dialect {
                Dialect::Modern => out.extend_from_slice(&version.to_le_u256()),
                Dialect::Legacy => put_u64(out, version.legacy_sum()),
            },
            FactValue::Flag(v) => put_u8(out, u8::from(v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_carry_a_leb128_length() {
        let mut out = Vec::new();
        put_string(&mut out, &"x".repeat(300));
        assert_eq!(&out[..2], &[0xac, 0x02]);
        assert_eq!(out.len(), 302);
    }

    #[test]
    fn legacy_timestamps_are_clamped_seconds() {
        let mut out = Vec::new();
        put_timestamp(&mut out, Dialect::Legacy, 1_704_067_200_999_999);
        assert_eq!(out, 1_704_067_200u32.to_le_bytes());
        out.clear();
        put_timestamp(&mut out, Dialect::Legacy, i64::MIN);
        assert_eq!(out, 0u32.to_le_bytes());
    }

    /// Reads one value of a ClickHouse type from RowBinary, returning its text and the rest.
    fn read_value<'a>(ty: &str, bytes: &'a [u8]) -> (String, &'a [u8]) {
        let fixed = |n: usize| (&bytes[..n], &bytes[n..]);
        match ty {
            "Int64" | "DateTime64(6, 'UTC')" => {
                let (v, rest) = fixed(8);
                (i64::from_le_bytes(v.try_into().unwrap()).to_string(), rest)
            }
            "UInt64" => {
                let (v, rest) = fixed(8);
                (u64::from_le_bytes(v.try_into().unwrap()).to_string(), rest)
            }
            "Int32" => {
                let (v, rest) = fixed(4);
                (i32::from_le_bytes(v.try_into().unwrap()).to_string(), rest)
            }
            "DateTime('UTC')" => {
                let (v, rest) = fixed(4);
                (u32::from_le_bytes(v.try_into().unwrap()).to_string(), rest)
            }
            "UInt8" => (bytes[0].to_string(), &bytes[1..]),
            "UInt256" => {
                let (v, rest) = fixed(32);
                (format!("{:x}", u128::from_le_bytes(v[16..].try_into().unwrap())), rest)
            }
            t if t.starts_with("Decimal(38") => {
                let (v, rest) = fixed(16);
                (i128::from_le_bytes(v.try_into().unwrap()).to_string(), rest)
            }
            "String" | "LowCardinality(String)" => {
                let len = bytes[0] as usize; // short strings only in this test
                (String::from_utf8(bytes[1..1 + len].to_vec()).unwrap(), &bytes[1 + len..])
            }
            other => panic!("type {other} has no reader in this test"),
        }
    }

    /// The fact row's encoding, `FACT_COLUMNS` and the DDL's types describe the same columns in
    /// the same order, on both dialects.
    #[test]
    fn fact_rows_encode_exactly_the_columns_the_ddl_declares() {
        use crate::schema::{fact_column_defs, fact_column_names};
        use cdc_core::fact::{FactRow, FactVersion};
        let row = FactRow {
            order_item_id: 1,
            order_id: 2,
            customer_id: 3,
            product_id: 4,
            quantity: 5,
            unit_price: 6,
            revenue: 7,
            order_status: "paid".into(),
            order_date_us: 8_000_000,
            customer_name: "Ada".into(),
            customer_country: "UK".into(),
            customer_city: "London".into(),
            product_name: "Lamp".into(),
            product_category: "Home".into(),
            version: FactVersion { item: 9, order: 0, dimensions: 0 },
            is_deleted: true,
        };
        for dialect in [Dialect::Modern, Dialect::Legacy] {
            let mut bytes = Vec::new();
            encode_fact_row(&mut bytes, dialect, &row);
            let mut rest = bytes.as_slice();
            let mut values = Vec::new();
            let defs = fact_column_defs(dialect);
            let names = fact_column_names();
            assert_eq!(defs.len(), names.len());
            for (def, name) in defs.iter().zip(&names) {
                let (column, ty) = def.split_once(' ').unwrap();
                assert_eq!(column, *name);
                let (value, remaining) = read_value(ty, rest);
                values.push(value);
                rest = remaining;
            }
            assert!(rest.is_empty(), "{dialect:?}: {} bytes left over", rest.len());
            // Modern: the high half of the UInt256 holds the item version; legacy: the sum.
            let version = "9";
            let date = if dialect == Dialect::Modern { "8000000" } else { "8" };
            assert_eq!(
                values,
                ["1", "2", "3", "4", "5", "6", "7", "paid", date, "Ada", "UK", "London", "Lamp", "Home", version, "1"]
            );
        }
    }
}
