//! `qala-agent enroll`: a fleet join token traded for this agent's own
//! token, written beside the config file, which is told where it is.

use qala_agent::cli::Cli;
use qala_agent::client::{Client, Connect};
use qala_agent::exit;

/// The join token in `join_token_file` for this agent's own token.
pub async fn run(
    cli: &Cli,
    server: &str,
    ca: Option<std::path::PathBuf>,
    crl_file: Option<std::path::PathBuf>,
    join_token_file: &std::path::Path,
    token_out: Option<std::path::PathBuf>,
) -> anyhow::Result<i32> {
    let join = qala_tls::read_token(Some(join_token_file), None)?
        .ok_or_else(|| anyhow::anyhow!("{}: empty join token", join_token_file.display()))?;
    let client = Client::new(&Connect {
        server: server.to_string(),
        ca: ca.clone(),
        token: Some(join),
        identity: None,
        insecure: cli.insecure,
        crl_file,
    })?;
    let resp = client
        .enroll(qala_agent::service::agent_info())
        .await
        .map_err(|e| anyhow::anyhow!("enrollment refused ({:?}): {}", e.code(), e.message()))?;
    let token_out =
        token_out.unwrap_or_else(|| cli.config.parent().map(|d| d.join("agent.token")).unwrap_or_else(|| "agent.token".into()));
    {
        use std::io::Write;
        if let Some(d) = token_out.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(d)?;
        }
        let _ = std::fs::remove_file(&token_out);
        let mut f = qala_agent::os::create_private(&token_out)?;
        writeln!(f, "{}", resp.token)?;
        f.sync_all()?;
    }
    let ca = ca.map(|c| std::path::absolute(&c).unwrap_or(c));
    let token_abs = std::path::absolute(&token_out).unwrap_or(token_out.clone());
    qala_agent::config::write_enrollment(&cli.config, server, ca.as_deref(), &token_abs, &resp.agent_id)?;
    println!("enrolled as {} ({} written, {} updated)", resp.agent_id, token_out.display(), cli.config.display());
    Ok(exit::CLEAN)
}
