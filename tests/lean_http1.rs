//! The lean HTTP/1.1 server path (`src/server/lean.rs`): the same bytes on
//! the wire as hyper's path for the requests it takes, and the same requests
//! upstream (checked against a second gateway with `lean_http1 = false`),
//! small bodies that arrive with their head kept on the lean path,
//! pipelined requests in order, a connection handed to hyper mid-way at
//! its first request with a chunked body (and the handoff counted),
//! a client that hangs up cancelling its request,
//! `Connection: close`, heads that arrive in pieces, and the h2 preface.

mod support;

use std::time::Duration;

use http::Method;
use support::{RawConn, Reply, TestGateway, Upstream, normalised, table};

async fn gateway(up: &Upstream, lean: bool) -> TestGateway {
    TestGateway::start(
        table()
            .server(&format!("lean_http1 = {lean}"))
            .server("header_read_timeout_ms = 400")
            .version("v1", "current", "")
            .version("v2", "beta", "")
            .pool("v1", "v1", up)
            .pool("v2", "v2", up)
            .route("api", "/api/", "v1", ""),
    )
    .await
}

#[tokio::test]
async fn lean_and_hyper_paths_put_the_same_responses_on_the_wire() {
    let up = Upstream::spawn("up").await;
    up.reply(Method::GET, "/api/none", Reply::empty(204));
    up.reply(
        Method::GET,
        "/api/same",
        Reply::empty(304).header("etag", "\"v7\""),
    );
    up.reply(
        Method::GET,
        "/api/big",
        Reply::raw(200, "text/plain", vec![b'x'; 100 * 1024]),
    );
    up.reply(Method::GET, "/api/empty", Reply::raw(200, "text/plain", ""));
    up.reply(
        Method::DELETE,
        "/api/order/7",
        Reply::json(202, r#"{"deleted":7}"#).header("x-trace", "a, b"),
    );
    let lean = gateway(&up, true).await;
    let hyper = gateway(&up, false).await;
    let requests: [&[u8]; 10] = [
        b"GET /api/x HTTP/1.1\r\nhost: a.example\r\n\r\n",
        b"GET /api/x?q=1&r=%20 HTTP/1.1\r\nhost: a.example\r\nx-api-version: 2\r\n\r\n",
        b"GET /api/none HTTP/1.1\r\nhost: a.example\r\n\r\n",
        b"GET /api/same HTTP/1.1\r\nhost: a.example\r\nif-none-match: \"v7\"\r\n\r\n",
        b"GET /api/big HTTP/1.1\r\nhost: a.example\r\n\r\n",
        b"GET /api/empty HTTP/1.1\r\nhost: a.example\r\ncontent-length: 0\r\n\r\n",
        b"DELETE /api/order/7 HTTP/1.1\r\nhost: a.example\r\n\r\n",
        b"GET /api/x HTTP/1.1\r\nhost: a.example\r\nx-api-version: 9\r\n\r\n",
        b"GET http://a.example/api/x HTTP/1.1\r\nhost: a.example\r\n\r\n",
        b"GET /nowhere HTTP/1.1\r\nhost: a.example\r\nx_bad: 1\r\n\r\n",
    ];
    let (mut a, mut b) = same_answers(&lean, &hyper, &requests).await;
    // Both kept the connection for all of them.
    assert_eq!(
        a.exchange(requests[0]).await.status,
        b.exchange(requests[0]).await.status
    );
}

/// Sends each request to both gateways in turn, on one connection to each,
/// and checks that the answers match; returns the two connections.
async fn same_answers(
    lean: &TestGateway,
    hyper: &TestGateway,
    requests: &[&[u8]],
) -> (RawConn, RawConn) {
    let (mut a, mut b) = (
        RawConn::connect(lean.addr).await,
        RawConn::connect(hyper.addr).await,
    );
    for request in requests {
        let (ra, rb) = (a.exchange(request).await, b.exchange(request).await);
        assert_eq!(
            normalised(&ra),
            normalised(&rb),
            "lean vs hyper for {:?}",
            String::from_utf8_lossy(request)
        );
        assert!(ra.header("date").is_some(), "a date field");
    }
    (a, b)
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_across_the_move_to_hyper() {
    let up = Upstream::spawn("up").await;
    let gw = gateway(&up, true).await;
    // Two lean GETs, a POST with a chunked body (hyper from here on),
    // then a GET.
    let pipelined = b"GET /api/1 HTTP/1.1\r\nhost: a.example\r\n\r\n\
GET /api/2 HTTP/1.1\r\nhost: a.example\r\n\r\n\
POST /api/3 HTTP/1.1\r\nhost: a.example\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n7\r\n{\"n\":3}\r\n0\r\n\r\n\
GET /api/4 HTTP/1.1\r\nhost: a.example\r\n\r\n";
    let responses = support::raw_exchange_many(gw.addr, pipelined, 4).await;
    assert!(responses.iter().all(|r| r.status == 200), "{responses:?}");
    let seen: Vec<_> = up
        .received()
        .iter()
        .map(|r| (r.method.to_string(), r.uri.clone()))
        .collect();
    assert_eq!(
        seen,
        [
            ("GET".into(), "/api/1".into()),
            ("GET".into(), "/api/2".into()),
            ("POST".into(), "/api/3".into()),
            ("GET".into(), "/api/4".into()),
        ]
    );
    assert_eq!(
        up.received()[2].body.as_deref(),
        Some(&b"{\"n\":3}"[..]),
        "the body that followed the lean requests reached the upstream whole"
    );
    let m = gw.metrics().await;
    assert_eq!(
        m.value("switchyard_http1_handoffs_total", &[("reason", "body")]),
        Some(1.0),
        "the connection went to hyper at the chunked body"
    );
    assert_eq!(m.sum("switchyard_http1_handoffs_total", &[]), 1.0);
}

#[tokio::test]
async fn a_framing_violation_after_lean_requests_still_gets_400_and_a_close() {
    let up = Upstream::spawn("up").await;
    let gw = gateway(&up, true).await;
    let mut conn = RawConn::connect(gw.addr).await;
    assert_eq!(
        conn.exchange(b"GET /api/1 HTTP/1.1\r\nhost: a.example\r\n\r\n")
            .await
            .status,
        200
    );
    let smuggled = conn
        .exchange(
            b"POST /api/2 HTTP/1.1\r\nhost: a.example\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        )
        .await;
    assert_eq!(smuggled.status, 400, "{smuggled:?}");
    assert!(
        smuggled.problem()["detail"]
            .as_str()
            .is_some_and(|d| d.contains("Transfer-Encoding")),
        "{:?}",
        smuggled.problem()
    );
    conn.closed().await;
    assert_eq!(
        up.requests(),
        1,
        "the smuggling request never went upstream"
    );
}

#[tokio::test]
async fn connection_close_is_answered_with_close_and_the_connection_ends() {
    let up = Upstream::spawn("up").await;
    let gw = gateway(&up, true).await;
    let mut conn = RawConn::connect(gw.addr).await;
    let resp = conn
        .exchange(b"GET /api/x HTTP/1.1\r\nhost: a.example\r\nconnection: close\r\n\r\n")
        .await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("connection"), Some("close"));
    conn.closed().await;
}

#[tokio::test]
async fn a_head_in_pieces_is_served_and_a_stalled_one_gets_408() {
    let up = Upstream::spawn("up").await;
    let gw = gateway(&up, true).await;
    let mut conn = RawConn::connect(gw.addr).await;
    conn.send(b"GET /api/x HT").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    conn.send(b"TP/1.1\r\nhost: a.exa").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(conn.exchange(b"mple\r\n\r\n").await.status, 200);
    // The timeout runs from a head's first byte, not from the connection's.
    conn.send(b"GET /api/y HTTP/1.1\r\n").await;
    let stalled = conn.response().await;
    assert_eq!(stalled.status, 408, "{stalled:?}");
    conn.closed().await;
    assert_eq!(up.requests(), 1);
}

#[tokio::test]
async fn prior_knowledge_h2_still_works_with_the_lean_path_on() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let up = Upstream::spawn("up").await;
    let gw = gateway(&up, true).await;
    let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let req = http::Request::get("http://a.example/api/x")
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.expect("h2 response");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("served_by"));
    let m = gw.metrics().await;
    assert_eq!(
        m.value("switchyard_http1_handoffs_total", &[("reason", "h2")]),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_client_that_hangs_up_mid_request_cancels_it_on_both_paths() {
    let up = Upstream::spawn_slow("up", Duration::from_secs(3)).await;
    for lean in [true, false] {
        let gw = gateway(&up, lean).await;
        let mut conn = RawConn::connect(gw.addr).await;
        conn.send(b"GET /api/slow HTTP/1.1\r\nhost: a.example\r\n\r\n")
            .await;
        let in_flight = || async {
            gw.metrics()
                .await
                .value("switchyard_requests_in_flight", &[])
                .unwrap_or(0.0)
        };
        support::eventually("the request is in flight", || async {
            in_flight().await == 1.0
        })
        .await;
        drop(conn);
        let hung_up = std::time::Instant::now();
        support::eventually("the request is cancelled", || async {
            in_flight().await == 0.0
        })
        .await;
        assert!(
            hung_up.elapsed() < Duration::from_secs(2),
            "lean {lean}: cancelled {:?} after the hang-up, not when the upstream answered",
            hung_up.elapsed()
        );
    }
}

#[tokio::test]
async fn upstreams_receive_the_same_requests_from_both_paths() {
    let up = Upstream::spawn("up").await;
    let lean = gateway(&up, true).await;
    let hyper = gateway(&up, false).await;
    let requests: [&[u8]; 7] = [
        b"POST /api/orders HTTP/1.1\r\nhost: a.example\r\ncontent-type: application/json\r\ncontent-length: 13\r\n\r\n{\"qty\":12345}",
        b"PUT /api/orders/1 HTTP/1.1\r\nhost: a.example\r\ncontent-length: 5\r\nx-api-version: 2\r\n\r\nhello",
        b"PATCH /api/orders/1?dry=1 HTTP/1.1\r\nhost: a.example\r\ncontent-length: 2\r\n\r\n{}",
        b"POST /api/empty HTTP/1.1\r\nhost: a.example\r\n\r\n",
        b"POST /api/zero HTTP/1.1\r\nhost: a.example\r\ncontent-length: 0\r\n\r\n",
        b"GET /api/odd HTTP/1.1\r\nhost: a.example\r\ncontent-length: 3\r\n\r\nabc",
        b"DELETE /api/orders/1 HTTP/1.1\r\nhost: a.example\r\nconnection: keep-alive, x-hop\r\nx-hop: 1\r\n\r\n",
    ];
    same_answers(&lean, &hyper, &requests).await;
    let seen = up.received();
    assert_eq!(seen.len(), 2 * requests.len());
    let strip = |r: &support::Recorded| {
        let mut headers: Vec<_> = r
            .headers
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "x-request-id" | "traceparent"))
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        headers.sort();
        (r.method.clone(), r.uri.clone(), headers, r.body.clone())
    };
    for (i, pair) in seen.chunks(2).enumerate() {
        assert_eq!(
            strip(&pair[0]),
            strip(&pair[1]),
            "upstream's view of {:?}",
            String::from_utf8_lossy(requests[i])
        );
    }
    assert_eq!(seen[0].body.as_deref(), Some(&b"{\"qty\":12345}"[..]));
    // Every one of them, bodies included, stayed on the lean path.
    assert_eq!(
        lean.metrics()
            .await
            .sum("switchyard_http1_handoffs_total", &[]),
        0.0
    );
}

