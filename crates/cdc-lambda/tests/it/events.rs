//! The sample events in `events/` are what they claim to be: whole SQS events Lambda could send,
//! every record with a usable message id, every body decoded by the real decoder as its file
//! name says (changes, skips, exactly the planted poison), and the FIFO batch recognised as FIFO.

use aws_lambda_events::sqs::SqsEvent;
use cdc_core::change::Decoded;
use cdc_core::decode::{DecodeOptions, Decoder};
use cdc_core::error::{Classify, ErrorClass};
use cdc_core::tables::TableMapping;
use cdc_lambda::sqs::batch::is_fifo;
use cdc_lambda::sqs::message::Message;

use crate::support::event_file;

#[derive(Debug, Default, PartialEq, Eq)]
struct Tally {
    changes: usize,
    skipped: usize,
    poison: usize,
}

fn load(name: &str) -> (Vec<Message>, Tally) {
    load_with(name, &Decoder::default())
}

/// The table mapping of `debezium-generic-tables.json` (events/generate.py).
const GENERIC_MAPPING: &str = "public.customers, public.products, public.orders, public.order_items, \
                               public.order_notes(order_id line_no), archive.customers=archive_customers";

fn load_with(name: &str, decoder: &Decoder) -> (Vec<Message>, Tally) {
    let path = event_file(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut event: SqsEvent = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: not an SqsEvent: {e}"));
    let mut tally = Tally::default();
    let mut messages = Vec::new();
    for record in &mut event.records {
        let message = Message::from_lambda(record).unwrap_or_else(|| panic!("{name}: a record without a usable id"));
        assert!(record.event_source_arn.as_deref().is_some_and(|a| a.starts_with("arn:aws:sqs:")), "{name}");
        match decoder.decode(&message.body) {
            Ok(Decoded::Change(_)) => tally.changes += 1,
            Ok(_) => tally.skipped += 1,
            Err(e) => {
                assert_eq!(e.class(), ErrorClass::Poison, "{name}: {e}");
                tally.poison += 1;
            }
        }
        messages.push(message);
    }
    (messages, tally)
}

fn expect(name: &str, changes: usize, skipped: usize, poison: usize) {
    let (_, tally) = load(name);
    assert_eq!(tally, Tally { changes, skipped, poison }, "{name}");
}

#[test]
fn every_sample_event_decodes_as_named() {
    expect("debezium-customers.json", 1, 0, 0);
    expect("debezium-products.json", 2, 0, 0);
    expect("debezium-orders.json", 1, 0, 0);
    expect("debezium-order-items.json", 2, 0, 0);
    expect("debezium-no-schema.json", 2, 0, 0);
    expect("dms.json", 2, 0, 0);
    expect("platform.json", 3, 0, 0);
    expect("sns-wrapped.json", 2, 0, 0);
    expect("eventbridge-wrapped.json", 1, 0, 0);
    expect("mixed-batch.json", 9, 0, 0);
    expect("poison-batch.json", 2, 0, 2);
    expect("fifo-batch.json", 3, 1, 0);
    expect("tombstone-heartbeat.json", 0, 5, 0);
    // Tables beyond the sales schema: uncaptured by default, changes once mapped.
    expect("debezium-generic-tables.json", 0, 4, 0);
    let options = DecodeOptions { tables: TableMapping::parse(GENERIC_MAPPING).unwrap(), ..DecodeOptions::default() };
    let (_, tally) = load_with("debezium-generic-tables.json", &Decoder::new(options));
    assert_eq!(tally, Tally { changes: 4, skipped: 0, poison: 0 });
}

#[test]
fn fifo_sample_is_fifo_and_the_others_are_not() {
    assert!(is_fifo(&load("fifo-batch.json").0));
    assert!(!is_fifo(&load("mixed-batch.json").0));
}

#[test]
fn every_file_in_events_is_checked() {
    let dir = event_file("");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    assert_eq!(names.len(), 14, "a new sample event needs its expectation above: {names:?}");
}
