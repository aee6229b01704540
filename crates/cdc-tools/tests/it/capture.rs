//! What the capture emits decodes as the real decoder reads it (the decoding of every fixture
//! is cdc-core's `tests/it/decode.rs`).

use cdc_core::change::{Decimal, Decoded, Value};
use cdc_core::decode::Decoder;
use cdc_tools::capture::debezium::Converter;
use cdc_tools::capture::wal2json::Record;

/// What the capture emits for bytea and arrays (Debezium `bytes` and `array` schemas) decodes
/// into bytes and typed arrays, elements NULL included.
#[test]
fn captured_bytes_and_arrays_decode() {
    let data = r#"{"action":"I","xid":900,"timestamp":"2026-11-22 02:14:32.020628+00","lsn":"0/2000000","schema":"public","table":"products","columns":[{"name":"id","type":"bigint","value":1,"optional":false},{"name":"tags","type":"text[]","value":"{\"a b\",\"c\\\"d\",NULL}","optional":true},{"name":"counts","type":"integer[]","value":"{1,NULL,-3}","optional":true},{"name":"prices","type":"numeric(12,4)[]","value":"{1.5000,-0.0001}","optional":true},{"name":"refs","type":"uuid[]","value":"{}","optional":true},{"name":"blob","type":"bytea","value":"00ff0a","optional":true}],"pk":[{"name":"id","type":"bigint"}]}"#;
    let record: Record<'_> = serde_json::from_str(data).unwrap();
    let events = Converter::new("cdc", "sales").convert(&record, 0).unwrap();
    let change = match Decoder::default().decode(&events[0].body) {
        Ok(Decoded::Change(c)) => *c,
        other => panic!("expected a change, got {other:?}"),
    };
    let after = change.after.expect("row image present");
    let col = |name: &str| after.get(name).unwrap_or_else(|| panic!("column {name} missing"));
    let text = |s: &str| Value::Text(s.to_owned());
    let dec = |unscaled: i128, scale: u32| Value::Decimal(Decimal::new(unscaled, scale));
    assert_eq!(col("blob"), &Value::Bytes(vec![0x00, 0xff, 0x0a]));
    assert_eq!(col("tags"), &Value::Array(vec![text("a b"), text("c\"d"), Value::Null]));
    assert_eq!(col("counts"), &Value::Array(vec![Value::Int(1), Value::Null, Value::Int(-3)]));
    assert_eq!(col("prices"), &Value::Array(vec![dec(15000, 4), dec(-1, 4)]));
    assert_eq!(col("refs"), &Value::Array(vec![]));
}
