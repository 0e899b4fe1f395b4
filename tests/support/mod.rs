//! Test harness shared by the integration tests: real upstreams
//! (`Upstream::spawn`, a hyper server on `127.0.0.1:0` recording what it
//! got), a gateway on real sockets (`TestGateway::start`, the library's own
//! `switchyard::serve`), a small client (pooled hyper-util client, or raw
//! bytes for malformed requests), a table builder, and `eventually`.
//! Every address is `127.0.0.1:0`; nothing waits by sleeping a fixed time.

// Each test file uses a different subset of the harness.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use switchyard::config::{self, Document, Origin};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Longest any single client exchange may take before the test fails
/// (a hang is a failure, not a wait).
pub const EXCHANGE_LIMIT: Duration = Duration::from_secs(10);

/// Polls `check` every 10 ms until it holds, failing the test after 5 s.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sends `req` and checks that its response body was cut off (an error,
/// never a short success) between `at` and 3 s after it was sent: a
/// stalled upstream body meeting the route's `body_timeout_ms`.
pub async fn assert_body_cut(req: Req<'_>, at: Duration) {
    let start = std::time::Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(5), req.try_send())
        .await
        .expect("the stalled body was cut, not left hanging");
    assert!(
        outcome.is_err(),
        "a cut body must not look complete: {outcome:?}"
    );
    let after = start.elapsed();
    assert!(
        after >= at.mul_f32(0.9) && after < Duration::from_secs(3),
        "cut after {after:?}"
    );
}

// ---------------------------------------------------------------------------
// Upstream

/// One request as an upstream received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Request method.
    pub method: Method,
    /// Path and query, as sent on the request line.
    pub uri: String,
    /// Headers as received.
    pub headers: HeaderMap,
    /// The body, once fully read (`None` while still streaming or if the
    /// stream broke).
    pub body: Option<Bytes>,
}

impl Recorded {
    /// The header's value as text, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().expect("ascii"))
    }

    /// Every value of the header, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().expect("ascii"))
            .collect()
    }
}

#[derive(Default)]
struct UpstreamState {
    requests: Mutex<Vec<Recorded>>,
    delay_ms: AtomicU64,
    extra_headers: Mutex<Vec<(HeaderName, HeaderValue)>>,
    replies: Mutex<Vec<(Method, String, Reply)>>,
    connections: AtomicU64,
}

/// A canned answer for one method and path (see [`Upstream::reply`]):
/// status, headers and the body bytes exactly as given.
#[derive(Debug, Clone)]
pub struct Reply {
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
}

impl Reply {
    /// `status` with `content-type: application/json` and `body` byte for
    /// byte (it need not be valid JSON: that is the point of some tests).
    pub fn json(status: u16, body: impl Into<Bytes>) -> Reply {
        Reply::raw(status, "application/json", body)
    }

    /// `status` with the given content type and body.
    pub fn raw(status: u16, content_type: &str, body: impl Into<Bytes>) -> Reply {
        Reply::empty(status)
            .header("content-type", content_type)
            .body(body)
    }

    /// `status` with no body and no content type.
    pub fn empty(status: u16) -> Reply {
        Reply {
            status: StatusCode::from_u16(status).expect("valid status"),
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// Adds a response header (appends if it is already set).
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((
            HeaderName::try_from(name).expect("header name"),
            HeaderValue::try_from(value).expect("header value"),
        ));
        self
    }

    /// Replaces the body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Reply {
        self.body = body.into();
        self
    }
}

/// A real HTTP/1.1 upstream on `127.0.0.1:0`. Records each request (head on
/// arrival, body once read), reads the whole body, waits the configured
/// delay, then answers `{"served_by": <name>}`, or the [`Reply`] set for that
/// method and path with [`Upstream::reply`]. Stops accepting on drop.
pub struct Upstream {
    /// The name it answers with.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<UpstreamState>,
    stop: CancellationToken,
}

