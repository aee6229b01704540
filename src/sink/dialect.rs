//! The SQL this processor issues, for the server it talks to.
//!
//! Enters: the server's version. Leaves: DDL and query text. Two dialects:
//! - [`Dialect::Modern`] (ClickHouse ≥ 23.2): `ReplacingMergeTree(_version, _is_deleted)`,
//!   `DateTime64(6, 'UTC')`, `LowCardinality(String)` for low-cardinality attributes;
//! - [`Dialect::Legacy`] (older, e.g. Debian's 18.16): `ReplacingMergeTree(_version)` with an
//!   explicit `_is_deleted` filter, `DateTime('UTC')`, plain `String`.
//!
//! Lookups never use `FINAL`: on modern servers `FINAL` hides `_is_deleted` rows, and the fact
//! derivation needs a deleted row's version. `argMax(col, _version) ... GROUP BY key` returns the
//! newest row including tombstones on every version.

use crate::tables::{ColumnKind, SourceTable, TableSpec};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Legacy,
    Modern,
}

impl Dialect {
    /// Picks the dialect from `SELECT version()` (e.g. `18.16.1`, `25.3.2.39`).
    pub fn for_version(version: &str) -> Option<Dialect> {
        let mut parts = version.split('.').map(|p| p.parse::<u32>());
        let major = parts.next()?.ok()?;
        let minor = parts.next().and_then(Result::ok).unwrap_or(0);
        Some(if (major, minor) >= (23, 2) { Dialect::Modern } else { Dialect::Legacy })
    }

    fn timestamp_type(self) -> &'static str {
        match self {
            Dialect::Modern => "DateTime64(6, 'UTC')",
            Dialect::Legacy => "DateTime('UTC')",
        }
    }

    fn low_cardinality_string(self) -> &'static str {
        match self {
            Dialect::Modern => "LowCardinality(String)",
            Dialect::Legacy => "String",
        }
    }

    fn engine(self) -> &'static str {
        match self {
            Dialect::Modern => "ReplacingMergeTree(_version, _is_deleted)",
            Dialect::Legacy => "ReplacingMergeTree(_version)",
        }
    }

    /// An expression turning a timestamp column into microseconds since the epoch (Int64).
    pub fn micros_of(self, column: &str) -> String {
        match self {
            Dialect::Modern => format!("toUnixTimestamp64Micro({column})"),
            Dialect::Legacy => format!("toInt64(toUInt32({column})) * 1000000"),
        }
    }
}

pub const DECIMAL_TYPE: &str = "Decimal(38, 6)";
pub const TRUNCATIONS_TABLE: &str = "_truncations";
pub const FACT_TABLE: &str = "sales_fact";

/// `sales_fact` columns in insert order (see `rowbinary::encode_fact_row`).
pub const FACT_COLUMNS: &[&str] = &[
    "order_item_id",
    "order_id",
    "customer_id",
    "product_id",
    "quantity",
    "unit_price",
    "revenue",
    "order_status",
    "order_date",
    "customer_name",
    "customer_country",
    "customer_city",
    "product_name",
    "product_category",
    "_version",
    "_is_deleted",
];

/// Columns of a mirror table in insert order: the source columns, then version and flag.
pub fn mirror_columns(spec: &TableSpec) -> Vec<&'static str> {
    spec.columns.iter().map(|c| c.name).chain(["_version", "_is_deleted"]).collect()
}

fn column_type(dialect: Dialect, table: SourceTable, name: &str, kind: ColumnKind) -> &'static str {
    match kind {
        ColumnKind::Int64 => "Int64",
        ColumnKind::Int32 => "Int32",
        ColumnKind::Decimal { .. } => DECIMAL_TYPE,
        ColumnKind::Timestamp => dialect.timestamp_type(),
        ColumnKind::Text => match (table, name) {
            (SourceTable::Customers, "country" | "city")
            | (SourceTable::Products, "category")
            | (SourceTable::Orders, "status") => dialect.low_cardinality_string(),
            _ => "String",
        },
    }
}

