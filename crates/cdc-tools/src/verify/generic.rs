//! The captured tables beyond the sales tables: each compared with its generic mirror, columns
//! from PostgreSQL's catalog, each read on both sides in a normal form chosen by its PostgreSQL
//! type and its ClickHouse column type ([`GenericKind`]), rows matched by the key columns.

use super::*;
use cdc_core::redact::Action;
use cdc_core::tables::{CapturedSource, MirrorTarget, TableMapping};

/// One captured table compared with its generic mirror `<clickhouse_table>` (read through
/// `<clickhouse_table>_current`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct VerifyTable {
    /// Set for a `database.schema.table` entry: only that source database has the table.
    pub(super) pg_database: Option<String>,
    pg_schema: String,
    pg_table: String,
    clickhouse_table: String,
    key_columns: Vec<String>,
}

/// The generic tables of a `CAPTURED_TABLES` value ([`TableMapping::parse`], the processor's
/// own reading of it): its relational entries whose mirror is generic. The four sales mirrors
/// have their own checks (`checks`, `sales_fact`); the platform's entities have no PostgreSQL
/// table to compare with.
pub(super) fn verify_tables(spec: &str) -> anyhow::Result<Vec<VerifyTable>> {
    let mapping = TableMapping::parse(spec)?;
    Ok(mapping
        .entries()
        .filter_map(|(source, target)| match (source, target) {
            (CapturedSource::Table { database, schema, table }, MirrorTarget::Generic(generic)) => Some(VerifyTable {
                pg_database: database.clone(),
                pg_schema: schema.clone(),
                pg_table: table.clone(),
                clickhouse_table: generic.name.clone(),
                key_columns: generic.key.clone(),
            }),
            _ => None,
        })
        .collect())
}

/// How a generic mirror's column is read on both sides and compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GenericKind {
    /// Integers, compared as i64.
    Int,
    /// float8, compared as the exact f64 (NaN equals NaN).
    Float64,
    /// float4: the f32 PostgreSQL stored, whatever width ClickHouse keeps it at.
    Float32,
    /// numeric, compared exactly whatever the scale.
    Decimal,
    Bool,
    /// Text, uuid, enums, ...: compared as text.
    Text,
    /// bytea, compared as lower-case hex.
    Bytes,
    /// json/jsonb and arrays: compared as JSON values, numbers exactly.
    Json,
    /// timestamps (µs since the epoch), time and interval (µs): integers.
    Micros,
    /// date: days since the epoch.
    Days,
}

impl GenericKind {
    /// From PostgreSQL's `pg_type.typname` and `typcategory` (`A` for arrays).
    pub(crate) fn from_pg(typname: &str, category: &str) -> GenericKind {
        if category == "A" {
            return GenericKind::Json;
        }
        match typname {
            "int2" | "int4" | "int8" | "oid" => GenericKind::Int,
            "float8" => GenericKind::Float64,
            "float4" => GenericKind::Float32,
            "numeric" => GenericKind::Decimal,
            "bool" => GenericKind::Bool,
            "bytea" => GenericKind::Bytes,
            "json" | "jsonb" => GenericKind::Json,
            "timestamptz" | "timestamp" | "time" | "interval" => GenericKind::Micros,
            "date" => GenericKind::Days,
            _ => GenericKind::Text,
        }
    }

    /// How ClickHouse prints a column of this kind for the comparison (the form [`pg_expr`]
    /// gives PostgreSQL's side).
    fn text_form(self) -> TextForm {
        match self {
            GenericKind::Bytes => TextForm::Hex,
            GenericKind::Days => TextForm::EpochDays,
            GenericKind::Micros => TextForm::EpochMicros,
            GenericKind::Text | GenericKind::Json => TextForm::Text,
            GenericKind::Int
            | GenericKind::Float64
            | GenericKind::Float32
            | GenericKind::Decimal
            | GenericKind::Bool => TextForm::Plain,
        }
    }
}

