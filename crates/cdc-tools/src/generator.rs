//! Traffic generator for the seeds' sales schema (customers, products, orders, order_items), in
//! the manner of seed 003's database mutator, but for all four tables.
//!
//! Enters: a PostgreSQL connection, a seed, a rate. Leaves: committed transactions in the source
//! database: inserts (new customers, products, orders with their items), updates (order status
//! moves, product price changes and renames, customer city moves and renames, item quantity
//! changes) and deletes (items, whole orders, orders that orphan their items, customers, products)
//! on every table. Each transaction commits a few related statements in one round trip.
//!
//! The sequence of operations is a pure function of `--seed` and the rows present at start;
//! timestamps are the database's `now()`. Ids are chosen by the generator (max + 1), so the
//! same seed against the same starting state issues the same statements. Rows with ids at or above
//! [`RESERVED_ID_BASE`] are never touched: the freshness probe owns them.

use std::time::{Duration, Instant};

use anyhow::Context;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::postgres::{DEFAULT_PG_URL, connect};

/// Ids from here up belong to probes (see `freshness`), never to generated traffic.
pub(crate) const RESERVED_ID_BASE: i64 = 9_000_000_000;

/// The source schema, idempotent (CREATE TABLE IF NOT EXISTS ...).
pub const SOURCE_SCHEMA_SQL: &str = include_str!("../sql/source_schema.sql");

/// `cdc-tools generate`: realistic traffic on the four source tables.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[arg(long, env = "CDC_PG_URL", default_value = DEFAULT_PG_URL, hide_env_values = true)]
    pub(crate) pg_url: String,
    /// Seed of the operation sequence.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Transactions per second (0 = as fast as possible).
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Seconds of traffic after the bootstrap.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) duration: f64,
    /// Stop after this many transactions (besides --duration).
    #[arg(long)]
    max_transactions: Option<u64>,
    /// Starting population, created when the tables hold fewer customers than this.
    #[arg(long, default_value_t = 200)]
    pub(crate) customers: usize,
    #[arg(long, default_value_t = 100)]
    pub(crate) products: usize,
    #[arg(long, default_value_t = 300)]
    pub(crate) orders: usize,
    /// Apply sql/source_schema.sql first (idempotent).
    #[arg(long)]
    init_schema: bool,
    /// Include TRUNCATE of order_items (rare and destructive; off by default).
    #[arg(long)]
    pub(crate) truncate: bool,
}

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct GeneratorStats {
    bootstrap_transactions: u64,
    transactions: u64,
    statements: u64,
    inserts: u64,
    updates: u64,
    deletes: u64,
    truncates: u64,
    pub(crate) seconds: f64,
    /// Largest delay behind the rate schedule, seconds.
    max_lag: f64,
}

impl GeneratorStats {
    fn transactions_per_second(&self) -> f64 {
        if self.seconds > 0.0 { self.transactions as f64 / self.seconds } else { 0.0 }
    }
}

const COUNTRIES: &[(&str, &[&str])] = &[
    ("US", &["New York", "Chicago", "Austin", "Seattle", "Denver"]),
    ("DE", &["Berlin", "Hamburg", "Munich", "Cologne"]),
    ("FR", &["Paris", "Lyon", "Marseille"]),
    ("GB", &["London", "Leeds", "Bristol"]),
    ("JP", &["Tokyo", "Osaka", "Kyoto"]),
    ("BR", &["São Paulo", "Rio de Janeiro", "Curitiba"]),
    ("IN", &["Mumbai", "Bengaluru", "Delhi"]),
];
const FIRST: &[&str] = &[
    "Ana", "Ben", "Chloé", "Dev", "Emma", "Felix", "Grace", "Hiro", "Ines", "Jonas", "Kai", "Lena", "Mateo", "Nora",
    "O'Neil",
];
const LAST: &[&str] =
    &["Smith", "Müller", "Dubois", "Tanaka", "Silva", "Patel", "Brown", "Rossi", "Kowalski", "Nakamura"];
const CATEGORIES: &[&str] = &["Electronics", "Books", "Garden", "Toys", "Grocery", "Sports", "Beauty"];
const ADJECTIVES: &[&str] = &["Classic", "Smart", "Eco", "Deluxe", "Compact", "Pro", "Ultra", "Mini"];
const NOUNS: &[&str] =
    &["Lamp", "Kettle", "Novel", "Drone", "Shovel", "Puzzle", "Racket", "Serum", "Headphones", "Blender"];
const STATUSES: &[&str] = &["pending", "paid", "shipped", "delivered"];

