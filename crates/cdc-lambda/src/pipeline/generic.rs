//! The generic-mirror stage of an invocation: rows of every captured table that is not a sales
//! table, one INSERT per table (docs/generic-mirrors.md).
//!
//! Per table: complete TOAST placeholders (an older change of the key in this batch, else the
//! stored row), make sure the table has a column for every value (created or altered on first
//! sight), encode every row against the columns ClickHouse really has, insert
//! (`Warehouse::write_generic_rows`). A value its column cannot hold exactly fails its own
//! message as poison (docs/error-policy.md, "Content failures"); its batch-mates proceed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use cdc_clickhouse::{BASE_MISSING, Failures, SinkError};
use cdc_core::completion;
use cdc_core::error::{Classify, ErrorClass};
use cdc_core::generic::{Column, ColumnType, GenericChange, GenericRow};
use cdc_core::tables::GenericTable;

use super::{Pipeline, SystemicError};

/// A change of a generic table, decoded and waiting to be written.
pub(crate) struct PendingGeneric {
    pub(crate) message: usize,
    pub(crate) table: Arc<GenericTable>,
    pub(crate) change: GenericChange,
}

/// How one message of a generic table failed: class and code.
type Failure = (ErrorClass, &'static str);

/// What became of one message: the rows it wrote, or how it failed.
type GenericOutcome = Result<u64, Failure>;

/// The rows of one generic table in a batch, by message.
type TableRows = (Arc<GenericTable>, Vec<(usize, Vec<GenericRow>)>);

impl Pipeline {
    /// Writes every generic change and says what became of each message. Only a fault of the
    /// whole environment (authentication, a missing database...: systemic, as the sink
    /// classifies it) stops the invocation.
    pub(super) async fn write_generic(
        &self,
        pending: Vec<PendingGeneric>,
        deadline: Instant,
    ) -> Result<Vec<(usize, GenericOutcome)>, SystemicError> {
        if pending.is_empty() {
            return Ok(Vec::new());
        }
        let mut truncations = Vec::new();
        let mut tables: BTreeMap<String, TableRows> = BTreeMap::new();
        for p in pending {
            match p.change {
                GenericChange::Truncate { version } => truncations.push((p.message, p.table.clone(), version)),
                GenericChange::Rows(rows) => {
                    let entry = tables.entry(p.table.name.clone()).or_insert_with(|| (p.table.clone(), Vec::new()));
                    entry.1.push((p.message, rows));
                }
            }
        }
        let mut failed: HashMap<usize, Failure> = HashMap::new();
        let mut written: HashMap<usize, u64> = HashMap::new();
        for (message, _, _) in &truncations {
            written.insert(*message, 1);
        }
        for (_, messages) in tables.values() {
            for (message, rows) in messages {
                written.insert(*message, rows.len() as u64);
            }
        }
        let writes = tables.into_values().map(|(table, messages)| self.write_generic_table(table, messages, deadline));
        let truncations: Vec<(usize, &str, _)> =
            truncations.iter().map(|(message, table, version)| (*message, table.name.as_str(), *version)).collect();
        let truncate = async {
            if truncations.is_empty() {
                return Ok(Failures::new());
            }
            self.warehouse().write_truncations(&truncations, deadline).await.map_err(SystemicError::from)
        };
        let (results, truncated) = tokio::join!(futures::future::join_all(writes), truncate);
        for result in results.into_iter().chain([truncated]) {
            failed.extend(result?);
        }
        Ok(written
            .into_iter()
            .map(|(message, rows)| (message, failed.get(&message).map_or(Ok(rows), |f| Err(*f))))
            .collect())
    }

    /// One generic table: complete, extend, write. Returns the failed messages.
    async fn write_generic_table(
        &self,
        table: Arc<GenericTable>,
        mut messages: Vec<(usize, Vec<GenericRow>)>,
        deadline: Instant,
    ) -> Result<Failures, SystemicError> {
        let (key_types, needed) = column_types(&messages);
        let w = self.warehouse();
        let mut failures = Failures::new();
        let columns = match w.generic_table(&table, &key_types, &needed, deadline).await {
            Ok(columns) => columns,
            // Columns the configuration refuses (evolution off, the column limit): find the
            // messages that ask for them, one at a time; the others proceed.
            Err(e) if e.class() == ErrorClass::Poison && messages.len() > 1 => {
                let mut accepted = Vec::with_capacity(messages.len());
                for (message, rows) in messages {
                    let own = [(message, rows)];
                    let (_, needed) = column_types(&own);
                    match w.generic_table(&table, &key_types, &needed, deadline).await {
                        Ok(_) => accepted.extend(own),
                        Err(e) if e.class() == ErrorClass::Poison => {
                            failures.insert(message, (ErrorClass::Poison, e.code()));
                        }
                        Err(e) => return table_fault(&table, &own, e),
                    }
                }
                messages = accepted;
                let (_, needed) = column_types(&messages);
                match w.generic_table(&table, &key_types, &needed, deadline).await {
                    Ok(columns) => columns,
                    Err(e) => {
                        return table_fault(&table, &messages, e).map(|mut f| {
                            f.extend(failures);
                            f
                        });
                    }
                }
            }
            Err(e) => return table_fault(&table, &messages, e),
        };

        let unresolved = match self.complete_generic(&table, &columns, &mut messages, deadline).await {
            Ok(unresolved) => unresolved,
            Err(e) => return table_fault(&table, &messages, e),
        };
        let (waiting, ready): (Vec<_>, Vec<_>) =
            messages.into_iter().partition(|(message, _)| unresolved.contains(message));
        // A placeholder nothing older can fill yet: its older change may still be in flight.
        failures.extend(waiting.iter().map(|(message, _)| (*message, (ErrorClass::Waiting, BASE_MISSING))));
        failures.extend(w.write_generic_rows(&table, &columns, &ready, deadline).await?);
        Ok(failures)
    }

    /// Completes TOAST placeholders (`cdc_core::completion::complete_generic`) from the complete
    /// live rows of this batch and the newest stored row of each key. Returns the messages with a placeholder
    /// nothing older can fill yet (their older change may still be in flight: they are retried).
    async fn complete_generic(
        &self,
        table: &GenericTable,
        columns: &[Column],
        messages: &mut [(usize, Vec<GenericRow>)],
        deadline: Instant,
    ) -> Result<Vec<usize>, SinkError> {
        let incomplete = completion::generic_lookups(messages.iter().flat_map(|(_, rows)| rows.iter()));
        if incomplete.is_empty() {
            return Ok(Vec::new());
        }
        let w = self.warehouse();
        let stored = w.generic_latest(table, columns, &incomplete, deadline).await?;
        Ok(completion::complete_generic(messages, stored))
    }
}

/// The key columns' types (from the first row) and, for every other column that carries a
/// value, the type its first value asks for.
fn column_types(messages: &[(usize, Vec<GenericRow>)]) -> (Vec<ColumnType>, Vec<(String, ColumnType)>) {
    let rows = || messages.iter().flat_map(|(_, rows)| rows.iter());
    let key_types = rows()
        .next()
        .map(|row| row.key.iter().map(|v| ColumnType::of(v).unwrap_or(ColumnType::String)).collect())
        .unwrap_or_default();
    let mut needed: Vec<(String, ColumnType)> = Vec::new();
    for row in rows() {
        for (name, value) in row.columns.iter() {
            if let Some(ty) = ColumnType::of(value)
                && !needed.iter().any(|(n, _)| n == name)
            {
                needed.push((name.to_owned(), ty));
            }
        }
    }
    (key_types, needed)
}

/// A table that cannot be prepared: a schema problem (a type this processor does not write, a
/// key that differs from the mapping) fails that table's messages as systemic; a transient
/// fault fails them for retry; anything else stops the invocation.
fn table_fault(
    table: &GenericTable,
    messages: &[(usize, Vec<GenericRow>)],
    error: SinkError,
) -> Result<Failures, SystemicError> {
    match error {
        SinkError::ColumnsRefused { .. } => {}
        SinkError::Schema { .. } => {
            tracing::error!(table = %table.name, error = %error, "generic mirror cannot be written");
        }
        ref e if e.class() == ErrorClass::Transient => {}
        e => return Err(e.into()),
    }
    Ok(messages.iter().map(|(m, _)| (*m, (error.class(), error.code()))).collect())
}