impl Upstream {
    /// Starts an upstream answering `{"served_by": name}`.
    pub async fn spawn(name: &str) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let state = Arc::new(UpstreamState::default());
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(
            listener,
            name.to_string(),
            state.clone(),
            stop.clone(),
        ));
        Upstream {
            name: name.to_string(),
            addr,
            state,
            stop,
        }
    }

    /// Starts an upstream that waits `delay` before answering.
    pub async fn spawn_slow(name: &str, delay: Duration) -> Upstream {
        let up = Upstream::spawn(name).await;
        up.set_delay(delay);
        up
    }

    /// Delay before each answer from now on.
    pub fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    /// Adds a header to every response from now on.
    pub fn respond_with_header(&self, name: &'static str, value: &'static str) {
        self.state.extra_headers.lock().unwrap().push((
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        ));
    }

    /// From now on, answers `method` requests whose path (query ignored) is
    /// exactly `path` with `reply` instead of `{"served_by": name}`; a later
    /// reply for the same method and path replaces an earlier one. Headers
    /// added with [`Upstream::respond_with_header`] are still appended.
    pub fn reply(&self, method: Method, path: &str, reply: Reply) {
        let mut replies = self.state.replies.lock().unwrap();
        replies.retain(|(m, p, _)| !(*m == method && p == path));
        replies.push((method, path.to_string(), reply));
    }

    /// `host:port`, for a pool's `endpoints`.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// How many requests arrived (counted when their head arrived).
    pub fn requests(&self) -> usize {
        self.state.requests.lock().unwrap().len()
    }

    /// How many TCP connections it accepted.
    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::Relaxed)
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    /// The most recent request; panics if there was none.
    pub fn last(&self) -> Recorded {
        self.received()
            .pop()
            .unwrap_or_else(|| panic!("upstream {} received no request", self.name))
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept_loop(
    listener: TcpListener,
    name: String,
    state: Arc<UpstreamState>,
    stop: CancellationToken,
) {
    let name: Arc<str> = name.into();
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        state.connections.fetch_add(1, Ordering::Relaxed);
        let (name, state) = (name.clone(), state.clone());
        let service = service_fn(move |req| {
            let (name, state) = (name.clone(), state.clone());
            async move { Ok::<_, Infallible>(answer(&name, &state, req).await) }
        });
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    name: &str,
    state: &UpstreamState,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let index = {
        let mut requests = state.requests.lock().unwrap();
        requests.push(Recorded {
            method: parts.method.clone(),
            uri: parts
                .uri
                .path_and_query()
                .map_or_else(|| "/".to_string(), |pq| pq.to_string()),
            headers: parts.headers.clone(),
            body: None,
        });
        requests.len() - 1
    };
    match body.collect().await {
        Ok(collected) => {
            state.requests.lock().unwrap()[index].body = Some(collected.to_bytes());
        }
        Err(_) => {
            let mut resp = Response::new(Full::new(Bytes::from_static(b"broken body")));
            *resp.status_mut() = StatusCode::BAD_REQUEST;
            return resp;
        }
    }
    let delay = state.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let canned = state
        .replies
        .lock()
        .unwrap()
        .iter()
        .find(|(m, p, _)| *m == parts.method && p == parts.uri.path())
        .map(|(_, _, r)| r.clone());
    let mut resp = match canned {
        Some(reply) => {
            let mut resp = Response::new(Full::new(reply.body));
            *resp.status_mut() = reply.status;
            for (k, v) in reply.headers {
                resp.headers_mut().append(k, v);
            }
            resp
        }
        None => {
            let body = serde_json::json!({ "served_by": name }).to_string();
            let mut resp = Response::new(Full::new(Bytes::from(body)));
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            resp
        }
    };
    let h = resp.headers_mut();
    for (k, v) in state.extra_headers.lock().unwrap().iter() {
        h.append(k.clone(), v.clone());
    }
    resp
}

/// An address where nothing listens: bound, then released.
pub async fn dead_endpoint() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    addr.to_string()
}

// ---------------------------------------------------------------------------
// Table builder

/// Builds a routing-table document as TOML text, section by section.
/// `extra` arguments are raw TOML lines for that section; a route's `extra`
/// may end with sub-tables such as `[routes.split]`.
#[derive(Debug, Clone, Default)]
pub struct Table {
    server: Vec<String>,
    detection: Vec<String>,
    pins: Vec<String>,
    versions: Vec<String>,
    pools: Vec<String>,
    routes: Vec<String>,
}

/// An empty table.
pub fn table() -> Table {
    Table::default()
}

impl Table {
    /// A line in `[server]`, e.g. `underscore_headers = "drop"`.
    pub fn server(mut self, line: &str) -> Self {
        self.server.push(line.to_string());
        self
    }

    /// A line in `[detection]`.
    pub fn detection(mut self, line: &str) -> Self {
        self.detection.push(line.to_string());
        self
    }

    /// A client pin.
    pub fn pin(mut self, client: &str, version: &str) -> Self {
        self.pins.push(format!("{client:?} = {version:?}"));
        self
    }

