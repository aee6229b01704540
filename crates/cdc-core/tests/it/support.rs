//! What the decoding tests share: the fixture bodies of `tests/fixtures/` and the real-world
//! captures beside the project (`../shared/realworld/raw/`).

use std::path::{Path, PathBuf};

use cdc_core::change::{ChangeEvent, Decoded};
use cdc_core::decode::Decoder;

/// `tests/fixtures/` of this crate.
pub(crate) fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub(crate) fn fixture(name: &str) -> String {
    let path = fixtures_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The body's change, or a panic naming what it decoded to.
pub(crate) fn change_of(decoder: &Decoder, body: &str) -> ChangeEvent {
    match decoder.decode(body) {
        Ok(Decoded::Change(c)) => *c,
        other => panic!("expected a change, got {other:?}"),
    }
}

pub(crate) const RAW: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/realworld/raw/");

/// The real-world captures live beside the project (`../shared/realworld/raw/`), never in it:
/// CI always has them; a clone without them skips these tests and says why.
pub(crate) fn captures_present() -> bool {
    let present = Path::new(RAW).is_dir();
    if !present {
        eprintln!("skipped: {RAW} is absent (the real-world captures are not part of a clone; CI has them)");
    }
    present
}

/// The capture files' names, sorted.
pub(crate) fn raw_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(RAW)
        .unwrap_or_else(|e| panic!("{RAW}: {e}"))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

pub(crate) fn raw(name: &str) -> String {
    std::fs::read_to_string(format!("{RAW}{name}")).unwrap_or_else(|e| panic!("{name}: {e}"))
}
