use super::*;
use serde_json::Value as J;

const INSERT: &str = r#"{"action":"I","xid":744,"timestamp":"2026-11-22 02:14:32.020628+00","lsn":"0/1932850","schema":"public","table":"products","columns":[{"name":"id","type":"bigint","value":1,"optional":false},{"name":"name","type":"text","value":"A \"b\"","optional":true},{"name":"category","type":"text","value":"cat","optional":true},{"name":"price","type":"numeric(12,2)","value":4.82,"optional":true},{"name":"created_at","type":"timestamp with time zone","value":"2026-11-22 02:14:32.019849+00","optional":true}],"pk":[{"name":"id","type":"bigint"}]}"#;

fn convert(conv: &mut Converter, data: &str) -> Vec<Event> {
    let record: Record<'_> = serde_json::from_str(data).unwrap();
    conv.convert(&record, 1_800_000_000_123_456).unwrap()
}

fn body(event: &Event) -> J {
    serde_json::from_str(&event.body).unwrap()
}

#[test]
fn decimal_bytes_are_minimal_twos_complement() {
    assert_eq!(decimal_to_base64(482), "AeI=");
    assert_eq!(decimal_to_base64(0), "AA==");
    assert_eq!(decimal_to_base64(127), "fw==");
    assert_eq!(decimal_to_base64(128), "AIA=");
    assert_eq!(decimal_to_base64(-1), "/w==");
    assert_eq!(decimal_to_base64(-100), "nA==");
    assert_eq!(decimal_to_base64(-128), "gA==");
    assert_eq!(decimal_to_base64(-129), "/38=");
    // 123456789012.34 → 12345678901234 = 0x0B3A73CE2FF2
    assert_eq!(decimal_to_base64(12_345_678_901_234), "Czpzzi/y");
}

#[test]
fn times_and_intervals_become_debezium_microseconds() {
    assert_eq!(PgEncoding::from_pg("time without time zone"), PgEncoding::MicroTime);
    assert_eq!(PgEncoding::from_pg("time(3) without time zone"), PgEncoding::MicroTime);
    assert_eq!(PgEncoding::from_pg("time with time zone"), PgEncoding::Text);
    assert_eq!(PgEncoding::from_pg("interval"), PgEncoding::MicroDuration);
    assert_eq!(parse_time_us("04:05:06.789"), Some(((4 * 60 + 5) * 60 + 6) * 1_000_000 + 789_000));
    assert_eq!(parse_time_us("24:00:00"), Some(86_400_000_000));
    for bad in ["4:5", "04:05:06.1234567", "25:00:00", "aa:00:00", "04:05:-6"] {
        assert_eq!(parse_time_us(bad), None, "{bad}");
    }
    let day = 86_400_000_000i64;
    assert_eq!(parse_interval_us("1 year 2 mons 3 days 04:05:06.5"), Some(14 * MONTH_US + 3 * day + 14_706_500_000));
    assert_eq!(parse_interval_us("-1 days +02:00:00"), Some(-day + 7_200_000_000));
    assert_eq!(parse_interval_us("-00:00:01.5"), Some(-1_500_000));
    assert_eq!(parse_interval_us("1 mon"), Some(MONTH_US));
    assert_eq!(parse_interval_us("100:00:00"), Some(360_000_000_000));
    for bad in ["", "1 fortnight", "P1D", "1"] {
        assert_eq!(parse_interval_us(bad), None, "{bad}");
    }
}

#[test]
fn timestamps_parse_and_print_like_debezium() {
    let us = parse_timestamptz_us("2026-11-22 02:14:32.019849+00").unwrap();
    assert_eq!(zoned_iso(us), "2026-11-22T02:14:32.019849Z");
    assert_eq!(parse_timestamptz_us("2026-11-22 07:44:32.019849+05:30"), Some(us));
    assert_eq!(zoned_iso(parse_timestamptz_us("2026-11-22 02:14:32+00").unwrap()), "2026-11-22T02:14:32Z");
    assert_eq!(zoned_iso(parse_timestamptz_us("2026-11-22 02:14:32.5-01").unwrap()), "2026-11-22T03:14:32.5Z");
    assert_eq!(parse_timestamp_us("1970-01-01 00:00:01.000002"), Some(1_000_002));
}