/// PostgreSQL's text of a column in the normal form of its kind (`c` is the quoted name).
fn pg_expr(c: &str, typname: &str, kind: GenericKind) -> String {
    match kind {
        GenericKind::Json if typname.starts_with('_') => format!("array_to_json({c})::text"),
        GenericKind::Bytes => format!("encode({c}, 'hex')"),
        GenericKind::Days => format!("CASE WHEN isfinite({c}) THEN ({c} - DATE '1970-01-01')::text ELSE {c}::text END"),
        GenericKind::Micros if typname == "interval" => {
            // Debezium's MicroDuration: a month is 365.25 / 12 days (30.4375 × 86400 s).
            format!(
                "((extract(year FROM {c}) * 12 + extract(month FROM {c})) * 2629800000000 \
                 + extract(day FROM {c}) * 86400000000 \
                 + (extract(hour FROM {c}) * 3600 + extract(minute FROM {c}) * 60 + extract(second FROM {c})) * 1000000\
                 )::numeric(38, 0)::text"
            )
        }
        GenericKind::Micros if typname == "time" => {
            format!("(extract(epoch FROM {c}) * 1000000)::numeric(38, 0)::text")
        }
        // ±infinity has no epoch: its text is compared as is.
        GenericKind::Micros => format!(
            "CASE WHEN isfinite({c}) THEN (extract(epoch FROM {c}) * 1000000)::numeric(38, 0)::text ELSE {c}::text END"
        ),
        _ => format!("{c}::text"),
    }
}

/// Whether PostgreSQL's and ClickHouse's normal forms are the same value of this kind.
fn same_generic(kind: GenericKind, pg: Option<&str>, ch: Option<&str>) -> bool {
    let (p, c) = match (pg, ch) {
        (None, None) => return true,
        (Some(p), Some(c)) => (p.trim(), c.trim()),
        _ => return false,
    };
    match kind {
        GenericKind::Int | GenericKind::Micros | GenericKind::Days => match (p.parse::<i64>(), c.parse::<i64>()) {
            (Ok(a), Ok(b)) => a == b,
            // ±infinity and values beyond i64 fall back to their text.
            _ => p == c,
        },
        GenericKind::Float64 => match (p.parse::<f64>(), c.parse::<f64>()) {
            (Ok(a), Ok(b)) => (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits(),
            _ => false,
        },
        GenericKind::Float32 => match (p.parse::<f32>(), c.parse::<f32>()) {
            (Ok(a), Ok(b)) => (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits(),
            _ => false,
        },
        GenericKind::Decimal => match (exact_number(p), exact_number(c)) {
            (Some(a), Some(b)) => a == b,
            // NaN (and ±Infinity) of a numeric.
            _ => p.eq_ignore_ascii_case(c),
        },
        GenericKind::Bool => parse_bool(p).is_some() && parse_bool(p) == parse_bool(c),
        GenericKind::Text => p == c,
        GenericKind::Bytes => p.eq_ignore_ascii_case(c),
        GenericKind::Json => {
            p == c || matches!((canonical_json(p, 0), canonical_json(c, 0)), (Some(a), Some(b)) if a == b)
        }
    }
}

fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "true" | "t" | "1" => Some(true),
        "false" | "f" | "0" => Some(false),
        _ => None,
    }
}

/// A decimal number's exact normal form: `0`, or sign, significant digits without leading or
/// trailing zeros, and the power of ten (`-12.340e1` → `-1234e-1`). `None` if not a number.
fn exact_number(text: &str) -> Option<String> {
    let (negative, rest) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(i) => {
            let e = &rest[i + 1..];
            // More digits than any real exponent: refuse rather than overflow.
            if e.trim_start_matches(['+', '-']).len() > 9 {
                return None;
            }
            (&rest[..i], e.parse::<i64>().ok()?)
        }
        None => (rest, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if (int.is_empty() && frac.is_empty()) || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = format!("{int}{frac}");
    let mut exp = exponent - frac.len() as i64;
    let digits = digits.trim_start_matches('0');
    if digits.is_empty() {
        return Some("0".to_string());
    }
    let significant = digits.trim_end_matches('0');
    exp += (digits.len() - significant.len()) as i64;
    Some(format!("{}{significant}e{exp}", if negative { "-" } else { "" }))
}

/// A JSON value in a form where equal values compare equal: object keys sorted, numbers exact.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CanonicalJson {
    Null,
    Bool(bool),
    Number(String),
    String(String),
    Array(Vec<CanonicalJson>),
    Object(BTreeMap<String, CanonicalJson>),
}

