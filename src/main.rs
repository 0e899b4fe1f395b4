//! Process entry: CLI dispatch, logging (installed from `logging`), the
//! runtime, exit codes (0 ok, 1 invalid table or runtime failure, 2 usage).

use clap::Parser;
use switchyard::cli::{self, Cli, Plan};
use switchyard::logging;

fn main() {
    let args = Cli::parse();
    logging::init(args.log_format, args.log_flush_ms);
    // Every batching thread has written its lines by the time `run`
    // returns (see `logging::block_on_batched`), so `exit` loses none.
    let result = run(args);
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
            logging::block_on_batched(&rt, cli::serve(*doc, origin, demo, file))?;
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
