//! Proxy hygiene as client and upstream see it: hop-by-hop headers,
//! forwarding headers, request ids, Host handling, and the edge hardening
//! hyper does not do by itself (framing conflicts, Host rules, underscores,
//! size limits), several of them sent as raw bytes.

mod support;

use http::Method;
use support::*;

/// One version, one upstream, a route on `/` and a `/small` route with a
/// 1 KiB body limit; `server` lines are added to `[server]`.
async fn gateway(server: &[&str]) -> (Upstream, TestGateway) {
    let up = Upstream::spawn("v1").await;
    let mut t = table()
        .version("v1", "current", "")
        .pool("v1", "v1", &up)
        .route("all", "/", "v1", "")
        .route("small", "/small", "v1", "max_body_bytes = 1024");
    for line in server {
        t = t.server(line);
    }
    let gw = TestGateway::start(t).await;
    (up, gw)
}

#[tokio::test]
async fn hop_by_hop_request_headers_are_stripped() {
    let (up, gw) = gateway(&[]).await;
    let resp = gw
        .get("/orders")
        .header("connection", "keep-alive, x-hop-secret")
        .header("x-hop-secret", "only for the first hop")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("te", "trailers")
        .header("trailer", "x-checksum")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("x-end-to-end", "kept")
        .send()
        .await;
    assert_eq!(resp.status(), 200);
    let seen = up.last();
    for h in [
        "connection",
        "x-hop-secret",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "proxy-authorization",
    ] {
        assert_eq!(seen.header(h), None, "{h} reached the upstream");
    }
    assert_eq!(seen.header("x-end-to-end"), Some("kept"));
}

#[tokio::test]
async fn hop_by_hop_response_headers_are_stripped() {
    let (up, gw) = gateway(&[]).await;
    up.respond_with_header("connection", "x-upstream-hop");
    up.respond_with_header("x-upstream-hop", "internal");
    up.respond_with_header("keep-alive", "timeout=90");
    up.respond_with_header("x-upstream-kept", "yes");
    let resp = gw.get("/orders").send().await;
    assert_eq!(resp.status(), 200);
    for h in ["x-upstream-hop", "keep-alive"] {
        assert_eq!(resp.header(h), None, "{h} reached the client");
    }
    assert_eq!(resp.header("x-upstream-kept"), Some("yes"));
}

#[tokio::test]
async fn x_forwarded_for_is_appended_to_the_clients_chain() {
    let (up, gw) = gateway(&[]).await;
    gw.get("/a").send().await;
    assert_eq!(up.last().header("x-forwarded-for"), Some("127.0.0.1"));

    gw.get("/b")
        .header("x-forwarded-for", "203.0.113.7, 198.51.100.2")
        .send()
        .await;
    assert_eq!(
        up.last().header_all("x-forwarded-for"),
        ["203.0.113.7, 198.51.100.2, 127.0.0.1"]
    );

    gw.get("/c")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-for", "198.51.100.2")
        .send()
        .await;
    assert_eq!(
        up.last().header_all("x-forwarded-for"),
        ["203.0.113.7, 198.51.100.2, 127.0.0.1"],
        "several lines become one chain"
    );
}

#[tokio::test]
async fn x_forwarded_proto_and_host_are_set() {
    let (up, gw) = gateway(&[]).await;
    gw.get("/orders")
        .header("host", "shop.example.com:8443")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "spoofed.example")
        .send()
        .await;
    let seen = up.last();
    assert_eq!(
        seen.header_all("x-forwarded-proto"),
        ["http"],
        "the client's claim is replaced"
    );
    assert_eq!(
        seen.header_all("x-forwarded-host"),
        ["shop.example.com:8443"]
    );
    assert_eq!(
        seen.header("host"),
        Some("shop.example.com:8443"),
        "Host is preserved by default"
    );
}

#[tokio::test]
async fn via_is_added_towards_upstream_and_client() {
    let (up, gw) = gateway(&[]).await;
    let resp = gw
        .get("/orders")
        .header("via", "1.0 corp-proxy")
        .send()
        .await;
    assert_eq!(
        up.last().header_all("via"),
        ["1.0 corp-proxy", "1.1 switchyard"]
    );
    assert_eq!(resp.header_all("via"), ["1.1 switchyard"]);
}

#[tokio::test]
async fn request_id_is_propagated() {
    let (up, gw) = gateway(&[]).await;
    let resp = gw
        .get("/orders")
        .header("x-request-id", "req-abc-123")
        .send()
        .await;
    assert_eq!(up.last().header("x-request-id"), Some("req-abc-123"));
    assert_eq!(resp.header("x-request-id"), Some("req-abc-123"));
}

