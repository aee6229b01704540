//! Value encodings: one column's JSON text and its wire type in, one typed [`Value`] out.
//!
//! Enters: the unparsed text of one column value and a [`FieldType`] (from a Debezium schema
//! block, or derived from the table's known [`ColumnKind`]). Leaves: a [`Value`] or a
//! [`ValueError`] with a stable code. Covers every Debezium PostgreSQL default encoding
//! (precise and variable-scale decimals, the `double` and `string` decimal modes, dates, times,
//! timestamps with their ±infinity sentinels, UUID, JSON, enums, arrays, bytea) and the TOAST
//! placeholder, which becomes [`Value::Unavailable`] and never a string.
//!
//! The pure helpers ([`decimal_from_base64`], [`decimal_to_base64`], [`parse_decimal_text`],
//! [`parse_iso_timestamp`]) are public so property tests and benchmarks can use them.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, NaiveDate, NaiveDateTime};
use serde_json::value::RawValue;

use super::raw::{self, RawObject};
use crate::change::{Decimal, Special, Value};
use crate::tables::ColumnKind;

/// Debezium's default `unavailable.value.placeholder` for an unchanged TOASTed column.
const UNAVAILABLE: &str = "__debezium_unavailable_value";
/// The placeholder's bytes as the JSON converter sends a `bytea` column (base64).
const UNAVAILABLE_BASE64: &str = "X19kZWJleml1bV91bmF2YWlsYWJsZV92YWx1ZQ==";
/// The placeholder's bytes with `binary.handling.mode=hex`.
const UNAVAILABLE_HEX: &str = "5f5f646562657a69756d5f756e617661696c61626c655f76616c7565";

/// What Debezium sends for PostgreSQL `infinity` in a timestamp column.
pub const POSITIVE_INFINITY_SENTINEL: i64 = 9_223_372_036_825_200_000;
/// What Debezium sends for PostgreSQL `-infinity` in a timestamp column.
pub const NEGATIVE_INFINITY_SENTINEL: i64 = -9_223_372_036_832_400_000;

/// Largest decimal scale accepted (ClickHouse's Decimal256 limit). Bounds the work and memory a
/// hostile exponent or scale could ask for.
const MAX_SCALE: u32 = 76;

/// Nested arrays deeper than this are rejected: each level is a recursion of this decoder.
const MAX_ARRAY_DEPTH: usize = 32;

/// Why one column value could not be decoded. Never carries the value itself (row values must
/// not reach logs or dead-letter attributes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("not a valid decimal encoding")]
    BadDecimal,
    #[error("decimal does not fit 38 digits or scale {MAX_SCALE}")]
    DecimalOverflow,
    #[error("not a valid date, time or timestamp")]
    BadTimestamp,
    #[error("not valid base64 bytes")]
    BadBytes,
    #[error("JSON type does not match the column type")]
    TypeMismatch,
    #[error("number out of range for the column type")]
    OutOfRange,
}

impl ValueError {
    pub(crate) fn code(self) -> &'static str {
        match self {
            ValueError::BadDecimal => "value.bad_decimal",
            ValueError::DecimalOverflow => "value.decimal_overflow",
            ValueError::BadTimestamp => "value.bad_timestamp",
            ValueError::BadBytes => "value.bad_bytes",
            ValueError::TypeMismatch => "value.type_mismatch",
            ValueError::OutOfRange => "value.out_of_range",
        }
    }
}

