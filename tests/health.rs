//! Upstream health end to end, with real upstreams on loopback: passive
//! outlier ejection and its cap, active health checks taking an endpoint
//! out and back, failover to another pool of the same version, degraded
//! readiness, `/admin/upstreams`, and validation of the settings.

mod support;

use http::Method;
use serde_json::Value;
use support::{Reply, TestGateway, Upstream, dead_endpoint, eventually, table};

fn endpoint<'a>(upstreams: &'a Value, pool: &str, ep: &str) -> &'a Value {
    upstreams["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == pool)
        .unwrap_or_else(|| panic!("pool {pool} in {upstreams}"))["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["endpoint"] == ep)
        .unwrap_or_else(|| panic!("endpoint {ep} in {upstreams}"))
}

fn two_endpoint_pool(name: &str, a: &str, b: &str, extra: &str) -> String {
    format!("[[pools]]\nname = {name:?}\nversion = \"v1\"\nendpoints = [{a:?}, {b:?}]\n{extra}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_endpoint_is_ejected_and_traffic_moves_to_the_others() {
    let live = Upstream::spawn("live").await;
    let dead = dead_endpoint().await;
    let mut text = table()
        .version("v1", "current", "")
        .route("api", "/api/", "v1", "")
        .toml();
    text.push_str(&two_endpoint_pool(
        "v1",
        &live.endpoint(),
        &dead,
        "[pools.outlier]\nconsecutive_failures = 2\nbase_ejection_ms = 60000",
    ));
    let gw = TestGateway::start(text).await;
    let mut failed = 0;
    let mut statuses = Vec::new();
    for _ in 0..60 {
        let r = gw.get("/api/x").send().await;
        statuses.push(r.status());
        if r.status() != 200 {
            assert_eq!(r.status(), 502, "a dead endpoint answers 502");
            failed += 1;
        }
    }
    assert!(
        failed <= 2,
        "at most consecutive_failures requests fail before the ejection: {statuses:?}"
    );
    assert!(
        statuses[statuses.len() - 40..].iter().all(|s| *s == 200),
        "{statuses:?}"
    );
    let ups = gw.admin_get("/admin/upstreams").send().await.json();
    let d = endpoint(&ups, "v1", &dead);
    assert_eq!(d["ejections"], 1, "{ups}");
    assert!(d["ejected_for_ms"].as_u64().unwrap() > 50_000, "{ups}");
    let l = endpoint(&ups, "v1", &live.endpoint());
    assert_eq!(l["ejected_for_ms"], 0, "{ups}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ejection_never_takes_more_than_the_cap() {
    let (a, b) = (dead_endpoint().await, dead_endpoint().await);
    let mut text = table()
        .version("v1", "current", "")
        .route("api", "/api/", "v1", "")
        .toml();
    text.push_str(&two_endpoint_pool(
        "v1",
        &a,
        &b,
        "[pools.outlier]\nconsecutive_failures = 1\nmax_ejected_percent = 50",
    ));
    let gw = TestGateway::start(text).await;
    for _ in 0..20 {
        assert_eq!(gw.get("/api/x").send().await.status(), 502);
    }
    let ups = gw.admin_get("/admin/upstreams").send().await.json();
    let ejected = [&a, &b]
        .iter()
        .filter(|e| endpoint(&ups, "v1", e)["ejected_for_ms"].as_u64().unwrap() > 0)
        .count();
    assert_eq!(ejected, 1, "50% of two endpoints: one at most\n{ups}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_checks_take_an_endpoint_out_and_bring_it_back() {
    let (a, b) = (Upstream::spawn("a").await, Upstream::spawn("b").await);
    let mut text = table()
        .version("v1", "current", "")
        .route("api", "/api/", "v1", "")
        .toml();
    text.push_str(&two_endpoint_pool(
        "v1",
        &a.endpoint(),
        &b.endpoint(),
        "[pools.health]\npath = \"/healthz\"\ninterval_ms = 50\ntimeout_ms = 500\n\
         healthy_threshold = 2\nunhealthy_threshold = 2",
    ));
    let gw = TestGateway::start(text).await;
    let served = |r: support::Resp| r.json()["served_by"].as_str().unwrap().to_string();

    b.reply(Method::GET, "/healthz", Reply::empty(503));
    eventually("b marked unhealthy", || async {
        let ups = gw.admin_get("/admin/upstreams").send().await.json();
        endpoint(&ups, "v1", &b.endpoint())["healthy"] == false
    })
    .await;
    for _ in 0..30 {
        assert_eq!(served(gw.get("/api/x").send().await), "a");
    }
    let ups = gw.admin_get("/admin/upstreams").send().await.json();
    assert_eq!(
        endpoint(&ups, "v1", &a.endpoint())["healthy"],
        true,
        "{ups}"
    );

    b.reply(Method::GET, "/healthz", Reply::empty(200));
    eventually("b healthy again and serving", || async {
        served(gw.get("/api/x").send().await) == "b"
    })
    .await;
    let received = b.received();
    let probes: Vec<_> = received.iter().filter(|r| r.uri == "/healthz").collect();
    assert!(probes.len() >= 4, "{} probes", probes.len());
    assert_eq!(
        probes[0].header("user-agent"),
        Some("switchyard-health-check")
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_with_no_healthy_endpoint_fails_over_and_ready_says_degraded_only_when_nothing_serves()
 {
    let eu = Upstream::spawn("v1-eu").await;
    let home = Upstream::spawn("v1-home").await;
    let text = table()
        .version("v1", "current", "")
        .pool_at(
            "v1",
            "v1",
            &home.endpoint(),
            "failover = \"v1-eu\"\n[pools.health]\npath = \"/healthz\"\ninterval_ms = 50\n\
             unhealthy_threshold = 1\nhealthy_threshold = 1",
        )
        .pool_at(
            "v1-eu",
            "v1",
            &eu.endpoint(),
            "[pools.health]\npath = \"/healthz\"\ninterval_ms = 50\n\
             unhealthy_threshold = 1\nhealthy_threshold = 1",
        )
        .route(
            "api",
            "/api/",
            "v1",
            "[routes.split]\nv1 = [{ pool = \"v1\", weight = 100 }]",
        )
        .toml();
    let gw = TestGateway::start(text).await;
    let served = |r: support::Resp| r.json()["served_by"].as_str().unwrap().to_string();
    assert_eq!(served(gw.get("/api/x").send().await), "v1-home");

    // The home pool's only endpoint fails its checks: no client sees an
    // error, the failover pool answers.
    home.reply(Method::GET, "/healthz", Reply::empty(500));
    eventually("home pool out, failover serving", || async {
        served(gw.get("/api/x").send().await) == "v1-eu"
    })
    .await;
    let ready = gw.get("/health/ready").send().await;
    assert_eq!(
        (ready.status(), ready.json()["status"].as_str()),
        (200, Some("ready"))
    );
    let ups = gw.admin_get("/admin/upstreams").send().await.json();
    let home_pool = ups["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "v1")
        .unwrap();
    assert_eq!(
        home_pool["serving"], true,
        "serving through its failover: {ups}"
    );
    assert_eq!(home_pool["failover"], "v1-eu");

    // Both down: 503 problem, and ready says degraded (still 200).
    eu.reply(Method::GET, "/healthz", Reply::empty(500));
    eventually("nothing serves", || async {
        gw.get("/api/x").send().await.status() == 503
    })
    .await;
    let r = gw.get("/api/x").send().await;
    assert_eq!(r.problem()["status"], 503);
    assert!(r.header("retry-after").is_some());
    let ready = gw.get("/health/ready").send().await;
    assert_eq!(ready.status(), 200);
    let body = ready.json();
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(
        body["pools_down"],
        serde_json::json!(["v1", "v1-eu"]),
        "{body}"
    );

    // Back: the home pool serves again.
    home.reply(Method::GET, "/healthz", Reply::empty(200));
    eventually("home pool back", || async {
        gw.get("/api/x").send().await.status() == 200
            && served(gw.get("/api/x").send().await) == "v1-home"
    })
    .await;
    gw.shutdown().await;
}

#[test]
fn health_settings_are_validated_with_field_paths() {
    let text = r#"
[[versions]]
name = "v1"
status = "current"

[[versions]]
name = "v2"
status = "current"

[[pools]]
name = "a"
version = "v1"
endpoints = ["127.0.0.1:1"]
failover = "a"
[pools.health]
path = "healthz"
interval_ms = 0
unhealthy_threshold = 0
expected_status = 999
[pools.outlier]
max_ejected_percent = 150
base_ejection_ms = 900000

[[pools]]
name = "b"
version = "v1"
endpoints = ["127.0.0.1:2"]
failover = "c"

[[pools]]
name = "c"
version = "v2"
endpoints = ["127.0.0.1:3"]

[[pools]]
name = "d"
version = "v1"
endpoints = ["127.0.0.1:4"]
failover = "nope"

[[routes]]
name = "api"
path_prefix = "/"
default_version = "v1"
"#;
    let err = switchyard::config::load(text, switchyard::config::Origin::Embedded("t"))
        .unwrap_err()
        .to_string();
    for want in [
        "pools[0].failover: a pool cannot fail over to itself",
        "pools[0].health.path: \"healthz\" must start with /",
        "pools[0].health.interval_ms: must be greater than 0",
        "pools[0].health.unhealthy_threshold: must be at least 1",
        "pools[0].health.expected_status: 999 is not an HTTP status",
        "pools[0].outlier.max_ejected_percent: must be at most 100, got 150",
        "pools[0].outlier.base_ejection_ms: must be between 1 and max_ejection_ms (300000), got 900000",
        "pools[1].failover: pool \"c\" serves v2, this pool serves v1",
        "pools[3].failover: unknown pool \"nope\"",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}
