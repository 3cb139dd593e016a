//! `qala-agent`: scan paths, look up verdicts, show cluster status.

use clap::Parser;
use qala_agent::cli::{Cli, Command, QuarantineCommand};
use qala_agent::client::{Client, Connect};
use qala_agent::config::{AgentConfig, IoNice};
use qala_agent::output::{kind, safe, verdict_json, verdict_text};
use qala_agent::{exit, scan};
use qala_proto::VerdictKind;

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    // An explicit --config must exist; the default one may not.
    let explicit = std::env::args_os().any(|a| a == "--config" || a.to_string_lossy().starts_with("--config="))
        || std::env::var_os("QALA_CONFIG").is_some();
    let cfg = match AgentConfig::load(&cli.config, explicit) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("qala-agent: {}", safe_lines(&format!("{e:#}")));
            std::process::exit(exit::ERROR);
        }
    };
    // The service runs at low CPU and I/O priority: set before the runtime
    // starts its threads, which inherit it.
    if matches!(cli.command, Command::Service { .. }) {
        let io = match cfg.limits.ionice {
            IoNice::Idle => qala_agent::limits::IoClass::Idle,
            IoNice::BestEffort => qala_agent::limits::IoClass::BestEffortLow,
            IoNice::None => qala_agent::limits::IoClass::Unchanged,
        };
        for failed in qala_agent::limits::lower_priority(cfg.limits.nice, io) {
            eprintln!("qala-agent: priority not lowered: {failed}");
        }
    }
    // One thread for the agent's network and bookkeeping (file reads and
    // hashing go to blocking threads): an endpoint agent keeps off the cores
    // its host needs, and tasks handing work to each other on one thread
    // need no cross-thread wake-ups (measured: agent CPU in the throughput
    // benchmark, see the README).
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let code = match runtime.block_on(run(cli, cfg)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("qala-agent: {}", safe_lines(&format!("{e:#}")));
            exit::ERROR
        }
    };
    std::process::exit(code);
}

async fn run(cli: Cli, cfg: AgentConfig) -> anyhow::Result<i32> {
    qala_tls::install_crypto_provider();
    if let Command::CheckConfig = &cli.command {
        println!(
            "{}: ok: server {}, watch {:?} ({:?} backend, on_access {}), actions malicious={:?} suspicious={:?}, schedule {:?} every {} s, lookup_only {}",
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
        return quarantine(dir.clone().or(cfg.paths.quarantine.clone()), command);
    }
    let server = cli.server.clone().or(cfg.server.url.clone()).unwrap_or_else(|| "https://127.0.0.1:7000".into());
    let ca = cli.ca.clone().or(cfg.server.ca.clone());
    if let Command::Enroll { join_token_file, token_out } = &cli.command {
        return enroll(&cli, &server, ca, join_token_file, token_out.clone()).await;
    }
    let token_file = cli.token_file.clone().or(cfg.server.token_file.clone());
    let token = qala_tls::read_token(token_file.as_deref(), "QALA_TOKEN")?;
    let identity = cli.cert.clone().zip(cli.key.clone());
    let client = Client::new(&Connect { server, ca, token, identity, insecure: cli.insecure })?;
    let agent_id = cli.agent_id.clone().or(cfg.server.agent_id.clone()).unwrap_or_else(hostname);
    match cli.command {
        Command::Quarantine { .. } | Command::Enroll { .. } | Command::CheckConfig => unreachable!("handled above"),
        Command::Service { watch, on_access, lookup_only, malicious, suspicious, quarantine_dir, spool, cache } => {
            let mut cfg = cfg;
            cfg.watch.paths.extend(watch);
            cfg.watch.on_access |= on_access;
            cfg.scan.lookup_only |= lookup_only;
            cfg.actions.malicious = malicious.unwrap_or(cfg.actions.malicious);
            cfg.actions.suspicious = suspicious.unwrap_or(cfg.actions.suspicious);
            cfg.paths.quarantine = quarantine_dir.or(cfg.paths.quarantine);
            cfg.paths.spool = spool.or(cfg.paths.spool);
            cfg.paths.hash_cache = cache.or(cfg.paths.hash_cache);
            let client = client.with_upload_rate(cfg.limits.upload_bytes_per_sec.0);
            qala_agent::service::run(cfg, client, agent_id).await?;
            Ok(exit::CLEAN)
        }
        Command::Scan {
            json,
            infected,
            no_progress,
            concurrency,
            max_upload_rate,
            threads,
            exclude,
            max_file_size,
            one_file_system,
            no_cache,
            cache,
            lookup_only,
            upload_exclude,
            paths,
        } => {
            // One cheap call first: a missing, revoked or wrong-role token
            // is one clear line and exit 2, not an error per file.
            if let Err(e) = client.check_scan_access().await
                && matches!(e.code(), tonic::Code::Unauthenticated | tonic::Code::PermissionDenied)
            {
                eprintln!("qala-agent: not authorized ({:?}): {}", e.code(), safe(e.message()));
                return Ok(exit::ERROR);
            }
            let mut exclude = exclude;
            exclude.extend(cfg.scan.exclude.iter().cloned());
            let walk = qala_agent::walk::WalkOptions {
                threads: threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)),
                exclude,
                max_file_size: max_file_size.or(cfg.scan.max_file_size.map(|s| s.0)),
                one_file_system: one_file_system || cfg.scan.one_file_system,
                cache: scan::open_cache(no_cache, cache.or(cfg.paths.hash_cache.clone())),
            };
            let upload_exclude = if !upload_exclude.is_empty() {
                upload_exclude
            } else if let Some(list) = cfg.scan.upload_exclude.clone() {
                list
            } else {
                scan::DEFAULT_UPLOAD_EXCLUDE.iter().map(|g| g.to_string()).collect()
            };
            let lookup_only = lookup_only || cfg.scan.lookup_only;
            let client = client.with_upload_rate(max_upload_rate.unwrap_or(cfg.limits.upload_bytes_per_sec.0));
            let progress = !json && !no_progress && std::io::IsTerminal::is_terminal(&std::io::stderr());
            let opts =
                scan::ScanOptions { paths, json, infected, progress, concurrency, walk, agent_id, lookup_only, upload_exclude };
            Ok(scan::run(client, opts).await.exit_code())
        }
        Command::Lookup { json, sha256 } => lookup(&client, json, sha256).await,
        Command::Status { json } => status(&client, json).await,
    }
}

