//! The translation part of the routing document: the ordered changes a
//! version declares relative to the version it comes from. Plain serde
//! structs; every rule about which fields an `op` needs lives in
//! `translate::check`, so errors carry a field path instead of serde's
//! "data did not match any variant".
//!
//! One flat struct rather than an internally tagged enum: serde cannot
//! combine `deny_unknown_fields` with a flattened scope, and repeating the
//! four scope fields in nine variants would repeat their docs too.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One change from the previous version to this one, written as the
/// upgrade. Downgrades run it backwards, so every change is reversible.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeDoc {
    /// What changes: `rename`, `add`, `remove`, `map`, `wrap`, `unwrap`,
    /// `rename_header`, `rewrite_path` or `map_status`. Required.
    pub op: Op,
    /// Note for people (changelog line); not used by the gateway. Default none.
    pub description: Option<String>,
    /// `rename`: JSON pointer in the older version (`/guests/*/full_name`);
    /// `rename_header`: the older header name; `rewrite_path`: the older path
    /// pattern (`/weddings/{id}`). Required by those ops, refused by others.
    pub from: Option<String>,
    /// `rename`: JSON pointer in the newer version; `rename_header`: the newer
    /// header name; `rewrite_path`: the newer path pattern. Required by those
    /// ops, refused by others.
    pub to: Option<String>,
    /// `add`, `remove`, `map`, `wrap`, `unwrap`: JSON pointer of the value the
    /// change works on (`""` is the whole body; `*` is every array element).
    /// Required by those ops, refused by others.
    pub at: Option<String>,
    /// `add`: the value a newer-version message gets when the field is absent
    /// (any TOML value). `remove`: the value an older-version message gets
    /// back when the field cannot be restored from the request. Default none.
    pub default: Option<serde_json::Value>,
    /// `remove`: where a downgraded message gets the field back from:
    /// `default` (the `default` value) or `request` (the value the client
    /// sent in this request's body, else `default` when set). Default: the
    /// field stays absent.
    pub restore: Option<Restore>,
    /// `map`: older value -> newer value, strings both sides
    /// (`{ booked = "confirmed" }`); newer values must be distinct. Values
    /// not listed pass through unchanged. Required by `map`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub values: BTreeMap<String, String>,
    /// `wrap`: the key the newer version puts the value under
    /// (`[...]` -> `{"items": [...]}`); `unwrap`: the key the older version
    /// had it under. Required by those ops.
    pub key: Option<String>,
    /// `map_status`: the response status code in the older version. Required
    /// by `map_status`.
    pub from_status: Option<u16>,
    /// `map_status`: the response status code in the newer version. Required
    /// by `map_status`.
    pub to_status: Option<u16>,
    /// Request paths the change applies to, as the forwarded path (after the
    /// `/vN` segment is stripped, without the query) at this point of the
    /// chain: literal segments, `*` or `{name}` for any one segment, a final
    /// `**` for any rest. Default: every path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Request methods the change applies to (`GET`, `POST`, ...). Default: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// `request`, `response` or `both`. Default `both`.
    #[serde(default)]
    pub direction: Direction,
    /// Which responses the change applies to, by status: `all`, `success`
    /// (below 400) or `error` (400 and above). Default `all`; absent fields
    /// are left alone, so most changes are safe on error bodies too.
    #[serde(default)]
    pub responses: Responses,
}

/// The kind of a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Move a field from `from` to `to` (within the same array element when
    /// the pointers have `*`).
    Rename,
    /// The newer version has a field the older lacks: set `default` on
    /// upgrade when absent, drop it on downgrade.
    Add,
    /// The newer version dropped a field: remove it on upgrade, give it back
    /// on downgrade per `restore`.
    Remove,
    /// An enum value changed: `values` maps older to newer strings.
    Map,
    /// The newer version wraps the value at `at` in `{key: value}`.
    Wrap,
    /// The newer version unwraps `{key: value}` at `at` to `value`.
    Unwrap,
    /// A header was renamed from `from` to `to` (requests and responses).
    RenameHeader,
    /// The request path changed from pattern `from` to pattern `to`
    /// (`Location` and `Content-Location` of responses follow back).
    RewritePath,
    /// A response status changed from `from_status` to `to_status`.
    MapStatus,
}

impl Op {
    /// The name used in config and errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Rename => "rename",
            Op::Add => "add",
            Op::Remove => "remove",
            Op::Map => "map",
            Op::Wrap => "wrap",
            Op::Unwrap => "unwrap",
            Op::RenameHeader => "rename_header",
            Op::RewritePath => "rewrite_path",
            Op::MapStatus => "map_status",
        }
    }
}

/// Which messages a change applies to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Requests only.
    Request,
    /// Responses only.
    Response,
    /// Requests and responses.
    #[default]
    Both,
}

impl Direction {
    pub(crate) fn request(self) -> bool {
        matches!(self, Direction::Request | Direction::Both)
    }
    pub(crate) fn response(self) -> bool {
        matches!(self, Direction::Response | Direction::Both)
    }
}

/// Which responses, by status class, a change applies to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Responses {
    /// Every status.
    #[default]
    All,
    /// Status below 400.
    Success,
    /// Status 400 and above.
    Error,
}

impl Responses {
    pub(crate) fn admits(self, status: u16) -> bool {
        match self {
            Responses::All => true,
            Responses::Success => status < 400,
            Responses::Error => status >= 400,
        }
    }
}

/// Where a removed field comes back from on downgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Restore {
    /// The change's `default`.
    Default,
    /// The value the client sent at the same place in this request's body;
    /// the change's `default` when it sent none.
    Request,
}
