//! The coordinator core: every operation a client or worker can ask for,
//! whatever protocol it came in by. gRPC, REST and clamd are thin adapters
//! over it: they find the credentials and the bytes, the core authenticates
//! ([`Core::caller`]), checks the role, applies quotas, does the work and
//! writes the audit line, once for all of them, and answers in its own
//! words ([`CoreError`]), which each adapter maps to its protocol's.
//!
//! [`Core`] only composes parts that own their state:
//!
//! | part | what it does |
//! |---|---|
//! | [`upload::Uploads`] | the path of an upload, entry to stored verdict ([`upload`]) |
//! | [`lookups::Lookups`] | verdicts by hash, without an upload |
//! | [`iocs::IocLists`] | the hash IOC lists, applied to every answer |
//! | [`admin::Admin`] | client tokens, rule reloads, revocations |
//! | [`workers::Workers`] | workers' registration, heartbeats and enrollment |
//! | [`agents::Agents`] | the fleet: agent enrollment, inventory, actions |
//! | [`feed::Feed`] | the detections feed |
//! | [`status::Overview`] | status, load, rules listing, metrics |

pub mod admin;
pub mod agents;
pub mod answer;
pub mod digests;
pub mod error;
pub mod feed;
pub mod iocs;
pub mod lookups;
pub mod shared;
pub mod status;
pub mod upload;
pub mod workers;

pub use error::CoreError;

use crate::audit::Audit;
use crate::auth::{Auth, Caller, Credentials, Op};
use admin::Admin;
use agents::Agents;
use feed::Feed;
use iocs::IocLists;
use lookups::Lookups;
use serde_json::{Value, json};
use shared::Shared;
use status::{Overview, UploadLoad};
use std::sync::Arc;
use upload::{UploadSettings, Uploads};
use workers::{Enrollment, Workers};

/// How the core is set up, from the coordinator's flags.
pub struct Settings {
    pub uploads: UploadSettings,
    /// Whether workers must prove who they are with certificates.
    pub tls: bool,
    /// CA material to enroll workers with, if this coordinator has it.
    pub enrollment: Option<Enrollment>,
}

pub struct Core {
    auth: Arc<Auth>,
    audit: Arc<Audit>,
    uploads: Uploads,
    lookups: Lookups,
    iocs: Arc<IocLists>,
    admin: Admin,
    workers: Workers,
    agents: Agents,
    feed: Feed,
    status: Overview,
}

impl Core {
    pub fn new(shared: Shared, settings: Settings) -> Self {
        let s = &shared;
        Self {
            uploads: Uploads::new(settings.uploads, s),
            lookups: Lookups::new(s),
            admin: Admin::new(s),
            workers: Workers::new(s, settings.tls, settings.enrollment),
            agents: Agents::new(s),
            feed: Feed::new(s),
            status: Overview::new(s),
            iocs: s.iocs.clone(),
            auth: s.auth.clone(),
            audit: s.audit.clone(),
        }
    }

    /// Authenticate `creds` and check that the caller may do `op`; a refusal
    /// is audited (the boundary every front door crosses).
    pub fn caller(&self, creds: &Credentials, op: Op) -> Result<Caller, CoreError> {
        let result = self.auth.authenticate(creds).and_then(|c| c.require(op).map(|_| c));
        if let Err(e) = &result
            && !matches!(e, CoreError::Unavailable(_))
        {
            let peer = creds.peer.map(|p| p.to_string());
            let fields = json!({"peer": peer, "op": format!("{op:?}"), "code": e.audit_code(), "reason": e.to_string()});
            self.audit.event("denied", None, fields);
        }
        result
    }

    /// An audit line a front door writes itself (a clamd session's tally,
    /// a peer refused before it could say who it is).
    pub fn audit(&self, event: &str, caller: Option<&Caller>, fields: Value) {
        self.audit.event(event, caller, fields);
    }

    pub fn uploads(&self) -> &Uploads {
        &self.uploads
    }

    pub fn lookups(&self) -> &Lookups {
        &self.lookups
    }

    pub fn iocs(&self) -> &Arc<IocLists> {
        &self.iocs
    }

    pub fn admin(&self) -> &Admin {
        &self.admin
    }

    pub fn workers(&self) -> &Workers {
        &self.workers
    }

    pub fn agents(&self) -> &Agents {
        &self.agents
    }

    pub fn feed(&self) -> &Feed {
        &self.feed
    }

    pub fn overview(&self) -> &Overview {
        &self.status
    }

    fn load(&self) -> UploadLoad {
        UploadLoad { in_progress: self.uploads.in_progress(), busy_rejections: self.uploads.busy_rejections() }
    }

    /// The `Status` call: rules, live workers, store, busy refusals.
    pub fn status(&self, caller: &Caller) -> Result<qala_proto::v1::StatusResponse, CoreError> {
        self.status.status(caller, self.load())
    }

    /// The Prometheus text, gauges read from every part now.
    pub fn metrics(&self, caller: &Caller) -> Result<String, CoreError> {
        self.status.metrics(caller, self.load())
    }
}
