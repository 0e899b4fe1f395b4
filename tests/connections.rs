//! Client connection timeouts: an idle keep-alive connection (HTTP/1.1
//! and h2) is closed after `idle_timeout_ms`, one in use never is; a client
//! that stops sending its request body gets 408 problem+json after
//! `body_read_timeout_ms` and the upstream request is aborted.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::{RawConn, TestGateway, Upstream, eventually, table, two_versions};

const GET: &[u8] = b"GET /api/x HTTP/1.1\r\nhost: a.example\r\n\r\n";

async fn gateway(up: &Upstream, server: &[&str]) -> TestGateway {
    let mut t = table()
        .version("v1", "current", "")
        .pool("v1", "v1", up)
        .route("api", "/api/", "v1", "");
    for line in server {
        t = t.server(line);
    }
    TestGateway::start(t).await
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let up = Upstream::spawn("v1").await;
    let gw = gateway(&up, &["idle_timeout_ms = 300"]).await;
    let mut conn = RawConn::connect(gw.addr).await;
    assert_eq!(conn.exchange(GET).await.status, 200);
    let idle_since = Instant::now();
    conn.closed().await;
    let after = idle_since.elapsed();
    assert!(
        after >= Duration::from_millis(300) && after < Duration::from_secs(3),
        "closed after {after:?}"
    );
}

#[tokio::test]
async fn a_connection_that_is_never_idle_for_the_timeout_stays_open() {
    let up = Upstream::spawn("v1").await;
    let gw = gateway(&up, &["idle_timeout_ms = 300"]).await;
    let mut conn = RawConn::connect(gw.addr).await;
    // A request slower than the idle timeout is not idleness...
    up.set_delay(Duration::from_millis(700));
    assert_eq!(conn.exchange(GET).await.status, 200);
    up.set_delay(Duration::ZERO);
    // ...and neither are requests closer together than it.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(conn.exchange(GET).await.status, 200);
    }
    assert_eq!(up.requests(), 9);
}

#[tokio::test]
async fn an_idle_h2_connection_is_shut_down_after_the_idle_timeout() {
    let up = Upstream::spawn("v1").await;
    let gw = gateway(&up, &["idle_timeout_ms = 300"]).await;
    let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake::<_, _, Empty<Bytes>>(
        TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .expect("h2c handshake");
    let conn = tokio::spawn(conn);
    let req = http::Request::get(format!("http://{}/api/x", gw.addr))
        .body(Empty::new())
        .unwrap();
    let resp = sender.send_request(req).await.expect("h2 response");
    assert_eq!(resp.status(), 200);
    drop(resp);
    let idle_since = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("the gateway ended the idle h2 connection");
    assert!(ended.is_ok());
    assert!(idle_since.elapsed() >= Duration::from_millis(300));
    assert!(sender.is_closed());
}

#[tokio::test]
async fn idle_timeout_zero_keeps_connections_open() {
    let up = Upstream::spawn("v1").await;
    let gw = gateway(&up, &["idle_timeout_ms = 0"]).await;
    let mut conn = RawConn::connect(gw.addr).await;
    assert_eq!(conn.exchange(GET).await.status, 200);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(conn.exchange(GET).await.status, 200);
}

#[tokio::test]
async fn a_stalled_request_body_gets_408_and_the_upstream_request_is_aborted() {
    let up = Upstream::spawn("v1").await;
    let gw = gateway(&up, &["body_read_timeout_ms = 300"]).await;
    let mut conn = RawConn::connect(gw.addr).await;
    let started = Instant::now();
    conn.send(b"POST /api/x HTTP/1.1\r\nhost: a.example\r\ncontent-length: 100\r\n\r\n0123456789")
        .await;
    let resp = conn.response().await;
    assert_eq!(
        resp.status,
        408,
        "{:?}",
        String::from_utf8_lossy(&resp.body)
    );
    assert_eq!(
        resp.problem()["type"],
        "https://switchyard.dev/problems/request-body-timeout"
    );
    assert_eq!(resp.header("connection"), Some("close"));
    assert!(started.elapsed() >= Duration::from_millis(300));
    // The upstream got the head and a body that never completed.
    eventually("the upstream saw the request", || async {
        up.requests() == 1
    })
    .await;
    assert_eq!(
        up.last().body,
        None,
        "the upstream request was aborted, not completed"
    );
    conn.closed().await;
}

#[tokio::test]
async fn a_stalled_body_being_buffered_for_translation_gets_408() {
    let (v1, v2) = (Upstream::spawn("v1").await, Upstream::spawn("v2").await);
    let gw = TestGateway::start(two_versions(&v1, &v2).server("body_read_timeout_ms = 300")).await;
    let mut conn = RawConn::connect(gw.addr).await;
    conn.send(
        b"POST /legacy/x HTTP/1.1\r\nhost: a.example\r\nx-api-version: v1\r\n\
          content-type: application/json\r\ncontent-length: 100\r\n\r\n{\"name\": ",
    )
    .await;
    let resp = conn.response().await;
    assert_eq!(resp.status, 408);
    assert_eq!(
        resp.problem()["type"],
        "https://switchyard.dev/problems/request-body-timeout"
    );
    assert_eq!(
        v1.requests() + v2.requests(),
        0,
        "nothing half-read is forwarded"
    );
}

#[tokio::test]
async fn a_slow_but_steady_body_is_not_cut() {
    let up = Upstream::spawn("v1").await;
    let gw = gateway(&up, &["body_read_timeout_ms = 300"]).await;
    let mut conn = RawConn::connect(gw.addr).await;
    conn.send(b"POST /api/x HTTP/1.1\r\nhost: a.example\r\ncontent-length: 8\r\n\r\n")
        .await;
    // 8 bytes over 1.2 s: every gap is under the timeout, the total is not.
    for b in b"abcdefgh" {
        tokio::time::sleep(Duration::from_millis(150)).await;
        conn.send(&[*b]).await;
    }
    let resp = conn.response().await;
    assert_eq!(resp.status, 200);
    assert_eq!(up.last().body.as_deref(), Some(&b"abcdefgh"[..]));
}
