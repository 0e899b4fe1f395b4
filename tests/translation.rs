//! Version translation as a client sees it, end to end on real sockets: a
//! `v1` client served by a `v2` (or `v2.2-beta`) pool through the README's
//! WedSync example chain gets exactly the v1 shapes back (status, headers,
//! body) while the upstream gets exactly the target version's; bodies no
//! change touches stream byte for byte; bad bodies get their documented
//! 400/413/502 and are never forwarded or returned half-translated.
//!
//! The table is the README's `### Example: WedSync` block itself, so these
//! tests are also golden tests of the documented example.

mod support;

use http::Method;
use support::*;

/// The README: its WedSync example block is the table under test.
const README: &str = include_str!("../README.md");

/// The `[[versions]]` of the README's WedSync example, verbatim.
fn example_versions() -> String {
    let section = README
        .find("### Example: WedSync")
        .expect("README has the WedSync example");
    let start = section + README[section..].find("```toml\n").expect("a toml block") + 8;
    let len = README[start..].find("```").expect("the block ends");
    README[start..start + len].to_string()
}

// One event in each version's shape, as the upstreams store and the clients
// expect it. Translated bodies come out with sorted keys and no whitespace.
const V1_ANN: &str =
    r#"{"client_name":"Ann","id":3,"status":"booked","wedding_date":"2027-06-12"}"#;
const V1_BOB: &str =
    r#"{"client_name":"Bob","id":4,"status":"cancelled","wedding_date":"2027-09-01"}"#;
const V2_ANN: &str =
    r#"{"id":3,"client":{"name":"Ann"},"event":{"date":"2027-06-12"},"status":"confirmed"}"#;
const V2_BOB: &str =
    r#"{"id":4,"client":{"name":"Bob"},"event":{"date":"2027-09-01"},"status":"cancelled"}"#;
const BETA_ANN: &str = r#"{"id":3,"client":{"name":"Ann"},"event":{"date":"2027-06-12"},"status":"confirmed","currency":"EUR"}"#;
const BETA_BOB: &str = r#"{"id":4,"client":{"name":"Bob"},"event":{"date":"2027-09-01"},"status":"cancelled","currency":"CHF"}"#;
/// A v1 client's create body, with the whitespace a client may send.
const V1_NEW_ANN: &str =
    r#"{ "client_name": "Ann", "wedding_date": "2027-06-12", "status": "booked" }"#;
const V2_NEW_ANN: &str =
    r#"{"client":{"name":"Ann"},"event":{"date":"2027-06-12"},"status":"confirmed"}"#;
const BETA_NEW_ANN: &str = r#"{"client":{"name":"Ann"},"currency":"EUR","event":{"date":"2027-06-12"},"status":"confirmed"}"#;
const V2_NOT_FOUND: &str = r#"{"error":{"code":"not_found","message":"no event 99"}}"#;
const V1_NOT_FOUND: &str = r#"{"code":"not_found","message":"no event 99"}"#;

/// The WedSync API: a `v2` pool and a `v2.2-beta` pool, each answering the
/// example's endpoints in its own version, behind a gateway whose `/api/`
/// route sends every `v1` client to one of them.
struct WedSync {
    v2: Upstream,
    beta: Upstream,
    gw: TestGateway,
}

