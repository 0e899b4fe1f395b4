//! Request-path patterns for change scopes and `rewrite_path`: literal
//! segments, `*` or `{name}` for exactly one non-empty segment, and a final
//! `**` or `{*name}` for whatever follows (zero or more segments). Matching
//! walks the path's segments in place; only a rewrite allocates (the new path).

use std::fmt;

/// One segment of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PSeg {
    /// Must equal this segment.
    Lit(Box<str>),
    /// Any one non-empty segment; `{name}` captures it.
    One(Option<Box<str>>),
}

/// A parsed path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PathPattern {
    segs: Box<[PSeg]>,
    /// `Some` when the pattern ends in `**` (`None` name) or `{*name}`.
    rest: Option<Option<Box<str>>>,
}

/// What a match captured: one entry per `{name}`, plus the rest (`""` or
/// `/a/b`, with its leading slash) for `{*name}`.
#[derive(Debug, Default)]
pub(crate) struct Captures<'p> {
    named: Vec<(&'p str, &'p str)>,
    rest: &'p str,
}

impl PathPattern {
    /// Parses a pattern; the reason is for a config error.
    pub(crate) fn parse(text: &str) -> Result<PathPattern, String> {
        let Some(body) = text.strip_prefix('/') else {
            return Err(format!("{text:?} must start with /"));
        };
        if text.contains(['?', '#']) {
            return Err(format!("{text:?} must be a path without query or fragment"));
        }
        let mut segs = Vec::new();
        let mut rest = None;
        let parts: Vec<&str> = if body.is_empty() {
            Vec::new()
        } else {
            body.split('/').collect()
        };
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let rest_name = match *part {
                "**" => Some(None),
                p if p.starts_with("{*") && p.ends_with('}') => Some(Some(&p[2..p.len() - 1])),
                _ => None,
            };
            if let Some(name) = rest_name {
                if !last {
                    return Err(format!("{text:?}: {part} may only be the last segment"));
                }
                if let Some(n) = name {
                    ident(text, n)?;
                }
                rest = Some(name.map(Into::into));
                continue;
            }
            let seg = match *part {
                "*" => PSeg::One(None),
                p if p.starts_with('{') && p.ends_with('}') => {
                    let name = &p[1..p.len() - 1];
                    ident(text, name)?;
                    PSeg::One(Some(name.into()))
                }
                p if p.contains(['{', '}', '*']) => {
                    return Err(format!(
                        "{text:?}: segment {p:?} mixes text with {{}} or *; a segment is literal, *, {{name}}, ** or {{*name}}"
                    ));
                }
                "" if !last => return Err(format!("{text:?} has an empty segment (//)")),
                p => PSeg::Lit(p.into()),
            };
            segs.push(seg);
        }
        let pattern = PathPattern {
            segs: segs.into(),
            rest,
        };
        let mut names: Vec<&str> = pattern.names().collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("{text:?} captures {{{}}} twice", w[0]));
        }
        Ok(pattern)
    }

    /// The capture names, `{*rest}` included.
    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.segs
            .iter()
            .filter_map(|s| match s {
                PSeg::One(Some(n)) => Some(&**n),
                PSeg::One(None) | PSeg::Lit(_) => None,
            })
            .chain(self.rest.iter().filter_map(|r| r.as_deref()))
    }

    /// Whether every wildcard is named (needed to rebuild a path from it).
    pub(crate) fn fully_named(&self) -> bool {
        self.segs.iter().all(|s| !matches!(s, PSeg::One(None))) && !matches!(self.rest, Some(None))
    }

    /// Whether the path matches.
    pub(crate) fn matches(&self, path: &str) -> bool {
        // `captures` without the captures: scope matching runs for every
        // step of a plan on every request.
        let Some(mut remaining) = path.strip_prefix('/') else {
            return false;
        };
        let mut at_end = remaining.is_empty();
        for seg in self.segs.iter() {
            if at_end {
                return false;
            }
            let rest = remaining.as_bytes();
            // A literal is compared where it would be, and then must end
            // the segment: the path is not scanned for its `/` first.
            let len = match seg {
                PSeg::Lit(lit) => {
                    let lit = lit.as_bytes();
                    match rest.get(..lit.len()) {
                        Some(head) if same(lit, head) => lit.len(),
                        _ => return false,
                    }
                }
                PSeg::One(_) => match rest.iter().position(|&b| b == b'/') {
                    Some(0) => return false,
                    Some(i) => i,
                    None if rest.is_empty() => return false,
                    None => rest.len(),
                },
            };
            match rest.get(len) {
                Some(b'/') => remaining = &remaining[len + 1..],
                None => at_end = true,
                Some(_) => return false,
            }
        }
        at_end || self.rest.is_some()
    }

    /// Matches and captures. `path` is a normalised absolute path.
    pub(crate) fn captures<'p>(&'p self, path: &'p str) -> Option<Captures<'p>> {
        let mut caps = Captures::default();
        let mut remaining = path.strip_prefix('/')?;
        let mut at_end = remaining.is_empty();
        for seg in self.segs.iter() {
            if at_end {
                return None;
            }
            // A byte loop: segments are short, and `str::find`'s searcher
            // cost more to set up than the search.
            let (head, tail) = match remaining.bytes().position(|b| b == b'/') {
                Some(i) => (&remaining[..i], Some(&remaining[i + 1..])),
                None => (remaining, None),
            };
            match seg {
                PSeg::Lit(lit) => {
                    if !same(lit.as_bytes(), head.as_bytes()) {
                        return None;
                    }
                }
                PSeg::One(name) => {
                    if head.is_empty() {
                        return None;
                    }
                    if let Some(n) = name {
                        caps.named.push((n, head));
                    }
                }
            }
            match tail {
                Some(t) => remaining = t,
                None => {
                    remaining = "";
                    at_end = true;
                }
            }
        }
        match &self.rest {
            None => at_end.then_some(caps),
            Some(_) => {
                // The rest keeps its leading slash so `/v1` + `` and
                // `/v1` + `/a` rebuild exactly, trailing slash included.
                caps.rest = if at_end {
                    ""
                } else {
                    let start = path.len() - remaining.len() - 1;
                    &path[start..]
                };
                Some(caps)
            }
        }
    }

    /// Builds a path from this (fully named) pattern and another's captures.
    pub(crate) fn render(&self, caps: &Captures<'_>) -> String {
        // Sized once: a path grown from nothing reallocated twice or more.
        let named: usize = caps.named.iter().map(|(_, v)| v.len()).sum();
        let lits: usize = (self.segs.iter())
            .map(|seg| match seg {
                PSeg::Lit(lit) => lit.len() + 1,
                PSeg::One(_) => 1,
            })
            .sum();
        let mut out = String::with_capacity(lits + named + caps.rest.len() + 1);
        for seg in self.segs.iter() {
            out.push('/');
            match seg {
                PSeg::Lit(lit) => out.push_str(lit),
                PSeg::One(name) => {
                    let value = name
                        .as_deref()
                        .and_then(|n| caps.named.iter().find(|(k, _)| *k == n))
                        .map_or("", |(_, v)| v);
                    out.push_str(value);
                }
            }
        }
        if self.rest.is_some() {
            out.push_str(caps.rest);
        }
        if out.is_empty() {
            out.push('/');
        }
        out
    }

    /// Whether some path matches both patterns.
    pub(crate) fn overlaps(&self, other: &PathPattern) -> bool {
        let (a, b) = (&self.segs, &other.segs);
        for i in 0..a.len().max(b.len()) {
            match (a.get(i), b.get(i)) {
                (Some(PSeg::Lit(x)), Some(PSeg::Lit(y))) => {
                    if x != y {
                        return false;
                    }
                }
                (Some(_), Some(_)) => {}
                (Some(_), None) => return other.rest.is_some(),
                (None, Some(_)) => return self.rest.is_some(),
                (None, None) => unreachable!("loop bound"),
            }
        }
        // Same length: both match exactly that many segments, or more when
        // both allow a rest; one with a rest still matches the zero-rest case.
        true
    }
}

