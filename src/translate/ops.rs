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

use super::value::{Json, Key, Member, Node, NodeId};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

use super::TranslateError;
use super::doc::{Direction, Responses};
use super::path::PathPattern;
use super::pointer::{self, Pointer, Seg};

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
    /// The segments of [`anchor`], copied out of `kind` once so
    /// that a walk does not match on the kind to find them at every
    /// element.
    segs: Box<[Seg]>,
    /// Length of [`Change::base`], worked out once.
    cut: usize,
    /// A rename's keys when it has [`flatten`]'s shape, by direction
    /// (`Dir::Up`, `Dir::Down`): checked once here, not at every element.
    flat: [Option<Flat>; 2],
}

/// The keys of a rename out of a nested object into its parent, one way:
/// `outer/inner` becomes `to`.
#[derive(Debug, Clone)]
struct Flat {
    outer: Key,
    inner: Key,
    to: Key,
    /// Whether `outer` sorts before `to`: the later one is looked up
    /// among the members after the earlier one.
    outer_first: bool,
}

impl Flat {
    fn of(src: &[Seg], dst: &[Seg]) -> Option<Flat> {
        match (src, dst) {
            // `/a/b` -> `/a` moves onto its own parent: the general walk.
            ([outer, inner], [to]) if outer != to => Some(Flat {
                outer: outer.as_key()?.clone(),
                inner: inner.as_key()?.clone(),
                to: to.as_key()?.clone(),
                outer_first: outer.as_key()?.as_bytes() < to.as_key()?.as_bytes(),
            }),
            _ => None,
        }
    }
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
        key: Key,
        default: Json<'static>,
    },
    /// Removes `parent/key` on upgrade; restores it on downgrade.
    Remove {
        parent: Pointer,
        key: Key,
        default: Option<Json<'static>>,
        from_request: bool,
    },
    /// Maps string values at `at`.
    Map {
        at: Pointer,
        up: ValueMap,
        down: ValueMap,
    },
    /// Upgrade wraps the value at `at` as `{key: value}` (`unwrap: false`) or
    /// unwraps it (`unwrap: true`).
    Wrap { at: Pointer, key: Key, unwrap: bool },
    /// Renames a header.
    RenameHeader { from: HeaderName, to: HeaderName },
    /// Rewrites the request path (and response `Location`s back).
    RewritePath { from: PathPattern, to: PathPattern },
    /// Maps a response status.
    MapStatus { from: StatusCode, to: StatusCode },
}

/// The values of a `map` change, one way: sorted by the value they replace.
#[derive(Debug, Clone, Default)]
pub(crate) struct ValueMap {
    /// The new value as a [`Key`]: its escaping worked out once.
    pairs: Box<[(Box<str>, Key)]>,
}

impl ValueMap {
    /// What `from` becomes, if it is mapped.
    pub(crate) fn get(&self, from: &[u8]) -> Option<&Key> {
        if self.pairs.len() <= 8 {
            // A map names a few enum values: equality (lengths first) beats
            // hashing the body's string or a binary search.
            self.pairs
                .iter()
                .find(|(k, _)| k.as_bytes() == from)
                .map(|(_, v)| v)
        } else {
            let i = self
                .pairs
                .binary_search_by(|(k, _)| k.as_bytes().cmp(from))
                .ok()?;
            Some(&self.pairs[i].1)
        }
    }
}

