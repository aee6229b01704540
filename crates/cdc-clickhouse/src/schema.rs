//! Every DDL statement: the mirrors, foreign-key indexes, `sales_fact`, their current-state views,
//! and the generic mirrors' tables, columns and views; with the names and columns of the tables.
//!
//! Enters: the [`Dialect`], the database and cluster names. Leaves: statement text, every one
//! idempotent (`IF NOT EXISTS`), so `migrate` and every cold start can run them again.

use cdc_core::fact::{FACT_COLUMNS, FactKind};
use cdc_core::generic::ColumnType;
use cdc_core::tables::{ColumnKind, SourceTable, TableSpec};

use crate::dialect::{Dialect, quote_ident, quote_literal};
use crate::generic_values::column_type_sql;

const DECIMAL_TYPE: &str = "Decimal(38, 6)";
pub const TRUNCATIONS_TABLE: &str = "_truncations";
/// The version scale each mirror is fed on, pinned by its first change (docs/versions.md).
pub(crate) const VERSION_SCALES_TABLE: &str = "_version_scales";
/// Each mirror's highest log position with its commit time (docs/versions.md, "Positions that
/// restart").
pub(crate) const WATERMARKS_TABLE: &str = "_watermarks";
pub const FACT_TABLE: &str = "sales_fact";
/// Every truncation of a table that keeps history, with its commit time (`_truncations` keeps
/// only the newest per table).
pub const TRUNCATION_HISTORY_TABLE: &str = "_truncation_history";
/// `valid_to_us` of a version that is still current in a `<table>_scd2` view.
pub const VALID_FOREVER_US: i64 = i64::MAX;

/// A foreign-key index: which children (order items, orders) ever referenced a parent key.
///
/// Written with the mirror rows it describes, before the invocation's first lookup, so a
/// lookup finds every child whose writes completed before it (docs/sales-fact.md, "Finding the
/// facts a change touches"). Entries are never removed: a stale one (the child moved on) only
/// makes a derivation reread a row, which is harmless.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FkIndex {
    pub(crate) table: &'static str,
    pub(crate) parent: &'static str,
    pub(crate) child: &'static str,
}

pub const ITEMS_BY_ORDER: FkIndex = FkIndex { table: "_items_by_order", parent: "order_id", child: "order_item_id" };
pub const ITEMS_BY_PRODUCT: FkIndex =
    FkIndex { table: "_items_by_product", parent: "product_id", child: "order_item_id" };
pub const ORDERS_BY_CUSTOMER: FkIndex =
    FkIndex { table: "_orders_by_customer", parent: "customer_id", child: "order_id" };
const FK_INDEXES: [FkIndex; 3] = [ITEMS_BY_ORDER, ITEMS_BY_PRODUCT, ORDERS_BY_CUSTOMER];

impl FkIndex {
    /// The indexes a mirror row of `table` feeds, with the column holding the parent key.
    pub(crate) fn fed_by(table: SourceTable) -> &'static [FkIndex] {
        match table {
            SourceTable::OrderItems => &[ITEMS_BY_ORDER, ITEMS_BY_PRODUCT],
            SourceTable::Orders => &[ORDERS_BY_CUSTOMER],
            SourceTable::Customers | SourceTable::Products => &[],
        }
    }

    pub(crate) fn columns(&self) -> [&'static str; 2] {
        [self.parent, self.child]
    }
}

/// `sales_fact`'s column names in insert order ([`cdc_core::fact::FACT_COLUMNS`]).
pub fn fact_column_names() -> Vec<&'static str> {
    FACT_COLUMNS.iter().map(|c| c.name).collect()
}

/// Columns of a mirror table in insert order: the source columns, then version and flag.
pub fn mirror_columns(spec: &TableSpec) -> Vec<&'static str> {
    spec.columns.iter().map(|c| c.name).chain(["_version", "_is_deleted"]).collect()
}