#[test]
fn insert_becomes_create_with_schema_envelope() {
    let mut conv = Converter::new("cdc", "sales");
    let events = convert(&mut conv, INSERT);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].lsn, 0x1932850);
    assert_eq!(events[0].op, "c");
    let v = body(&events[0]);
    let p = &v["payload"];
    assert_eq!(p["op"], "c");
    assert_eq!(p["before"], J::Null);
    assert_eq!(p["after"]["id"], 1);
    assert_eq!(p["after"]["name"], "A \"b\"");
    assert_eq!(p["after"]["price"], "AeI=");
    assert_eq!(p["after"]["created_at"], "2026-11-22T02:14:32.019849Z");
    let s = &p["source"];
    assert_eq!(s["connector"], "postgresql");
    assert_eq!(s["name"], "cdc");
    assert_eq!(s["db"], "sales");
    assert_eq!(s["schema"], "public");
    assert_eq!(s["table"], "products");
    assert_eq!(s["txId"], 744);
    assert_eq!(s["lsn"], 0x1932850u64);
    assert_eq!(s["snapshot"], "false");
    assert_eq!(s["ts_us"], 1_795_313_672_020_628i64);
    assert_eq!(s["ts_ms"], 1_795_313_672_020i64);
    assert_eq!(p["ts_ms"], 1_800_000_000_123i64);

    let schema = &v["schema"];
    assert_eq!(schema["name"], "cdc.public.products.Envelope");
    let fields = schema["fields"].as_array().unwrap();
    let names: Vec<&str> = fields.iter().map(|f| f["field"].as_str().unwrap()).collect();
    assert_eq!(names, ["before", "after", "source", "transaction", "op", "ts_ms", "ts_us", "ts_ns"]);
    let after = &fields[1];
    assert_eq!(after["name"], "cdc.public.products.Value");
    let price = after["fields"].as_array().unwrap().iter().find(|f| f["field"] == "price").unwrap();
    assert_eq!(price["type"], "bytes");
    assert_eq!(price["name"], "org.apache.kafka.connect.data.Decimal");
    assert_eq!(price["parameters"]["scale"], "2");
    assert_eq!(price["parameters"]["connect.decimal.precision"], "12");
    let created = after["fields"].as_array().unwrap().iter().find(|f| f["field"] == "created_at").unwrap();
    assert_eq!(created["name"], "io.debezium.time.ZonedTimestamp");
    assert_eq!(created["type"], "string");
    let id = &after["fields"][0];
    assert_eq!((id["type"].as_str(), id["optional"].as_bool()), (Some("int64"), Some(false)));
    assert_eq!(fields[2]["name"], "io.debezium.connector.postgresql.Source");
}

#[test]
fn update_carries_key_only_before_and_negative_decimal() {
    let mut conv = Converter::new("cdc", "sales");
    convert(&mut conv, INSERT);
    let update = r#"{"action":"U","xid":745,"timestamp":"2026-11-22 02:14:32.021758+00","lsn":"0/1932978","schema":"public","table":"products","columns":[{"name":"id","type":"bigint","value":1,"optional":false},{"name":"name","type":"text","value":"x","optional":true},{"name":"category","type":"text","value":"cat","optional":true},{"name":"price","type":"numeric(12,2)","value":-1.00,"optional":true},{"name":"created_at","type":"timestamp with time zone","value":null,"optional":true}],"identity":[{"name":"id","type":"bigint","value":1}],"pk":[{"name":"id","type":"bigint"}]}"#;
    let events = convert(&mut conv, update);
    assert_eq!(events.len(), 1);
    let p = &body(&events[0])["payload"];
    assert_eq!(p["op"], "u");
    assert_eq!(p["before"], serde_json::json!({"id": 1}));
    assert_eq!(p["after"]["price"], "nA==");
    assert_eq!(p["after"]["created_at"], J::Null);
    assert_eq!(p["source"]["lsn"], 0x1932978u64);
}

#[test]
fn key_change_becomes_delete_then_create() {
    let mut conv = Converter::new("cdc", "sales");
    convert(&mut conv, INSERT);
    let update = r#"{"action":"U","xid":746,"timestamp":"2026-11-22 02:16:51.991293+00","lsn":"0/1955CB0","schema":"public","table":"products","columns":[{"name":"id","type":"bigint","value":2,"optional":false},{"name":"name","type":"text","value":"x","optional":true},{"name":"category","type":"text","value":"cat","optional":true},{"name":"price","type":"numeric(12,2)","value":4.82,"optional":true},{"name":"created_at","type":"timestamp with time zone","value":null,"optional":true}],"identity":[{"name":"id","type":"bigint","value":1}],"pk":[{"name":"id","type":"bigint"}]}"#;
    let events = convert(&mut conv, update);
    let ops: Vec<&str> = events.iter().map(|e| e.op).collect();
    assert_eq!(ops, ["d", "c"]);
    assert_eq!(body(&events[0])["payload"]["before"], serde_json::json!({"id": 1}));
    assert_eq!(body(&events[1])["payload"]["after"]["id"], 2);
}

