//! Route matching: host (exact, `*.suffix`, or any) then the longest path
//! prefix on whole segments. Also owns path normalisation, which must run
//! before matching so `/api/../admin` can never match `/api`.

use std::borrow::Cow;
use std::collections::HashMap;

/// Index of a route in the table.
pub type RouteId = u16;

/// Route prefixes (without trailing slash) of one host group, longest first.
type Prefixes = Vec<(Box<str>, RouteId)>;

/// Compiled host and prefix matcher.
#[derive(Debug, Default)]
pub struct Router {
    exact: HashMap<Box<str>, Prefixes>,
    /// `(".example.com", routes)`, longest suffix first.
    wildcard: Vec<(Box<str>, Prefixes)>,
    any: Prefixes,
}

impl Router {
    /// Builds the matcher from `(hosts, path_prefix)` per route, in route order.
    /// Prefixes lose their trailing slash (`/api/` matches like `/api`).
    pub fn compile<'a>(routes: impl IntoIterator<Item = (&'a [String], &'a str)>) -> Router {
        let mut r = Router::default();
        let mut wild: HashMap<Box<str>, Prefixes> = HashMap::new();
        for (id, (hosts, prefix)) in routes.into_iter().enumerate() {
            let prefix: Box<str> = prefix.trim_end_matches('/').into();
            for host in hosts {
                let host = host.to_ascii_lowercase();
                let entry = (prefix.clone(), id as RouteId);
                if host == "*" {
                    r.any.push(entry);
                } else if let Some(suffix) = host.strip_prefix('*') {
                    wild.entry(suffix.into()).or_default().push(entry);
                } else {
                    r.exact.entry(host.into()).or_default().push(entry);
                }
            }
        }
        let by_len = |v: &mut Prefixes| v.sort_by_key(|e| std::cmp::Reverse(e.0.len()));
        r.exact.values_mut().for_each(by_len);
        by_len(&mut r.any);
        r.wildcard = wild.into_iter().collect();
        r.wildcard.iter_mut().for_each(|(_, v)| by_len(v));
        r.wildcard.sort_by_key(|e| std::cmp::Reverse(e.0.len()));
        r
    }

    /// The route for `host` (without port, any case) and a normalised
    /// `path`, with the matched prefix length. The most specific host group
    /// with a matching prefix wins: exact, then the longest wildcard, then any.
    pub fn resolve(&self, host: &str, path: &str) -> Option<(RouteId, usize)> {
        let mut buf = [0u8; 256];
        let host = crate::headers::ascii_lowercase(host, &mut buf).unwrap_or("");
        if let Some(found) = self.exact.get(host).and_then(|list| longest(list, path)) {
            return Some(found);
        }
        for (suffix, list) in &self.wildcard {
            if host.len() > suffix.len()
                && host.ends_with(&**suffix)
                && let Some(found) = longest(list, path)
            {
                return Some(found);
            }
        }
        longest(&self.any, path)
    }
}

fn longest(list: &[(Box<str>, RouteId)], path: &str) -> Option<(RouteId, usize)> {
    list.iter().find_map(|(prefix, id)| {
        let p = prefix.as_bytes();
        let ok = path.as_bytes().starts_with(p)
            && (path.len() == p.len() || path.as_bytes()[p.len()] == b'/');
        ok.then_some((*id, p.len()))
    })
}

/// Why a path could not be normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// `..` above the root.
    EscapesRoot,
    /// A `%` not followed by two hex digits, or an encoded NUL.
    BadEscape,
}