/// A sales mirror's tie-break among rows of one key and version: 0 for a row its change wrote,
/// else how many changes of the key the history held when the row's TOAST placeholders were
/// filled again from it (docs/history.md, "Mirrors"). Not a column of the history.
pub const REFILL_COLUMN: &str = "_refill";

/// Gives a sales mirror an earlier release created the [`REFILL_COLUMN`] (run only when
/// `system.columns` lacks it: 18.16 has no `ADD COLUMN IF NOT EXISTS`).
pub(crate) fn add_refill_column(database: &str, cluster: Option<&str>, table: SourceTable) -> String {
    format!(
        "ALTER TABLE {}.{}{} ADD COLUMN {REFILL_COLUMN} UInt64 DEFAULT 0",
        quote_ident(database),
        quote_ident(table.name()),
        on_cluster(cluster)
    )
}

/// The history table of a sales mirror: every change, one row per (key, version).
pub fn history_table(table: SourceTable) -> String {
    format!("{}_history", table.name())
}

/// The SCD Type 2 view over a history table.
pub fn scd2_view(table: SourceTable) -> String {
    format!("{}_scd2", table.name())
}

/// Columns of a history table in insert order: the mirror's, then the operation and the
/// source's commit time (µs since the epoch: exact on every server, where 18.16's `DateTime`
/// holds seconds), and which columns came as TOAST placeholders (bit `i`: column `i`).
pub fn history_columns(spec: &TableSpec) -> Vec<&'static str> {
    mirror_columns(spec).into_iter().chain(["_op", "_commit_us", "_toast_mask"]).collect()
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
    FACT_COLUMNS
        .iter()
        .map(|column| {
            let ty = match column.kind {
                FactKind::Int64 => "Int64",
                FactKind::Int32 => "Int32",
                FactKind::Decimal => DECIMAL_TYPE,
                FactKind::Text => "String",
                FactKind::Label => dialect.low_cardinality_string(),
                FactKind::Timestamp => dialect.timestamp_type(),
                FactKind::Version => dialect.fact_version_type(),
                FactKind::Flag => "UInt8",
            };
            format!("{} {ty}", column.name)
        })
        .collect()
}

impl Dialect {
    /// The settings of tables read by key (mirrors and foreign-key indexes), a few rows per key at
    /// scattered places. A key lookup reads, checksums and decompresses every compressed block
    /// that holds a granule it needs: with the defaults (8,192-row granules, blocks of at least
    /// 64 KiB) that is ~64 KiB per column per key. 1,024-row granules in blocks of 4-16 KiB (about
    /// one granule per block) cut the server time of 900 scattered keys in a 10M-row table from
    /// 68 to 40 ms on 18.16 (BENCHMARKS.md, "Scale"). Table-level block sizes exist from
    /// ClickHouse 21.1; on older servers they are server-wide settings of the default profile
    /// (README, "Older ClickHouse"). `sales_fact` keeps the defaults: analysts scan it.
    fn lookup_table_settings(self) -> String {
        match self {
            Dialect::Modern => format!("SETTINGS index_granularity = 1024, {LOOKUP_BLOCK_SIZES}"),
            Dialect::Legacy => "SETTINGS index_granularity = 1024".to_string(),
        }
    }
}

/// The compressed block sizes of tables read by key (see [`Dialect::lookup_table_settings`]).
const LOOKUP_BLOCK_SIZES: &str = "min_compress_block_size = 4096, max_compress_block_size = 16384";

/// Gives an existing table the block sizes of tables read by key; parts written from then on
/// (inserts and merges) use them.
pub(crate) fn lookup_block_sizes_statement(database: &str, cluster: Option<&str>, table: &str) -> String {
    format!(
        "ALTER TABLE {}.{}{} MODIFY SETTING {LOOKUP_BLOCK_SIZES}",
        quote_ident(database),
        quote_ident(table),
        on_cluster(cluster)
    )
}

