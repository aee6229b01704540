//! The tables this processor mirrors, and which source tables feed them.
//!
//! Enters: a source table's identity (database, schema, table), or a mirror's name. Leaves: the
//! [`MirrorTarget`] it feeds by the [`TableMapping`] (if any). The four sales tables (the seeds'
//! schema) have declared [`TableSpec`]s (columns and their kinds): decoders use the kinds to
//! type values when a message carries no schema block, the mirror stage to build their rows,
//! and they feed `sales_fact`. Every other mapped table is a generic mirror, typed from its
//! events (`crate::generic`). A change of a table outside the mapping is skipped (or rejected
//! when configured).

use std::sync::Arc;

/// How a source column is typed, independent of the wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ColumnKind {
    /// BIGINT.
    Int64,
    /// INTEGER.
    Int32,
    /// TEXT / VARCHAR.
    Text,
    /// NUMERIC(p, scale): Debezium sends base64 of the unscaled integer when precise.
    Decimal { scale: u32 },
    /// TIMESTAMPTZ (or TIMESTAMP): an instant, kept as microseconds UTC.
    Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColumnSpec {
    pub name: &'static str,
    pub kind: ColumnKind,
}

/// One of the four source tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceTable {
    Customers,
    Products,
    Orders,
    OrderItems,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableSpec {
    pub(crate) table: SourceTable,
    pub name: &'static str,
    /// The primary key column (BIGINT in all four tables).
    pub key: &'static str,
    pub columns: &'static [ColumnSpec],
}

const fn col(name: &'static str, kind: ColumnKind) -> ColumnSpec {
    ColumnSpec { name, kind }
}

use ColumnKind::*;

/// Money columns are NUMERIC(12, 2) in the source.
const MONEY_SCALE: u32 = 2;

const CUSTOMERS: TableSpec = TableSpec {
    table: SourceTable::Customers,
    name: "customers",
    key: "id",
    columns: &[
        col("id", Int64),
        col("email", Text),
        col("name", Text),
        col("country", Text),
        col("city", Text),
        col("created_at", Timestamp),
    ],
};

const PRODUCTS: TableSpec = TableSpec {
    table: SourceTable::Products,
    name: "products",
    key: "id",
    columns: &[
        col("id", Int64),
        col("name", Text),
        col("category", Text),
        col("price", Decimal { scale: MONEY_SCALE }),
        col("created_at", Timestamp),
    ],
};

const ORDERS: TableSpec = TableSpec {
    table: SourceTable::Orders,
    name: "orders",
    key: "id",
    columns: &[
        col("id", Int64),
        col("customer_id", Int64),
        col("order_date", Timestamp),
        col("status", Text),
        col("total", Decimal { scale: MONEY_SCALE }),
    ],
};

const ORDER_ITEMS: TableSpec = TableSpec {
    table: SourceTable::OrderItems,
    name: "order_items",
    key: "id",
    columns: &[
        col("id", Int64),
        col("order_id", Int64),
        col("product_id", Int64),
        col("quantity", Int32),
        col("price", Decimal { scale: MONEY_SCALE }),
    ],
};

#[cfg(test)]
const ALL: [&TableSpec; 4] = [&CUSTOMERS, &PRODUCTS, &ORDERS, &ORDER_ITEMS];

impl SourceTable {
    pub const ALL: [SourceTable; 4] =
        [SourceTable::Customers, SourceTable::Products, SourceTable::Orders, SourceTable::OrderItems];

    pub fn spec(self) -> &'static TableSpec {
        match self {
            SourceTable::Customers => &CUSTOMERS,
            SourceTable::Products => &PRODUCTS,
            SourceTable::Orders => &ORDERS,
            SourceTable::OrderItems => &ORDER_ITEMS,
        }
    }

    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// The column through which this table's rows reach their parents in `sales_fact`
    /// (an item's order, an order's customer), if any.
    pub fn parent_key(self) -> Option<&'static str> {
        match self {
            SourceTable::OrderItems => Some("order_id"),
            SourceTable::Orders => Some("customer_id"),
            SourceTable::Customers | SourceTable::Products => None,
        }
    }

    /// Every foreign-key column (the parent key and an item's product).
    pub fn foreign_keys(self) -> &'static [&'static str] {
        match self {
            SourceTable::OrderItems => &["order_id", "product_id"],
            SourceTable::Orders => &["customer_id"],
            SourceTable::Customers | SourceTable::Products => &[],
        }
    }

    pub(crate) fn has_foreign_keys(self) -> bool {
        self.parent_key().is_some()
    }

    /// The mirror table called `name` in ClickHouse (`customers`, `products`, `orders`,
    /// `order_items`), exactly. Never used for a source table's name: which source table feeds
    /// a mirror is the [`TableMapping`]'s decision, never a match by bare name or alias.
    pub fn from_name(name: &str) -> Option<SourceTable> {
        SourceTable::ALL.into_iter().find(|t| t.name() == name)
    }
}

