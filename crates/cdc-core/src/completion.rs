//! TOAST completion: one rule for every mirror, sales and generic.
//!
//! PostgreSQL leaves an unchanged TOASTed value out of an update's image (Debezium writes
//! `__debezium_unavailable_value`, decoded as [`Value::Unavailable`] / [`Cell::Unavailable`]).
//! Before a row with such a placeholder is written, the placeholder takes the value the key had
//! before the change. The pipeline finds the candidates (the complete rows of its batch and the
//! newest stored row of each key, read from ClickHouse); what follows is pure.
//!
//! The rule, [`base_for`]: the newest live candidate older than the change. None, but ClickHouse
//! already holds this version or a newer one: the change was delivered before (SQS delivers at
//! least once) or is superseded, and its placeholders take the stored values (the very values of
//! its first delivery, or values that lose to the newer version anyway); the row is still
//! written, so its facts are derived again (the first delivery may have stopped before). Only
//! stored rows count for that: a newer row of the same batch may yet fail. Nothing at all: the
//! older change may still be in flight, and the message is retried (`toast.base_missing`).
//! docs/generic-mirrors.md, "TOAST".
//!
//! The newest change known when a row is written need not be its predecessor: one between them
//! can arrive later. For the tables that keep history, [`refill`] says which mirror rows to
//! fill again from it (docs/history.md, "Mirrors").

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::change::{Row, Value, Version};
use crate::generic::GenericRow;
use crate::mirror::{Cell, MirrorRow};
use crate::tables::SourceTable;

/// What is known of a key before a change of it is written.
#[derive(Debug, Clone, PartialEq)]
pub struct Base<V> {
    pub version: Version,
    /// Not a deletion.
    pub live: bool,
    /// Read from ClickHouse (not a row of this batch).
    pub stored: bool,
    pub values: V,
}

/// The base a change of version `version` is completed from (the rule above), if any.
fn base_for<V>(version: Version, candidates: &[Base<V>]) -> Option<&Base<V>> {
    let older = candidates.iter().filter(|b| b.live && b.version < version).max_by_key(|b| b.version);
    older.or_else(|| candidates.iter().filter(|b| b.stored && b.version >= version).max_by_key(|b| b.version))
}

/// `row` with each placeholder replaced by the base's value of the same column (NULL when the
/// base has no such column).
fn fill_row(row: &Row, base: &Row) -> Row {
    row.iter()
        .map(|(name, value)| {
            let value = match value {
                Value::Unavailable => base.get(name).cloned().unwrap_or(Value::Null),
                other => other.clone(),
            };
            (name.to_owned(), value)
        })
        .collect()
}

/// A sales mirror row's values: its declared cells and its extra columns.
#[derive(Debug, Clone, PartialEq)]
pub struct SalesValues {
    pub cells: Vec<Cell>,
    pub extras: Row,
}

/// Candidates per key of the sales mirrors.
type SalesBases = HashMap<(SourceTable, i64), Vec<Base<SalesValues>>>;

/// Whether a sales row needs what was stored before it: a placeholder to fill, or (tables with
/// foreign keys) a deletion, whose tombstone keeps the row's last known values so that the fact
/// derivation still finds the item's order and product (docs/sales-fact.md §3).
fn sales_needs_base(row: &MirrorRow) -> bool {
    row.has_unavailable() || (row.is_deleted && row.table.has_foreign_keys())
}

/// The keys whose stored rows the pipeline must read, per table.
pub fn sales_lookups<'a>(rows: impl IntoIterator<Item = &'a MirrorRow>) -> BTreeMap<SourceTable, BTreeSet<i64>> {
    let mut lookups: BTreeMap<SourceTable, BTreeSet<i64>> = BTreeMap::new();
    for row in rows.into_iter().filter(|r| sales_needs_base(r)) {
        lookups.entry(row.table).or_default().insert(row.key);
    }
    lookups
}

/// The batch's own candidates: every complete live row.
pub fn sales_batch_bases<'a>(rows: impl IntoIterator<Item = &'a MirrorRow>) -> SalesBases {
    let mut bases = SalesBases::new();
    for row in rows.into_iter().filter(|r| !r.has_unavailable() && !r.is_deleted) {
        let values = SalesValues { cells: row.cells.clone(), extras: row.extras.clone() };
        bases.entry((row.table, row.key)).or_default().push(Base {
            version: row.version,
            live: true,
            stored: false,
            values,
        });
    }
    bases
}