/// Every statement `migrate` runs, in order; each is idempotent. With a `cluster`, every
/// statement runs `ON CLUSTER` and tables use `ReplicatedReplacingMergeTree` (README, "ClickHouse
/// clusters and ClickHouse Cloud").
/// The `ReplacingMergeTree` parameters of versioned tables on every server: never the
/// `is_deleted` parameter, which lets merges drop the tombstones convergence needs (module
/// `dialect`).
const VERSION_PARAMETERS: &str = "_version";

pub fn schema_statements(dialect: Dialect, database: &str, cluster: Option<&str>) -> Vec<String> {
    let db = quote_ident(database);
    let on = on_cluster(cluster);
    let engine = |parameters: &str| engine(cluster, parameters);
    let mut statements = vec![format!("CREATE DATABASE IF NOT EXISTS {db}{on}")];
    for table in SourceTable::ALL {
        let spec = table.spec();
        statements.push(format!(
            "CREATE TABLE IF NOT EXISTS {db}.{name}{on} ({columns}, {REFILL_COLUMN} UInt64 DEFAULT 0) \
             ENGINE = {engine} ORDER BY {key} {settings}",
            name = spec.name,
            settings = dialect.lookup_table_settings(),
            columns = mirror_column_defs(dialect, table).join(", "),
            engine = engine(VERSION_PARAMETERS),
            key = spec.key,
        ));
    }
    statements.push(format!(
        "CREATE TABLE IF NOT EXISTS {db}.{TRUNCATIONS_TABLE}{on} (table_name String, _version UInt64) \
         ENGINE = {engine} ORDER BY table_name",
        engine = engine("_version"),
    ));
    // Never collapsed (every row has its own time): the earliest row of a table is its scale.
    statements.push(format!(
        "CREATE TABLE IF NOT EXISTS {db}.{VERSION_SCALES_TABLE}{on} (table_name String, scale String, \
         fixed_at UInt64) ENGINE = {engine} ORDER BY (table_name, fixed_at)",
        engine = engine(""),
    ));
    // Collapsed to each mirror's highest position: the version column keeps the greatest.
    statements.push(format!(
        "CREATE TABLE IF NOT EXISTS {db}.{WATERMARKS_TABLE}{on} (table_name String, _version UInt64, \
         commit_us Int64) ENGINE = {engine} ORDER BY table_name",
        engine = engine("_version"),
    ));
    for index in FK_INDEXES {
        statements.push(format!(
            "CREATE TABLE IF NOT EXISTS {db}.{table}{on} ({parent} Int64, {child} Int64) \
             ENGINE = {engine} ORDER BY ({parent}, {child}) {settings}",
            table = index.table,
            settings = dialect.lookup_table_settings(),
            parent = index.parent,
            child = index.child,
            engine = engine(""),
        ));
    }
    statements.push(format!(
        "CREATE TABLE IF NOT EXISTS {db}.{FACT_TABLE}{on} ({columns}) ENGINE = {engine} ORDER BY order_item_id",
        columns = fact_column_defs(dialect).join(", "),
        engine = engine(VERSION_PARAMETERS),
    ));
    // Current-state views: what analysts query. A mirror row older than its table's last
    // truncation is gone even if it arrived after the truncation was processed.
    statements.push(format!(
        "CREATE VIEW IF NOT EXISTS {db}.{FACT_TABLE}_current{on} AS \
         SELECT * FROM {db}.{FACT_TABLE} FINAL WHERE _is_deleted = 0"
    ));
    for table in SourceTable::ALL {
        statements.push(current_view(database, table.name(), cluster, false));
    }
    statements
}

