//! `qala-agent`: parse flags, read the config file, then run one command:
//! `scan`, `lookup`, `status`, `service`, `enroll`, `check-config` or
//! `quarantine` (each in a module of its own). The only place the agent
//! reads its environment: the user's base directories (for the default
//! places of its files) and what clap takes from `QALA_*` variables.

mod enroll;
mod lookup;
mod quarantine;
mod scan;
mod setup;
mod status;
#[cfg(windows)]
mod winsvc;

use clap::Parser;
use qala_agent::cli::{Cli, Command};
use qala_agent::client::{Client, Connect};
use qala_agent::config::{AgentConfig, IoNice};
use qala_agent::exit;
use qala_agent::os::dirs::{PrivateDirs, UserDirs};
use qala_agent::os::{self, IoClass};
use qala_agent::output::safe;
use std::path::PathBuf;

fn main() {
    qala_common::limit_malloc_arenas(2);
    let cli = Cli::parse();
    #[cfg(windows)]
    if let Command::WindowsService { action } = cli.command {
        std::process::exit(winsvc::command(cli, action, agent_main));
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    std::process::exit(agent_main(cli));
}

/// Run the command `cli` names; its exit code.
fn agent_main(cli: Cli) -> i32 {
    // An explicit --config must exist; the default one may not, nor the
    // one `setup` is to write.
    let explicit = (std::env::args_os().any(|a| a == "--config" || a.to_string_lossy().starts_with("--config="))
        || std::env::var_os("QALA_CONFIG").is_some())
        && !matches!(cli.command, Command::Setup { .. });
    let mut cfg = match AgentConfig::load(&cli.config, explicit) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("qala-agent: {}", safe_lines(&e.to_string()));
            return exit::ERROR;
        }
    };
    let user = user_dirs();
    // The service runs at low CPU and I/O priority: set before the runtime
    // starts its threads, which inherit it.
    if let Command::Service { flags } = &cli.command {
        cfg.apply_service_flags(flags.clone());
        let io = match cfg.limits.ionice {
            IoNice::Idle => IoClass::Idle,
            IoNice::BestEffort => IoClass::BestEffortLow,
            IoNice::None => IoClass::Unchanged,
        };
        for failed in os::lower_priority(cfg.limits.nice, io) {
            eprintln!("qala-agent: priority not lowered: {failed}");
        }
    }
    cfg.paths.fill(&PrivateDirs::new(os::is_root(), &user));
    // One thread for the agent's network and bookkeeping (file reads and
    // hashing go to blocking threads): an endpoint agent keeps off the cores
    // its host needs, and tasks handing work to each other on one thread
    // need no cross-thread wake-ups (measured: agent CPU in the throughput
    // benchmark, see the README).
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(run(cli, cfg)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("qala-agent: {}", safe_lines(&format!("{e:#}")));
            exit::ERROR
        }
    }
}

