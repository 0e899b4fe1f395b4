//! The access log as an operator reads it: one JSON event per request on
//! the `switchyard::access` target, with every field. Alone in its test
//! binary: `tracing` caches whether a call site is enabled per process, and
//! a test thread without a subscriber hitting the site first would race the
//! subscriber this test installs.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use support::*;

/// Collects what a `tracing` subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// The access-log events so far, as JSON.
    fn access_events(&self) -> Vec<serde_json::Value> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["target"] == "switchyard::access")
            .collect()
    }
}

/// The JSON format `--log-format json` uses, at `info`, into a buffer, for
/// this thread (the gateway's tasks run on the test's single thread).
fn capture_logs() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(move || writer.clone())
        .finish();
    (captured, tracing::subscriber::set_default(subscriber))
}

#[tokio::test]
async fn access_log_has_one_json_event_per_request_with_every_field() {
    let (logs, _guard) = capture_logs();
    let (v1, v2) = (Upstream::spawn("v1").await, Upstream::spawn("v2").await);
    let t =
        two_versions(&v1, &v2).route("cached", "/cached", "v2", "[routes.cache]\nttl_ms = 60000");
    let gw = TestGateway::start(t).await;
    let trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let r = gw
        .get("/api/orders/7")
        .header("x-api-version", "1")
        .header("x-request-id", "req-42")
        .header("traceparent", trace)
        .send()
        .await;
    assert_eq!(r.served_by(), "v1");
    gw.get("/cached/a").send().await;
    gw.get("/cached/a").send().await;
    gw.get("/api/x").header("x-api-version", "9").send().await;

    let events = logs.access_events();
    assert_eq!(events.len(), 4, "one event per request: {events:#?}");
    let f = &events[0]["fields"];
    assert_eq!(events[0]["level"], "INFO");
    assert_eq!(f["message"], "request");
    assert_eq!(f["request_id"], "req-42");
    assert_eq!(f["trace_id"], "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(f["method"], "GET");
    assert_eq!(f["path"], "/api/orders/7");
    assert_eq!(f["route"], "api");
    assert_eq!(f["client_version"], "v1");
    assert_eq!(f["source"], "header");
    assert_eq!(f["target_version"], "v1");
    assert_eq!(f["status"], 200);
    assert_eq!(f["pool"], "v1");
    assert_eq!(f["endpoint"], v1.endpoint());
    assert_eq!(f["bytes_out"], r.body.len());
    for key in ["duration_ms", "upstream_ms"] {
        let ms = f[key].as_f64().unwrap_or_else(|| panic!("{key} in {f}"));
        assert!(ms > 0.0 && ms < 10_000.0, "{key} = {ms}");
    }
    assert!(f.get("cache").is_none(), "not a cached route: {f}");

    assert_eq!(events[1]["fields"]["cache"], "MISS");
    assert_eq!(events[2]["fields"]["cache"], "HIT");
    assert!(
        events[2]["fields"].get("upstream_ms").is_none(),
        "a hit never went upstream"
    );
    let bad = &events[3]["fields"];
    assert_eq!(bad["status"], 400);
    assert_eq!(bad["error"], "unknown-version");
    assert!(
        bad["trace_id"].as_str().is_some_and(|t| t.len() == 32),
        "{bad}"
    );
}
