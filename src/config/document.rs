//! The routing-table document as operators write it (TOML in a file, later
//! the same schema from Redis). Plain serde structs: no behaviour beyond
//! defaults. Every field's `///` line is what the README's config reference
//! quotes, so keep them in step (`tests/readme.rs` checks the key names).

use serde::{Deserialize, Serialize};

/// The whole document: process settings (read once at start) plus the
/// routing table (versions, pools, routes) that can be reloaded.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    /// Process settings: listeners, limits, shutdown. Read once at start;
    /// a reload ignores changes here.
    #[serde(default)]
    pub server: ServerSettings,
    /// Default version-detection settings for every route.
    #[serde(default)]
    pub detection: DetectionSettings,
    /// The API versions the platform serves.
    #[serde(default)]
    pub versions: Vec<VersionDoc>,
    /// Upstream pools; each serves one API version.
    #[serde(default)]
    pub pools: Vec<PoolDoc>,
    /// Routes, matched by host and longest path prefix.
    #[serde(default)]
    pub routes: Vec<RouteDoc>,
    /// Per-client version pins: client id (from `detection.client_header`) -> version.
    #[serde(default)]
    pub pins: std::collections::BTreeMap<String, String>,
    /// Change-freeze windows: routing pushes are refused (or deferred) inside them.
    #[serde(default)]
    pub freezes: Vec<crate::control::freeze::FreezeDoc>,
    /// The season calendar: regions, how a request's region is found, and
    /// named seasons that select weight profiles and quota multipliers.
    #[serde(default)]
    pub calendar: CalendarDoc,
    /// Rate-limit policies (routes name them in `limits`) and who may set
    /// `x-forwarded-for`.
    #[serde(default)]
    pub rate_limits: RateLimitsDoc,
}

/// Process settings. Each can be overridden by a `SWITCHYARD_*` env var or
/// a CLI flag.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Proxy listener address. Default `127.0.0.1:8080`.
    pub listen: String,
    /// Admin listener address (health, table). Default `127.0.0.1:9901`.
    pub admin_listen: String,
    /// How long in-flight requests may run after SIGINT/SIGTERM, in ms. Default 10000.
    pub grace_period_ms: u64,
    /// Time allowed to read a request's headers (slowloris guard), in ms. Default 10000.
    pub header_read_timeout_ms: u64,
    /// Largest request head (request line plus headers) in bytes; more gets 431. Default 16384.
    pub max_header_bytes: usize,
    /// Most request headers; more gets 431. Default 100.
    pub max_headers: usize,
    /// Longest request URI (path and query) in bytes; more gets 414. Default 8192.
    pub max_uri_bytes: usize,
    /// Request header names containing `_`: `reject` (400), `drop` or `allow`. Default `reject`.
    pub underscore_headers: UnderscoreHeaders,
    /// Answer `/health/live` and `/health/ready` on the proxy listener too. Default true.
    pub health_on_proxy: bool,
    /// Proxy worker threads, each a single-threaded runtime with its own
    /// `SO_REUSEPORT` listener; 0 means one per CPU. Default 0.
    pub workers: usize,
    /// With several workers, hand each new connection to the worker with
    /// the fewest open (of the listener's) when that has fewer than the one
    /// whose `SO_REUSEPORT` socket it arrived on. Default true.
    pub balance_connections: bool,
    /// Pin each proxy worker thread to a CPU of its own: `auto` pins worker
    /// `i` to the `i`-th CPU the process may run on when there are exactly
    /// as many such CPUs as workers (a dedicated machine, or a container
    /// given whole CPUs), and leaves the workers to the scheduler otherwise
    /// (a CPU quota over a larger CPU set); `off` never pins. Default `auto`.
    pub worker_cpu_affinity: CpuAffinity,
    /// Serve plain HTTP/1.1 requests (`GET`, `POST`, `PUT`, `PATCH`,
    /// `DELETE` with no body or a small `Content-Length` body that arrived
    /// with its head) on the gateway's lean path rather than hyper's;
    /// everything else on a connection goes to hyper from its first such
    /// request. Default true.
    pub lean_http1: bool,
    /// Redis URL holding the live routing table (`redis://host:6379/0`, or
    /// `redis-cluster://h1:p1,h2:p2`); unset = this file only.
    pub redis_url: Option<String>,
    /// Prefix of the Redis keys and channel. Default `switchyard:`.
    pub redis_prefix: String,
    /// How often the gateway polls the Redis revision (pub/sub can miss
    /// messages), in ms. Default 2000.
    pub redis_poll_ms: u64,
    /// Bearer token for `/admin/*` (health stays open). Prefer the
    /// `SWITCHYARD_ADMIN_TOKEN` env var; unset = admin API open (loopback only by default).
    pub admin_token: Option<String>,
    /// Byte budget of the response cache shared by every route with a
    /// `cache` table (bodies, headers and keys are weighed). Default 67108864 (64 MiB).
    pub cache_max_bytes: u64,
    /// Clients named in the version-usage metrics (`switchyard_client_requests`),
    /// busiest first; the rest are summed as `other`. Default 20.
    pub metrics_top_clients: usize,
    /// TLS termination on a second listener (`[server.tls]`); unset = plain HTTP only.
    pub tls: Option<TlsSettings>,
    /// Open client connections per listener (plain and TLS each); past it a
    /// new connection gets one 503 and is closed. 0 = no limit. Default 20000.
    pub max_connections: usize,
    /// Requests being handled per listener; past it a request gets 503 with
    /// `Retry-After`. 0 = no limit. Default 10000.
    pub max_requests_in_flight: usize,
    /// HTTP/2 streams one client connection may have open at once. Default 256.
    pub h2_max_concurrent_streams: u32,
    /// A client connection with no request in flight (HTTP/1.1 keep-alive
    /// between requests, h2 with no open stream) for this long is closed
    /// (h2: GOAWAY), in ms; 0 = never. The TLS listener may set its own.
    /// Default 60000.
    pub idle_timeout_ms: u64,
    /// Longest wait for the next piece of a request body, in ms; a client
    /// that stops sending mid-body gets 408 and the upstream request is
    /// aborted. Default 30000.
    pub body_read_timeout_ms: u64,
}

