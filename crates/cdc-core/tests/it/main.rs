//! cdc-core's integration tests, one binary: the fixture bodies under `tests/fixtures/`
//! (`decode`) and the real-world captures beside the project (`realworld`).

mod decode;
mod realworld;
mod support;