async fn run(cli: Cli, mut cfg: AgentConfig) -> anyhow::Result<i32> {
    qala_tls::install_crypto_provider();
    if let Command::CheckConfig = &cli.command {
        println!(
            "{}: ok: server {}, watch {:?} ({:?} backend, on_access {:?}), actions malicious={:?} suspicious={:?}, schedule {:?} every {} s, lookup_only {}",
            cli.config.display(),
            cfg.server.url.as_deref().unwrap_or("(not set: enroll)"),
            cfg.watch.paths,
            cfg.watch.backend,
            cfg.watch.on_access,
            cfg.actions.malicious,
            cfg.actions.suspicious,
            cfg.schedule.paths,
            cfg.schedule.interval.0.as_secs(),
            cfg.scan.lookup_only
        );
        return Ok(exit::CLEAN);
    }
    if let Command::Quarantine { dir, command } = &cli.command {
        let dir = dir.clone().or(cfg.paths.quarantine.clone()).unwrap_or_default();
        return quarantine::run(&dir, command);
    }
    if let Command::Setup { server, ca_file, join_token } = &cli.command {
        return setup::run(&cli, server.clone(), ca_file.clone(), join_token.clone(), cfg.paths.crl_cache.clone()).await;
    }
    // Not enrolled yet (installed before it could be): the service enrolls
    // with the join token `setup` left, or waits for one (or for `enroll`),
    // trying again every minute, rather than exit and fail its start.
    if matches!(cli.command, Command::Service { .. })
        && cfg.server.token_file.is_none()
        && cli.token_file.is_none()
        && cli.token.is_none()
        && cli.cert.is_none()
    {
        let pending = qala_agent::config::pending_join_token(&cli.config);
        loop {
            if pending.exists() {
                match setup::enroll_pending(&cli, &cli.config, cfg.paths.crl_cache.clone()).await {
                    Ok(()) => break,
                    Err(e) => tracing::warn!(error = %format!("{e:#}"), "enrollment failed; trying again in 60 s"),
                }
            } else {
                tracing::warn!(
                    config = %cli.config.display(),
                    "not enrolled: waiting for `qala-agent setup --join-token` or `qala-agent enroll`"
                );
            }
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(60)) => {}
                r = qala_agent::service::stop_requested() => {
                    r?;
                    return Ok(exit::CLEAN);
                }
            }
            if AgentConfig::load(&cli.config, false).is_ok_and(|c| c.server.token_file.is_some()) {
                break;
            }
        }
        let enrolled = AgentConfig::load(&cli.config, true)?;
        cfg.server = enrolled.server;
    }
    let server = cli.server.clone().or(cfg.server.url.clone()).unwrap_or_else(|| "https://127.0.0.1:7000".into());
    let ca = cli.ca.clone().or(cfg.server.ca.clone());
    if let Command::Enroll { join_token_file, token_out } = &cli.command {
        return enroll::run(&cli, &server, ca, cfg.paths.crl_cache.clone(), join_token_file, token_out.clone()).await;
    }
    let token_file = cli.token_file.clone().or(cfg.server.token_file.clone());
    let token = qala_tls::read_token(token_file.as_deref(), cli.token.as_deref())?;
    let identity = cli.cert.clone().zip(cli.key.clone());
    let client =
        Client::new(&Connect { server, ca, token, identity, insecure: cli.insecure, crl_file: cfg.paths.crl_cache.clone() })?
            .with_sightings(cfg.scan.sightings());
    let hostname = || gethostname::gethostname().to_string_lossy().into_owned();
    let agent_id = cli.agent_id.clone().or(cfg.server.agent_id.clone()).unwrap_or_else(hostname);
    match cli.command {
        Command::Quarantine { .. } | Command::Enroll { .. } | Command::CheckConfig | Command::Setup { .. } => {
            unreachable!("handled above")
        }
        #[cfg(windows)]
        Command::WindowsService { .. } => unreachable!("handled in main"),
        Command::Service { .. } => {
            let client = client.with_upload_rate(cfg.limits.upload_bytes_per_sec.0);
            qala_agent::service::run(cfg, client, agent_id).await?;
            Ok(exit::CLEAN)
        }
        Command::Scan { json, infected, no_progress, concurrency, threads, ref flags, ref paths } => {
            let asked =
                scan::Asked { json, infected, no_progress, concurrency, threads, flags: flags.clone(), paths: paths.clone() };
            scan::run(&cli, &cfg, client, agent_id, asked).await
        }
        // Asking about a hash is not holding it: no sightings.
        Command::Lookup { json, sha256 } => lookup::run(&client.with_sightings(false), json, sha256).await,
        Command::Status { json } => status::run(&client, json).await,
    }
}

/// An error over several lines (a TOML parse error points at the line),
/// each line made safe for a terminal.
fn safe_lines(text: &str) -> String {
    text.lines().map(|l| safe(l).into_owned()).collect::<Vec<_>>().join("\n")
}

/// The XDG base directories from the environment: `$XDG_*_HOME` when set
/// to an absolute path (the specification ignores relative ones), else
/// under `$HOME`.
#[cfg(windows)]
fn user_dirs() -> UserDirs {
    let var = |name: &str| std::env::var_os(name).map(PathBuf::from).filter(|p| p.is_absolute());
    let local = var("LOCALAPPDATA");
    UserDirs { state: local.clone(), data: local.clone(), cache: local, program_data: var("ProgramData") }
}

#[cfg(not(windows))]
fn user_dirs() -> UserDirs {
    let home = std::env::var_os("HOME").map(PathBuf::from).filter(|h| h.is_absolute());
    let base = |var: &str, fallback: &str| {
        std::env::var_os(var).map(PathBuf::from).filter(|p| p.is_absolute()).or_else(|| home.as_ref().map(|h| h.join(fallback)))
    };
    UserDirs {
        state: base("XDG_STATE_HOME", ".local/state"),
        data: base("XDG_DATA_HOME", ".local/share"),
        cache: base("XDG_CACHE_HOME", ".cache"),
        program_data: None,
    }
}
