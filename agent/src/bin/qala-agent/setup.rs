//! `qala-agent setup`: what an installer does on a new machine (the MSI's
//! custom action runs it): the config file's directory made private, the
//! server and a copy of the CA written into the config file, and a join
//! token traded for the agent's own token, now or, when the coordinator
//! cannot be reached, by the service at its next start.

use qala_agent::cli::Cli;
use qala_agent::config::{pending_join_token, write_server};
use qala_agent::exit;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A value an installer may pass empty (an MSI property not given).
fn given<T: AsRef<std::ffi::OsStr>>(v: &Option<T>) -> Option<&T> {
    v.as_ref().filter(|v| !v.as_ref().is_empty())
}

pub async fn run(
    cli: &Cli,
    server: Option<String>,
    ca_file: Option<String>,
    join_token: Option<String>,
    crl_cache: Option<PathBuf>,
) -> anyhow::Result<i32> {
    let config = std::path::absolute(&cli.config)?;
    let dir = config.parent().map(Path::to_path_buf).unwrap_or_else(|| ".".into());
    qala_agent::os::mkdir_private(&dir)?;
    let ca = match given(&ca_file).map(PathBuf::from) {
        Some(src) => {
            let pem = std::fs::read(&src).map_err(|e| anyhow::anyhow!("{}: {e}", src.display()))?;
            if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                anyhow::bail!("{}: not a PEM certificate", src.display());
            }
            let to = dir.join("ca.pem");
            replace_private(&to, &pem)?;
            Some(to)
        }
        None => None,
    };
    let server = given(&server).cloned();
    write_server(&config, server.as_deref(), ca.as_deref())?;
    println!(
        "{}: server {}, CA {}",
        config.display(),
        server.as_deref().unwrap_or("(kept)"),
        ca.as_ref().map_or("(kept)".into(), |c| c.display().to_string())
    );
    let Some(token) = given(&join_token) else { return Ok(exit::CLEAN) };
    let pending = pending_join_token(&config);
    replace_private(&pending, format!("{token}\n").as_bytes())?;
    match enroll_pending(cli, &config, crl_cache).await {
        Ok(()) => Ok(exit::CLEAN),
        Err(e) => {
            println!("not enrolled yet ({e:#}): the service enrolls with {} at its next start", pending.display());
            Ok(exit::CLEAN)
        }
    }
}

/// Enroll with the join token `setup` left beside the config file, and
/// remove it once the agent has its own token.
pub async fn enroll_pending(cli: &Cli, config: &Path, crl_cache: Option<PathBuf>) -> anyhow::Result<()> {
    let pending = pending_join_token(config);
    let cfg = qala_agent::config::AgentConfig::load(config, true)?;
    let server = cfg.server.url.clone().ok_or_else(|| anyhow::anyhow!("no server in {}", config.display()))?;
    crate::enroll::run(cli, &server, cfg.server.ca.clone(), crl_cache, &pending, None).await?;
    std::fs::remove_file(&pending)?;
    Ok(())
}

/// Write `data` to `path` as a new private file in place of any old one.
fn replace_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let mut f = qala_agent::os::create_private(path)?;
    f.write_all(data)?;
    f.sync_all()
}