/// Whether two path segments are equal. A byte loop: segments are short,
/// and a `memcmp` call cost more than the comparison it made.
#[inline]
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

fn ident(text: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{text:?}: capture name {name:?} must be letters, digits, _ or -"
        ))
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for seg in self.segs.iter() {
            f.write_str("/")?;
            match seg {
                PSeg::Lit(l) => f.write_str(l)?,
                PSeg::One(None) => f.write_str("*")?,
                PSeg::One(Some(n)) => write!(f, "{{{n}}}")?,
            }
        }
        match &self.rest {
            Some(None) => f.write_str("/**"),
            Some(Some(n)) => write!(f, "/{{*{n}}}"),
            None if self.segs.is_empty() => f.write_str("/"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn match_cases() {
        let cases: &[(&str, &str, &str, bool)] = &[
            ("literal", "/api/weddings", "/api/weddings", true),
            (
                "literal, longer path",
                "/api/weddings",
                "/api/weddings/1",
                false,
            ),
            (
                "literal, trailing slash",
                "/api/weddings",
                "/api/weddings/",
                false,
            ),
            (
                "literal, longer segment",
                "/api/wed",
                "/api/weddings",
                false,
            ),
            (
                "literal, shorter segment",
                "/api/weddings",
                "/api/wed",
                false,
            ),
            ("literal, then empty", "/api/weddings/x", "/api//x", false),
            ("one segment", "/api/weddings/*", "/api/weddings/42", true),
            (
                "named segment",
                "/api/weddings/{id}",
                "/api/weddings/42",
                true,
            ),
            (
                "one segment is not empty",
                "/api/weddings/*",
                "/api/weddings/",
                false,
            ),
            (
                "one segment is not two",
                "/api/weddings/*",
                "/api/weddings/4/x",
                false,
            ),
            ("rest, none", "/api/**", "/api", true),
            ("rest, some", "/api/**", "/api/a/b/", true),
            ("rest, other prefix", "/api/**", "/apix", false),
            ("root exact", "/", "/", true),
            ("root exact, not deeper", "/", "/a", false),
            ("everything", "/**", "/anything/at/all", true),
        ];
        for (name, pattern, path, want) in cases {
            let p = PathPattern::parse(pattern).unwrap();
            assert_eq!(p.matches(path), *want, "{name}: {pattern} vs {path}");
            // `matches` is `captures` without the captures.
            assert_eq!(p.captures(path).is_some(), *want, "{name}: captures");
        }
    }

    #[test]
    fn rewrite_cases() {
        let cases: &[(&str, &str, &str, &str, &str)] = &[
            (
                "named segment",
                "/v1/weddings/{id}",
                "/v2/events/{id}",
                "/v1/weddings/7",
                "/v2/events/7",
            ),
            ("prefix", "/v1/{*rest}", "/v2/{*rest}", "/v1/a/b", "/v2/a/b"),
            ("prefix alone", "/v1/{*rest}", "/v2/{*rest}", "/v1", "/v2"),
            (
                "prefix keeps slash",
                "/v1/{*rest}",
                "/v2/{*rest}",
                "/v1/",
                "/v2/",
            ),
            ("to root", "/legacy/{*rest}", "/{*rest}", "/legacy", "/"),
            (
                "reordered",
                "/a/{x}/b/{y}",
                "/c/{y}/{x}",
                "/a/1/b/2",
                "/c/2/1",
            ),
        ];
        for (name, from, to, path, want) in cases {
            let (from, to) = (
                PathPattern::parse(from).unwrap(),
                PathPattern::parse(to).unwrap(),
            );
            let caps = from.captures(path).expect(name);
            assert_eq!(to.render(&caps), *want, "{name}");
        }
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in [
            "api",
            "/a/**/b",
            "/a/x{id}",
            "/a//b",
            "/a/{}",
            "/a/{id}/{id}",
            "/a?x=1",
        ] {
            assert!(PathPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn overlap_cases() {
        let cases: &[(&str, &str, bool)] = &[
            ("/a/*", "/a/b", true),
            ("/a/*", "/b/*", false),
            ("/a/**", "/a/b/c", true),
            ("/a", "/a/b", false),
            ("/a/b", "/**", true),
            ("/a/*/c", "/a/b/d", false),
        ];
        for (a, b, want) in cases {
            let (pa, pb) = (
                PathPattern::parse(a).unwrap(),
                PathPattern::parse(b).unwrap(),
            );
            assert_eq!(pa.overlaps(&pb), *want, "{a} vs {b}");
            assert_eq!(pb.overlaps(&pa), *want, "{b} vs {a}");
        }
    }
}