/// The generator's view of the source rows it may touch.
struct State {
    rng: StdRng,
    customers: Vec<i64>,
    products: Vec<(i64, i64)>, // (id, price in cents)
    orders: Vec<i64>,
    /// (item id, order id, product id, quantity, price in cents)
    items: Vec<(i64, i64, i64, i32, i64)>,
    next_customer: i64,
    next_product: i64,
    next_order: i64,
    next_item: i64,
    status: std::collections::HashMap<i64, usize>,
}

/// One transaction's statements and what they count as.
#[derive(Default)]
struct Tx {
    sql: String,
    inserts: u64,
    updates: u64,
    deletes: u64,
    truncates: u64,
}

impl Tx {
    fn push(&mut self, stmt: String) {
        self.sql.push_str(&stmt);
        self.sql.push_str(";\n");
    }
    fn statements(&self) -> u64 {
        self.inserts + self.updates + self.deletes + self.truncates
    }
}

fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn money(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", cents.abs() / 100, cents.abs() % 100)
}

impl State {
    /// A random index below `len`, or None when there are fewer than `fewest` (at least one) to
    /// pick from (the caller then makes a new order instead); draws from `rng` only when it picks,
    /// so the sequence of a seed does not change.
    fn pick_index(rng: &mut StdRng, len: usize, fewest: usize) -> Option<usize> {
        if len < fewest.max(1) { None } else { Some(rng.random_range(0..len)) }
    }

