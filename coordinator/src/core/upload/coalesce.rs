//! The coalescing step of an upload: concurrent uploads of one content
//! under one ruleset are scanned once. The first complete upload leads;
//! the others wait for its verdict. A leader that fails or goes away wakes
//! its waiters, and one of them takes over.

use crate::core::error::CoreError;
use qala_proto::v1 as pb;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// How a lead scan ended: `None` while it runs.
type Outcome = Option<Result<pb::Verdict, CoreError>>;

type InFlight = Arc<Mutex<HashMap<String, watch::Receiver<Outcome>>>>;

/// The scans in flight on this coordinator, by `RULESET:SHA256`.
#[derive(Default)]
pub struct Coalescer {
    inflight: InFlight,
}

/// An upload's place: it leads the scan of its content, or waits for it.
pub enum Turn {
    Leader(Leader),
    Waiter(Waiter),
}

impl Coalescer {
    /// Lead the scan of `key`, or wait for the one in flight.
    pub fn turn(&self, key: &str) -> Turn {
        let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rx) = map.get(key) {
            return Turn::Waiter(Waiter(rx.clone()));
        }
        let (tx, rx) = watch::channel(None);
        map.insert(key.to_string(), rx);
        Turn::Leader(Leader { key: key.to_string(), tx, map: self.inflight.clone() })
    }

    /// Scans in flight now.
    pub fn len(&self) -> usize {
        self.inflight.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The leader's slot in the in-flight map; removed however the leader ends,
/// and a dropped sender wakes the waiters so one of them takes over.
pub struct Leader {
    key: String,
    tx: watch::Sender<Outcome>,
    map: InFlight,
}

impl Leader {
    /// Tell the waiters how the scan ended.
    pub fn finish(self, result: &Result<pb::Verdict, CoreError>) {
        let _ = self.tx.send(Some(result.clone()));
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.key);
    }
}

/// An upload waiting for another's scan of its content.
pub struct Waiter(watch::Receiver<Outcome>);

impl Waiter {
    /// The leader's verdict; `None` if it failed or went away.
    pub async fn verdict(mut self) -> Option<pb::Verdict> {
        match self.0.wait_for(|o| o.is_some()).await.ok()?.clone() {
            Some(Ok(v)) => Some(v),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_get_the_leaders_verdict_and_take_over_when_it_fails() {
        let c = Coalescer::default();
        let Turn::Leader(leader) = c.turn("r:a") else { panic!("first is the leader") };
        let Turn::Waiter(waiter) = c.turn("r:a") else { panic!("second waits") };
        assert!(matches!(c.turn("r:b"), Turn::Leader(_)), "another content leads on its own");
        let v = pb::Verdict { sha256: "a".into(), ..Default::default() };
        leader.finish(&Ok(v.clone()));
        assert_eq!(waiter.verdict().await, Some(v));
        assert!(c.is_empty(), "gone from the map once finished");

        let Turn::Leader(leader) = c.turn("r:a") else { panic!() };
        let Turn::Waiter(waiter) = c.turn("r:a") else { panic!() };
        drop(leader);
        assert_eq!(waiter.verdict().await, None, "a leader gone away wakes its waiters");
        assert!(matches!(c.turn("r:a"), Turn::Leader(_)), "and one of them leads");
    }
}
