//! Decode throughput on one core: 10,000 realistic Debezium messages WITH schema blocks.
//!
//! Run: `cargo bench --bench decode`. The corpus is generated here: the four source tables,
//! each message shaped like the PostgreSQL connector's JSON-converter output (compact JSON,
//! full envelope schema with before/after/source/transaction blocks, ~3 KB), with varied values
//! and an op mix of 30% create, 45% update, 10% delete (key-only before), 15% snapshot read.
//! Prints MB/s (10^6 bytes) and events/s for: the warm schema cache (steady state), the same
//! bodies without schema blocks, and a cold decoder per pass (every schema parsed once).

use std::hint::black_box;
use std::time::{Duration, Instant};

use cdc_core::change::Decoded;
use cdc_core::decode::encoding::decimal_to_base64;
use cdc_core::decode::{DecodeOptions, Decoder};
use cdc_core::redact::{RedactionKey, Redactor, Rules};
use serde_json::{Value, json};

const MESSAGES: usize = 10_000;
const MIN_RUN: Duration = Duration::from_secs(3);

/// A small deterministic generator: the corpus is identical on every run.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

fn col(ty: &str, field: &str, optional: bool) -> Value {
    json!({"type": ty, "optional": optional, "field": field})
}

fn named(ty: &str, name: &str, field: &str) -> Value {
    json!({"type": ty, "optional": true, "name": name, "version": 1, "field": field})
}

fn money(field: &str) -> Value {
    json!({"type": "bytes", "optional": false, "name": "org.apache.kafka.connect.data.Decimal", "version": 1,
           "parameters": {"scale": "2", "connect.decimal.precision": "12"}, "field": field})
}

fn columns(table: &str) -> Vec<Value> {
    let zoned = "io.debezium.time.ZonedTimestamp";
    match table {
        "customers" => vec![
            json!({"type": "int64", "optional": false, "default": 0, "field": "id"}),
            col("string", "email", false),
            col("string", "name", true),
            col("string", "country", true),
            col("string", "city", true),
            named("string", zoned, "created_at"),
        ],
        "products" => vec![
            json!({"type": "int64", "optional": false, "default": 0, "field": "id"}),
            col("string", "name", false),
            col("string", "category", true),
            money("price"),
            named("string", zoned, "created_at"),
        ],
        "orders" => vec![
            json!({"type": "int64", "optional": false, "default": 0, "field": "id"}),
            col("int64", "customer_id", false),
            named("int64", "io.debezium.time.MicroTimestamp", "order_date"),
            col("string", "status", true),
            money("total"),
        ],
        _ => vec![
            json!({"type": "int64", "optional": false, "default": 0, "field": "id"}),
            col("int64", "order_id", false),
            col("int64", "product_id", false),
            col("int32", "quantity", false),
            money("price"),
        ],
    }
}

fn schema(table: &str) -> Value {
    let value_name = format!("dbserver1.public.{table}.Value");
    let source = vec![
        col("string", "version", false),
        col("string", "connector", false),
        col("string", "name", false),
        col("int64", "ts_ms", false),
        json!({"type": "string", "optional": true, "name": "io.debezium.data.Enum", "version": 1,
               "parameters": {"allowed": "true,first,first_in_data_collection,last_in_data_collection,last,false,incremental"},
               "default": "false", "field": "snapshot"}),
        col("string", "db", false),
        col("string", "sequence", true),
        col("int64", "ts_us", true),
        col("int64", "ts_ns", true),
        col("string", "schema", false),
        col("string", "table", false),
        col("int64", "txId", true),
        col("int64", "lsn", true),
        col("int64", "xmin", true),
    ];
    json!({"type": "struct", "fields": [
        {"type": "struct", "fields": columns(table), "optional": true, "name": value_name, "field": "before"},
        {"type": "struct", "fields": columns(table), "optional": true, "name": value_name, "field": "after"},
        {"type": "struct", "fields": source, "optional": false, "name": "io.debezium.connector.postgresql.Source", "field": "source"},
        {"type": "struct", "fields": [col("string", "id", false), col("int64", "total_order", false),
                                      col("int64", "data_collection_order", false)],
         "optional": true, "name": "event.block", "version": 1, "field": "transaction"},
        col("string", "op", false), col("int64", "ts_ms", true), col("int64", "ts_us", true), col("int64", "ts_ns", true)
    ], "optional": false, "name": format!("dbserver1.public.{table}.Envelope"), "version": 2})
}

