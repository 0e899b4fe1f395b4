//! Seasons and the split as a client sees them: the active season per
//! region (request header -> region, injected clock, the background task
//! crossing a boundary, `/admin/season` and its metric), per-season weight
//! profiles, sticky assignment across reloads and replicas, monotonic canary
//! growth, allow-listed canary overrides, the sticky cookie, and the
//! README's regional example. Every gateway runs on a manual clock, so no
//! test depends on the day it runs.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use support::*;

/// Friday 2026-07-03 20:00Z: Friday 16:00 in New York (July: peak),
/// Saturday 04:00 in Singapore, Friday 17:00 in São Paulo (no season).
const FRIDAY_EVENING_UTC: &str = "2026-07-03T20:00:00Z";

const CALENDAR: &str = r#"
[calendar]
region_header = "x-geo"
home_region = "sa-east-1"

[calendar.region_map]
US = "us-east-1"
SG = "ap-southeast-1"
BR = "sa-east-1"

[[calendar.regions]]
name = "us-east-1"
time_zone = "America/New_York"

[[calendar.regions]]
name = "ap-southeast-1"
time_zone = "Asia/Singapore"

[[calendar.regions]]
name = "sa-east-1"
time_zone = "America/Sao_Paulo"

[[calendar.seasons]]
name = "saturday"
weekdays = ["saturday"]
limit_multiplier = 5.1

[[calendar.seasons]]
name = "peak"
regions = ["us-east-1"]
months = [5, 6, 7, 8, 9, 10]
limit_multiplier = 2.9
"#;

/// A v2 pool and a v2 canary pool, the calendar above, and route `/api`
/// with `weights` as the default v2 split plus `extra` route lines.
fn text(main: &Upstream, canary: &Upstream, canary_weight: u32, extra: &str) -> String {
    let route = format!(
        "{extra}\n[routes.split]\nv2 = [{{ pool = \"v2\", weight = {} }}, {{ pool = \"v2-canary\", weight = {canary_weight} }}]\n\
         [routes.profiles.peak]\nv2 = [{{ pool = \"v2\", weight = 98 }}, {{ pool = \"v2-canary\", weight = 2 }}]\n\
         [routes.profiles.saturday]\nv2 = [{{ pool = \"v2\", weight = 100 }}, {{ pool = \"v2-canary\", weight = 0 }}]",
        100 - canary_weight
    );
    let t = table()
        .version("v2", "current", "")
        .pool("v2", "v2", main)
        .pool("v2-canary", "v2", canary)
        .route("api", "/api", "v2", &route);
    format!("{}\n{CALENDAR}", t.toml())
}

struct Pair {
    main: Upstream,
    canary: Upstream,
}

impl Pair {
    async fn spawn() -> Pair {
        Pair {
            main: Upstream::spawn("v2").await,
            canary: Upstream::spawn("v2-canary").await,
        }
    }
}

fn request(geo: &str, client: Option<&str>, extra: &str) -> Vec<u8> {
    let mut r = format!("GET /api/orders HTTP/1.1\r\nHost: gw.test\r\nx-geo: {geo}\r\n");
    if let Some(c) = client {
        r.push_str(&format!("x-client-id: {c}\r\n"));
    }
    r.push_str(extra);
    r.push_str("\r\n");
    r.into_bytes()
}

/// Which upstream answered a raw response.
fn pool_of(resp: &RawResponse) -> &'static str {
    assert_eq!(
        resp.status,
        200,
        "body {}",
        String::from_utf8_lossy(&resp.body)
    );
    match resp.body.as_slice() {
        br#"{"served_by":"v2"}"# => "v2",
        br#"{"served_by":"v2-canary"}"# => "v2-canary",
        other => panic!("served by {:?}", String::from_utf8_lossy(other)),
    }
}

