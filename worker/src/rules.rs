//! The rulesets a worker holds, by id. The newest is current; a few older
//! ones stay so scans already queued with them still finish.

use crate::sandbox::Shipped;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

const KEEP: usize = 3;

/// What-if rulesets (a hunt's, beside the rules in force) kept.
const KEEP_WHAT_IF: usize = 2;

#[derive(Default)]
pub struct RulesCache {
    sets: Mutex<VecDeque<Arc<Shipped>>>,
    /// What-if hunts' rules: scanned with when a scan names them, never current.
    what_ifs: Mutex<VecDeque<Arc<Shipped>>>,
}

impl RulesCache {
    pub fn get(&self, id: &str) -> Option<Arc<Shipped>> {
        let found = self.sets.lock().unwrap_or_else(|p| p.into_inner()).iter().find(|r| r.id == id).cloned();
        found.or_else(|| self.what_ifs.lock().unwrap_or_else(|p| p.into_inner()).iter().find(|r| r.id == id).cloned())
    }

    /// Keep a what-if hunt's rules (the rules in force stay current).
    pub fn insert_what_if(&self, rules: Arc<Shipped>) {
        let mut sets = self.what_ifs.lock().unwrap_or_else(|p| p.into_inner());
        sets.retain(|r| r.id != rules.id);
        sets.push_front(rules);
        sets.truncate(KEEP_WHAT_IF);
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
