//! The platform's own `DatabaseChangeCaptured` event (seed 002, EVT-CDC-001).
//!
//! Enters: the event's fields (`tableName`, `operation` insert|update|delete, `before`, `after`)
//! and its standard fields (`eventId`, `eventTimestamp`, `eventType`, `eventVersion`,
//! `correlationId`, `sourceService`), either flat in one object or split into a `metadata`
//! object and a `payload`/`data` object (the seed's "common envelope"). Leaves: a
//! [`ChangeEvent`]. Schema evolution is additive, so unknown fields are ignored.
//!
//! Version and commit time are `eventTimestamp` in µs (the platform has no log position);
//! behind EventBridge, the event's `time` stands in when `eventTimestamp` is absent.

use super::raw::RawObject;
use super::{DecodeError, Decoder, Outer, Resolved, change_event, decode_row, string, table_ref, truncate};
use crate::change::{ChangeEvent, Decoded, InputFormat, Op, Skipped, VersionScale};
use crate::decode::encoding::parse_iso_timestamp;

pub(crate) fn decode(
    decoder: &Decoder,
    fields: &RawObject<'_>,
    meta: Option<&RawObject<'_>>,
    outer: Outer<'_>,
) -> Result<Decoded, DecodeError> {
    // A standard field may sit beside the change fields or in the metadata object.
    let standard = |key: &'static str| -> Result<Option<String>, DecodeError> {
        if let Some(v) = string(fields, key)? {
            return Ok(Some(v.into_owned()));
        }
        match meta {
            Some(meta) => Ok(string(meta, key)?.map(|v| v.into_owned())),
            None => Ok(None),
        }
    };
    if let Some(event_type) = standard("eventType")?
        && !event_type.eq_ignore_ascii_case("DatabaseChangeCaptured")
    {
        return Err(DecodeError::UnknownEnvelope);
    }
    let operation = string(fields, "operation")?.ok_or(DecodeError::MissingField("operation"))?;
    let op = match operation.to_ascii_lowercase().as_str() {
        "insert" | "create" => Op::Create,
        "update" => Op::Update,
        "delete" => Op::Delete,
        _ => return Err(DecodeError::UnknownOp(truncate(&operation, 16))),
    };
    let table_name = string(fields, "tableName")?.ok_or(DecodeError::MissingField("tableName"))?;
    // `tableName` is an entity of the platform's contract (`SalesOrder`) or a qualified
    // `schema.table` / `database.schema.table`; the mapping decides (tables.rs).
    let table = table_ref(None, None, &table_name, true);
    let Resolved::Known(table, mirror) = decoder.resolve_table(table, true)? else {
        return Ok(Decoded::Skipped(Skipped::UnknownTable));
    };

    let timestamp = match standard("eventTimestamp")? {
        Some(ts) => ts,
        None => outer.time.map(str::to_owned).ok_or(DecodeError::MissingField("eventTimestamp"))?,
    };
    let micros = parse_iso_timestamp(&timestamp).map_err(|_| DecodeError::BadField("eventTimestamp"))?;
    let version = super::time_version(micros, "eventTimestamp")?;
    let correlation_id = standard("correlationId")?;

    let row = |field: &'static str| {
        fields.get_some(field).map(|raw| decode_row(raw, field, None, mirror.declared(), false)).transpose()
    };
    let (before, after) = (row("before")?, row("after")?);
    let rows = match op {
        Op::Create | Op::Update if after.is_none() => return Err(DecodeError::MissingField("after")),
        // `after` is the one required image; a delete may carry the removed row there.
        Op::Delete => match (before, after) {
            (Some(before), _) => (Some(before), None),
            (None, Some(after)) => (Some(after), None),
            (None, None) => return Err(DecodeError::MissingField("before")),
        },
        _ => (before, after),
    };

    Ok(Decoded::Change(Box::new(ChangeEvent {
        commit_time_us: Some(micros),
        correlation_id,
        ..change_event(InputFormat::Platform, (table, mirror), op, rows, (version, VersionScale::Micros))
    })))
}
