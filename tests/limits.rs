//! Rate limits as a client sees them: exactly `requests + burst` allowed,
//! then `429` problem+json with `Retry-After` and the IETF draft
//! `RateLimit-Policy` / `RateLimit` fields; `RateLimit` on allowed
//! responses when configured; `x-forwarded-for` believed only from trusted
//! proxies; the strictest of several policies; the season multiplier; and
//! limiter state across reloads.

mod support;

use std::path::PathBuf;

use support::*;

/// A weekday in no season of the calendar below (Wednesday 2026-12-02,
/// noon in New York): the base quotas apply.
const OFF_SEASON: &str = "2026-12-02T17:00:00Z";
/// A July Wednesday: New York is in `peak` (x3).
const PEAK: &str = "2026-07-15T17:00:00Z";

const CALENDAR: &str = r#"
[calendar]
region_header = "x-geo"

[[calendar.regions]]
name = "us-east-1"
time_zone = "America/New_York"

[[calendar.regions]]
name = "eu-west-1"
time_zone = "Europe/Dublin"

[[calendar.seasons]]
name = "peak"
regions = ["us-east-1"]
months = [5, 6, 7, 8, 9, 10]
limit_multiplier = 3.0
"#;

/// One v2 pool, route `/api` with `route_extra`, the calendar above and
/// `[rate_limits]` text.
fn doc(up: &Upstream, route_extra: &str, rate_limits: &str) -> String {
    let t = table()
        .version("v2", "current", "")
        .pool("v2", "v2", up)
        .route("api", "/api", "v2", route_extra);
    format!("{}\n{CALENDAR}\n{rate_limits}", t.toml())
}

async fn start(text: &str, at: &str) -> TestGateway {
    TestGateway::start_with(text, ManualClock::at(at).options()).await
}

fn get(client: Option<&str>, extra: &str) -> Vec<u8> {
    let mut r = String::from("GET /api/orders HTTP/1.1\r\nHost: gw.test\r\n");
    if let Some(c) = client {
        r.push_str(&format!("x-client-id: {c}\r\n"));
    }
    r.push_str(extra);
    r.push_str("\r\n");
    r.into_bytes()
}

/// Sends `n` requests on one connection; the statuses.
async fn statuses(conn: &mut RawConn, req: &[u8], n: usize) -> Vec<u16> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(conn.exchange(req).await.status);
    }
    out
}

fn allowed_then_refused(allowed: usize, refused: usize) -> Vec<u16> {
    let mut v = vec![200; allowed];
    v.extend(std::iter::repeat_n(429, refused));
    v
}

const PER_CLIENT: &str = r#"
[rate_limits]

[[rate_limits.policies]]
name = "per-client"
key = "client_id"
requests = 3
window_secs = 60
burst = 2
"#;

