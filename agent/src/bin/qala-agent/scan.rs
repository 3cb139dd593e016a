//! `qala-agent scan PATH...`: the file's settings under the flags, one
//! cheap call to check the token first, then the scan.

use qala_agent::cli::Cli;
use qala_agent::client::Client;
use qala_agent::config::{AgentConfig, ScanFlags};
use qala_agent::output::safe;
use qala_agent::{exit, scan, walk};
use std::path::PathBuf;

/// What `scan` was asked besides its flags over the file.
pub struct Asked {
    pub json: bool,
    pub infected: bool,
    pub no_progress: bool,
    pub concurrency: usize,
    pub threads: Option<usize>,
    pub flags: ScanFlags,
    pub paths: Vec<PathBuf>,
}

pub async fn run(cli: &Cli, cfg: &AgentConfig, client: Client, agent_id: String, asked: Asked) -> anyhow::Result<i32> {
    // One cheap call first: a missing, revoked or wrong-role token is one
    // clear line and exit 2, not an error per file.
    if let Err(e) = client.check_scan_access().await
        && matches!(e.code(), tonic::Code::Unauthenticated | tonic::Code::PermissionDenied)
    {
        eprintln!("qala-agent: not authorized ({:?}): {}", e.code(), safe(e.message()));
        return Ok(exit::ERROR);
    }
    let _ = cli;
    let settings = cfg.scan_settings(asked.flags, qala_agent::os::PRIVATE_DATA);
    let walk = walk::WalkOptions {
        threads: asked.threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)),
        exclude: settings.exclude,
        max_file_size: settings.max_file_size,
        one_file_system: settings.one_file_system,
        cache: scan::open_cache(settings.cache),
    };
    let client = client.with_upload_rate(settings.upload_rate);
    let progress = !asked.json && !asked.no_progress && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let opts = scan::ScanOptions {
        // A link in a path named here is followed once (it was asked for);
        // below it, none is.
        paths: asked.paths.iter().map(|p| qala_agent::os::resolve_root(p)).collect(),
        json: asked.json,
        infected: asked.infected,
        progress,
        concurrency: asked.concurrency,
        walk,
        agent_id,
        lookup_only: settings.lookup_only,
        upload_exclude: settings.upload_exclude,
    };
    Ok(scan::run(client, opts).await.exit_code())
}