/// How one column is encoded on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldType {
    /// `int8`..`int64` without a semantic name.
    Int,
    /// `float32` / `float64` (also `decimal.handling.mode=double`).
    Float,
    Bool,
    /// `string` without a semantic name (also `decimal.handling.mode=string`, enums, XML).
    Text,
    /// `bytes` without a semantic name: base64 in JSON.
    Bytes,
    /// `org.apache.kafka.connect.data.Decimal`: base64 two's complement, fixed scale.
    Decimal {
        scale: i32,
    },
    /// `io.debezium.data.VariableScaleDecimal`: `{"scale": s, "value": base64}`.
    VariableScaleDecimal,
    /// `io.debezium.time.Date` (days since epoch).
    Date,
    /// `io.debezium.time.Timestamp` (ms since epoch).
    TimestampMillis,
    /// `io.debezium.time.MicroTimestamp` (µs since epoch).
    TimestampMicros,
    /// `io.debezium.time.NanoTimestamp` (ns since epoch).
    TimestampNanos,
    /// `io.debezium.time.ZonedTimestamp`: ISO-8601 string.
    ZonedTimestamp,
    /// `io.debezium.time.Time` (ms since midnight).
    TimeMillis,
    /// `io.debezium.time.MicroTime`.
    TimeMicros,
    /// `io.debezium.time.NanoTime`.
    TimeNanos,
    /// `io.debezium.time.MicroDuration` (µs).
    MicroDuration,
    Uuid,
    Json,
    Array(Box<FieldType>),
    /// Any other struct (geometry, ...): kept as JSON text.
    Struct,
    /// A known table's decimal column without a schema block (or in `double`/`string` mode):
    /// a JSON number or decimal string taken exactly; base64 when `base64` is allowed.
    KindDecimal {
        scale: u32,
        base64: bool,
    },
    /// A known table's timestamp column without a schema block: ISO string, or integer µs.
    KindTimestamp,
    /// No type information: the natural mapping of the JSON value.
    Natural,
}

/// Kafka Connect's name of a precise decimal (its scale is a parameter of the schema).
pub(crate) const DECIMAL_LOGICAL_NAME: &str = "org.apache.kafka.connect.data.Decimal";

/// The logical type names of a schema block and the wire type each names. The first name of a
/// type is the one Debezium's PostgreSQL connector writes (the capture in `cdc-tools` writes it
/// from here); the Kafka Connect aliases are read too.
const LOGICAL_NAMES: &[(&str, FieldType)] = &[
    ("io.debezium.data.VariableScaleDecimal", FieldType::VariableScaleDecimal),
    ("io.debezium.time.Date", FieldType::Date),
    ("org.apache.kafka.connect.data.Date", FieldType::Date),
    ("io.debezium.time.Timestamp", FieldType::TimestampMillis),
    ("org.apache.kafka.connect.data.Timestamp", FieldType::TimestampMillis),
    ("io.debezium.time.MicroTimestamp", FieldType::TimestampMicros),
    ("io.debezium.time.NanoTimestamp", FieldType::TimestampNanos),
    ("io.debezium.time.ZonedTimestamp", FieldType::ZonedTimestamp),
    ("io.debezium.time.Time", FieldType::TimeMillis),
    ("org.apache.kafka.connect.data.Time", FieldType::TimeMillis),
    ("io.debezium.time.MicroTime", FieldType::TimeMicros),
    ("io.debezium.time.NanoTime", FieldType::TimeNanos),
    ("io.debezium.time.MicroDuration", FieldType::MicroDuration),
    ("io.debezium.data.Uuid", FieldType::Uuid),
    ("io.debezium.data.Json", FieldType::Json),
];

impl FieldType {
    /// The wire type a logical type name stands for, but a precise decimal's (whose scale is
    /// a parameter: [`DECIMAL_LOGICAL_NAME`]). `None`: a name whose text is the value (Enum,
    /// ZonedTime, Xml, ...) or no name known here.
    pub fn from_logical_name(name: &str) -> Option<FieldType> {
        LOGICAL_NAMES.iter().find(|(n, _)| *n == name).map(|(_, ty)| ty.clone())
    }

    /// The logical type name Debezium writes for this wire type; `None` for plain Kafka Connect
    /// types (integers, floats, booleans, strings, bytes, arrays, structs).
    pub fn logical_name(&self) -> Option<&'static str> {
        if let FieldType::Decimal { .. } = self {
            return Some(DECIMAL_LOGICAL_NAME);
        }
        LOGICAL_NAMES.iter().find(|(_, ty)| ty == self).map(|(n, _)| *n)
    }

    /// The wire type of a known column when no schema block says otherwise. `base64` is true
    /// for Debezium (whose precise decimals are base64), false for DMS and the platform.
    pub(crate) fn from_kind(kind: ColumnKind, base64: bool) -> FieldType {
        match kind {
            ColumnKind::Int64 | ColumnKind::Int32 => FieldType::Int,
            ColumnKind::Text => FieldType::Text,
            ColumnKind::Decimal { scale } => FieldType::KindDecimal { scale, base64 },
            ColumnKind::Timestamp => FieldType::KindTimestamp,
        }
    }
}

