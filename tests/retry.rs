//! Retries end to end with real upstreams: an idempotent request moves to
//! another endpoint after a retryable status; a POST that reached an
//! upstream is never sent twice; a request that never left is retried
//! whatever its method, body intact; the budget bounds retries; settings are
//! validated.

mod support;

use http::Method;
use support::{Reply, TestGateway, Upstream, dead_endpoint, table};

fn gateway_text(endpoints: &[String], pool_extra: &str, route_extra: &str) -> String {
    let mut text = table()
        .version("v1", "current", "")
        .route("api", "/api/", "v1", route_extra)
        .toml();
    let list: Vec<String> = endpoints.iter().map(|e| format!("{e:?}")).collect();
    text.push_str(&format!(
        "[[pools]]\nname = \"v1\"\nversion = \"v1\"\nendpoints = [{}]\n{pool_extra}\n",
        list.join(", ")
    ));
    text
}

/// Outlier ejection off: these tests count every try.
const NO_EJECTION: &str = "[pools.outlier]\nconsecutive_failures = 0";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_request_moves_to_another_endpoint_after_a_503() {
    let (bad, good) = (Upstream::spawn("bad").await, Upstream::spawn("good").await);
    bad.reply(Method::GET, "/api/x", Reply::json(503, "{\"busy\":true}"));
    let gw = TestGateway::start(gateway_text(
        &[bad.endpoint(), good.endpoint()],
        NO_EJECTION,
        "",
    ))
    .await;
    for _ in 0..30 {
        let r = gw.get("/api/x").send().await;
        assert_eq!(r.status(), 200, "{:?}", r.body);
        assert_eq!(r.json()["served_by"], "good");
    }
    assert!(bad.requests() > 0, "the bad endpoint was tried");
    assert_eq!(good.requests(), 30);
    gw.shutdown().await;
}

/// The lean client gives a bodiless request back after sending it, and
/// that is what goes to the next endpoint (no copy is made beforehand).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_retried_after_a_503_goes_again_as_it_came() {
    let (bad, good) = (Upstream::spawn("bad").await, Upstream::spawn("good").await);
    bad.reply(Method::GET, "/api/x", Reply::json(503, "{\"busy\":true}"));
    let gw = TestGateway::start(gateway_text(
        &[bad.endpoint(), good.endpoint()],
        NO_EJECTION,
        "",
    ))
    .await;
    for i in 0..20 {
        let r = gw
            .get(&format!("/api/x?q={i}"))
            .header("x-custom", "kept")
            .send()
            .await;
        assert_eq!(r.status(), 200, "{:?}", r.body);
        let got = good.last();
        assert_eq!(got.uri, format!("/api/x?q={i}"));
        assert_eq!(got.header("x-custom"), Some("kept"));
        assert_eq!(got.headers.get_all("via").iter().count(), 1, "one Via");
        assert_eq!(got.headers.get_all("host").iter().count(), 1, "one Host");
        assert_eq!(got.body.as_deref(), Some(&b""[..]), "no body");
    }
    assert!(bad.requests() > 0, "the bad endpoint was tried");
    assert_eq!(good.requests(), 20);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_that_reached_an_upstream_is_never_sent_twice() {
    let (bad, good) = (Upstream::spawn("bad").await, Upstream::spawn("good").await);
    bad.reply(Method::POST, "/api/x", Reply::json(503, "{\"busy\":true}"));
    let gw = TestGateway::start(gateway_text(
        &[bad.endpoint(), good.endpoint()],
        NO_EJECTION,
        "",
    ))
    .await;
    let mut unavailable = 0;
    for _ in 0..30 {
        let r = gw
            .request(Method::POST, "/api/x")
            .header("content-type", "application/json")
            .body("{\"n\":1}")
            .send()
            .await;
        match r.status() {
            200 => {}
            503 => unavailable += 1,
            s => panic!("unexpected {s}"),
        }
    }
    assert!(unavailable > 0, "some POSTs met the bad endpoint");
    assert_eq!(
        bad.requests(),
        unavailable,
        "each 503 is the one try that was made"
    );
    assert_eq!(
        bad.requests() + good.requests(),
        30,
        "no POST was sent twice"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_never_left_is_retried_whatever_its_method() {
    let good = Upstream::spawn("good").await;
    let dead = dead_endpoint().await;
    let gw = TestGateway::start(gateway_text(&[dead, good.endpoint()], NO_EJECTION, "")).await;
    for i in 0..20 {
        let body = format!("{{\"order\":{i},\"note\":\"{}\"}}", "x".repeat(2000));
        let r = gw
            .request(Method::POST, "/api/orders")
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await;
        assert_eq!(r.status(), 200, "{:?}", r.body);
        assert_eq!(
            good.last().body.as_deref(),
            Some(body.as_bytes()),
            "body intact"
        );
    }
    assert_eq!(good.requests(), 20);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_and_the_budget_bound_the_tries() {
    let bad = Upstream::spawn("bad").await;
    bad.reply(Method::GET, "/api/x", Reply::json(502, "{}"));
    // Three tries each while the budget has room (floor of 10, one request
    // at a time).
    let gw = TestGateway::start(gateway_text(
        &[bad.endpoint()],
        NO_EJECTION,
        "[routes.retry]\nattempts = 3",
    ))
    .await;
    for _ in 0..10 {
        assert_eq!(gw.get("/api/x").send().await.status(), 502);
    }
    assert_eq!(bad.requests(), 30);
    gw.shutdown().await;

    // No budget: no retries.
    let bad = Upstream::spawn("bad").await;
    bad.reply(Method::GET, "/api/x", Reply::json(502, "{}"));
    let gw = TestGateway::start(gateway_text(
        &[bad.endpoint()],
        NO_EJECTION,
        "[routes.retry]\nattempts = 3\nbudget_percent = 0\nmin_retries = 0",
    ))
    .await;
    for _ in 0..10 {
        assert_eq!(gw.get("/api/x").send().await.status(), 502);
    }
    assert_eq!(bad.requests(), 10, "an empty budget allows no retry");
    gw.shutdown().await;

    // attempts = 1: never.
    let bad = Upstream::spawn("bad").await;
    bad.reply(Method::GET, "/api/x", Reply::json(503, "{}"));
    let gw = TestGateway::start(gateway_text(
        &[bad.endpoint()],
        NO_EJECTION,
        "[routes.retry]\nattempts = 1",
    ))
    .await;
    for _ in 0..5 {
        assert_eq!(gw.get("/api/x").send().await.status(), 503);
    }
    assert_eq!(bad.requests(), 5);
    gw.shutdown().await;
}

#[test]
fn retry_settings_are_validated_with_field_paths() {
    let text = gateway_text(
        &["127.0.0.1:1".to_string()],
        "",
        "[routes.retry]\nattempts = 9\nbudget_percent = 101\nretry_statuses = [503, 429]",
    );
    let err = switchyard::config::load(&text, switchyard::config::Origin::Embedded("t"))
        .unwrap_err()
        .to_string();
    for want in [
        "routes[0].retry.attempts: must be between 1 and 5, got 9",
        "routes[0].retry.budget_percent: must be at most 100, got 101",
        "routes[0].retry.retry_statuses[1]: 429 is not a 5xx status",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}
