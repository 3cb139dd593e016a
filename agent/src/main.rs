//! `qala-agent`: scan paths, look up verdicts, show cluster status.

use clap::Parser;
use qala_agent::cli::{Cli, Command};
use qala_agent::client::{Client, Connect};
use qala_agent::output::{kind, safe, verdict_json, verdict_text};
use qala_agent::{exit, scan};
use qala_proto::VerdictKind;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let code = match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("qala-agent: {}", safe(&format!("{e:#}")));
            exit::ERROR
        }
    };
    std::process::exit(code);
}

async fn run(cli: Cli) -> anyhow::Result<i32> {
    qala_tls::install_crypto_provider();
    let token = qala_tls::read_token(cli.token_file.as_deref(), "QALA_TOKEN")?;
    let identity = cli.cert.clone().zip(cli.key.clone());
    let client =
        Client::new(&Connect { server: cli.server.clone(), ca: cli.ca.clone(), token, identity, insecure: cli.insecure })?;
    match cli.command {
        Command::Scan {
            json,
            concurrency,
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
            let walk = qala_agent::walk::WalkOptions {
                threads: threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)),
                exclude,
                max_file_size,
                one_file_system,
                cache: scan::open_cache(no_cache, cache),
            };
            let upload_exclude = if upload_exclude.is_empty() {
                scan::DEFAULT_UPLOAD_EXCLUDE.iter().map(|g| g.to_string()).collect()
            } else {
                upload_exclude
            };
            let opts = scan::ScanOptions {
                paths,
                json,
                concurrency,
                walk,
                agent_id: cli.agent_id.unwrap_or_else(hostname),
                lookup_only,
                upload_exclude,
            };
            Ok(scan::run(client, opts).await.exit_code())
        }
        Command::Lookup { json, sha256 } => lookup(&client, json, sha256).await,
        Command::Status { json } => status(&client, json).await,
    }
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