/// `name Type` of every column of a mirror table, in insert order.
pub fn mirror_column_defs(dialect: Dialect, table: SourceTable) -> Vec<String> {
    let spec = table.spec();
    spec.columns
        .iter()
        .map(|c| format!("{} {}", c.name, column_type(dialect, table, c.name, c.kind)))
        .chain(["_version UInt64".to_string(), "_is_deleted UInt8".to_string()])
        .collect()
}

/// `name Type` of every `sales_fact` column, in insert order ([`FACT_COLUMNS`]).
pub fn fact_column_defs(dialect: Dialect) -> Vec<String> {
    let lc = dialect.low_cardinality_string();
    let types = [
        "Int64",
        "Int64",
        "Int64",
        "Int64",
        "Int32",
        DECIMAL_TYPE,
        DECIMAL_TYPE,
        lc,
        dialect.timestamp_type(),
        "String",
        lc,
        lc,
        "String",
        lc,
        "UInt64",
        "UInt8",
    ];
    FACT_COLUMNS.iter().zip(types).map(|(name, ty)| format!("{name} {ty}")).collect()
}

/// Every statement `migrate` runs, in order; each is idempotent.
pub fn schema_statements(dialect: Dialect, database: &str) -> Vec<String> {
    let db = quote_ident(database);
    let mut statements = vec![format!("CREATE DATABASE IF NOT EXISTS {db}")];
    for table in SourceTable::ALL {
        let spec = table.spec();
        statements.push(format!(
            "CREATE TABLE IF NOT EXISTS {db}.{name} ({columns}) ENGINE = {engine} ORDER BY {key}",
            name = spec.name,
            columns = mirror_column_defs(dialect, table).join(", "),
            engine = dialect.engine(),
            key = spec.key,
        ));
    }
    statements.push(format!(
        "CREATE TABLE IF NOT EXISTS {db}.{TRUNCATIONS_TABLE} (table_name String, _version UInt64) \
         ENGINE = ReplacingMergeTree(_version) ORDER BY table_name"
    ));
    statements.push(format!(
        "CREATE TABLE IF NOT EXISTS {db}.{FACT_TABLE} ({columns}) ENGINE = {engine} ORDER BY order_item_id",
        columns = fact_column_defs(dialect).join(", "),
        engine = dialect.engine(),
    ));
    // Current-state views: what analysts query. A mirror row older than its table's last
    // truncation is gone even if it arrived after the truncation was processed.
    statements.push(format!(
        "CREATE VIEW IF NOT EXISTS {db}.{FACT_TABLE}_current AS \
         SELECT * FROM {db}.{FACT_TABLE} FINAL WHERE _is_deleted = 0"
    ));
    for table in SourceTable::ALL {
        let name = table.name();
        statements.push(format!(
            "CREATE VIEW IF NOT EXISTS {db}.{name}_current AS \
             SELECT * FROM {db}.{name} FINAL WHERE _is_deleted = 0 AND _version > \
             (SELECT max(_version) FROM {db}.{TRUNCATIONS_TABLE} WHERE table_name = '{name}')"
        ));
    }
    statements
}

/// Backquotes an identifier (database names come from configuration).
pub fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('\\', "\\\\").replace('`', "\\`"))
}

/// A comma-separated list of integer literals for `IN (...)`; never empty (`IN ()` is invalid).
pub fn id_list(ids: &[i64]) -> String {
    if ids.is_empty() {
        return "NULL".to_string();
    }
    let mut out = String::with_capacity(ids.len() * 8);
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&id.to_string());
    }
    out
}

