//! The core of one invocation: messages in, one report per message out.
//!
//! decode (and redact) → versions checked ([`versions`]: each mirror's scale, and its watermark,
//! which holds back a change from a log that restarted) → two paths, run concurrently:
//! - generic mirrors (every captured table but the sales tables; [`generic`]): rows → columns
//!   added on first value → one INSERT per table;
//! - sales: mirror rows → foreign-key index rows (one INSERT per index) → mirror rows (one INSERT
//!   per table, extra columns included; with `HISTORY_TABLES`, history rows in the same round)
//!   → find the facts the changes touch (key lookups in the indexes) → re-derive them page by
//!   page → INSERT into `sales_fact` → re-derivations that did not fit become follow-up messages.
//!
//! Everything SQS-specific (batch response, FIFO rules, backoff, DLQ, sending the
//! follow-ups) lives in `handler` and `sqs`, which see this stage only through [`Process`]. The
//! SQL lives in `cdc-clickhouse`; this module only orchestrates. Design: docs/sales-fact.md,
//! docs/generic-mirrors.md, docs/versions.md, docs/history.md.
//!
//! Per invocation the number of ClickHouse round trips does not grow with the batch (at most one
//! INSERT per table, more only while isolating a poison row by bisection, and a fixed set of
//! lookups), and no query or buffer grows with a change's fan-out: facts are derived in pages
//! of at most [`PAGE`] items.

mod generic;
mod refill;
mod versions;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::time::{Duration, Instant};

use crate::sqs::message::{Message, MessageOutcome, MessageReport};
use cdc_clickhouse::schema::{self, FkIndex};
use cdc_clickhouse::{Failures, MirrorWrite, SinkError, Warehouse};
use cdc_core::change::{Decoded, InputFormat, Value, Version, VersionScale};
use cdc_core::completion;
use cdc_core::decode::{DecodeOptions, Decoder};
use cdc_core::error::{Classify, ErrorClass};
use cdc_core::fact::FactRow;
use cdc_core::generic::ColumnType;
use cdc_core::identifier;
use cdc_core::mirror::{self, MirrorChange, MirrorRow, Origin};
use cdc_core::redact::Redactor;
use cdc_core::rederive::{Scope, Task, TaskKey};
use cdc_core::tables::{MirrorTarget, SourceTable};
use cdc_core::watermark::Watermark;
use generic::PendingGeneric;
pub use versions::DEFAULT_REGRESSION_SLACK;
use versions::{SCALE_MISMATCH, ScaledChange};

/// Order items derived per round (one snapshot read, one INSERT): bounds the lookups' key lists,
/// the query text and the memory of a round, whatever a change's fan-out.
const PAGE: usize = 10_000;
/// Children of one changed parent read inline; a parent with more is re-derived as a [`Task`].
const INLINE_PER_PARENT: usize = 1_000;
/// Children read inline per index lookup in all.
const INLINE_TOTAL: usize = 50_000;

/// A fault of the environment, not of any message (wrong password, missing table, a query the
/// server's limits refuse): the pipeline stops, and the handler fails every message of the batch
/// as environmental, so none of them moves toward the DLQ (docs/error-policy.md).
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
    /// At most this many task pages per invocation (besides the deadline); `None`: no limit.
    page_budget: Option<usize>,
    /// Signs the follow-up tasks this pipeline sends and checks the ones it receives.
    task_key: TaskKey,
    /// The version scale each mirror is pinned to, as read or pinned so far (a pin never
    /// changes, so it is cached for the process).
    scales: std::sync::Mutex<HashMap<String, VersionScale>>,
    /// Each mirror's watermark as this process knows it: read from ClickHouse at its first
    /// batch, then moved by its own batches (`None`: not read yet).
    watermarks: tokio::sync::Mutex<Option<HashMap<String, Watermark>>>,
    /// How much later than its mirror's watermark a lower position may commit before the log
    /// is taken to have restarted (`VERSION_REGRESSION_SLACK_SECONDS`).
    regression_slack: Duration,
    /// Changes seen whose log position went backwards (each also logged at error level).
    regressions: std::sync::atomic::AtomicU64,
    /// PII columns dropped, nulled or hashed before any row is built (`REDACT_COLUMNS`).
    redactor: Redactor,
}

/// What decoding a batch leaves to write: sales-mirror changes, generic-mirror changes,
/// re-derivation tasks, and the version scale of every change (for the mirrors' pins).
struct DecodedBatch {
    pending: Vec<PendingChange>,
    generic: Vec<PendingGeneric>,
    tasks: Vec<(usize, Task)>,
    scaled: Vec<ScaledChange>,
}