    fn pick<'a, T>(rng: &mut StdRng, v: &'a [T]) -> Option<&'a T> {
        Self::pick_index(rng, v.len(), 1).and_then(|i| v.get(i))
    }

    fn new_customer(&mut self, tx: &mut Tx) -> i64 {
        let id = self.next_customer;
        self.next_customer += 1;
        let first = FIRST[self.rng.random_range(0..FIRST.len())];
        let last = LAST[self.rng.random_range(0..LAST.len())];
        let (country, cities) = COUNTRIES[self.rng.random_range(0..COUNTRIES.len())];
        let city = cities[self.rng.random_range(0..cities.len())];
        let email = format!("{}.{}{}@example.com", first.to_lowercase().replace('\'', ""), last.to_lowercase(), id);
        tx.push(format!(
            "INSERT INTO customers (id, email, name, country, city, created_at) VALUES ({id}, {}, {}, {}, {}, now())",
            lit(&email),
            lit(&format!("{first} {last}")),
            lit(country),
            lit(city)
        ));
        tx.inserts += 1;
        self.customers.push(id);
        id
    }

    fn new_product(&mut self, tx: &mut Tx) -> i64 {
        let id = self.next_product;
        self.next_product += 1;
        let name = format!(
            "{} {}",
            ADJECTIVES[self.rng.random_range(0..ADJECTIVES.len())],
            NOUNS[self.rng.random_range(0..NOUNS.len())]
        );
        let category = CATEGORIES[self.rng.random_range(0..CATEGORIES.len())];
        let cents = self.rng.random_range(199..50_000i64);
        tx.push(format!(
            "INSERT INTO products (id, name, category, price, created_at) VALUES ({id}, {}, {}, {}, now())",
            lit(&name),
            lit(category),
            money(cents)
        ));
        tx.inserts += 1;
        self.products.push((id, cents));
        id
    }

    /// A new order with 1-4 items (and sometimes a new customer placing it).
    fn new_order(&mut self, tx: &mut Tx) {
        let customer = if self.customers.is_empty() || self.rng.random_bool(0.05) {
            self.new_customer(tx)
        } else {
            *Self::pick(&mut self.rng, &self.customers).unwrap_or(&0)
        };
        if self.products.is_empty() {
            self.new_product(tx);
        }
        let order = self.next_order;
        self.next_order += 1;
        let n = self.rng.random_range(1..=4);
        let mut lines = Vec::with_capacity(n);
        let mut total = 0i64;
        for _ in 0..n {
            let &(product, cents) = Self::pick(&mut self.rng, &self.products).unwrap_or(&(0, 0));
            let quantity = self.rng.random_range(1..=5i32);
            total += cents * i64::from(quantity);
            let item = self.next_item;
            self.next_item += 1;
            lines.push((item, order, product, quantity, cents));
        }
        tx.push(format!(
            "INSERT INTO orders (id, customer_id, order_date, status, total) VALUES ({order}, {customer}, now(), 'pending', {})",
            money(total)
        ));
        tx.inserts += 1;
        let values: Vec<String> =
            lines.iter().map(|(i, o, p, q, c)| format!("({i}, {o}, {p}, {q}, {})", money(*c))).collect();
        tx.push(format!(
            "INSERT INTO order_items (id, order_id, product_id, quantity, price) VALUES {}",
            values.join(", ")
        ));
        tx.inserts += lines.len() as u64;
        self.orders.push(order);
        self.status.insert(order, 0);
        self.items.extend(lines);
    }

    fn recompute_total(&self, tx: &mut Tx, order: i64) {
        tx.push(format!(
            "UPDATE orders SET total = coalesce((SELECT sum(quantity * price) FROM order_items WHERE order_id = {order}), 0) WHERE id = {order}"
        ));
        tx.updates += 1;
    }

    fn one(&mut self, tx: &mut Tx, truncate: bool) {
        let roll = self.rng.random_range(0..1000u32);
        match roll {
            0..=379 => self.new_order(tx),
            380..=579 => {
                // Status moves forward; a few orders are cancelled.
                let Some(&order) = Self::pick(&mut self.rng, &self.orders) else { return self.new_order(tx) };
                let stage = self.status.get(&order).copied().unwrap_or(0);
                let status = if self.rng.random_bool(0.08) {
                    "cancelled"
                } else {
                    STATUSES[(stage + 1).min(STATUSES.len() - 1)]
                };
                self.status.insert(order, (stage + 1).min(STATUSES.len() - 1));
                tx.push(format!("UPDATE orders SET status = {} WHERE id = {order}", lit(status)));
                tx.updates += 1;
            }
            580..=669 => {
                // Quantity change on an item, and the order total with it.
                let Some(idx) = Self::pick_index(&mut self.rng, self.items.len(), 1) else { return self.new_order(tx) };
                let quantity = self.rng.random_range(1..=9i32);
                self.items[idx].3 = quantity;
                let (item, order, ..) = self.items[idx];
                tx.push(format!("UPDATE order_items SET quantity = {quantity} WHERE id = {item}"));
                tx.updates += 1;
                self.recompute_total(tx, order);
            }
            670..=739 => {
                // Price change (new orders use it; existing items keep their price).
                let Some(idx) = Self::pick_index(&mut self.rng, self.products.len(), 1) else {
                    return self.new_order(tx);
                };
                let pct = self.rng.random_range(-20..=25i64);
                let cents = (self.products[idx].1 * (100 + pct) / 100).max(99);
                self.products[idx].1 = cents;
                tx.push(format!("UPDATE products SET price = {} WHERE id = {}", money(cents), self.products[idx].0));
                tx.updates += 1;
            }
            740..=769 => {
                // Rename or re-categorize a product: reaches every sale of it downstream.
                let Some(&(product, _)) = Self::pick(&mut self.rng, &self.products) else { return self.new_order(tx) };
                if self.rng.random_bool(0.5) {
                    let name = format!(
                        "{} {} v{}",
                        ADJECTIVES[self.rng.random_range(0..ADJECTIVES.len())],
                        NOUNS[self.rng.random_range(0..NOUNS.len())],
                        self.rng.random_range(2..10u32)
                    );
                    tx.push(format!("UPDATE products SET name = {} WHERE id = {product}", lit(&name)));
                } else {
                    let category = CATEGORIES[self.rng.random_range(0..CATEGORIES.len())];
                    tx.push(format!("UPDATE products SET category = {} WHERE id = {product}", lit(category)));
                }
                tx.updates += 1;
            }
            770..=839 => {
                // A customer moves city (sometimes country).
                let Some(&customer) = Self::pick(&mut self.rng, &self.customers) else { return self.new_order(tx) };
                let (country, cities) = COUNTRIES[self.rng.random_range(0..COUNTRIES.len())];
                let city = cities[self.rng.random_range(0..cities.len())];
                tx.push(format!(
                    "UPDATE customers SET city = {}, country = {} WHERE id = {customer}",
                    lit(city),
                    lit(country)
                ));
                tx.updates += 1;
            }
            840..=869 => {
                let Some(&customer) = Self::pick(&mut self.rng, &self.customers) else { return self.new_order(tx) };
                let name = format!(
                    "{} {}",
                    FIRST[self.rng.random_range(0..FIRST.len())],
                    LAST[self.rng.random_range(0..LAST.len())]
                );
                tx.push(format!("UPDATE customers SET name = {} WHERE id = {customer}", lit(&name)));
                tx.updates += 1;
            }
            870..=899 => {
                self.new_customer(tx);
            }
            900..=919 => {
                self.new_product(tx);
            }
            920..=949 => {
                // Remove one item from an order.
                let Some(idx) = Self::pick_index(&mut self.rng, self.items.len(), 1) else { return self.new_order(tx) };
                let (item, order, ..) = self.items.swap_remove(idx);
                tx.push(format!("DELETE FROM order_items WHERE id = {item}"));
                tx.deletes += 1;
                self.recompute_total(tx, order);
            }
            950..=974 => {
                // Delete a whole order with its items; one in five orphans its items instead.
                let Some(idx) = Self::pick_index(&mut self.rng, self.orders.len(), 1) else {
                    return self.new_order(tx);
                };
                let order = self.orders.swap_remove(idx);
                self.status.remove(&order);
                if self.rng.random_bool(0.8) {
                    tx.push(format!("DELETE FROM order_items WHERE order_id = {order}"));
                    tx.deletes += 1;
                    self.items.retain(|i| i.1 != order);
                }
                tx.push(format!("DELETE FROM orders WHERE id = {order}"));
                tx.deletes += 1;
            }
            975..=986 => {
                // A customer leaves; their orders stay (no foreign keys), orphaned.
                let Some(idx) = Self::pick_index(&mut self.rng, self.customers.len(), 10) else {
                    return self.new_order(tx);
                };
                let customer = self.customers.swap_remove(idx);
                tx.push(format!("DELETE FROM customers WHERE id = {customer}"));
                tx.deletes += 1;
            }
            987..=998 => {
                // A product is withdrawn; its past sales are orphaned.
                let Some(idx) = Self::pick_index(&mut self.rng, self.products.len(), 10) else {
                    return self.new_order(tx);
                };
                let (product, _) = self.products.swap_remove(idx);
                tx.push(format!("DELETE FROM products WHERE id = {product}"));
                tx.deletes += 1;
            }
            _ => {
                if truncate {
                    tx.push("TRUNCATE order_items".to_string());
                    tx.truncates += 1;
                    self.items.clear();
                } else {
                    self.new_order(tx);
                }
            }
        }
    }
}

