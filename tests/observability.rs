//! What operators see: `/metrics` after known traffic (exact counters and
//! labels, one registry per gateway), W3C trace context to the upstream and
//! in problem bodies, and that the k8s alert rules and dashboard only use
//! metric names the gateway exports. The access log has its own file
//! (`tests/access_log.rs`).

mod support;

use http::Method;
use support::*;

const REQUESTS: &str = "switchyard_requests_total";

#[tokio::test]
async fn metrics_count_requests_by_route_versions_source_and_status_class() {
    let (v1, v2) = (Upstream::spawn("v1").await, Upstream::spawn("v2").await);
    let gw = TestGateway::start(two_versions(&v1, &v2)).await;
    for _ in 0..3 {
        let r = gw
            .get("/api/orders")
            .header("x-api-version", "1")
            .send()
            .await;
        assert_eq!(r.served_by(), "v1");
    }
    for _ in 0..2 {
        assert_eq!(gw.get("/api/orders").send().await.served_by(), "v2");
    }
    let r = gw.get("/api/orders?api-version=2").send().await;
    assert_eq!(r.served_by(), "v2");
    assert_eq!(
        gw.get("/api/orders")
            .header("x-api-version", "9")
            .send()
            .await
            .status(),
        400
    );
    assert_eq!(gw.get("/elsewhere").send().await.status(), 404);

    let m = gw.metrics().await;
    let count = |labels: &[(&str, &str)]| m.value(REQUESTS, labels);
    let ok = |client, target, source| {
        count(&[
            ("route", "api"),
            ("client_version", client),
            ("target_version", target),
            ("source", source),
            ("status_class", "2xx"),
        ])
    };
    assert_eq!(ok("v1", "v1", "header"), Some(3.0), "{}", m.0);
    assert_eq!(ok("v2", "v2", "default"), Some(2.0));
    assert_eq!(ok("v2", "v2", "query"), Some(1.0));
    assert_eq!(ok("v1", "v2", "header"), None, "no such traffic, no series");
    assert_eq!(
        count(&[
            ("route", "api"),
            ("client_version", "unknown"),
            ("target_version", "none"),
            ("source", "none"),
            ("status_class", "4xx"),
        ]),
        Some(1.0),
        "the unknown version's 400"
    );
    assert_eq!(
        count(&[("route", "none"), ("status_class", "4xx")]),
        Some(1.0),
        "the unrouted 404"
    );
    assert_eq!(m.sum(REQUESTS, &[]), 8.0);
    assert_eq!(
        m.value(
            "switchyard_request_duration_seconds_count",
            &[("route", "api"), ("client_version", "v1")]
        ),
        Some(3.0)
    );
    assert_eq!(
        m.value(
            "switchyard_upstream_duration_seconds_count",
            &[("pool", "v2")]
        ),
        Some(3.0)
    );
    assert_eq!(m.value("switchyard_requests_in_flight", &[]), Some(0.0));
    assert_eq!(
        m.value(
            "switchyard_upstream_endpoint_in_flight",
            &[("pool", "v1"), ("endpoint", &v1.endpoint())]
        ),
        Some(0.0)
    );
    assert_eq!(
        m.value(
            "switchyard_upstream_endpoint_available",
            &[("pool", "v2"), ("endpoint", &v2.endpoint())]
        ),
        Some(1.0)
    );
    // The control plane's metrics share the registry.
    assert_eq!(m.value("switchyard_config_revision", &[]), Some(0.0));

    // A second gateway in the same process has its own registry.
    let other = TestGateway::start(two_versions(&v1, &v2)).await;
    assert_eq!(other.metrics().await.sum(REQUESTS, &[]), 0.0);
    gw.get("/api/orders").send().await;
    assert_eq!(gw.metrics().await.sum(REQUESTS, &[]), 9.0);
    assert_eq!(other.metrics().await.sum(REQUESTS, &[]), 0.0);
}

#[tokio::test]
async fn version_usage_by_client_names_the_busiest_and_sums_the_rest() {
    let (v1, v2) = (Upstream::spawn("v1").await, Upstream::spawn("v2").await);
    let gw = TestGateway::start(two_versions(&v1, &v2).server("metrics_top_clients = 2")).await;
    let send = |client: &'static str, version: &'static str| {
        gw.get("/api/orders")
            .header("x-client-id", client)
            .header("x-api-version", version)
            .send()
    };
    for _ in 0..5 {
        send("acme", "1").await;
    }
    send("acme", "2").await; // last seen: v2
    for _ in 0..3 {
        send("bravo", "1").await;
    }
    send("charlie", "1").await;
    send("delta", "2").await;
    let m = gw.metrics().await;
    let requests = |c| m.value("switchyard_client_requests", &[("client", c)]);
    assert_eq!(requests("acme"), Some(6.0), "{}", m.0);
    assert_eq!(requests("bravo"), Some(3.0));
    assert_eq!(requests("charlie"), None, "not in the top 2");
    assert_eq!(requests("other"), Some(2.0));
    let last = |c, v| {
        m.value(
            "switchyard_client_last_version",
            &[("client", c), ("version", v)],
        )
    };
    assert_eq!(last("acme", "v2"), Some(1.0));
    assert_eq!(last("acme", "v1"), None);
    assert_eq!(last("bravo", "v1"), Some(1.0));
    assert_eq!(last("other", "v1"), Some(1.0), "charlie");
    assert_eq!(last("other", "v2"), Some(1.0), "delta");
}