/// Completes the rows that need a base (`rows`: each with its message); returns the messages
/// with a placeholder nothing can fill yet.
///
/// A deletion takes the newest known values at or below its version (a stored version equal to
/// its own is this very deletion, redelivered); nothing known, it keeps its defaults.
pub fn complete_sales<'a>(
    rows: impl IntoIterator<Item = (usize, &'a mut MirrorRow)>,
    bases: &SalesBases,
) -> BTreeSet<usize> {
    let mut unresolved = BTreeSet::new();
    for (message, row) in rows.into_iter().filter(|(_, r)| sales_needs_base(r)) {
        let candidates = bases.get(&(row.table, row.key)).map_or(&[][..], Vec::as_slice);
        if row.is_deleted {
            let known = candidates
                .iter()
                .filter(|b| b.version <= row.version && b.values.cells.iter().skip(1).any(|c| !is_default(c)))
                .max_by_key(|b| b.version);
            if let Some(base) = known {
                row.cells[1..].clone_from_slice(&base.values.cells[1..]);
            }
            continue;
        }
        match base_for(row.version, candidates) {
            Some(base) => {
                for (cell, stored) in row.cells.iter_mut().zip(&base.values.cells) {
                    if *cell == Cell::Unavailable {
                        *cell = stored.clone();
                    }
                }
                row.extras = fill_row(&row.extras, &base.values.extras);
            }
            None => {
                unresolved.insert(message);
            }
        }
    }
    unresolved
}

/// The mirror row to write again when a sales mirror holds a change whose TOAST placeholders
/// were filled from a change that is not its predecessor (one between them arrived later):
/// `filled` is the key's newest change read from the table's history with its placeholders
/// filled there (the newest earlier change that carried each column), `stored` the mirror's
/// newest row. `None` when the mirror holds another version (a newer change, or this one not yet
/// written: its writer checks again) or already holds these values. The row keeps the stored
/// extra columns, which the history does not keep (docs/history.md, "Mirrors").
pub fn refill(table: SourceTable, key: i64, filled: &Base<SalesValues>, stored: &Base<SalesValues>) -> Option<MirrorRow> {
    let same_change = filled.live && stored.live && filled.version == stored.version;
    (same_change && filled.values.cells != stored.values.cells).then(|| MirrorRow {
        table,
        key,
        cells: filled.values.cells.clone(),
        extras: stored.values.extras.clone(),
        version: filled.version,
        is_deleted: false,
    })
}

fn is_default(cell: &Cell) -> bool {
    matches!(cell, Cell::Int(0) | Cell::Decimal(0) | Cell::Timestamp(0))
        || matches!(cell, Cell::Text(t) if t.is_empty())
}

/// The newest stored row of a generic mirror's key: key values, the other columns, version,
/// deleted.
type StoredGeneric = (Vec<Value>, Row, Version, bool);

/// The keys of the generic rows with a placeholder (whose stored rows the pipeline must read).
pub fn generic_lookups<'a>(rows: impl IntoIterator<Item = &'a GenericRow>) -> Vec<Vec<Value>> {
    rows.into_iter().filter(|r| r.has_unavailable()).map(|r| r.key.clone()).collect()
}

