//! Every query and data statement: lookups by key, fan-out pages, RowBinary inserts, repair's
//! deletes and the reads that inspect the warehouse.
//!
//! Lookups never use `FINAL`: on modern servers `FINAL` hides `_is_deleted` rows, and the fact
//! derivation needs a deleted row's version. `argMax(col, _version) ... GROUP BY key` returns the
//! newest row including tombstones on every version. Only names and integers travel into the
//! text (names quoted); values come back to the caller, never into logs.

use cdc_core::rederive::Scope;
use cdc_core::tables::{ColumnKind, SourceTable};

use crate::dialect::{Dialect, id_list, quote_ident, quote_literal};
use crate::schema::{
    FACT_TABLE, FkIndex, ITEMS_BY_ORDER, ITEMS_BY_PRODUCT, ORDERS_BY_CUSTOMER, TRUNCATION_HISTORY_TABLE,
    TRUNCATIONS_TABLE, VERSION_SCALES_TABLE, WATERMARKS_TABLE, history_table,
};

/// The server's version, which picks the [`Dialect`].
pub(crate) const SERVER_VERSION: &str = "SELECT version()";
/// The `insert_quorum` the server makes of the one every statement carries (`value` is text on
/// every version).
pub(crate) const INSERT_QUORUM_SETTING: &str = "SELECT value FROM system.settings WHERE name = 'insert_quorum'";

/// Tables of the database read by key (every `ReplacingMergeTree` but `sales_fact`, the
/// histories and the small bookkeeping tables) that an earlier release created without the
/// block sizes: on current servers `migrate` moves them over ([`lookup_block_sizes_statement`]).
pub(crate) fn tables_without_block_sizes_query(database: &str) -> String {
    let histories = SourceTable::ALL.into_iter().map(history_table);
    let scanned = [FACT_TABLE, TRUNCATIONS_TABLE, TRUNCATION_HISTORY_TABLE, WATERMARKS_TABLE].map(String::from);
    let excluded: Vec<String> = scanned.into_iter().chain(histories).map(|t| quote_literal(&t)).collect();
    format!(
        "SELECT name FROM system.tables WHERE database = {} AND engine LIKE '%ReplacingMergeTree' \
         AND name NOT IN ({}) AND engine_full NOT LIKE '%max_compress_block_size%' ORDER BY name",
        quote_literal(database),
        excluded.join(", "),
    )
}

/// The columns of a table, in order, as `(name, type)` rows.
pub(crate) fn columns_query(database: &str, table: &str) -> String {
    format!(
        "SELECT name, type FROM system.columns WHERE database = {} AND table = {}",
        quote_literal(database),
        quote_literal(table)
    )
}

/// The newest row of each listed key of a generic mirror (TOAST completion), in RowBinary:
/// `columns` in order, then `_version`, `_is_deleted`. `keys` are SQL literals of the key
/// columns, one tuple per key.
pub(crate) fn generic_latest_query(
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
    rows_query(dialect, database, table, ids, None)
}

/// [`latest_rows_query`] of the rows committed by a time (µs since the epoch): read from the
/// table's history instead of its mirror (`FINAL`: of two stored rows of one key and version,
/// the one written last, as in the SCD2 view), so the derivation sees the table as of then.
pub fn rows_as_of_query(dialect: Dialect, database: &str, table: SourceTable, ids: &[i64], at_us: i64) -> String {
    rows_query(dialect, database, table, ids, Some(at_us))
}

fn rows_query(dialect: Dialect, database: &str, table: SourceTable, ids: &[i64], at_us: Option<i64>) -> String {
    let spec = table.spec();
    let (from, committed) = match at_us {
        None => (spec.name.to_string(), String::new()),
        Some(at) => (format!("{} FINAL", quote_ident(&history_table(table))), format!(" AND _commit_us <= {at}")),
    };
    let select = newest_values(dialect, table, at_us.is_some(), true);
    format!(
        "SELECT {} FROM {}.{from} WHERE {} IN ({}){committed} GROUP BY {}",
        select.join(", "),
        quote_ident(database),
        spec.key,
        id_list(ids),
        spec.key
    )
}

