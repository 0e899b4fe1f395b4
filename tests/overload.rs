//! Load shedding per listener, with real sockets: past
//! `max_requests_in_flight` a request gets 503 problem+json with
//! `Retry-After` and never reaches the upstream; past `max_connections` a
//! new connection gets one 503 and is closed; the admin listener has its own
//! counters, so probes keep answering while the proxy sheds.

mod support;

use std::time::Duration;

use support::{TestGateway, Upstream, table};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_the_in_flight_limit_get_503_and_never_reach_the_upstream() {
    let up = Upstream::spawn_slow("v1", Duration::from_millis(600)).await;
    let gw = TestGateway::start(
        table()
            .server("max_requests_in_flight = 2")
            .version("v1", "current", "")
            .pool("v1", "v1", &up)
            .route("api", "/api/", "v1", ""),
    )
    .await;
    let gw = std::sync::Arc::new(gw);
    let mut tasks = Vec::new();
    for i in 0..6 {
        let gw = gw.clone();
        tasks.push(tokio::spawn(async move {
            // The first two are surely in flight before the rest arrive.
            if i >= 2 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            gw.get("/api/x").send().await
        }));
    }
    // Probes on the admin listener are not counted against the proxy's.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gw.admin_get("/health/ready").send().await.status(), 200);
    let mut ok = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r.status() {
            200 => ok += 1,
            503 => {
                let p = r.problem();
                assert_eq!(
                    p["type"].as_str().unwrap().rsplit('/').next(),
                    Some("overloaded"),
                    "{p}"
                );
                assert!(
                    p["detail"]
                        .as_str()
                        .unwrap()
                        .contains("requests in flight limit of 2"),
                    "{p}"
                );
                assert_eq!(r.header("retry-after"), Some("1"));
            }
            s => panic!("unexpected {s}"),
        }
    }
    assert_eq!(ok, 2, "exactly the limit was served");
    assert_eq!(up.requests(), 2, "shed requests never reached the upstream");
    // Capacity comes back with the finished requests.
    assert_eq!(gw.get("/api/x").send().await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_past_the_limit_gets_one_503_and_is_closed() {
    let up = Upstream::spawn("v1").await;
    let gw = TestGateway::start(
        table()
            .server("max_connections = 2")
            .version("v1", "current", "")
            .pool("v1", "v1", &up)
            .route("api", "/api/", "v1", ""),
    )
    .await;
    let idle_a = TcpStream::connect(gw.addr).await.unwrap();
    let idle_b = TcpStream::connect(gw.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = gw.raw(b"GET /api/x HTTP/1.1\r\nhost: t\r\n\r\n").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("connection"), Some("close"));
    let p: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("connections limit of 2"),
        "{p}"
    );
    assert_eq!(up.requests(), 0);
    drop(idle_a);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = gw.raw(b"GET /api/x HTTP/1.1\r\nhost: t\r\n\r\n").await;
    assert_eq!(r.status, 200, "a freed slot is usable again");
    drop(idle_b);
}
