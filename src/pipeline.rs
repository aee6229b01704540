//! The core of one invocation: messages in, one report per message out.
//!
//! decode → mirror rows → one INSERT per mirror table → re-derive touched facts → one INSERT
//! into `sales_fact`. Everything SQS-specific (batch response, FIFO rules, backoff, DLQ) lives in
//! `handler` and `sqs`, which see this stage only through [`Process`].
//!
//! Per invocation the number of ClickHouse round trips does not grow with the batch: at most one
//! INSERT per table (more only while isolating a poison row by bisection), and a fixed set of
//! lookups (TOAST bases, touched items, the four mirrors, truncations).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::time::Instant;

use bytes::Bytes;

use crate::change::{Decoded, Version};
use crate::decode::{DecodeOptions, Decoder};
use crate::error::{Classify, ErrorClass};
use crate::fact::{CustomerState, FactRow, ItemState, OrderState, ProductState, Snapshot};
use crate::mirror::{self, Cell, MirrorChange, MirrorRow};
use crate::sink::dialect::{self, Dialect};
use crate::sink::retry::RetryPolicy;
use crate::sink::{SinkError, Warehouse, rowbinary};
use crate::sqs::message::{Message, MessageOutcome, MessageReport};
use crate::tables::SourceTable;

/// A fault of the environment, not of any message: the invocation fails as a whole so that SQS
/// redelivers the batch later and no healthy message is dead-lettered.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct SystemicError {
    pub code: &'static str,
    /// Safe to log: never contains row values, bodies or secrets.
    pub detail: String,
    /// True when the fault is an authentication failure (credentials may have been rotated).
    pub is_auth: bool,
}

impl Classify for SystemicError {
    fn class(&self) -> ErrorClass {
        ErrorClass::Systemic
    }
    fn code(&self) -> &'static str {
        self.code
    }
}

impl From<SinkError> for SystemicError {
    fn from(error: SinkError) -> Self {
        SystemicError { code: error.code(), is_auth: error.is_auth(), detail: error.to_string() }
    }
}

/// What the handler needs from the pipeline. Tests of SQS logic pass a fake.
pub trait Process: Send + Sync {
    /// Processes one batch, returning one report per message, in order. `deadline` is when the
    /// invocation must have answered (Lambda's remaining time minus a margin): transient retries
    /// stop before it.
    fn process(
        &self,
        messages: &[Message],
        deadline: Instant,
    ) -> impl Future<Output = Result<Vec<MessageReport>, SystemicError>> + Send;
}

/// The real pipeline: decoder + ClickHouse.
pub struct Pipeline {
    decoder: Decoder,
    warehouse: Warehouse,
    retry: RetryPolicy,
}

/// A mirror write of one message.
struct PendingChange {
    message: usize,
    change: MirrorChange,
}

/// Counts of one invocation, for the summary log line.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub mirror_rows: usize,
    pub facts: usize,
}

impl Pipeline {
    pub fn new(decoder_options: DecodeOptions, warehouse: Warehouse) -> Self {
        Self { decoder: Decoder::new(decoder_options), warehouse, retry: RetryPolicy::default() }
    }

    pub fn warehouse(&self) -> &Warehouse {
        &self.warehouse
    }

    /// `migrate`: the database, tables and views, idempotently.
    pub async fn migrate(&self, deadline: Instant) -> Result<(), SinkError> {
        self.retry.run(deadline, || self.warehouse.ensure_schema()).await
    }

