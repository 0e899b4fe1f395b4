//! Cross-field rules for a parsed document. Reports every error at once, each
//! with its field path; `RoutingTable::compile` may `expect` anything checked here.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use super::{ConfigError, Document, Source, Status};
use crate::version::{MAX_VERSIONS, Spec};

/// Checks a parsed document. `Err` holds every problem found.
pub fn validate(doc: &Document) -> Result<(), Vec<ConfigError>> {
    let mut errs = Vec::new();
    let mut err = |path: String, reason: String| errs.push(ConfigError::at(path, reason));

    // server
    let s = &doc.server;
    for (key, value) in [("listen", &s.listen), ("admin_listen", &s.admin_listen)] {
        if value.parse::<SocketAddr>().is_err() {
            err(
                format!("server.{key}"),
                format!("{value:?} is not an ip:port address"),
            );
        }
    }
    if s.max_header_bytes < 1024 {
        err(
            "server.max_header_bytes".into(),
            format!("must be at least 1024, got {}", s.max_header_bytes),
        );
    }
    if s.max_uri_bytes < 64 {
        err(
            "server.max_uri_bytes".into(),
            format!("must be at least 64, got {}", s.max_uri_bytes),
        );
    }
    if s.max_headers == 0 {
        err("server.max_headers".into(), "must be at least 1".into());
    }
    if s.header_read_timeout_ms == 0 {
        err(
            "server.header_read_timeout_ms".into(),
            "must be greater than 0".into(),
        );
    }
    if s.body_read_timeout_ms == 0 {
        err(
            "server.body_read_timeout_ms".into(),
            "must be greater than 0".into(),
        );
    }
    if let Some(tls) = &s.tls {
        if tls.listen.parse::<SocketAddr>().is_err() {
            err(
                "server.tls.listen".into(),
                format!("{:?} is not an ip:port address", tls.listen),
            );
        }
        if tls.certificates.is_empty() {
            err(
                "server.tls.certificates".into(),
                "at least one certificate is required".into(),
            );
        }
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (i, c) in tls.certificates.iter().enumerate() {
            for (j, name) in c.server_names.iter().enumerate() {
                let path = format!("server.tls.certificates[{i}].server_names[{j}]");
                let bare = name.strip_prefix("*.").unwrap_or(name);
                let valid = !bare.is_empty()
                    && bare.split('.').all(|l| {
                        !l.is_empty()
                            && l.len() <= 63
                            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    });
                if !valid {
                    err(
                        path,
                        format!("{name:?} is not a host name or *.suffix pattern"),
                    );
                } else if let Some(first) = seen.insert(name.to_ascii_lowercase(), i) {
                    err(
                        path,
                        format!("{name:?} is already served by certificates[{first}]"),
                    );
                }
            }
        }
        if tls.handshake_timeout_ms == 0 {
            err(
                "server.tls.handshake_timeout_ms".into(),
                "must be greater than 0".into(),
            );
        }
    }
    detection(&doc.detection, "detection", &mut err);

    // versions
    let mut names: HashMap<String, usize> = HashMap::new();
    // A bootstrap file for a Redis-fed gateway may hold only `[server]`.
    let bootstrap_only = s.redis_url.is_some()
        && doc.versions.is_empty()
        && doc.pools.is_empty()
        && doc.routes.is_empty();
    if doc.versions.is_empty() && !bootstrap_only {
        err("versions".into(), "at least one version is required".into());
    }
    if doc.versions.len() > MAX_VERSIONS {
        err(
            "versions".into(),
            format!(
                "at most {MAX_VERSIONS} versions, got {}",
                doc.versions.len()
            ),
        );
    }
    let mut spellings: HashMap<String, String> = HashMap::new();
    for (i, v) in doc.versions.iter().enumerate() {
        let path = format!("versions[{i}]");
        if Spec::parse(&v.name).is_none() || !v.name.starts_with('v') {
            err(
                format!("{path}.name"),
                format!(
                    "{:?} is not a version name like v1, v2.1 or v2.2-beta",
                    v.name
                ),
            );
        }
        if names.insert(v.name.clone(), i).is_some() {
            err(
                format!("{path}.name"),
                format!("duplicate version {:?}", v.name),
            );
        }
        let lower = v.name.to_ascii_lowercase();
        let bare = lower.strip_prefix('v').unwrap_or(&lower).to_string();
        let mut own = vec![lower.clone(), bare];
        own.extend(v.aliases.iter().map(|a| a.to_ascii_lowercase()));
        for (j, spelling) in own.iter().enumerate() {
            if let Some(other) = spellings.get(spelling)
                && other != &v.name
            {
                let field = if j < 2 {
                    format!("{path}.name")
                } else {
                    format!("{path}.aliases[{}]", j - 2)
                };
                err(
                    field,
                    format!("{spelling:?} already names version {other:?}"),
                );
            }
            spellings.insert(spelling.clone(), v.name.clone());
        }
        for (j, a) in v.aliases.iter().enumerate() {
            if a.trim().is_empty() || a.len() > 64 || a.trim() != a {
                err(
                    format!("{path}.aliases[{j}]"),
                    "must be 1-64 characters without surrounding spaces".into(),
                );
            }
        }
        if matches!(v.status, Status::Deprecated) && v.deprecated_at.is_none() {
            err(
                format!("{path}.deprecated_at"),
                "required when status is \"deprecated\" (sent as the Deprecation header)".into(),
            );
        }
        if matches!(v.status, Status::Deprecated | Status::Sunset) && v.successor.is_none() {
            err(
                format!("{path}.successor"),
                format!("required when status is {:?}", v.status).to_lowercase(),
            );
        }
        if let (Some(d), Some(s)) = (v.deprecated_at, v.sunset_at)
            && s < d
        {
            err(
                format!("{path}.sunset_at"),
                format!("{s} is before deprecated_at {d}"),
            );
        }
        if let Some(url) = &v.doc_url
            && (http::HeaderValue::from_str(url).is_err()
                || url.contains(['<', '>', ' '])
                || url.is_empty())
        {
            err(
                format!("{path}.doc_url"),
                format!("{url:?} is not a URL usable in a Link header"),
            );
        }
    }
    for (i, v) in doc.versions.iter().enumerate() {
        if let Some(succ) = &v.successor {
            match doc.versions.iter().find(|o| &o.name == succ) {
                None => err(
                    format!("versions[{i}].successor"),
                    format!("unknown version {succ:?}"),
                ),
                Some(o) if o.name == v.name => err(
                    format!("versions[{i}].successor"),
                    "a version cannot succeed itself".into(),
                ),
                Some(o) if o.status == Status::Sunset => err(
                    format!("versions[{i}].successor"),
                    format!("{succ:?} is sunset itself"),
                ),
                Some(_) => {}
            }
        }
    }
    let known = |name: &str| names.contains_key(name);
    let sunset = |name: &str| {
        doc.versions
            .iter()
            .any(|v| v.name == name && v.status == Status::Sunset)
    };

    // pools
    let mut pools: HashMap<&str, &str> = HashMap::new();
    for (i, p) in doc.pools.iter().enumerate() {
        let path = format!("pools[{i}]");
        if p.name.is_empty() {
            err(format!("{path}.name"), "must not be empty".into());
        }
        if pools.insert(&p.name, &p.version).is_some() {
            err(
                format!("{path}.name"),
                format!("duplicate pool {:?}", p.name),
            );
        }
        if !known(&p.version) {
            err(
                format!("{path}.version"),
                format!("unknown version {:?}", p.version),
            );
        }
        if p.endpoints.is_empty() {
            err(
                format!("{path}.endpoints"),
                "at least one endpoint is required".into(),
            );
        }
        for (j, e) in p.endpoints.iter().enumerate() {
            let ok = e
                .parse::<http::uri::Authority>()
                .ok()
                .is_some_and(|a| a.port_u16().is_some() && !a.as_str().contains('@'));
            if !ok {
                err(
                    format!("{path}.endpoints[{j}]"),
                    format!("{e:?} is not host:port"),
                );
            }
        }
        if let Some(h) = &p.host
            && h.parse::<http::uri::Authority>().is_err()
        {
            err(
                format!("{path}.host"),
                format!("{h:?} is not a valid Host value"),
            );
        }
        match (p.protocol, &p.tls) {
            (super::UpstreamProtocol::H2, None) => err(
                format!("{path}.protocol"),
                "h2 is HTTP/2 over TLS and needs [pools.tls]; use h2c for cleartext".into(),
            ),
            (super::UpstreamProtocol::H2c, Some(_)) => err(
                format!("{path}.protocol"),
                "h2c is cleartext; use h2 with [pools.tls]".into(),
            ),
            _ => {}
        }
        if let Some(tls) = &p.tls {
            if tls.client_cert.is_some() != tls.client_key.is_some() {
                err(
                    format!("{path}.tls"),
                    "client_cert and client_key go together".into(),
                );
            }
            if let Some(name) = &tls.server_name
                && rustls::pki_types::ServerName::try_from(name.as_str()).is_err()
            {
                err(
                    format!("{path}.tls.server_name"),
                    format!("{name:?} is not a DNS name or IP address"),
                );
            }
        }
    }

    for (i, p) in doc.pools.iter().enumerate() {
        let path = format!("pools[{i}]");
        if let Some(f) = &p.failover {
            match pools.get(f.as_str()) {
                None => err(format!("{path}.failover"), format!("unknown pool {f:?}")),
                Some(_) if *f == p.name => err(
                    format!("{path}.failover"),
                    "a pool cannot fail over to itself".into(),
                ),
                // Another version's pool would answer in the wrong shape.
                Some(v) if *v != p.version => err(
                    format!("{path}.failover"),
                    format!("pool {f:?} serves {v}, this pool serves {}", p.version),
                ),
                Some(_) => {}
            }
        }
        if let Some(h) = &p.health {
            if !h.path.starts_with('/') {
                err(
                    format!("{path}.health.path"),
                    format!("{:?} must start with /", h.path),
                );
            }
            for (key, v) in [("interval_ms", h.interval_ms), ("timeout_ms", h.timeout_ms)] {
                if v == 0 {
                    err(
                        format!("{path}.health.{key}"),
                        "must be greater than 0".into(),
                    );
                }
            }
            for (key, v) in [
                ("healthy_threshold", h.healthy_threshold),
                ("unhealthy_threshold", h.unhealthy_threshold),
            ] {
                if v == 0 {
                    err(format!("{path}.health.{key}"), "must be at least 1".into());
                }
            }
            if let Some(code) = h.expected_status
                && !(100..=599).contains(&code)
            {
                err(
                    format!("{path}.health.expected_status"),
                    format!("{code} is not an HTTP status"),
                );
            }
        }
        let o = &p.outlier;
        if o.max_ejected_percent > 100 {
            err(
                format!("{path}.outlier.max_ejected_percent"),
                format!("must be at most 100, got {}", o.max_ejected_percent),
            );
        }
        if o.base_ejection_ms == 0 || o.base_ejection_ms > o.max_ejection_ms {
            err(
                format!("{path}.outlier.base_ejection_ms"),
                format!(
                    "must be between 1 and max_ejection_ms ({}), got {}",
                    o.max_ejection_ms, o.base_ejection_ms
                ),
            );
        }
    }

    for (i, r) in doc.routes.iter().enumerate() {
        let path = format!("routes[{i}].retry");
        let rt = &r.retry;
        if !(1..=5).contains(&rt.attempts) {
            err(
                format!("{path}.attempts"),
                format!("must be between 1 and 5, got {}", rt.attempts),
            );
        }
        if rt.budget_percent > 100 {
            err(
                format!("{path}.budget_percent"),
                format!("must be at most 100, got {}", rt.budget_percent),
            );
        }
        for (j, code) in rt.retry_statuses.iter().enumerate() {
            // 4xx are the client's (a 429 retried is a 429 amplified).
            if !(500..=599).contains(code) {
                err(
                    format!("{path}.retry_statuses[{j}]"),
                    format!("{code} is not a 5xx status"),
                );
            }
        }
    }

    // pins
    for (client, version) in &doc.pins {
        if !known(version) {
            err(
                format!("pins.{client}"),
                format!("unknown version {version:?}"),
            );
        }
    }

    // routes
    let mut route_names = HashSet::new();
    let mut matchers = HashSet::new();
    if doc.routes.is_empty() && !bootstrap_only {
        err("routes".into(), "at least one route is required".into());
    }
    for (i, r) in doc.routes.iter().enumerate() {
        let path = format!("routes[{i}]");
        if !route_names.insert(&r.name) {
            err(
                format!("{path}.name"),
                format!("duplicate route {:?}", r.name),
            );
        }
        if r.hosts.is_empty() {
            err(
                format!("{path}.hosts"),
                "at least one host (or \"*\") is required".into(),
            );
        }
        for (j, h) in r.hosts.iter().enumerate() {
            let bare = h.strip_prefix("*.").unwrap_or(h);
            let ok = h == "*"
                || (!bare.is_empty()
                    && bare
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
            if !ok {
                err(
                    format!("{path}.hosts[{j}]"),
                    format!("{h:?} is not a host name, *.suffix or *"),
                );
            }
            if !matchers.insert((
                h.to_ascii_lowercase(),
                r.path_prefix.trim_end_matches('/').to_string(),
            )) {
                err(
                    format!("{path}.path_prefix"),
                    format!(
                        "host {h:?} with prefix {:?} is already routed by an earlier route",
                        r.path_prefix
                    ),
                );
            }
        }
        if !r.path_prefix.starts_with('/')
            || r.path_prefix.contains("//")
            || r.path_prefix.split('/').any(|s| s == "." || s == "..")
        {
            err(
                format!("{path}.path_prefix"),
                format!("{:?} must start with / and be normalised", r.path_prefix),
            );
        }
        detection(&r.detection, &format!("{path}.detection"), &mut err);
        if r.timeout_ms == 0 {
            err(
                format!("{path}.timeout_ms"),
                "must be greater than 0".into(),
            );
        }
        if r.translate_max_depth == 0 || r.translate_max_depth > crate::translate::MAX_DEPTH {
            err(
                format!("{path}.translate_max_depth"),
                format!(
                    "must be 1 to {}, got {}",
                    crate::translate::MAX_DEPTH,
                    r.translate_max_depth
                ),
            );
        }
        if r.connect_timeout_ms == 0 {
            err(
                format!("{path}.connect_timeout_ms"),
                "must be greater than 0".into(),
            );
        }
        if let Some(c) = &r.cache {
            cache(c, &format!("{path}.cache"), doc, &mut err);
        }
        let served: Vec<&str> = match &r.versions {
            Some(list) => {
                for (j, v) in list.iter().enumerate() {
                    if !known(v) {
                        err(
                            format!("{path}.versions[{j}]"),
                            format!("unknown version {v:?}"),
                        );
                    }
                }
                list.iter().map(String::as_str).collect()
            }
            None => doc.versions.iter().map(|v| v.name.as_str()).collect(),
        };
        if !known(&r.default_version) {
            err(
                format!("{path}.default_version"),
                format!("unknown version {:?}", r.default_version),
            );
        } else if sunset(&r.default_version) {
            err(
                format!("{path}.default_version"),
                format!("{:?} is sunset", r.default_version),
            );
        } else if !served.contains(&r.default_version.as_str()) {
            err(
                format!("{path}.default_version"),
                format!("{:?} is not in this route's versions", r.default_version),
            );
        }
        for (version, weights) in &r.split {
            let field = format!("{path}.split.{version}");
            if !known(version) {
                err(field.clone(), format!("unknown version {version:?}"));
            }
            if weights.is_empty() {
                err(field.clone(), "at least one pool is required".into());
            }
            let mut sum = 0u64;
            for (j, w) in weights.iter().enumerate() {
                sum += u64::from(w.weight);
                if !pools.contains_key(w.pool.as_str()) {
                    err(
                        format!("{field}[{j}].pool"),
                        format!("unknown pool {:?}", w.pool),
                    );
                }
            }
            if !weights.is_empty() && sum != 100 {
                err(field, format!("weights must sum to 100, got {sum}"));
            }
        }
        for v in &served {
            if !known(v) || sunset(v) || r.split.contains_key(*v) {
                continue;
            }
            if !pools.values().any(|pv| pv == v) {
                err(
                    format!("{path}.split"),
                    format!(
                        "no pool serves version {v:?}: add a pool with version = {v:?} or a split.{v} entry"
                    ),
                );
            }
        }
    }
    if s.redis_poll_ms == 0 {
        errs.push(ConfigError::at(
            "server.redis_poll_ms",
            "must be greater than 0",
        ));
    }
    errs.extend(crate::control::freeze::validate(&doc.freezes));
    errs.extend(crate::season::validate(doc));
    errs.extend(crate::limit::validate(doc));
    errs.extend(crate::split::validate(doc));
    errs.extend(crate::translate::validate(doc));
    if errs.is_empty() { Ok(()) } else { Err(errs) }
}

fn cache(c: &super::CacheDoc, path: &str, doc: &Document, err: &mut impl FnMut(String, String)) {
    let budget = doc.server.cache_max_bytes;
    for (i, h) in c.vary.iter().enumerate() {
        if http::HeaderName::try_from(h.as_str()).is_err() {
            err(
                format!("{path}.vary[{i}]"),
                format!("{h:?} is not a valid header name"),
            );
        }
    }
    if c.max_entry_bytes == 0 || c.max_entry_bytes > budget {
        err(
            format!("{path}.max_entry_bytes"),
            format!(
                "must be 1 to server.cache_max_bytes ({budget}), got {}",
                c.max_entry_bytes
            ),
        );
    }
    // A day: longer TTLs belong in a CDN, and moka's per-entry expiry wants
    // a bounded duration.
    const DAY_MS: u64 = 86_400_000;
    for (key, value) in [
        ("ttl_ms", c.ttl_ms),
        ("stale_while_revalidate_ms", c.stale_while_revalidate_ms),
    ] {
        if value > DAY_MS {
            err(
                format!("{path}.{key}"),
                format!("at most {DAY_MS} (a day), got {value}"),
            );
        }
    }
    for (season, m) in &c.season_ttl_multiplier {
        if !doc.calendar.seasons.iter().any(|s| s.name == *season) {
            err(
                format!("{path}.season_ttl_multiplier.{season}"),
                format!("unknown season {season:?}: not in calendar.seasons"),
            );
        }
        if !(m.is_finite() && *m > 0.0 && *m <= 100.0) {
            err(
                format!("{path}.season_ttl_multiplier.{season}"),
                format!("must be greater than 0 and at most 100, got {m}"),
            );
        }
    }
}

fn detection(d: &super::DetectionSettings, path: &str, err: &mut impl FnMut(String, String)) {
    if let Some(order) = &d.order {
        let mut seen = HashSet::new();
        for (i, s) in order.iter().enumerate() {
            if *s == Source::Default {
                err(
                    format!("{path}.order[{i}]"),
                    "\"default\" is implied last and cannot be listed".into(),
                );
            }
            if !seen.insert(*s) {
                err(
                    format!("{path}.order[{i}]"),
                    format!("{:?} is listed twice", s.as_str()),
                );
            }
        }
    }
    for (key, value) in [
        ("header", &d.header),
        ("client_header", &d.client_header),
        ("api_key_header", &d.api_key_header),
    ] {
        if let Some(v) = value
            && http::HeaderName::try_from(v.as_str()).is_err()
        {
            err(
                format!("{path}.{key}"),
                format!("{v:?} is not a valid header name"),
            );
        }
    }
    if let Some(q) = &d.query_param
        && (q.is_empty() || q.contains(['&', '=', '#', ' ']))
    {
        err(
            format!("{path}.query_param"),
            format!("{q:?} is not a usable query parameter name"),
        );
    }
    if let Some(v) = &d.accept_vendor
        && (v.is_empty()
            || !v
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'))
    {
        err(
            format!("{path}.accept_vendor"),
            format!("{v:?} is not a media subtype prefix like vnd.example"),
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Origin, load};

    const GOOD: &str = r#"
[[versions]]
name = "v1"
status = "deprecated"
deprecated_at = "2026-01-01T00:00:00Z"
sunset_at = "2027-01-01T00:00:00Z"
successor = "v2"

[[versions]]
name = "v2"
status = "current"

[[pools]]
name = "v1"
version = "v1"
endpoints = ["127.0.0.1:9001"]

[[pools]]
name = "v2"
version = "v2"
endpoints = ["127.0.0.1:9002"]

[[routes]]
name = "api"
path_prefix = "/api"
default_version = "v2"
"#;

    #[test]
    fn good_document_validates() {
        load(GOOD, Origin::Embedded("t")).unwrap();
    }

    #[test]
    fn every_error_is_reported_with_its_path() {
        let bad = GOOD.replace("endpoints = [\"127.0.0.1:9002\"]", "endpoints = [\"nope\"]")
            + "[routes.split]\nv2 = [{ pool = \"v2\", weight = 70 }, { pool = \"ghost\", weight = 70 }]\n"
            + "[pins]\nacme = \"v7\"\n";
        let errs = load(&bad, Origin::Embedded("t")).unwrap_err();
        let shown = errs.to_string();
        for want in [
            "pools[1].endpoints[0]: \"nope\" is not host:port",
            "routes[0].split.v2[1].pool: unknown pool \"ghost\"",
            "routes[0].split.v2: weights must sum to 100, got 140",
            "pins.acme: unknown version \"v7\"",
        ] {
            assert!(shown.contains(want), "missing {want:?} in\n{shown}");
        }
    }

    #[test]
    fn deprecated_needs_successor_and_date() {
        let bad = GOOD
            .replace("successor = \"v2\"\n", "")
            .replace("deprecated_at = \"2026-01-01T00:00:00Z\"\n", "");
        let shown = load(&bad, Origin::Embedded("t")).unwrap_err().to_string();
        assert!(shown.contains("versions[0].successor: required"), "{shown}");
        assert!(
            shown.contains("versions[0].deprecated_at: required"),
            "{shown}"
        );
    }

    #[test]
    fn cache_rules_are_checked() {
        let bad = GOOD.to_string()
            + "[routes.cache]\nttl_ms = 90000000\nvary = [\"bad header\"]\nmax_entry_bytes = 0\n"
            + "season_ttl_multiplier = { peak = 0.0 }\n";
        let shown = load(&bad, Origin::Embedded("t")).unwrap_err().to_string();
        for want in [
            "routes[0].cache.ttl_ms: at most 86400000 (a day), got 90000000",
            "routes[0].cache.vary[0]: \"bad header\" is not a valid header name",
            "routes[0].cache.max_entry_bytes: must be 1 to server.cache_max_bytes (67108864), got 0",
            "routes[0].cache.season_ttl_multiplier.peak: unknown season \"peak\"",
            "routes[0].cache.season_ttl_multiplier.peak: must be greater than 0",
        ] {
            assert!(shown.contains(want), "missing {want:?} in\n{shown}");
        }
        let good =
            GOOD.to_string() + "[routes.cache]\nttl_ms = 1000\nvary = [\"accept-language\"]\n";
        load(&good, Origin::Embedded("t")).unwrap();
    }

    #[test]
    fn alias_clash_is_rejected() {
        let bad = GOOD.replace(
            "name = \"v2\"\nstatus",
            "name = \"v2\"\naliases = [\"1\"]\nstatus",
        );
        let shown = load(&bad, Origin::Embedded("t")).unwrap_err().to_string();
        assert!(
            shown.contains("versions[1].aliases[0]: \"1\" already names version \"v1\""),
            "{shown}"
        );
    }
}
