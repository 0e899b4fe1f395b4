//! The body tree the changes work on: [`Json`], a JSON document that
//! borrows from the bytes it was parsed from and from the compiled plan.
//!
//! Why not `serde_json::Value`, nor a tree of boxed nodes: with
//! `arbitrary_precision` every serde_json number is a `String` and every key
//! and string an allocation, and a tree with a vector per container still
//! spent most of a 1 KiB translation in the allocator and in moving 40-byte
//! values. Here the document is three flat vectors (nodes, object members,
//! array items), so parsing a body allocates a handful of times whatever its
//! shape, a node is a small `Copy` value, and moving a subtree (a rename, a
//! wrap) moves one index, not the subtree.
//!
//! A number is the slice of the input it was written as (never parsed, so
//! never rounded: `1E+400` comes back as `1E+400`); a string or key without
//! escapes is a slice too; text with escapes is decoded into the document's
//! own buffer, so an escaped key compares equal to its unescaped spelling.
//! Text is bytes: the body was checked to be UTF-8 once, whole, and is only
//! ever cut at ASCII delimiters.
//!
//! Lookups compare a key's first four bytes as one number (`head`, kept in
//! each member) before any byte; the keys a change looks up or writes are
//! [`Key`]s, their head and escaping worked out when the table compiles.
//!
//! Invariants:
//! * an object's members are sorted by key (bytes of the unescaped key, as
//!   serde_json's map orders them) and its keys are unique; the parser
//!   establishes both (a repeated key is an error there) and every mutation
//!   here keeps them, so a translated body is written with sorted keys;
//! * a node is reachable from the root at most once, and no two reachable
//!   containers share a span of members or items: mutating one container
//!   in place never changes another. Nodes that a change detached stay in
//!   the vectors unreachable until the document is dropped.

use std::cell::RefCell;
use std::cmp::Ordering;

/// A node's index in its document.
pub(crate) type NodeId = u32;

/// Largest body the document can index: node, member and item indexes are
/// `u32`, and changes may add nodes (defaults, wrappers) after parsing. A
/// GiB is far above any limit a route would buffer for translation.
pub(crate) const MAX_BODY_BYTES: u64 = 1 << 30;

/// Text in a document: a string, a key or a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Text<'a> {
    /// Borrowed text that needs no escape when written (the common case:
    /// a string the parser found between quotes without a backslash).
    Plain(&'a [u8]),
    /// Borrowed text holding `"`, `\` or a control character.
    Escape(&'a [u8]),
    /// Decoded text in the document's own buffer (`start..start + len`).
    /// Written through the escaping path, which copies plain runs as they are.
    Own { start: u32, len: u32 },
}

impl<'a> Text<'a> {
    /// Borrowed text, with the escape check done once here, not at every write.
    pub(crate) fn new(text: &'a [u8]) -> Text<'a> {
        if text.iter().any(|&b| needs_escape(b)) {
            Text::Escape(text)
        } else {
            Text::Plain(text)
        }
    }
}

/// An object key a change looks up or writes, prepared when the table
/// compiles: its [`head`] and whether it needs escaping are worked out
/// once, not at every lookup and insert. Reads as the `str` it names.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    name: Box<str>,
    head: u32,
    escape: bool,
}

impl Key {
    pub(crate) fn new(name: &str) -> Key {
        Key {
            head: head(name.as_bytes()),
            escape: name.bytes().any(needs_escape),
            name: name.into(),
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.name
    }

    /// The key as document text.
    #[inline]
    pub(crate) fn text(&self) -> Text<'_> {
        if self.escape {
            Text::Escape(self.name.as_bytes())
        } else {
            Text::Plain(self.name.as_bytes())
        }
    }
}

impl From<&str> for Key {
    fn from(name: &str) -> Key {
        Key::new(name)
    }
}

impl std::ops::Deref for Key {
    type Target = str;
    fn deref(&self) -> &str {
        &self.name
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.name, f)
    }
}

/// A run of members or items: `len` used of `cap` reserved from `start`.
/// The spare capacity lets inserts into a grown object stay in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    start: u32,
    len: u32,
    cap: u32,
}

impl Span {
    fn range(self) -> std::ops::Range<usize> {
        self.start as usize..(self.start + self.len) as usize
    }

    pub(crate) fn len(self) -> usize {
        self.len as usize
    }
}