/// The newest version and deletion flag of each listed key of a mirror table, with the column
/// values of its newest live version, or of its newest deletion that carries them. Row layout: key, the other columns in spec order,
/// `_version`, `_is_deleted`, with timestamps as Int64 microseconds.
///
/// A deleted row keeps the values it had before its deletion (a Debezium delete carries only
/// the key): the fact derivation needs a deleted item's order and product, and a deleted
/// order's customer, to count their versions; otherwise the deletion's version sum could fall
/// below that of the live fact it must replace. Old versions survive until a merge; by then
/// the derivations that needed them have run, and a later one through a merged tombstone only
/// yields a lower-versioned deletion, which cannot displace the stored one.
pub fn latest_rows_query(dialect: Dialect, database: &str, table: SourceTable, ids: &[i64]) -> String {
    let spec = table.spec();
    let mut select = vec![spec.key.to_string()];
    let has_values = match table.parent_key() {
        Some(parent) => format!("_is_deleted = 0 OR {parent} != 0"),
        None => "_is_deleted = 0".to_string(),
    };
    for column in &spec.columns[1..] {
        let latest = format!("argMaxIf({}, _version, {has_values})", column.name);
        select.push(match column.kind {
            ColumnKind::Timestamp => dialect.micros_of(&latest),
            _ => latest,
        });
    }
    select.push("max(_version)".to_string());
    select.push("argMax(_is_deleted, _version)".to_string());
    format!(
        "SELECT {} FROM {}.{} WHERE {} IN ({}) GROUP BY {}",
        select.join(", "),
        quote_ident(database),
        spec.name,
        spec.key,
        id_list(ids),
        spec.key
    )
}

/// The order items a set of changed rows may touch: the items themselves, the items of changed
/// orders, of the orders of changed customers, and of changed products. A superset is harmless
/// (re-deriving a fact is idempotent), so any row that ever referenced a key counts.
pub fn touched_items_query(database: &str, orders: &[i64], customers: &[i64], products: &[i64]) -> String {
    let db = quote_ident(database);
    format!(
        "SELECT DISTINCT id FROM {db}.order_items WHERE order_id IN ({orders}) \
         OR order_id IN (SELECT id FROM {db}.orders WHERE customer_id IN ({customers})) \
         OR product_id IN ({products})",
        orders = id_list(orders),
        customers = id_list(customers),
        products = id_list(products),
    )
}

/// Every order item ever mirrored or derived (re-derivation after a truncation).
pub fn all_items_query(database: &str) -> String {
    let db = quote_ident(database);
    format!(
        "SELECT DISTINCT id FROM (SELECT id FROM {db}.order_items UNION ALL \
         SELECT order_item_id AS id FROM {db}.{FACT_TABLE})"
    )
}

/// The latest truncation position of each table.
pub fn truncations_query(database: &str) -> String {
    format!("SELECT table_name, max(_version) FROM {}.{TRUNCATIONS_TABLE} GROUP BY table_name", quote_ident(database))
}

pub fn insert_statement(database: &str, table: &str, columns: &[&str]) -> String {
    format!("INSERT INTO {}.{} ({}) FORMAT RowBinary", quote_ident(database), table, columns.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialect_follows_server_version() {
        assert_eq!(Dialect::for_version("18.16.1"), Some(Dialect::Legacy));
        assert_eq!(Dialect::for_version("23.1.3.5"), Some(Dialect::Legacy));
        assert_eq!(Dialect::for_version("23.2.1"), Some(Dialect::Modern));
        assert_eq!(Dialect::for_version("26.9.1.1"), Some(Dialect::Modern));
        assert_eq!(Dialect::for_version("garbage"), None);
    }

    #[test]
    fn modern_ddl_uses_is_deleted_and_datetime64() {
        let ddl = schema_statements(Dialect::Modern, "analytics").join("\n");
        assert!(ddl.contains("ReplacingMergeTree(_version, _is_deleted)"));
        assert!(ddl.contains("order_date DateTime64(6, 'UTC')"));
        let legacy = schema_statements(Dialect::Legacy, "analytics").join("\n");
        assert!(!legacy.contains("DateTime64") && !legacy.contains("LowCardinality"));
    }

    #[test]
    fn identifiers_are_quoted_and_empty_lists_stay_valid() {
        assert_eq!(quote_ident("a`b"), "`a\\`b`");
        assert_eq!(id_list(&[]), "NULL");
        assert_eq!(id_list(&[1, -2]), "1,-2");
    }
}
