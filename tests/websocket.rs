//! WebSocket passthrough: an HTTP/1.1 `Upgrade: websocket` handshake is
//! routed like any request (the version detected on it picks the pool),
//! forwarded with its Upgrade kept, and after the 101 bytes flow both ways
//! between the client and a real WebSocket upstream until one side closes.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::{RawConn, TestGateway, Upstream, table};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::{Bytes, Message};

/// A WebSocket echo server on `127.0.0.1:0`: answers each text message with
/// `"<name>: <text>"`, binary ones unchanged, and closes on `"bye"`.
/// Records the path and `x-api-version` of each handshake.
struct EchoUpstream {
    addr: SocketAddr,
    handshakes: Arc<Mutex<Vec<Handshake>>>,
}

/// A handshake's path and query, and its `x-api-version`.
type Handshake = (String, Option<String>);

impl EchoUpstream {
    async fn spawn(name: &'static str) -> EchoUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handshakes = Arc::new(Mutex::new(Vec::new()));
        let seen = handshakes.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    // tungstenite's callback signature fixes the error type.
                    #[allow(clippy::result_large_err)]
                    let record = |req: &Request, resp: Response| {
                        let version = req
                            .headers()
                            .get("x-api-version")
                            .map(|v| v.to_str().unwrap().to_string());
                        seen.lock().unwrap().push((req.uri().to_string(), version));
                        Ok(resp)
                    };
                    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, record).await
                    else {
                        return;
                    };
                    while let Some(Ok(msg)) = ws.next().await {
                        let reply = match msg {
                            Message::Text(t) if t.as_str() == "bye" => {
                                let _ = ws.close(None).await;
                                break;
                            }
                            Message::Text(t) => Message::text(format!("{name}: {t}")),
                            Message::Binary(b) => Message::Binary(b),
                            Message::Close(_) => {
                                // Sends the close reply tungstenite queued.
                                let _ = ws.flush().await;
                                break;
                            }
                            _ => continue,
                        };
                        if ws.send(reply).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        EchoUpstream { addr, handshakes }
    }

    fn handshakes(&self) -> Vec<Handshake> {
        self.handshakes.lock().unwrap().clone()
    }
}

/// Echo upstreams for `v1` and `v2`.
async fn echo_pair() -> (EchoUpstream, EchoUpstream) {
    (
        EchoUpstream::spawn("v1").await,
        EchoUpstream::spawn("v2").await,
    )
}

async fn gateway(v1: &EchoUpstream, v2: &EchoUpstream) -> TestGateway {
    gateway_with(v1, v2, "idle_timeout_ms = 60000").await
}

async fn gateway_with(v1: &EchoUpstream, v2: &EchoUpstream, server: &str) -> TestGateway {
    gateway_route(v1, v2, server, "").await
}

/// [`gateway_with`] with `route` keys on the `/ws/` route.
async fn gateway_route(
    v1: &EchoUpstream,
    v2: &EchoUpstream,
    server: &str,
    route: &str,
) -> TestGateway {
    TestGateway::start(
        table()
            .server(server)
            .version("v1", "stable", "")
            .version("v2", "current", "")
            .pool_at("v1", "v1", &v1.addr.to_string(), "")
            .pool_at("v2", "v2", &v2.addr.to_string(), "")
            .route("ws", "/ws/", "v2", route),
    )
    .await
}

type Client = tokio_tungstenite::WebSocketStream<TcpStream>;

async fn connect(gw: &TestGateway, path: &str, version: Option<&str>) -> (Client, http::HeaderMap) {
    let mut req = format!("ws://{}{path}", gw.addr)
        .into_client_request()
        .unwrap();
    if let Some(v) = version {
        req.headers_mut()
            .insert("x-api-version", v.parse().unwrap());
    }
    let stream = TcpStream::connect(gw.addr).await.unwrap();
    let (ws, resp) = tokio_tungstenite::client_async(req, stream)
        .await
        .expect("WebSocket handshake through the gateway");
    assert_eq!(resp.status(), 101);
    (ws, resp.headers().clone())
}

/// An RFC 8441 WebSocket CONNECT to `path` over a new h2 connection, after
/// one plain exchange (so the gateway's SETTINGS allowing extended CONNECT
/// have arrived); the connection lives as long as the response's stream.
async fn h2_websocket_connect(
    addr: SocketAddr,
    path: &str,
    version: Option<&str>,
) -> (
    hyper::client::conn::http2::SendRequest<http_body_util::Empty<Bytes>>,
    http::Response<hyper::body::Incoming>,
) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake::<
        _,
        _,
        http_body_util::Empty<Bytes>,
    >(TokioExecutor::new(), TokioIo::new(stream))
    .await
    .unwrap();
    tokio::spawn(conn);
    let live = http::Request::get(format!("http://{addr}/health/live"))
        .body(http_body_util::Empty::new())
        .unwrap();
    assert_eq!(sender.send_request(live).await.unwrap().status(), 200);
    let mut req = http::Request::connect(format!("http://{addr}{path}"))
        .header("sec-websocket-version", "13");
    if let Some(v) = version {
        req = req.header("x-api-version", v);
    }
    let mut req = req.body(http_body_util::Empty::new()).unwrap();
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let resp = sender.send_request(req).await.expect("CONNECT answered");
    (sender, resp)
}

