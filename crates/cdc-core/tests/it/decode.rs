//! Decoding of every fixture body under `tests/fixtures/`, with hand-checked values, and
//! property tests for the decimal and time encodings.
//!
//! Hand checks: base64 `AeI=` = 0x01E2 = 482 → 4.82 at scale 2; `/h4=` = 0xFE1E = -482;
//! 1704067200000000 µs = 2024-01-01T00:00:00Z; Date 19723 = 2024-01-01; LSN `0/16B3748` =
//! 23803720; `00000001/6EB3F1A0` = 2^32 + 0x6EB3F1A0 = 6125056416.

use cdc_core::change::{
    ChangeEvent, Decimal, Decoded, InputFormat, Op, Row, Skipped, Snapshot, Special, Value, Version, VersionScale,
};
use cdc_core::decode::encoding::{self, ValueError};
use cdc_core::decode::{DecodeError, DecodeOptions, Decoder, ERROR_CODES};
use cdc_core::error::{Classify, ErrorClass};
use cdc_core::tables::SourceTable;
use proptest::prelude::*;

use crate::support::{fixture, fixtures_dir};

const JAN_1_2024_US: i64 = 1_704_067_200_000_000;

fn decode(name: &str) -> Decoded {
    Decoder::default().decode(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e} ({})", e.code()))
}

fn change(name: &str) -> ChangeEvent {
    match decode(name) {
        Decoded::Change(c) => *c,
        other => panic!("{name}: expected a change, got {other:?}"),
    }
}

fn skipped(name: &str) -> Skipped {
    match decode(name) {
        Decoded::Skipped(s) => s,
        other => panic!("{name}: expected a skip, got {other:?}"),
    }
}

fn error(name: &str) -> DecodeError {
    match Decoder::default().decode(&fixture(name)) {
        Err(e) => e,
        Ok(d) => panic!("{name}: expected an error, got {d:?}"),
    }
}

fn dec(unscaled: i128, scale: u32) -> Value {
    Value::Decimal(Decimal::new(unscaled, scale))
}

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

fn col<'a>(row: &'a Option<Row>, name: &str) -> &'a Value {
    let row = row.as_ref().expect("row image present");
    row.get(name).unwrap_or_else(|| panic!("column {name} missing"))
}

// ---------- Debezium ----------

fn assert_customer_create(c: &ChangeEvent) {
    assert_eq!(c.table.to_string(), "shop.public.customers");
    assert_eq!(c.mirror.sales().expect("a sales mirror"), SourceTable::Customers);
    assert_eq!(c.op, Op::Create);
    assert_eq!(c.format, InputFormat::Debezium);
    assert_eq!(c.version.0, 24_023_184);
    // source.ts_us, not the top-level processing time ts_ms (1704067201000).
    assert_eq!(c.commit_time_us, Some(1_704_067_200_123_456));
    assert_eq!(c.transaction_id.as_deref(), Some("771"));
    assert_eq!(c.correlation_id, None);
    assert_eq!(c.snapshot, Some(Snapshot::False));
    assert!(c.before.is_none());
    assert_eq!(col(&c.after, "id"), &Value::Int(1001));
    assert_eq!(col(&c.after, "email"), &text("ana@example.com"));
    assert_eq!(col(&c.after, "city"), &text("São Paulo"));
    assert_eq!(col(&c.after, "created_at"), &Value::Timestamp(JAN_1_2024_US));
    let names: Vec<_> = c.after.as_ref().unwrap().iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["id", "email", "name", "country", "city", "created_at"]);
}

#[test]
fn debezium_create_with_and_without_schema() {
    let with = change("debezium_create_with_schema.json");
    let without = change("debezium_create_no_schema.json");
    assert_customer_create(&with);
    assert_customer_create(&without);
    assert_eq!(with, without);
}