/// The pool each of `clients` lands on (one request each), over 16
/// keep-alive connections.
async fn pools_of(addr: SocketAddr, geo: &str, clients: &[String]) -> Vec<&'static str> {
    const CONCURRENCY: usize = 16;
    let clients: std::sync::Arc<[String]> = clients.into();
    let geo: std::sync::Arc<str> = geo.into();
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|w| {
            let (clients, geo) = (clients.clone(), geo.clone());
            tokio::spawn(async move {
                let mut conn = RawConn::connect(addr).await;
                let mut out = Vec::new();
                for i in (w..clients.len()).step_by(CONCURRENCY) {
                    let resp = conn.exchange(&request(&geo, Some(&clients[i]), "")).await;
                    out.push((i, pool_of(&resp)));
                }
                out
            })
        })
        .collect();
    let mut pools = vec![""; clients.len()];
    for w in workers {
        for (i, p) in w.await.expect("worker") {
            pools[i] = p;
        }
    }
    pools
}

fn clients(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

fn canary_share(pools: &[&str]) -> f64 {
    pools.iter().filter(|p| **p == "v2-canary").count() as f64 * 100.0 / pools.len() as f64
}

fn write(path: &PathBuf, text: &str) {
    std::fs::write(path, text).expect("write table");
}

async fn reload(gw: &TestGateway) {
    let resp = gw.admin_post("/admin/reload").send().await;
    assert_eq!(
        resp.status(),
        200,
        "{}",
        String::from_utf8_lossy(&resp.body)
    );
    assert_eq!(resp.json()["reload"]["result"], "applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_season_profile_splits_within_two_points() {
    const REQUESTS: usize = 20_000;
    let p = Pair::spawn().await;
    let clock = ManualClock::at(FRIDAY_EVENING_UTC);
    let gw = TestGateway::start_with(text(&p.main, &p.canary, 10, ""), clock.options()).await;
    // (profile, region header, canary weight)
    for (profile, geo, want) in [
        ("default", "BR", 10.0),
        ("peak", "US", 2.0),
        ("saturday", "SG", 0.0),
    ] {
        let pools = pools_of(gw.addr, geo, &clients(profile, REQUESTS)).await;
        let share = canary_share(&pools);
        assert!(
            (share - want).abs() <= 2.0,
            "profile {profile}: canary got {share:.2}% of {REQUESTS}, want {want}% ± 2"
        );
        if want == 0.0 {
            assert_eq!(share, 0.0, "a 0 weight is never picked");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_clients_keep_their_pool_across_a_reload_and_replicas() {
    let p = Pair::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("table.toml");
    let before = text(&p.main, &p.canary, 10, "");
    write(&file, &before);
    let clock = ManualClock::at(FRIDAY_EVENING_UTC);
    let options = || switchyard::ServeOptions {
        file: Some(file.clone()),
        ..clock.options()
    };
    let a = TestGateway::start_with(before.as_str(), options()).await;
    let b = TestGateway::start_with(before.as_str(), options()).await;
    let ids = clients("vendor", 1_000);

    let on_a = pools_of(a.addr, "BR", &ids).await;
    let share = canary_share(&on_a);
    assert!((6.0..=14.0).contains(&share), "canary share {share}%");
    assert_eq!(
        pools_of(a.addr, "BR", &ids).await,
        on_a,
        "same gateway, again"
    );
    assert_eq!(pools_of(b.addr, "BR", &ids).await, on_a, "another replica");

    // An unrelated change: the split is recompiled, the clients stay put.
    write(&file, &text(&p.main, &p.canary, 10, "timeout_ms = 9000"));
    reload(&a).await;
    assert_eq!(pools_of(a.addr, "BR", &ids).await, on_a, "after a reload");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raising_the_canary_only_adds_clients_to_it() {
    let p = Pair::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("table.toml");
    write(&file, &text(&p.main, &p.canary, 5, ""));
    let clock = ManualClock::at(FRIDAY_EVENING_UTC);
    let gw = TestGateway::start_with(
        text(&p.main, &p.canary, 5, ""),
        switchyard::ServeOptions {
            file: Some(file.clone()),
            ..clock.options()
        },
    )
    .await;
    let ids = clients("growth", 1_000);
    let mut previous: Option<Vec<&str>> = None;
    for (weight, range) in [(5, 2.0..=8.0), (10, 6.0..=14.0), (20, 15.0..=25.0)] {
        if weight != 5 {
            write(&file, &text(&p.main, &p.canary, weight, ""));
            reload(&gw).await;
        }
        let pools = pools_of(gw.addr, "BR", &ids).await;
        let share = canary_share(&pools);
        assert!(range.contains(&share), "at {weight}%: {share}%");
        if let Some(prev) = &previous {
            let left: Vec<&String> = ids
                .iter()
                .zip(prev.iter().zip(&pools))
                .filter(|(_, (was, now))| **was == "v2-canary" && **now != "v2-canary")
                .map(|(id, _)| id)
                .collect();
            assert!(left.is_empty(), "at {weight}%, left the canary: {left:?}");
        }
        previous = Some(pools);
    }
}

#[tokio::test]
async fn canary_override_is_honoured_only_for_allowed_clients() {
    let p = Pair::spawn().await;
    let clock = ManualClock::at(FRIDAY_EVENING_UTC);
    let gw = TestGateway::start_with(
        text(&p.main, &p.canary, 10, r#"canary_clients = ["qa-team"]"#),
        clock.options(),
    )
    .await;
    let mut conn = RawConn::connect(gw.addr).await;
    // (case, client, x-canary, pool)
    let honoured: &[(&str, &str, &str, &str)] = &[
        ("always", "qa-team", "always", "v2-canary"),
        ("never", "qa-team", "never", "v2"),
        ("a pool by name", "qa-team", "v2-canary", "v2-canary"),
        ("case-insensitive keyword", "qa-team", "ALWAYS", "v2-canary"),
    ];
    for (case, client, value, want) in honoured {
        for _ in 0..10 {
            let resp = conn
                .exchange(&request(
                    "BR",
                    Some(client),
                    &format!("x-canary: {value}\r\n"),
                ))
                .await;
            assert_eq!(pool_of(&resp), *want, "case {case}");
        }
    }
    // Others keep their sticky pool; each ignored header is counted.
    let mut ignored = 0;
    for client in clients("vendor", 40) {
        let sticky = pool_of(&conn.exchange(&request("BR", Some(&client), "")).await);
        for value in ["always", "never"] {
            let resp = conn
                .exchange(&request(
                    "BR",
                    Some(&client),
                    &format!("x-canary: {value}\r\n"),
                ))
                .await;
            assert_eq!(
                pool_of(&resp),
                sticky,
                "client {client} with x-canary: {value}"
            );
            ignored += 1;
        }
    }
    let resp = conn
        .exchange(&request("BR", Some("qa-team"), "x-canary: bogus\r\n"))
        .await;
    pool_of(&resp);
    ignored += 1;
    let metrics = String::from_utf8(gw.admin_get("/metrics").send().await.body.to_vec()).unwrap();
    let line = format!("switchyard_canary_override_ignored_total{{route=\"api\"}} {ignored}");
    assert!(metrics.contains(&line), "want {line:?} in\n{metrics}");
}

#[tokio::test]
async fn explicit_beta_request_is_honoured_only_for_allowed_clients() {
    let main = Upstream::spawn("v2").await;
    let beta = Upstream::spawn("v2.2-beta").await;
    let t = table()
        .version("v2", "current", "")
        .version("v2.2-beta", "beta", "")
        .pool("v2", "v2", &main)
        .pool("v2.2-beta", "v2.2-beta", &beta)
        .route("api", "/api", "v2", r#"canary_clients = ["qa-team"]"#);
    let clock = ManualClock::at(FRIDAY_EVENING_UTC);
    let gw = TestGateway::start_with(format!("{}\n{CALENDAR}", t.toml()), clock.options()).await;
    let ask = |client: &'static str| {
        gw.get("/api/orders")
            .header("x-api-version", "v2.2-beta")
            .header("x-client-id", client)
    };
    let resp = ask("qa-team").send().await;
    assert_eq!(resp.served_by(), "v2.2-beta");
    assert_eq!(resp.header("x-api-version-source"), Some("header"));
    for _ in 0..3 {
        let resp = ask("vendor-7").send().await;
        assert_eq!(resp.served_by(), "v2", "served the default instead");
        assert_eq!(resp.header("x-api-version"), Some("v2"));
        assert_eq!(resp.header("x-api-version-source"), Some("default"));
    }
    assert_eq!(beta.requests(), 1);
    let metrics = String::from_utf8(gw.admin_get("/metrics").send().await.body.to_vec()).unwrap();
    let line = "switchyard_canary_override_ignored_total{route=\"api\"} 3";
    assert!(metrics.contains(line), "want {line:?} in\n{metrics}");
}

#[tokio::test]
async fn sticky_cookie_is_set_once_and_then_followed() {
    let p = Pair::spawn().await;
    let clock = ManualClock::at(FRIDAY_EVENING_UTC);
    let gw = TestGateway::start_with(
        text(
            &p.main,
            &p.canary,
            50,
            r#"sticky = ["client_id", "cookie"]
sticky_cookie = "sy""#,
        ),
        clock.options(),
    )
    .await;
    let mut conn = RawConn::connect(gw.addr).await;
    let mut seen = HashMap::new();
    for _ in 0..20 {
        let first = conn.exchange(&request("BR", None, "")).await;
        let set = first
            .header("set-cookie")
            .expect("a new client gets a cookie");
        assert!(
            set.ends_with("; Path=/; Max-Age=31536000; HttpOnly; SameSite=Lax"),
            "{set}"
        );
        let pair = set.split(';').next().unwrap().to_string();
        let value = pair.strip_prefix("sy=").expect("cookie name");
        assert_eq!(value.len(), 16, "{value}");
        let pool = pool_of(&first);
        for _ in 0..5 {
            let again = conn
                .exchange(&request(
                    "BR",
                    None,
                    &format!("cookie: other=1; {pair}\r\n"),
                ))
                .await;
            assert_eq!(again.header("set-cookie"), None, "a known client");
            assert_eq!(pool_of(&again), pool, "the cookie keeps the pool");
        }
        *seen.entry(pool).or_insert(0) += 1;
    }
    assert_eq!(
        seen.len(),
        2,
        "new identities spread over both pools: {seen:?}"
    );
    let with_id = conn.exchange(&request("BR", Some("acme"), "")).await;
    assert_eq!(
        with_id.header("set-cookie"),
        None,
        "a client id comes first"
    );
}

#[tokio::test]
async fn admin_season_and_metric_follow_the_clock_across_a_boundary() {
    let p = Pair::spawn().await;
    // Friday 23:59:59 in Singapore; Saturday starts at 16:00:00Z.
    let clock = ManualClock::at("2026-07-03T15:59:59Z");
    let gw = TestGateway::start_with(text(&p.main, &p.canary, 10, ""), clock.options()).await;
    let season_of = |body: &serde_json::Value, region: &str| {
        body["regions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["region"] == region)
            .unwrap_or_else(|| panic!("{region} in {body}"))["season"]
            .clone()
    };
    let body = gw.admin_get("/admin/season").send().await.json();
    assert_eq!(season_of(&body, "us-east-1"), "peak", "{body}");
    assert_eq!(season_of(&body, "ap-southeast-1"), serde_json::Value::Null);
    assert_eq!(season_of(&body, "sa-east-1"), serde_json::Value::Null);
    assert_eq!(body["seasons"], serde_json::json!(["saturday", "peak"]));
    let sg = body["regions"][1].clone();
    assert_eq!(sg["recheck_at"], "2026-07-03T16:00:00Z", "{sg}");
    assert_eq!(sg["local_time"], "2026-07-03T23:59:59", "{sg}");

    // Singapore turns Saturday: the background task picks it up.
    clock.set("2026-07-03T16:00:01Z");
    eventually("Singapore is in its saturday season", || async {
        let body = gw.admin_get("/admin/season").send().await.json();
        season_of(&body, "ap-southeast-1") == "saturday"
    })
    .await;
    let body = gw.admin_get("/admin/season").send().await.json();
    assert_eq!(body["regions"][1]["limit_multiplier"], 5.1);
    let metrics = String::from_utf8(gw.admin_get("/metrics").send().await.body.to_vec()).unwrap();
    for want in [
        "switchyard_season_active{region=\"ap-southeast-1\",season=\"saturday\"} 1",
        "switchyard_season_active{region=\"ap-southeast-1\",season=\"peak\"} 0",
        "switchyard_season_active{region=\"us-east-1\",season=\"peak\"} 1",
        "switchyard_season_active{region=\"sa-east-1\",season=\"saturday\"} 0",
    ] {
        assert!(metrics.contains(want), "want {want:?} in\n{metrics}");
    }
    // And requests from Singapore now get the saturday profile (100/0).
    let mut conn = RawConn::connect(gw.addr).await;
    for c in clients("sat", 200) {
        let resp = conn.exchange(&request("SG", Some(&c), "")).await;
        assert_eq!(pool_of(&resp), "v2", "client {c}");
    }
}

/// The first ```toml block of the README that holds `[calendar]`.
fn readme_example() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    readme
        .split("```toml\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .find(|b| b.contains("[calendar]"))
        .expect("a README example with [calendar]")
        .to_string()
}

#[tokio::test]
async fn readme_regional_example_runs() {
    let main = Upstream::spawn("v2").await;
    let beta = Upstream::spawn("v2.2-beta").await;
    let doc = format!(
        "{}\n{}",
        table()
            .version("v2", "current", "")
            .version("v2.2-beta", "beta", "")
            .pool("v2", "v2", &main)
            .pool("v2.2-beta", "v2.2-beta", &beta)
            .toml(),
        readme_example()
    );
    let clock = ManualClock::at("2026-07-15T12:00:00Z");
    let gw = TestGateway::start_with(doc, clock.options()).await;
    // (case, instant, us-east-1, eu-west-1, ap-southeast-1, au-southeast-2)
    let cases: &[(&str, &str, [Option<&str>; 4])] = &[
        (
            "a July Wednesday: northern peak",
            "2026-07-15T12:00:00Z",
            [Some("peak"), Some("peak"), None, None],
        ),
        (
            "a December Wednesday: southern peak",
            "2026-12-02T03:00:00Z",
            [None, None, Some("peak"), Some("peak")],
        ),
        (
            "a March Wednesday: only Australia",
            "2027-03-10T03:00:00Z",
            [None, None, None, Some("peak")],
        ),
        (
            "Saturday 09:00 New York, 23:00 Sydney (window ended)",
            "2026-07-18T13:00:00Z",
            [Some("saturday"), Some("saturday"), Some("saturday"), None],
        ),
        (
            "Christmas Eve",
            "2026-12-24T15:00:00Z",
            [
                Some("holiday"),
                Some("holiday"),
                Some("holiday"),
                Some("holiday"),
            ],
        ),
    ];
    for (case, at, want) in cases {
        clock.set(at);
        eventually(case, || async {
            let body = gw.admin_get("/admin/season").send().await.json();
            let got: Vec<Option<String>> = body["regions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["season"].as_str().map(str::to_string))
                .collect();
            got == want.map(|w| w.map(str::to_string))
        })
        .await;
    }
    let resp = gw
        .get("/api/orders")
        .header("x-client-id", "acme-weddings")
        .send()
        .await;
    assert_eq!(resp.status(), 200);
    assert!(resp.header("ratelimit").is_some(), "{:?}", resp.headers);
}