impl TableSpec {
    pub(crate) fn column(&self, name: &str) -> Option<&ColumnSpec> {
        self.columns.iter().find(|c| c.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_has_its_key_as_first_column() {
        for spec in ALL {
            assert_eq!(spec.columns[0].name, spec.key);
            assert_eq!(spec.table.spec().name, spec.name);
        }
    }

    #[test]
    fn mirror_names_are_exact() {
        assert_eq!(SourceTable::from_name("order_items"), Some(SourceTable::OrderItems));
        for alias in ["OrderItem", "SalesOrder", "order", "ORDERS", "public.orders", "inventory"] {
            assert_eq!(SourceTable::from_name(alias), None, "{alias}");
        }
    }
}

/// A source table the mapping captures.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CapturedSource {
    /// A relational table, named as the source database names it: `schema.table`, or
    /// `database.schema.table` to accept it from that database only. Names are compared exactly
    /// (PostgreSQL identifiers are case-sensitive once quoted: `ORDERS` is not `orders`).
    Table { database: Option<String>, schema: String, table: String },
    /// An entity of the platform's `DatabaseChangeCaptured` envelope, named by its `tableName`
    /// without a qualifier (`SalesOrder`). A qualified platform `tableName` (`public.orders`)
    /// is a relational table and goes through [`CapturedSource::Table`] entries instead.
    Platform { name: String },
}

impl std::fmt::Display for CapturedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CapturedSource::Table { database: Some(db), schema, table } => write!(f, "{db}.{schema}.{table}"),
            CapturedSource::Table { database: None, schema, table } => write!(f, "{schema}.{table}"),
            CapturedSource::Platform { name } => write!(f, "platform:{name}"),
        }
    }
}

/// Where a captured table's changes go in ClickHouse.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MirrorTarget {
    /// One of the four sales tables: a mirror with declared columns that also feeds
    /// `sales_fact`.
    Sales(SourceTable),
    /// Any other table: a generic mirror, typed from what its events carry and created on first
    /// sight (`crate::generic`, docs/generic-mirrors.md).
    Generic(Arc<GenericTable>),
}

impl MirrorTarget {
    /// The ClickHouse table name.
    pub fn name(&self) -> &str {
        match self {
            MirrorTarget::Sales(table) => table.name(),
            MirrorTarget::Generic(table) => &table.name,
        }
    }

    pub fn sales(&self) -> Option<SourceTable> {
        match self {
            MirrorTarget::Sales(table) => Some(*table),
            MirrorTarget::Generic(_) => None,
        }
    }
}

impl PartialEq<SourceTable> for MirrorTarget {
    fn eq(&self, other: &SourceTable) -> bool {
        self.sales() == Some(*other)
    }
}

/// A generic mirror: its ClickHouse name, the source's primary-key columns, which order it, and
/// the columns whose type is declared for events that carry no schema (DMS, the platform,
/// schemaless Debezium): their values are read as that kind instead of by their JSON form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct GenericTable {
    pub name: String,
    pub key: Vec<String>,
    pub declared: Vec<(String, ColumnKind)>,
}

impl GenericTable {
    pub(crate) fn declared(&self, column: &str) -> Option<ColumnKind> {
        self.declared.iter().find(|(name, _)| name == column).map(|(_, kind)| *kind)
    }
}

/// A declared column type of `CAPTURED_TABLES` (`{column:type ...}`).
fn declared_kind(text: &str) -> Option<ColumnKind> {
    Some(match text {
        "bigint" | "int8" | "integer" | "int" | "int4" | "smallint" | "int2" => ColumnKind::Int64,
        "text" => ColumnKind::Text,
        "numeric" => ColumnKind::Decimal { scale: 0 },
        "timestamp" | "timestamptz" => ColumnKind::Timestamp,
        _ => {
            let scale = text.strip_prefix("numeric(")?.strip_suffix(')')?.trim().parse::<u32>().ok()?;
            if scale > 38 {
                return None;
            }
            ColumnKind::Decimal { scale }
        }
    })
}