#[test]
fn debezium_update_with_and_without_schema() {
    for name in ["debezium_update_with_schema.json", "debezium_update_no_schema.json"] {
        let c = change(name);
        assert_eq!(c.op, Op::Update, "{name}");
        assert_eq!(
            (c.table.to_string(), c.mirror.sales().expect("a sales mirror")),
            ("shop.public.orders".to_owned(), SourceTable::Orders)
        );
        assert_eq!(col(&c.before, "status"), &text("pending"));
        assert_eq!(col(&c.after, "status"), &text("paid"));
        // "AOb/" = 0x00E6FF = 59135 (a 0x00 sign byte, since 0xE6 has its top bit set) → 591.35.
        assert_eq!(col(&c.after, "total"), &dec(59135, 2), "{name}");
        assert_eq!(col(&c.after, "order_date"), &Value::Timestamp(JAN_1_2024_US), "{name}");
    }
}

#[test]
fn debezium_delete_with_key_only_before() {
    for name in ["debezium_delete_with_schema.json", "debezium_delete_no_schema.json"] {
        let c = change(name);
        assert_eq!(c.op, Op::Delete);
        assert_eq!(c.table.to_string(), "shop.public.order_items");
        assert!(c.after.is_none());
        assert_eq!(col(&c.before, "id"), &Value::Int(70001));
        assert_eq!(col(&c.before, "price"), &Value::Null);
    }
}

#[test]
fn debezium_snapshot_read() {
    for name in ["debezium_read_with_schema.json", "debezium_read_no_schema.json"] {
        let c = change(name);
        assert_eq!(c.op, Op::Read);
        assert_eq!(c.snapshot, Some(Snapshot::First));
        // Below every streamed change of the row, whatever its position (docs/versions.md).
        assert_eq!((c.version, c.scale), (Version::SNAPSHOT, VersionScale::Load), "{name}");
        assert_eq!(col(&c.after, "price"), &dec(482, 2), "{name}");
        assert_eq!(col(&c.after, "created_at"), &Value::Timestamp(JAN_1_2024_US + 34_200_123_456));
    }
}

#[test]
fn debezium_truncate_has_no_rows() {
    for name in ["debezium_truncate_with_schema.json", "debezium_truncate_no_schema.json"] {
        let c = change(name);
        assert_eq!(c.op, Op::Truncate);
        assert_eq!(
            (c.table.to_string(), c.mirror.sales().expect("a sales mirror")),
            ("shop.public.orders".to_owned(), SourceTable::Orders)
        );
        assert!(c.before.is_none() && c.after.is_none());
        assert_eq!(c.version.0, 24_023_184);
    }
}

#[test]
fn debezium_logical_message_is_skipped() {
    assert_eq!(skipped("debezium_message_with_schema.json"), Skipped::LogicalMessage);
    assert_eq!(skipped("debezium_message_no_schema.json"), Skipped::LogicalMessage);
}

