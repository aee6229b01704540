//! Debezium PostgreSQL connector events (JSON converter), with or without the schema envelope.
//!
//! Enters: the `payload` object (or the bare body when schemas are disabled) and, when the
//! message had a schema block, its cached row plan. Leaves: a [`ChangeEvent`] for ops
//! `c`/`u`/`d`/`r`/`t`, or a [`Skipped`] for logical messages (`m`), heartbeats
//! (`{"ts_ms": ..}`) and transaction metadata (`status` BEGIN/END).
//!
//! Version is `source.lsn`, the WAL position of the change. Commit time is `source.ts_us`
//! (else `ts_ns`, else `ts_ms`): the payload's top-level `ts_ms` is the connector's processing
//! time and is never used. The table is (`source.db`, `source.schema`, `source.table`).
//!
//! Also records flattened by Debezium's `ExtractNewRecordState` transform ([`decode_flattened`]):
//! the row itself with the `add.fields` metadata as `__`-prefixed members.

use serde_json::value::RawValue;

use super::raw::{self, RawObject};
use super::schema_cache::RowPlan;
use super::{
    DecodeError, Decoder, Resolved, change_event, decode_columns, decode_row, parse_object, string, table_ref, truncate,
};
use crate::change::{ChangeEvent, Decoded, InputFormat, Op, Skipped, Snapshot};

/// True when an object without `schema`/`payload` is a bare Debezium payload.
pub(crate) fn looks_like_payload(obj: &RawObject<'_>) -> bool {
    ["op", "source", "before", "after", "status", "ts_ms"].iter().any(|k| obj.has(k)) || is_flattened(obj)
}

/// The metadata members `ExtractNewRecordState` adds with its default prefix `__`
/// (`add.fields`: envelope fields by name, `source` fields by name or as `source.NAME` →
/// `__source_NAME`; `delete.handling.mode=rewrite` → `__deleted`). A Debezium envelope never
/// has such members, so any of them marks a flattened record, whatever the row's own columns
/// are called (a `status` column no longer makes it a transaction marker).
const FLAT_MARKERS: [&str; 8] = ["__deleted", "__op", "__table", "__lsn", "__schema", "__db", "__txId", "__ts_ms"];

fn is_flattened(obj: &RawObject<'_>) -> bool {
    obj.iter().any(|(k, _)| FLAT_MARKERS.contains(&k) || k.starts_with("__source_"))
}

pub(crate) fn decode_payload(
    decoder: &Decoder,
    payload: &RawObject<'_>,
    plan: Option<&RowPlan>,
) -> Result<Decoded, DecodeError> {
    if is_flattened(payload) {
        return decode_flattened(decoder, payload, plan);
    }
    let Some(op) = string(payload, "op")? else {
        if let Some(status) = string(payload, "status")? {
            return match status.as_ref() {
                "BEGIN" | "END" => Ok(Decoded::Skipped(Skipped::TransactionBoundary)),
                _ => Err(DecodeError::BadField("status")),
            };
        }
        if payload.has("before") || payload.has("after") || payload.has("source") {
            return Err(DecodeError::MissingField("op"));
        }
        if payload.has("ts_ms") {
            return Ok(Decoded::Skipped(Skipped::Heartbeat));
        }
        return Err(DecodeError::UnknownEnvelope);
    };
    let Some(op) = op_from_code(&op)? else { return Ok(Decoded::Skipped(Skipped::LogicalMessage)) };

    let source = payload.get_some("source").ok_or(DecodeError::MissingField("source"))?;
    let source = parse_object(source, "source")?;
    let table_name = string(&source, "table")?.ok_or(DecodeError::MissingField("source.table"))?;
    let schema = string(&source, "schema")?;
    let database = string(&source, "db")?;
    let table = table_ref(database.as_deref(), schema.as_deref(), &table_name, false);
    let Resolved::Known(table, mirror) = decoder.resolve_table(table, false)? else {
        return Ok(Decoded::Skipped(Skipped::UnknownTable));
    };

    let lsn = source.get_some("lsn").ok_or(DecodeError::MissingVersion("source.lsn"))?;
    let version = super::position_version(raw::as_u64(lsn).ok_or(DecodeError::BadField("source.lsn"))?, "source.lsn")?;
    let commit_time_us = commit_time(&source)?;
    let transaction_id = source.get_some("txId").map(|v| id_text(v, "source.txId")).transpose()?;
    let snapshot = source.get_some("snapshot").and_then(snapshot);

    let rows = if op == Op::Truncate {
        (None, None)
    } else {
        let row = |field: &'static str| {
            payload.get_some(field).map(|raw| decode_row(raw, field, plan, mirror.declared(), true)).transpose()
        };
        let (before, after) = (row("before")?, row("after")?);
        match op {
            Op::Create | Op::Read | Op::Update if after.is_none() => return Err(DecodeError::MissingField("after")),
            Op::Delete if before.is_none() => return Err(DecodeError::MissingField("before")),
            _ => (before, after),
        }
    };

    Ok(Decoded::Change(Box::new(ChangeEvent {
        commit_time_us,
        transaction_id,
        snapshot,
        ..change_event(InputFormat::Debezium, (table, mirror), op, rows, super::debezium_version(op, version))
    })))
}