impl FromIterator<(Box<str>, Box<str>)> for ValueMap {
    fn from_iter<I: IntoIterator<Item = (Box<str>, Box<str>)>>(iter: I) -> Self {
        let mut pairs: Vec<(Box<str>, Key)> = iter
            .into_iter()
            .map(|(from, to)| (from, Key::new(&to)))
            .collect();
        pairs.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        pairs.dedup_by(|a, b| a.0 == b.0);
        ValueMap {
            pairs: pairs.into(),
        }
    }
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
    Record(&'a mut Stash),
    /// Response leg: restore from what the request recorded.
    Restore(&'a Stash),
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

    /// The wildcard part of the change's body pointer: its segments up to
    /// and including the last `*` (empty without one). A plan runs the
    /// consecutive changes that share it in one walk, each array element
    /// getting all of them in turn (see `Plan::run_body`).
    #[inline]
    pub(crate) fn base(&self) -> &[Seg] {
        &self.segs[..self.cut]
    }

    /// A compiled change; works out its base and the shapes with a path
    /// of their own.
    pub(crate) fn new(id: ChangeId, scope: Scope, kind: Kind) -> Change {
        let segs: Box<[Seg]> = anchor(&kind).into();
        let cut = segs
            .iter()
            .rposition(|s| *s == Seg::Any)
            .map_or(0, |i| i + 1);
        let flat = match &kind {
            Kind::Rename { from, to, .. } => [Flat::of(from, to), Flat::of(to, from)],
            Kind::Add { .. }
            | Kind::Remove { .. }
            | Kind::Map { .. }
            | Kind::Wrap { .. }
            | Kind::RenameHeader { .. }
            | Kind::RewritePath { .. }
            | Kind::MapStatus { .. } => [None, None],
        };
        Change {
            id,
            scope,
            kind,
            segs,
            cut,
            flat,
        }
    }

    /// Runs a body change under `elem`, one node its [`Change::base`]
    /// matched with wildcard indexes `b` (the whole body when the base is
    /// empty). Leaves the body partly changed on error; `Plan` owns the
    /// body by value, so such a body is dropped, never sent. Keys and values
    /// the change writes borrow from the change itself. `step` is the
    /// change's place in its plan, the stash's key.
    ///
    /// In line into the walk: the commonest shapes (a map, a flattening
    /// rename, a key added or dropped) run here; the rest out of line in
    /// [`Change::apply_rest`], so that the per-element call stays cheap.
    #[inline(always)]
    pub(crate) fn apply_at<'a>(
        &'a self,
        dir: Dir,
        doc: &mut Json<'a>,
        elem: NodeId,
        b: &[usize],
        step: u32,
        stash: &mut StashUse<'_>,
    ) -> Result<(), TranslateError> {
        let id = match &self.segs[self.cut..] {
            [] => elem,
            // One key under an object (`/*/status`): the lookup in line.
            [seg] => match (doc.node(elem), seg) {
                (Node::Object(_), Seg::Key { name, .. }) => match doc.get_key(elem, name) {
                    Some(id) => id,
                    None => return Ok(()),
                },
                _ => match pointer::child(doc, elem, seg) {
                    Some(id) => id,
                    None => return Ok(()),
                },
            },
            tail => match pointer::get(doc, elem, tail) {
                Some(id) => id,
                None => return Ok(()),
            },
        };
        match &self.kind {
            Kind::Map { up, down, .. } => {
                map_string(doc, id, up, down, dir);
                Ok(())
            }
            Kind::Rename { .. } => {
                let flat = match dir {
                    Dir::Up => &self.flat[0],
                    Dir::Down => &self.flat[1],
                };
                if let Some(f) = flat
                    && flatten(doc, id, f)
                {
                    return Ok(());
                }
                self.apply_rest(dir, doc, id, b, step, stash)
            }
            Kind::Add { key, .. } if dir == Dir::Down => {
                if let Node::Object(_) = doc.node(id)
                    && let Ok(i) = doc.find_key(id, key)
                {
                    doc.remove_at(id, i);
                }
                Ok(())
            }
            Kind::Add { .. }
            | Kind::Remove { .. }
            | Kind::Wrap { .. }
            | Kind::RenameHeader { .. }
            | Kind::RewritePath { .. }
            | Kind::MapStatus { .. } => self.apply_rest(dir, doc, id, b, step, stash),
        }
    }

    /// [`Change::apply_at`] on the node `id` its pointer reached, for
    /// every shape (the common ones too, though `apply_at` runs those).
    #[inline(never)]
    fn apply_rest<'a>(
        &'a self,
        dir: Dir,
        doc: &mut Json<'a>,
        id: NodeId,
        b: &[usize],
        step: u32,
        stash: &mut StashUse<'_>,
    ) -> Result<(), TranslateError> {
        match &self.kind {
            Kind::Rename { base, from, to } => {
                let (src, dst) = match dir {
                    Dir::Up => (from, to),
                    Dir::Down => (to, from),
                };
                move_value(doc, id, src, dst)
                    .map_err(|(tail, kind)| self.fail(pointer::render_under(base, b, tail), kind))
            }
            Kind::Add { key, default, .. } => {
                if let Node::Object(_) = doc.node(id) {
                    match (dir, doc.find_key(id, key)) {
                        (Dir::Up, Err(i)) => {
                            let value = doc.borrow_from(default, default.root());
                            doc.insert_at(id, i, Member::keyed(key, value));
                        }
                        (Dir::Down, Ok(i)) => {
                            doc.remove_at(id, i);
                        }
                        (Dir::Up, Ok(_)) | (Dir::Down, Err(_)) => {}
                    }
                }
                Ok(())
            }
            Kind::Remove {
                key,
                default,
                from_request,
                ..
            } => {
                let Node::Object(_) = doc.node(id) else {
                    return Ok(());
                };
                match dir {
                    Dir::Up => {
                        if let Some(old) = doc.remove_key(id, key)
                            && *from_request
                            && let StashUse::Record(stash) = stash
                        {
                            stash.insert((step, b.into()), doc.to_owned_at(old));
                        }
                    }
                    Dir::Down => {
                        let Err(i) = doc.find_key(id, key) else {
                            return Ok(());
                        };
                        let kept = match stash {
                            StashUse::Restore(stash) if *from_request => {
                                stash.get(&(step, Box::<[usize]>::from(b)))
                            }
                            StashUse::Restore(..) | StashUse::Record(..) => None,
                        };
                        // The stash outlives only the exchange, so its value
                        // is copied; a default borrows from the change.
                        let value = match (kept, default) {
                            (Some(v), _) => Some(doc.copy_from(v, v.root())),
                            (None, Some(d)) => Some(doc.borrow_from(d, d.root())),
                            (None, None) => None,
                        };
                        if let Some(value) = value {
                            doc.insert_at(id, i, Member::keyed(key, value));
                        }
                    }
                }
                Ok(())
            }
            Kind::Map { up, down, .. } => {
                map_string(doc, id, up, down, dir);
                Ok(())
            }
            Kind::Wrap { at, key, unwrap } => {
                let wrapping = (dir == Dir::Up) != *unwrap;
                if wrapping {
                    // In place: the wrapped value moves to a new node and
                    // `id`, which its parent refers to, becomes the wrapper.
                    let node = doc.node(id);
                    let inner = doc.push(node);
                    let wrapper = doc.push_members(&[Member::keyed(key, inner)]);
                    doc.set(id, Node::Object(wrapper));
                    return Ok(());
                }
                let Node::Object(span) = doc.node(id) else {
                    return Ok(());
                };
                let Ok(i) = doc.find_key(id, key) else {
                    return Ok(());
                };
                if span.len() > 1 {
                    return Err(self.fail(at.concrete(b), Fail::ExtraKeys));
                }
                let inner = doc.node(doc.member_value(id, i));
                doc.set(id, inner);
                Ok(())
            }
            Kind::RenameHeader { .. } | Kind::RewritePath { .. } | Kind::MapStatus { .. } => Ok(()),
        }
    }

