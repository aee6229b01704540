//! `repair` against the real PostgreSQL and ClickHouse: a key frozen by an implausible version
//! (as releases before the plausibility check could write) is rewritten from the source, its
//! facts follow, and a whole-table repair turns rows the source no longer has into deletions.

use std::time::{Duration, Instant};

use cdc_clickhouse::RawSql;
use cdc_clickhouse::Warehouse;
use cdc_clickhouse::dialect::Dialect;
use cdc_core::change::VersionScale;
use cdc_core::decode::DecodeOptions;
use cdc_core::error::ErrorClass;
use cdc_core::redact::{RedactionKey, Redactor, Rules};
use cdc_core::rederive::Scope;
use cdc_core::tables::TableMapping;
use cdc_lambda::pipeline::{Pipeline, Process};
use cdc_lambda::sqs::message::{Message, MessageId, MessageOutcome};
use cdc_tools::repair::{self, Args, Repaired};

use cdc_tools::generator::SOURCE_SCHEMA_SQL;

use crate::support::{clickhouse_settings, env_or, pg, pg_url, test_name};

fn args(database: &str, table: &str, key: Option<i64>) -> Args {
    Args { pg_url: pg_url(database), schema: "public".into(), table: table.into(), key, facts_only: false }
}

async fn facts(pipeline: &Pipeline) -> String {
    let sql = format!(
        "SELECT order_item_id, customer_name, product_name FROM {}.sales_fact_current ORDER BY order_item_id",
        pipeline.warehouse().database()
    );
    pipeline.warehouse().fetch_tsv(&sql).await.unwrap()
}

#[tokio::test]
async fn repair_rewrites_a_frozen_key_from_the_source_and_deletes_what_the_source_lost() {
    let name = test_name("repair");
    pg("postgres").await.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
    let source = pg(&name).await;
    source.batch_execute(SOURCE_SCHEMA_SQL).await.unwrap();
    source
        .batch_execute(
            "INSERT INTO customers VALUES (1, 'a@x.io', 'Ada', 'UK', 'London', '2024-01-01T00:00:00Z');
             INSERT INTO products VALUES (2, 'Lamp', 'Home', 48.20, '2024-01-01T00:00:00Z');
             INSERT INTO orders VALUES (3, 1, '2024-01-02T10:00:00Z', 'paid', 96.40);
             INSERT INTO order_items VALUES (4, 3, 2, 2, 48.20);",
        )
        .await
        .unwrap();
    let settings = clickhouse_settings(&name);
    let pipeline = Pipeline::new(DecodeOptions::default(), Warehouse::new(&settings));

    // Bootstrap every mirror from the source: whole-table repairs.
    for table in ["customers", "products", "orders", "order_items"] {
        repair::repair(&pipeline, &args(&name, table, None)).await.unwrap();
    }
    assert_eq!(facts(&pipeline).await, "4\tAda\tLamp\n");

    // A change at an impossible position is poison now, and never written...
    let frozen = r#"{"before":null,"after":{"id":2,"name":"Frozen","category":"Home","price":"AQ==","created_at":"2024-01-01T00:00:00Z"},
        "source":{"version":"2.5.0.Final","connector":"postgresql","name":"oltp","ts_ms":1704067200000,"snapshot":"false",
        "db":"oltp","schema":"public","table":"products","lsn":18446744073709551615},"op":"u","ts_ms":1704067200000}"#;
    let message = Message {
        id: MessageId::new("m1").unwrap(),
        body: frozen.into(),
        receive_count: 1,
        group_id: None,
        receipt_handle: None,
        source_arn: None,
        sent_at_ms: None,
    };
    let reports = pipeline.process(&[message], Instant::now() + Duration::from_secs(60)).await.unwrap();
    let MessageOutcome::Failed { class, code, .. } = &reports[0].outcome else { panic!("{:?}", reports[0].outcome) };
    assert_eq!((*class, *code), (ErrorClass::Poison, "version.implausible"));
    // ...but an older release could have written it: freeze the key by hand.
    let database = pipeline.warehouse().database().to_string();
    pipeline
        .warehouse()
        .execute(&format!(
            "INSERT INTO {database}.products (id, name, category, price, created_at, _version, _is_deleted) \
             SELECT toInt64(2), 'Frozen', 'Home', toDecimal128(1, 6), toDateTime('2024-01-01 00:00:00'), \
             toUInt64(18446744073709551615), toUInt8(0)"
        ))
        .await
        .unwrap();
    pipeline.rederive(Scope::Product(2), Instant::now() + Duration::from_secs(60)).await.unwrap();
    assert_eq!(facts(&pipeline).await, "4\tAda\tFrozen\n");

    // The source moves on; the frozen key would ignore it forever. Repair the key.
    source.batch_execute("UPDATE products SET name = 'Lamp v2' WHERE id = 2").await.unwrap();
    let done = repair::repair(&pipeline, &args(&name, "products", Some(2))).await.unwrap();
    assert_eq!(done.rows_rewritten, 1);
    assert_eq!(facts(&pipeline).await, "4\tAda\tLamp v2\n");

    // A row deleted at the source while nothing captured it: a whole-table repair deletes it.
    source.batch_execute("DELETE FROM customers WHERE id = 1").await.unwrap();
    let done = repair::repair(&pipeline, &args(&name, "customers", None)).await.unwrap();
    assert_eq!(done, Repaired { rows_rewritten: 0, rows_deleted: 1, facts: done.facts });
    assert_eq!(facts(&pipeline).await, "");
    let current =
        pipeline.warehouse().fetch_tsv(&format!("SELECT count() FROM {database}.customers_current")).await.unwrap();
    assert_eq!(current, "0\n");

    pipeline.warehouse().execute(&format!("DROP DATABASE IF EXISTS {database}")).await.unwrap();
    drop(source);
    pg("postgres").await.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await.unwrap();
}