/// A mirror write of one message, with where it came from and its rows' TOAST placeholders as
/// they came (what a history row records).
struct PendingChange {
    message: usize,
    change: MirrorChange,
    origin: Origin,
    placeholders: Vec<u64>,
}

impl PendingChange {
    fn new(message: usize, change: MirrorChange, origin: Origin) -> Self {
        let placeholders = match &change {
            MirrorChange::Rows(rows) if rows.iter().any(|r| r.placeholder_mask() != 0) => {
                rows.iter().map(MirrorRow::placeholder_mask).collect()
            }
            _ => Vec::new(),
        };
        PendingChange { message, change, origin, placeholders }
    }

    /// The sales table the change writes (a truncation's too).
    fn table(&self) -> Option<SourceTable> {
        match &self.change {
            MirrorChange::Rows(rows) => rows.first().map(|r| r.table),
            MirrorChange::Truncate { table, .. } => Some(*table),
        }
    }
}

/// Columns a batch needs, each with the type its first value asks for.
type NeededColumns = Vec<(String, ColumnType)>;

/// Per sales table: the extra columns its rows carry, and the type each first value asks for.
fn extra_types(pending: &[PendingChange]) -> BTreeMap<SourceTable, (BTreeSet<String>, NeededColumns)> {
    let mut carried: BTreeMap<SourceTable, (BTreeSet<String>, NeededColumns)> = BTreeMap::new();
    for p in pending {
        let MirrorChange::Rows(rows) = &p.change else { continue };
        for row in rows.iter().filter(|r| !r.extras.is_empty()) {
            let (names, needed) = carried.entry(row.table).or_default();
            for (name, value) in row.extras.iter() {
                names.insert(name.to_owned());
                if let Some(ty) = ColumnType::of(value)
                    && !needed.iter().any(|(n, _)| n == name)
                {
                    needed.push((name.to_owned(), ty));
                }
            }
        }
    }
    carried
}

/// Facts to re-derive: items read inline, and tasks (with the message that caused each) for
/// the rest. A task is owned by one message: if it cannot finish, that message carries the
/// follow-up.
#[derive(Debug, Default, PartialEq, Eq)]
struct Touched {
    items: BTreeSet<i64>,
    pub(crate) tasks: BTreeMap<Scope, (usize, Option<i64>)>,
}

impl Touched {
    fn add_task(&mut self, message: usize, scope: Scope, after: Option<i64>) {
        let entry = self.tasks.entry(scope).or_insert((message, after));
        entry.1 = entry.1.min(after);
    }
}

impl Pipeline {
    pub fn new(decoder_options: DecodeOptions, warehouse: Warehouse) -> Self {
        Self {
            decoder: Decoder::new(decoder_options),
            warehouse,
            page_budget: None,
            task_key: TaskKey::random(),
            scales: std::sync::Mutex::default(),
            watermarks: tokio::sync::Mutex::default(),
            regression_slack: DEFAULT_REGRESSION_SLACK,
            regressions: std::sync::atomic::AtomicU64::new(0),
            redactor: Redactor::default(),
        }
    }

    /// Redacts the configured columns of every change before it becomes rows (mirrors,
    /// generic mirrors, facts and repairs alike): docs/privacy.md.
    pub fn with_redactor(mut self, redactor: Redactor) -> Self {
        self.redactor = redactor;
        self
    }

    /// `VERSION_REGRESSION_SLACK_SECONDS` (docs/versions.md, "Positions that restart").
    pub fn with_regression_slack(mut self, slack: Duration) -> Self {
        self.regression_slack = slack;
        self
    }

