//! Endpoint agents as a fleet: enrollment (a join token traded for the
//! agent's own token), the inventory (who, where, which version, last seen)
//! and the actions agents take on detections, each audited.
//!
//! An agent is known by its token name: the inventory record it updates is
//! always the caller's own, whatever the request says.

use super::error::CoreError;
use super::join::JoinLimits;
use super::notices::Notices;
use super::rate::PerClient;
use super::revocation::crls_for;
use super::shared::Shared;
use crate::audit::Audit;
use crate::auth::{self, Auth, Caller, NewToken, Op, Role};
use crate::siem::Siem;
use crate::store::Guarded;
use qala_proto::v1 as pb;
use rand::RngCore;
use serde_json::json;
use std::sync::Arc;

/// Most actions accepted in one report.
const MAX_ACTIONS: usize = 1000;

pub struct Agents {
    store: Arc<Guarded>,
    auth: Arc<Auth>,
    audit: Arc<Audit>,
    siem: Arc<Siem>,
    join: Arc<JoinLimits>,
    /// Actions reported per agent and minute: forged reports of one agent
    /// cannot flood the SIEM export and the audit log.
    actions: PerClient,
    notices: Arc<Notices>,
}

/// Inventory fields come from the endpoint: bounded and printable.
fn field(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

/// `<host>-<16 hex>`: the host name cut to what a token name allows, and
/// 64 random bits, so no two machines share an id and nobody guesses one.
fn new_agent_id(hostname: &str) -> String {
    let host: String = hostname
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '-' })
        .take(47)
        .collect();
    let host = if host.is_empty() { "agent".to_string() } else { host };
    let mut suffix = [0u8; 8];
    rand::rng().fill_bytes(&mut suffix);
    format!("{host}-{}", hex::encode(suffix))
}

impl Agents {
    pub fn new(s: &Shared, join: Arc<JoinLimits>, actions_per_minute: u32, notices: Arc<Notices>) -> Self {
        Self {
            store: s.store.clone(),
            auth: s.auth.clone(),
            audit: s.audit.clone(),
            siem: s.siem.clone(),
            join,
            actions: PerClient::new("actions", actions_per_minute),
            notices,
        }
    }

    pub async fn enroll(&self, caller: &Caller, req: pb::EnrollAgentRequest) -> Result<pb::EnrollAgentResponse, CoreError> {
        caller.require(Op::EnrollAgent)?;
        self.join.spend(caller).await?;
        let info = req.info.unwrap_or_default();
        // A new id never takes an existing token's name (64 random bits:
        // a clash is a bug or an attack, not luck).
        let agent_id = new_agent_id(&info.hostname);
        let (token, _) = auth::add_token(&self.store, &agent_id, &NewToken::of(Role::Agent)).await?;
        let now = qala_common::now_ms();
        let record = pb::AgentRecord {
            agent_id: agent_id.clone(),
            hostname: field(&info.hostname, 255),
            os: field(&info.os, 255),
            version: field(&info.version, 64),
            enrolled_ms: now,
            last_seen_ms: now,
            last_peer: caller.peer.map(|p| p.to_string()).unwrap_or_default(),
            ..Default::default()
        };
        self.store.put(&record).await?;
        let _ = self.auth.refresh().await;
        self.audit.event(
            "agent_enrolled",
            Some(caller),
            json!({"agent_id": agent_id, "hostname": record.hostname, "os": record.os, "version": record.version}),
        );
        Ok(pb::EnrollAgentResponse { agent_id, token })
    }

    /// The caller's inventory record (made now for a token added by hand).
    async fn own_record(&self, caller: &Caller) -> Result<pb::AgentRecord, CoreError> {
        let found = self.store.get::<pb::AgentRecord>(&caller.name).await?;
        Ok(found.unwrap_or_else(|| pb::AgentRecord {
            agent_id: caller.name.clone(),
            enrolled_ms: qala_common::now_ms(),
            ..Default::default()
        }))
    }