    async fn run(&self, messages: &[Message], deadline: Instant) -> Result<Vec<MessageReport>, SystemicError> {
        let mut reports: Vec<MessageReport> =
            messages.iter().map(|_| MessageReport::new(MessageOutcome::Delivered)).collect();
        let mut timings = Timings::start();
        let pending = self.decode_all(messages, &mut reports);
        timings.lap("decode");
        if pending.is_empty() {
            return Ok(reports);
        }

        // Schema and dialect: a transient failure here fails every pending message for retry.
        let prepared = self.retry.run(deadline, || async {
            self.warehouse.ensure_schema().await?;
            self.warehouse.dialect().await
        });
        let dialect = match prepared.await {
            Ok(dialect) => dialect,
            Err(e) => return fail_pending(reports, &pending, e),
        };

        let mut pending = pending;
        if let Err(e) = self.complete_rows(dialect, &mut pending, &mut reports, deadline).await {
            return fail_pending(reports, &pending, e);
        }
        timings.lap("complete");
        let written = self.write_mirrors(dialect, &pending, &mut reports, deadline).await?;
        timings.lap("mirrors");
        if written.is_empty() {
            return Ok(reports);
        }
        let counts = match self.derive_facts(dialect, &written, &mut reports, deadline).await {
            Ok(counts) => counts,
            Err(e) => {
                let messages: Vec<usize> = written.iter().map(|p| p.message).collect();
                return fail_messages(reports, &messages, e);
            }
        };
        timings.lap("facts");
        tracing::debug!(
            messages = messages.len(),
            changes = written.len(),
            mirror_rows = counts.mirror_rows,
            facts = counts.facts,
            decode_ms = timings.ms("decode"),
            complete_ms = timings.ms("complete"),
            mirrors_ms = timings.ms("mirrors"),
            facts_ms = timings.ms("facts"),
            "pipeline phases"
        );
        Ok(reports)
    }

    /// Decodes and maps every message; failures and skips are final here.
    fn decode_all(&self, messages: &[Message], reports: &mut [MessageReport]) -> Vec<PendingChange> {
        let mut pending = Vec::new();
        for (index, message) in messages.iter().enumerate() {
            let report = &mut reports[index];
            let event = match self.decoder.decode(&message.body) {
                Ok(Decoded::Change(event)) => event,
                Ok(Decoded::Skipped(kind)) => {
                    report.outcome = MessageOutcome::Skipped(kind.as_str());
                    continue;
                }
                Err(e) => {
                    report.outcome = failed(&e, None);
                    continue;
                }
            };
            report.table = Some(event.table.name.clone());
            report.op = Some(event.op);
            report.commit_time_us = event.commit_time_us;
            report.correlation_id = event.correlation_id.clone().or_else(|| event.transaction_id.clone());
            let Some(table) = SourceTable::from_name(&event.table.name) else {
                // The decoder skips unknown tables unless configured to reject them.
                report.outcome = MessageOutcome::Skipped("unknown_table");
                continue;
            };
            match mirror::mirror_change(table, &event) {
                Ok(change) => pending.push(PendingChange { message: index, change }),
                Err(e) => report.outcome = failed(&e, Some(table.name())),
            }
        }
        pending
    }