/// The history tables and SCD2 views of the mirrors that keep history (`HISTORY_TABLES`), and
/// the table of every truncation; each idempotent. The argument: docs/history.md.
///
/// A history table is ordered by (key, version) with no version column: a change delivered
/// twice is one row once merged, and every read collapses duplicates itself (`FINAL`), so the
/// arrival order never matters. Validity is computed when read, from the versions' order.
pub fn history_statements(
    dialect: Dialect,
    database: &str,
    cluster: Option<&str>,
    tables: &std::collections::BTreeSet<SourceTable>,
) -> Vec<String> {
    if tables.is_empty() {
        return Vec::new();
    }
    let db = quote_ident(database);
    let on = on_cluster(cluster);
    let mut statements = vec![format!(
        "CREATE TABLE IF NOT EXISTS {db}.{TRUNCATION_HISTORY_TABLE}{on} (table_name String, _version UInt64, \
         _commit_us Int64) ENGINE = {engine} ORDER BY (table_name, _version)",
        engine = engine(cluster, ""),
    )];
    for &table in tables {
        let spec = table.spec();
        let columns = mirror_column_defs(dialect, table).into_iter().chain([
            format!("_op {}", dialect.low_cardinality_string()),
            "_commit_us Int64".to_string(),
            "_toast_mask UInt64".to_string(),
        ]);
        // The server's default granules and blocks: every change is written here on the hot
        // path, while reads are an analyst's (the small blocks of the tables read by key cost
        // inserts CPU: BENCHMARKS.md, "History").
        statements.push(format!(
            "CREATE TABLE IF NOT EXISTS {db}.{name}{on} ({columns}) ENGINE = {engine} ORDER BY ({key}, _version)",
            name = quote_ident(&history_table(table)),
            columns = columns.collect::<Vec<_>>().join(", "),
            engine = engine(cluster, ""),
            key = spec.key,
        ));
        statements.push(scd2_view_statement(dialect, database, cluster, table));
        if dialect == Dialect::Modern {
            statements.push(format!(
                "CREATE VIEW IF NOT EXISTS {db}.{view}{on} AS {select}",
                view = quote_ident(&as_of_view(table)),
                select = crate::queries::table_as_of_select(dialect, database, table, AT_PARAMETER, ""),
            ));
        }
    }
    if dialect == Dialect::Modern && tables.len() == SourceTable::ALL.len() {
        statements.push(format!(
            "CREATE VIEW IF NOT EXISTS {db}.{view}{on} AS {select}",
            view = quote_ident(&format!("{FACT_TABLE}_as_of")),
            select = facts_as_of_select(database),
        ));
    }
    statements
}

/// The parameter of the as-of views: µs since the epoch (`SELECT * FROM customers_as_of(at_us =
/// 1730419200000000)`).
const AT_PARAMETER: &str = "{at_us:Int64}";

/// A table's parameterized as-of view (current servers: parameterized views exist since 23.1).
pub fn as_of_view(table: SourceTable) -> String {
    format!("{}_as_of", table.name())
}

/// `sales_fact_as_of(at_us = T)`: the inner join of the four tables as of `T`, with the columns
/// analysts read from `sales_fact`, computed as `cdc_core::fact::Snapshot::derive` computes
/// them (a NULL foreign key, stored as the marker, joins nothing). `cdc-tools as-of --table
/// sales_fact` gives the same rows through that derivation itself (docs/history.md).
fn facts_as_of_select(database: &str) -> String {
    let db = quote_ident(database);
    let of = |table: SourceTable| format!("{db}.{}(at_us = {AT_PARAMETER})", quote_ident(&as_of_view(table)));
    format!(
        "SELECT i.id AS order_item_id, i.order_id AS order_id, o.customer_id AS customer_id, \
         i.product_id AS product_id, i.quantity AS quantity, i.price AS unit_price, \
         i.price * i.quantity AS revenue, o.status AS order_status, o.order_date AS order_date, \
         c.name AS customer_name, c.country AS customer_country, c.city AS customer_city, \
         p.name AS product_name, p.category AS product_category \
         FROM {items} AS i INNER JOIN {orders} AS o ON o.id = i.order_id \
         INNER JOIN {customers} AS c ON c.id = o.customer_id INNER JOIN {products} AS p ON p.id = i.product_id \
         WHERE i.order_id != {marker} AND o.customer_id != {marker} AND i.product_id != {marker}",
        items = of(SourceTable::OrderItems),
        orders = of(SourceTable::Orders),
        customers = of(SourceTable::Customers),
        products = of(SourceTable::Products),
        marker = cdc_core::mirror::NULL_FOREIGN_KEY,
    )
}

