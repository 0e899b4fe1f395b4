//! Routing tables in Redis: push, hot reload on two gateways, missed
//! pub/sub, Redis outages under load, bad documents, concurrent pushes,
//! freezes, rollback, pins, and the admin API. Every test runs its own
//! `redis-server` on a free port.

#[path = "support/redis.rs"]
mod redis_server;
mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use redis_server::{RedisCluster, RedisServer};
use serde_json::Value;
use support::{Upstream, client, eventually, table};
use switchyard::config::{self, Origin};
use switchyard::control::Clock;
use switchyard::control::store::{Meta, PushError, Store, sha256_hex};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A clock the test moves by hand.
struct ManualClock(Mutex<Timestamp>);

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap()
    }
}

/// A gateway fed from Redis.
struct Gw {
    addr: SocketAddr,
    admin: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<bool>,
}

impl Gw {
    async fn start(
        redis: &RedisServer,
        fallback: Option<&str>,
        clock: Option<Arc<dyn Clock>>,
        token: Option<&str>,
    ) -> Gw {
        Gw::start_url(&redis.url(), fallback, clock, token).await
    }

    async fn start_url(
        url: &str,
        fallback: Option<&str>,
        clock: Option<Arc<dyn Clock>>,
        token: Option<&str>,
    ) -> Gw {
        let mut text = format!("[server]\nredis_url = \"{url}\"\nredis_poll_ms = 100\n");
        if let Some(t) = token {
            text.push_str(&format!("admin_token = \"{t}\"\n"));
        }
        if let Some(f) = fallback {
            // Test tables have no [server] section of their own.
            text.push_str(f);
        }
        let doc =
            config::load(&text, Origin::Embedded("test")).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (addr, admin_addr) = (proxy.local_addr().unwrap(), admin.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let mut options = switchyard::ServeOptions::default();
        if let Some(c) = clock {
            options.clock = c;
        }
        let task = tokio::spawn(switchyard::serve_with(
            doc,
            "bootstrap".into(),
            proxy,
            admin,
            shutdown.clone(),
            options,
        ));
        Gw {
            addr,
            admin: admin_addr,
            shutdown,
            task,
        }
    }

    /// `served_by` of a GET /api/x with the given headers (None on non-200).
    async fn served_by(&self, headers: &[(&str, &str)]) -> Option<String> {
        let (status, body) = get(self.addr, "/api/x", headers).await?;
        (status == 200).then(|| body["served_by"].as_str().unwrap_or("").to_string())
    }

    async fn admin(&self, method: &str, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut b = http::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.admin));
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        let resp = client()
            .request(b.body(Default::default()).unwrap())
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    async fn metrics(&self) -> String {
        let uri = format!("http://{}/metrics", self.admin);
        let resp = client().get(uri.parse().unwrap()).await.unwrap();
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    }

