//! Debezium PostgreSQL connector events (JSON converter), with or without the schema envelope.
//!
//! Enters: the `payload` object (or the bare body when schemas are disabled) and, when the
//! message had a schema block, its cached row plan. Leaves: a [`ChangeEvent`] for ops
//! `c`/`u`/`d`/`r`/`t`, or a [`Skipped`] for logical messages (`m`), heartbeats
//! (`{"ts_ms": ..}`) and transaction metadata (`status` BEGIN/END).
//!
//! Version is `source.lsn`, the WAL position of the change. Commit time is `source.ts_us`
//! (else `ts_ns`, else `ts_ms`): the payload's top-level `ts_ms` is the connector's processing
//! time and is never used.

use serde_json::value::RawValue;

use super::raw::{self, RawObject};
use super::schema_cache::RowPlan;
use super::{DecodeError, Decoder, Resolved, decode_row, parse_object, string, truncate};
use crate::change::{ChangeEvent, Decoded, InputFormat, Op, Skipped, Snapshot};

/// True when an object without `schema`/`payload` is a bare Debezium payload.
pub(crate) fn looks_like_payload(obj: &RawObject<'_>) -> bool {
    ["op", "source", "before", "after", "status", "ts_ms"].iter().any(|k| obj.has(k))
}

pub(crate) fn decode_payload(
    decoder: &Decoder,
    payload: &RawObject<'_>,
    plan: Option<&RowPlan>,
) -> Result<Decoded, DecodeError> {
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
    let op = match op.as_ref() {
        "c" => Op::Create,
        "u" => Op::Update,
        "d" => Op::Delete,
        "r" => Op::Read,
        "t" => Op::Truncate,
        "m" => return Ok(Decoded::Skipped(Skipped::LogicalMessage)),
        other => return Err(DecodeError::UnknownOp(truncate(other, 16))),
    };

    let source = payload.get_some("source").ok_or(DecodeError::MissingField("source"))?;
    let source = parse_object(source, "source")?;
    let table_name = string(&source, "table")?.ok_or(DecodeError::MissingField("source.table"))?;
    let schema = string(&source, "schema")?;
    let (table, spec) = match decoder.resolve_table(schema.as_deref(), &table_name)? {
        Resolved::Known(table, spec) => (table, spec),
        Resolved::Unknown => return Ok(Decoded::Skipped(Skipped::UnknownTable)),
    };

    let lsn = source.get_some("lsn").ok_or(DecodeError::MissingVersion("source.lsn"))?;
    let version = super::position_version(raw::as_u64(lsn).ok_or(DecodeError::BadField("source.lsn"))?, "source.lsn")?;
    let commit_time_us = commit_time(&source)?;
    let transaction_id = source.get_some("txId").map(|v| id_text(v, "source.txId")).transpose()?;
    let snapshot = source.get_some("snapshot").and_then(snapshot);

    let (before, after) = if op == Op::Truncate {
        (None, None)
    } else {
        let row = |field: &'static str| {
            payload.get_some(field).map(|raw| decode_row(raw, field, plan, spec, true)).transpose()
        };
        let (before, after) = (row("before")?, row("after")?);
        match op {
            Op::Create | Op::Read | Op::Update if after.is_none() => return Err(DecodeError::MissingField("after")),
            Op::Delete if before.is_none() => return Err(DecodeError::MissingField("before")),
            _ => (before, after),
        }
    };

    Ok(Decoded::Change(Box::new(ChangeEvent {
        table,
        op,
        before,
        after,
        version,
        commit_time_us,
        transaction_id,
        correlation_id: None,
        format: InputFormat::Debezium,
        snapshot,
    })))
}

/// The commit time in µs: `ts_us` is exact; `ts_ns` and `ts_ms` are converted.
fn commit_time(source: &RawObject<'_>) -> Result<Option<i64>, DecodeError> {
    if let Some(us) = source.get_some("ts_us") {
        return raw::as_i64(us).map(Some).ok_or(DecodeError::BadField("source.ts_us"));
    }
    if let Some(ns) = source.get_some("ts_ns") {
        return raw::as_i64(ns).map(|v| Some(v.div_euclid(1000))).ok_or(DecodeError::BadField("source.ts_ns"));
    }
    if let Some(ms) = source.get_some("ts_ms") {
        return raw::as_i64(ms)
            .and_then(|v| v.checked_mul(1000))
            .map(Some)
            .ok_or(DecodeError::BadField("source.ts_ms"));
    }
    Ok(None)
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
