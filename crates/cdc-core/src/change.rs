//! The canonical change event: what every decoder produces and everything downstream consumes.
//!
//! Enters: nothing (pure data types). Leaves: [`ChangeEvent`], [`Decoded`], [`Row`], [`Value`].
//! Every input format (Debezium, AWS DMS, the platform's `DatabaseChangeCaptured` envelope) is
//! decoded into exactly these types, so the mirror and fact stages never look at a wire format.

use std::fmt;

/// A source table's identity, exactly as the event names it: (database, schema, table).
/// Debezium names all three (`source.db`, `source.schema`, `source.table`), DMS the schema and
/// table, the platform envelope an entity (`SalesOrder`, schema empty) or `schema.table`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableRef {
    pub(crate) database: Option<String>,
    /// Empty when the event names no schema (a platform entity).
    pub(crate) schema: String,
    pub name: String,
}

impl TableRef {
    pub(crate) fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        Self { database: None, schema: schema.into(), name: name.into() }
    }

    pub(crate) fn with_database(mut self, database: Option<impl Into<String>>) -> Self {
        self.database = database.map(Into::into);
        self
    }
}

impl fmt::Display for TableRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(db) = &self.database {
            write!(f, "{db}.")?;
        }
        if !self.schema.is_empty() {
            write!(f, "{}.", self.schema)?;
        }
        f.write_str(&self.name)
    }
}

/// What happened to the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// A new row (Debezium `c`, DMS `insert`, platform `insert`).
    Create,
    /// A changed row (Debezium `u`, DMS `update`, platform `update`).
    Update,
    /// A removed row (Debezium `d`, DMS `delete`, platform `delete`).
    Delete,
    /// A row read by a snapshot or full load (Debezium `r`, DMS `load`).
    Read,
    /// Every row of the table removed (Debezium `t`).
    Truncate,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Update => "update",
            Op::Delete => "delete",
            Op::Read => "read",
            Op::Truncate => "truncate",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The position of a change in the source's log, used as the row version in ClickHouse.
///
/// Debezium: `source.lsn` (flattened: `__lsn`). DMS: the change's position parsed from
/// `stream-position`, else the commit or record timestamp in microseconds, and 0 for a full-load
/// row without position. Platform envelope: `eventTimestamp` in microseconds. Never processing
/// time: a redelivered old change must never out-rank a newer one. The argument per format:
/// docs/versions.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Version(pub u64);

impl Version {
    /// A row read by a snapshot or full load (Debezium `r`, DMS `load`): ranked below every
    /// change of its row, whatever that change's position (docs/versions.md, "Snapshots").
    pub const SNAPSHOT: Version = Version(1);
}

/// Which scale a change's [`Version`] is on. Versions of different scales are not comparable
/// (an LSN, about 10^10, is far below any µs timestamp, about 1.7 × 10^15): one mirror is fed
/// on one scale, pinned by its first change (docs/versions.md, "One scale per mirror").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VersionScale {
    /// A PostgreSQL WAL position: Debezium's `source.lsn`, DMS's PostgreSQL `stream-position`.
    Lsn,
    /// A MySQL binlog position packed by `decode::parse_dms_position`.
    Binlog,
    /// Microseconds since the epoch: the platform's `eventTimestamp`, DMS without position.
    Micros,
    /// A DMS full-load row (version 1): below every change on any scale.
    Load,
}

impl VersionScale {
    pub fn as_str(self) -> &'static str {
        match self {
            VersionScale::Lsn => "lsn",
            VersionScale::Binlog => "binlog",
            VersionScale::Micros => "micros",
            VersionScale::Load => "load",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [VersionScale::Lsn, VersionScale::Binlog, VersionScale::Micros, VersionScale::Load]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// Which wire format a change arrived in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InputFormat {
    Debezium,
    Dms,
    Platform,
}

/// Debezium's `source.snapshot` field, an enum string (not a boolean).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Snapshot {
    True,
    First,
    FirstInDataCollection,
    LastInDataCollection,
    Last,
    False,
    Incremental,
}

impl Snapshot {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "true" => Snapshot::True,
            "first" => Snapshot::First,
            "first_in_data_collection" => Snapshot::FirstInDataCollection,
            "last_in_data_collection" => Snapshot::LastInDataCollection,
            "last" => Snapshot::Last,
            "false" => Snapshot::False,
            "incremental" => Snapshot::Incremental,
            _ => return None,
        })
    }
}

/// An exact decimal: `unscaled × 10^-scale`. NUMERIC values up to 38 digits fit; larger ones are
/// rejected by the decoder (`value.decimal_overflow`) rather than rounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Decimal {
    pub unscaled: i128,
    pub scale: u32,
}

impl Decimal {
    pub fn new(unscaled: i128, scale: u32) -> Self {
        Self { unscaled, scale }
    }

    /// The same value at another scale, if it is exact there (no digit lost, no overflow).
    pub fn rescale(self, scale: u32) -> Option<Decimal> {
        if scale >= self.scale {
            let factor = 10i128.checked_pow(scale - self.scale)?;
            Some(Decimal::new(self.unscaled.checked_mul(factor)?, scale))
        } else {
            let factor = 10i128.checked_pow(self.scale - scale)?;
            if self.unscaled % factor != 0 {
                return None;
            }
            Some(Decimal::new(self.unscaled / factor, scale))
        }
    }

