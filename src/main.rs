//! Process entry: CLI dispatch, logging, the runtime, exit codes
//! (0 ok, 1 invalid table or runtime failure, 2 usage).

use clap::Parser;
use switchyard::cli::{self, Cli, LogFormat, Plan};
use tracing_subscriber::EnvFilter;

/// mimalloc rather than glibc's malloc: the request path frees and
/// allocates 8 KiB read buffers and header maps per request, where glibc
/// consolidated fastbins on every large request (`malloc_consolidate` was
/// 1% of the gateway's CPU under load). Measured with the load bench; see
/// the README's Benchmarks.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args = Cli::parse();
    let log = init_logging(args.log_format);
    let result = run(args);
    // `exit` runs no destructors: flush the queued log lines first.
    drop(log);
    let code = match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("switchyard: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

fn run(args: Cli) -> anyhow::Result<i32> {
    match cli::plan(args.command)? {
        Plan::Exit(code) => Ok(code),
        Plan::Control(cmd) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(cli::control(*cmd))
        }
        Plan::Serve {
            doc,
            origin,
            demo,
            file,
        } => {
            // The control plane and the first proxy worker; `serve` starts
            // one more single-threaded runtime per further worker.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(cli::serve(*doc, origin, demo, file))?;
            // Exit 0 after a signal-driven shutdown even if the grace period
            // cut slow requests: that is the configured behaviour.
            Ok(0)
        }
        Plan::Upstream {
            listen,
            version,
            threads,
        } => {
            let rt = runtime(threads)?;
            rt.block_on(async move {
                let listener = switchyard::server::bind(listen)?;
                let shutdown = tokio_util::sync::CancellationToken::new();
                let pool = version.clone();
                tokio::select! {
                    _ = switchyard::demo::serve_upstream(listener, &version, &pool, shutdown) => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
                anyhow::Ok(0)
            })
        }
    }
}

fn runtime(workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if workers > 0 {
        b.worker_threads(workers);
    }
    b.enable_all().thread_name("switchyard").build()
}

/// Logs (the access log among them) go to stderr through a queue and a
/// writer thread: a request formats its line and enqueues it, and the
/// thread writes whatever has queued up in one buffered write, so a busy
/// gateway pays no write(2) per request on its workers. The queue is not
/// lossy: if the writer falls 64k lines behind, logging threads wait rather
/// than drop lines. The guard flushes what is queued when dropped.
fn init_logging(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(64 * 1024)
        .thread_name("switchyard-log")
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stderr(),
        ));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Pretty => builder.init(),
    }
    guard
}
