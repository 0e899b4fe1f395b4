//! Failures and lifecycle of the process as a client sees them: dead and
//! slow upstreams, graceful shutdown (drain and grace period), and the
//! health probes on both listeners.

mod support;

use std::time::{Duration, Instant};

use support::*;
use tokio::net::TcpStream;

/// One version served by one pool at `endpoint`, on `/`, with extra route
/// keys and `[server]` lines.
fn one_pool(endpoint: &str, route: &str, server: &[&str]) -> Table {
    let mut t = table()
        .version("v1", "current", "")
        .pool_at("v1", "v1", endpoint, "")
        .route("all", "/", "v1", route);
    for line in server {
        t = t.server(line);
    }
    t
}

#[tokio::test]
async fn dead_upstream_answers_502_within_a_second() {
    let gw = TestGateway::start(one_pool(&dead_endpoint().await, "", &[])).await;
    let start = Instant::now();
    let resp = gw.get("/orders").send().await;
    let elapsed = start.elapsed();
    assert_eq!(resp.status(), 502);
    let p = resp.problem();
    assert_eq!(p["pool"], "v1");
    assert!(
        p["type"]
            .as_str()
            .unwrap()
            .ends_with("/upstream-connect-failed"),
        "{p}"
    );
    assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");
}

#[tokio::test]
async fn slow_upstream_answers_504_at_the_route_timeout() {
    let slow = Upstream::spawn_slow("v1", Duration::from_secs(5)).await;
    let gw = TestGateway::start(one_pool(&slow.endpoint(), "timeout_ms = 300", &[])).await;
    let start = Instant::now();
    let resp = gw.get("/orders").send().await;
    let elapsed = start.elapsed();
    assert_eq!(resp.status(), 504);
    let p = resp.problem();
    assert!(
        p["type"].as_str().unwrap().ends_with("/upstream-timeout"),
        "{p}"
    );
    assert_eq!(slow.requests(), 1, "the upstream did get the request");
    assert!(
        elapsed >= Duration::from_millis(300),
        "answered before the timeout: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_millis(600),
        "answered well after the timeout: {elapsed:?}"
    );
}

#[tokio::test]
async fn graceful_shutdown_lets_an_in_flight_request_finish() {
    let slow = Upstream::spawn_slow("v1", Duration::from_millis(500)).await;
    let gw = TestGateway::start(one_pool(&slow.endpoint(), "", &[])).await;
    let addr = gw.addr;
    let (resp, ()) = tokio::join!(gw.get("/orders").send(), async {
        eventually("the slow request reaches the upstream", || async {
            slow.requests() == 1
        })
        .await;
        gw.begin_shutdown();
        eventually("the listener stops accepting", || async {
            TcpStream::connect(addr).await.is_err()
        })
        .await;
    });
    assert_eq!(resp.status(), 200, "the in-flight request finishes");
    assert_eq!(resp.served_by(), "v1");
    assert!(gw.shutdown().await, "serve reports a complete drain");
}

#[tokio::test]
async fn shutdown_gives_up_after_the_grace_period() {
    let stuck = Upstream::spawn_slow("v1", Duration::from_secs(30)).await;
    let gw = TestGateway::start(one_pool(&stuck.endpoint(), "", &["grace_period_ms = 300"])).await;
    let mut shutdown_at = None;
    let (result, ()) = tokio::join!(gw.get("/orders").try_send(), async {
        eventually("the request reaches the upstream", || async {
            stuck.requests() == 1
        })
        .await;
        gw.begin_shutdown();
        shutdown_at = Some(Instant::now());
    });
    let cut_after = shutdown_at.expect("shutdown began").elapsed();
    assert!(
        result.is_err(),
        "the request is cut at the grace period, not answered: {result:?}"
    );
    assert!(
        cut_after >= Duration::from_millis(300) && cut_after < Duration::from_secs(2),
        "cut {cut_after:?} after shutdown began, grace is 300 ms"
    );
    assert!(!gw.shutdown().await, "serve reports an incomplete drain");
}

#[tokio::test]
async fn health_endpoints_answer_on_both_listeners() {
    let up = Upstream::spawn("v1").await;
    let gw = TestGateway::start(one_pool(&up.endpoint(), "", &[])).await;
    for (listener, live, ready) in [
        (
            "proxy",
            gw.get("/health/live").send().await,
            gw.get("/health/ready").send().await,
        ),
        (
            "admin",
            gw.admin_get("/health/live").send().await,
            gw.admin_get("/health/ready").send().await,
        ),
    ] {
        assert_eq!(live.status(), 200, "{listener} live");
        assert_eq!(live.json()["status"], "live", "{listener} live");
        assert_eq!(ready.status(), 200, "{listener} ready");
        assert_eq!(ready.json()["status"], "ready", "{listener} ready");
    }
    assert_eq!(
        up.requests(),
        0,
        "probes are answered by the gateway itself"
    );
}

#[tokio::test]
async fn health_on_proxy_can_be_turned_off() {
    let up = Upstream::spawn("v1").await;
    let gw = TestGateway::start(one_pool(&up.endpoint(), "", &["health_on_proxy = false"])).await;
    let resp = gw.get("/health/live").send().await;
    assert_eq!(resp.served_by(), "v1", "the path is routed like any other");
    let resp = gw.admin_get("/health/live").send().await;
    assert_eq!(resp.status(), 200, "the admin listener still answers");
}
