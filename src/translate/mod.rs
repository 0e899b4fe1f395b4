//! Version translation: the declarative change chains that let a client of
//! one API version be served by a pool of another. Owns the `changes` part of
//! the document (`doc`), their compilation and chain rules (`check`), the
//! changes themselves (`ops`), and the per-(client, target) `Plan`s that
//! apply them to a request on the way up and to its response on the way down.
//!
//! Leaves to the pipeline: deciding whether to buffer a body (it asks
//! [`Plan::request_body_needed`] and [`has_json_body`]), buffering up to the
//! route's limit, choosing 400/413/502 for a [`TranslateError`], and metrics.
//! Knows nothing about sockets, routes or pools.
//!
//! Invariants:
//! * Each version's changes lead to it from its parent: the version listed
//!   just before it, or the one named by `changes_from`. Versions form a tree
//!   rooted at the first; a plan walks from the client's version up to the
//!   common ancestor (each change undone, newest first) and down to the
//!   target (each change applied, in order). Sunset versions stay in the
//!   tree: their changes are still the way from their parent to their child.
//! * Everything is compiled once per table: pointers and patterns parsed,
//!   keys prepared, every plan precomputed (with which steps share a scope).
//!   At request time a plan walks its steps, running consecutive body
//!   changes over the same wildcard (`/items/*`) in one walk of the body;
//!   the body is a [`Json`] tree borrowing from the bytes it was parsed
//!   from, and the keys and values a change writes borrow from the plan.
//! * Nothing is half-translated: bodies are passed by value and dropped on
//!   error, and path, headers and status are committed only after the body
//!   succeeded (header, path and status changes cannot fail).

mod check;
pub mod doc;
mod json;
mod ops;
mod path;
mod pointer;
mod value;

use std::sync::Arc;

use http::{HeaderMap, Method, StatusCode};

pub use doc::{ChangeDoc, Direction, Op, Responses, Restore};
pub use json::{
    DEFAULT_MAX_BYTES, DEFAULT_MAX_DEPTH, Limits, MAX_DEPTH, has_json_body, is_json, parse_json,
    set_body_headers, to_bytes,
};
pub use ops::ChangeId;
pub use value::Json;

use crate::config::{ConfigError, Document};
use crate::version::{MAX_VERSIONS, VersionId};
use ops::{Change, Dir, Kind, Stash, StashUse};

/// Why a body could not be translated. For a request the client is at fault
/// (400, or 413 for [`TranslateError::TooLarge`]); for a response the
/// upstream is (502).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    /// Not JSON at all.
    #[error("invalid JSON at line {line}, column {column}: {reason}")]
    InvalidJson {
        /// 1-based line.
        line: usize,
        /// 1-based column (0 at the very start).
        column: usize,
        /// serde_json's reason, without the position.
        reason: String,
    },
    /// An object repeats a key; we refuse to pick one.
    #[error("duplicate object key at {path}")]
    DuplicateKey {
        /// JSON pointer of the repeated key.
        path: String,
    },
    /// Nested deeper than the limit.
    #[error("JSON nested deeper than {limit} levels")]
    TooDeep {
        /// The limit.
        limit: usize,
    },
    /// Larger than the limit.
    #[error("body larger than {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
    /// A rename would overwrite a value already at its destination.
    #[error("{change}: {pointer:?} already exists")]
    Collision {
        /// The change that failed.
        change: ChangeId,
        /// The concrete destination.
        pointer: String,
    },
    /// A rename's destination runs through a value that is not an object.
    #[error("{change}: {pointer:?} is not an object")]
    NotAnObject {
        /// The change that failed.
        change: ChangeId,
        /// The concrete pointer of the non-object.
        pointer: String,
    },
    /// Unwrapping would drop the wrapper's other keys.
    #[error("{change}: {pointer:?} has keys besides the one to unwrap")]
    ExtraKeys {
        /// The change that failed.
        change: ChangeId,
        /// The concrete pointer of the wrapper.
        pointer: String,
    },
}

impl TranslateError {
    /// Short label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            TranslateError::InvalidJson { .. } => "invalid_json",
            TranslateError::DuplicateKey { .. } => "duplicate_key",
            TranslateError::TooDeep { .. } => "too_deep",
            TranslateError::TooLarge { .. } => "too_large",
            TranslateError::Collision { .. } => "collision",
            TranslateError::NotAnObject { .. } => "not_an_object",
            TranslateError::ExtraKeys { .. } => "extra_keys",
        }
    }
}

/// Checks the `changes` and `changes_from` of every version: field rules,
/// pointers, patterns and the chain rules. Empty when all is well. Safe on
/// any parsed document (other problems are `config::validate`'s).
pub fn validate(doc: &Document) -> Vec<ConfigError> {
    check::compile(doc).err().unwrap_or_default()
}

/// Every plan of a table, by (client version, target version).
#[derive(Debug, Default)]
pub struct TranslationTable {
    versions: usize,
    /// `versions * versions` entries; `None` where nothing changes.
    plans: Box<[Option<Plan>]>,
}