    /// A version with a status and extra keys.
    pub fn version(mut self, name: &str, status: &str, extra: &str) -> Self {
        self.versions.push(format!(
            "[[versions]]\nname = {name:?}\nstatus = {status:?}\n{extra}\n"
        ));
        self
    }

    /// A pool of one upstream.
    pub fn pool(self, name: &str, version: &str, up: &Upstream) -> Self {
        self.pool_at(name, version, &up.endpoint(), "")
    }

    /// A pool with an explicit endpoint and extra keys.
    pub fn pool_at(mut self, name: &str, version: &str, endpoint: &str, extra: &str) -> Self {
        self.pools.push(format!(
            "[[pools]]\nname = {name:?}\nversion = {version:?}\nendpoints = [{endpoint:?}]\n{extra}\n"
        ));
        self
    }

    /// A route on any host.
    pub fn route(
        mut self,
        name: &str,
        path_prefix: &str,
        default_version: &str,
        extra: &str,
    ) -> Self {
        self.routes.push(format!(
            "[[routes]]\nname = {name:?}\npath_prefix = {path_prefix:?}\ndefault_version = {default_version:?}\n{extra}\n"
        ));
        self
    }

    /// The document text.
    pub fn toml(&self) -> String {
        let mut t = String::new();
        for (header, lines) in [
            ("[server]", &self.server),
            ("[detection]", &self.detection),
            ("[pins]", &self.pins),
        ] {
            if !lines.is_empty() {
                t.push_str(header);
                t.push('\n');
                for l in lines {
                    t.push_str(l);
                    t.push('\n');
                }
                t.push('\n');
            }
        }
        for section in self.versions.iter().chain(&self.pools).chain(&self.routes) {
            t.push_str(section);
            t.push('\n');
        }
        t
    }
}

/// What `TestGateway::start` accepts: TOML text, a builder or a document.
pub enum GatewayConfig {
    /// TOML text, parsed and validated like `switchyard validate` does.
    Text(String),
    /// An already loaded document.
    Doc(Box<Document>),
}

impl From<&str> for GatewayConfig {
    fn from(t: &str) -> Self {
        GatewayConfig::Text(t.to_string())
    }
}
impl From<String> for GatewayConfig {
    fn from(t: String) -> Self {
        GatewayConfig::Text(t)
    }
}
impl From<Table> for GatewayConfig {
    fn from(t: Table) -> Self {
        GatewayConfig::Text(t.toml())
    }
}
impl From<&Table> for GatewayConfig {
    fn from(t: &Table) -> Self {
        GatewayConfig::Text(t.toml())
    }
}
impl From<Document> for GatewayConfig {
    fn from(d: Document) -> Self {
        GatewayConfig::Doc(Box::new(d))
    }
}

// ---------------------------------------------------------------------------
// Gateway

/// A gateway serving on `127.0.0.1:0` (proxy and admin) in a spawned task.
pub struct TestGateway {
    /// Proxy listener address.
    pub addr: SocketAddr,
    /// Admin listener address.
    pub admin: SocketAddr,
    shutdown: CancellationToken,
    task: Option<JoinHandle<bool>>,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl TestGateway {
    /// Loads the table (panicking with every error if it is invalid) and serves it.
    pub async fn start(config: impl Into<GatewayConfig>) -> TestGateway {
        TestGateway::start_with(config, switchyard::ServeOptions::default()).await
    }

    /// [`TestGateway::start`] with serve options: a clock, or the file
    /// `POST /admin/reload` re-reads.
    pub async fn start_with(
        config: impl Into<GatewayConfig>,
        options: switchyard::ServeOptions,
    ) -> TestGateway {
        let doc = match config.into() {
            GatewayConfig::Text(text) => config::load(&text, Origin::Embedded("test table"))
                .unwrap_or_else(|e| panic!("test table is invalid:\n{e}\n---\n{text}")),
            GatewayConfig::Doc(doc) => *doc,
        };
        let proxy = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
        let (addr, admin_addr) = (
            proxy.local_addr().expect("addr"),
            admin.local_addr().expect("addr"),
        );
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(switchyard::serve_with(
            doc,
            "test table".into(),
            proxy,
            admin,
            shutdown.clone(),
            options,
        ));
        TestGateway {
            addr,
            admin: admin_addr,
            shutdown,
            task: Some(task),
            client: client(),
        }
    }

    /// `n` concurrent GETs of `{prefix}{i}`, their answers in order.
    pub async fn burst(&self, prefix: &str, n: usize) -> Vec<Resp> {
        futures_util::future::join_all((0..n).map(|i| self.get(&format!("{prefix}{i}")).send()))
            .await
    }

    /// A GET to the proxy listener.
    pub fn get(&self, path_and_query: &str) -> Req<'_> {
        self.request(Method::GET, path_and_query)
    }