/// `<table>_scd2`: one row per live version of each key, with `valid_from`/`valid_to` (the
/// source's commit times: of this version, and of the next version of the key or the first
/// truncation above it, whichever comes first; `valid_to_us` = [`VALID_FOREVER_US`] and
/// `valid_to` NULL while current) and `is_current`. Deletions end a version and are not rows.
///
/// Written for every server: 18.16 has no window functions, so each key's versions are sorted
/// in an array (`arraySort(groupArray(tuple))`) and zipped with their successors' times; a
/// decimal travels through the tuple as text (18.16 crashes on a `Decimal` in `groupArray` of a
/// tuple).
fn scd2_view_statement(dialect: Dialect, database: &str, cluster: Option<&str>, table: SourceTable) -> String {
    format!(
        "CREATE VIEW IF NOT EXISTS {}.{}{} AS {}",
        quote_ident(database),
        quote_ident(&scd2_view(table)),
        on_cluster(cluster),
        scd2_select(dialect, database, table, None)
    )
}

/// The SELECT of a `<table>_scd2` view ([`scd2_view_statement`]), of one key or of all.
pub(crate) fn scd2_select(dialect: Dialect, database: &str, table: SourceTable, key: Option<i64>) -> String {
    let spec = table.spec();
    let db = quote_ident(database);
    // Each key's changes sorted by version, as tuples: (_version, _commit_us, _is_deleted, _op,
    // _toast_mask, then the non-key columns: column `i` at position `i + 5`).
    let mut packed = ["_version", "_commit_us", "_is_deleted", "_op", "_toast_mask"].map(String::from).to_vec();
    // Per column, its values with placeholders filled from the newest earlier change that
    // carried the column, array-joined beside the tuples as `v{i}`.
    let (mut filled, mut joined, mut unpacked) = (Vec::new(), Vec::new(), vec![spec.key.to_string()]);
    for (i, column) in spec.columns.iter().enumerate().skip(1) {
        let is_decimal = matches!(column.kind, ColumnKind::Decimal { .. });
        packed.push(if is_decimal { format!("toString({})", column.name) } else { column.name.to_string() });
        filled.push(format!("{} AS f{i}", dialect.fill_placeholders(i)));
        joined.push(format!("f{i} AS v{i}"));
        unpacked.push(if is_decimal {
            format!("toDecimal128(v{i}, 6) AS {}", column.name)
        } else {
            format!("v{i} AS {}", column.name)
        });
    }
    let forever = format!("toInt64({VALID_FOREVER_US})");
    let of_key = key.map_or(String::new(), |k| format!(" WHERE {} = {k}", spec.key));
    format!(
        "WITH (SELECT groupArray((_version, _commit_us)) FROM {db}.{TRUNCATION_HISTORY_TABLE} \
         WHERE table_name = {literal}) AS truncations \
         SELECT {unpacked}, tupleElement(r, 1) AS _version, tupleElement(r, 4) AS _op, \
         tupleElement(r, 2) AS valid_from_us, \
         least(next_us, arrayReduce('min', arrayConcat([{forever}], arrayMap(t -> tupleElement(t, 2), \
         arrayFilter(t -> tupleElement(t, 1) > tupleElement(r, 1), truncations))))) AS valid_to_us, \
         toUInt8(valid_to_us = {forever}) AS is_current, {from} AS valid_from, \
         if(is_current = 1, NULL, {to}) AS valid_to \
         FROM (SELECT {key}, s, {filled} FROM \
         (SELECT {key}, arraySort(groupArray(({packed}))) AS s FROM {db}.{history} FINAL{of_key} GROUP BY {key})) \
         ARRAY JOIN s AS r, {joined}, \
         arrayPushBack(arrayPopFront(arrayMap(x -> tupleElement(x, 2), s)), {forever}) AS next_us \
         WHERE tupleElement(r, 3) = 0",
        literal = quote_literal(table.name()),
        unpacked = unpacked.join(", "),
        filled = filled.join(", "),
        joined = joined.join(", "),
        from = dialect.timestamp_of_micros("valid_from_us"),
        to = dialect.timestamp_of_micros("valid_to_us"),
        key = spec.key,
        packed = packed.join(", "),
        history = quote_ident(&history_table(table)),
    )
}