/// `[server.tls]`: a TLS listener beside the plain one, serving the same
/// routes (HTTP/1.1 and h2 by ALPN, TLS 1.2 and 1.3 only).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// TLS listener address, e.g. `0.0.0.0:8443`.
    pub listen: String,
    /// Certificates chosen by SNI; the first also answers clients whose SNI
    /// matches none (or who send none).
    pub certificates: Vec<TlsCertificate>,
    /// PEM file of the CAs whose client certificates are accepted (mTLS);
    /// unset = no client certificate is asked for.
    #[serde(default)]
    pub client_ca: Option<String>,
    /// With `client_ca`: `required` (no valid client certificate, no
    /// handshake) or `optional`. Default `required`.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// How often the certificate, key and CA files are checked for changes,
    /// in ms; 0 = only on SIGHUP. Default 5000.
    #[serde(default = "default_tls_reload_poll_ms")]
    pub reload_poll_ms: u64,
    /// Time allowed for a TLS handshake, in ms. Default 10000.
    #[serde(default = "default_tls_handshake_timeout_ms")]
    pub handshake_timeout_ms: u64,
    /// This listener's idle timeout, in ms (0 = never); unset = the plain
    /// listener's `idle_timeout_ms`.
    #[serde(default)]
    pub idle_timeout_ms: Option<u64>,
}

fn default_tls_reload_poll_ms() -> u64 {
    5_000
}

fn default_tls_handshake_timeout_ms() -> u64 {
    10_000
}

/// One certificate chain and its key (PEM files; relative paths are from
/// the working directory).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsCertificate {
    /// PEM certificate chain, leaf first.
    pub cert: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: String,
    /// SNI names this certificate answers: exact (`api.wedsync.com`) or
    /// `*.suffix` (one more label). Empty = only as the default.
    #[serde(default)]
    pub server_names: Vec<String>,
}

