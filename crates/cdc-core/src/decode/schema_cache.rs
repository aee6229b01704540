//! The Debezium schema block, parsed once per distinct block.
//!
//! Enters: the raw text of a message's `schema` block. Leaves: an `Arc<SchemaPlan>`: for each
//! row column, its [`FieldType`]. The block is often three quarters of a message and identical
//! for every message of one table version, so plans are cached by a hash of the block's bytes;
//! a hit is confirmed by comparing the bytes (a hash collision can never hand out a wrong plan).
//! The cache is bounded: when full it is cleared, which costs one re-parse per live schema.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::sync::{Arc, RwLock};

use serde::Deserialize;

use super::DecodeError;
use super::encoding::FieldType;

/// Distinct schema blocks kept. Four tables with a few schema versions each fit many times.
const CAPACITY: usize = 256;

/// Most recently parsed blocks that [`SchemaCache::prefix_match`] tries, newest first.
const RECENT: usize = 16;

/// The field types of one schema block's row struct (`before`/`after`), in schema order.
#[derive(Debug)]
pub(crate) struct SchemaPlan {
    pub(crate) raw: Box<str>,
    /// `None` when the block describes no row (heartbeat, transaction metadata).
    pub(crate) row: Option<RowPlan>,
}

#[derive(Debug)]
pub(crate) struct RowPlan {
    fields: Vec<(String, FieldType)>,
}

impl RowPlan {
    /// The type of column `name`; `position` is where the column sits in the message, which is
    /// almost always where it sits in the schema, so that slot is tried first.
    pub(crate) fn get(&self, position: usize, name: &str) -> Option<&FieldType> {
        match self.fields.get(position) {
            Some((n, ty)) if n == name => Some(ty),
            _ => self.fields.iter().find(|(n, _)| n == name).map(|(_, ty)| ty),
        }
    }
}

pub(crate) struct SchemaCache {
    plans: RwLock<HashMap<u64, Arc<SchemaPlan>>>,
    recent: RwLock<Vec<Arc<SchemaPlan>>>,
    hasher: foldhash::fast::FixedState,
}

impl SchemaCache {
    pub(crate) fn new() -> Self {
        Self {
            plans: RwLock::new(HashMap::new()),
            recent: RwLock::new(Vec::new()),
            hasher: foldhash::fast::FixedState::with_seed(0x5eed_cdc0),
        }
    }

    /// The plan of a recently seen schema block that `text` starts with, byte for byte.
    ///
    /// Lets the decoder skip a known block without even scanning it: a cached block is a
    /// complete JSON object, and an object ends at its own closing brace, so if `text` starts
    /// with those exact bytes its first value IS that block. Comparing bytes runs at memory
    /// speed; different blocks usually differ within the first columns.
    pub(crate) fn prefix_match(&self, text: &str) -> Option<Arc<SchemaPlan>> {
        let recent = self.recent.read().unwrap_or_else(|e| e.into_inner());
        recent.iter().find(|p| text.as_bytes().starts_with(p.raw.as_bytes())).cloned()
    }

    pub(crate) fn len(&self) -> usize {
        self.plans.read().map_or_else(|e| e.into_inner().len(), |m| m.len())
    }

    pub(crate) fn plan(&self, raw: &str) -> Result<Arc<SchemaPlan>, DecodeError> {
        let key = self.hasher.hash_one(raw.as_bytes());
        {
            // A poisoned lock only means another thread panicked mid-insert; the map itself is
            // still consistent (inserts are single calls), so keep using it.
            let plans = self.plans.read().unwrap_or_else(|e| e.into_inner());
            if let Some(plan) = plans.get(&key).filter(|p| *p.raw == *raw) {
                return Ok(Arc::clone(plan));
            }
        }
        let plan = Arc::new(parse_plan(raw)?);
        let mut plans = self.plans.write().unwrap_or_else(|e| e.into_inner());
        if plans.len() >= CAPACITY {
            plans.clear();
        }
        plans.insert(key, Arc::clone(&plan));
        drop(plans);
        let mut recent = self.recent.write().unwrap_or_else(|e| e.into_inner());
        recent.insert(0, Arc::clone(&plan));
        recent.truncate(RECENT);
        Ok(plan)
    }
}

/// One node of a Kafka Connect JSON schema.
#[derive(Debug, Deserialize)]
struct Node {
    #[serde(rename = "type", default)]
    ty: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    field: Option<String>,
    #[serde(default)]
    fields: Option<Vec<Node>>,
    #[serde(default)]
    items: Option<Box<Node>>,
    #[serde(default)]
    parameters: Option<BTreeMap<String, serde_json::Value>>,
}

