//! The source tables this processor knows: the seeds' sales schema.
//!
//! Enters: a table name. Leaves: its [`TableSpec`] (columns and their kinds). Decoders use the
//! kinds to type values when a message carries no schema block; the mirror stage uses them to
//! build ClickHouse rows. Changes to any other table are skipped (or rejected when configured).

/// How a source column is typed, independent of the wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    pub table: SourceTable,
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
pub const MONEY_SCALE: u32 = 2;

pub const CUSTOMERS: TableSpec = TableSpec {
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

pub const PRODUCTS: TableSpec = TableSpec {
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

pub const ORDERS: TableSpec = TableSpec {
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

pub const ORDER_ITEMS: TableSpec = TableSpec {
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

pub const ALL: [&TableSpec; 4] = [&CUSTOMERS, &PRODUCTS, &ORDERS, &ORDER_ITEMS];

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

    pub fn has_foreign_keys(self) -> bool {
        self.parent_key().is_some()
    }

    /// Finds a known table by its unqualified name (the schema is not checked: the seeds' tables
    /// live in `public`, DMS and the platform envelope may name them without a schema).
    /// The platform envelope's PascalCase names (`OrderItem`, `SalesOrder`) are accepted too.
    pub fn from_name(name: &str) -> Option<SourceTable> {
        let lowered = name.to_ascii_lowercase();
        Some(match lowered.as_str() {
            "customers" | "customer" => SourceTable::Customers,
            "products" | "product" => SourceTable::Products,
            "orders" | "order" | "salesorder" | "sales_order" | "sales_orders" => SourceTable::Orders,
            "order_items" | "order_item" | "orderitem" | "orderitems" => SourceTable::OrderItems,
            _ => return None,
        })
    }
}

impl TableSpec {
    pub fn column(&self, name: &str) -> Option<&ColumnSpec> {
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
    fn platform_names_map_to_source_tables() {
        assert_eq!(SourceTable::from_name("OrderItem"), Some(SourceTable::OrderItems));
        assert_eq!(SourceTable::from_name("SalesOrder"), Some(SourceTable::Orders));
        assert_eq!(SourceTable::from_name("inventory"), None);
    }
}
