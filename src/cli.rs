//! Command line: `run`, `validate`, `demo` (and the hidden `demo-upstream`
//! used by `benches/load.sh`). Process settings come from the document's
//! `[server]` table, overridden by `SWITCHYARD_*` env vars and flags.

use std::net::SocketAddr;
use std::path::PathBuf;

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
    /// Done already (validate); exit with this code.
    Exit(i32),
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
            })
        }
        Command::Demo { overrides } => {
            let mut doc = crate::demo::demo_document();
            overrides.apply(&mut doc);
            Ok(Plan::Serve {
                doc: Box::new(doc),
                origin: "config/demo.toml (bundled)".into(),
                demo: true,
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
    }
}

/// Runs a `Serve` plan on the current runtime until SIGINT/SIGTERM.
pub async fn serve(mut doc: Document, origin: String, demo: bool) -> anyhow::Result<bool> {
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
    let proxy = crate::server::bind(proxy_addr)
        .with_context(|| format!("binding proxy listener {proxy_addr}"))?;
    let admin = crate::server::bind(admin_addr)
        .with_context(|| format!("binding admin listener {admin_addr}"))?;
    let (proxy_addr, admin_addr) = (proxy.local_addr()?, admin.local_addr()?);
    if demo {
        println!("{}", crate::demo::walkthrough(proxy_addr, admin_addr));
    }
    tracing::info!(proxy = %proxy_addr, admin = %admin_addr, table = %origin, "switchyard listening");
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            wait_for_signal().await;
            tracing::info!("shutdown signal: draining");
            shutdown.cancel();
        }
    });
    let drained = crate::serve(doc, origin, proxy, admin, shutdown).await;
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