    /// Completes rows from what is already known about their key, before they are written:
    ///
    /// - TOAST placeholders take the value already stored (NOTES §1): from an older change of the
    ///   same key in this batch, else from ClickHouse. A row whose older value is nowhere yet is
    ///   retried later (transient): its older change may still be in flight.
    /// - A deletion of an order item or an order carries only the key (REPLICA IDENTITY
    ///   DEFAULT); its tombstone takes the row's last known values, so that the fact derivation
    ///   still finds the item's order and product, and the order's customer, and counts their
    ///   versions (`fact.rs`). Nothing known: the tombstone keeps its defaults.
    async fn complete_rows(
        &self,
        dialect: Dialect,
        pending: &mut Vec<PendingChange>,
        reports: &mut [MessageReport],
        deadline: Instant,
    ) -> Result<(), SinkError> {
        let needs_base = |row: &MirrorRow| row.has_unavailable() || (row.is_deleted && row.table.has_foreign_keys());
        let mut lookups: BTreeMap<SourceTable, BTreeSet<i64>> = BTreeMap::new();
        for p in pending.iter() {
            if let MirrorChange::Rows(rows) = &p.change {
                for row in rows.iter().filter(|r| needs_base(r)) {
                    lookups.entry(row.table).or_default().insert(row.key);
                }
            }
        }
        if lookups.is_empty() {
            return Ok(());
        }
        // Candidate bases: every complete live row of the batch, plus the stored rows.
        let mut bases: HashMap<(SourceTable, i64), Vec<Base>> = HashMap::new();
        for p in pending.iter() {
            if let MirrorChange::Rows(rows) = &p.change {
                for row in rows.iter().filter(|r| !r.has_unavailable() && !r.is_deleted) {
                    let base = Base { version: row.version, live: true, cells: row.cells.clone() };
                    bases.entry((row.table, row.key)).or_default().push(base);
                }
            }
        }
        for (table, keys) in &lookups {
            let keys: Vec<i64> = keys.iter().copied().collect();
            for (key, version, deleted, cells) in self.stored_rows(dialect, *table, &keys, deadline).await? {
                bases.entry((*table, key)).or_default().push(Base { version, live: !deleted, cells });
            }
        }
        let mut unresolved = BTreeSet::new();
        for p in pending.iter_mut() {
            let MirrorChange::Rows(rows) = &mut p.change else { continue };
            for row in rows.iter_mut().filter(|r| needs_base(r)) {
                let candidates = bases.get(&(row.table, row.key)).map_or(&[][..], Vec::as_slice);
                if row.is_deleted {
                    // The stored values are the newest live (or completed deletion) values; a
                    // stored version equal to this one is this very deletion, redelivered.
                    let known = candidates
                        .iter()
                        .filter(|b| b.version <= row.version && b.cells.iter().skip(1).any(|c| !is_default(c)))
                        .max_by_key(|b| b.version);
                    if let Some(base) = known {
                        row.cells[1..].clone_from_slice(&base.cells[1..]);
                    }
                    continue;
                }
                // The newest live base older than this change.
                match candidates.iter().filter(|b| b.live && b.version < row.version).max_by_key(|b| b.version) {
                    Some(base) => {
                        for (cell, stored) in row.cells.iter_mut().zip(&base.cells) {
                            if *cell == Cell::Unavailable {
                                *cell = stored.clone();
                            }
                        }
                    }
                    None => {
                        unresolved.insert(p.message);
                    }
                }
            }
        }
        if !unresolved.is_empty() {
            pending.retain(|p| {
                if unresolved.contains(&p.message) {
                    reports[p.message].outcome = MessageOutcome::Failed {
                        class: ErrorClass::Transient,
                        code: "toast.base_missing",
                        table: reports[p.message].table.clone(),
                    };
                    false
                } else {
                    true
                }
            });
        }
        Ok(())
    }

    /// The newest stored row of each key, as mirror cells.
    async fn stored_rows(
        &self,
        dialect: Dialect,
        table: SourceTable,
        keys: &[i64],
        deadline: Instant,
    ) -> Result<Vec<(i64, Version, bool, Vec<Cell>)>, SinkError> {
        let sql = &dialect::latest_rows_query(dialect, self.warehouse.database(), table, keys);
        Ok(match table {
            SourceTable::Customers => self
                .fetch_retrying::<CustomerState>(sql, deadline)
                .await?
                .into_iter()
                .map(|r| {
                    let cells = vec![
                        Cell::Int(r.id),
                        Cell::Text(r.email),
                        Cell::Text(r.name),
                        Cell::Text(r.country),
                        Cell::Text(r.city),
                        Cell::Timestamp(r.created_at_us),
                    ];
                    (r.id, Version(r.version), r.is_deleted != 0, cells)
                })
                .collect(),
            SourceTable::Products => self
                .fetch_retrying::<ProductState>(sql, deadline)
                .await?
                .into_iter()
                .map(|r| {
                    let cells = vec![
                        Cell::Int(r.id),
                        Cell::Text(r.name),
                        Cell::Text(r.category),
                        Cell::Decimal(r.price),
                        Cell::Timestamp(r.created_at_us),
                    ];
                    (r.id, Version(r.version), r.is_deleted != 0, cells)
                })
                .collect(),
            SourceTable::Orders => self
                .fetch_retrying::<OrderState>(sql, deadline)
                .await?
                .into_iter()
                .map(|r| {
                    let cells = vec![
                        Cell::Int(r.id),
                        Cell::Int(r.customer_id),
                        Cell::Timestamp(r.order_date_us),
                        Cell::Text(r.status),
                        Cell::Decimal(r.total),
                    ];
                    (r.id, Version(r.version), r.is_deleted != 0, cells)
                })
                .collect(),
            SourceTable::OrderItems => self
                .fetch_retrying::<ItemState>(sql, deadline)
                .await?
                .into_iter()
                .map(|r| {
                    let cells = vec![
                        Cell::Int(r.id),
                        Cell::Int(r.order_id),
                        Cell::Int(r.product_id),
                        Cell::Int(i64::from(r.quantity)),
                        Cell::Decimal(r.price),
                    ];
                    (r.id, Version(r.version), r.is_deleted != 0, cells)
                })
                .collect(),
        })
    }

