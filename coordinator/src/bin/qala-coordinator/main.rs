//! `qala-coordinator`: parse flags, set up logging; then either run (bind
//! both listeners, serve until Ctrl-C or SIGTERM) or do one `pki`, `token`,
//! `agents` or `ioc` command ([`commands`]).

mod commands;
mod hunts;
mod target;

use clap::Parser;
use qala_coordinator::{Cli, Listeners};

/// Failure: one line on standard error (the causes joined), exit 1.
fn main() {
    qala_common::limit_malloc_arenas(2);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    if let Err(e) = runtime.block_on(run()) {
        eprintln!("qala-coordinator: {}", format!("{e:#}").replace('\n', " "));
        std::process::exit(1);
    }
}

async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        // Colour only on a terminal: not in journald, files or pipes.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    if let Some(command) = cli.command {
        return commands::run(command).await;
    }
    let config = cli.config;
    let bind = |addr: String| async move {
        tokio::net::TcpListener::bind(&addr).await.map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
    };
    let listeners = Listeners { api: bind(config.listen.clone()).await?, cluster: bind(config.cluster_listen.clone()).await? };
    Ok(qala_coordinator::run(config, listeners, shutdown_signal()).await?)
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
