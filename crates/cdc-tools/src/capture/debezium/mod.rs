//! wal2json records → Debezium PostgreSQL connector events, with the JSON converter's schema block.
//!
//! Enters: [`Record`]s in slot order. Leaves: [`Event`]s whose `body` is what Debezium Server's SQS
//! sink would send with `schemas.enable=true`: `{"schema": {...}, "payload": {...}}`.
//!
//! Encodings follow the connector's defaults (`decimal.handling.mode=precise`,
//! `time.precision.mode=adaptive`): NUMERIC(p,s) as `org.apache.kafka.connect.data.Decimal` (base64
//! of the big-endian two's-complement unscaled integer), unconstrained NUMERIC as
//! `io.debezium.data.VariableScaleDecimal`, TIMESTAMPTZ as `io.debezium.time.ZonedTimestamp` (ISO-8601
//! UTC), TIMESTAMP as `io.debezium.time.MicroTimestamp`, DATE as `io.debezium.time.Date`,
//! TIME as `io.debezium.time.MicroTime`, INTERVAL as `io.debezium.time.MicroDuration`
//! (`interval.handling.mode=numeric`), BYTEA as `bytes` (`binary.handling.mode=bytes`: base64 in JSON), one-dimensional arrays of
//! integers, floats, booleans, numerics, dates, uuids and character types as Kafka Connect
//! `array`s whose items are the element's schema (optional: an element may be NULL).
//! `source.lsn` is the change's own WAL position, `source.ts_ms`/`ts_us` the commit time, `txId` the
//! transaction id. UPDATE/DELETE `before` carries what PostgreSQL logged as the old image: the key
//! columns under REPLICA IDENTITY DEFAULT. A primary-key change becomes delete (old key) + create
//! (new key), as the connector emits it (the tombstone between them is not sent: SQS has no empty
//! bodies). TRUNCATE becomes op `t`.
//!
//! Known gap: wal2json (2.5, Debian's) writes NaN and ±Infinity of float and numeric columns as
//! JSON `null`, so a streamed change carries them as NULL, which the converter cannot tell
//! apart from a real NULL; a snapshot reads them exactly (PostgreSQL's text form). TIMETZ and the
//! other types not listed above are sent as the server's text, where the connector sends
//! `ZonedTime`, ...

use std::collections::HashMap;

use base64::Engine as _;
use chrono::{DateTime, NaiveDate, NaiveDateTime};
use serde::Serialize;
use serde::ser::SerializeMap;
use serde_json::value::RawValue;

use super::wal2json::{Column, Record};
use cdc_core::change::Decimal;
use cdc_core::decode::encoding::{
    FieldType as WireType, NEGATIVE_INFINITY_SENTINEL, POSITIVE_INFINITY_SENTINEL, decimal_to_base64,
};
use cdc_core::wire::parse_pg_lsn;

/// The connector version this capture imitates, reported in `source.version`.
const CONNECTOR_VERSION: &str = "2.7.3.Final";

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// A delete or truncate of a table whose columns the converter has not learned yet: the caller
    /// reads them from the catalog ([`TableDef`]) and converts the record again.
    #[error("no column definitions for table {schema}.{table}")]
    UnknownTable { schema: String, table: String },
    #[error("malformed wal2json record: {0}")]
    Malformed(&'static str),
    #[error("column {column}: cannot encode value of type {type_name}: {reason}")]
    BadValue { column: String, type_name: String, reason: &'static str },
}

/// How one PostgreSQL column is encoded in the Debezium event (its wire type, as the decoder
/// reads it, is `cdc_core::decode::encoding::PgEncoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PgEncoding {
    Int16,
    Int32,
    Int64,
    Bool,
    Float32,
    Float64,
    /// NUMERIC(p, s).
    Decimal {
        precision: u32,
        scale: u32,
    },
    /// NUMERIC without a typmod.
    VariableDecimal,
    /// TIMESTAMPTZ.
    ZonedTimestamp,
    /// TIMESTAMP (without time zone).
    MicroTimestamp,
    /// TIME (without time zone): µs since midnight (`io.debezium.time.MicroTime`).
    MicroTime,
    /// INTERVAL: µs, a month counted as 365.25 / 12 days (`io.debezium.time.MicroDuration`,
    /// Debezium's default `interval.handling.mode=numeric`).
    MicroDuration,
    Date,
    Uuid,
    Json,
    /// BYTEA: the raw bytes, base64 in JSON.
    Bytes,
    /// A one-dimensional array of a scalar type (PostgreSQL's `type[]`).
    Array(ArrayElement),
    /// TEXT, VARCHAR and every type not listed: the server's text form.
    Text,
}

/// The element types of arrays the connector maps to Kafka Connect arrays (its
/// `PostgresValueConverter`); arrays of other types keep the server's text form, as before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArrayElement {
    Int16,
    Int32,
    Int64,
    Bool,
    Float32,
    Float64,
    Decimal { precision: u32, scale: u32 },
    VariableDecimal,
    Date,
    Uuid,
    Text,
}

