//! API versions: names and aliases (`2`, `v2`, `v2.1.0`, `v2.*` -> `v2`),
//! detection from a request (header, `Accept`, path, query, pin, default, in
//! the route's precedence), and lifecycle (deprecation headers, sunset,
//! beta allow-lists). Everything here is compiled into the table once;
//! detection reads only borrowed request data and allocates nothing.

use std::collections::HashMap;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::{self, Source, Status};

/// Index of a version in the table's `versions`.
pub type VersionId = u16;

/// Most versions one table may hold (routes keep a `u64` bitmask of them).
pub const MAX_VERSIONS: usize = 64;

/// A parsed version string: up to three numbers, an optional pre-release
/// tag and an optional trailing `*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec<'a> {
    nums: [u32; 3],
    len: u8,
    pre: Option<&'a str>,
}

impl<'a> Spec<'a> {
    /// Parses `v2`, `2`, `v2.1.0`, `v2.*`, `2.2-beta` (case of the `v` ignored).
    /// Returns `None` for anything else.
    pub fn parse(s: &'a str) -> Option<Self> {
        let s = s.strip_prefix(['v', 'V']).unwrap_or(s);
        let (core, pre) = match s.split_once('-') {
            Some((c, p)) => {
                let ok = !p.is_empty()
                    && p.len() <= 32
                    && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.');
                if !ok {
                    return None;
                }
                (c, Some(p))
            }
            None => (s, None),
        };
        let mut nums = [0u32; 3];
        let mut len = 0u8;
        let mut parts = core.split('.').peekable();
        while let Some(part) = parts.next() {
            if part == "*" && parts.peek().is_none() && len > 0 && pre.is_none() {
                break;
            }
            if len == 3 || part.is_empty() || part.len() > 9 {
                return None;
            }
            if !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            nums[len as usize] = part.parse().ok()?;
            len += 1;
        }
        (len > 0).then_some(Spec { nums, len, pre })
    }

    fn numbers(&self) -> &[u32] {
        &self.nums[..self.len as usize]
    }
}

/// Why a version string named by a client did not resolve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolveError {
    /// Not a version string at all.
    Malformed,
    /// Well-formed, but no version in the table matches.
    Unknown,
}

/// Maps client-supplied version strings to versions. Built once per table.
#[derive(Debug, Default)]
pub struct Resolver {
    exact: HashMap<Box<str>, VersionId>,
    structured: Vec<(Vec<u32>, Option<Box<str>>, VersionId)>,
}

impl Resolver {
    /// Builds the resolver from validated version documents (names parse).
    pub fn compile(versions: &[config::VersionDoc]) -> Self {
        let mut r = Resolver::default();
        for (id, v) in versions.iter().enumerate() {
            let id = id as VersionId;
            let lower = v.name.to_ascii_lowercase();
            let bare = lower.strip_prefix('v').unwrap_or(&lower).to_string();
            r.exact.insert(bare.into(), id);
            r.exact.insert(lower.into(), id);
            for alias in &v.aliases {
                r.exact.insert(alias.to_ascii_lowercase().into(), id);
            }
            let spec = Spec::parse(&v.name).expect("validated version name");
            r.structured.push((
                spec.numbers().to_vec(),
                spec.pre.map(|p| p.to_ascii_lowercase().into()),
                id,
            ));
        }
        r
    }

    /// Resolves a client's version string: an exact name or alias first, then
    /// the most specific version whose numbers prefix the request's
    /// (`v2.1.0` -> `v2` unless a `v2.1` exists).
    pub fn resolve(&self, raw: &str) -> Result<VersionId, ResolveError> {
        let raw = raw.trim();
        if raw.is_empty() || raw.len() > 64 {
            return Err(ResolveError::Malformed);
        }
        let mut buf = [0u8; 64];
        let lower =
            crate::headers::ascii_lowercase(raw, &mut buf).ok_or(ResolveError::Malformed)?;
        if let Some(&id) = self.exact.get(lower) {
            return Ok(id);
        }
        let spec = Spec::parse(lower).ok_or(ResolveError::Malformed)?;
        self.structured
            .iter()
            .filter(|(nums, pre, _)| {
                pre.as_deref() == spec.pre
                    && nums.len() <= spec.numbers().len()
                    && spec.numbers().starts_with(nums)
            })
            .max_by_key(|(nums, _, _)| nums.len())
            .map(|(_, _, id)| *id)
            .ok_or(ResolveError::Unknown)
    }
}

