//! The decoder of `cdc-processor`, compiled from the main crate's own source files.
//!
//! `crate::change`, `crate::error`, `crate::tables` and `crate::decode` resolve here exactly as
//! in the main crate, so the fuzz target exercises the same code without building the AWS and
//! ClickHouse dependencies under sanitizers.

#[path = "../../src/change.rs"]
pub mod change;
#[path = "../../src/decode/mod.rs"]
pub mod decode;
#[path = "../../src/error.rs"]
pub mod error;
#[path = "../../src/tables.rs"]
pub mod tables;