#[test]
fn delete_and_truncate_need_known_columns() {
    let mut conv = Converter::new("cdc", "sales");
    let delete = r#"{"action":"D","xid":746,"timestamp":"2026-11-22 02:14:32.021908+00","lsn":"0/1932BB0","schema":"public","table":"products","identity":[{"name":"id","type":"bigint","value":1}],"pk":[{"name":"id","type":"bigint"}]}"#;
    let record: Record<'_> = serde_json::from_str(delete).unwrap();
    assert!(matches!(conv.convert(&record, 0), Err(ConvertError::UnknownTable { .. })));
    conv.add_table(TableDef::new(
        "cdc",
        "public",
        "products",
        vec![
            ColumnDef::new("id", "bigint", false),
            ColumnDef::new("name", "text", true),
            ColumnDef::new("category", "text", true),
            ColumnDef::new("price", "numeric(12,2)", true),
            ColumnDef::new("created_at", "timestamp with time zone", true),
        ],
        vec!["id".into()],
    ));
    let events = convert(&mut conv, delete);
    let p = &body(&events[0])["payload"];
    assert_eq!(p["op"], "d");
    assert_eq!(p["before"], serde_json::json!({"id": 1}));
    assert_eq!(p["after"], J::Null);

    let truncate = r#"{"action":"T","xid":747,"timestamp":"2026-11-22 02:14:32.023047+00","lsn":"0/1933AB8","schema":"public","table":"products"}"#;
    let events = convert(&mut conv, truncate);
    let p = &body(&events[0])["payload"];
    assert_eq!(p["op"], "t");
    assert_eq!((p["before"].clone(), p["after"].clone()), (J::Null, J::Null));
    assert_eq!(p["source"]["table"], "products");
}