/// A route's compiled detection settings.
#[derive(Debug, Clone)]
pub struct Detection {
    /// Sources in precedence order (the default is implied last).
    pub order: Vec<Source>,
    /// The version header.
    pub header: HeaderName,
    /// `vnd.wedsync.` — the vendor prefix for `Accept` subtypes, with its dot.
    pub accept_vendor: String,
    /// Query parameter name.
    pub query_param: String,
    /// Header identifying the client.
    pub client_header: HeaderName,
    /// Header carrying the client's API key (sticky splits, rate limits).
    pub api_key_header: HeaderName,
    /// Whether a detected `/vN` path segment is removed before forwarding.
    pub strip_path_version: bool,
    /// `Vary` value naming the request headers detection reads.
    pub vary: HeaderValue,
}

impl Detection {
    /// Merges route overrides over the table defaults over built-in defaults.
    /// Header names were validated.
    pub fn compile(
        top: &config::DetectionSettings,
        route: &config::DetectionSettings,
    ) -> Detection {
        let order = route
            .order
            .clone()
            .or_else(|| top.order.clone())
            .unwrap_or_else(|| {
                vec![
                    Source::Header,
                    Source::Accept,
                    Source::Path,
                    Source::Query,
                    Source::Pin,
                ]
            });
        let pick = |r: &Option<String>, t: &Option<String>, d: &str| {
            r.clone()
                .or_else(|| t.clone())
                .unwrap_or_else(|| d.to_string())
        };
        let header = pick(&route.header, &top.header, "x-api-version").to_ascii_lowercase();
        let client =
            pick(&route.client_header, &top.client_header, "x-client-id").to_ascii_lowercase();
        let mut vary = Vec::new();
        for s in &order {
            match s {
                Source::Header => vary.push(header.as_str()),
                Source::Accept => vary.push("accept"),
                Source::Pin => vary.push(client.as_str()),
                Source::Path | Source::Query | Source::Default => {}
            }
        }
        Detection {
            header: HeaderName::try_from(header.as_str()).expect("validated header name"),
            client_header: HeaderName::try_from(client.as_str()).expect("validated header name"),
            api_key_header: HeaderName::try_from(
                pick(&route.api_key_header, &top.api_key_header, "x-api-key")
                    .to_ascii_lowercase()
                    .as_str(),
            )
            .expect("validated header name"),
            accept_vendor: format!(
                "{}.",
                pick(&route.accept_vendor, &top.accept_vendor, "vnd.wedsync")
            ),
            query_param: pick(&route.query_param, &top.query_param, "api-version"),
            strip_path_version: route
                .strip_path_version
                .or(top.strip_path_version)
                .unwrap_or(true),
            vary: HeaderValue::from_str(&vary.join(", ")).expect("header names are valid values"),
            order,
        }
    }
}

/// What detection decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detected {
    /// The client's version.
    pub version: VersionId,
    /// Which source decided.
    pub source: Source,
    /// Byte range of the path's `/vN` segment to strip before forwarding.
    pub strip: Option<(usize, usize)>,
}

/// A version string from a request that did not resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetectError {
    /// The source that carried it.
    pub source: Source,
    /// What the client sent (truncated to 64 bytes).
    pub requested: String,
    /// Malformed or unknown.
    pub kind: ResolveError,
}

/// The request data detection reads.
pub struct RequestView<'a> {
    /// Normalised path.
    pub path: &'a str,
    /// Raw query string, if any.
    pub query: Option<&'a str>,
    /// Request headers.
    pub headers: &'a HeaderMap,
    /// Length of the matched route prefix within `path` (the path source
    /// looks at the segment after it).
    pub prefix_len: usize,
}

