//! `sales_fact` derivation: one wide row per order item, re-derived from the mirrors.
//!
//! Enters: the newest mirror rows (tombstones included) of an item and of the order, customer and
//! product it references, plus each table's truncation position. Leaves: a [`FactRow`].
//!
//! Why this converges under any delivery order, duplicates, concurrent invocations and foreign
//! keys that move: docs/sales-fact.md. In short, every invocation re-derives, after its mirror
//! writes, every fact they touch, and a fact's version is the tuple (item version, order version,
//! customer + product versions) compared in that order: of two derivations of one fact, the one
//! that read the newer item wins; with the same item row (hence the same order key) the one that
//! read the newer order wins; with the same item and order rows (hence the same customer and
//! product keys) the one that read newer dimensions wins. A component never seen, or older than
//! its table's last truncation, counts as deleted at that truncation's position (0 if none).

use std::collections::HashMap;

use crate::mirror::NULL_FOREIGN_KEY;
use crate::tables::SourceTable;

/// Newest state of an `order_items` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemState {
    pub id: i64,
    pub order_id: i64,
    pub product_id: i64,
    pub quantity: i32,
    /// Unscaled at scale 6.
    pub price: i128,
    pub version: u64,
    pub is_deleted: u8,
}

/// Newest state of an `orders` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderState {
    pub id: i64,
    pub customer_id: i64,
    pub order_date_us: i64,
    pub status: String,
    pub total: i128,
    pub version: u64,
    pub is_deleted: u8,
}

/// Newest state of a `customers` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerState {
    pub id: i64,
    pub email: String,
    pub name: String,
    pub country: String,
    pub city: String,
    pub created_at_us: i64,
    pub version: u64,
    pub is_deleted: u8,
}

/// Newest state of a `products` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductState {
    pub id: i64,
    pub name: String,
    pub category: String,
    pub price: i128,
    pub created_at_us: i64,
    pub version: u64,
    pub is_deleted: u8,
}

/// What a `sales_fact` column holds, for the warehouse to type and encode it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FactKind {
    Int64,
    Int32,
    /// Unscaled at scale 6.
    Decimal,
    Text,
    /// Text with few distinct values (statuses, countries, categories).
    Label,
    /// Microseconds since the epoch.
    Timestamp,
    Version,
    Flag,
}

/// One value of a fact row, as its [`FactKind`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FactValue<'a> {
    Int64(i64),
    Int32(i32),
    Decimal(i128),
    Text(&'a str),
    Timestamp(i64),
    Version(FactVersion),
    Flag(bool),
}

/// A `sales_fact` column: its name, its kind, and how to read it from a [`FactRow`].
#[derive(Clone, Copy)]
pub struct FactColumn {
    pub name: &'static str,
    pub kind: FactKind,
    pub value: fn(&FactRow) -> FactValue<'_>,
}

/// The columns of `sales_fact` in insert order: the one list from which the table's DDL, the
/// INSERT's column names and the row encoder are all made, so they cannot disagree.
pub const FACT_COLUMNS: &[FactColumn] = &[
    FactColumn { name: "order_item_id", kind: FactKind::Int64, value: |f| FactValue::Int64(f.order_item_id) },
    FactColumn { name: "order_id", kind: FactKind::Int64, value: |f| FactValue::Int64(f.order_id) },
    FactColumn { name: "customer_id", kind: FactKind::Int64, value: |f| FactValue::Int64(f.customer_id) },
    FactColumn { name: "product_id", kind: FactKind::Int64, value: |f| FactValue::Int64(f.product_id) },
    FactColumn { name: "quantity", kind: FactKind::Int32, value: |f| FactValue::Int32(f.quantity) },
    FactColumn { name: "unit_price", kind: FactKind::Decimal, value: |f| FactValue::Decimal(f.unit_price) },
    FactColumn { name: "revenue", kind: FactKind::Decimal, value: |f| FactValue::Decimal(f.revenue) },
    FactColumn { name: "order_status", kind: FactKind::Label, value: |f| FactValue::Text(&f.order_status) },
    FactColumn { name: "order_date", kind: FactKind::Timestamp, value: |f| FactValue::Timestamp(f.order_date_us) },
    FactColumn { name: "customer_name", kind: FactKind::Text, value: |f| FactValue::Text(&f.customer_name) },
    FactColumn { name: "customer_country", kind: FactKind::Label, value: |f| FactValue::Text(&f.customer_country) },
    FactColumn { name: "customer_city", kind: FactKind::Label, value: |f| FactValue::Text(&f.customer_city) },
    FactColumn { name: "product_name", kind: FactKind::Text, value: |f| FactValue::Text(&f.product_name) },
    FactColumn { name: "product_category", kind: FactKind::Label, value: |f| FactValue::Text(&f.product_category) },
    FactColumn { name: "_version", kind: FactKind::Version, value: |f| FactValue::Version(f.version) },
    FactColumn { name: "_is_deleted", kind: FactKind::Flag, value: |f| FactValue::Flag(f.is_deleted) },
];