/// One value. Containers refer to their children by index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Node<'a> {
    Null,
    Bool(bool),
    /// A number, as the text it was written in (valid JSON number syntax).
    Number(Text<'a>),
    String(Text<'a>),
    /// Items: a span of [`Json::items`].
    Array(Span),
    /// Members, sorted by key: a span of [`Json::members`].
    Object(Span),
}

/// An object member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Member<'a> {
    pub(crate) key: Text<'a>,
    pub(crate) value: NodeId,
    /// The key's first four bytes, big-endian, zero-padded: orders most
    /// pairs of keys without reading them (it fits in `Member`'s padding).
    pub(crate) head: u32,
}

impl<'a> Member<'a> {
    /// A member whose key's [`head`] is known (the parser reads it off
    /// the input).
    #[inline(always)]
    pub(crate) fn with_head(key: Text<'a>, value: NodeId, head: u32) -> Member<'a> {
        Member { key, value, head }
    }

    /// A member whose key is a change's (borrowed from the plan).
    #[inline]
    pub(crate) fn keyed(key: &'a Key, value: NodeId) -> Member<'a> {
        Member {
            key: key.text(),
            value,
            head: key.head,
        }
    }

    /// A member whose key is borrowed text (from the plan).
    #[cfg(test)]
    pub(crate) fn borrowed(key: &'a str, value: NodeId) -> Member<'a> {
        Member {
            key: Text::new(key.as_bytes()),
            value,
            head: head(key.as_bytes()),
        }
    }
}

/// The first four bytes of a key as a number that orders as they do.
/// Keys that share it (or differ only by trailing NULs) are compared in full.
#[inline]
pub(crate) fn head(key: &[u8]) -> u32 {
    let b = match *key {
        [a, b, c, d, ..] => [a, b, c, d],
        [a, b, c] => [a, b, c, 0],
        [a, b] => [a, b, 0, 0],
        [a] => [a, 0, 0, 0],
        [] => [0; 4],
    };
    u32::from_be_bytes(b)
}

/// Orders a member's key against `key` (whose [`head`] is `h`).
#[inline]
fn cmp_key(own: &[u8], m: &Member<'_>, key: &[u8], h: u32) -> Ordering {
    match m.head.cmp(&h) {
        Ordering::Equal => cmp_after_head(resolve(own, &m.key), key),
        unequal => unequal,
    }
}

/// Whether member `m`'s key sorts strictly before `key`, both of `doc`
/// and with equal heads.
#[inline]
pub(crate) fn key_before(doc: &Json<'_>, m: &Member<'_>, key: &Text<'_>) -> bool {
    let own = &doc.text;
    cmp_after_head(resolve(own, &m.key), resolve(own, key)) == Ordering::Less
}

/// Orders two keys whose heads are equal, so whose first `min(4, len)`
/// bytes agree. A byte loop: keys are short, and a `memcmp` call cost more
/// than the comparison it made.
#[inline]
fn cmp_after_head(a: &[u8], b: &[u8]) -> Ordering {
    let n = a.len().min(b.len());
    let mut i = n.min(4);
    while i < n {
        if a[i] != b[i] {
            return a[i].cmp(&b[i]);
        }
        i += 1;
    }
    a.len().cmp(&b.len())
}

/// A parsed JSON body that borrows from the bytes it was parsed from (`'a`)
/// or from the plan whose changes wrote into it. Compare and print it
/// through [`super::to_bytes`]: equality here is equality of the written
/// bodies (keys sorted, numbers as written).
#[derive(Clone)]
pub struct Json<'a> {
    nodes: Vec<Node<'a>>,
    members: Vec<Member<'a>>,
    items: Vec<NodeId>,
    /// Decoded text ([`Text::Own`]).
    text: Vec<u8>,
    root: NodeId,
    /// Length of the body this was parsed from: sizes the output buffer.
    pub(crate) source_len: usize,
    /// Whether dropping the document keeps its vectors for the next body
    /// parsed on this thread (see [`Spare`]). Only body documents do; a
    /// plan's defaults and a stash's values are small and live long.
    recycle: bool,
}

/// Buffers kept per thread between bodies: the vectors of the last body
/// document dropped on the thread, and the parser's scratch stacks. For a
/// 1 KiB body their five allocations and frees (all but the scratch too
/// large for the allocator's per-thread cache) cost about a twentieth of
/// the whole translation.
///
/// A vector changes lifetime (a document borrows from its body) through
/// [`relife`], which keeps the allocation. Vectors longer than
/// [`MAX_SPARE`] are freed, not kept, so a thread holds at most a few
/// hundred KiB whatever bodies it saw.
struct Spare {
    nodes: Vec<Node<'static>>,
    members: Vec<Member<'static>>,
    items: Vec<NodeId>,
}

/// Longest vector kept in a [`Spare`]: enough for a 64 KiB body.
const MAX_SPARE: usize = 8 * 1024;

thread_local! {
    static SPARE: RefCell<Option<Spare>> = const { RefCell::new(None) };
    static SCRATCH: RefCell<Option<(Vec<NodeId>, Vec<Member<'static>>)>> =
        const { RefCell::new(None) };
}

/// Empties `v` and gives it another lifetime, keeping its allocation:
/// `collect` from a vector's own iterator reuses its buffer when the
/// element layout is the same, which it is here (only the lifetime
/// differs). Nothing is read or written, so nothing outlives its borrow.
macro_rules! relife {
    ($v:expr) => {{
        let mut v = $v;
        v.clear();
        v.into_iter().map(|_| unreachable!("emptied")).collect()
    }};
}

/// The parser's scratch stacks (open arrays' items, open objects'
/// members): this thread's spare ones, emptied, or new ones.
pub(crate) fn scratch<'a>() -> (Vec<NodeId>, Vec<Member<'a>>) {
    let spare = SCRATCH
        .try_with(|s| s.try_borrow_mut().ok()?.take())
        .ok()
        .flatten();
    match spare {
        Some((items, members)) => (items, relife!(members)),
        // Sized so that typical bodies never grow them (a regrowth cost
        // more than the allocation).
        None => (Vec::with_capacity(32), Vec::with_capacity(32)),
    }
}

/// Keeps the parser's scratch stacks for the next body on this thread.
pub(crate) fn give_back_scratch(mut items: Vec<NodeId>, members: Vec<Member<'_>>) {
    if items.capacity() > MAX_SPARE || members.capacity() > MAX_SPARE {
        return;
    }
    items.clear();
    let members: Vec<Member<'static>> = relife!(members);
    let _ = SCRATCH.try_with(|s| {
        if let Ok(mut s) = s.try_borrow_mut() {
            *s = Some((items, members));
        }
    });
}

impl Drop for Json<'_> {
    fn drop(&mut self) {
        if !self.recycle
            || self.nodes.capacity() > MAX_SPARE
            || self.members.capacity() > MAX_SPARE
            || self.items.capacity() > MAX_SPARE
        {
            return;
        }
        let mut items = std::mem::take(&mut self.items);
        items.clear();
        let spare = Spare {
            nodes: relife!(std::mem::take(&mut self.nodes)),
            members: relife!(std::mem::take(&mut self.members)),
            items,
        };
        let _ = SPARE.try_with(|s| {
            if let Ok(mut s) = s.try_borrow_mut() {
                *s = Some(spare);
            }
        });
    }
}

/// Whether a byte must be escaped inside a JSON string.
pub(crate) fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// Capacities of nodes, members and items for a body of `source_len` bytes.
fn sizes(source_len: usize) -> (usize, usize, usize) {
    // About one node per 12 bytes of minified JSON, one member per 15 (an
    // event list), with a fifth more for what the changes add (a grown
    // object moves to the end with room): one allocation each for typical
    // bodies, not a series of regrowths and copies.
    (
        source_len / 10 + 8,
        source_len / 10 + 8,
        source_len / 32 + 2,
    )
}

fn index(n: usize) -> u32 {
    // Parsing refuses bodies over MAX_BODY_BYTES, which keeps every count
    // far below u32::MAX even after changes add nodes.
    u32::try_from(n).expect("documents stay under MAX_BODY_BYTES")
}

impl<'a> Json<'a> {
    /// An empty document sized for a body of `source_len` bytes; its root is
    /// set by the first [`Json::push`] the builder finishes with.
    pub(crate) fn with_capacity(source_len: usize) -> Json<'a> {
        let (nodes, members, items) = sizes(source_len);
        Json {
            nodes: Vec::with_capacity(nodes),
            members: Vec::with_capacity(members),
            items: Vec::with_capacity(items),
            text: Vec::new(),
            root: 0,
            source_len,
            recycle: false,
        }
    }