/// Decodes one column value. `kind` is the column's known kind when the table is known: it
/// turns a `double`- or `string`-mode decimal (which the schema block only calls `double` or
/// `string`) back into an exact [`Decimal`].
pub fn decode_value(ty: &FieldType, kind: Option<ColumnKind>, raw: &RawValue) -> Result<Value, ValueError> {
    if let (Some(ColumnKind::Decimal { scale }), FieldType::Float | FieldType::Text) = (kind, ty) {
        return decode_typed(&FieldType::KindDecimal { scale, base64: false }, raw, 0);
    }
    decode_typed(ty, raw, 0)
}

fn decode_typed(ty: &FieldType, raw: &RawValue, depth: usize) -> Result<Value, ValueError> {
    let text = raw.get();
    if text == "null" {
        return Ok(Value::Null);
    }
    match ty {
        FieldType::Int => int_or_placeholder(raw).map(Value::Int),
        FieldType::Float => {
            if raw::is_number(text) {
                return text.parse().map(Value::Float).map_err(|_| ValueError::TypeMismatch);
            }
            let s = string(raw)?;
            if is_unavailable(&s) {
                return Ok(Value::Unavailable);
            }
            parse_special(&s).map(Value::Special).ok_or(ValueError::TypeMismatch)
        }
        FieldType::Bool => match text {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => placeholder_or(raw, ValueError::TypeMismatch),
        },
        FieldType::Text => text_value(raw, Value::Text),
        FieldType::Uuid => text_value(raw, Value::Uuid),
        FieldType::Json => {
            if text.starts_with('{') || text.starts_with('[') {
                // Some producers embed the JSON document itself rather than its text.
                return Ok(Value::Json(text.to_owned()));
            }
            text_value(raw, Value::Json)
        }
        FieldType::Bytes => {
            let s = string(raw)?;
            if is_unavailable_bytes(&s) {
                return Ok(Value::Unavailable);
            }
            STANDARD.decode(s.as_bytes()).map(Value::Bytes).map_err(|_| ValueError::BadBytes)
        }
        FieldType::Decimal { scale } => {
            if raw::is_number(text) {
                return parse_decimal_text(text).map(Value::Decimal);
            }
            let s = string(raw)?;
            if is_unavailable_bytes(&s) {
                return Ok(Value::Unavailable);
            }
            if let Some(special) = parse_special(&s) {
                return Ok(Value::Special(special));
            }
            decimal_from_base64(&s, i64::from(*scale)).map(Value::Decimal)
        }
        FieldType::VariableScaleDecimal => {
            if !raw::is_object(raw) {
                return placeholder_or(raw, ValueError::BadDecimal);
            }
            let obj = RawObject::parse(text).map_err(|_| ValueError::BadDecimal)?;
            let scale = obj.get_some("scale").and_then(raw::as_i64).ok_or(ValueError::BadDecimal)?;
            let value = obj.get_some("value").and_then(raw::as_str).ok_or(ValueError::BadDecimal)?;
            if let Some(special) = parse_special(&value) {
                return Ok(Value::Special(special));
            }
            decimal_from_base64(&value, scale).map(Value::Decimal)
        }
        FieldType::KindDecimal { scale, base64 } => kind_decimal(raw, *scale, *base64),
        FieldType::Date => {
            let days = int_or_placeholder(raw).map_err(time_error)?;
            i32::try_from(days).map(Value::Date).map_err(|_| ValueError::OutOfRange)
        }
        FieldType::TimestampMillis => timestamp_int(raw, |v| v.checked_mul(1000)),
        FieldType::TimestampMicros => timestamp_int(raw, Some),
        FieldType::TimestampNanos => timestamp_int(raw, |v| Some(v.div_euclid(1000))),
        // A timestamp typed by the declared column kind may come as a number in µs; otherwise it
        // is the same ISO string as Debezium's ZonedTimestamp.
        FieldType::KindTimestamp if raw::is_number(text) => timestamp_int(raw, Some),
        FieldType::ZonedTimestamp | FieldType::KindTimestamp => {
            let s = string(raw).map_err(time_error)?;
            if is_unavailable(&s) {
                return Ok(Value::Unavailable);
            }
            if let Some(special) = parse_special(&s) {
                return Ok(Value::Special(special));
            }
            parse_iso_timestamp(&s).map(Value::Timestamp)
        }
        FieldType::TimeMillis => scaled_int(raw, 1000).map(Value::Time),
        FieldType::TimeMicros => scaled_int(raw, 1).map(Value::Time),
        FieldType::TimeNanos => int_or_placeholder(raw).map_err(time_error).map(|v| Value::Time(v.div_euclid(1000))),
        FieldType::MicroDuration => int_or_placeholder(raw).map_err(time_error).map(Value::Interval),
        FieldType::Array(item) => array(raw, |elem| decode_typed(item, elem, depth + 1), depth),
        FieldType::Struct => Ok(Value::Json(text.to_owned())),
        FieldType::Natural => natural(raw, depth),
    }
}

