//! What every answer carrying a verdict goes through before it leaves, by
//! whichever call and front door (after the IOC lists): an audit line for
//! each detection served, and what the caller's role may not see taken out.

use crate::audit::Audit;
use crate::auth::{Caller, Role};
use qala_proto::VerdictKind;
use qala_proto::v1 as pb;
use serde_json::json;
use std::sync::Arc;

pub struct Answers {
    audit: Arc<Audit>,
}

impl Answers {
    pub fn new(audit: Arc<Audit>) -> Self {
        Self { audit }
    }

    pub fn audit(&self) -> &Audit {
        &self.audit
    }

    /// An audit line for a detection served to `caller` by call `via`.
    pub fn served(&self, caller: &Caller, via: &str, v: &pb::Verdict) {
        if matches!(VerdictKind::of(v), VerdictKind::Malicious | VerdictKind::Suspicious) {
            let rules: Vec<String> = v.detections.iter().map(|d| format!("{}.{}", d.namespace, d.rule)).collect();
            self.audit.event(
                "verdict_served",
                Some(caller),
                json!({"via": via, "sha256": v.sha256, "verdict": VerdictKind::of(v).label(), "rules": rules}),
            );
        }
    }

    /// What of a verdict `caller` may see: the metadata of objects (a mail's
    /// headers: From, To, Subject) only for analysts and admins, and the
    /// digests of every object inside (analysts' data: an agent acts on the
    /// verdict, its detections and the IOC match, which name the object).
    pub fn for_caller(caller: &Caller, v: &mut pb::Verdict) {
        if !matches!(caller.role, Role::Analyst | Role::Admin) {
            v.object_meta.clear();
            v.objects.clear();
        }
    }

    /// A verdict without its executable summaries and object metadata
    /// (most of its size): what a scan's text output and an agent's
    /// actions need (`brief` in `LookupRequest` and `ScanHeader`).
    pub fn brief(v: &mut pb::Verdict) {
        v.executables.clear();
        v.object_meta.clear();
        v.objects.clear();
    }
}