/// Nesting deeper than this is not compared (treated as different).
const MAX_JSON_DEPTH: usize = 64;

fn canonical_json(text: &str, depth: usize) -> Option<CanonicalJson> {
    use serde_json::value::RawValue;
    if depth > MAX_JSON_DEPTH {
        return None;
    }
    let text = text.trim();
    Some(match text.as_bytes().first()? {
        b'{' => {
            let map: BTreeMap<String, &RawValue> = serde_json::from_str(text).ok()?;
            let mut out = BTreeMap::new();
            for (k, v) in map {
                out.insert(k, canonical_json(v.get(), depth + 1)?);
            }
            CanonicalJson::Object(out)
        }
        b'[' => {
            let items: Vec<&RawValue> = serde_json::from_str(text).ok()?;
            CanonicalJson::Array(items.iter().map(|v| canonical_json(v.get(), depth + 1)).collect::<Option<_>>()?)
        }
        b'"' => CanonicalJson::String(serde_json::from_str(text).ok()?),
        _ => match text {
            "null" => CanonicalJson::Null,
            "true" => CanonicalJson::Bool(true),
            "false" => CanonicalJson::Bool(false),
            _ => CanonicalJson::Number(exact_number(text)?),
        },
    })
}

/// A key column's value as a key part (both sides print keys alike after this).
fn key_part(kind: GenericKind, value: Option<&str>) -> KeyPart {
    let Some(v) = value.map(str::trim) else { return KeyPart::Text("NULL".to_string()) };
    match kind {
        GenericKind::Int | GenericKind::Micros | GenericKind::Days => {
            v.parse().map(KeyPart::Int).unwrap_or_else(|_| KeyPart::Text(v.to_string()))
        }
        GenericKind::Decimal => KeyPart::Text(exact_number(v).unwrap_or_else(|| v.to_string())),
        GenericKind::Bool => KeyPart::Text(parse_bool(v).map_or_else(|| v.to_string(), |b| b.to_string())),
        GenericKind::Bytes => KeyPart::Text(v.to_ascii_lowercase()),
        _ => KeyPart::Text(v.to_string()),
    }
}

/// One column of a generic comparison.
#[derive(Debug, Clone)]
struct GenericCol {
    name: String,
    typname: String,
    kind: GenericKind,
}

/// The source table's columns, from PostgreSQL's catalog (a domain is read as its base type).
async fn pg_columns(pg: &tokio_postgres::Client, table: &VerifyTable) -> anyhow::Result<Vec<GenericCol>> {
    let rows = pg
        .query(
            "SELECT a.attname::text, b.typname::text, b.typcategory::text \
             FROM pg_attribute a \
             JOIN pg_class c ON c.oid = a.attrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_type t ON t.oid = a.atttypid \
             JOIN pg_type b ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END \
             WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
            &[&table.pg_schema, &table.pg_table],
        )
        .await
        .with_context(|| format!("reading the columns of {}.{}", table.pg_schema, table.pg_table))?;
    if rows.is_empty() {
        bail!("table {}.{} does not exist in PostgreSQL", table.pg_schema, table.pg_table);
    }
    Ok(rows
        .iter()
        .map(|r| {
            let (name, typname, category): (String, String, String) = (r.get(0), r.get(1), r.get(2));
            GenericCol { kind: GenericKind::from_pg(&typname, &category), name, typname }
        })
        .collect())
}

/// The key of a row given all its column values (`key_idx`: the key columns' positions).
fn row_key(cols: &[GenericCol], key_idx: &[usize], values: &[Option<String>]) -> Key {
    Key(key_idx.iter().map(|&i| key_part(cols[i].kind, values[i].as_deref())).collect())
}