impl ArrayElement {
    /// The scalar field type each element is encoded as.
    fn scalar(self) -> PgEncoding {
        match self {
            ArrayElement::Int16 => PgEncoding::Int16,
            ArrayElement::Int32 => PgEncoding::Int32,
            ArrayElement::Int64 => PgEncoding::Int64,
            ArrayElement::Bool => PgEncoding::Bool,
            ArrayElement::Float32 => PgEncoding::Float32,
            ArrayElement::Float64 => PgEncoding::Float64,
            ArrayElement::Decimal { precision, scale } => PgEncoding::Decimal { precision, scale },
            ArrayElement::VariableDecimal => PgEncoding::VariableDecimal,
            ArrayElement::Date => PgEncoding::Date,
            ArrayElement::Uuid => PgEncoding::Uuid,
            ArrayElement::Text => PgEncoding::Text,
        }
    }

    fn from_scalar(ft: PgEncoding, type_name: &str) -> Option<ArrayElement> {
        Some(match ft {
            PgEncoding::Int16 => ArrayElement::Int16,
            PgEncoding::Int32 => ArrayElement::Int32,
            PgEncoding::Int64 => ArrayElement::Int64,
            PgEncoding::Bool => ArrayElement::Bool,
            PgEncoding::Float32 => ArrayElement::Float32,
            PgEncoding::Float64 => ArrayElement::Float64,
            PgEncoding::Decimal { precision, scale } => ArrayElement::Decimal { precision, scale },
            PgEncoding::VariableDecimal => ArrayElement::VariableDecimal,
            PgEncoding::Date => ArrayElement::Date,
            PgEncoding::Uuid => ArrayElement::Uuid,
            // Only the character types; every other type that falls to Text (xml, money,
            // intervals, ...) has no array mapping in the connector.
            PgEncoding::Text if is_character_type(type_name) => ArrayElement::Text,
            _ => return None,
        })
    }
}

/// `text`, `character varying(n)`, `character(n)` (and their short spellings).
fn is_character_type(type_name: &str) -> bool {
    let base = type_name.split('(').next().unwrap_or("").trim();
    matches!(base, "text" | "character varying" | "varchar" | "character" | "char" | "bpchar" | "name")
}

impl PgEncoding {
    /// From wal2json's `type` (PostgreSQL's `format_type` with typmod).
    pub(crate) fn from_pg(type_name: &str) -> PgEncoding {
        let t = type_name.trim();
        // `format_type` prints every array as `element[]`, whatever its dimensions.
        if let Some(element) = t.strip_suffix("[]") {
            let element = element.trim();
            return ArrayElement::from_scalar(PgEncoding::from_pg(element), element)
                .map_or(PgEncoding::Text, PgEncoding::Array);
        }
        match t {
            "smallint" | "int2" => PgEncoding::Int16,
            "integer" | "int" | "int4" => PgEncoding::Int32,
            "bigint" | "int8" => PgEncoding::Int64,
            "boolean" | "bool" => PgEncoding::Bool,
            "real" | "float4" => PgEncoding::Float32,
            "double precision" | "float8" => PgEncoding::Float64,
            "numeric" | "decimal" => PgEncoding::VariableDecimal,
            "date" => PgEncoding::Date,
            "uuid" => PgEncoding::Uuid,
            "json" | "jsonb" => PgEncoding::Json,
            "bytea" => PgEncoding::Bytes,
            _ if t.starts_with("timestamp") && t.ends_with("with time zone") => PgEncoding::ZonedTimestamp,
            _ if t.starts_with("timestamp") => PgEncoding::MicroTimestamp,
            _ if t.starts_with("time") && !t.ends_with("with time zone") => PgEncoding::MicroTime,
            _ if t.starts_with("interval") => PgEncoding::MicroDuration,
            _ if t.starts_with("numeric(") || t.starts_with("decimal(") => {
                let inner = t.split_once('(').and_then(|(_, r)| r.strip_suffix(')'));
                let mut parts = inner.unwrap_or("").split(',').map(|p| p.trim().parse::<u32>());
                match (parts.next(), parts.next()) {
                    (Some(Ok(precision)), Some(Ok(scale))) => PgEncoding::Decimal { precision, scale },
                    (Some(Ok(precision)), None) => PgEncoding::Decimal { precision, scale: 0 },
                    _ => PgEncoding::VariableDecimal,
                }
            }
            _ => PgEncoding::Text,
        }
    }

    /// The decoder's wire type of this field ([`cdc_core::decode::encoding::PgEncoding`]): this
    /// type refines it with what the schema block also carries (integer and float widths, a
    /// decimal's precision), and takes its logical type name from it, so that the names the
    /// capture writes are the names the decoder reads.
    pub(crate) fn wire(self) -> WireType {
        match self {
            PgEncoding::Int16 | PgEncoding::Int32 | PgEncoding::Int64 => WireType::Int,
            PgEncoding::Bool => WireType::Bool,
            PgEncoding::Float32 | PgEncoding::Float64 => WireType::Float,
            // A scale beyond i32 cannot come from a typmod (PostgreSQL's is 16 bits).
            PgEncoding::Decimal { scale, .. } => WireType::Decimal { scale: i32::try_from(scale).unwrap_or(i32::MAX) },
            PgEncoding::VariableDecimal => WireType::VariableScaleDecimal,
            PgEncoding::ZonedTimestamp => WireType::ZonedTimestamp,
            PgEncoding::MicroTimestamp => WireType::TimestampMicros,
            PgEncoding::MicroTime => WireType::TimeMicros,
            PgEncoding::MicroDuration => WireType::MicroDuration,
            PgEncoding::Date => WireType::Date,
            PgEncoding::Uuid => WireType::Uuid,
            PgEncoding::Json => WireType::Json,
            PgEncoding::Bytes => WireType::Bytes,
            PgEncoding::Array(element) => WireType::Array(Box::new(element.scalar().wire())),
            PgEncoding::Text => WireType::Text,
        }
    }

