//! The response cache as a client and an upstream see it: `x-cache`
//! HIT/MISS/STALE, what is never stored, what splits the key (method, path,
//! query, client version, `vary` headers), coalescing of concurrent misses,
//! stale-while-revalidate with one background refresh, purge on the admin
//! API, and the byte budget.

mod support;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use support::*;

/// One `v2` pool behind `/api` (cached with `cache` lines) and `/plain`
/// (not cached).
fn cached(up: &Upstream, cache: &str) -> Table {
    table()
        .version("v2", "current", "")
        .pool("v2", "v2", up)
        .route("api", "/api", "v2", &format!("[routes.cache]\n{cache}"))
        .route("plain", "/plain", "v2", "")
}

fn x_cache(r: &Resp) -> &str {
    r.header("x-cache").unwrap_or("(none)")
}

#[tokio::test]
async fn second_get_is_a_hit_and_the_upstream_is_called_once() {
    let up = Upstream::spawn("v2").await;
    let gw = TestGateway::start(cached(&up, "ttl_ms = 60000")).await;
    let first = gw.get("/api/items?page=1").send().await;
    assert_eq!(x_cache(&first), "MISS");
    assert_eq!(first.served_by(), "v2");
    let second = gw.get("/api/items?page=1").send().await;
    assert_eq!(x_cache(&second), "HIT");
    assert_eq!(second.body, first.body);
    assert_eq!(second.header("content-type"), Some("application/json"));
    assert_eq!(second.header("x-api-version-served"), Some("v2"));
    assert!(second.header("age").is_some());
    assert_ne!(
        second.header("x-request-id"),
        first.header("x-request-id"),
        "per-request headers are not cached"
    );
    assert_eq!(up.requests(), 1, "the hit never reached the upstream");

    // Query and method are in the key.
    assert_eq!(x_cache(&gw.get("/api/items?page=2").send().await), "MISS");
    let head = gw.request(Method::HEAD, "/api/items?page=1").send().await;
    assert_eq!(x_cache(&head), "MISS");
    let head = gw.request(Method::HEAD, "/api/items?page=1").send().await;
    assert_eq!(x_cache(&head), "HIT");
    assert!(head.body.is_empty());
    assert_eq!(up.requests(), 3);

    // Routes without a cache say nothing about one; POST is never cached.
    assert_eq!(x_cache(&gw.get("/plain/items").send().await), "(none)");
    let post = gw.request(Method::POST, "/api/items?page=1").send().await;
    assert_eq!(x_cache(&post), "(none)");
    assert_eq!(up.requests(), 5);

    let m = gw.metrics().await;
    let result = |r| {
        m.value(
            "switchyard_cache_requests_total",
            &[("route", "api"), ("result", r)],
        )
    };
    assert_eq!(result("hit"), Some(2.0), "{}", m.0);
    assert_eq!(result("miss"), Some(3.0));
    assert_eq!(result("stale"), Some(0.0));
    assert_eq!(m.value("switchyard_cache_entries", &[]), Some(3.0));
}

