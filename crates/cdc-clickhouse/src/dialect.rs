//! The server's dialect: the SQL types and engine parameters it takes.
//!
//! Enters: the server's version. Leaves: a [`Dialect`], which [`crate::schema`] and
//! [`crate::queries`] write their text for. Two dialects:
//! - [`Dialect::Modern`] (ClickHouse >= 23.2): `UInt256` fact versions, `DateTime64(6, 'UTC')`,
//!   `LowCardinality(String)` for low-cardinality attributes;
//! - [`Dialect::Legacy`] (older, e.g. Debian's 18.16): the `UInt64` sum, `DateTime('UTC')`,
//!   plain `String`.
//!
//! Both create `ReplacingMergeTree(_version)` and read with an explicit `_is_deleted = 0`: the
//! engine's `is_deleted` parameter (23.2+) lets `OPTIMIZE ... FINAL` (23.2-23.12) or `FINAL
//! CLEANUP` (24.1+) drop deletion rows, and a late duplicate of an older row would then bring a
//! deleted row and its fact back. Tombstones must stay (README, "ClickHouse versions").

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Legacy,
    Modern,
}

impl Dialect {
    /// Picks the dialect from `SELECT version()` (e.g. `18.16.1`, `25.3.2.39`).
    pub(crate) fn for_version(version: &str) -> Option<Dialect> {
        let mut parts = version.split('.').map(|p| p.parse::<u32>());
        let major = parts.next()?.ok()?;
        let minor = parts.next().and_then(Result::ok).unwrap_or(0);
        Some(if (major, minor) >= (23, 2) { Dialect::Modern } else { Dialect::Legacy })
    }

    pub(crate) fn timestamp_type(self) -> &'static str {
        match self {
            Dialect::Modern => "DateTime64(6, 'UTC')",
            Dialect::Legacy => "DateTime('UTC')",
        }
    }

    pub(crate) fn low_cardinality_string(self) -> &'static str {
        match self {
            Dialect::Modern => "LowCardinality(String)",
            Dialect::Legacy => "String",
        }
    }

    /// `sales_fact._version`: the packed (item, order, dimensions) tuple where `UInt256` exists
    /// (docs/sales-fact.md), the components' sum on older servers.
    pub(crate) fn fact_version_type(self) -> &'static str {
        match self {
            Dialect::Modern => "UInt256",
            Dialect::Legacy => "UInt64",
        }
    }

    /// An expression turning a timestamp column into microseconds since the epoch (Int64).
    pub(crate) fn micros_of(self, column: &str) -> String {
        match self {
            Dialect::Modern => format!("toUnixTimestamp64Micro({column})"),
            Dialect::Legacy => format!("toInt64(toUInt32({column})) * 1000000"),
        }
    }
}

impl Dialect {
    /// An expression turning Int64 microseconds since the epoch into this server's timestamp.
    pub(crate) fn timestamp_of_micros(self, micros: &str) -> String {
        match self {
            Dialect::Modern => format!("fromUnixTimestamp64Micro({micros}, 'UTC')"),
            Dialect::Legacy => format!("toDateTime(intDiv({micros}, 1000000), 'UTC')"),
        }
    }
}

/// How names and values are written into this server's SQL text.
/// A string literal for SQL text.
pub(crate) fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Backquotes an identifier (database names come from configuration).
pub(crate) fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('\\', "\\\\").replace('`', "\\`"))
}

/// A comma-separated list of integer literals for `IN (...)`; never empty (`IN ()` is invalid).
pub(crate) fn id_list(ids: &[i64]) -> String {
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
}