    /// The field's entry in the schema block, without `optional` and `field`.
    fn schema_parts(self) -> (&'static str, Option<&'static str>, Option<String>) {
        let connect_type = match self {
            PgEncoding::Int16 => "int16",
            PgEncoding::Int32 | PgEncoding::Date => "int32",
            PgEncoding::Int64 | PgEncoding::MicroTimestamp | PgEncoding::MicroTime | PgEncoding::MicroDuration => {
                "int64"
            }
            PgEncoding::Bool => "boolean",
            PgEncoding::Float32 => "float",
            PgEncoding::Float64 => "double",
            PgEncoding::Decimal { .. } | PgEncoding::Bytes => "bytes",
            PgEncoding::VariableDecimal => "struct",
            PgEncoding::ZonedTimestamp | PgEncoding::Uuid | PgEncoding::Json | PgEncoding::Text => "string",
            PgEncoding::Array(_) => "array",
        };
        let parameters = match self {
            PgEncoding::Decimal { precision, scale } => {
                Some(format!(r#"{{"scale":"{scale}","connect.decimal.precision":"{precision}"}}"#))
            }
            _ => None,
        };
        (connect_type, self.wire().logical_name(), parameters)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ColumnDef {
    pub(crate) name: String,
    /// PostgreSQL's type name with typmod, as wal2json and `format_type` print it.
    pub(crate) type_name: String,
    field_type: PgEncoding,
    pub(crate) optional: bool,
}

impl ColumnDef {
    pub(crate) fn new(name: impl Into<String>, type_name: impl Into<String>, optional: bool) -> Self {
        let type_name = type_name.into();
        Self { name: name.into(), field_type: PgEncoding::from_pg(&type_name), type_name, optional }
    }
}

/// One table's columns, key and (serialized once) schema block.
#[derive(Debug, Clone)]
pub(crate) struct TableDef {
    pub(crate) schema: String,
    pub(crate) table: String,
    pub(crate) columns: Vec<ColumnDef>,
    pub(crate) key: Vec<String>,
    schema_json: String,
}

impl TableDef {
    pub(crate) fn new(server: &str, schema: &str, table: &str, columns: Vec<ColumnDef>, key: Vec<String>) -> Self {
        let schema_json = envelope_schema(server, schema, table, &columns);
        Self { schema: schema.to_string(), table: table.to_string(), columns, key, schema_json }
    }

    fn same_columns(&self, columns: &[Column<'_>]) -> bool {
        self.columns.len() == columns.len()
            && self
                .columns
                .iter()
                .zip(columns)
                .all(|(d, c)| d.name == c.name && c.type_name.as_deref().is_none_or(|t| t == d.type_name))
    }

    fn column(&self, name: &str) -> Option<&ColumnDef> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// One Debezium event ready to publish.
#[derive(Debug, Clone)]
pub struct Event {
    /// The change's own WAL position (`source.lsn`).
    pub(crate) lsn: u64,
    /// Debezium `op`: `c`, `u`, `d`, `t`, `r`.
    pub(crate) op: &'static str,
    /// The message body: `{"schema": ..., "payload": ...}`.
    pub body: String,
}

/// Turns wal2json records into Debezium events; remembers table definitions and the last commit.
#[derive(Debug)]
pub struct Converter {
    server: String,
    database: String,
    tables: HashMap<(String, String), TableDef>,
    last_commit_lsn: Option<u64>,
}

impl Converter {
    /// `server` is the connector's `topic.prefix` (`source.name`), `database` the source database.
    pub fn new(server: impl Into<String>, database: impl Into<String>) -> Self {
        Self { server: server.into(), database: database.into(), tables: HashMap::new(), last_commit_lsn: None }
    }

    pub(crate) fn server(&self) -> &str {
        &self.server
    }

    pub(crate) fn add_table(&mut self, def: TableDef) {
        self.tables.insert((def.schema.clone(), def.table.clone()), def);
    }

    /// Converts one record. `now_us` is the processing time (top-level `ts_ms`, as the connector
    /// reports it). Begin/commit records only update the converter's state and yield nothing.
    pub fn convert(&mut self, record: &Record<'_>, now_us: i64) -> Result<Vec<Event>, ConvertError> {
        let action = record.action.as_str();
        match action {
            "B" | "M" => return Ok(Vec::new()),
            "C" => {
                self.last_commit_lsn = record.lsn.as_deref().and_then(parse_pg_lsn);
                return Ok(Vec::new());
            }
            "I" | "U" | "D" | "T" => {}
            _ => return Err(ConvertError::Malformed("unknown action")),
        }
        let schema = record.schema.as_deref().ok_or(ConvertError::Malformed("change without schema"))?;
        let table = record.table.as_deref().ok_or(ConvertError::Malformed("change without table"))?;
        let lsn = record.lsn.as_deref().and_then(parse_pg_lsn).ok_or(ConvertError::Malformed("change without lsn"))?;
        let commit_us = record
            .timestamp
            .as_deref()
            .and_then(parse_timestamptz_us)
            .ok_or(ConvertError::Malformed("change without commit timestamp (include-timestamp)"))?;
        let ctx = SourceCtx { lsn, commit_us, xid: record.xid, now_us };

        if let Some(columns) = record.columns.as_deref() {
            self.learn(schema, table, columns, record.pk.as_deref());
        }
        let key = (schema.to_string(), table.to_string());
        let Some(def) = self.tables.get(&key) else {
            return Err(ConvertError::UnknownTable { schema: schema.to_string(), table: table.to_string() });
        };

        let mut events = Vec::with_capacity(1);
        match action {
            "I" => {
                let after = row(def, record.columns.as_deref().unwrap_or_default())?;
                events.push(self.event(def, &ctx, "c", None, Some(after)));
            }
            "U" => {
                let columns = record.columns.as_deref().ok_or(ConvertError::Malformed("update without columns"))?;
                let after = row(def, columns)?;
                let before = match record.identity.as_deref() {
                    Some(identity) => Some(row(def, identity)?),
                    None => Some(key_row(def, columns)?),
                };
                let key_changed = record
                    .identity
                    .as_deref()
                    .is_some_and(|identity| def.key.iter().any(|k| raw_of(identity, k) != raw_of(columns, k)));
                if key_changed {
                    events.push(self.event(def, &ctx, "d", before, None));
                    events.push(self.event(def, &ctx, "c", None, Some(after)));
                } else {
                    events.push(self.event(def, &ctx, "u", before, Some(after)));
                }
            }
            "D" => {
                let identity = record.identity.as_deref().ok_or(ConvertError::Malformed("delete without identity"))?;
                let before = row(def, identity)?;
                events.push(self.event(def, &ctx, "d", Some(before), None));
            }
            _ => events.push(self.event(def, &ctx, "t", None, None)),
        }
        Ok(events)
    }

    /// A snapshot read (`op` = `r`) of one row given as PostgreSQL text values (None = NULL), at
    /// the slot's consistent point `lsn`. Downstream a read ranks below every streamed change of
    /// its row whatever its position (docs/versions.md, "Snapshots").
    pub(crate) fn snapshot_event(
        &self,
        schema: &str,
        table: &str,
        values: &[Option<String>],
        lsn: u64,
        snapshot: &str,
        now_us: i64,
    ) -> Result<Event, ConvertError> {
        self.row_event(schema, table, values, RowOp::Read { snapshot }, lsn, now_us)
    }

    /// An update (`op` = `u`, no before image) of one row given as PostgreSQL text values,
    /// at `lsn`: what `repair` sends. Not a snapshot read: a read ranks below every streamed
    /// change of its row, and a repaired row must out-rank every change before `lsn`.
    pub(crate) fn update_event(
        &self,
        schema: &str,
        table: &str,
        values: &[Option<String>],
        lsn: u64,
        now_us: i64,
    ) -> Result<Event, ConvertError> {
        self.row_event(schema, table, values, RowOp::Update, lsn, now_us)
    }

    /// One row image of a known table as a read or an update event.
    fn row_event(
        &self,
        schema: &str,
        table: &str,
        values: &[Option<String>],
        op: RowOp<'_>,
        lsn: u64,
        now_us: i64,
    ) -> Result<Event, ConvertError> {
        let def = self
            .tables
            .get(&(schema.to_string(), table.to_string()))
            .ok_or_else(|| ConvertError::UnknownTable { schema: schema.to_string(), table: table.to_string() })?;
        let mut after = Vec::with_capacity(def.columns.len());
        for (col, text) in def.columns.iter().zip(values) {
            let value = match text {
                None => serde_json::Value::Null,
                Some(t) => encode_text(col, t)?,
            };
            after.push((col.name.clone(), value));
        }
        let ctx = SourceCtx { lsn, commit_us: now_us, xid: None, now_us };
        Ok(match op {
            RowOp::Read { snapshot } => self.event_with_snapshot(def, &ctx, "r", None, Some(after), snapshot),
            RowOp::Update => self.event(def, &ctx, "u", None, Some(after)),
        })
    }

    fn learn(&mut self, schema: &str, table: &str, columns: &[Column<'_>], pk: Option<&[super::wal2json::PkColumn]>) {
        let key = (schema.to_string(), table.to_string());
        if self.tables.get(&key).is_some_and(|d| d.same_columns(columns)) {
            return;
        }
        let defs = columns
            .iter()
            .map(|c| {
                ColumnDef::new(
                    c.name.clone(),
                    c.type_name.clone().unwrap_or_else(|| "text".into()),
                    c.optional.unwrap_or(true),
                )
            })
            .collect();
        let key_cols = match pk {
            Some(pk) => pk.iter().map(|p| p.name.clone()).collect(),
            None => self.tables.get(&key).map(|d| d.key.clone()).unwrap_or_default(),
        };
        let def = TableDef::new(&self.server, schema, table, defs, key_cols);
        self.tables.insert(key, def);
    }

    fn event(
        &self,
        def: &TableDef,
        ctx: &SourceCtx,
        op: &'static str,
        before: Option<RowValues>,
        after: Option<RowValues>,
    ) -> Event {
        self.event_with_snapshot(def, ctx, op, before, after, "false")
    }

    fn event_with_snapshot(
        &self,
        def: &TableDef,
        ctx: &SourceCtx,
        op: &'static str,
        before: Option<RowValues>,
        after: Option<RowValues>,
        snapshot: &str,
    ) -> Event {
        let sequence = format!(
            "[{},\"{}\"]",
            self.last_commit_lsn.map_or_else(|| "null".to_string(), |l| format!("\"{l}\"")),
            ctx.lsn
        );
        let payload = Payload {
            before: before.as_deref().map(RowJson),
            after: after.as_deref().map(RowJson),
            source: Source {
                version: CONNECTOR_VERSION,
                connector: "postgresql",
                name: &self.server,
                ts_ms: ctx.commit_us.div_euclid(1000),
                snapshot,
                db: &self.database,
                sequence,
                ts_us: ctx.commit_us,
                ts_ns: ctx.commit_us.saturating_mul(1000),
                schema: &def.schema,
                table: &def.table,
                tx_id: ctx.xid,
                lsn: ctx.lsn,
                xmin: None,
            },
            transaction: None,
            op,
            ts_ms: ctx.now_us.div_euclid(1000),
            ts_us: ctx.now_us,
            ts_ns: ctx.now_us.saturating_mul(1000),
        };
        // Serializing plain structs and JSON values cannot fail.
        let payload = serde_json::to_string(&payload).unwrap_or_default();
        let body = format!(r#"{{"schema":{},"payload":{}}}"#, def.schema_json, payload);
        Event { lsn: ctx.lsn, op, body }
    }
}

/// The op of a row image built from text values ([`Converter::row_event`]).
enum RowOp<'a> {
    /// A snapshot read, with `source.snapshot`.
    Read {
        snapshot: &'a str,
    },
    Update,
}

struct SourceCtx {
    lsn: u64,
    commit_us: i64,
    xid: Option<u64>,
    now_us: i64,
}

type RowValues = Vec<(String, serde_json::Value)>;

/// A row image in column order (the JSON converter writes struct fields in schema order).
struct RowJson<'a>(&'a [(String, serde_json::Value)]);

impl Serialize for RowJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

#[derive(Serialize)]
struct Payload<'a> {
    before: Option<RowJson<'a>>,
    after: Option<RowJson<'a>>,
    source: Source<'a>,
    transaction: Option<()>,
    op: &'a str,
    ts_ms: i64,
    ts_us: i64,
    ts_ns: i64,
}

#[derive(Serialize)]
struct Source<'a> {
    version: &'a str,
    connector: &'a str,
    name: &'a str,
    ts_ms: i64,
    snapshot: &'a str,
    db: &'a str,
    sequence: String,
    ts_us: i64,
    ts_ns: i64,
    schema: &'a str,
    table: &'a str,
    #[serde(rename = "txId")]
    tx_id: Option<u64>,
    lsn: u64,
    xmin: Option<u64>,
}

fn raw_of<'a>(columns: &'a [Column<'_>], name: &str) -> Option<&'a str> {
    columns.iter().find(|c| c.name == name).and_then(|c| c.value).map(RawValue::get)
}

/// The image wal2json gave, in its column order, each value encoded by its table column's type.
fn row(def: &TableDef, columns: &[Column<'_>]) -> Result<RowValues, ConvertError> {
    columns
        .iter()
        .map(|c| {
            let col = def.column(&c.name).cloned().unwrap_or_else(|| {
                ColumnDef::new(c.name.clone(), c.type_name.clone().unwrap_or_else(|| "text".into()), true)
            });
            Ok((c.name.clone(), encode_raw(&col, c.value)?))
        })
        .collect()
}

/// The key columns of a row image (the `before` of an update whose old key was not logged).
fn key_row(def: &TableDef, columns: &[Column<'_>]) -> Result<RowValues, ConvertError> {
    let keys: Vec<&Column<'_>> = columns.iter().filter(|c| def.key.contains(&c.name)).collect();
    keys.into_iter()
        .map(|c| {
            let col = def.column(&c.name).cloned().unwrap_or_else(|| ColumnDef::new(c.name.clone(), "text", false));
            Ok((c.name.clone(), encode_raw(&col, c.value)?))
        })
        .collect()
}

fn bad(col: &ColumnDef, reason: &'static str) -> ConvertError {
    ConvertError::BadValue { column: col.name.clone(), type_name: col.type_name.clone(), reason }
}

/// Encodes wal2json's raw JSON value (numbers unquoted, everything else a JSON string).
fn encode_raw(col: &ColumnDef, raw: Option<&RawValue>) -> Result<serde_json::Value, ConvertError> {
    let Some(raw) = raw else { return Ok(serde_json::Value::Null) };
    let text = raw.get();
    if text == "null" {
        return Ok(serde_json::Value::Null);
    }
    // Strings arrive JSON-escaped; numbers and booleans as bare tokens.
    let unquoted: std::borrow::Cow<'_, str> = if text.starts_with('"') {
        match serde_json::from_str::<String>(text) {
            Ok(s) => s.into(),
            Err(_) => return Err(bad(col, "invalid JSON string")),
        }
    } else {
        text.into()
    };
    encode_text(col, &unquoted)
}

/// Encodes one value given in PostgreSQL's text form.
fn encode_text(col: &ColumnDef, text: &str) -> Result<serde_json::Value, ConvertError> {
    encode_as(col, col.field_type, text)
}

/// Encodes `text` as `field_type` (the column's own type, or its array's element type); `col`
/// only names the column in errors.
fn encode_as(col: &ColumnDef, field_type: PgEncoding, text: &str) -> Result<serde_json::Value, ConvertError> {
    use serde_json::Value as J;
    Ok(match field_type {
        PgEncoding::Int16 | PgEncoding::Int32 | PgEncoding::Int64 => {
            J::from(text.parse::<i64>().map_err(|_| bad(col, "not an integer"))?)
        }
        PgEncoding::Bool => match text {
            "true" | "t" => J::Bool(true),
            "false" | "f" => J::Bool(false),
            _ => return Err(bad(col, "not a boolean")),
        },
        PgEncoding::Float32 | PgEncoding::Float64 => match text.parse::<f64>() {
            Ok(f) if f.is_finite() => J::from(f),
            _ => J::String(text.to_string()),
        },
        PgEncoding::Decimal { scale, .. } => {
            if text == "NaN" {
                J::String("NaN".into())
            } else {
                let d = Decimal::parse(text).ok_or_else(|| bad(col, "not a decimal"))?;
                let d = d.rescale(scale).ok_or_else(|| bad(col, "decimal does not fit its scale"))?;
                J::String(decimal_to_base64(d.unscaled))
            }
        }
        PgEncoding::VariableDecimal => {
            if text == "NaN" {
                J::String("NaN".into())
            } else {
                let d = Decimal::parse(text).ok_or_else(|| bad(col, "not a decimal"))?;
                serde_json::json!({ "scale": d.scale, "value": decimal_to_base64(d.unscaled) })
            }
        }
        PgEncoding::ZonedTimestamp => match text {
            "infinity" | "-infinity" => J::String(text.to_string()),
            _ => J::String(zoned_iso(parse_timestamptz_us(text).ok_or_else(|| bad(col, "not a timestamptz"))?)),
        },
        PgEncoding::MicroTimestamp => match text {
            // The connector's sentinels, which the decoder reads back as ±infinity.
            "infinity" => J::from(POSITIVE_INFINITY_SENTINEL),
            "-infinity" => J::from(NEGATIVE_INFINITY_SENTINEL),
            _ => J::from(parse_timestamp_us(text).ok_or_else(|| bad(col, "not a timestamp"))?),
        },
        PgEncoding::MicroTime => J::from(parse_time_us(text).ok_or_else(|| bad(col, "not a time"))?),
        PgEncoding::MicroDuration => J::from(parse_interval_us(text).ok_or_else(|| bad(col, "not an interval"))?),
        PgEncoding::Date => {
            let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| bad(col, "not a date"))?;
            let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
            J::from((date - epoch).num_days())
        }
        PgEncoding::Bytes => {
            let bytes = parse_bytea_hex(text).ok_or_else(|| bad(col, "not bytea hex text (bytea_output=hex)"))?;
            J::String(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
        PgEncoding::Array(element) => {
            let items = parse_pg_array(text).map_err(|reason| bad(col, reason))?;
            let mut values = Vec::with_capacity(items.len());
            for item in items {
                values.push(match item {
                    None => J::Null,
                    Some(t) => encode_as(col, element.scalar(), &t)?,
                });
            }
            J::Array(values)
        }
        PgEncoding::Uuid | PgEncoding::Json | PgEncoding::Text => J::String(text.to_string()),
    })
}

/// Decodes the hex text of a BYTEA: PostgreSQL's hex output (`\x0a0b...`, the session's
/// `bytea_output`, which the capture sets to `hex`) as a snapshot reads it, or the same without
/// the `\x` prefix, which wal2json strips. (No hex digit is a backslash: the two never mix up.)
/// `HH:MM:SS[.ffffff]` (PostgreSQL's `time` output; `24:00:00` included) as µs since midnight.
fn parse_time_us(text: &str) -> Option<i64> {
    let mut parts = text.trim().splitn(3, ':');
    let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
    let number =
        |t: &str| if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) { t.parse::<i64>().ok() } else { None };
    let (whole, fraction) = s.split_once('.').unwrap_or((s, ""));
    if fraction.len() > 6 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let micros = if fraction.is_empty() { 0 } else { format!("{fraction:0<6}").parse::<i64>().ok()? };
    let (h, m, whole) = (number(h)?, number(m)?, number(whole)?);
    if h > 24 || m > 59 || whole > 60 {
        return None;
    }
    Some(((h * 60 + m) * 60 + whole) * 1_000_000 + micros)
}

/// Microseconds of Debezium's average month (365.25 / 12 days).
const MONTH_US: i64 = 2_629_800_000_000;

/// PostgreSQL's `interval` output in the default `postgres` IntervalStyle (which the capture
/// session sets): `[N year[s]] [N mon[s]] [N day[s]] [[+-]HH:MM:SS[.ffffff]]`, each part signed,
/// as Debezium's MicroDuration µs (a month is 365.25 / 12 days, a year 12 months).
fn parse_interval_us(text: &str) -> Option<i64> {
    let mut total: i64 = 0;
    let mut tokens = text.split_whitespace().peekable();
    let mut any = false;
    while let Some(token) = tokens.next() {
        any = true;
        if token.contains(':') {
            let (negative, clock) = match token.as_bytes().first()? {
                b'-' => (true, &token[1..]),
                b'+' => (false, &token[1..]),
                _ => (false, token),
            };
            // Hours may exceed 24 in an interval.
            let (hours, rest) = clock.split_once(':')?;
            let hours: i64 = hours.parse().ok()?;
            let rest_us = parse_time_us(&format!("0:{rest}"))?;
            let us = hours.checked_mul(3_600_000_000)?.checked_add(rest_us)?;
            total = total.checked_add(if negative { -us } else { us })?;
            continue;
        }
        let amount: i64 = token.parse().ok()?;
        let unit = tokens.next()?;
        let per = match unit.trim_end_matches('s') {
            "year" => 12 * MONTH_US,
            "mon" => MONTH_US,
            "day" => 86_400_000_000,
            _ => return None,
        };
        total = total.checked_add(amount.checked_mul(per)?)?;
    }
    any.then_some(total)
}

fn parse_bytea_hex(text: &str) -> Option<Vec<u8>> {
    let hex = text.strip_prefix("\\x").unwrap_or(text).as_bytes();
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    hex.chunks_exact(2).map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?)).collect()
}

/// Parses PostgreSQL's text form of a one-dimensional array (`{1,2,NULL}`,
/// `{"a b","c\"d",NULL}`) into its elements, `None` for an SQL NULL. Elements are quoted by
/// the server when they contain a delimiter, brace, quote, backslash or white space, are empty,
/// or spell NULL; inside quotes (and outside) a backslash takes the next character literally.
/// A multi-dimensional array is refused: Debezium's arrays have one dimension.
fn parse_pg_array(text: &str) -> Result<Vec<Option<String>>, &'static str> {
    let mut rest = text.trim();
    // Non-default bounds come first: `[0:2]={1,2,3}`. One bound pair is one dimension.
    if rest.starts_with('[') {
        let (bounds, array) = rest.split_once('=').ok_or("malformed array bounds")?;
        if bounds.matches('[').count() != 1 {
            return Err("multi-dimensional arrays are not supported");
        }
        rest = array.trim_start();
    }
    let mut chars = rest.chars().peekable();
    if chars.next() != Some('{') {
        return Err("array text does not start with '{'");
    }
    let mut items = Vec::new();
    let skip_ws = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
    };
    skip_ws(&mut chars);
    if chars.peek() == Some(&'}') {
        chars.next();
    } else {
        loop {
            skip_ws(&mut chars);
            match chars.peek() {
                Some('{') => return Err("multi-dimensional arrays are not supported"),
                Some('"') => {
                    chars.next();
                    let mut item = String::new();
                    loop {
                        match chars.next() {
                            Some('"') => break,
                            Some('\\') => item.push(chars.next().ok_or("unterminated escape in array")?),
                            Some(c) => item.push(c),
                            None => return Err("unterminated quoted array element"),
                        }
                    }
                    items.push(Some(item));
                    skip_ws(&mut chars);
                }
                Some(_) => {
                    let mut item = String::new();
                    // Trailing white space of an unquoted element is not part of it, unless escaped.
                    let mut kept = 0;
                    let mut escaped = false;
                    while let Some(&c) = chars.peek() {
                        if c == ',' || c == '}' {
                            break;
                        }
                        chars.next();
                        match c {
                            '\\' => {
                                item.push(chars.next().ok_or("unterminated escape in array")?);
                                kept = item.len();
                                escaped = true;
                            }
                            '"' | '{' => return Err("unexpected character in unquoted array element"),
                            c => {
                                item.push(c);
                                if !c.is_whitespace() {
                                    kept = item.len();
                                }
                            }
                        }
                    }
                    item.truncate(kept);
                    if item.is_empty() {
                        return Err("empty unquoted array element");
                    }
                    items.push(if !escaped && item.eq_ignore_ascii_case("NULL") { None } else { Some(item) });
                }
                None => return Err("unterminated array"),
            }
            match chars.next() {
                Some(',') => continue,
                Some('}') => break,
                _ => return Err("expected ',' or '}' in array"),
            }
        }
    }
    skip_ws(&mut chars);
    if chars.next().is_some() {
        return Err("trailing characters after array");
    }
    Ok(items)
}

/// Parses PostgreSQL's ISO text of a TIMESTAMPTZ (`2026-11-22 02:14:32.019849+00`, offsets as
/// `+05:30` too) into microseconds since the epoch.
fn parse_timestamptz_us(text: &str) -> Option<i64> {
    let t = text.trim();
    // PostgreSQL prints the offset as +HH, +HH:MM or +HH:MM:SS; chrono wants +HH:MM.
    let split = t.rfind(['+', '-']).filter(|&i| i > 10)?;
    let (local, offset) = t.split_at(split);
    let offset = match offset.len() {
        3 => format!("{offset}:00"),
        6 => offset.to_string(),
        9 => offset.get(..6)?.to_string(),
        _ => return None,
    };
    let dt = DateTime::parse_from_str(&format!("{local}{offset}"), "%Y-%m-%d %H:%M:%S%.f%:z").ok()?;
    Some(dt.timestamp_micros())
}

/// Parses PostgreSQL's ISO text of a TIMESTAMP without time zone into microseconds since the epoch.
fn parse_timestamp_us(text: &str) -> Option<i64> {
    let dt = NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%d %H:%M:%S%.f").ok()?;
    Some(dt.and_utc().timestamp_micros())
}

/// Debezium's ZonedTimestamp text for an instant: ISO-8601 in UTC with `Z`, the fraction printed
/// with as many digits as needed (Java's `ISO_OFFSET_DATE_TIME`).
fn zoned_iso(us: i64) -> String {
    let secs = us.div_euclid(1_000_000);
    let micros = us.rem_euclid(1_000_000);
    let Some(dt) = DateTime::from_timestamp(secs, 0) else { return String::new() };
    let base = dt.format("%Y-%m-%dT%H:%M:%S").to_string();
    if micros == 0 {
        format!("{base}Z")
    } else {
        let frac = format!("{micros:06}");
        format!("{base}.{}Z", frac.trim_end_matches('0'))
    }
}

fn field_schema(col: &ColumnDef) -> String {
    let field = serde_json::to_string(&col.name).unwrap_or_default();
    let mut out = type_schema(col.field_type, col.optional);
    // `type_schema` ends with the object's closing brace; the field name comes last.
    out.pop();
    out.push_str(&format!(r#","field":{field}}}"#));
    out
}

/// One type's schema object as the JSON converter writes it (key order: type, items or fields,
/// optional, name, version, doc, parameters), without `field`.
fn type_schema(field_type: PgEncoding, optional: bool) -> String {
    let (ty, name, parameters) = field_type.schema_parts();
    let mut out = String::with_capacity(160);
    out.push_str(&format!(r#"{{"type":"{ty}","#));
    if field_type == PgEncoding::VariableDecimal {
        out.push_str(r#""fields":[{"type":"int32","optional":false,"field":"scale"},{"type":"bytes","optional":false,"field":"value"}],"#);
    }
    if let PgEncoding::Array(element) = field_type {
        // The connector builds every array's element schema optional (elements may be NULL).
        out.push_str(&format!(r#""items":{},"#, type_schema(element.scalar(), true)));
    }
    out.push_str(&format!(r#""optional":{optional}"#));
    if let Some(name) = name {
        out.push_str(&format!(r#","name":"{name}","version":1"#));
    }
    if field_type == PgEncoding::VariableDecimal {
        out.push_str(r#","doc":"Variable scaled decimal""#);
    }
    if let Some(parameters) = parameters {
        out.push_str(&format!(r#","parameters":{parameters}"#));
    }
    out.push('}');
    out
}

/// The schema block of the connector's envelope for one table, as the JSON converter writes it.
fn envelope_schema(server: &str, schema: &str, table: &str, columns: &[ColumnDef]) -> String {
    let fields: Vec<String> = columns.iter().map(field_schema).collect();
    let fields = fields.join(",");
    let value_name = serde_json::to_string(&format!("{server}.{schema}.{table}.Value")).unwrap_or_default();
    let envelope_name = serde_json::to_string(&format!("{server}.{schema}.{table}.Envelope")).unwrap_or_default();
    let value = |field: &str| {
        format!(r#"{{"type":"struct","fields":[{fields}],"optional":true,"name":{value_name},"field":"{field}"}}"#)
    };
    let source = concat!(
        r#"{"type":"struct","fields":["#,
        r#"{"type":"string","optional":false,"field":"version"},"#,
        r#"{"type":"string","optional":false,"field":"connector"},"#,
        r#"{"type":"string","optional":false,"field":"name"},"#,
        r#"{"type":"int64","optional":false,"field":"ts_ms"},"#,
        r#"{"type":"string","optional":true,"name":"io.debezium.data.Enum","version":1,"parameters":{"allowed":"true,first,first_in_data_collection,last_in_data_collection,last,false,incremental"},"default":"false","field":"snapshot"},"#,
        r#"{"type":"string","optional":false,"field":"db"},"#,
        r#"{"type":"string","optional":true,"field":"sequence"},"#,
        r#"{"type":"int64","optional":true,"field":"ts_us"},"#,
        r#"{"type":"int64","optional":true,"field":"ts_ns"},"#,
        r#"{"type":"string","optional":false,"field":"schema"},"#,
        r#"{"type":"string","optional":false,"field":"table"},"#,
        r#"{"type":"int64","optional":true,"field":"txId"},"#,
        r#"{"type":"int64","optional":true,"field":"lsn"},"#,
        r#"{"type":"int64","optional":true,"field":"xmin"}"#,
        r#"],"optional":false,"name":"io.debezium.connector.postgresql.Source","field":"source"}"#
    );
    let transaction = concat!(
        r#"{"type":"struct","fields":["#,
        r#"{"type":"string","optional":false,"field":"id"},"#,
        r#"{"type":"int64","optional":false,"field":"total_order"},"#,
        r#"{"type":"int64","optional":false,"field":"data_collection_order"}"#,
        r#"],"optional":true,"name":"event.block","version":1,"field":"transaction"}"#
    );
    format!(
        concat!(
            r#"{{"type":"struct","fields":[{before},{after},{source},{transaction},"#,
            r#"{{"type":"string","optional":false,"field":"op"}},"#,
            r#"{{"type":"int64","optional":true,"field":"ts_ms"}},"#,
            r#"{{"type":"int64","optional":true,"field":"ts_us"}},"#,
            r#"{{"type":"int64","optional":true,"field":"ts_ns"}}"#,
            r#"],"optional":false,"name":{envelope},"version":2}}"#
        ),
        before = value("before"),
        after = value("after"),
        source = source,
        transaction = transaction,
        envelope = envelope_name,
    )
}

#[cfg(test)]
mod tests;