    /// Runs a header change on one message's headers.
    pub(crate) fn apply_headers(&self, dir: Dir, headers: &mut HeaderMap) {
        if let Kind::RenameHeader { from, to } = &self.kind {
            let (src, dst) = match dir {
                Dir::Up => (from, to),
                Dir::Down => (to, from),
            };
            // Absent is the common case: `entry` would reserve room in the
            // map (an allocation on an empty one) to say so.
            if !headers.contains_key(src) {
                return;
            }
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

/// The pointer whose node a body change works on: a rename's common base,
/// the parent of an added or removed key, the mapped or wrapped value.
fn anchor(kind: &Kind) -> &[Seg] {
    match kind {
        Kind::Rename { base, .. } => &base.segs,
        Kind::Add { parent, .. } | Kind::Remove { parent, .. } => &parent.segs,
        Kind::Map { at, .. } | Kind::Wrap { at, .. } => &at.segs,
        Kind::RenameHeader { .. } | Kind::RewritePath { .. } | Kind::MapStatus { .. } => &[],
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

/// Moves `container/src` to `container/dst` (both wildcard-free), making
/// missing objects on the way to `dst` and pruning objects the move left
/// empty on the way to `src`. Errors name the tail that failed.
///
/// Each key on either path is looked up about once: the destination is
/// probed (read only), the source taken and pruned in one descent, and the
/// destination walked again to insert (the take may have pruned part of it).
fn move_value<'a, 's>(
    doc: &mut Json<'a>,
    container: NodeId,
    src: &'s [Seg],
    dst: &'a [Seg],
) -> Result<(), (&'s [Seg], Fail)>
where
    'a: 's,
{
    // Check the whole destination before taking anything: a failure then
    // reports the input as it was, not our own half-done move. Absent is
    // never an error, so a failure counts only when there is a source.
    let free = match probe(doc, container, dst) {
        Ok(free) => free,
        Err(e) => {
            return match pointer::get(doc, container, src) {
                Some(_) => Err(e),
                None => Ok(()),
            };
        }
    };
    let Some((value, gone)) = take_pruning(doc, container, src) else {
        return Ok(());
    };
    let key = |seg: &'a Seg| {
        seg.as_key()
            .expect("validated: no wildcard in a rename tail")
    };
    if let ([last], Some(i)) = (dst, free) {
        // A key of `container` itself (the common rename): where the probe
        // found it free. When the take leaves a member of `container` to
        // remove, the new one takes its slot and the members between
        // shift by one: no removal and insertion, each moving the rest.
        let member = Member::keyed(key(last), value);
        match gone {
            Some(j) => doc.replace_at(container, j, i, member),
            None => doc.insert_at(container, i, member),
        }
        return Ok(());
    }
    if let Some(j) = gone {
        doc.remove_at(container, j);
    }
    let (last, parents) = dst.split_last().expect("validated non-empty");
    let mut obj = container;
    for (k, seg) in parents.iter().enumerate() {
        match doc.find_key(obj, key(seg)) {
            Ok(i) => obj = doc.member_value(obj, i),
            Err(i) => {
                // The rest of the path is new: build it inside out.
                let mut v = value;
                for seg in dst[k + 1..].iter().rev() {
                    v = doc.single(Member::keyed(key(seg), v));
                }
                doc.insert_at(obj, i, Member::keyed(key(seg), v));
                return Ok(());
            }
        }
    }
    let i = doc
        .find_key(obj, key(last))
        .expect_err("probed: the destination is free");
    doc.insert_at(obj, i, Member::keyed(key(last), value));
    Ok(())
}

/// [`move_value`] for its most common shape, a field out of a nested
/// object into its parent (`/client/name` -> `/client_name`), when the
/// field is there and its new key is free: the same lookups and the same
/// result, without the general walk's bookkeeping. Returns whether it
/// moved the field; when not, it changed nothing and `move_value` decides
/// (absent field, collision, a non-object on the way).
#[inline(always)]
fn flatten<'a>(doc: &mut Json<'a>, container: NodeId, f: &'a Flat) -> bool {
    let (outer, inner, to) = (&f.outer, &f.inner, &f.to);
    if !matches!(doc.node(container), Node::Object(_)) {
        return false;
    }
    // The two keys of `container` in one pass over its sorted members: the
    // later one is looked for after the earlier one.
    let (i, at) = if f.outer_first {
        let Ok(i) = doc.find_key(container, outer) else {
            return false;
        };
        let Err(at) = doc.find_key_from(container, i + 1, to) else {
            return false;
        };
        (i, at)
    } else {
        let Err(at) = doc.find_key(container, to) else {
            return false;
        };
        let Ok(i) = doc.find_key_from(container, at, outer) else {
            return false;
        };
        (i, at)
    };
    let child = doc.member_value(container, i);
    if !matches!(doc.node(child), Node::Object(_)) {
        return false;
    }
    let Ok(j) = doc.find_key(child, inner) else {
        return false;
    };
    let member = Member::keyed(to, doc.member_value(child, j));
    if doc.members(child).len() == 1 {
        // The nested object would be left empty: it goes, and the field
        // takes its slot.
        doc.replace_at(container, i, at, member);
    } else {
        doc.remove_at(child, j);
        doc.insert_at(container, at, member);
    }
    true
}

/// Whether `dst` under `at` can be written: every existing value on the way
/// is an object and the last key is free. For a one-key `dst`, where in
/// `at` that key would go.
fn probe<'s>(
    doc: &Json<'_>,
    mut at: NodeId,
    dst: &'s [Seg],
) -> Result<Option<usize>, (&'s [Seg], Fail)> {
    for (i, seg) in dst.iter().enumerate() {
        if !matches!(doc.node(at), Node::Object(_)) {
            return Err((&dst[..i], Fail::NotAnObject));
        }
        let Some(key) = seg.as_key() else { break };
        match doc.find_key(at, key) {
            Ok(_) if i + 1 == dst.len() => return Err((dst, Fail::Collision)),
            Ok(m) => at = doc.member_value(at, m),
            Err(free) if dst.len() == 1 => return Ok(Some(free)),
            Err(_) => break,
        }
    }
    Ok(None)
}

/// Takes the value at `segs` under `id` out, and removes the objects on
/// the way that it left empty (deepest first, up to but not including
/// `id`; an array on the way stops the pruning, as it is not empty). `None`
/// when there is no such value or its parent is no object.
///
/// The member of `id` itself that has to go (the value's own, or an
/// object on the way that the take empties) is not removed here but
/// returned with the value, so that a rename can put its new member in
/// that slot. An object that loses its last member is not emptied either:
/// its parent's member goes, which detaches it.
fn take_pruning(doc: &mut Json<'_>, id: NodeId, segs: &[Seg]) -> Option<(NodeId, Option<usize>)> {
    let (first, rest) = segs.split_first()?;
    match doc.node(id) {
        Node::Object(_) => {
            let i = doc.find_key(id, first.as_key()?).ok()?;
            let child = doc.member_value(id, i);
            if rest.is_empty() {
                return Some((child, Some(i)));
            }
            let (value, gone) = take_pruning(doc, child, rest)?;
            match gone {
                // `child` is an object left empty: it goes whole.
                Some(_) if doc.members(child).len() == 1 => Some((value, Some(i))),
                Some(j) => {
                    doc.remove_at(child, j);
                    Some((value, None))
                }
                None => Some((value, None)),
            }
        }
        Node::Array(_) if !rest.is_empty() => {
            let child = pointer::child(doc, id, first)?;
            let (value, gone) = take_pruning(doc, child, rest)?;
            if let Some(j) = gone {
                doc.remove_at(child, j);
            }
            Some((value, None))
        }
        _ => None,
    }
}

/// A `map` change on the node at `id`: a listed string becomes its mapped
/// value in `dir`; anything else is left as it is.
#[inline]
fn map_string<'a>(doc: &mut Json<'a>, id: NodeId, up: &'a ValueMap, down: &'a ValueMap, dir: Dir) {
    let table = match dir {
        Dir::Up => up,
        Dir::Down => down,
    };
    if let Node::String(s) = doc.node(id)
        && let Some(new) = table.get(doc.str(&s))
    {
        doc.set(id, Node::String(new.text()));
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, Method};
    use serde_json::{Value, json};

    use crate::translate::tests::{down, two, up};
    use crate::translate::{Limits, TranslateError, parse_json, to_bytes};

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
    fn flattening_rename_in_either_key_order() {
        // A field out of a nested object into its parent, with the new key
        // sorting before the nested object's key and after it: the path of
        // its own finds both keys in one pass, and what it cannot do
        // (collision, no object, absent) is left to the general walk.
        for (from, to) in [("/x/name", "/a_name"), ("/a/name", "/z_name")] {
            let t = two(&format!(
                "[[versions.changes]]\nop = \"rename\"\nfrom = \"{from}\"\nto = \"{to}\"\n"
            ));
            let plan = t.plan(0, 1).unwrap();
            let (outer, new) = (&from[1..2], &to[1..]);
            let cases = [
                (
                    json!({outer: {"name": "N"}, "m": 1}),
                    Some(json!({new: "N", "m": 1})),
                ),
                (
                    json!({outer: {"name": "N", "k": 2}}),
                    Some(json!({new: "N", outer: {"k": 2}})),
                ),
                (json!({outer: {"name": "N"}, new: 0}), None),
                (json!({outer: 5}), Some(json!({outer: 5}))),
                (json!({outer: {"k": 2}}), Some(json!({outer: {"k": 2}}))),
                (json!({"m": 1}), Some(json!({"m": 1}))),
            ];
            for (body, want) in cases {
                let got = up(plan, Method::POST, "/x", body.clone()).map(|(v, _)| v);
                match want {
                    Some(want) => assert_eq!(got, Ok(want), "{from} -> {to}: {body}"),
                    None => assert!(
                        matches!(got, Err(TranslateError::Collision { .. })),
                        "{from} -> {to}: {body}: {got:?}"
                    ),
                }
            }
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

    /// Runs one change of v2 on a request body given as text (not through
    /// serde_json, which would rewrite escapes and numbers); returns the
    /// translated text and the exchange.
    fn up_text(change: &str, text: &str) -> String {
        let t = two(&format!("[[versions.changes]]\n{change}\n"));
        let plan = t.plan(0, 1).unwrap();
        let mut ex = plan.exchange(&Method::POST, "/x");
        let body = parse_json(text.as_bytes(), Limits::default()).unwrap();
        let out = plan
            .request(&mut ex, &mut "/x".into(), &mut HeaderMap::new(), Some(body))
            .unwrap()
            .unwrap();
        String::from_utf8(to_bytes(&out).to_vec()).unwrap()
    }

    #[test]
    fn body_text_cases() {
        let deep_in = format!("{}{{\"a\":1}}{}", "[".repeat(62), "]".repeat(62));
        let deep_out = format!("{}{{\"b\":1}}{}", "[".repeat(62), "]".repeat(62));
        let deep_change = format!(
            "op = \"rename\"\nfrom = \"{}/a\"\nto = \"{}/b\"",
            "/0".repeat(62),
            "/0".repeat(62)
        );
        // (name, change, request body as sent, upgraded body as written)
        let cases: Vec<(&str, &str, &str, &str)> = vec![
            (
                "an escaped key is the key it spells",
                "op = \"rename\"\nfrom = \"/client_name\"\nto = \"/client/name\"",
                r#"{"client\u005fname":"Ann"}"#,
                r#"{"client":{"name":"Ann"}}"#,
            ),
            (
                "an escaped value is the value it spells",
                "op = \"map\"\nat = \"/status\"\nvalues = { booked = \"confirmed\" }",
                r#"{"status":"book\u0065d","note":"a\"b\n\u00e9"}"#,
                r#"{"note":"a\"b\né","status":"confirmed"}"#,
            ),
            (
                "escapes survive a move",
                "op = \"rename\"\nfrom = \"/a\"\nto = \"/b/c\"",
                r#"{"a":{"t\u0009ab":"\ud83d\ude00\\"}}"#,
                r#"{"b":{"c":{"t\tab":"😀\\"}}}"#,
            ),
            (
                "big numbers move exactly",
                "op = \"rename\"\nfrom = \"/n\"\nto = \"/m/n\"",
                r#"{"n":[123456789012345678901234567890,-1E+400,0.10000000000000000000001]}"#,
                r#"{"m":{"n":[123456789012345678901234567890,-1E+400,0.10000000000000000000001]}}"#,
            ),
            (
                "an empty object moves and an emptied one is pruned",
                "op = \"rename\"\nfrom = \"/a/b\"\nto = \"/c\"",
                r#"{"a":{"b":{}},"z":[]}"#,
                r#"{"c":{},"z":[]}"#,
            ),
            (
                "add into empty objects next to each other",
                "op = \"add\"\nat = \"/items/*/currency\"\ndefault = \"EUR\"",
                r#"{"items":[{},{},{"currency":"CHF"},{}],"x":{}}"#,
                r#"{"items":[{"currency":"EUR"},{"currency":"EUR"},{"currency":"CHF"},{"currency":"EUR"}],"x":{}}"#,
            ),
            (
                "wrap an empty list",
                "op = \"wrap\"\nat = \"\"\nkey = \"items\"",
                "[]",
                r#"{"items":[]}"#,
            ),
            (
                "unwrap to an empty object",
                "op = \"unwrap\"\nat = \"/page\"\nkey = \"data\"",
                r#"{"page":{"data":{}}}"#,
                r#"{"page":{}}"#,
            ),
            ("deep nesting", &deep_change, &deep_in, &deep_out),
        ];
        for (name, change, text, want) in cases {
            assert_eq!(up_text(change, text), want, "{name}");
        }
    }

    #[test]
    fn flatten_cases() {
        // A field out of a nested object into its parent, the shape with a
        // path of its own (`flatten`); the general one takes over for the rest.
        let change =
            |from: &str, to: &str| format!("op = \"rename\"\nfrom = \"{from}\"\nto = \"{to}\"");
        // (name, change, request body as sent, upgraded body or error pointer)
        let cases: Vec<(&str, String, &str, Result<&str, &str>)> = vec![
            (
                "the nested object goes with its last field",
                change("/meta/created", "/created_at"),
                r#"{"id":1,"meta":{"created":5},"z":0}"#,
                Ok(r#"{"created_at":5,"id":1,"z":0}"#),
            ),
            (
                "the nested object stays with its other fields",
                change("/meta/created", "/created_at"),
                r#"{"meta":{"by":"x","created":5}}"#,
                Ok(r#"{"created_at":5,"meta":{"by":"x"}}"#),
            ),
            (
                "the new key sorts before the old one",
                change("/meta/created", "/a"),
                r#"{"b":1,"meta":{"created":5}}"#,
                Ok(r#"{"a":5,"b":1}"#),
            ),
            (
                "absent field",
                change("/meta/created", "/created_at"),
                r#"{"meta":{"by":"x"}}"#,
                Ok(r#"{"meta":{"by":"x"}}"#),
            ),
            (
                "not an object on the way",
                change("/meta/created", "/created_at"),
                r#"{"meta":"x"}"#,
                Ok(r#"{"meta":"x"}"#),
            ),
            (
                "collision",
                change("/meta/created", "/created_at"),
                r#"{"created_at":1,"meta":{"created":5}}"#,
                Err("/created_at"),
            ),
            (
                "no collision without a field",
                change("/meta/created", "/created_at"),
                r#"{"created_at":1,"meta":{}}"#,
                Ok(r#"{"created_at":1,"meta":{}}"#),
            ),
        ];
        for (name, change, text, want) in cases {
            let t = two(&format!("[[versions.changes]]\n{change}\n"));
            let plan = t.plan(0, 1).unwrap();
            let mut ex = plan.exchange(&Method::POST, "/x");
            let body = parse_json(text.as_bytes(), Limits::default()).unwrap();
            let got = plan
                .request(&mut ex, &mut "/x".into(), &mut HeaderMap::new(), Some(body))
                .map(|out| String::from_utf8(to_bytes(&out.unwrap()).to_vec()).unwrap());
            match (got, want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{name}"),
                (Err(TranslateError::Collision { pointer, .. }), Err(want)) => {
                    assert_eq!(pointer, want, "{name}")
                }
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn restored_values_keep_escapes_and_numbers() {
        let t =
            two("[[versions.changes]]\nop = \"remove\"\nat = \"/notes\"\nrestore = \"request\"\n");
        let plan = t.plan(0, 1).unwrap();
        let mut ex = plan.exchange(&Method::POST, "/x");
        let sent = String::from(r#"{"id":1,"notes":{"k\u0065y":["l\nb",1E+999,{}]}}"#);
        let body = parse_json(sent.as_bytes(), Limits::default()).unwrap();
        let up = plan
            .request(&mut ex, &mut "/x".into(), &mut HeaderMap::new(), Some(body))
            .unwrap()
            .unwrap();
        assert_eq!(to_bytes(&up), r#"{"id":1}"#);
        drop(up);
        drop(sent); // the stash borrows nothing from the request
        let answer = br#"{"id":1,"ok":true}"#;
        let body = parse_json(answer, Limits::default()).unwrap();
        let mut status = http::StatusCode::OK;
        let down = plan
            .response(&ex, &mut status, &mut HeaderMap::new(), Some(body))
            .unwrap()
            .unwrap();
        assert_eq!(
            to_bytes(&down),
            r#"{"id":1,"notes":{"key":["l\nb",1E+999,{}]},"ok":true}"#
        );
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
