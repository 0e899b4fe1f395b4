//! JSON pointers as the translation table writes them: RFC 6901 (`/a/b`,
//! `~0` for `~`, `~1` for `/`, `""` for the whole document) plus our `*`
//! segment, which stands for every element of an array. Parsed once when the
//! table compiles; walking a body allocates nothing unless a wildcard needs
//! its element index recorded.
//!
//! A segment that is a canonical decimal (`0`, `12`, not `01`) also indexes
//! arrays, as RFC 6901 says. A literal key `*` cannot be addressed: no API we
//! translate has one, and keeping `*` unescaped reads better in config.

use std::fmt;

use super::value::{Json, Key, Node, NodeId};

/// One pointer segment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Seg {
    /// An object key, or an array index when `index` is set.
    Key {
        /// The unescaped key.
        name: Key,
        /// `name` as an array index, when it is one.
        index: Option<usize>,
    },
    /// `*`: every element of an array.
    Any,
}

impl Seg {
    pub(crate) fn key(name: &str) -> Seg {
        let canonical = !name.is_empty()
            && name.bytes().all(|b| b.is_ascii_digit())
            && (name == "0" || !name.starts_with('0'));
        let index = if canonical { name.parse().ok() } else { None };
        Seg::Key {
            name: name.into(),
            index,
        }
    }

    /// The key, prepared for lookups.
    pub(crate) fn as_key(&self) -> Option<&Key> {
        match self {
            Seg::Key { name, .. } => Some(name),
            Seg::Any => None,
        }
    }

    pub(crate) fn name(&self) -> Option<&str> {
        match self {
            Seg::Key { name, .. } => Some(name.as_str()),
            Seg::Any => None,
        }
    }

    /// Whether two segments can address the same place.
    pub(crate) fn may_equal(&self, other: &Seg) -> bool {
        match (self, other) {
            (Seg::Any, Seg::Any) => true,
            (Seg::Any, Seg::Key { index, .. }) | (Seg::Key { index, .. }, Seg::Any) => {
                index.is_some()
            }
            (Seg::Key { name: a, .. }, Seg::Key { name: b, .. }) => a == b,
        }
    }
}

/// A parsed pointer, possibly with `*` segments.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(crate) struct Pointer {
    pub(crate) segs: Box<[Seg]>,
}

impl Pointer {
    /// Parses `""`, `/a/b`, `/guests/*/name`. The reason is for a config error.
    pub(crate) fn parse(text: &str) -> Result<Pointer, String> {
        if text.is_empty() {
            return Ok(Pointer::default());
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!(
                "{text:?} is not a JSON pointer: it must be \"\" or start with /"
            ));
        };
        let mut segs = Vec::new();
        for raw in rest.split('/') {
            if raw == "*" {
                segs.push(Seg::Any);
                continue;
            }
            let mut name = String::with_capacity(raw.len());
            let mut chars = raw.chars();
            while let Some(c) = chars.next() {
                if c == '~' {
                    match chars.next() {
                        Some('0') => name.push('~'),
                        Some('1') => name.push('/'),
                        _ => {
                            return Err(format!(
                                "{text:?} has a ~ not followed by 0 or 1 (write ~0 for ~, ~1 for /)"
                            ));
                        }
                    }
                } else {
                    name.push(c);
                }
            }
            segs.push(Seg::key(&name));
        }
        Ok(Pointer { segs: segs.into() })
    }

    /// The pointer for a message, `the whole body` for `""`.
    pub(crate) fn describe(&self) -> String {
        if self.is_root() {
            "the whole body".into()
        } else {
            self.to_string()
        }
    }

    pub(crate) fn is_root(&self) -> bool {
        self.segs.is_empty()
    }

    /// The pointer without its last segment, and that segment.
    pub(crate) fn split_last(&self) -> Option<(Pointer, &Seg)> {
        let (last, parent) = self.segs.split_last()?;
        Some((
            Pointer {
                segs: parent.into(),
            },
            last,
        ))
    }

    /// Whether `self` is `other` or lies under it (segment-wise, `*` meeting
    /// an index counts as the same place).
    pub(crate) fn within(&self, other: &Pointer) -> bool {
        other.segs.len() <= self.segs.len()
            && other
                .segs
                .iter()
                .zip(self.segs.iter())
                .all(|(a, b)| a.may_equal(b))
    }

    /// The concrete pointer for one match: wildcards replaced by `binds`.
    pub(crate) fn concrete(&self, binds: &[usize]) -> String {
        render(&self.segs, binds)
    }
}

impl fmt::Display for Pointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for seg in self.segs.iter() {
            f.write_str("/")?;
            match seg {
                Seg::Any => f.write_str("*")?,
                Seg::Key { name, .. } => f.write_str(&escape(name))?,
            }
        }
        Ok(())
    }
}

