//! Routing as a client sees it: version detection from each source and the
//! precedence between them, aliases, lifecycle (deprecation headers, sunset
//! 410, beta allow-lists), unknown and malformed versions, weighted splits,
//! `Vary`, host and longest-prefix route matching, path normalisation.

mod support;

use support::*;

/// Upstreams for the lifecycle table, one per version, named after it.
struct Fleet {
    v0: Upstream,
    v1: Upstream,
    v2: Upstream,
    beta: Upstream,
}

impl Fleet {
    async fn spawn() -> Fleet {
        Fleet {
            v0: Upstream::spawn("v0").await,
            v1: Upstream::spawn("v1").await,
            v2: Upstream::spawn("v2").await,
            beta: Upstream::spawn("v2.2-beta").await,
        }
    }

    fn total_requests(&self) -> usize {
        [&self.v0, &self.v1, &self.v2, &self.beta]
            .iter()
            .map(|u| u.requests())
            .sum()
    }
}

/// The demo's shape: v0 sunset, v1 deprecated (sunset far in the future),
/// v2 current, a beta restricted to one client; `/api/` defaults to v2 and
/// `/rev/` only looks at the query, then the header.
fn lifecycle_table(f: &Fleet) -> Table {
    table()
        .detection(r#"order = ["header", "accept", "path", "query", "pin"]"#)
        .pin("acme-weddings", "v1")
        .pin("modern-co", "v2")
        .version(
            "v0",
            "sunset",
            r#"sunset_at = "2025-01-01T00:00:00Z"
successor = "v2"
doc_url = "https://docs.example.com/v0-to-v2""#,
        )
        .version(
            "v1",
            "deprecated",
            r#"aliases = ["legacy"]
deprecated_at = "2026-06-01T00:00:00Z"
sunset_at = "2099-06-30T23:59:59Z"
successor = "v2"
doc_url = "https://docs.example.com/v1-to-v2""#,
        )
        .version("v2", "current", "")
        .version(
            "v2.2-beta",
            "beta",
            r#"aliases = ["beta"]
allow_clients = ["beta-tester"]"#,
        )
        .pool("v0", "v0", &f.v0)
        .pool("v1", "v1", &f.v1)
        .pool("v2", "v2", &f.v2)
        .pool("v2.2-beta", "v2.2-beta", &f.beta)
        .route("api", "/api/", "v2", "")
        .route(
            "rev",
            "/rev",
            "v2",
            "[routes.detection]\norder = [\"query\", \"header\"]",
        )
}

async fn lifecycle_gateway() -> (Fleet, TestGateway) {
    let fleet = Fleet::spawn().await;
    let gw = TestGateway::start(lifecycle_table(&fleet)).await;
    (fleet, gw)
}

/// Asserts the version and source headers and which upstream answered.
fn assert_routed(resp: &Resp, version: &str, source: &str, case: &str) {
    assert_eq!(resp.status(), 200, "case {case}: {resp:?}");
    assert_eq!(resp.served_by(), version, "case {case}: served_by");
    assert_eq!(
        resp.header("x-api-version"),
        Some(version),
        "case {case}: x-api-version"
    );
    assert_eq!(
        resp.header("x-api-version-source"),
        Some(source),
        "case {case}: x-api-version-source"
    );
    assert_eq!(
        resp.header("x-api-version-served"),
        Some(version),
        "case {case}: x-api-version-served"
    );
}

#[tokio::test]
async fn header_source_picks_the_version() {
    let (f, gw) = lifecycle_gateway().await;
    let resp = gw
        .get("/api/orders")
        .header("x-api-version", "1")
        .send()
        .await;
    assert_routed(&resp, "v1", "header", "x-api-version: 1");
    assert_eq!(f.v1.last().uri, "/api/orders");
}

#[tokio::test]
async fn accept_vendor_media_type_picks_the_version() {
    let (_f, gw) = lifecycle_gateway().await;
    let resp = gw
        .get("/api/orders")
        .header("accept", "application/vnd.wedsync.v1+json")
        .send()
        .await;
    assert_routed(&resp, "v1", "accept", "vendor media type");
}

#[tokio::test]
async fn accept_version_parameter_picks_the_version() {
    let (_f, gw) = lifecycle_gateway().await;
    let resp = gw
        .get("/api/orders")
        .header("accept", "text/html, application/json; version=1")
        .send()
        .await;
    assert_routed(&resp, "v1", "accept", "version= parameter");
}

#[tokio::test]
async fn path_prefix_picks_the_version_and_is_stripped() {
    let (f, gw) = lifecycle_gateway().await;
    let resp = gw.get("/api/v1/orders/7?page=2").send().await;
    assert_routed(&resp, "v1", "path", "/api/v1/orders/7");
    assert_eq!(
        f.v1.last().uri,
        "/api/orders/7?page=2",
        "the upstream sees the path without the version segment"
    );
}

#[tokio::test]
async fn path_version_is_kept_when_stripping_is_off() {
    let v1 = Upstream::spawn("v1").await;
    let v2 = Upstream::spawn("v2").await;
    let gw = TestGateway::start(
        table()
            .detection("strip_path_version = false")
            .version("v1", "stable", "")
            .version("v2", "current", "")
            .pool("v1", "v1", &v1)
            .pool("v2", "v2", &v2)
            .route("api", "/api", "v2", ""),
    )
    .await;
    let resp = gw.get("/api/v1/orders").send().await;
    assert_routed(&resp, "v1", "path", "no stripping");
    assert_eq!(v1.last().uri, "/api/v1/orders");
}

#[tokio::test]
async fn query_param_picks_the_version() {
    let (f, gw) = lifecycle_gateway().await;
    let resp = gw.get("/api/orders?limit=5&api-version=1").send().await;
    assert_routed(&resp, "v1", "query", "?api-version=1");
    assert_eq!(
        f.v1.last().uri,
        "/api/orders?limit=5&api-version=1",
        "the query is forwarded untouched"
    );
}

#[tokio::test]
async fn client_pin_picks_the_version() {
    let (_f, gw) = lifecycle_gateway().await;
    let resp = gw
        .get("/api/orders")
        .header("x-client-id", "acme-weddings")
        .send()
        .await;
    assert_routed(&resp, "v1", "pin", "pinned client");
    let resp = gw
        .get("/api/orders")
        .header("x-client-id", "unpinned-co")
        .send()
        .await;
    assert_routed(&resp, "v2", "default", "unpinned client");
}

#[tokio::test]
async fn route_default_applies_when_no_source_names_a_version() {
    let (f, gw) = lifecycle_gateway().await;
    let resp = gw.get("/api/orders").send().await;
    assert_routed(&resp, "v2", "default", "nothing named");
    assert_eq!(f.v2.last().uri, "/api/orders");
}

/// One request of a table-driven test and where it must land.
struct Case {
    name: &'static str,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    version: &'static str,
    source: &'static str,
}

#[tokio::test]
async fn precedence_follows_the_configured_order() {
    let (_f, gw) = lifecycle_gateway().await;
    let cases = [
        Case {
            name: "header beats accept",
            path: "/api/orders",
            headers: &[
                ("x-api-version", "1"),
                ("accept", "application/vnd.wedsync.v2+json"),
            ],
            version: "v1",
            source: "header",
        },
        Case {
            name: "accept beats path",
            path: "/api/v2/orders",
            headers: &[("accept", "application/vnd.wedsync.v1+json")],
            version: "v1",
            source: "accept",
        },
        Case {
            name: "path beats query",
            path: "/api/v1/orders?api-version=2",
            headers: &[],
            version: "v1",
            source: "path",
        },
        Case {
            name: "query beats pin",
            path: "/api/orders?api-version=1",
            headers: &[("x-client-id", "modern-co")],
            version: "v1",
            source: "query",
        },
        Case {
            name: "pin beats default",
            path: "/api/orders",
            headers: &[("x-client-id", "acme-weddings")],
            version: "v1",
            source: "pin",
        },
        Case {
            name: "header beats everything",
            path: "/api/v2/orders?api-version=2",
            headers: &[
                ("x-api-version", "v1"),
                ("accept", "application/json; version=2"),
                ("x-client-id", "modern-co"),
            ],
            version: "v1",
            source: "header",
        },
        Case {
            name: "route order: query beats header",
            path: "/rev/orders?api-version=1",
            headers: &[("x-api-version", "2")],
            version: "v1",
            source: "query",
        },
        Case {
            name: "route order: header when no query",
            path: "/rev/orders",
            headers: &[("x-api-version", "1")],
            version: "v1",
            source: "header",
        },
    ];
    for case in cases {
        let mut req = gw.get(case.path);
        for (k, v) in case.headers {
            req = req.header(k, v);
        }
        assert_routed(&req.send().await, case.version, case.source, case.name);
    }
}

#[tokio::test]
async fn sources_left_out_of_a_routes_order_are_ignored() {
    let (f, gw) = lifecycle_gateway().await;
    // `/rev` consults only the query and the header.
    let resp = gw
        .get("/rev/v1/orders")
        .header("accept", "application/vnd.wedsync.v1+json")
        .header("x-client-id", "acme-weddings")
        .send()
        .await;
    assert_routed(&resp, "v2", "default", "path, accept and pin disabled");
    assert_eq!(
        f.v2.last().uri,
        "/rev/v1/orders",
        "a path version is not stripped when path detection is off"
    );
}

#[tokio::test]
async fn aliases_and_ranges_resolve_to_the_version() {
    let (_f, gw) = lifecycle_gateway().await;
    for spelling in ["2", "v2", "V2", "v2.1.0", "v2.*", "2.1"] {
        let resp = gw
            .get("/api/orders")
            .header("x-api-version", spelling)
            .send()
            .await;
        assert_routed(&resp, "v2", "header", spelling);
    }
    let resp = gw.get("/api/orders?api-version=v2.*").send().await;
    assert_routed(&resp, "v2", "query", "query v2.*");
    let resp = gw
        .get("/api/orders")
        .header("x-api-version", "legacy")
        .send()
        .await;
    assert_routed(&resp, "v1", "header", "configured alias legacy");
    let resp = gw
        .get("/api/orders")
        .header("x-api-version", "beta")
        .header("x-client-id", "beta-tester")
        .send()
        .await;
    assert_routed(&resp, "v2.2-beta", "header", "configured alias beta");
}

#[tokio::test]
async fn unknown_version_gets_400_listing_supported_versions() {
    let (f, gw) = lifecycle_gateway().await;
    let resp = gw
        .get("/api/orders")
        .header("x-api-version", "v9")
        .send()
        .await;
    assert_eq!(resp.status(), 400);
    let p = resp.problem();
    assert!(
        p["type"].as_str().unwrap().ends_with("/unknown-version"),
        "{p}"
    );
    assert_eq!(p["requested"], "v9");
    assert_eq!(p["source"], "header");
    assert_eq!(
        p["supported"],
        serde_json::json!(["v1", "v2", "v2.2-beta"]),
        "the sunset v0 is not offered"
    );
    assert_eq!(f.total_requests(), 0, "no upstream is called");

    let resp = gw.get("/api/orders?api-version=7").send().await;
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.problem()["source"], "query");
}