#[tokio::test]
async fn no_store_private_no_cache_set_cookie_and_errors_are_never_stored() {
    let up = Upstream::spawn("v2").await;
    for (path, reply) in [
        (
            "/api/no-store",
            Reply::json(200, "{}").header("cache-control", "no-store"),
        ),
        (
            "/api/private",
            Reply::json(200, "{}").header("cache-control", "private, max-age=60"),
        ),
        (
            "/api/no-cache",
            Reply::json(200, "{}").header("cache-control", "no-cache"),
        ),
        (
            "/api/cookie",
            Reply::json(200, "{}").header("set-cookie", "session=abc"),
        ),
        ("/api/error", Reply::json(500, "{}")),
        (
            "/api/zero",
            Reply::json(200, "{}").header("cache-control", "max-age=0"),
        ),
    ] {
        up.reply(Method::GET, path, reply);
    }
    let gw = TestGateway::start(cached(&up, "ttl_ms = 60000")).await;
    for path in [
        "/api/no-store",
        "/api/private",
        "/api/no-cache",
        "/api/cookie",
        "/api/error",
        "/api/zero",
    ] {
        for round in 0..2 {
            let r = gw.get(path).send().await;
            assert_eq!(x_cache(&r), "MISS", "{path}, round {round}");
        }
    }
    assert_eq!(up.requests(), 12, "every one went upstream");
    let r = gw.get("/api/cookie").send().await;
    assert_eq!(
        r.header("set-cookie"),
        Some("session=abc"),
        "passed through"
    );

    // With Authorization, only an explicitly shared answer is stored.
    up.reply(
        Method::GET,
        "/api/public",
        Reply::json(200, "{}").header("cache-control", "public, max-age=60"),
    );
    for (path, second) in [("/api/mine", "MISS"), ("/api/public", "HIT")] {
        for expect in ["MISS", second] {
            let r = gw
                .get(path)
                .header("authorization", "Bearer t")
                .send()
                .await;
            assert_eq!(x_cache(&r), expect, "{path}");
        }
    }
}

#[tokio::test]
async fn vary_headers_and_the_client_version_split_the_key() {
    let (v1, v2) = (Upstream::spawn("v1").await, Upstream::spawn("v2").await);
    v2.reply(
        Method::GET,
        "/api/greeting",
        Reply::json(200, "{}").header("vary", "Accept-Language"),
    );
    v2.reply(
        Method::GET,
        "/api/encoded",
        Reply::json(200, "{}").header("vary", "accept-encoding"),
    );
    let t = table()
        .version("v1", "stable", "")
        .version("v2", "current", "")
        .pool("v1", "v1", &v1)
        .pool("v2", "v2", &v2)
        .route(
            "api",
            "/api",
            "v2",
            "[routes.cache]\nttl_ms = 60000\nvary = [\"accept-language\"]",
        );
    let gw = TestGateway::start(t).await;
    let lang = |l: &'static str| gw.get("/api/greeting").header("accept-language", l).send();
    assert_eq!(x_cache(&lang("de").await), "MISS");
    assert_eq!(x_cache(&lang("de").await), "HIT");
    assert_eq!(x_cache(&lang("fr").await), "MISS");
    assert_eq!(x_cache(&gw.get("/api/greeting").send().await), "MISS");
    assert_eq!(x_cache(&lang("fr").await), "HIT");
    assert_eq!(v2.requests(), 3);

    // A Vary outside the key: not stored.
    for _ in 0..2 {
        assert_eq!(x_cache(&gw.get("/api/encoded").send().await), "MISS");
    }

    // Each client version has its own entry, from its own pool.
    for _ in 0..2 {
        for (version, pool) in [("1", "v1"), ("2", "v2")] {
            let r = gw
                .get("/api/orders")
                .header("x-api-version", version)
                .send()
                .await;
            assert_eq!(r.served_by(), pool);
        }
    }
    assert_eq!(v1.requests(), 1);
    let r = gw
        .get("/api/orders")
        .header("x-api-version", "1")
        .send()
        .await;
    assert_eq!(x_cache(&r), "HIT");
    assert_eq!(r.header("x-api-version"), Some("v1"));
    assert_eq!(r.header("x-api-version-served"), Some("v1"));
}

/// Sends `n` GETs at once on a shared client pool; returns (x-cache, body).
async fn concurrent_gets(gw: &TestGateway, path: &str, n: usize) -> Vec<(String, Bytes)> {
    let client = client();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let client = client.clone();
        let uri = format!("http://{}{path}", gw.addr);
        set.spawn(async move {
            let req = Request::get(uri).body(Full::new(Bytes::new())).unwrap();
            let resp = client.request(req).await.expect("response");
            let x = resp
                .headers()
                .get("x-cache")
                .map_or("(none)".to_string(), |v| v.to_str().unwrap().to_string());
            (x, resp.into_body().collect().await.unwrap().to_bytes())
        });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        out.push(r.expect("task"));
    }
    out
}