/// Per key: the key, each column's newest value, `max(_version)` and the newest row's
/// `_is_deleted`, for a `GROUP BY` of the key. A mirror's deletion carries values (see
/// [`latest_rows_query`]); a history's never does, and a history's column takes its value from
/// the newest change that carried it (not as a TOAST placeholder: docs/history.md).
/// `micros`: timestamps as Int64 microseconds.
fn newest_values(dialect: Dialect, table: SourceTable, history: bool, micros: bool) -> Vec<String> {
    let spec = table.spec();
    let mut select = vec![spec.key.to_string()];
    let has_values = match table.parent_key() {
        Some(parent) if !history => format!("_is_deleted = 0 OR {parent} != 0"),
        _ => "_is_deleted = 0".to_string(),
    };
    // Two mirror rows of one key and version are a change and its re-completion from the
    // history (`_refill` > 0, docs/history.md, "Mirrors"): the re-completion wins.
    let order = if history { "_version" } else { "(_version, _refill)" };
    for (i, column) in spec.columns.iter().enumerate().skip(1) {
        let carried = if history { format!(" AND bitTest(_toast_mask, {i}) = 0") } else { String::new() };
        let latest = format!("argMaxIf({name}, {order}, ({has_values}){carried})", name = column.name);
        select.push(match column.kind {
            ColumnKind::Timestamp if micros => dialect.micros_of(&latest),
            _ => latest,
        });
    }
    select.push("max(_version)".to_string());
    select.push(format!("argMax(_is_deleted, {order})"));
    select
}