#[tokio::test]
async fn malformed_version_gets_400() {
    let (f, gw) = lifecycle_gateway().await;
    for (case, header, value) in [
        ("not a version", "x-api-version", "banana"),
        ("too many numbers", "x-api-version", "v2.1.0.9"),
        (
            "bad accept parameter",
            "accept",
            "application/json; version=two",
        ),
    ] {
        let resp = gw.get("/api/orders").header(header, value).send().await;
        assert_eq!(resp.status(), 400, "case {case}");
        let p = resp.problem();
        assert!(
            p["type"].as_str().unwrap().ends_with("/malformed-version"),
            "case {case}: {p}"
        );
        assert_eq!(
            p["supported"],
            serde_json::json!(["v1", "v2", "v2.2-beta"]),
            "case {case}"
        );
    }
    assert_eq!(f.total_requests(), 0, "no upstream is called");
}

#[tokio::test]
async fn beta_version_is_restricted_to_allowed_clients() {
    let (f, gw) = lifecycle_gateway().await;
    for (case, client) in [("no client id", None), ("unlisted client", Some("acme"))] {
        let mut req = gw.get("/api/orders").header("x-api-version", "v2.2-beta");
        if let Some(c) = client {
            req = req.header("x-client-id", c);
        }
        let resp = req.send().await;
        assert_eq!(resp.status(), 403, "case {case}");
        assert_eq!(resp.problem()["version"], "v2.2-beta", "case {case}");
    }
    assert_eq!(f.beta.requests(), 0, "refused clients never reach the pool");

    let resp = gw
        .get("/api/orders")
        .header("x-api-version", "v2.2-beta")
        .header("x-client-id", "beta-tester")
        .send()
        .await;
    assert_routed(&resp, "v2.2-beta", "header", "allowed client");
    assert_eq!(f.beta.requests(), 1);
}