/// One `sales_fact` row (its columns: [`FACT_COLUMNS`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FactRow {
    pub order_item_id: i64,
    pub order_id: i64,
    pub customer_id: i64,
    pub product_id: i64,
    pub quantity: i32,
    /// Unscaled at scale 6.
    pub unit_price: i128,
    /// `quantity × unit_price`, exact, unscaled at scale 6.
    pub revenue: i128,
    pub order_status: String,
    pub order_date_us: i64,
    pub customer_name: String,
    pub customer_country: String,
    pub customer_city: String,
    pub product_name: String,
    pub product_category: String,
    pub version: FactVersion,
    pub is_deleted: bool,
}

/// A fact's version: compared field by field, in this order (docs/sales-fact.md).
///
/// Source positions are below 2^63 (larger ones are rejected as poison by the decoder), so the
/// sum of the two dimension versions fits a `u64`; the whole tuple is stored as one `UInt256`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct FactVersion {
    pub item: u64,
    pub order: u64,
    /// Customer version + product version.
    pub dimensions: u64,
}

impl FactVersion {
    /// The tuple as one little-endian `UInt256`: item in bits 128..192, order in 64..128,
    /// dimensions in 0..64, so integer order equals tuple order.
    pub fn to_le_u256(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out[0..8].copy_from_slice(&self.dimensions.to_le_bytes());
        out[8..16].copy_from_slice(&self.order.to_le_bytes());
        out[16..24].copy_from_slice(&self.item.to_le_bytes());
        out
    }

    /// The weaker `UInt64` version of servers without `UInt256` (ClickHouse before 23.2): the sum
    /// of the components. Exact while foreign keys do not move (README, "Older ClickHouse").
    pub fn legacy_sum(self) -> u64 {
        self.item.saturating_add(self.order).saturating_add(self.dimensions)
    }
}

/// What the derivation reads: newest mirror rows by key, and truncation positions.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub items: HashMap<i64, ItemState>,
    pub orders: HashMap<i64, OrderState>,
    pub customers: HashMap<i64, CustomerState>,
    pub products: HashMap<i64, ProductState>,
    pub truncations: HashMap<SourceTable, u64>,
}

/// One component as the derivation sees it: its effective version and whether it is live.
fn component(version: Option<u64>, is_deleted: bool, truncated_at: u64) -> (u64, bool) {
    match version {
        Some(v) if v > truncated_at => (v, !is_deleted),
        // Older than the table's truncation (or never seen): gone, as of the truncation.
        _ => (truncated_at, false),
    }
}

impl Snapshot {
    fn truncated_at(&self, table: SourceTable) -> u64 {
        self.truncations.get(&table).copied().unwrap_or(0)
    }

