//! `sales_fact` derivation: one wide row per order item, re-derived from the mirrors.
//!
//! Enters: the newest mirror rows (tombstones included) of an item and of the order, customer and
//! product it references, plus each table's truncation position. Leaves: a [`FactRow`].
//!
//! Why this converges under any delivery order (NOTES §4): mirror versions per key only grow;
//! after its mirror rows are acknowledged, every invocation re-derives every fact they touch by
//! reading the mirrors. The derivation that reads after the last write sees the newest row of all
//! four components. A fact's version is the SUM of the four components' versions, so that
//! derivation carries the greatest version ReplacingMergeTree can see for the fact, whatever the
//! order the inserts land in; an equal sum means identical inputs. A component never seen counts
//! as its table's truncation position (0 if never truncated), and a row older than that position
//! counts as deleted at that position, so a truncation also only ever raises versions.
//!
//! Limit (see the issue notes): the argument needs each fact's components to be fixed by its key.
//! When an item moves to another order or product, or an order to another customer, a stale
//! derivation through the OLD parent can carry a larger sum than the correct one if that old
//! parent changed later. The sales schema never moves items between orders; such updates are
//! reported by `verify` if they ever happen.

use std::collections::HashMap;

use crate::tables::SourceTable;

/// Newest state of an `order_items` row.
#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, serde::Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, serde::Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, serde::Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, serde::Deserialize)]
pub struct ProductState {
    pub id: i64,
    pub name: String,
    pub category: String,
    pub price: i128,
    pub created_at_us: i64,
    pub version: u64,
    pub is_deleted: u8,
}

/// One `sales_fact` row.
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
    pub version: u64,
    pub is_deleted: bool,
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
        let item = self.items.get(&order_item_id);
        let order = item.and_then(|i| self.orders.get(&i.order_id));
        let customer = order.and_then(|o| self.customers.get(&o.customer_id));
        let product = item.and_then(|i| self.products.get(&i.product_id));

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
        // Source positions are far below 2^62 (an LSN of 2^62 is 4 EiB of WAL), so the sum of
        // four cannot overflow in practice; saturate rather than wrap if it ever did.
        let version = parts.iter().fold(0u64, |sum, (v, _)| sum.saturating_add(*v));
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
    fn a_complete_join_gives_a_live_fact_with_exact_revenue_and_summed_version() {
        let fact = snapshot().derive(1);
        assert!(!fact.is_deleted);
        assert_eq!(fact.revenue, 14_460_000); // 3 × 4.82 = 14.46
        assert_eq!(fact.version, 5 + 4 + 2 + 3);
        assert_eq!((fact.customer_name.as_str(), fact.product_category.as_str()), ("Ada", "Home"));
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
        assert_eq!(incomplete.version, 5 + 4 + 2);
    }

    #[test]
    fn a_truncation_deletes_older_rows_and_raises_the_version() {
        let mut s = snapshot();
        let live = s.derive(1);
        s.truncations.insert(SourceTable::Products, 50);
        let truncated = s.derive(1);
        assert!(truncated.is_deleted);
        assert_eq!(truncated.version, 5 + 4 + 2 + 50);
        assert!(truncated.version > live.version);
        // A product re-inserted after the truncation brings the fact back, higher still.
        s.products.get_mut(&100).unwrap().version = 60;
        let back = s.derive(1);
        assert!(!back.is_deleted && back.version > truncated.version);
    }
}
