//! The wal2json logical decoding plugin's output, format version 2: one JSON object per row.
//!
//! Enters: the `data` text of one `pg_logical_slot_peek_changes` row. Leaves: [`Record`].
//! Column values are kept as raw JSON text ([`RawValue`]) so a NUMERIC such as
//! `123456789012.34` is never rounded through an `f64`.

use serde::Deserialize;
use serde_json::value::RawValue;

/// The options the capture passes to wal2json (besides `add-tables`).
pub(crate) const OPTIONS: &[(&str, &str)] = &[
    ("format-version", "2"),
    ("include-lsn", "1"),
    ("include-timestamp", "1"),
    ("include-xids", "1"),
    ("include-types", "1"),
    ("include-typmod", "1"),
    ("include-pk", "1"),
    ("include-not-null", "1"),
    ("include-transaction", "1"),
];

/// One row of wal2json format-version 2 output.
#[derive(Debug, Deserialize)]
pub struct Record<'a> {
    /// `B` begin, `C` commit, `I` insert, `U` update, `D` delete, `T` truncate, `M` message.
    pub(crate) action: String,
    #[serde(default)]
    pub(crate) xid: Option<u64>,
    /// Commit timestamp of the transaction (`include-timestamp`), in the session's DateStyle.
    #[serde(default)]
    pub(crate) timestamp: Option<String>,
    /// For I/U/D/T: the change's own WAL position. For B/C: the commit record's position.
    #[serde(default)]
    pub(crate) lsn: Option<String>,
    #[serde(default)]
    pub(crate) schema: Option<String>,
    #[serde(default)]
    pub(crate) table: Option<String>,
    #[serde(default, borrow)]
    pub(crate) columns: Option<Vec<Column<'a>>>,
    /// Old key (REPLICA IDENTITY DEFAULT) or old row (FULL) of an update or delete.
    #[serde(default, borrow)]
    pub(crate) identity: Option<Vec<Column<'a>>>,
    #[serde(default)]
    pub(crate) pk: Option<Vec<PkColumn>>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Column<'a> {
    pub(crate) name: String,
    /// `include-types` + `include-typmod`: e.g. `numeric(12,2)`, `timestamp with time zone`.
    #[serde(rename = "type", default)]
    pub(crate) type_name: Option<String>,
    /// `include-not-null`: false for NOT NULL columns.
    #[serde(default)]
    pub(crate) optional: Option<bool>,
    /// Raw JSON text of the value; `None` for SQL NULL.
    #[serde(default, borrow)]
    pub(crate) value: Option<&'a RawValue>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct PkColumn {
    pub(crate) name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_values_stay_raw_text() {
        let data = r#"{"action":"I","xid":745,"lsn":"0/19329E0","schema":"public","table":"orders","columns":[{"name":"total","type":"numeric(14,2)","value":123456789012.34},{"name":"status","type":"text","value":null}]}"#;
        let record: Record<'_> = serde_json::from_str(data).unwrap();
        let columns = record.columns.unwrap();
        assert_eq!(columns[0].value.unwrap().get(), "123456789012.34");
        assert!(columns[1].value.is_none());
    }
}
