//! The function's writes: mirror rows (with their extra columns), foreign-key index entries,
//! truncation marks and generic mirror rows, encoded here as RowBinary and inserted one statement
//! per table, with a failing message isolated so that its batch-mates land.
//!
//! Enters: changes tagged with the index of the message that carried them. Leaves: the messages
//! that failed, each with its class and code ([`Failures`]); a fault of the whole environment
//! (systemic) is an `Err` and stops the invocation (docs/error-policy.md).

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use bytes::Bytes;

use cdc_core::change::Version;
use cdc_core::error::{Classify, ErrorClass};
use cdc_core::generic::{Column, GenericRow, ValueFault};
use cdc_core::mirror::{MirrorChange, MirrorRow, Origin};
use cdc_core::tables::{GenericTable, SourceTable};

use crate::generic_values::{encode_column, encode_row};
use crate::schema::{self, FkIndex};
use crate::{SinkError, Warehouse, rowbinary};

/// How one message failed: its class and code.
pub type Failure = (ErrorClass, &'static str);
/// Failed messages (by their index in the batch) with their class and code.
pub type Failures = HashMap<usize, Failure>;

/// The code of a value its column cannot hold exactly: the message's own fault (poison), never
/// a stall of its table (docs/error-policy.md, "Content failures").
const INCOMPATIBLE: &str = "value.incompatible";
/// The code of rows ClickHouse rejected alone, with a code we do not know, while their
/// batch-mates landed.
const REJECTED: &str = "clickhouse.rejected";
/// The code of a TOAST placeholder with nothing older to take its value from (yet).
pub const BASE_MISSING: &str = "toast.base_missing";

/// Encoded rows of one table, each with the message it belongs to.
type Groups = Vec<(usize, Vec<u8>)>;

/// One message's change to the sales mirrors, with where it came from in the source (what its
/// history rows record).
#[derive(Debug, Clone, Copy)]
pub struct MirrorWrite<'a> {
    pub message: usize,
    /// The change, TOAST placeholders completed.
    pub change: &'a MirrorChange,
    pub origin: Origin,
    /// Per row of `change`, the placeholders it came with ([`MirrorRow::placeholder_mask`],
    /// taken before completion; empty: none).
    pub placeholders: &'a [u64],
}

