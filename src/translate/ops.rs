//! Each change, compiled, and how it runs in either direction. A change is
//! written as the upgrade (older version -> newer); `Dir::Down` runs its
//! inverse. Body changes are the only fallible ones; header, path and status
//! changes cannot fail, which is what lets `Plan` commit them after the body
//! succeeded and so never leave a message half-translated.
//!
//! Absent is never an error: a change whose field is not there does nothing,
//! so the same change is safe on error bodies and on partial objects. Where
//! going on would lose or invent data (a rename onto an existing field, an
//! unwrap of an object with other keys) the change fails instead.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use super::value::{Json, Object, Str};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

use super::TranslateError;
use super::doc::{Direction, Responses};
use super::path::PathPattern;
use super::pointer::{self, Pointer, Seg, for_each_mut};

/// Which way a change runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dir {
    /// As written: older version to newer.
    Up,
    /// Inverse: newer to older.
    Down,
}

impl Dir {
    pub(crate) fn inverse(self) -> Dir {
        match self {
            Dir::Up => Dir::Down,
            Dir::Down => Dir::Up,
        }
    }
}

/// Names a change in errors and logs: `v2 changes[3]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeId {
    /// The version that declares the change.
    pub version: Arc<str>,
    /// Its position in that version's `changes`.
    pub index: usize,
}

impl fmt::Display for ChangeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} changes[{}]", self.version, self.index)
    }
}

/// Where and when a change applies.
#[derive(Debug, Clone)]
pub(crate) struct Scope {
    /// Empty = every path.
    pub(crate) paths: Box<[PathPattern]>,
    /// Empty = every method.
    pub(crate) methods: Box<[Method]>,
    pub(crate) direction: Direction,
    pub(crate) responses: Responses,
}

impl Scope {
    pub(crate) fn admits_method(&self, method: &Method) -> bool {
        self.methods.is_empty() || self.methods.contains(method)
    }

    pub(crate) fn admits(&self, method: &Method, path: &str) -> bool {
        self.admits_method(method)
            && (self.paths.is_empty() || self.paths.iter().any(|p| p.matches(path)))
    }
}

/// A compiled change.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub(crate) id: ChangeId,
    pub(crate) scope: Scope,
    pub(crate) kind: Kind,
}

/// What a change does, with everything parsed.
#[derive(Debug, Clone)]
pub(crate) enum Kind {
    /// Moves `base/from` to `base/to`; all wildcards sit in `base`.
    Rename {
        base: Pointer,
        from: Box<[Seg]>,
        to: Box<[Seg]>,
    },
    /// Sets `parent/key` to `default` on upgrade when absent.
    Add {
        parent: Pointer,
        key: Box<str>,
        default: Json<'static>,
    },
    /// Removes `parent/key` on upgrade; restores it on downgrade.
    Remove {
        parent: Pointer,
        key: Box<str>,
        default: Option<Json<'static>>,
        from_request: bool,
    },
    /// Maps string values at `at`.
    Map {
        at: Pointer,
        up: HashMap<Box<str>, Box<str>>,
        down: HashMap<Box<str>, Box<str>>,
    },
    /// Upgrade wraps the value at `at` as `{key: value}` (`unwrap: false`) or
    /// unwraps it (`unwrap: true`).
    Wrap {
        at: Pointer,
        key: Box<str>,
        unwrap: bool,
    },
    /// Renames a header.
    RenameHeader { from: HeaderName, to: HeaderName },
    /// Rewrites the request path (and response `Location`s back).
    RewritePath { from: PathPattern, to: PathPattern },
    /// Maps a response status.
    MapStatus { from: StatusCode, to: StatusCode },
}

impl Kind {
    /// Whether the change reads or writes a JSON body.
    pub(crate) fn is_body(&self) -> bool {
        match self {
            Kind::Rename { .. }
            | Kind::Add { .. }
            | Kind::Remove { .. }
            | Kind::Map { .. }
            | Kind::Wrap { .. } => true,
            Kind::RenameHeader { .. } | Kind::RewritePath { .. } | Kind::MapStatus { .. } => false,
        }
    }
}