#[tokio::test]
async fn request_id_is_generated_when_missing_or_unusable() {
    let (up, gw) = gateway(&[]).await;
    let is_id = |s: &str| s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit());
    let first = gw.get("/orders").send().await;
    let id = first
        .header("x-request-id")
        .expect("generated id")
        .to_string();
    assert!(is_id(&id), "{id:?}");
    assert_eq!(
        up.last().header("x-request-id"),
        Some(id.as_str()),
        "upstream and client see the same id"
    );
    let second = gw
        .get("/orders")
        .header("x-request-id", "has spaces in it")
        .send()
        .await;
    let id2 = second.header("x-request-id").unwrap();
    assert!(is_id(id2), "an unusable id is replaced: {id2:?}");
    assert_ne!(id, id2);

    // Problem answers carry it in the body too, so a report can be traced.
    let resp = gw
        .get("/orders")
        .header("x-api-version", "v9")
        .header("x-request-id", "trace-me")
        .send()
        .await;
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.header("x-request-id"), Some("trace-me"));
    assert_eq!(resp.problem()["request_id"], "trace-me");
}

#[tokio::test]
async fn host_is_preserved_or_rewritten_per_pool() {
    let keep = Upstream::spawn("keep").await;
    let endpoint = Upstream::spawn("endpoint").await;
    let fixed = Upstream::spawn("fixed").await;
    let to = |pool: &str| format!("[routes.split]\nv1 = [{{ pool = {pool:?}, weight = 100 }}]");
    let gw = TestGateway::start(
        table()
            .version("v1", "current", "")
            .pool("keep", "v1", &keep)
            .pool_at(
                "endpoint",
                "v1",
                &endpoint.endpoint(),
                "host_header = \"endpoint\"",
            )
            .pool_at(
                "fixed",
                "v1",
                &fixed.endpoint(),
                "host = \"orders.internal\"",
            )
            .route("keep", "/keep", "v1", &to("keep"))
            .route("endpoint", "/endpoint", "v1", &to("endpoint"))
            .route("fixed", "/fixed", "v1", &to("fixed")),
    )
    .await;
    for path in ["/keep", "/endpoint", "/fixed"] {
        let resp = gw.get(path).header("host", "api.example.com").send().await;
        assert_eq!(resp.status(), 200, "{path}");
    }
    assert_eq!(keep.last().header("host"), Some("api.example.com"));
    assert_eq!(
        endpoint.last().header("host"),
        Some(endpoint.endpoint().as_str())
    );
    assert_eq!(fixed.last().header("host"), Some("orders.internal"));
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_rejected() {
    let (up, gw) = gateway(&[]).await;
    for (case, framing) in [
        (
            "content-length first",
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        ),
        (
            "transfer-encoding first",
            "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        ),
    ] {
        let req = format!(
            "POST /orders HTTP/1.1\r\nHost: gw.test\r\n{framing}\r\n5\r\nhello\r\n0\r\n\r\n"
        );
        let resp = gw.raw(req.as_bytes()).await;
        assert_eq!(resp.status, 400, "case {case}");
        resp.problem();
    }
    assert_eq!(
        up.requests(),
        0,
        "ambiguous framing never reaches an upstream"
    );
}

#[tokio::test]
async fn duplicate_content_length_is_rejected() {
    let (up, gw) = gateway(&[]).await;
    for (case, lengths) in [
        ("same value twice", ["5", "5"]),
        ("conflicting", ["5", "6"]),
    ] {
        let req = format!(
            "POST /orders HTTP/1.1\r\nHost: gw.test\r\nContent-Length: {}\r\nContent-Length: {}\r\n\r\nhello",
            lengths[0], lengths[1]
        );
        let resp = gw.raw(req.as_bytes()).await;
        assert_eq!(resp.status, 400, "case {case}");
    }
    let req = "POST /orders HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 5, 5\r\n\r\nhello";
    assert_eq!(gw.raw(req.as_bytes()).await.status, 400, "a list value");
    assert_eq!(up.requests(), 0);
}

#[tokio::test]
async fn smuggled_request_behind_a_good_one_is_rejected() {
    let (up, gw) = gateway(&[]).await;
    // One connection: a good request, then one whose framing two proxies
    // could read differently.
    let stream = "GET /first HTTP/1.1\r\nHost: gw.test\r\n\r\n\
                  POST /second HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello";
    let responses = gw.raw_pipelined(stream.as_bytes(), 2).await;
    assert_eq!(responses[0].status, 200, "the good request is served");
    assert_eq!(responses[1].status, 400, "the smuggled one is refused");
    responses[1].problem();
    assert_eq!(
        responses[1].header("connection"),
        Some("close"),
        "nothing after it on the connection is trusted"
    );
    let seen: Vec<String> = up.received().into_iter().map(|r| r.uri).collect();
    assert_eq!(seen, ["/first"]);
}

#[tokio::test]
async fn missing_host_on_http11_is_rejected() {
    let (up, gw) = gateway(&[]).await;
    let resp = gw.raw(b"GET /orders HTTP/1.1\r\n\r\n").await;
    assert_eq!(resp.status, 400);
    resp.problem();
    assert_eq!(up.requests(), 0);
    // HTTP/1.0 has no Host requirement.
    let resp = gw.raw(b"GET /orders HTTP/1.0\r\n\r\n").await;
    assert_eq!(resp.status, 200);
}

#[tokio::test]
async fn duplicate_host_is_rejected() {
    let (up, gw) = gateway(&[]).await;
    let resp = gw
        .raw(b"GET /orders HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n")
        .await;
    assert_eq!(resp.status, 400);
    resp.problem();
    assert_eq!(up.requests(), 0);
}

#[tokio::test]
async fn header_name_with_underscore_is_rejected() {
    let (up, gw) = gateway(&[]).await;
    let resp = gw
        .raw(b"GET /orders HTTP/1.1\r\nHost: gw.test\r\nX_Api_Version: 1\r\n\r\n")
        .await;
    assert_eq!(resp.status, 400);
    resp.problem();
    assert_eq!(up.requests(), 0);
}

#[tokio::test]
async fn header_name_with_underscore_is_dropped_when_configured() {
    let (up, gw) = gateway(&["underscore_headers = \"drop\""]).await;
    let resp = gw
        .get("/orders")
        .header("x_client_id", "smuggled")
        .header("x-client-id", "honest")
        .send()
        .await;
    assert_eq!(resp.status(), 200);
    let seen = up.last();
    assert_eq!(seen.header("x_client_id"), None, "dropped");
    assert_eq!(seen.header("x-client-id"), Some("honest"));
}

#[tokio::test]
async fn header_name_with_underscore_is_forwarded_when_allowed() {
    let (up, gw) = gateway(&["underscore_headers = \"allow\""]).await;
    let resp = gw.get("/orders").header("x_legacy", "1").send().await;
    assert_eq!(resp.status(), 200);
    assert_eq!(up.last().header("x_legacy"), Some("1"));
}

#[tokio::test]
async fn uri_too_long_gets_414() {
    let (up, gw) = gateway(&["max_uri_bytes = 256"]).await;
    let resp = gw.get(&format!("/orders/{}", "a".repeat(300))).send().await;
    assert_eq!(resp.status(), 414);
    resp.problem();
    let resp = gw
        .get(&format!("/orders?q={}", "a".repeat(300)))
        .send()
        .await;
    assert_eq!(resp.status(), 414, "the query counts too");
    assert_eq!(up.requests(), 0);
    let resp = gw.get(&format!("/orders/{}", "a".repeat(200))).send().await;
    assert_eq!(resp.status(), 200, "under the limit");
}

#[tokio::test]
async fn too_many_headers_get_431() {
    let (up, gw) = gateway(&["max_headers = 20"]).await;
    let mut req = gw.get("/orders");
    for i in 0..30 {
        req = req.header(&format!("x-filler-{i}"), "1");
    }
    let resp = req.send().await;
    assert_eq!(resp.status(), 431);
    resp.problem();
    assert_eq!(up.requests(), 0);
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let (up, gw) = gateway(&["max_header_bytes = 4096"]).await;
    let resp = gw
        .get("/orders")
        .header("authorization", &format!("Bearer {}", "x".repeat(5000)))
        .send()
        .await;
    assert_eq!(resp.status(), 431);
    resp.problem();
    assert_eq!(up.requests(), 0);
}

#[tokio::test]
async fn declared_body_over_the_limit_gets_413() {
    let (up, gw) = gateway(&[]).await;
    let resp = gw
        .request(Method::POST, "/small/orders")
        .body(vec![b'x'; 2048])
        .send()
        .await;
    assert_eq!(resp.status(), 413);
    resp.problem();
    assert_eq!(up.requests(), 0, "refused before forwarding");
}

#[tokio::test]
async fn chunked_body_over_the_limit_gets_413() {
    let (_up, gw) = gateway(&[]).await;
    let chunk = format!("258\r\n{}\r\n", "y".repeat(600));
    let req = format!(
        "POST /small/orders HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}{chunk}{chunk}0\r\n\r\n"
    );
    let resp = gw.raw(req.as_bytes()).await;
    assert_eq!(resp.status, 413);
    resp.problem();
}

#[tokio::test]
async fn bodies_within_the_limit_reach_the_upstream_intact() {
    let (up, gw) = gateway(&[]).await;
    let body: Vec<u8> = (0..1000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let resp = gw
        .request(Method::POST, "/small/orders")
        .body(body.clone())
        .send()
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(up.last().body.as_deref(), Some(&body[..]));

    let req = "POST /small/orders HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let resp = gw.raw(req.as_bytes()).await;
    assert_eq!(resp.status, 200);
    assert_eq!(up.last().body.as_deref(), Some(&b"hello world"[..]));
}