    /// [`Json::with_capacity`] for a body being parsed: with the vectors
    /// of the last body document dropped on this thread when there is one
    /// (grown to the same sizes if they are smaller), and kept again when
    /// this one is dropped.
    pub(crate) fn for_body(source_len: usize) -> Json<'a> {
        let spare = SPARE
            .try_with(|s| s.try_borrow_mut().ok()?.take())
            .ok()
            .flatten();
        let Some(spare) = spare else {
            let mut doc = Json::with_capacity(source_len);
            doc.recycle = true;
            return doc;
        };
        let (nodes, members, items) = sizes(source_len);
        let mut doc = Json {
            nodes: relife!(spare.nodes),
            members: relife!(spare.members),
            items: spare.items,
            text: Vec::new(),
            root: 0,
            source_len,
            recycle: true,
        };
        doc.nodes.reserve(nodes);
        doc.members.reserve(members);
        doc.items.reserve(items);
        doc
    }

    pub(crate) fn root(&self) -> NodeId {
        self.root
    }

    pub(crate) fn set_root(&mut self, id: NodeId) {
        self.root = id;
    }

    #[inline]
    pub(crate) fn node(&self, id: NodeId) -> Node<'a> {
        self.nodes[id as usize]
    }

    /// Replaces a node in place: whoever refers to `id` now sees `node`.
    pub(crate) fn set(&mut self, id: NodeId, node: Node<'a>) {
        self.nodes[id as usize] = node;
    }

    #[inline]
    pub(crate) fn push(&mut self, node: Node<'a>) -> NodeId {
        let id = index(self.nodes.len());
        self.nodes.push(node);
        id
    }

    /// Stores decoded text in the document's own buffer.
    pub(crate) fn own_text(&mut self, text: &str) -> Text<'a> {
        let start = index(self.text.len());
        self.text.extend_from_slice(text.as_bytes());
        Text::Own {
            start,
            len: index(text.len()),
        }
    }

    /// The buffer [`Text::Own`] refers to.
    pub(crate) fn own(&self) -> &[u8] {
        &self.text
    }

    /// The (unescaped) text.
    pub(crate) fn str<'s>(&'s self, text: &Text<'s>) -> &'s [u8] {
        resolve(&self.text, text)
    }

    /// Appends an array's items and returns their span.
    pub(crate) fn push_items(&mut self, items: &[NodeId]) -> Span {
        push_run(&mut self.items, items)
    }

    /// Appends an object's members, which must be sorted and unique.
    pub(crate) fn push_members(&mut self, members: &[Member<'a>]) -> Span {
        push_run(&mut self.members, members)
    }

    /// Appends an object's only member and returns its span.
    #[inline]
    pub(crate) fn push_member(&mut self, member: Member<'a>) -> Span {
        let start = index(self.members.len());
        self.members.push(member);
        Span {
            start,
            len: 1,
            cap: 1,
        }
    }

    /// The items of an array node (empty for other nodes).
    #[inline]
    pub(crate) fn items(&self, id: NodeId) -> &[NodeId] {
        match self.node(id) {
            Node::Array(span) => &self.items[span.range()],
            _ => &[],
        }
    }

    /// The members of an object node (empty for other nodes).
    #[inline]
    pub(crate) fn members(&self, id: NodeId) -> &[Member<'a>] {
        match self.node(id) {
            Node::Object(span) => &self.members[span.range()],
            _ => &[],
        }
    }

    #[inline]
    fn span(&self, obj: NodeId) -> Span {
        match self.node(obj) {
            Node::Object(span) => span,
            _ => unreachable!("callers pass objects"),
        }
    }

    /// In object `obj`: the index of `key` among its members, or where it
    /// would go. `obj` must be an object.
    #[cfg(test)]
    pub(crate) fn find(&self, obj: NodeId, key: &str) -> Result<usize, usize> {
        let key = key.as_bytes();
        self.find_head(obj, key, head(key))
    }

    /// [`Json::find`] for a change's key.
    #[inline]
    pub(crate) fn find_key(&self, obj: NodeId, key: &Key) -> Result<usize, usize> {
        self.find_head(obj, key.name.as_bytes(), key.head)
    }

    /// The value of member `key` when `id` is an object that has it.
    #[inline(always)]
    pub(crate) fn get_key(&self, id: NodeId, key: &Key) -> Option<NodeId> {
        match self.node(id) {
            Node::Object(span) => {
                let i = self.find_key(id, key).ok()?;
                Some(self.members[span.start as usize + i].value)
            }
            _ => None,
        }
    }

    /// [`Json::find`] with the key's [`head`] already known.
    #[inline(always)]
    fn find_head(&self, obj: NodeId, key: &[u8], h: u32) -> Result<usize, usize> {
        self.find_head_from(obj, 0, key, h)
    }

    /// [`Json::find_key`] among the members of `obj` from index `from` on,
    /// when the key is known to sort after those before it. Indexes count
    /// from the object's first member.
    #[inline(always)]
    pub(crate) fn find_key_from(
        &self,
        obj: NodeId,
        from: usize,
        key: &Key,
    ) -> Result<usize, usize> {
        self.find_head_from(obj, from, key.name.as_bytes(), key.head)
    }

    #[inline(always)]
    fn find_head_from(&self, obj: NodeId, from: usize, key: &[u8], h: u32) -> Result<usize, usize> {
        let all = &self.members[self.span(obj).range()];
        let members = &all[from.min(all.len())..];
        let from = all.len() - members.len();
        if members.len() <= 8 {
            // Real objects are small: one pass in key order, most steps a
            // comparison of heads, beats a binary search's branches.
            for (i, m) in members.iter().enumerate() {
                if m.head < h {
                    continue;
                }
                if m.head > h {
                    return Err(from + i);
                }
                match cmp_after_head(resolve(&self.text, &m.key), key) {
                    Ordering::Less => {}
                    Ordering::Equal => return Ok(from + i),
                    Ordering::Greater => return Err(from + i),
                }
            }
            Err(all.len())
        } else {
            match members.binary_search_by(|m| cmp_key(&self.text, m, key, h)) {
                Ok(i) => Ok(from + i),
                Err(i) => Err(from + i),
            }
        }
    }

    /// A member with key `key` (text of this document or borrowed).
    pub(crate) fn member(&self, key: Text<'a>, value: NodeId) -> Member<'a> {
        let head = head(self.str(&key));
        Member { key, value, head }
    }

    /// The value of member `key` when `id` is an object that has it.
    #[cfg(test)]
    pub(crate) fn get(&self, id: NodeId, key: &str) -> Option<NodeId> {
        match self.node(id) {
            Node::Object(span) => {
                let i = self.find(id, key).ok()?;
                Some(self.members[span.start as usize + i].value)
            }
            _ => None,
        }
    }

    /// The value of the `i`th member of object `obj`.
    #[inline]
    pub(crate) fn member_value(&self, obj: NodeId, i: usize) -> NodeId {
        self.members[self.span(obj).start as usize + i].value
    }

    /// Removes the `i`th member of object `obj`; returns its value.
    pub(crate) fn remove_at(&mut self, obj: NodeId, i: usize) -> NodeId {
        let mut span = self.span(obj);
        let start = span.start as usize;
        let value = self.members[start + i].value;
        // A loop, not `copy_within`: a few members, and a `memmove` call
        // cost more than moving them.
        for k in start + i..start + span.len as usize - 1 {
            self.members[k] = self.members[k + 1];
        }
        span.len -= 1;
        self.set(obj, Node::Object(span));
        value
    }

    /// Removes member `key` of object `obj`, if it has one; returns its value.
    pub(crate) fn remove_key(&mut self, obj: NodeId, key: &Key) -> Option<NodeId> {
        let i = self.find_key(obj, key).ok()?;
        Some(self.remove_at(obj, i))
    }

    /// Removes member `key` of object `obj`, if it has one; returns its value.
    #[cfg(test)]
    pub(crate) fn remove(&mut self, obj: NodeId, key: &str) -> Option<NodeId> {
        let i = self.find(obj, key).ok()?;
        Some(self.remove_at(obj, i))
    }

    /// Inserts a member at index `i` of object `obj` (where [`Json::find`]
    /// said it goes).
    pub(crate) fn insert_at(&mut self, obj: NodeId, i: usize, member: Member<'a>) {
        let mut span = self.span(obj);
        if span.len == span.cap {
            // Move the members to the end with room to grow (the old run
            // stays behind, unused), or just extend when they are the last
            // run already. The new slots are filled with `member` until used.
            let cap = span.cap * 2 + 2;
            if (span.start + span.cap) as usize != self.members.len() {
                let start = index(self.members.len());
                self.members.extend_from_within(span.range());
                span.start = start;
            }
            self.members.resize((span.start + cap) as usize, member);
            span.cap = cap;
        }
        let start = span.start as usize;
        let len = span.len as usize;
        for k in (start + i..start + len).rev() {
            self.members[k + 1] = self.members[k];
        }
        self.members[start + i] = member;
        span.len += 1;
        self.set(obj, Node::Object(span));
    }

    /// Removes the `j`th member of object `obj` and inserts `member` at
    /// index `i`, counted before the removal (where [`Json::find`] said it
    /// goes while the `j`th was still there). The object keeps its length,
    /// so nothing grows: only the members between `i` and `j` shift.
    pub(crate) fn replace_at(&mut self, obj: NodeId, j: usize, i: usize, member: Member<'a>) {
        let range = self.span(obj).range();
        let members = &mut self.members[range];
        if i > j {
            for k in j..i - 1 {
                members[k] = members[k + 1];
            }
            members[i - 1] = member;
        } else {
            for k in (i..j).rev() {
                members[k + 1] = members[k];
            }
            members[i] = member;
        }
    }

    /// A new object of one member.
    pub(crate) fn single(&mut self, member: Member<'a>) -> NodeId {
        let span = self.push_members(&[member]);
        self.push(Node::Object(span))
    }

    /// Copies the subtree `id` of `src` into this document; texts are
    /// borrowed from `src`, which outlives this document (a default of the
    /// plan). Returns the copy's root.
    pub(crate) fn borrow_from(&mut self, src: &'a Json<'_>, id: NodeId) -> NodeId {
        self.copy_tree(src, id, &mut |_, t: &Text<'_>| {
            let s: &'a [u8] = resolve(&src.text, t);
            match t {
                Text::Plain(_) => Text::Plain(s),
                Text::Escape(_) | Text::Own { .. } => Text::new(s),
            }
        })
    }

    /// Copies the subtree `id` of `src` into this document, copying its
    /// texts into this document's buffer (`src` may not outlive it).
    pub(crate) fn copy_from(&mut self, src: &Json<'_>, id: NodeId) -> NodeId {
        self.copy_tree(src, id, &mut |text: &mut Vec<u8>, t: &Text<'_>| {
            let start = index(text.len());
            text.extend_from_slice(resolve(&src.text, t));
            Text::Own {
                start,
                len: index(text.len()) - start,
            }
        })
    }

    /// The subtree `id` as a document of its own that borrows nothing (a
    /// value a request's `remove` keeps for its response).
    pub(crate) fn to_owned_at(&self, id: NodeId) -> Json<'static> {
        let mut out = Json::with_capacity(0);
        let root = out.copy_from(self, id);
        out.root = root;
        out
    }

    fn copy_tree<'s, 'b>(
        &mut self,
        src: &'s Json<'b>,
        id: NodeId,
        text: &mut impl FnMut(&mut Vec<u8>, &Text<'b>) -> Text<'a>,
    ) -> NodeId {
        let node = match src.node(id) {
            Node::Null => Node::Null,
            Node::Bool(b) => Node::Bool(b),
            Node::Number(t) => Node::Number(text(&mut self.text, &t)),
            Node::String(t) => Node::String(text(&mut self.text, &t)),
            Node::Array(_) => {
                let items: Vec<NodeId> = src
                    .items(id)
                    .iter()
                    .map(|&item| self.copy_tree(src, item, text))
                    .collect();
                Node::Array(self.push_items(&items))
            }
            Node::Object(_) => {
                let members: Vec<Member<'a>> = src
                    .members(id)
                    .iter()
                    .map(|m| Member {
                        key: text(&mut self.text, &m.key),
                        value: self.copy_tree(src, m.value, text),
                        head: m.head,
                    })
                    .collect();
                Node::Object(self.push_members(&members))
            }
        };
        self.push(node)
    }

    /// Converts a serde_json value (a configured default).
    pub fn from_value(v: &serde_json::Value) -> Json<'static> {
        let mut out = Json::with_capacity(0);
        let root = out.add_value(v);
        out.root = root;
        out
    }

    fn add_value(&mut self, v: &serde_json::Value) -> NodeId {
        use serde_json::Value;
        let node = match v {
            Value::Null => Node::Null,
            Value::Bool(b) => Node::Bool(*b),
            // Under `arbitrary_precision` this is the number's own text.
            Value::Number(n) => Node::Number(self.own_text(&n.to_string())),
            Value::String(s) => Node::String(self.own_text(s)),
            Value::Array(items) => {
                let ids: Vec<NodeId> = items.iter().map(|v| self.add_value(v)).collect();
                Node::Array(self.push_items(&ids))
            }
            Value::Object(map) => {
                let mut members: Vec<Member<'a>> = map
                    .iter()
                    .map(|(k, v)| {
                        let key = self.own_text(k);
                        let value = self.add_value(v);
                        self.member(key, value)
                    })
                    .collect();
                // serde_json's map is sorted already; sorting again keeps
                // the invariant whatever its features.
                sort_members(&self.text, &mut members);
                Node::Object(self.push_members(&members))
            }
        };
        self.push(node)
    }
}

