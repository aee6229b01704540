//! The mirrors' newest rows as ClickHouse returns them, converted to `cdc-core`'s state rows
//! (which know nothing of ClickHouse). Field names and order are those of
//! `queries::latest_rows_query`; and as the mirror cells that complete a TOAST placeholder.

use std::collections::HashMap;
use std::time::Instant;

use cdc_core::change::{Row, Value, Version};
use cdc_core::completion::{Base, SalesValues};
use cdc_core::fact::{CustomerState, ItemState, OrderState, ProductState};
use cdc_core::generic::{Column, ColumnType};
use cdc_core::mirror::Cell;
use cdc_core::tables::{GenericTable, SourceTable};

use crate::{SinkError, Warehouse};

/// A state row of `cdc-core` that the warehouse can read: `Wire` is its ClickHouse row.
pub(crate) trait StateRow: Sized + Send + 'static {
    type Wire: clickhouse::RowOwned + clickhouse::RowRead + for<'de> serde::Deserialize<'de> + Into<Self>;
}

/// Declares the wire row of a state row, field for field, and the conversion.
macro_rules! state_row {
    ($wire:ident => $state:ident { $($field:ident: $ty:ty),* $(,)? }) => {
        #[derive(clickhouse::Row, serde::Deserialize)]
        pub(crate) struct $wire {
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

impl Warehouse {
    /// The newest stored row (deletions included) of each listed key of a sales mirror, as a
    /// base for completing TOAST placeholders and tombstones (`cdc_core::completion`). With
    /// `extras`, the extra columns (beyond the declared ones) of the same stored version are read
    /// too (separately: their types are only known at run time).
    pub async fn sales_bases(
        &self,
        table: SourceTable,
        keys: &[i64],
        extras: bool,
        deadline: Instant,
    ) -> Result<Vec<(i64, Base<SalesValues>)>, SinkError> {
        let mut stored_extras = if extras { self.latest_extras(table, keys, deadline).await? } else { HashMap::new() };
        let rows = self.cells(table, keys, None, deadline).await?;
        Ok(rows
            .into_iter()
            .map(|(key, version, deleted, cells)| {
                let extras = match stored_extras.remove(&key) {
                    Some((v, row)) if v == version => row,
                    _ => Row::new(),
                };
                (key, Base { version, live: !deleted, stored: true, values: SalesValues { cells, extras } })
            })
            .collect())
    }

    /// Each listed key's newest change in the table's history, its TOAST placeholders filled from
    /// the newest earlier change that carried the column (docs/history.md): the values its
    /// mirror row must hold. Declared columns only (the history keeps no extra columns).
    pub async fn history_bases(
        &self,
        table: SourceTable,
        keys: &[i64],
        deadline: Instant,
    ) -> Result<Vec<(i64, Base<SalesValues>)>, SinkError> {
        let rows = self.cells(table, keys, Some(i64::MAX), deadline).await?;
        Ok(rows
            .into_iter()
            .map(|(key, version, deleted, cells)| {
                let values = SalesValues { cells, extras: Row::new() };
                (key, Base { version, live: !deleted, stored: true, values })
            })
            .collect())
    }

    /// The keys of `keys` whose mirror rows may need their TOAST placeholders filled again from
    /// the history, with the newest change's version and the number of the key's changes the
    /// history holds ([`queries::refill_candidates_query`]).
    pub async fn refill_candidates(
        &self,
        table: SourceTable,
        keys: &[i64],
        deadline: Instant,
    ) -> Result<Vec<(i64, Version, u64)>, SinkError> {
        #[derive(clickhouse::Row, serde::Deserialize)]
        struct Candidate {
            k: i64,
            top: u64,
            changes: u64,
            #[allow(dead_code)]
            top_mask: u64,
        }
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let sql = crate::queries::refill_candidates_query(&self.database, table, keys);
        let rows: Vec<Candidate> = self.retry.run(deadline, || self.sql_fetch(&sql)).await?;
        Ok(rows.into_iter().map(|c| (c.k, Version(c.top), c.changes)).collect())
    }

    /// The key, version, deletion flag and declared cells of each listed key's newest row: in the
    /// mirror, or with `at_us` in the history as of then.
    async fn cells(
        &self,
        table: SourceTable,
        keys: &[i64],
        at_us: Option<i64>,
        deadline: Instant,
    ) -> Result<Vec<(i64, Version, bool, Vec<Cell>)>, SinkError> {
        Ok(match table {
            SourceTable::Customers => {
                self.rows::<CustomerState>(table, keys, at_us, deadline).await?.into_iter().map(customer_cells).collect()
            }
            SourceTable::Products => {
                self.rows::<ProductState>(table, keys, at_us, deadline).await?.into_iter().map(product_cells).collect()
            }
            SourceTable::Orders => {
                self.rows::<OrderState>(table, keys, at_us, deadline).await?.into_iter().map(order_cells).collect()
            }
            SourceTable::OrderItems => {
                self.rows::<ItemState>(table, keys, at_us, deadline).await?.into_iter().map(item_cells).collect()
            }
        })
    }

    /// The stored extra columns of the newest row of each key, with its version.
    async fn latest_extras(
        &self,
        table: SourceTable,
        keys: &[i64],
        deadline: Instant,
    ) -> Result<HashMap<i64, (Version, Row)>, SinkError> {
        let extras = self.sales_extras(table, &[], deadline).await?;
        let key = Column { name: table.spec().key.to_owned(), ty: ColumnType::Int64, nullable: false };
        let columns: Vec<Column> = std::iter::once(key).chain(extras).collect();
        let as_generic = GenericTable {
            name: table.name().to_owned(),
            key: vec![table.spec().key.to_owned()],
            declared: Vec::new(),
        };
        let keys: Vec<Vec<Value>> = keys.iter().map(|k| vec![Value::Int(*k)]).collect();
        let rows = self.generic_latest(&as_generic, &columns, &keys, deadline).await?;
        Ok(rows
            .into_iter()
            .filter_map(|(key, row, version, _)| match key.first() {
                Some(Value::Int(k)) => Some((*k, (version, row))),
                _ => None,
            })
            .collect())
    }
}

fn customer_cells(r: CustomerState) -> (i64, Version, bool, Vec<Cell>) {
    let cells = vec![
        Cell::Int(r.id),
        Cell::Text(r.email),
        Cell::Text(r.name),
        Cell::Text(r.country),
        Cell::Text(r.city),
        Cell::Timestamp(r.created_at_us),
    ];
    (r.id, Version(r.version), r.is_deleted != 0, cells)
}

fn product_cells(r: ProductState) -> (i64, Version, bool, Vec<Cell>) {
    let cells = vec![
        Cell::Int(r.id),
        Cell::Text(r.name),
        Cell::Text(r.category),
        Cell::Decimal(r.price),
        Cell::Timestamp(r.created_at_us),
    ];
    (r.id, Version(r.version), r.is_deleted != 0, cells)
}

fn order_cells(r: OrderState) -> (i64, Version, bool, Vec<Cell>) {
    let cells = vec![
        Cell::Int(r.id),
        Cell::Int(r.customer_id),
        Cell::Timestamp(r.order_date_us),
        Cell::Text(r.status),
        Cell::Decimal(r.total),
    ];
    (r.id, Version(r.version), r.is_deleted != 0, cells)
}

fn item_cells(r: ItemState) -> (i64, Version, bool, Vec<Cell>) {
    let cells = vec![
        Cell::Int(r.id),
        Cell::Int(r.order_id),
        Cell::Int(r.product_id),
        Cell::Int(i64::from(r.quantity)),
        Cell::Decimal(r.price),
    ];
    (r.id, Version(r.version), r.is_deleted != 0, cells)
}
