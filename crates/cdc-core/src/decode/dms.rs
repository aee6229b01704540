//! AWS DMS JSON records (as DMS writes them to Kinesis or Kafka, forwarded to SQS).
//!
//! Enters: the top-level object `{"data": {..}, "metadata": {..}, "before-image": {..}?}`.
//! Leaves: a [`ChangeEvent`] (`load` → read, `insert` → create, `update` → update, `delete` →
//! delete, whose `data` is the deleted row and becomes `before`), or [`Skipped::DmsControl`]
//! for `record-type: control`. DMS omits null columns unless `IncludeNullAndEmpty` is set: an
//! omitted column is simply absent from the row, never invented as null. Values are typed by
//! the table's known column kinds (DMS sends numbers and strings, never base64).

use super::raw::{self, RawObject};
use super::{
    DecodeError, Decoder, Resolved, change_event, decode_row, parse_dms_position, parse_object, string, table_ref,
    truncate,
};
use crate::change::{ChangeEvent, Decoded, InputFormat, Op, Skipped, Version, VersionScale};
use crate::decode::debezium::id_text;
use crate::decode::encoding::parse_iso_timestamp;

pub(crate) fn decode(decoder: &Decoder, top: &RawObject<'_>) -> Result<Decoded, DecodeError> {
    let metadata = top.get_some("metadata").ok_or(DecodeError::MissingField("metadata"))?;
    let metadata = parse_object(metadata, "metadata")?;
    let record_type = string(&metadata, "record-type")?.ok_or(DecodeError::MissingField("metadata.record-type"))?;
    match record_type.as_ref() {
        "data" => {}
        "control" => return Ok(Decoded::Skipped(Skipped::DmsControl)),
        _ => return Err(DecodeError::BadField("metadata.record-type")),
    }
    let operation = string(&metadata, "operation")?.ok_or(DecodeError::MissingField("metadata.operation"))?;
    let op = match operation.to_ascii_lowercase().as_str() {
        "load" => Op::Read,
        "insert" => Op::Create,
        "update" => Op::Update,
        "delete" => Op::Delete,
        _ => return Err(DecodeError::UnknownOp(truncate(&operation, 16))),
    };
    let table_name = string(&metadata, "table-name")?.ok_or(DecodeError::MissingField("metadata.table-name"))?;
    let schema = string(&metadata, "schema-name")?;
    // DMS names the schema and the table, never the database (a task reads one database).
    let table = table_ref(None, schema.as_deref(), &table_name, false);
    let Resolved::Known(table, mirror) = decoder.resolve_table(table, false)? else {
        return Ok(Decoded::Skipped(Skipped::UnknownTable));
    };

    let commit_time_us = timestamp(&metadata, "commit-timestamp", "metadata.commit-timestamp")?;
    let version = version(&metadata, op, commit_time_us)?;
    let transaction_id =
        metadata.get_some("transaction-id").map(|v| id_text(v, "metadata.transaction-id")).transpose()?;

    let data = top.get_some("data").ok_or(DecodeError::MissingField("data"))?;
    let data = decode_row(data, "data", None, mirror.declared(), false)?;
    let before_image = top
        .get_some("before-image")
        .map(|raw| decode_row(raw, "before-image", None, mirror.declared(), false))
        .transpose()?;
    let rows = match op {
        Op::Delete => (Some(data), None),
        Op::Update => (before_image, Some(data)),
        _ => (None, Some(data)),
    };

    Ok(Decoded::Change(Box::new(ChangeEvent {
        commit_time_us,
        transaction_id,
        ..change_event(InputFormat::Dms, (table, mirror), op, rows, version)
    })))
}

/// The version of a DMS change (docs/versions.md), in order of preference:
///
/// 1. `stream-position` (present with transaction details on, CDC only), parsed by
///    [`parse_dms_position`]: the change's own log position, exact and per change, so two
///    changes of one row in one transaction are ordered as they happened. A position in no
///    known form is refused (`envelope.bad_field`), never replaced by a timestamp: versions
///    of one table must stay on one scale.
/// 2. A full-load row (`load`) without position: 1. A full load reads the table before the
///    changes cached during it are applied; DMS applies them after the load, so every CDC
///    change of that row outranks the loaded row, whatever scale its version is on. Not 0:
///    0 is "never seen / not truncated" in the fact derivation and the `_current` views, which
///    keep only rows above the last truncation position (0 without one).
/// 3. `commit-timestamp` in µs: commit order, but the changes of one transaction share it
///    (the later of two changes of one row in one transaction is not known: README).
/// 4. `metadata.timestamp` in µs: when DMS produced the record, the weakest order.
///
/// A source keeps one shape, so versions of one table stay comparable; the scales are not
/// comparable with each other (an LSN is far below any µs timestamp), which is why a task
/// should not switch transaction details on and off mid-stream.
fn version(
    metadata: &RawObject<'_>,
    op: Op,
    commit_time_us: Option<i64>,
) -> Result<(Version, VersionScale), DecodeError> {
    if let Some(text) = string(metadata, "stream-position")? {
        let position = parse_dms_position(&text).ok_or(DecodeError::BadField("metadata.stream-position"))?;
        // MySQL's binlog form is the one with colons (`FILE.SEQ:POS:...`).
        let scale = if text.contains(':') { VersionScale::Binlog } else { VersionScale::Lsn };
        return Ok((super::position_version(position, "metadata.stream-position")?, scale));
    }
    if op == Op::Read {
        return Ok((Version::SNAPSHOT, VersionScale::Load));
    }
    let micros = match commit_time_us {
        Some(us) => us,
        None => timestamp(metadata, "timestamp", "metadata.timestamp")?
            .ok_or(DecodeError::MissingVersion("metadata.stream-position"))?,
    };
    Ok((super::time_version(micros, "metadata.timestamp")?, VersionScale::Micros))
}

fn timestamp(metadata: &RawObject<'_>, key: &str, field: &'static str) -> Result<Option<i64>, DecodeError> {
    let Some(raw) = metadata.get_some(key) else { return Ok(None) };
    let text = raw::as_str(raw).ok_or(DecodeError::BadField(field))?;
    parse_iso_timestamp(&text).map(Some).map_err(|_| DecodeError::BadField(field))
}
