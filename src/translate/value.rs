//! The body tree the changes work on: [`Json`], a JSON value that borrows
//! from the bytes it was parsed from and from the compiled plan.
//!
//! Why not `serde_json::Value`: with `arbitrary_precision` every number is a
//! `String` and every key and string an allocation, and parsing plus
//! serialising dominated a translation (26 µs of a 1 KiB chain of five
//! changes). Here a number is the slice of the input it was written as (never
//! parsed, so never rounded: `1E+400` comes back as `1E+400`), a string
//! without escapes is a slice too, and an object is a vector of members.
//!
//! Invariants: an object's members are sorted by key (bytes of the unescaped
//! key, as serde_json's map orders them) and its keys are unique; the parser
//! establishes both (a repeated key is an error there) and every mutation
//! here keeps them. So lookups are a binary search and a translated body is
//! written with sorted keys, as before.

use std::borrow::Cow;
use std::cmp::Ordering;

/// A JSON value borrowing from the body it came from (`'a`) or from the plan
/// that put it there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Json<'a> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, as the text it was written in (valid JSON number syntax).
    Number(Cow<'a, str>),
    /// A string.
    String(Str<'a>),
    /// An array.
    Array(Vec<Json<'a>>),
    /// An object.
    Object(Object<'a>),
}

/// A JSON string's (unescaped) text, and whether writing it needs escapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Str<'a> {
    text: Cow<'a, str>,
    /// Whether `text` holds `"`, `\` or a control character.
    escape: bool,
}

/// An object: members sorted by key, keys unique.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Object<'a> {
    members: Vec<(Str<'a>, Json<'a>)>,
}

impl<'a> Str<'a> {
    /// Text that needs no escape, as the parser finds it between quotes
    /// without a backslash (JSON allows no raw control characters there).
    pub(crate) fn plain(text: &'a str) -> Str<'a> {
        Str {
            text: Cow::Borrowed(text),
            escape: false,
        }
    }

    /// Any text; escapes are found once here, not at every write.
    pub(crate) fn new(text: impl Into<Cow<'a, str>>) -> Str<'a> {
        let text = text.into();
        let escape = text.bytes().any(needs_escape);
        Str { text, escape }
    }

    /// The unescaped text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub(crate) fn needs_escape(&self) -> bool {
        self.escape
    }

    fn reborrow(&self) -> Str<'_> {
        Str {
            text: Cow::Borrowed(&self.text),
            escape: self.escape,
        }
    }

    fn into_owned(self) -> Str<'static> {
        Str {
            text: Cow::Owned(self.text.into_owned()),
            escape: self.escape,
        }
    }
}

/// Whether a byte must be escaped inside a JSON string.
pub(crate) fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

impl<'a> Json<'a> {
    /// Takes the value out, leaving `null`.
    pub fn take(&mut self) -> Json<'a> {
        std::mem::replace(self, Json::Null)
    }

    /// A copy that borrows every string and number from `self`: copying a
    /// compiled default into a body costs no string allocation.
    pub fn reborrow(&self) -> Json<'_> {
        match self {
            Json::Null => Json::Null,
            Json::Bool(b) => Json::Bool(*b),
            Json::Number(n) => Json::Number(Cow::Borrowed(n)),
            Json::String(s) => Json::String(s.reborrow()),
            Json::Array(items) => Json::Array(items.iter().map(Json::reborrow).collect()),
            Json::Object(o) => Json::Object(Object {
                members: o
                    .members
                    .iter()
                    .map(|(k, v)| (k.reborrow(), v.reborrow()))
                    .collect(),
            }),
        }
    }

    /// A copy that borrows nothing, to outlive the body (the stash of a
    /// `remove` kept for the response).
    pub fn into_owned(self) -> Json<'static> {
        match self {
            Json::Null => Json::Null,
            Json::Bool(b) => Json::Bool(b),
            Json::Number(n) => Json::Number(Cow::Owned(n.into_owned())),
            Json::String(s) => Json::String(s.into_owned()),
            Json::Array(items) => Json::Array(items.into_iter().map(Json::into_owned).collect()),
            Json::Object(o) => Json::Object(Object {
                members: o
                    .members
                    .into_iter()
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect(),
            }),
        }
    }

    /// The object, if this is one.
    pub fn as_object(&self) -> Option<&Object<'a>> {
        match self {
            Json::Object(o) => Some(o),
            _ => None,
        }
    }

    /// The object, mutably, if this is one.
    pub fn as_object_mut(&mut self) -> Option<&mut Object<'a>> {
        match self {
            Json::Object(o) => Some(o),
            _ => None,
        }
    }

    /// The member `key` of an object; `None` for other values.
    pub fn get(&self, key: &str) -> Option<&Json<'a>> {
        self.as_object()?.get(key)
    }

    /// Converts a serde_json value (a configured default).
    pub fn from_value(v: &serde_json::Value) -> Json<'static> {
        use serde_json::Value;
        match v {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            // Under `arbitrary_precision` this is the number's own text.
            Value::Number(n) => Json::Number(Cow::Owned(n.to_string())),
            Value::String(s) => Json::String(Str::new(s.clone())),
            Value::Array(items) => Json::Array(items.iter().map(Json::from_value).collect()),
            Value::Object(map) => {
                let mut o = Object::default();
                for (k, v) in map {
                    o.insert(Str::new(k.clone()), Json::from_value(v));
                }
                Json::Object(o)
            }
        }
    }
}

