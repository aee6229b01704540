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

use cdc_core::generic::ColumnType;
use crate::generic_values::column_type_sql;
use cdc_core::rederive::Scope;
use cdc_core::tables::{ColumnKind, SourceTable, TableSpec};

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

    /// `sales_fact._version`: the packed (item, order, dimensions) tuple where `UInt256` exists
    /// (docs/sales-fact.md), the components' sum on older servers.
    pub fn fact_version_type(self) -> &'static str {
        match self {
            Dialect::Modern => "UInt256",
            Dialect::Legacy => "UInt64",
        }
    }

    /// The `ReplacingMergeTree` parameters of versioned tables.
    fn version_parameters(self) -> &'static str {
        match self {
            Dialect::Modern => "_version, _is_deleted",
            Dialect::Legacy => "_version",
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
/// The version scale each mirror is fed on, pinned by its first change (docs/versions.md).
pub const VERSION_SCALES_TABLE: &str = "_version_scales";
pub const FACT_TABLE: &str = "sales_fact";

/// A foreign-key index: which children (order items, orders) ever referenced a parent key.
///
/// Written with the mirror rows it describes, before the invocation's first lookup, so a
/// lookup finds every child whose writes completed before it (docs/sales-fact.md, "Finding the
/// facts a change touches"). Entries are never removed: a stale one (the child moved on) only
/// makes a derivation reread a row, which is harmless.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FkIndex {
    pub table: &'static str,
    pub parent: &'static str,
    pub child: &'static str,
}

pub const ITEMS_BY_ORDER: FkIndex = FkIndex { table: "_items_by_order", parent: "order_id", child: "order_item_id" };
pub const ITEMS_BY_PRODUCT: FkIndex =
    FkIndex { table: "_items_by_product", parent: "product_id", child: "order_item_id" };
pub const ORDERS_BY_CUSTOMER: FkIndex =
    FkIndex { table: "_orders_by_customer", parent: "customer_id", child: "order_id" };
pub const FK_INDEXES: [FkIndex; 3] = [ITEMS_BY_ORDER, ITEMS_BY_PRODUCT, ORDERS_BY_CUSTOMER];

impl FkIndex {
    /// The indexes a mirror row of `table` feeds, with the column holding the parent key.
    pub fn fed_by(table: SourceTable) -> &'static [FkIndex] {
        match table {
            SourceTable::OrderItems => &[ITEMS_BY_ORDER, ITEMS_BY_PRODUCT],
            SourceTable::Orders => &[ORDERS_BY_CUSTOMER],
            SourceTable::Customers | SourceTable::Products => &[],
        }
    }

    pub fn columns(&self) -> [&'static str; 2] {
        [self.parent, self.child]
    }
}

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
        dialect.fact_version_type(),
        "UInt8",
    ];
    FACT_COLUMNS.iter().zip(types).map(|(name, ty)| format!("{name} {ty}")).collect()
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
    pub fn lookup_table_settings(self) -> String {
        match self {
            Dialect::Modern => format!("SETTINGS index_granularity = 1024, {LOOKUP_BLOCK_SIZES}"),
            Dialect::Legacy => "SETTINGS index_granularity = 1024".to_string(),
        }
    }
}

/// The compressed block sizes of tables read by key (see [`Dialect::lookup_table_settings`]).
const LOOKUP_BLOCK_SIZES: &str = "min_compress_block_size = 4096, max_compress_block_size = 16384";

/// Tables of the database read by key (every `ReplacingMergeTree` but `sales_fact` and
/// `_truncations`) that an earlier release created without the block sizes: on current servers
/// `migrate` moves them over ([`lookup_block_sizes_statement`]).
pub fn tables_without_block_sizes_query(database: &str) -> String {
    format!(
        "SELECT name FROM system.tables WHERE database = {} AND engine LIKE '%ReplacingMergeTree' \
         AND name NOT IN ({}, {}) AND engine_full NOT LIKE '%max_compress_block_size%' ORDER BY name",
        quote_literal(database),
        quote_literal(FACT_TABLE),
        quote_literal(TRUNCATIONS_TABLE),
    )
}

