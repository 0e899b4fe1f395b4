//! Compiling the `changes` of every version, and the rules that make a
//! chain possible. Every problem is reported with its field path
//! (`versions[2].changes[1].from: ...`), all at once.
//!
//! Chain rules, checked along each version's line of ancestors (changes
//! whose scopes cannot meet never conflict):
//! * a change may not read a place an earlier change moved or removed
//!   (`rename.from`, `remove.at`, `map.at`, `wrap.at`, the parent of
//!   `add.at`), unless a later change wrote it again;
//! * a change may not write a place that already exists because an earlier
//!   change wrote it (`rename.to`, `add.at`): the upgrade would overwrite
//!   or keep the old value and the downgrade would then drop it;
//! * the same for header names; two `map_status` of one version may not
//!   share a code, two `rewrite_path` of one version may not produce
//!   overlapping paths, and `map` values must be distinct: otherwise the
//!   downgrade cannot tell which one to undo.

use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderName, Method, StatusCode};

use super::doc::{ChangeDoc, Direction, Op, Responses, Restore};
use super::ops::{Change, ChangeId, Kind, Scope};
use super::path::PathPattern;
use super::pointer::{Pointer, Seg};
use super::value::Json;
use crate::config::{ConfigError, Document};

/// The versions' tree and compiled changes of a document.
pub(crate) struct Compiled {
    /// Per version (document order): the version its changes lead from.
    pub(crate) parent: Vec<Option<usize>>,
    /// Per version: its compiled changes, in order.
    pub(crate) changes: Vec<Vec<Arc<Change>>>,
}

/// Compiles and checks; `Err` holds every problem found.
pub(crate) fn compile(doc: &Document) -> Result<Compiled, Vec<ConfigError>> {
    let mut errs = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut parent = Vec::with_capacity(doc.versions.len());
    for (i, v) in doc.versions.iter().enumerate() {
        let p = match &v.changes_from {
            Some(name) => match index.get(name.as_str()) {
                Some(&j) => Some(j),
                None => {
                    let why = if doc.versions.iter().any(|o| &o.name == name) {
                        format!("{name:?} must be listed before {:?}", v.name)
                    } else {
                        format!("unknown version {name:?}")
                    };
                    errs.push(ConfigError::at(format!("versions[{i}].changes_from"), why));
                    None
                }
            },
            None => i.checked_sub(1),
        };
        if p.is_none() && !v.changes.is_empty() && v.changes_from.is_none() {
            errs.push(ConfigError::at(
                format!("versions[{i}].changes"),
                "the first version has no previous version to change from",
            ));
        }
        parent.push(p);
        // First spelling wins; duplicates are config::validate's to report.
        index.entry(v.name.as_str()).or_insert(i);
    }

    let mut changes = Vec::with_capacity(doc.versions.len());
    for (i, v) in doc.versions.iter().enumerate() {
        let name: Arc<str> = v.name.as_str().into();
        let mut compiled = Vec::with_capacity(v.changes.len());
        for (j, c) in v.changes.iter().enumerate() {
            let path = format!("versions[{i}].changes[{j}]");
            let id = ChangeId {
                version: name.clone(),
                index: j,
            };
            if let Some(change) = compile_change(c, id, &path, &mut errs) {
                compiled.push((j, Arc::new(change)));
            }
        }
        changes.push(compiled);
    }

    // Chain rules: walk each version's ancestry with the facts it leaves.
    let mut facts: Vec<Vec<Fact>> = Vec::with_capacity(doc.versions.len());
    for i in 0..doc.versions.len() {
        let mut here = parent[i].map_or_else(Vec::new, |p| facts[p].clone());
        let own_start = here.len();
        for (j, change) in &changes[i] {
            let path = format!("versions[{i}].changes[{j}]");
            chain_rules(change, &path, &here, own_start, &mut errs);
            record(change, &path, &mut here);
        }
        facts.push(here);
    }

    if errs.is_empty() {
        Ok(Compiled {
            parent,
            changes: changes
                .into_iter()
                .map(|cs| cs.into_iter().map(|(_, c)| c).collect())
                .collect(),
        })
    } else {
        Err(errs)
    }
}