    async fn fetch_retrying<T>(&self, sql: &str, deadline: Instant) -> Result<Vec<T>, SinkError>
    where
        T: clickhouse::RowOwned + clickhouse::RowRead,
    {
        self.retry.run(deadline, || self.warehouse.fetch::<T>(sql)).await
    }

    /// One INSERT per mirror table (plus the truncation table). Returns the changes that landed.
    async fn write_mirrors<'p>(
        &self,
        dialect: Dialect,
        pending: &'p [PendingChange],
        reports: &mut [MessageReport],
        deadline: Instant,
    ) -> Result<Vec<&'p PendingChange>, SystemicError> {
        // Encoded rows per table, grouped by message so that a failing insert can be bisected
        // down to the message that poisons it.
        let mut per_table: BTreeMap<&'static str, Vec<(usize, Vec<u8>)>> = BTreeMap::new();
        for p in pending {
            let mut bytes = Vec::new();
            let table = match &p.change {
                MirrorChange::Rows(rows) => {
                    for row in rows {
                        rowbinary::encode_mirror_row(&mut bytes, dialect, row);
                    }
                    reports[p.message].rows_inserted = rows.len() as u64;
                    rows.first().map_or("", |r: &MirrorRow| r.table.name())
                }
                MirrorChange::Truncate { table, version } => {
                    rowbinary::put_string(&mut bytes, table.name());
                    rowbinary::put_u64(&mut bytes, version.0);
                    reports[p.message].rows_inserted = 1;
                    dialect::TRUNCATIONS_TABLE
                }
            };
            if !bytes.is_empty() {
                per_table.entry(table).or_default().push((p.message, bytes));
            }
        }
        // The tables are independent: insert them concurrently (one statement each).
        let inserts = per_table.into_iter().map(|(table, groups)| async move {
            let columns = match SourceTable::from_name(table) {
                Some(source) => dialect::mirror_columns(source.spec()),
                None => vec!["table_name", "_version"],
            };
            self.insert_isolating(table, &columns, groups, deadline).await
        });
        let mut failed: HashMap<usize, (ErrorClass, &'static str)> = HashMap::new();
        for result in futures::future::join_all(inserts).await {
            for (message, class, code) in result? {
                failed.insert(message, (class, code));
            }
        }
        let mut written = Vec::with_capacity(pending.len());
        for p in pending {
            match failed.remove(&p.message) {
                Some((class, code)) => {
                    let table = reports[p.message].table.clone();
                    reports[p.message].outcome = MessageOutcome::Failed { class, code, table };
                }
                None => written.push(p),
            }
        }
        Ok(written)
    }

    /// Inserts the groups in one statement; if the server rejects the data, splits the groups in
    /// halves until the failing message(s) stand alone, so everything else still lands.
    /// Returns the failed messages; a systemic error fails the invocation.
    async fn insert_isolating(
        &self,
        table: &str,
        columns: &[&str],
        groups: Vec<(usize, Vec<u8>)>,
        deadline: Instant,
    ) -> Result<Vec<(usize, ErrorClass, &'static str)>, SystemicError> {
        let mut failures = Vec::new();
        let mut stack = vec![groups];
        while let Some(groups) = stack.pop() {
            let body: Vec<u8> = groups.iter().flat_map(|(_, b)| b.iter().copied()).collect();
            let body = Bytes::from(body);
            let result =
                self.retry.run(deadline, || self.warehouse.insert_rowbinary(table, columns, body.clone())).await;
            match result {
                Ok(()) => {}
                Err(e) if e.class() == ErrorClass::Systemic => return Err(e.into()),
                Err(e) if e.class() == ErrorClass::Poison && groups.len() > 1 => {
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
                        messages = groups.len(),
                        "mirror insert failed"
                    );
                    failures.extend(groups.iter().map(|(message, _)| (*message, e.class(), e.code())));
                }
            }
        }
        Ok(failures)
    }

    /// Re-derives every fact the written changes touch and inserts them in one statement.
    async fn derive_facts(
        &self,
        dialect: Dialect,
        written: &[&PendingChange],
        reports: &mut [MessageReport],
        deadline: Instant,
    ) -> Result<Counts, SinkError> {
        let database = self.warehouse.database();
        let mut items = BTreeSet::new();
        let (mut orders, mut customers, mut products) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
        let mut truncated = false;
        for p in written {
            match &p.change {
                MirrorChange::Truncate { .. } => truncated = true,
                MirrorChange::Rows(rows) => {
                    for row in rows {
                        let keys = match row.table {
                            SourceTable::OrderItems => &mut items,
                            SourceTable::Orders => &mut orders,
                            SourceTable::Customers => &mut customers,
                            SourceTable::Products => &mut products,
                        };
                        keys.insert(row.key);
                    }
                }
            }
        }
        let touched_sql = if truncated {
            Some(dialect::all_items_query(database))
        } else if !(orders.is_empty() && customers.is_empty() && products.is_empty()) {
            let list = |s: &BTreeSet<i64>| s.iter().copied().collect::<Vec<_>>();
            Some(dialect::touched_items_query(database, &list(&orders), &list(&customers), &list(&products)))
        } else {
            None
        };
        if let Some(sql) = touched_sql {
            let found = self.retry.run(deadline, || self.warehouse.fetch_ids(&sql)).await?;
            items.extend(found);
        }
        let item_ids: Vec<i64> = items.into_iter().collect();
        let snapshot = self.read_snapshot(dialect, &item_ids, deadline).await?;
        let facts: Vec<FactRow> = item_ids.iter().map(|id| snapshot.derive(*id)).collect();

        let mut body = Vec::with_capacity(facts.len() * 128);
        for fact in &facts {
            rowbinary::encode_fact_row(&mut body, dialect, fact);
        }
        let body = Bytes::from(body);
        if !facts.is_empty() {
            self.retry
                .run(deadline, || {
                    self.warehouse.insert_rowbinary(dialect::FACT_TABLE, dialect::FACT_COLUMNS, body.clone())
                })
                .await?;
        }
        let mirror_rows = reports.iter().map(|r| r.rows_inserted as usize).sum();
        Ok(Counts { mirror_rows, facts: facts.len() })
    }

    /// Reads the newest mirror rows the given items need: the items, then their orders, then the
    /// orders' customers and the items' products.
    async fn read_snapshot(
        &self,
        dialect: Dialect,
        item_ids: &[i64],
        deadline: Instant,
    ) -> Result<Snapshot, SinkError> {
        let database = self.warehouse.database();
        if item_ids.is_empty() {
            return Ok(Snapshot::default());
        }
        let sql = dialect::latest_rows_query(dialect, database, SourceTable::OrderItems, item_ids);
        let (truncations, items) = tokio::join!(
            self.retry.run(deadline, || self.warehouse.truncations()),
            self.fetch_retrying::<ItemState>(&sql, deadline),
        );
        let mut snapshot = Snapshot { truncations: truncations?, ..Snapshot::default() };
        snapshot.items = items?.into_iter().map(|r| (r.id, r)).collect();

        let order_ids: Vec<i64> = distinct(snapshot.items.values().map(|i| i.order_id));
        let product_ids: Vec<i64> = distinct(snapshot.items.values().map(|i| i.product_id));
        let sql = dialect::latest_rows_query(dialect, database, SourceTable::Orders, &order_ids);
        snapshot.orders =
            self.fetch_retrying::<OrderState>(&sql, deadline).await?.into_iter().map(|r| (r.id, r)).collect();

        let customer_ids: Vec<i64> = distinct(snapshot.orders.values().map(|o| o.customer_id));
        let customers_sql = dialect::latest_rows_query(dialect, database, SourceTable::Customers, &customer_ids);
        let products_sql = dialect::latest_rows_query(dialect, database, SourceTable::Products, &product_ids);
        let (customers, products) = tokio::join!(
            self.fetch_retrying::<CustomerState>(&customers_sql, deadline),
            self.fetch_retrying::<ProductState>(&products_sql, deadline),
        );
        snapshot.customers = customers?.into_iter().map(|r| (r.id, r)).collect();
        snapshot.products = products?.into_iter().map(|r| (r.id, r)).collect();
        Ok(snapshot)
    }
}