/// Client-certificate policy of a TLS listener with `client_ca`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// The handshake fails without a certificate from `client_ca`.
    #[default]
    Required,
    /// A certificate is asked for and verified if sent.
    Optional,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            admin_listen: "127.0.0.1:9901".into(),
            grace_period_ms: 10_000,
            header_read_timeout_ms: 10_000,
            // 16 KiB: nginx's large_client_header_buffers is 4x8k; our
            // partners' largest JWT-carrying heads are under 6 KiB.
            max_header_bytes: 16 * 1024,
            max_headers: 100,
            max_uri_bytes: 8 * 1024,
            underscore_headers: UnderscoreHeaders::Reject,
            health_on_proxy: true,
            workers: 0,
            balance_connections: true,
            worker_cpu_affinity: CpuAffinity::Auto,
            lean_http1: true,
            redis_url: None,
            redis_prefix: "switchyard:".into(),
            redis_poll_ms: 2_000,
            admin_token: None,
            tls: None,
            cache_max_bytes: 64 * 1024 * 1024,
            metrics_top_clients: 20,
            max_connections: 20_000,
            max_requests_in_flight: 10_000,
            h2_max_concurrent_streams: 256,
            // 60 s: above the 30 s h2 ping interval and common client pool
            // idle times (which then close first, with no race).
            idle_timeout_ms: 60_000,
            // 30 s between body reads, like nginx's client_body_timeout
            // (60 s) halved: our partners' uploads are small.
            body_read_timeout_ms: 30_000,
        }
    }
}

/// Whether proxy workers are pinned to CPUs (`server.worker_cpu_affinity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CpuAffinity {
    /// One worker per CPU when the process may use exactly as many CPUs as
    /// it has workers; no pinning otherwise.
    Auto,
    /// Never pin.
    Off,
}

/// What to do with a request header whose name contains an underscore
/// (`x_api_version` can smuggle past a proxy that maps `_` to `-`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UnderscoreHeaders {
    /// Answer 400.
    Reject,
    /// Remove the header and carry on.
    Drop,
    /// Forward it.
    Allow,
}

/// Where the client's API version may come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The version header (`x-api-version: 2`).
    Header,
    /// An `Accept` media-type parameter (`application/vnd.wedsync.v2+json`,
    /// `application/json; version=2`).
    Accept,
    /// The first path segment after the route prefix (`/v1/...`).
    Path,
    /// A query parameter (`?api-version=2`).
    Query,
    /// The client's pin from `pins`.
    Pin,
    /// The route's default version (always last, never listed).
    Default,
}

impl Source {
    /// The name used in config, logs and the `x-api-version-source` header.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Header => "header",
            Source::Accept => "accept",
            Source::Path => "path",
            Source::Query => "query",
            Source::Pin => "pin",
            Source::Default => "default",
        }
    }
}

/// Version detection settings; the top-level table sets defaults, a route's
/// `detection` overrides fields it names.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DetectionSettings {
    /// Sources to consult, in precedence order. Default
    /// `["header", "accept", "path", "query", "pin"]`; the route default comes last.
    pub order: Option<Vec<Source>>,
    /// The version header. Default `x-api-version`.
    pub header: Option<String>,
    /// Vendor media-type prefix for `Accept` detection: `application/<vendor>.v2+json`.
    /// Default `vnd.wedsync`.
    pub accept_vendor: Option<String>,
    /// The version query parameter. Default `api-version`.
    pub query_param: Option<String>,
    /// The header that identifies a client, for pins and beta allow-lists. Default `x-client-id`.
    pub client_header: Option<String>,
    /// Remove a detected `/vN` path segment before forwarding. Default true.
    pub strip_path_version: Option<bool>,
    /// The header carrying a client's API key, for sticky splits and
    /// `key = "api_key"` rate limits (only a hash of it is kept). Default `x-api-key`.
    pub api_key_header: Option<String>,
}

/// Lifecycle status of an API version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Supported, not the newest.
    Stable,
    /// The newest generally available version.
    Current,
    /// Pre-release; may be restricted to `allow_clients`.
    Beta,
    /// Still served, with `Deprecation`/`Sunset`/`Link` headers.
    Deprecated,
    /// No longer served: `410` naming the successor.
    Sunset,
}

/// One API version.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VersionDoc {
    /// Canonical name, `v<major>[.<minor>][-<pre>]`, e.g. `v1`, `v2`, `v2.2-beta`.
    pub name: String,
    /// Extra names that resolve to this version (besides `2`, `v2.1.0`, `v2.*` for `v2`).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// `stable`, `current`, `beta`, `deprecated` or `sunset`.
    pub status: Status,
    /// When the version was (or will be) deprecated, RFC 3339; sent as `Deprecation: @<unix>`.
    pub deprecated_at: Option<jiff::Timestamp>,
    /// When the version stops being served, RFC 3339; after it every request gets 410.
    pub sunset_at: Option<jiff::Timestamp>,
    /// The version clients should move to; required for `deprecated` and `sunset`.
    pub successor: Option<String>,
    /// Migration guide URL, sent as `Link: <url>; rel="deprecation"`.
    pub doc_url: Option<String>,
    /// Client ids allowed to use this version (beta); empty means everyone.
    #[serde(default)]
    pub allow_clients: Vec<String>,
    /// The version `changes` lead from. Default: the version listed just
    /// before this one (whatever its status); name an earlier version to branch.
    pub changes_from: Option<String>,
    /// Ordered changes from `changes_from` to this version, written as the
    /// upgrade; translation runs them backwards for older clients. Default none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<crate::translate::ChangeDoc>,
}

