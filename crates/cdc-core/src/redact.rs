//! Redaction: configured columns are dropped, nulled or replaced by a keyed hash before any row
//! is built from a change, so no mirror, fact, generic mirror or repair writes their values.
//!
//! Enters: a decoded [`ChangeEvent`] and the rules (`REDACT_COLUMNS`: `mirror.column:action`).
//! Leaves: the event with the rules applied to its `before` and `after` images.
//!
//! A hashed value is `<key id>:<HMAC-SHA256 in hex>` over the value's text: equal values give
//! equal hashes (joins and `count(DISTINCT ...)` still work), and without the key the value
//! cannot be recovered or guessed by hashing candidates. The key id (the first 8 hex digits of
//! SHA-256 of the key) says which key made a value, for rotation: docs/privacy.md.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hmac::{KeyInit, Mac};
use sha2::Digest;

use crate::change::{ChangeEvent, Row, Value};
use crate::tables::{ColumnKind, SourceTable};

/// What happens to a redacted column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `<key id>:<HMAC-SHA256 hex>` of the value's text.
    Hash,
    /// NULL (a sales mirror's declared column stores its default, as for any NULL).
    Null,
    /// Left out of the image: the column never exists in ClickHouse (generic mirrors only).
    Drop,
}

/// Why a `REDACT_COLUMNS` value cannot be used (a configuration error at cold start).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("`{entry}` is not `mirror.column:hash|null|drop`")]
    Syntax { entry: String },
    #[error("`{mirror}.{column}` is a key column: redacting it would merge or split rows")]
    KeyColumn { mirror: String, column: String },
    #[error("`{mirror}.{column}` is a declared column of a sales mirror: `drop` cannot remove it (use null or hash)")]
    DeclaredDrop { mirror: String, column: String },
    #[error("`{mirror}.{column}` is not a text column: only text columns of a sales mirror can hold a hash")]
    HashNotText { mirror: String, column: String },
    #[error("`{mirror}.{column}` is named twice")]
    Duplicate { mirror: String, column: String },
}

/// The redaction rules, per mirror (the ClickHouse table name) and column.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    by_mirror: BTreeMap<String, BTreeMap<String, Action>>,
}

impl Rules {
    /// Parses `mirror.column:action` entries separated by commas; empty or `none`: no rules.
    /// Rules naming a sales mirror are checked against its declared columns.
    pub fn parse(spec: &str) -> Result<Rules, RuleError> {
        let mut rules = Rules::default();
        let spec = spec.trim();
        if spec.is_empty() || spec.eq_ignore_ascii_case("none") {
            return Ok(rules);
        }
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let syntax = || RuleError::Syntax { entry: entry.chars().take(80).collect() };
            let (target, action) = entry.rsplit_once(':').ok_or_else(syntax)?;
            let (mirror, column) = target.split_once('.').ok_or_else(syntax)?;
            let (mirror, column) = (mirror.trim(), column.trim());
            if mirror.is_empty() || column.is_empty() {
                return Err(syntax());
            }
            let action = match action.trim().to_ascii_lowercase().as_str() {
                "hash" => Action::Hash,
                "null" => Action::Null,
                "drop" => Action::Drop,
                _ => return Err(syntax()),
            };
            check_sales_rule(mirror, column, action)?;
            let columns = rules.by_mirror.entry(mirror.to_owned()).or_default();
            if columns.insert(column.to_owned(), action).is_some() {
                return Err(RuleError::Duplicate { mirror: mirror.to_owned(), column: column.to_owned() });
            }
        }
        Ok(rules)
    }

    pub fn is_empty(&self) -> bool {
        self.by_mirror.is_empty()
    }

    /// Some rule hashes: a key is needed.
    pub fn hashes(&self) -> bool {
        self.by_mirror.values().flat_map(|c| c.values()).any(|a| *a == Action::Hash)
    }

    /// The action for `mirror.column`, if redacted.
    pub fn action(&self, mirror: &str, column: &str) -> Option<Action> {
        self.by_mirror.get(mirror)?.get(column).copied()
    }

    /// Refuses rules on a generic mirror's key columns (they identify rows).
    pub fn check_key(&self, mirror: &str, key: &[String]) -> Result<(), RuleError> {
        match self.by_mirror.get(mirror).and_then(|c| key.iter().find(|k| c.contains_key(*k))) {
            Some(column) => Err(RuleError::KeyColumn { mirror: mirror.to_owned(), column: column.clone() }),
            None => Ok(()),
        }
    }
}

/// A sales mirror's declared columns keep their type and existence: no `drop`, `hash` only into
/// text, never a key or foreign key.
fn check_sales_rule(mirror: &str, column: &str, action: Action) -> Result<(), RuleError> {
    let Some(table) = SourceTable::ALL.into_iter().find(|t| t.name() == mirror) else { return Ok(()) };
    let spec = table.spec();
    let Some(declared) = spec.column(column) else { return Ok(()) };
    let owned = || (mirror.to_owned(), column.to_owned());
    if column == spec.key || table.foreign_keys().contains(&column) {
        let (mirror, column) = owned();
        return Err(RuleError::KeyColumn { mirror, column });
    }
    match action {
        Action::Drop => {
            let (mirror, column) = owned();
            Err(RuleError::DeclaredDrop { mirror, column })
        }
        Action::Hash if declared.kind != ColumnKind::Text => {
            let (mirror, column) = owned();
            Err(RuleError::HashNotText { mirror, column })
        }
        _ => Ok(()),
    }
}