    /// A request to the proxy listener.
    pub fn request(&self, method: Method, path_and_query: &str) -> Req<'_> {
        Req {
            client: &self.client,
            builder: Request::builder()
                .method(method)
                .uri(format!("http://{}{path_and_query}", self.addr)),
            body: Bytes::new(),
        }
    }

    /// A POST to the admin listener.
    pub fn admin_post(&self, path: &str) -> Req<'_> {
        Req {
            client: &self.client,
            builder: Request::builder()
                .method(Method::POST)
                .uri(format!("http://{}{path}", self.admin)),
            body: Bytes::new(),
        }
    }

    /// A GET to the admin listener.
    pub fn admin_get(&self, path: &str) -> Req<'_> {
        Req {
            client: &self.client,
            builder: Request::builder().uri(format!("http://{}{path}", self.admin)),
            body: Bytes::new(),
        }
    }

    /// A request with any method to the admin listener.
    pub fn admin_request(&self, method: Method, path: &str) -> Req<'_> {
        Req {
            client: &self.client,
            builder: Request::builder()
                .method(method)
                .uri(format!("http://{}{path}", self.admin)),
            body: Bytes::new(),
        }
    }

    /// The admin listener's `/metrics`, parsed (see [`Metrics`]).
    pub async fn metrics(&self) -> Metrics {
        let resp = self.admin_get("/metrics").send().await;
        assert_eq!(resp.status(), 200);
        Metrics(String::from_utf8(resp.body.to_vec()).expect("utf-8 metrics"))
    }

    /// Sends raw bytes on a fresh connection and reads one response.
    pub async fn raw(&self, request: &[u8]) -> RawResponse {
        raw_exchange(self.addr, request).await
    }

    /// Sends raw bytes holding `count` pipelined requests on one
    /// connection and reads `count` responses.
    pub async fn raw_pipelined(&self, request: &[u8], count: usize) -> Vec<RawResponse> {
        raw_exchange_many(self.addr, request, count).await
    }

    /// Starts a graceful shutdown without waiting for it.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Cancels the shutdown token and waits for `serve` to return: whether
    /// every in-flight request finished within the grace period.
    pub async fn shutdown(mut self) -> bool {
        self.shutdown.cancel();
        let task = self.task.take().expect("serve task");
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("serve returned after shutdown")
            .expect("serve task did not panic")
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A pooled HTTP/1.1 client.
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A request being built.
pub struct Req<'a> {
    client: &'a Client<HttpConnector, Full<Bytes>>,
    builder: http::request::Builder,
    body: Bytes,
}

impl Req<'_> {
    /// Adds a header (appends if it is already set).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.builder = self.builder.header(name, value);
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Sends it and reads the whole response; fails the test on a
    /// connection error or after [`EXCHANGE_LIMIT`].
    pub async fn send(self) -> Resp {
        self.try_send()
            .await
            .unwrap_or_else(|e| panic!("request failed: {e}"))
    }

    /// Sends it and reads the whole response, or says why that failed;
    /// fails the test after [`EXCHANGE_LIMIT`].
    pub async fn try_send(self) -> Result<Resp, String> {
        let req = self
            .builder
            .body(Full::new(self.body))
            .expect("valid request");
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| format!("{e:?}"))?;
            let (parts, body) = resp.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| format!("response body: {e:?}"))?
                .to_bytes();
            Ok(Resp {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(EXCHANGE_LIMIT, exchange)
            .await
            .expect("the gateway answered in time")
    }
}

/// A whole response as the client saw it.
#[derive(Debug)]
pub struct Resp {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl Resp {
    /// The status as a number.
    pub fn status(&self) -> u16 {
        self.status.as_u16()
    }

    /// The header's value as text, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().expect("ascii"))
    }

    /// Every value of the header, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().expect("ascii"))
            .collect()
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as a problem document: checks the content type and the
    /// `status` member against the response status.
    pub fn problem(&self) -> Value {
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "status {} body {}",
            self.status,
            String::from_utf8_lossy(&self.body)
        );
        let p = self.json();
        assert_eq!(p["status"], self.status(), "problem status member");
        assert!(p["type"].is_string() && p["title"].is_string(), "{p}");
        p
    }

    /// The `served_by` member of an upstream's answer.
    pub fn served_by(&self) -> String {
        assert_eq!(
            self.status,
            StatusCode::OK,
            "body {}",
            String::from_utf8_lossy(&self.body)
        );
        self.json()["served_by"]
            .as_str()
            .expect("served_by is a string")
            .to_string()
    }
}