fn parse_plan(raw: &str) -> Result<SchemaPlan, DecodeError> {
    // serde_json's recursion limit bounds how deep a hostile schema can nest.
    let root: Node = serde_json::from_str(raw).map_err(|_| DecodeError::BadSchema("not a Kafka Connect schema"))?;
    let row_struct = root
        .fields
        .iter()
        .flatten()
        .find(|f| matches!(f.field.as_deref(), Some("after" | "before")) && f.ty.as_deref() == Some("struct"));
    // A record flattened by ExtractNewRecordState: the root struct is the row itself, marked by
    // the transform's `__` metadata fields (debezium.rs).
    let flattened = || {
        let fields = root.fields.as_ref()?;
        let marked = fields.iter().any(|f| f.field.as_deref().is_some_and(|n| n.starts_with("__")));
        (root.ty.as_deref() == Some("struct") && marked).then_some(&root)
    };
    let row = match row_struct.or_else(flattened) {
        None => None,
        Some(node) => {
            let mut fields = Vec::new();
            for column in node.fields.iter().flatten() {
                let name = column.field.clone().ok_or(DecodeError::BadSchema("column without a name"))?;
                fields.push((name, field_type(column)?));
            }
            Some(RowPlan { fields })
        }
    };
    Ok(SchemaPlan { raw: raw.into(), row })
}

fn field_type(node: &Node) -> Result<FieldType, DecodeError> {
    let by_name = match node.name.as_deref() {
        Some(super::encoding::DECIMAL_LOGICAL_NAME) => {
            return Ok(FieldType::Decimal { scale: decimal_scale(node)? });
        }
        // Enum, EnumSet, ZonedTime, Interval (string mode), Xml, Ltree...: their text is the value.
        Some(name) => FieldType::from_logical_name(name),
        None => None,
    };
    if let Some(ty) = by_name {
        return Ok(ty);
    }
    Ok(match node.ty.as_deref() {
        Some("int8" | "int16" | "int32" | "int64") => FieldType::Int,
        Some("float32" | "float64" | "float" | "double") => FieldType::Float,
        Some("boolean") => FieldType::Bool,
        Some("string") => FieldType::Text,
        Some("bytes") => FieldType::Bytes,
        Some("array") => match &node.items {
            Some(items) => FieldType::Array(Box::new(field_type(items)?)),
            None => FieldType::Array(Box::new(FieldType::Natural)),
        },
        Some("struct" | "map") => FieldType::Struct,
        _ => FieldType::Natural,
    })
}

/// `parameters.scale` is a string in Kafka Connect (`"2"`); accept a number too.
fn decimal_scale(node: &Node) -> Result<i32, DecodeError> {
    let bad = DecodeError::BadSchema("decimal without a valid scale parameter");
    let value = node.parameters.as_ref().and_then(|p| p.get("scale")).ok_or(bad)?;
    let scale = match value {
        serde_json::Value::String(s) => s.parse::<i64>().ok(),
        serde_json::Value::Number(n) => n.as_i64(),
        _ => None,
    };
    scale.and_then(|s| i32::try_from(s).ok()).ok_or(DecodeError::BadSchema("decimal without a valid scale parameter"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: &str = r#"{"type":"struct","fields":[
        {"type":"struct","fields":[
            {"type":"int64","optional":false,"field":"id"},
            {"type":"bytes","optional":true,"name":"org.apache.kafka.connect.data.Decimal","version":1,"parameters":{"scale":"2","connect.decimal.precision":"12"},"field":"price"},
            {"type":"array","items":{"type":"string","optional":true},"optional":true,"field":"tags"}
        ],"optional":true,"name":"s.public.products.Value","field":"before"}
    ],"optional":false,"name":"s.public.products.Envelope"}"#;

    #[test]
    fn plans_are_parsed_once_and_shared() {
        let cache = SchemaCache::new();
        let a = cache.plan(SCHEMA).unwrap();
        let b = cache.plan(SCHEMA).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(cache.len(), 1);
        let body_tail = format!("{SCHEMA},\"payload\":{{}}}}");
        assert!(cache.prefix_match(&body_tail).is_some_and(|p| Arc::ptr_eq(&p, &a)));
        assert!(cache.prefix_match(&SCHEMA[..SCHEMA.len() - 1]).is_none());
        let row = a.row.as_ref().unwrap();
        assert_eq!(row.get(1, "price"), Some(&FieldType::Decimal { scale: 2 }));
        assert_eq!(row.get(0, "price"), Some(&FieldType::Decimal { scale: 2 }));
        assert_eq!(row.get(0, "tags"), Some(&FieldType::Array(Box::new(FieldType::Text))));
        assert_eq!(row.get(0, "nope"), None);
    }

    #[test]
    fn bad_schemas_are_errors() {
        let cache = SchemaCache::new();
        assert!(cache.plan("[1]").is_err());
        let no_scale = SCHEMA.replace(r#""parameters":{"scale":"2","connect.decimal.precision":"12"},"#, "");
        assert!(cache.plan(&no_scale).is_err());
        assert_eq!(cache.len(), 0);
    }
}