#[tokio::test]
async fn deprecated_version_answers_with_deprecation_sunset_and_link() {
    let (_f, gw) = lifecycle_gateway().await;
    let resp = gw
        .get("/api/orders")
        .header("x-api-version", "1")
        .send()
        .await;
    assert_routed(&resp, "v1", "header", "deprecated v1");
    // RFC 9745: `@` and the Unix time of 2026-06-01T00:00:00Z.
    assert_eq!(resp.header("deprecation"), Some("@1780272000"));
    // RFC 8594: an IMF-fixdate.
    let sunset = resp.header("sunset").expect("sunset header");
    assert_eq!(sunset, "Tue, 30 Jun 2099 23:59:59 GMT");
    httpdate::parse_http_date(sunset).expect("Sunset is an HTTP-date");
    let link = resp.header("link").expect("link header");
    assert!(
        link.starts_with("<https://docs.example.com/v1-to-v2>;"),
        "{link}"
    );
    assert!(link.contains(r#"rel="deprecation""#), "{link}");

    let current = gw
        .get("/api/orders")
        .header("x-api-version", "2")
        .send()
        .await;
    for h in ["deprecation", "sunset", "link"] {
        assert_eq!(current.header(h), None, "current v2 carries no {h}");
    }
}

#[tokio::test]
async fn sunset_version_gets_410_with_successor() {
    let (f, gw) = lifecycle_gateway().await;
    for (case, path, header) in [
        ("header", "/api/orders", Some("v0")),
        ("path", "/api/v0/orders", None),
        ("query", "/api/orders?api-version=0", None),
    ] {
        let mut req = gw.get(path);
        if let Some(v) = header {
            req = req.header("x-api-version", v);
        }
        let resp = req.send().await;
        assert_eq!(resp.status(), 410, "case {case}");
        let p = resp.problem();
        assert_eq!(p["version"], "v0", "case {case}");
        assert_eq!(p["successor"], "v2", "case {case}");
        assert_eq!(
            p["migration_guide"], "https://docs.example.com/v0-to-v2",
            "case {case}"
        );
        assert_eq!(resp.header("x-api-version"), Some("v0"), "case {case}");
    }
    assert_eq!(
        f.v0.requests(),
        0,
        "a sunset version never reaches its pool"
    );
}

#[tokio::test]
async fn version_past_its_sunset_instant_gets_410() {
    let v1 = Upstream::spawn("v1").await;
    let v2 = Upstream::spawn("v2").await;
    let gw = TestGateway::start(
        table()
            .version(
                "v1",
                "deprecated",
                r#"deprecated_at = "2020-01-01T00:00:00Z"
sunset_at = "2021-01-01T00:00:00Z"
successor = "v2""#,
            )
            .version("v2", "current", "")
            .pool("v1", "v1", &v1)
            .pool("v2", "v2", &v2)
            .route("api", "/", "v2", ""),
    )
    .await;
    let resp = gw.get("/orders").header("x-api-version", "v1").send().await;
    assert_eq!(resp.status(), 410);
    assert_eq!(resp.problem()["successor"], "v2");
    assert_eq!(
        v1.requests(),
        0,
        "past its sunset instant, v1 is not served"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_split_sends_95_percent_to_main_pool_and_5_to_canary() {
    const TOTAL: usize = 20_000;
    const CONCURRENCY: usize = 32;
    let main = Upstream::spawn("v2").await;
    let canary = Upstream::spawn("v2-canary").await;
    let gw = TestGateway::start(
        table()
            .version("v2", "current", "")
            .pool("v2", "v2", &main)
            .pool("v2-canary", "v2", &canary)
            .route(
                "api",
                "/api",
                "v2",
                r#"[routes.split]
v2 = [{ pool = "v2", weight = 95 }, { pool = "v2-canary", weight = 5 }]"#,
            ),
    )
    .await;
    // Raw keep-alive connections: the cheapest client, so the gateway and
    // the upstreams get the CPU.
    let addr = gw.addr;
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|w| {
            tokio::spawn(async move {
                let mut conn = RawConn::connect(addr).await;
                let mut served = [0usize; 2];
                for _ in (w..TOTAL).step_by(CONCURRENCY) {
                    let resp = conn
                        .exchange(b"GET /api/orders HTTP/1.1\r\nHost: gw.test\r\n\r\n")
                        .await;
                    assert_eq!(resp.status, 200);
                    assert_eq!(resp.header("x-api-version-served"), Some("v2"));
                    match resp.body.as_slice() {
                        br#"{"served_by":"v2"}"# => served[0] += 1,
                        br#"{"served_by":"v2-canary"}"# => served[1] += 1,
                        other => panic!("served by {:?}", String::from_utf8_lossy(other)),
                    }
                }
                served
            })
        })
        .collect();
    let mut served = [0usize; 2];
    for w in workers {
        let s = w.await.expect("worker");
        served[0] += s[0];
        served[1] += s[1];
    }
    assert_eq!(served[0] + served[1], TOTAL);
    assert_eq!(
        (main.requests(), canary.requests()),
        (served[0], served[1]),
        "what clients saw matches what the upstreams got"
    );
    let canary_pct = served[1] as f64 * 100.0 / TOTAL as f64;
    assert!(
        (3.0..=7.0).contains(&canary_pct),
        "canary got {canary_pct:.2}% of {TOTAL}, want 5 ± 2"
    );
}

#[tokio::test]
async fn vary_names_the_headers_detection_reads() {
    let (_f, gw) = lifecycle_gateway().await;
    let resp = gw.get("/api/orders").send().await;
    assert_eq!(resp.status(), 200);
    let vary: Vec<String> = resp
        .header_all("vary")
        .iter()
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .collect();
    for h in ["x-api-version", "accept", "x-client-id"] {
        assert!(vary.iter().any(|v| v == h), "vary {vary:?} lacks {h}");
    }
    // `/rev` reads only the query and the version header.
    let resp = gw.get("/rev/orders").send().await;
    assert_eq!(resp.header_all("vary"), ["x-api-version"]);
}

#[tokio::test]
async fn host_and_longest_prefix_choose_the_route() {
    // One version; each route's split sends it to an upstream named after the route.
    let names = ["api", "orders", "partner", "shops"];
    let mut ups = Vec::new();
    for n in names {
        ups.push(Upstream::spawn(n).await);
    }
    let mut t = table().version("v1", "current", "");
    for (n, up) in names.iter().zip(&ups) {
        t = t.pool(n, "v1", up);
    }
    let split = |pool: &str| format!("[routes.split]\nv1 = [{{ pool = {pool:?}, weight = 100 }}]");
    let t = t
        .route("api", "/api", "v1", &split("api"))
        .route("orders", "/api/orders/", "v1", &split("orders"))
        .route(
            "partner",
            "/api",
            "v1",
            &format!("hosts = [\"partner.example.com\"]\n{}", split("partner")),
        )
        .route(
            "shops",
            "/",
            "v1",
            &format!("hosts = [\"*.shops.example\"]\n{}", split("shops")),
        );
    let gw = TestGateway::start(t).await;
    // (case, host, path, route)
    let cases = [
        ("any host, /api", None, "/api/users", "api"),
        ("prefix itself", None, "/api", "api"),
        ("longest prefix", None, "/api/orders/7", "orders"),
        ("prefix without its slash", None, "/api/orders", "orders"),
        ("whole segments only", None, "/api/ordersx", "api"),
        (
            "exact host beats a longer any-host prefix",
            Some("partner.example.com"),
            "/api/orders/7",
            "partner",
        ),
        (
            "host is case-insensitive, port ignored",
            Some("PARTNER.Example.com:8443"),
            "/api/x",
            "partner",
        ),
        (
            "wildcard host",
            Some("bride.shops.example"),
            "/api/x",
            "shops",
        ),
        (
            "exact host falls back to any host",
            Some("partner.example.com"),
            "/other/x",
            "",
        ),
    ];
    for (case, host, path, want) in cases {
        let mut req = gw.get(path);
        if let Some(h) = host {
            req = req.header("host", h);
        }
        let resp = req.send().await;
        if want.is_empty() {
            assert_eq!(resp.status(), 404, "case {case}");
            assert!(
                resp.problem()["type"]
                    .as_str()
                    .unwrap()
                    .ends_with("/no-route"),
                "case {case}"
            );
        } else {
            assert_eq!(resp.served_by(), want, "case {case}");
        }
    }
    let resp = gw.get("/nothing/here").send().await;
    assert_eq!(resp.status(), 404, "no route matches");
    resp.problem();
}

#[tokio::test]
async fn path_is_normalised_before_route_matching() {
    let api = Upstream::spawn("api").await;
    let admin = Upstream::spawn("admin").await;
    let gw = TestGateway::start(
        table()
            .version("v1", "current", "")
            .pool("api", "v1", &api)
            .pool("admin", "v1", &admin)
            .route(
                "api",
                "/api",
                "v1",
                "[routes.split]\nv1 = [{ pool = \"api\", weight = 100 }]",
            )
            .route(
                "admin",
                "/admin",
                "v1",
                "hosts = [\"admin.internal\"]\n[routes.split]\nv1 = [{ pool = \"admin\", weight = 100 }]",
            ),
    )
    .await;
    for (case, path) in [
        ("dot-dot", "/api/../admin"),
        ("encoded dot-dot", "/api/%2e%2E/admin/users"),
        ("dot-dot with duplicate slashes", "/api//..//admin"),
    ] {
        let resp = gw.get(path).send().await;
        assert_eq!(
            resp.status(),
            404,
            "case {case}: {path} must not match /api"
        );
        resp.problem();
    }
    let resp = gw.get("/../etc/passwd").send().await;
    assert_eq!(resp.status(), 400, "a path above the root is refused");
    resp.problem();
    assert_eq!(api.requests() + admin.requests(), 0);

    for (case, path, forwarded) in [
        (
            "duplicate slashes and dots",
            "/api//orders/./7",
            "/api/orders/7",
        ),
        ("unreserved escapes decoded", "/api/%6Frders", "/api/orders"),
        ("reserved escapes kept", "/api/a%2fb", "/api/a%2Fb"),
        (
            "dot-dot inside the route",
            "/api/x/../orders?q=1",
            "/api/orders?q=1",
        ),
    ] {
        let resp = gw.get(path).send().await;
        assert_eq!(resp.served_by(), "api", "case {case}");
        assert_eq!(api.last().uri, forwarded, "case {case}");
    }
}
