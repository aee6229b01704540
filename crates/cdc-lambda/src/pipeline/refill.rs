//! Mirror rows whose TOAST placeholders were filled from a change that is not their
//! predecessor, filled again from the table's history (tables in `HISTORY_TABLES` only).
//!
//! A placeholder is completed when its change is written, from the newest change of the key
//! known then. A change between the two that arrives later makes that completion wrong, and
//! the mirror keeps only the newest row, so nothing in it can say so. The history keeps every
//! change as it came: after the batch's writes, the keys it changed whose newest change has
//! placeholders are read from the history, filled there, and compared with the mirror; a
//! mirror row that differs is written again at its own version, with a tie-break (`_refill`:
//! how many changes of the key the history held) that makes every lookup prefer it. Each
//! writer reads again after it wrote, so two invocations racing on one key end with the row
//! filled from the complete history: docs/history.md, "Mirrors".

use std::collections::BTreeMap;
use std::time::Instant;

use cdc_clickhouse::{Failures, SinkError};
use cdc_core::completion;
use cdc_core::error::ErrorClass;
use cdc_core::change::Op;
use cdc_core::mirror::{MirrorChange, MirrorRow, Origin};
use cdc_core::tables::SourceTable;

use super::{PendingChange, Pipeline};
use crate::sqs::message::{MessageOutcome, MessageReport};

/// Writes of one key's row before its message is retried instead (another invocation kept
/// writing it with an older history): each round reads, writes, and the next reads again.
const REFILL_ROUNDS: usize = 3;

impl Pipeline {
    /// Fills again, from the history, the placeholders of the mirror rows of the keys `written`
    /// changed (module doc). Returns the rows written again, as changes of the message that
    /// touched their key, for the fact derivation.
    pub(super) async fn refill_from_history(
        &self,
        written: &[&PendingChange],
        reports: &mut [MessageReport],
        deadline: Instant,
    ) -> Result<Vec<PendingChange>, SinkError> {
        let mut keys: BTreeMap<SourceTable, BTreeMap<i64, usize>> = BTreeMap::new();
        for p in written {
            let MirrorChange::Rows(rows) = &p.change else { continue };
            for row in rows.iter().filter(|r| !r.is_deleted && self.warehouse.keeps_history(r.table)) {
                keys.entry(row.table).or_default().entry(row.key).or_insert(p.message);
            }
        }
        // The tables concurrently: one round trip in all when nothing needs filling again.
        let tables = keys.iter().map(|(table, messages)| self.refill_table(*table, messages, deadline));
        let mut refilled = Vec::new();
        for (rows, failed) in futures::future::try_join_all(tables).await? {
            refilled.extend(rows);
            for (message, (class, code)) in failed {
                let table = reports[message].table.clone();
                reports[message].outcome = MessageOutcome::Failed { class, code, table };
            }
        }
        Ok(refilled)
    }

    /// One table's rows filled again, and the messages whose rows could not be written.
    async fn refill_table(
        &self,
        table: SourceTable,
        messages: &BTreeMap<i64, usize>,
        deadline: Instant,
    ) -> Result<(Vec<PendingChange>, Failures), SinkError> {
        let w = &self.warehouse;
        let mut refilled = Vec::new();
        let mut failures = Failures::new();
        let mut keys: Vec<i64> = messages.keys().copied().collect();
        for round in 0..=REFILL_ROUNDS {
            // The count is read before the values: a row's tie-break never claims more changes
            // than its values were filled from.
            let candidates = w.refill_candidates(table, &keys, deadline).await?;
            if candidates.is_empty() {
                break;
            }
            let changes: BTreeMap<i64, u64> = candidates.iter().map(|(key, _, n)| (*key, *n)).collect();
            let ids: Vec<i64> = changes.keys().copied().collect();
            let (filled, stored) =
                tokio::try_join!(w.history_bases(table, &ids, deadline), w.sales_bases(table, &ids, true, deadline))?;
            let stored: BTreeMap<i64, _> = stored.into_iter().collect();
            let rows: Vec<(usize, MirrorRow, u64)> = filled
                .iter()
                .filter_map(|(key, filled)| {
                    let row = completion::refill(table, *key, filled, stored.get(key)?)?;
                    Some((messages[key], row, changes[key]))
                })
                .collect();
            if rows.is_empty() {
                break;
            }
            if round == REFILL_ROUNDS {
                failures.extend(rows.iter().map(|(m, _, _)| (*m, (ErrorClass::Transient, "toast.refill_contended"))));
                break;
            }
            let extras = w.sales_extras(table, &[], deadline).await?;
            let failed = w.write_refills(table, &rows, &extras, deadline).await?;
            keys = Vec::with_capacity(rows.len());
            for (message, row, _) in rows {
                if let Some(failure) = failed.get(&message) {
                    failures.insert(message, *failure);
                    continue;
                }
                keys.push(row.key);
                let origin = Origin { op: Op::Update, commit_time_us: None };
                refilled.push(PendingChange::new(message, MirrorChange::Rows(vec![row]), origin));
            }
            tracing::debug!(table = table.name(), rows = keys.len(), round, "mirror rows filled again from the history");
        }
        Ok((refilled, failures))
    }
}
