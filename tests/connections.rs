//! Client connection timeouts: an idle keep-alive connection (HTTP/1.1
//! and h2) is closed after `idle_timeout_ms`, one in use never is; a client
//! that stops sending its request body gets 408 problem+json after
//! `body_read_timeout_ms` and the upstream request is aborted. Also how
//! h2 responses are encoded: the per-request id as a never-indexed field.

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

/// Reads one HPACK integer with an `n`-bit prefix at `b[*i]`.
fn hpack_int(b: &[u8], i: &mut usize, n: u32) -> usize {
    let max = (1usize << n) - 1;
    let mut v = usize::from(b[*i]) & max;
    *i += 1;
    if v == max {
        let mut shift = 0;
        loop {
            let byte = b[*i];
            *i += 1;
            v += usize::from(byte & 0x7f) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
        }
    }
    v
}

/// How many fields of an HPACK block are (incrementally indexed,
/// never-indexed) literals (RFC 7541 section 6).
fn hpack_literals(b: &[u8]) -> (usize, usize) {
    let (mut indexed, mut never) = (0, 0);
    let mut i = 0;
    while i < b.len() {
        let first = b[i];
        let (prefix, literal) = match first {
            _ if first & 0x80 != 0 => (7, false),
            _ if first & 0xc0 == 0x40 => {
                indexed += 1;
                (6, true)
            }
            _ if first & 0xe0 == 0x20 => (5, false),
            _ if first & 0xf0 == 0x10 => {
                never += 1;
                (4, true)
            }
            _ => (4, true),
        };
        let name = hpack_int(b, &mut i, prefix);
        if literal {
            // A new name (index 0) is a string before the value.
            for _ in 0..if name == 0 { 2 } else { 1 } {
                let len = hpack_int(b, &mut i, 7);
                i += len;
            }
        }
    }
    (indexed, never)
}

#[tokio::test]
async fn h2_request_ids_go_out_as_never_indexed_literals() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = Upstream::spawn("v1").await;
    let gw = gateway(&up, &[]).await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    // h2c by prior knowledge: the preface, empty SETTINGS, then three GETs
    // (static-table :method and :scheme, literal :authority and :path).
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0".to_vec();
    for stream in [1u8, 3, 5] {
        let mut block = vec![0x82, 0x86, 0x01, 9];
        block.extend_from_slice(b"a.example");
        block.extend_from_slice(&[0x04, 6]);
        block.extend_from_slice(b"/api/x");
        out.extend_from_slice(&[0, 0, block.len() as u8, 0x01, 0x05, 0, 0, 0, stream]);
        out.extend_from_slice(&block);
    }
    s.write_all(&out).await.unwrap();
    // Each response's HEADERS block, in arrival order.
    let mut blocks = Vec::new();
    let read = async {
        while blocks.len() < 3 {
            let mut head = [0u8; 9];
            s.read_exact(&mut head).await.expect("a frame header");
            let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
            let mut payload = vec![0u8; len];
            s.read_exact(&mut payload).await.expect("a frame payload");
            if head[3] == 0x01 {
                assert_eq!(head[4] & 0x04, 0x04, "one HEADERS frame, no CONTINUATION");
                blocks.push(payload);
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("three responses in time");
    for (n, block) in blocks.iter().enumerate() {
        let (indexed, never) = hpack_literals(block);
        // x-request-id is the only field here whose value is new each time
        // (no rate limits, so no RateLimit field).
        assert_eq!(never, 1, "response {n}: {block:02x?}");
        if n > 0 {
            // Later answers find their other fields in the dynamic table,
            // bar a Date that moved on a second.
            assert!(
                indexed <= 1,
                "response {n} added {indexed} fields to the table"
            );
        }
    }
    assert_eq!(up.requests(), 3);
}
