//! What-if hunts: rules given with the hunt, used for its scans only. The
//! sources are kept in the store beside the hunt, so whichever coordinator
//! runs it, or receives an agent's upload for it, compiles them itself
//! (once, then from memory); a scan under them is recorded in the hunt's
//! results and nowhere else: no verdict is stored or changed.

use crate::core::error::CoreError;
pub use crate::rules::MAX_WHAT_IF_BYTES;
use crate::rules::{LoadedRules, RulesManager, compile_what_if};
use crate::store::Guarded;
use crate::store::Record;
use crate::store::records::HuntRules;
use qala_proto::v1 as pb;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Most compiled what-if rulesets kept in memory.
const KEEP: usize = 4;

pub struct WhatIfs {
    store: Arc<Guarded>,
    rules: Arc<RulesManager>,
    compiled: Mutex<HashMap<String, Arc<LoadedRules>>>,
}

/// The errors of a what-if ruleset that does not compile, one line each.
pub fn compile_error(e: qala_engine::RulesError) -> CoreError {
    match e {
        qala_engine::RulesError::Compile(errors) => CoreError::Invalid(
            errors.iter().map(|f| format!("{}: {}", f.path.display(), f.message)).collect::<Vec<_>>().join("\n"),
        ),
        other => CoreError::Invalid(other.to_string()),
    }
}

impl WhatIfs {
    pub fn new(store: Arc<Guarded>, rules: Arc<RulesManager>) -> Self {
        Self { store, rules, compiled: Mutex::default() }
    }

    /// Compile `sources` with the policy in force (off the runtime).
    pub async fn compile(&self, sources: &[pb::RuleSource]) -> Result<LoadedRules, CoreError> {
        let sources: Vec<(String, String)> = sources.iter().map(|s| (s.name.clone(), s.text.clone())).collect();
        let policy = self.rules.policy().clone();
        tokio::task::spawn_blocking(move || compile_what_if(&sources, &policy))
            .await
            .map_err(|e| CoreError::Internal(format!("rules compiler: {e}")))?
            .map_err(compile_error)
    }

    /// The rules of what-if hunt `hunt_id`, while it is queued or running.
    pub async fn rules_of(&self, hunt_id: &str) -> Result<Arc<LoadedRules>, CoreError> {
        let hunt = self.store.get::<pb::Hunt>(hunt_id).await?;
        let live = hunt.as_ref().is_some_and(|h| h.what_if && matches!(h.state.as_str(), "queued" | "running"));
        if !live {
            self.compiled.lock().unwrap_or_else(|p| p.into_inner()).remove(hunt_id);
            return Err(CoreError::FailedPrecondition(format!("no what-if hunt {hunt_id:?} is running")));
        }
        if let Some(r) = self.compiled.lock().unwrap_or_else(|p| p.into_inner()).get(hunt_id) {
            return Ok(r.clone());
        }
        let Some(kept) = self.store.get::<HuntRules>(hunt_id).await? else {
            return Err(CoreError::Internal(format!("what-if hunt {hunt_id:?} has no rules in the store")));
        };
        let rules = Arc::new(self.compile(&kept.sources).await?);
        let mut compiled = self.compiled.lock().unwrap_or_else(|p| p.into_inner());
        if compiled.len() >= KEEP {
            compiled.clear();
        }
        compiled.insert(hunt_id.to_string(), rules.clone());
        Ok(rules)
    }

    /// A what-if hunt is done: its compiled rules and their sources go,
    /// and of its results only the matches stay.
    pub async fn finish(&self, hunt_id: &str) {
        self.compiled.lock().unwrap_or_else(|p| p.into_inner()).remove(hunt_id);
        let clean: Vec<String> = match self.store.all::<pb::HuntMatch>().await {
            Ok(all) => all
                .into_iter()
                .filter(|m| m.hunt_id == hunt_id && !pb::VerdictKind::try_from(m.verdict).unwrap_or_default().is_detection())
                .map(|m| m.key())
                .collect(),
            Err(e) => {
                tracing::warn!(hunt = hunt_id, error = %e, "what-if hunt: reading its results failed; they stay");
                return;
            }
        };
        let dropped = self.store.call(|s| s.delete_rows(<pb::HuntMatch as Record>::TABLE, &clean)).await;
        let rules = self.store.delete::<HuntRules>(hunt_id).await;
        if let Err(e) = dropped.map(|_| ()).and(rules.map(|_| ())) {
            tracing::warn!(hunt = hunt_id, error = %e, "what-if hunt: tidying up failed");
        }
    }

    /// Record what hunt `hunt_id`'s rules made of one content.
    pub async fn record(&self, hunt_id: &str, v: &pb::Verdict) -> Result<(), CoreError> {
        let m = pb::HuntMatch {
            hunt_id: hunt_id.to_string(),
            sha256: v.sha256.clone(),
            verdict: v.verdict,
            rules: v.detections.iter().map(|d| d.rule.clone()).take(64).collect(),
            size: v.size,
            at_ms: qala_common::now_ms(),
        };
        Ok(self.store.put(&m).await?)
    }
}