#[tokio::test]
async fn translation_and_upstream_errors_are_counted() {
    let (v1, v2) = (Upstream::spawn("v1").await, Upstream::spawn("v2").await);
    v2.reply(Method::GET, "/legacy/broken", Reply::json(200, "{not json"));
    let dead = dead_endpoint().await;
    let t = two_versions(&v1, &v2)
        .pool_at("gone", "v2", &dead, "")
        .route(
            "dead",
            "/dead",
            "v2",
            "[routes.split]\nv2 = [{ pool = \"gone\", weight = 100 }]",
        );
    let gw = TestGateway::start(t).await;
    for _ in 0..2 {
        let r = gw
            .get("/legacy/broken")
            .header("x-api-version", "1")
            .send()
            .await;
        assert_eq!(r.status(), 502);
        assert_eq!(
            r.problem()["type"],
            "https://switchyard.dev/problems/response-not-translatable"
        );
    }
    assert_eq!(gw.get("/dead/x").send().await.status(), 502);
    let m = gw.metrics().await;
    assert_eq!(
        m.value(
            "switchyard_translation_errors_total",
            &[
                ("route", "legacy"),
                ("from_version", "v2"),
                ("to_version", "v1"),
                ("direction", "response"),
            ]
        ),
        Some(2.0),
        "{}",
        m.0
    );
    assert_eq!(
        m.value(
            "switchyard_upstream_errors_total",
            &[("pool", "gone"), ("kind", "upstream-connect-failed")]
        ),
        Some(1.0)
    );
    assert_eq!(
        m.value(
            REQUESTS,
            &[
                ("route", "dead"),
                ("target_version", "v2"),
                ("status_class", "5xx")
            ]
        ),
        Some(1.0)
    );
}

// ---------------------------------------------------------------------------
// Trace context