/// Which source tables are captured, and into which mirror: the processor's equivalent of
/// Debezium's `table.include.list`. Configured by `CAPTURED_TABLES` (see [`TableMapping::parse`]);
/// the default is [`TableMapping::default`]. Lookups are exact: a table is never mapped by its
/// bare name or an alias, so `inventory.customers`, `archive.orders` or `ORDERS` never land in
/// a sales mirror unless an entry says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableMapping {
    entries: Vec<(CapturedSource, MirrorTarget)>,
}

/// A `CAPTURED_TABLES` value that cannot be used (a configuration error: systemic).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CAPTURED_TABLES entry `{entry}`: {problem}")]
pub struct MappingError {
    pub(crate) entry: String,
    problem: &'static str,
}

impl Default for TableMapping {
    /// The four sales tables in schema `public` of any database, plus the platform envelope's
    /// entity names.
    ///
    /// The platform entries (`Customer`, `Product`, `SalesOrder`, `OrderItem`) are part of the
    /// platform's event contract (seed 002: `tableName` names the entity, in PascalCase, without
    /// a schema), not aliases: they are accepted only from platform envelopes, never from a
    /// Debezium or DMS event, whose tables are always (schema, table). Keeping them in the
    /// default mapping lets the platform's events keep working without configuration; a
    /// deployment without the platform can drop them by setting `CAPTURED_TABLES`.
    fn default() -> Self {
        let table = |name: &str, mirror| {
            (
                CapturedSource::Table { database: None, schema: "public".into(), table: name.into() },
                MirrorTarget::Sales(mirror),
            )
        };
        let platform =
            |name: &str, mirror| (CapturedSource::Platform { name: name.into() }, MirrorTarget::Sales(mirror));
        Self {
            entries: vec![
                table("customers", SourceTable::Customers),
                table("products", SourceTable::Products),
                table("orders", SourceTable::Orders),
                table("order_items", SourceTable::OrderItems),
                platform("Customer", SourceTable::Customers),
                platform("Product", SourceTable::Products),
                platform("SalesOrder", SourceTable::Orders),
                platform("OrderItem", SourceTable::OrderItems),
            ],
        }
    }
}

/// Names this processor keeps for itself in the ClickHouse database: a generic mirror may not
/// take them (nor any name starting with `_`, nor one ending in `_current`, the views).
const RESERVED_TARGETS: &[&str] = &["sales_fact"];