/// Values a request upgrade removed, kept for the response downgrade
/// (`restore = "request"`): by plan step and wildcard indexes.
pub(crate) type Stash = HashMap<(u32, Box<[usize]>), Json<'static>>;

/// How a body change meets the stash.
pub(crate) enum StashUse<'a> {
    /// Request leg: record what `remove` takes away.
    Record(&'a mut Stash, u32),
    /// Response leg: restore from what the request recorded.
    Restore(&'a Stash, u32),
}

impl Change {
    fn fail(&self, pointer: String, kind: Fail) -> TranslateError {
        let change = self.id.clone();
        match kind {
            Fail::Collision => TranslateError::Collision { change, pointer },
            Fail::NotAnObject => TranslateError::NotAnObject { change, pointer },
            Fail::ExtraKeys => TranslateError::ExtraKeys { change, pointer },
        }
    }

    /// Runs a body change on `body`. Leaves `body` partly changed on error;
    /// `Plan` owns the body by value, so such a body is dropped, never sent.
    /// Keys and values the change writes borrow from the change itself.
    pub(crate) fn apply_body<'a>(
        &'a self,
        dir: Dir,
        body: &mut Json<'a>,
        mut stash: StashUse<'_>,
    ) -> Result<(), TranslateError> {
        let mut binds = Vec::new();
        match &self.kind {
            Kind::Rename { base, from, to } => {
                let (src, dst) = match dir {
                    Dir::Up => (from, to),
                    Dir::Down => (to, from),
                };
                for_each_mut(body, &base.segs, &mut binds, &mut |v, b| {
                    self.move_value(v, src, dst).map_err(|(tail, kind)| {
                        self.fail(pointer::render_under(base, b, tail), kind)
                    })
                })
            }
            Kind::Add {
                parent,
                key,
                default,
            } => for_each_mut(body, &parent.segs, &mut binds, &mut |v, _| {
                if let Json::Object(map) = v {
                    match dir {
                        Dir::Up => {
                            if !map.contains_key(key) {
                                map.insert(Str::new(&**key), default.reborrow());
                            }
                        }
                        Dir::Down => {
                            map.remove(key);
                        }
                    }
                }
                Ok::<(), TranslateError>(())
            }),
            Kind::Remove {
                parent,
                key,
                default,
                from_request,
            } => for_each_mut(body, &parent.segs, &mut binds, &mut |v, b| {
                let Json::Object(map) = v else {
                    return Ok::<(), TranslateError>(());
                };
                match dir {
                    Dir::Up => {
                        if let Some(old) = map.remove(key)
                            && *from_request
                            && let StashUse::Record(stash, step) = &mut stash
                        {
                            stash.insert((*step, b.into()), old.into_owned());
                        }
                    }
                    Dir::Down => {
                        if map.contains_key(key) {
                            return Ok(());
                        }
                        let kept = match &stash {
                            StashUse::Restore(stash, step) if *from_request => {
                                stash.get(&(*step, Box::<[usize]>::from(b)))
                            }
                            StashUse::Restore(..) | StashUse::Record(..) => None,
                        };
                        // The stash outlives only the exchange, so its value
                        // is copied; a default borrows from the change.
                        let value = match (kept, default) {
                            (Some(v), _) => Some(v.clone()),
                            (None, Some(d)) => Some(d.reborrow()),
                            (None, None) => None,
                        };
                        if let Some(value) = value {
                            map.insert(Str::new(&**key), value);
                        }
                    }
                }
                Ok(())
            }),
            Kind::Map { at, up, down } => {
                let table = match dir {
                    Dir::Up => up,
                    Dir::Down => down,
                };
                for_each_mut(body, &at.segs, &mut binds, &mut |v, _| {
                    if let Json::String(s) = v
                        && let Some(new) = table.get(s.as_str())
                    {
                        *s = Str::new(&**new);
                    }
                    Ok::<(), TranslateError>(())
                })
            }
            Kind::Wrap { at, key, unwrap } => {
                let wrapping = (dir == Dir::Up) != *unwrap;
                for_each_mut(body, &at.segs, &mut binds, &mut |v, b| {
                    if wrapping {
                        let inner = v.take();
                        *v = Json::Object(Object::single(Str::new(&**key), inner));
                        return Ok(());
                    }
                    let Json::Object(map) = v else {
                        return Ok(());
                    };
                    if !map.contains_key(key) {
                        return Ok(());
                    }
                    if map.len() > 1 {
                        return Err(self.fail(at.concrete(b), Fail::ExtraKeys));
                    }
                    let inner = map.remove(key).expect("checked above");
                    *v = inner;
                    Ok(())
                })
            }
            Kind::RenameHeader { .. } | Kind::RewritePath { .. } | Kind::MapStatus { .. } => Ok(()),
        }
    }

    /// Moves `container/src` to `container/dst` (both wildcard-free), making
    /// missing objects on the way to `dst` and pruning objects the move left
    /// empty on the way to `src`. Errors name the tail that failed.
    fn move_value<'a, 's>(
        &self,
        container: &mut Json<'a>,
        src: &'s [Seg],
        dst: &'a [Seg],
    ) -> Result<(), (&'s [Seg], Fail)>
    where
        'a: 's,
    {
        if pointer::get(container, src).is_none() {
            return Ok(());
        }
        // Check the whole destination before taking anything: a failure then
        // reports the input as it was, not our own half-done move.
        let mut probe: &Json = container;
        for (i, seg) in dst.iter().enumerate() {
            let Json::Object(map) = probe else {
                return Err((&dst[..i], Fail::NotAnObject));
            };
            match map.get(seg.name().unwrap_or_default()) {
                Some(_) if i + 1 == dst.len() => return Err((dst, Fail::Collision)),
                Some(next) => probe = next,
                None => break,
            }
        }
        let value = take_at(container, src).expect("present above");
        prune_empty(container, &src[..src.len() - 1]);
        let (last, parent_path) = dst.split_last().expect("validated non-empty");
        let mut parent = container;
        for seg in parent_path {
            let name = seg.name().expect("validated: no wildcard in a rename tail");
            let map = match parent {
                Json::Object(map) => map,
                _ => unreachable!("probed above"),
            };
            parent = map.get_or_insert_with(Str::new(name), || Json::Object(Object::default()));
        }
        match parent {
            Json::Object(map) => {
                map.insert(Str::new(last.name().expect("validated")), value);
            }
            _ => unreachable!("probed above"),
        }
        Ok(())
    }

    /// Runs a header change on one message's headers.
    pub(crate) fn apply_headers(&self, dir: Dir, headers: &mut HeaderMap) {
        if let Kind::RenameHeader { from, to } = &self.kind {
            let (src, dst) = match dir {
                Dir::Up => (from, to),
                Dir::Down => (to, from),
            };
            if let http::header::Entry::Occupied(entry) = headers.entry(src) {
                let values: Vec<HeaderValue> = entry.remove_entry_mult().1.collect();
                for v in values {
                    headers.append(dst.clone(), v);
                }
            }
        }
    }

    /// Rewrites a request path; `None` when the pattern does not match.
    pub(crate) fn rewrite(&self, dir: Dir, path: &str) -> Option<String> {
        let Kind::RewritePath { from, to } = &self.kind else {
            return None;
        };
        let (src, dst) = match dir {
            Dir::Up => (from, to),
            Dir::Down => (to, from),
        };
        src.captures(path).map(|caps| dst.render(&caps))
    }

    /// Rewrites the path part of response `Location`/`Content-Location`.
    pub(crate) fn rewrite_locations(&self, dir: Dir, headers: &mut HeaderMap) {
        for name in [http::header::LOCATION, http::header::CONTENT_LOCATION] {
            let Some(value) = headers.get(&name).and_then(|v| v.to_str().ok()) else {
                continue;
            };
            // `/path?q`, or `scheme://authority/path?q`: rewrite only the path.
            let path_start = match value.find("://") {
                Some(i) => value[i + 3..].find('/').map(|j| i + 3 + j),
                None => value.starts_with('/').then_some(0),
            };
            let Some(start) = path_start else { continue };
            let end = value[start..]
                .find(['?', '#'])
                .map_or(value.len(), |j| start + j);
            if let Some(new_path) = self.rewrite(dir, &value[start..end]) {
                let rebuilt = format!("{}{}{}", &value[..start], new_path, &value[end..]);
                if let Ok(v) = HeaderValue::from_str(&rebuilt) {
                    headers.insert(name, v);
                }
            }
        }
    }

    /// Maps a response status.
    pub(crate) fn map_status(&self, dir: Dir, status: StatusCode) -> StatusCode {
        match &self.kind {
            Kind::MapStatus { from, to } => match dir {
                Dir::Up if status == *from => *to,
                Dir::Down if status == *to => *from,
                Dir::Up | Dir::Down => status,
            },
            Kind::Rename { .. }
            | Kind::Add { .. }
            | Kind::Remove { .. }
            | Kind::Map { .. }
            | Kind::Wrap { .. }
            | Kind::RenameHeader { .. }
            | Kind::RewritePath { .. } => status,
        }
    }
}

/// Why a body change failed; becomes a `TranslateError` with the change
/// and the concrete pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fail {
    /// The destination already holds a value; moving onto it would lose one.
    Collision,
    /// A value on the way to the destination is not an object.
    NotAnObject,
    /// Unwrapping would drop the wrapper's other keys.
    ExtraKeys,
}

