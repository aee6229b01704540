//! Decoders: one SQS message body in, one [`Decoded`] or one classified [`DecodeError`] out.
//!
//! ```text
//! body ─► wrapper (SNS / EventBridge, unwrapped a bounded number of times)
//!      ─► sniff the envelope ─┬─► debezium  (with or without the schema block; schema_cache)
//!                             ├─► dms       (data + metadata)
//!                             └─► platform  (DatabaseChangeCaptured)
//!      ─► encoding (each column value typed once, from its JSON text) ─► ChangeEvent
//! ```
//!
//! Every body is decoded on its own: nothing but the schema cache is shared, and a bad body
//! never affects another. Bodies that are valid but carry no row change (tombstones,
//! heartbeats, transaction boundaries, logical messages, DMS control records, unknown tables)
//! become [`Decoded::Skipped`]. Every error is poison (the body can never decode) and has a
//! stable code; no input can make the decoder panic.

mod debezium;
mod dms;
pub mod encoding;
mod platform;
mod raw;
mod schema_cache;
mod wrapper;

use serde_json::value::RawValue;

use std::collections::HashSet;
use std::sync::Mutex;

use crate::change::{ChangeEvent, Decoded, InputFormat, Op, Row, Skipped, TableRef, Version, VersionScale};
use crate::error::{Classify, ErrorClass};
use crate::tables::{MirrorTarget, TableMapping, TableSpec};
use encoding::{FieldType, ValueError, decode_value};
use raw::RawObject;
use schema_cache::{RowPlan, SchemaCache};

/// How wrappers (SNS in EventBridge in SNS...) may nest before the body is rejected.
const MAX_WRAP_DEPTH: usize = 4;

/// Decoder settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecodeOptions {
    /// When true, a change of a table outside the mapping is an error (`table.unknown`);
    /// by default it is acknowledged as [`Skipped::UnknownTable`].
    pub reject_unknown_tables: bool,
    /// Which source tables are captured, into which mirror (`CAPTURED_TABLES`).
    pub tables: TableMapping,
    /// `PLATFORM_FEEDS_SALES`: whether the platform envelope's entities may feed the sales
    /// mirrors (off by default: their µs versions would outrank every Debezium LSN of a key,
    /// docs/versions.md). The pipeline refuses them otherwise.
    pub platform_feeds_sales: bool,
}

/// Distinct uncaptured tables remembered per decoder for "logged once" (beyond it, changes of
/// further tables are still counted, just not named again).
const UNMAPPED_REMEMBERED: usize = 1024;

/// Decodes message bodies. Holds the Debezium schema cache; `Send + Sync`, share it via `Arc`.
pub struct Decoder {
    options: DecodeOptions,
    schemas: SchemaCache,
    unmapped: Mutex<Unmapped>,
}

/// Uncaptured tables seen by this decoder (one per cold start), and those not yet handed to
/// the caller for logging.
#[derive(Default)]
struct Unmapped {
    seen: HashSet<TableRef>,
    fresh: Vec<TableRef>,
}

