//! Borrowed, lazily typed views over JSON text.
//!
//! Enters: JSON text (a body, or the text of one of its values). Leaves: [`RawObject`], the
//! object's keys in order with each value still as unparsed [`RawValue`] text borrowed from the
//! body. Decoders look at the few keys they need and type each value exactly once, from its
//! text: that keeps exact decimals (a JSON number's digits, never an `f64`) and avoids building a
//! `serde_json::Value` tree for every message.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// One JSON object: its members in source order, values unparsed.
#[derive(Debug, Default)]
pub(crate) struct RawObject<'a> {
    entries: Vec<(Cow<'a, str>, &'a RawValue)>,
}

impl<'a> RawObject<'a> {
    /// Parses `text` as one JSON object (serde_json's recursion limit applies to nested values
    /// it has to look into; skipping a value into a `RawValue` needs no recursion).
    pub(crate) fn parse(text: &'a str) -> Result<RawObject<'a>, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The first member called `key`, `null` included.
    pub(crate) fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    /// The first member called `key` unless it is absent or `null`.
    pub(crate) fn get_some(&self, key: &str) -> Option<&'a RawValue> {
        self.get(key).filter(|v| !is_null(v))
    }

    pub(crate) fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &'a RawValue)> {
        self.entries.iter().map(|(k, v)| (k.as_ref(), *v))
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// An object key, borrowed from the body unless it holds escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for KeyVisitor<'a> {
            type Value = Key<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor(PhantomData))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for RawObject<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for ObjectVisitor<'a> {
            type Value = RawObject<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawObject<'a>, A::Error> {
                let mut entries = Vec::with_capacity(8);
                while let Some(key) = map.next_key::<Key<'a>>()? {
                    let value: &'a RawValue = map.next_value()?;
                    entries.push((key.0, value));
                }
                Ok(RawObject { entries })
            }
        }
        deserializer.deserialize_map(ObjectVisitor(PhantomData))
    }
}

/// Parses the text of a JSON array into its elements, unparsed.
pub(crate) fn parse_array(text: &str) -> Result<Vec<&RawValue>, serde_json::Error> {
    serde_json::from_str(text)
}

fn is_null(v: &RawValue) -> bool {
    v.get() == "null"
}

pub(crate) fn is_object(v: &RawValue) -> bool {
    v.get().starts_with('{')
}

/// The string a JSON string value holds, borrowed when it has no escapes. `None` when the value
/// is not a string.
pub(crate) fn as_str(v: &RawValue) -> Option<Cow<'_, str>> {
    let text = v.get();
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.contains('\\') {
        // serde_json validated the text: without escapes, the characters between the quotes
        // are exactly the string.
        return Some(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(text).ok().map(Cow::Owned)
}

/// A JSON integer that fits `i64`.
pub(crate) fn as_i64(v: &RawValue) -> Option<i64> {
    v.get().parse().ok()
}

/// A JSON integer that fits `u64`.
pub(crate) fn as_u64(v: &RawValue) -> Option<u64> {
    v.get().parse().ok()
}

/// True for the text of a JSON number.
pub(crate) fn is_number(text: &str) -> bool {
    matches!(text.as_bytes().first(), Some(b'-' | b'0'..=b'9'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_borrows_plain_strings() {
        let obj = RawObject::parse(r#"{"b": 1, "a\u0041": "x", "c": null, "d": "q\"r"}"#).unwrap();
        let keys: Vec<_> = obj.iter().map(|(k, _)| k.to_owned()).collect();
        assert_eq!(keys, ["b", "aA", "c", "d"]);
        assert_eq!(as_i64(obj.get("b").unwrap()), Some(1));
        assert!(obj.get("c").is_some() && obj.get_some("c").is_none());
        assert!(matches!(as_str(obj.get("aA").unwrap()), Some(Cow::Borrowed("x"))));
        assert_eq!(as_str(obj.get("d").unwrap()).unwrap(), "q\"r");
    }
}