fn iso(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .unwrap_or_default()
}

fn row(table: &str, id: u64, rng: &mut Lcg, ts_us: i64) -> Value {
    let first = ["Ana", "Bo", "Chen", "Dara", "Emeka", "Fatima", "Giulia", "Hiro", "Ines", "José"];
    let last = ["Souza", "Lindqvist", "Wang", "Okafor", "Rossi", "Tanaka", "García", "Müller", "Dubois"];
    let places = [
        ("BR", "São Paulo"),
        ("SE", "Göteborg"),
        ("CN", "Shanghai"),
        ("NG", "Lagos"),
        ("IT", "Milano"),
        ("JP", "Tōkyō"),
        ("ES", "Sevilla"),
        ("DE", "München"),
        ("FR", "Lyon"),
    ];
    let price = |rng: &mut Lcg| decimal_to_base64(i128::from(rng.below(500_000) + 99));
    match table {
        "customers" => {
            let (f, l) = (rng.pick(&first), rng.pick(&last));
            let (country, city) = places[rng.below(places.len() as u64) as usize];
            json!({"id": id, "email": format!("{}.{}{}@example.com", f.to_lowercase(), l.to_lowercase(), id),
                   "name": format!("{f} {l}"), "country": country, "city": city,
                   "created_at": iso(ts_us - rng.below(10_000_000_000_000) as i64)})
        }
        "products" => {
            let names = [
                "Espresso Machine",
                "Chef's Knife 20cm",
                "Linen Tablecloth",
                "Cast Iron Skillet 28cm",
                "Ceramic Pour-Over Set",
                "Bamboo Cutting Board",
            ];
            json!({"id": id, "name": format!("{} #{}", rng.pick(&names), id), "category":
                   rng.pick(&["kitchen", "dining", "home", "outdoor"]), "price": price(rng),
                   "created_at": iso(ts_us - rng.below(10_000_000_000_000) as i64)})
        }
        "orders" => {
            json!({"id": id, "customer_id": rng.below(100_000) + 1, "order_date": ts_us - rng.below(1_000_000_000) as i64,
                           "status": rng.pick(&["pending", "paid", "shipped", "delivered", "cancelled"]), "total": price(rng)})
        }
        _ => json!({"id": id, "order_id": rng.below(1_000_000) + 1, "product_id": rng.below(10_000) + 1,
                    "quantity": rng.below(9) + 1, "price": price(rng)}),
    }
}

fn corpus(with_schema: bool) -> Vec<String> {
    let tables = ["customers", "products", "orders", "order_items"];
    let schemas: Vec<Value> = tables.iter().map(|t| schema(t)).collect();
    let mut rng = Lcg(42);
    let mut lsn: u64 = 0x1_6EB3_F1A0;
    let mut out = Vec::with_capacity(MESSAGES);
    for i in 0..MESSAGES {
        let t = i % tables.len();
        let table = tables[t];
        let id = rng.below(1_000_000) + 1;
        lsn += rng.below(4096) + 56;
        let ts_us = 1_704_067_200_000_000 + (i as i64) * 1_234_567;
        let roll = rng.below(100);
        let (op, before, after, snapshot) = match roll {
            0..30 => ("c", Value::Null, row(table, id, &mut rng, ts_us), "false"),
            30..75 => ("u", Value::Null, row(table, id, &mut rng, ts_us), "false"),
            75..85 => {
                let mut key = row(table, id, &mut rng, ts_us);
                if let Value::Object(map) = &mut key {
                    for (k, v) in map.iter_mut() {
                        if k != "id" {
                            *v = Value::Null;
                        }
                    }
                }
                ("d", key, Value::Null, "false")
            }
            _ => ("r", Value::Null, row(table, id, &mut rng, ts_us), if roll == 99 { "last" } else { "true" }),
        };
        let tx = 700 + (i as u64) / 3;
        let payload = json!({
            "before": before, "after": after,
            "source": {"version": "2.7.0.Final", "connector": "postgresql", "name": "dbserver1",
                       "ts_ms": ts_us / 1000, "snapshot": snapshot, "db": "shop",
                       "sequence": format!("[\"{}\",\"{}\"]", lsn - 56, lsn), "ts_us": ts_us, "ts_ns": ts_us * 1000,
                       "schema": "public", "table": table, "txId": tx, "lsn": lsn, "xmin": null},
            "transaction": null, "op": op,
            "ts_ms": ts_us / 1000 + 850, "ts_us": ts_us + 850_000, "ts_ns": (ts_us + 850_000) * 1000});
        let body = if with_schema { json!({"schema": schemas[t], "payload": payload}) } else { payload };
        out.push(body.to_string());
    }
    out
}

