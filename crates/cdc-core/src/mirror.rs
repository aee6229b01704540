//! Mirror rows: one ClickHouse row per source row change, versioned by source position.
//!
//! Enters: a [`ChangeEvent`] of a known table. Leaves: a [`MirrorChange`]: rows for the mirror
//! table of that source table (deletes as `_is_deleted = 1` rows carrying their own version), or
//! a truncation watermark. Values are converted to the ClickHouse column types here, so a value
//! that cannot be stored exactly is a poison error of this message alone.

use crate::change::{ChangeEvent, Decimal, InputFormat, Op, Row, Special, Value, Version};
use crate::error::{Classify, ErrorClass};
use crate::tables::{ColumnKind, SourceTable, TableSpec};

/// Scale of every money column in ClickHouse (`Decimal(38, 6)`): wide enough that every source
/// NUMERIC(p, s ≤ 6) is stored exactly and `quantity × unit_price` never needs rounding.
const CLICKHOUSE_DECIMAL_SCALE: u32 = 6;

/// What a NULL foreign key is stored as. Not 0: a real key 0 would then join a row the
/// source's inner join drops. A real foreign key of this value is refused
/// (`value.reserved_key`), so the marker means NULL and nothing else (docs/sales-fact.md).
pub const NULL_FOREIGN_KEY: i64 = i64::MIN;

/// One stored column value, already in its ClickHouse representation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    Int(i64),
    Text(String),
    /// Unscaled at [`CLICKHOUSE_DECIMAL_SCALE`].
    Decimal(i128),
    /// Microseconds since the epoch, UTC.
    Timestamp(i64),
    /// TOAST placeholder: the value is whatever is already stored for this key.
    Unavailable,
}

/// One row of a mirror table: the columns of [`TableSpec::columns`] in order, then the version
/// and deletion flag; columns the table does not declare travel in `extras` (stored as extra
/// `Nullable` columns, typed like a generic mirror's: docs/generic-mirrors.md).
#[derive(Debug, Clone, PartialEq)]
pub struct MirrorRow {
    pub table: SourceTable,
    pub key: i64,
    pub cells: Vec<Cell>,
    /// The image's columns beyond the declared ones, as they came (none for a deletion).
    pub extras: Row,
    pub version: Version,
    pub is_deleted: bool,
}

impl MirrorRow {
    /// A deletion marker: key and version only; other columns hold their defaults.
    pub fn tombstone(table: SourceTable, key: i64, version: Version) -> Self {
        let cells = table
            .spec()
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| if i == 0 { Cell::Int(key) } else { default_cell(c.kind) })
            .collect();
        MirrorRow { table, key, cells, extras: Row::new(), version, is_deleted: true }
    }

    pub(crate) fn has_unavailable(&self) -> bool {
        self.cells.contains(&Cell::Unavailable) || self.extras.iter().any(|(_, v)| *v == Value::Unavailable)
    }

    /// Which declared columns hold a TOAST placeholder: bit `i` for `cells[i]`. A history keeps
    /// the change as it came, placeholders flagged by this mask, and fills them when it is read
    /// (docs/history.md, "Why the history is right whatever the delivery order").
    pub fn placeholder_mask(&self) -> u64 {
        self.cells.iter().enumerate().filter(|(_, c)| **c == Cell::Unavailable).fold(0, |mask, (i, _)| mask | 1 << i)
    }

    /// This row as its change came: the cells of `mask` back to placeholders.
    pub fn with_placeholders(&self, mask: u64) -> MirrorRow {
        let mut row = self.clone();
        for (i, cell) in row.cells.iter_mut().enumerate() {
            if mask & (1 << i) != 0 {
                *cell = Cell::Unavailable;
            }
        }
        row
    }

    /// The value of an integer column (key and foreign keys), by name.
    pub fn int(&self, column: &str) -> Option<i64> {
        let index = self.table.spec().columns.iter().position(|c| c.name == column)?;
        match self.cells.get(index)? {
            Cell::Int(v) => Some(*v),
            _ => None,
        }
    }
}

/// Where a change came from in the source: its operation and commit time. A mirror keeps only
/// the newest row; a history (docs/history.md) keeps every change with these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub op: Op,
    /// The source's commit time in µs since the epoch; `None` when the event carries none (a
    /// DMS full-load row).
    pub commit_time_us: Option<i64>,
}

impl Origin {
    pub fn of(event: &ChangeEvent) -> Self {
        Origin { op: event.op, commit_time_us: event.commit_time_us }
    }

    /// The operation a history row records for `row`: a deletion for every tombstone (also the
    /// old key's of a key-changing update), else the change's own.
    pub fn op_of(&self, row: &MirrorRow) -> Op {
        if row.is_deleted { Op::Delete } else { self.op }
    }
}