/// The natural mapping of a JSON value of a column nothing is known about.
fn natural(raw: &RawValue, depth: usize) -> Result<Value, ValueError> {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'n') => Ok(Value::Null),
        Some(b't') => Ok(Value::Bool(true)),
        Some(b'f') => Ok(Value::Bool(false)),
        Some(b'"') => text_value(raw, Value::Text),
        Some(b'[') => array(raw, |elem| natural(elem, depth + 1), depth),
        Some(b'{') => Ok(Value::Json(text.to_owned())),
        _ => {
            if let Ok(i) = text.parse::<i64>() {
                return Ok(Value::Int(i));
            }
            text.parse::<f64>().map(Value::Float).map_err(|_| ValueError::TypeMismatch)
        }
    }
}

fn array(
    raw: &RawValue,
    mut element: impl FnMut(&RawValue) -> Result<Value, ValueError>,
    depth: usize,
) -> Result<Value, ValueError> {
    if !raw.get().starts_with('[') {
        return placeholder_or(raw, ValueError::TypeMismatch);
    }
    if depth >= MAX_ARRAY_DEPTH {
        return Err(ValueError::TypeMismatch);
    }
    let elements = raw::parse_array(raw.get()).map_err(|_| ValueError::TypeMismatch)?;
    let mut values = Vec::with_capacity(elements.len());
    for elem in elements {
        // A TOASTed array arrives as an array holding only the placeholder, whatever its
        // element type: check the placeholder before typing the element.
        let is_placeholder = raw::as_str(elem).is_some_and(|s| is_unavailable(&s));
        values.push(if is_placeholder { Value::Unavailable } else { element(elem)? });
    }
    if let [Value::Unavailable] = values.as_slice() {
        return Ok(Value::Unavailable);
    }
    Ok(Value::Array(values))
}

fn kind_decimal(raw: &RawValue, scale: u32, base64: bool) -> Result<Value, ValueError> {
    let text = raw.get();
    let exact = |d: Decimal| d.rescale(scale).unwrap_or(d);
    if raw::is_number(text) {
        return parse_decimal_text(text).map(|d| Value::Decimal(exact(d)));
    }
    let s = string(raw)?;
    if is_unavailable_bytes(&s) {
        return Ok(Value::Unavailable);
    }
    if let Some(special) = parse_special(&s) {
        return Ok(Value::Special(special));
    }
    if base64 {
        // Debezium without a schema: "precise" mode sends base64, "string" mode a plain
        // decimal. A scale > 0 decimal string always has a '.', which base64 never has; for
        // scale 0 an all-digit string is read as the decimal it looks like.
        let plain_decimal = s.contains('.') || (scale == 0 && s.bytes().all(|b| b.is_ascii_digit() || b == b'-'));
        if !plain_decimal {
            return decimal_from_base64(&s, i64::from(scale)).map(Value::Decimal);
        }
    }
    parse_decimal_text(&s).map(|d| Value::Decimal(exact(d)))
}

