//! Generic mirrors in ClickHouse: created on first sight, given a column when a source column
//! first carries a value, and read back by key to complete TOAST placeholders.
//!
//! Every DDL statement is idempotent and safe under concurrent invocations: `CREATE ... IF NOT
//! EXISTS`, `ADD COLUMN IF NOT EXISTS` (18.16: a duplicate-column error is taken as success), and
//! the columns are always read back from `system.columns` afterwards, so a column another
//! invocation added first, with whatever type, is what this one writes into
//! (docs/generic-mirrors.md).

use std::time::Instant;

use crate::generic_values::{parse_column_type, read_value, stored_type};
use cdc_core::change::{Row, Value, Version};
use cdc_core::generic::{Column, ColumnType};
use cdc_core::tables::{GenericTable, SourceTable};

use super::{SchemaEvolution, SinkError, Warehouse};
use crate::dialect::{Dialect, quote_literal};
use crate::queries;
use crate::schema;
use cdc_core::identifier::MAX_COLUMNS;

/// Keys per TOAST lookup: bounds the query text (one literal tuple per key).
const KEYS_PER_LOOKUP: usize = 1_000;

/// A stored row of a generic mirror: key values, the other columns, version, deletion flag.
type StoredRow = (Vec<Value>, Row, Version, bool);

impl Warehouse {
    /// The columns of generic mirror `table` in ClickHouse, after making sure the table exists
    /// (keyed by the mapping's key columns, typed `key_types`) and has a column for every entry
    /// of `needed` (typed by the value that first needed it). Cached per cold start; ClickHouse
    /// is asked again only when a column is missing from the cache.
    pub async fn generic_table(
        &self,
        table: &GenericTable,
        key_types: &[ColumnType],
        needed: &[(String, ColumnType)],
        deadline: Instant,
    ) -> Result<Vec<Column>, SinkError> {
        let dialect = self.retry.run(deadline, || self.dialect()).await?;
        let key_types: Vec<ColumnType> = key_types.iter().map(|ty| stored_type(*ty, dialect)).collect();
        let needed = stored_types(needed, dialect);
        let columns = self
            .retry
            .run(deadline, || self.ensure_columns(&table.name, &[], Some((table, &key_types)), &needed))
            .await?;
        check_key(table, &columns)?;
        Ok(columns)
    }

    /// The extra columns of a sales mirror (those beyond its declared ones, added when a source
    /// column the declaration lacks first carried a value), after adding those of `needed` that
    /// are missing. Same rules as a generic mirror's columns.
    pub async fn sales_extras(
        &self,
        table: SourceTable,
        needed: &[(String, ColumnType)],
        deadline: Instant,
    ) -> Result<Vec<Column>, SinkError> {
        let declared: Vec<&str> = table.spec().columns.iter().map(|c| c.name).collect();
        let dialect = self.retry.run(deadline, || self.dialect()).await?;
        let needed = stored_types(needed, dialect);
        self.retry.run(deadline, || self.ensure_columns(table.name(), &declared, None, &needed)).await
    }

