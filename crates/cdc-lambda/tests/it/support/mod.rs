//! Shared test support: a fresh ClickHouse database per test, Debezium bodies for a modelled
//! source database, the oracle join, the sample events of `events/`, and the local services
//! (`services`).
//!
//! Tests that need ClickHouse fail loudly when it is not reachable: the README's test command
//! starts it (`scripts/clickhouse.sh start`) before running them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use cdc_clickhouse::RawSql;
use cdc_clickhouse::Warehouse;
use cdc_clickhouse::config::ClickHouseSettings;
use cdc_clickhouse::dialect::Dialect;
use cdc_core::decode::DecodeOptions;
use cdc_lambda::pipeline::{Pipeline, Process};
use cdc_lambda::sqs::message::{Message, MessageId, MessageReport};
use serde_json::{Value as Json, json};

pub(crate) mod services;

use services::env_or;

pub(crate) fn clickhouse_url() -> String {
    env_or("CLICKHOUSE_URL", "http://127.0.0.1:8123")
}

pub(crate) fn settings(database: &str) -> ClickHouseSettings {
    ClickHouseSettings::new(
        clickhouse_url(),
        env_or("CLICKHOUSE_USER", "default"),
        env_or("CLICKHOUSE_PASSWORD", ""),
        database,
    )
}

/// A file of the sample events (`events/` at the repository's root).
pub(crate) fn event_file(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../events").join(name)
}

/// A database name no other test (or earlier run) uses.
pub(crate) fn fresh_database(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("it_{prefix}_{}_{}_{}", std::process::id(), nanos % 1_000_000_000, COUNTER.fetch_add(1, Ordering::SeqCst))
}

pub(crate) fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

/// A pipeline on a new, empty database; the schema is created by the pipeline itself.
pub(crate) async fn fresh_pipeline(prefix: &str) -> (Pipeline, String) {
    let database = fresh_database(prefix);
    let pipeline = Pipeline::new(DecodeOptions::default(), Warehouse::new(&settings(&database)));
    (migrated(pipeline).await, database)
}

/// `pipeline` with its schema created by itself.
pub(crate) async fn migrated(pipeline: Pipeline) -> Pipeline {
    pipeline.migrate(deadline()).await.unwrap_or_else(|e| {
        panic!("ClickHouse at {} must be running (scripts/clickhouse.sh start): {e}", clickhouse_url())
    });
    pipeline
}

pub(crate) async fn drop_database(database: &str) {
    let warehouse = Warehouse::new(&settings("default"));
    warehouse.execute(&format!("DROP DATABASE IF EXISTS {database}")).await.expect("drop database");
}

pub(crate) fn message(id: impl Into<String>, body: impl Into<String>) -> Message {
    Message {
        id: MessageId::new(id).expect("non-empty id"),
        body: body.into(),
        receive_count: 1,
        group_id: None,
        receipt_handle: None,
        source_arn: None,
        sent_at_ms: None,
    }
}

/// Debezium's precise decimal: base64 of the big-endian two's-complement unscaled integer.
pub(crate) fn debezium_decimal(unscaled: i64) -> String {
    let bytes = unscaled.to_be_bytes();
    // Minimal two's-complement form, as Java's BigInteger.toByteArray() gives.
    let mut start = 0;
    while start < 7 {
        let (b, next) = (bytes[start], bytes[start + 1]);
        let redundant = (b == 0x00 && next & 0x80 == 0) || (b == 0xff && next & 0x80 != 0);
        if !redundant {
            break;
        }
        start += 1;
    }
    base64::engine::general_purpose::STANDARD.encode(&bytes[start..])
}

pub(crate) fn iso(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us).expect("valid instant").format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Source rows of the modelled sales database.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Customer {
    pub id: i64,
    pub email: String,
    pub name: String,
    pub country: String,
    pub city: String,
    pub created_at_us: i64,
}
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Product {
    pub id: i64,
    pub name: String,
    pub category: String,
    pub price_cents: i64,
    pub created_at_us: i64,
}
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Order {
    pub id: i64,
    pub customer_id: i64,
    pub order_date_us: i64,
    pub status: String,
    pub total_cents: i64,
}
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Item {
    pub id: i64,
    pub order_id: i64,
    pub product_id: i64,
    pub quantity: i32,
    pub price_cents: i64,
}

