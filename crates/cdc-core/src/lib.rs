//! The processor's logic, free of I/O: what a change event says, how each supported format is
//! decoded into one [`change::ChangeEvent`], which mirror a source table feeds ([`tables`]), the
//! row a change writes there ([`mirror`], [`generic`]), and the `sales_fact` row derived from the
//! mirrors' newest rows ([`fact`]).
//!
//! ```text
//! message body ──► decode ──► change::ChangeEvent ──► redact ──► mirror / generic (one row per change)
//!                                                         │  (written and read back by cdc-clickhouse)
//!                                    fact::derive(newest rows) ──► fact::FactRow
//! ```
//!
//! [`error`] holds the one classification (transient / poison / systemic) every stage's error
//! maps to; [`identifier`] checks event-supplied names before they can reach DDL; [`redact`]
//! drops, nulls or hashes the configured PII columns before any row is built; [`rederive`]
//! is the signed re-derivation task the function sends itself; [`watermark`] detects log
//! positions that restart; [`wire`] holds the helpers the decoder and the capture in `cdc-tools`
//! share.

pub mod change;
pub mod completion;
pub mod decode;
pub mod error;
pub mod fact;
pub mod generic;
pub mod identifier;
pub mod mirror;
pub mod redact;
pub mod rederive;
pub mod tables;
pub mod watermark;
pub mod wire;