    async fn status(&self) -> Value {
        self.admin("GET", "/admin/status", None).await.1
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Option<(u16, Value)> {
    let mut b = http::Request::builder().uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = tokio::time::timeout(
        Duration::from_secs(5),
        client().request(b.body(Default::default()).unwrap()),
    )
    .await
    .ok()?
    .ok()?;
    let status = resp.status().as_u16();
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .ok()?
        .to_bytes();
    Some((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

/// A table with versions v1 and v2 whose default is `default`, each version
/// served by its own upstream; extra TOML appended.
fn doc(v1: &Upstream, v2: &Upstream, default: &str, extra: &str) -> String {
    let mut t = table()
        .version("v1", "stable", "")
        .version("v2", "current", "")
        .pool("v1", "v1", v1)
        .pool("v2", "v2", v2)
        .route("api", "/api/", default, "")
        .toml();
    t.push_str(extra);
    t
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Runs the CLI; returns (exit code, stdout, stderr).
fn cli(redis: &RedisServer, args: &[&str]) -> (i32, String, String) {
    cli_url(&redis.url(), args)
}

fn cli_url(url: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .env("SWITCHYARD_REDIS_URL", url)
        .env("SWITCHYARD_AUTHOR", "test-operator")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn push(
    redis: &RedisServer,
    file: &std::path::Path,
    msg: &str,
    extra: &[&str],
) -> (i32, String, String) {
    let mut args = vec!["config", "push", file.to_str().unwrap(), "--message", msg];
    args.extend_from_slice(extra);
    cli(redis, &args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_reaches_two_gateways_within_milliseconds() {
    let redis = RedisServer::start();
    let (v1, v2) = (Upstream::spawn("v1").await, Upstream::spawn("v2").await);
    let dir = tempfile::tempdir().unwrap();
    let first = write(&dir, "a.toml", &doc(&v1, &v2, "v1", ""));
    assert_eq!(push(&redis, &first, "first", &[]).0, 0);
    let (a, b) = (
        Gw::start(&redis, None, None, None).await,
        Gw::start(&redis, None, None, None).await,
    );
    for gw in [&a, &b] {
        eventually("gateway loads revision 1", || async {
            gw.served_by(&[]).await.as_deref() == Some("v1")
        })
        .await;
    }
    let second = write(&dir, "b.toml", &doc(&v1, &v2, "v2", ""));
    let (code, out, err) = push(&redis, &second, "default to v2", &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("pushed revision 2"), "{out}");
    let pushed = Instant::now();
    let mut delays = Vec::new();
    for gw in [&a, &b] {
        eventually("gateway serves revision 2", || async {
            gw.served_by(&[]).await.as_deref() == Some("v2")
        })
        .await;
        delays.push(pushed.elapsed());
    }
    println!("propagation after push returned: {delays:?}");
    let st = a.status().await;
    assert_eq!(st["table_revision"], 2);
    assert_eq!(st["source"], "redis");
    let metrics = a.metrics().await;
    assert!(
        metrics.contains("switchyard_config_revision 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchyard_redis_connected 1"),
        "{metrics}"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revision_written_without_publish_is_picked_up_by_polling() {
    let redis = RedisServer::start();
    let (v1, v2) = (Upstream::spawn("v1").await, Upstream::spawn("v2").await);
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        push(
            &redis,
            &write(&dir, "a.toml", &doc(&v1, &v2, "v1", "")),
            "first",
            &[]
        )
        .0,
        0
    );
    let gw = Gw::start(&redis, None, None, None).await;
    eventually("revision 1", || async {
        gw.served_by(&[]).await.as_deref() == Some("v1")
    })
    .await;
    // Written behind the gateway's back: no PUBLISH, so only the poll sees it.
    let text = doc(&v1, &v2, "v2", "");
    redis
        .cli(&["SET", "switchyard:{table}:doc", &text])
        .unwrap();
    redis.cli(&["INCR", "switchyard:{table}:rev"]).unwrap();
    eventually("poll applies the unannounced revision", || async {
        gw.served_by(&[]).await.as_deref() == Some("v2")
    })
    .await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_redis_connections_reconnect_and_catch_up() {
    let redis = RedisServer::start();
    let (v1, v2) = (Upstream::spawn("v1").await, Upstream::spawn("v2").await);
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        push(
            &redis,
            &write(&dir, "a.toml", &doc(&v1, &v2, "v1", "")),
            "first",
            &[]
        )
        .0,
        0
    );
    let gw = Gw::start(&redis, None, None, None).await;
    eventually("revision 1", || async {
        gw.served_by(&[]).await.as_deref() == Some("v1")
    })
    .await;
    // Drop the gateway's connections (and with them its subscription).
    redis.cli(&["CLIENT", "KILL", "TYPE", "normal"]).unwrap();
    redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]).unwrap();
    assert_eq!(
        push(
            &redis,
            &write(&dir, "b.toml", &doc(&v1, &v2, "v2", "")),
            "second",
            &[]
        )
        .0,
        0
    );
    eventually("revision 2 after reconnect", || async {
        gw.served_by(&[]).await.as_deref() == Some("v2")
    })
    .await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_under_load_fails_no_request_and_catches_up() {
    let mut redis = RedisServer::start();
    let (v1, v2) = (Upstream::spawn("v1").await, Upstream::spawn("v2").await);
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        push(
            &redis,
            &write(&dir, "a.toml", &doc(&v1, &v2, "v1", "")),
            "first",
            &[]
        )
        .0,
        0
    );
    let gw = Arc::new(Gw::start(&redis, None, None, None).await);
    eventually("revision 1", || async {
        gw.served_by(&[]).await.as_deref() == Some("v1")
    })
    .await;

    let stop = CancellationToken::new();
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    for _ in 0..8 {
        let (gw, stop, ok, failed) = (gw.clone(), stop.clone(), ok.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            while !stop.is_cancelled() {
                match gw.served_by(&[]).await {
                    Some(_) => ok.fetch_add(1, Ordering::Relaxed),
                    None => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.stop();
    eventually("gateway notices Redis is down", || async {
        gw.status().await["redis_connected"] == false
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    redis.restart();
    assert_eq!(
        push(
            &redis,
            &write(&dir, "b.toml", &doc(&v1, &v2, "v2", "")),
            "pushed after restart",
            &[]
        )
        .0,
        0
    );
    eventually("revision pushed after the restart is served", || async {
        gw.served_by(&[]).await.as_deref() == Some("v2")
    })
    .await;
    stop.cancel();
    for l in load {
        l.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!("requests during the outage: {ok} ok, {failed} failed");
    assert_eq!(failed, 0, "no request may fail because of Redis");
    assert!(ok > 100, "the load actually ran ({ok})");
    assert_eq!(gw.status().await["redis_connected"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_document_is_rejected_and_last_good_table_serves() {
    let redis = RedisServer::start();
    let (v1, v2) = (Upstream::spawn("v1").await, Upstream::spawn("v2").await);
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        push(
            &redis,
            &write(&dir, "a.toml", &doc(&v1, &v2, "v1", "")),
            "first",
            &[]
        )
        .0,
        0
    );
    let gw = Gw::start(&redis, None, None, None).await;
    eventually("revision 1", || async {
        gw.served_by(&[]).await.as_deref() == Some("v1")
    })
    .await;
    let bad =
        doc(&v1, &v2, "v1", "").replace("default_version = \"v1\"", "default_version = \"v7\"");
    redis.cli(&["SET", "switchyard:{table}:doc", &bad]).unwrap();
    redis.cli(&["INCR", "switchyard:{table}:rev"]).unwrap();
    redis
        .cli(&["PUBLISH", "switchyard:{table}:events", "table 2"])
        .unwrap();
    eventually("status shows the rejection", || async {
        gw.status().await["rejected"]["revision"] == 2
    })
    .await;
    let st = gw.status().await;
    let errors = st["rejected"]["errors"].to_string();
    assert!(
        errors.contains("routes[0].default_version: unknown version \\\"v7\\\""),
        "{errors}"
    );
    assert_eq!(st["table_revision"], 1);
    assert_eq!(
        gw.served_by(&[]).await.as_deref(),
        Some("v1"),
        "last good table keeps serving"
    );
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("switchyard_config_reloads_total{result=\"rejected\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchyard_config_revision 1"),
        "{metrics}"
    );
    // The CLI refuses the same mistake before it reaches Redis.
    let (code, _, err) = push(&redis, &write(&dir, "bad.toml", &bad), "bad", &[]);
    assert_eq!(code, 1);
    assert!(err.contains("routes[0].default_version"), "{err}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pushes_exactly_one_wins() {
    let redis = RedisServer::start();
    let (v1, v2) = (Upstream::spawn("v1").await, Upstream::spawn("v2").await);
    let text = doc(&v1, &v2, "v1", "");
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (url, text) = (redis.url(), text.clone());
        tasks.push(tokio::spawn(async move {
            let mut store = Store::connect(&url, "switchyard:", None).await.unwrap();
            let meta = Meta {
                author: format!("operator-{i}"),
                time: Timestamp::now(),
                message: "race".into(),
                sha256: sha256_hex(&text),
                emergency: false,
                action: "push".into(),
            };
            store.push(&text, 0, &meta, 10).await
        }));
    }
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(rev) => {
                assert_eq!(rev, 1);
                won += 1;
            }
            Err(PushError::Conflict {
                expected: 0,
                actual: 1,
            }) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(won, 1, "exactly one push wins");
    // The CLI reports a lost race as a conflict.
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = push(
        &redis,
        &write(&dir, "a.toml", &text),
        "stale",
        &["--expect-revision", "0"],
    );
    assert_eq!(code, 1);
    assert!(err.contains("expected revision 0, Redis is at 1"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freeze_refuses_push_allows_emergency_and_defers_direct_writes() {
    let redis = RedisServer::start();
    let (v1, v2) = (Upstream::spawn("v1").await, Upstream::spawn("v2").await);
    let dir = tempfile::tempdir().unwrap();
    // Frozen every day, all day, in UTC: the CLI (real clock) is always inside it.
    let always = "\n[[freezes]]\nname = \"always\"\ntime_zone = \"UTC\"\nweekdays = [\"monday\", \"tuesday\", \"wednesday\", \"thursday\", \"friday\", \"saturday\", \"sunday\"]\n";
    assert_eq!(
        push(
            &redis,
            &write(&dir, "a.toml", &doc(&v1, &v2, "v1", always)),
            "first",
            &[]
        )
        .0,
        0
    );
    let refused = push(
        &redis,
        &write(&dir, "b.toml", &doc(&v1, &v2, "v2", always)),
        "during freeze",
        &[],
    );
    assert_eq!(refused.0, 1);
    assert!(
        refused.2.contains("change freeze \"always\" is in force"),
        "{}",
        refused.2
    );
    let emergency = push(
        &redis,
        &write(&dir, "b.toml", &doc(&v1, &v2, "v2", always)),
        "hotfix",
        &["--emergency"],
    );
    assert_eq!(emergency.0, 0, "{}", emergency.2);
    let (_, history, _) = cli(&redis, &["config", "history"]);
    assert!(
        history.contains("rev 2 push EMERGENCY") && history.contains("hotfix"),
        "{history}"
    );

    // A gateway whose clock sits inside a Saturday window sees a direct
    // write (no metadata, so not an emergency) and defers it.
    let saturday = "\n[[freezes]]\nname = \"wedding-saturday\"\ntime_zone = \"Europe/London\"\nweekdays = [\"saturday\"]\nstart = \"08:00\"\nend = \"23:00\"\n";
    let redis2 = RedisServer::start();
    assert_eq!(
        push(
            &redis2,
            &write(&dir, "c.toml", &doc(&v1, &v2, "v1", saturday)),
            "first",
            &[]
        )
        .0,
        0
    );
    // 2026-07-04 is a Saturday; 12:00 UTC is 13:00 in London.
    let clock = Arc::new(ManualClock(Mutex::new(
        "2026-07-04T12:00:00Z".parse().unwrap(),
    )));
    let gw = Gw::start(&redis2, None, Some(clock.clone()), None).await;
    eventually("revision 1", || async {
        gw.served_by(&[]).await.as_deref() == Some("v1")
    })
    .await;
    redis2
        .cli(&[
            "SET",
            "switchyard:{table}:doc",
            &doc(&v1, &v2, "v2", saturday),
        ])
        .unwrap();
    redis2.cli(&["INCR", "switchyard:{table}:rev"]).unwrap();
    eventually("the direct write is deferred", || async {
        gw.status().await["deferred"]["revision"] == 2
    })
    .await;
    let st = gw.status().await;
    assert_eq!(st["deferred"]["freeze"], "wedding-saturday");
    assert_eq!(st["deferred"]["until"], "2026-07-04T22:00:00Z");
    assert_eq!(
        gw.served_by(&[]).await.as_deref(),
        Some("v1"),
        "deferred, not applied"
    );
    // Re-checked on every poll while deferred, counted once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("switchyard_config_deferred_revision 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchyard_config_reloads_total{result=\"deferred\"} 1"),
        "{metrics}"
    );
    *clock.0.lock().unwrap() = "2026-07-04T22:00:01Z".parse().unwrap();
    eventually("applied when the freeze ends", || async {
        gw.served_by(&[]).await.as_deref() == Some("v2")
    })
    .await;
    assert!(gw.status().await["deferred"].is_null());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_restores_an_earlier_revision_as_a_new_one() {
    let redis = RedisServer::start();
    let (v1, v2) = (Upstream::spawn("v1").await, Upstream::spawn("v2").await);
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        push(
            &redis,
            &write(&dir, "a.toml", &doc(&v1, &v2, "v1", "")),
            "first",
            &[]
        )
        .0,
        0
    );
    assert_eq!(
        push(
            &redis,
            &write(&dir, "b.toml", &doc(&v1, &v2, "v2", "")),
            "second",
            &[]
        )
        .0,
        0
    );
    let gw = Gw::start(&redis, None, None, None).await;
    eventually("revision 2", || async {
        gw.served_by(&[]).await.as_deref() == Some("v2")
    })
    .await;
    let (code, out, err) = cli(
        &redis,
        &[
            "config",
            "rollback",
            "1",
            "--message",
            "v2 default broke partners",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("revision 3 restores revision 1"), "{out}");
    eventually("revision 3 = revision 1", || async {
        gw.served_by(&[]).await.as_deref() == Some("v1")
    })
    .await;
    assert_eq!(gw.status().await["table_revision"], 3);
    let (_, diff, _) = cli(&redis, &["config", "diff", "2", "3"]);
    assert!(
        diff.contains("-default_version = \"v2\"") && diff.contains("+default_version = \"v1\""),
        "{diff}"
    );
    let (_, current, _) = cli(&redis, &["config", "get", "--revision", "1"]);
    assert_eq!(current, doc(&v1, &v2, "v1", ""));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_set_reaches_both_gateways_without_redis_on_the_request_path() {
    let mut redis = RedisServer::start();
    let (v1, v2) = (Upstream::spawn("v1").await, Upstream::spawn("v2").await);
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        push(
            &redis,
            &write(&dir, "a.toml", &doc(&v1, &v2, "v2", "")),
            "first",
            &[]
        )
        .0,
        0
    );
    let (a, b) = (
        Gw::start(&redis, None, None, None).await,
        Gw::start(&redis, None, None, None).await,
    );
    let vendor = [("x-client-id", "vendor-1234")];
    for gw in [&a, &b] {
        eventually("revision 1", || async {
            gw.served_by(&vendor).await.as_deref() == Some("v2")
        })
        .await;
    }
    let (code, out, _) = cli(&redis, &["pin", "set", "vendor-1234", "1"]);
    assert_eq!(code, 0);
    assert!(out.contains("pinned vendor-1234 to v1"), "{out}");
    let refused = cli(&redis, &["pin", "set", "vendor-9", "v9"]);
    assert_eq!(refused.0, 1, "unknown versions are refused");
    for gw in [&a, &b] {
        eventually("pin applied", || async {
            gw.served_by(&vendor).await.as_deref() == Some("v1")
        })
        .await;
    }
    // With Redis gone, the pin still routes: it is mirrored in memory.
    redis.stop();
    for gw in [&a, &b] {
        assert_eq!(gw.served_by(&vendor).await.as_deref(), Some("v1"));
        assert_eq!(gw.served_by(&[]).await.as_deref(), Some("v2"));
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_redis_at_start_falls_back_to_the_file_table() {
    let (v1, v2) = (Upstream::spawn("v1").await, Upstream::spawn("v2").await);
    // A loopback port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gw = FakeUrl(format!("redis://127.0.0.1:{port}/"))
        .start(Some(&doc(&v1, &v2, "v1", "")))
        .await;
    eventually("file table serves", || async {
        gw.served_by(&[]).await.as_deref() == Some("v1")
    })
    .await;
    let st = gw.status().await;
    assert_eq!(st["source"], "file-fallback");
    assert_eq!(st["redis_connected"], false);
    gw.stop().await;
}

/// Starts a gateway against a URL (used where no server should answer).
struct FakeUrl(String);

impl FakeUrl {
    async fn start(&self, fallback: Option<&str>) -> Gw {
        let mut text = format!(
            "[server]\nredis_url = \"{}\"\nredis_poll_ms = 100\n",
            self.0
        );
        if let Some(f) = fallback {
            text.push_str(f);
        }
        let doc = config::load(&text, Origin::Embedded("test")).unwrap();
        let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (addr, admin_addr) = (proxy.local_addr().unwrap(), admin.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(switchyard::serve_with(
            doc,
            "file".into(),
            proxy,
            admin,
            shutdown.clone(),
            Default::default(),
        ));
        Gw {
            addr,
            admin: admin_addr,
            shutdown,
            task,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_needs_the_bearer_token() {
    let redis = RedisServer::start();
    let (v1, v2) = (Upstream::spawn("v1").await, Upstream::spawn("v2").await);
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        push(
            &redis,
            &write(&dir, "a.toml", &doc(&v1, &v2, "v1", "")),
            "first",
            &[]
        )
        .0,
        0
    );
    let gw = Gw::start(&redis, None, None, Some("s3cret")).await;
    eventually("revision 1", || async {
        gw.served_by(&[]).await.as_deref() == Some("v1")
    })
    .await;
    let (status, body) = gw.admin("GET", "/admin/table", None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(gw.admin("GET", "/admin/table", Some("wrong")).await.0, 403);
    assert_eq!(
        gw.admin("GET", "/health/ready", None).await.0,
        200,
        "health stays open"
    );
    let (status, table) = gw.admin("GET", "/admin/table", Some("s3cret")).await;
    assert_eq!(status, 200);
    assert_eq!(table["revision"], 1);
    assert_eq!(table["origin"], "redis revision 1");
    assert!(table["document"].as_str().unwrap().contains("[[routes]]"));
    let (status, history) = gw.admin("GET", "/admin/history", Some("s3cret")).await;
    assert_eq!(status, 200);
    assert_eq!(history["entries"][0]["fields"]["author"], "test-operator");
    let (status, reload) = gw.admin("POST", "/admin/reload", Some("s3cret")).await;
    assert_eq!(status, 200, "{reload}");
    gw.stop().await;
}

/// The same operator workflow on a three-node Redis Cluster: the keys share
/// the `{table}` hash tag, so the compare-and-set script and the MULTI stay
/// in one slot; pub/sub and polling both reach the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_push_history_and_rollback_reach_the_gateway() {
    let cluster = RedisCluster::start();
    let url = cluster.url();
    let (v1, v2) = (Upstream::spawn("v1").await, Upstream::spawn("v2").await);
    let dir = tempfile::tempdir().unwrap();
    let first = write(&dir, "a.toml", &doc(&v1, &v2, "v1", ""));
    let (code, out, err) = cli_url(
        &url,
        &[
            "config",
            "push",
            first.to_str().unwrap(),
            "--message",
            "first",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let gw = Gw::start_url(&url, None, None, None).await;
    eventually("gateway loads revision 1 from the cluster", || async {
        gw.served_by(&[]).await.as_deref() == Some("v1")
    })
    .await;
    let second = write(&dir, "b.toml", &doc(&v1, &v2, "v2", ""));
    let (code, out, err) = cli_url(
        &url,
        &[
            "config",
            "push",
            second.to_str().unwrap(),
            "--message",
            "second",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("pushed revision 2"), "{out}");
    eventually("gateway serves revision 2", || async {
        gw.served_by(&[]).await.as_deref() == Some("v2")
    })
    .await;
    let (code, out, err) = cli_url(&url, &["config", "history"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("first") && out.contains("second"), "{out}");
    let (code, out, err) = cli_url(&url, &["config", "rollback", "1", "--message", "back"]);
    assert_eq!(code, 0, "{out}{err}");
    eventually("rollback (revision 3) serves v1 again", || async {
        gw.served_by(&[]).await.as_deref() == Some("v1")
    })
    .await;
    let st = gw.status().await;
    assert_eq!(st["table_revision"], 3, "{st}");
    assert_eq!(st["redis_connected"], true, "{st}");
    gw.stop().await;
}