impl Customer {
    pub(crate) fn json(&self) -> Json {
        json!({"id": self.id, "email": self.email, "name": self.name, "country": self.country, "city": self.city, "created_at": iso(self.created_at_us)})
    }
}
impl Product {
    pub(crate) fn json(&self) -> Json {
        json!({"id": self.id, "name": self.name, "category": self.category, "price": debezium_decimal(self.price_cents), "created_at": iso(self.created_at_us)})
    }
}
impl Order {
    pub(crate) fn json(&self) -> Json {
        json!({"id": self.id, "customer_id": self.customer_id, "order_date": iso(self.order_date_us), "status": self.status, "total": debezium_decimal(self.total_cents)})
    }
}
impl Item {
    pub(crate) fn json(&self) -> Json {
        json!({"id": self.id, "order_id": self.order_id, "product_id": self.product_id, "quantity": self.quantity, "price": debezium_decimal(self.price_cents)})
    }
}

/// The commit time (`source.ts_ms`) of the modelled change at `lsn`, in ms: one ms per position,
/// so commit times follow positions and no two changes share one.
fn commit_ms(lsn: u64) -> u64 {
    1_704_067_200_000u64 + lsn
}

/// [`commit_ms`] in µs, as the decoder reads it.
pub(crate) fn commit_us(lsn: u64) -> i64 {
    commit_ms(lsn) as i64 * 1000
}

/// A Debezium PostgreSQL event without the schema envelope (`schemas.enable=false`).
pub(crate) fn debezium_body(table: &str, op: &str, before: Option<Json>, after: Option<Json>, lsn: u64) -> String {
    let ts_ms = commit_ms(lsn);
    json!({
        "before": before,
        "after": after,
        "source": {"version": "2.5.0.Final", "connector": "postgresql", "name": "oltp", "ts_ms": ts_ms,
                   "snapshot": "false", "db": "oltp", "schema": "public", "table": table,
                   "txId": 1000 + lsn, "lsn": lsn},
        "op": op,
        "ts_ms": ts_ms + 5,
    })
    .to_string()
}

/// The source database: current rows, and the change events that led there.
#[derive(Debug, Default, Clone)]
pub(crate) struct SourceDb {
    pub customers: BTreeMap<i64, Customer>,
    pub products: BTreeMap<i64, Product>,
    pub orders: BTreeMap<i64, Order>,
    pub items: BTreeMap<i64, Item>,
    pub events: Vec<String>,
    pub lsn: u64,
    /// While set, new rows are emitted as snapshot reads (`op` = `r`).
    pub snapshot: bool,
    /// While set, an update that leaves a customer's or product's `name` as it was sends it as
    /// PostgreSQL sends an unchanged TOASTed value: Debezium's placeholder.
    pub toast: bool,
    /// Every change emitted, in source order (the history tests' oracle).
    pub log: Vec<Logged>,
    /// The four tables after each change, with that change's commit time in µs.
    pub timeline: Vec<(i64, SourceDb)>,
}

/// One change as the source committed it.
#[derive(Debug, Clone)]
pub(crate) struct Logged {
    pub table: String,
    /// `None` for a truncation.
    pub key: Option<i64>,
    /// The version the processor gives it: the position, 1 for a snapshot read.
    pub version: u64,
    pub commit_us: i64,
    pub deleted: bool,
    pub after: Option<Json>,
}

impl SourceDb {
    fn next_lsn(&mut self) -> u64 {
        // Real LSNs are large and sparse; the gaps do not matter, monotonicity does.
        self.lsn += 1 + (self.lsn % 7) * 13;
        33_000_000 + self.lsn
    }

