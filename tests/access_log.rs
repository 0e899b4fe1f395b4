//! The access log as an operator reads it: one JSON event per request on
//! the `switchyard::access` target, with every field; and the binary's log
//! output, every line whole and none lost on SIGTERM, to a file and to a
//! pipe. Alone in its test binary: `tracing` caches whether a call site is
//! enabled per process, and a test thread without a subscriber hitting the
//! site first would race the subscriber the first test installs (the others
//! run the gateway in a child process).

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use support::*;
use switchyard::cli::LogFormat;

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

/// The subscriber `--log-format json` installs, at `info`, into a buffer,
/// for this thread (the gateway's tasks run on the test's single thread).
fn capture_logs() -> (Captured, tracing::dispatcher::DefaultGuard) {
    let captured = Captured::default();
    let writer = captured.clone();
    let dispatch = switchyard::logging::dispatch(
        LogFormat::Json,
        tracing_subscriber::EnvFilter::new("info"),
        move || writer.clone(),
    );
    (captured, tracing::dispatcher::set_default(&dispatch))
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
    // Quotes and backslashes reach the line escaped (control characters
    // cannot arrive in a request head; the unit tests in src/logging.rs
    // escape them).
    let odd_id = r#"req-"q"\b\"#;
    gw.get(r#"/api/"quoted"/x"#)
        .header("x-api-version", "1")
        .header("x-request-id", odd_id)
        .send()
        .await;

    let events = logs.access_events();
    assert_eq!(events.len(), 5, "one event per request: {events:#?}");
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
    let odd = &events[4]["fields"];
    assert_eq!(odd["request_id"], odd_id);
    assert_eq!(odd["path"], r#"/api/"quoted"/x"#);
}

/// The line `--log-format json` writes without building a `tracing` event
/// has the bytes tracing-subscriber's own JSON formatter writes for the
/// event (the path every other subscriber takes): same keys, same order,
/// same values, but for the timestamp and the durations.
#[tokio::test]
async fn direct_access_line_has_the_stock_json_formatters_bytes() {
    let (v1, v2) = (Upstream::spawn("v1").await, Upstream::spawn("v2").await);
    let t =
        two_versions(&v1, &v2).route("cached", "/cached", "v2", "[routes.cache]\nttl_ms = 60000");
    let gw = TestGateway::start(t).await;
    let trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let mut lines: Vec<Vec<String>> = Vec::new();
    for stock in [false, true] {
        let captured = Captured::default();
        let writer = captured.clone();
        let filter = tracing_subscriber::EnvFilter::new("info");
        let dispatch = if stock {
            tracing::Dispatch::new(
                tracing_subscriber::fmt()
                    .json()
                    .with_env_filter(filter)
                    .with_writer(move || writer.clone())
                    .finish(),
            )
        } else {
            switchyard::logging::dispatch(LogFormat::Json, filter, move || writer.clone())
        };
        let _guard = tracing::dispatcher::set_default(&dispatch);
        let send = |path: &'static str, version: &'static str, id: &'static str| {
            gw.get(path)
                .header("x-api-version", version)
                .header("x-request-id", id)
                .header("traceparent", trace)
        };
        send("/api/orders/7", "1", "req-1").send().await;
        // A cache miss in both runs (the query is in the cache key, the
        // log has the path only).
        let cached = if stock {
            "/cached/a?run=2"
        } else {
            "/cached/a?run=1"
        };
        send(cached, "2", "req-2").send().await;
        send("/api/x", "9", "req-3").send().await;
        send(r#"/api/"quoted"/x"#, "1", r#"req-"q"\b\"#)
            .send()
            .await;
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let access = text.lines().filter(|l| l.contains("switchyard::access"));
        lines.push(access.map(mask_varying).collect());
    }
    assert_eq!(lines[0].len(), 4, "{:#?}", lines[0]);
    assert_eq!(lines[0], lines[1], "direct, then stock");
}

/// `line` with the values that differ between two runs of one request (the
/// timestamp and the durations) replaced by `_`.
fn mask_varying(line: &str) -> String {
    let mut out = line.to_string();
    for key in ["\"timestamp\":", "\"duration_ms\":", "\"upstream_ms\":"] {
        if let Some(at) = out.find(key) {
            let start = at + key.len();
            let len = out[start..].find([',', '}']).expect("a value");
            out.replace_range(start..start + len, "_");
        }
    }
    out
}

/// Where a child gateway's stderr goes.
enum LogTo {
    /// A regular file, as `2>gateway.log` makes it.
    File,
    /// A pipe, as a container runtime or `| tee` makes it.
    Pipe,
}

/// What a child gateway logged, read from a file or from a pipe.
struct LoggedProcess {
    child: Option<Child>,
    file: Option<tempfile::NamedTempFile>,
    piped: Arc<Mutex<Vec<u8>>>,
}

impl LoggedProcess {
    /// `switchyard --log-format json run` on `table` with two workers,
    /// `RUST_LOG=info` and the flush interval `flush_ms`, stderr to `to`.
    fn start(table: &Table, to: LogTo, flush_ms: u64) -> LoggedProcess {
        let mut config = tempfile::NamedTempFile::new().expect("temp file");
        config
            .write_all(table.toml().as_bytes())
            .expect("write table");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
        cmd.args(["--log-format", "json", "run", "--config"])
            .arg(config.path())
            .env("RUST_LOG", "info")
            .env("SWITCHYARD_LOG_FLUSH_MS", flush_ms.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let file = match to {
            LogTo::File => {
                let f = tempfile::NamedTempFile::new().expect("log file");
                cmd.stderr(f.reopen().expect("reopen log file"));
                Some(f)
            }
            LogTo::Pipe => {
                cmd.stderr(Stdio::piped());
                None
            }
        };
        let mut child = cmd.spawn().expect("start switchyard");
        let piped = Arc::new(Mutex::new(Vec::new()));
        if let Some(mut pipe) = child.stderr.take() {
            let piped = piped.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n @ 1..) = pipe.read(&mut buf) {
                    piped.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
        }
        // The config file may go once the process has read it; keep it
        // until exit anyway (reload reads it again).
        std::mem::forget(config);
        LoggedProcess {
            child: Some(child),
            file,
            piped,
        }
    }

    /// Everything logged so far.
    fn text(&self) -> String {
        let bytes = match &self.file {
            Some(f) => std::fs::read(f.path()).expect("read log file"),
            None => self.piped.lock().unwrap().clone(),
        };
        String::from_utf8(bytes).expect("UTF-8 log")
    }

    /// Every complete line as JSON; fails the test on a line that is not
    /// (two lines run together, or one cut by another).
    fn events(&self) -> Vec<serde_json::Value> {
        let text = self.text();
        let whole = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        whole
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: not one JSON line: {l}"))
            })
            .collect()
    }

    /// Request id -> access-log lines with it.
    fn access_ids(&self) -> HashMap<String, usize> {
        let mut ids = HashMap::new();
        for e in self.events() {
            if e["target"] == "switchyard::access" {
                let id = e["fields"]["request_id"].as_str().unwrap_or("").to_string();
                *ids.entry(id).or_insert(0) += 1;
            }
        }
        ids
    }

    /// The proxy address from the `switchyard listening` line, which the
    /// main thread's flush timer writes.
    async fn proxy_addr(&self) -> SocketAddr {
        let mut addr = None;
        eventually("the listening line in the log", || {
            addr = self.events().iter().find_map(|e| {
                let f = &e["fields"];
                (f["message"] == "switchyard listening")
                    .then(|| f["proxy"].as_str()?.parse().ok())?
            });
            std::future::ready(addr.is_some())
        })
        .await;
        addr.expect("found")
    }

    /// SIGTERM, then the exit code (a graceful stop exits 0).
    fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take().expect("running");
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                // The pipe reader sees EOF once the process is gone.
                std::thread::sleep(Duration::from_millis(50));
                return status.code();
            }
            assert!(Instant::now() < deadline, "no exit within 20 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for LoggedProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends `count` GETs of `path` over `conns` connections at once, request
/// ids `{prefix}-0`, `{prefix}-1`, ...; every answer must be a 200.
async fn send_many(addr: SocketAddr, path: &str, prefix: &str, count: usize, conns: usize) {
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..conns {
        let (path, prefix) = (path.to_string(), prefix.to_string());
        tasks.spawn(async move {
            // A client per task: its own keep-alive connection.
            let client = client();
            for i in (c..count).step_by(conns) {
                let req = http::Request::get(format!("http://{addr}{path}"))
                    .header("x-request-id", format!("{prefix}-{i}"))
                    .body(Full::new(Bytes::new()))
                    .expect("request");
                let resp = client.request(req).await.expect("gateway answers");
                assert_eq!(resp.status(), 200);
                resp.into_body().collect().await.expect("body");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("client task");
    }
}

/// Two workers on `listen`, one route to `up`.
fn logged_table(up: &Upstream, listen: SocketAddr) -> Table {
    table()
        .server(&format!("listen = \"{listen}\""))
        .server("admin_listen = \"127.0.0.1:0\"")
        .server("workers = 2")
        .version("v1", "current", "")
        .pool("v1", "v1", up)
        .route("all", "/", "v1", "")
}

/// Lines sit in a worker's buffer (a flush interval far longer than the
/// test), so only the flush on graceful shutdown can put them in the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_in_the_log_file_after_sigterm() {
    let up = Upstream::spawn("v1").await;
    // The listening line would sit in the main thread's buffer too: take a
    // port the OS picked and wait for the gateway to accept on it.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let mut gw = LoggedProcess::start(&logged_table(&up, addr), LogTo::File, 600_000);
    eventually("the gateway accepts", || async {
        tokio::net::TcpStream::connect(addr).await.is_ok()
    })
    .await;
    send_many(addr, "/orders", "req", 500, 8).await;
    // A buffer is written when the next line does not fit, so each worker
    // still holds its last lines.
    let before_exit = gw.access_ids().len();
    assert!(before_exit < 500, "{before_exit} lines written before exit");
    assert_eq!(gw.terminate(), Some(0));
    let ids = gw.access_ids();
    for i in 0..500 {
        assert_eq!(ids.get(&format!("req-{i}")), Some(&1), "req-{i}: one line");
    }
    assert!(
        gw.events()
            .iter()
            .any(|e| e["fields"]["message"] == "switchyard stopped"),
        "lines after the workers stop are written too"
    );
}

/// On a pipe every write is at most 4096 bytes of whole lines (atomic), so
/// two workers' lines never cut into each other even when each line is
/// ~1.6 KiB; and the 100 ms flush timer writes lines while the gateway runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_on_a_pipe_are_whole_and_written_while_running() {
    let up = Upstream::spawn("v1").await;
    let listen = "127.0.0.1:0".parse().expect("address");
    let mut gw = LoggedProcess::start(&logged_table(&up, listen), LogTo::Pipe, 100);
    let addr = gw.proxy_addr().await;
    let long_path = format!("/orders/{}", "p".repeat(1500));
    send_many(addr, &long_path, "pipe", 400, 8).await;
    eventually("every line written by the flush timer", || {
        std::future::ready(gw.access_ids().len() == 400)
    })
    .await;
    assert_eq!(gw.terminate(), Some(0));
    let ids = gw.access_ids();
    assert_eq!(ids.len(), 400);
    assert!(ids.values().all(|&n| n == 1), "one line per request");
}