/// Appends a container's children to one of the document's vectors.
fn push_run<T: Copy>(all: &mut Vec<T>, run: &[T]) -> Span {
    let start = index(all.len());
    all.extend_from_slice(run);
    let len = index(run.len());
    Span {
        start,
        len,
        cap: len,
    }
}

/// The unescaped text of `t`, given the buffer of its document.
pub(crate) fn resolve<'s>(own: &'s [u8], t: &Text<'s>) -> &'s [u8] {
    match *t {
        Text::Plain(s) | Text::Escape(s) => s,
        Text::Own { start, len } => &own[start as usize..(start + len) as usize],
    }
}

/// Sorts an object's members by key in place and says whether the keys are
/// unique. Members of real bodies often come sorted (serialisers that sort,
/// our own output): then this is one comparison per pair.
pub(crate) fn sort_members(own: &[u8], members: &mut [Member<'_>]) -> bool {
    let cmp = |a: &Member<'_>, b: &Member<'_>| cmp_key(own, a, resolve(own, &b.key), b.head);
    if members
        .windows(2)
        .all(|w| cmp(&w[0], &w[1]) == Ordering::Less)
    {
        return true;
    }
    // Stable, and an insertion sort for the few keys real objects have.
    members.sort_by(cmp);
    members
        .windows(2)
        .all(|w| cmp(&w[0], &w[1]) != Ordering::Equal)
}

impl PartialEq for Json<'_> {
    fn eq(&self, other: &Self) -> bool {
        super::to_bytes(self) == super::to_bytes(other)
    }
}