/// `quarantine list | restore | purge`.
fn quarantine(dir: Option<std::path::PathBuf>, command: &QuarantineCommand) -> anyhow::Result<i32> {
    use qala_agent::quarantine::Quarantine;
    let dir = dir.unwrap_or_else(Quarantine::default_dir);
    if !dir.exists() {
        anyhow::bail!("{}: no quarantine here", dir.display());
    }
    let q = Quarantine::open(&dir)?;
    match command {
        QuarantineCommand::List { json } => {
            for r in q.list()? {
                match r {
                    Ok(r) if *json => println!(
                        "{}",
                        serde_json::json!({
                            "id": r.id, "original_path": r.original_path, "sha256": r.sha256, "size": r.size,
                            "verdict": r.verdict, "rules": r.rules, "uid": r.uid, "gid": r.gid,
                            "mode": format!("{:o}", r.mode), "quarantined_ms": r.quarantined_ms,
                        })
                    ),
                    Ok(r) => println!(
                        "{}  {}  {} {}  {}",
                        r.id,
                        safe(&r.original_path.to_string_lossy()),
                        r.verdict,
                        r.rules.join(","),
                        r.sha256
                    ),
                    Err(e) => eprintln!("qala-agent: {e}"),
                }
            }
            Ok(exit::CLEAN)
        }
        QuarantineCommand::Restore { id } => {
            let path = q.restore(id)?;
            println!("{id} restored to {}", safe(&path.to_string_lossy()));
            Ok(exit::CLEAN)
        }
        QuarantineCommand::Purge { id } => {
            q.purge(id)?;
            println!("{id} purged");
            Ok(exit::CLEAN)
        }
    }
}

/// `enroll`: the join token for this agent's own token.
async fn enroll(
    cli: &Cli,
    server: &str,
    ca: Option<std::path::PathBuf>,
    join_token_file: &std::path::Path,
    token_out: Option<std::path::PathBuf>,
) -> anyhow::Result<i32> {
    let join = qala_tls::read_token(Some(join_token_file), "QALA_JOIN_TOKEN")?
        .ok_or_else(|| anyhow::anyhow!("{}: empty join token", join_token_file.display()))?;
    let client = Client::new(&Connect {
        server: server.to_string(),
        ca: ca.clone(),
        token: Some(join),
        identity: None,
        insecure: cli.insecure,
    })?;
    let resp = client
        .enroll(qala_agent::service::agent_info())
        .await
        .map_err(|e| anyhow::anyhow!("enrollment refused ({:?}): {}", e.code(), e.message()))?;
    let token_out =
        token_out.unwrap_or_else(|| cli.config.parent().map(|d| d.join("agent.token")).unwrap_or_else(|| "agent.token".into()));
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(d) = token_out.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(d)?;
        }
        let _ = std::fs::remove_file(&token_out);
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&token_out)?;
        writeln!(f, "{}", resp.token)?;
        f.sync_all()?;
    }
    let ca = ca.map(|c| std::path::absolute(&c).unwrap_or(c));
    let token_abs = std::path::absolute(&token_out).unwrap_or(token_out.clone());
    qala_agent::config::write_enrollment(&cli.config, server, ca.as_deref(), &token_abs, &resp.agent_id)?;
    println!("enrolled as {} ({} written, {} updated)", resp.agent_id, token_out.display(), cli.config.display());
    Ok(exit::CLEAN)
}