/// A source database with one customer (1), two products (2, 6), one order (3) with two items
/// (4, 5), and every mirror bootstrapped from it by whole-table repairs, through `pipeline`
/// (whose decode options carry the table mapping under test).
struct Fixture {
    name: String,
    source: tokio_postgres::Client,
    pipeline: Pipeline,
}

impl Fixture {
    async fn new(prefix: &str, decode: DecodeOptions, bootstrap: bool) -> Fixture {
        let name = test_name(prefix);
        pg("postgres").await.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
        let source = pg(&name).await;
        source.batch_execute(SOURCE_SCHEMA_SQL).await.unwrap();
        source
            .batch_execute(
                "INSERT INTO customers VALUES (1, 'a@x.io', 'Ada', 'UK', 'London', '2024-01-01T00:00:00Z');
                 INSERT INTO products VALUES (2, 'Lamp', 'Home', 48.20, '2024-01-01T00:00:00Z'),
                                             (6, 'Desk', 'Home', 100.00, '2024-01-01T00:00:00Z');
                 INSERT INTO orders VALUES (3, 1, '2024-01-02T10:00:00Z', 'paid', 196.40);
                 INSERT INTO order_items VALUES (4, 3, 2, 2, 48.20), (5, 3, 6, 1, 100.00);",
            )
            .await
            .unwrap();
        let pipeline = Pipeline::new(decode, Warehouse::new(&clickhouse_settings(&name)));
        pipeline.migrate(Instant::now() + Duration::from_secs(60)).await.unwrap();
        let fixture = Fixture { name, source, pipeline };
        if bootstrap {
            for table in ["customers", "products", "orders", "order_items"] {
                repair::repair(&fixture.pipeline, &fixture.args(table, None)).await.unwrap();
            }
        }
        fixture
    }

    fn args(&self, table: &str, key: Option<i64>) -> Args {
        args(&self.name, table, key)
    }

    fn database(&self) -> String {
        self.pipeline.warehouse().database().to_string()
    }

    async fn tsv(&self, sql: &str) -> String {
        self.pipeline.warehouse().fetch_tsv(&sql.replace("{db}", &self.database())).await.unwrap()
    }

    /// The current facts: item, customer, product, quantity.
    async fn facts(&self) -> String {
        self.tsv(
            "SELECT order_item_id, customer_name, product_name, quantity FROM {db}.sales_fact_current \
             ORDER BY order_item_id",
        )
        .await
    }

