//! Column names that come from events, checked before they can reach DDL or memory.
//!
//! Enters: a decoded change's row images. Leaves: `Ok`, or a poison [`IdentifierError`] naming
//! the rule broken (never the value). A change event chooses its own column names (Debezium's
//! `after`, a DMS `data` object, the platform's payload); every such name may become a column
//! of a mirror (`ALTER TABLE ... ADD COLUMN`), so one malformed or hostile body must fail alone,
//! as its own fault, before any statement is built from it (docs/error-policy.md, "Content
//! failures").

use crate::change::Row;
use crate::error::{Classify, ErrorClass};

/// PostgreSQL's identifier limit (NAMEDATALEN - 1): no source column is longer.
const MAX_NAME_BYTES: usize = 63;
/// PostgreSQL's limit of columns per table (MaxHeapAttributeNumber).
pub const MAX_COLUMNS: usize = 1_600;

/// Names a mirror column may not take: ours (version, deletion flag, the tie-break of rows filled
/// again from a history, which a forged column would otherwise set) and ClickHouse's virtual
/// and reserved columns of MergeTree tables (a `_row_exists` column is refused by current
/// servers; the others would be shadowed by, or shadow, the engine's own).
const RESERVED: &[&str] = &[
    "_version",
    "_is_deleted",
    "_refill",
    "_row_exists",
    "_part",
    "_part_index",
    "_part_uuid",
    "_part_offset",
    "_part_granule_offset",
    "_part_data_version",
    "_part_starting_offset",
    "_partition_id",
    "_partition_value",
    "_sample_factor",
    "_block_number",
    "_block_offset",
    "_disk_name",
    "_table",
    "_database",
    "_shard_num",
];

/// Why a row's column names were refused. Poison: the body can never succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdentifierError {
    #[error("a column name is empty")]
    Empty,
    #[error("a column name is longer than {MAX_NAME_BYTES} bytes")]
    TooLong,
    #[error("a column name contains a control character")]
    ControlCharacter,
    #[error("a column name is reserved by the processor or ClickHouse")]
    Reserved,
    #[error("a row carries more than {MAX_COLUMNS} columns")]
    TooManyColumns,
    #[error("a row carries the same column name twice")]
    Duplicate,
}

impl Classify for IdentifierError {
    fn class(&self) -> ErrorClass {
        ErrorClass::Poison
    }

    fn code(&self) -> &'static str {
        match self {
            IdentifierError::TooManyColumns => "row.too_many_columns",
            IdentifierError::Duplicate => "row.duplicate_column",
            _ => "row.bad_column_name",
        }
    }
}

/// One column name as a mirror column.
fn check_name(name: &str) -> Result<(), IdentifierError> {
    if name.is_empty() {
        return Err(IdentifierError::Empty);
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(IdentifierError::TooLong);
    }
    if name.chars().any(char::is_control) {
        return Err(IdentifierError::ControlCharacter);
    }
    if RESERVED.contains(&name) {
        return Err(IdentifierError::Reserved);
    }
    Ok(())
}

/// Every name of a row image, and their number.
pub fn check_row(row: &Row) -> Result<(), IdentifierError> {
    if row.len() > MAX_COLUMNS {
        return Err(IdentifierError::TooManyColumns);
    }
    let mut seen = std::collections::HashSet::with_capacity(row.len());
    for (name, _) in row.iter() {
        check_name(name)?;
        if !seen.insert(name) {
            return Err(IdentifierError::Duplicate);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::Value;

    fn row(names: &[&str]) -> Row {
        names.iter().map(|n| (n.to_string(), Value::Int(1))).collect()
    }

    #[test]
    fn names_a_source_can_have_pass() {
        assert_eq!(check_row(&row(&["id", "first name", "Ünïcode", "_id", "a`b", &"x".repeat(63)])), Ok(()));
    }

    #[test]
    fn names_no_source_has_or_that_collide_with_ours_are_poison() {
        assert_eq!(check_name(""), Err(IdentifierError::Empty));
        assert_eq!(check_name(&"x".repeat(64)), Err(IdentifierError::TooLong));
        // 63 bytes is the limit, not 63 characters.
        assert_eq!(check_name(&"é".repeat(32)), Err(IdentifierError::TooLong));
        assert_eq!(check_name("a\nb"), Err(IdentifierError::ControlCharacter));
        for reserved in ["_version", "_is_deleted", "_refill", "_row_exists", "_part"] {
            assert_eq!(check_name(reserved), Err(IdentifierError::Reserved), "{reserved}");
        }
        assert_eq!(check_row(&row(&["id", ""])).unwrap_err().code(), "row.bad_column_name");
        assert_eq!(check_row(&row(&["id", "id"])), Err(IdentifierError::Duplicate));
    }

    #[test]
    fn a_row_wider_than_postgresql_allows_is_poison() {
        let names: Vec<String> = (0..=MAX_COLUMNS).map(|i| format!("c{i}")).collect();
        let wide: Row = names.iter().map(|n| (n.clone(), Value::Null)).collect();
        assert_eq!(check_row(&wide), Err(IdentifierError::TooManyColumns));
        assert_eq!(check_row(&wide).unwrap_err().class(), ErrorClass::Poison);
    }
}