impl<'a> Object<'a> {
    /// Builds an object from members sorted by key and unique; `Err` holds
    /// the first repeated key when there is one. Sorts when needed.
    pub(crate) fn from_members(
        mut members: Vec<(Str<'a>, Json<'a>)>,
    ) -> Result<Object<'a>, Str<'a>> {
        let strictly_sorted =
            |m: &[(Str<'a>, Json<'a>)]| m.windows(2).all(|w| w[0].0.as_str() < w[1].0.as_str());
        if !strictly_sorted(&members) {
            // Stable, and insertion sort for the few keys real objects have.
            members.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
            if let Some(w) = members
                .windows(2)
                .find(|w| w[0].0.as_str() == w[1].0.as_str())
            {
                return Err(w[1].0.clone());
            }
        }
        Ok(Object { members })
    }

    /// The index of `key`, or where it would go.
    fn find(&self, key: &str) -> Result<usize, usize> {
        if self.members.len() <= 8 {
            // Real objects are small: comparing for equality (lengths
            // first) beats a binary search of three-way comparisons.
            match self.members.iter().position(|(k, _)| k.as_str() == key) {
                Some(i) => Ok(i),
                None => Err(self.members.partition_point(|(k, _)| k.as_str() < key)),
            }
        } else {
            self.members.binary_search_by(|(k, _)| k.as_str().cmp(key))
        }
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether there are no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The members, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Json<'a>)> {
        self.members.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub(crate) fn members(&self) -> &[(Str<'a>, Json<'a>)] {
        &self.members
    }

    /// Whether `key` is a member.
    pub fn contains_key(&self, key: &str) -> bool {
        self.find(key).is_ok()
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Json<'a>> {
        self.find(key).ok().map(|i| &self.members[i].1)
    }

    /// The value of `key`, mutably.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Json<'a>> {
        self.find(key).ok().map(|i| &mut self.members[i].1)
    }

    /// Sets `key`; returns the value it replaced.
    pub fn insert(&mut self, key: Str<'a>, value: Json<'a>) -> Option<Json<'a>> {
        match self.find(key.as_str()) {
            Ok(i) => Some(std::mem::replace(&mut self.members[i].1, value)),
            Err(i) => {
                self.members.insert(i, (key, value));
                None
            }
        }
    }

    /// Removes `key`; returns its value.
    pub fn remove(&mut self, key: &str) -> Option<Json<'a>> {
        self.find(key).ok().map(|i| self.members.remove(i).1)
    }

    /// The value of `key`, inserting `make()` first when it is absent.
    pub fn get_or_insert_with(
        &mut self,
        key: Str<'a>,
        make: impl FnOnce() -> Json<'a>,
    ) -> &mut Json<'a> {
        let i = match self.find(key.as_str()) {
            Ok(i) => i,
            Err(i) => {
                self.members.insert(i, (key, make()));
                i
            }
        };
        &mut self.members[i].1
    }

    /// An object of one member.
    pub fn single(key: Str<'a>, value: Json<'a>) -> Object<'a> {
        Object {
            members: vec![(key, value)],
        }
    }
}

impl PartialOrd for Str<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Str<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> Str<'_> {
        Str::new(k)
    }

    #[test]
    fn objects_stay_sorted_and_unique() {
        let mut o = Object::default();
        for k in ["b", "a", "c", "a"] {
            o.insert(key(k), Json::Null);
        }
        let keys: Vec<&str> = o.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["a", "b", "c"]);
        assert_eq!(o.remove("b"), Some(Json::Null));
        assert!(!o.contains_key("b"));
        o.get_or_insert_with(key("0"), || Json::Bool(true));
        assert_eq!(o.get("0"), Some(&Json::Bool(true)));
        assert_eq!(o.len(), 3);
    }

    #[test]
    fn from_members_sorts_and_finds_repeats() {
        let m = |ks: &[&'static str]| -> Vec<(Str<'static>, Json<'static>)> {
            ks.iter().map(|k| (Str::new(*k), Json::Null)).collect()
        };
        let o = Object::from_members(m(&["b", "a"])).unwrap();
        assert_eq!(o.iter().map(|(k, _)| k).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(
            Object::from_members(m(&["b", "a", "b"]))
                .unwrap_err()
                .as_str(),
            "b"
        );
        assert!(Object::from_members(m(&["a", "a"])).is_err());
    }

    #[test]
    fn escapes_are_found_once() {
        assert!(!Str::new("plain é").needs_escape());
        assert!(Str::new("a\"b").needs_escape());
        assert!(Str::new("a\nb").needs_escape());
        assert!(Str::new("a\\b").needs_escape());
    }
}
