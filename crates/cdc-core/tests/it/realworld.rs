//! Every real-world capture under `../shared/realworld/raw/` (sources and notes:
//! `../shared/realworld/SOURCES.md`), decoded as its kind says: a change of the right table, a
//! skip of the right kind (tables outside the default mapping included), or a classified
//! error. The files are read where they are, never copied into the repository.
//!
//! Files of tables outside the default mapping are decoded a second time with a mapping that
//! captures them, so that their rows and versions are checked too (`captured`).
//!
//! The ClickHouse half (every change landing with the file's values, on both engines) is
//! cdc-lambda's `tests/it/realworld.rs`.

use cdc_core::change::{Decoded, Op, Skipped, Value};
use cdc_core::decode::{DecodeOptions, Decoder};
use cdc_core::error::{Classify, ErrorClass};
use cdc_core::tables::{SourceTable, TableMapping};

use crate::support::{captures_present, change_of as change, raw, raw_names};

#[derive(Debug)]
enum Expect {
    /// A change of this source table (`db.schema.table` as the event names it) into this mirror.
    Change(&'static str, SourceTable, Op),
    Skip(Skipped),
    Error(&'static str),
    /// A whole SQS event: each record's body is decoded, with these error codes.
    SqsEvent(&'static [&'static str]),
}

use Expect::*;

/// file → expected outcome with the default mapping, and why.
const CASES: &[(&str, Expect, &str)] = &[
    (
        "aws-example-eventbridge-event-obj.json",
        Error("envelope.unknown"),
        "EventBridge unwrapped; an EC2 state change is no change event",
    ),
    (
        "aws-example-sqs-event-obj.json",
        SqsEvent(&["envelope.unknown"]),
        "SQS event; the body {a, b} is JSON but no envelope",
    ),
    ("aws-example-sqs-event.json", SqsEvent(&["body.not_json"]), "SQS event; the body `Message Body` is not JSON"),
    (
        "blog-toast-update.json",
        Skip(Skipped::UnknownTable),
        "inventory.customers is not public.customers (issue 10: was written as customer 1004)",
    ),
    ("dbz-cap-film-read.json", Skip(Skipped::UnknownTable), "public.film"),
    ("dbz-cap-flights-read.json", Skip(Skipped::UnknownTable), "flights table"),
    (
        "dbz-cap-lineage-order-create.json",
        Skip(Skipped::UnknownTable),
        "lineage.order is not public.orders (issue 10: was taken by alias)",
    ),
    (
        "dbz-cap-orders-read.json",
        Change("testdb.public.orders", SourceTable::Orders, Op::Read),
        "public.orders of database testdb: the default mapping takes public.orders of any database",
    ),
    ("dbz-cap-source-table-create.json", Skip(Skipped::UnknownTable), "source_table"),
    ("dbz-cap-transactions-read.json", Skip(Skipped::UnknownTable), "transactions"),
    (
        "dbz-cap-unwrap-orders.json",
        Error("envelope.missing_field"),
        "flattened without add.fields: no __table (nor __lsn), so no identity; never taken for a transaction marker for its status column",
    ),
    ("dbz-cap-widgets-create.json", Skip(Skipped::UnknownTable), "widgets"),
    ("dbz-cap-widgets-delete.json", Skip(Skipped::UnknownTable), "widgets"),
    ("dbz-cap-widgets-update.json", Skip(Skipped::UnknownTable), "widgets"),
    (
        "dbz-doc-create.json",
        Change("postgres.public.customers", SourceTable::Customers, Op::Create),
        "documentation create of public.customers",
    ),
    ("dbz-doc-delete.txt", Error("body.not_json"), "`{ ... }` placeholder as printed; repaired below"),
    ("dbz-doc-message-nontx.txt", Error("body.not_json"), "placeholder and a missing brace; repaired below"),
    ("dbz-doc-message-tx.txt", Error("body.not_json"), "placeholder; repaired below"),
    ("dbz-doc-truncate.txt", Error("body.not_json"), "placeholder; repaired below"),
    ("dbz-doc-tx-begin-end.txt", Error("body.not_json"), "two values in one file; each decoded below"),
    ("dbz-doc-tx-enriched.txt", Error("body.not_json"), "`source: { ... }` cannot be reconstructed"),
    ("dbz-doc-update.txt", Error("body.not_json"), "placeholder and trailing comma; repaired below"),
    ("dbz-fixture-scalars-update.json", Skip(Skipped::UnknownTable), "not a sales table"),
    ("dms-blog-control.json", Skip(Skipped::DmsControl), "control record"),
    ("dms-blog-insert.json", Skip(Skipped::UnknownTable), "lab_logix_crm_replica.acy_leads"),
    ("dms-blog-load.json", Skip(Skipped::UnknownTable), "lab_logix_crm_replica.acy_leads"),
    ("dms-doc-kafka-control.json", Skip(Skipped::DmsControl), "control record"),
    ("dms-doc-kafka-insert.json", Skip(Skipped::UnknownTable), "sbtest.sbtest_x (MySQL source)"),
    ("dms-kinesis-rds-pg-control.json", Skip(Skipped::DmsControl), "control record beside relay members"),
    ("dms-kinesis-rds-pg-load.json", Skip(Skipped::UnknownTable), "public.demo"),
    ("dms-rds-pg-control-apply-exceptions.json", Skip(Skipped::DmsControl), "awsdms_apply_exceptions control"),
    ("dms-rds-pg-control-create-table.json", Skip(Skipped::DmsControl), "create-table control"),
    ("dms-rds-pg-control-drop-table.json", Skip(Skipped::DmsControl), "drop-table control"),
    ("dms-rds-pg-delete.json", Skip(Skipped::UnknownTable), "public.foo"),
    ("dms-rds-pg-insert.json", Skip(Skipped::UnknownTable), "public.foo"),
    ("dms-rds-pg-load.json", Skip(Skipped::UnknownTable), "public.foo"),
    ("dms-rds-pg-update-pk.json", Skip(Skipped::UnknownTable), "public.foo"),
    ("dms-rds-pg-update-value.json", Skip(Skipped::UnknownTable), "public.foo"),
    ("sns-to-sqs-notification.json", Error("body.not_json"), "SNS unwrapped; `Hello world!` is not JSON"),
];

fn check(decoder: &Decoder, name: &str, body: &str, expect: &Expect, why: &str) {
    let got = decoder.decode(body);
    match (expect, &got) {
        (Change(table, mirror, op), Ok(Decoded::Change(c))) => {
            assert_eq!(
                (c.table.to_string().as_str(), c.mirror.sales().expect("a sales mirror"), c.op),
                (*table, *mirror, *op),
                "{name}: {why}"
            );
        }
        (Skip(kind), Ok(Decoded::Skipped(k))) => assert_eq!(k, kind, "{name}: {why}"),
        (Error(code), Err(e)) => {
            assert_eq!((e.code(), e.class()), (*code, ErrorClass::Poison), "{name}: {why}");
        }
        _ => panic!("{name}: expected {expect:?} ({why}), got {got:?}"),
    }
}

#[test]
fn every_real_file_is_decoded_as_its_kind_says() {
    if !captures_present() {
        return;
    }
    let names = raw_names();
    let listed: Vec<&str> = CASES.iter().map(|(n, _, _)| *n).collect();
    assert_eq!(names, listed, "every raw file has exactly one case");
    let decoder = Decoder::default();
    for (name, expect, why) in CASES {
        let body = raw(name);
        match expect {
            SqsEvent(codes) => {
                let event: aws_lambda_events::sqs::SqsEvent = serde_json::from_str(&body).unwrap();
                assert_eq!(event.records.len(), codes.len(), "{name}");
                for (record, code) in event.records.iter().zip(*codes) {
                    check(&decoder, name, record.body.as_deref().unwrap_or(""), &Error(code), why);
                }
                // The event itself is no message body.
                check(&decoder, name, &body, &Error("envelope.unknown"), "a whole SQS event as a body");
            }
            _ => check(&decoder, name, &body, expect, why),
        }
    }
}

fn captured(mapping: &str) -> Decoder {
    Decoder::new(DecodeOptions { tables: TableMapping::parse(mapping).unwrap(), ..DecodeOptions::default() })
}

#[test]
fn documentation_examples_decode_once_repaired() {
    if !captures_present() {
        return;
    }
    // Only the printed placeholders are removed; every value is the documentation's own.
    let repair = |text: &str| {
        text.replace("\"schema\": { ... },", "")
            .replace(",\n    }\n}", "\n    }\n}")
            .replace("\"ts_ns\": 1465581902461496187,\n    }", "\"ts_ns\": 1465581902461496187\n    }")
    };
    let decoder = Decoder::default();
    let update = change(&decoder, &repair(&raw("dbz-doc-update.txt")));
    assert_eq!(
        (update.op, update.mirror.sales().expect("a sales mirror"), update.version.0),
        (Op::Update, SourceTable::Customers, 24023128)
    );
    let delete = change(&decoder, &repair(&raw("dbz-doc-delete.txt")));
    assert_eq!((delete.op, delete.version.0), (Op::Delete, 46523128));
    assert_eq!(delete.before.as_ref().unwrap().get("id"), Some(&Value::Int(1)));
    let truncate = change(&decoder, &repair(&raw("dbz-doc-truncate.txt")));
    assert_eq!((truncate.op, truncate.mirror.sales().expect("a sales mirror")), (Op::Truncate, SourceTable::Customers));
    for name in ["dbz-doc-message-tx.txt", "dbz-doc-message-nontx.txt"] {
        let mut text = repair(&raw(name));
        if serde_json::from_str::<serde::de::IgnoredAny>(&text).is_err() {
            text.push('}'); // the non-transactional example lacks its closing brace
        }
        assert_eq!(decoder.decode(&text).unwrap(), Decoded::Skipped(Skipped::LogicalMessage), "{name}");
    }
    let both = raw("dbz-doc-tx-begin-end.txt");
    let (begin, end) = both.split_once("}\n\n{").unwrap();
    for part in [format!("{begin}}}"), format!("{{{end}")] {
        assert_eq!(decoder.decode(&part).unwrap(), Decoded::Skipped(Skipped::TransactionBoundary));
    }
}

#[test]
fn tables_outside_the_default_mapping_decode_when_captured() {
    if !captures_present() {
        return;
    }
    // Debezium's TOAST example: captured, its unchanged biography is unavailable, not text.
    let toast = change(&captured("inventory.customers"), &raw("blog-toast-update.json"));
    assert_eq!((toast.table.to_string().as_str(), toast.version.0), ("sourcedb.inventory.customers", 34650016));
    assert_eq!(toast.after.as_ref().unwrap().get("biography"), Some(&Value::Unavailable));
    // A database-qualified entry takes only that database.
    assert!(matches!(
        captured("otherdb.inventory.customers").decode(&raw("blog-toast-update.json")),
        Ok(Decoded::Skipped(Skipped::UnknownTable))
    ));
    let lineage = change(&captured("lineage.order=orders"), &raw("dbz-cap-lineage-order-create.json"));
    assert_eq!((lineage.mirror.sales().expect("a sales mirror"), lineage.op), (SourceTable::Orders, Op::Create));
    // Mapped onto a mirror whose key is BIGINT, a table keyed by UUID text is refused by
    // value, never coerced.
    for name in ["dbz-cap-widgets-create.json", "dbz-cap-widgets-update.json", "dbz-cap-widgets-delete.json"] {
        let e = captured("public.widgets=products").decode(&raw(name)).unwrap_err();
        assert_eq!((e.code(), e.class()), ("value.type_mismatch", ErrorClass::Poison), "{name}");
    }
}

#[test]
fn dms_postgres_positions_order_the_real_changes() {
    if !captures_present() {
        return;
    }
    let decoder = captured("public.foo=customers");
    let version = |name: &str| change(&decoder, &raw(name)).version.0;
    // `00000002/7C007178.3.00000002/7C007178` and friends: the change's LSN.
    assert_eq!(version("dms-rds-pg-insert.json"), 0x2_7C00_7178);
    assert_eq!(version("dms-rds-pg-update-value.json"), 0x2_7C00_7328);
    assert_eq!(version("dms-rds-pg-update-pk.json"), 0x2_7C00_73F8);
    assert_eq!(version("dms-rds-pg-delete.json"), 0x2_8400_01D8);
    // Full load without position ranks below every change.
    assert_eq!(version("dms-rds-pg-load.json"), 1);
    let delete = change(&decoder, &raw("dms-rds-pg-delete.json"));
    assert_eq!((delete.op, delete.before.as_ref().unwrap().get("id")), (Op::Delete, Some(&Value::Int(45))));
    let update = change(&decoder, &raw("dms-rds-pg-update-pk.json"));
    assert_eq!(update.before.as_ref().unwrap().get("id"), Some(&Value::Int(46)));
    // MySQL binlog position (file 002171, row event at 36912271, row 0).
    let mysql = change(&captured("sbtest.sbtest_x=customers"), &raw("dms-doc-kafka-insert.json"));
    assert_eq!(mysql.version.0, 2171 << 43 | 36_912_271 << 11);
    // Relay members beside DMS's own are ignored.
    let load = change(&captured("public.demo=customers"), &raw("dms-kinesis-rds-pg-load.json"));
    assert_eq!((load.op, load.version.0), (Op::Read, 1));
}

#[test]
fn dms_two_changes_of_one_row_in_one_transaction_delivered_in_reverse() {
    if !captures_present() {
        return;
    }
    // One transaction (same transaction-id and commit-timestamp), two updates of customer 7;
    // positions as DMS writes them for PostgreSQL, the second change 0x98 bytes later.
    let body = |name: &str, position: &str, record: u32| {
        format!(
            r#"{{"data":{{"id":7,"name":"{name}"}},"metadata":{{"commit-timestamp":"2024-07-29T00:58:44.886717Z","operation":"update","partition-key-type":"schema-table","record-type":"data","schema-name":"public","stream-position":"{position}","table-name":"customers","timestamp":"2024-07-29T00:58:44.895275Z","transaction-id":1140,"transaction-record-id":{record}}}}}"#
        )
    };
    let first = body("first", "00000002/7C007328.2.00000002/7C007328", 1);
    let second = body("second", "00000002/7C007328.3.00000002/7C0073C0", 2);
    let decoder = Decoder::default();
    let (later, earlier) = (change(&decoder, &second), change(&decoder, &first));
    assert_eq!(later.commit_time_us, earlier.commit_time_us, "one transaction, one commit time");
    assert!(later.version > earlier.version, "{:?} vs {:?}", later.version, earlier.version);
    assert_eq!(later.after.as_ref().unwrap().get("name"), Some(&Value::Text("second".into())));
}

#[test]
fn declared_types_read_schemaless_dms_values_exactly() {
    if !captures_present() {
        return;
    }
    // DMS sends timestamps as ISO strings and carries no schema: undeclared, `created_at` is
    // text; declared, it is an instant (and an integer column stays an integer).
    let plain = change(&captured("lab_logix_crm_replica.acy_leads"), &raw("dms-blog-insert.json"));
    let after = plain.after.as_ref().unwrap();
    assert_eq!(after.get("created_at"), Some(&Value::Text("2016-08-09T15:35:24Z".into())));
    let typed = change(
        &captured("lab_logix_crm_replica.acy_leads{created_at:timestamp ownership_id:numeric(2)}"),
        &raw("dms-blog-insert.json"),
    );
    let after = typed.after.as_ref().unwrap();
    assert_eq!(after.get("created_at"), Some(&Value::Timestamp(1_470_756_924_000_000)));
    assert_eq!(after.get("ownership_id"), Some(&Value::Decimal(cdc_core::change::Decimal::new(500, 2))));
    assert_eq!(after.get("id"), Some(&Value::Int(315_233)));
}