/// An error over several lines (a TOML parse error points at the line),
/// each line made safe for a terminal.
fn safe_lines(text: &str) -> String {
    text.lines().map(|l| safe(l).into_owned()).collect::<Vec<_>>().join("\n")
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_else(|_| "agent".into())
}

/// Verdicts by sha256 through the batch `Lookup` call (role agent or analyst).
async fn lookup(client: &Client, json: bool, digests: Vec<String>) -> anyhow::Result<i32> {
    let mut code = exit::CLEAN;
    let mut asked = Vec::new();
    for sha in digests {
        let sha = sha.to_ascii_lowercase();
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            eprintln!("{}: error: not a sha256 (64 hex digits)", safe(&sha));
            code = exit::ERROR;
            continue;
        }
        asked.push(sha);
    }
    if asked.is_empty() {
        return Ok(code);
    }
    let resp = match client.lookup_all(asked.clone(), false).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("qala-agent: lookup failed ({:?}): {}", e.code(), safe(e.message()));
            return Ok(exit::ERROR);
        }
    };
    let known: std::collections::HashMap<String, qala_proto::v1::Verdict> =
        resp.verdicts.into_iter().map(|v| (v.sha256.clone(), v)).collect();
    let mut detected = false;
    for sha in asked {
        let v = known.get(&sha);
        if json {
            let mut m = serde_json::Map::new();
            m.insert("sha256".into(), serde_json::json!(sha));
            match v {
                Some(v) => m.extend(verdict_json(v)),
                None => {
                    m.insert("verdict".into(), serde_json::json!("unknown"));
                    m.insert("ruleset_id".into(), serde_json::json!(resp.ruleset_id));
                }
            }
            println!("{}", serde_json::Value::Object(m));
        } else {
            match v {
                Some(v) => println!("{sha}: {}", verdict_text(v)),
                None => println!("{sha}: unknown"),
            }
        }
        if v.is_some_and(|v| matches!(kind(v), VerdictKind::Malicious | VerdictKind::Suspicious)) {
            detected = true;
        }
    }
    Ok(if detected { exit::DETECTED } else { code })
}

async fn status(client: &Client, json: bool) -> anyhow::Result<i32> {
    let s = client.status().await.map_err(|e| anyhow::anyhow!("status failed: {}", e.message()))?;
    let rules = s.rules.unwrap_or_default();
    if json {
        let v = serde_json::json!({
            "version": s.version,
            "store": s.store,
            "store_healthy": s.store_healthy,
            "busy_rejections": s.busy_rejections,
            "store_error": s.store_error,
            "rules": {
                "ruleset_id": rules.ruleset_id, "rule_count": rules.rule_count, "file_count": rules.file_count,
                "loaded_at_ms": rules.loaded_at_ms, "last_error_at_ms": rules.last_error_at_ms,
                "last_errors": rules.last_errors.iter().map(|e| serde_json::json!({"path": e.path, "message": e.message})).collect::<Vec<_>>(),
            },
            "workers": s.workers.iter().map(|w| serde_json::json!({
                "worker_id": w.worker_id, "address": w.address, "threads": w.threads, "ruleset_id": w.ruleset_id,
                "last_heartbeat_ms": w.last_heartbeat_ms, "in_flight": w.in_flight, "scanned": w.scanned,
            })).collect::<Vec<_>>(),
        });
        println!("{v}");
    } else {
        println!("coordinator {} store {}", s.version, s.store);
        if !s.store_healthy {
            println!("  store DEGRADED (scanning without the cache): {}", safe(&s.store_error));
        }
        println!("rules {} ({} rules from {} files)", rules.ruleset_id, rules.rule_count, rules.file_count);
        for e in &rules.last_errors {
            println!("  last reload failed: {}: {}", safe(&e.path), safe(e.message.lines().next().unwrap_or("")));
        }
        println!("{} live workers", s.workers.len());
        for w in &s.workers {
            println!(
                "  {} {} threads={} rules={} in_flight={} scanned={}",
                safe(&w.worker_id),
                safe(&w.address),
                w.threads,
                safe(&w.ruleset_id),
                w.in_flight,
                w.scanned
            );
        }
    }
    Ok(exit::CLEAN)
}
