//! What the service tells: one JSON line per event on standard output (the
//! journal under systemd), and each action on a detection reported to the
//! coordinator, which audits it. Reports wait in a bounded queue while the
//! coordinator is unreachable and are sent again with backoff.

use crate::client::Client;
use qala_common::now_ms;
use qala_proto::v1 as pb;
use serde_json::{Map, Value, json};
use std::io::Write;
use std::path::Path;
use std::time::Duration;
use tokio::sync::mpsc;

/// Action reports kept at most while the coordinator is away.
const MAX_PENDING_REPORTS: usize = 10_000;

#[derive(Clone)]
pub struct Events {
    reports: mpsc::Sender<pb::AgentAction>,
}

impl Events {
    /// The sink, and the task that sends action reports through `client`.
    pub fn start(client: Client, mut stop: tokio::sync::watch::Receiver<bool>) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<pb::AgentAction>(MAX_PENDING_REPORTS);
        let task = tokio::spawn(async move {
            let mut pending: Vec<pb::AgentAction> = Vec::new();
            let mut delay = Duration::from_millis(500);
            loop {
                if pending.is_empty() {
                    tokio::select! {
                        a = rx.recv() => match a { Some(a) => pending.push(a), None => return },
                        _ = stop.changed() => return,
                    }
                }
                while let Ok(a) = rx.try_recv() {
                    pending.push(a);
                }
                let batch: Vec<_> = pending.iter().take(500).cloned().collect();
                match client.report_actions(batch.clone()).await {
                    Ok(_) => {
                        pending.drain(..batch.len());
                        delay = Duration::from_millis(500);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e.message(), pending = pending.len(), "action report not sent; will retry");
                        if pending.len() > MAX_PENDING_REPORTS {
                            let extra = pending.len() - MAX_PENDING_REPORTS;
                            pending.drain(..extra);
                        }
                        let jitter = rand::Rng::random_range(&mut rand::rng(), 0..=delay.as_millis() as u64 / 2);
                        tokio::select! {
                            _ = tokio::time::sleep(delay + Duration::from_millis(jitter)) => {}
                            _ = stop.changed() => return,
                        }
                        delay = (delay * 2).min(Duration::from_secs(60));
                    }
                }
            }
        });
        (Self { reports: tx }, task)
    }

    /// Write one event line.
    pub fn emit(&self, event: &str, path: Option<&Path>, fields: Value) {
        let mut line = Map::new();
        line.insert("ts_ms".into(), json!(now_ms()));
        line.insert("event".into(), json!(event));
        if let Some(p) = path {
            line.insert("path".into(), json!(p.to_string_lossy()));
        }
        if let Value::Object(f) = fields {
            line.extend(f);
        }
        let mut text = Value::Object(line).to_string();
        text.push('\n');
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
    }

    /// Emit an action event and queue its report to the coordinator.
    pub fn action(&self, action: &str, path: &Path, sha256: &str, verdict: &str, rules: &[String], detail: &str) {
        self.emit(
            "action",
            Some(path),
            json!({"action": action, "sha256": sha256, "verdict": verdict, "rules": rules, "detail": detail}),
        );
        let report = pb::AgentAction {
            action: action.to_string(),
            path: path.to_string_lossy().into_owned(),
            sha256: sha256.to_string(),
            verdict: verdict.to_string(),
            rules: rules.to_vec(),
            at_ms: now_ms(),
            detail: detail.to_string(),
        };
        if self.reports.try_send(report).is_err() {
            tracing::warn!("action report queue full: report dropped (the event line above stays)");
        }
    }
}