impl Eq for Json<'_> {}

impl std::fmt::Debug for Json<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Json({})",
            String::from_utf8_lossy(&super::to_bytes(self))
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::{Limits, parse_json, to_bytes};

    fn doc(text: &str) -> Json<'_> {
        parse_json(text.as_bytes(), Limits::default()).unwrap()
    }

    fn keys(d: &Json<'_>, obj: NodeId) -> Vec<String> {
        d.members(obj)
            .iter()
            .map(|m| String::from_utf8_lossy(d.str(&m.key)).into_owned())
            .collect()
    }

    #[test]
    fn objects_stay_sorted_and_unique() {
        let mut d = doc(r#"{"b":1,"c":2}"#);
        let root = d.root();
        let one = d.push(Node::Null);
        for k in ["a", "d", "0"] {
            let i = d.find(root, k).unwrap_err();
            d.insert_at(root, i, Member::borrowed(k, one));
        }
        assert_eq!(keys(&d, root), ["0", "a", "b", "c", "d"]);
        assert!(d.remove(root, "b").is_some());
        assert!(d.remove(root, "b").is_none());
        assert_eq!(d.get(root, "0"), Some(one));
        assert_eq!(to_bytes(&d), r#"{"0":null,"a":null,"c":2,"d":null}"#);
    }

    #[test]
    fn inserts_into_an_object_in_the_middle_leave_its_neighbours_alone() {
        // The first object's members are followed by the second's: growing
        // the first must move it, not overwrite the second.
        let mut d = doc(r#"[{"a":1},{"b":2}]"#);
        let first = d.items(d.root())[0];
        let value = d.push(Node::Bool(true));
        for k in ["c", "d", "e", "f", "g"] {
            let i = d.find(first, k).unwrap_err();
            d.insert_at(first, i, Member::borrowed(k, value));
        }
        assert_eq!(
            to_bytes(&d),
            r#"[{"a":1,"c":true,"d":true,"e":true,"f":true,"g":true},{"b":2}]"#
        );
    }

    #[test]
    fn replace_at_moves_the_new_member_into_place() {
        // (removed index, insert index counted before the removal, keys after)
        let cases: &[(usize, usize, &[&str])] = &[
            (0, 0, &["X", "b", "c", "d"]),
            (0, 1, &["X", "b", "c", "d"]),
            (0, 3, &["b", "c", "X", "d"]),
            (0, 4, &["b", "c", "d", "X"]),
            (3, 0, &["X", "a", "b", "c"]),
            (2, 1, &["a", "X", "b", "d"]),
            (1, 2, &["a", "X", "c", "d"]),
        ];
        for &(j, i, want) in cases {
            let mut d = doc(r#"{"a":1,"b":2,"c":3,"d":4}"#);
            let root = d.root();
            let value = d.push(Node::Null);
            d.replace_at(root, j, i, Member::borrowed("X", value));
            assert_eq!(keys(&d, root), want, "remove {j}, insert at {i}");
        }
    }

    #[test]
    fn recycled_buffers_start_empty() {
        // Documents hand their vectors to the next parse on this thread:
        // a big body, then a small one, then two alive at once, and a
        // clone dropped after its original.
        let big = format!("[{}]", vec![r#"{"k":"v\n","n":1}"#; 500].join(","));
        let parsed = doc(&big);
        assert_eq!(parsed.items(parsed.root()).len(), 500);
        drop(parsed);
        let small = doc(r#"{"b":[true],"a":"\u0041"}"#);
        assert_eq!(to_bytes(&small), r#"{"a":"A","b":[true]}"#);
        let other = doc("[1,2]");
        let copy = small.clone();
        drop(small);
        assert_eq!(to_bytes(&other), "[1,2]");
        assert_eq!(to_bytes(&copy), r#"{"a":"A","b":[true]}"#);
        drop(copy);
        drop(other);
        assert_eq!(to_bytes(&doc("{}")), "{}");
    }

    #[test]
    fn a_refused_body_leaves_no_scratch_behind() {
        // The parser gives its scratch stacks back even when it stops
        // half-way with open containers on them.
        for bad in [r#"{"a":[1,2,{"b":"#, r#"[{"x":1,"x":2}]"#, "[[[[tru]]]]"] {
            assert!(
                parse_json(bad.as_bytes(), Limits::default()).is_err(),
                "{bad}"
            );
            assert_eq!(
                to_bytes(&doc(r#"[{"c":3}]"#)),
                r#"[{"c":3}]"#,
                "after {bad}"
            );
        }
    }

    #[test]
    fn sorting_finds_repeats() {
        let mut d = Json::with_capacity(0);
        let ms = |d: &mut Json<'static>, ks: &[&'static str]| -> Vec<Member<'static>> {
            ks.iter()
                .map(|k| Member::borrowed(k, d.push(Node::Null)))
                .collect()
        };
        let mut m = ms(&mut d, &["b", "a"]);
        assert!(sort_members(b"", &mut m));
        assert_eq!(m[0].key, Text::Plain(b"a"));
        assert!(!sort_members(b"", &mut ms(&mut d, &["b", "a", "b"])));
        assert!(!sort_members(b"", &mut ms(&mut d, &["a", "a"])));
    }

    #[test]
    fn escapes_are_found_once() {
        assert_eq!(
            Text::new("plain é".as_bytes()),
            Text::Plain("plain é".as_bytes())
        );
        for s in ["a\"b", "a\nb", "a\\b"] {
            assert_eq!(Text::new(s.as_bytes()), Text::Escape(s.as_bytes()));
        }
    }

    #[test]
    fn copies_keep_the_subtree_and_own_their_text() {
        let text = String::from(r#"{"a":[1,"x\n",{"k\u0041":null}],"b":2}"#);
        let d = doc(&text);
        let a = d.get(d.root(), "a").unwrap();
        let owned = d.to_owned_at(a);
        drop(d);
        drop(text);
        assert_eq!(to_bytes(&owned), r#"[1,"x\n",{"kA":null}]"#);
        let mut into = doc("{}");
        let copy = into.copy_from(&owned, owned.root());
        into.set_root(copy);
        assert_eq!(to_bytes(&into), to_bytes(&owned));
    }

    #[test]
    fn nodes_stay_small() {
        // Moving nodes and members is most of what parsing does.
        assert!(size_of::<Node<'_>>() <= 32, "{}", size_of::<Node<'_>>());
        assert!(size_of::<Member<'_>>() <= 32, "{}", size_of::<Member<'_>>());
    }
}
