//! Command line: `run`, `validate`, `demo`, `healthcheck` (and the hidden `demo-upstream`
//! used by `benches/load.sh`). Process settings come from the document's
//! `[server]` table, overridden by `SWITCHYARD_*` env vars and flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use crate::config::{self, Document, Origin};

/// switchyard: a version-routing API gateway.
#[derive(Debug, Parser)]
#[command(name = "switchyard", version, about)]
pub struct Cli {
    /// Log format.
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_LOG_FORMAT",
        default_value = "pretty"
    )]
    pub log_format: LogFormat,
    /// Longest a log line waits in a proxy worker's buffer, in
    /// milliseconds (lines are written in batches; all of them on a
    /// graceful shutdown).
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_LOG_FLUSH_MS",
        default_value_t = crate::logging::DEFAULT_FLUSH_MS,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub log_flush_ms: u64,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve a routing table from a file.
    Run {
        /// The routing table.
        #[arg(
            long,
            env = "SWITCHYARD_CONFIG",
            default_value = "config/switchyard.toml"
        )]
        config: PathBuf,
        /// Process setting overrides.
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Check a routing table; print every error as `file[:line:col]: path: reason`.
    Validate {
        /// The routing table.
        file: PathBuf,
    },
    /// Serve the bundled demo table with demo upstreams on loopback.
    Demo {
        /// Process setting overrides.
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Translate a JSON body read from stdin between two versions, as the
    /// gateway would, and print it (check a change before pushing it).
    Translate {
        /// The routing table.
        #[arg(
            long,
            env = "SWITCHYARD_CONFIG",
            default_value = "config/switchyard.toml"
        )]
        config: PathBuf,
        /// Route whose body limits apply (default: the first route).
        #[arg(long)]
        route: Option<String>,
        /// The client's version.
        #[arg(long)]
        from: String,
        /// The pool's version.
        #[arg(long)]
        to: String,
        /// Translate a response (pool -> client) instead of a request.
        #[arg(long)]
        response: bool,
        /// Request method (scopes match on it).
        #[arg(long, default_value = "GET")]
        method: String,
        /// Request path as the client sent it (after the route prefix's `/vN` is stripped).
        #[arg(long, default_value = "/")]
        path: String,
        /// Upstream status, with --response.
        #[arg(long, default_value_t = 200)]
        status: u16,
    },
    /// Manage the routing table in Redis.
    Config {
        /// Redis connection.
        #[command(flatten)]
        redis: RedisArgs,
        /// What to do.
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Manage per-client version pins in Redis.
    Pin {
        /// Redis connection.
        #[command(flatten)]
        redis: RedisArgs,
        /// What to do.
        #[command(subcommand)]
        action: PinAction,
    },
    /// GET a health URL and exit 0 if it answers 2xx in time, else 1 (for
    /// container health checks in images without curl or a shell).
    Healthcheck {
        /// Plain `http://host:port/path` URL.
        #[arg(
            long,
            env = "SWITCHYARD_HEALTHCHECK_URL",
            default_value = "http://127.0.0.1:9901/health/ready"
        )]
        url: String,
        /// Connect + response deadline, ms.
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
    },
    /// A demo upstream alone (for benchmarks).
    #[command(hide = true)]
    DemoUpstream {
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:18002")]
        listen: SocketAddr,
        /// Version it claims to serve.
        #[arg(long, default_value = "v2")]
        version: String,
        /// Worker threads.
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
}

/// Where the routing table lives in Redis.
#[derive(Debug, Clone, Args)]
pub struct RedisArgs {
    /// Redis URL (`redis://host:6379/0` or `redis-cluster://h1:p1,h2:p2`).
    #[arg(
        long = "redis",
        env = "SWITCHYARD_REDIS_URL",
        global = true,
        default_value = "redis://127.0.0.1:6379/"
    )]
    pub url: String,
    /// Key prefix.
    #[arg(
        long,
        env = "SWITCHYARD_REDIS_PREFIX",
        global = true,
        default_value = "switchyard:"
    )]
    pub prefix: String,
    /// Who is making the change (recorded in the audit trail).
    #[arg(long, env = "SWITCHYARD_AUTHOR", global = true)]
    pub author: Option<String>,
}

