//! The mirrors' newest rows as ClickHouse returns them, converted to `cdc-core`'s state rows
//! (which know nothing of ClickHouse). Field names and order are those of
//! `queries::latest_rows_query`.

use cdc_core::fact::{CustomerState, ItemState, OrderState, ProductState};

/// A state row of `cdc-core` that the warehouse can read: `Wire` is its ClickHouse row.
pub trait StateRow: Sized + Send + 'static {
    type Wire: clickhouse::RowOwned + clickhouse::RowRead + for<'de> serde::Deserialize<'de> + Into<Self>;
}

/// Declares the wire row of a state row, field for field, and the conversion.
macro_rules! state_row {
    ($wire:ident => $state:ident { $($field:ident: $ty:ty),* $(,)? }) => {
        #[derive(clickhouse::Row, serde::Deserialize)]
        pub struct $wire {
            $($field: $ty),*
        }

        impl From<$wire> for $state {
            fn from(w: $wire) -> Self {
                $state { $($field: w.$field),* }
            }
        }

        impl StateRow for $state {
            type Wire = $wire;
        }
    };
}

state_row!(ItemWire => ItemState {
    id: i64, order_id: i64, product_id: i64, quantity: i32, price: i128, version: u64, is_deleted: u8,
});
state_row!(OrderWire => OrderState {
    id: i64, customer_id: i64, order_date_us: i64, status: String, total: i128, version: u64, is_deleted: u8,
});
state_row!(CustomerWire => CustomerState {
    id: i64, email: String, name: String, country: String, city: String, created_at_us: i64, version: u64,
    is_deleted: u8,
});
state_row!(ProductWire => ProductState {
    id: i64, name: String, category: String, price: i128, created_at_us: i64, version: u64, is_deleted: u8,
});