/// Compiles one change, pushing an error per problem.
fn compile_change(
    c: &ChangeDoc,
    id: ChangeId,
    path: &str,
    errs: &mut Vec<ConfigError>,
) -> Option<Change> {
    let before = errs.len();
    let op = c.op.as_str();
    let mut err = |field: &str, reason: String| {
        errs.push(ConfigError::at(format!("{path}.{field}"), reason));
    };

    // Which fields each op takes; the rest must be absent.
    let (from, to, at, default, restore, values, key, statuses) = match c.op {
        Op::Rename | Op::RenameHeader | Op::RewritePath => {
            (true, true, false, false, false, false, false, false)
        }
        Op::Add => (false, false, true, true, false, false, false, false),
        Op::Remove => (false, false, true, true, true, false, false, false),
        Op::Map => (false, false, true, false, false, true, false, false),
        Op::Wrap | Op::Unwrap => (false, false, true, false, false, false, true, false),
        Op::MapStatus => (false, false, false, false, false, false, false, true),
    };
    for (field, wanted, present) in [
        ("from", from, c.from.is_some()),
        ("to", to, c.to.is_some()),
        ("at", at, c.at.is_some()),
        ("key", key, c.key.is_some()),
        ("from_status", statuses, c.from_status.is_some()),
        ("to_status", statuses, c.to_status.is_some()),
        ("values", values, !c.values.is_empty()),
    ] {
        if wanted && !present {
            err(field, format!("required for op {op:?}"));
        }
    }
    for (field, wanted, present) in [
        ("from", from, c.from.is_some()),
        ("to", to, c.to.is_some()),
        ("at", at, c.at.is_some()),
        ("key", key, c.key.is_some()),
        ("from_status", statuses, c.from_status.is_some()),
        ("to_status", statuses, c.to_status.is_some()),
        ("values", values, !c.values.is_empty()),
        ("default", default, c.default.is_some()),
        ("restore", restore, c.restore.is_some()),
    ] {
        if !wanted && present {
            err(field, format!("not used by op {op:?}"));
        }
    }

    // Scope.
    let mut paths = Vec::new();
    for (k, p) in c.paths.iter().enumerate() {
        match PathPattern::parse(p) {
            Ok(p) => paths.push(p),
            Err(why) => err(&format!("paths[{k}]"), why),
        }
    }
    let mut methods = Vec::new();
    for (k, m) in c.methods.iter().enumerate() {
        match Method::from_bytes(m.as_bytes()) {
            Ok(parsed) if m.bytes().all(|b| !b.is_ascii_lowercase()) => methods.push(parsed),
            _ => err(
                &format!("methods[{k}]"),
                format!("{m:?} is not a method name like GET or POST (upper case)"),
            ),
        }
    }
    match c.op {
        Op::RewritePath => {
            if !c.paths.is_empty() {
                err(
                    "paths",
                    "not used by op \"rewrite_path\": its `from` pattern is its scope".into(),
                );
            }
            if c.direction == Direction::Response {
                err(
                    "direction",
                    "a path is rewritten on requests: use \"request\" or \"both\"".into(),
                );
            }
        }
        Op::MapStatus => {
            if c.direction == Direction::Request {
                err(
                    "direction",
                    "a status is mapped on responses: use \"response\" or \"both\"".into(),
                );
            }
        }
        Op::Rename | Op::Add | Op::Remove | Op::Map | Op::Wrap | Op::Unwrap | Op::RenameHeader => {}
    }

    let pointer = |field: &str, text: &Option<String>, err: &mut dyn FnMut(&str, String)| {
        let text = text.as_deref()?;
        match Pointer::parse(text) {
            Ok(p) => Some(p),
            Err(why) => {
                err(field, why);
                None
            }
        }
    };
    let mut err: &mut dyn FnMut(&str, String) = &mut err;
    let kind = match c.op {
        Op::Rename => {
            let (from, to) = (
                pointer("from", &c.from, &mut err),
                pointer("to", &c.to, &mut err),
            );
            match (from, to) {
                (Some(from), Some(to)) => rename(from, to, &mut err),
                _ => None,
            }
        }
        Op::Add | Op::Remove => {
            let at = pointer("at", &c.at, &mut err)?;
            let Some((parent, Seg::Key { name, .. })) = at.split_last() else {
                err(
                    "at",
                    format!("{at} must end in a key: {op} works on an object's field"),
                );
                return None;
            };
            let key = name.clone();
            if c.op == Op::Add {
                match &c.default {
                    Some(d) => Some(Kind::Add {
                        parent,
                        key,
                        default: Json::from_value(d),
                    }),
                    None => {
                        err("default", "required for op \"add\"".into());
                        None
                    }
                }
            } else {
                if c.restore == Some(Restore::Default) && c.default.is_none() {
                    err("default", "required when restore = \"default\"".into());
                }
                Some(Kind::Remove {
                    parent,
                    key,
                    default: c.default.as_ref().map(Json::from_value),
                    from_request: c.restore == Some(Restore::Request),
                })
            }
        }
        Op::Map => {
            let at = pointer("at", &c.at, &mut err)?;
            let mut down = HashMap::new();
            for (old, new) in &c.values {
                if let Some(prev) = down.insert(new.as_str().into(), old.as_str().into()) {
                    let prev: Box<str> = prev;
                    err(
                        &format!("values.{old}"),
                        format!(
                            "{prev:?} and {old:?} both map to {new:?}: the downgrade could not choose"
                        ),
                    );
                }
            }
            Some(Kind::Map {
                at,
                up: c
                    .values
                    .iter()
                    .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
                    .collect(),
                down: down.into_iter().collect(),
            })
        }
        Op::Wrap | Op::Unwrap => {
            let at = pointer("at", &c.at, &mut err)?;
            let key = c.key.as_deref()?;
            Some(Kind::Wrap {
                at,
                key: key.into(),
                unwrap: c.op == Op::Unwrap,
            })
        }
        Op::RenameHeader => {
            let mut header = |field: &str, text: &Option<String>| {
                let text = text.as_deref()?;
                match HeaderName::from_bytes(text.as_bytes()) {
                    Ok(h) if h.as_str() == text => Some(h),
                    _ => {
                        err(
                            field,
                            format!("{text:?} is not a header name (lower case token)"),
                        );
                        None
                    }
                }
            };
            let (from, to) = (header("from", &c.from), header("to", &c.to));
            match (from, to) {
                (Some(from), Some(to)) if from == to => {
                    err("to", "same header as `from`".into());
                    None
                }
                (Some(from), Some(to)) => {
                    if is_framing(&from) || is_framing(&to) {
                        err(
                            "from",
                            "hop-by-hop and framing headers (content-length, transfer-encoding, host, connection, ...) cannot be renamed".into(),
                        );
                    } else if is_forwarding(&from) || is_forwarding(&to) {
                        err(
                            "from",
                            "the gateway sets x-forwarded-for, x-forwarded-proto, x-forwarded-host, via, x-request-id and traceparent itself (after the changes run): they cannot be renamed".into(),
                        );
                    }
                    Some(Kind::RenameHeader { from, to })
                }
                _ => None,
            }
        }
        Op::RewritePath => {
            let mut pattern = |field: &str, text: &Option<String>| {
                let text = text.as_deref()?;
                match PathPattern::parse(text) {
                    Ok(p) if p.fully_named() => Some(p),
                    Ok(_) => {
                        err(
                            field,
                            format!(
                                "{text:?}: name every wildcard ({{id}}, {{*rest}}) so the path can be rebuilt"
                            ),
                        );
                        None
                    }
                    Err(why) => {
                        err(field, why);
                        None
                    }
                }
            };
            let (from, to) = (pattern("from", &c.from), pattern("to", &c.to));
            match (from, to) {
                (Some(from), Some(to)) => {
                    let mut a: Vec<&str> = from.names().collect();
                    let mut b: Vec<&str> = to.names().collect();
                    a.sort_unstable();
                    b.sort_unstable();
                    if a != b {
                        err(
                            "to",
                            format!(
                                "captures {{{}}} must be the same as from's {{{}}}, or the rewrite cannot be undone",
                                b.join("}, {"),
                                a.join("}, {")
                            ),
                        );
                    }
                    if from == to {
                        err("to", "same pattern as `from`".into());
                    }
                    Some(Kind::RewritePath { from, to })
                }
                _ => None,
            }
        }
        Op::MapStatus => {
            let mut status = |field: &str, code: Option<u16>| {
                let code = code?;
                match StatusCode::from_u16(code) {
                    Ok(s) if (200..600).contains(&code) => Some(s),
                    _ => {
                        err(
                            field,
                            format!("{code} is not a final status code (200-599)"),
                        );
                        None
                    }
                }
            };
            let (from, to) = (
                status("from_status", c.from_status),
                status("to_status", c.to_status),
            );
            match (from, to) {
                (Some(from), Some(to)) if from == to => {
                    err("to_status", "same code as `from_status`".into());
                    None
                }
                (Some(from), Some(to)) => Some(Kind::MapStatus { from, to }),
                _ => None,
            }
        }
    };
    if errs.len() > before {
        return None;
    }
    Some(Change::new(
        id,
        Scope {
            paths: paths.into(),
            methods: methods.into(),
            direction: c.direction,
            responses: c.responses,
        },
        kind?,
    ))
}