async fn next_text(ws: &mut Client) -> String {
    match ws.next().await.expect("a message").expect("no error") {
        Message::Text(t) => t.to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

#[tokio::test]
async fn a_websocket_handshake_is_routed_by_version_and_echoes_through_the_gateway() {
    let (v1, v2) = echo_pair().await;
    let gw = gateway(&v1, &v2).await;

    let (mut ws, headers) = connect(&gw, "/ws/chat?room=7", Some("v1")).await;
    assert_eq!(headers["x-api-version-served"], "v1");
    assert_eq!(headers["x-api-version-source"], "header");
    for i in 0..3 {
        ws.send(Message::text(format!("hello {i}"))).await.unwrap();
        assert_eq!(next_text(&mut ws).await, format!("v1: hello {i}"));
    }
    let blob = Bytes::from(vec![7u8; 100_000]);
    ws.send(Message::Binary(blob.clone())).await.unwrap();
    match ws.next().await.unwrap().unwrap() {
        Message::Binary(b) => assert_eq!(b, blob),
        other => panic!("expected binary, got {other:?}"),
    }
    ws.close(None).await.unwrap();
    assert!(matches!(
        ws.next().await,
        Some(Ok(Message::Close(_))) | None
    ));

    assert_eq!(
        v1.handshakes(),
        vec![("/ws/chat?room=7".to_string(), Some("v1".to_string()))]
    );
    assert!(v2.handshakes().is_empty());

    // No version: the route's default.
    let (mut ws, headers) = connect(&gw, "/ws/chat", None).await;
    assert_eq!(headers["x-api-version-served"], "v2");
    ws.send(Message::text("hi")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "v2: hi");
}

#[tokio::test]
async fn the_upstream_closing_ends_the_tunnel() {
    let (v1, v2) = echo_pair().await;
    let gw = gateway(&v1, &v2).await;
    let (mut ws, _) = connect(&gw, "/ws/x", Some("v2")).await;
    ws.send(Message::text("bye")).await.unwrap();
    let end = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the client saw the upstream's close");
}

#[tokio::test]
async fn an_upstream_that_declines_the_upgrade_answers_as_usual() {
    let up = Upstream::spawn("plain").await;
    let gw = TestGateway::start(
        table()
            .version("v1", "current", "")
            .pool("v1", "v1", &up)
            .route("api", "/api/", "v1", ""),
    )
    .await;
    let mut conn = RawConn::connect(gw.addr).await;
    let resp = conn
        .exchange(
            b"GET /api/x HTTP/1.1\r\nhost: a.example\r\nupgrade: websocket\r\n\
              connection: upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
              sec-websocket-version: 13\r\n\r\n",
        )
        .await;
    assert_eq!(resp.status, 200);
    let got = up.last();
    assert_eq!(got.header("upgrade"), Some("websocket"));
    assert_eq!(got.header("connection"), Some("upgrade"));
    assert_eq!(got.header("sec-websocket-version"), Some("13"));
    // A plain request on the same connection still works.
    let resp = conn
        .exchange(b"GET /api/y HTTP/1.1\r\nhost: a.example\r\n\r\n")
        .await;
    assert_eq!(resp.status, 200);
}

#[tokio::test]
async fn an_h2_client_gets_a_websocket_by_extended_connect() {
    use tokio_tungstenite::tungstenite::protocol::Role;

    let (v1, v2) = echo_pair().await;
    // Idle timeout shorter than the conversation: the open tunnel keeps
    // the h2 connection busy.
    let gw = gateway_with(&v1, &v2, "idle_timeout_ms = 200").await;
    let (mut sender, resp) = h2_websocket_connect(gw.addr, "/ws/chat", Some("v1")).await;
    assert_eq!(resp.status(), 200, "RFC 8441: 200 opens the tunnel");
    assert_eq!(resp.headers()["x-api-version-served"], "v1");
    let upgraded = hyper::upgrade::on(resp).await.expect("h2 stream upgraded");
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        TokioIo::new(upgraded),
        Role::Client,
        None,
    )
    .await;
    for i in 0..2 {
        ws.send(Message::text(format!("over h2 {i}")))
            .await
            .unwrap();
        match ws.next().await.unwrap().unwrap() {
            Message::Text(t) => assert_eq!(t.as_str(), format!("v1: over h2 {i}")),
            other => panic!("expected text, got {other:?}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    }
    assert_eq!(
        v1.handshakes(),
        vec![("/ws/chat".to_string(), Some("v1".to_string()))]
    );
    // The h2 connection still carries ordinary requests beside the tunnel.
    let live = http::Request::get(format!("http://{}/health/live", gw.addr))
        .body(http_body_util::Empty::new())
        .unwrap();
    assert_eq!(sender.send_request(live).await.unwrap().status(), 200);
}

#[tokio::test]
async fn an_extended_connect_the_upstream_answers_without_101_gets_502() {
    let up = Upstream::spawn("plain").await;
    let gw = TestGateway::start(
        table()
            .version("v1", "current", "")
            .pool("v1", "v1", &up)
            .route("api", "/api/", "v1", ""),
    )
    .await;
    let (_sender, resp) = h2_websocket_connect(gw.addr, "/api/chat", None).await;
    assert_eq!(resp.status(), 502);
    let got = up.last();
    assert_eq!(
        got.method,
        http::Method::GET,
        "sent upstream as an HTTP/1.1 handshake"
    );
    assert_eq!(got.header("upgrade"), Some("websocket"));
    assert_eq!(got.header("sec-websocket-key").map(str::len), Some(24));
}

/// Waits (up to 5 s) for the client's side of a tunnel to end, whichever
/// way (a close frame, an error or end of stream).
async fn tunnel_ends(ws: &mut Client) -> bool {
    tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn a_tunnel_idle_for_the_routes_timeout_is_closed_and_a_busy_one_is_not() {
    let (v1, v2) = echo_pair().await;
    let gw = gateway_route(&v1, &v2, "", "tunnel_idle_timeout_ms = 600").await;
    let (mut ws, _) = connect(&gw, "/ws/chat", Some("v1")).await;
    // Busy for three times the timeout: messages keep it open.
    for i in 0..18 {
        ws.send(Message::text(format!("tick {i}"))).await.unwrap();
        assert_eq!(next_text(&mut ws).await, format!("v1: tick {i}"));
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Then quiet: closed within 1.25 x the timeout (plus scheduling).
    let quiet = std::time::Instant::now();
    assert!(tunnel_ends(&mut ws).await, "an idle tunnel was closed");
    let after = quiet.elapsed();
    assert!(
        after >= std::time::Duration::from_millis(550)
            && after < std::time::Duration::from_millis(3000),
        "closed after {after:?} of quiet"
    );
}

#[tokio::test]
async fn an_open_tunnel_counts_against_the_connection_limit() {
    let (v1, v2) = echo_pair().await;
    let gw = gateway_with(&v1, &v2, "max_connections = 1").await;
    let (mut ws, _) = connect(&gw, "/ws/chat", Some("v1")).await;
    ws.send(Message::text("hi")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "v1: hi");
    // The handshake's connection is the tunnel now, and still the one
    // connection allowed.
    let resp = gw
        .raw(b"GET /health/live HTTP/1.1\r\nhost: a\r\n\r\n")
        .await;
    assert_eq!(
        resp.status, 503,
        "a second connection is shed while the tunnel is open"
    );
    ws.send(Message::text("bye")).await.unwrap();
    assert!(tunnel_ends(&mut ws).await);
    // The client closes its end after the close handshake, as a browser
    // does once the server's side has closed.
    drop(ws);
    support::eventually("the tunnel's connection is given back", || async {
        gw.raw(b"GET /health/live HTTP/1.1\r\nhost: a\r\n\r\n")
            .await
            .status
            == 200
    })
    .await;
}

#[tokio::test]
async fn the_drain_waits_for_an_open_tunnel_and_closes_it_at_the_grace_period() {
    let (v1, v2) = echo_pair().await;
    // A tunnel that closes during the drain lets it complete in time.
    let gw = gateway_with(&v1, &v2, "grace_period_ms = 3000").await;
    let (mut ws, _) = connect(&gw, "/ws/chat", Some("v1")).await;
    gw.begin_shutdown();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    ws.send(Message::text("still here")).await.unwrap();
    assert_eq!(
        next_text(&mut ws).await,
        "v1: still here",
        "the drain leaves the tunnel open"
    );
    ws.send(Message::text("bye")).await.unwrap();
    assert!(tunnel_ends(&mut ws).await);
    drop(ws);
    assert!(
        gw.shutdown().await,
        "the drain completed once the tunnel closed"
    );

    // One that stays open is closed at the grace period.
    let gw = gateway_with(&v1, &v2, "grace_period_ms = 500").await;
    let (mut ws, _) = connect(&gw, "/ws/chat", Some("v1")).await;
    let start = std::time::Instant::now();
    let drained = gw.shutdown().await;
    assert!(!drained, "the drain reports the tunnel it had to cut");
    assert!(start.elapsed() >= std::time::Duration::from_millis(450));
    assert!(
        tunnel_ends(&mut ws).await,
        "the tunnel was closed at the grace period"
    );
}