    /// How many changes this pipeline has seen whose log position went backwards (docs/versions.md,
    /// "Positions that restart").
    pub fn regressions_detected(&self) -> u64 {
        self.regressions.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The key shared by every instance of the function (`TASK_KEY_SECRET_ARN`); without it the
    /// pipeline signs with a random key of its own, which only it accepts.
    pub(crate) fn with_task_key(mut self, key: TaskKey) -> Self {
        self.task_key = key;
        self
    }

    /// The follow-up message body that continues `task`, signed.
    pub fn task_body(&self, task: Task) -> String {
        self.task_key.sign(task)
    }

    /// Limits the task pages one invocation runs (the rest continues in follow-ups), e.g. to keep
    /// invocations short; the deadline limits them anyway.
    pub fn with_page_budget(mut self, pages: usize) -> Self {
        self.page_budget = Some(pages.max(1));
        self
    }

    /// The decoder's options: the table mapping (`CAPTURED_TABLES`) changes go by.
    pub fn decode_options(&self) -> &DecodeOptions {
        self.decoder.options()
    }

    /// Processes messages as [`Process::process`] does, but writes every change at `version`
    /// on `scale` instead of the version its event carries: `cdc-tools repair` rewrites rows
    /// of a mirror pinned to µs versions at the current time, which no WAL position it can
    /// put in a Debezium event expresses (docs/versions.md, "One scale per mirror").
    pub async fn process_at(
        &self,
        messages: &[Message],
        deadline: Instant,
        version: Version,
        scale: VersionScale,
    ) -> Result<Vec<MessageReport>, SystemicError> {
        self.run(messages, deadline, Some((version, scale))).await
    }

    pub fn warehouse(&self) -> &Warehouse {
        &self.warehouse
    }

    /// `migrate`: the database, tables and views, idempotently.
    pub async fn migrate(&self, deadline: Instant) -> Result<(), SinkError> {
        self.warehouse.prepare(deadline).await.map(|_| ())
    }

    async fn run(
        &self,
        messages: &[Message],
        deadline: Instant,
        at: Option<(Version, VersionScale)>,
    ) -> Result<Vec<MessageReport>, SystemicError> {
        let mut reports: Vec<MessageReport> =
            messages.iter().map(|_| MessageReport::new(MessageOutcome::Delivered)).collect();
        let mut timings = Timings::start();
        let DecodedBatch { mut pending, mut generic, tasks, scaled } = self.decode_all(messages, &mut reports, at);
        timings.lap("decode");
        if pending.is_empty() && generic.is_empty() && tasks.is_empty() {
            return Ok(reports);
        }

        // Every message still pending: what a failure of the schema or the scales fails.
        let everyone = |pending: &[PendingChange], generic: &[PendingGeneric]| -> Vec<usize> {
            let pending = pending.iter().map(|p| p.message);
            pending.chain(generic.iter().map(|g| g.message)).chain(tasks.iter().map(|(m, _)| *m)).collect()
        };
        // Schema and dialect: a transient failure here fails every pending message for retry.
        if let Err(e) = self.warehouse.prepare(deadline).await {
            fail_messages(&mut reports, &everyone(&pending, &generic), e)?;
            return Ok(reports);
        }
        // One scale per mirror: a change on another scale than its mirror's is poison.
        match self.pin_scales(&scaled, deadline).await {
            Ok(mismatched) if !mismatched.is_empty() => {
                for &message in &mismatched {
                    let table = reports[message].table.clone();
                    reports[message].outcome =
                        MessageOutcome::Failed { class: ErrorClass::Poison, code: SCALE_MISMATCH, table };
                }
                pending.retain(|p| !mismatched.contains(&p.message));
                generic.retain(|g| !mismatched.contains(&g.message));
            }
            Ok(_) => {}
            Err(e) => {
                fail_messages(&mut reports, &everyone(&pending, &generic), e)?;
                return Ok(reports);
            }
        }
        // Log positions that went backwards are reported (the operator's remedy is a fresh
        // warehouse from a new snapshot: docs/versions.md, "Positions that restart").
        let advanced = match self.check_positions(&scaled, deadline).await {
            Ok(advanced) => advanced,
            Err(e) => {
                fail_messages(&mut reports, &everyone(&pending, &generic), e)?;
                return Ok(reports);
            }
        };
        // Generic mirrors feed no fact: they are written concurrently with the sales path and
        // fail only their own messages (docs/generic-mirrors.md). The watermarks go in the same
        // round; a failure to write them only delays the detection (logged).
        let (generic, sales, marks) = tokio::join!(
            self.write_generic(generic, deadline),
            self.run_sales(pending, tasks, &mut reports, &mut timings, deadline),
            self.advance_watermarks(advanced, deadline)
        );
        if let Err(e) = marks {
            tracing::warn!(code = e.code(), "could not record the mirrors' watermarks; retried with the next batch");
        }
        sales?;
        for (message, outcome) in generic? {
            match outcome {
                Ok(rows) => reports[message].rows_inserted = rows,
                Err((class, code)) => {
                    let table = reports[message].table.clone();
                    reports[message].outcome = MessageOutcome::Failed { class, code, table };
                }
            }
        }
        tracing::debug!(
            messages = messages.len(),
            mirror_rows = reports.iter().map(|r| r.rows_inserted).sum::<u64>(),
            decode_ms = timings.ms("decode"),
            complete_ms = timings.ms("complete"),
            mirrors_ms = timings.ms("mirrors"),
            facts_ms = timings.ms("facts"),
            "pipeline phases"
        );
        Ok(reports)
    }

    /// The sales path: complete rows, write indexes and mirrors, re-derive the facts they
    /// touch, and carry what did not fit as follow-ups. Outcomes land in `reports`.
    async fn run_sales(
        &self,
        mut pending: Vec<PendingChange>,
        tasks: Vec<(usize, Task)>,
        reports: &mut [MessageReport],
        timings: &mut Timings,
        deadline: Instant,
    ) -> Result<(), SystemicError> {
        if pending.is_empty() && tasks.is_empty() {
            return Ok(());
        }
        let task_messages: Vec<usize> = tasks.iter().map(|(m, _)| *m).collect();
        if let Err(e) = self.complete_rows(&mut pending, reports, deadline).await {
            let all: Vec<usize> = pending.iter().map(|p| p.message).chain(task_messages).collect();
            return fail_messages(reports, &all, e);
        }
        timings.lap("complete");
        let mut written = self.write_rows(&pending, reports, deadline).await?;
        timings.lap("mirrors");

        let affected: Vec<usize> = written.iter().map(|p| p.message).chain(task_messages).collect();
        // Rows whose placeholders the history fills otherwise than their writer did: their facts
        // are derived again with the rest.
        let refilled = match self.refill_from_history(&written, reports, deadline).await {
            Ok(refilled) => refilled,
            Err(e) => return fail_messages(reports, &affected, e),
        };
        written.extend(refilled.iter());
        let derived = async {
            let mut touched = self.touched(&written, deadline).await?;
            for (message, task) in tasks {
                touched.add_task(message, task.scope, task.after);
            }
            let items: Vec<i64> = touched.items.iter().copied().collect();
            let mut facts = self.derive(&items, deadline).await?;
            let (more, unfinished) = self.run_tasks(touched.tasks, deadline).await?;
            facts += more;
            Ok::<_, SinkError>((facts, unfinished))
        };
        let (facts, unfinished) = match derived.await {
            Ok(done) => done,
            Err(e) => return fail_messages(reports, &affected, e),
        };
        for (message, task) in unfinished {
            reports[message].follow_ups.push(self.task_key.sign(task));
        }
        timings.lap("facts");
        tracing::debug!(changes = written.len(), facts, "sales path");
        Ok(())
    }

    /// Decodes and maps every message; failures and skips are final here. Follow-up messages
    /// of this processor come back as re-derivation tasks.
    fn decode_all(
        &self,
        messages: &[Message],
        reports: &mut [MessageReport],
        at: Option<(Version, VersionScale)>,
    ) -> DecodedBatch {
        let mut pending = Vec::new();
        let mut generic = Vec::new();
        let mut tasks = Vec::new();
        let mut scaled = Vec::new();
        // Logged once per uncaptured table per decoder (cold start); every skip is counted.
        let log_unmapped = || {
            for table in self.decoder.take_new_unmapped_tables() {
                tracing::warn!(table = %table, "skipping changes of a table outside CAPTURED_TABLES (logged once)");
            }
        };
        for (index, message) in messages.iter().enumerate() {
            let report = &mut reports[index];
            match self.task_key.parse(&message.body) {
                Some(Ok(task)) => {
                    tasks.push((index, task));
                    continue;
                }
                Some(Err(e)) => {
                    report.outcome = failed(&e, None);
                    continue;
                }
                None => {}
            }
            let mut event = match self.decoder.decode(&message.body) {
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
            // The decoder mapped the source table (database, schema, table) to its mirror by
            // the configured mapping; tables outside it never get here (skipped or rejected).
            report.table = Some(event.mirror.name().to_owned());
            report.op = Some(event.op);
            report.commit_time_us = event.commit_time_us;
            report.correlation_id = event.correlation_id.clone().or_else(|| event.transaction_id.clone());
            // Before anything is built from the images: no row, fact or diagnostic sees a
            // redacted value in plain.
            self.redactor.apply(&mut event);
            // Event-supplied column names may become columns: checked before any DDL, so a
            // malformed body fails alone (docs/error-policy.md, "Content failures").
            if let Err(e) = [&event.before, &event.after].into_iter().flatten().try_for_each(identifier::check_row) {
                report.outcome = failed(&e, Some(event.mirror.name()));
                continue;
            }
            if event.format == InputFormat::Platform
                && matches!(event.mirror, MirrorTarget::Sales(_))
                && !self.decoder.options().platform_feeds_sales
            {
                let table = Some(event.mirror.name().to_owned());
                report.outcome =
                    MessageOutcome::Failed { class: ErrorClass::Poison, code: "mapping.platform_not_enabled", table };
                continue;
            }
            if let Some((version, scale)) = at {
                (event.version, event.scale) = (version, scale);
            }
            scaled.push(ScaledChange {
                message: index,
                mirror: event.mirror.name().to_owned(),
                scale: event.scale,
                version: event.version,
                commit_time_us: event.commit_time_us,
            });
            match &event.mirror {
                MirrorTarget::Sales(table) => match mirror::mirror_change(*table, &event) {
                    Ok(change) => pending.push(PendingChange::new(index, change, Origin::of(&event))),
                    Err(e) => report.outcome = failed(&e, Some(table.name())),
                },
                MirrorTarget::Generic(table) => match cdc_core::generic::generic_change(table, &event) {
                    Ok(change) => generic.push(PendingGeneric { message: index, table: table.clone(), change }),
                    Err(e) => report.outcome = failed(&e, Some(&table.name)),
                },
            }
        }
        log_unmapped();
        DecodedBatch { pending, generic, tasks, scaled }
    }

    /// Completes rows from what is already known about their key, before they are written
    /// (`cdc_core::completion`: TOAST placeholders, and the tombstones of items and orders,
    /// which keep their foreign keys). The candidates are the batch's complete rows and the
    /// newest stored row of each key that needs one; a row nothing can complete yet fails its
    /// message for retry (transient `toast.base_missing`): its older change may still be in
    /// flight.
    async fn complete_rows(
        &self,
        pending: &mut Vec<PendingChange>,
        reports: &mut [MessageReport],
        deadline: Instant,
    ) -> Result<(), SinkError> {
        let lookups = completion::sales_lookups(mirror_rows(pending));
        if lookups.is_empty() {
            return Ok(());
        }
        let mut bases = completion::sales_batch_bases(mirror_rows(pending));
        for (table, keys) in &lookups {
            let keys: Vec<i64> = keys.iter().copied().collect();
            // The stored extra columns are read only when a placeholder stands in one.
            let extras = pending.iter().any(|p| {
                matches!(&p.change, MirrorChange::Rows(rows)
                    if rows.iter().any(|r| r.table == *table && r.extras.iter().any(|(_, v)| *v == Value::Unavailable)))
            });
            for (key, base) in self.warehouse.sales_bases(*table, &keys, extras, deadline).await? {
                bases.entry((*table, key)).or_default().push(base);
            }
        }
        let rows_mut = pending.iter_mut().filter_map(|p| match &mut p.change {
            MirrorChange::Rows(rows) => Some(rows.iter_mut().map(|row| (p.message, row))),
            MirrorChange::Truncate { .. } => None,
        });
        let unresolved = completion::complete_sales(rows_mut.flatten(), &bases);
        if !unresolved.is_empty() {
            pending.retain(|p| {
                if unresolved.contains(&p.message) {
                    reports[p.message].outcome = MessageOutcome::Failed {
                        class: ErrorClass::Waiting,
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

    /// Writes the changes (`Warehouse::write_mirrors`: mirror rows, foreign-key index entries,
    /// truncations) of every message whose extra columns could be prepared. A message fails if
    /// any of its writes fails (it is retried, and its retry writes all of them again). Returns
    /// the changes that landed.
    async fn write_rows<'p>(
        &self,
        pending: &'p [PendingChange],
        reports: &mut [MessageReport],
        deadline: Instant,
    ) -> Result<Vec<&'p PendingChange>, SystemicError> {
        // Columns beyond the declared ones, per table (added on their first value).
        let (extras, mut failed) = self.extra_columns(pending, deadline).await?;
        let changes: Vec<MirrorWrite<'_>> = pending
            .iter()
            .filter(|p| !failed.contains_key(&p.message))
            .map(|p| MirrorWrite {
                message: p.message,
                change: &p.change,
                origin: p.origin,
                placeholders: &p.placeholders,
            })
            .collect();
        failed.extend(self.warehouse.write_mirrors(&changes, &extras, deadline).await?);

        let mut written = Vec::with_capacity(pending.len());
        for p in pending {
            match failed.remove(&p.message) {
                Some((class, code)) => {
                    let table = reports[p.message].table.clone();
                    reports[p.message].outcome = MessageOutcome::Failed { class, code, table };
                }
                None => {
                    reports[p.message].rows_inserted = match &p.change {
                        MirrorChange::Rows(rows) => rows.len() as u64,
                        MirrorChange::Truncate { .. } => 1,
                    };
                    written.push(p);
                }
            }
        }
        Ok(written)
    }

    /// The extra columns each sales table's INSERT carries: those of ClickHouse's extra columns
    /// that some row of the batch has, after adding the ones a first value asks for. A table
    /// whose extra columns cannot be prepared fails its messages (schema problem: systemic;
    /// transient: retried); a fault of the whole environment stops the invocation.
    async fn extra_columns(
        &self,
        pending: &[PendingChange],
        deadline: Instant,
    ) -> Result<(BTreeMap<SourceTable, Vec<cdc_core::generic::Column>>, Failures), SystemicError> {
        let carried = extra_types(pending);
        let mut columns = BTreeMap::new();
        let mut failed = HashMap::new();
        for (table, (names, needed)) in carried {
            let w = &self.warehouse;
            match w.sales_extras(table, &needed, deadline).await {
                Ok(all) => {
                    columns.insert(table, all.into_iter().filter(|c| names.contains(&c.name)).collect());
                }
                // Columns the configuration refuses: the messages that ask for them fail alone
                // (found one at a time), the table's others proceed with the columns there are.
                Err(e) if e.class() == ErrorClass::Poison => {
                    for p in pending.iter().filter(|p| p.table() == Some(table)) {
                        let own = extra_types(std::slice::from_ref(p));
                        let needed = own.get(&table).map(|(_, needed)| needed.as_slice()).unwrap_or_default();
                        match w.sales_extras(table, needed, deadline).await {
                            Ok(_) => {}
                            Err(e) if e.class() == ErrorClass::Poison => {
                                failed.insert(p.message, (e.class(), e.code()));
                            }
                            Err(e) if e.class() == ErrorClass::Systemic && !matches!(e, SinkError::Schema { .. }) => {
                                return Err(e.into());
                            }
                            Err(e) => {
                                failed.insert(p.message, (e.class(), e.code()));
                            }
                        }
                    }
                    let all = w.sales_extras(table, &[], deadline).await?;
                    columns.insert(table, all.into_iter().filter(|c| names.contains(&c.name)).collect());
                }
                Err(e) if matches!(e, SinkError::Schema { .. }) || e.class() == ErrorClass::Transient => {
                    tracing::warn!(
                        table = table.name(),
                        code = e.code(),
                        "extra columns of a sales mirror unavailable"
                    );
                    for p in pending.iter().filter(|p| p.table() == Some(table)) {
                        failed.insert(p.message, (e.class(), e.code()));
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok((columns, failed))
    }

    /// The facts the written changes touch: changed items themselves, and the children of
    /// changed orders, customers and products, found by key lookups in the foreign-key indexes.
    /// A parent with more children than fit inline, and a truncation, become tasks.
    async fn touched(&self, written: &[&PendingChange], deadline: Instant) -> Result<Touched, SinkError> {
        let mut touched = Touched::default();
        // Changed parents by key, each with the first message that changed it (a task it causes
        // belongs to that message).
        let (mut orders, mut customers, mut products) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
        for p in written {
            match &p.change {
                MirrorChange::Truncate { .. } => touched.add_task(p.message, Scope::All, None),
                MirrorChange::Rows(rows) => {
                    for row in rows {
                        let parents = match row.table {
                            SourceTable::OrderItems => {
                                touched.items.insert(row.key);
                                continue;
                            }
                            SourceTable::Orders => &mut orders,
                            SourceTable::Customers => &mut customers,
                            SourceTable::Products => &mut products,
                        };
                        parents.entry(row.key).or_insert(p.message);
                    }
                }
            }
        }
        if touched.tasks.contains_key(&Scope::All) {
            // A truncation re-derives every fact anyway.
            return Ok(touched);
        }
        // Customers reach their items through their orders: first the orders. A customer with
        // too many orders to read inline becomes a task of its own.
        let (pairs, split) = self.children_of(schema::ORDERS_BY_CUSTOMER, &customers, deadline).await?;
        let too_many: BTreeSet<i64> = split.incomplete.iter().map(|(customer, _)| *customer).collect();
        for customer in &too_many {
            touched.add_task(customers[customer], Scope::Customer(*customer), None);
        }
        // The orders reached through a changed customer, by order: if their items do not all
        // fit inline, the customer becomes one task, not one task per order (a rename of a
        // customer with 200 orders is one follow-up, never 200).
        let mut via_customer: BTreeMap<i64, i64> = BTreeMap::new();
        for (customer, order) in pairs {
            if let Some(&message) = customers.get(&customer).filter(|_| !too_many.contains(&customer)) {
                orders.entry(order).or_insert(message);
                via_customer.entry(order).or_insert(customer);
            }
        }

        let (by_order, by_product) = tokio::join!(
            self.children_of(schema::ITEMS_BY_ORDER, &orders, deadline),
            self.children_of(schema::ITEMS_BY_PRODUCT, &products, deadline),
        );
        for ((_, split), owners, scope) in
            [(by_order?, &orders, Scope::Order as fn(i64) -> Scope), (by_product?, &products, Scope::Product)]
        {
            touched.items.extend(split.children);
            for (parent, after) in split.incomplete {
                match via_customer.get(&parent).filter(|_| matches!(scope(parent), Scope::Order(_))) {
                    Some(&customer) => touched.add_task(owners[&parent], Scope::Customer(customer), None),
                    None => touched.add_task(owners[&parent], scope(parent), after),
                }
            }
        }
        Ok(touched)
    }

    /// The children of changed parents through one index, read inline (`(parent, child)` pairs),
    /// and how they split into complete parents and parents with more children than fit.
    async fn children_of(
        &self,
        index: FkIndex,
        parents: &BTreeMap<i64, usize>,
        deadline: Instant,
    ) -> Result<(Vec<(i64, i64)>, Split), SinkError> {
        let keys: Vec<i64> = parents.keys().copied().collect();
        let pairs = self.warehouse.children(index, &keys, INLINE_PER_PARENT, INLINE_TOTAL, deadline).await?;
        let split = split_children(&keys, &pairs, INLINE_PER_PARENT, INLINE_TOTAL);
        Ok((pairs, split))
    }

    /// Re-derives the given order items, a page at a time: one snapshot read and one INSERT per
    /// page. Returns the number of facts written.
    async fn derive(&self, items: &[i64], deadline: Instant) -> Result<usize, SinkError> {
        for page in items.chunks(PAGE) {
            let snapshot = self.warehouse.snapshot(page, deadline).await?;
            let facts: Vec<FactRow> = page.iter().map(|id| snapshot.derive(*id)).collect();
            drop(snapshot);
            self.warehouse.insert_facts(&facts, deadline).await?;
        }
        Ok(items.len())
    }

    /// Re-derives every fact of `scope` (operator repairs): the task runs until done or until
    /// `deadline`, returning the facts written and the task where it stopped, if it did not end.
    pub async fn rederive(&self, scope: Scope, deadline: Instant) -> Result<(usize, Option<Task>), SinkError> {
        self.migrate(deadline).await?;
        let (facts, mut unfinished) = self.run_tasks(BTreeMap::from([(scope, (0, None))]), deadline).await?;
        Ok((facts, unfinished.pop().map(|(_, task)| task)))
    }

    /// Walks each task page by page while the invocation has time for another page. Returns
    /// the facts written and the tasks left unfinished, each where it stopped: the handler sends
    /// them as follow-up messages before it acknowledges their messages, so the work continues
    /// durably, and every invocation that runs tasks moves one forward by at least a page (tasks
    /// run in scope order, so each finishes in a bounded number of invocations).
    async fn run_tasks(
        &self,
        tasks: BTreeMap<Scope, (usize, Option<i64>)>,
        deadline: Instant,
    ) -> Result<(usize, Vec<(usize, Task)>), SinkError> {
        let mut facts = 0;
        let mut unfinished = Vec::new();
        let mut slowest_page = Duration::ZERO;
        let mut pages = 0;
        for (scope, (message, after)) in tasks {
            let mut task = Task { scope, after };
            loop {
                // The invocation's first page always runs (progress on every retry); later
                // ones only while twice the slowest page so far still fits.
                let out_of_budget = self.page_budget.is_some_and(|budget| pages >= budget);
                if pages > 0 && (out_of_budget || Instant::now() + slowest_page * 2 >= deadline) {
                    unfinished.push((message, task));
                    break;
                }
                let started = Instant::now();
                let ids = self.warehouse.page(task.scope, task.after, PAGE, deadline).await?;
                let Some(&last) = ids.last() else { break };
                facts += self.derive(&ids, deadline).await?;
                task.after = Some(last);
                pages += 1;
                slowest_page = slowest_page.max(started.elapsed());
                if ids.len() < PAGE {
                    break;
                }
            }
        }
        Ok((facts, unfinished))
    }
}

/// A children lookup split into the children read and the parents whose children did not all
/// fit, each with the last child read (`None` if none).
#[derive(Debug, Default, PartialEq, Eq)]
struct Split {
    children: Vec<i64>,
    incomplete: Vec<(i64, Option<i64>)>,
}

/// `pairs` is the answer of `cdc_clickhouse::queries::children_query` for `parents`: ordered by parent then
/// child, at most `per_parent` per parent and `total` in all.
fn split_children(parents: &[i64], pairs: &[(i64, i64)], per_parent: usize, total: usize) -> Split {
    let cut_short = pairs.len() >= total;
    let last_parent = pairs.last().map(|(p, _)| *p);
    let mut seen: BTreeMap<i64, (usize, Option<i64>)> = BTreeMap::new();
    for (parent, child) in pairs {
        let entry = seen.entry(*parent).or_insert((0, None));
        entry.0 += 1;
        entry.1 = entry.1.max(Some(*child));
    }
    let mut split = Split { children: pairs.iter().map(|(_, c)| *c).collect(), incomplete: Vec::new() };
    for parent in parents {
        match seen.get(parent) {
            Some(&(count, last)) if count >= per_parent || (cut_short && Some(*parent) == last_parent) => {
                split.incomplete.push((*parent, last));
            }
            None if cut_short && last_parent.is_some_and(|last| *parent > last) => {
                split.incomplete.push((*parent, None));
            }
            _ => {}
        }
    }
    split
}

impl Process for Pipeline {
    async fn process(&self, messages: &[Message], deadline: Instant) -> Result<Vec<MessageReport>, SystemicError> {
        self.run(messages, deadline, None).await
    }
}

/// The rows of the pending changes (truncations have none).
fn mirror_rows(pending: &[PendingChange]) -> impl Iterator<Item = &MirrorRow> {
    pending
        .iter()
        .filter_map(|p| match &p.change {
            MirrorChange::Rows(rows) => Some(rows.iter()),
            MirrorChange::Truncate { .. } => None,
        })
        .flatten()
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

fn failed(error: &impl Classify, table: Option<&str>) -> MessageOutcome {
    MessageOutcome::Failed { class: error.class(), code: error.code(), table: table.map(str::to_string) }
}

fn fail_messages(reports: &mut [MessageReport], messages: &[usize], error: SinkError) -> Result<(), SystemicError> {
    // Only a message's own data can be poison, and a fault met while preparing, reading or
    // deriving facts is not: what retrying can cure is retried, anything else (a server refusing
    // our own query or rows) is the environment's, systemic (docs/error-policy.md).
    if error.class() != ErrorClass::Transient {
        return Err(error.into());
    }
    for &m in messages {
        let table = reports[m].table.clone();
        reports[m].outcome = MessageOutcome::Failed { class: ErrorClass::Transient, code: error.code(), table };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_whose_children_all_fit_are_complete() {
        let pairs = [(1, 10), (1, 11), (3, 30)];
        let split = split_children(&[1, 2, 3], &pairs, 5, 100);
        assert_eq!(split, Split { children: vec![10, 11, 30], incomplete: vec![] });
    }

    #[test]
    fn a_parent_at_its_limit_continues_after_its_last_child() {
        let pairs = [(1, 10), (1, 11), (3, 30)];
        let split = split_children(&[1, 3], &pairs, 2, 100);
        assert_eq!(split.incomplete, vec![(1, Some(11))]);
        assert_eq!(split.children, vec![10, 11, 30]);
    }

    #[test]
    fn a_lookup_cut_by_its_total_leaves_the_last_parent_and_the_unseen_ones_to_tasks() {
        // Total 3 reached inside parent 3; parents 4 and 5 were never reached.
        let pairs = [(1, 10), (3, 30), (3, 31)];
        let split = split_children(&[1, 2, 3, 4, 5], &pairs, 10, 3);
        assert_eq!(split.incomplete, vec![(3, Some(31)), (4, None), (5, None)]);
        // Parent 2 sorts before the cut and has no children: complete.
        assert!(!split.incomplete.iter().any(|(p, _)| *p == 2));
    }

    #[test]
    fn tasks_of_one_scope_merge_and_resume_at_the_earliest_cursor() {
        let mut touched = Touched::default();
        touched.add_task(4, Scope::Product(7), Some(500));
        touched.add_task(2, Scope::Product(7), Some(100));
        touched.add_task(3, Scope::All, Some(i64::MIN));
        touched.add_task(5, Scope::All, None);
        assert_eq!(touched.tasks[&Scope::Product(7)], (4, Some(100)));
        // Item id i64::MIN is an item like any other: "none yet" is earlier still.
        assert_eq!(touched.tasks[&Scope::All], (3, None));
        assert_eq!(touched.tasks.len(), 2);
    }
}