#[tokio::test]
async fn quota_plus_burst_is_allowed_then_429_with_retry_after() {
    let up = Upstream::spawn("v2").await;
    let gw = start(
        &doc(&up, r#"limits = ["per-client"]"#, PER_CLIENT),
        OFF_SEASON,
    )
    .await;
    let mut conn = RawConn::connect(gw.addr).await;
    let req = get(Some("acme"), "");
    assert_eq!(
        statuses(&mut conn, &req, 5).await,
        vec![200; 5],
        "3 + burst 2"
    );
    assert_eq!(
        up.requests(),
        5,
        "allowed responses carry no RateLimit by default"
    );

    let refused = conn.exchange(&req).await;
    assert_eq!(refused.status, 429);
    let p = refused.problem();
    assert!(
        p["type"].as_str().unwrap().ends_with("/rate-limited"),
        "{p}"
    );
    assert_eq!(p["policy"], "per-client");
    // One request per 60 s / 3 = 20 s grows back.
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((19..=20).contains(&retry), "Retry-After {retry}");
    assert_eq!(p["retry_after"], retry);
    assert_eq!(
        refused.header("ratelimit-policy"),
        Some(r#""per-client";q=3;w=60"#)
    );
    assert_eq!(
        refused.header("ratelimit"),
        Some(format!(r#""per-client";r=0;t={retry}"#).as_str())
    );
    assert_eq!(up.requests(), 5, "a refused request never reaches the pool");

    // Other clients have their own budget; requests without a client id
    // are not counted by a client_id policy.
    assert_eq!(
        statuses(&mut conn, &get(Some("globex"), ""), 6).await,
        allowed_then_refused(5, 1)
    );
    assert_eq!(statuses(&mut conn, &get(None, ""), 10).await, vec![200; 10]);
}

#[tokio::test]
async fn allowed_responses_carry_ratelimit_when_configured() {
    let up = Upstream::spawn("v2").await;
    let limits = PER_CLIENT.replace("[rate_limits]", "[rate_limits]\nheaders_on_allowed = true");
    let gw = start(&doc(&up, r#"limits = ["per-client"]"#, &limits), OFF_SEASON).await;
    let mut conn = RawConn::connect(gw.addr).await;
    for remaining in (0..5).rev() {
        let resp = conn.exchange(&get(Some("acme"), "")).await;
        assert_eq!(resp.status, 200);
        assert_eq!(
            resp.header("ratelimit-policy"),
            Some(r#""per-client";q=3;w=60"#)
        );
        let rl = resp.header("ratelimit").unwrap();
        let want = format!(r#""per-client";r={remaining};t="#);
        assert!(rl.starts_with(&want), "{rl} vs {want}");
    }
}

#[tokio::test]
async fn forwarded_for_is_ignored_from_an_untrusted_peer() {
    let up = Upstream::spawn("v2").await;
    let limits = |trusted: &str| {
        format!(
            r#"
[rate_limits]
trusted_proxies = [{trusted}]

[[rate_limits.policies]]
name = "per-ip"
key = "ip"
requests = 2
window_secs = 60
"#
        )
    };
    // The test client (127.0.0.1) is not a trusted proxy: every spoofed
    // address counts against 127.0.0.1.
    let gw = start(
        &doc(&up, r#"limits = ["per-ip"]"#, &limits(r#""10.0.0.0/8""#)),
        OFF_SEASON,
    )
    .await;
    let mut conn = RawConn::connect(gw.addr).await;
    let mut got = Vec::new();
    for i in 0..4 {
        let spoofed = get(None, &format!("x-forwarded-for: 198.51.100.{i}\r\n"));
        got.push(conn.exchange(&spoofed).await.status);
    }
    assert_eq!(got, allowed_then_refused(2, 2));

    // Behind a trusted proxy (loopback here), the forwarded address counts.
    let gw = start(
        &doc(&up, r#"limits = ["per-ip"]"#, &limits(r#""127.0.0.1/32""#)),
        OFF_SEASON,
    )
    .await;
    let mut conn = RawConn::connect(gw.addr).await;
    for i in 0..6 {
        let client = get(None, &format!("x-forwarded-for: 198.51.100.{i}\r\n"));
        assert_eq!(conn.exchange(&client).await.status, 200, "client {i}");
    }
    let same = get(None, "x-forwarded-for: 6.6.6.6, 203.0.113.5\r\n");
    assert_eq!(
        statuses(&mut conn, &same, 3).await,
        allowed_then_refused(2, 1)
    );
}

#[tokio::test]
async fn the_strictest_policy_wins() {
    let up = Upstream::spawn("v2").await;
    let limits = r#"
[rate_limits]

[[rate_limits.policies]]
name = "per-client"
key = "client_id"
requests = 10
window_secs = 60

[[rate_limits.policies]]
name = "route-total"
key = "route"
requests = 4
window_secs = 3600
"#;
    let gw = start(
        &doc(&up, r#"limits = ["per-client", "route-total"]"#, limits),
        OFF_SEASON,
    )
    .await;
    let mut conn = RawConn::connect(gw.addr).await;
    for c in ["a", "b", "c", "d"] {
        assert_eq!(conn.exchange(&get(Some(c), "")).await.status, 200);
    }
    let refused = conn.exchange(&get(Some("e"), "")).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.problem()["policy"], "route-total");
    // 3600 s / 4 = 900 s until the route budget grows back.
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((899..=900).contains(&retry), "{retry}");
    assert_eq!(
        refused.header("ratelimit-policy"),
        Some(r#""per-client";q=10;w=60, "route-total";q=4;w=3600"#)
    );
}

#[tokio::test]
async fn the_season_multiplier_scales_the_quota() {
    let up = Upstream::spawn("v2").await;
    let limits = r#"
[rate_limits]

[[rate_limits.policies]]
name = "per-client"
key = "client_id"
requests = 2
window_secs = 60
"#;
    let text = doc(&up, r#"limits = ["per-client"]"#, limits);
    let gw = start(&text, PEAK).await;
    let mut conn = RawConn::connect(gw.addr).await;
    // New York is in peak (x3): 6 requests; Dublin is in no season: 2.
    let us = get(Some("acme"), "x-geo: us-east-1\r\n");
    assert_eq!(
        statuses(&mut conn, &us, 7).await,
        allowed_then_refused(6, 1)
    );
    let refused = conn.exchange(&us).await;
    assert_eq!(
        refused.header("ratelimit-policy"),
        Some(r#""per-client";q=6;w=60"#)
    );
    let eu = get(Some("globex"), "x-geo: eu-west-1\r\n");
    assert_eq!(
        statuses(&mut conn, &eu, 3).await,
        allowed_then_refused(2, 1)
    );

    // Off season the same client in New York gets the base quota.
    let gw = start(&text, OFF_SEASON).await;
    let mut conn = RawConn::connect(gw.addr).await;
    assert_eq!(
        statuses(&mut conn, &us, 3).await,
        allowed_then_refused(2, 1)
    );
}

fn write(path: &PathBuf, text: &str) {
    std::fs::write(path, text).expect("write table");
}

#[tokio::test]
async fn limiter_state_survives_a_reload_unless_the_policy_changes() {
    let up = Upstream::spawn("v2").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("table.toml");
    let text = doc(&up, r#"limits = ["per-client"]"#, PER_CLIENT);
    write(&file, &text);
    let gw = TestGateway::start_with(
        text.as_str(),
        switchyard::ServeOptions {
            file: Some(file.clone()),
            ..ManualClock::at(OFF_SEASON).options()
        },
    )
    .await;
    let mut conn = RawConn::connect(gw.addr).await;
    let req = get(Some("acme"), "");
    assert_eq!(
        statuses(&mut conn, &req, 6).await,
        allowed_then_refused(5, 1)
    );

    let reload = || async {
        let resp = gw.admin_post("/admin/reload").send().await;
        assert_eq!(resp.json()["reload"]["result"], "applied");
    };
    // Unrelated change: the same limiter, still exhausted.
    write(
        &file,
        &doc(
            &up,
            "limits = [\"per-client\"]\ntimeout_ms = 9000",
            PER_CLIENT,
        ),
    );
    reload().await;
    assert_eq!(
        conn.exchange(&req).await.status,
        429,
        "kept across the reload"
    );

    // A changed policy is a new limiter.
    write(
        &file,
        &doc(
            &up,
            r#"limits = ["per-client"]"#,
            &PER_CLIENT.replace("burst = 2", "burst = 3"),
        ),
    );
    reload().await;
    assert_eq!(
        statuses(&mut conn, &req, 7).await,
        allowed_then_refused(6, 1)
    );

    let metrics = String::from_utf8(gw.admin_get("/metrics").send().await.body.to_vec()).unwrap();
    let line = "switchyard_rate_limited_total{policy=\"per-client\",route=\"api\"} 3";
    assert!(metrics.contains(line), "want {line:?} in\n{metrics}");
}

#[tokio::test]
async fn api_key_policy_counts_by_key() {
    let up = Upstream::spawn("v2").await;
    let limits = r#"
[rate_limits]

[[rate_limits.policies]]
name = "per-key"
key = "api_key"
requests = 1
window_secs = 60
"#;
    let gw = start(&doc(&up, r#"limits = ["per-key"]"#, limits), OFF_SEASON).await;
    let mut conn = RawConn::connect(gw.addr).await;
    let k1 = get(None, "x-api-key: secret-1\r\n");
    let k2 = get(None, "x-api-key: secret-2\r\n");
    assert_eq!(
        statuses(&mut conn, &k1, 2).await,
        allowed_then_refused(1, 1)
    );
    assert_eq!(
        statuses(&mut conn, &k2, 2).await,
        allowed_then_refused(1, 1)
    );
    assert!(
        up.received()
            .iter()
            .all(|r| r.header("x-api-key").is_some()),
        "the key is forwarded untouched"
    );
}