impl Dialect {
    /// The values of column `i` over a key's sorted changes `s` (see [`scd2_select`]), each
    /// TOAST placeholder replaced by the value of the newest earlier change that carried the
    /// column. Current servers fill forward in one pass (`arrayFill`, 20.1+); 18.16 has no
    /// `arrayFill` and picks, for each change, the k-th change that carried the column, k
    /// counted so far: quadratic in a key's number of changes (README, "History").
    fn fill_placeholders(self, i: usize) -> String {
        let values = format!("arrayMap(x -> tupleElement(x, {}), s)", i + 5);
        let carried = format!("bitTest(tupleElement(x, 5), {i}) = 0");
        match self {
            Dialect::Modern => {
                format!("arrayFill((v, m) -> bitTest(m, {i}) = 0, {values}, arrayMap(x -> tupleElement(x, 5), s))")
            }
            Dialect::Legacy => format!(
                "arrayMap(k -> tupleElement(arrayElement(arrayFilter(x -> {carried}, s), k), {}), \
                 arrayCumSum(arrayMap(x -> toUInt64({carried}), s)))",
                i + 5
            ),
        }
    }
}

/// ` ON CLUSTER name` when the schema is deployed on a cluster.
fn on_cluster(cluster: Option<&str>) -> String {
    cluster.map_or(String::new(), |c| format!(" ON CLUSTER {}", quote_ident(c)))
}

/// The engine of a versioned table: `ReplacingMergeTree`, replicated on a cluster.
fn engine(cluster: Option<&str>, parameters: &str) -> String {
    match cluster {
        None => format!("ReplacingMergeTree({parameters})"),
        Some(_) => {
            let rest = if parameters.is_empty() { String::new() } else { format!(", {parameters}") };
            format!(
                "ReplicatedReplacingMergeTree('/clickhouse/tables/{{shard}}/{{database}}/{{table}}', '{{replica}}'{rest})"
            )
        }
    }
}

/// The current-state view of a mirror: live rows newer than the table's last truncation (0
/// when there is none: every version is above it, docs/versions.md). `SELECT *` is expanded
/// when the view is created, so a generic mirror's view is created again after its table
/// gains a column.
fn current_view(database: &str, table: &str, cluster: Option<&str>, replace: bool) -> String {
    let db = quote_ident(database);
    let create = if replace { "CREATE OR REPLACE VIEW" } else { "CREATE VIEW IF NOT EXISTS" };
    format!(
        "{create} {db}.{view}{on} AS SELECT * FROM {db}.{name} FINAL WHERE _is_deleted = 0 AND _version > \
         (SELECT max(_version) FROM {db}.{TRUNCATIONS_TABLE} WHERE table_name = {literal})",
        view = quote_ident(&format!("{table}_current")),
        name = quote_ident(table),
        on = on_cluster(cluster),
        literal = quote_literal(table),
    )
}

