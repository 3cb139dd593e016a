//! The services the parts of the core share, built once at start: the
//! store, the workers, the rules, authentication, the audit log, SIEM
//! export, the metrics, the IOC lists and the shaping of answers. Each
//! part keeps the handles it needs.

use super::answer::Answers;
use super::iocs::IocLists;
use crate::audit::Audit;
use crate::auth::Auth;
use crate::cluster::Cluster;
use crate::metrics::Metrics;
use crate::rules::RulesManager;
use crate::siem::Siem;
use crate::store::Guarded;
use std::sync::Arc;

#[derive(Clone)]
pub struct Shared {
    pub store: Arc<Guarded>,
    pub cluster: Arc<Cluster>,
    pub rules: Arc<RulesManager>,
    pub auth: Arc<Auth>,
    pub audit: Arc<Audit>,
    pub siem: Arc<Siem>,
    pub metrics: Arc<Metrics>,
    pub iocs: Arc<IocLists>,
    pub answers: Arc<Answers>,
}

impl Shared {
    /// The services given, and those made of them here (metrics, IOC lists,
    /// answers).
    pub fn new(
        store: Arc<Guarded>,
        cluster: Arc<Cluster>,
        rules: Arc<RulesManager>,
        auth: Arc<Auth>,
        audit: Arc<Audit>,
        siem: Arc<Siem>,
        ioc_writes_per_minute: u32,
    ) -> Self {
        let iocs = Arc::new(IocLists::new(store.clone(), audit.clone(), ioc_writes_per_minute));
        let answers = Arc::new(Answers::new(audit.clone()));
        Self { store, cluster, rules, auth, audit, siem, metrics: Arc::new(Metrics::new()), iocs, answers }
    }
}