    /// Derives the fact of one order item. A fact whose join is incomplete (a component missing,
    /// deleted or truncated) is a deletion marker carrying the same version rule.
    pub fn derive(&self, order_item_id: i64) -> FactRow {
        // A NULL foreign key joins nothing (not even a parent whose key is the marker).
        let parent = |key: i64| (key != NULL_FOREIGN_KEY).then_some(key);
        let item = self.items.get(&order_item_id);
        let order = item.and_then(|i| parent(i.order_id)).and_then(|k| self.orders.get(&k));
        let customer = order.and_then(|o| parent(o.customer_id)).and_then(|k| self.customers.get(&k));
        let product = item.and_then(|i| parent(i.product_id)).and_then(|k| self.products.get(&k));

        let parts = [
            component(
                item.map(|r| r.version),
                item.is_some_and(|r| r.is_deleted != 0),
                self.truncated_at(SourceTable::OrderItems),
            ),
            component(
                order.map(|r| r.version),
                order.is_some_and(|r| r.is_deleted != 0),
                self.truncated_at(SourceTable::Orders),
            ),
            component(
                customer.map(|r| r.version),
                customer.is_some_and(|r| r.is_deleted != 0),
                self.truncated_at(SourceTable::Customers),
            ),
            component(
                product.map(|r| r.version),
                product.is_some_and(|r| r.is_deleted != 0),
                self.truncated_at(SourceTable::Products),
            ),
        ];
        let [(item_v, _), (order_v, _), (customer_v, _), (product_v, _)] = parts;
        let version = FactVersion { item: item_v, order: order_v, dimensions: customer_v.saturating_add(product_v) };
        let live = parts.iter().all(|(_, live)| *live);

        match (item, order, customer, product) {
            (Some(item), Some(order), Some(customer), Some(product)) if live => {
                let revenue = i128::from(item.quantity).checked_mul(item.price);
                FactRow {
                    order_item_id,
                    order_id: item.order_id,
                    customer_id: order.customer_id,
                    product_id: item.product_id,
                    quantity: item.quantity,
                    unit_price: item.price,
                    // Decimal(38, 6) holds |x| < 10^32 before the point; a product beyond that
                    // cannot come from NUMERIC(12, 2) inputs. Saturate instead of wrapping.
                    revenue: revenue.unwrap_or(if item.price < 0 { i128::MIN } else { i128::MAX }),
                    order_status: order.status.clone(),
                    order_date_us: order.order_date_us,
                    customer_name: customer.name.clone(),
                    customer_country: customer.country.clone(),
                    customer_city: customer.city.clone(),
                    product_name: product.name.clone(),
                    product_category: product.category.clone(),
                    version,
                    is_deleted: false,
                }
            }
            _ => FactRow {
                order_item_id,
                order_id: item.map_or(0, |i| i.order_id),
                customer_id: order.map_or(0, |o| o.customer_id),
                product_id: item.map_or(0, |i| i.product_id),
                version,
                is_deleted: true,
                ..FactRow::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        let mut s = Snapshot::default();
        s.items.insert(
            1,
            ItemState {
                id: 1,
                order_id: 10,
                product_id: 100,
                quantity: 3,
                price: 4_820_000,
                version: 5,
                is_deleted: 0,
            },
        );
        s.orders.insert(
            10,
            OrderState {
                id: 10,
                customer_id: 7,
                order_date_us: 1_000_000,
                status: "paid".into(),
                total: 0,
                version: 4,
                is_deleted: 0,
            },
        );
        s.customers.insert(
            7,
            CustomerState {
                id: 7,
                email: String::new(),
                name: "Ada".into(),
                country: "UK".into(),
                city: "London".into(),
                created_at_us: 0,
                version: 2,
                is_deleted: 0,
            },
        );
        s.products.insert(
            100,
            ProductState {
                id: 100,
                name: "Lamp".into(),
                category: "Home".into(),
                price: 0,
                created_at_us: 0,
                version: 3,
                is_deleted: 0,
            },
        );
        s
    }

    #[test]
    fn a_complete_join_gives_a_live_fact_with_exact_revenue_and_tuple_version() {
        let fact = snapshot().derive(1);
        assert!(!fact.is_deleted);
        assert_eq!(fact.revenue, 14_460_000); // 3 × 4.82 = 14.46
        assert_eq!(fact.version, FactVersion { item: 5, order: 4, dimensions: 2 + 3 });
        assert_eq!((fact.customer_name.as_str(), fact.product_category.as_str()), ("Ada", "Home"));
    }

    #[test]
    fn a_null_foreign_key_joins_nothing_not_even_a_parent_keyed_by_the_marker() {
        let mut s = snapshot();
        let mut customer = s.customers[&7].clone();
        customer.id = NULL_FOREIGN_KEY;
        s.customers.insert(NULL_FOREIGN_KEY, customer);
        s.orders.get_mut(&10).unwrap().customer_id = NULL_FOREIGN_KEY;
        assert!(s.derive(1).is_deleted, "the source's inner join drops an order without a customer");
    }

    #[test]
    fn a_missing_or_deleted_component_deletes_the_fact_with_a_higher_version() {
        let mut s = snapshot();
        let live = s.derive(1);
        s.customers.get_mut(&7).unwrap().is_deleted = 1;
        s.customers.get_mut(&7).unwrap().version = 9;
        let deleted = s.derive(1);
        assert!(deleted.is_deleted);
        assert!(deleted.version > live.version);

        let mut s = snapshot();
        s.products.clear();
        let incomplete = s.derive(1);
        assert!(incomplete.is_deleted);
        assert_eq!(incomplete.version, FactVersion { item: 5, order: 4, dimensions: 2 });
    }

    #[test]
    fn a_truncation_deletes_older_rows_and_raises_the_version() {
        let mut s = snapshot();
        let live = s.derive(1);
        s.truncations.insert(SourceTable::Products, 50);
        let truncated = s.derive(1);
        assert!(truncated.is_deleted);
        assert_eq!(truncated.version, FactVersion { item: 5, order: 4, dimensions: 2 + 50 });
        assert!(truncated.version > live.version);
        // A product re-inserted after the truncation brings the fact back, higher still.
        s.products.get_mut(&100).unwrap().version = 60;
        let back = s.derive(1);
        assert!(!back.is_deleted && back.version > truncated.version);
    }

    #[test]
    fn a_derivation_through_a_moved_items_old_order_loses_whatever_that_order_did_later() {
        // Item 1 moved from order 10 to order 20 (item version 7); order 10 changed much later
        // (version 100). A stale derivation that read the item before the move, then order 10's
        // newest row, must not displace the derivation through order 20.
        let mut stale = snapshot();
        stale.orders.get_mut(&10).unwrap().version = 100;
        stale.orders.get_mut(&10).unwrap().status = "stale".into();
        let mut fresh = snapshot();
        let item = fresh.items.get_mut(&1).unwrap();
        item.order_id = 20;
        item.version = 7;
        let mut order = fresh.orders[&10].clone();
        order.id = 20;
        order.version = 6;
        fresh.orders.insert(20, order);
        let (stale, fresh) = (stale.derive(1), fresh.derive(1));
        assert!(fresh.version > stale.version, "{:?} must beat {:?}", fresh.version, stale.version);
        // The old sum-of-versions scheme got this wrong: 5 + 100 + 5 > 7 + 6 + 5.
        assert!(stale.version.legacy_sum() > fresh.version.legacy_sum());
        assert_eq!(fresh.order_id, 20);
    }

    #[test]
    fn the_packed_version_orders_like_the_tuple() {
        let versions = [
            FactVersion { item: 1, order: u64::MAX, dimensions: u64::MAX },
            FactVersion { item: 2, order: 0, dimensions: 0 },
            FactVersion { item: 2, order: 1, dimensions: 0 },
            FactVersion { item: 2, order: 1, dimensions: 1 << 63 },
        ];
        for pair in versions.windows(2) {
            let as_int = |v: FactVersion| {
                let b = v.to_le_u256();
                (u128::from_le_bytes(b[16..32].try_into().unwrap()), u128::from_le_bytes(b[0..16].try_into().unwrap()))
            };
            assert!(pair[0] < pair[1]);
            assert!(as_int(pair[0]) < as_int(pair[1]));
        }
    }
}
