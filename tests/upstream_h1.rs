//! The lean HTTP/1.1 upstream client (`src/upstream/h1.rs`) against a raw
//! TCP upstream that answers with scripted bytes: chunked bodies split
//! across writes, trailers, interim responses, close-delimited bodies,
//! malformed and truncated responses, keep-alive reuse, and idle
//! connections the upstream closes.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::Method;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the upstream does with each request it reads.
#[derive(Clone)]
struct Script {
    /// The response, written in these pieces with a short pause between.
    pieces: Vec<&'static [u8]>,
    /// Close the connection after answering (after this pause).
    close_after: Option<Duration>,
}

impl Script {
    fn whole(bytes: &'static [u8]) -> Script {
        Script {
            pieces: vec![bytes],
            close_after: None,
        }
    }
}

/// A raw upstream on a loopback port: reads request heads (and
/// `content-length` bodies) and answers each with its script.
struct RawUpstream {
    addr: String,
    connections: Arc<AtomicUsize>,
    requests: Arc<tokio::sync::Mutex<Vec<Vec<u8>>>>,
}

impl RawUpstream {
    async fn spawn(script: Script) -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(tokio::sync::Mutex::new(Vec::new()));
        let (c, r) = (connections.clone(), requests.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                c.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, script.clone(), r.clone()));
            }
        });
        RawUpstream {
            addr,
            connections,
            requests,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    async fn requests(&self) -> Vec<String> {
        self.requests
            .lock()
            .await
            .iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect()
    }
}