/// `switchyard config ...`
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Validate FILE locally, then write it as the next revision (compare-and-set).
    Push {
        /// The routing table.
        file: PathBuf,
        /// Why (recorded in the audit trail).
        #[arg(long, short)]
        message: String,
        /// Allowed during a change freeze; recorded as an emergency.
        #[arg(long)]
        emergency: bool,
        /// Revisions kept for rollback.
        #[arg(long, default_value_t = 50)]
        keep: u64,
        /// Fail unless Redis is at this revision (default: whatever it is now).
        #[arg(long)]
        expect_revision: Option<u64>,
    },
    /// Print the current document, or a kept revision.
    Get {
        /// Revision to print.
        #[arg(long)]
        revision: Option<u64>,
    },
    /// Print the audit trail, newest first.
    History {
        /// Entries to print.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Push kept revision N again as a new revision.
    Rollback {
        /// The revision to restore.
        revision: u64,
        /// Why.
        #[arg(long, short, default_value = "rollback")]
        message: String,
        /// Allowed during a change freeze.
        #[arg(long)]
        emergency: bool,
        /// Revisions kept.
        #[arg(long, default_value_t = 50)]
        keep: u64,
    },
    /// Unified diff between two kept revisions.
    Diff {
        /// Older revision.
        a: u64,
        /// Newer revision.
        b: u64,
    },
}

/// `switchyard pin ...`
#[derive(Debug, Subcommand)]
pub enum PinAction {
    /// Pin CLIENT to VERSION (validated against the table in Redis).
    Set {
        /// Client id (the value of the table's client header).
        client: String,
        /// Version name or alias.
        version: String,
    },
    /// Remove CLIENT's pin.
    Rm {
        /// Client id.
        client: String,
    },
    /// List the pins.
    List,
}

/// Overrides of the `[server]` table.
#[derive(Debug, Clone, Default, Args)]
pub struct Overrides {
    /// Proxy listener address.
    #[arg(long, env = "SWITCHYARD_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Admin listener address.
    #[arg(long, env = "SWITCHYARD_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// Drain time after SIGINT/SIGTERM, ms.
    #[arg(long, env = "SWITCHYARD_GRACE_PERIOD_MS")]
    pub grace_period_ms: Option<u64>,
    /// Worker threads (0 = one per CPU).
    #[arg(long, env = "SWITCHYARD_WORKERS")]
    pub workers: Option<usize>,
}

impl Overrides {
    /// Applies the overrides to a document's process settings.
    pub fn apply(&self, doc: &mut Document) {
        let s = &mut doc.server;
        if let Some(a) = self.listen {
            s.listen = a.to_string();
        }
        if let Some(a) = self.admin_listen {
            s.admin_listen = a.to_string();
        }
        if let Some(g) = self.grace_period_ms {
            s.grace_period_ms = g;
        }
        if let Some(w) = self.workers {
            s.workers = w;
        }
    }
}

/// What `main` should run, decided before the runtime exists (the worker
/// count comes from the document).
pub enum Plan {
    /// Serve `doc`; `demo` starts the demo upstreams first.
    Serve {
        /// The validated document.
        doc: Box<Document>,
        /// Its origin, for the admin API.
        origin: String,
        /// Whether this is `switchyard demo`.
        demo: bool,
        /// The file and its text (for reloads and `/admin/table`).
        file: Option<(PathBuf, String)>,
    },
    /// A bare demo upstream.
    Upstream {
        /// Listen address.
        listen: SocketAddr,
        /// Version name.
        version: String,
        /// Worker threads.
        threads: usize,
    },
    /// An operator command against Redis.
    Control(Box<ControlCmd>),
    /// Done already (validate); exit with this code.
    Exit(i32),
}

/// Operator commands (`config ...`, `pin ...`).
#[derive(Debug)]
pub enum ControlCmd {
    /// `config ...`
    Config(RedisArgs, ConfigAction),
    /// `pin ...`
    Pin(RedisArgs, PinAction),
}

