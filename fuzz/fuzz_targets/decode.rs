//! Fuzzes `Decoder::decode` with arbitrary bodies: it must return `Ok` or a classified error,
//! never panic, and every error code must be one of the documented ones.
#![no_main]

use std::sync::LazyLock;

use cdc_core::decode::{DecodeOptions, Decoder, ERROR_CODES};
use cdc_core::error::{Classify, ErrorClass};
use libfuzzer_sys::fuzz_target;

// One decoder for the whole run, like one Lambda container: the schema cache is exercised too.
static DECODER: LazyLock<Decoder> = LazyLock::new(|| Decoder::new(DecodeOptions::default()));
static STRICT: LazyLock<Decoder> =
    LazyLock::new(|| Decoder::new(DecodeOptions { reject_unknown_tables: true, ..DecodeOptions::default() }));

fuzz_target!(|data: &[u8]| {
    // SQS bodies are UTF-8 strings.
    let Ok(body) = std::str::from_utf8(data) else { return };
    for decoder in [&*DECODER, &*STRICT] {
        if let Err(e) = decoder.decode(body) {
            assert_eq!(e.class(), ErrorClass::Poison);
            assert!(ERROR_CODES.contains(&e.code()), "undocumented code {}", e.code());
            let _ = e.to_string();
        }
    }
});