async fn serve(
    mut stream: TcpStream,
    script: Script,
    requests: Arc<tokio::sync::Mutex<Vec<Vec<u8>>>>,
) {
    let mut buf = Vec::new();
    loop {
        // One request: the head, then a content-length body if any.
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let chunked = head.contains("transfer-encoding: chunked\r\n");
        let mut body_len = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .map_or(0, |v| v.trim().parse::<usize>().unwrap());
        // A chunked body: up to the last chunk and an empty trailer section
        // (enough for these tests' bodies, which carry no trailers).
        if chunked {
            loop {
                if let Some(i) = buf[head_end..].windows(5).position(|w| w == b"0\r\n\r\n") {
                    body_len = i + 5;
                    break;
                }
                let mut chunk = [0u8; 4096];
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        }
        while buf.len() < head_end + body_len {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        requests
            .lock()
            .await
            .push(buf.drain(..head_end + body_len).collect());
        for (i, piece) in script.pieces.iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if stream.write_all(piece).await.is_err() {
                return;
            }
        }
        if let Some(pause) = script.close_after {
            tokio::time::sleep(pause).await;
            return;
        }
    }
}

fn gateway_for(up: &RawUpstream) -> Table {
    table()
        .version("v1", "current", "")
        .pool_at("v1", "v1", &up.addr, "")
        .route("all", "/", "v1", "")
}

#[tokio::test]
async fn chunked_body_split_across_writes_arrives_whole_with_the_connection_reused() {
    let up = RawUpstream::spawn(Script {
        pieces: vec![
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n5;ext=\"a\"\r\nhel",
            b"lo\r\n6\r\n world\r",
            b"\n0\r\nx-checksum: 1\r\n\r\n",
        ],
        close_after: None,
    })
    .await;
    let gw = TestGateway::start(gateway_for(&up)).await;
    for _ in 0..3 {
        let resp = gw.get("/a").send().await;
        assert_eq!(resp.status(), 200);
        assert_eq!(&resp.body[..], b"hello world");
    }
    assert_eq!(
        up.connections(),
        1,
        "one keep-alive connection for all three"
    );
}

#[tokio::test]
async fn content_length_bodies_reuse_the_connection_and_close_is_honoured() {
    let keep = RawUpstream::spawn(Script::whole(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
    ))
    .await;
    let gw = TestGateway::start(gateway_for(&keep)).await;
    for _ in 0..5 {
        let resp = gw.get("/a").send().await;
        assert_eq!((resp.status(), &resp.body[..]), (200, &b"ok"[..]));
    }
    assert_eq!(keep.connections(), 1);

    let close = RawUpstream::spawn(Script {
        pieces: vec![b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"],
        close_after: Some(Duration::ZERO),
    })
    .await;
    let gw = TestGateway::start(gateway_for(&close)).await;
    for _ in 0..3 {
        let resp = gw.get("/a").send().await;
        assert_eq!((resp.status(), &resp.body[..]), (200, &b"ok"[..]));
    }
    assert_eq!(close.connections(), 3, "connection: close is never reused");
}

#[tokio::test]
async fn close_delimited_body_is_read_to_the_end() {
    let up = RawUpstream::spawn(Script {
        pieces: vec![
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil ",
            b"close",
        ],
        close_after: Some(Duration::ZERO),
    })
    .await;
    let gw = TestGateway::start(gateway_for(&up)).await;
    for _ in 0..2 {
        let resp = gw.get("/a").send().await;
        assert_eq!((resp.status(), &resp.body[..]), (200, &b"until close"[..]));
    }
    assert_eq!(up.connections(), 2);
}

#[tokio::test]
async fn interim_responses_are_skipped() {
    let up = RawUpstream::spawn(Script::whole(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </s.css>\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 4\r\n\r\ndone",
    ))
    .await;
    let gw = TestGateway::start(gateway_for(&up)).await;
    let resp = gw.get("/a").send().await;
    assert_eq!((resp.status(), &resp.body[..]), (201, &b"done"[..]));
}

#[tokio::test]
async fn malformed_responses_are_502_problems() {
    for bytes in [
        &b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nx"[..],
        b"HTTP/1.1 200 OK\r\ncontent-length: nope\r\n\r\n",
        b"SMTP ready\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\n\r\n",
    ] {
        let up = RawUpstream::spawn(Script::whole(bytes)).await;
        let gw = TestGateway::start(gateway_for(&up)).await;
        let resp = gw.get("/a").send().await;
        assert_eq!(resp.status(), 502, "{}", String::from_utf8_lossy(bytes));
        let p = resp.problem();
        assert!(
            p["type"]
                .as_str()
                .unwrap()
                .ends_with("/upstream-protocol-error"),
            "{p}"
        );
    }
}

#[tokio::test]
async fn a_truncated_body_fails_the_client_response_instead_of_ending_short() {
    let up = RawUpstream::spawn(Script {
        pieces: vec![b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten.."],
        close_after: Some(Duration::ZERO),
    })
    .await;
    let gw = TestGateway::start(gateway_for(&up)).await;
    let outcome = gw.get("/a").try_send().await;
    assert!(
        outcome.is_err(),
        "a short body must not look complete: {outcome:?}"
    );
    // The next request is served normally, on a new connection.
    let chunked = RawUpstream::spawn(Script {
        pieces: vec![b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel"],
        close_after: Some(Duration::ZERO),
    })
    .await;
    let gw = TestGateway::start(gateway_for(&chunked)).await;
    assert!(
        gw.get("/a").try_send().await.is_err(),
        "truncated chunked body"
    );
}

#[tokio::test]
async fn a_body_that_stalls_is_cut_at_the_routes_body_timeout_and_a_slow_one_is_not() {
    // Ten bytes of a hundred, then silence for longer than the test.
    let up = RawUpstream::spawn(Script {
        pieces: vec![b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten.."],
        close_after: Some(Duration::from_secs(30)),
    })
    .await;
    let gw = TestGateway::start(
        table()
            .version("v1", "current", "")
            .pool_at("v1", "v1", &up.addr, "")
            .route("all", "/", "v1", "body_timeout_ms = 300"),
    )
    .await;
    assert_body_cut(gw.get("/a"), Duration::from_millis(300)).await;

    // A body whose pieces each come within the timeout is never cut, however
    // long it takes in all: 40 pieces 20 ms apart (the raw upstream's pause
    // between pieces), about 800 ms, against 300 ms.
    let mut pieces: Vec<&'static [u8]> = vec![b"HTTP/1.1 200 OK\r\ncontent-length: 40\r\n\r\n"];
    pieces.extend(std::iter::repeat_n(&b"x"[..], 40));
    let slow = RawUpstream::spawn(Script {
        pieces,
        close_after: None,
    })
    .await;
    let gw = TestGateway::start(
        table()
            .version("v1", "current", "")
            .pool_at("v1", "v1", &slow.addr, "")
            .route("all", "/", "v1", "body_timeout_ms = 300"),
    )
    .await;
    let start = std::time::Instant::now();
    let resp = gw.get("/a").send().await;
    assert_eq!(resp.status(), 200);
    assert_eq!(&resp.body[..], &[b'x'; 40][..]);
    assert!(
        start.elapsed() > Duration::from_millis(300),
        "the body took longer than the timeout in all: {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn a_translated_body_that_stalls_gets_504() {
    let up = RawUpstream::spawn(Script {
        pieces: vec![
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"b\":",
        ],
        close_after: Some(Duration::from_secs(30)),
    })
    .await;
    let gw = TestGateway::start(
        table()
            .version("v1", "stable", "")
            .version(
                "v2",
                "current",
                "[[versions.changes]]\nop = \"rename\"\nfrom = \"/a\"\nto = \"/b\"",
            )
            .pool_at("v2", "v2", &up.addr, "")
            .route(
                "all",
                "/",
                "v2",
                "body_timeout_ms = 300\n[routes.split]\nv1 = [{ pool = \"v2\", weight = 100 }]",
            ),
    )
    .await;
    let resp = gw.get("/a").header("x-api-version", "v1").send().await;
    assert_eq!(resp.status(), 504);
    assert_eq!(
        resp.problem()["type"].as_str().unwrap().rsplit('/').next(),
        Some("upstream-timeout")
    );
}

#[tokio::test]
async fn an_idle_connection_the_upstream_closed_is_not_used() {
    // The upstream answers keep-alive style, then closes the idle
    // connection 50 ms later, as an upstream keep-alive timeout does.
    let up = RawUpstream::spawn(Script {
        pieces: vec![b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"],
        close_after: Some(Duration::from_millis(50)),
    })
    .await;
    let gw = TestGateway::start(gateway_for(&up)).await;
    for method in [Method::GET, Method::POST, Method::GET] {
        let resp = gw.request(method.clone(), "/a").body("{}").send().await;
        assert_eq!(resp.status(), 200, "{method}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(up.connections(), 3);
    assert_eq!(
        up.requests().await.len(),
        3,
        "each request sent exactly once"
    );
}

#[tokio::test]
async fn head_responses_have_no_body_and_keep_the_connection() {
    let up = RawUpstream::spawn(Script::whole(
        b"HTTP/1.1 200 OK\r\ncontent-length: 1234\r\ncontent-type: application/json\r\n\r\n",
    ))
    .await;
    let gw = TestGateway::start(gateway_for(&up)).await;
    for _ in 0..3 {
        let resp = gw.request(Method::HEAD, "/a").send().await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.header("content-length"), Some("1234"));
        assert!(resp.body.is_empty());
    }
    assert_eq!(up.connections(), 1);
}

#[tokio::test]
async fn the_request_goes_out_with_one_length_and_its_body() {
    let up = RawUpstream::spawn(Script::whole(
        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
    ))
    .await;
    let gw = TestGateway::start(gateway_for(&up)).await;
    let resp = gw
        .request(Method::POST, "/a?x=1")
        .header("content-type", "application/json")
        .body(r#"{"a":1}"#)
        .send()
        .await;
    assert_eq!(resp.status(), 200);
    let sent = up.requests().await.remove(0);
    let lower = sent.to_ascii_lowercase();
    assert!(sent.starts_with("POST /a?x=1 HTTP/1.1\r\n"), "{sent}");
    assert_eq!(lower.matches("content-length:").count(), 1, "{sent}");
    assert!(lower.contains("content-length: 7\r\n"), "{sent}");
    assert!(!lower.contains("transfer-encoding"), "{sent}");
    assert!(sent.ends_with("\r\n\r\n{\"a\":1}"), "{sent}");
}

#[tokio::test]
async fn a_streamed_body_without_a_length_goes_out_chunked() {
    let up = RawUpstream::spawn(Script::whole(
        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
    ))
    .await;
    let gw = TestGateway::start(gateway_for(&up)).await;
    let mut client = TcpStream::connect(gw.addr).await.unwrap();
    client
        .write_all(b"POST /a HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n")
        .await
        .unwrap();
    // The rest arrives later: the gateway has sent what it had meanwhile.
    tokio::time::sleep(Duration::from_millis(100)).await;
    client.write_all(b"2\r\nde\r\n0\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 1024];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = client.read(&mut chunk).await.unwrap();
        assert!(n > 0, "gateway closed before answering");
        answer.extend_from_slice(&chunk[..n]);
    }
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let sent = up.requests().await.remove(0);
    let lower = sent.to_ascii_lowercase();
    assert!(lower.contains("transfer-encoding: chunked\r\n"), "{sent}");
    assert!(!lower.contains("content-length"), "{sent}");
    assert!(
        sent.ends_with("\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"),
        "{sent:?}"
    );
}

/// An upstream that answers every request at once except those for
/// `/stall`, which it reads and never answers; counts connections.
async fn stalling_upstream() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let connections = Arc::new(AtomicUsize::new(0));
    let c = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        let mut chunk = [0u8; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head: Vec<u8> = buf.drain(..end + 4).collect();
                    if head.starts_with(b"GET /stall ") {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        return;
                    }
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if stream.write_all(ok).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, connections)
}

#[tokio::test]
async fn the_response_timeout_holds_on_a_reused_connection_and_only_then() {
    let (addr, connections) = stalling_upstream().await;
    let gw = TestGateway::start(
        table()
            .version("v1", "current", "")
            .pool_at("v1", "v1", &addr, "")
            .route("all", "/", "v1", "timeout_ms = 300"),
    )
    .await;
    let elapsed = |started: std::time::Instant| started.elapsed().as_millis();

    // The connection's timer is armed by the first request and passes
    // while the connection is idle: later requests are not cut by it.
    assert_eq!(gw.get("/a").send().await.status(), 200);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(gw.get("/b").send().await.status(), 200);

    // Armed by `/c` (300 ms from its start); a stalled request 150 ms
    // later has its own 300 ms, not what is left of `/c`'s.
    assert_eq!(gw.get("/c").send().await.status(), 200);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let started = std::time::Instant::now();
    let resp = gw.get("/stall").send().await;
    let took = elapsed(started);
    assert_eq!(resp.status(), 504);
    assert!(
        resp.problem()["type"]
            .as_str()
            .unwrap()
            .ends_with("/upstream-timeout")
    );
    assert!((300..700).contains(&took), "timed out after {took} ms");
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "all on one connection"
    );

    // The timed-out connection is not reused; a new one answers.
    assert_eq!(gw.get("/d").send().await.status(), 200);
    assert_eq!(connections.load(Ordering::SeqCst), 2);
}

/// The lean server writes a plain response's fields as they arrived
/// (`RawFields`): what reaches the client must be what the general path
/// (hyper's server, every field through a map) sends, hop-by-hop fields
/// gone, the gateway's `via` after the upstream's, the stamp's fields
/// replacing the upstream's of the same name. Heads the lean path must not
/// copy (a field named by `Connection`, a stamp name, bare LF lines, a
/// close-delimited body) take the general path on both.
#[tokio::test]
async fn fields_passed_on_as_they_arrived_match_the_general_path() {
    let scripts: [&'static [u8]; 7] = [
        // Plain, with hop-by-hop fields, repeated names and mixed case.
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nX-Custom: a\r\nSet-Cookie: a=1\r\nX-Custom: b\r\nVia: 1.1 edge\r\nTE: trailers\r\nProxy-Authorization: secret\r\nUpgrade: h2c\r\nDate: Tue, 01 Dec 2026 10:00:00 GMT\r\nContent-Length: 5\r\n\r\nhello",
        // Chunked, with a stray length and a trailer announcement.
        b"HTTP/1.1 200 OK\r\ncontent-length: 99\r\ntrailer: x-sum\r\nx-a: 1\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx-sum: 1\r\n\r\n",
        // A field named by `Connection` must go too.
        b"HTTP/1.1 200 OK\r\nconnection: x-drop\r\nx-drop: 1\r\nx-keep: 2\r\ncontent-length: 2\r\n\r\nok",
        // The upstream's request id and version echo give way to the stamp's.
        b"HTTP/1.1 201 Created\r\nX-Request-Id: from-upstream\r\nx-api-version: v0\r\ncontent-length: 2\r\n\r\nok",
        // Bare LF line ends.
        b"HTTP/1.1 200 OK\nx-lf: 1\ncontent-length: 2\n\nok",
        // No fields at all.
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        // A length, then `Connection: close` from the upstream.
        b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
    ];
    for script in scripts {
        let up = RawUpstream::spawn(Script::whole(script)).await;
        let lean = TestGateway::start(gateway_for(&up)).await;
        let general = TestGateway::start(gateway_for(&up).server("lean_http1 = false")).await;
        let request = b"GET /a HTTP/1.1\r\nhost: a.example\r\n\r\n";
        let (mut a, mut b) = (
            RawConn::connect(lean.addr).await,
            RawConn::connect(general.addr).await,
        );
        let what = String::from_utf8_lossy(script);
        for _ in 0..2 {
            let (ra, rb) = (a.exchange(request).await, b.exchange(request).await);
            assert_eq!(
                normalised(&ra),
                normalised(&rb),
                "lean vs hyper for {what:?}"
            );
            let names: Vec<&str> = ra.headers.iter().map(|(k, _)| k.as_str()).collect();
            for hop in [
                "connection",
                "keep-alive",
                "te",
                "trailer",
                "upgrade",
                "proxy-authorization",
                "x-drop",
            ] {
                assert!(!names.contains(&hop), "{hop} passed on for {what:?}");
            }
            let vias: Vec<&str> = ra
                .headers
                .iter()
                .filter(|(k, _)| k == "via")
                .map(|(_, v)| v.as_str())
                .collect();
            assert_eq!(vias.last(), Some(&"1.1 switchyard"), "{what:?}");
            assert_eq!(
                names.iter().filter(|n| **n == "x-request-id").count(),
                1,
                "{what:?}"
            );
            assert_ne!(ra.header("x-request-id"), Some("from-upstream"));
            assert_eq!(names.iter().filter(|n| **n == "date").count(), 1);
            assert!(ra.body == b"hello" || ra.body == b"ok", "{what:?}");
        }
    }
}