// ---------------------------------------------------------------------------
// Raw sockets

/// A response read off a raw socket.
#[derive(Debug)]
pub struct RawResponse {
    /// Status code.
    pub status: u16,
    /// Header lines, lower-cased names.
    pub headers: Vec<(String, String)>,
    /// Body bytes (de-chunked).
    pub body: Vec<u8>,
}

/// Status, headers as a sorted list and body, without what differs per
/// response: `date`, and the request and trace ids (also in problems).
pub fn normalised(r: &RawResponse) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut headers: Vec<_> = r
        .headers
        .iter()
        .filter(|(k, _)| k != "date" && k != "x-request-id")
        .cloned()
        .collect();
    headers.sort();
    let mut body = r.body.clone();
    if r.header("content-type") == Some("application/problem+json") {
        let mut p = r.problem();
        let p = p.as_object_mut().expect("a problem object");
        assert!(p.remove("request_id").is_some() && p.remove("trace_id").is_some());
        body = serde_json::to_vec(p).unwrap();
    }
    (r.status, headers, body)
}

impl RawResponse {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as a problem document (checks the content type).
    pub fn problem(&self) -> Value {
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "status {} headers {:?} body {}",
            self.status,
            self.headers,
            String::from_utf8_lossy(&self.body)
        );
        let p: Value = serde_json::from_slice(&self.body).expect("problem is JSON");
        assert_eq!(p["status"], self.status, "problem status member");
        p
    }
}

/// Writes `request` on a new connection (write errors are ignored: the
/// gateway may answer and close before reading it all) and parses one
/// response. Fails the test after [`EXCHANGE_LIMIT`].
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> RawResponse {
    raw_exchange_many(addr, request, 1)
        .await
        .pop()
        .expect("one response")
}

/// Like [`raw_exchange`] for `count` pipelined requests on one connection.
pub async fn raw_exchange_many(addr: SocketAddr, request: &[u8], count: usize) -> Vec<RawResponse> {
    let exchange = async {
        let mut conn = RawConn::connect(addr).await;
        let _ = conn.stream.write_all(request).await;
        let mut responses = Vec::new();
        for _ in 0..count {
            responses.push(conn.read_response().await);
        }
        responses
    };
    tokio::time::timeout(EXCHANGE_LIMIT, exchange)
        .await
        .expect("the gateway answered the raw request in time")
}