/// The keys of `ids` whose newest change in the table's history came with TOAST placeholders
/// that earlier changes of the history carry: the key, that change's version and how many
/// changes of the key the history holds. Their mirror rows may have been completed from a
/// change that is not their predecessor (docs/history.md, "Mirrors").
pub(crate) fn refill_candidates_query(database: &str, table: SourceTable, ids: &[i64]) -> String {
    let spec = table.spec();
    let uncarried: Vec<String> = (1..spec.columns.len())
        .map(|i| format!("bitTest(top_mask, {i}) AND countIf(_is_deleted = 0 AND bitTest(_toast_mask, {i}) = 0) = 0"))
        .collect();
    format!(
        "SELECT {key} AS k, max(_version) AS top, count() AS changes, argMax(_toast_mask, _version) AS top_mask \
         FROM {}.{} FINAL WHERE {key} IN ({}) GROUP BY {key} \
         HAVING top_mask != 0 AND argMax(_is_deleted, _version) = 0 AND NOT ({})",
        quote_ident(database),
        quote_ident(&history_table(table)),
        id_list(ids),
        uncarried.join(" OR "),
        key = spec.key,
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
pub fn page_queries(database: &str, scope: Scope, after: Option<i64>, limit: usize) -> Vec<String> {
    let db = quote_ident(database);
    let page = |source: String| format!("SELECT DISTINCT id FROM ({source}) ORDER BY id LIMIT {limit}");
    match scope {
        Scope::All => vec![
            format!("SELECT DISTINCT id FROM {db}.order_items WHERE {} ORDER BY id LIMIT {limit}", above("id", after)),
            format!(
                "SELECT DISTINCT order_item_id AS id FROM {db}.{FACT_TABLE} WHERE {} ORDER BY id LIMIT {limit}",
                above("order_item_id", after)
            ),
        ],
        _ => vec![page(scope_items(database, scope, after))],
    }
}

/// Merges the answers of [`page_queries`] into one page: the distinct ids up to the smallest
/// last id of any answer that came back full (above it, a full answer may have left ids out), at
/// most `limit`. The page is shorter than `limit` only when every answer was short, i.e. when
/// the scope has nothing more.
pub(crate) fn merge_pages(answers: Vec<Vec<i64>>, limit: usize) -> Vec<i64> {
    let cut = answers.iter().filter(|a| a.len() >= limit).filter_map(|a| a.last().copied()).min().unwrap_or(i64::MAX);
    let mut ids: Vec<i64> = answers.into_iter().flatten().filter(|id| *id <= cut).collect();
    ids.sort_unstable();
    ids.dedup();
    ids.truncate(limit);
    ids
}

/// `column` above the cursor `after` (everything when `None`).
fn above(column: &str, after: Option<i64>) -> String {
    match after {
        Some(after) => format!("{column} > {after}"),
        None => "1 = 1".to_owned(),
    }
}

/// Every order item id above `after` in `scope` (with repeats), as a subquery.
fn scope_items(database: &str, scope: Scope, after: Option<i64>) -> String {
    let db = quote_ident(database);
    let (item_above, id_above) = (above("order_item_id", after), above("id", after));
    let (i_o, i_p, o_c) = (ITEMS_BY_ORDER.table, ITEMS_BY_PRODUCT.table, ORDERS_BY_CUSTOMER.table);
    match scope {
        Scope::Order(key) => {
            format!("SELECT order_item_id AS id FROM {db}.{i_o} WHERE order_id = {key} AND {item_above}")
        }
        Scope::Product(key) => {
            format!("SELECT order_item_id AS id FROM {db}.{i_p} WHERE product_id = {key} AND {item_above}")
        }
        Scope::Customer(key) => format!(
            "SELECT order_item_id AS id FROM {db}.{i_o} WHERE {item_above} \
             AND order_id IN (SELECT order_id FROM {db}.{o_c} WHERE customer_id = {key})"
        ),
        // `system.one`: a one-row table on every server, so the item needs no mirror row.
        Scope::Item(key) => {
            format!("SELECT toInt64({key}) AS id FROM system.one WHERE {}", above(&format!("toInt64({key})"), after))
        }
        Scope::All => format!(
            "SELECT id FROM {db}.order_items WHERE {id_above} UNION ALL \
             SELECT order_item_id AS id FROM {db}.{FACT_TABLE} WHERE {item_above}"
        ),
    }
}

/// The smallest version no source produces: log positions stay below 2^63 and µs timestamps
/// far below (docs/sales-fact.md, "Implausible versions").
const IMPLAUSIBLE_VERSION: u64 = 1 << 63;

/// Removes a mirror table's rows with implausible versions, of one key or of every key.
pub(crate) fn purge_implausible_statement(database: &str, table: SourceTable, key: Option<i64>) -> String {
    let spec = table.spec();
    let of_key = key.map_or(String::new(), |k| format!("{} = {k} AND ", spec.key));
    format!(
        "ALTER TABLE {}.{} DELETE WHERE {of_key}_version >= {IMPLAUSIBLE_VERSION}",
        quote_ident(database),
        spec.name
    )
}

/// Removes the facts of a scope (before a repair re-derives them).
pub(crate) fn delete_facts_statement(database: &str, scope: Scope) -> String {
    let db = quote_ident(database);
    match scope {
        Scope::All => format!("ALTER TABLE {db}.{FACT_TABLE} DELETE WHERE 1 = 1"),
        Scope::Item(key) => format!("ALTER TABLE {db}.{FACT_TABLE} DELETE WHERE order_item_id = {key}"),
        _ => format!(
            "ALTER TABLE {db}.{FACT_TABLE} DELETE WHERE order_item_id IN ({})",
            scope_items(database, scope, None)
        ),
    }
}

/// Keys of a mirror table (or only `of_key`, a key lookup) that are live but were last written
/// below `version`: after a repair re-wrote every source row at `version`, these no longer exist
/// in the source.
pub(crate) fn live_keys_below_query(database: &str, table: SourceTable, of_key: Option<i64>, version: u64) -> String {
    let key = table.spec().key;
    let filter = of_key.map_or(String::new(), |k| format!("WHERE {key} = {k} "));
    format!(
        "SELECT {key} FROM {}.{} {filter}GROUP BY {key} HAVING max(_version) < {version} \
         AND argMax(_is_deleted, _version) = 0 ORDER BY {key}",
        quote_ident(database),
        table.name()
    )
}

/// The greatest `_version` of one key of a mirror table, as one `version` row (0: no row):
/// whether a rewrite at a version won its key.
pub(crate) fn max_version_query(database: &str, table: SourceTable, key: i64) -> String {
    format!(
        "SELECT toUInt64(max(_version)) AS version FROM {}.{} WHERE {} = {key}",
        quote_ident(database),
        table.name(),
        table.spec().key
    )
}

/// Mutations of a table not finished yet (`ALTER ... DELETE` runs in the background).
pub(crate) fn pending_mutations_query(database: &str, table: &str) -> String {
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

/// The latest truncation position of each table that keeps history, among those committed by
/// a time (µs since the epoch).
pub(crate) fn truncations_as_of_query(database: &str, at_us: i64) -> String {
    format!(
        "SELECT table_name, max(_version) FROM {}.{TRUNCATION_HISTORY_TABLE} WHERE _commit_us <= {at_us} \
         GROUP BY table_name",
        quote_ident(database)
    )
}

/// The next `limit` keys above `after` that a history has rows for by a time, in order: the
/// pages in which `sales_fact` and a table are read as of that time.
pub(crate) fn history_keys_query(
    database: &str,
    table: SourceTable,
    at_us: i64,
    after: Option<i64>,
    limit: usize,
) -> String {
    let key = table.spec().key;
    format!(
        "SELECT DISTINCT {key} FROM {}.{} WHERE _commit_us <= {at_us} AND {} ORDER BY {key} LIMIT {limit}",
        quote_ident(database),
        quote_ident(&history_table(table)),
        above(key, after),
    )
}

/// A table as it was at a time (µs since the epoch), for keys `keys`: each key's newest change
/// committed by then, if not a deletion and above the table's latest truncation by then, its
/// TOAST placeholders filled (docs/history.md). The columns of the mirror, then `_version`.
pub(crate) fn table_as_of_query(
    dialect: Dialect,
    database: &str,
    table: SourceTable,
    at_us: i64,
    keys: &[i64],
) -> String {
    let of_keys = format!("{} IN ({}) AND ", table.spec().key, id_list(keys));
    format!(
        "{} ORDER BY {}",
        table_as_of_select(dialect, database, table, &at_us.to_string(), &of_keys),
        table.spec().key
    )
}

/// The SELECT of [`table_as_of_query`] for the time `at` (SQL: a number, or a view's
/// parameter) and the rows `filter` selects (SQL ending in `AND `, or empty).
pub(crate) fn table_as_of_select(
    dialect: Dialect,
    database: &str,
    table: SourceTable,
    at: &str,
    filter: &str,
) -> String {
    let spec = table.spec();
    let db = quote_ident(database);
    // Aliases unlike any column: ClickHouse resolves a name to an alias first, and
    // `argMax(x, _version) AS x` would nest an aggregate in another.
    let values = newest_values(dialect, table, true, false);
    let inner: Vec<String> = values.iter().enumerate().map(|(i, value)| format!("{value} AS c{i}")).collect();
    let names = spec.columns.iter().map(|c| c.name).chain(["_version"]);
    let outer: Vec<String> = names.enumerate().map(|(i, name)| format!("c{i} AS {name}")).collect();
    let deleted = values.len() - 1;
    let version = values.len() - 2;
    format!(
        "SELECT {outer} FROM (SELECT {inner} FROM {db}.{history} FINAL WHERE {filter}_commit_us <= {at} \
         GROUP BY {key}) WHERE c{deleted} = 0 AND c{version} > (SELECT max(_version) \
         FROM {db}.{TRUNCATION_HISTORY_TABLE} WHERE table_name = {name} AND _commit_us <= {at})",
        outer = outer.join(", "),
        inner = inner.join(", "),
        history = quote_ident(&history_table(table)),
        key = spec.key,
        name = quote_literal(table.name()),
    )
}

/// Every stored change of one key of a table that keeps history, in source order, with its
/// validity: the rows of the table's SCD2 view for that key (deletions end a version), read
/// with the key filter inside (a filter on the view would be applied after it grouped every
/// key on 18.16).
pub(crate) fn key_history_query(dialect: Dialect, database: &str, table: SourceTable, key: i64) -> String {
    format!("{} ORDER BY _version, valid_from_us", crate::schema::scd2_select(dialect, database, table, Some(key)))
}

/// Each mirror's pinned version scale: the scale of its earliest row.
pub(crate) fn version_scales_query(database: &str) -> String {
    format!(
        "SELECT table_name, argMin(scale, fixed_at) FROM {}.{VERSION_SCALES_TABLE} GROUP BY table_name",
        quote_ident(database)
    )
}

/// Each mirror's watermark: its highest position and that change's commit time.
pub(crate) fn watermarks_query(database: &str) -> String {
    format!(
        "SELECT table_name, max(_version), argMax(commit_us, _version) FROM {}.{WATERMARKS_TABLE} GROUP BY table_name",
        quote_ident(database)
    )
}

pub(crate) fn insert_statement(database: &str, table: &str, columns: &[&str]) -> String {
    let columns: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
    format!("INSERT INTO {}.{} ({}) FORMAT RowBinary", quote_ident(database), quote_ident(table), columns.join(", "))
}

/// Whether a table (or view) of this name exists in `database`, as one `n` row.
pub(crate) fn has_table_query(database: &str, name: &str) -> String {
    format!(
        "SELECT count() AS n FROM system.tables WHERE database = {} AND name = {}",
        quote_literal(database),
        quote_literal(name)
    )
}

/// The live rows of a table, `select` expressions of each: from its current-state view when
/// there is one (`view`), otherwise `FINAL` without the deleted rows.
pub(crate) fn live_rows_query(database: &str, table: &str, view: Option<&str>, select: &[String]) -> String {
    let db = quote_ident(database);
    let from = match view {
        Some(view) => format!("{db}.{}", quote_ident(view)),
        None => format!("{db}.{} FINAL WHERE _is_deleted = 0", quote_ident(table)),
    };
    format!("SELECT {} FROM {from}", select.join(", "))
}

/// The name of a live customer of the `customers` mirror, as a `name` row (freshness probes).
pub(crate) fn live_customer_name_query(database: &str, id: i64) -> String {
    format!("SELECT name FROM {}.customers FINAL WHERE id = {id} AND _is_deleted = 0", quote_ident(database))
}

/// The customer name of a live `sales_fact` row, as a `name` row (freshness probes).
pub(crate) fn live_fact_customer_name_query(database: &str, order_item_id: i64) -> String {
    format!(
        "SELECT customer_name AS name FROM {}.{FACT_TABLE} FINAL WHERE order_item_id = {order_item_id} \
         AND _is_deleted = 0",
        quote_ident(database)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn identifiers_are_quoted_and_empty_lists_stay_valid() {
        assert_eq!(quote_ident("a`b"), "`a\\`b`");
        assert_eq!(id_list(&[]), "NULL");
        assert_eq!(id_list(&[1, -2]), "1,-2");
    }
}