impl Process for Pipeline {
    async fn process(&self, messages: &[Message], deadline: Instant) -> Result<Vec<MessageReport>, SystemicError> {
        self.run(messages, deadline).await
    }
}

/// What is known of a key before a row of it is written.
struct Base {
    version: Version,
    live: bool,
    cells: Vec<Cell>,
}

fn is_default(cell: &Cell) -> bool {
    matches!(cell, Cell::Int(0) | Cell::Decimal(0) | Cell::Timestamp(0))
        || matches!(cell, Cell::Text(t) if t.is_empty())
}

/// Wall time of the pipeline's phases, for one debug line per invocation.
struct Timings {
    last: Instant,
    laps: Vec<(&'static str, u64)>,
}

impl Timings {
    fn start() -> Self {
        Self { last: Instant::now(), laps: Vec::with_capacity(4) }
    }

    fn lap(&mut self, phase: &'static str) {
        let now = Instant::now();
        self.laps.push((phase, now.duration_since(self.last).as_millis() as u64));
        self.last = now;
    }

    fn ms(&self, phase: &str) -> u64 {
        self.laps.iter().find(|(p, _)| *p == phase).map_or(0, |(_, ms)| *ms)
    }
}

fn distinct(ids: impl Iterator<Item = i64>) -> Vec<i64> {
    ids.collect::<BTreeSet<_>>().into_iter().collect()
}

fn failed(error: &impl Classify, table: Option<&str>) -> MessageOutcome {
    MessageOutcome::Failed { class: error.class(), code: error.code(), table: table.map(str::to_string) }
}

/// A ClickHouse failure before or during the writes of `pending`: systemic faults fail the
/// invocation; anything else fails those messages with its class.
fn fail_pending(
    reports: Vec<MessageReport>,
    pending: &[PendingChange],
    error: SinkError,
) -> Result<Vec<MessageReport>, SystemicError> {
    let messages: Vec<usize> = pending.iter().map(|p| p.message).collect();
    fail_messages(reports, &messages, error)
}

fn fail_messages(
    mut reports: Vec<MessageReport>,
    messages: &[usize],
    error: SinkError,
) -> Result<Vec<MessageReport>, SystemicError> {
    // Only a message's own data can be poison; a fault met while deriving facts or reading is
    // never a reason to dead-letter, so anything not systemic is retried.
    if error.class() == ErrorClass::Systemic {
        return Err(error.into());
    }
    for &m in messages {
        let table = reports[m].table.clone();
        reports[m].outcome = MessageOutcome::Failed { class: ErrorClass::Transient, code: error.code(), table };
    }
    Ok(reports)
}