/// The fields the gateway adds to every forwarded request
/// ([`crate::upstream::Forwarding`]), written after the changes have run.
fn is_forwarding(h: &HeaderName) -> bool {
    use crate::headers::*;
    [
        X_FORWARDED_FOR,
        X_FORWARDED_PROTO,
        X_FORWARDED_HOST,
        X_REQUEST_ID,
        TRACEPARENT,
        http::header::VIA,
    ]
    .contains(h)
}

fn is_framing(h: &HeaderName) -> bool {
    use http::header::*;
    [
        CONTENT_LENGTH,
        TRANSFER_ENCODING,
        HOST,
        CONNECTION,
        UPGRADE,
        TE,
        TRAILER,
        CONTENT_TYPE,
    ]
    .contains(h)
        || h.as_str() == "keep-alive"
        || h.as_str() == "proxy-connection"
}

/// A rename splits into the common base (all wildcards) and two
/// wildcard-free tails, so each array element keeps its own field.
fn rename(from: Pointer, to: Pointer, err: &mut dyn FnMut(&str, String)) -> Option<Kind> {
    if from.within(&to) || to.within(&from) {
        err(
            "to",
            format!("{to} and {from} contain one another: use wrap/unwrap to nest a value"),
        );
        return None;
    }
    let common = from
        .segs
        .iter()
        .zip(to.segs.iter())
        .take_while(|(a, b)| a == b)
        .count();
    let (base, from_tail, to_tail) = (
        &from.segs[..common],
        &from.segs[common..],
        &to.segs[common..],
    );
    if from_tail.contains(&Seg::Any) || to_tail.contains(&Seg::Any) {
        err(
            "to",
            format!(
                "{from} -> {to}: every * must be in the part both pointers share (a field moves within its array element)"
            ),
        );
        return None;
    }
    if from_tail
        .iter()
        .chain(to_tail)
        .any(|s| matches!(s, Seg::Key { index: Some(_), .. }))
    {
        err(
            "to",
            format!(
                "{from} -> {to}: a renamed field and its new place are object keys, not array indexes"
            ),
        );
        return None;
    }
    Some(Kind::Rename {
        base: Pointer { segs: base.into() },
        from: from_tail.into(),
        to: to_tail.into(),
    })
}