    pub async fn checkin(&self, caller: &Caller, req: pb::CheckinRequest) -> Result<pb::CheckinResponse, CoreError> {
        caller.require(Op::AgentReport)?;
        let info = req.info.unwrap_or_default();
        let mut record = self.own_record(caller).await?;
        record.hostname = field(&info.hostname, 255);
        record.os = field(&info.os, 255);
        record.version = field(&info.version, 64);
        record.last_seen_ms = qala_common::now_ms();
        record.last_peer = caller.peer.map(|p| p.to_string()).unwrap_or_default();
        self.store.put(&record).await?;
        // What a notice stream that was down missed.
        let notices = self.notices.for_agent(&caller.name, req.notices_after_ms).await.unwrap_or_default();
        Ok(pb::CheckinResponse {
            server_time_ms: record.last_seen_ms,
            crls: crls_for(self.auth.crls(), &req.crl_digest),
            notices,
        })
    }

    pub async fn report_actions(
        &self,
        caller: &Caller,
        req: pb::ReportActionsRequest,
    ) -> Result<pb::ReportActionsResponse, CoreError> {
        caller.require(Op::AgentReport)?;
        if req.actions.len() > MAX_ACTIONS {
            return Err(CoreError::Invalid(format!("at most {MAX_ACTIONS} actions per report")));
        }
        self.actions.take(&caller.name, req.actions.len() as u32)?;
        // The last action on each content, for `sightings`.
        let latest: Vec<pb::ActionRecord> = req
            .actions
            .iter()
            .filter(|a| super::digests::valid_sha256(&a.sha256))
            .map(|a| pb::ActionRecord {
                agent_id: caller.name.clone(),
                sha256: a.sha256.clone(),
                action: field(&a.action, 64),
                at_ms: qala_common::now_ms(),
            })
            .collect();
        if !latest.is_empty() {
            self.store.put_all(&latest).await?;
        }
        for a in &req.actions {
            let fields = json!({
                "agent_id": caller.name,
                "action": field(&a.action, 64),
                "path": field(&a.path, 4096),
                "sha256": field(&a.sha256, 64),
                "verdict": field(&a.verdict, 32),
                "rules": a.rules.iter().take(64).map(|r| field(r, 256)).collect::<Vec<_>>(),
                "at_ms": a.at_ms,
                "detail": field(&a.detail, 1024),
            });
            let mut event = fields.clone();
            event["event"] = json!("agent_action");
            self.siem.send(event);
            self.audit.event("agent_action", Some(caller), fields);
        }
        let mut record = self.own_record(caller).await?;
        let now = qala_common::now_ms();
        record.actions += req.actions.len() as u64;
        record.last_seen_ms = now;
        if !req.actions.is_empty() {
            record.last_action_ms = now;
        }
        self.store.put(&record).await?;
        Ok(pb::ReportActionsResponse { recorded: req.actions.len() as u32 })
    }

    pub async fn list(&self, caller: &Caller) -> Result<pb::ListAgentsResponse, CoreError> {
        caller.require(Op::Inventory)?;
        let mut agents = self.store.all::<pb::AgentRecord>().await?;
        agents.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
        Ok(pb::ListAgentsResponse { agents })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_ids_are_token_names_and_unique() {
        let a = new_agent_id("ws-042.example.org");
        assert!(a.starts_with("ws-042.example.org-") && a.len() == "ws-042.example.org-".len() + 16);
        let long = new_agent_id(&"h".repeat(200));
        assert!(long.len() == 64 && auth::check_token_name(&long).is_ok(), "{long}");
        assert!(auth::check_token_name(&a).is_ok());
        assert_ne!(new_agent_id("x"), new_agent_id("x"));
        let odd = new_agent_id("bad host/\u{1b}[31m");
        assert!(auth::check_token_name(&odd).is_ok(), "{odd}");
        assert!(new_agent_id("").starts_with("agent-"));
    }
}