/// A generic mirror: key columns (never NULL) first, then the other columns as `Nullable`, then
/// version and flag; ordered by the source's primary key (docs/generic-mirrors.md).
pub(crate) fn create_generic_table(
    dialect: Dialect,
    database: &str,
    cluster: Option<&str>,
    table: &str,
    key: &[(String, ColumnType)],
    columns: &[(String, ColumnType)],
) -> String {
    let defs: Vec<String> = key
        .iter()
        .map(|(name, ty)| format!("{} {}", quote_ident(name), column_type_sql(*ty, dialect)))
        .chain(
            columns
                .iter()
                .map(|(name, ty)| format!("{} Nullable({})", quote_ident(name), column_type_sql(*ty, dialect))),
        )
        .chain(["_version UInt64".to_string(), "_is_deleted UInt8".to_string()])
        .collect();
    let order: Vec<String> = key.iter().map(|(name, _)| quote_ident(name)).collect();
    format!(
        "CREATE TABLE IF NOT EXISTS {db}.{name}{on} ({defs}) ENGINE = {engine} ORDER BY ({order}) {settings}",
        db = quote_ident(database),
        settings = dialect.lookup_table_settings(),
        name = quote_ident(table),
        on = on_cluster(cluster),
        defs = defs.join(", "),
        engine = engine(cluster, VERSION_PARAMETERS),
        order = order.join(", "),
    )
}

/// The statements that (re)create a generic mirror's current-state view: after a new column, the
/// view must be created again to show it. 18.16 has no `CREATE OR REPLACE VIEW`: it drops and
/// creates (a concurrent reader may miss the view for that moment; every invocation that adds a
/// column recreates the view after its own ALTER, so the last one includes every column).
pub(crate) fn generic_view_statements(
    dialect: Dialect,
    database: &str,
    cluster: Option<&str>,
    table: &str,
) -> Vec<String> {
    match dialect {
        Dialect::Modern => vec![current_view(database, table, cluster, true)],
        Dialect::Legacy => vec![
            format!(
                "DROP TABLE IF EXISTS {}.{}{}",
                quote_ident(database),
                quote_ident(&format!("{table}_current")),
                on_cluster(cluster)
            ),
            current_view(database, table, cluster, false),
        ],
    }
}