/// Something an applied change leaves true of the message.
#[derive(Clone)]
enum Fact {
    /// Nothing exists at or under this pointer.
    Gone {
        at: Pointer,
        scope: Arc<Change>,
        by: String,
    },
    /// Under `at` only `at/key` exists (after a wrap).
    OnlyKey {
        at: Pointer,
        key: Box<str>,
        scope: Arc<Change>,
        by: String,
    },
    /// A value exists here because this change put it there.
    Written {
        at: Pointer,
        scope: Arc<Change>,
        by: String,
    },
    /// The header is gone / was written.
    HeaderGone {
        name: HeaderName,
        scope: Arc<Change>,
        by: String,
    },
    HeaderWritten {
        name: HeaderName,
        scope: Arc<Change>,
        by: String,
    },
    /// A status code this version maps (own version only).
    Status {
        code: StatusCode,
        scope: Arc<Change>,
        by: String,
    },
    /// Paths this version's rewrite produces (own version only).
    Rewritten {
        to: PathPattern,
        scope: Arc<Change>,
        by: String,
    },
}

impl Fact {
    fn scope(&self) -> &Change {
        match self {
            Fact::Gone { scope, .. }
            | Fact::OnlyKey { scope, .. }
            | Fact::Written { scope, .. }
            | Fact::HeaderGone { scope, .. }
            | Fact::HeaderWritten { scope, .. }
            | Fact::Status { scope, .. }
            | Fact::Rewritten { scope, .. } => scope,
        }
    }
}

/// Whether two changes can ever run on the same message.
fn scopes_meet(a: &Change, b: &Change) -> bool {
    let (a, b) = (&a.scope, &b.scope);
    let methods = a.methods.is_empty()
        || b.methods.is_empty()
        || a.methods.iter().any(|m| b.methods.contains(m));
    let paths = a.paths.is_empty()
        || b.paths.is_empty()
        || a.paths
            .iter()
            .any(|p| b.paths.iter().any(|q| p.overlaps(q)));
    let classes = !matches!(
        (a.responses, b.responses),
        (Responses::Success, Responses::Error) | (Responses::Error, Responses::Success)
    );
    let directions = (a.direction.request() && b.direction.request())
        || (a.direction.response() && b.direction.response() && classes);
    methods && paths && directions
}