/// Reads and validates what the command needs.
pub fn plan(command: Command) -> anyhow::Result<Plan> {
    match command {
        Command::Validate { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            match config::load(&text, Origin::File(file.display().to_string())) {
                Ok(doc) => {
                    println!(
                        "{}: ok ({} versions, {} pools, {} routes)",
                        file.display(),
                        doc.versions.len(),
                        doc.pools.len(),
                        doc.routes.len()
                    );
                    Ok(Plan::Exit(0))
                }
                Err(errors) => {
                    eprintln!("{errors}");
                    eprintln!("{}: {} error(s)", file.display(), errors.errors.len());
                    Ok(Plan::Exit(1))
                }
            }
        }
        Command::Run {
            config: path,
            overrides,
        } => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let origin = path.display().to_string();
            let mut doc = config::load(&text, Origin::File(origin.clone()))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            overrides.apply(&mut doc);
            config::validate(&doc).map_err(|errors| {
                anyhow::anyhow!(
                    "{}",
                    config::ConfigErrors {
                        origin: Origin::File(origin.clone()),
                        errors
                    }
                )
            })?;
            Ok(Plan::Serve {
                doc: Box::new(doc),
                origin,
                demo: false,
                file: Some((path, text)),
            })
        }
        Command::Demo { overrides } => {
            let mut doc = crate::demo::demo_document();
            overrides.apply(&mut doc);
            Ok(Plan::Serve {
                doc: Box::new(doc),
                origin: "config/demo.toml (bundled)".into(),
                demo: true,
                file: None,
            })
        }
        Command::DemoUpstream {
            listen,
            version,
            threads,
        } => Ok(Plan::Upstream {
            listen,
            version,
            threads,
        }),
        Command::Translate {
            config: path,
            route,
            from,
            to,
            response,
            method,
            path: req_path,
            status,
        } => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let doc = match config::load(&text, Origin::File(path.display().to_string())) {
                Ok(doc) => doc,
                Err(errors) => {
                    eprintln!("{errors}");
                    return Ok(Plan::Exit(1));
                }
            };
            let mut body = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut body)
                .context("reading stdin")?;
            let args = TranslateArgs {
                route,
                from,
                to,
                response,
                method,
                path: req_path,
                status,
            };
            Ok(Plan::Exit(translate(&doc, &args, &body)))
        }
        Command::Healthcheck { url, timeout_ms } => {
            match healthcheck(&url, std::time::Duration::from_millis(timeout_ms)) {
                Ok(status) if (200..300).contains(&status) => Ok(Plan::Exit(0)),
                Ok(status) => {
                    eprintln!("healthcheck: {url}: status {status}");
                    Ok(Plan::Exit(1))
                }
                Err(e) => {
                    eprintln!("healthcheck: {url}: {e}");
                    Ok(Plan::Exit(1))
                }
            }
        }
        Command::Config { redis, action } => {
            Ok(Plan::Control(Box::new(ControlCmd::Config(redis, action))))
        }
        Command::Pin { redis, action } => {
            Ok(Plan::Control(Box::new(ControlCmd::Pin(redis, action))))
        }
    }
}

/// Runs a `Serve` plan on the current runtime until SIGINT/SIGTERM.
pub async fn serve(
    mut doc: Document,
    origin: String,
    demo: bool,
    file: Option<(PathBuf, String)>,
) -> anyhow::Result<bool> {
    let shutdown = CancellationToken::new();
    if demo {
        crate::demo::start_upstreams(&mut doc, &shutdown)
            .await
            .context("starting demo upstreams")?;
    }
    let proxy_addr: SocketAddr = doc.server.listen.parse().context("server.listen")?;
    let admin_addr: SocketAddr = doc
        .server
        .admin_listen
        .parse()
        .context("server.admin_listen")?;
    let workers = match doc.server.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let proxies = crate::server::bind_workers(proxy_addr, workers)
        .with_context(|| format!("binding proxy listener {proxy_addr}"))?;
    let admin = crate::server::bind(admin_addr)
        .with_context(|| format!("binding admin listener {admin_addr}"))?;
    let (proxy_addr, admin_addr) = (proxies[0].local_addr()?, admin.local_addr()?);
    let tls = match &doc.server.tls {
        None => None,
        Some(settings) => {
            // Certificate problems stop the start with the field and file.
            let terminator = Arc::new(crate::tls::TlsTerminator::load(settings)?);
            let addr: SocketAddr = settings.listen.parse().context("server.tls.listen")?;
            let listeners = crate::server::bind_workers(addr, workers)
                .with_context(|| format!("binding TLS listener {addr}"))?;
            tracing::info!(tls = %listeners[0].local_addr()?, "TLS listening");
            Some(crate::TlsListeners {
                terminator,
                listeners,
            })
        }
    };
    if demo {
        println!("{}", crate::demo::walkthrough(proxy_addr, admin_addr));
    }
    tracing::info!(proxy = %proxy_addr, admin = %admin_addr, workers, table = %origin, "switchyard listening");
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            wait_for_signal().await;
            tracing::info!("shutdown signal: draining");
            shutdown.cancel();
        }
    });
    let options = crate::ServeOptions {
        text: Some(
            file.as_ref()
                .map_or_else(|| crate::demo::DEMO_TOML.to_string(), |f| f.1.clone()),
        ),
        file: file.map(|f| f.0),
        tls,
        ..Default::default()
    };
    let drained = crate::serve_per_core(doc, origin, proxies, admin, shutdown, options)
        .await
        .context("starting proxy workers")?;
    tracing::info!(drained, "switchyard stopped");
    Ok(drained)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// `switchyard healthcheck`: one HTTP/1.1 `GET` of a plain