/// Decodes the corpus repeatedly for at least [`MIN_RUN`]; returns the per-pass durations.
fn run(corpus: &[String], fresh_decoder_per_pass: bool) -> Vec<Duration> {
    run_redacting(corpus, fresh_decoder_per_pass, None)
}

/// [`run`], each decoded change also redacted by `redactor` (as the pipeline does right after
/// decoding).
fn run_redacting(corpus: &[String], fresh_decoder_per_pass: bool, redactor: Option<&Redactor>) -> Vec<Duration> {
    let mut decoder = Decoder::new(DecodeOptions::default());
    let mut passes = Vec::new();
    let start = Instant::now();
    while start.elapsed() < MIN_RUN || passes.len() < 5 {
        if fresh_decoder_per_pass {
            decoder = Decoder::new(DecodeOptions::default());
        }
        let t = Instant::now();
        for body in corpus {
            match decoder.decode(black_box(body)) {
                Ok(mut decoded) => {
                    if let (Some(redactor), Decoded::Change(event)) = (redactor, &mut decoded) {
                        redactor.apply(event);
                    }
                    black_box(decoded);
                }
                Err(e) => panic!("corpus body failed to decode: {e}"),
            }
        }
        passes.push(t.elapsed());
    }
    passes
}

fn report(label: &str, corpus: &[String], passes: &mut [Duration]) {
    passes.sort();
    let bytes: usize = corpus.iter().map(String::len).sum();
    let median = passes[passes.len() / 2].as_secs_f64();
    let best = passes[0].as_secs_f64();
    println!(
        "{label:<34} {:>8.1} MB/s  {:>10.0} events/s  (median of {} passes; best {:.1} MB/s)",
        bytes as f64 / median / 1e6,
        corpus.len() as f64 / median,
        passes.len(),
        bytes as f64 / best / 1e6,
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this once as a smoke test.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let with_schema = corpus(true);
    let without_schema = corpus(false);
    let sizes = |c: &[String]| c.iter().map(String::len).sum::<usize>();
    let changes = with_schema.iter().filter(|b| matches!(Decoder::default().decode(b), Ok(Decoded::Change(_)))).count();
    println!(
        "corpus: {} Debezium messages ({} changes), {:.2} MB with schema (avg {} B), {:.2} MB without",
        with_schema.len(),
        changes,
        sizes(&with_schema) as f64 / 1e6,
        sizes(&with_schema) / with_schema.len(),
        sizes(&without_schema) as f64 / 1e6,
    );
    if smoke {
        return;
    }
    report("with schema (warm cache)", &with_schema, &mut run(&with_schema, false));
    report("without schema", &without_schema, &mut run(&without_schema, false));
    report("with schema (new decoder per pass)", &with_schema, &mut run(&with_schema, true));
    // The template's default rule: every customer's e-mail replaced by its HMAC-SHA256.
    let rules = Rules::parse("customers.email:hash").expect("rule");
    let redactor = Redactor::new(rules, RedactionKey::new(&[7; 32])).expect("a key for the hash rule");
    report(
        "with schema, customers.email hashed",
        &with_schema,
        &mut run_redacting(&with_schema, false, Some(&redactor)),
    );
}