impl TableMapping {
    /// Parses `CAPTURED_TABLES`: comma-separated entries `SOURCE[=TARGET][(KEY ...)][{COL:TYPE ...}]`,
    /// where SOURCE is `schema.table`, `database.schema.table` or `platform:Name`, TARGET the
    /// ClickHouse table (default: the source table's own name), KEY the source's primary-key
    /// columns, separated by spaces (default: `id`), and COL:TYPE declares how a generic mirror's
    /// column is read from events without a schema block (TYPE `bigint`, `text`, `numeric`,
    /// `numeric(S)`, `timestamp`). A TARGET of `customers`, `products`, `orders` or
    /// `order_items` is that sales mirror (key `id`, feeds `sales_fact`); any other is a generic
    /// mirror. Whitespace around entries is ignored; an empty value means the default mapping.
    ///
    /// Refused: a malformed source or target, a key for a sales mirror other than `id`, the same
    /// source twice, and two relational sources for one target (their log positions come from
    /// different databases or tables and are not comparable as versions of one key;
    /// docs/versions.md): a same-named table of another schema needs a target of its own.
    pub fn parse(text: &str) -> Result<Self, MappingError> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let mut entries: Vec<(CapturedSource, MirrorTarget)> = Vec::new();
        for raw in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let err = |problem| MappingError { entry: raw.chars().take(200).collect(), problem };
            let (raw_mapping, declared) = match raw.strip_suffix('}').and_then(|r| r.rsplit_once('{')) {
                Some((rest, types)) => {
                    let mut declared = Vec::new();
                    for pair in types.split_whitespace() {
                        let (column, ty) =
                            pair.split_once(':').ok_or_else(|| err("a declared type is `column:type`"))?;
                        let kind = declared_kind(ty)
                            .ok_or_else(|| err("a declared type is bigint, text, numeric, numeric(S) or timestamp"))?;
                        if column.is_empty() || declared.iter().any(|(c, _)| c == column) {
                            return Err(err("a declared column is named once"));
                        }
                        declared.push((column.to_owned(), kind));
                    }
                    (rest.trim(), declared)
                }
                None => (raw, Vec::new()),
            };
            let (rest, key) = match raw_mapping.split_once('(') {
                Some((rest, key)) => {
                    let key = key.strip_suffix(')').ok_or_else(|| err("a key is `(column column ...)` at the end"))?;
                    let columns: Vec<String> = key.split_whitespace().map(str::to_owned).collect();
                    if columns.is_empty() || columns.iter().any(|c| c.contains(['(', ')', '`'])) {
                        return Err(err("a key is `(column column ...)` at the end"));
                    }
                    (rest.trim(), Some(columns))
                }
                None => (raw_mapping, None),
            };
            let (source, target) = match rest.split_once('=') {
                Some((s, m)) => (s.trim(), Some(m.trim())),
                None => (rest, None),
            };
            let ident = |s: &str| !s.is_empty() && !s.contains(['.', ':', '=', ' ', '(', ')']);
            let source = if let Some(name) = source.strip_prefix("platform:") {
                if !ident(name) {
                    return Err(err("a platform entity is `platform:Name`"));
                }
                CapturedSource::Platform { name: name.to_owned() }
            } else {
                let parts: Vec<&str> = source.split('.').collect();
                if !parts.iter().all(|p| ident(p)) {
                    return Err(err("a source is `schema.table` or `database.schema.table`"));
                }
                match parts.as_slice() {
                    [schema, table] => {
                        CapturedSource::Table { database: None, schema: (*schema).into(), table: (*table).into() }
                    }
                    [db, schema, table] => CapturedSource::Table {
                        database: Some((*db).into()),
                        schema: (*schema).into(),
                        table: (*table).into(),
                    },
                    _ => return Err(err("a source is `schema.table` or `database.schema.table`")),
                }
            };
            let target_name = match (target, &source) {
                (Some(m), _) => m,
                (None, CapturedSource::Table { table, .. }) => table.as_str(),
                (None, CapturedSource::Platform { .. }) => return Err(err("a platform entity needs `=target`")),
            };
            let target = match SourceTable::from_name(target_name) {
                Some(sales) => {
                    if key.as_ref().is_some_and(|k| k.as_slice() != [sales.spec().key]) {
                        return Err(err("a sales mirror is keyed by `id`"));
                    }
                    if !declared.is_empty() {
                        return Err(err("a sales mirror's columns are declared already"));
                    }
                    MirrorTarget::Sales(sales)
                }
                None => {
                    let plain = target_name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                    if !plain
                        || target_name.starts_with('_')
                        || target_name.starts_with(|c: char| c.is_ascii_digit())
                        || target_name.ends_with("_current")
                        || RESERVED_TARGETS.contains(&target_name)
                    {
                        return Err(err(
                            "a target is letters, digits and `_`, not starting with `_` or a digit, not ending in \
                             `_current`, not `sales_fact`",
                        ));
                    }
                    let key = key.unwrap_or_else(|| vec!["id".to_owned()]);
                    if (1..key.len()).any(|i| key[..i].contains(&key[i])) {
                        return Err(err("a key column is listed twice"));
                    }
                    MirrorTarget::Generic(Arc::new(GenericTable { name: target_name.to_owned(), key, declared }))
                }
            };
            if entries.iter().any(|(s, _)| *s == source) {
                return Err(err("this source is listed twice"));
            }
            let relational = |s: &CapturedSource| matches!(s, CapturedSource::Table { .. });
            if relational(&source) && entries.iter().any(|(s, m)| m.name() == target.name() && relational(s)) {
                return Err(err("another relational source already feeds this target"));
            }
            if entries.iter().any(|(_, m)| m.name() == target.name() && *m != target) {
                return Err(err("this target is listed with another key"));
            }
            entries.push((source, target));
        }
        if entries.is_empty() {
            return Err(MappingError { entry: text.chars().take(200).collect(), problem: "no entry" });
        }
        Ok(Self { entries })
    }

    /// The mirror fed by relational table `schema.table` of `database` (`None` when the event
    /// does not name its database, as DMS records do: then only entries without a database
    /// match).
    pub fn table(&self, database: Option<&str>, schema: &str, table: &str) -> Option<&MirrorTarget> {
        self.entries.iter().find_map(|(source, mirror)| match source {
            CapturedSource::Table { database: db, schema: s, table: t }
                if s == schema && t == table && db.as_deref().is_none_or(|db| Some(db) == database) =>
            {
                Some(mirror)
            }
            _ => None,
        })
    }

    /// The mirror fed by the platform entity `name`.
    pub(crate) fn platform(&self, name: &str) -> Option<&MirrorTarget> {
        self.entries.iter().find_map(|(source, mirror)| match source {
            CapturedSource::Platform { name: n } if n == name => Some(mirror),
            _ => None,
        })
    }

    pub fn entries(&self) -> impl Iterator<Item = (&CapturedSource, &MirrorTarget)> {
        self.entries.iter().map(|(s, m)| (s, m))
    }
}