impl TranslationTable {
    /// Compiles the chains of a document that passed [`validate`]. `Err`
    /// holds the same errors `validate` reports.
    pub fn compile(doc: &Document) -> Result<TranslationTable, Vec<ConfigError>> {
        let compiled = check::compile(doc)?;
        let n = doc.versions.len();
        if n > MAX_VERSIONS {
            return Err(vec![ConfigError::at(
                "versions",
                format!("at most {MAX_VERSIONS} versions"),
            )]);
        }
        let mut plans = Vec::with_capacity(n * n);
        for from in 0..n {
            for to in 0..n {
                plans.push(Plan::build(&compiled, from, to));
            }
        }
        Ok(TranslationTable {
            versions: n,
            plans: plans.into(),
        })
    }

    /// The plan for a client of version `client` served by a pool of version
    /// `target`; `None` when the two are the same or nothing changes between
    /// them, i.e. the message passes untouched. Ids are indexes into the
    /// document's `versions`, like [`VersionId`] everywhere.
    pub fn plan(&self, client: VersionId, target: VersionId) -> Option<&Plan> {
        let (c, t) = (usize::from(client), usize::from(target));
        if c >= self.versions || t >= self.versions {
            return None;
        }
        self.plans[c * self.versions + t].as_ref()
    }
}

/// One change of a plan and the way it runs on requests.
#[derive(Debug, Clone)]
struct Step {
    change: Arc<Change>,
    dir: Dir,
    /// An earlier step with the same paths and methods, and no path
    /// rewrite in between: this step matches a request exactly when that
    /// one does, so `exchange` copies its answer instead of matching again.
    same_scope: Option<u32>,
}

/// The changes between one client version and one target version, in
/// request order (responses run them backwards, each inverted).
#[derive(Debug)]
pub struct Plan {
    steps: Box<[Step]>,
}

/// What the request leg learned for the response leg: which steps matched
/// the request (method and path as they were at that step), the rewritten
/// path, and values removed from the request body to restore later. Keep it
/// for the response of the same request.
#[derive(Debug, Default)]
pub struct Exchange {
    matched: Matched,
    path: Option<String>,
    stash: Stash,
}

impl Exchange {
    fn is_matched(&self, step: usize) -> bool {
        self.matched.get(step)
    }
}

/// One bit per plan step. The first 64 sit in line: plans that long are
/// rare, and a vector cost an allocation per exchange.
#[derive(Debug, Default)]
struct Matched {
    first: u64,
    rest: Vec<u64>,
}

impl Matched {
    fn new(steps: usize) -> Matched {
        Matched {
            first: 0,
            rest: vec![0; steps.saturating_sub(64).div_ceil(64)],
        }
    }

    #[inline]
    fn get(&self, step: usize) -> bool {
        let word = match step / 64 {
            0 => self.first,
            n => self.rest.get(n - 1).copied().unwrap_or(0),
        };
        word & (1 << (step % 64)) != 0
    }

    #[inline]
    fn set(&mut self, step: usize) {
        let bit = 1 << (step % 64);
        match step / 64 {
            0 => self.first |= bit,
            n => self.rest[n - 1] |= bit,
        }
    }
}

impl Plan {
    fn build(compiled: &check::Compiled, from: usize, to: usize) -> Option<Plan> {
        if from == to {
            return None;
        }
        let ancestry = |mut v: usize| {
            let mut line = vec![v];
            while let Some(p) = compiled.parent[v] {
                line.push(p);
                v = p;
            }
            line
        };
        let (up, down) = (ancestry(from), ancestry(to));
        let common = *up.iter().find(|v| down.contains(v))?;
        let mut steps = Vec::new();
        // Client side: undo each version's changes, newest version and
        // newest change first, until the common ancestor.
        for &v in up.iter().take_while(|&&v| v != common) {
            for change in compiled.changes[v].iter().rev() {
                steps.push(Step {
                    change: change.clone(),
                    dir: Dir::Down,
                    same_scope: None,
                });
            }
        }
        // Target side: apply each version's changes from the common
        // ancestor's child to the target, in order.
        let below: Vec<usize> = down.iter().copied().take_while(|&v| v != common).collect();
        for &v in below.iter().rev() {
            for change in &compiled.changes[v] {
                steps.push(Step {
                    change: change.clone(),
                    dir: Dir::Up,
                    same_scope: None,
                });
            }
        }
        let rewrites = |c: &Change| matches!(c.kind, Kind::RewritePath { .. });
        for i in 0..steps.len() {
            let here = &steps[i].change;
            if rewrites(here) {
                continue;
            }
            let earlier = steps[..i]
                .iter()
                .rposition(|s| {
                    rewrites(&s.change)
                        || (s.change.scope.paths == here.scope.paths
                            && s.change.scope.methods == here.scope.methods)
                })
                .filter(|&j| !rewrites(&steps[j].change));
            steps[i].same_scope = earlier.map(|j| j as u32);
        }
        (!steps.is_empty()).then(|| Plan {
            steps: steps.into(),
        })
    }

