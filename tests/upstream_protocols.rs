//! Upstream TLS and HTTP/2 per pool: HTTPS endpoints checked against a
//! pool's CA (certificates made by rcgen at test time), a client
//! certificate for mTLS, `h2` over TLS by ALPN with one multiplexed
//! connection, `h2c` by prior knowledge, and gRPC trailers passed through
//! untouched from an h2 upstream to an h2c client.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use support::{TestGateway, table};
use tokio::net::TcpListener;

/// A test CA that signs leaf certificates, written into a temp dir.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: tempfile::TempDir,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.crt"), issuer.pem()).unwrap();
        Ca { issuer, dir }
    }

    fn file(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_string()
    }

    /// Writes `<stem>.crt` and `<stem>.key` for `names`; returns both paths.
    fn leaf(&self, stem: &str, names: &[&str]) -> (String, String) {
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (c, k) = (
            self.file(&format!("{stem}.crt")),
            self.file(&format!("{stem}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }
}

/// A TLS server config for `ca`'s leaf for localhost and 127.0.0.1,
/// offering h2 and http/1.1, asking for a client certificate from
/// `client_ca` if given.
fn server_tls(ca: &Ca, client_ca: Option<&Ca>) -> Arc<ServerConfig> {
    let (cert, key) = ca.leaf("server", &["localhost", "127.0.0.1"]);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(Path::new(&cert))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(Path::new(&key)).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(c) => {
            let mut roots = RootCertStore::empty();
            roots.add(c.issuer.der().clone()).unwrap();
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// What an upstream saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    version: Version,
    path: String,
    headers: HeaderMap,
}

/// A real hyper upstream (HTTP/1.1 or h2, TLS or not) on `127.0.0.1:0`.
/// Answers `{"served_by": name}` after `delay`; on `/grpc/...` it answers
/// like a gRPC server: a data frame, then `grpc-status`/`grpc-message`
/// trailers.
struct H2Upstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicU64>,
}

type RespBody = BoxBody<Bytes, Infallible>;

impl H2Upstream {
    async fn spawn(name: &'static str, tls: Option<Arc<ServerConfig>>, delay: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicU64::new(0));
        let (s, c) = (seen.clone(), connections.clone());
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (seen, acceptor) = (s.clone(), acceptor.clone());
                let c = c.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let seen = seen.clone();
                        async move { Ok::<_, Infallible>(answer(name, delay, &seen, req).await) }
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match acceptor {
                        None => {
                            c.fetch_add(1, Ordering::Relaxed);
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                        Some(acceptor) => {
                            // Counted once the handshake succeeds.
                            let Ok(stream) = acceptor.accept(stream).await else {
                                return;
                            };
                            c.fetch_add(1, Ordering::Relaxed);
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        H2Upstream {
            addr,
            seen,
            connections,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}

async fn answer(
    name: &str,
    delay: Duration,
    seen: &Mutex<Vec<Seen>>,
    req: Request<Incoming>,
) -> Response<RespBody> {
    let (parts, body) = req.into_parts();
    seen.lock().unwrap().push(Seen {
        version: parts.version,
        path: parts.uri.path().to_string(),
        headers: parts.headers.clone(),
    });
    let got = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    tokio::time::sleep(delay).await;
    if parts.uri.path().starts_with("/stall/") {
        // Ten bytes of a hundred, then nothing more, ever.
        let frames = futures_util::StreamExt::chain(
            futures_util::stream::iter([Ok::<_, Infallible>(Frame::data(Bytes::from_static(
                b"only ten..",
            )))]),
            futures_util::stream::pending(),
        );
        let mut resp = Response::new(StreamBody::new(frames).boxed());
        resp.headers_mut()
            .insert("content-length", HeaderValue::from_static("100"));
        return resp;
    }
    if parts.uri.path().starts_with("/grpc/") {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        trailers.insert("grpc-message", HeaderValue::from_static("all good"));
        let frames = vec![
            Ok::<_, Infallible>(Frame::data(got)),
            Ok(Frame::trailers(trailers)),
        ];
        let mut resp = Response::new(StreamBody::new(futures_util::stream::iter(frames)).boxed());
        resp.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/grpc"));
        return resp;
    }
    let body = serde_json::json!({ "served_by": name }).to_string();
    let mut resp = Response::new(Full::new(Bytes::from(body)).boxed());
    resp.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    resp
}

/// A gateway with one pool `v1` at `up` with the pool keys `extra`.
async fn gateway(up: SocketAddr, extra: &str) -> TestGateway {
    TestGateway::start(
        table()
            .version("v1", "current", "")
            .pool_at("v1", "v1", &up.to_string(), extra)
            .route("api", "/", "v1", ""),
    )
    .await
}

#[tokio::test]
async fn an_https_pool_checks_the_endpoint_against_its_ca_and_reuses_the_connection() {
    let ca = Ca::new("upstream CA");
    let up = H2Upstream::spawn("tls-v1", Some(server_tls(&ca, None)), Duration::ZERO).await;
    let ca_file = ca.file("ca.crt");
    let gw = gateway(
        up.addr,
        &format!("tls = {{ ca_file = {ca_file:?}, server_name = \"localhost\" }}"),
    )
    .await;
    for _ in 0..5 {
        assert_eq!(gw.get("/x").send().await.served_by(), "tls-v1");
    }
    let seen = up.seen();
    assert_eq!(seen.len(), 5);
    assert!(
        seen.iter().all(|s| s.version == Version::HTTP_11),
        "{seen:?}"
    );
    assert_eq!(up.connections(), 1, "one keep-alive TLS connection");
}

#[tokio::test]
async fn without_server_name_the_endpoint_host_is_checked() {
    let ca = Ca::new("upstream CA");
    let up = H2Upstream::spawn("tls-v1", Some(server_tls(&ca, None)), Duration::ZERO).await;
    let ca_file = ca.file("ca.crt");
    // The certificate names 127.0.0.1, the endpoint's host.
    let gw = gateway(up.addr, &format!("tls = {{ ca_file = {ca_file:?} }}")).await;
    assert_eq!(gw.get("/x").send().await.served_by(), "tls-v1");
}

#[tokio::test]
async fn an_endpoint_certificate_from_another_ca_gets_502() {
    let (ca, other) = (Ca::new("upstream CA"), Ca::new("someone else"));
    let up = H2Upstream::spawn("tls-v1", Some(server_tls(&ca, None)), Duration::ZERO).await;
    let wrong = other.file("ca.crt");
    let gw = gateway(
        up.addr,
        &format!("tls = {{ ca_file = {wrong:?}, server_name = \"localhost\" }}"),
    )
    .await;
    let resp = gw.get("/x").send().await;
    assert_eq!(resp.status(), 502);
    assert_eq!(
        resp.problem()["type"],
        "https://switchyard.dev/problems/upstream-connect-failed"
    );
    assert!(up.seen().is_empty());
}

#[tokio::test]
async fn an_mtls_pool_presents_its_client_certificate() {
    let (ca, clients) = (Ca::new("upstream CA"), Ca::new("gateway clients"));
    let up = H2Upstream::spawn(
        "mtls-v1",
        Some(server_tls(&ca, Some(&clients))),
        Duration::ZERO,
    )
    .await;
    let (cert, key) = clients.leaf("gateway", &["gateway.internal"]);
    let ca_file = ca.file("ca.crt");
    let gw = gateway(
        up.addr,
        &format!(
            "tls = {{ ca_file = {ca_file:?}, server_name = \"localhost\", client_cert = {cert:?}, client_key = {key:?} }}"
        ),
    )
    .await;
    assert_eq!(gw.get("/x").send().await.served_by(), "mtls-v1");

    // Without the certificate, the upstream refuses the handshake.
    let gw = gateway(
        up.addr,
        &format!("tls = {{ ca_file = {ca_file:?}, server_name = \"localhost\" }}"),
    )
    .await;
    assert_eq!(gw.get("/x").send().await.status(), 502);
}

#[tokio::test]
async fn an_h2_pool_multiplexes_concurrent_requests_over_one_tls_connection() {
    let ca = Ca::new("upstream CA");
    let up = H2Upstream::spawn(
        "h2-v1",
        Some(server_tls(&ca, None)),
        Duration::from_millis(200),
    )
    .await;
    let ca_file = ca.file("ca.crt");
    let gw = gateway(
        up.addr,
        &format!(
            "protocol = \"h2\"\ntls = {{ ca_file = {ca_file:?}, server_name = \"localhost\" }}"
        ),
    )
    .await;
    // A burst of first requests: one waits for another's connection
    // rather than each opening (and handshaking) its own.
    for resp in gw.burst("/first/", 10).await {
        assert_eq!(resp.served_by(), "h2-v1");
    }
    assert_eq!(up.connections(), 1, "one connection for the first burst");
    let started = std::time::Instant::now();
    for resp in gw.burst("/x/", 10).await {
        assert_eq!(resp.served_by(), "h2-v1");
    }
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "concurrent streams, not one after another: {:?}",
        started.elapsed()
    );
    let seen = up.seen();
    assert_eq!(seen.len(), 20);
    assert!(
        seen.iter().all(|s| s.version == Version::HTTP_2),
        "{seen:?}"
    );
    assert_eq!(up.connections(), 1, "one multiplexed connection");
}

#[tokio::test]
async fn grpc_trailers_pass_through_from_an_h2c_upstream_to_an_h2c_client() {
    let up = H2Upstream::spawn("grpc", None, Duration::ZERO).await;
    let gw = gateway(up.addr, "protocol = \"h2c\"").await;

    let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let message = Bytes::from_static(b"\0\0\0\0\x05hello");
    let req = Request::post(format!("http://{}/grpc/pkg.Greeter/SayHello", gw.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("x-api-version", "v1")
        .body(Full::new(message.clone()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/grpc");
    let body = resp.into_body().collect().await.unwrap();
    let trailers = body.trailers().cloned().expect("trailers arrived");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "all good");
    assert_eq!(
        body.to_bytes(),
        message,
        "the message round-tripped untouched"
    );

    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].version, Version::HTTP_2);
    assert_eq!(seen[0].path, "/grpc/pkg.Greeter/SayHello");
    assert_eq!(seen[0].headers["te"], "trailers");
}

#[tokio::test]
async fn an_h2c_response_body_that_stalls_is_cut_at_the_routes_body_timeout() {
    let up = H2Upstream::spawn("stall", None, Duration::ZERO).await;
    let gw = TestGateway::start(
        table()
            .version("v1", "current", "")
            .pool_at("v1", "v1", &up.addr.to_string(), "protocol = \"h2c\"")
            .route("api", "/", "v1", "body_timeout_ms = 300"),
    )
    .await;
    support::assert_body_cut(gw.get("/stall/x"), Duration::from_millis(300)).await;
    // The h2 connection is shared: other requests on it are unaffected.
    assert_eq!(gw.get("/ok").send().await.status(), 200);
}

#[tokio::test]
async fn requests_waiting_on_a_failed_h2_dial_fail_fast_too() {
    let dead = support::dead_endpoint().await;
    let gw = TestGateway::start(
        table()
            .version("v1", "current", "")
            .pool_at("v1", "v1", &dead, "protocol = \"h2c\"")
            .route("api", "/", "v1", ""),
    )
    .await;
    let started = std::time::Instant::now();
    for status in gw.burst("/x/", 10).await.iter().map(support::Resp::status) {
        // 502 connect failed, or 503 once the endpoint has been ejected.
        assert!(status == 502 || status == 503, "{status}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "waiters were released: {:?}",
        started.elapsed()
    );
}

#[test]
fn protocol_and_tls_must_agree() {
    let load = |extra: &str| {
        let text = table()
            .version("v1", "current", "")
            .pool_at("v1", "v1", "127.0.0.1:9", extra)
            .route("api", "/", "v1", "")
            .toml();
        switchyard::config::load(&text, switchyard::config::Origin::Embedded("t"))
            .err()
            .map(|e| e.to_string())
    };
    let e = load("protocol = \"h2\"").expect("h2 needs tls");
    assert!(e.contains("pools[0].protocol"), "{e}");
    let e = load("protocol = \"h2c\"\ntls = {}").expect("h2c is cleartext");
    assert!(e.contains("pools[0].protocol"), "{e}");
    let e = load("tls = { client_cert = \"a.pem\" }").expect("cert without key");
    assert!(e.contains("pools[0].tls"), "{e}");
    assert_eq!(load("protocol = \"h2c\""), None);
    assert_eq!(load("tls = { server_name = \"api.internal\" }"), None);
}

#[tokio::test]
async fn health_checks_use_the_pool_transport() {
    let ca = Ca::new("upstream CA");
    let up = H2Upstream::spawn("h2-v1", Some(server_tls(&ca, None)), Duration::ZERO).await;
    let ca_file = ca.file("ca.crt");
    let _gw = gateway(
        up.addr,
        &format!(
            "protocol = \"h2\"\ntls = {{ ca_file = {ca_file:?}, server_name = \"localhost\" }}\n\
             health = {{ path = \"/healthz\", interval_ms = 50 }}"
        ),
    )
    .await;
    support::eventually("an h2 probe over TLS arrives", || async {
        up.seen().iter().any(|s| {
            s.path == "/healthz"
                && s.version == Version::HTTP_2
                && s.headers["user-agent"] == "switchyard-health-check"
        })
    })
    .await;
}