impl Warehouse {
    /// Writes the changes of the sales mirrors: the mirror rows (one INSERT per table, with the
    /// table's `extras` columns), the foreign-key index entries of every live item and order row,
    /// truncation marks, and the history rows of the tables that keep history (in the same
    /// round: one more INSERT per such table, docs/history.md), all concurrently. The fact
    /// derivation needs only that every write of this invocation has completed before its first
    /// lookup (docs/sales-fact.md §4), so the writes need no order among themselves. A message fails if any of its writes fails (it is
    /// retried, and its retry writes all of them again).
    pub async fn write_mirrors(
        &self,
        changes: &[MirrorWrite<'_>],
        extras: &BTreeMap<SourceTable, Vec<Column>>,
        deadline: Instant,
    ) -> Result<Failures, SinkError> {
        let dialect = self.dialect().await?;
        let mut failed = Failures::new();
        let mut index_groups: BTreeMap<FkIndex, Groups> = BTreeMap::new();
        let mut per_table: BTreeMap<&'static str, Groups> = BTreeMap::new();
        let mut history_groups: BTreeMap<String, (Vec<&'static str>, Groups)> = BTreeMap::new();
        for write in changes {
            let MirrorWrite { message, change, .. } = *write;
            if let Some((table, columns, bytes)) = self.history_rows(dialect, write) {
                history_groups.entry(table).or_insert_with(|| (columns, Vec::new())).1.push((message, bytes));
            }
            let mut bytes = Vec::new();
            let table = match change {
                MirrorChange::Rows(rows) => {
                    let encoded = rows.iter().try_for_each(|row| {
                        let columns = extras.get(&row.table).map_or(&[][..], Vec::as_slice);
                        encode_mirror_row(&mut bytes, dialect, row, columns)
                    });
                    if let Err((table, column, fault)) = encoded {
                        failed.insert(message, self.value_fault(table.name(), &column, fault));
                        continue;
                    }
                    for row in rows.iter().filter(|r| !r.is_deleted) {
                        for index in FkIndex::fed_by(row.table) {
                            let Some(parent) = row.int(index.parent) else { continue };
                            let mut entry = Vec::with_capacity(16);
                            rowbinary::put_i64(&mut entry, parent);
                            rowbinary::put_i64(&mut entry, row.key);
                            index_groups.entry(*index).or_default().push((message, entry));
                        }
                    }
                    rows.first().map_or("", |r: &MirrorRow| r.table.name())
                }
                MirrorChange::Truncate { table, version } => {
                    truncation_row(&mut bytes, table.name(), *version);
                    schema::TRUNCATIONS_TABLE
                }
            };
            if !bytes.is_empty() {
                per_table.entry(table).or_default().push((message, bytes));
            }
        }
        let mirror_inserts = per_table.into_iter().map(|(table, groups)| {
            let columns: Vec<&str> = match SourceTable::from_name(table) {
                Some(source) => {
                    let extra = extras.get(&source).into_iter().flatten().map(|c| c.name.as_str());
                    schema::mirror_columns(source.spec()).into_iter().chain(extra).collect()
                }
                None => TRUNCATION_COLUMNS.to_vec(),
            };
            (table, columns, groups)
        });
        let index_inserts =
            index_groups.into_iter().map(|(index, groups)| (index.table, index.columns().to_vec(), groups));
        let history_inserts = history_groups.into_iter().map(|(table, (columns, groups))| (table, columns, groups));
        let inserts =
            mirror_inserts
                .chain(index_inserts)
                .map(|(table, columns, groups)| (table.to_string(), columns, groups))
                .chain(history_inserts)
                .map(|(table, columns, groups)| async move {
                    self.insert_isolating(&table, &columns, groups, deadline).await
                });
        let results = futures::future::join_all(inserts).await;
        for result in results {
            failed.extend(result?);
        }
        Ok(failed)
    }

    /// The history rows of one change, if its table keeps history: the table, its columns and
    /// the encoded rows (a truncation is a row of [`schema::TRUNCATION_HISTORY_TABLE`]).
    ///
    /// A history row is the change as it came, whatever was stored when it arrived: TOAST
    /// placeholders stay placeholders (flagged in `_toast_mask`, filled when read), a deletion
    /// carries only its key. So every delivery of a change writes the same row, and a row never
    /// depends on the order the changes arrived in. A change without a commit time (a DMS
    /// full-load row) is valid from the epoch: the row existed before the capture began
    /// (docs/history.md).
    fn history_rows(
        &self,
        dialect: crate::dialect::Dialect,
        write: &MirrorWrite<'_>,
    ) -> Option<(String, Vec<&'static str>, Vec<u8>)> {
        let MirrorWrite { change, origin, placeholders, .. } = *write;
        let commit_us = origin.commit_time_us.unwrap_or(0);
        let mut bytes = Vec::new();
        match change {
            MirrorChange::Rows(rows) => {
                let table = rows.first()?.table;
                if !self.keeps_history(table) {
                    return None;
                }
                for (i, row) in rows.iter().enumerate() {
                    let mask = placeholders.get(i).copied().unwrap_or(0);
                    let as_it_came = if row.is_deleted {
                        MirrorRow::tombstone(row.table, row.key, row.version)
                    } else {
                        row.with_placeholders(mask)
                    };
                    rowbinary::encode_mirror_row(&mut bytes, dialect, &as_it_came);
                    rowbinary::put_string(&mut bytes, origin.op_of(row).as_str());
                    rowbinary::put_i64(&mut bytes, commit_us);
                    rowbinary::put_u64(&mut bytes, mask);
                }
                Some((schema::history_table(table), schema::history_columns(table.spec()), bytes))
            }
            MirrorChange::Truncate { table, version } => {
                if !self.keeps_history(*table) {
                    return None;
                }
                truncation_row(&mut bytes, table.name(), *version);
                rowbinary::put_i64(&mut bytes, commit_us);
                let columns = vec!["table_name", "_version", "_commit_us"];
                Some((schema::TRUNCATION_HISTORY_TABLE.to_string(), columns, bytes))
            }
        }
    }

    /// Writes sales mirror rows whose TOAST placeholders were filled again from the history,
    /// each with its message and its [`schema::REFILL_COLUMN`] (docs/history.md, "Mirrors"), and
    /// the table's `extras` columns. No history row: the history holds the change as it came.
    pub async fn write_refills(
        &self,
        table: SourceTable,
        rows: &[(usize, MirrorRow, u64)],
        extras: &[Column],
        deadline: Instant,
    ) -> Result<Failures, SinkError> {
        let dialect = self.dialect().await?;
        let mut failed = Failures::new();
        let mut groups: Groups = Vec::with_capacity(rows.len());
        for (message, row, refill) in rows {
            let mut bytes = Vec::new();
            rowbinary::encode_mirror_row(&mut bytes, dialect, row);
            rowbinary::put_u64(&mut bytes, *refill);
            let encoded = extras.iter().try_for_each(|column| {
                let value = row.extras.get(&column.name).unwrap_or(&cdc_core::change::Value::Null);
                encode_column(&mut bytes, dialect, column, value)
                    .map_err(|fault| self.value_fault(table.name(), &column.name, fault))
            });
            match encoded {
                Ok(()) => groups.push((*message, bytes)),
                Err(failure) => {
                    failed.insert(*message, failure);
                }
            }
        }
        let columns: Vec<&str> = schema::mirror_columns(table.spec())
            .into_iter()
            .chain([schema::REFILL_COLUMN])
            .chain(extras.iter().map(|c| c.name.as_str()))
            .collect();
        failed.extend(self.insert_isolating(table.name(), &columns, groups, deadline).await?);
        Ok(failed)
    }

    /// Writes the rows of one generic mirror, `columns` as [`Warehouse::generic_table`] returned
    /// them. A row whose value its column cannot hold fails its message alone.
    pub async fn write_generic_rows(
        &self,
        table: &GenericTable,
        columns: &[Column],
        messages: &[(usize, Vec<GenericRow>)],
        deadline: Instant,
    ) -> Result<Failures, SinkError> {
        let dialect = self.dialect().await?;
        let mut failed = Failures::new();
        let mut groups: Groups = Vec::with_capacity(messages.len());
        for (message, rows) in messages {
            let mut bytes = Vec::new();
            match rows.iter().try_for_each(|row| encode_row(&mut bytes, dialect, columns, row)) {
                Ok(()) if bytes.is_empty() => {} // superseded: nothing to write
                Ok(()) => groups.push((*message, bytes)),
                Err((column, fault)) => {
                    failed.insert(*message, self.value_fault(&table.name, &column, fault));
                }
            }
        }
        let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).chain(["_version", "_is_deleted"]).collect();
        failed.extend(self.insert_isolating(&table.name, &names, groups, deadline).await?);
        Ok(failed)
    }

    /// Records truncations of generic mirrors: `(message, table, version)`.
    pub async fn write_truncations(
        &self,
        truncations: &[(usize, &str, Version)],
        deadline: Instant,
    ) -> Result<Failures, SinkError> {
        let groups = truncations
            .iter()
            .map(|(message, table, version)| {
                let mut bytes = Vec::new();
                truncation_row(&mut bytes, table, *version);
                (*message, bytes)
            })
            .collect();
        self.insert_isolating(schema::TRUNCATIONS_TABLE, TRUNCATION_COLUMNS, groups, deadline).await
    }

    /// How a message fails when one of its values cannot be written. Names only, never the
    /// value. A value its column cannot hold (a schemaless `5` made the column Int64, now `5.5`
    /// arrives; or the source widened the column) is the message's own fault: it goes to the DLQ
    /// and its batch-mates proceed; once an operator widens the column (ALTER TABLE ... MODIFY
    /// COLUMN), `redrive` brings it back. The table's cached columns are forgotten so that the
    /// widened type is read.
    fn value_fault(&self, table: &str, column: &str, fault: ValueFault) -> Failure {
        match fault {
            ValueFault::Unstorable(code) => (ErrorClass::Poison, code),
            ValueFault::Missing => (ErrorClass::Waiting, BASE_MISSING),
            ValueFault::Incompatible => {
                self.forget_generic(table);
                tracing::warn!(
                    table,
                    column,
                    code = INCOMPATIBLE,
                    "a value does not fit its ClickHouse column; widen the column and redrive the message"
                );
                (ErrorClass::Poison, INCOMPATIBLE)
            }
        }
    }

    /// Inserts the groups in one statement (retried while transient); if the server rejects the
    /// data, splits the groups in halves until the failing message(s) stand alone, so everything
    /// else still lands. Returns the failed messages; a systemic error stops the invocation.
    ///
    /// Bad data (a code of `BAD_DATA`) is isolated, and so is a rejection with a code none of our
    /// lists knows: once its batch-mates have landed without it, a message still rejected alone
    /// is poison ([`REJECTED`]) rather than an environmental failure retried forever. If nothing
    /// of the statement lands, an unexplained code stays what it was (transient, environmental):
    /// it may be the server's, and the retry age bounds it.
    async fn insert_isolating(
        &self,
        table: &str,
        columns: &[&str],
        groups: Groups,
        deadline: Instant,
    ) -> Result<Failures, SinkError> {
        let mut failures = Failures::new();
        let mut unexplained = Vec::new();
        let mut landed = false;
        let mut stack = if groups.is_empty() { Vec::new() } else { vec![groups] };
        while let Some(groups) = stack.pop() {
            let body: Vec<u8> = groups.iter().flat_map(|(_, b)| b.iter().copied()).collect();
            let body = Bytes::from(body);
            let result = self.retry.run(deadline, || self.sql_insert(table, columns, body.clone())).await;
            match result {
                Ok(()) => landed = true,
                Err(e) if e.class() == ErrorClass::Systemic => return Err(e),
                Err(e) if (e.class() == ErrorClass::Poison || e.is_unexplained()) && groups.len() > 1 => {
                    let mut left = groups;
                    let right = left.split_off(left.len() / 2);
                    stack.push(right);
                    stack.push(left);
                }
                Err(e) => {
                    tracing::warn!(
                        table,
                        code = e.code(),
                        class = e.class().as_str(),
                        server_code = e.server_code(),
                        messages = groups.len(),
                        "insert failed"
                    );
                    let failed = groups.iter().map(|(message, _)| (*message, (e.class(), e.code())));
                    if e.is_unexplained() {
                        unexplained.extend(failed);
                    } else {
                        failures.extend(failed);
                    }
                }
            }
        }
        let rejected = if landed { Some((ErrorClass::Poison, REJECTED)) } else { None };
        failures.extend(unexplained.into_iter().map(|(message, failure)| (message, rejected.unwrap_or(failure))));
        Ok(failures)
    }
}

/// The columns of the truncation table, in insert order.
const TRUNCATION_COLUMNS: &[&str] = &["table_name", "_version"];

fn truncation_row(out: &mut Vec<u8>, table: &str, version: Version) {
    rowbinary::put_string(out, table);
    rowbinary::put_u64(out, version.0);
}

/// A sales mirror row: its declared columns, then `extras` (the table's extra columns, a value
/// the row lacks written as NULL). On a fault, returns the table and column it happened in.
fn encode_mirror_row(
    out: &mut Vec<u8>,
    dialect: crate::dialect::Dialect,
    row: &MirrorRow,
    extras: &[Column],
) -> Result<(), (SourceTable, String, ValueFault)> {
    rowbinary::encode_mirror_row(out, dialect, row);
    for column in extras {
        let value = row.extras.get(&column.name).unwrap_or(&cdc_core::change::Value::Null);
        encode_column(out, dialect, column, value).map_err(|fault| (row.table, column.name.clone(), fault))?;
    }
    Ok(())
}
