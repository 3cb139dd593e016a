//! `qala-agent status`: the coordinator's rules, workers and store.

use qala_agent::client::Client;
use qala_agent::exit;
use qala_agent::output::safe;

/// Print the coordinator's status, as text or JSON.
pub async fn run(client: &Client, json: bool) -> anyhow::Result<i32> {
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