    /// Parses a plain decimal string (`-12.340`, `7`, `1e3` is not accepted).
    pub fn parse(s: &str) -> Option<Decimal> {
        let (negative, digits) = match s.as_bytes().first()? {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let (int_part, frac_part) = match digits.split_once('.') {
            Some((i, f)) => (i, f),
            None => (digits, ""),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return None;
        }
        let mut unscaled: i128 = 0;
        for b in int_part.bytes().chain(frac_part.bytes()) {
            if !b.is_ascii_digit() {
                return None;
            }
            unscaled = unscaled.checked_mul(10)?.checked_add(i128::from(b - b'0'))?;
        }
        let scale = u32::try_from(frac_part.len()).ok()?;
        Some(Decimal::new(if negative { -unscaled } else { unscaled }, scale))
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.unscaled < 0 { "-" } else { "" };
        let digits = self.unscaled.unsigned_abs().to_string();
        let scale = self.scale as usize;
        if scale == 0 {
            return write!(f, "{sign}{digits}");
        }
        if digits.len() > scale {
            let (int, frac) = digits.split_at(digits.len() - scale);
            write!(f, "{sign}{int}.{frac}")
        } else {
            write!(f, "{sign}0.{}{digits}", "0".repeat(scale - digits.len()))
        }
    }
}

/// Values that are not finite numbers or instants: PostgreSQL's NaN and ±infinity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Special {
    NaN,
    PositiveInfinity,
    NegativeInfinity,
}

/// One column value, typed by the decoder from the schema block (or the table's known columns).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Decimal(Decimal),
    Text(String),
    Bytes(Vec<u8>),
    /// Days since 1970-01-01.
    Date(i32),
    /// Microseconds since 1970-01-01 00:00:00 UTC.
    Timestamp(i64),
    /// Microseconds since midnight.
    Time(i64),
    /// Microseconds (Debezium `MicroDuration`).
    Interval(i64),
    Uuid(String),
    /// JSON text, kept verbatim.
    Json(String),
    Array(Vec<Value>),
    /// NaN or ±infinity of a numeric, date or timestamp column.
    Special(Special),
    /// The source did not send this value (Debezium's TOAST placeholder
    /// `__debezium_unavailable_value`): keep whatever value is already stored.
    Unavailable,
}

/// The columns of one row image, in source order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Row {
    columns: Vec<(String, Value)>,
}

impl Row {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(n: usize) -> Self {
        Self { columns: Vec::with_capacity(n) }
    }

    pub fn push(&mut self, name: impl Into<String>, value: Value) {
        self.columns.push((name.into(), value));
    }

    /// The value of a column, `None` when the image does not carry it at all (DMS omits null
    /// columns; a Debezium `before` under REPLICA IDENTITY DEFAULT carries only the key).
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.columns.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.columns.iter().map(|(n, v)| (n.as_str(), v))
    }

    /// Replaces each value by what `f` makes of it, or leaves the column out on `None`
    /// (`crate::redact`).
    pub(crate) fn redact(&mut self, mut f: impl FnMut(&str, Value) -> Option<Value>) {
        let columns = std::mem::take(&mut self.columns);
        self.columns =
            columns.into_iter().filter_map(|(name, value)| f(&name, value).map(|value| (name, value))).collect();
    }

    pub fn len(&self) -> usize {
        self.columns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }
}

impl FromIterator<(String, Value)> for Row {
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(iter: I) -> Self {
        Self { columns: iter.into_iter().collect() }
    }
}

/// One committed row change, whatever format it arrived in.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeEvent {
    /// The source table, as the event named it.
    pub table: TableRef,
    /// The mirror this change feeds, by the configured [`crate::tables::TableMapping`].
    pub mirror: crate::tables::MirrorTarget,
    pub op: Op,
    /// The row before the change (delete, update with a before image). Key columns only under
    /// PostgreSQL's REPLICA IDENTITY DEFAULT.
    pub before: Option<Row>,
    /// The row after the change (create, update, read).
    pub after: Option<Row>,
    pub version: Version,
    /// The scale `version` is on.
    pub scale: VersionScale,
    /// Commit time in the source database, microseconds since the epoch (UTC).
    pub commit_time_us: Option<i64>,
    pub transaction_id: Option<String>,
    /// The platform's correlation id (seed 002), or one derived from the source transaction.
    pub correlation_id: Option<String>,
    pub format: InputFormat,
    pub snapshot: Option<Snapshot>,
}

/// Bodies that are valid but carry no row change: acknowledged and counted, never failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Skipped {
    /// Empty body: Debezium's tombstone after a delete (the SQS sink sends the value only).
    Tombstone,
    /// Debezium heartbeat (`{"ts_ms": ...}`).
    Heartbeat,
    /// Debezium transaction metadata (`status` BEGIN / END).
    TransactionBoundary,
    /// Debezium logical-decoding message (`op` = `m`).
    LogicalMessage,
    /// DMS control record (DDL, table events).
    DmsControl,
    /// A change of a table outside the table mapping (counted; an error when configured).
    UnknownTable,
}

impl Skipped {
    pub fn as_str(self) -> &'static str {
        match self {
            Skipped::Tombstone => "tombstone",
            Skipped::Heartbeat => "heartbeat",
            Skipped::TransactionBoundary => "transaction_boundary",
            Skipped::LogicalMessage => "logical_message",
            Skipped::DmsControl => "dms_control",
            Skipped::UnknownTable => "unknown_table",
        }
    }
}

/// What one message body decodes to.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    Change(Box<ChangeEvent>),
    Skipped(Skipped),
}