impl WedSync {
    /// `v1` clients go to `v1_pool` (`"v2"` or `"v2.2-beta"`); `route_extra`
    /// are extra `[[routes]]` keys (limits).
    async fn start(v1_pool: &str, route_extra: &str) -> WedSync {
        let v2 = Upstream::spawn("v2").await;
        v2.reply(
            Method::GET,
            "/api/events/3",
            Reply::json(200, V2_ANN)
                .header("etag", "\"ev3\"")
                .header("content-md5", "Q2hlY2sgSW50ZWdyaXR5IQ==")
                .header("x-event-id", "3"),
        );
        v2.reply(
            Method::GET,
            "/api/events",
            Reply::json(200, format!(r#"{{"items":[{V2_ANN},{V2_BOB}]}}"#)),
        );
        v2.reply(
            Method::POST,
            "/api/events",
            Reply::json(201, V2_ANN)
                .header("location", "/api/events/3")
                .header("etag", "\"ev3\""),
        );
        v2.reply(
            Method::GET,
            "/api/events/99",
            Reply::json(404, V2_NOT_FOUND),
        );
        let beta = Upstream::spawn("v2.2-beta").await;
        beta.reply(Method::GET, "/api/events/3", Reply::json(200, BETA_ANN));
        beta.reply(
            Method::GET,
            "/api/events",
            Reply::json(200, format!(r#"{{"items":[{BETA_ANN},{BETA_BOB}]}}"#)),
        );
        beta.reply(Method::POST, "/api/events", Reply::json(201, BETA_ANN));
        beta.reply(Method::PUT, "/api/events/3", Reply::json(200, BETA_ANN));
        beta.reply(
            Method::GET,
            "/api/events/99",
            Reply::json(404, V2_NOT_FOUND),
        );
        let text = format!(
            "{versions}\n{rest}[routes.split]\nv1 = [{{ pool = {v1_pool:?}, weight = 100 }}]\n",
            versions = example_versions(),
            rest = table()
                .pool("v2", "v2", &v2)
                .pool("v2.2-beta", "v2.2-beta", &beta)
                .route("api", "/api/", "v2", route_extra)
                .toml(),
        );
        let gw = TestGateway::start(text).await;
        WedSync { v2, beta, gw }
    }

    /// A request from a `v1` client.
    fn v1(&self, method: Method, path: &str) -> Req<'_> {
        self.gw.request(method, path).header("x-api-version", "v1")
    }

    /// A v1 JSON POST to `/api/weddings`.
    fn v1_create(&self, body: impl Into<bytes::Bytes>) -> Req<'_> {
        self.v1(Method::POST, "/api/weddings")
            .header("content-type", "application/json")
            .body(body)
    }

    /// The gateway still translates an ordinary read after whatever came
    /// before.
    async fn assert_still_serves(&self) {
        let resp = self.v1(Method::GET, "/api/weddings/3").send().await;
        assert_eq!(resp.status(), 200, "{}", text(&resp.body));
        assert_eq!(text(&resp.body), V1_ANN, "the gateway still translates");
    }
}

fn text(b: &[u8]) -> &str {
    std::str::from_utf8(b).expect("utf-8 body")
}

/// Checks a problem answer's status, `type` slug and `reason`.
fn assert_problem(resp: &Resp, status: u16, kind: &str, reason: Option<&str>) {
    assert_eq!(resp.status(), status, "{}", text(&resp.body));
    let p = resp.problem();
    assert!(
        p["type"].as_str().unwrap().ends_with(&format!("/{kind}")),
        "type {} is not {kind}",
        p["type"]
    );
    if let Some(reason) = reason {
        assert_eq!(p["reason"], reason, "{p}");
    }
}

/// A body's `Content-Length` is its real length.
fn assert_framed(resp: &Resp) {
    assert_eq!(
        resp.header("content-length"),
        Some(resp.body.len().to_string().as_str()),
        "content-length of {:?}",
        text(&resp.body)
    );
    assert_eq!(resp.header("transfer-encoding"), None);
}

// ---------------------------------------------------------------------------
// v1 shapes from a v2 pool

#[tokio::test]
async fn v1_client_reads_one_wedding_from_a_v2_pool_in_v1_shape() {
    let ws = WedSync::start("v2", "").await;
    let resp = ws
        .v1(Method::GET, "/api/weddings/3")
        .header("x-wedding-id", "3")
        .header("accept-encoding", "gzip")
        .send()
        .await;

    assert_eq!(resp.status(), 200);
    assert_eq!(text(&resp.body), V1_ANN);
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert_eq!(
        resp.header("x-wedding-id"),
        Some("3"),
        "header renamed down"
    );
    assert_eq!(resp.header("x-event-id"), None, "no v2 header leaks");
    assert_eq!(resp.header("x-api-version"), Some("v1"));
    assert_eq!(resp.header("x-api-version-served"), Some("v2"));

    let up = ws.v2.last();
    assert_eq!(up.method, Method::GET);
    assert_eq!(up.uri, "/api/events/3", "weddings are events in v2");
    assert_eq!(up.header("x-api-version"), Some("v2"), "asked to speak v2");
    assert_eq!(up.header("accept-encoding"), Some("identity"));
    assert_eq!(up.header("x-event-id"), Some("3"), "header renamed up");
    assert_eq!(up.header("x-wedding-id"), None);
    assert_eq!(ws.beta.requests(), 0);
}

#[tokio::test]
async fn v1_client_lists_weddings_from_a_v2_pool_as_a_bare_array() {
    let ws = WedSync::start("v2", "").await;
    let resp = ws.v1(Method::GET, "/api/weddings?limit=2").send().await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        text(&resp.body),
        format!("[{V1_ANN},{V1_BOB}]"),
        "unwrapped, every element renamed, statuses mapped (unknown ones pass)"
    );
    assert_framed(&resp);
    assert_eq!(ws.v2.last().uri, "/api/events?limit=2", "query kept");

    ws.v2.reply(
        Method::GET,
        "/api/events",
        Reply::json(200, r#"{"items":[]}"#),
    );
    let resp = ws.v1(Method::GET, "/api/weddings").send().await;
    assert_eq!(text(&resp.body), "[]", "an empty list too");
}

#[tokio::test]
async fn v1_client_creates_a_wedding_on_a_v2_pool() {
    let ws = WedSync::start("v2", "").await;
    let resp = ws.v1_create(V1_NEW_ANN).send().await;

    assert_eq!(resp.status(), 200, "v2's 201 is v1's 200");
    assert_eq!(text(&resp.body), V1_ANN);
    assert_eq!(
        resp.header("location"),
        Some("/api/weddings/3"),
        "Location rewritten back to the v1 path"
    );
    assert_eq!(resp.header("etag"), None, "the v2 body's ETag is stale");
    assert_framed(&resp);

    let up = ws.v2.last();
    assert_eq!(
        (up.method.as_str(), up.uri.as_str()),
        ("POST", "/api/events")
    );
    let sent = up.body.clone().expect("body read");
    assert_eq!(text(&sent), V2_NEW_ANN, "the upstream gets the v2 shape");
    assert_eq!(
        up.header("content-length"),
        Some(sent.len().to_string().as_str())
    );
    assert_eq!(up.header("content-type"), Some("application/json"));
    assert_eq!(up.header("x-api-version"), Some("v2"));
}

#[tokio::test]
async fn v1_client_gets_v2_error_bodies_in_v1_shape() {
    let ws = WedSync::start("v2", "").await;
    let resp = ws.v1(Method::GET, "/api/weddings/99").send().await;
    assert_eq!(resp.status(), 404);
    assert_eq!(text(&resp.body), V1_NOT_FOUND, "the error is flattened");
    assert_framed(&resp);

    // An error to a create: the request still goes up translated, the
    // error comes down flat, and only 201 is mapped (to 200).
    ws.v2.reply(
        Method::POST,
        "/api/events",
        Reply::json(
            422,
            r#"{"error":{"code":"invalid","message":"date in the past"}}"#,
        ),
    );
    let resp = ws.v1_create(V1_NEW_ANN).send().await;
    assert_eq!(resp.status(), 422);
    assert_eq!(
        text(&resp.body),
        r#"{"code":"invalid","message":"date in the past"}"#
    );
    assert_eq!(text(&ws.v2.last().body.unwrap()), V2_NEW_ANN);
}

#[tokio::test]
async fn v1_client_deletes_with_a_bodiless_204_from_a_v2_pool() {
    let ws = WedSync::start("v2", "").await;
    ws.v2
        .reply(Method::DELETE, "/api/events/3", Reply::empty(204));
    let resp = ws.v1(Method::DELETE, "/api/weddings/3").send().await;
    assert_eq!(resp.status(), 204);
    assert!(resp.body.is_empty());
    let up = ws.v2.last();
    assert_eq!(
        (up.method.as_str(), up.uri.as_str()),
        ("DELETE", "/api/events/3")
    );
}

// ---------------------------------------------------------------------------
// The chain v1 -> v2 -> v2.2-beta

#[tokio::test]
async fn v1_client_on_the_beta_pool_goes_through_v2_both_ways() {
    let ws = WedSync::start("v2.2-beta", "").await;

    // The README's worked example, both directions.
    let resp = ws.v1_create(V1_NEW_ANN).send().await;
    assert_eq!(resp.status(), 200);
    assert_eq!(text(&resp.body), V1_ANN, "currency dropped on the way down");
    let up = ws.beta.last();
    assert_eq!(
        (up.method.as_str(), up.uri.as_str()),
        ("POST", "/api/events")
    );
    assert_eq!(up.header("x-api-version"), Some("v2.2-beta"));
    assert_eq!(
        text(&up.body.unwrap()),
        BETA_NEW_ANN,
        "v2's shape plus the currency default"
    );

    let resp = ws.v1(Method::GET, "/api/weddings/3").send().await;
    assert_eq!(text(&resp.body), V1_ANN);
    assert_eq!(ws.beta.last().uri, "/api/events/3");

    let resp = ws.v1(Method::GET, "/api/weddings").send().await;
    assert_eq!(
        text(&resp.body),
        format!("[{V1_ANN},{V1_BOB}]"),
        "every element's currency dropped, whatever its value"
    );

    let resp = ws
        .v1(Method::PUT, "/api/weddings/3")
        .header("content-type", "application/json")
        .body(V1_NEW_ANN)
        .send()
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(text(&resp.body), V1_ANN);
    let up = ws.beta.last();
    assert_eq!(
        (up.method.as_str(), up.uri.as_str()),
        ("PUT", "/api/events/3")
    );
    assert_eq!(text(&up.body.unwrap()), BETA_NEW_ANN);

    let resp = ws.v1(Method::GET, "/api/weddings/99").send().await;
    assert_eq!(resp.status(), 404);
    assert_eq!(text(&resp.body), V1_NOT_FOUND);

    assert_eq!(ws.v2.requests(), 0, "v2 is a step of the chain, not a hop");
}

// ---------------------------------------------------------------------------
// Framing and bodies that are not translated

#[tokio::test]
async fn translated_bodies_are_framed_by_their_new_length_without_validators() {
    let ws = WedSync::start("v2", "").await;
    // Raw bytes: a wrong Content-Length would hang or cut the read.
    let resp = ws
        .gw
        .raw(b"GET /api/weddings/3 HTTP/1.1\r\nHost: gw.test\r\nx-api-version: v1\r\n\r\n")
        .await;
    assert_eq!(resp.status, 200);
    assert_eq!(text(&resp.body), V1_ANN);
    assert_eq!(
        resp.header("content-length"),
        Some(V1_ANN.len().to_string().as_str())
    );
    assert_ne!(V1_ANN.len(), V2_ANN.len(), "the length did change");
    assert_eq!(resp.header("transfer-encoding"), None);
    assert_eq!(resp.header("etag"), None);
    assert_eq!(resp.header("content-md5"), None);

    // A chunked request body is translated and sent with a length.
    let body = V1_NEW_ANN.as_bytes();
    let mut req = format!(
        "POST /api/weddings HTTP/1.1\r\nHost: gw.test\r\nx-api-version: v1\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req.extend_from_slice(b"\r\n0\r\n\r\n");
    let resp = ws.gw.raw(&req).await;
    assert_eq!(resp.status, 200, "{}", text(&resp.body));
    let up = ws.v2.last();
    assert_eq!(text(up.body.as_ref().unwrap()), V2_NEW_ANN);
    assert_eq!(
        up.header("content-length"),
        Some(V2_NEW_ANN.len().to_string().as_str())
    );
    assert_eq!(up.header("transfer-encoding"), None);
}

#[tokio::test]
async fn non_json_bodies_stream_through_untouched_past_the_translation_limit() {
    let ws = WedSync::start("v2", "translate_max_body_bytes = 1024").await;
    let big = "client_name=Ann&wedding_date=2027-06-12\n".repeat(200);
    assert!(big.len() > 1024);
    ws.v2.reply(
        Method::POST,
        "/api/events",
        Reply::raw(201, "text/plain", big.clone()).header("etag", "\"plain\""),
    );
    let resp = ws
        .v1(Method::POST, "/api/weddings")
        .header("content-type", "text/plain")
        .body(big.clone())
        .send()
        .await;
    assert_eq!(resp.status(), 200, "the status is still mapped");
    assert_eq!(text(&resp.body), big, "response body untouched");
    assert_eq!(resp.header("etag"), Some("\"plain\""), "and its ETag kept");
    assert_eq!(resp.header("content-type"), Some("text/plain"));
    let up = ws.v2.last();
    assert_eq!(up.uri, "/api/events", "the path is still rewritten");
    assert_eq!(text(&up.body.unwrap()), big, "request body untouched");
}

#[tokio::test]
async fn same_version_passes_json_bodies_byte_for_byte() {
    let ws = WedSync::start("v2", "").await;
    let sent =
        "{ \"status\" : \"confirmed\",\n  \"client\": {\"name\": \"Ann\"}, \"amount\": 1.50 }\n";
    let answer = "{\"z\": 1,   \"a\": [1.0, 2e3],\n \"client_name\": \"x\" }";
    ws.v2.reply(
        Method::POST,
        "/api/events",
        Reply::json(201, answer).header("etag", "\"same\""),
    );
    let resp = ws
        .gw
        .request(Method::POST, "/api/events")
        .header("x-api-version", "v2")
        .header("content-type", "application/json")
        .body(sent)
        .send()
        .await;
    assert_eq!(resp.status(), 201, "no plan, no status mapping");
    assert_eq!(text(&resp.body), answer);
    assert_eq!(resp.header("etag"), Some("\"same\""));
    assert_eq!(text(&ws.v2.last().body.unwrap()), sent);
}

#[tokio::test]
async fn json_bodies_no_change_touches_pass_byte_for_byte_across_versions() {
    // `/api/events/3/photos` is outside every body change's paths.
    let ws = WedSync::start("v2", "").await;
    let sent = "{ \"caption\" : \"first dance\", \"status\": \"booked\" }";
    let answer = "[ {\"url\": \"/p/1.jpg\",  \"status\": \"confirmed\"} ]";
    ws.v2.reply(
        Method::POST,
        "/api/events/3/photos",
        Reply::json(200, answer).header("etag", "\"ph\""),
    );
    let resp = ws
        .v1(Method::POST, "/api/weddings/3/photos")
        .header("content-type", "application/json")
        .body(sent)
        .send()
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(text(&resp.body), answer);
    assert_eq!(resp.header("etag"), Some("\"ph\""));
    let up = ws.v2.last();
    assert_eq!(up.uri, "/api/events/3/photos");
    assert_eq!(text(&up.body.unwrap()), sent);
}

#[tokio::test]
async fn empty_json_bodies_are_no_body_in_both_directions() {
    let ws = WedSync::start("v2", "").await;
    // A create answered 201 with `Content-Length: 0` and a JSON type.
    ws.v2
        .reply(Method::POST, "/api/events", Reply::json(201, ""));
    let resp = ws.v1_create("").send().await;
    assert_eq!(resp.status(), 200, "{}", text(&resp.body));
    assert!(resp.body.is_empty());
    assert_eq!(ws.v2.requests(), 1);

    // A chunked request body with no data at all.
    let raw = ws
        .gw
        .raw(
            b"POST /api/weddings HTTP/1.1\r\nHost: gw.test\r\nx-api-version: v1\r\n\
              content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        )
        .await;
    assert_eq!(raw.status, 200, "{}", String::from_utf8_lossy(&raw.body));
    assert!(raw.body.is_empty());
    let up = ws.v2.last();
    assert_eq!(up.uri, "/api/events");
    assert_eq!(up.body.as_deref(), Some(&b""[..]));
}

#[tokio::test]
async fn head_answer_has_no_stale_length_or_etag_of_the_untranslated_body() {
    let ws = WedSync::start("v2", "").await;
    ws.v2.reply(
        Method::HEAD,
        "/api/events/3",
        Reply::json(200, V2_ANN).header("etag", "\"ev3\""),
    );
    let resp = ws.v1(Method::HEAD, "/api/weddings/3").send().await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.header("etag"), None, "GET would not have it either");
    assert_ne!(
        resp.header("content-length"),
        Some(V2_ANN.len().to_string().as_str()),
        "the length of the v2 body is not the v1 body's"
    );
    assert_eq!(ws.v2.last().uri, "/api/events/3");
}

// ---------------------------------------------------------------------------
// Bad input

#[tokio::test]
async fn oversized_request_body_gets_413_and_is_not_forwarded() {
    let ws = WedSync::start("v2", "translate_max_body_bytes = 1024").await;
    let big = format!(
        r#"{{"client_name":"{}","wedding_date":"2027-06-12","status":"booked"}}"#,
        "A".repeat(2000)
    );
    let resp = ws.v1_create(big.clone()).send().await;
    assert_problem(&resp, 413, "body-too-large", None);

    // Without a Content-Length the limit is found while reading.
    let mut req = format!(
        "POST /api/weddings HTTP/1.1\r\nHost: gw.test\r\nx-api-version: v1\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n",
        big.len()
    )
    .into_bytes();
    req.extend_from_slice(big.as_bytes());
    req.extend_from_slice(b"\r\n0\r\n\r\n");
    let raw = ws.gw.raw(&req).await;
    assert_eq!(raw.status, 413);
    assert!(
        raw.problem()["type"]
            .as_str()
            .unwrap()
            .ends_with("/body-too-large")
    );

    assert_eq!(ws.v2.requests(), 0, "nothing was forwarded");
    let resp = ws.v1_create(V1_NEW_ANN).send().await;
    assert_eq!(resp.status(), 200, "a body under the limit still goes");
    ws.assert_still_serves().await;
}

#[tokio::test]
async fn oversized_upstream_response_gets_502() {
    let ws = WedSync::start("v2", "translate_max_body_bytes = 1024").await;
    let big = format!(
        r#"{{"id":5,"client":{{"name":"{}"}},"status":"confirmed"}}"#,
        "A".repeat(2000)
    );
    ws.v2
        .reply(Method::GET, "/api/events/5", Reply::json(200, big));
    let resp = ws.v1(Method::GET, "/api/weddings/5").send().await;
    assert_problem(&resp, 502, "response-not-translatable", Some("too_large"));
    ws.assert_still_serves().await;
}

#[tokio::test]
async fn invalid_json_request_gets_400_and_is_not_forwarded() {
    let ws = WedSync::start("v2", "").await;
    let resp = ws.v1_create(r#"{"client_name": "Ann","#).send().await;
    assert_problem(&resp, 400, "request-not-translatable", Some("invalid_json"));
    let p = resp.problem();
    assert_eq!(
        (p["from_version"].as_str(), p["to_version"].as_str()),
        (Some("v1"), Some("v2"))
    );
    assert_eq!(ws.v2.requests(), 0);
    ws.assert_still_serves().await;
}

#[tokio::test]
async fn duplicate_key_in_request_gets_400_and_is_not_forwarded() {
    let ws = WedSync::start("v2", "").await;
    let resp = ws
        .v1_create(r#"{"client_name":"Ann","wedding_date":"2027-06-12","client_name":"Bob"}"#)
        .send()
        .await;
    assert_problem(
        &resp,
        400,
        "request-not-translatable",
        Some("duplicate_key"),
    );
    assert_eq!(ws.v2.requests(), 0);
    ws.assert_still_serves().await;
}

#[tokio::test]
async fn duplicate_key_in_upstream_response_gets_502() {
    let ws = WedSync::start("v2", "").await;
    ws.v2.reply(
        Method::GET,
        "/api/events/5",
        Reply::json(
            200,
            r#"{"id":5,"client":{"name":"Ann","name":"Bob"},"status":"confirmed"}"#,
        ),
    );
    let resp = ws.v1(Method::GET, "/api/weddings/5").send().await;
    assert_problem(
        &resp,
        502,
        "response-not-translatable",
        Some("duplicate_key"),
    );
    ws.assert_still_serves().await;
}

#[tokio::test]
async fn ten_thousand_deep_request_gets_400_too_deep() {
    let ws = WedSync::start("v2", "").await;
    let deep = format!(
        r#"{{"client_name":{}{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let resp = ws.v1_create(deep).send().await;
    assert_problem(&resp, 400, "request-not-translatable", Some("too_deep"));
    assert_eq!(ws.v2.requests(), 0);
    ws.assert_still_serves().await;
}

#[tokio::test]
async fn ten_thousand_deep_upstream_response_gets_502() {
    let ws = WedSync::start("v2", "").await;
    let deep = format!(
        r#"{{"id":5,"client":{}{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    ws.v2
        .reply(Method::GET, "/api/events/5", Reply::json(200, deep));
    let resp = ws.v1(Method::GET, "/api/weddings/5").send().await;
    assert_problem(&resp, 502, "response-not-translatable", Some("too_deep"));
    ws.assert_still_serves().await;
}

#[tokio::test]
async fn upstream_response_declared_json_but_not_json_gets_502() {
    let ws = WedSync::start("v2", "").await;
    ws.v2
        .reply(Method::GET, "/api/events/5", Reply::json(200, "not json"));
    let resp = ws.v1(Method::GET, "/api/weddings/5").send().await;
    assert_problem(
        &resp,
        502,
        "response-not-translatable",
        Some("invalid_json"),
    );
    assert!(
        !text(&resp.body).contains("not json"),
        "nothing of it leaks"
    );
    ws.assert_still_serves().await;
}

#[tokio::test]
async fn compressed_upstream_response_gets_502() {
    let ws = WedSync::start("v2", "").await;
    ws.v2.reply(
        Method::GET,
        "/api/events/5",
        Reply::json(200, V2_ANN).header("content-encoding", "gzip"),
    );
    let resp = ws.v1(Method::GET, "/api/weddings/5").send().await;
    assert_problem(&resp, 502, "response-not-translatable", None);
    ws.assert_still_serves().await;
}

#[tokio::test]
async fn compressed_request_body_gets_400_and_is_not_forwarded() {
    let ws = WedSync::start("v2", "").await;
    let gzip_magic: &[u8] = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03";
    let resp = ws
        .v1_create(gzip_magic)
        .header("content-encoding", "gzip")
        .send()
        .await;
    assert_problem(&resp, 400, "request-not-translatable", Some("invalid_json"));
    assert_eq!(ws.v2.requests(), 0);
    ws.assert_still_serves().await;
}

#[tokio::test]
async fn request_a_change_refuses_midway_gets_400_and_is_not_forwarded() {
    // The first rename succeeds; the second would overwrite `event.date`.
    let ws = WedSync::start("v2", "").await;
    let resp = ws
        .v1_create(
            r#"{"client_name":"Ann","wedding_date":"2027-06-12","event":{"date":"1999-01-01"}}"#,
        )
        .send()
        .await;
    assert_problem(&resp, 400, "request-not-translatable", Some("collision"));
    assert_eq!(ws.v2.requests(), 0, "no half-translated request");
    ws.assert_still_serves().await;
}

#[tokio::test]
async fn response_a_change_refuses_midway_gets_502_not_half_a_body() {
    // `status` maps down first; then `client.name` would overwrite `client_name`.
    let ws = WedSync::start("v2", "").await;
    ws.v2.reply(
        Method::GET,
        "/api/events/5",
        Reply::json(
            200,
            r#"{"id":5,"status":"confirmed","client":{"name":"Ann"},"client_name":"legacy"}"#,
        )
        .header("etag", "\"ev5\""),
    );
    let resp = ws.v1(Method::GET, "/api/weddings/5").send().await;
    assert_problem(&resp, 502, "response-not-translatable", Some("collision"));
    assert!(!text(&resp.body).contains("booked"), "{}", text(&resp.body));
    assert_eq!(resp.header("etag"), None);
    ws.assert_still_serves().await;
}

#[tokio::test]
async fn numbers_pass_through_translation_exactly() {
    let ws = WedSync::start("v2", "").await;
    let resp = ws
        .v1_create(
            r#"{"client_name":"Ann","wedding_date":"2027-06-12","status":"booked","deposit":12345678901234567890123,"rate":1e-400,"fee":0.1000000000000000055511151231257827}"#,
        )
        .send()
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        text(&ws.v2.last().body.unwrap()),
        r#"{"client":{"name":"Ann"},"deposit":12345678901234567890123,"event":{"date":"2027-06-12"},"fee":0.1000000000000000055511151231257827,"rate":1e-400,"status":"confirmed"}"#
    );

    ws.v2.reply(
        Method::GET,
        "/api/events/5",
        Reply::json(
            200,
            r#"{"id":18446744073709551617,"client":{"name":"Ann"},"total":-98765432109876543210.000001,"tiny":1e-400}"#,
        ),
    );
    let resp = ws.v1(Method::GET, "/api/weddings/5").send().await;
    assert_eq!(
        text(&resp.body),
        r#"{"client_name":"Ann","id":18446744073709551617,"tiny":1e-400,"total":-98765432109876543210.000001}"#
    );
}