    /// Number of changes the plan runs through.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// Whether the plan has no changes (never true for a plan from
    /// [`TranslationTable::plan`]).
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Matches the request against every step's scope, following path
    /// rewrites, without changing anything. `path` is the path to be
    /// forwarded (after the `/vN` segment is stripped), without the query.
    pub fn exchange(&self, method: &Method, path: &str) -> Exchange {
        let mut matched = Matched::new(self.steps.len());
        let mut current: Option<String> = None;
        for (i, step) in self.steps.iter().enumerate() {
            let change = &step.change;
            let here = current.as_deref().unwrap_or(path);
            let hit = if let Some(j) = step.same_scope {
                matched.get(j as usize)
            } else {
                match &change.kind {
                    // A rewrite's own pattern is its path scope; its response
                    // half (Location headers) needs only the method.
                    Kind::RewritePath { .. } => change.scope.admits_method(method),
                    Kind::Rename { .. }
                    | Kind::Add { .. }
                    | Kind::Remove { .. }
                    | Kind::Map { .. }
                    | Kind::Wrap { .. }
                    | Kind::RenameHeader { .. }
                    | Kind::MapStatus { .. } => change.scope.admits(method, here),
                }
            };
            if !hit {
                continue;
            }
            matched.set(i);
            // Only a path rewrite rewrites: the kind is tested here, in
            // line, rather than by a call per matched step.
            if change.scope.direction.request()
                && matches!(change.kind, Kind::RewritePath { .. })
                && let Some(new) = change.rewrite(step.dir, here)
            {
                current = Some(new);
            }
        }
        Exchange {
            matched,
            path: current.filter(|p| p != path),
            stash: Stash::new(),
        }
    }

    /// Whether any matched step changes the request body: if not, the
    /// pipeline can stream it untouched.
    pub fn request_body_needed(&self, ex: &Exchange) -> bool {
        self.steps.iter().enumerate().any(|(i, s)| {
            ex.is_matched(i) && s.change.scope.direction.request() && s.change.kind.is_body()
        })
    }

    /// Whether any matched step changes the body of a response with this
    /// upstream status: if not, the pipeline can stream it untouched.
    pub fn response_body_needed(&self, ex: &Exchange, status: StatusCode) -> bool {
        let mut status = status;
        for (i, step) in self.steps.iter().enumerate().rev() {
            if let Some(dir) = self.response_dir(ex, i, status) {
                if step.change.kind.is_body() {
                    return true;
                }
                status = step.change.map_status(dir, status);
            }
        }
        false
    }