/// Why a body cannot be decoded. Every variant is [`ErrorClass::Poison`]: decoding is a pure
/// function of the body, so a retry can never succeed. Messages never contain row values.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("body is not valid JSON")]
    NotJson(#[source] serde_json::Error),
    #[error("body is not a known change-event envelope")]
    UnknownEnvelope,
    #[error("envelope lacks required field `{0}`")]
    MissingField(&'static str),
    #[error("envelope field `{0}` is malformed")]
    BadField(&'static str),
    #[error("wrappers nested more than {MAX_WRAP_DEPTH} deep")]
    WrapperTooDeep,
    #[error("Debezium schema block not understood: {0}")]
    BadSchema(&'static str),
    #[error("unknown operation `{0}`")]
    UnknownOp(String),
    #[error("change to unknown table `{0}`")]
    UnknownTable(String),
    #[error("no source position to use as version (`{0}`)")]
    MissingVersion(&'static str),
    #[error("`{0}` is implausible (a position of 2^63 or more, or a time over an hour ahead)")]
    ImplausibleVersion(&'static str),
    #[error("column `{column}`: {error}")]
    Value {
        column: String,
        #[source]
        error: ValueError,
    },
}

impl Classify for DecodeError {
    fn class(&self) -> ErrorClass {
        ErrorClass::Poison
    }

    fn code(&self) -> &'static str {
        match self {
            DecodeError::NotJson(_) => "body.not_json",
            DecodeError::UnknownEnvelope => "envelope.unknown",
            DecodeError::MissingField(_) => "envelope.missing_field",
            DecodeError::BadField(_) => "envelope.bad_field",
            DecodeError::WrapperTooDeep => "envelope.too_deep",
            DecodeError::BadSchema(_) => "schema.invalid",
            DecodeError::UnknownOp(_) => "op.unknown",
            DecodeError::UnknownTable(_) => "table.unknown",
            DecodeError::MissingVersion(_) => "version.missing",
            DecodeError::ImplausibleVersion(_) => "version.implausible",
            DecodeError::Value { error, .. } => error.code(),
        }
    }
}

/// Every code [`DecodeError::code`] can return, for dashboards and tests.
pub const ERROR_CODES: &[&str] = &[
    "body.not_json",
    "envelope.unknown",
    "envelope.missing_field",
    "envelope.bad_field",
    "envelope.too_deep",
    "schema.invalid",
    "op.unknown",
    "table.unknown",
    "version.missing",
    "version.implausible",
    "value.bad_decimal",
    "value.decimal_overflow",
    "value.bad_timestamp",
    "value.bad_bytes",
    "value.type_mismatch",
    "value.out_of_range",
];

/// What an enclosing wrapper knows that the inner body may lack.
#[derive(Debug, Default, Clone, Copy)]
struct Outer<'a> {
    /// EventBridge's `time`: the platform envelope's `eventTimestamp` when the detail has none.
    time: Option<&'a str>,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new(DecodeOptions::default())
    }
}

impl Decoder {
    pub fn new(options: DecodeOptions) -> Self {
        Self { options, schemas: SchemaCache::new(), unmapped: Mutex::default() }
    }

    pub fn options(&self) -> &DecodeOptions {
        &self.options
    }

    /// Uncaptured tables whose first change this decoder skipped since the last call: the
    /// caller logs each once (the decoder itself does not log). Names only, never values.
    pub fn take_new_unmapped_tables(&self) -> Vec<TableRef> {
        std::mem::take(&mut self.unmapped.lock().unwrap_or_else(|e| e.into_inner()).fresh)
    }

    /// Distinct Debezium schema blocks currently cached.
    pub fn cached_schemas(&self) -> usize {
        self.schemas.len()
    }

    /// Decodes one SQS message body.
    pub fn decode(&self, body: &str) -> Result<Decoded, DecodeError> {
        self.decode_at(body, 0, Outer::default())
    }

    fn decode_at(&self, body: &str, depth: usize, outer: Outer<'_>) -> Result<Decoded, DecodeError> {
        let body = body.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r'));
        // Debezium Server's SQS sink sends a tombstone (the null value after a delete) as an
        // empty body; a converter may spell it `null`.
        if body.is_empty() || body == "null" {
            return Ok(Decoded::Skipped(Skipped::Tombstone));
        }
        if let Some(decoded) = self.known_schema_fast_path(body) {
            return decoded;
        }
        if !body.starts_with('{') {
            return match serde_json::from_str::<serde::de::IgnoredAny>(body) {
                Ok(_) => Err(DecodeError::UnknownEnvelope),
                Err(e) => Err(DecodeError::NotJson(e)),
            };
        }
        let top = RawObject::parse(body).map_err(DecodeError::NotJson)?;

        if let Some(inner) = wrapper::unwrap(&top)? {
            if depth >= MAX_WRAP_DEPTH {
                return Err(DecodeError::WrapperTooDeep);
            }
            let outer = Outer { time: inner.time.as_deref().or(outer.time) };
            return self.decode_at(&inner.body, depth + 1, outer);
        }
        if top.has("tableName") {
            let meta = object(&top, "metadata")?;
            return platform::decode(self, &top, meta.as_ref(), outer);
        }
        if top.has("schema") || top.has("payload") {
            let Some(payload) = top.get_some("payload") else {
                // JsonConverter's envelope around a null value: a tombstone.
                return if top.has("payload") {
                    Ok(Decoded::Skipped(Skipped::Tombstone))
                } else {
                    Err(DecodeError::MissingField("payload"))
                };
            };
            let payload = parse_object(payload, "payload")?;
            if payload.has("tableName") {
                let meta = object(&top, "metadata")?;
                return platform::decode(self, &payload, meta.as_ref(), outer);
            }
            let plan = match top.get_some("schema") {
                Some(schema) => Some(self.schemas.plan(schema.get())?),
                None => None,
            };
            let row_plan = plan.as_ref().and_then(|p| p.row.as_ref());
            return debezium::decode_payload(self, &payload, row_plan);
        }
        if top.has("metadata") {
            if let Some(data) = object(&top, "data")?
                && data.has("tableName")
            {
                let meta = object(&top, "metadata")?;
                return platform::decode(self, &data, meta.as_ref(), outer);
            }
            return dms::decode(self, &top);
        }
        if debezium::looks_like_payload(&top) {
            return debezium::decode_payload(self, &top, None);
        }
        Err(DecodeError::UnknownEnvelope)
    }

    /// The steady state of a Debezium stream: `{"schema":<a block seen before>,"payload":{..}}`
    /// exactly as the JSON converter writes it (compact). The known block is matched by its
    /// bytes and never scanned; only the payload is parsed. `None` means "take the general
    /// path", which also produces every error: this path never returns one of its own.
    fn known_schema_fast_path(&self, body: &str) -> Option<Result<Decoded, DecodeError>> {
        let rest = body.strip_prefix(r#"{"schema":"#)?;
        let plan = self.schemas.prefix_match(rest)?;
        let payload_text = rest.get(plan.raw.len()..)?.strip_prefix(r#","payload":"#)?.strip_suffix('}')?;
        // Parsing the payload text as one whole object proves the body is exactly
        // {"schema":S,"payload":P}: S is a complete cached object, P a complete object.
        let payload = RawObject::parse(payload_text).ok()?;
        if payload.has("tableName") {
            return None;
        }
        Some(debezium::decode_payload(self, &payload, plan.row.as_ref()))
    }

    /// Maps a source table to its mirror by the configured mapping, or says what to do with a
    /// table outside it. `platform` is true for the platform envelope, whose unqualified names
    /// are entities of its contract (`SalesOrder`); everything else is (database, schema, table)
    /// and is matched exactly, never by a bare name or an alias.
    fn resolve_table(&self, table: TableRef, platform: bool) -> Result<Resolved, DecodeError> {
        let tables = &self.options.tables;
        let mirror = if platform && table.schema.is_empty() && table.database.is_none() {
            tables.platform(&table.name)
        } else if table.schema.is_empty() {
            None
        } else {
            tables.table(table.database.as_deref(), &table.schema, &table.name)
        };
        match mirror {
            Some(mirror) => Ok(Resolved::Known(table, mirror.clone())),
            None if self.options.reject_unknown_tables => {
                Err(DecodeError::UnknownTable(truncate(&table.to_string(), 200)))
            }
            None => {
                let mut unmapped = self.unmapped.lock().unwrap_or_else(|e| e.into_inner());
                if unmapped.seen.len() < UNMAPPED_REMEMBERED && !unmapped.seen.contains(&table) {
                    // Names from the input, bounded before they are kept or logged.
                    let bounded = TableRef {
                        database: table.database.as_deref().map(|d| truncate(d, 64)),
                        schema: truncate(&table.schema, 64),
                        name: truncate(&table.name, 64),
                    };
                    unmapped.seen.insert(table);
                    unmapped.fresh.push(bounded);
                }
                Ok(Resolved::Unknown)
            }
        }
    }
}

/// A source table's identity from an event's fields: `qualified` may be `schema.table` or
/// `database.schema.table` when the format puts the qualifier into the name (the platform
/// envelope); Debezium and DMS name the schema separately and their table names are taken
/// whole.
fn table_ref(database: Option<&str>, schema: Option<&str>, name: &str, split_qualified: bool) -> TableRef {
    if split_qualified && schema.is_none() && database.is_none() {
        let parts: Vec<&str> = name.split('.').collect();
        match parts.as_slice() {
            [schema, table] => return TableRef::new(*schema, *table),
            [db, schema, table] => return TableRef::new(*schema, *table).with_database(Some(*db)),
            _ => {}
        }
    }
    TableRef::new(schema.unwrap_or(""), name).with_database(database.filter(|d| !d.is_empty()))
}

enum Resolved {
    Known(TableRef, MirrorTarget),
    Unknown,
}

/// A change to a mapped table with what every format decodes: the operation, both row images
/// and the version on its scale. What only some formats carry (commit time, transaction and
/// correlation ids, snapshot) starts empty; each decoder sets what its format has with struct
/// update syntax, so a field a format cannot know is visibly left out.
fn change_event(
    format: InputFormat,
    (table, mirror): (TableRef, MirrorTarget),
    op: Op,
    (before, after): (Option<Row>, Option<Row>),
    (version, scale): (Version, VersionScale),
) -> ChangeEvent {
    ChangeEvent {
        table,
        mirror,
        op,
        before,
        after,
        version,
        scale,
        commit_time_us: None,
        transaction_id: None,
        correlation_id: None,
        format,
        snapshot: None,
    }
}

/// The column kinds that type values when a message has no schema block: a sales mirror's
/// declared columns, a generic mirror's declared types (`{column:type}` in `CAPTURED_TABLES`);
/// every other value takes its natural JSON mapping.
#[derive(Clone, Copy)]
enum Declared<'a> {
    Sales(&'static TableSpec),
    Generic(&'a crate::tables::GenericTable),
}

impl Declared<'_> {
    fn kind(&self, column: &str) -> Option<crate::tables::ColumnKind> {
        match self {
            Declared::Sales(spec) => spec.column(column).map(|c| c.kind),
            Declared::Generic(table) => table.declared(column),
        }
    }
}

impl MirrorTarget {
    fn declared(&self) -> Option<Declared<'_>> {
        Some(match self {
            MirrorTarget::Sales(table) => Declared::Sales(table.spec()),
            MirrorTarget::Generic(table) => Declared::Generic(table),
        })
    }
}

/// Decodes one row image (`before`, `after`, DMS `data`...). Column types come from the schema
/// plan when there is one, else from the table's known columns, else the natural JSON mapping.
/// `base64` says whether a decimal column without a plan may be base64 (Debezium precise mode).
fn decode_row(
    raw: &RawValue,
    field: &'static str,
    plan: Option<&RowPlan>,
    spec: Option<Declared<'_>>,
    base64: bool,
) -> Result<Row, DecodeError> {
    let obj = parse_object(raw, field)?;
    decode_columns(obj.iter(), obj.len(), plan, spec, base64)
}

/// Decodes columns given as (name, JSON text) in message order.
fn decode_columns<'a>(
    columns: impl Iterator<Item = (&'a str, &'a RawValue)>,
    capacity: usize,
    plan: Option<&RowPlan>,
    spec: Option<Declared<'_>>,
    base64: bool,
) -> Result<Row, DecodeError> {
    let mut row = Row::with_capacity(capacity);
    for (position, (name, value)) in columns.enumerate() {
        let kind = spec.and_then(|s| s.kind(name));
        let derived;
        let ty = match plan.and_then(|p| p.get(position, name)) {
            Some(ty) => ty,
            None => {
                derived = kind.map_or(FieldType::Natural, |k| FieldType::from_kind(k, base64));
                &derived
            }
        };
        let value =
            decode_value(ty, kind, value).map_err(|error| DecodeError::Value { column: truncate(name, 64), error })?;
        row.push(name, value);
    }
    Ok(row)
}

/// An optional member that must be an object when present and not null.
fn object<'a>(obj: &RawObject<'a>, field: &'static str) -> Result<Option<RawObject<'a>>, DecodeError> {
    obj.get_some(field).map(|raw| parse_object(raw, field)).transpose()
}

fn parse_object<'a>(raw: &'a RawValue, field: &'static str) -> Result<RawObject<'a>, DecodeError> {
    if !raw::is_object(raw) {
        return Err(DecodeError::BadField(field));
    }
    RawObject::parse(raw.get()).map_err(|_| DecodeError::BadField(field))
}

/// An optional string member.
fn string<'a>(obj: &RawObject<'a>, field: &'static str) -> Result<Option<std::borrow::Cow<'a, str>>, DecodeError> {
    obj.get_some(field).map(|raw| raw::as_str(raw).ok_or(DecodeError::BadField(field))).transpose()
}

/// At most `max` bytes of `s`, cut at a character boundary (names from the input that go into
/// error messages).
fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or("").to_owned()
}

pub(crate) use crate::wire::parse_pg_lsn;

/// The log position in a DMS `stream-position`, as a number that orders the changes of one
/// row, or `None` when the text is in no form DMS emits for PostgreSQL or MySQL
/// (docs/versions.md):
///
/// - PostgreSQL, `XXXXXXXX/XXXXXXXX.N.XXXXXXXX/XXXXXXXX` (and a bare LSN): two LSNs around a
///   decimal sequence number. In every captured record both LSNs are equal, so neither can be
///   the commit LSN (a commit record always follows the change it commits): they are the
///   transaction's first LSN and the change's own LSN. The greater of the two is therefore the
///   change's WAL position, the same number Debezium reports as `source.lsn`: it increases
///   within a transaction and, per row, across transactions (a row's writers are serialized by
///   its lock).
/// - MySQL binlog, `FILE.SEQ:POS:I:NEXT:XID:FILE.SEQ:BEGIN`: ordered by (file sequence,
///   position of the row event, row index I within the event), packed as
///   `SEQ << 43 | POS << 11 | I` (sequence below 2^20, position below 2^32, index below 2^11);
///   a value outside those bounds is `None`.
pub(crate) fn parse_dms_position(s: &str) -> Option<u64> {
    if let Some(lsn) = parse_pg_lsn(s) {
        return Some(lsn);
    }
    let parts: Vec<&str> = s.split('.').collect();
    if let [first, seq, change] = parts.as_slice()
        && !seq.is_empty()
        && seq.len() <= 10
        && seq.bytes().all(|b| b.is_ascii_digit())
    {
        return Some(parse_pg_lsn(first)?.max(parse_pg_lsn(change)?));
    }
    let fields: Vec<&str> = s.split(':').collect();
    if let [file, pos, index, next, xid, begin_file, begin] = fields.as_slice() {
        let number = |t: &str| {
            if !t.is_empty() && t.len() <= 20 && t.bytes().all(|b| b.is_ascii_digit()) {
                t.parse::<u64>().ok()
            } else {
                None
            }
        };
        let file_seq = |f: &str| {
            let (name, seq) = f.rsplit_once('.')?;
            if name.is_empty() { None } else { number(seq) }
        };
        let (seq, pos, index) = (file_seq(file)?, number(pos)?, number(index)?);
        // The other members must be well-formed too, even though they do not order.
        number(next)?;
        number(xid)?;
        file_seq(begin_file)?;
        number(begin)?;
        if seq >= 1 << 20 || pos >= 1 << 32 || index >= 1 << 11 {
            return None;
        }
        return Some(seq << 43 | pos << 11 | index);
    }
    None
}

/// A log position used as version: one of 2^63 or more can only be a producer's bug, and would
/// freeze its key forever (every later change looks older), so it is poison
/// (docs/sales-fact.md, "Implausible versions").
pub(crate) fn position_version(position: u64, field: &'static str) -> Result<crate::change::Version, DecodeError> {
    if position >= 1 << 63 { Err(DecodeError::ImplausibleVersion(field)) } else { Ok(crate::change::Version(position)) }
}

/// The version of a Debezium change at WAL position `lsn`. A snapshot read ranks below every
/// streamed change instead: a transaction still open at the snapshot's consistent point commits
/// after it, so its changes are streamed although their positions lie below the snapshot's
/// (docs/versions.md, "Snapshots").
pub(crate) fn debezium_version(op: Op, lsn: Version) -> (Version, VersionScale) {
    match op {
        Op::Read => (Version::SNAPSHOT, VersionScale::Load),
        _ => (lsn, VersionScale::Lsn),
    }
}

/// A time used as version (µs since the epoch): more than an hour in the future can only be a
/// producer's clock or encoding bug, and before the epoch cannot be a version at all.
pub(crate) fn time_version(micros: i64, field: &'static str) -> Result<crate::change::Version, DecodeError> {
    const MAX_AHEAD_US: i64 = 3_600_000_000;
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(i64::MAX, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    if micros > now_us.saturating_add(MAX_AHEAD_US) {
        return Err(DecodeError::ImplausibleVersion(field));
    }
    u64::try_from(micros).map(crate::change::Version).map_err(|_| DecodeError::BadField(field))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_only_a_producer_bug_can_give_are_poison() {
        assert_eq!(position_version((1 << 63) - 1, "source.lsn").unwrap().0, (1 << 63) - 1);
        let err = position_version(u64::MAX, "source.lsn").unwrap_err();
        assert_eq!((err.code(), err.class()), ("version.implausible", ErrorClass::Poison));
        let now_us = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64;
        assert!(time_version(now_us + 3_000_000_000, "eventTimestamp").is_ok());
        assert_eq!(time_version(now_us + 4_000_000_000, "eventTimestamp").unwrap_err().code(), "version.implausible");
    }

    #[test]
    fn decoder_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Decoder>();
        assert_send_sync::<DecodeError>();
    }

    #[test]
    fn dms_positions_in_every_form() {
        // PostgreSQL (RDS, transaction details on): the change's LSN.
        assert_eq!(parse_dms_position("00000002/7C007178.3.00000002/7C007178"), Some(0x2_7C00_7178));
        assert_eq!(parse_dms_position("00000002/7C007178.12.00000002/7C0073F8"), Some(0x2_7C00_73F8));
        assert_eq!(parse_dms_position("00000002/7C0073F8.2.00000002/7C007178"), Some(0x2_7C00_73F8));
        assert_eq!(parse_dms_position("0/16B3748"), Some(0x16B3748));
        // MySQL binlog.
        let mysql = "mysql-bin-changelog.002171:36912271:0:36912333:9324410911751:mysql-bin-changelog.002171:36912209";
        assert_eq!(parse_dms_position(mysql), Some(2171 << 43 | 36_912_271 << 11));
        let next_row = mysql.replacen(":0:", ":1:", 1);
        assert!(parse_dms_position(&next_row) > parse_dms_position(mysql));
        let next_file = "mysql-bin-changelog.002172:4:0:100:1:mysql-bin-changelog.002172:4";
        assert!(parse_dms_position(next_file) > parse_dms_position(mysql));
        for bad in [
            "",
            "00000002/7C007178.x.00000002/7C007178",
            "00000002/7C007178.3",
            "00000002/7C007178..00000002/7C007178",
            "00000002/7C007178.3.00000002/7C007178.1",
            "1234567",
            "mysql-bin.1:2:3:4:5:mysql-bin.1",
            "mysql-bin.1:2:4096:4:5:mysql-bin.1:2",
            "mysql-bin.1:99999999999:0:4:5:mysql-bin.1:2",
            "bin:2:0:4:5:bin:2",
        ] {
            assert_eq!(parse_dms_position(bad), None, "{bad}");
        }
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate("ééé", 3), "é");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