    fn op_for(&self, exists: bool) -> &'static str {
        match (exists, self.snapshot) {
            (true, _) => "u",
            (false, true) => "r",
            (false, false) => "c",
        }
    }

    /// The position the next change will get.
    pub(crate) fn peek_lsn(&self) -> u64 {
        let mut copy = self.clone();
        copy.next_lsn()
    }

    fn emit(&mut self, table: &str, op: &str, before: Option<Json>, after: Option<Json>) {
        self.emit_as(table, op, before, after.clone(), after);
    }

    /// Emits `wire` as the event's after image; the log keeps the row as it is (`after`).
    fn emit_as(&mut self, table: &str, op: &str, before: Option<Json>, wire: Option<Json>, after: Option<Json>) {
        let lsn = self.next_lsn();
        let key = after.as_ref().or(before.as_ref()).and_then(|row| row["id"].as_i64());
        let version = if op == "r" { 1 } else { lsn };
        let logged = Logged { table: table.into(), key, version, commit_us: commit_us(lsn), deleted: op == "d", after };
        self.log.push(logged);
        self.events.push(debezium_body(table, op, before, wire, lsn));
    }

    /// The four tables as they are now (no events, log or timeline).
    pub(crate) fn tables(&self) -> SourceDb {
        SourceDb {
            customers: self.customers.clone(),
            products: self.products.clone(),
            orders: self.orders.clone(),
            items: self.items.clone(),
            ..SourceDb::default()
        }
    }

    /// Records the tables after the change just emitted.
    fn record(&mut self) {
        let at = commit_us(33_000_000 + self.lsn);
        let tables = self.tables();
        self.timeline.push((at, tables));
    }

    /// The tables as of `at_us`: after every change committed by then.
    pub(crate) fn as_of(&self, at_us: i64) -> SourceDb {
        self.timeline.iter().rev().find(|(t, _)| *t <= at_us).map(|(_, db)| db.clone()).unwrap_or_default()
    }

    /// Forgets the changes so far (rows that existed before the capture began).
    pub(crate) fn forget_events(&mut self) {
        self.events.clear();
        self.log.clear();
        self.timeline.clear();
    }

    /// A create (an update if the row exists; a read while `snapshot`) of `row` in `table`;
    /// `unchanged_name`: an update sends `name` as a TOAST placeholder (with `toast`).
    fn upsert<R>(
        &mut self,
        table: &str,
        rows: fn(&mut Self) -> &mut BTreeMap<i64, R>,
        id: i64,
        after: Json,
        row: R,
        unchanged_name: bool,
    ) {
        let exists = rows(self).contains_key(&id);
        let op = self.op_for(exists);
        let before = (op == "u").then(|| json!({"id": id}));
        let mut wire = after.clone();
        if op == "u" && self.toast && unchanged_name {
            wire["name"] = json!("__debezium_unavailable_value");
        }
        self.emit_as(table, op, before, Some(wire), Some(after));
        rows(self).insert(id, row);
        self.record();
    }

    pub(crate) fn upsert_customer(&mut self, c: Customer) {
        let unchanged = self.customers.get(&c.id).is_some_and(|old| old.name == c.name);
        self.upsert("customers", |db| &mut db.customers, c.id, c.json(), c, unchanged);
    }
    pub(crate) fn upsert_product(&mut self, p: Product) {
        let unchanged = self.products.get(&p.id).is_some_and(|old| old.name == p.name);
        self.upsert("products", |db| &mut db.products, p.id, p.json(), p, unchanged);
    }
    pub(crate) fn upsert_order(&mut self, o: Order) {
        self.upsert("orders", |db| &mut db.orders, o.id, o.json(), o, false);
    }
    pub(crate) fn upsert_item(&mut self, i: Item) {
        self.upsert("order_items", |db| &mut db.items, i.id, i.json(), i, false);
    }
    pub(crate) fn delete(&mut self, table: &str, id: i64) {
        let existed = match table {
            "customers" => self.customers.remove(&id).is_some(),
            "products" => self.products.remove(&id).is_some(),
            "orders" => self.orders.remove(&id).is_some(),
            "order_items" => self.items.remove(&id).is_some(),
            _ => false,
        };
        if existed {
            self.emit(table, "d", Some(json!({"id": id})), None);
            self.record();
            // The tombstone that follows a delete: an empty body.
            self.events.push(String::new());
        }
    }
    /// Debezium's initial snapshot of `state` (this database as it was when the snapshot's
    /// transaction began): every row read at one position, the next one, `op` = `r`.
    pub(crate) fn snapshot_of(&mut self, state: &SourceDb) {
        let lsn = self.next_lsn();
        let rows = state.customers.values().map(|r| ("customers", r.json()));
        let rows = rows.chain(state.products.values().map(|r| ("products", r.json())));
        let rows = rows.chain(state.orders.values().map(|r| ("orders", r.json())));
        let rows = rows.chain(state.items.values().map(|r| ("order_items", r.json())));
        for (table, after) in rows {
            let key = after["id"].as_i64();
            let logged = Logged {
                table: table.into(),
                key,
                version: 1,
                commit_us: commit_us(lsn),
                deleted: false,
                after: Some(after.clone()),
            };
            self.log.push(logged);
            let body = debezium_body(table, "r", None, Some(after), lsn)
                .replace(r#""snapshot":"false""#, r#""snapshot":"true""#);
            self.events.push(body);
        }
        self.record();
    }
    pub(crate) fn truncate(&mut self, table: &str) {
        match table {
            "customers" => self.customers.clear(),
            "products" => self.products.clear(),
            "orders" => self.orders.clear(),
            "order_items" => self.items.clear(),
            _ => {}
        }
        self.emit(table, "t", None, None);
        self.record();
    }

    /// The oracle: the inner join over the current rows, as comparable facts.
    pub(crate) fn expected_facts(&self) -> BTreeMap<i64, Fact> {
        let mut out = BTreeMap::new();
        for item in self.items.values() {
            let Some(order) = self.orders.get(&item.order_id) else { continue };
            let Some(customer) = self.customers.get(&order.customer_id) else { continue };
            let Some(product) = self.products.get(&item.product_id) else { continue };
            out.insert(
                item.id,
                Fact {
                    order_item_id: item.id,
                    order_id: order.id,
                    customer_id: customer.id,
                    product_id: product.id,
                    quantity: item.quantity,
                    unit_price: i128::from(item.price_cents) * 10_000,
                    revenue: i128::from(item.quantity) * i128::from(item.price_cents) * 10_000,
                    order_status: order.status.clone(),
                    order_date_s: order.order_date_us.div_euclid(1_000_000),
                    customer_name: customer.name.clone(),
                    customer_country: customer.country.clone(),
                    customer_city: customer.city.clone(),
                    product_name: product.name.clone(),
                    product_category: product.category.clone(),
                },
            );
        }
        out
    }
}

