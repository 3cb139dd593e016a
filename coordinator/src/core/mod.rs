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
//! | [`admin::Admin`] | client tokens, rule reloads |
//! | [`revocation::Revocation`] | revoked ids and certificates, revocation lists |
//! | [`workers::Workers`] | workers' registration and heartbeats |
//! | [`enrollment::Enrollment`] | workers' enrollment and renewal, join tokens' limits |
//! | [`agents::Agents`] | the fleet: agent enrollment, inventory, actions |
//! | [`rate::PerClient`] | rates per client of calls the upload quotas do not bound |
//! | [`feed::Feed`] | the detections feed |
//! | [`sightings::Sightings`] | which agent holds which content |
//! | [`notices::Notices`] | notices to the agents that hold a content |
//! | [`hunts::Hunts`] | content sighted on agents, judged again under new rules |
//! | [`status::Overview`] | status, load, rules listing, metrics |
//! | [`history::History`] | the last hour of the cluster's load, for the console |
//! | [`sessions::Sessions`] | the console's sessions |

pub mod admin;
pub mod agents;
pub mod answer;
pub mod digests;
pub mod enrollment;
pub mod error;
pub mod feed;
pub mod history;
pub mod hunts;
pub mod iocs;
pub mod join;
pub mod lookups;
pub mod notices;
pub mod rate;
pub mod revocation;
pub mod sessions;
pub mod shared;
pub mod sightings;
pub mod status;
pub mod upload;
pub mod workers;

pub use error::CoreError;

use crate::audit::Audit;
use crate::auth::{Auth, Caller, Credentials, Op};
use admin::Admin;
use agents::Agents;
use enrollment::{EnrollSettings, Enrollment};
use feed::Feed;
use hunts::{HuntSettings, Hunts};
use iocs::IocLists;
use lookups::Lookups;
use notices::Notices;
use revocation::Revocation;
use serde_json::{Value, json};
use shared::Shared;
use sightings::{SightingSettings, Sightings};
use status::{Overview, UploadLoad};
use std::sync::Arc;
use upload::{UploadSettings, Uploads};
use workers::Workers;

/// How the core is set up, from the coordinator's flags.
pub struct Settings {
    pub uploads: UploadSettings,
    /// Whether workers must prove who they are with certificates.
    pub tls: bool,
    /// How workers are enrolled (none without TLS).
    pub enrollment: Option<EnrollSettings>,
    /// Enrollments per minute per join token (workers' and agents').
    pub join_per_minute: u32,
    /// Actions an agent may report per minute.
    pub actions_per_minute: u32,
    /// How sightings are kept.
    pub sightings: SightingSettings,
    pub hunts: HuntSettings,
    pub sessions: sessions::SessionSettings,
}

pub struct Core {
    auth: Arc<Auth>,
    audit: Arc<Audit>,
    uploads: Uploads,
    lookups: Lookups,
    iocs: Arc<IocLists>,
    admin: Admin,
    revocation: Revocation,
    workers: Workers,
    enrollment: Enrollment,
    agents: Agents,
    feed: Feed,
    status: Overview,
    sightings: Arc<Sightings>,
    notices: Arc<Notices>,
    hunts: Arc<Hunts>,
    sessions: sessions::Sessions,
    history: Arc<history::History>,
}

impl Core {
    pub fn new(shared: Shared, settings: Settings) -> Self {
        let s = &shared;
        let join = Arc::new(join::JoinLimits::new(s.store.clone(), settings.join_per_minute));
        let sightings = Arc::new(Sightings::new(s, settings.sightings));
        let notices = Arc::new(Notices::new(s, sightings.clone()));
        let what_ifs = Arc::new(hunts::what_if::WhatIfs::new(s.store.clone(), s.rules.clone()));
        let hunts = Arc::new(Hunts::new(s, sightings.clone(), notices.clone(), what_ifs.clone(), settings.hunts));
        Self {
            uploads: Uploads::new(settings.uploads, s, sightings.clone(), what_ifs),
            lookups: Lookups::new(s, sightings.clone()),
            admin: Admin::new(s),
            revocation: Revocation::new(s, settings.enrollment.as_ref().and_then(|e| e.issuing.clone())),
            workers: Workers::new(s, settings.tls),
            enrollment: Enrollment::new(s, settings.enrollment, join.clone()),
            agents: Agents::new(s, join, settings.actions_per_minute, notices.clone()),
            feed: Feed::new(s),
            status: Overview::new(s),
            iocs: s.iocs.clone(),
            auth: s.auth.clone(),
            audit: s.audit.clone(),
            sightings,
            notices,
            hunts,
            sessions: sessions::Sessions::new(s, settings.sessions),
            history: Arc::new(history::History::new(s)),
        }
    }

    pub fn sessions(&self) -> &sessions::Sessions {
        &self.sessions
    }

    pub fn history(&self) -> &Arc<history::History> {
        &self.history
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

    /// Authenticate `creds` alone, before a front door reads what the
    /// caller sends; an unknown caller is audited as denied.
    pub fn identify(&self, creds: &Credentials) -> Result<Caller, CoreError> {
        let result = self.auth.authenticate(creds);
        if let Err(e @ CoreError::Unauthenticated(_)) = &result {
            let peer = creds.peer.map(|p| p.to_string());
            let fields = json!({"peer": peer, "op": "any", "code": e.audit_code(), "reason": e.to_string()});
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

    pub fn enrollment(&self) -> &Enrollment {
        &self.enrollment
    }

    pub fn revocation(&self) -> &Revocation {
        &self.revocation
    }

    pub fn agents(&self) -> &Agents {
        &self.agents
    }

    pub fn feed(&self) -> &Feed {
        &self.feed
    }

    pub fn sightings(&self) -> &Arc<Sightings> {
        &self.sightings
    }

    pub fn notices(&self) -> &Arc<Notices> {
        &self.notices
    }

    pub fn hunts(&self) -> &Arc<Hunts> {
        &self.hunts
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

    /// The same text for the plain metrics listener (no caller: it is
    /// kept to the cluster's network).
    pub fn plain_metrics(&self) -> String {
        self.status.render_metrics(self.load())
    }
}