/// Completes the placeholders of a generic mirror's rows (each message with its rows) from the
/// complete live rows of the batch and `stored`; returns the messages with a placeholder
/// nothing can fill yet. The same rule as the sales mirrors ([`base_for`]).
pub fn complete_generic(messages: &mut [(usize, Vec<GenericRow>)], stored: Vec<StoredGeneric>) -> Vec<usize> {
    let mut bases: Vec<(Vec<Value>, Base<Row>)> = messages
        .iter()
        .flat_map(|(_, rows)| rows.iter())
        .filter(|r| !r.is_deleted && !r.has_unavailable())
        .map(|r| (r.key.clone(), Base { version: r.version, live: true, stored: false, values: r.columns.clone() }))
        .collect();
    bases.extend(
        stored
            .into_iter()
            .map(|(key, values, version, deleted)| (key, Base { version, live: !deleted, stored: true, values })),
    );
    let mut unresolved = Vec::new();
    for (message, rows) in messages.iter_mut() {
        for row in rows.iter_mut().filter(|r| r.has_unavailable()) {
            let candidates: Vec<Base<Row>> =
                bases.iter().filter(|(key, _)| *key == row.key).map(|(_, base)| base.clone()).collect();
            match base_for(row.version, &candidates) {
                Some(base) => row.columns = fill_row(&row.columns, &base.values),
                None => unresolved.push(*message),
            }
        }
    }
    unresolved
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::tables::GenericTable;

    fn base(version: u64, live: bool, stored: bool) -> Base<u64> {
        Base { version: Version(version), live, stored, values: version }
    }

    #[test]
    fn the_base_is_the_newest_live_older_row_else_a_stored_row_at_least_as_new() {
        let picked = |version, candidates: &[Base<u64>]| base_for(Version(version), candidates).map(|b| b.values);
        let candidates = [base(5, true, true), base(10, true, false), base(15, false, false)];
        assert_eq!(picked(20, &candidates), Some(10), "the newest live older one, deletions skipped");
        assert_eq!(picked(8, &candidates), Some(5));
        assert_eq!(picked(3, &candidates), Some(5), "redelivered or superseded: the stored row");
        assert_eq!(picked(3, &[base(10, true, false)]), None, "a newer row of the batch may yet fail");
        assert_eq!(picked(20, &[base(10, false, true)]), None, "only a deletion before it: wait");
        assert_eq!(picked(10, &[base(10, false, true)]), Some(10), "its own deletion, stored: superseded");
    }

    fn row(id: i64, version: u64, bio: Value) -> GenericRow {
        let table = Arc::new(GenericTable { name: "people".into(), key: vec!["id".into()], declared: Vec::new() });
        let columns: Row =
            [("name".to_owned(), Value::Text("Dana".into())), ("bio".to_owned(), bio)].into_iter().collect();
        GenericRow { table, key: vec![Value::Int(id)], columns, version: Version(version), is_deleted: false }
    }

    fn stored(id: i64, version: u64, bio: &str, deleted: bool) -> StoredGeneric {
        let columns: Row = [("bio".to_owned(), Value::Text(bio.into()))].into_iter().collect();
        (vec![Value::Int(id)], columns, Version(version), deleted)
    }

    fn bio(messages: &[(usize, Vec<GenericRow>)], message: usize) -> Option<&Value> {
        messages[message].1.first().map(|r| r.value("bio"))
    }

    #[test]
    fn a_placeholder_takes_the_newest_older_live_value_of_the_batch_or_the_stored_row() {
        let mut messages = vec![
            (0, vec![row(1, 20, Value::Unavailable)]),
            (1, vec![row(1, 10, Value::Text("in batch".into()))]),
            (2, vec![row(2, 20, Value::Unavailable)]),
        ];
        let unresolved =
            complete_generic(&mut messages, vec![stored(1, 5, "stored", false), stored(2, 5, "kept", false)]);
        assert!(unresolved.is_empty());
        assert_eq!(bio(&messages, 0), Some(&Value::Text("in batch".into())), "the newer of batch and stored");
        assert_eq!(bio(&messages, 2), Some(&Value::Text("kept".into())));
    }

    #[test]
    fn without_an_older_live_row_the_message_waits() {
        let mut messages = vec![(0, vec![row(1, 20, Value::Unavailable)]), (1, vec![row(2, 20, Value::Unavailable)])];
        let unresolved = complete_generic(&mut messages, vec![stored(2, 10, "gone", true)]);
        assert_eq!(unresolved, vec![0, 1], "nothing stored; stored row deleted");
    }

    #[test]
    fn a_change_no_newer_than_the_stored_row_takes_the_stored_values_and_is_not_retried() {
        // The update (version 20) arrives after the key's next change (30) is stored: its base
        // (10) will never again be the newest stored row. Written with the stored values, it
        // loses to version 30, as a sales mirror's row does.
        let mut messages = vec![(0, vec![row(1, 20, Value::Unavailable)]), (1, vec![row(2, 20, Value::Unavailable)])];
        let unresolved =
            complete_generic(&mut messages, vec![stored(1, 30, "newer", false), stored(2, 30, "deleted", true)]);
        assert!(unresolved.is_empty(), "{unresolved:?}");
        assert_eq!(bio(&messages, 0), Some(&Value::Text("newer".into())));
        assert_eq!(bio(&messages, 1), Some(&Value::Text("deleted".into())));
        // The same change delivered again after it was stored: the values of its first delivery.
        let mut messages = vec![(0, vec![row(1, 20, Value::Unavailable)])];
        assert!(complete_generic(&mut messages, vec![stored(1, 20, "filled", false)]).is_empty());
        assert_eq!(bio(&messages, 0), Some(&Value::Text("filled".into())));
        // A newer complete row only in this batch does not supersede: it may still fail.
        let mut messages = vec![(0, vec![row(1, 20, Value::Unavailable)]), (1, vec![row(1, 30, Value::Null)])];
        assert_eq!(complete_generic(&mut messages, Vec::new()), vec![0]);
    }

    fn customer_base(version: u64, name: &str, live: bool) -> Base<SalesValues> {
        let mut cells = customer(version, Cell::Text(name.into()), false).cells;
        cells[4] = Cell::Text("C3".into());
        let extras: Row = [("note".to_owned(), Value::Text("kept".into()))].into_iter().collect();
        Base { version: Version(version), live, stored: true, values: SalesValues { cells, extras } }
    }

    #[test]
    fn a_mirror_row_filled_from_a_change_that_is_not_its_predecessor_is_written_again() {
        // The schedule: N1 @100, @300 with the name as a placeholder, N2 @200 last. The
        // mirror filled @300 from @100; the history, holding @200 now, fills it with N2.
        let stored = customer_base(300, "N1", true);
        let filled = Base { values: SalesValues { extras: Row::new(), ..customer_base(300, "N2", true).values }, ..stored.clone() };
        let row = refill(SourceTable::Customers, 1, &filled, &stored).expect("written again");
        assert_eq!((row.cells[2].clone(), row.version, row.is_deleted), (Cell::Text("N2".into()), Version(300), false));
        assert_eq!(row.extras, stored.values.extras, "the extra columns the history does not keep stay");

        assert_eq!(refill(SourceTable::Customers, 1, &stored, &stored), None, "already right");
        let newer = customer_base(400, "N4", true);
        assert_eq!(refill(SourceTable::Customers, 1, &filled, &newer), None, "the mirror moved on");
        let older = customer_base(200, "N2", true);
        assert_eq!(refill(SourceTable::Customers, 1, &filled, &older), None, "not written yet: its writer checks");
        let deleted = customer_base(300, "N1", false);
        assert_eq!(refill(SourceTable::Customers, 1, &filled, &deleted), None);
    }

    fn customer(version: u64, name: Cell, deleted: bool) -> MirrorRow {
        let mut row = MirrorRow::tombstone(SourceTable::Customers, 1, Version(version));
        row.is_deleted = deleted;
        if !deleted {
            row.cells[2] = name;
        }
        row
    }

    #[test]
    fn sales_rows_follow_the_same_rule_and_deletions_keep_the_last_known_values() {
        let name = |row: &MirrorRow| row.cells[2].clone();
        let mut batch = [customer(30, Cell::Unavailable, false), customer(20, Cell::Text("N2".into()), false)];
        let mut bases = sales_batch_bases(batch.iter());
        bases.entry((SourceTable::Customers, 1)).or_default().push(Base {
            version: Version(10),
            live: true,
            stored: true,
            values: SalesValues { cells: customer(10, Cell::Text("N1".into()), false).cells, extras: Row::new() },
        });
        assert_eq!(sales_lookups(batch.iter()).get(&SourceTable::Customers).map(|k| k.len()), Some(1));
        let unresolved = complete_sales(batch.iter_mut().enumerate(), &bases);
        assert!(unresolved.is_empty());
        assert_eq!(name(&batch[0]), Cell::Text("N2".into()), "the newest older row: the batch's");

        let mut waiting = [customer(30, Cell::Unavailable, false)];
        assert_eq!(complete_sales(waiting.iter_mut().enumerate(), &SalesBases::new()), BTreeSet::from([0]));

        // Items and orders keep their foreign keys in their tombstones.
        let mut item = MirrorRow::tombstone(SourceTable::OrderItems, 7, Version(40));
        assert!(sales_needs_base(&item));
        let mut live = MirrorRow::tombstone(SourceTable::OrderItems, 7, Version(35));
        live.is_deleted = false;
        live.cells[1] = Cell::Int(3);
        let bases = sales_batch_bases([&live]);
        assert!(complete_sales([(0, &mut item)], &bases).is_empty());
        assert_eq!(item.cells[1], Cell::Int(3));
    }
}
