//! Administration: client tokens and rule reloads, each audited
//! (revocations are [`super::revocation`]'s).

use super::error::CoreError;
use super::shared::Shared;
use crate::audit::Audit;
use crate::auth::{self, Auth, Caller, NewToken, Op, Role};
use crate::rules::RulesManager;
use crate::store::Guarded;
use qala_proto::v1 as pb;
use serde_json::json;
use std::sync::Arc;

pub struct Admin {
    store: Arc<Guarded>,
    auth: Arc<Auth>,
    rules: Arc<RulesManager>,
    audit: Arc<Audit>,
}

impl Admin {
    pub fn new(s: &Shared) -> Self {
        Self { store: s.store.clone(), auth: s.auth.clone(), rules: s.rules.clone(), audit: s.audit.clone() }
    }

    pub async fn add_token(&self, caller: &Caller, req: &pb::AddTokenRequest) -> Result<pb::AddTokenResponse, CoreError> {
        caller.require(Op::Admin)?;
        let role = Role::parse(&req.role).map_err(CoreError::Invalid)?;
        let new = NewToken {
            role,
            valid: (req.valid_secs > 0).then(|| std::time::Duration::from_secs(req.valid_secs)),
            max_uses: req.max_uses,
            replace: req.replace,
            given: None,
        };
        let name = req.name.as_str();
        let (token, mut record) = auth::add_token(&self.store, name, &new).await?;
        let _ = self.auth.refresh().await;
        self.audit.event(
            "admin",
            Some(caller),
            json!({"action": "token_added", "token_name": name, "token_role": role.label(), "expires_ms": record.expires_ms,
                   "max_uses": record.max_uses, "replaced": req.replace}),
        );
        record.sha256.clear();
        Ok(pb::AddTokenResponse { token, record: Some(record) })
    }

    pub async fn list_tokens(&self, caller: &Caller) -> Result<pb::ListTokensResponse, CoreError> {
        caller.require(Op::Admin)?;
        let mut tokens = self.store.all::<pb::TokenRecord>().await?;
        tokens.sort_by(|a, b| a.name.cmp(&b.name));
        for t in &mut tokens {
            t.sha256.clear();
        }
        Ok(pb::ListTokensResponse { tokens })
    }

    pub async fn revoke_token(&self, caller: &Caller, name: &str) -> Result<pb::RevokeTokenResponse, CoreError> {
        caller.require(Op::Admin)?;
        let revoked = self.store.delete::<pb::TokenRecord>(name).await?;
        let _ = self.auth.refresh().await;
        self.audit.event("admin", Some(caller), json!({"action": "token_revoked", "token_name": name, "existed": revoked}));
        Ok(pb::RevokeTokenResponse { revoked })
    }

    pub async fn reload_rules(&self, caller: &Caller) -> Result<pb::ReloadRulesResponse, CoreError> {
        caller.require(Op::Admin)?;
        let result = self.rules.reload().await;
        let ruleset_id = self.rules.current().id.clone();
        let (changed, errors) = match result {
            Ok(changed) => (changed, Vec::new()),
            Err(qala_engine::RulesError::Compile(list)) => (
                false,
                list.iter()
                    .map(|e| pb::RuleFileError { path: e.path.display().to_string(), message: e.message.clone() })
                    .collect(),
            ),
            Err(e) => (false, vec![pb::RuleFileError { path: String::new(), message: e.to_string() }]),
        };
        self.audit.event(
            "admin",
            Some(caller),
            json!({"action": "rules_reloaded", "ruleset_id": ruleset_id, "changed": changed, "errors": errors.len()}),
        );
        Ok(pb::ReloadRulesResponse { ruleset_id, changed, errors })
    }
}