/// What a change reads and writes in a body.
fn body_places(kind: &Kind) -> (Vec<Pointer>, Vec<Pointer>) {
    let join = |base: &Pointer, tail: &[Seg]| Pointer {
        segs: base.segs.iter().chain(tail).cloned().collect(),
    };
    let child = |parent: &Pointer, key: &str| Pointer {
        segs: parent.segs.iter().cloned().chain([Seg::key(key)]).collect(),
    };
    match kind {
        Kind::Rename { base, from, to } => (vec![join(base, from)], vec![join(base, to)]),
        Kind::Add { parent, key, .. } => (
            (!parent.is_root())
                .then(|| parent.clone())
                .into_iter()
                .collect(),
            vec![child(parent, key)],
        ),
        Kind::Remove { parent, key, .. } => (vec![child(parent, key)], vec![]),
        Kind::Map { at, .. } | Kind::Wrap { at, .. } => (
            (!at.is_root()).then(|| at.clone()).into_iter().collect(),
            vec![],
        ),
        Kind::RenameHeader { .. } | Kind::RewritePath { .. } | Kind::MapStatus { .. } => {
            (vec![], vec![])
        }
    }
}

fn chain_rules(
    change: &Arc<Change>,
    path: &str,
    facts: &[Fact],
    own_start: usize,
    errs: &mut Vec<ConfigError>,
) {
    let meeting = || {
        facts
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, f)| scopes_meet(f.scope(), change))
    };
    let (reads, writes) = body_places(&change.kind);
    let field = |kind: &Kind| match kind {
        Kind::Rename { .. } | Kind::RenameHeader { .. } => "from",
        Kind::Add { .. }
        | Kind::Remove { .. }
        | Kind::Map { .. }
        | Kind::Wrap { .. }
        | Kind::RewritePath { .. }
        | Kind::MapStatus { .. } => "at",
    };
    for read in &reads {
        for (_, fact) in meeting() {
            match fact {
                Fact::Written { at, .. } if read.within(at) || at.within(read) => break,
                Fact::Gone { at, by, .. } if read.within(at) => {
                    errs.push(ConfigError::at(
                        format!("{path}.{}", field(&change.kind)),
                        format!(
                            "{} no longer exists here: {by} moved or removed {}",
                            read.describe(),
                            at.describe()
                        ),
                    ));
                    break;
                }
                Fact::OnlyKey { at, key, by, .. }
                    if read.segs.len() > at.segs.len()
                        && read.within(at)
                        && read.segs[at.segs.len()].name() != Some(key) =>
                {
                    errs.push(ConfigError::at(
                        format!("{path}.{}", field(&change.kind)),
                        format!(
                            "{} no longer exists here: {by} wrapped {} under {key:?}",
                            read.describe(),
                            at.describe()
                        ),
                    ));
                    break;
                }
                _ => {}
            }
        }
    }
    let write_field = match change.kind {
        Kind::Rename { .. } => "to",
        _ => "at",
    };
    for write in &writes {
        for (_, fact) in meeting() {
            match fact {
                Fact::Gone { at, .. } if write.within(at) => break,
                Fact::Written { at, by, .. } if at == write => {
                    errs.push(ConfigError::at(
                        format!("{path}.{write_field}"),
                        format!("{write} already exists: {by} put it there, so this change could not be undone"),
                    ));
                    break;
                }
                _ => {}
            }
        }
    }
    match &change.kind {
        Kind::RenameHeader { from, to } => {
            for (_, fact) in meeting() {
                match fact {
                    Fact::HeaderWritten { name, .. } if name == from => break,
                    Fact::HeaderGone { name, by, .. } if name == from => {
                        errs.push(ConfigError::at(
                            format!("{path}.from"),
                            format!("header {from} no longer exists here: {by} renamed it"),
                        ));
                        break;
                    }
                    _ => {}
                }
            }
            for (_, fact) in meeting() {
                match fact {
                    Fact::HeaderGone { name, .. } if name == to => break,
                    Fact::HeaderWritten { name, by, .. } if name == to => {
                        errs.push(ConfigError::at(
                            format!("{path}.to"),
                            format!("header {to} already exists: {by} renamed a header to it"),
                        ));
                        break;
                    }
                    _ => {}
                }
            }
        }
        Kind::MapStatus { from, to } => {
            for (_, fact) in meeting().filter(|(k, _)| *k >= own_start) {
                if let Fact::Status { code, by, .. } = fact
                    && (code == from || code == to)
                {
                    errs.push(ConfigError::at(
                        format!("{path}.from_status"),
                        format!("{by} of the same version already maps {code}: the downgrade could not tell them apart"),
                    ));
                }
            }
        }
        Kind::RewritePath { to, .. } => {
            for (_, fact) in meeting().filter(|(k, _)| *k >= own_start) {
                if let Fact::Rewritten { to: other, by, .. } = fact
                    && other.overlaps(to)
                {
                    errs.push(ConfigError::at(
                        format!("{path}.to"),
                        format!("{to} overlaps {other} from {by}: the downgrade could not tell them apart"),
                    ));
                }
            }
        }
        Kind::Rename { .. }
        | Kind::Add { .. }
        | Kind::Remove { .. }
        | Kind::Map { .. }
        | Kind::Wrap { .. } => {}
    }
}