/// Applies sql/source_schema.sql (idempotent).
async fn apply_schema(pg: &tokio_postgres::Client) -> anyhow::Result<()> {
    pg.batch_execute("SET client_min_messages = warning").await?;
    pg.batch_execute(SOURCE_SCHEMA_SQL).await.context("applying sql/source_schema.sql")?;
    Ok(())
}

async fn load_state(pg: &tokio_postgres::Client, seed: u64) -> anyhow::Result<State> {
    let ids = |sql: &'static str| async move {
        let rows = pg.query(sql, &[&RESERVED_ID_BASE]).await?;
        anyhow::Ok(rows.iter().map(|r| r.get::<_, i64>(0)).collect::<Vec<i64>>())
    };
    let customers = ids("SELECT id FROM customers WHERE id < $1 ORDER BY id").await?;
    let orders = ids("SELECT id FROM orders WHERE id < $1 ORDER BY id").await?;
    let products = pg
        .query(
            "SELECT id, coalesce((price * 100)::bigint, 0) FROM products WHERE id < $1 ORDER BY id",
            &[&RESERVED_ID_BASE],
        )
        .await?
        .iter()
        .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1)))
        .collect::<Vec<_>>();
    let items = pg
        .query(
            "SELECT id, coalesce(order_id, 0), coalesce(product_id, 0), coalesce(quantity, 0), coalesce((price * 100)::bigint, 0) \
             FROM order_items WHERE id < $1 ORDER BY id",
            &[&RESERVED_ID_BASE],
        )
        .await?
        .iter()
        .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1), r.get::<_, i64>(2), r.get::<_, i32>(3), r.get::<_, i64>(4)))
        .collect::<Vec<_>>();
    let next = |sql: &'static str| async move {
        let row = pg.query_one(sql, &[&RESERVED_ID_BASE]).await?;
        anyhow::Ok(row.get::<_, i64>(0) + 1)
    };
    Ok(State {
        rng: StdRng::seed_from_u64(seed),
        next_customer: next("SELECT coalesce(max(id), 0) FROM customers WHERE id < $1").await?,
        next_product: next("SELECT coalesce(max(id), 0) FROM products WHERE id < $1").await?,
        next_order: next("SELECT coalesce(max(id), 0) FROM orders WHERE id < $1").await?,
        next_item: next("SELECT coalesce(max(id), 0) FROM order_items WHERE id < $1").await?,
        status: orders.iter().map(|&o| (o, 0)).collect(),
        customers,
        products,
        orders,
        items,
    })
}

async fn commit(pg: &tokio_postgres::Client, tx: &Tx, stats: &mut GeneratorStats) -> anyhow::Result<()> {
    if tx.sql.is_empty() {
        return Ok(());
    }
    // One round trip: the simple-query protocol runs the whole block as one transaction.
    pg.batch_execute(&format!("BEGIN;\n{}COMMIT;", tx.sql)).await.context("generated transaction failed")?;
    stats.statements += tx.statements();
    stats.inserts += tx.inserts;
    stats.updates += tx.updates;
    stats.deletes += tx.deletes;
    stats.truncates += tx.truncates;
    Ok(())
}