#[tokio::test]
async fn a_streamed_response_reaches_the_client_as_it_arrives() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A raw upstream: one chunk at once, the last 400 ms later.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            if s.read(&mut b).await.unwrap_or(0) == 0 {
                return;
            }
            head.push(b[0]);
        }
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n6\r\nfirst\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        s.write_all(b"5\r\nlast\n\r\n0\r\n\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
    });
    let gw = TestGateway::start(
        table()
            .version("v1", "current", "")
            .pool_at("v1", "v1", &addr, "")
            .route("all", "/", "v1", ""),
    )
    .await;
    let mut client = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    client
        .write_all(b"GET /events HTTP/1.1\r\nhost: a.example\r\n\r\n")
        .await
        .unwrap();
    let sent = std::time::Instant::now();
    let mut got = Vec::new();
    let mut first_at = None;
    while !got.ends_with(b"0\r\n\r\n") {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut chunk))
            .await
            .expect("the stream went on")
            .unwrap();
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
        if first_at.is_none() && got.windows(6).any(|w| w == b"first\n") {
            first_at = Some(sent.elapsed());
        }
    }
    let first_at = first_at.expect("the first event");
    assert!(
        first_at < Duration::from_millis(300) && sent.elapsed() >= Duration::from_millis(400),
        "first event after {first_at:?}, all after {:?}",
        sent.elapsed()
    );
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("transfer-encoding: chunked"), "{text}");
}

#[tokio::test]
async fn a_body_still_arriving_is_streamed_by_hyper() {
    let up = Upstream::spawn("up").await;
    let gw = gateway(&up, true).await;
    let mut conn = RawConn::connect(gw.addr).await;
    conn.send(
        b"POST /api/slow-body HTTP/1.1\r\nhost: a.example\r\ncontent-length: 10\r\n\r\nhello",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    let resp = conn.exchange(b"world").await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(up.last().body.as_deref(), Some(&b"helloworld"[..]));
    // The connection is hyper's now, and still serves.
    assert_eq!(
        conn.exchange(b"GET /api/x HTTP/1.1\r\nhost: a.example\r\n\r\n")
            .await
            .status,
        200
    );
    assert_eq!(
        gw.metrics()
            .await
            .value("switchyard_http1_handoffs_total", &[("reason", "body")]),
        Some(1.0)
    );
}