/// A raw client connection and the bytes read past the last response.
/// Also the cheapest keep-alive client, for tests that send many requests.
pub struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawConn {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> RawConn {
        RawConn {
            stream: TcpStream::connect(addr).await.expect("connect"),
            buf: Vec::new(),
        }
    }

    /// Writes one request and reads its response; fails the test after
    /// [`EXCHANGE_LIMIT`].
    pub async fn exchange(&mut self, request: &[u8]) -> RawResponse {
        let exchange = async {
            self.stream.write_all(request).await.expect("send request");
            self.read_response().await
        };
        tokio::time::timeout(EXCHANGE_LIMIT, exchange)
            .await
            .expect("the gateway answered in time")
    }

    /// Writes raw bytes (part of a request, say) without reading.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send");
    }

    /// Reads one response; fails the test after [`EXCHANGE_LIMIT`].
    pub async fn response(&mut self) -> RawResponse {
        tokio::time::timeout(EXCHANGE_LIMIT, self.read_response())
            .await
            .expect("the gateway answered in time")
    }

    /// Waits until the gateway closes the connection (end of stream or a
    /// reset), discarding anything it sends; fails the test after
    /// [`EXCHANGE_LIMIT`].
    pub async fn closed(&mut self) {
        tokio::time::timeout(EXCHANGE_LIMIT, async { while self.fill().await {} })
            .await
            .expect("the gateway closed the connection in time")
    }

    /// Reads more bytes; `false` at end of stream.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).await.unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    async fn read_response(&mut self) -> RawResponse {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            assert!(
                self.fill().await,
                "connection closed before a response head; got {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_string();
        self.buf.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().expect("status line");
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let get = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let body = if status == 204 || status == 304 || (100..200).contains(&status) {
            // No body, whatever the fields say (RFC 9112 section 6.3).
            Vec::new()
        } else if let Some(len) = get("content-length") {
            let len: usize = len.parse().expect("content-length");
            while self.buf.len() < len {
                assert!(self.fill().await, "connection closed mid-body");
            }
            self.buf.drain(..len).collect()
        } else if get("transfer-encoding").is_some_and(|te| te.contains("chunked")) {
            let end = loop {
                if let Some(i) = find(&self.buf, b"0\r\n\r\n") {
                    break i + 5;
                }
                assert!(self.fill().await, "connection closed mid-body");
            };
            let body = dechunk(&self.buf[..end]);
            self.buf.drain(..end);
            body
        } else {
            while self.fill().await {}
            std::mem::take(&mut self.buf)
        };
        RawResponse {
            status,
            headers,
            body,
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = find(data, b"\r\n").expect("chunk size line");
        let size_text = std::str::from_utf8(&data[..line_end]).expect("chunk size");
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
            .expect("hex chunk size");
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

// ---------------------------------------------------------------------------
// Clock

/// A clock the test sets by hand (seasons, freezes, sunsets).
#[derive(Debug)]
pub struct ManualClock(Mutex<jiff::Timestamp>);

impl ManualClock {
    /// A clock standing at `at` (RFC 3339).
    pub fn at(at: &str) -> Arc<ManualClock> {
        Arc::new(ManualClock(Mutex::new(
            at.parse().expect("RFC 3339 instant"),
        )))
    }

    /// Moves the clock to `at` (RFC 3339).
    pub fn set(&self, at: &str) {
        *self.0.lock().unwrap() = at.parse().expect("RFC 3339 instant");
    }

    /// Serve options with this clock.
    pub fn options(self: &Arc<Self>) -> switchyard::ServeOptions {
        switchyard::ServeOptions {
            clock: self.clone(),
            ..Default::default()
        }
    }
}

impl switchyard::control::Clock for ManualClock {
    fn now(&self) -> jiff::Timestamp {
        *self.0.lock().unwrap()
    }
}

// ---------------------------------------------------------------------------
// Metrics

/// A Prometheus text exposition, with lookups by name and labels.
#[derive(Debug, Clone)]
pub struct Metrics(pub String);

impl Metrics {
    /// The value of the one sample of `name` whose labels include every
    /// `(label, value)` given (other labels may differ); `None` if there is
    /// none; panics if several match.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut found = self.samples(name, labels);
        assert!(
            found.len() <= 1,
            "{name} {labels:?} matches several samples: {found:?}"
        );
        found.pop().map(|(_, v)| v)
    }

    /// The sum over every sample of `name` whose labels include `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples(name, labels).iter().map(|(_, v)| v).sum()
    }

    /// Every sample of `name` matching `labels`: (label text, value).
    pub fn samples(&self, name: &str, labels: &[(&str, &str)]) -> Vec<(String, f64)> {
        self.0
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                let (n, rest) = match series.split_once('{') {
                    Some((n, rest)) => (n, rest.trim_end_matches('}')),
                    None => (series, ""),
                };
                (n == name
                    && labels
                        .iter()
                        .all(|(k, v)| rest.split(',').any(|p| p == format!("{k}=\"{v}\""))))
                .then(|| (rest.to_string(), value.parse().expect("numeric sample")))
            })
            .collect()
    }

    /// Every metric family name with at least one sample.
    pub fn names(&self) -> std::collections::BTreeSet<String> {
        self.0
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| l.split(['{', ' ']).next().map(str::to_string))
            .collect()
    }
}

/// `v1` (deprecated) and `v2` (current), one pool each, `/api` defaulting to
/// `v2`; `v2` renames `/name` to `/full_name`, and `/legacy` sends `v1`
/// clients to the `v2` pool (so its bodies are translated).
pub fn two_versions(v1: &Upstream, v2: &Upstream) -> Table {
    table()
        .version(
            "v1",
            "deprecated",
            r#"deprecated_at = "2026-01-01T00:00:00Z"
successor = "v2""#,
        )
        .version(
            "v2",
            "current",
            r#"changes = [{ op = "rename", from = "/name", to = "/full_name" }]"#,
        )
        .pool("v1", "v1", v1)
        .pool("v2", "v2", v2)
        .route("api", "/api", "v2", "")
        .route(
            "legacy",
            "/legacy",
            "v2",
            "[routes.split]\nv1 = [{ pool = \"v2\", weight = 100 }]",
        )
}