/// Bootstraps the population, then generates traffic; returns what it did.
pub(crate) async fn generate(args: Args) -> anyhow::Result<GeneratorStats> {
    let pg = connect(&args.pg_url).await?;
    if args.init_schema {
        apply_schema(&pg).await?;
    }
    let mut state = load_state(&pg, args.seed).await?;
    let mut stats = GeneratorStats::default();

    // Bootstrap in a few large transactions.
    while state.customers.len() < args.customers || state.products.len() < args.products {
        let mut tx = Tx::default();
        for _ in 0..200 {
            if state.customers.len() < args.customers {
                state.new_customer(&mut tx);
            }
            if state.products.len() < args.products {
                state.new_product(&mut tx);
            }
        }
        commit(&pg, &tx, &mut stats).await?;
        stats.bootstrap_transactions += 1;
    }
    while state.orders.len() < args.orders {
        let mut tx = Tx::default();
        for _ in 0..100 {
            if state.orders.len() < args.orders {
                state.new_order(&mut tx);
            }
        }
        commit(&pg, &tx, &mut stats).await?;
        stats.bootstrap_transactions += 1;
    }

    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.duration.max(0.0));
    let interval = if args.rate > 0.0 { Some(Duration::from_secs_f64(1.0 / args.rate)) } else { None };
    let mut n: u64 = 0;
    loop {
        if Instant::now() >= deadline || args.max_transactions.is_some_and(|m| n >= m) {
            break;
        }
        if let Some(interval) = interval {
            let due = started + interval.mul_f64(n as f64);
            let now = Instant::now();
            if due > now {
                tokio::time::sleep(due - now).await;
            } else {
                stats.max_lag = stats.max_lag.max((now - due).as_secs_f64());
            }
        }
        let mut tx = Tx::default();
        state.one(&mut tx, args.truncate);
        commit(&pg, &tx, &mut stats).await?;
        stats.transactions += 1;
        n += 1;
    }
    stats.seconds = started.elapsed().as_secs_f64();
    Ok(stats)
}

/// `cdc-tools generate`: runs, then prints one summary line.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let stats = generate(args).await?;
    println!(
        "generate: {} transactions in {:.1} s ({:.0}/s, max lag {:.3} s), {} statements: {} inserts, {} updates, {} deletes, {} truncates; {} bootstrap transactions",
        stats.transactions,
        stats.seconds,
        stats.transactions_per_second(),
        stats.max_lag,
        stats.statements,
        stats.inserts,
        stats.updates,
        stats.deletes,
        stats.truncates,
        stats.bootstrap_transactions
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty(seed: u64) -> State {
        State {
            rng: StdRng::seed_from_u64(seed),
            customers: vec![],
            products: vec![],
            orders: vec![],
            items: vec![],
            next_customer: 1,
            next_product: 1,
            next_order: 1,
            next_item: 1,
            status: Default::default(),
        }
    }

    fn script(seed: u64) -> (String, Tx) {
        let mut state = empty(seed);
        let mut all = Tx::default();
        for _ in 0..2000 {
            let mut tx = Tx::default();
            state.one(&mut tx, true);
            all.sql.push_str(&tx.sql);
            all.inserts += tx.inserts;
            all.updates += tx.updates;
            all.deletes += tx.deletes;
            all.truncates += tx.truncates;
        }
        (all.sql.clone(), all)
    }

    #[test]
    fn same_seed_same_statements() {
        assert_eq!(script(7).0, script(7).0);
        assert_ne!(script(7).0, script(8).0);
    }

    #[test]
    fn touches_every_table_with_every_kind_of_change() {
        let (sql, tx) = script(3);
        for table in ["customers", "products", "orders", "order_items"] {
            assert!(sql.contains(&format!("INSERT INTO {table} ")), "{table} insert");
            assert!(sql.contains(&format!("UPDATE {table} ")), "{table} update");
            assert!(sql.contains(&format!("DELETE FROM {table} ")), "{table} delete");
        }
        assert!(tx.updates > 0 && tx.deletes > 0 && tx.inserts > tx.deletes);
    }

    #[test]
    fn literals_are_escaped_and_money_is_exact() {
        assert_eq!(lit("O'Neil"), "'O''Neil'");
        assert_eq!(money(482), "4.82");
        assert_eq!(money(5), "0.05");
        assert_eq!(money(-100), "-1.00");
    }
}
