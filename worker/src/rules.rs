//! The rulesets a worker holds, by id. The newest is current; a few older
//! ones stay so scans already queued with them still finish.

use crate::sandbox::Shipped;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

const KEEP: usize = 3;

#[derive(Default)]
pub struct RulesCache {
    sets: Mutex<VecDeque<Arc<Shipped>>>,
}

impl RulesCache {
    pub fn get(&self, id: &str) -> Option<Arc<Shipped>> {
        self.sets.lock().unwrap_or_else(|p| p.into_inner()).iter().find(|r| r.id == id).cloned()
    }

    pub fn current_id(&self) -> String {
        self.sets.lock().unwrap_or_else(|p| p.into_inner()).front().map(|r| r.id.clone()).unwrap_or_default()
    }

    pub fn insert(&self, rules: Arc<Shipped>) {
        let mut sets = self.sets.lock().unwrap_or_else(|p| p.into_inner());
        sets.retain(|r| r.id != rules.id);
        sets.push_front(rules);
        sets.truncate(KEEP);
    }
}