#[test]
fn debezium_every_encoding() {
    let c = change("debezium_encodings.json");
    let a = &c.after;
    assert_eq!(col(a, "price"), &dec(482, 2)); // "AeI=" scale 2
    assert_eq!(col(a, "neg_amount"), &dec(-482, 2)); // "/h4="
    assert_eq!(col(a, "whole"), &dec(1_234_567_890, 0)); // scale 0
    assert_eq!(col(a, "vsd"), &dec(-12345, 3)); // {scale: 3, value: -12345}
    assert_eq!(col(a, "day"), &Value::Date(19723));
    assert_eq!(col(a, "ts_millis"), &Value::Timestamp(JAN_1_2024_US));
    assert_eq!(col(a, "ts_micros"), &Value::Timestamp(JAN_1_2024_US));
    assert_eq!(col(a, "ts_nanos"), &Value::Timestamp(JAN_1_2024_US)); // +1 ns truncated
    assert_eq!(col(a, "ts_zoned"), &Value::Timestamp(JAN_1_2024_US + 500_000)); // 02:00:00.5+02:00
    assert_eq!(col(a, "ts_pos_inf"), &Value::Special(Special::PositiveInfinity));
    assert_eq!(col(a, "ts_neg_inf"), &Value::Special(Special::NegativeInfinity));
    assert_eq!(col(a, "t_micros"), &Value::Time(45_296_789_012)); // 12:34:56.789012
    assert_eq!(col(a, "t_millis"), &Value::Time(45_296_789_000));
    assert_eq!(col(a, "span"), &Value::Interval(90_061_000_001));
    assert_eq!(col(a, "uid"), &Value::Uuid("8f0c3d4e-1b2a-4c5d-9e8f-0a1b2c3d4e5f".into()));
    assert_eq!(col(a, "doc"), &Value::Json(r#"{"k":[1,2]}"#.into()));
    assert_eq!(col(a, "mood"), &text("happy"));
    assert_eq!(col(a, "tags"), &Value::Array(vec![text("a"), text("b")]));
    assert_eq!(col(a, "scores"), &Value::Array(vec![Value::Int(1), Value::Null, Value::Int(3)]));
    assert_eq!(col(a, "blob"), &Value::Bytes(vec![0, 0xff, b'h', b'i']));
    assert_eq!(col(a, "active"), &Value::Bool(true));
    assert_eq!(col(a, "ratio"), &Value::Float(0.25));
}

#[test]
fn debezium_decimal_double_and_string_modes_are_exact() {
    // double mode: the JSON number 4.82 taken from its text, never via f64.
    assert_eq!(col(&change("debezium_decimal_double_mode.json").after, "price"), &dec(482, 2));
    assert_eq!(col(&change("debezium_decimal_string_mode.json").after, "price"), &dec(123_450, 2));
    assert_eq!(col(&change("debezium_decimal_string_nan.json").after, "price"), &Value::Special(Special::NaN));
}

#[test]
fn debezium_toast_placeholder_is_unavailable_never_text() {
    let c = change("debezium_toast.json");
    for column in ["name", "avatar", "nicknames", "profile"] {
        assert_eq!(col(&c.after, column), &Value::Unavailable, "{column}");
    }
    assert_eq!(col(&c.after, "email"), &text("ana@example.com"));
}

#[test]
fn debezium_non_changes_are_skipped() {
    assert_eq!(skipped("debezium_heartbeat_with_schema.json"), Skipped::Heartbeat);
    assert_eq!(skipped("debezium_heartbeat_no_schema.json"), Skipped::Heartbeat);
    assert_eq!(skipped("debezium_tx_begin.json"), Skipped::TransactionBoundary);
    assert_eq!(skipped("debezium_tx_end.json"), Skipped::TransactionBoundary);
    assert_eq!(skipped("tombstone_empty.txt"), Skipped::Tombstone);
    assert_eq!(skipped("tombstone_whitespace.txt"), Skipped::Tombstone);
    assert_eq!(Decoder::default().decode("null").unwrap(), Decoded::Skipped(Skipped::Tombstone));
    assert_eq!(
        Decoder::default().decode(r#"{"schema":null,"payload":null}"#).unwrap(),
        Decoded::Skipped(Skipped::Tombstone)
    );
}

#[test]
fn unknown_tables_are_skipped_or_rejected() {
    assert_eq!(skipped("debezium_unknown_table.json"), Skipped::UnknownTable);
    let strict = Decoder::new(DecodeOptions { reject_unknown_tables: true, ..DecodeOptions::default() });
    let e = strict.decode(&fixture("debezium_unknown_table.json")).unwrap_err();
    assert_eq!(e.code(), "table.unknown");
    // Known tables still decode under the strict decoder.
    assert!(matches!(strict.decode(&fixture("debezium_create_with_schema.json")), Ok(Decoded::Change(_))));
}

#[test]
fn schema_blocks_are_cached_per_distinct_block() {
    let decoder = Decoder::default();
    for _ in 0..3 {
        for name in ["debezium_create_with_schema.json", "debezium_update_with_schema.json"] {
            decoder.decode(&fixture(name)).unwrap();
        }
    }
    assert_eq!(decoder.cached_schemas(), 2);
}

#[test]
fn cached_schema_path_decodes_exactly_like_the_first_sight() {
    // The first decode parses the block; later ones match it byte for byte and skip it.
    let mut checked = 0;
    for entry in std::fs::read_dir(fixtures_dir()).unwrap() {
        let body = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        if !body.starts_with(r#"{"schema":{"#) {
            continue;
        }
        let decoder = Decoder::default();
        let first = format!("{:?}", decoder.decode(&body));
        let again = format!("{:?}", decoder.decode(&body));
        assert_eq!(first, again);
        checked += 1;
    }
    assert!(checked >= 15, "{checked}");
}

// ---------- AWS DMS ----------

#[test]
fn dms_insert_uses_the_lsn_stream_position() {
    let c = change("dms_insert.json");
    assert_eq!(c.format, InputFormat::Dms);
    assert_eq!(c.op, Op::Create);
    assert_eq!(c.table.to_string(), "public.orders");
    assert_eq!(c.version.0, (1 << 32) + 0x6EB3_F1A0);
    assert_eq!(c.commit_time_us, Some(JAN_1_2024_US + 36_000_500_000));
    assert_eq!(c.transaction_id.as_deref(), Some("771"));
    assert_eq!(col(&c.after, "total"), &dec(59135, 2));
    assert_eq!(col(&c.after, "order_date"), &Value::Timestamp(JAN_1_2024_US + 36_000_123_456));
}

#[test]
fn dms_update_with_before_image() {
    let c = change("dms_update_before_image.json");
    assert_eq!(c.op, Op::Update);
    assert_eq!(c.version.0, 23_803_720);
    assert_eq!(c.commit_time_us, None);
    assert_eq!(col(&c.before, "status"), &text("pending"));
    assert_eq!(c.before.as_ref().unwrap().len(), 2);
    assert_eq!(col(&c.after, "status"), &text("paid"));
    assert_eq!(col(&c.after, "total"), &dec(59135, 2));
    // Space-separated, offset-less DMS timestamps are UTC.
    assert_eq!(col(&c.after, "order_date"), &Value::Timestamp(JAN_1_2024_US + 36_000_123_456));
}

#[test]
fn dms_delete_falls_back_to_commit_timestamp() {
    let c = change("dms_delete.json");
    assert_eq!(c.op, Op::Delete);
    assert!(c.after.is_none());
    assert_eq!(col(&c.before, "price"), &dec(482, 2));
    assert_eq!(col(&c.before, "quantity"), &Value::Int(3));
    let commit = JAN_1_2024_US + 39_599_250_000;
    assert_eq!(c.commit_time_us, Some(commit));
    assert_eq!(c.version.0, commit as u64);
}

#[test]
fn dms_load_without_position_ranks_below_every_change() {
    let c = change("dms_load.json");
    assert_eq!(c.op, Op::Read);
    // A full-load row without position: version 1, below every CDC change of the row
    // (docs/versions.md).
    assert_eq!(c.version.0, 1);
    assert_eq!(c.transaction_id, None);
    // 4.8 at the column's scale 2.
    assert_eq!(col(&c.after, "price"), &dec(480, 2));
    assert_eq!(col(&c.after, "created_at"), &Value::Timestamp(JAN_1_2024_US - 1_000_000));
}

#[test]
fn dms_control_and_omitted_nulls() {
    assert_eq!(skipped("dms_control.json"), Skipped::DmsControl);
    let c = change("dms_omitted_nulls.json");
    let after = c.after.as_ref().unwrap();
    assert_eq!(after.len(), 3);
    assert_eq!(after.get("city"), None, "omitted, not null");
    // No stream-position: commit-timestamp.
    assert_eq!(c.version.0, (JAN_1_2024_US + 43_199_000_001) as u64);
    // A position in no known form is refused, never replaced by a timestamp.
    let body = fixture("dms_insert.json").replace(r#""stream-position": ""#, r#""stream-position": "x"#);
    assert_ne!(body, fixture("dms_insert.json"));
    assert_eq!(Decoder::default().decode(&body).unwrap_err().code(), "envelope.bad_field");
}

// ---------- Platform envelope ----------

#[test]
fn platform_insert_ignores_unknown_fields() {
    let c = change("platform_insert.json");
    assert_eq!(c.format, InputFormat::Platform);
    assert_eq!(
        (c.table.to_string(), c.mirror.sales().expect("a sales mirror")),
        ("SalesOrder".to_owned(), SourceTable::Orders)
    );
    assert_eq!(c.op, Op::Create);
    let ts = JAN_1_2024_US + 36_000_123_456;
    assert_eq!(c.version.0, ts as u64);
    assert_eq!(c.commit_time_us, Some(ts));
    assert_eq!(c.correlation_id.as_deref(), Some("corr-42"));
    assert_eq!(col(&c.after, "total"), &dec(59135, 2));
    assert_eq!(col(&c.after, "channel"), &text("web"));
}

#[test]
fn platform_update_delete_and_nested_forms() {
    let u = change("platform_update.json");
    assert_eq!(
        (u.op, u.table.name.as_str(), u.mirror.sales().expect("a sales mirror")),
        (Op::Update, "Product", SourceTable::Products)
    );
    assert_eq!(col(&u.before, "price"), &dec(450, 2));
    assert_eq!(col(&u.after, "price"), &dec(482, 2));

    let d = change("platform_delete.json");
    assert_eq!((d.op, d.table.to_string().as_str()), (Op::Delete, "public.order_items"));
    assert_eq!(d.correlation_id, None);
    assert_eq!(col(&d.before, "price"), &dec(482, 2));

    let n = change("platform_nested.json");
    assert_eq!(
        (n.op, n.table.name.as_str(), n.mirror.sales().expect("a sales mirror")),
        (Op::Create, "Customer", SourceTable::Customers)
    );
    assert_eq!(n.correlation_id.as_deref(), Some("corr-44"));
    assert_eq!(col(&n.after, "city"), &Value::Null);
    assert_eq!(n.version.0, (JAN_1_2024_US + 43_200_000_000) as u64);
}

// ---------- Wrappers ----------

#[test]
fn sns_and_eventbridge_wrappers_are_unwrapped() {
    assert_customer_create(&change("sns_wrapped.json"));
    assert_customer_create(&change("eventbridge_sns_nested.json"));
    let e = change("eventbridge_wrapped.json");
    assert_eq!(e.format, InputFormat::Platform);
    // The detail has no eventTimestamp: EventBridge's `time` stands in.
    assert_eq!(e.version.0, (JAN_1_2024_US + 36_300_000_000) as u64);
}

// ---------- Poison ----------

#[test]
fn poison_bodies_have_stable_codes() {
    let cases = [
        ("poison_not_json.txt", "body.not_json"),
        ("poison_unknown_envelope.json", "envelope.unknown"),
        ("poison_bad_base64_decimal.json", "value.bad_decimal"),
        ("poison_decimal_overflow.json", "value.decimal_overflow"),
        ("poison_bad_timestamp.json", "value.bad_timestamp"),
        ("poison_type_mismatch.json", "value.type_mismatch"),
        ("poison_bad_schema.json", "schema.invalid"),
        ("poison_unknown_op.json", "op.unknown"),
        ("poison_missing_lsn.json", "version.missing"),
        ("poison_missing_source.json", "envelope.missing_field"),
        ("poison_wrapper_too_deep.json", "envelope.too_deep"),
        ("poison_platform_missing_timestamp.json", "envelope.missing_field"),
    ];
    for (name, code) in cases {
        let e = error(name);
        assert_eq!(e.code(), code, "{name}: {e}");
        assert_eq!(e.class(), ErrorClass::Poison);
        assert!(ERROR_CODES.contains(&e.code()));
    }
}

#[test]
fn errors_never_echo_row_values() {
    let e = error("poison_type_mismatch.json");
    assert_eq!(e.to_string(), "column `id`: JSON type does not match the column type");
    assert!(!e.to_string().contains("seventy"));
    let e = error("poison_bad_timestamp.json");
    assert!(!e.to_string().contains("2024-13"));
}

#[test]
fn odd_bodies_do_not_panic() {
    let decoder = Decoder::default();
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_obj =
        format!(r#"{{"op":"c","source":{{"schema":"public","table":"orders","lsn":1}},"after":{{"x":{deep}}}}}"#);
    let deep_nat = format!(
        r#"{{"op":"c","source":{{"schema":"public","table":"orders","lsn":1}},"after":{{"x":{}1{}}}}}"#,
        "[".repeat(100),
        "]".repeat(100)
    );
    for body in [
        "[]",
        "42",
        "\"x\"",
        "{",
        "{}",
        "{\"op\":5}",
        &deep,
        &deep_obj,
        &deep_nat,
        "{\"Type\":\"Notification\"}",
        "{\"detail-type\":\"x\",\"detail\":5}",
        "{\"metadata\":{}}",
        "{\"payload\":[]}",
        r#"{"op":"c","source":{"table":"orders","lsn":-1},"after":{}}"#,
        r#"{"op":"c","source":{"table":"orders","lsn":1,"ts_ms":9223372036854775807},"after":{}}"#,
    ] {
        if let Err(e) = decoder.decode(body) {
            assert!(ERROR_CODES.contains(&e.code()));
        }
    }
}

// ---------- Properties ----------

fn any_decimal() -> impl Strategy<Value = (i128, u32)> {
    // Every i128 a NUMERIC can carry (38 digits) and some beyond, any scale 0..=18.
    (prop_oneof![any::<i128>(), -10i128.pow(12)..10i128.pow(12), Just(0i128), Just(-1i128)], 0u32..=18)
}

proptest! {
    #[test]
    fn base64_decimal_round_trips((unscaled, scale) in any_decimal()) {
        let b64 = encoding::decimal_to_base64(unscaled);
        prop_assert_eq!(encoding::decimal_from_base64(&b64, i64::from(scale)), Ok(Decimal::new(unscaled, scale)));
    }

    #[test]
    fn decimal_text_round_trips((unscaled, scale) in any_decimal()) {
        let d = Decimal::new(unscaled, scale);
        prop_assert_eq!(encoding::parse_decimal_text(&d.to_string()), Ok(d));
    }

    #[test]
    fn precise_decimal_column_round_trips_through_the_decoder((unscaled, scale) in any_decimal()) {
        let body = format!(
            r#"{{"schema":{{"type":"struct","fields":[{{"type":"struct","fields":[{{"type":"bytes","optional":true,"name":"org.apache.kafka.connect.data.Decimal","parameters":{{"scale":"{scale}"}},"field":"price"}}],"optional":true,"field":"after"}}]}},"payload":{{"op":"c","source":{{"schema":"public","table":"products","lsn":7}},"after":{{"price":"{}"}}}}}}"#,
            encoding::decimal_to_base64(unscaled)
        );
        let Decoded::Change(c) = Decoder::default().decode(&body).unwrap() else { panic!("not a change") };
        prop_assert_eq!(c.after.unwrap().get("price").cloned(), Some(Value::Decimal(Decimal::new(unscaled, scale))));
    }

    #[test]
    fn micro_timestamps_match_chrono(us in -62_135_596_800_000_000i64..253_402_300_799_999_999) {
        let iso = chrono::DateTime::from_timestamp_micros(us).unwrap().to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
        prop_assert_eq!(encoding::parse_iso_timestamp(&iso), Ok(us));
        let body = format!(r#"{{"op":"c","source":{{"schema":"public","table":"orders","lsn":1}},"after":{{"order_date":{us},"status":"{iso}"}}}}"#);
        let Decoded::Change(c) = Decoder::default().decode(&body).unwrap() else { panic!("not a change") };
        prop_assert_eq!(c.after.unwrap().get("order_date").cloned(), Some(Value::Timestamp(us)));
    }

    #[test]
    fn millis_and_nanos_scale_to_micros(ms in -9_000_000_000_000_000i64..9_000_000_000_000_000) {
        use cdc_core::decode::encoding::{FieldType, decode_value};
        let raw = serde_json::value::RawValue::from_string(ms.to_string()).unwrap();
        let expected_ms = match encoding::timestamp_special(ms) {
            Some(s) => Ok(Value::Special(s)),
            None => ms.checked_mul(1000).map(Value::Timestamp).ok_or(ValueError::BadTimestamp),
        };
        prop_assert_eq!(decode_value(&FieldType::TimestampMillis, None, &raw), expected_ms);
        prop_assert_eq!(decode_value(&FieldType::TimestampNanos, None, &raw), Ok(Value::Timestamp(ms.div_euclid(1000))));
    }

    #[test]
    fn arbitrary_strings_never_panic(body in ".{0,200}") {
        let _ = Decoder::default().decode(&body);
    }
}

// ---------- Flattened Debezium records (ExtractNewRecordState) ----------

/// An `orders` row flattened with `add.fields=op,db,schema,table,lsn,source.ts_ms,txId` and
/// `delete.handling.mode=rewrite`: the row has a `status` column.
fn flattened(extra: &str) -> String {
    format!(
        r#"{{"id":9001,"customer_id":1001,"order_date":1704103200000000,"status":"shipped","total":"591.35"{extra}}}"#
    )
}

#[test]
fn flattened_records_decode_exactly_also_with_a_status_column() {
    let meta = r#","__op":"u","__db":"shop","__schema":"public","__table":"orders","__lsn":24023128,"__source_ts_ms":1704103200123,"__txId":771,"__ts_ms":1704103299999,"__deleted":"false""#;
    let decoder = Decoder::default();
    let Decoded::Change(c) = decoder.decode(&flattened(meta)).unwrap() else { panic!("not a change") };
    assert_eq!(
        (c.op, c.mirror.sales().expect("a sales mirror"), c.table.to_string().as_str()),
        (Op::Update, SourceTable::Orders, "shop.public.orders")
    );
    assert_eq!(c.version.0, 24023128);
    assert_eq!(c.commit_time_us, Some(1_704_103_200_123_000), "source.ts_ms, not the processing ts_ms");
    assert_eq!(c.transaction_id.as_deref(), Some("771"));
    let after = c.after.as_ref().unwrap();
    assert_eq!(after.len(), 5, "no __ member is a column");
    assert_eq!(after.get("status"), Some(&text("shipped")));
    assert_eq!(after.get("total"), Some(&dec(59135, 2)));

    // With a schema block (the row struct itself), and through the cached-schema path.
    let schema = r#"{"type":"struct","fields":[{"type":"int64","optional":false,"field":"id"},{"type":"int64","optional":true,"field":"customer_id"},{"type":"int64","optional":true,"name":"io.debezium.time.MicroTimestamp","version":1,"field":"order_date"},{"type":"string","optional":true,"field":"status"},{"type":"bytes","optional":true,"name":"org.apache.kafka.connect.data.Decimal","version":1,"parameters":{"scale":"2"},"field":"total"},{"type":"string","optional":true,"field":"__op"},{"type":"string","optional":true,"field":"__schema"},{"type":"string","optional":true,"field":"__table"},{"type":"int64","optional":true,"field":"__lsn"},{"type":"string","optional":true,"field":"__deleted"}],"optional":false,"name":"shop.public.orders.Value"}"#;
    let body = format!(
        r#"{{"schema":{schema},"payload":{{"id":9001,"customer_id":1001,"order_date":1704103200000000,"status":"shipped","total":"5v8=","__op":"c","__schema":"public","__table":"orders","__lsn":7,"__deleted":"false"}}}}"#
    );
    for _ in 0..2 {
        let Decoded::Change(c) = decoder.decode(&body).unwrap() else { panic!("not a change") };
        assert_eq!((c.op, c.version.0), (Op::Create, 7));
        assert_eq!(col(&c.after, "total"), &dec(-6401, 2), "base64 0xE6FF by the row schema");
        assert_eq!(col(&c.after, "order_date"), &Value::Timestamp(1_704_103_200_000_000));
    }
}

#[test]
fn flattened_deletes_and_missing_metadata() {
    let decoder = Decoder::default();
    // delete.handling.mode=rewrite: the before-image with __deleted "true".
    let delete = r#","__op":"d","__schema":"public","__table":"orders","__lsn":24023200,"__deleted":"true""#;
    let Decoded::Change(d) = decoder.decode(&flattened(delete)).unwrap() else { panic!("not a change") };
    assert_eq!((d.op, d.after.is_none()), (Op::Delete, true));
    assert_eq!(col(&d.before, "id"), &Value::Int(9001));
    // Without __op, __deleted alone decides: "true" a delete, "false" an upsert.
    let no_op = r#","__schema":"public","__table":"orders","__lsn":5,"__deleted":"true""#;
    assert!(matches!(decoder.decode(&flattened(no_op)), Ok(Decoded::Change(c)) if c.op == Op::Delete));
    // `source.NAME` form of add.fields.
    let source_form = r#","__op":"r","__source_schema":"public","__source_table":"orders","__source_lsn":9"#;
    assert!(
        matches!(decoder.decode(&flattened(source_form)), Ok(Decoded::Change(c)) if c.version == Version::SNAPSHOT)
    );
    let streamed = r#","__op":"u","__source_schema":"public","__source_table":"orders","__source_lsn":9"#;
    assert!(matches!(decoder.decode(&flattened(streamed)), Ok(Decoded::Change(c)) if c.version.0 == 9));
    // Another schema's table is not a sales table.
    let other = r#","__op":"c","__schema":"archive","__table":"orders","__lsn":5"#;
    assert_eq!(decoder.decode(&flattened(other)).unwrap(), Decoded::Skipped(Skipped::UnknownTable));
    // Refused by name: no __lsn (no version), no table identity, contradictions, bad values.
    for (extra, code) in [
        (r#","__op":"c","__schema":"public","__table":"orders""#, "version.missing"),
        (r#","__op":"c","__table":"orders","__lsn":5"#, "envelope.missing_field"),
        (r#","__deleted":"false""#, "envelope.missing_field"),
        (r#","__schema":"public","__table":"orders","__lsn":5"#, "envelope.missing_field"),
        (r#","__op":"c","__schema":"public","__table":"orders","__lsn":5,"__deleted":"true""#, "envelope.bad_field"),
        (r#","__op":"c","__schema":"public","__table":"orders","__lsn":5,"__deleted":true"#, "envelope.bad_field"),
        (r#","__op":"c","__schema":"public","__table":"orders","__lsn":"5""#, "envelope.bad_field"),
        (r#","__op":"x","__schema":"public","__table":"orders","__lsn":5"#, "op.unknown"),
        (r#","__op":"c","__schema":"public","__table":"orders","__lsn":9223372036854775808"#, "version.implausible"),
    ] {
        let e = decoder.decode(&flattened(extra)).unwrap_err();
        assert_eq!((e.code(), e.class()), (code, ErrorClass::Poison), "{extra}");
    }
    // Without __lsn the row is never taken for a transaction marker because of its status.
    assert_eq!(
        decoder.decode(&flattened(r#","__deleted":"false","__op":"u""#)).unwrap_err().code(),
        "envelope.missing_field"
    );
}

#[test]
fn tables_are_identified_by_schema_and_exact_name() {
    let decoder = Decoder::default();
    let body = |schema: &str, table: &str| {
        format!(
            r#"{{"op":"c","source":{{"db":"shop","schema":"{schema}","table":"{table}","lsn":5}},"after":{{"id":1}}}}"#
        )
    };
    assert!(matches!(decoder.decode(&body("public", "customers")), Ok(Decoded::Change(_))));
    for (schema, table) in [
        ("inventory", "customers"),
        ("lineage", "order"),
        ("archive", "orders"),
        ("public", "ORDERS"),
        ("public", "customer"),
    ] {
        assert_eq!(
            decoder.decode(&body(schema, table)).unwrap(),
            Decoded::Skipped(Skipped::UnknownTable),
            "{schema}.{table}"
        );
    }
    // Logged once per table per decoder, names only.
    let logged = decoder.take_new_unmapped_tables();
    assert_eq!(logged.len(), 5);
    decoder.decode(&body("archive", "orders")).unwrap();
    assert!(decoder.take_new_unmapped_tables().is_empty());
    let strict = Decoder::new(DecodeOptions { reject_unknown_tables: true, ..DecodeOptions::default() });
    assert_eq!(strict.decode(&body("archive", "orders")).unwrap_err().code(), "table.unknown");
}