/// How the upstream request's `Host` is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HostHeader {
    /// Forward the client's `Host` unchanged (default).
    #[default]
    Preserve,
    /// Use the chosen endpoint's `host:port`.
    Endpoint,
}

/// An upstream pool: endpoints that serve one API version.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PoolDoc {
    /// Pool name, referenced by route splits.
    pub name: String,
    /// The API version this pool's endpoints speak.
    pub version: String,
    /// Endpoints as `host:port` (loopback or DNS names resolved at connect time).
    pub endpoints: Vec<String>,
    /// `preserve` the client's Host or use the `endpoint`'s. Default `preserve`.
    #[serde(default)]
    pub host_header: HostHeader,
    /// Set `Host` to this value instead (overrides `host_header`).
    pub host: Option<String>,
    /// Another pool of the same version that takes this pool's traffic while
    /// none of its endpoints is available (one hop: the failover pool's own
    /// `failover` is not followed). Unset = 503 when all are down.
    #[serde(default)]
    pub failover: Option<String>,
    /// Active health checks (`[pools.health]`); unset = none.
    #[serde(default)]
    pub health: Option<HealthDoc>,
    /// Passive outlier ejection (`[pools.outlier]`); on with its defaults.
    #[serde(default)]
    pub outlier: OutlierDoc,
    /// How the gateway talks to the endpoints: `http1`, `h2` (HTTP/2 over
    /// TLS, by ALPN; needs `tls`) or `h2c` (HTTP/2 cleartext, prior
    /// knowledge). An HTTP/2 pool keeps one multiplexed connection per
    /// endpoint per worker. Default `http1`.
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// TLS to the endpoints (`[pools.tls]`); unset = cleartext.
    #[serde(default)]
    pub tls: Option<UpstreamTlsDoc>,
}

/// The protocol a pool's endpoints speak.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with keep-alive (over TLS too, with `tls`).
    #[default]
    Http1,
    /// HTTP/2 over TLS (ALPN `h2`).
    H2,
    /// HTTP/2 over cleartext TCP, prior knowledge.
    H2c,
}

/// `[pools.tls]`: how endpoint certificates are checked, and the client
/// certificate the gateway presents (mTLS). Files are PEM, read when the
/// table is compiled (relative paths are from the working directory).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsDoc {
    /// CAs that sign the endpoints' certificates; unset = the system's roots.
    pub ca_file: Option<String>,
    /// Name sent as SNI and checked against the endpoint certificates;
    /// unset = each endpoint's host.
    pub server_name: Option<String>,
    /// Client certificate chain for mTLS, leaf first (with `client_key`).
    pub client_cert: Option<String>,
    /// Private key of `client_cert`.
    pub client_key: Option<String>,
}

/// `[pools.health]`: each endpoint is probed with `GET path` on its own
/// connection. Endpoints start healthy (a restart never waits for checks).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct HealthDoc {
    /// Probe path. Default `/health`.
    pub path: String,
    /// Time between probes of one endpoint, in ms. Default 5000.
    pub interval_ms: u64,
    /// Probe timeout (connect and response), in ms. Default 1000.
    pub timeout_ms: u64,
    /// Status a healthy endpoint answers; unset = any 2xx.
    pub expected_status: Option<u16>,
    /// Successes in a row that make an unhealthy endpoint healthy. Default 2.
    pub healthy_threshold: u32,
    /// Failures in a row that make a healthy endpoint unhealthy. Default 3.
    pub unhealthy_threshold: u32,
}

impl Default for HealthDoc {
    fn default() -> Self {
        HealthDoc {
            path: "/health".into(),
            interval_ms: 5_000,
            timeout_ms: 1_000,
            expected_status: None,
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        }
    }
}