fn timestamp_int(raw: &RawValue, to_micros: impl Fn(i64) -> Option<i64>) -> Result<Value, ValueError> {
    let v = int_or_placeholder(raw).map_err(time_error)?;
    if let Some(special) = timestamp_special(v) {
        return Ok(Value::Special(special));
    }
    to_micros(v).map(Value::Timestamp).ok_or(ValueError::BadTimestamp)
}

fn scaled_int(raw: &RawValue, factor: i64) -> Result<i64, ValueError> {
    int_or_placeholder(raw).map_err(time_error)?.checked_mul(factor).ok_or(ValueError::BadTimestamp)
}

fn time_error(e: ValueError) -> ValueError {
    match e {
        ValueError::TypeMismatch => ValueError::BadTimestamp,
        other => other,
    }
}

/// An integer column. A placeholder string here is reported as `Unavailable` by the caller
/// through [`placeholder_or`]; an integer can never be TOASTed, so it is a type mismatch.
fn int_or_placeholder(raw: &RawValue) -> Result<i64, ValueError> {
    let text = raw.get();
    if !raw::is_number(text) {
        return Err(ValueError::TypeMismatch);
    }
    match text.parse::<i64>() {
        Ok(v) => Ok(v),
        Err(_) if text.bytes().all(|b| b.is_ascii_digit() || b == b'-') => Err(ValueError::OutOfRange),
        Err(_) => Err(ValueError::TypeMismatch),
    }
}

fn placeholder_or(raw: &RawValue, error: ValueError) -> Result<Value, ValueError> {
    match raw::as_str(raw) {
        Some(s) if is_unavailable(&s) => Ok(Value::Unavailable),
        _ => Err(error),
    }
}

fn string(raw: &RawValue) -> Result<std::borrow::Cow<'_, str>, ValueError> {
    raw::as_str(raw).ok_or(ValueError::TypeMismatch)
}

fn text_value(raw: &RawValue, wrap: fn(String) -> Value) -> Result<Value, ValueError> {
    let s = string(raw)?;
    if is_unavailable(&s) {
        return Ok(Value::Unavailable);
    }
    Ok(wrap(s.into_owned()))
}

/// True for the TOAST placeholder as a text column sends it.
fn is_unavailable(s: &str) -> bool {
    s == UNAVAILABLE
}

/// True for the TOAST placeholder in any form a `bytea` (or precise decimal) column may carry:
/// the text itself, its bytes as base64 (JSON converter default) or as hex (`hex:`-prefixed or
/// bare, `binary.handling.mode=hex`).
fn is_unavailable_bytes(s: &str) -> bool {
    let hex = s.strip_prefix("hex:").unwrap_or(s);
    s == UNAVAILABLE || s == UNAVAILABLE_BASE64 || hex.eq_ignore_ascii_case(UNAVAILABLE_HEX)
}

/// PostgreSQL NaN and ±infinity as Debezium's string encodings spell them.
fn parse_special(s: &str) -> Option<Special> {
    match s {
        "NaN" | "nan" => Some(Special::NaN),
        "Infinity" | "+Infinity" | "infinity" | "+infinity" => Some(Special::PositiveInfinity),
        "-Infinity" | "-infinity" => Some(Special::NegativeInfinity),
        _ => None,
    }
}

/// The ±infinity sentinels of Debezium's integer timestamp encodings.
pub fn timestamp_special(v: i64) -> Option<Special> {
    match v {
        POSITIVE_INFINITY_SENTINEL => Some(Special::PositiveInfinity),
        NEGATIVE_INFINITY_SENTINEL => Some(Special::NegativeInfinity),
        _ => None,
    }
}

