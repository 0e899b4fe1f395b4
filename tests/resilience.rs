//! Resilience end to end: an upstream process killed with SIGKILL in the
//! middle of 10,000 GETs costs clients nothing (retries and ejection), and
//! comes back once its health checks pass; with every upstream failing,
//! retries stay within the budget; a slowloris client is cut at the header
//! timeout.

mod support;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::Method;
use support::{Reply, TestGateway, Upstream, eventually, table};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `switchyard demo-upstream` as a separate process, so it can be killed.
struct Process(Child);

impl Process {
    async fn start(port: u16) -> Process {
        let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args([
                "demo-upstream",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--version",
                "v1",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "demo upstream did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Process(child)
    }

    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

fn endpoint_state(ups: &serde_json::Value, ep: &str) -> serde_json::Value {
    ups["pools"][0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["endpoint"] == ep)
        .cloned()
        .unwrap_or_else(|| panic!("{ep} in {ups}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_killed_mid_run_costs_clients_nothing_and_comes_back_when_healthy() {
    let steady = Upstream::spawn("v1").await;
    let port = free_port();
    let victim_addr = format!("127.0.0.1:{port}");
    let mut victim = Process::start(port).await;
    let mut text = table()
        .version("v1", "current", "")
        .route("api", "/api/", "v1", "")
        .toml();
    text.push_str(&format!(
        "[[pools]]\nname = \"v1\"\nversion = \"v1\"\nendpoints = [{:?}, {victim_addr:?}]\n\
         [pools.health]\npath = \"/health\"\ninterval_ms = 100\nhealthy_threshold = 2\nunhealthy_threshold = 2\n",
        steady.endpoint()
    ));
    let gw = Arc::new(TestGateway::start(text).await);
    let sent = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (gw, sent, errors) = (gw.clone(), sent.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..625 {
                let r = gw.get("/api/orders").send().await;
                if r.status() != 200 {
                    errors.fetch_add(1, Ordering::Relaxed);
                    eprintln!(
                        "client saw {}: {:?}",
                        r.status(),
                        String::from_utf8_lossy(&r.body)
                    );
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    while sent.load(Ordering::Relaxed) < 2_500 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    victim.kill();
    let killed_at = sent.load(Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(sent.load(Ordering::Relaxed), 10_000);
    assert!(
        killed_at < 9_000,
        "the kill happened mid-run (after {killed_at})"
    );
    assert_eq!(errors.load(Ordering::Relaxed), 0, "no client-visible error");

    let ups = gw.admin_get("/admin/upstreams").send().await.json();
    assert_eq!(
        endpoint_state(&ups, &victim_addr)["healthy"],
        false,
        "{ups}"
    );

    // Back on the same port: two good probes and it serves again.
    let _back = Process::start(port).await;
    eventually("the endpoint is healthy again", || async {
        let ups = gw.admin_get("/admin/upstreams").send().await.json();
        endpoint_state(&ups, &victim_addr)["healthy"] == true
    })
    .await;
    // Health probes reach the steady endpoint too: count client traffic.
    let served = |up: &Upstream| up.received().iter().filter(|r| r.uri != "/health").count();
    let before = served(&steady);
    for _ in 0..200 {
        assert_eq!(gw.get("/api/orders").send().await.status(), 200);
    }
    let to_steady = served(&steady) - before;
    assert!(
        to_steady < 200,
        "the returned endpoint takes part of the traffic ({to_steady}/200 to the other)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_upstream_failing_retries_stay_within_the_budget() {
    let bad = Upstream::spawn_slow("v1", Duration::from_millis(300)).await;
    bad.reply(Method::GET, "/api/x", Reply::json(502, "{}"));
    let mut text = table()
        .version("v1", "current", "")
        .route(
            "api",
            "/api/",
            "v1",
            "[routes.retry]\nattempts = 3\nbudget_percent = 10\nmin_retries = 0",
        )
        .toml();
    text.push_str(&format!(
        "[[pools]]\nname = \"v1\"\nversion = \"v1\"\nendpoints = [{:?}]\n[pools.outlier]\nconsecutive_failures = 0\n",
        bad.endpoint()
    ));
    let gw = Arc::new(TestGateway::start(text).await);
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let gw = gw.clone();
            tokio::spawn(async move { gw.get("/api/x").send().await.status() })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 502);
    }
    let tries = bad.requests();
    // 40 first tries; retries in progress capped at 10% of 40 requests in
    // progress = 4 at a time, and each of those retries can retry once more.
    assert!(
        (40..=48).contains(&tries),
        "{tries} upstream tries for 40 requests: the budget must bound retries"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_client_is_cut_at_the_header_timeout() {
    let up = Upstream::spawn("v1").await;
    let gw = TestGateway::start(
        table()
            .server("header_read_timeout_ms = 600")
            .version("v1", "current", "")
            .pool("v1", "v1", &up)
            .route("api", "/api/", "v1", ""),
    )
    .await;
    let mut conn = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let started = Instant::now();
    let head =
        b"GET /api/x HTTP/1.1\r\nhost: slow.example\r\nx-drip: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut closed_after = None;
    let mut answer = Vec::new();
    for b in head.iter() {
        if conn.write_all(&[*b]).await.is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        // Anything read back (the 408, or EOF) means the server gave up.
        let mut buf = [0u8; 1024];
        match tokio::time::timeout(Duration::from_millis(100), conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed_after = Some(started.elapsed());
                break;
            }
            Ok(Ok(n)) => {
                closed_after = Some(started.elapsed());
                answer.extend_from_slice(&buf[..n]);
                while let Ok(Ok(n)) =
                    tokio::time::timeout(Duration::from_millis(500), conn.read(&mut buf)).await
                {
                    if n == 0 {
                        break;
                    }
                    answer.extend_from_slice(&buf[..n]);
                }
                break;
            }
            Err(_) => {}
        }
    }
    let closed_after = closed_after.expect("the connection was never closed while dripping");
    assert!(
        closed_after >= Duration::from_millis(500) && closed_after < Duration::from_millis(3000),
        "closed after {closed_after:?}, header timeout 600 ms"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 408 ")
            && answer.contains("application/problem+json")
            && answer.contains("/request-header-timeout"),
        "a 408 problem before the close: {answer:?}"
    );
    assert_eq!(up.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_head_in_pieces_has_its_own_header_timeout() {
    let up = Upstream::spawn("v1").await;
    let gw = TestGateway::start(
        table()
            .server("header_read_timeout_ms = 600")
            .version("v1", "current", "")
            .pool("v1", "v1", &up)
            .route("api", "/api/", "v1", ""),
    )
    .await;
    let mut conn = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    // Two heads on one connection, each in two pieces 400 ms apart: 800 ms
    // in all, more than the timeout, but each head within its own.
    for _ in 0..2 {
        conn.write_all(b"GET /api/x HTTP/1.1\r\nhost: a")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        conn.write_all(b".example\r\n\r\n").await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains("\"served_by\"") {
            let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
                .await
                .expect("an answer")
                .unwrap();
            assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        assert!(
            got.starts_with(b"HTTP/1.1 200 "),
            "{:?}",
            String::from_utf8_lossy(&got)
        );
    }
    assert_eq!(up.requests(), 2);
}