#[tokio::test]
async fn traceparent_reaches_the_upstream_with_the_same_trace_id() {
    let (v1, v2) = (Upstream::spawn("v1").await, Upstream::spawn("v2").await);
    let gw = TestGateway::start(two_versions(&v1, &v2)).await;
    let sent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    gw.get("/api/a")
        .header("traceparent", sent)
        .header("tracestate", "congo=t61rcWkgMzE")
        .send()
        .await;
    let got = v2.last();
    let tp = got.header("traceparent").expect("traceparent forwarded");
    assert_eq!(&tp[..36], &sent[..36], "same version and trace id");
    assert_ne!(
        &tp[36..52],
        &sent[36..52],
        "the gateway is the upstream's parent"
    );
    assert!(tp.ends_with("-01"), "flags kept: {tp}");
    assert_eq!(got.header("tracestate"), Some("congo=t61rcWkgMzE"));

    // None sent: a new, valid trace; a malformed one is replaced and its
    // tracestate dropped.
    gw.get("/api/b").send().await;
    gw.get("/api/c")
        .header(
            "traceparent",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        )
        .header("tracestate", "congo=t61rcWkgMzE")
        .send()
        .await;
    let (b, c) = {
        let r = v2.received();
        (r[1].clone(), r[2].clone())
    };
    for rec in [&b, &c] {
        let tp = rec.header("traceparent").expect("traceparent generated");
        let parts: Vec<&str> = tp.split('-').collect();
        assert_eq!(parts.len(), 4, "{tp}");
        assert_eq!(
            (parts[0], parts[1].len(), parts[2].len()),
            ("00", 32, 16),
            "{tp}"
        );
        assert!(
            parts[1]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_ne!(parts[1], "0".repeat(32));
    }
    assert_ne!(
        &b.header("traceparent").unwrap()[3..35],
        &c.header("traceparent").unwrap()[3..35],
        "each new trace has its own id"
    );
    assert_eq!(c.header("tracestate"), None);
}

#[tokio::test]
async fn problem_bodies_carry_the_trace_id() {
    let (v1, v2) = (Upstream::spawn("v1").await, Upstream::spawn("v2").await);
    let gw = TestGateway::start(two_versions(&v1, &v2)).await;
    let r = gw
        .get("/api/a")
        .header("x-api-version", "7")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .send()
        .await;
    let p = r.problem();
    assert_eq!(p["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert!(p["request_id"].is_string());
    let p = gw.get("/nowhere").send().await.problem();
    assert_eq!(p["trace_id"].as_str().map(str::len), Some(32), "{p}");
}

// ---------------------------------------------------------------------------
// The observability stack's files

/// Every `switchyard_*` name in the alert rules and the dashboard is a
/// metric the gateway exports (histogram suffixes stripped), seen in
/// `/metrics` after traffic that exercises each family.
#[tokio::test]
async fn k8s_rules_and_dashboard_use_exported_metric_names() {
    let (v1, v2) = (Upstream::spawn("v1").await, Upstream::spawn("v2").await);
    v2.reply(Method::GET, "/legacy/broken", Reply::json(200, "{not json"));
    let dead = dead_endpoint().await;
    let t = two_versions(&v1, &v2)
        .pool_at("gone", "v2", &dead, "")
        .route(
            "dead",
            "/dead",
            "v2",
            "[routes.split]\nv2 = [{ pool = \"gone\", weight = 100 }]",
        )
        .route("cached", "/cached", "v2", "[routes.cache]\nttl_ms = 60000");
    let gw = TestGateway::start(t).await;
    gw.get("/api/a").header("x-client-id", "acme").send().await;
    gw.get("/legacy/broken")
        .header("x-api-version", "1")
        .send()
        .await;
    gw.get("/dead/a").send().await;
    gw.get("/cached/a").send().await;
    gw.get("/cached/a").send().await;
    let exported = gw.metrics().await.names();
    let base = |n: &str| {
        ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| n.strip_suffix(s))
            .unwrap_or(n)
            .to_string()
    };
    let exported: std::collections::BTreeSet<String> = exported.iter().map(|n| base(n)).collect();
    // Metrics issue 5 registers (rate limits, seasons) may not be exported
    // by this table; they are checked by name only when present.
    for file in ["k8s/prometheus-rules.yaml", "k8s/grafana-dashboard.json"] {
        let text = std::fs::read_to_string(format!("{}/{file}", env!("CARGO_MANIFEST_DIR")))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let mut used = std::collections::BTreeSet::new();
        let bytes = text.as_bytes();
        let mut i = 0;
        while let Some(at) = text[i..].find("switchyard_") {
            let start = i + at;
            let end = start
                + text[start..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(text.len() - start);
            // Skip `switchyard_` inside a longer word (a job or file name).
            if start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_')
            {
                used.insert(base(&text[start..end]));
            }
            i = end;
        }
        assert!(!used.is_empty(), "{file} names no metric");
        let missing: Vec<_> = used
            .iter()
            .filter(|n| !exported.contains(*n) && !ISSUE_5_METRICS.contains(&n.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "{file} uses unexported metrics {missing:?}; exported: {exported:?}"
        );
    }
}

/// Metric families registered by the rate-limit and season code, which this
/// test's table does not configure.
const ISSUE_5_METRICS: &[&str] = &["switchyard_season_active", "switchyard_rate_limited_total"];

#[tokio::test]
async fn a_reload_drops_the_series_of_removed_routes_and_keeps_the_rest() {
    let (v1, v2) = (Upstream::spawn("v1").await, Upstream::spawn("v2").await);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("table.toml");
    let with_b = two_versions(&v1, &v2)
        .route("b", "/b", "v2", "[routes.cache]\nttl_ms = 60000")
        .toml();
    std::fs::write(&file, &with_b).unwrap();
    let gw = TestGateway::start_with(
        with_b.as_str(),
        switchyard::ServeOptions {
            file: Some(file.clone()),
            ..Default::default()
        },
    )
    .await;
    gw.get("/api/x").send().await;
    gw.get("/b/x").send().await;
    let m = gw.metrics().await;
    assert_eq!(m.sum(REQUESTS, &[("route", "b")]), 1.0);
    assert!(
        m.value(
            "switchyard_cache_requests_total",
            &[("route", "b"), ("result", "miss")]
        )
        .is_some()
    );

    std::fs::write(&file, two_versions(&v1, &v2).toml()).unwrap();
    let r = gw.admin_post("/admin/reload").send().await;
    assert_eq!(r.json()["reload"]["result"], "applied");
    let m = gw.metrics().await;
    assert!(m.samples(REQUESTS, &[("route", "b")]).is_empty(), "{}", m.0);
    assert!(
        m.samples(
            "switchyard_request_duration_seconds_count",
            &[("route", "b")]
        )
        .is_empty()
    );
    assert!(
        m.samples("switchyard_cache_requests_total", &[("route", "b")])
            .is_empty()
    );
    assert_eq!(
        m.sum(REQUESTS, &[("route", "api")]),
        1.0,
        "kept, with its count"
    );
    gw.get("/api/x").send().await;
    assert_eq!(gw.metrics().await.sum(REQUESTS, &[("route", "api")]), 2.0);
}