/// Normalises a request path (RFC 3986 §6.2.2): percent-decodes unreserved
/// characters (`%41` -> `A`, `%2e` -> `.`) while keeping reserved ones
/// encoded (`%2F` stays, so an encoded slash cannot split a segment),
/// collapses duplicate slashes and resolves `.` and `..`. Borrows when the
/// path is already normal, which is the common case.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    if !needs_work(path) {
        return Ok(Cow::Borrowed(path));
    }
    // Pass 1: decode unreserved escapes, upper-case the hex of the others.
    let b = path.as_bytes();
    let mut decoded = String::with_capacity(path.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = |c: u8| (c as char).to_digit(16);
            let (Some(h), Some(l)) = (
                b.get(i + 1).and_then(|&c| hex(c)),
                b.get(i + 2).and_then(|&c| hex(c)),
            ) else {
                return Err(PathError::BadEscape);
            };
            let c = (h * 16 + l) as u8;
            if c == 0 {
                return Err(PathError::BadEscape);
            }
            if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
                decoded.push(c as char);
            } else {
                decoded.push('%');
                decoded.push(b[i + 1].to_ascii_uppercase() as char);
                decoded.push(b[i + 2].to_ascii_uppercase() as char);
            }
            i += 3;
        } else {
            decoded.push(b[i] as char);
            i += 1;
        }
    }
    // Pass 2: segments.
    let mut out: Vec<&str> = Vec::new();
    let trailing = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if out.pop().is_none() {
                    return Err(PathError::EscapesRoot);
                }
            }
            s => out.push(s),
        }
    }
    let mut norm = String::with_capacity(decoded.len());
    for seg in &out {
        norm.push('/');
        norm.push_str(seg);
    }
    if trailing || norm.is_empty() {
        norm.push('/');
    }
    Ok(Cow::Owned(norm))
}

fn needs_work(path: &str) -> bool {
    let b = path.as_bytes();
    if b.first() != Some(&b'/') {
        return true;
    }
    // One pass (this runs on every request): an escape, or a '/' starting
    // an empty, "." or ".." segment.
    b.iter().enumerate().any(|(i, &c)| match c {
        b'%' => true,
        b'/' => matches!(
            &b[i + 1..],
            [b'/', ..] | [b'.'] | [b'.', b'.'] | [b'.', b'/', ..] | [b'.', b'.', b'/', ..]
        ),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_cases() {
        let cases: &[(&str, &str, Result<&str, PathError>)] = &[
            ("clean path borrowed", "/api/orders", Ok("/api/orders")),
            ("dot-dot resolved", "/v2/../admin", Ok("/admin")),
            (
                "encoded dot-dot resolved",
                "/api/%2e%2E/admin",
                Ok("/admin"),
            ),
            ("duplicate slashes", "/api//orders///1", Ok("/api/orders/1")),
            ("single dot", "/api/./orders", Ok("/api/orders")),
            ("unreserved decoded", "/api/%6Frders", Ok("/api/orders")),
            (
                "reserved kept, hex upper-cased",
                "/api/a%2fb",
                Ok("/api/a%2Fb"),
            ),
            ("trailing slash kept", "/api/orders/", Ok("/api/orders/")),
            ("trailing dot-dot", "/api/orders/..", Ok("/api/")),
            ("above root", "/../etc/passwd", Err(PathError::EscapesRoot)),
            ("bad escape", "/api/%zz", Err(PathError::BadEscape)),
            ("encoded nul", "/api/%00", Err(PathError::BadEscape)),
        ];
        for (name, input, want) in cases {
            let got = normalize(input);
            assert_eq!(got.as_deref().map_err(|e| *e), *want, "case {name}");
        }
        assert!(matches!(normalize("/api/orders"), Ok(Cow::Borrowed(_))));
    }

    fn router() -> Router {
        let routes: Vec<(Vec<String>, &str)> = vec![
            (vec!["*".into()], "/"),
            (vec!["*".into()], "/api/"),
            (vec!["api.example.com".into()], "/api/orders"),
            (vec!["*.example.com".into()], "/"),
            (vec!["*".into()], "/api/orders/archive"),
        ];
        Router::compile(routes.iter().map(|(h, p)| (h.as_slice(), *p)))
    }

    #[test]
    fn host_and_longest_prefix() {
        let r = router();
        let cases: &[(&str, &str, &str, RouteId)] = &[
            ("any host, root", "other.org", "/x", 0),
            ("any host, api", "other.org", "/api/x", 1),
            ("segment boundary", "other.org", "/apix", 0),
            ("exact prefix without slash", "other.org", "/api", 1),
            (
                "longest any-host prefix",
                "other.org",
                "/api/orders/archive/1",
                4,
            ),
            ("exact host", "api.example.com", "/api/orders/7", 2),
            (
                "exact host case-insensitive",
                "API.Example.COM",
                "/api/orders",
                2,
            ),
            (
                "exact host falls back to wildcard",
                "api.example.com",
                "/health",
                3,
            ),
            ("wildcard host", "shop.example.com", "/api/x", 3),
            ("wildcard needs a label", "example.com", "/api/x", 1),
        ];
        for (name, host, path, want) in cases {
            assert_eq!(
                r.resolve(host, path).map(|m| m.0),
                Some(*want),
                "case {name}"
            );
        }
    }
}
