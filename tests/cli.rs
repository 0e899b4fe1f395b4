//! The binary as an operator runs it: `validate` on good and bad tables,
//! `demo` on free ports (a request through it, then SIGTERM), and `run
//! --config` with an env override of the listen address.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use support::{Upstream, table};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// How long a child process gets to start or stop before the test fails.
const PROCESS_LIMIT: Duration = Duration::from_secs(20);

fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn switchyard(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    // The tests decide every process setting themselves.
    for (key, _) in std::env::vars() {
        if key.starts_with("SWITCHYARD_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

fn validate(path: &std::path::Path) -> (Option<i32>, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = switchyard(&["validate", path.to_str().expect("utf-8 path")])
        .output()
        .expect("run switchyard validate");
    (
        status.code(),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

fn temp_table(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("temp file");
    f.write_all(text.as_bytes()).expect("write table");
    f
}

#[test]
fn validate_accepts_the_demo_table() {
    let (code, stdout, stderr) = validate(&repo_file("config/demo.toml"));
    assert_eq!(code, Some(0), "stdout {stdout}\nstderr {stderr}");
    assert!(stdout.contains("ok"), "{stdout}");
}

#[test]
fn validate_reports_every_bad_field_with_its_path() {
    let demo = std::fs::read_to_string(repo_file("config/demo.toml")).expect("demo table");
    let bad = demo
        .replace(
            r#"{ pool = "v2-canary", weight = 10 }"#,
            r#"{ pool = "v2-canary", weight = 50 }"#,
        )
        .replace(r#""acme-weddings" = "v1""#, r#""acme-weddings" = "v7""#);
    assert_ne!(
        bad, demo,
        "the demo table still has the lines this test breaks"
    );
    let file = temp_table(&bad);
    let (code, stdout, stderr) = validate(file.path());
    assert_eq!(code, Some(1), "stdout {stdout}\nstderr {stderr}");
    let name = file.path().display().to_string();
    for want in [
        format!("{name}: routes[0].split.v2: weights must sum to 100, got 140"),
        format!("{name}: pins.acme-weddings: unknown version \"v7\""),
        format!("{name}: 2 error(s)"),
    ] {
        assert!(stderr.contains(&want), "missing {want:?} in\n{stderr}");
    }
}

#[test]
fn validate_reports_file_line_and_column_for_an_unknown_field() {
    let file = temp_table(
        "[[versions]]\nname = \"v1\"\nstatus = \"current\"\n\n[[routes]]\nname = \"api\"\ndefault_version = \"v1\"\ntimeout = 3\n",
    );
    let (code, _, stderr) = validate(file.path());
    assert_eq!(code, Some(1), "{stderr}");
    let at = format!("{}:8:1: routes[0]", file.path().display());
    let line = stderr
        .lines()
        .find(|l| l.starts_with(&at))
        .unwrap_or_else(|| panic!("no line starting {at:?} in\n{stderr}"));
    assert!(line.contains("unknown field `timeout`"), "{line}");
}

/// A running switchyard process: stdout and stderr lines arrive on
/// channels; killed on drop if still running.
struct Proc {
    child: Option<Child>,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
    seen: Vec<String>,
}

impl Proc {
    fn spawn(mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start switchyard");
        let lines = |r: Box<dyn Read + Send>| {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(r).lines() {
                    let Ok(line) = line else { return };
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
            rx
        };
        let stdout = lines(Box::new(child.stdout.take().expect("stdout")));
        let stderr = lines(Box::new(child.stderr.take().expect("stderr")));
        Proc {
            child: Some(child),
            stdout,
            stderr,
            seen: Vec::new(),
        }
    }

    /// The first line on `stream` for which `pick` returns something.
    fn wait_for<T>(&mut self, on_stderr: bool, mut pick: impl FnMut(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + PROCESS_LIMIT;
        loop {
            let rx = if on_stderr {
                &self.stderr
            } else {
                &self.stdout
            };
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(found) = pick(&line) {
                        return found;
                    }
                    self.seen.push(line);
                }
                Err(_) => {
                    let rest: Vec<String> = self.stderr.try_iter().collect();
                    panic!(
                        "no matching line within {PROCESS_LIMIT:?}; saw:\n{}\nstderr:\n{}",
                        self.seen.join("\n"),
                        rest.join("\n")
                    );
                }
            }
        }
    }

    /// The process id, while it runs.
    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends SIGTERM and waits for the exit.
    fn terminate(&mut self) -> ExitStatus {
        let child = self.child.take().expect("running");
        let pid = child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {pid}");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut child = child;
            let _ = tx.send(child.wait());
        });
        match rx.recv_timeout(PROCESS_LIMIT) {
            Ok(status) => status.expect("wait for switchyard"),
            Err(_) => {
                let _ = Command::new("kill").args(["-KILL", &pid]).status();
                panic!("switchyard did not exit within {PROCESS_LIMIT:?} of SIGTERM");
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A blocking HTTP/1.1 GET with `Connection: close`: status and body.
fn http_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to switchyard");
    stream
        .set_read_timeout(Some(PROCESS_LIMIT))
        .expect("read timeout");
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).expect("send request");
    let mut resp = String::new();
    stream.read_to_string(&mut resp).expect("read response");
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad response {resp:?}"));
    let body = resp
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// The JSON object in a response body (tolerates chunked framing around it).
fn json_in(body: &str) -> serde_json::Value {
    let (start, end) = (body.find('{'), body.rfind('}'));
    let (Some(start), Some(end)) = (start, end) else {
        panic!("no JSON in {body:?}");
    };
    serde_json::from_str(&body[start..=end]).expect("JSON body")
}

#[test]
fn demo_serves_on_free_ports_and_exits_cleanly_on_sigterm() {
    let mut demo = Proc::spawn(switchyard(&[
        "demo",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ]));
    let addr: SocketAddr = demo.wait_for(false, |line| {
        let rest = line.split("gateway on http://").nth(1)?;
        let addr = rest.split([',', ' ']).next()?;
        addr.parse().ok()
    });
    assert_ne!(addr.port(), 0);

    // v1 clients go 80% to the v1 pool and 20% to the v2 pool through the
    // change chain: either way they see v1's shape.
    for _ in 0..10 {
        let (status, body) = http_get(addr, "/api/weddings/1", &[("x-api-version", "1")]);
        assert_eq!(status, 200, "{body}");
        let record = json_in(&body);
        assert_eq!(record["client_name"], "Ann", "{body}");
        assert_eq!(record["status"], "booked", "{body}");
        assert!(
            ["v1", "v2"].contains(&record["served_by"].as_str().unwrap_or("")),
            "{body}"
        );
    }

    let status = demo.terminate();
    assert_eq!(status.code(), Some(0), "exit after SIGTERM: {status:?}");
}

#[test]
fn translate_tool_prints_the_body_as_the_pool_and_the_client_see_it() {
    use std::io::Write;
    let mut child = switchyard(&[
        "translate",
        "--config",
        repo_file("config/demo.toml").to_str().unwrap(),
        "--from",
        "v1",
        "--to",
        "v2.2-beta",
        "--method",
        "POST",
        "--path",
        "/api/weddings",
    ])
    .stdin(std::process::Stdio::piped())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .expect("spawn");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"client_name":"Ann","wedding_date":"2027-06-12","status":"booked"}"#)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let up: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        up,
        serde_json::json!({"client": {"name": "Ann"}, "currency": "EUR", "event": {"date": "2027-06-12"}, "status": "confirmed"})
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("-> POST /api/events"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_a_config_file_on_the_env_listen_address() {
    let up = Upstream::spawn("v1").await;
    let seen = tokio::task::spawn_blocking(move || {
        // The file names an address that is taken; SWITCHYARD_LISTEN must win.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let taken_addr = taken.local_addr().expect("addr");
        let listen = format!("listen = \"{taken_addr}\"");
        let (mut run, _file, addr, _, _) = run_one_route(
            &up,
            &[&listen, "grace_period_ms = 2000"],
            &[("SWITCHYARD_LISTEN", "127.0.0.1:0")],
        );
        assert_ne!(
            addr, taken_addr,
            "the env override replaced the file's address"
        );
        assert_ne!(addr.port(), 0);

        let (status, body) = http_get(addr, "/orders", &[]);
        assert_eq!(status, 200, "{body}");
        assert_eq!(json_in(&body)["served_by"], "v1", "{body}");
        let (status, body) = http_get(addr, "/health/ready", &[]);
        assert_eq!(status, 200, "{body}");

        let status = run.terminate();
        assert_eq!(status.code(), Some(0), "exit after SIGTERM: {status:?}");
        drop(taken);
        up
    })
    .await
    .expect("blocking part");
    assert_eq!(
        seen.requests(),
        1,
        "the request reached the configured pool"
    );
}

/// `switchyard run` with JSON logs and these extra environment variables
/// on a one-route table to `up` (proxy and admin on free ports, unless
/// `server`, extra `[server]` lines, says otherwise): the process, its
/// table file (kept while it runs), and the proxy and admin addresses and
/// worker count it logs once listening.
fn run_one_route(
    up: &Upstream,
    server: &[&str],
    env: &[(&str, &str)],
) -> (Proc, tempfile::NamedTempFile, SocketAddr, SocketAddr, u64) {
    let mut t = table();
    for line in server {
        t = t.server(line);
    }
    let text = t
        .server("admin_listen = \"127.0.0.1:0\"")
        .version("v1", "current", "")
        .pool("v1", "v1", up)
        .route("all", "/", "v1", "")
        .toml();
    let file = temp_table(&text);
    let mut cmd = switchyard(&[
        "--log-format",
        "json",
        "run",
        "--config",
        file.path().to_str().expect("utf-8 path"),
    ]);
    cmd.env("RUST_LOG", "info").envs(env.iter().copied());
    let mut run = Proc::spawn(cmd);
    let (proxy, admin, workers) = run.wait_for(true, |line| {
        let event: serde_json::Value = serde_json::from_str(line).ok()?;
        let fields = &event["fields"];
        if fields["message"] != "switchyard listening" {
            return None;
        }
        Some((
            fields["proxy"].as_str()?.parse().ok()?,
            fields["admin"].as_str()?.parse().ok()?,
            fields["workers"].as_u64()?,
        ))
    });
    (run, file, proxy, admin, workers)
}

/// `workers = 3`: three single-threaded workers share the port through
/// `SO_REUSEPORT`; each keeps its own upstream connections, so the upstream
/// sees more than one connection, and each worker reuses its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_several_workers_spreads_connections_and_reuses_upstream_ones() {
    let up = Upstream::spawn("v1").await;
    let up = tokio::task::spawn_blocking(move || {
        let (mut run, _file, addr, _, workers) =
            run_one_route(&up, &["listen = \"127.0.0.1:0\"", "workers = 3"], &[]);
        assert_eq!(workers, 3);
        // Each request on its own client connection (Connection: close), so
        // the kernel spreads them over the three listeners.
        for i in 0..60 {
            let (status, body) = http_get(addr, &format!("/orders/{i}"), &[]);
            assert_eq!(status, 200, "{body}");
            assert_eq!(json_in(&body)["served_by"], "v1", "{body}");
        }
        let status = run.terminate();
        assert_eq!(status.code(), Some(0), "exit after SIGTERM: {status:?}");
        up
    })
    .await
    .expect("blocking part");
    assert_eq!(up.requests(), 60);
    let conns = up.connections();
    // One worker would use one connection; 60 connections spread over three
    // listeners land on one of them with probability 3 * 3^-60.
    assert!(
        (2..=10).contains(&conns),
        "{conns} upstream connections for 60 requests over 3 workers"
    );
}

/// A `Cpus_allowed_list` value (`0-3,6`) as CPU numbers.
fn cpu_list(text: &str) -> Vec<usize> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (usize, usize) = (a.parse().expect("cpu"), b.parse().expect("cpu"));
        cpus.extend(a..=b);
    }
    cpus
}

/// The CPUs a thread (`/proc/<pid>/task/<tid>`) or process
/// (`/proc/self`) may run on.
fn cpus_allowed(dir: &std::path::Path) -> Vec<usize> {
    let status = std::fs::read_to_string(dir.join("status")).expect("read status");
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .expect("Cpus_allowed_list");
    cpu_list(line)
}

/// The proxy worker threads of `pid` (the main thread, `switchyard`, and
/// `switchyard-1`...) and the CPUs each may run on.
fn worker_cpus(pid: u32) -> Vec<(String, Vec<usize>)> {
    let mut workers = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks") {
        let dir = task.expect("task").path();
        let Ok(name) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        let name = name.trim().to_string();
        if name == "switchyard" || name.starts_with("switchyard-") {
            workers.push((name, cpus_allowed(&dir)));
        }
    }
    workers.sort();
    workers
}

/// `worker_cpu_affinity = "auto"` (the default): with as many workers as
/// CPUs the process may use, each worker thread runs on a CPU of its own;
/// with another count, or `off`, every worker keeps the whole set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_get_a_cpu_each_when_there_are_as_many_as_cpus() {
    let up = Upstream::spawn("v1").await;
    let allowed = cpus_allowed(std::path::Path::new("/proc/self"));
    let n = allowed.len();
    tokio::task::spawn_blocking(move || {
        let cases = [
            (vec![format!("workers = {n}")], true),
            (
                vec![
                    format!("workers = {n}"),
                    "worker_cpu_affinity = \"off\"".to_string(),
                ],
                false,
            ),
            (vec![format!("workers = {}", n + 1)], false),
        ];
        for (lines, pinned) in cases {
            let mut server = vec!["listen = \"127.0.0.1:0\""];
            server.extend(lines.iter().map(String::as_str));
            let (mut run, _file, addr, _, workers) = run_one_route(&up, &server, &[]);
            let placed = run.wait_for(true, |line| {
                let event: serde_json::Value = serde_json::from_str(line).ok()?;
                match event["fields"]["message"].as_str()? {
                    "proxy workers pinned, worker i to the i-th CPU" => Some(true),
                    "proxy workers not pinned to CPUs" => Some(false),
                    _ => None,
                }
            });
            assert_eq!(placed, pinned, "{lines:?}");
            let (status, body) = http_get(addr, "/orders/1", &[]);
            assert_eq!(status, 200, "{body}");
            // Each spawned worker pins itself as it starts: give them a
            // moment (the main thread pins before serving).
            let deadline = Instant::now() + Duration::from_secs(5);
            let threads = loop {
                let threads = worker_cpus(run.pid());
                if !pinned || threads.iter().all(|(_, c)| c.len() == 1) || Instant::now() > deadline
                {
                    break threads;
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            assert_eq!(threads.len() as u64, workers, "{threads:?}");
            if pinned {
                let mut used: Vec<usize> = threads.iter().flat_map(|(_, c)| c.clone()).collect();
                assert!(
                    threads.iter().all(|(_, c)| c.len() == 1),
                    "one CPU per worker: {threads:?}"
                );
                used.sort_unstable();
                assert_eq!(
                    used, allowed,
                    "every allowed CPU has one worker: {threads:?}"
                );
            } else {
                assert!(
                    threads.iter().all(|(_, c)| *c == allowed),
                    "{lines:?}: every worker keeps {allowed:?}: {threads:?}"
                );
            }
            let status = run.terminate();
            assert_eq!(status.code(), Some(0), "exit after SIGTERM: {status:?}");
        }
    })
    .await
    .expect("blocking part");
}

/// One GET on a kept-alive connection: the status, once the whole
/// response (head and `Content-Length` body) has arrived.
fn keep_alive_get(stream: &mut TcpStream, path: &str) -> u16 {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
        .expect("send request");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).expect("read response");
        assert!(n > 0, "connection closed mid-response");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .expect("content-length");
            if body.len() >= length {
                return head
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .expect("status");
            }
        }
    }
}

/// `switchyard_worker_connections{listener="plain"}` per worker, from the
/// admin listener's metrics.
fn worker_connections(admin: SocketAddr, workers: usize) -> Vec<i64> {
    let (status, body) = http_get(admin, "/metrics", &[]);
    assert_eq!(status, 200, "{body}");
    (0..workers)
        .map(|w| {
            let series =
                format!("switchyard_worker_connections{{listener=\"plain\",worker=\"{w}\"}} ");
            body.lines()
                .find_map(|l| l.strip_prefix(&series)?.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {series} in the metrics"))
        })
        .collect()
}

/// Connection balancing: the kernel places `SO_REUSEPORT` connections by a
/// hash of their addresses, so 40 kept-alive connections would split 20/20
/// between two workers only about one time in eight. The balancer hands
/// each new connection to the worker with fewer open ones: exactly 20 each
/// (each is served before the next opens), and back to none once they close.
#[test]
fn several_workers_share_kept_alive_connections_evenly() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let up = rt.block_on(Upstream::spawn("v1"));
    let (mut run, _file, addr, admin, _) =
        run_one_route(&up, &["listen = \"127.0.0.1:0\"", "workers = 2"], &[]);
    let mut conns = Vec::new();
    for i in 0..40 {
        let mut stream = TcpStream::connect(addr).expect("connect to switchyard");
        stream
            .set_read_timeout(Some(PROCESS_LIMIT))
            .expect("read timeout");
        assert_eq!(keep_alive_get(&mut stream, &format!("/orders/{i}")), 200);
        conns.push(stream);
    }
    assert_eq!(worker_connections(admin, 2), [20, 20]);
    // Every connection still answers on the worker that holds it.
    for (i, stream) in conns.iter_mut().enumerate() {
        assert_eq!(keep_alive_get(stream, &format!("/again/{i}")), 200);
    }
    drop(conns);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let open = worker_connections(admin, 2);
        if open == [0, 0] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still open after the clients closed: {open:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = run.terminate();
    assert_eq!(status.code(), Some(0), "exit after SIGTERM: {status:?}");
    assert_eq!(up.requests(), 80);
}

/// `switchyard healthcheck` (the Docker image's HEALTHCHECK: no curl or
/// shell in the runtime image): exit 0 for a 2xx from the admin listener,
/// 1 for another status, a closed port or a listener that never answers.
#[test]
fn healthcheck_exits_0_only_for_a_2xx_in_time() {
    let mut demo = Proc::spawn(switchyard(&[
        "demo",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ]));
    let admin: SocketAddr = demo.wait_for(false, |line| {
        let rest = line.split("admin on http://").nth(1)?;
        rest.split([',', ' ']).next()?.parse().ok()
    });
    let check = |url: &str, timeout_ms: &str| {
        let started = Instant::now();
        let out = switchyard(&["healthcheck", "--url", url, "--timeout-ms", timeout_ms])
            .output()
            .expect("run switchyard healthcheck");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            started.elapsed(),
        )
    };

    for path in ["/health/ready", "/health/live"] {
        let (code, stderr, _) = check(&format!("http://{admin}{path}"), "2000");
        assert_eq!(code, Some(0), "{path}: {stderr}");
    }
    let (code, stderr, _) = check(&format!("http://{admin}/health/nope"), "2000");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("status 404"), "{stderr}");

    // The default URL is the admin listener's default address.
    let cmd = <switchyard::cli::Cli as clap::CommandFactory>::command();
    let hc = cmd
        .find_subcommand("healthcheck")
        .expect("healthcheck subcommand");
    let url = hc
        .get_arguments()
        .find(|a| a.get_id() == "url")
        .expect("--url");
    let default = url.get_default_values()[0].to_string_lossy().into_owned();
    let settings = switchyard::config::ServerSettings::default();
    assert_eq!(
        default,
        format!("http://{}/health/ready", settings.admin_listen)
    );
    demo.terminate();

    // Nothing listening: refused at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed_addr = closed.local_addr().expect("addr");
    drop(closed);
    let (code, stderr, _) = check(&format!("http://{closed_addr}/health/ready"), "2000");
    assert_eq!(code, Some(1), "{stderr}");

    // A listener that accepts and never answers: the deadline holds.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_addr = silent.local_addr().expect("addr");
    let (code, stderr, took) = check(&format!("http://{silent_addr}/health/ready"), "300");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    drop(silent);

    let (code, stderr, _) = check("https://127.0.0.1:9901/health/ready", "300");
    assert_eq!(code, Some(1), "{stderr}");
}