/// `[pools.outlier]`: an endpoint that fails `consecutive_failures` times
/// in a row (connect failure, timeout, protocol error or 5xx) is ejected for
/// `base_ejection_ms` times the number of its ejections, at most
/// `max_ejection_ms`; never more than `max_ejected_percent` of a pool at once.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct OutlierDoc {
    /// Failures in a row that eject an endpoint; 0 = never eject. Default 5.
    pub consecutive_failures: u32,
    /// First ejection length, in ms; each further one adds as much. Default 10000.
    pub base_ejection_ms: u64,
    /// Longest ejection, in ms. Default 300000.
    pub max_ejection_ms: u64,
    /// Most of a pool's endpoints ejected at once, in percent. Default 50.
    pub max_ejected_percent: u32,
}

impl Default for OutlierDoc {
    fn default() -> Self {
        OutlierDoc {
            consecutive_failures: 5,
            base_ejection_ms: 10_000,
            max_ejection_ms: 300_000,
            max_ejected_percent: 50,
        }
    }
}

/// One weighted target in a split.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WeightDoc {
    /// Pool name.
    pub pool: String,
    /// Relative weight; a version's weights must sum to 100.
    pub weight: u32,
}

/// One route.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteDoc {
    /// Route name, for logs and errors.
    pub name: String,
    /// Hosts: exact (`api.example.com`), wildcard suffix (`*.example.com`), or `*` (any). Default `["*"]`.
    #[serde(default = "any_host")]
    pub hosts: Vec<String>,
    /// Path prefix, matched on whole segments after normalisation; longest wins. Default `/`.
    #[serde(default = "root_prefix")]
    pub path_prefix: String,
    /// Version used when no source names one.
    pub default_version: String,
    /// Versions this route serves; default: every version in the table.
    pub versions: Option<Vec<String>>,
    /// Detection overrides for this route.
    #[serde(default)]
    pub detection: DetectionSettings,
    /// Client version -> weighted pools. A version without an entry goes to
    /// the pools serving that version, evenly.
    #[serde(default)]
    pub split: std::collections::BTreeMap<String, Vec<WeightDoc>>,
    /// Upstream connect timeout in ms. Default 1000.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// Time to the upstream's response headers in ms; then 504. Default 15000.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Longest wait for the next piece of an upstream response body, in ms
    /// (0 = never); then the response is cut off (like nginx's
    /// `proxy_read_timeout`). Default 60000.
    #[serde(default = "default_body_timeout")]
    pub body_timeout_ms: u64,
    /// A WebSocket tunnel with no bytes either way for this long is closed,
    /// in ms (0 = never). Default 3600000 (one hour).
    #[serde(default = "default_tunnel_idle_timeout")]
    pub tunnel_idle_timeout_ms: u64,
    /// Largest request body in bytes; more gets 413. Default 10485760 (10 MiB).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: u64,
    /// Largest body buffered for version translation (request: 413 past it;
    /// response: 502). Default 1048576 (1 MiB).
    #[serde(default = "default_translate_max_body")]
    pub translate_max_body_bytes: u64,
    /// Deepest JSON nesting accepted for translation. Default 64, at most 127.
    #[serde(default = "default_translate_max_depth")]
    pub translate_max_depth: usize,
    /// Per-season weight profiles: season name -> client version -> weighted
    /// pools, used while that season is active in the request's region. A
    /// version without an entry uses `split`. Default none.
    #[serde(default)]
    pub profiles:
        std::collections::BTreeMap<String, std::collections::BTreeMap<String, Vec<WeightDoc>>>,
    /// Where a client's sticky identity comes from, first found wins:
    /// `client_id` (`client_header`), `api_key` (`api_key_header`),
    /// `cookie` (`sticky_cookie`, set by the gateway when absent). The
    /// identity's hash picks the split bucket, so a client keeps its pool on
    /// every replica and across reloads; `[]` = a random bucket per request.
    /// Default `["client_id", "api_key"]`.
    #[serde(default = "default_sticky")]
    pub sticky: Vec<StickySource>,
    /// Name of the cookie the gateway sets for `sticky = [.., "cookie"]`.
    /// Default `switchyard_client`.
    #[serde(default = "default_sticky_cookie")]
    pub sticky_cookie: String,
    /// Header with which clients on `canary_clients` choose their pool:
    /// `always` (the last pool of the version's `split`), `never` (its
    /// first) or a pool name of the split. Default `x-canary`.
    #[serde(default = "default_canary_header")]
    pub canary_header: String,
    /// Client ids (from `client_header`) whose `canary_header` is honoured;
    /// anyone else's is ignored and counted. Default none.
    #[serde(default)]
    pub canary_clients: Vec<String>,
    /// Names of the `rate_limits.policies` applied to this route; every one
    /// is checked and the strictest answer wins. Default none.
    #[serde(default)]
    pub limits: Vec<String>,
    /// Response cache for this route's GET and HEAD requests; absent = not
    /// cached (the default).
    pub cache: Option<CacheDoc>,
    /// Retries of failed upstream exchanges (`[routes.retry]`); on with its
    /// defaults (one retry, budgeted).
    #[serde(default)]
    pub retry: RetryDoc,
}