/// The HMAC key of [`Action::Hash`], from Secrets Manager (`REDACTION_KEY_SECRET_ARN`).
#[derive(Clone)]
pub struct RedactionKey {
    key: Vec<u8>,
    id: String,
}

impl std::fmt::Debug for RedactionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedactionKey({})", self.id)
    }
}

/// The shortest key accepted: HMAC-SHA256's output size.
const MIN_KEY_BYTES: usize = 32;

impl RedactionKey {
    /// `None` when the material is shorter than 32 bytes.
    pub fn new(material: &[u8]) -> Option<RedactionKey> {
        if material.len() < MIN_KEY_BYTES {
            return None;
        }
        let digest = sha2::Sha256::digest(material);
        Some(RedactionKey { key: material.to_vec(), id: hex(&digest[..4]) })
    }

    /// Which key made a hash: the part before the `:`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// `<key id>:<HMAC-SHA256(key, text) in hex>`.
    pub fn hash(&self, text: &[u8]) -> String {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(text);
        format!("{}:{}", self.id, hex(&mac.finalize().into_bytes()))
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The text a value is hashed over: what PostgreSQL's `::text` gives for text, numbers and
/// booleans (so `verify` can hash the source's values the same way). Other types (bytes, dates,
/// times, floats, arrays) have no such agreed text: `None`, and the value is nulled instead.
fn hash_input(value: &Value) -> Option<Vec<u8>> {
    Some(match value {
        Value::Text(s) | Value::Uuid(s) | Value::Json(s) => s.as_bytes().to_vec(),
        Value::Int(i) => i.to_string().into_bytes(),
        Value::Decimal(d) => d.to_string().into_bytes(),
        Value::Bool(b) => if *b { "true" } else { "false" }.as_bytes().to_vec(),
        _ => return None,
    })
}

/// The rules and, when a rule hashes, the key: applied to every change before rows are built.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    rules: Rules,
    key: Option<RedactionKey>,
}

impl Redactor {
    /// `None` when a rule hashes and there is no key (never a plain value instead of a hash).
    pub fn new(rules: Rules, key: Option<RedactionKey>) -> Option<Redactor> {
        (!rules.hashes() || key.is_some()).then_some(Redactor { rules, key })
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// Applies the rules of the change's mirror to its images. A TOAST placeholder stays one:
    /// it is completed from the stored row, which holds the redacted value already.
    pub fn apply(&self, event: &mut ChangeEvent) {
        let Some(columns) = self.rules.by_mirror.get(event.mirror.name()) else { return };
        for row in [&mut event.before, &mut event.after].into_iter().flatten() {
            self.apply_row(columns, row);
        }
    }

    /// One value of `mirror.column` as the rules store it (`verify` hashes the source's values
    /// with this); `None` for a dropped column.
    pub fn redact_value(&self, mirror: &str, column: &str, value: Value) -> Option<Value> {
        match self.rules.action(mirror, column) {
            None => Some(value),
            Some(Action::Drop) => None,
            Some(Action::Null) => Some(Value::Null),
            Some(Action::Hash) => Some(self.hashed(value)),
        }
    }

    fn hashed(&self, value: Value) -> Value {
        match (&value, &self.key) {
            (Value::Null | Value::Unavailable, _) => value,
            (_, Some(key)) => hash_input(&value).map_or(Value::Null, |text| Value::Text(key.hash(&text))),
            // Unreachable by construction (`new`); nulled rather than written in plain.
            (_, None) => Value::Null,
        }
    }

    fn apply_row(&self, columns: &BTreeMap<String, Action>, row: &mut Row) {
        row.redact(|name, value| match columns.get(name) {
            None => Some(value),
            Some(Action::Drop) => None,
            Some(Action::Null) if value == Value::Unavailable => Some(value),
            Some(Action::Null) => Some(Value::Null),
            Some(Action::Hash) => Some(self.hashed(value)),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::{InputFormat, Op, TableRef, Version, VersionScale};
    use crate::tables::MirrorTarget;

    fn key() -> RedactionKey {
        RedactionKey::new(&[9u8; 32]).unwrap()
    }

    fn event(mirror: MirrorTarget, after: Row) -> ChangeEvent {
        ChangeEvent {
            table: TableRef::new("public", mirror.name()),
            mirror,
            op: Op::Update,
            before: Some(after.clone()),
            after: Some(after),
            version: Version(42),
            scale: VersionScale::Lsn,
            commit_time_us: None,
            transaction_id: None,
            correlation_id: None,
            format: InputFormat::Debezium,
            snapshot: None,
        }
    }

    #[test]
    fn rules_parse_and_refuse_what_would_break_a_mirror() {
        let rules = Rules::parse(" customers.email:hash, people.phone:DROP,people.note:null ").unwrap();
        assert_eq!(rules.action("customers", "email"), Some(Action::Hash));
        assert_eq!(rules.action("people", "phone"), Some(Action::Drop));
        assert_eq!(rules.action("people", "note"), Some(Action::Null));
        assert_eq!(rules.action("people", "name"), None);
        assert!(rules.hashes());
        assert!(Rules::parse("none").unwrap().is_empty());
        assert!(Rules::parse("").unwrap().is_empty());
        for (spec, code) in [
            ("customers.email", "syntax"),
            ("customers:hash", "syntax"),
            ("customers.email:encrypt", "syntax"),
            ("customers.id:hash", "key"),
            ("orders.customer_id:null", "key"),
            ("customers.email:drop", "drop"),
            ("products.price:hash", "text"),
            ("people.a:null,people.a:hash", "twice"),
        ] {
            let e = Rules::parse(spec).unwrap_err();
            let got = match e {
                RuleError::Syntax { .. } => "syntax",
                RuleError::KeyColumn { .. } => "key",
                RuleError::DeclaredDrop { .. } => "drop",
                RuleError::HashNotText { .. } => "text",
                RuleError::Duplicate { .. } => "twice",
            };
            assert_eq!(got, code, "{spec}");
        }
        let people = Rules::parse("people.id:hash").unwrap();
        assert!(people.check_key("people", &["id".to_owned()]).is_err());
        assert!(people.check_key("people", &["uuid".to_owned()]).is_ok());
    }

    #[test]
    fn a_hash_is_keyed_stable_and_tagged_with_its_key() {
        let (a, b) = (key(), RedactionKey::new(&[8u8; 32]).unwrap());
        assert_eq!(a.hash(b"ada@example.com"), a.hash(b"ada@example.com"));
        assert_ne!(a.hash(b"ada@example.com"), a.hash(b"bob@example.com"));
        assert_ne!(a.hash(b"ada@example.com"), b.hash(b"ada@example.com"), "another key, another hash");
        let h = a.hash(b"ada@example.com");
        let (id, mac) = h.split_once(':').unwrap();
        assert_eq!((id, mac.len()), (a.id(), 64));
        assert!(RedactionKey::new(&[1u8; 31]).is_none(), "shorter than the MAC");
        assert!(!format!("{a:?}").contains("9, 9"), "the key never prints");
    }

    #[test]
    fn rules_apply_to_both_images_and_keep_placeholders() {
        let redactor = Redactor::new(
            Rules::parse("customers.email:hash,people.phone:drop,people.note:null").unwrap(),
            Some(key()),
        )
        .unwrap();
        let mut row = Row::new();
        row.push("id", Value::Int(1));
        row.push("email", Value::Text("ada@example.com".into()));
        let mut change = event(MirrorTarget::Sales(SourceTable::Customers), row);
        redactor.apply(&mut change);
        let expected = Value::Text(key().hash(b"ada@example.com"));
        for image in [&change.before, &change.after] {
            assert_eq!(image.as_ref().unwrap().get("email"), Some(&expected));
            assert_eq!(image.as_ref().unwrap().get("id"), Some(&Value::Int(1)));
        }

        let generic = std::sync::Arc::new(crate::tables::GenericTable {
            name: "people".into(),
            key: vec!["id".into()],
            declared: Vec::new(),
        });
        let mut row = Row::new();
        row.push("id", Value::Int(2));
        row.push("phone", Value::Text("+44 1234".into()));
        row.push("note", Value::Unavailable);
        let mut change = event(MirrorTarget::Generic(generic), row);
        redactor.apply(&mut change);
        let after = change.after.unwrap();
        assert_eq!(after.get("phone"), None, "dropped");
        assert_eq!(after.get("note"), Some(&Value::Unavailable), "a placeholder stays one");
        assert_eq!(redactor.redact_value("people", "note", Value::Text("x".into())), Some(Value::Null));
        assert_eq!(redactor.redact_value("people", "phone", Value::Text("x".into())), None);
    }

    #[test]
    fn hashing_without_a_key_is_refused_and_odd_types_are_nulled() {
        let rules = Rules::parse("people.born:hash").unwrap();
        assert!(Redactor::new(rules.clone(), None).is_none());
        assert!(Redactor::new(Rules::parse("people.note:null").unwrap(), None).is_some());
        let redactor = Redactor::new(rules, Some(key())).unwrap();
        assert_eq!(redactor.redact_value("people", "born", Value::Date(19_000)), Some(Value::Null));
        assert_eq!(redactor.redact_value("people", "born", Value::Null), Some(Value::Null));
        let hashed = redactor.redact_value("people", "born", Value::Int(42)).unwrap();
        assert_eq!(hashed, Value::Text(key().hash(b"42")));
    }
}