/// What one change event does to the mirrors.
#[derive(Debug, Clone, PartialEq)]
pub enum MirrorChange {
    Rows(Vec<MirrorRow>),
    /// Every row of `table` with a version below `version` is gone.
    Truncate {
        table: SourceTable,
        version: Version,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MirrorError {
    #[error("the change to {table} carries no row image")]
    MissingImage { table: &'static str },
    #[error("the change to {table} has no usable key column `{column}`")]
    MissingKey { table: &'static str, column: &'static str },
    #[error("the change to {table} lacks column `{column}`, which every image of this format carries")]
    MissingColumn { table: &'static str, column: &'static str },
    #[error("column {table}.{column} holds a value of the wrong type")]
    TypeMismatch { table: &'static str, column: &'static str },
    #[error("column {table}.{column}: decimal does not fit Decimal(38, {CLICKHOUSE_DECIMAL_SCALE}) exactly")]
    DecimalNotExact { table: &'static str, column: &'static str },
    #[error("column {table}.{column}: NaN cannot be stored in a Decimal column")]
    DecimalNaN { table: &'static str, column: &'static str },
    #[error("column {table}.{column}: integer out of range")]
    IntegerOutOfRange { table: &'static str, column: &'static str },
    #[error("column {table}.{column}: foreign key {NULL_FOREIGN_KEY} is reserved for NULL")]
    ReservedKey { table: &'static str, column: &'static str },
}

impl Classify for MirrorError {
    fn class(&self) -> ErrorClass {
        ErrorClass::Poison
    }
    fn code(&self) -> &'static str {
        match self {
            MirrorError::MissingImage { .. } => "row.missing_image",
            MirrorError::MissingKey { .. } => "row.missing_key",
            MirrorError::MissingColumn { .. } => "row.missing_column",
            MirrorError::TypeMismatch { .. } => "value.type_mismatch",
            MirrorError::DecimalNotExact { .. } => "value.decimal_not_exact",
            MirrorError::DecimalNaN { .. } => "value.decimal_nan",
            MirrorError::IntegerOutOfRange { .. } => "value.integer_out_of_range",
            MirrorError::ReservedKey { .. } => "value.reserved_key",
        }
    }
}

/// Converts one change of a known table into mirror rows.
pub fn mirror_change(table: SourceTable, event: &ChangeEvent) -> Result<MirrorChange, MirrorError> {
    let spec = table.spec();
    let version = event.version;
    match event.op {
        Op::Truncate => Ok(MirrorChange::Truncate { table, version }),
        Op::Delete => {
            let image =
                event.before.as_ref().or(event.after.as_ref()).ok_or(MirrorError::MissingImage { table: spec.name })?;
            let key = key_of(spec, image)?;
            Ok(MirrorChange::Rows(vec![MirrorRow::tombstone(table, key, version)]))
        }
        Op::Create | Op::Read | Op::Update => {
            let after = event.after.as_ref().ok_or(MirrorError::MissingImage { table: spec.name })?;
            // Debezium images carry every column of the table (NULLs included); DMS omits NULL
            // columns unless `IncludeNullAndEmpty` is set, and the platform sends what changed.
            let complete = event.format == InputFormat::Debezium;
            let row = row_from_image(spec, after, version, complete)?;
            let mut rows = Vec::with_capacity(2);
            // A key change that arrives as one update (DMS, the platform envelope) removes the
            // old key; Debezium sends it as delete + create, which needs nothing extra.
            if let Some(before) = &event.before
                && let Ok(old_key) = key_of(spec, before)
                && old_key != row.key
            {
                rows.push(MirrorRow::tombstone(table, old_key, version));
            }
            rows.push(row);
            Ok(MirrorChange::Rows(rows))
        }
    }
}

fn key_of(spec: &TableSpec, image: &Row) -> Result<i64, MirrorError> {
    let missing = MirrorError::MissingKey { table: spec.name, column: spec.key };
    match image.get(spec.key) {
        Some(Value::Int(k)) => Ok(*k),
        Some(Value::Decimal(d)) if d.scale == 0 => i64::try_from(d.unscaled).map_err(|_| missing),
        Some(Value::Text(s)) => s.parse().map_err(|_| missing),
        _ => Err(missing),
    }
}

/// A row from an image. `complete`: the format always carries every column, so a declared
/// column the image lacks means the source table no longer matches the declared one, and
/// storing a default would be a silent wrong value.
fn row_from_image(spec: &TableSpec, image: &Row, version: Version, complete: bool) -> Result<MirrorRow, MirrorError> {
    let key = key_of(spec, image)?;
    let mut cells = Vec::with_capacity(spec.columns.len());
    let foreign_keys = spec.table.foreign_keys();
    for column in spec.columns {
        let foreign_key = foreign_keys.contains(&column.name);
        let cell = match image.get(column.name) {
            None if complete => return Err(MirrorError::MissingColumn { table: spec.name, column: column.name }),
            // A NULL foreign key joins nothing, as in the source's inner join.
            None | Some(Value::Null) if foreign_key => Cell::Int(NULL_FOREIGN_KEY),
            // DMS omits null columns; a null is stored as the column's default.
            None | Some(Value::Null) => default_cell(column.kind),
            Some(value) => match cell_from_value(spec.name, column.name, column.kind, value)? {
                Cell::Int(NULL_FOREIGN_KEY) if foreign_key => {
                    return Err(MirrorError::ReservedKey { table: spec.name, column: column.name });
                }
                cell => cell,
            },
        };
        cells.push(cell);
    }
    let extras = image
        .iter()
        .filter(|(name, _)| spec.column(name).is_none())
        .map(|(name, value)| (name.to_owned(), value.clone()))
        .collect();
    Ok(MirrorRow { table: spec.table, key, cells, extras, version, is_deleted: false })
}

/// The stored default for a NULL (ClickHouse columns here are not Nullable: the fact join needs
/// plain values, and the source schema has no NULLs in practice).
fn default_cell(kind: ColumnKind) -> Cell {
    match kind {
        ColumnKind::Int64 | ColumnKind::Int32 => Cell::Int(0),
        ColumnKind::Text => Cell::Text(String::new()),
        ColumnKind::Decimal { .. } => Cell::Decimal(0),
        ColumnKind::Timestamp => Cell::Timestamp(0),
    }
}

fn cell_from_value(
    table: &'static str,
    column: &'static str,
    kind: ColumnKind,
    value: &Value,
) -> Result<Cell, MirrorError> {
    let mismatch = MirrorError::TypeMismatch { table, column };
    if *value == Value::Unavailable {
        return Ok(Cell::Unavailable);
    }
    match kind {
        ColumnKind::Int64 | ColumnKind::Int32 => {
            let v = match value {
                Value::Int(v) => *v,
                Value::Decimal(d) => {
                    let d = d.rescale(0).ok_or(MirrorError::IntegerOutOfRange { table, column })?;
                    i64::try_from(d.unscaled).map_err(|_| MirrorError::IntegerOutOfRange { table, column })?
                }
                _ => return Err(mismatch),
            };
            if kind == ColumnKind::Int32 && i32::try_from(v).is_err() {
                return Err(MirrorError::IntegerOutOfRange { table, column });
            }
            Ok(Cell::Int(v))
        }
        ColumnKind::Text => match value {
            Value::Text(s) | Value::Uuid(s) | Value::Json(s) => Ok(Cell::Text(s.clone())),
            Value::Int(v) => Ok(Cell::Text(v.to_string())),
            Value::Decimal(d) => Ok(Cell::Text(d.to_string())),
            Value::Bool(b) => Ok(Cell::Text(b.to_string())),
            _ => Err(mismatch),
        },
        ColumnKind::Decimal { .. } => {
            let decimal = match value {
                Value::Decimal(d) => *d,
                Value::Int(v) => Decimal::new(i128::from(*v), 0),
                Value::Special(Special::NaN) => return Err(MirrorError::DecimalNaN { table, column }),
                Value::Special(_) => return Err(MirrorError::DecimalNotExact { table, column }),
                _ => return Err(mismatch),
            };
            let stored = decimal
                .rescale(CLICKHOUSE_DECIMAL_SCALE)
                .filter(|d| d.unscaled.unsigned_abs() < 10u128.pow(38))
                .ok_or(MirrorError::DecimalNotExact { table, column })?;
            Ok(Cell::Decimal(stored.unscaled))
        }
        ColumnKind::Timestamp => match value {
            Value::Timestamp(us) => Ok(Cell::Timestamp(*us)),
            Value::Date(days) => Ok(Cell::Timestamp(i64::from(*days) * 86_400_000_000)),
            // ±infinity: stored as the extremes ClickHouse clamps to.
            Value::Special(Special::PositiveInfinity) => Ok(Cell::Timestamp(i64::MAX)),
            Value::Special(Special::NegativeInfinity) => Ok(Cell::Timestamp(i64::MIN)),
            _ => Err(mismatch),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::TableRef;

    fn event(op: Op, before: Option<Row>, after: Option<Row>) -> ChangeEvent {
        ChangeEvent {
            table: TableRef::new("public", "products"),
            mirror: crate::tables::MirrorTarget::Sales(SourceTable::Products),
            op,
            before,
            after,
            version: Version(42),
            scale: crate::change::VersionScale::Lsn,
            commit_time_us: None,
            transaction_id: None,
            correlation_id: None,
            format: InputFormat::Dms,
            snapshot: None,
        }
    }

    fn product(id: i64, price: Value) -> Row {
        let mut row = Row::new();
        row.push("id", Value::Int(id));
        row.push("name", Value::Text("Lamp".into()));
        row.push("category", Value::Unavailable);
        row.push("price", price);
        row
    }

    #[test]
    fn create_becomes_one_live_row_with_decimal_at_clickhouse_scale() {
        let change = mirror_change(
            SourceTable::Products,
            &event(Op::Create, None, Some(product(7, Value::Decimal(Decimal::new(482, 2))))),
        );
        let MirrorChange::Rows(rows) = change.unwrap() else { panic!("rows expected") };
        assert_eq!(rows.len(), 1);
        let row = &rows[0];
        assert_eq!((row.key, row.version, row.is_deleted), (7, Version(42), false));
        assert_eq!(row.cells[2], Cell::Unavailable);
        assert_eq!(row.placeholder_mask(), 0b100);
        assert_eq!(row.with_placeholders(0b1000).cells[3], Cell::Unavailable);
        assert_eq!(row.cells[3], Cell::Decimal(4_820_000));
        // created_at absent (as DMS omits nulls): default.
        assert_eq!(row.cells[4], Cell::Timestamp(0));
        assert!(row.has_unavailable());
    }

    #[test]
    fn a_debezium_image_without_a_declared_column_is_an_error_not_a_default() {
        let mut debezium = event(Op::Create, None, Some(product(7, Value::Decimal(Decimal::new(1, 0)))));
        debezium.format = InputFormat::Debezium;
        let err = mirror_change(SourceTable::Products, &debezium).unwrap_err();
        assert_eq!((err.code(), err.class()), ("row.missing_column", ErrorClass::Poison));
        assert!(err.to_string().contains("created_at"));
    }

    #[test]
    fn a_null_foreign_key_is_the_marker_and_a_real_marker_value_is_refused() {
        let order = |customer: Value| {
            let mut row = Row::new();
            row.push("id", Value::Int(3));
            row.push("customer_id", customer);
            row.push("status", Value::Text("paid".into()));
            row
        };
        let change = |customer| {
            let mut e = event(Op::Create, None, Some(order(customer)));
            e.table = TableRef::new("public", "orders");
            mirror_change(SourceTable::Orders, &e)
        };
        let Ok(MirrorChange::Rows(rows)) = change(Value::Null) else { panic!("rows expected") };
        assert_eq!(rows[0].int("customer_id"), Some(NULL_FOREIGN_KEY));
        let Ok(MirrorChange::Rows(rows)) = change(Value::Int(0)) else { panic!("rows expected") };
        assert_eq!(rows[0].int("customer_id"), Some(0), "a real key 0 stays 0");
        let err = change(Value::Int(i64::MIN)).unwrap_err();
        assert_eq!((err.code(), err.class()), ("value.reserved_key", ErrorClass::Poison));
    }

    #[test]
    fn delete_becomes_tombstone_from_key_only_before_image() {
        let mut before = Row::new();
        before.push("id", Value::Int(9));
        let change = mirror_change(SourceTable::Products, &event(Op::Delete, Some(before), None)).unwrap();
        assert_eq!(change, MirrorChange::Rows(vec![MirrorRow::tombstone(SourceTable::Products, 9, Version(42))]));
    }

    #[test]
    fn update_that_changes_the_key_also_removes_the_old_key() {
        let mut before = Row::new();
        before.push("id", Value::Int(1));
        let after = product(2, Value::Decimal(Decimal::new(1, 0)));
        let MirrorChange::Rows(rows) =
            mirror_change(SourceTable::Products, &event(Op::Update, Some(before), Some(after))).unwrap()
        else {
            panic!("rows expected")
        };
        assert_eq!(rows.iter().map(|r| (r.key, r.is_deleted)).collect::<Vec<_>>(), vec![(1, true), (2, false)]);
    }

    #[test]
    fn inexact_or_nan_decimals_are_poison_of_this_message() {
        let too_fine = product(1, Value::Decimal(Decimal::new(1, 7)));
        let err = mirror_change(SourceTable::Products, &event(Op::Create, None, Some(too_fine))).unwrap_err();
        assert_eq!(err.code(), "value.decimal_not_exact");
        let nan = product(1, Value::Special(Special::NaN));
        let err = mirror_change(SourceTable::Products, &event(Op::Create, None, Some(nan))).unwrap_err();
        assert_eq!((err.code(), err.class()), ("value.decimal_nan", ErrorClass::Poison));
    }

    #[test]
    fn missing_after_image_is_poison() {
        let err = mirror_change(SourceTable::Products, &event(Op::Update, None, None)).unwrap_err();
        assert_eq!(err.code(), "row.missing_image");
    }
}