fn take_at<'a>(v: &mut Json<'a>, segs: &[Seg]) -> Option<Json<'a>> {
    let (last, parent) = segs.split_last()?;
    match (pointer::get_mut(v, parent)?, last) {
        (Json::Object(map), Seg::Key { name, .. }) => map.remove(name),
        _ => None,
    }
}

/// Removes objects along `path` (deepest first) that are now empty.
fn prune_empty(v: &mut Json<'_>, path: &[Seg]) {
    for depth in (1..=path.len()).rev() {
        let (last, parent) = path[..depth].split_last().expect("depth >= 1");
        let Some(Json::Object(map)) = pointer::get_mut(v, parent) else {
            return;
        };
        let name = last.name().unwrap_or_default();
        match map.get(name) {
            Some(Json::Object(child)) if child.is_empty() => {
                map.remove(name);
            }
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use http::Method;
    use serde_json::{Value, json};

    use crate::translate::TranslateError;
    use crate::translate::tests::{down, two, up};

    /// One change of v2 and a body in each version's shape: the request leg
    /// turns `v1` into `v2`, the response leg turns `v2` back into `v1`.
    const GOLDEN: &[(&str, &str, &str, &str)] = &[
        (
            "rename into a new object",
            "op = \"rename\"\nfrom = \"/client_name\"\nto = \"/client/name\"",
            r#"{"client_name": "Ann", "status": "booked"}"#,
            r#"{"client": {"name": "Ann"}, "status": "booked"}"#,
        ),
        (
            "rename into an existing object",
            "op = \"rename\"\nfrom = \"/client_name\"\nto = \"/client/name\"",
            r#"{"client_name": "Ann", "client": {"id": 1}}"#,
            r#"{"client": {"id": 1, "name": "Ann"}}"#,
        ),
        (
            "rename in every array element",
            "op = \"rename\"\nfrom = \"/guests/*/full_name\"\nto = \"/guests/*/name\"",
            r#"{"guests": [{"full_name": "A"}, {"x": 1}, "odd", {"full_name": null}]}"#,
            r#"{"guests": [{"name": "A"}, {"x": 1}, "odd", {"name": null}]}"#,
        ),
        (
            "rename out of a nested object",
            "op = \"rename\"\nfrom = \"/meta/created\"\nto = \"/created_at\"",
            r#"{"meta": {"created": 5}}"#,
            r#"{"created_at": 5}"#,
        ),
        (
            "rename of an absent field",
            "op = \"rename\"\nfrom = \"/client_name\"\nto = \"/client/name\"",
            r#"{"other": 1}"#,
            r#"{"other": 1}"#,
        ),
        (
            "rename with escapes",
            "op = \"rename\"\nfrom = \"/a~1b\"\nto = \"/c~0d\"",
            r#"{"a/b": 1}"#,
            r#"{"c~d": 1}"#,
        ),
        (
            "add a default",
            "op = \"add\"\nat = \"/currency\"\ndefault = \"EUR\"",
            r#"{"total": 100}"#,
            r#"{"total": 100, "currency": "EUR"}"#,
        ),
        (
            "add a structured default",
            "op = \"add\"\nat = \"/limits\"\ndefault = { guests = 150, tags = [\"a\"] }",
            r#"{}"#,
            r#"{"limits": {"guests": 150, "tags": ["a"]}}"#,
        ),
        (
            "add in every array element, not to missing parents",
            "op = \"add\"\nat = \"/items/*/currency\"\ndefault = \"EUR\"",
            r#"{"items": [{"n": 1}, {"n": 2}], "other": []}"#,
            r#"{"items": [{"n": 1, "currency": "EUR"}, {"n": 2, "currency": "EUR"}], "other": []}"#,
        ),
        (
            "map an enum value",
            "op = \"map\"\nat = \"/status\"\nvalues = { booked = \"confirmed\", cancelled = \"canceled\" }",
            r#"{"status": "booked"}"#,
            r#"{"status": "confirmed"}"#,
        ),
        (
            "map leaves other values",
            "op = \"map\"\nat = \"/status\"\nvalues = { booked = \"confirmed\" }",
            r#"{"status": "pending"}"#,
            r#"{"status": "pending"}"#,
        ),
        (
            "map every array element",
            "op = \"map\"\nat = \"/tags/*\"\nvalues = { vip = \"priority\" }",
            r#"{"tags": ["vip", "x", 3]}"#,
            r#"{"tags": ["priority", "x", 3]}"#,
        ),
        (
            "wrap the whole body",
            "op = \"wrap\"\nat = \"\"\nkey = \"items\"",
            r#"[1, 2]"#,
            r#"{"items": [1, 2]}"#,
        ),
        (
            "wrap a nested list",
            "op = \"wrap\"\nat = \"/weddings/*/guests\"\nkey = \"data\"",
            r#"{"weddings": [{"guests": []}, {"id": 2}]}"#,
            r#"{"weddings": [{"guests": {"data": []}}, {"id": 2}]}"#,
        ),
        (
            "unwrap",
            "op = \"unwrap\"\nat = \"\"\nkey = \"data\"",
            r#"{"data": {"id": 1}}"#,
            r#"{"id": 1}"#,
        ),
    ];

    #[test]
    fn golden_body_changes_both_ways() {
        for (name, change, v1, v2) in GOLDEN {
            let t = two(&format!("[[versions.changes]]\n{change}\n"));
            let plan = t.plan(0, 1).unwrap();
            let (v1, v2): (Value, Value) = (
                serde_json::from_str(v1).unwrap(),
                serde_json::from_str(v2).unwrap(),
            );
            let (got, ex) = up(plan, Method::POST, "/x", v1.clone()).unwrap();
            assert_eq!(got, v2, "{name}: upgrade");
            assert_eq!(down(plan, &ex, v2).unwrap(), v1, "{name}: downgrade");
        }
    }

    #[test]
    fn remove_restore_cases() {
        // (name, change, request body, upgraded, response body, downgraded)
        let cases: &[(&str, &str, Value, Value, Value, Value)] = &[
            (
                "no restore: stays absent",
                "op = \"remove\"\nat = \"/legacy\"",
                json!({"a": 1, "legacy": true}),
                json!({"a": 1}),
                json!({"a": 2}),
                json!({"a": 2}),
            ),
            (
                "restore from default",
                "op = \"remove\"\nat = \"/legacy\"\nrestore = \"default\"\ndefault = false",
                json!({"a": 1, "legacy": true}),
                json!({"a": 1}),
                json!({"a": 2}),
                json!({"a": 2, "legacy": false}),
            ),
            (
                "restore from the request",
                "op = \"remove\"\nat = \"/notes\"\nrestore = \"request\"",
                json!({"notes": "call first"}),
                json!({}),
                json!({"id": 3}),
                json!({"id": 3, "notes": "call first"}),
            ),
            (
                "restore from the request, default when it sent none",
                "op = \"remove\"\nat = \"/notes\"\nrestore = \"request\"\ndefault = \"\"",
                json!({"id": 1}),
                json!({"id": 1}),
                json!({"id": 1}),
                json!({"id": 1, "notes": ""}),
            ),
            (
                "restore from the request, per array element",
                "op = \"remove\"\nat = \"/guests/*/diet\"\nrestore = \"request\"",
                json!({"guests": [{"n": "a", "diet": "vegan"}, {"n": "b"}, {"n": "c", "diet": "none"}]}),
                json!({"guests": [{"n": "a"}, {"n": "b"}, {"n": "c"}]}),
                json!({"guests": [{"n": "a"}, {"n": "b"}, {"n": "c"}, {"n": "d"}]}),
                json!({"guests": [{"n": "a", "diet": "vegan"}, {"n": "b"}, {"n": "c", "diet": "none"}, {"n": "d"}]}),
            ),
            (
                "a value the response has is kept",
                "op = \"remove\"\nat = \"/notes\"\nrestore = \"request\"",
                json!({"notes": "old"}),
                json!({}),
                json!({"notes": "server's"}),
                json!({"notes": "server's"}),
            ),
        ];
        for (name, change, req, upgraded, resp, downgraded) in cases {
            let t = two(&format!("[[versions.changes]]\n{change}\n"));
            let plan = t.plan(0, 1).unwrap();
            let (got, ex) = up(plan, Method::POST, "/x", req.clone()).unwrap();
            assert_eq!(&got, upgraded, "{name}: upgrade");
            assert_eq!(
                &down(plan, &ex, resp.clone()).unwrap(),
                downgraded,
                "{name}: downgrade"
            );
        }
    }

    #[test]
    fn add_keeps_a_value_the_client_already_sent() {
        let t = two("[[versions.changes]]\nop = \"add\"\nat = \"/currency\"\ndefault = \"EUR\"\n");
        let (got, _) = up(
            t.plan(0, 1).unwrap(),
            Method::POST,
            "/x",
            json!({"currency": "GBP"}),
        )
        .unwrap();
        assert_eq!(got, json!({"currency": "GBP"}));
    }

    #[test]
    fn body_failure_cases() {
        let change = |version: &str| crate::translate::ChangeId {
            version: version.into(),
            index: 0,
        };
        // (name, change, request body, error)
        let cases: Vec<(&str, &str, Value, TranslateError)> = vec![
            (
                "rename onto an existing field",
                "op = \"rename\"\nfrom = \"/client_name\"\nto = \"/client/name\"",
                json!({"client_name": "A", "client": {"name": "B"}}),
                TranslateError::Collision {
                    change: change("v2"),
                    pointer: "/client/name".into(),
                },
            ),
            (
                "rename through a string",
                "op = \"rename\"\nfrom = \"/client_name\"\nto = \"/client/name\"",
                json!({"client_name": "A", "client": "B"}),
                TranslateError::NotAnObject {
                    change: change("v2"),
                    pointer: "/client".into(),
                },
            ),
            (
                "rename in the second element",
                "op = \"rename\"\nfrom = \"/g/*/a\"\nto = \"/g/*/b\"",
                json!({"g": [{"a": 1}, {"a": 1, "b": 2}]}),
                TranslateError::Collision {
                    change: change("v2"),
                    pointer: "/g/1/b".into(),
                },
            ),
            (
                "unwrap with other keys",
                "op = \"unwrap\"\nat = \"/page\"\nkey = \"items\"",
                json!({"page": {"items": [], "next": "c2"}}),
                TranslateError::ExtraKeys {
                    change: change("v2"),
                    pointer: "/page".into(),
                },
            ),
        ];
        for (name, c, body, want) in cases {
            let t = two(&format!("[[versions.changes]]\n{c}\n"));
            let got = up(t.plan(0, 1).unwrap(), Method::POST, "/x", body).map(|(v, _)| v);
            assert_eq!(got, Err(want), "{name}");
        }
    }

    #[test]
    fn unwrap_leaves_other_shapes_alone() {
        let t = two("[[versions.changes]]\nop = \"wrap\"\nat = \"\"\nkey = \"items\"\n");
        let plan = t.plan(0, 1).unwrap();
        let ex = plan.exchange(&Method::GET, "/x");
        let problem = json!({"type": "about:blank", "status": 404});
        assert_eq!(down(plan, &ex, problem.clone()).unwrap(), problem);
    }
}