/// Detects the client's version: the first source in `detection.order` that
/// carries a version decides; a source that carries an unresolvable version
/// is an error (never silently skipped). Falls back to `default`.
pub fn detect(
    detection: &Detection,
    resolver: &Resolver,
    pins: &HashMap<Box<str>, VersionId>,
    default: VersionId,
    req: &RequestView<'_>,
) -> Result<Detected, DetectError> {
    for &source in &detection.order {
        let found: Option<(&str, Option<(usize, usize)>)> = match source {
            // A scan of the request's few names, not a hash of this one:
            // see `headers::find`.
            Source::Header => crate::headers::find(req.headers, &detection.header)
                .map(|v| (v.to_str().unwrap_or("\u{fffd}"), None)),
            Source::Accept => {
                accept_version(req.headers, &detection.accept_vendor).map(|v| (v, None))
            }
            Source::Path => path_version(req.path, req.prefix_len)
                .map(|(v, range)| (v, detection.strip_path_version.then_some(range))),
            Source::Query => req
                .query
                .and_then(|q| query_param(q, &detection.query_param))
                .map(|v| (v, None)),
            Source::Pin => {
                let client = req
                    .headers
                    .get(&detection.client_header)
                    .and_then(|v| v.to_str().ok());
                if let Some(&version) = client.and_then(|c| pins.get(c)) {
                    return Ok(Detected {
                        version,
                        source,
                        strip: None,
                    });
                }
                None
            }
            Source::Default => None,
        };
        if let Some((raw, strip)) = found {
            return match resolver.resolve(raw) {
                Ok(version) => Ok(Detected {
                    version,
                    source,
                    strip,
                }),
                Err(kind) => Err(DetectError {
                    source,
                    requested: raw.chars().take(64).collect(),
                    kind,
                }),
            };
        }
    }
    Ok(Detected {
        version: default,
        source: Source::Default,
        strip: None,
    })
}

/// The version named in `Accept`: `application/vnd.wedsync.v2+json` or a
/// `version=2` parameter on any media range. The first range that names one wins.
fn accept_version<'h>(headers: &'h HeaderMap, vendor: &str) -> Option<&'h str> {
    for value in headers.get_all(http::header::ACCEPT) {
        let Ok(value) = value.to_str() else { continue };
        for range in value.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim();
            if let Some((_, subtype)) = media.split_once('/')
                && subtype.len() > vendor.len()
                && subtype.as_bytes()[..vendor.len()].eq_ignore_ascii_case(vendor.as_bytes())
            {
                let rest = &subtype[vendor.len()..];
                let version = rest.split_once('+').map_or(rest, |(v, _)| v);
                if !version.is_empty() {
                    return Some(version);
                }
            }
            for param in parts {
                if let Some((k, v)) = param.split_once('=')
                    && k.trim().eq_ignore_ascii_case("version")
                {
                    return Some(v.trim().trim_matches('"'));
                }
            }
        }
    }
    None
}

/// The first path segment after the route prefix, when it looks like a
/// version (`v` followed by a digit), with the byte range to strip
/// (the leading `/` and the segment).
fn path_version(path: &str, prefix_len: usize) -> Option<(&str, (usize, usize))> {
    let rest = path.get(prefix_len..)?;
    let (start, rest) = match rest.strip_prefix('/') {
        Some(r) => (prefix_len, r),
        // The prefix may have kept its trailing slash.
        None if prefix_len > 0 && path.as_bytes()[prefix_len - 1] == b'/' => (prefix_len - 1, rest),
        None => return None,
    };
    let seg = rest.split('/').next().unwrap_or("");
    let b = seg.as_bytes();
    if b.len() >= 2 && (b[0] == b'v' || b[0] == b'V') && b[1].is_ascii_digit() {
        let end = start + 1 + seg.len();
        Some((seg, (start, end)))
    } else {
        None
    }
}

/// The first value of `name` in a query string, undecoded (version strings
/// need no escaping; one that has it fails to resolve and is reported).
fn query_param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

/// A version's compiled lifecycle.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    /// Status from the document.
    pub status: Status,
    /// `Deprecation: @<unix-seconds>` (RFC 9745).
    pub deprecation: Option<HeaderValue>,
    /// `Sunset: <HTTP-date>` (RFC 8594).
    pub sunset: Option<HeaderValue>,
    /// `Link: <url>; rel="deprecation"`.
    pub link: Option<HeaderValue>,
    /// After this instant the version answers 410.
    pub sunset_at: Option<jiff::Timestamp>,
}