/// `[routes.retry]`: see the README's "Retries" section for when a request
/// is tried again.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RetryDoc {
    /// Tries in all, the first included; 1 = never retry. Default 2.
    pub attempts: u32,
    /// Timeout of each try, in ms; 0 = the route's `timeout_ms`, which always
    /// bounds all tries together. Default 0.
    pub per_try_timeout_ms: u64,
    /// Upstream statuses worth another try (idempotent requests only).
    /// Default `[502, 503, 504]`.
    pub retry_statuses: Vec<u16>,
    /// Retries in progress may not exceed this percentage of the route's
    /// requests in progress. Default 20.
    pub budget_percent: u32,
    /// ... plus this many, so a quiet route can still retry. Default 10.
    pub min_retries: u32,
}

impl Default for RetryDoc {
    fn default() -> Self {
        RetryDoc {
            attempts: 2,
            per_try_timeout_ms: 0,
            retry_statuses: vec![502, 503, 504],
            budget_percent: 20,
            min_retries: 10,
        }
    }
}

/// A route's response-cache rules (`[routes.cache]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CacheDoc {
    /// Freshness in ms when the upstream's `Cache-Control` has no `s-maxage`
    /// or `max-age` (those win when present); 0 = store only what the
    /// upstream marks cacheable. Default 60000.
    #[serde(default = "default_cache_ttl")]
    pub ttl_ms: u64,
    /// How long past freshness, in ms, a stale entry is still served (`x-cache:
    /// STALE`) while one background request refreshes it; the upstream's
    /// `stale-while-revalidate` wins when present. Default 0.
    #[serde(default)]
    pub stale_while_revalidate_ms: u64,
    /// Request headers whose values split the cache key (e.g.
    /// `["accept-language"]`); a response whose `Vary` names a header not
    /// listed here (or the version headers) is not stored. Default `[]`.
    #[serde(default)]
    pub vary: Vec<String>,
    /// Largest response body stored, in bytes; bigger ones pass through. Default 1048576 (1 MiB).
    #[serde(default = "default_cache_max_entry")]
    pub max_entry_bytes: u64,
    /// TTL multiplier per season name of `calendar.seasons` (`{ peak = 2.0 }`),
    /// applied while that season is active in the request's region. Default `{}`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub season_ttl_multiplier: std::collections::BTreeMap<String, f64>,
}

/// A source of a client's sticky split identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StickySource {
    /// The `client_header` (default `x-client-id`).
    ClientId,
    /// The `api_key_header` (default `x-api-key`).
    ApiKey,
    /// The `sticky_cookie`, which the gateway sets when the request has none.
    Cookie,
}

/// The season calendar (`[calendar]`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CalendarDoc {
    /// Region of requests whose region header is missing or unknown.
    /// Default: the first of `regions`.
    pub home_region: Option<String>,
    /// Request header naming the client's region, e.g. a CDN geo header
    /// (`cloudfront-viewer-country`); the edge must overwrite it. Unset =
    /// every request is in the home region.
    pub region_header: Option<String>,
    /// Region-header value -> region name (`US = "us-east-1"`), matched
    /// case-insensitively; a value that is itself a region name needs no entry.
    #[serde(default)]
    pub region_map: std::collections::BTreeMap<String, String>,
    /// Regions, each with the time zone its seasons are read in.
    #[serde(default)]
    pub regions: Vec<RegionDoc>,
    /// Season rules in priority order: the first that matches a region's
    /// local date and time is that region's season. A name may repeat with
    /// different `regions` (peak months differ by region).
    #[serde(default)]
    pub seasons: Vec<SeasonDoc>,
}