    /// Translates a request: `path` (the path to forward, no query) and
    /// `headers` always, `body` when given (a parsed JSON body; `None` when
    /// there is none or it is not JSON, and it then streams untouched).
    /// Returns the translated body.
    ///
    /// On `Err` the path and headers are unchanged and the body is dropped:
    /// nothing half-translated can be forwarded. The pipeline answers 400.
    pub fn request<'a>(
        &'a self,
        ex: &mut Exchange,
        path: &mut String,
        headers: &mut HeaderMap,
        body: Option<Json<'a>>,
    ) -> Result<Option<Json<'a>>, TranslateError> {
        let body = match body {
            Some(mut value) => {
                // Sized once: collecting a filter grows the vector from
                // nothing, an allocation per doubling.
                let mut active = Vec::with_capacity(self.steps.len());
                active.extend(
                    (self.steps.iter().enumerate())
                        .filter(|(i, step)| {
                            ex.is_matched(*i)
                                && step.change.scope.direction.request()
                                && step.change.kind.is_body()
                        })
                        .map(|(i, step)| (i, step.dir)),
                );
                let ran = self.run_body(&mut value, &active, &mut StashUse::Record(&mut ex.stash));
                if let Err(e) = ran {
                    ex.stash.clear();
                    return Err(e);
                }
                Some(value)
            }
            None => None,
        };
        for (i, step) in self.steps.iter().enumerate() {
            if ex.is_matched(i) && step.change.scope.direction.request() {
                step.change.apply_headers(step.dir, headers);
            }
        }
        if let Some(p) = ex.path.take() {
            *path = p;
        }
        Ok(body)
    }

    /// Translates the response to a request that went through
    /// [`Plan::request`] (or at least [`Plan::exchange`]): `status` and
    /// `headers` always, `body` when given. Returns the translated body.
    ///
    /// On `Err` the status and headers are unchanged and the body is
    /// dropped. The pipeline answers 502.
    pub fn response<'a>(
        &'a self,
        ex: &Exchange,
        status: &mut StatusCode,
        headers: &mut HeaderMap,
        body: Option<Json<'a>>,
    ) -> Result<Option<Json<'a>>, TranslateError> {
        let body = match body {
            Some(mut value) => {
                let mut s = *status;
                let mut active = Vec::with_capacity(self.steps.len());
                for (i, step) in self.steps.iter().enumerate().rev() {
                    if let Some(dir) = self.response_dir(ex, i, s) {
                        if step.change.kind.is_body() {
                            active.push((i, dir));
                        }
                        s = step.change.map_status(dir, s);
                    }
                }
                self.run_body(&mut value, &active, &mut StashUse::Restore(&ex.stash))?;
                Some(value)
            }
            None => None,
        };
        let mut s = *status;
        for (i, step) in self.steps.iter().enumerate().rev() {
            if let Some(dir) = self.response_dir(ex, i, s) {
                step.change.apply_headers(dir, headers);
                if matches!(step.change.kind, Kind::RewritePath { .. }) {
                    step.change.rewrite_locations(dir, headers);
                }
                s = step.change.map_status(dir, s);
            }
        }
        *status = s;
        Ok(body)
    }

    /// Runs the body changes `active` (step, direction), in order, on
    /// `body`. Consecutive changes with the same [`ops::Change::base`] run
    /// in one walk: each element the base matches gets all of them in turn,
    /// instead of one walk (and one lookup of every key on the way) per
    /// change. Elements are disjoint subtrees, so the result is the one
    /// change-by-change order gives, and so is the error: after a change
    /// fails, later elements get only the changes before it (which would
    /// have run on every element), and the failure of the earliest change,
    /// at its first failing element, is the one reported.
    fn run_body<'a>(
        &'a self,
        body: &mut Json<'a>,
        active: &[(usize, Dir)],
        stash: &mut StashUse<'_>,
    ) -> Result<(), TranslateError> {
        let mut binds = Vec::new();
        let mut rest = active;
        while let Some(&(first, _)) = rest.first() {
            let base = self.steps[first].change.base();
            let n = rest
                .iter()
                .take_while(|(i, _)| self.steps[*i].change.base() == base)
                .count();
            let (group, tail) = rest.split_at(n);
            rest = tail;
            let mut failed = None;
            let mut limit = group.len();
            let root = body.root();
            // `Err(())` only stops the walk once no change is left to run.
            let _ = pointer::for_each(body, root, base, &mut binds, &mut |doc, id, b| {
                for (k, &(i, dir)) in group[..limit].iter().enumerate() {
                    let change = &self.steps[i].change;
                    if let Err(e) = change.apply_at(dir, doc, id, b, i as u32, stash) {
                        failed = Some(e);
                        limit = k;
                        break;
                    }
                }
                if limit == 0 { Err(()) } else { Ok(()) }
            });
            if let Some(e) = failed {
                return Err(e);
            }
        }
        Ok(())
    }

    /// The direction step `i` runs in on a response with status `status` at
    /// that point, or `None` when it does not apply.
    fn response_dir(&self, ex: &Exchange, i: usize, status: StatusCode) -> Option<Dir> {
        let step = &self.steps[i];
        let scope = &step.change.scope;
        (ex.is_matched(i) && scope.direction.response() && scope.responses.admits(status.as_u16()))
            .then(|| step.dir.inverse())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use http::{HeaderValue, header};
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;
    use crate::config::{Origin, parse};

    /// The README example: the WedSync v1 -> v2 -> v2.2-beta chain.
    /// The README's WedSync example, so the documented table is the tested one.
    pub(crate) const EXAMPLE: &str = include_str!("../../README.md");

    pub(crate) fn example_toml() -> String {
        let section = EXAMPLE
            .find("### Example: WedSync")
            .expect("example section");
        let start = section + EXAMPLE[section..].find("```toml\n").expect("example block") + 8;
        let len = EXAMPLE[start..].find("```").expect("block end");
        EXAMPLE[start..start + len].to_string()
    }

    pub(crate) fn table(text: &str) -> TranslationTable {
        let doc = parse(text, Origin::Embedded("test")).expect("parses");
        TranslationTable::compile(&doc).unwrap_or_else(|e| panic!("{e:#?}"))
    }

    /// Versions v1 and v2; `changes` are `[[versions.changes]]` tables of v2.
    pub(crate) fn two(changes: &str) -> TranslationTable {
        table(&format!(
            "[[versions]]\nname = \"v1\"\nstatus = \"stable\"\n\n\
             [[versions]]\nname = \"v2\"\nstatus = \"current\"\n{changes}"
        ))
    }

    /// A `json!` value as the gateway receives it: its text.
    pub(crate) fn wire(v: &Value) -> Vec<u8> {
        serde_json::to_vec(v).expect("serialises")
    }

    /// A body as the parser makes it.
    pub(crate) fn tree(text: &[u8]) -> Json<'_> {
        parse_json(text, Limits::default()).expect("valid JSON")
    }

    /// A translated body as a `serde_json::Value`, through its text, for
    /// comparing with `json!`.
    pub(crate) fn value_of(j: &Json<'_>) -> Value {
        serde_json::from_slice(&to_bytes(j)).expect("the serialiser writes JSON")
    }

    /// Runs the request leg on a body; returns it with the exchange.
    pub(crate) fn up(
        plan: &Plan,
        method: Method,
        path: &str,
        body: Value,
    ) -> Result<(Value, Exchange), TranslateError> {
        let text = wire(&body);
        let body = parse_json(&text, Limits::default()).expect("valid JSON");
        let mut ex = plan.exchange(&method, path);
        let mut p = path.to_string();
        let out = plan.request(&mut ex, &mut p, &mut HeaderMap::new(), Some(body))?;
        Ok((value_of(&out.expect("body in, body out")), ex))
    }

    /// Runs the response leg on a body with status 200.
    pub(crate) fn down(plan: &Plan, ex: &Exchange, body: Value) -> Result<Value, TranslateError> {
        let text = wire(&body);
        let body = parse_json(&text, Limits::default()).expect("valid JSON");
        let out = plan.response(
            ex,
            &mut StatusCode::from_u16(200).unwrap(),
            &mut HeaderMap::new(),
            Some(body),
        )?;
        Ok(value_of(&out.expect("body in, body out")))
    }

    fn json_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h
    }

    struct Exchanged {
        path: String,
        body: Option<Value>,
    }

    fn request(
        plan: &Plan,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (Exchanged, Exchange) {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let mut ex = plan.exchange(&method, path);
        let mut p = path.to_string();
        let text = body.as_ref().map(wire);
        let body = text
            .as_deref()
            .map(|t| parse_json(t, Limits::default()).expect("valid JSON"));
        let body = plan
            .request(&mut ex, &mut p, &mut json_headers(), body)
            .unwrap();
        let body = body.as_ref().map(value_of);
        (Exchanged { path: p, body }, ex)
    }

    fn response(plan: &Plan, ex: &Exchange, status: u16, body: Value) -> (u16, Value) {
        let mut s = StatusCode::from_u16(status).unwrap();
        let text = wire(&body);
        let body = parse_json(&text, Limits::default()).expect("valid JSON");
        let body = plan
            .response(ex, &mut s, &mut json_headers(), Some(body))
            .unwrap()
            .unwrap();
        (s.as_u16(), value_of(&body))
    }

    #[test]
    fn matched_steps_past_the_first_word() {
        // Plans longer than 64 steps keep their other bits in a vector.
        let set = [0, 1, 63, 64, 127, 128, 129];
        let mut m = Matched::new(130);
        for i in set {
            m.set(i);
        }
        for i in 0..130 {
            assert_eq!(m.get(i), set.contains(&i), "step {i}");
        }
        assert!(
            !Matched::new(3).get(200),
            "a step past the plan never matched"
        );
    }

    const V1: VersionId = 0;
    const V2: VersionId = 1;
    const BETA: VersionId = 2;

    #[test]
    fn example_chain_v1_client_on_beta_pool() {
        let t = table(&example_toml());
        let plan = t.plan(V1, BETA).expect("a chain");

        // Create: path, body and the 201 -> 200.
        let sent = json!({"client_name": "Ann", "wedding_date": "2027-06-12", "status": "booked"});
        let (req, ex) = request(plan, "POST", "/api/weddings", Some(sent));
        assert_eq!(req.path, "/api/events");
        assert_eq!(
            req.body,
            Some(json!({
                "client": {"name": "Ann"}, "event": {"date": "2027-06-12"},
                "status": "confirmed", "currency": "EUR"
            }))
        );
        let stored = json!({
            "id": 7, "client": {"name": "Ann"}, "event": {"date": "2027-06-12"},
            "status": "confirmed", "currency": "EUR"
        });
        assert_eq!(
            response(plan, &ex, 201, stored),
            (
                200,
                json!({"id": 7, "client_name": "Ann", "wedding_date": "2027-06-12", "status": "booked"})
            )
        );

        // The list: unwrapped, every element flattened.
        let (req, ex) = request(plan, "GET", "/api/weddings", None);
        assert_eq!((req.path.as_str(), req.body), ("/api/events", None));
        let list = json!({"items": [
            {"id": 1, "client": {"name": "Ann"}, "event": {"date": "2027-06-12"}, "status": "confirmed", "currency": "EUR"},
            {"id": 2, "client": {"name": "Bo"}, "event": {"date": "2027-07-01"}, "status": "pending", "currency": "GBP"}
        ]});
        assert_eq!(
            response(plan, &ex, 200, list),
            (
                200,
                json!([
                    {"id": 1, "client_name": "Ann", "wedding_date": "2027-06-12", "status": "booked"},
                    {"id": 2, "client_name": "Bo", "wedding_date": "2027-07-01", "status": "pending"}
                ])
            )
        );

        // An error body, and the header rename on the way up.
        let (mut path, mut headers) = ("/api/weddings/9".to_string(), json_headers());
        headers.insert("x-wedding-id", HeaderValue::from_static("9"));
        let mut ex = plan.exchange(&Method::GET, &path);
        plan.request(&mut ex, &mut path, &mut headers, None)
            .unwrap();
        assert_eq!(path, "/api/events/9");
        assert_eq!(headers.get("x-event-id").unwrap(), "9");
        assert!(headers.get("x-wedding-id").is_none());
        let problem = json!({"error": {"code": "not_found", "message": "no event 9"}});
        assert_eq!(
            response(plan, &ex, 404, problem),
            (404, json!({"code": "not_found", "message": "no event 9"}))
        );
    }

    #[test]
    fn example_chain_beta_client_on_v1_pool_runs_backwards() {
        let t = table(&example_toml());
        let plan = t.plan(BETA, V1).expect("a chain");
        let sent = json!({
            "client": {"name": "Ann"}, "event": {"date": "2027-06-12"},
            "status": "confirmed", "currency": "EUR"
        });
        let (req, ex) = request(plan, "POST", "/api/events", Some(sent.clone()));
        assert_eq!(req.path, "/api/weddings");
        assert_eq!(
            req.body,
            Some(json!({"client_name": "Ann", "wedding_date": "2027-06-12", "status": "booked"}))
        );
        let (status, body) = response(
            plan,
            &ex,
            200,
            json!({"client_name": "Ann", "wedding_date": "2027-06-12", "status": "booked"}),
        );
        assert_eq!(status, 201);
        assert_eq!(body, sent, "currency comes back from its default");
    }

    #[test]
    fn same_version_and_unchanged_versions_have_no_plan() {
        let t = table(&example_toml());
        assert!(t.plan(V2, V2).is_none());
        assert!(t.plan(V1, 9).is_none(), "unknown ids have no plan");
        let t = two("");
        assert!(t.plan(V1, V2).is_none(), "v2 declares no changes");
    }

    #[test]
    fn composed_plan_equals_the_steps_one_after_another() {
        let t = table(&example_toml());
        let bodies = [
            json!({"client_name": "Ann", "wedding_date": "2027-06-12", "status": "booked", "n": 1}),
            json!({"status": "cancelled"}),
        ];
        for body in bodies {
            let (direct, _) = up(
                t.plan(V1, BETA).unwrap(),
                Method::PUT,
                "/api/weddings/1",
                body.clone(),
            )
            .unwrap();
            let (first, _) = up(
                t.plan(V1, V2).unwrap(),
                Method::PUT,
                "/api/weddings/1",
                body,
            )
            .unwrap();
            let (second, _) = up(
                t.plan(V2, BETA).unwrap(),
                Method::PUT,
                "/api/events/1",
                first,
            )
            .unwrap();
            assert_eq!(direct, second);
        }
    }

    #[test]
    fn changes_from_branches_the_tree() {
        let t = table(
            r#"
[[versions]]
name = "v1"
status = "stable"
[[versions]]
name = "v2"
status = "current"
[[versions.changes]]
op = "rename"
from = "/a"
to = "/b"
[[versions]]
name = "v2.2-beta"
status = "beta"
[[versions.changes]]
op = "add"
at = "/beta"
default = true
[[versions]]
name = "v3"
status = "beta"
changes_from = "v2"
[[versions.changes]]
op = "add"
at = "/v3"
default = 3
"#,
        );
        let plan = t.plan(BETA, 3).expect("beta -> v2 -> v3");
        let (body, ex) = up(plan, Method::POST, "/x", json!({"b": 1, "beta": false})).unwrap();
        assert_eq!(
            body,
            json!({"b": 1, "v3": 3}),
            "beta's field undone, v3's added"
        );
        assert_eq!(
            down(plan, &ex, json!({"b": 2, "v3": 3})).unwrap(),
            json!({"b": 2, "beta": true})
        );
        let (body, _) = up(t.plan(V1, 3).unwrap(), Method::POST, "/x", json!({"a": 1})).unwrap();
        assert_eq!(
            body,
            json!({"b": 1, "v3": 3}),
            "v1 -> v2 -> v3 skips the beta"
        );
    }

    #[test]
    fn scope_cases() {
        // (name, scope lines, method, path, status, applies on request, applies on response)
        let cases: &[(&str, &str, &str, &str, u16, bool, bool)] = &[
            ("no scope", "", "GET", "/x", 200, true, true),
            (
                "path hit",
                "paths = [\"/a/*\"]",
                "GET",
                "/a/1",
                200,
                true,
                true,
            ),
            (
                "path miss",
                "paths = [\"/a/*\"]",
                "GET",
                "/b/1",
                200,
                false,
                false,
            ),
            (
                "method miss",
                "methods = [\"POST\"]",
                "GET",
                "/x",
                200,
                false,
                false,
            ),
            (
                "request only",
                "direction = \"request\"",
                "GET",
                "/x",
                200,
                true,
                false,
            ),
            (
                "response only",
                "direction = \"response\"",
                "GET",
                "/x",
                200,
                false,
                true,
            ),
            (
                "success on 404",
                "responses = \"success\"",
                "GET",
                "/x",
                404,
                true,
                false,
            ),
            (
                "error on 404",
                "responses = \"error\"",
                "GET",
                "/x",
                404,
                true,
                true,
            ),
            (
                "error on 200",
                "responses = \"error\"",
                "GET",
                "/x",
                200,
                true,
                false,
            ),
        ];
        for (name, scope, method, path, status, want_req, want_resp) in cases {
            let t = two(&format!(
                "[[versions.changes]]\nop = \"rename\"\nfrom = \"/a\"\nto = \"/b\"\n{scope}\n"
            ));
            let plan = t.plan(V1, V2).unwrap();
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            let (got, ex) = up(plan, method, path, json!({"a": 1})).unwrap();
            assert_eq!(got == json!({"b": 1}), *want_req, "{name}: request");
            let mut s = StatusCode::from_u16(*status).unwrap();
            let got = plan
                .response(
                    &ex,
                    &mut s,
                    &mut HeaderMap::new(),
                    Some(tree(br#"{"b":1}"#)),
                )
                .unwrap();
            assert_eq!(
                got.as_ref().map(value_of) == Some(json!({"a": 1})),
                *want_resp,
                "{name}: response"
            );
            assert_eq!(
                plan.response_body_needed(&ex, StatusCode::from_u16(*status).unwrap()),
                *want_resp,
                "{name}: response_body_needed"
            );
        }
    }

    #[test]
    fn head_only_plans_do_not_need_bodies() {
        let t = two("[[versions.changes]]\nop = \"rename_header\"\nfrom = \"x-a\"\nto = \"x-b\"\n");
        let plan = t.plan(V1, V2).unwrap();
        let ex = plan.exchange(&Method::POST, "/x");
        assert!(!plan.request_body_needed(&ex));
        assert!(!plan.response_body_needed(&ex, StatusCode::OK));
        let t = two(
            "[[versions.changes]]\nop = \"add\"\nat = \"/a\"\ndefault = 1\nmethods = [\"PUT\"]\n",
        );
        let plan = t.plan(V1, V2).unwrap();
        assert!(!plan.request_body_needed(&plan.exchange(&Method::POST, "/x")));
        assert!(plan.request_body_needed(&plan.exchange(&Method::PUT, "/x")));
    }

    #[test]
    fn head_change_cases() {
        let t = two(r#"
[[versions.changes]]
op = "rename_header"
from = "x-wedding-id"
to = "x-event-id"
[[versions.changes]]
op = "rewrite_path"
from = "/v1/weddings/{id}"
to = "/v2/events/{id}"
[[versions.changes]]
op = "rewrite_path"
from = "/old/{*rest}"
to = "/new/{*rest}"
[[versions.changes]]
op = "map_status"
from_status = 422
to_status = 400
"#);
        let plan = t.plan(V1, V2).unwrap();
        let paths = [
            ("/v1/weddings/7", "/v2/events/7"),
            ("/v1/weddings", "/v1/weddings"),
            ("/old", "/new"),
            ("/old/a/b/", "/new/a/b/"),
            ("/other", "/other"),
        ];
        for (from, want) in paths {
            let mut ex = plan.exchange(&Method::GET, from);
            let mut path = from.to_string();
            let mut headers = HeaderMap::new();
            headers.append("x-wedding-id", HeaderValue::from_static("1"));
            headers.append("x-wedding-id", HeaderValue::from_static("2"));
            plan.request(&mut ex, &mut path, &mut headers, None)
                .unwrap();
            assert_eq!(path, want, "{from}");
            let ids: Vec<_> = headers.get_all("x-event-id").iter().collect();
            assert_eq!(ids, ["1", "2"], "every value moves");
        }

        let ex = plan.exchange(&Method::POST, "/v1/weddings");
        let cases = [
            (400, "/v2/events/9", 422, "/v1/weddings/9"),
            (
                201,
                "https://api.example.com/v2/events/9?x=1#f",
                201,
                "https://api.example.com/v1/weddings/9?x=1#f",
            ),
            (200, "/elsewhere", 200, "/elsewhere"),
        ];
        for (status, location, want_status, want_location) in cases {
            let mut s = StatusCode::from_u16(status).unwrap();
            let mut h = HeaderMap::new();
            h.insert(header::LOCATION, HeaderValue::from_str(location).unwrap());
            h.insert("x-event-id", HeaderValue::from_static("9"));
            assert_eq!(plan.response(&ex, &mut s, &mut h, None), Ok(None));
            assert_eq!(s.as_u16(), want_status, "{location}");
            assert_eq!(h.get(header::LOCATION).unwrap(), want_location);
            assert_eq!(h.get("x-wedding-id").unwrap(), "9");
        }
    }

    #[test]
    fn failed_response_changes_nothing() {
        let t = two(r#"
[[versions.changes]]
op = "rename_header"
from = "x-a"
to = "x-b"
[[versions.changes]]
op = "map_status"
from_status = 200
to_status = 201
[[versions.changes]]
op = "wrap"
at = ""
key = "items"
"#);
        let plan = t.plan(V1, V2).unwrap();
        let ex = plan.exchange(&Method::GET, "/x");
        let mut s = StatusCode::CREATED;
        let mut h = HeaderMap::new();
        h.insert("x-b", HeaderValue::from_static("1"));
        let before = h.clone();
        let err = plan
            .response(
                &ex,
                &mut s,
                &mut h,
                Some(tree(br#"{"items":[],"next":"c"}"#)),
            )
            .unwrap_err();
        assert_eq!(err.kind(), "extra_keys");
        assert_eq!(
            err.to_string(),
            "v2 changes[2]: \"\" has keys besides the one to unwrap"
        );
        assert_eq!((s, h), (StatusCode::CREATED, before), "head untouched");
    }

    #[test]
    fn failed_request_changes_nothing() {
        let t = two(r#"
[[versions.changes]]
op = "rewrite_path"
from = "/a"
to = "/b"
[[versions.changes]]
op = "rename"
from = "/x"
to = "/y"
"#);
        let plan = t.plan(V1, V2).unwrap();
        let mut ex = plan.exchange(&Method::POST, "/a");
        let (mut path, mut headers) = ("/a".to_string(), HeaderMap::new());
        let err = plan
            .request(
                &mut ex,
                &mut path,
                &mut headers,
                Some(tree(br#"{"x":1,"y":2}"#)),
            )
            .unwrap_err();
        assert_eq!(
            err,
            TranslateError::Collision {
                change: ChangeId {
                    version: "v2".into(),
                    index: 1
                },
                pointer: "/y".into()
            }
        );
        assert_eq!(path, "/a");
    }

    #[test]
    fn changes_walked_together_fail_as_one_by_one() {
        // Both renames run in one walk over `/g/*`: the second fails on
        // element 0 before the first fails on element 1, yet change by
        // change the first one fails first, and that is the error.
        let t = two(r#"
[[versions.changes]]
op = "rename"
from = "/g/*/a"
to = "/g/*/b"
[[versions.changes]]
op = "rename"
from = "/g/*/c"
to = "/g/*/d"
"#);
        let plan = t.plan(V1, V2).unwrap();
        let body = json!({"g": [{"c": 1, "d": 2}, {"a": 1, "b": 2}]});
        let err = up(plan, Method::POST, "/x", body).unwrap_err();
        assert_eq!(
            err,
            TranslateError::Collision {
                change: ChangeId {
                    version: "v2".into(),
                    index: 0
                },
                pointer: "/g/1/b".into()
            }
        );
        let ok = json!({"g": [{"a": 1, "c": 2}, {"x": 3}, {"c": 4}]});
        let (got, _) = up(plan, Method::POST, "/x", ok).unwrap();
        assert_eq!(got, json!({"g": [{"b": 1, "d": 2}, {"x": 3}, {"d": 4}]}));
    }

    #[test]
    fn big_numbers_survive_a_chain() {
        let t = table(&example_toml());
        let plan = t.plan(V1, BETA).unwrap();
        let text = br#"{"client_name":"A","total":12345678901234567890123,"tiny":1e-400,"ratio":0.1000000000000000055511151231257827,"e":[1E5,-0,2.50e+0]}"#;
        let body = parse_json(text, Limits::default()).unwrap();
        let path = "/api/weddings/1";
        let mut ex = plan.exchange(&Method::PUT, path);
        let upgraded = plan
            .request(&mut ex, &mut path.into(), &mut HeaderMap::new(), Some(body))
            .unwrap()
            .unwrap();
        let wire = to_bytes(&upgraded);
        let shown = std::str::from_utf8(&wire).unwrap();
        for n in [
            "12345678901234567890123",
            "1e-400",
            "0.1000000000000000055511151231257827",
            "[1E5,-0,2.50e+0]",
        ] {
            assert!(shown.contains(n), "{n} in {shown}");
        }
        let parsed = parse_json(&wire, Limits::default()).unwrap();
        let back = plan
            .response(
                &ex,
                &mut StatusCode::from_u16(200).unwrap(),
                &mut HeaderMap::new(),
                Some(parsed),
            )
            .unwrap()
            .unwrap();
        assert_eq!(
            to_bytes(&back),
            bytes::Bytes::from_static(
                br#"{"client_name":"A","e":[1E5,-0,2.50e+0],"ratio":0.1000000000000000055511151231257827,"tiny":1e-400,"total":12345678901234567890123}"#
            )
        );
    }

    /// Any JSON value, small; numbers include ones no f64 holds.
    fn any_json() -> impl Strategy<Value = Value> {
        let number = prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            "[1-9][0-9]{19,30}",
            "-?[0-9]\\.[0-9]{1,40}",
            "[1-9]e-[3-4][0-9]{2}",
        ]
        .prop_map(|t| Value::Number(t.parse().expect("valid number text")));
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            number,
            "[a-z ]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z]{1,3}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A v1 event: the example's fields plus arbitrary others (keys of
    /// four letters or more, so they never meet a field the chain writes).
    fn v1_event() -> impl Strategy<Value = Value> {
        (
            proptest::option::of("[A-Za-z ]{0,6}"),
            proptest::option::of("[0-9-]{10}"),
            proptest::option::of(prop_oneof![
                Just("booked"),
                Just("pending"),
                Just("cancelled")
            ]),
            prop::collection::btree_map("[w-z]{4,6}", any_json(), 0..4),
        )
            .prop_map(|(name, date, status, extra)| {
                let mut m: serde_json::Map<String, Value> = extra.into_iter().collect();
                if let Some(n) = name {
                    m.insert("client_name".into(), json!(n));
                }
                if let Some(d) = date {
                    m.insert("wedding_date".into(), json!(d));
                }
                if let Some(s) = status {
                    m.insert("status".into(), json!(s));
                }
                Value::Object(m)
            })
    }

    proptest! {
        #[test]
        fn json_round_trips_exactly(v in any_json()) {
            let wire = wire(&v);
            let back = to_bytes(&parse_json(&wire, Limits::default()).unwrap());
            prop_assert_eq!(back, wire);
        }

        #[test]
        fn upgrade_then_downgrade_is_identity(body in v1_event(), list in prop::collection::vec(v1_event(), 0..4)) {
            let t = table(&example_toml());
            for target in [V2, BETA] {
                let plan = t.plan(V1, target).unwrap();
                // One event: the upstream echoes what it got.
                let (upgraded, ex) = up(plan, Method::PUT, "/api/weddings/1", body.clone()).unwrap();
                prop_assert_eq!(down(plan, &ex, upgraded).unwrap(), body.clone());
                // The list endpoint on the response leg: what v2 would list.
                let ex = plan.exchange(&Method::GET, "/api/weddings");
                let v1_list = Value::Array(list.clone());
                let upgraded = upgrade_list(&t, target, &v1_list);
                prop_assert_eq!(down(plan, &ex, upgraded).unwrap(), v1_list);
            }
        }

        #[test]
        fn composing_equals_stepping(body in v1_event()) {
            let t = table(&example_toml());
            let (direct, _) = up(t.plan(V1, BETA).unwrap(), Method::PUT, "/api/weddings/3", body.clone()).unwrap();
            let (mid, _) = up(t.plan(V1, V2).unwrap(), Method::PUT, "/api/weddings/3", body).unwrap();
            let (stepped, _) = up(t.plan(V2, BETA).unwrap(), Method::PUT, "/api/events/3", mid).unwrap();
            prop_assert_eq!(direct, stepped);
        }

        #[test]
        fn remove_restores_what_the_request_sent(notes in any_json(), keep in any_json()) {
            let t = two("[[versions.changes]]\nop = \"remove\"\nat = \"/notes\"\nrestore = \"request\"\n");
            let plan = t.plan(V1, V2).unwrap();
            let body = json!({"notes": notes, "keep": keep});
            let (upgraded, ex) = up(plan, Method::POST, "/x", body.clone()).unwrap();
            prop_assert!(upgraded.get("notes").is_none());
            prop_assert_eq!(down(plan, &ex, upgraded).unwrap(), body);
        }
    }

    /// What a v2 (or later) pool lists for these v1 events: the response
    /// leg's input, built with the reverse plan's response leg.
    fn upgrade_list(t: &TranslationTable, target: VersionId, v1_list: &Value) -> Value {
        let rev = t.plan(target, V1).unwrap();
        let ex = rev.exchange(&Method::GET, "/api/weddings");
        down(rev, &ex, v1_list.clone()).unwrap()
    }
}