#[cfg(test)]
mod mapping_tests {
    use super::*;

    fn sales(target: Option<&MirrorTarget>) -> Option<SourceTable> {
        target.and_then(MirrorTarget::sales)
    }

    #[test]
    fn default_maps_public_tables_and_platform_entities_only() {
        let m = TableMapping::default();
        assert_eq!(sales(m.table(Some("shop"), "public", "orders")), Some(SourceTable::Orders));
        assert_eq!(sales(m.table(None, "public", "order_items")), Some(SourceTable::OrderItems));
        for (schema, table) in
            [("inventory", "customers"), ("lineage", "order"), ("archive", "orders"), ("public", "ORDERS")]
        {
            assert_eq!(m.table(None, schema, table), None, "{schema}.{table}");
        }
        // Platform names only from the platform, relational names only from tables.
        assert_eq!(sales(m.platform("SalesOrder")), Some(SourceTable::Orders));
        assert_eq!(m.platform("orders"), None);
        assert_eq!(m.table(None, "public", "SalesOrder"), None);
    }

    #[test]
    fn parse_accepts_databases_renames_and_platform_entries() {
        let m =
            TableMapping::parse(" shop.sales.orders , sales.line_items=order_items,platform:Kunde=customers ").unwrap();
        assert_eq!(sales(m.table(Some("shop"), "sales", "orders")), Some(SourceTable::Orders));
        assert_eq!(m.table(Some("other"), "sales", "orders"), None);
        assert_eq!(m.table(None, "sales", "orders"), None, "an entry with a database needs the event to name it");
        assert_eq!(sales(m.table(Some("any"), "sales", "line_items")), Some(SourceTable::OrderItems));
        assert_eq!(sales(m.platform("Kunde")), Some(SourceTable::Customers));
        assert_eq!(m.table(None, "public", "orders"), None, "the default is replaced");
        assert_eq!(TableMapping::parse("  ").unwrap(), TableMapping::default());
    }

    #[test]
    fn any_other_target_is_a_generic_mirror_with_its_key() {
        let m = TableMapping::parse(
            "public.orders, public.order_notes(order_id line_no), archive.customers=archive_customers, \
             public.invoices",
        )
        .unwrap();
        let generic = |schema, table| match m.table(None, schema, table) {
            Some(MirrorTarget::Generic(g)) => (g.name.clone(), g.key.clone()),
            other => panic!("{schema}.{table}: {other:?}"),
        };
        assert_eq!(generic("public", "order_notes"), ("order_notes".into(), vec!["order_id".into(), "line_no".into()]));
        assert_eq!(generic("archive", "customers"), ("archive_customers".into(), vec!["id".into()]));
        assert_eq!(generic("public", "invoices"), ("invoices".into(), vec!["id".into()]));
        let typed = TableMapping::parse("public.foo(id){amount:numeric(2) seen:timestamp note:text}").unwrap();
        let Some(MirrorTarget::Generic(foo)) = typed.table(None, "public", "foo") else { panic!("generic") };
        assert_eq!(foo.key, vec!["id".to_string()]);
        assert_eq!(foo.declared("amount"), Some(ColumnKind::Decimal { scale: 2 }));
        assert_eq!(foo.declared("seen"), Some(ColumnKind::Timestamp));
        assert_eq!(foo.declared("other"), None);
        // The sales table of the same name in `public` is not captured: this mapping lists none.
        assert_eq!(m.table(None, "public", "customers"), None);
    }

    #[test]
    fn parse_refuses_what_cannot_work() {
        for bad in [
            "orders",
            "a.b.c.d",
            "public.orders=sales_fact",
            "public.x=_truncations",
            "public.x=x_current",
            "public.x=bad-name",
            "public.x(a",
            "public.x()",
            "public.x(a a)",
            "public.orders(customer_id)",
            "public.orders{total:numeric}",
            "public.x{a:float}",
            "public.x{a}",
            "public.x{a:text a:text}",
            "platform:SalesOrder",
            "public.orders,public.orders",
            "public.orders,archive.orders",
            "public.notes,archive.notes",
            "public..orders",
            ",",
        ] {
            assert!(TableMapping::parse(bad).is_err(), "{bad}");
        }
        // A platform entity may feed a mirror that a table feeds too (the platform's own
        // contract), two relational tables may not.
        assert!(TableMapping::parse("public.orders,platform:SalesOrder=orders").is_ok());
        assert!(TableMapping::parse("public.notes,archive.notes=archive_notes").is_ok());
    }
}