/// `http://host[:port]/path` URL with `Connection: close`, all within
/// `timeout`. Returns the response status. Blocking std I/O: no runtime for
/// a probe that runs every few seconds.
pub fn healthcheck(url: &str, timeout: std::time::Duration) -> anyhow::Result<u16> {
    use std::io::{Read as _, Write as _};
    use std::net::ToSocketAddrs as _;
    let deadline = std::time::Instant::now() + timeout;
    let rest = url
        .strip_prefix("http://")
        .context("only http:// URLs are supported")?;
    let (authority, path) = rest.find('/').map_or((rest, "/"), |i| rest.split_at(i));
    let target = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addr = target
        .to_socket_addrs()
        .with_context(|| format!("resolving {authority}"))?
        .next()
        .with_context(|| format!("no address for {authority}"))?;
    let left = || {
        deadline
            .checked_duration_since(std::time::Instant::now())
            .filter(|d| !d.is_zero())
            .context("timed out")
    };
    let mut stream = std::net::TcpStream::connect_timeout(&addr, left()?)
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_write_timeout(Some(left()?))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: switchyard-healthcheck\r\nConnection: close\r\n\r\n"
    )
    .context("sending the request")?;
    // Only the status line matters.
    let mut head = Vec::with_capacity(128);
    let mut buf = [0u8; 512];
    while !head.contains(&b'\n') && head.len() < 4096 {
        stream.set_read_timeout(Some(left()?))?;
        let n = stream.read(&mut buf).context("reading the response")?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or("");
    line.strip_prefix("HTTP/1.")
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an HTTP response: {line:?}"))
}

/// `switchyard translate` arguments.
pub struct TranslateArgs {
    /// Route for limits.
    pub route: Option<String>,
    /// Client version.
    pub from: String,
    /// Pool version.
    pub to: String,
    /// Response direction.
    pub response: bool,
    /// Request method.
    pub method: String,
    /// Client request path.
    pub path: String,
    /// Upstream status.
    pub status: u16,
}

/// Translates `body` as the gateway would; prints the result (body on
/// stdout, path/status on stderr). Returns the exit code.
pub fn translate(doc: &Document, args: &TranslateArgs, body: &[u8]) -> i32 {
    use crate::translate::{Limits, TranslationTable, parse_json, to_bytes};
    let resolver = crate::version::Resolver::compile(&doc.versions);
    let (Ok(from), Ok(to)) = (resolver.resolve(&args.from), resolver.resolve(&args.to)) else {
        let names: Vec<&str> = doc.versions.iter().map(|v| v.name.as_str()).collect();
        eprintln!("unknown version; the table has: {}", names.join(", "));
        return 1;
    };
    let route = match &args.route {
        Some(name) => match doc.routes.iter().find(|r| &r.name == name) {
            Some(r) => r,
            None => {
                eprintln!("no route named {name:?}");
                return 1;
            }
        },
        None => &doc.routes[0],
    };
    let limits = Limits {
        max_bytes: route.translate_max_body_bytes,
        max_depth: route.translate_max_depth,
    };
    let table = TranslationTable::compile(doc).expect("validated");
    let Ok(method) = http::Method::from_bytes(args.method.to_ascii_uppercase().as_bytes()) else {
        eprintln!("bad method {:?}", args.method);
        return 1;
    };
    let Some(plan) = table.plan(from, to) else {
        eprintln!(
            "no changes between {} and {}: the body passes untouched",
            args.from, args.to
        );
        std::io::Write::write_all(&mut std::io::stdout(), body).ok();
        return 0;
    };
    let value = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        match parse_json(body, limits) {
            Ok(v) => Some(v),
            Err(e) => {
                eprintln!(
                    "{} body not translatable: {e}",
                    if args.response { "response" } else { "request" }
                );
                return 1;
            }
        }
    };
    let mut ex = plan.exchange(&method, &args.path);
    let mut path = args.path.clone();
    let mut headers = http::HeaderMap::new();
    let out = if args.response {
        let _ = plan.request(&mut ex, &mut path, &mut headers, None);
        let mut status = http::StatusCode::from_u16(args.status).unwrap_or(http::StatusCode::OK);
        let out = plan.response(&ex, &mut status, &mut headers, value);
        eprintln!("# status {} -> {}", args.status, status.as_u16());
        out
    } else {
        let out = plan.request(&mut ex, &mut path, &mut headers, value);
        eprintln!("# {} {} -> {} {path}", method, args.path, method);
        out
    };
    match out {
        Ok(Some(v)) => {
            println!("{}", String::from_utf8_lossy(&to_bytes(&v)));
            0
        }
        Ok(None) => 0,
        Err(e) => {
            eprintln!("not translatable: {e}");
            1
        }
    }
}