/// A current `sales_fact` row, compared at second resolution for `order_date` (the old server's
/// `DateTime` holds seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fact {
    pub order_item_id: i64,
    pub order_id: i64,
    pub customer_id: i64,
    pub product_id: i64,
    pub quantity: i32,
    pub unit_price: i128,
    pub revenue: i128,
    pub order_status: String,
    pub order_date_s: i64,
    pub customer_name: String,
    pub customer_country: String,
    pub customer_city: String,
    pub product_name: String,
    pub product_category: String,
}

/// `SELECT … FROM sales_fact FINAL WHERE _is_deleted = 0`, the contract's current state.
pub(crate) async fn current_facts(warehouse: &Warehouse) -> BTreeMap<i64, Fact> {
    let from = format!("{}.sales_fact FINAL WHERE _is_deleted = 0", warehouse.database());
    facts_from(warehouse, &from).await
}

/// The facts `FROM {from}` selects (a table or view with `sales_fact`'s columns, and a filter).
pub(crate) async fn facts_from(warehouse: &Warehouse, from: &str) -> BTreeMap<i64, Fact> {
    let dialect = warehouse.dialect().await.expect("dialect");
    let seconds = match dialect {
        Dialect::Modern => "toInt64(toUnixTimestamp(order_date))",
        Dialect::Legacy => "toInt64(toUInt32(order_date))",
    };
    let sql = format!(
        "SELECT order_item_id, order_id, customer_id, product_id, quantity, toString(unit_price), toString(revenue), \
         toString(order_status), {seconds}, customer_name, toString(customer_country), toString(customer_city), \
         product_name, toString(product_category) FROM {from} ORDER BY order_item_id"
    );
    let text = warehouse.fetch_tsv(&sql).await.expect("read sales_fact");
    text.lines()
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            assert_eq!(f.len(), 14, "sales_fact row");
            let int = |i: usize| f[i].parse::<i64>().expect("integer");
            let fact = Fact {
                order_item_id: int(0),
                order_id: int(1),
                customer_id: int(2),
                product_id: int(3),
                quantity: f[4].parse().expect("quantity"),
                unit_price: unscaled(f[5]),
                revenue: unscaled(f[6]),
                order_status: unescape(f[7]),
                order_date_s: int(8),
                customer_name: unescape(f[9]),
                customer_country: unescape(f[10]),
                customer_city: unescape(f[11]),
                product_name: unescape(f[12]),
                product_category: unescape(f[13]),
            };
            (fact.order_item_id, fact)
        })
        .collect()
}

