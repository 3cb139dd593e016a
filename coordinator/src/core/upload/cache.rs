//! The cache step of an upload: a verdict already stored for its content
//! under the rules in force answers it without a scan, if it carries the
//! digests of its nested objects that the IOC lists need now (an archive
//! scanned before the first md5 list lacks their md5s: it is scanned again).

use crate::core::iocs::IocLists;
use crate::store::Guarded;
use qala_proto::v1 as pb;
use std::sync::Arc;

pub struct Cache {
    store: Arc<Guarded>,
    iocs: Arc<IocLists>,
}

impl Cache {
    pub fn new(store: Arc<Guarded>, iocs: Arc<IocLists>) -> Self {
        Self { store, iocs }
    }

    /// The stored verdict that may answer for `sha256` now; a store error
    /// reads as none (degraded: scanned again, never wrong).
    pub async fn cached(&self, ruleset_id: &str, sha256: &str) -> Option<pb::Verdict> {
        let stored = self.store.call(|s| s.get(ruleset_id, sha256)).await.ok().flatten();
        stored.filter(|v| self.iocs.covers(v))
    }
}