/// Runs an operator command; returns the exit code (1 = refused, conflict
/// or invalid).
pub async fn control(cmd: ControlCmd) -> anyhow::Result<i32> {
    use crate::control::store::{Meta, PushError, Store, sha256_hex};
    let (redis, config_action, pin_action) = match cmd {
        ControlCmd::Config(r, a) => (r, Some(a), None),
        ControlCmd::Pin(r, a) => (r, None, Some(a)),
    };
    let author = redis
        .author
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "unknown".into());
    let mut store = Store::connect(&redis.url, &redis.prefix, None)
        .await
        .with_context(|| format!("connecting to {}", crate::control::redact(&redis.url)))?;
    let meta = |message: &str, text: &str, emergency: bool, action: &str| Meta {
        author: author.clone(),
        time: jiff::Timestamp::now(),
        message: message.to_string(),
        sha256: sha256_hex(text),
        emergency,
        action: action.to_string(),
    };
    if let Some(action) = pin_action {
        return pins(&mut store, action, &author).await;
    }
    match config_action.expect("config or pin") {
        ConfigAction::Push {
            file,
            message,
            emergency,
            keep,
            expect_revision,
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            match config::load(&text, Origin::File(file.display().to_string())) {
                Ok(_) => {}
                Err(errors) => {
                    eprintln!("{errors}");
                    eprintln!(
                        "push refused: {} error(s); Redis was not touched",
                        errors.errors.len()
                    );
                    return Ok(1);
                }
            };
            let current = store.current().await?;
            let expected = current.as_ref().map_or(0, |c| c.revision);
            if let Some(want) = expect_revision
                && want != expected
            {
                eprintln!("push refused: expected revision {want}, Redis is at {expected}");
                return Ok(1);
            }
            if let Some(code) = freeze_refusal(current.as_ref().map(|c| c.text.as_str()), emergency)
            {
                return Ok(code);
            }
            match store
                .push(
                    &text,
                    expected,
                    &meta(&message, &text, emergency, "push"),
                    keep,
                )
                .await
            {
                Ok(rev) => {
                    println!(
                        "pushed revision {rev} (sha256 {}){}",
                        &sha256_hex(&text)[..12],
                        if emergency {
                            " as an EMERGENCY change"
                        } else {
                            ""
                        }
                    );
                    Ok(0)
                }
                Err(PushError::Conflict { expected, actual }) => {
                    eprintln!(
                        "push refused: conflict: Redis moved from revision {expected} to {actual} while pushing; inspect with `switchyard config history` and push again"
                    );
                    Ok(1)
                }
                Err(PushError::Redis(e)) => Err(e.into()),
            }
        }
        ConfigAction::Get { revision } => {
            let stored = match revision {
                Some(r) => store.get(r).await?,
                None => store.current().await?,
            };
            match stored {
                Some(s) => {
                    eprintln!(
                        "# revision {}{}",
                        s.revision,
                        s.meta
                            .map(|m| format!(" by {} at {}: {}", m.author, m.time, m.message))
                            .unwrap_or_default()
                    );
                    print!("{}", s.text);
                    Ok(0)
                }
                None => {
                    eprintln!(
                        "no such revision (kept revisions only; see `switchyard config history`)"
                    );
                    Ok(1)
                }
            }
        }
        ConfigAction::History { limit } => {
            for e in store.history(limit).await? {
                let f = |k: &str| e.fields.get(k).map(String::as_str).unwrap_or("");
                let what = if f("revision").is_empty() {
                    format!(
                        "pins rev {} {} {}={}",
                        f("pins_revision"),
                        f("action"),
                        f("client"),
                        f("version")
                    )
                } else {
                    format!(
                        "rev {} {}{} sha256 {}: {}",
                        f("revision"),
                        f("action"),
                        if f("emergency") == "true" {
                            " EMERGENCY"
                        } else {
                            ""
                        },
                        f("sha256").get(..12).unwrap_or(""),
                        f("message")
                    )
                };
                println!("{}  {}  {what}", f("time"), f("author"));
            }
            Ok(0)
        }
        ConfigAction::Rollback {
            revision,
            message,
            emergency,
            keep,
        } => {
            let Some(old) = store.get(revision).await? else {
                eprintln!("rollback refused: revision {revision} is not kept");
                return Ok(1);
            };
            match config::load(&old.text, Origin::Redis { revision }) {
                Ok(_) => {}
                Err(errors) => {
                    eprintln!("{errors}");
                    eprintln!(
                        "rollback refused: revision {revision} does not validate with this binary"
                    );
                    return Ok(1);
                }
            };
            let current = store.current().await?;
            if let Some(code) = freeze_refusal(current.as_ref().map(|c| c.text.as_str()), emergency)
            {
                return Ok(code);
            }
            let expected = current.map_or(0, |c| c.revision);
            let message = format!("rollback to {revision}: {message}");
            match store
                .push(
                    &old.text,
                    expected,
                    &meta(&message, &old.text, emergency, "rollback"),
                    keep,
                )
                .await
            {
                Ok(rev) => {
                    println!("rolled back: revision {rev} restores revision {revision}");
                    Ok(0)
                }
                Err(PushError::Conflict { expected, actual }) => {
                    eprintln!(
                        "rollback refused: conflict: Redis moved from revision {expected} to {actual}"
                    );
                    Ok(1)
                }
                Err(PushError::Redis(e)) => Err(e.into()),
            }
        }
        ConfigAction::Diff { a, b } => {
            let (Some(x), Some(y)) = (store.get(a).await?, store.get(b).await?) else {
                eprintln!("diff: both revisions must be kept ones");
                return Ok(1);
            };
            let diff = similar::TextDiff::from_lines(&x.text, &y.text);
            print!(
                "{}",
                diff.unified_diff()
                    .header(&format!("revision {a}"), &format!("revision {b}"))
            );
            Ok(0)
        }
    }
}