    async fn drop(self) {
        let database = self.database();
        self.pipeline.warehouse().execute(&format!("DROP DATABASE IF EXISTS {database}")).await.unwrap();
        drop(self.source);
        pg("postgres")
            .await
            .batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
            .await
            .unwrap();
    }
}

/// The newest row of `table` key `key` written by hand at an implausible version (as releases
/// before the plausibility check could write): `values` are the row's columns before
/// `_version`.
async fn freeze(fixture: &Fixture, table: &str, columns: &str, values: &str) {
    let db = fixture.database();
    fixture
        .pipeline
        .warehouse()
        .execute(&format!(
            "INSERT INTO {db}.{table} ({columns}, _version, _is_deleted) SELECT {values}, \
             toUInt64(18446744073709551615), toUInt8(0)"
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn repairing_an_item_replaces_the_fact_its_purged_row_derived() {
    let f = Fixture::new("repair_item", DecodeOptions::default(), true).await;
    assert_eq!(f.facts().await, "4\tAda\tLamp\t2\n5\tAda\tDesk\t1\n");
    // Item 4 frozen at quantity 9; its fact follows, at a version derived from the frozen one.
    freeze(
        &f,
        "order_items",
        "id, order_id, product_id, quantity, price",
        "toInt64(4), toInt64(3), toInt64(2), toInt32(9), toDecimal128(48.2, 6)",
    )
    .await;
    f.pipeline.rederive(Scope::Order(3), Instant::now() + Duration::from_secs(60)).await.unwrap();
    assert_eq!(f.facts().await, "4\tAda\tLamp\t9\n5\tAda\tDesk\t1\n");

    let done = repair::repair(&f.pipeline, &f.args("order_items", Some(4))).await.unwrap();
    // The purged row's fact does not keep winning over the source's.
    assert_eq!(f.facts().await, "4\tAda\tLamp\t2\n5\tAda\tDesk\t1\n");
    assert_eq!((done.rows_rewritten, done.facts), (1, 1), "{done:?}");
    f.drop().await;
}

#[tokio::test]
async fn a_facts_only_repair_of_an_item_touches_that_items_fact_alone() {
    let f = Fixture::new("repair_item_facts", DecodeOptions::default(), true).await;
    // A fact no mirror row backs (item 99): a repair of all facts would remove it, one of item
    // 4's must leave it alone.
    let columns = cdc_clickhouse::schema::fact_column_names();
    let select: Vec<String> = columns
        .iter()
        .map(|c| if *c == "order_item_id" { "toInt64(99)".to_string() } else { (*c).to_string() })
        .collect();
    f.pipeline
        .warehouse()
        .execute(&format!(
            "INSERT INTO {db}.sales_fact ({}) SELECT {} FROM {db}.sales_fact WHERE order_item_id = 5",
            columns.join(", "),
            select.join(", "),
            db = f.database()
        ))
        .await
        .unwrap();
    let marker = "SELECT count() FROM {db}.sales_fact WHERE order_item_id = 99";
    assert_eq!(f.tsv(marker).await, "1\n");

    let done = repair::repair(&f.pipeline, &Args { facts_only: true, ..f.args("order_items", Some(4)) }).await.unwrap();
    assert_eq!(done, Repaired { rows_rewritten: 0, rows_deleted: 0, facts: 1 });
    assert_eq!(f.tsv(marker).await, "1\n", "a facts-only repair of item 4 removed another item's fact");
    assert_eq!(f.tsv("SELECT count() FROM {db}.sales_fact_current WHERE order_item_id = 4").await, "1\n");
    f.drop().await;
}

#[tokio::test]
async fn repair_inserts_are_not_deduplicated_away() {
    let f = Fixture::new("repair_dedup", DecodeOptions::default(), true).await;
    // Replicated and Cloud tables drop an insert whose block they saw before; a current
    // engine's plain MergeTree does the same with a deduplication window, which 18.16 lacks
    // (there the repairs below must simply keep the facts).
    if f.pipeline.warehouse().dialect().await.unwrap() == Dialect::Modern {
        for table in ["sales_fact", "products", "_items_by_order", "_items_by_product"] {
            f.pipeline
                .warehouse()
                .execute(&format!(
                    "ALTER TABLE {}.{table} MODIFY SETTING non_replicated_deduplication_window = 100",
                    f.database()
                ))
                .await
                .unwrap();
        }
    }
    // The first repair's blocks are remembered; the second deletes the same facts and inserts
    // the same blocks again.
    for _ in 0..2 {
        let done = repair::repair(&f.pipeline, &Args { facts_only: true, ..f.args("orders", Some(3)) }).await.unwrap();
        assert_eq!(done.facts, 2);
        assert_eq!(f.facts().await, "4\tAda\tLamp\t2\n5\tAda\tDesk\t1\n");
    }
    f.drop().await;
}

#[tokio::test]
async fn repair_writes_a_micros_mirror_on_its_own_scale_and_refuses_a_binlog_one() {
    let f = Fixture::new("repair_scale", DecodeOptions::default(), false).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    // `products` is fed by a µs-versioned feed (DMS without positions, the platform);
    // `customers` by MySQL binlog positions.
    f.pipeline
        .warehouse()
        .pin_version_scales(&[("products", VersionScale::Micros), ("customers", VersionScale::Binlog)], deadline)
        .await
        .unwrap();
    let before_us = cdc_lambda::telemetry::now_ms() * 1000;
    for table in ["orders", "order_items", "products"] {
        repair::repair(&f.pipeline, &f.args(table, None)).await.unwrap();
    }
    // Written on the µs scale (the current time), not at a WAL position (about 10^8 here).
    let versions = f.tsv(&format!("SELECT count(), min(_version) >= {before_us} FROM {{db}}.products")).await;
    assert_eq!(versions, "2\t1\n");
    // The rewrite outranks an earlier µs change of the key.
    f.source.batch_execute("UPDATE products SET name = 'Lamp v2' WHERE id = 2").await.unwrap();
    let done = repair::repair(&f.pipeline, &f.args("products", Some(2))).await.unwrap();
    assert_eq!(done.rows_rewritten, 1);
    assert_eq!(f.tsv("SELECT name FROM {db}.products_current WHERE id = 2").await, "Lamp v2\n");

    // No binlog position can be read from PostgreSQL: refused, nothing written.
    let e = repair::repair(&f.pipeline, &f.args("customers", None)).await.unwrap_err();
    assert!(format!("{e:#}").contains("binlog"), "{e:#}");
    assert_eq!(f.tsv("SELECT count() FROM {db}.customers").await, "0\n");
    f.drop().await;
}

#[tokio::test]
async fn repair_follows_the_table_mapping_and_fails_when_nothing_is_written() {
    let tables =
        TableMapping::parse("public.customers,public.products,public.orders,sales.line_items=order_items,public.notes")
            .unwrap();
    let f = Fixture::new("repair_mapping", DecodeOptions { tables, ..DecodeOptions::default() }, false).await;
    f.source
        .batch_execute(
            "CREATE SCHEMA sales; CREATE TABLE sales.line_items (LIKE public.order_items INCLUDING ALL);
             INSERT INTO sales.line_items SELECT * FROM public.order_items;
             CREATE TABLE notes (id BIGINT PRIMARY KEY, body TEXT); INSERT INTO notes VALUES (1, 'n');",
        )
        .await
        .unwrap();
    for table in ["customers", "products", "orders"] {
        repair::repair(&f.pipeline, &f.args(table, None)).await.unwrap();
    }
    // The source table the mapping names feeds its mirror.
    let done =
        repair::repair(&f.pipeline, &Args { schema: "sales".into(), ..f.args("line_items", None) }).await.unwrap();
    assert_eq!(done.rows_rewritten, 2);
    assert_eq!(f.facts().await, "4\tAda\tLamp\t2\n5\tAda\tDesk\t1\n");
    let done =
        repair::repair(&f.pipeline, &Args { schema: "sales".into(), ..f.args("line_items", Some(5)) }).await.unwrap();
    assert_eq!(done.rows_rewritten, 1);

    // A table outside the mapping writes nothing: an error, never a success.
    let e = repair::repair(&f.pipeline, &f.args("order_items", Some(4))).await.unwrap_err();
    assert!(format!("{e:#}").contains("CAPTURED_TABLES"), "{e:#}");
    // A generic mirror cannot be repaired yet, and says so.
    let e = repair::repair(&f.pipeline, &f.args("notes", Some(1))).await.unwrap_err();
    assert!(format!("{e:#}").contains("generic"), "{e:#}");
    f.drop().await;
}

#[test]
fn the_postgresql_password_never_appears_in_help() {
    const MARKER: &str = "Pw-marker-7f3a";
    let url = format!("postgresql://repair:{MARKER}@db.example:5432/sales?sslmode=require");
    for command in [
        &["repair", "--help"][..],
        &["verify", "--help"],
        &["capture", "--help"],
        &["generate", "--help"],
        &["freshness", "--help"],
        &["repair", "-h"],
        &["help", "repair"],
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_cdc-tools"))
            .args(command)
            .env("CDC_PG_URL", &url)
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(text.contains("--pg-url"), "{command:?}: {text}");
        assert!(!text.contains(MARKER), "{command:?} shows the password: {text}");
    }
}

#[tokio::test]
async fn sslmode_require_asks_the_server_for_tls_and_disable_does_not() {
    // The local cluster has `ssl = off`: a client that asks for TLS hears it refused, where a
    // plaintext-only client would never ask ("no TLS implementation configured").
    let e = cdc_tools::postgres::connect(&format!("{} sslmode=require", pg_url("postgres"))).await.unwrap_err();
    assert!(format!("{e:#}").contains("server does not support TLS"), "{e:#}");
    let e = cdc_tools::postgres::connect(&format!("{} sslmode=verify-full", pg_url("postgres"))).await.unwrap_err();
    assert!(format!("{e:#}").contains("server does not support TLS"), "{e:#}");
    let plain = cdc_tools::postgres::connect(&format!("{} sslmode=disable", pg_url("postgres"))).await.unwrap();
    assert_eq!(plain.query_one("SELECT 1", &[]).await.unwrap().get::<_, i32>(0), 1);
}

/// A throwaway PostgreSQL cluster with `ssl = on` (a certificate of the private CA for
/// 127.0.0.1 and localhost), on a free port; stopped when dropped. Run as user `postgres` when
/// the tests run as root, as scripts/postgres.sh runs the shared one.
struct TlsPostgres {
    bin: std::path::PathBuf,
    data: std::path::PathBuf,
    port: u16,
    ca: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl TlsPostgres {
    fn start() -> TlsPostgres {
        use std::os::unix::fs::PermissionsExt;
        let bin = std::path::PathBuf::from(env_or("CDC_PG_BIN", "/usr/lib/postgresql/15/bin"));
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = crate::outage::private_ca(dir.path());
        let data = dir.path().join("data");
        let root = std::process::Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
        let as_owner = |program: &std::path::Path| {
            let mut command = std::process::Command::new(if root { "runuser" } else { program.to_str().unwrap() });
            if root {
                command.args(["-u", "postgres", "--", program.to_str().unwrap()]);
            }
            command
        };
        if root {
            let status = std::process::Command::new("chown").arg("-R").arg("postgres").arg(dir.path()).status();
            assert!(status.unwrap().success());
        }
        let initdb = as_owner(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C"])
            .output()
            .unwrap();
        assert!(initdb.status.success(), "initdb: {}", String::from_utf8_lossy(&initdb.stderr));
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c ssl=on -c ssl_cert_file={} \
             -c ssl_key_file={}",
            dir.path().display(),
            cert.display(),
            key.display()
        );
        let log = dir.path().join("server.log");
        let started = as_owner(&bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .args(["-o", &options, "-w", "-t", "60", "start"])
            .output()
            .unwrap();
        assert!(started.status.success(), "pg_ctl start: {}", std::fs::read_to_string(&log).unwrap_or_default());
        TlsPostgres { bin, data, port, ca, _dir: dir }
    }

    fn url(&self, host: &str, tls: &str) -> String {
        format!("host={host} port={} user=postgres dbname=postgres {tls}", self.port)
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let root = std::process::Command::new("id").arg("-u").output().map(|o| o.stdout == b"0\n").unwrap_or(false);
        let pg_ctl = self.bin.join("pg_ctl");
        let mut command = std::process::Command::new(if root { "runuser" } else { pg_ctl.to_str().unwrap() });
        if root {
            command.args(["-u", "postgres", "--", pg_ctl.to_str().unwrap()]);
        }
        let _ = command.arg("-D").arg(&self.data).args(["-m", "immediate", "-w", "stop"]).output();
    }
}

/// Whether the client's own connection is encrypted, as the server sees it.
async fn encrypted(pg: &tokio_postgres::Client) -> bool {
    pg.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn each_sslmode_connects_as_libpq_would_to_a_postgresql_with_tls() {
    let server = TlsPostgres::start();
    let connect = |host: &str, tls: String| {
        let url = server.url(host, &tls);
        async move { cdc_tools::postgres::connect(&url).await }
    };
    let ca = server.ca.display().to_string();
    // verify-full: the private CA vouches for the certificate and the host name matches.
    let pg = connect("localhost", format!("sslmode=verify-full sslrootcert={ca}")).await.unwrap();
    assert!(encrypted(&pg).await);
    // require: encrypted, whoever signed the certificate.
    let pg = connect("127.0.0.1", "sslmode=require".into()).await.unwrap();
    assert!(encrypted(&pg).await);
    // verify-full without the private CA: the public roots do not know it, so no connection.
    let e = connect("localhost", "sslmode=verify-full".into()).await.unwrap_err();
    assert!(format!("{e:#}").to_lowercase().contains("certificate"), "{e:#}");
    // disable (and no sslmode at all): plaintext, as before.
    assert!(!encrypted(&connect("127.0.0.1", "sslmode=disable".into()).await.unwrap()).await);
    assert!(!encrypted(&connect("127.0.0.1", String::new()).await.unwrap()).await);
}

/// Key rotation as docs/privacy.md describes it: mirrors hashed under the old key, the new key
/// in place, a whole-table repair; afterwards every hash is the new key's and the facts stand.
#[tokio::test]
async fn rotating_the_redaction_key_rehashes_every_row_through_a_whole_table_repair() {
    let rules = || Rules::parse("customers.email:hash").unwrap();
    let (old, new) = (RedactionKey::new(&[1u8; 32]).unwrap(), RedactionKey::new(&[2u8; 32]).unwrap());
    let mut fixture = Fixture::new("rotate", DecodeOptions::default(), false).await;
    let pipeline_with = |name: &str, key: &RedactionKey| {
        Pipeline::new(DecodeOptions::default(), Warehouse::new(&clickhouse_settings(name)))
            .with_redactor(Redactor::new(rules(), Some(key.clone())).unwrap())
    };
    fixture.pipeline = pipeline_with(&fixture.name, &old);
    for table in ["customers", "products", "orders", "order_items"] {
        repair::repair(&fixture.pipeline, &fixture.args(table, None)).await.unwrap();
    }
    const EMAIL: &str = "SELECT email FROM {db}.customers_current";
    assert_eq!(fixture.tsv(EMAIL).await, format!("{}\n", old.hash(b"a@x.io")));

    // The new key in place (a cold start reads it), the source's WAL moved on as in any live
    // system, then the documented re-hash.
    fixture.pipeline = pipeline_with(&fixture.name, &new);
    fixture.source.batch_execute("UPDATE products SET name = name WHERE id = 6").await.unwrap();
    let repaired = repair::repair(&fixture.pipeline, &fixture.args("customers", None)).await.unwrap();
    assert_eq!(repaired.rows_rewritten, 1);
    assert_eq!(fixture.tsv(EMAIL).await, format!("{}\n", new.hash(b"a@x.io")));
    let stale = format!("SELECT count() FROM {{db}}.customers_current WHERE startsWith(email, '{}:')", old.id());
    assert_eq!(fixture.tsv(&stale).await, "0\n", "no value of the old key remains");
    assert_eq!(fixture.facts().await, "4\tAda\tLamp\t2\n5\tAda\tDesk\t1\n");
    fixture.drop().await;
}