/// A decimal's text (`-12.5`, `7.000000`) as its unscaled integer at scale 6.
fn unscaled(text: &str) -> i128 {
    let (negative, digits) = text.strip_prefix('-').map_or((false, text), |rest| (true, rest));
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    assert!(fraction.len() <= 6, "decimal {text} has more than 6 places");
    let value: i128 = format!("{whole}{fraction:0<6}").parse().expect("decimal");
    if negative { -value } else { value }
}

/// A TabSeparated field's text (backslash escapes undone).
fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        out.push(match (c, c == '\\') {
            (_, false) => c,
            (_, true) => match chars.next() {
                Some('t') => '\t',
                Some('n') => '\n',
                Some('r') => '\r',
                Some('0') => '\0',
                Some(other) => other,
                None => '\\',
            },
        });
    }
    out
}

/// Differences between the current facts and the oracle: (missing, extra, wrong).
pub(crate) fn diff(expected: &BTreeMap<i64, Fact>, actual: &BTreeMap<i64, Fact>) -> (usize, usize, usize) {
    let missing = expected.keys().filter(|k| !actual.contains_key(k)).count();
    let extra = actual.keys().filter(|k| !expected.contains_key(k)).count();
    let wrong = expected.iter().filter(|(k, v)| actual.get(k).is_some_and(|a| a != *v)).count();
    (missing, extra, wrong)
}

/// Runs one batch of bodies through the pipeline (no systemic fault expected).
pub(crate) async fn run(pipeline: &Pipeline, bodies: &[String]) -> Vec<MessageReport> {
    let messages: Vec<Message> = bodies.iter().enumerate().map(|(i, b)| message(format!("m{i}"), b.clone())).collect();
    pipeline.process(&messages, deadline()).await.expect("no systemic fault of the whole batch")
}

pub(crate) fn assert_all_ok(reports: &[MessageReport]) {
    for (i, r) in reports.iter().enumerate() {
        assert!(!r.outcome.is_failure(), "message {i} failed: {:?}", r.outcome);
    }
}

/// A query's TabSeparated result; `DB.` stands for the pipeline's database. Decimals are best read
/// as `toFloat64(...)`: 18.16 prints `Decimal(38, 6)` with all six digits, current servers without
/// trailing zeros.
pub(crate) async fn tsv(pipeline: &Pipeline, sql: &str) -> String {
    let sql = sql.replace("DB.", &format!("{}.", pipeline.warehouse().database()));
    pipeline.warehouse().fetch_tsv(&sql).await.expect("query")
}

pub(crate) const RAW: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/realworld/raw/");

/// The real-world captures live beside the project (`../shared/realworld/raw/`), never in it:
/// CI always has them; a clone without them skips these tests and says why.
pub(crate) fn captures_present() -> bool {
    let present = std::path::Path::new(RAW).is_dir();
    if !present {
        eprintln!("skipped: {RAW} is absent (the real-world captures are not part of a clone; CI has them)");
    }
    present
}

/// The capture files' names, sorted.
pub(crate) fn raw_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(RAW)
        .unwrap_or_else(|e| panic!("{RAW}: {e}"))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

pub(crate) fn raw(name: &str) -> String {
    std::fs::read_to_string(format!("{RAW}{name}")).unwrap_or_else(|e| panic!("{name}: {e}"))
}