/// Refuses a change during a freeze of the live table unless it is an
/// emergency (with no live table there is nothing to protect). Returns the
/// exit code to use.
fn freeze_refusal(current: Option<&str>, emergency: bool) -> Option<i32> {
    use crate::control::freeze::{Freeze, active};
    let live = config::load(current?, Origin::Embedded("live table")).ok()?;
    let freezes: Vec<Freeze> = live.freezes.iter().map(Freeze::compile).collect();
    let f = active(&freezes, jiff::Timestamp::now())?;
    if emergency {
        eprintln!(
            "warning: change freeze {:?} is in force until {}; pushing as an audited EMERGENCY change",
            f.name, f.until
        );
        return None;
    }
    eprintln!(
        "push refused: change freeze {:?} is in force until {}; pass --emergency for an emergency change (it is audited)",
        f.name, f.until
    );
    Some(1)
}

async fn pins(
    store: &mut crate::control::store::Store,
    action: PinAction,
    author: &str,
) -> anyhow::Result<i32> {
    match action {
        PinAction::Set { client, version } => {
            let Some(current) = store.current().await? else {
                eprintln!("pin refused: no routing table in Redis to validate the version against");
                return Ok(1);
            };
            let doc = config::parse(
                &current.text,
                Origin::Redis {
                    revision: current.revision,
                },
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            let resolver = crate::version::Resolver::compile(&doc.versions);
            let Ok(id) = resolver.resolve(&version) else {
                let names: Vec<&str> = doc.versions.iter().map(|v| v.name.as_str()).collect();
                eprintln!(
                    "pin refused: version {version:?} is not in the live table (revision {}): {}",
                    current.revision,
                    names.join(", ")
                );
                return Ok(1);
            };
            let name = &doc.versions[id as usize].name;
            let rev = store.set_pin(&client, Some(name), author).await?;
            println!("pinned {client} to {name} (pin revision {rev})");
        }
        PinAction::Rm { client } => {
            let rev = store.set_pin(&client, None, author).await?;
            println!("unpinned {client} (pin revision {rev})");
        }
        PinAction::List => {
            let (rev, pins) = store.pins().await?;
            let mut pins: Vec<_> = pins.into_iter().collect();
            pins.sort();
            eprintln!("# pin revision {rev}, {} pins", pins.len());
            for (c, v) in pins {
                println!("{c}\t{v}");
            }
        }
    }
    Ok(0)
}