/// Records what a change leaves true.
fn record(change: &Arc<Change>, path: &str, facts: &mut Vec<Fact>) {
    let by = path.to_string();
    let scope = change.clone();
    match &change.kind {
        Kind::Rename { .. } | Kind::Add { .. } | Kind::Remove { .. } => {
            let (reads, writes) = body_places(&change.kind);
            if matches!(change.kind, Kind::Rename { .. } | Kind::Remove { .. }) {
                for at in reads.into_iter().take(1) {
                    facts.push(Fact::Gone {
                        at,
                        scope: scope.clone(),
                        by: by.clone(),
                    });
                }
            }
            for at in writes {
                facts.push(Fact::Written {
                    at,
                    scope: scope.clone(),
                    by: by.clone(),
                });
            }
        }
        Kind::Wrap { at, key, unwrap } => {
            if *unwrap {
                let mut segs = at.segs.to_vec();
                segs.push(Seg::key(key));
                facts.push(Fact::Gone {
                    at: Pointer { segs: segs.into() },
                    scope,
                    by,
                });
            } else {
                facts.push(Fact::OnlyKey {
                    at: at.clone(),
                    key: key.as_str().into(),
                    scope,
                    by,
                });
            }
        }
        Kind::Map { .. } => {}
        Kind::RenameHeader { from, to } => {
            facts.push(Fact::HeaderGone {
                name: from.clone(),
                scope: scope.clone(),
                by: by.clone(),
            });
            facts.push(Fact::HeaderWritten {
                name: to.clone(),
                scope,
                by,
            });
        }
        Kind::MapStatus { from, to } => {
            for code in [*from, *to] {
                facts.push(Fact::Status {
                    code,
                    scope: scope.clone(),
                    by: by.clone(),
                });
            }
        }
        Kind::RewritePath { to, .. } => facts.push(Fact::Rewritten {
            to: to.clone(),
            scope,
            by,
        }),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Origin, parse};

    fn errors(versions: &str) -> Vec<String> {
        let doc = parse(versions, Origin::Embedded("test")).expect("parses");
        crate::translate::validate(&doc)
            .into_iter()
            .map(|e| format!("{}: {}", e.path, e.reason))
            .collect()
    }

    fn v2(changes: &str) -> String {
        format!(
            "[[versions]]\nname = \"v1\"\nstatus = \"stable\"\n\n\
             [[versions]]\nname = \"v2\"\nstatus = \"current\"\n{changes}"
        )
    }

    #[test]
    fn the_readme_example_is_valid() {
        assert_eq!(
            errors(&crate::translate::tests::example_toml()),
            Vec::<String>::new()
        );
    }

    #[test]
    fn rejected_tables() {
        let c = |body: &str| v2(&format!("[[versions.changes]]\n{body}\n"));
        let cases: Vec<(&str, String, &str)> = vec![
            (
                "missing field",
                c("op = \"rename\"\nfrom = \"/a\""),
                "versions[1].changes[0].to: required for op \"rename\"",
            ),
            (
                "field of another op",
                c("op = \"rename\"\nfrom = \"/a\"\nto = \"/b\"\nat = \"/c\""),
                "versions[1].changes[0].at: not used by op \"rename\"",
            ),
            (
                "bad pointer",
                c("op = \"remove\"\nat = \"a\""),
                "versions[1].changes[0].at: \"a\" is not a JSON pointer",
            ),
            (
                "remove needs a key",
                c("op = \"remove\"\nat = \"/a/*\""),
                "versions[1].changes[0].at: /a/* must end in a key",
            ),
            (
                "wildcard outside the shared part",
                c("op = \"rename\"\nfrom = \"/a/*/x\"\nto = \"/b/*/x\""),
                "versions[1].changes[0].to: /a/*/x -> /b/*/x: every * must be in the part both pointers share",
            ),
            (
                "rename into itself",
                c("op = \"rename\"\nfrom = \"/a\"\nto = \"/a/b\""),
                "versions[1].changes[0].to: /a/b and /a contain one another",
            ),
            (
                "map not reversible",
                c("op = \"map\"\nat = \"/s\"\nvalues = { a = \"x\", b = \"x\" }"),
                "versions[1].changes[0].values.b: \"a\" and \"b\" both map to \"x\"",
            ),
            (
                "restore default without default",
                c("op = \"remove\"\nat = \"/a\"\nrestore = \"default\""),
                "versions[1].changes[0].default: required when restore = \"default\"",
            ),
            (
                "add without default",
                c("op = \"add\"\nat = \"/a\""),
                "versions[1].changes[0].default: required for op \"add\"",
            ),
            (
                "rewrite with different captures",
                c("op = \"rewrite_path\"\nfrom = \"/w/{id}\"\nto = \"/e/{event}\""),
                "versions[1].changes[0].to: captures {event} must be the same as from's {id}",
            ),
            (
                "rewrite with an unnamed wildcard",
                c("op = \"rewrite_path\"\nfrom = \"/w/*\"\nto = \"/e/*\""),
                "versions[1].changes[0].from: \"/w/*\": name every wildcard",
            ),
            (
                "bad path scope",
                c("op = \"add\"\nat = \"/a\"\ndefault = 1\npaths = [\"/a/**/b\"]"),
                "versions[1].changes[0].paths[0]: \"/a/**/b\": ** may only be the last segment",
            ),
            (
                "lower-case method",
                c("op = \"add\"\nat = \"/a\"\ndefault = 1\nmethods = [\"get\"]"),
                "versions[1].changes[0].methods[0]: \"get\" is not a method name",
            ),
            (
                "framing header",
                c("op = \"rename_header\"\nfrom = \"content-length\"\nto = \"x-len\""),
                "versions[1].changes[0].from: hop-by-hop and framing headers",
            ),
            (
                "forwarding header",
                c("op = \"rename_header\"\nfrom = \"x-correlation-id\"\nto = \"x-request-id\""),
                "versions[1].changes[0].from: the gateway sets x-forwarded-for",
            ),
            (
                "status out of range",
                c("op = \"map_status\"\nfrom_status = 200\nto_status = 99"),
                "versions[1].changes[0].to_status: 99 is not a final status code",
            ),
            (
                "status on requests",
                c("op = \"map_status\"\nfrom_status = 200\nto_status = 201\ndirection = \"request\""),
                "versions[1].changes[0].direction: a status is mapped on responses",
            ),
            (
                "first version has nothing to change from",
                "[[versions]]\nname = \"v1\"\nstatus = \"stable\"\n[[versions.changes]]\nop = \"add\"\nat = \"/a\"\ndefault = 1\n".into(),
                "versions[0].changes: the first version has no previous version",
            ),
            (
                "unknown changes_from",
                v2("changes_from = \"v9\"\n"),
                "versions[1].changes_from: unknown version \"v9\"",
            ),
            (
                "changes_from a later version",
                v2("changes_from = \"v3\"\n") + "[[versions]]\nname = \"v3\"\nstatus = \"beta\"\n",
                "versions[1].changes_from: \"v3\" must be listed before \"v2\"",
            ),
        ];
        for (name, text, want) in cases {
            let errs = errors(&text);
            assert!(
                errs.iter().any(|e| e.starts_with(want)),
                "{name}: want {want:?} in {errs:#?}"
            );
        }
    }

    #[test]
    fn impossible_chains() {
        let chain = |v2: &str, v3: &str| {
            format!(
                "[[versions]]\nname = \"v1\"\nstatus = \"stable\"\n\
                 [[versions]]\nname = \"v2\"\nstatus = \"current\"\n{v2}\n\
                 [[versions]]\nname = \"v3\"\nstatus = \"beta\"\n{v3}\n"
            )
        };
        let rename = |from: &str, to: &str, extra: &str| {
            format!(
                "[[versions.changes]]\nop = \"rename\"\nfrom = \"{from}\"\nto = \"{to}\"\n{extra}\n"
            )
        };
        let cases: Vec<(&str, String, Option<&str>)> = vec![
            (
                "reads a field moved away",
                chain(
                    &rename("/a", "/b", ""),
                    "[[versions.changes]]\nop = \"map\"\nat = \"/a\"\nvalues = { x = \"y\" }",
                ),
                Some(
                    "versions[2].changes[0].at: /a no longer exists here: versions[1].changes[0] moved or removed /a",
                ),
            ),
            (
                "reads under a field moved away",
                chain(
                    &rename("/client", "/customer", ""),
                    &rename("/client/name", "/client_name", ""),
                ),
                Some("versions[2].changes[0].from: /client/name no longer exists here"),
            ),
            (
                "reads a field written back",
                chain(
                    &(rename("/a", "/b", "") + &rename("/c", "/a", "")),
                    &rename("/a", "/d", ""),
                ),
                None,
            ),
            (
                "scopes that never meet",
                chain(
                    &rename("/a", "/b", "paths = [\"/x/**\"]"),
                    &rename("/a", "/c", "paths = [\"/y/**\"]"),
                ),
                None,
            ),
            (
                "request-only and response-only",
                chain(
                    &rename("/a", "/b", "direction = \"request\""),
                    &rename("/a", "/c", "direction = \"response\""),
                ),
                None,
            ),
            (
                "writes a field that exists",
                chain(
                    &rename("/a", "/b", ""),
                    "[[versions.changes]]\nop = \"add\"\nat = \"/b\"\ndefault = 1",
                ),
                Some(
                    "versions[2].changes[0].at: /b already exists: versions[1].changes[0] put it there",
                ),
            ),
            (
                "two renames onto one field",
                chain(&(rename("/a", "/c", "") + &rename("/b", "/c", "")), ""),
                Some("versions[1].changes[1].to: /c already exists"),
            ),
            (
                "reads past a wrap",
                chain(
                    "[[versions.changes]]\nop = \"wrap\"\nat = \"\"\nkey = \"items\"",
                    &rename("/*/a", "/*/b", ""),
                ),
                Some(
                    "versions[2].changes[0].from: /*/a no longer exists here: versions[1].changes[0] wrapped the whole body under \"items\"",
                ),
            ),
            (
                "reads inside the wrapper",
                chain(
                    "[[versions.changes]]\nop = \"wrap\"\nat = \"\"\nkey = \"items\"",
                    &rename("/items/*/a", "/items/*/b", ""),
                ),
                None,
            ),
            (
                "header renamed away",
                chain(
                    "[[versions.changes]]\nop = \"rename_header\"\nfrom = \"x-a\"\nto = \"x-b\"",
                    "[[versions.changes]]\nop = \"rename_header\"\nfrom = \"x-a\"\nto = \"x-c\"",
                ),
                Some("versions[2].changes[0].from: header x-a no longer exists here"),
            ),
            (
                "two status maps on one code",
                chain(
                    "[[versions.changes]]\nop = \"map_status\"\nfrom_status = 200\nto_status = 201\n\
                     [[versions.changes]]\nop = \"map_status\"\nfrom_status = 202\nto_status = 201",
                    "",
                ),
                Some(
                    "versions[1].changes[1].from_status: versions[1].changes[0] of the same version already maps 201",
                ),
            ),
            (
                "two rewrites onto overlapping paths",
                chain(
                    "[[versions.changes]]\nop = \"rewrite_path\"\nfrom = \"/w/{id}\"\nto = \"/e/{id}\"\n\
                     [[versions.changes]]\nop = \"rewrite_path\"\nfrom = \"/p/{id}\"\nto = \"/e/{id}\"",
                    "",
                ),
                Some("versions[1].changes[1].to: /e/{id} overlaps /e/{id}"),
            ),
        ];
        for (name, text, want) in cases {
            let errs = errors(&text);
            match want {
                Some(want) => assert!(
                    errs.iter().any(|e| e.starts_with(want)),
                    "{name}: want {want:?} in {errs:#?}"
                ),
                None => assert!(errs.is_empty(), "{name}: {errs:#?}"),
            }
        }
    }

    #[test]
    fn config_validate_reports_translation_errors() {
        let text = v2("[[versions.changes]]\nop = \"rename\"\nfrom = \"/a\"\n")
            + "[[pools]]\nname = \"p\"\nversion = \"v2\"\nendpoints = [\"127.0.0.1:1\"]\n\
               [[routes]]\nname = \"r\"\ndefault_version = \"v2\"\n";
        let err = crate::config::load(&text, Origin::Embedded("t")).unwrap_err();
        assert!(
            err.to_string()
                .contains("versions[1].changes[0].to: required for op \"rename\""),
            "{err}"
        );
    }
}