/// Gives an existing table the block sizes of tables read by key; parts written from then on
/// (inserts and merges) use them.
pub fn lookup_block_sizes_statement(database: &str, cluster: Option<&str>, table: &str) -> String {
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
pub fn schema_statements(dialect: Dialect, database: &str, cluster: Option<&str>) -> Vec<String> {
    let db = quote_ident(database);
    let on = on_cluster(cluster);
    let engine = |parameters: &str| engine(cluster, parameters);
    let mut statements = vec![format!("CREATE DATABASE IF NOT EXISTS {db}{on}")];
    for table in SourceTable::ALL {
        let spec = table.spec();
        statements.push(format!(
            "CREATE TABLE IF NOT EXISTS {db}.{name}{on} ({columns}) ENGINE = {engine} ORDER BY {key} {settings}",
            name = spec.name,
            settings = dialect.lookup_table_settings(),
            columns = mirror_column_defs(dialect, table).join(", "),
            engine = engine(dialect.version_parameters()),
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
        engine = engine(dialect.version_parameters()),
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
pub fn create_generic_table(
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
        .chain(columns.iter().map(|(name, ty)| format!("{} Nullable({})", quote_ident(name), column_type_sql(*ty, dialect))))
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
        engine = engine(cluster, dialect.version_parameters()),
        order = order.join(", "),
    )
}

/// The statements that (re)create a generic mirror's current-state view: after a new column, the
/// view must be created again to show it. 18.16 has no `CREATE OR REPLACE VIEW`: it drops and
/// creates (a concurrent reader may miss the view for that moment; every invocation that adds a
/// column recreates the view after its own ALTER, so the last one includes every column).
pub fn generic_view_statements(dialect: Dialect, database: &str, cluster: Option<&str>, table: &str) -> Vec<String> {
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
pub fn add_column(
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

/// The columns of a table, in order, as `(name, type)` rows.
pub fn columns_query(database: &str, table: &str) -> String {
    format!(
        "SELECT name, type FROM system.columns WHERE database = {} AND table = {}",
        quote_literal(database),
        quote_literal(table)
    )
}

/// The newest row of each listed key of a generic mirror (TOAST completion), in RowBinary:
/// `columns` in order, then `_version`, `_is_deleted`. `keys` are SQL literals of the key
/// columns, one tuple per key.
pub fn generic_latest_query(
    database: &str,
    table: &str,
    key: &[String],
    columns: &[String],
    keys: &[String],
) -> String {
    let key_list: Vec<String> = key.iter().map(|k| quote_ident(k)).collect();
    let key_tuple = if key.len() == 1 { key_list[0].clone() } else { format!("({})", key_list.join(", ")) };
    let select: Vec<String> =
        columns.iter().map(|c| quote_ident(c)).chain(["_version".into(), "_is_deleted".into()]).collect();
    format!(
        "SELECT {select} FROM {db}.{name} WHERE {key_tuple} IN ({keys}) ORDER BY _version DESC LIMIT 1 BY {by}",
        select = select.join(", "),
        db = quote_ident(database),
        name = quote_ident(table),
        keys = keys.join(", "),
        by = key_list.join(", "),
    )
}

/// A string literal for SQL text.
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
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
/// the key): with the legacy sum version the fact derivation needs a deleted item's order and
/// product, and a deleted order's customer, to count their versions; otherwise the deletion's
/// sum could fall below that of the live fact it must replace (the tuple version of current
/// servers needs none of this: docs/sales-fact.md §3). Old versions survive until a merge; by then
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

/// The children of the given parents, at most `per_parent` of each (the first by child key) and
/// `total` in all, as `(parent, child)` rows ordered by parent then child. The key list is the
/// invocation's own changed keys, bounded by the batch; fan-out beyond the limits continues
/// page by page ([`page_queries`]).
pub fn children_query(database: &str, index: FkIndex, parents: &[i64], per_parent: usize, total: usize) -> String {
    let FkIndex { table, parent, child } = index;
    format!(
        "SELECT {parent}, {child} FROM {db}.{table} WHERE {parent} IN ({keys}) GROUP BY {parent}, {child} \
         ORDER BY {parent}, {child} LIMIT {per_parent} BY {parent} LIMIT {total}",
        db = quote_ident(database),
        keys = id_list(parents),
    )
}

/// One page of a re-derivation: the queries whose answers, merged by [`merge_pages`], are the
/// next `limit` order item ids above `after` in `scope`, in ascending order. The query text is
/// the same size whatever the fan-out. A parent's scope reads the parent's range of its index;
/// the whole-table scope reads each table in key order from `after` and stops after `limit`
/// distinct ids (one query per table: a `DISTINCT` over their union could not stop early).
pub fn page_queries(database: &str, scope: Scope, after: i64, limit: usize) -> Vec<String> {
    let db = quote_ident(database);
    let page = |source: String| format!("SELECT DISTINCT id FROM ({source}) ORDER BY id LIMIT {limit}");
    match scope {
        Scope::All => vec![
            format!("SELECT DISTINCT id FROM {db}.order_items WHERE id > {after} ORDER BY id LIMIT {limit}"),
            format!(
                "SELECT DISTINCT order_item_id AS id FROM {db}.{FACT_TABLE} WHERE order_item_id > {after} \
                 ORDER BY id LIMIT {limit}"
            ),
        ],
        _ => vec![page(scope_items(database, scope, after))],
    }
}

/// Merges the answers of [`page_queries`] into one page: the distinct ids up to the smallest
/// last id of any answer that came back full (above it, a full answer may have left ids out), at
/// most `limit`. The page is shorter than `limit` only when every answer was short, i.e. when
/// the scope has nothing more.
pub fn merge_pages(answers: Vec<Vec<i64>>, limit: usize) -> Vec<i64> {
    let cut = answers.iter().filter(|a| a.len() >= limit).filter_map(|a| a.last().copied()).min().unwrap_or(i64::MAX);
    let mut ids: Vec<i64> = answers.into_iter().flatten().filter(|id| *id <= cut).collect();
    ids.sort_unstable();
    ids.dedup();
    ids.truncate(limit);
    ids
}

/// Every order item id above `after` in `scope` (with repeats), as a subquery.
pub fn scope_items(database: &str, scope: Scope, after: i64) -> String {
    let db = quote_ident(database);
    let (i_o, i_p, o_c) = (ITEMS_BY_ORDER.table, ITEMS_BY_PRODUCT.table, ORDERS_BY_CUSTOMER.table);
    match scope {
        Scope::Order(key) => {
            format!("SELECT order_item_id AS id FROM {db}.{i_o} WHERE order_id = {key} AND order_item_id > {after}")
        }
        Scope::Product(key) => {
            format!("SELECT order_item_id AS id FROM {db}.{i_p} WHERE product_id = {key} AND order_item_id > {after}")
        }
        Scope::Customer(key) => format!(
            "SELECT order_item_id AS id FROM {db}.{i_o} WHERE order_item_id > {after} \
             AND order_id IN (SELECT order_id FROM {db}.{o_c} WHERE customer_id = {key})"
        ),
        Scope::All => format!(
            "SELECT id FROM {db}.order_items WHERE id > {after} UNION ALL \
             SELECT order_item_id AS id FROM {db}.{FACT_TABLE} WHERE order_item_id > {after}"
        ),
    }
}

/// The smallest version no source produces: log positions stay below 2^63 and µs timestamps
/// far below (docs/sales-fact.md, "Implausible versions").
pub const IMPLAUSIBLE_VERSION: u64 = 1 << 63;

/// Removes a mirror table's rows with implausible versions, of one key or of every key.
pub fn purge_implausible_statement(database: &str, table: SourceTable, key: Option<i64>) -> String {
    let spec = table.spec();
    let of_key = key.map_or(String::new(), |k| format!("{} = {k} AND ", spec.key));
    format!(
        "ALTER TABLE {}.{} DELETE WHERE {of_key}_version >= {IMPLAUSIBLE_VERSION}",
        quote_ident(database),
        spec.name
    )
}

/// Removes the facts of a scope (before a repair re-derives them).
pub fn delete_facts_statement(database: &str, scope: Scope) -> String {
    let db = quote_ident(database);
    match scope {
        Scope::All => format!("ALTER TABLE {db}.{FACT_TABLE} DELETE WHERE 1 = 1"),
        _ => format!(
            "ALTER TABLE {db}.{FACT_TABLE} DELETE WHERE order_item_id IN ({})",
            scope_items(database, scope, i64::MIN)
        ),
    }
}

/// Keys of a mirror table that are live but were last written below `version`: after a repair
/// re-wrote every source row at `version`, these no longer exist in the source.
pub fn live_keys_below_query(database: &str, table: SourceTable, version: u64) -> String {
    let key = table.spec().key;
    format!(
        "SELECT {key} FROM {}.{} GROUP BY {key} HAVING max(_version) < {version} AND argMax(_is_deleted, _version) = 0 \
         ORDER BY {key}",
        quote_ident(database),
        table.name()
    )
}

/// Mutations of a table not finished yet (`ALTER ... DELETE` runs in the background).
pub fn pending_mutations_query(database: &str, table: &str) -> String {
    format!(
        "SELECT toUInt64(count()) FROM system.mutations WHERE database = '{}' AND table = '{}' AND is_done = 0",
        database.replace('\\', "\\\\").replace('\'', "\\'"),
        table.replace('\'', "\\'"),
    )
}

/// The latest truncation position of each table.
pub fn truncations_query(database: &str) -> String {
    format!("SELECT table_name, max(_version) FROM {}.{TRUNCATIONS_TABLE} GROUP BY table_name", quote_ident(database))
}

/// Each mirror's pinned version scale: the scale of its earliest row.
pub fn version_scales_query(database: &str) -> String {
    format!(
        "SELECT table_name, argMin(scale, fixed_at) FROM {}.{VERSION_SCALES_TABLE} GROUP BY table_name",
        quote_ident(database)
    )
}

pub fn insert_statement(database: &str, table: &str, columns: &[&str]) -> String {
    let columns: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
    format!("INSERT INTO {}.{} ({}) FORMAT RowBinary", quote_ident(database), quote_ident(table), columns.join(", "))
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
        let ddl = schema_statements(Dialect::Modern, "analytics", None).join("\n");
        assert!(ddl.contains("ReplacingMergeTree(_version, _is_deleted)"));
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
    fn pages_of_several_tables_stop_where_a_full_answer_may_have_left_ids_out() {
        // order_items came back full at 5; sales_fact holds 4 and 9 too: 9 waits for the next page.
        assert_eq!(merge_pages(vec![vec![1, 3, 5], vec![4, 9]], 3), vec![1, 3, 4]);
        assert_eq!(merge_pages(vec![vec![1, 3, 5], vec![2, 9]], 5), vec![1, 2, 3, 5, 9]);
        // Both short: the scope's last page.
        assert_eq!(merge_pages(vec![vec![7], vec![7, 8]], 3), vec![7, 8]);
        assert!(merge_pages(vec![vec![], vec![]], 3).is_empty());
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
            "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}', _version, _is_deleted)"
        ));
        let index = ddl.iter().find(|s| s.contains("_items_by_order")).unwrap();
        assert!(index.contains("'{replica}') ORDER BY (order_id, order_item_id)"), "{index}");
    }

    #[test]
    fn identifiers_are_quoted_and_empty_lists_stay_valid() {
        assert_eq!(quote_ident("a`b"), "`a\\`b`");
        assert_eq!(id_list(&[]), "NULL");
        assert_eq!(id_list(&[1, -2]), "1,-2");
    }
}