/// Compares one captured table with its generic mirror.
pub(super) async fn compare_generic(
    pg: &tokio_postgres::Client,
    ch: &Warehouse,
    table: &VerifyTable,
    redactor: &Redactor,
) -> anyhow::Result<TableDiff> {
    let label = table.clickhouse_table.clone();
    let mut cols = pg_columns(pg, table).await?;
    // A hashed column holds text whatever the source's type.
    for col in &mut cols {
        if redactor.rules().action(&label, &col.name) == Some(Action::Hash) {
            col.kind = GenericKind::Text;
        }
    }
    let key_idx: Vec<usize> = table
        .key_columns
        .iter()
        .map(|k| {
            cols.iter()
                .position(|c| &c.name == k)
                .with_context(|| format!("{}.{} has no key column {k}", table.pg_schema, table.pg_table))
        })
        .collect::<anyhow::Result<_>>()?;

    // ClickHouse first (see `compare`). A mirror not created yet holds no rows.
    let mut ch_side = Rows::new();
    if ch.has_table(&table.clickhouse_table).await? {
        let columns: Vec<TextColumn> =
            cols.iter().map(|c| TextColumn::new(c.name.clone(), c.kind.text_form())).collect();
        let rows = ch
            .live_rows_as_text(&table.clickhouse_table, &columns)
            .await
            .with_context(|| format!("reading {label} from ClickHouse"))?;
        for values in rows {
            ch_side.insert(row_key(&cols, &key_idx, &values), values);
        }
    }

    // Shortest exact float text (PostgreSQL 12+ with any positive setting).
    pg.batch_execute("SET extra_float_digits = 3").await?;
    let select: Vec<String> = cols.iter().map(|c| pg_expr(&quote_pg(&c.name), &c.typname, c.kind)).collect();
    let sql = format!("SELECT {} FROM {}.{}", select.join(", "), quote_pg(&table.pg_schema), quote_pg(&table.pg_table));
    let mut pg_side = Rows::new();
    for row in pg.query(sql.as_str(), &[]).await.with_context(|| format!("reading {label} from PostgreSQL"))? {
        let mut values: Vec<Option<String>> = (0..cols.len()).map(|i| row.get(i)).collect();
        for (i, col) in cols.iter().enumerate() {
            if redactor.rules().action(&label, &col.name).is_some() {
                values[i] = redact_text(redactor, &label, &col.name, values[i].take());
            }
        }
        pg_side.insert(row_key(&cols, &key_idx, &values), values);
    }
    Ok(diff_generic(label, &cols, &pg_side, &ch_side))
}

fn diff_generic(table: String, cols: &[GenericCol], pg: &Rows, ch: &Rows) -> TableDiff {
    diff_rows(table, pg, ch, |pv, cv| {
        cols.iter()
            .enumerate()
            .filter(|(i, c)| !same_generic(c.kind, pv[*i].as_deref(), cv[*i].as_deref()))
            .map(|(_, c)| c.name.clone())
            .collect()
    })
}