fn escape(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

/// Renders `segs` with wildcards replaced by `binds` in order, and then the
/// `tail` segments.
pub(crate) fn render(segs: &[Seg], binds: &[usize]) -> String {
    let mut out = String::new();
    let mut binds = binds.iter();
    for seg in segs {
        out.push('/');
        match seg {
            Seg::Any => match binds.next() {
                Some(i) => out.push_str(&i.to_string()),
                None => out.push('*'),
            },
            Seg::Key { name, .. } => out.push_str(&escape(name)),
        }
    }
    out
}

/// Joins a concrete base pointer and a relative wildcard-free tail.
pub(crate) fn render_under(base: &Pointer, binds: &[usize], tail: &[Seg]) -> String {
    let mut out = base.concrete(binds);
    out.push_str(&render(tail, &[]));
    out
}

/// The child of node `id` at one literal segment.
#[inline]
pub(crate) fn child(doc: &Json<'_>, id: NodeId, seg: &Seg) -> Option<NodeId> {
    match (doc.node(id), seg) {
        (Node::Object(_), Seg::Key { name, .. }) => doc.get_key(id, name),
        (Node::Array(_), Seg::Key { index: Some(i), .. }) => doc.items(id).get(*i).copied(),
        _ => None,
    }
}

/// The node at a wildcard-free path relative to `id`.
pub(crate) fn get(doc: &Json<'_>, mut id: NodeId, segs: &[Seg]) -> Option<NodeId> {
    for seg in segs {
        id = child(doc, id, seg)?;
    }
    Some(id)
}

/// Calls `f` with every node `segs` matches under `id` and the array
/// indexes its wildcards took, depth-first in document order. Paths that do
/// not exist, or meet a non-array at a `*`, match nothing. `f` may change
/// the subtree it is given, not the containers above it.
pub(crate) fn for_each<'a, E, F>(
    doc: &mut Json<'a>,
    id: NodeId,
    segs: &[Seg],
    binds: &mut Vec<usize>,
    f: &mut F,
) -> Result<(), E>
where
    F: FnMut(&mut Json<'a>, NodeId, &[usize]) -> Result<(), E>,
{
    let Some((first, rest)) = segs.split_first() else {
        return f(doc, id, binds);
    };
    match first {
        Seg::Any if rest.is_empty() => {
            // The commonest base (`/*`, `/items/*`): the elements
            // themselves, without a level of recursion each.
            binds.push(0);
            let mut r = Ok(());
            for i in 0..doc.items(id).len() {
                let item = doc.items(id)[i];
                *binds.last_mut().expect("pushed") = i;
                r = f(doc, item, binds);
                if r.is_err() {
                    break;
                }
            }
            binds.pop();
            r
        }
        Seg::Any => {
            // By index: `f` may grow the document's vectors, never this
            // array's items.
            for i in 0..doc.items(id).len() {
                let item = doc.items(id)[i];
                binds.push(i);
                let r = for_each(doc, item, rest, binds, f);
                binds.pop();
                r?;
            }
            Ok(())
        }
        seg @ Seg::Key { .. } => match child(doc, id, seg) {
            Some(c) => for_each(doc, c, rest, binds, f),
            None => Ok(()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::json::write;
    use crate::translate::{Limits, parse_json};

    #[test]
    fn parse_cases() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("root", "", Some("")),
            ("plain", "/a/b", Some("/a/b")),
            ("wildcard", "/guests/*/name", Some("/guests/*/name")),
            ("escapes", "/a~1b/c~0d", Some("/a~1b/c~0d")),
            ("empty key", "/", Some("/")),
            ("no slash", "a/b", None),
            ("bad escape", "/a~2", None),
            ("dangling tilde", "/a~", None),
        ];
        for (name, text, want) in cases {
            let got = Pointer::parse(text).ok().map(|p| p.to_string());
            assert_eq!(got.as_deref(), *want, "{name}");
        }
    }

    #[test]
    fn index_segments_are_canonical_decimals() {
        let cases = [("0", Some(0)), ("12", Some(12)), ("01", None), ("x", None)];
        for (text, want) in cases {
            match Seg::key(text) {
                Seg::Key { index, .. } => assert_eq!(index, want, "{text}"),
                Seg::Any => panic!("{text} is a key"),
            }
        }
    }

    #[test]
    fn wildcard_visits_every_element_with_its_index() {
        let text = br#"{"guests": [{"n": 1}, {"n": 2}, "not an object"], "x": 1}"#;
        let mut body = parse_json(text, Limits::default()).unwrap();
        let p = Pointer::parse("/guests/*/n").unwrap();
        let mut seen = Vec::new();
        let root = body.root();
        for_each::<(), _>(
            &mut body,
            root,
            &p.segs,
            &mut Vec::new(),
            &mut |doc, v, binds| {
                let mut text = Vec::new();
                write(&mut text, doc, v);
                seen.push((bytes::Bytes::from(text), p.concrete(binds)));
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(
            seen,
            vec![
                (bytes::Bytes::from("1"), "/guests/0/n".to_string()),
                (bytes::Bytes::from("2"), "/guests/1/n".to_string())
            ]
        );
    }

    #[test]
    fn within_treats_wildcard_as_any_index() {
        let p = |s| Pointer::parse(s).unwrap();
        assert!(p("/a/b").within(&p("/a")));
        assert!(p("/a").within(&p("/a")));
        assert!(!p("/a").within(&p("/a/b")));
        assert!(p("/g/3/n").within(&p("/g/*")));
        assert!(!p("/g/x/n").within(&p("/g/*")));
    }
}