#[tokio::test]
async fn concurrent_misses_make_one_upstream_request() {
    let up = Upstream::spawn_slow("v2", std::time::Duration::from_millis(300)).await;
    let gw = TestGateway::start(cached(&up, "ttl_ms = 60000")).await;
    let answers = concurrent_gets(&gw, "/api/hot", 100).await;
    assert_eq!(up.requests(), 1, "one upstream request for 100 misses");
    let misses = answers.iter().filter(|(x, _)| x == "MISS").count();
    let hits = answers.iter().filter(|(x, _)| x == "HIT").count();
    assert_eq!((misses, hits), (1, 99));
    assert!(answers.iter().all(|(_, b)| b == &answers[0].1));

    // A response that may not be shared is not handed to the waiters: each
    // goes upstream itself.
    up.reply(
        Method::GET,
        "/api/mine",
        Reply::json(200, "{}").header("cache-control", "private"),
    );
    let answers = concurrent_gets(&gw, "/api/mine", 10).await;
    assert!(answers.iter().all(|(x, _)| x == "MISS"));
    assert_eq!(up.requests(), 11);
}

#[tokio::test]
async fn stale_while_revalidate_serves_stale_and_refreshes_once() {
    let up = Upstream::spawn("v2").await;
    up.reply(
        Method::GET,
        "/api/news",
        Reply::json(200, r#"{"edition":1}"#),
    );
    let gw = TestGateway::start(cached(
        &up,
        "ttl_ms = 1000\nstale_while_revalidate_ms = 60000",
    ))
    .await;
    let first = gw.get("/api/news").send().await;
    assert_eq!(x_cache(&first), "MISS");
    // The next edition, slow to produce: the refresh takes a while.
    up.reply(
        Method::GET,
        "/api/news",
        Reply::json(200, r#"{"edition":2}"#),
    );
    up.set_delay(std::time::Duration::from_millis(400));
    eventually("the entry goes stale", || async {
        x_cache(&gw.get("/api/news").send().await) == "STALE"
    })
    .await;
    for _ in 0..10 {
        let r = gw.get("/api/news").send().await;
        assert_eq!(x_cache(&r), "STALE", "served while the refresh runs");
        assert_eq!(r.json()["edition"], 1);
    }
    eventually("the refresh lands", || async {
        let r = gw.get("/api/news").send().await;
        x_cache(&r) == "HIT" && r.json()["edition"] == 2
    })
    .await;
    assert_eq!(up.requests(), 2, "one miss, one background refresh");
    let m = gw.metrics().await;
    assert!(
        m.value(
            "switchyard_cache_requests_total",
            &[("route", "api"), ("result", "stale")]
        )
        .is_some_and(|n| n >= 11.0)
    );
}

#[tokio::test]
async fn purge_by_route_and_path_prefix() {
    let up = Upstream::spawn("v2").await;
    let t = table()
        .server("admin_token = \"s3cret\"")
        .version("v2", "current", "")
        .pool("v2", "v2", &up)
        .route("a", "/a", "v2", "[routes.cache]\nttl_ms = 60000")
        .route("b", "/b", "v2", "[routes.cache]\nttl_ms = 60000");
    let gw = TestGateway::start(t).await;
    let paths = ["/a/1", "/a/2", "/b/x/1", "/b/y/1"];
    for p in paths {
        assert_eq!(x_cache(&gw.get(p).send().await), "MISS");
    }
    let purge = |body: &'static str| {
        gw.admin_request(Method::POST, "/admin/cache/purge")
            .header("authorization", "Bearer s3cret")
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let anonymous = gw
        .admin_request(Method::POST, "/admin/cache/purge")
        .body(r#"{"route":"a"}"#)
        .send()
        .await;
    assert_eq!(anonymous.status(), 401, "behind the admin token");

    let r = purge(r#"{"route":"a"}"#).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json()["purged"], 2);
    assert_eq!(x_cache(&gw.get("/a/1").send().await), "MISS");
    assert_eq!(x_cache(&gw.get("/b/x/1").send().await), "HIT");

    let r = purge(r#"{"path_prefix":"/b/x"}"#).await;
    assert_eq!(r.json()["purged"], 1);
    assert_eq!(x_cache(&gw.get("/b/x/1").send().await), "MISS");
    assert_eq!(x_cache(&gw.get("/b/y/1").send().await), "HIT");

    let r = purge(r#"{"route":"b","path_prefix":"/b/y"}"#).await;
    assert_eq!(r.json()["purged"], 1);
    let r = purge(r#"{"path_prefix":"/"}"#).await;
    assert_eq!(r.json()["purged"], 2, "everything left: /a/1, /b/x/1");

    assert_eq!(purge("{}").await.status(), 422);
    assert_eq!(purge("nope").await.status(), 400);
    let get = gw
        .admin_request(Method::GET, "/admin/cache/purge")
        .header("authorization", "Bearer s3cret")
        .send()
        .await;
    assert_eq!(get.status(), 405);
}

#[tokio::test]
async fn cache_stays_within_its_byte_budget() {
    let up = Upstream::spawn("v2").await;
    let body = format!(r#"{{"pad":"{}"}}"#, "x".repeat(8_000));
    for i in 0..40 {
        up.reply(
            Method::GET,
            &format!("/api/big/{i}"),
            Reply::json(200, body.clone()),
        );
    }
    let huge = format!(r#"{{"pad":"{}"}}"#, "x".repeat(20_000));
    up.reply(Method::GET, "/api/huge", Reply::json(200, huge));
    let t =
        cached(&up, "ttl_ms = 60000\nmax_entry_bytes = 16384").server("cache_max_bytes = 65536");
    let gw = TestGateway::start(t).await;
    for i in 0..40 {
        let r = gw.get(&format!("/api/big/{i}")).send().await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.body.len(), body.len());
    }
    let m = gw.metrics().await;
    let bytes = m.value("switchyard_cache_bytes", &[]).expect("cache bytes");
    let entries = m
        .value("switchyard_cache_entries", &[])
        .expect("cache entries");
    assert!(bytes > 0.0 && bytes <= 65_536.0, "{bytes} bytes");
    assert!(
        (1.0..8.0).contains(&entries),
        "{entries} entries of ~8 KB in 64 KiB"
    );

    // Larger than max_entry_bytes: passed through, never stored.
    for _ in 0..2 {
        let r = gw.get("/api/huge").send().await;
        assert_eq!(x_cache(&r), "MISS");
        assert!(r.body.len() > 20_000);
    }
}

#[tokio::test]
async fn the_active_seasons_multiplier_stretches_the_ttl() {
    let up = Upstream::spawn("v2").await;
    let t = table()
        .version("v2", "current", "")
        .pool("v2", "v2", &up)
        .route(
            "peak",
            "/peak",
            "v2",
            "[routes.cache]\nttl_ms = 300\nseason_ttl_multiplier = { peak = 20.0 }",
        )
        .route(
            "flat",
            "/flat",
            "v2",
            "[routes.cache]\nttl_ms = 300\nseason_ttl_multiplier = { winter = 20.0 }",
        );
    // One region; `peak` covers every month, so it is always active.
    let text = format!(
        "{}\n[calendar]\nregions = [{{ name = \"eu\", time_zone = \"Europe/London\" }}]\n\n[[calendar.seasons]]\nname = \"peak\"\nmonths = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]\n\n[[calendar.seasons]]\nname = \"winter\"\nmonths = [12]\ndates = [\"1999-12-24\"]\n",
        t.toml()
    );
    let gw = TestGateway::start(text).await;
    for path in ["/peak/a", "/flat/a"] {
        assert_eq!(x_cache(&gw.get(path).send().await), "MISS");
    }
    // Checking that something did not happen needs the time to pass.
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    assert_eq!(
        x_cache(&gw.get("/peak/a").send().await),
        "HIT",
        "300 ms x 20"
    );
    assert_eq!(
        x_cache(&gw.get("/flat/a").send().await),
        "MISS",
        "winter is not active"
    );
}