#[test]
fn begin_and_commit_yield_nothing_and_commit_sets_sequence() {
    let mut conv = Converter::new("cdc", "sales");
    assert!(convert(&mut conv, r#"{"action":"B","xid":1,"lsn":"0/10"}"#).is_empty());
    assert!(convert(&mut conv, r#"{"action":"C","xid":1,"lsn":"0/20"}"#).is_empty());
    let events = convert(&mut conv, INSERT);
    let seq = body(&events[0])["payload"]["source"]["sequence"].as_str().unwrap().to_string();
    assert_eq!(seq, format!("[\"32\",\"{}\"]", 0x1932850));
}

#[test]
fn snapshot_read_from_text_values() {
    let mut conv = Converter::new("cdc", "sales");
    convert(&mut conv, INSERT);
    let values = vec![
        Some("7".to_string()),
        Some("n".to_string()),
        None,
        Some("0.10".to_string()),
        Some("2026-11-22 02:14:32+00".to_string()),
    ];
    let event = conv.snapshot_event("public", "products", &values, 99, "true", 5_000).unwrap();
    let p = &body(&event)["payload"];
    assert_eq!(p["op"], "r");
    assert_eq!(p["source"]["snapshot"], "true");
    assert_eq!(p["source"]["lsn"], 99);
    assert_eq!(p["after"]["price"], "Cg==");
    assert_eq!(p["after"]["category"], J::Null);
}

#[test]
fn update_from_text_values_is_a_streamed_update_at_the_position() {
    let mut conv = Converter::new("cdc", "sales");
    convert(&mut conv, INSERT);
    let values = vec![Some("7".to_string()), Some("n".to_string()), None, Some("0.10".to_string()), None];
    let event = conv.update_event("public", "products", &values, 99, 5_000).unwrap();
    let p = &body(&event)["payload"];
    assert_eq!((p["op"].as_str(), p["source"]["snapshot"].as_str()), (Some("u"), Some("false")));
    assert_eq!((p["source"]["lsn"].as_u64(), event.lsn), (Some(99), 99));
    assert_eq!((p["before"].clone(), p["after"]["price"].clone()), (J::Null, J::from("Cg==")));
}

#[test]
fn field_types_from_postgres_names() {
    assert_eq!(PgEncoding::from_pg("numeric(12,2)"), PgEncoding::Decimal { precision: 12, scale: 2 });
    assert_eq!(PgEncoding::from_pg("numeric"), PgEncoding::VariableDecimal);
    assert_eq!(PgEncoding::from_pg("timestamp with time zone"), PgEncoding::ZonedTimestamp);
    assert_eq!(PgEncoding::from_pg("timestamp(3) with time zone"), PgEncoding::ZonedTimestamp);
    assert_eq!(PgEncoding::from_pg("timestamp without time zone"), PgEncoding::MicroTimestamp);
    assert_eq!(PgEncoding::from_pg("character varying(20)"), PgEncoding::Text);
    assert_eq!(PgEncoding::from_pg("integer"), PgEncoding::Int32);
}

#[test]
fn schema_names_are_the_connectors_and_the_decoders() {
    let named = [
        (PgEncoding::Decimal { precision: 12, scale: 2 }, "bytes", "org.apache.kafka.connect.data.Decimal"),
        (PgEncoding::VariableDecimal, "struct", "io.debezium.data.VariableScaleDecimal"),
        (PgEncoding::ZonedTimestamp, "string", "io.debezium.time.ZonedTimestamp"),
        (PgEncoding::MicroTimestamp, "int64", "io.debezium.time.MicroTimestamp"),
        (PgEncoding::Date, "int32", "io.debezium.time.Date"),
        (PgEncoding::MicroTime, "int64", "io.debezium.time.MicroTime"),
        (PgEncoding::MicroDuration, "int64", "io.debezium.time.MicroDuration"),
        (PgEncoding::Uuid, "string", "io.debezium.data.Uuid"),
        (PgEncoding::Json, "string", "io.debezium.data.Json"),
    ];
    for (ty, connect, name) in named {
        let (t, n, _) = ty.schema_parts();
        assert_eq!((t, n), (connect, Some(name)), "{ty:?}");
        if !matches!(ty, PgEncoding::Decimal { .. }) {
            assert_eq!(WireType::from_logical_name(name), Some(ty.wire()), "{ty:?}");
        }
    }
    let plain = [
        (PgEncoding::Int16, "int16"),
        (PgEncoding::Int32, "int32"),
        (PgEncoding::Int64, "int64"),
        (PgEncoding::Bool, "boolean"),
        (PgEncoding::Float32, "float"),
        (PgEncoding::Float64, "double"),
        (PgEncoding::Bytes, "bytes"),
        (PgEncoding::Text, "string"),
        (PgEncoding::Array(ArrayElement::Int32), "array"),
    ];
    for (ty, connect) in plain {
        assert_eq!(ty.schema_parts(), (connect, None, None), "{ty:?}");
    }
}

#[test]
fn array_text_parses_quotes_escapes_and_nulls() {
    let p = |t: &str| parse_pg_array(t).unwrap();
    let s = |v: &str| Some(v.to_string());
    assert_eq!(p("{}"), Vec::<Option<String>>::new());
    assert_eq!(p("{1,2,NULL}"), vec![s("1"), s("2"), None]);
    assert_eq!(p("{null,NuLl}"), vec![None, None]);
    assert_eq!(p(r#"{"a b","c\"d",NULL}"#), vec![s("a b"), s("c\"d"), None]);
    // A quoted NULL is the text "NULL", not SQL NULL.
    assert_eq!(p(r#"{"NULL",""}"#), vec![s("NULL"), s("")]);
    assert_eq!(p(r#"{"x,y","{z}","back\\slash"}"#), vec![s("x,y"), s("{z}"), s("back\\slash")]);
    assert_eq!(p(r#"{a\,b,c\ }"#), vec![s("a,b"), s("c ")]);
    assert_eq!(p("{ 1 , 2 }"), vec![s("1"), s("2")]);
    assert_eq!(p("{é,日本}"), vec![s("é"), s("日本")]);
    assert_eq!(p("[0:1]={7,8}"), vec![s("7"), s("8")]);
}

#[test]
fn malformed_and_multidimensional_arrays_are_refused() {
    for bad in
        ["{{1,2},{3,4}}", "[1:2][1:1]={{1},{2}}", "1,2", "{1,2", r#"{"a}"#, "{1,2}x", "{1,,2}", r#"{a"b}"#, "{1\\"]
    {
        assert!(parse_pg_array(bad).is_err(), "{bad}");
    }
    assert_eq!(parse_pg_array("{{1}}"), Err("multi-dimensional arrays are not supported"));
}

#[test]
fn bytea_hex_becomes_bytes() {
    assert_eq!(parse_bytea_hex("\\x"), Some(vec![]));
    assert_eq!(parse_bytea_hex("\\x0a0bFF"), Some(vec![0x0a, 0x0b, 0xff]));
    // wal2json's form: the prefix stripped.
    assert_eq!(parse_bytea_hex("00ff0a5c22"), Some(vec![0x00, 0xff, 0x0a, 0x5c, 0x22]));
    assert_eq!(parse_bytea_hex(""), Some(vec![]));
    assert_eq!(parse_bytea_hex("\\x0"), None);
    assert_eq!(parse_bytea_hex("\\xzz"), None);
    // The escape output format is refused, not misread.
    assert_eq!(parse_bytea_hex("\\001"), None);
    assert_eq!(parse_bytea_hex("00\\377"), None);
    let col = ColumnDef::new("blob", "bytea", true);
    assert_eq!(col.field_type, PgEncoding::Bytes);
    assert_eq!(encode_text(&col, "\\x0a0bff").unwrap(), J::String("Cgv/".into()));
    assert_eq!(encode_text(&col, "0a0bff").unwrap(), J::String("Cgv/".into()));
    assert!(encode_text(&col, "abc").is_err());
}

const EXTRAS: &str = r#"{"action":"I","xid":900,"timestamp":"2026-11-22 02:14:32.020628+00","lsn":"0/2000000","schema":"public","table":"extras","columns":[{"name":"id","type":"bigint","value":1,"optional":false},{"name":"tags","type":"text[]","value":"{\"a b\",\"c\\\"d\",NULL,x}","optional":true},{"name":"counts","type":"integer[]","value":"{1,NULL,-3}","optional":true},{"name":"prices","type":"numeric(12,4)[]","value":"{1.5000,-0.0001}","optional":true},{"name":"flags","type":"boolean[]","value":"{t,f}","optional":true},{"name":"refs","type":"uuid[]","value":"{}","optional":true},{"name":"blob","type":"bytea","value":"00ff","optional":true},{"name":"stamps","type":"timestamp with time zone[]","value":"{\"2026-01-01 00:00:00+00\"}","optional":true}],"pk":[{"name":"id","type":"bigint"}]}"#;

#[test]
fn arrays_and_bytes_get_debezium_schema_and_values() {
    let mut conv = Converter::new("cdc", "sales");
    let events = convert(&mut conv, EXTRAS);
    let v = body(&events[0]);
    let after = &v["payload"]["after"];
    assert_eq!(after["tags"], serde_json::json!(["a b", "c\"d", null, "x"]));
    assert_eq!(after["counts"], serde_json::json!([1, null, -3]));
    // 1.5000 at scale 4 = 15000 = 0x3A98; -0.0001 = -1 = 0xFF.
    assert_eq!(after["prices"], serde_json::json!(["Opg=", "/w=="]));
    assert_eq!(after["flags"], serde_json::json!([true, false]));
    assert_eq!(after["refs"], serde_json::json!([]));
    assert_eq!(after["blob"], "AP8=");
    // Arrays of types the connector does not map keep the text form, as before.
    assert_eq!(after["stamps"], "{\"2026-01-01 00:00:00+00\"}");

    let fields = v["schema"]["fields"][1]["fields"].as_array().unwrap().clone();
    let field = |name: &str| fields.iter().find(|f| f["field"] == name).unwrap().clone();
    assert_eq!(
        field("tags"),
        serde_json::json!({"type":"array","items":{"type":"string","optional":true},"optional":true,"field":"tags"})
    );
    assert_eq!(field("counts")["items"], serde_json::json!({"type":"int32","optional":true}));
    assert_eq!(
        field("prices")["items"],
        serde_json::json!({"type":"bytes","optional":true,"name":"org.apache.kafka.connect.data.Decimal","version":1,
            "parameters":{"scale":"4","connect.decimal.precision":"12"}})
    );
    assert_eq!(field("flags")["items"], serde_json::json!({"type":"boolean","optional":true}));
    assert_eq!(
        field("refs")["items"],
        serde_json::json!({"type":"string","optional":true,"name":"io.debezium.data.Uuid","version":1})
    );
    assert_eq!(field("blob"), serde_json::json!({"type":"bytes","optional":true,"field":"blob"}));
    assert_eq!(field("stamps"), serde_json::json!({"type":"string","optional":true,"field":"stamps"}));
    // The JSON converter writes `items` right after `type` (byte-for-byte schema blocks).
    assert!(
        events[0]
            .body
            .contains(r#"{"type":"array","items":{"type":"int32","optional":true},"optional":true,"field":"counts"}"#)
    );
}

#[test]
fn a_multidimensional_array_is_a_conversion_error() {
    let mut conv = Converter::new("cdc", "sales");
    let data = EXTRAS.replace(r#""{1,NULL,-3}""#, r#""{{1,2},{3,4}}""#);
    let record: Record<'_> = serde_json::from_str(&data).unwrap();
    match conv.convert(&record, 0) {
        Err(ConvertError::BadValue { column, reason, .. }) => {
            assert_eq!(column, "counts");
            assert!(reason.contains("multi-dimensional"), "{reason}");
        }
        other => panic!("expected BadValue, got {other:?}"),
    }
}

#[test]
fn field_types_of_arrays_and_bytea() {
    assert_eq!(PgEncoding::from_pg("bytea"), PgEncoding::Bytes);
    assert_eq!(PgEncoding::from_pg("smallint[]"), PgEncoding::Array(ArrayElement::Int16));
    assert_eq!(PgEncoding::from_pg("bigint[]"), PgEncoding::Array(ArrayElement::Int64));
    assert_eq!(PgEncoding::from_pg("character varying(20)[]"), PgEncoding::Array(ArrayElement::Text));
    assert_eq!(PgEncoding::from_pg("numeric[]"), PgEncoding::Array(ArrayElement::VariableDecimal));
    assert_eq!(
        PgEncoding::from_pg("numeric(12,4)[]"),
        PgEncoding::Array(ArrayElement::Decimal { precision: 12, scale: 4 })
    );
    assert_eq!(PgEncoding::from_pg("uuid[]"), PgEncoding::Array(ArrayElement::Uuid));
    assert_eq!(PgEncoding::from_pg("xml[]"), PgEncoding::Text);
    assert_eq!(PgEncoding::from_pg("jsonb[]"), PgEncoding::Text);
}

#[test]
fn added_column_mid_stream_changes_the_schema_block() {
    let mut conv = Converter::new("cdc", "sales");
    let first = body(&convert(&mut conv, INSERT)[0]);
    let altered =
        INSERT.replace(r#"],"pk""#, r#",{"name":"note","type":"text","value":"hello","optional":true}],"pk""#);
    let second = body(&convert(&mut conv, &altered)[0]);
    let names = |v: &J| -> Vec<String> {
        v["schema"]["fields"][1]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["field"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(!names(&first).contains(&"note".to_string()));
    assert_eq!(names(&second).last().map(String::as_str), Some("note"));
    assert_eq!(second["payload"]["after"]["note"], "hello");
    // A delete afterwards uses the re-learned columns (its key is still known).
    let delete = r#"{"action":"D","xid":748,"timestamp":"2026-11-22 02:14:33+00","lsn":"0/1940000","schema":"public","table":"products","identity":[{"name":"id","type":"bigint","value":1}]}"#;
    let deleted = body(&convert(&mut conv, delete)[0]);
    assert_eq!(names(&deleted).last().map(String::as_str), Some("note"));
    assert_eq!(deleted["payload"]["before"], serde_json::json!({"id": 1}));
}

#[test]
fn same_table_name_in_two_schemas_stays_apart() {
    let mut conv = Converter::new("cdc", "sales");
    convert(&mut conv, INSERT);
    let archive = INSERT
        .replace(r#""schema":"public""#, r#""schema":"archive""#)
        .replace(r#"{"name":"category","type":"text","value":"cat","optional":true},"#, "");
    let a = body(&convert(&mut conv, &archive)[0]);
    assert_eq!(a["payload"]["source"]["schema"], "archive");
    assert_eq!(a["schema"]["name"], "cdc.archive.products.Envelope");
    assert!(a["payload"]["after"].get("category").is_none());
    // The public table's definition is untouched by the archive one.
    let p = body(&convert(&mut conv, INSERT)[0]);
    assert_eq!(p["schema"]["name"], "cdc.public.products.Envelope");
    assert_eq!(p["payload"]["after"]["category"], "cat");
    let truncate = r#"{"action":"T","xid":749,"timestamp":"2026-11-22 02:14:34+00","lsn":"0/1950000","schema":"archive","table":"products"}"#;
    let t = body(&convert(&mut conv, truncate)[0]);
    assert_eq!((t["payload"]["source"]["schema"].as_str(), t["payload"]["op"].as_str()), (Some("archive"), Some("t")));
}