/// A region of the calendar.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegionDoc {
    /// Region name, e.g. `us-east-1`.
    pub name: String,
    /// IANA time zone its seasons are read in (DST-correct), e.g. `America/New_York`.
    pub time_zone: String,
}

/// A season rule: every condition given must hold in the region's local time.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SeasonDoc {
    /// Season name, e.g. `peak`, `saturday`, `holiday`; route `profiles` name it.
    pub name: String,
    /// Regions the rule applies in. Default: every region.
    #[serde(default)]
    pub regions: Vec<String>,
    /// Local months, 1-12; `[11, 12, 1, 2]` wraps the new year. Default: every month.
    #[serde(default)]
    pub months: Vec<u8>,
    /// Local weekdays, e.g. `["saturday"]`. Default: every day.
    #[serde(default)]
    pub weekdays: Vec<crate::control::freeze::Day>,
    /// Local dates, e.g. `["2026-12-24"]`. Default: every date.
    #[serde(default)]
    pub dates: Vec<jiff::civil::Date>,
    /// Local start time `HH:MM` on matching days. Default `00:00`.
    pub start: Option<jiff::civil::Time>,
    /// Local end time `HH:MM` (exclusive). Default: end of day.
    pub end: Option<jiff::civil::Time>,
    /// Rate-limit quotas are multiplied by this while the season is active
    /// (bursts are not). Default 1.
    #[serde(default = "one")]
    pub limit_multiplier: f64,
}

/// Rate limiting (`[rate_limits]`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitsDoc {
    /// Proxies (CIDRs or addresses, e.g. `10.0.0.0/8`) whose
    /// `x-forwarded-for` is believed for `key = "ip"`: the client is the
    /// right-most address not in this list. From any other peer the header is
    /// ignored. Default none (the peer address is the client).
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Also send `RateLimit-Policy` and `RateLimit` on allowed responses.
    /// Default false (only 429s carry them).
    #[serde(default)]
    pub headers_on_allowed: bool,
    /// Named policies.
    #[serde(default)]
    pub policies: Vec<LimitPolicyDoc>,
}

/// What a rate-limit policy counts requests by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKey {
    /// The `client_header` value; requests without one are not counted.
    ClientId,
    /// The `api_key_header` value; requests without one are not counted.
    ApiKey,
    /// The client address (see `trusted_proxies`).
    Ip,
    /// The route: one budget for everyone.
    Route,
}

/// One rate-limit policy: `requests` per `window_secs` per key, plus `burst`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitPolicyDoc {
    /// Policy name, shown in `RateLimit-Policy` and metrics.
    pub name: String,
    /// What requests are counted by: `client_id`, `api_key`, `ip` or `route`.
    pub key: LimitKey,
    /// Requests allowed per window (sustained rate), before the season multiplier.
    pub requests: u32,
    /// The window in seconds. Default 60.
    #[serde(default = "default_window")]
    pub window_secs: u32,
    /// Extra requests a fresh key may make at once on top of `requests`
    /// (so a new key gets `requests + burst` before its first 429). Default 0.
    #[serde(default)]
    pub burst: u32,
}

fn default_sticky() -> Vec<StickySource> {
    vec![StickySource::ClientId, StickySource::ApiKey]
}
fn default_sticky_cookie() -> String {
    "switchyard_client".into()
}
fn default_canary_header() -> String {
    "x-canary".into()
}
fn one() -> f64 {
    1.0
}
fn default_window() -> u32 {
    60
}
fn any_host() -> Vec<String> {
    vec!["*".into()]
}
fn root_prefix() -> String {
    "/".into()
}
fn default_connect_timeout() -> u64 {
    1_000
}
fn default_timeout() -> u64 {
    15_000
}
fn default_body_timeout() -> u64 {
    60_000
}
fn default_tunnel_idle_timeout() -> u64 {
    3_600_000
}
fn default_translate_max_body() -> u64 {
    crate::translate::DEFAULT_MAX_BYTES
}
fn default_translate_max_depth() -> usize {
    crate::translate::DEFAULT_MAX_DEPTH
}
fn default_cache_ttl() -> u64 {
    60_000
}
fn default_cache_max_entry() -> u64 {
    1024 * 1024
}
fn default_max_body() -> u64 {
    10 * 1024 * 1024
}