/// The operation of Debezium's `op` code, the same in an envelope and in a flattened record's
/// `__op`. `None` for `m`, a logical-decoding message, which changes no row.
fn op_from_code(code: &str) -> Result<Option<Op>, DecodeError> {
    Ok(Some(match code {
        "c" => Op::Create,
        "u" => Op::Update,
        "d" => Op::Delete,
        "r" => Op::Read,
        "t" => Op::Truncate,
        "m" => return Ok(None),
        other => return Err(DecodeError::UnknownOp(truncate(other, 16))),
    }))
}

/// The commit time in µs: `ts_us` is exact; `ts_ns` and `ts_ms` are converted.
fn commit_time(source: &RawObject<'_>) -> Result<Option<i64>, DecodeError> {
    commit_time_from(source, ["ts_us", "ts_ns", "ts_ms"], ["source.ts_us", "source.ts_ns", "source.ts_ms"])
}

fn commit_time_from(
    obj: &RawObject<'_>,
    [us_key, ns_key, ms_key]: [&str; 3],
    [us_field, ns_field, ms_field]: [&'static str; 3],
) -> Result<Option<i64>, DecodeError> {
    if let Some(us) = obj.get_some(us_key) {
        return raw::as_i64(us).map(Some).ok_or(DecodeError::BadField(us_field));
    }
    if let Some(ns) = obj.get_some(ns_key) {
        return raw::as_i64(ns).map(|v| Some(v.div_euclid(1000))).ok_or(DecodeError::BadField(ns_field));
    }
    if let Some(ms) = obj.get_some(ms_key) {
        return raw::as_i64(ms).and_then(|v| v.checked_mul(1000)).map(Some).ok_or(DecodeError::BadField(ms_field));
    }
    Ok(None)
}

/// A `source` field added by `add.fields`: `__NAME` (`add.fields=NAME`) or `__source_NAME`
/// (`add.fields=source.NAME`), as `(key, field name for errors)`.
fn added<'a>(
    record: &RawObject<'a>,
    name: &str,
    fields: [&'static str; 2],
) -> Result<Option<(std::borrow::Cow<'a, str>, &'static str)>, DecodeError> {
    for (key, field) in [format!("__{name}"), format!("__source_{name}")].iter().zip(fields) {
        if let Some(raw) = record.get_some(key) {
            return raw::as_str(raw).map(|v| Some((v, field))).ok_or(DecodeError::BadField(field));
        }
    }
    Ok(None)
}

/// A record flattened by `ExtractNewRecordState`: the row's columns plus `__`-prefixed
/// metadata (docs: "New Record State Extraction"). Decoded exactly or refused by name:
///
/// - table: `__table` with `__schema` (and `__db` when present; also `__source_table`...):
///   (database, schema, table) as in an envelope. Both are required: without the schema the
///   table cannot be told from a namesake in another schema (`add.fields=schema,table,lsn`).
/// - version: `__lsn` (or `__source_lsn`), the change's WAL position as in an envelope;
///   without it the record has no version and is refused (`version.missing`), never ordered
///   by a guess such as the processing time.
/// - operation: `__deleted: "true"` (`delete.handling.mode=rewrite`) is a delete whose row is
///   the before-image; else `__op` (`c`/`u`/`r`/`d`/`t`, `m` skipped); with only
///   `__deleted: "false"` the row is an upsert (create, read and update write the same mirror
///   row; it is recorded as an update). `__deleted` is the string "true"/"false".
/// - commit time: `__source_ts_us`/`_ns`/`_ms`; `__ts_ms` is the connector's processing time
///   and is ignored. Transaction id: `__txId` / `__source_txId`.
fn decode_flattened(decoder: &Decoder, record: &RawObject<'_>, plan: Option<&RowPlan>) -> Result<Decoded, DecodeError> {
    let deleted = match record.get_some("__deleted") {
        None => None,
        Some(raw) => match raw::as_str(raw).as_deref() {
            Some("true") => Some(true),
            Some("false") => Some(false),
            _ => return Err(DecodeError::BadField("__deleted")),
        },
    };
    let op = match string(record, "__op")? {
        None => None,
        Some(code) => match op_from_code(&code)? {
            Some(op) => Some(op),
            None => return Ok(Decoded::Skipped(Skipped::LogicalMessage)),
        },
    };
    let op = match (deleted, op) {
        (Some(true), None | Some(Op::Delete)) => Op::Delete,
        (Some(true), Some(_)) | (Some(false), Some(Op::Delete)) => return Err(DecodeError::BadField("__deleted")),
        (_, Some(op)) => op,
        (Some(false), None) => Op::Update,
        (None, None) => return Err(DecodeError::MissingField("__op")),
    };

    let (table_name, _) =
        added(record, "table", ["__table", "__source_table"])?.ok_or(DecodeError::MissingField("__table"))?;
    let (schema, _) =
        added(record, "schema", ["__schema", "__source_schema"])?.ok_or(DecodeError::MissingField("__schema"))?;
    let database = added(record, "db", ["__db", "__source_db"])?.map(|(db, _)| db);
    let table = table_ref(database.as_deref(), Some(&schema), &table_name, false);
    let Resolved::Known(table, mirror) = decoder.resolve_table(table, false)? else {
        return Ok(Decoded::Skipped(Skipped::UnknownTable));
    };

    let (lsn, field) = match (record.get_some("__lsn"), record.get_some("__source_lsn")) {
        (Some(lsn), _) => (lsn, "__lsn"),
        (None, Some(lsn)) => (lsn, "__source_lsn"),
        (None, None) => return Err(DecodeError::MissingVersion("__lsn")),
    };
    let version = super::position_version(raw::as_u64(lsn).ok_or(DecodeError::BadField(field))?, field)?;
    let commit_time_us = commit_time_from(
        record,
        ["__source_ts_us", "__source_ts_ns", "__source_ts_ms"],
        ["__source_ts_us", "__source_ts_ns", "__source_ts_ms"],
    )?;
    let transaction_id = match (record.get_some("__txId"), record.get_some("__source_txId")) {
        (Some(id), _) => Some(id_text(id, "__txId")?),
        (None, Some(id)) => Some(id_text(id, "__source_txId")?),
        (None, None) => None,
    };

    let rows = if op == Op::Truncate {
        (None, None)
    } else {
        let columns = record.iter().filter(|(k, _)| !k.starts_with("__"));
        let row = decode_columns(columns, record.len(), plan, mirror.declared(), true)?;
        if op == Op::Delete { (Some(row), None) } else { (None, Some(row)) }
    };

    Ok(Decoded::Change(Box::new(ChangeEvent {
        commit_time_us,
        transaction_id,
        ..change_event(InputFormat::Debezium, (table, mirror), op, rows, super::debezium_version(op, version))
    })))
}

/// A transaction id sent as a number or a string.
pub(crate) fn id_text(raw: &RawValue, field: &'static str) -> Result<String, DecodeError> {
    if let Some(s) = raw::as_str(raw) {
        return Ok(s.into_owned());
    }
    if raw::is_number(raw.get()) {
        return Ok(raw.get().to_owned());
    }
    Err(DecodeError::BadField(field))
}

/// `source.snapshot` is an enum string; Debezium 1.x sent a boolean. An unknown value (a newer
/// Debezium) is informational only, so it is dropped rather than failing the change.
fn snapshot(raw: &RawValue) -> Option<Snapshot> {
    match raw.get() {
        "true" => Some(Snapshot::True),
        "false" => Some(Snapshot::False),
        _ => raw::as_str(raw).and_then(|s| Snapshot::parse(&s)),
    }
}