    /// The columns of `name` beyond `declared`, with every column of `needed` added; `create`
    /// makes a missing generic mirror with that key.
    async fn ensure_columns(
        &self,
        name: &str,
        declared: &[&str],
        create: Option<(&GenericTable, &[ColumnType])>,
        needed: &[(String, ColumnType)],
    ) -> Result<Vec<Column>, SinkError> {
        let has_all = |columns: &[Column]| needed.iter().all(|(n, _)| columns.iter().any(|c| c.name == *n));
        let cached = self.cached_generic(name);
        if let Some(Some(columns)) = &cached
            && has_all(columns)
        {
            return Ok(columns.clone());
        }
        let dialect = self.dialect().await?;
        let cluster = self.cluster.as_deref();
        let mut columns = self.read_generic_columns(name, declared).await?;
        if matches!(cached, Some(None)) {
            // Forgotten after a refused value: an operator may have widened a column since, and
            // a view keeps the column types it was created with.
            for statement in schema::generic_view_statements(dialect, &self.database, cluster, name) {
                self.sql_execute(&statement).await?;
            }
        }
        if let Some((table, key_types)) = create
            && columns.is_empty()
        {
            let key: Vec<(String, ColumnType)> = table.key.iter().cloned().zip(key_types.iter().copied()).collect();
            if 2 + key.len() + needed.len() > MAX_COLUMNS {
                return Err(SinkError::ColumnsRefused {
                    code: "schema.column_limit",
                    detail: format!("{name} would have more than {MAX_COLUMNS} columns"),
                });
            }
            self.sql_execute(&schema::create_generic_table(dialect, &self.database, cluster, name, &key, needed))
                .await?;
            for statement in schema::generic_view_statements(dialect, &self.database, cluster, name) {
                self.sql_execute(&statement).await?;
            }
            columns = self.read_generic_columns(name, declared).await?;
        }
        let missing: Vec<&(String, ColumnType)> =
            needed.iter().filter(|(n, _)| !columns.iter().any(|c| c.name == *n)).collect();
        if !missing.is_empty() {
            // Checked before any DDL: a change asking for more is refused (poison), the table
            // is left as it is (docs/error-policy.md, "Content failures").
            if self.schema_evolution == SchemaEvolution::Off {
                return Err(SinkError::ColumnsRefused {
                    code: "schema.evolution_off",
                    detail: format!("{name} has no column for a value and SCHEMA_EVOLUTION is off"),
                });
            }
            // Ours (`_version`, `_is_deleted`), the declared ones, the others.
            if 2 + declared.len() + columns.len() + missing.len() > MAX_COLUMNS {
                return Err(SinkError::ColumnsRefused {
                    code: "schema.column_limit",
                    detail: format!("{name} would have more than {MAX_COLUMNS} columns"),
                });
            }
            for (column, ty) in &missing {
                let sql = schema::add_column(dialect, &self.database, cluster, name, column, *ty);
                match self.sql_execute(&sql).await {
                    Ok(()) => {}
                    Err(e) if is_duplicate_column(&e) => {}
                    Err(e) => return Err(e),
                }
                tracing::info!(table = %name, column = %column, "mirror: column added");
            }
            for statement in schema::generic_view_statements(dialect, &self.database, cluster, name) {
                self.sql_execute(&statement).await?;
            }
            columns = self.read_generic_columns(name, declared).await?;
        }
        self.generic_columns.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_owned(), Some(columns.clone()));
        Ok(columns)
    }

    /// Forgets the cached columns of `table` after one of its values fit no column: the next
    /// use reads them again (an operator may widen a column meanwhile) and recreates the view.
    pub(crate) fn forget_generic(&self, table: &str) {
        self.generic_columns.lock().unwrap_or_else(|e| e.into_inner()).insert(table.to_owned(), None);
    }

    /// `None`: never read; `Some(None)`: forgotten.
    fn cached_generic(&self, table: &str) -> Option<Option<Vec<Column>>> {
        self.generic_columns.lock().unwrap_or_else(|e| e.into_inner()).get(table).cloned()
    }

    /// The table's columns from `system.columns` (empty: no such table), without the version,
    /// the flag and the `declared` ones.
    async fn read_generic_columns(&self, table: &str, declared: &[&str]) -> Result<Vec<Column>, SinkError> {
        #[derive(clickhouse::Row, serde::Deserialize)]
        struct Described {
            name: String,
            r#type: String,
        }
        let rows: Vec<Described> = self.sql_fetch(&queries::columns_query(&self.database, table)).await?;
        let mut columns = Vec::with_capacity(rows.len());
        let ours = |name: &str| {
            ["_version", "_is_deleted", crate::schema::REFILL_COLUMN].contains(&name) || declared.contains(&name)
        };
        for row in rows.into_iter().filter(|r| !ours(&r.name)) {
            let (ty, nullable) = parse_column_type(&row.r#type).ok_or_else(|| SinkError::Schema {
                code: "schema.unsupported_type",
                detail: format!("column {table}.{} has a type this processor does not write", row.name),
            })?;
            columns.push(Column { name: row.name, ty, nullable });
        }
        Ok(columns)
    }

    /// The newest stored row of each key (deletions included), for completing TOAST
    /// placeholders. Keys whose values cannot be written as literals are left out.
    pub async fn generic_latest(
        &self,
        table: &GenericTable,
        columns: &[Column],
        keys: &[Vec<Value>],
        deadline: Instant,
    ) -> Result<Vec<StoredRow>, SinkError> {
        self.retry.run(deadline, || self.generic_latest_once(table, columns, keys)).await
    }

    async fn generic_latest_once(
        &self,
        table: &GenericTable,
        columns: &[Column],
        keys: &[Vec<Value>],
    ) -> Result<Vec<StoredRow>, SinkError> {
        let dialect = self.dialect().await?;
        let key_columns: Vec<&Column> =
            table.key.iter().filter_map(|k| columns.iter().find(|c| c.name == *k)).collect();
        if keys.is_empty() || key_columns.len() != table.key.len() {
            return Ok(Vec::new());
        }
        let literals: Vec<String> = keys
            .iter()
            .filter_map(|key| {
                let parts: Option<Vec<String>> =
                    key.iter().zip(&key_columns).map(|(v, c)| literal(v, c.ty, dialect)).collect();
                let parts = parts?;
                Some(if parts.len() == 1 { parts[0].clone() } else { format!("({})", parts.join(", ")) })
            })
            .collect();
        if literals.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<String> = columns.iter().map(|c| c.name.clone()).collect();
        let malformed = || SinkError::Protocol("generic mirror row does not match its columns".into());
        let mut rows = Vec::new();
        // The keys are the batch's own placeholders; a bounded number per query keeps the
        // query text bounded whatever the batch holds.
        for literals in literals.chunks(KEYS_PER_LOOKUP) {
            let sql = queries::generic_latest_query(&self.database, &table.name, &table.key, &names, literals);
            let bytes = self.sql_fetch_raw(&sql, "RowBinary").await?;
            let mut input = bytes.as_slice();
            while !input.is_empty() {
                let mut key = Vec::with_capacity(table.key.len());
                let mut row = Row::with_capacity(columns.len());
                for column in columns {
                    let value = read_value(&mut input, column.ty, column.nullable).ok_or_else(malformed)?;
                    if table.key.contains(&column.name) {
                        key.push((column.name.clone(), value));
                    } else {
                        row.push(column.name.clone(), value);
                    }
                }
                let version = read_value(&mut input, ColumnType::Int64, false).ok_or_else(malformed)?;
                let deleted = read_value(&mut input, ColumnType::Bool, false).ok_or_else(malformed)?;
                let (Value::Int(version), Value::Bool(deleted)) = (version, deleted) else { return Err(malformed()) };
                // Key values in the mapping's order.
                let key: Vec<Value> =
                    table.key.iter().filter_map(|k| key.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())).collect();
                rows.push((key, row, Version(version as u64), deleted));
            }
        }
        Ok(rows)
    }
}

