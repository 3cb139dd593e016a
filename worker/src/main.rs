//! `qala-worker`: parse flags, set up logging, bind, run until Ctrl-C or
//! SIGTERM. Started with `__scan-child`, the same binary is a sandboxed scan
//! child of a worker instead (see `qala_worker::sandbox`).

use clap::Parser;
use qala_worker::Config;

/// Failure (flags, enrollment refused, a listener): one line on standard
/// error, the causes joined, and exit 1.
fn main() {
    if std::env::args_os().nth(1).is_some_and(|a| a == qala_worker::sandbox::CHILD_ARG) {
        qala_worker::sandbox::child::main();
    }
    if std::env::args_os().nth(1).is_some_and(|a| a == "health") {
        health();
    }
    if let Err(e) = run() {
        eprintln!("qala-worker: {}", format!("{e:#}").replace('\n', " "));
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        // Colour only on a terminal: not in journald, files or pipes.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = Config::parse();
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(async {
        let listener = tokio::net::TcpListener::bind(&config.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
        Ok(qala_worker::run(config, listener, shutdown_signal()).await?)
    })
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// `qala-worker health`: an exec probe of a running worker's health
/// endpoints (on its `--metrics-listen`).
#[derive(clap::Parser)]
#[command(
    name = "qala-worker health",
    about = "Ask a running worker whether it is ready (/readyz) or alive (--live); exit 0 if so"
)]
struct HealthArgs {
    /// The worker's --metrics-listen address (0.0.0.0 reaches this host).
    #[arg(long, env = "QALA_WORKER_METRICS_LISTEN", default_value = "127.0.0.1:9310")]
    address: String,
    /// Only whether the worker answers (/healthz), not whether it can scan.
    #[arg(long)]
    live: bool,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 5)]
    timeout_secs: u64,
}

fn health() -> ! {
    let a = HealthArgs::parse_from(std::env::args_os().skip(1));
    match qala_common::health::check(&a.address, a.live, std::time::Duration::from_secs(a.timeout_secs)) {
        Ok(body) => {
            println!("{}", body.trim());
            std::process::exit(0)
        }
        Err(e) => {
            eprintln!("qala-worker health: {e}");
            std::process::exit(1)
        }
    }
}