/// Adds one column to a generic mirror. 18.16 has no `ADD COLUMN IF NOT EXISTS`: a concurrent
/// invocation that added it first makes this fail with "already exists", which the caller
/// takes as success ([`is_duplicate_column`]).
pub(crate) fn add_column(
    dialect: Dialect,
    database: &str,
    cluster: Option<&str>,
    table: &str,
    column: &str,
    ty: ColumnType,
) -> String {
    let if_not_exists = if dialect == Dialect::Modern { "IF NOT EXISTS " } else { "" };
    format!(
        "ALTER TABLE {}.{}{} ADD COLUMN {if_not_exists}{} Nullable({})",
        quote_ident(database),
        quote_ident(table),
        on_cluster(cluster),
        quote_ident(column),
        column_type_sql(ty, dialect)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modern_ddl_uses_datetime64_and_no_engine_parameter_that_drops_tombstones() {
        let ddl = schema_statements(Dialect::Modern, "analytics", None).join("\n");
        assert!(ddl.contains("ReplacingMergeTree(_version)") && !ddl.contains("_version, _is_deleted)"));
        assert!(ddl.contains("order_date DateTime64(6, 'UTC')"));
        let legacy = schema_statements(Dialect::Legacy, "analytics", None).join("\n");
        assert!(!legacy.contains("DateTime64") && !legacy.contains("LowCardinality"));
    }

    #[test]
    fn tables_read_by_key_get_small_granules_and_small_blocks_where_the_server_takes_them() {
        let modern = schema_statements(Dialect::Modern, "analytics", None);
        let legacy = schema_statements(Dialect::Legacy, "analytics", None);
        for table in ["order_items", "orders", "customers", "products", "_items_by_order", "_orders_by_customer"] {
            let of =
                |ddl: &[String]| ddl.iter().find(|s| s.contains(&format!("`analytics`.{table} "))).unwrap().clone();
            assert!(of(&modern).ends_with("max_compress_block_size = 16384"), "{table}");
            // 18.16 refuses unknown table settings; its block sizes are server-wide.
            assert!(of(&legacy).ends_with("SETTINGS index_granularity = 1024"), "{table}");
        }
        let facts = modern.iter().find(|s| s.contains("`analytics`.sales_fact ")).unwrap();
        assert!(!facts.contains("SETTINGS"), "analysts scan sales_fact: default granules and blocks");
        let generic =
            create_generic_table(Dialect::Modern, "analytics", None, "t", &[("id".into(), ColumnType::Int64)], &[]);
        assert!(generic.contains("min_compress_block_size = 4096"));
        // Tables of an earlier release are moved over on current servers.
        assert_eq!(
            lookup_block_sizes_statement("analytics", Some("prod"), "orders"),
            "ALTER TABLE `analytics`.`orders` ON CLUSTER `prod` MODIFY SETTING min_compress_block_size = 4096, \
             max_compress_block_size = 16384"
        );
    }

    #[test]
    fn history_is_created_only_for_the_tables_that_keep_it_and_on_the_cluster() {
        let none = std::collections::BTreeSet::new();
        assert!(history_statements(Dialect::Modern, "analytics", None, &none).is_empty());
        let customers = std::collections::BTreeSet::from([SourceTable::Customers]);
        let ddl = history_statements(Dialect::Modern, "analytics", Some("prod"), &customers);
        assert_eq!(ddl.len(), 4, "truncations, the history table, its views: {ddl:?}");
        assert!(ddl.iter().all(|s| s.contains(" ON CLUSTER `prod` ")), "{ddl:?}");
        assert!(ddl[1].starts_with("CREATE TABLE IF NOT EXISTS `analytics`.`customers_history`"));
        // Duplicates of one change collapse; no version column decides between them.
        assert!(ddl[1].contains("'{replica}') ORDER BY (id, _version)"), "{}", ddl[1]);
        assert!(ddl[1].contains("_commit_us Int64, _toast_mask UInt64"));
        assert!(ddl[2].starts_with("CREATE VIEW IF NOT EXISTS `analytics`.`customers_scd2`"));
        assert!(ddl[2].contains("arrayFill"), "current servers fill placeholders in one pass");
        assert!(ddl[3].contains("`customers_as_of` ON CLUSTER `prod` AS SELECT") && ddl[3].contains("{at_us:Int64}"));
        let legacy = history_statements(Dialect::Legacy, "analytics", None, &customers);
        assert!(!legacy[2].contains("arrayFill") && legacy[2].contains("arrayCumSum"), "18.16 has no arrayFill");
        assert_eq!(legacy.len(), 3, "18.16 has no parameterized views");
        let all = SourceTable::ALL.into_iter().collect();
        let with_facts = history_statements(Dialect::Modern, "analytics", None, &all);
        assert!(with_facts.last().unwrap().contains("`sales_fact_as_of` AS SELECT"), "all four tables: facts as of");
        assert_eq!(history_columns(SourceTable::Customers.spec()).last(), Some(&"_toast_mask"));
    }

    #[test]
    fn a_cluster_gets_on_cluster_ddl_and_replicated_engines() {
        let ddl = schema_statements(Dialect::Modern, "analytics", Some("prod"));
        assert_eq!(ddl[0], "CREATE DATABASE IF NOT EXISTS `analytics` ON CLUSTER `prod`");
        for statement in &ddl[1..] {
            assert!(statement.contains(" ON CLUSTER `prod` "), "{statement}");
            assert!(!statement.contains(" ReplacingMergeTree"), "{statement}");
        }
        let facts = ddl.iter().find(|s| s.contains("`analytics`.sales_fact ON")).unwrap();
        assert!(facts.contains(
            "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}', _version)"
        ));
        let index = ddl.iter().find(|s| s.contains("_items_by_order")).unwrap();
        assert!(index.contains("'{replica}') ORDER BY (order_id, order_item_id)"), "{index}");
    }
}