/// The columns `needed` as this server stores them.
fn stored_types(needed: &[(String, ColumnType)], dialect: Dialect) -> Vec<(String, ColumnType)> {
    needed.iter().map(|(name, ty)| (name.clone(), stored_type(*ty, dialect))).collect()
}

/// The table must be keyed as the mapping says: its key columns present and not `Nullable`.
fn check_key(table: &GenericTable, columns: &[Column]) -> Result<(), SinkError> {
    for key in &table.key {
        if !columns.iter().any(|c| c.name == *key && !c.nullable) {
            return Err(SinkError::Schema {
                code: "schema.key_mismatch",
                detail: format!("table {} in ClickHouse has no non-NULL key column {key}", table.name),
            });
        }
    }
    Ok(())
}

/// "Column already exists": 15 on current servers, 44 with that text on 18.16.
fn is_duplicate_column(error: &SinkError) -> bool {
    match error {
        SinkError::Server { code: 15, .. } => true,
        SinkError::Server { code: 44, message } => message.contains("already exists"),
        _ => false,
    }
}

/// A key value as an SQL literal of its column's type (TOAST lookups), or `None` when it has
/// no exact literal (a float key).
fn literal(value: &Value, ty: ColumnType, dialect: Dialect) -> Option<String> {
    Some(match (ty, value) {
        (ColumnType::Int64, Value::Int(v) | Value::Time(v) | Value::Interval(v) | Value::Timestamp(v)) => v.to_string(),
        (ColumnType::Bool, Value::Bool(b)) => u8::from(*b).to_string(),
        (ColumnType::Decimal { scale }, Value::Decimal(d)) => format!("toDecimal128('{}', {scale})", d.rescale(scale)?),
        (ColumnType::Decimal { scale }, Value::Int(v)) => format!("toDecimal128('{v}', {scale})"),
        (ColumnType::String, Value::Text(s) | Value::Uuid(s) | Value::Json(s)) => quote_literal(s),
        (ColumnType::String, Value::Int(v)) => quote_literal(&v.to_string()),
        (ColumnType::String, Value::Bytes(b)) => {
            format!("unhex('{}')", b.iter().map(|byte| format!("{byte:02X}")).collect::<String>())
        }
        (ColumnType::Date, Value::Date(days)) => match dialect {
            Dialect::Modern => format!("addDays(toDate32('1970-01-01'), {days})"),
            Dialect::Legacy => days.to_string(),
        },
        (ColumnType::Timestamp, Value::Timestamp(us)) => format!("fromUnixTimestamp64Micro(toInt64({us}), 'UTC')"),
        _ => return None,
    })
}