impl Lifecycle {
    /// Compiles header values from a validated version document.
    pub fn compile(v: &config::VersionDoc) -> Lifecycle {
        // Validation requires `deprecated_at` for deprecated versions; a
        // future date announces the deprecation ahead (RFC 9745 allows it).
        let deprecation = v
            .deprecated_at
            .map(|t| HeaderValue::from_str(&format!("@{}", t.as_second())).expect("digits"));
        let sunset = v.sunset_at.map(|t| {
            let when =
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.as_second().max(0) as u64);
            HeaderValue::from_str(&httpdate::fmt_http_date(when)).expect("http-date")
        });
        let link = v.doc_url.as_ref().map(|url| {
            HeaderValue::from_str(&format!("<{url}>; rel=\"deprecation\"; type=\"text/html\""))
                .expect("validated url")
        });
        Lifecycle {
            status: v.status,
            deprecation,
            sunset,
            link,
            sunset_at: v.sunset_at,
        }
    }

    /// Whether the version is past its sunset at `now`.
    pub fn is_sunset(&self, now: jiff::Timestamp) -> bool {
        self.status == Status::Sunset || self.sunset_at.is_some_and(|at| now >= at)
    }

    /// [`Lifecycle::is_sunset`] now, reading the clock only for a version
    /// with a sunset date (most have none: no clock read per request).
    pub fn is_sunset_now(&self) -> bool {
        self.status == Status::Sunset
            || self
                .sunset_at
                .is_some_and(|at| jiff::Timestamp::now() >= at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::VersionDoc;

    fn doc(name: &str, aliases: &[&str]) -> VersionDoc {
        VersionDoc {
            name: name.into(),
            aliases: aliases.iter().map(|s| s.to_string()).collect(),
            status: Status::Stable,
            deprecated_at: None,
            sunset_at: None,
            successor: None,
            doc_url: None,
            allow_clients: vec![],
            changes_from: None,
            changes: vec![],
        }
    }

    fn resolver() -> Resolver {
        Resolver::compile(&[
            doc("v1", &["legacy"]),
            doc("v2", &[]),
            doc("v2.2-beta", &["beta"]),
        ])
    }

    #[test]
    fn aliases_and_ranges_resolve() {
        let r = resolver();
        let cases: &[(&str, &str, Result<VersionId, ResolveError>)] = &[
            ("bare major", "2", Ok(1)),
            ("v-prefixed", "v2", Ok(1)),
            ("upper-case V", "V2", Ok(1)),
            ("full semver", "v2.1.0", Ok(1)),
            ("minor wildcard", "v2.*", Ok(1)),
            ("bare wildcard", "2.*", Ok(1)),
            ("declared alias", "legacy", Ok(0)),
            ("alias case-insensitive", "LEGACY", Ok(0)),
            ("pre-release by name", "v2.2-beta", Ok(2)),
            ("pre-release bare", "2.2-beta", Ok(2)),
            ("pre-release alias", "beta", Ok(2)),
            ("padded", "  v1 ", Ok(0)),
            ("unknown major", "v9", Err(ResolveError::Unknown)),
            (
                "unknown pre-release",
                "v2.2-rc1",
                Err(ResolveError::Unknown),
            ),
            ("garbage", "latest!", Err(ResolveError::Malformed)),
            ("empty", "", Err(ResolveError::Malformed)),
            ("too many parts", "1.2.3.4", Err(ResolveError::Malformed)),
            ("wildcard first", "*", Err(ResolveError::Malformed)),
            ("too long", &"9".repeat(80), Err(ResolveError::Malformed)),
        ];
        for (name, input, want) in cases {
            assert_eq!(r.resolve(input), *want, "case {name}: {input:?}");
        }
    }

    fn detection(order: &[Source]) -> Detection {
        let top = config::DetectionSettings {
            order: Some(order.to_vec()),
            ..Default::default()
        };
        Detection::compile(&top, &Default::default())
    }

    fn run(
        order: &[Source],
        path: &str,
        query: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Result<Detected, DetectError> {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                HeaderName::try_from(*k).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let mut pins = HashMap::new();
        pins.insert(Box::<str>::from("acme"), 0);
        let view = RequestView {
            path,
            query,
            headers: &map,
            prefix_len: 4,
        };
        detect(&detection(order), &resolver(), &pins, 1, &view)
    }

    #[test]
    fn detection_sources_and_precedence() {
        use Source::*;
        let all = [Header, Accept, Path, Query, Pin];
        struct Case {
            name: &'static str,
            path: &'static str,
            query: Option<&'static str>,
            headers: &'static [(&'static str, &'static str)],
            want: Result<(VersionId, Source), Source>,
        }
        let cases = [
            Case {
                name: "header",
                path: "/api/x",
                query: None,
                headers: &[("x-api-version", "1")],
                want: Ok((0, Header)),
            },
            Case {
                name: "vendor accept",
                path: "/api/x",
                query: None,
                headers: &[("accept", "application/vnd.wedsync.v1+json")],
                want: Ok((0, Accept)),
            },
            Case {
                name: "accept version param",
                path: "/api/x",
                query: None,
                headers: &[("accept", "text/html, application/json; version=1")],
                want: Ok((0, Accept)),
            },
            Case {
                name: "path prefix",
                path: "/api/v1/orders",
                query: None,
                headers: &[],
                want: Ok((0, Path)),
            },
            Case {
                name: "query",
                path: "/api/x",
                query: Some("a=b&api-version=1"),
                headers: &[],
                want: Ok((0, Query)),
            },
            Case {
                name: "pin",
                path: "/api/x",
                query: None,
                headers: &[("x-client-id", "acme")],
                want: Ok((0, Pin)),
            },
            Case {
                name: "default",
                path: "/api/x",
                query: None,
                headers: &[("x-client-id", "nobody")],
                want: Ok((1, Default)),
            },
            Case {
                name: "header beats accept",
                path: "/api/x",
                query: None,
                headers: &[
                    ("x-api-version", "2"),
                    ("accept", "application/vnd.wedsync.v1+json"),
                ],
                want: Ok((1, Header)),
            },
            Case {
                name: "accept beats path",
                path: "/api/v1/x",
                query: None,
                headers: &[("accept", "application/vnd.wedsync.v2.2-beta+json")],
                want: Ok((2, Accept)),
            },
            Case {
                name: "path beats query",
                path: "/api/v2/x",
                query: Some("api-version=1"),
                headers: &[],
                want: Ok((1, Path)),
            },
            Case {
                name: "query beats pin",
                path: "/api/x",
                query: Some("api-version=2"),
                headers: &[("x-client-id", "acme")],
                want: Ok((1, Query)),
            },
            Case {
                name: "non-version path segment ignored",
                path: "/api/videos",
                query: None,
                headers: &[],
                want: Ok((1, Default)),
            },
            Case {
                name: "bad header is an error",
                path: "/api/x",
                query: None,
                headers: &[("x-api-version", "v9")],
                want: Err(Header),
            },
            Case {
                name: "bad path version is an error",
                path: "/api/v7/x",
                query: None,
                headers: &[],
                want: Err(Path),
            },
        ];
        for c in cases {
            let got = run(&all, c.path, c.query, c.headers);
            match (got, c.want) {
                (Ok(d), Ok((v, s))) => assert_eq!((d.version, d.source), (v, s), "case {}", c.name),
                (Err(e), Err(s)) => assert_eq!(e.source, s, "case {}", c.name),
                (got, want) => panic!("case {}: got {got:?}, want {want:?}", c.name),
            }
        }
    }

    #[test]
    fn disabled_source_is_not_consulted() {
        let got = run(&[Source::Query], "/api/x", None, &[("x-api-version", "1")]).unwrap();
        assert_eq!((got.version, got.source), (1, Source::Default));
        let got = run(
            &[Source::Query, Source::Header],
            "/api/x",
            Some("api-version=2"),
            &[("x-api-version", "1")],
        )
        .unwrap();
        assert_eq!(
            (got.version, got.source),
            (1, Source::Query),
            "configured order wins"
        );
    }

    #[test]
    fn path_version_strip_range_covers_segment() {
        let d = run(&[Source::Path], "/api/v1/orders", None, &[]).unwrap();
        assert_eq!(d.strip, Some((4, 7)));
    }

    #[test]
    fn vary_names_only_enabled_header_sources() {
        assert_eq!(
            detection(&[Source::Header, Source::Path]).vary,
            "x-api-version"
        );
        assert_eq!(
            detection(&[Source::Header, Source::Accept, Source::Pin]).vary,
            "x-api-version, accept, x-client-id"
        );
    }
}