/// Decodes Kafka Connect's Decimal bytes: base64 of the big-endian two's-complement unscaled
/// integer. A negative `scale` (PostgreSQL 15 allows `NUMERIC(p, -s)`) multiplies it out.
pub fn decimal_from_base64(s: &str, scale: i64) -> Result<Decimal, ValueError> {
    // 17 bytes is the most an i128 needs (16) plus one redundant sign byte; anything longer
    // is checked for pure sign extension below.
    let mut buf = [0u8; 48];
    let len = match STANDARD.decode_slice(s.as_bytes(), &mut buf) {
        Ok(len) => len,
        Err(base64::DecodeSliceError::OutputSliceTooSmall) => return Err(ValueError::DecimalOverflow),
        Err(base64::DecodeSliceError::DecodeError(_)) => return Err(ValueError::BadDecimal),
    };
    let bytes = buf.get(..len).ok_or(ValueError::BadDecimal)?;
    make_decimal(unscaled_from_be(bytes)?, scale)
}

fn unscaled_from_be(bytes: &[u8]) -> Result<i128, ValueError> {
    let first = *bytes.first().ok_or(ValueError::BadDecimal)?;
    let negative = first & 0x80 != 0;
    let fill = if negative { 0xFF } else { 0x00 };
    let extra = bytes.len().saturating_sub(16);
    let (head, tail) = bytes.split_at(extra);
    if head.iter().any(|&b| b != fill) {
        return Err(ValueError::DecimalOverflow);
    }
    if extra > 0 && tail.first().is_some_and(|&b| (b & 0x80 != 0) != negative) {
        return Err(ValueError::DecimalOverflow);
    }
    // Starting from all ones (negative) or zeros sign-extends shorter inputs; 16 shifts of 8
    // push every starting bit out.
    let mut acc: i128 = if negative { -1 } else { 0 };
    for &b in tail {
        acc = (acc << 8) | i128::from(b);
    }
    Ok(acc)
}

/// Encodes a decimal the way Kafka Connect does (minimal big-endian two's complement, base64).
/// The inverse of [`decimal_from_base64`]; the capture in `cdc-tools` encodes with it, tests and
/// benchmarks build events with it.
pub fn decimal_to_base64(unscaled: i128) -> String {
    let bytes = unscaled.to_be_bytes();
    let mut start = 0;
    // Drop leading sign-extension bytes while the next byte still carries the sign.
    while start < 15 {
        let (b, next) = (bytes[start], bytes[start + 1]);
        let redundant = (b == 0x00 && next & 0x80 == 0) || (b == 0xFF && next & 0x80 != 0);
        if !redundant {
            break;
        }
        start += 1;
    }
    STANDARD.encode(&bytes[start..])
}

fn make_decimal(unscaled: i128, scale: i64) -> Result<Decimal, ValueError> {
    if scale < 0 {
        let factor = u32::try_from(-scale).ok().and_then(|e| 10i128.checked_pow(e));
        let unscaled = factor.and_then(|f| unscaled.checked_mul(f)).ok_or(ValueError::DecimalOverflow)?;
        return Ok(Decimal::new(unscaled, 0));
    }
    match u32::try_from(scale) {
        Ok(scale) if scale <= MAX_SCALE => Ok(Decimal::new(unscaled, scale)),
        _ => Err(ValueError::DecimalOverflow),
    }
}

/// Parses a decimal exactly from its text: a JSON number (`-12.5`, `1.0E-7`) or a plain
/// decimal string. No `f64` on the way, so `0.1` stays `0.1`.
pub fn parse_decimal_text(s: &str) -> Result<Decimal, ValueError> {
    let (negative, rest) = match s.as_bytes().first() {
        Some(b'-') => (true, s.get(1..).unwrap_or("")),
        Some(b'+') => (false, s.get(1..).unwrap_or("")),
        _ => (false, s),
    };
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(at) => (rest.get(..at).unwrap_or(""), rest.get(at + 1..)),
        None => (rest, None),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(ValueError::BadDecimal);
    }
    let mut unscaled: i128 = 0;
    let mut overflow = false;
    for b in int_part.bytes().chain(frac_part.bytes()) {
        if !b.is_ascii_digit() {
            return Err(ValueError::BadDecimal);
        }
        match unscaled.checked_mul(10).and_then(|v| v.checked_add(i128::from(b - b'0'))) {
            Some(v) => unscaled = v,
            None => overflow = true,
        }
    }
    if overflow {
        return Err(ValueError::DecimalOverflow);
    }
    let exponent: i64 = match exponent {
        None => 0,
        Some(e) => {
            let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ValueError::BadDecimal);
            }
            // Anything with more than 4 exponent digits is far outside 38 digits anyway.
            if digits.len() > 4 {
                return Err(ValueError::DecimalOverflow);
            }
            e.parse().map_err(|_| ValueError::BadDecimal)?
        }
    };
    let frac_len = i64::try_from(frac_part.len()).map_err(|_| ValueError::DecimalOverflow)?;
    let signed = if negative { -unscaled } else { unscaled };
    if signed == 0 {
        // Zero at any exponent: keep the written scale but never ask for 10^huge.
        return Ok(Decimal::new(0, u32::try_from((frac_len - exponent).clamp(0, i64::from(MAX_SCALE))).unwrap_or(0)));
    }
    make_decimal(signed, frac_len - exponent)
}