fn quote_pg(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cdc_clickhouse::inspect::text_expr;

    #[test]
    fn captured_tables_become_generic_checks() {
        let tables = verify_tables(
            "public.customers, public.products,public.orders,public.order_items, platform:Customer=customers, \
             public.order_notes(order_id line_no), archive.customers=archive_customers, shop.public.catalog_extras",
        )
        .unwrap();
        let names: Vec<(&str, &str, &str)> =
            tables.iter().map(|t| (t.pg_schema.as_str(), t.pg_table.as_str(), t.clickhouse_table.as_str())).collect();
        assert_eq!(
            names,
            [
                ("public", "order_notes", "order_notes"),
                ("archive", "customers", "archive_customers"),
                ("public", "catalog_extras", "catalog_extras")
            ]
        );
        assert_eq!(tables[0].key_columns, ["order_id", "line_no"]);
        assert_eq!(tables[1].key_columns, ["id"]);
        assert_eq!((tables[0].pg_database.as_deref(), tables[2].pg_database.as_deref()), (None, Some("shop")));
        // The sales tables alone: nothing generic to compare.
        assert_eq!(verify_tables("public.customers,public.orders").unwrap(), []);
        assert!(verify_tables("x").is_err());
    }

    #[test]
    fn exact_numbers_ignore_form_not_value() {
        assert_eq!(exact_number("4.80"), exact_number("4.8"));
        assert_eq!(exact_number("480e-2"), exact_number("4.8"));
        assert_eq!(exact_number("-0.000"), exact_number("0"));
        assert_eq!(exact_number("1200"), Some("12e2".to_string()));
        assert_eq!(exact_number("-12.340"), Some("-1234e-2".to_string()));
        assert_ne!(exact_number("4.8"), exact_number("4.800001"));
        // Beyond f64 and i128: still exact.
        assert_ne!(
            exact_number("12345678901234567890123456789012345678901"),
            exact_number("12345678901234567890123456789012345678900")
        );
        for bad in ["", "-", ".", "1.2.3", "1e", "abc", "1e99999999999", "NaN"] {
            assert_eq!(exact_number(bad), None, "{bad}");
        }
    }

    #[test]
    fn generic_values_compare_by_kind() {
        use GenericKind as K;
        assert!(same_generic(K::Int, Some("5"), Some("5")));
        assert!(!same_generic(K::Int, Some("5"), Some("6")));
        assert!(same_generic(K::Int, None, None));
        assert!(!same_generic(K::Int, Some("0"), None));
        assert!(!same_generic(K::Text, None, Some("")));
        assert!(same_generic(K::Float64, Some("NaN"), Some("nan")));
        assert!(same_generic(K::Float64, Some("Infinity"), Some("inf")));
        assert!(same_generic(K::Float64, Some("-Infinity"), Some("-inf")));
        assert!(same_generic(K::Float64, Some("0.1"), Some("0.1")));
        assert!(!same_generic(K::Float64, Some("0.1"), Some("0.10000000000000002")));
        assert!(!same_generic(K::Float64, Some("NaN"), Some("0")));
        assert!(same_generic(K::Float32, Some("1.1"), Some("1.100000023841858")));
        assert!(same_generic(K::Decimal, Some("12.3400"), Some("12.34")));
        assert!(!same_generic(K::Decimal, Some("12.3400"), Some("12.3401")));
        assert!(same_generic(K::Decimal, Some("NaN"), Some("nan")));
        assert!(same_generic(K::Bool, Some("true"), Some("1")));
        assert!(same_generic(K::Bool, Some("false"), Some("false")));
        assert!(!same_generic(K::Bool, Some("true"), Some("0")));
        assert!(same_generic(K::Bytes, Some("00ff0a"), Some("00FF0A")));
        assert!(!same_generic(K::Bytes, Some("00ff"), Some("00ff0a")));
        assert!(same_generic(K::Micros, Some("1764476672019849"), Some("1764476672019849")));
        assert!(!same_generic(K::Micros, Some("1764476672019849"), Some("1764476672019000")));
        assert!(same_generic(K::Days, Some("-1"), Some("-1")));
    }

    #[test]
    fn json_and_arrays_compare_as_values() {
        use GenericKind as K;
        assert!(same_generic(K::Json, Some(r#"{"a": 1, "b": [1.50, null]}"#), Some(r#"{"b":[1.5,null],"a":1}"#)));
        assert!(!same_generic(K::Json, Some(r#"{"a": 1}"#), Some(r#"{"a": 2}"#)));
        assert!(!same_generic(K::Json, Some(r#"{"a": 1}"#), Some(r#"{"a": "1"}"#)));
        assert!(!same_generic(K::Json, Some(r#"{"a": 1}"#), Some(r#"{"a": 1, "b": 1}"#)));
        assert!(same_generic(K::Json, Some(r#"["a b","c\"d",null]"#), Some(r#"["a b", "c\"d", null]"#)));
        assert!(!same_generic(K::Json, Some("[1,2]"), Some("[2,1]")));
        // Numbers exactly, beyond f64: these two differ only in the 20th digit.
        assert!(!same_generic(K::Json, Some("[1.0000000000000000001]"), Some("[1]")));
        assert!(same_generic(K::Json, Some("[1.2300]"), Some("[1.23]")));
        assert!(!same_generic(K::Json, Some("[1"), Some("[1]")));
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(canonical_json(&deep, 0).is_none());
    }

    #[test]
    fn expressions_follow_types_on_both_sides() {
        use GenericKind as K;
        // ClickHouse's side: the form of the kind, then the column's type.
        let ch_expr = |c: &str, kind: K, ty: Option<&str>| text_expr(c, kind.text_form(), ty);
        assert_eq!(GenericKind::from_pg("_text", "A"), K::Json);
        assert_eq!(GenericKind::from_pg("timestamptz", "D"), K::Micros);
        assert_eq!(GenericKind::from_pg("uuid", "U"), K::Text);
        assert_eq!(pg_expr("\"tags\"", "_text", K::Json), "array_to_json(\"tags\")::text");
        assert_eq!(pg_expr("\"blob\"", "bytea", K::Bytes), "encode(\"blob\", 'hex')");
        assert_eq!(ch_expr("x", K::Micros, None), "NULL");
        assert_eq!(
            ch_expr("x", K::Micros, Some("Nullable(DateTime64(6, 'UTC'))")),
            "toString(toUnixTimestamp64Micro(`x`))"
        );
        assert_eq!(ch_expr("x", K::Micros, Some("Nullable(Int64)")), "toString(`x`)");
        assert_eq!(ch_expr("d", K::Days, Some("Nullable(Date32)")), "toString(toInt32(`d`))");
        assert_eq!(ch_expr("d", K::Days, Some("Nullable(Int32)")), "toString(`d`)");
        assert_eq!(ch_expr("b", K::Bytes, Some("Nullable(String)")), "lower(hex(`b`))");
        assert_eq!(ch_expr("t", K::Text, Some("Nullable(String)")), "`t`");
        assert_eq!(ch_expr("t", K::Text, Some("LowCardinality(Nullable(String))")), "`t`");
        assert_eq!(ch_expr("f", K::Bool, Some("Nullable(UInt8)")), "toString(`f`)");
    }

    #[test]
    fn generic_diff_uses_composite_keys() {
        let cols = vec![
            GenericCol { name: "order_id".into(), typname: "int8".into(), kind: GenericKind::Int },
            GenericCol { name: "line_no".into(), typname: "int4".into(), kind: GenericKind::Int },
            GenericCol { name: "body".into(), typname: "text".into(), kind: GenericKind::Text },
        ];
        let key_idx = [0, 1];
        let rows = |r: &[(&str, &str, Option<&str>)]| -> Rows {
            r.iter()
                .map(|(a, b, t)| {
                    let v = vec![Some(a.to_string()), Some(b.to_string()), t.map(str::to_string)];
                    (row_key(&cols, &key_idx, &v), v)
                })
                .collect()
        };
        let pg = rows(&[("1", "1", Some("x")), ("1", "2", None), ("2", "1", Some("y"))]);
        let ch = rows(&[("1", "1", Some("x")), ("1", "2", Some("")), ("3", "1", Some("z"))]);
        let d = diff_generic("order_notes".into(), &cols, &pg, &ch);
        let key = |a, b| Key(vec![KeyPart::Int(a), KeyPart::Int(b)]);
        assert_eq!(d.missing, [key(2, 1)]);
        assert_eq!(d.extra, [key(3, 1)]);
        assert_eq!(d.wrong, [(key(1, 2), vec!["body".to_string()])]);
        let report = VerifyReport { tables: vec![d] };
        let text = report.render(5);
        assert!(text.contains("missing keys: [(2, 1)]"), "{text}");
        assert!(text.contains("wrong key (1, 2): columns [\"body\"]"), "{text}");
        // Key values and column names only, never other values.
        for value in ["\"x\"", "\"y\"", "\"z\""] {
            assert!(!text.contains(value), "{text}");
        }
    }
}