/// Parses an ISO-8601 / RFC 3339 instant into µs since the epoch (UTC). Accepts `T` or a space
/// between date and time, `Z` or a numeric offset, and no offset at all (read as UTC, the way
/// DMS and PostgreSQL `timestamp without time zone` values are meant). A bare date is midnight.
/// Sub-microsecond digits are truncated towards the past.
pub fn parse_iso_timestamp(s: &str) -> Result<i64, ValueError> {
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Ok(dt.timestamp_micros());
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f%#z"] {
        if let Ok(dt) = DateTime::parse_from_str(s, format) {
            return Ok(dt.timestamp_micros());
        }
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(s, format) {
            return Ok(dt.and_utc().timestamp_micros());
        }
    }
    if let Ok(date) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return date.and_hms_opt(0, 0, 0).map(|dt| dt.and_utc().timestamp_micros()).ok_or(ValueError::BadTimestamp);
    }
    Err(ValueError::BadTimestamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    fn dec(text: &str, ty: FieldType) -> Result<Value, ValueError> {
        decode_value(&ty, None, &raw(text))
    }

    #[test]
    fn precise_decimals() {
        assert_eq!(decimal_from_base64("AeI=", 2), Ok(Decimal::new(482, 2)));
        assert_eq!(decimal_from_base64("/h4=", 2), Ok(Decimal::new(-482, 2)));
        assert_eq!(decimal_from_base64("AA==", 0), Ok(Decimal::new(0, 0)));
        assert_eq!(decimal_from_base64("", 0), Err(ValueError::BadDecimal));
        assert_eq!(decimal_from_base64("!!", 0), Err(ValueError::BadDecimal));
        assert_eq!(decimal_from_base64("AQ==", -2), Ok(Decimal::new(100, 0)));
        assert_eq!(decimal_from_base64("AQ==", 77), Err(ValueError::DecimalOverflow));
        // 17 bytes with a redundant sign byte still fit.
        let mut wide = vec![0u8];
        wide.extend_from_slice(&i128::MAX.to_be_bytes());
        assert_eq!(decimal_from_base64(&STANDARD.encode(&wide), 0), Ok(Decimal::new(i128::MAX, 0)));
        wide[1] = 0x80;
        assert_eq!(decimal_from_base64(&STANDARD.encode(&wide), 0), Err(ValueError::DecimalOverflow));
        assert_eq!(decimal_to_base64(482), "AeI=");
        assert_eq!(decimal_to_base64(-482), "/h4=");
        assert_eq!(decimal_to_base64(0), "AA==");
    }

    #[test]
    fn decimal_text() {
        assert_eq!(parse_decimal_text("4.82"), Ok(Decimal::new(482, 2)));
        assert_eq!(parse_decimal_text("-0.5"), Ok(Decimal::new(-5, 1)));
        assert_eq!(parse_decimal_text("1.0E-7"), Ok(Decimal::new(10, 8)));
        assert_eq!(parse_decimal_text("12e2"), Ok(Decimal::new(1200, 0)));
        assert_eq!(parse_decimal_text("0e99999"), Err(ValueError::DecimalOverflow));
        assert_eq!(parse_decimal_text("0e9999"), Ok(Decimal::new(0, 0)));
        assert_eq!(parse_decimal_text("1e9999"), Err(ValueError::DecimalOverflow));
        assert_eq!(parse_decimal_text("."), Err(ValueError::BadDecimal));
        assert_eq!(parse_decimal_text("1.2.3"), Err(ValueError::BadDecimal));
        assert_eq!(parse_decimal_text("1e"), Err(ValueError::BadDecimal));
        assert_eq!(parse_decimal_text("-"), Err(ValueError::BadDecimal));
    }

    #[test]
    fn kind_decimals_are_exact_and_rescaled() {
        let ty = FieldType::KindDecimal { scale: 2, base64: true };
        assert_eq!(dec("4.8", ty.clone()), Ok(Value::Decimal(Decimal::new(480, 2))));
        assert_eq!(dec("\"4.8\"", ty.clone()), Ok(Value::Decimal(Decimal::new(480, 2))));
        assert_eq!(dec("\"AeI=\"", ty.clone()), Ok(Value::Decimal(Decimal::new(482, 2))));
        assert_eq!(dec("\"NaN\"", ty.clone()), Ok(Value::Special(Special::NaN)));
        assert_eq!(dec("0.125", ty), Ok(Value::Decimal(Decimal::new(125, 3))));
        let dms = FieldType::KindDecimal { scale: 2, base64: false };
        assert_eq!(dec("\"AeI=\"", dms), Err(ValueError::BadDecimal));
    }

    #[test]
    fn timestamps_and_sentinels() {
        assert_eq!(dec("1704067200000000", FieldType::TimestampMicros), Ok(Value::Timestamp(1_704_067_200_000_000)));
        assert_eq!(dec("1704067200000", FieldType::TimestampMillis), Ok(Value::Timestamp(1_704_067_200_000_000)));
        assert_eq!(dec("-1", FieldType::TimestampNanos), Ok(Value::Timestamp(-1)));
        assert_eq!(
            dec("9223372036825200000", FieldType::TimestampMicros),
            Ok(Value::Special(Special::PositiveInfinity))
        );
        assert_eq!(
            dec("-9223372036832400000", FieldType::TimestampMillis),
            Ok(Value::Special(Special::NegativeInfinity))
        );
        assert_eq!(dec("9223372036854776", FieldType::TimestampMillis), Err(ValueError::BadTimestamp));
        assert_eq!(dec("\"x\"", FieldType::TimestampMicros), Err(ValueError::BadTimestamp));
        assert_eq!(parse_iso_timestamp("2024-01-01T00:00:00Z"), Ok(1_704_067_200_000_000));
        assert_eq!(parse_iso_timestamp("2024-01-01T02:00:00.5+02:00"), Ok(1_704_067_200_500_000));
        assert_eq!(parse_iso_timestamp("2024-01-01 00:00:00.000001"), Ok(1_704_067_200_000_001));
        assert_eq!(parse_iso_timestamp("2024-01-01"), Ok(1_704_067_200_000_000));
        assert_eq!(parse_iso_timestamp("yesterday"), Err(ValueError::BadTimestamp));
    }

    #[test]
    fn placeholders_are_unavailable() {
        for ty in [FieldType::Text, FieldType::Json, FieldType::Uuid, FieldType::ZonedTimestamp, FieldType::Natural] {
            assert_eq!(dec("\"__debezium_unavailable_value\"", ty), Ok(Value::Unavailable));
        }
        for form in [
            UNAVAILABLE,
            UNAVAILABLE_BASE64,
            UNAVAILABLE_HEX,
            "hex:5F5F646562657A69756D5F756E617661696C61626C655F76616C7565",
        ] {
            assert_eq!(dec(&format!("\"{form}\""), FieldType::Bytes), Ok(Value::Unavailable));
        }
        assert_eq!(
            dec("[\"__debezium_unavailable_value\"]", FieldType::Array(Box::new(FieldType::Int))),
            Ok(Value::Unavailable)
        );
    }

    #[test]
    fn deep_arrays_are_rejected_not_overflowed() {
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert_eq!(dec(&deep, FieldType::Natural), Err(ValueError::TypeMismatch));
    }
}
