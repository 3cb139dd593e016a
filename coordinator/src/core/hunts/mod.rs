//! Hunts: content the agents were seen holding, judged again under the
//! rules in force. Verdicts are keyed by ruleset, so after a rule change
//! every content's verdict is unknown until it is scanned again; a hunt
//! takes the contents sighted in a window whose verdict under the rules in
//! force is unknown, asks one holder of each (an agent with a notice
//! stream open that uploads: never a lookup-only one) to upload it
//! through its ordinary path, and once the verdict is stored, sends a
//! changed detection to every holder as a `verdict` notice
//! ([`super::notices`]).
//!
//! The coordinator never holds a copy of the content: the agent uploads it
//! as any file (within its token's quotas, and only if its file still has
//! that sha256 and is not on a private or lookup-only path; otherwise it
//! declines), and the verdict is the one any upload of it makes. So a
//! hunt lowers no detection without a scan that says so, and a verdict
//! made under older rules is never served as current (the store keys
//! verdicts by ruleset).
//!
//! Hunts are kept in the store's `hunts` table; one runs at a time, by
//! whichever coordinator takes its lock, at the rate its admin set, asking
//! nothing while live uploads fill half the upload slots; the others wait
//! queued. Its counters and a cursor (every content of the scope sorting
//! before it is settled) are saved as it goes, so a coordinator that
//! restarts, or another one sharing the store, resumes it.

pub mod what_if;

use super::error::CoreError;
use super::notices::Notices;
use super::shared::Shared;
use super::sightings::Sightings;
use crate::audit::Audit;
use crate::auth::{Caller, Op};
use crate::rules::RulesManager;
use crate::store::Guarded;
use crate::store::records::{HuntRules, Presence, RulesetSeen};
use futures::StreamExt;
use qala_proto::v1::{self as pb, VerdictKind};
use serde_json::json;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};
use tracing::{info, warn};
use what_if::WhatIfs;

/// Most contents one hunt takes in scope.
pub const MAX_SCOPE: usize = 1_000_000;
/// The window when none is given.
pub const DEFAULT_SINCE: Duration = Duration::from_secs(30 * 86_400);
/// Uploads asked per second when no rate is given, and the most allowed.
pub const DEFAULT_RATE: f64 = 5.0;
pub const MAX_RATE: f64 = 1000.0;
/// Contents asked for at once.
const WINDOW: usize = 16;
/// Holders asked for one content before it is given up on.
const TRIES: usize = 3;
/// How often the hunts table is looked at, and a waited-for verdict.
const TICK: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(300);
/// A hunt's lock, renewed while it runs.
const LOCK_TTL: Duration = Duration::from_secs(30);
/// How many earlier rulesets a content's verdict before is looked for under.
const EARLIER: usize = 8;
/// Verdicts read at once.
const CHUNK: usize = 512;
/// How often a running hunt's counters are saved.
const SAVE_EVERY: Duration = Duration::from_secs(1);

/// How hunts run, from the coordinator's flags.
#[derive(Debug, Clone)]
pub struct HuntSettings {
    /// Start a hunt (window [`DEFAULT_SINCE`]) whenever new rules come into force.
    pub on_rules_change: bool,
    /// How long an asked holder has to upload or decline.
    pub ask_timeout: Duration,
}

impl Default for HuntSettings {
    fn default() -> Self {
        Self { on_rules_change: false, ask_timeout: Duration::from_secs(120) }
    }
}

/// One content of a scope: what is known of it from before.
#[derive(Debug, Clone)]
struct Item {
    sha256: String,
    /// Its verdict under the most recent earlier ruleset, if any.
    before: Option<pb::Verdict>,
}

/// The contents in scope, sorted by sha256.
struct Scope {
    items: Vec<Item>,
    bytes: u64,
    size_unknown: u64,
    truncated: bool,
}

/// What became of one content of a hunt.
enum Settled {
    Rescanned {
        changed: bool,
    },
    /// Scanned with a what-if hunt's rules; whether they matched.
    WhatIf {
        matched: bool,
    },
    JudgedMeanwhile {
        changed: bool,
    },
    NoHolderOnline,
    Declined,
    Unanswered,
    /// The hunt stopped (cancelled, its lock lost, the coordinator stopping).
    Stopped,
}

/// Agents with a notice stream open, and whether each uploads.
type Present = Arc<HashMap<String, bool>>;

pub struct Hunts {
    store: Arc<Guarded>,
    rules: Arc<RulesManager>,
    sightings: Arc<Sightings>,
    notices: Arc<Notices>,
    what_ifs: Arc<WhatIfs>,
    audit: Arc<Audit>,
    settings: HuntSettings,
    /// This coordinator's lock token.
    token: String,
    wake: Notify,
    /// The agents present, read at most every [`TICK`].
    present: Mutex<(Option<Instant>, Present)>,
}

/// Whether a verdict is a detection.
fn detection(kind: i32) -> bool {
    VerdictKind::try_from(kind).unwrap_or_default().is_detection()
}

fn check_types(types: &[String]) -> Result<(), CoreError> {
    if types.len() > 32 {
        return Err(CoreError::Invalid("at most 32 types".into()));
    }
    for t in types {
        if t.is_empty() || t.len() > 32 || !t.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
            return Err(CoreError::Invalid(format!("not a file type: {t:?}")));
        }
    }
    Ok(())
}

impl Hunts {
    pub fn new(
        s: &Shared,
        sightings: Arc<Sightings>,
        notices: Arc<Notices>,
        what_ifs: Arc<WhatIfs>,
        settings: HuntSettings,
    ) -> Self {
        Self {
            store: s.store.clone(),
            rules: s.rules.clone(),
            sightings,
            notices,
            what_ifs,
            audit: s.audit.clone(),
            settings,
            token: format!("{:032x}", rand::random::<u128>()),
            wake: Notify::new(),
            present: Mutex::new((None, Arc::default())),
        }
    }

    /// Queue a hunt (or, `dry_run`, only count its scope).
    pub async fn start(&self, caller: &Caller, req: pb::StartHuntRequest) -> Result<pb::Hunt, CoreError> {
        caller.require(Op::Admin)?;
        check_types(&req.types)?;
        let now = qala_common::now_ms();
        let since_ms = if req.since_ms == 0 { now - DEFAULT_SINCE.as_millis() as i64 } else { req.since_ms };
        if since_ms > now || since_ms < 0 {
            return Err(CoreError::Invalid(format!("since_ms {since_ms} is not a time before now")));
        }
        let rate = if req.rate == 0.0 { DEFAULT_RATE } else { req.rate };
        if !rate.is_finite() || rate <= 0.0 || rate > MAX_RATE {
            return Err(CoreError::Invalid(format!("rate must be above 0 and at most {MAX_RATE} per second")));
        }
        let mut hunt = pb::Hunt {
            id: format!("hunt-{:010x}", rand::random::<u64>() >> 24),
            state: "queued".into(),
            since_ms,
            types: req.types,
            max_size: req.max_size,
            rate,
            started_by: caller.name.clone(),
            created_ms: now,
            ..Default::default()
        };
        if !req.rules.is_empty() {
            // Checked now: a what-if hunt whose rules do not compile is refused.
            let compiled = self.what_ifs.compile(&req.rules).await?;
            hunt.what_if = true;
            hunt.what_if_rules = compiled.rule_count;
        }
        self.count(&mut hunt).await?;
        if req.dry_run {
            hunt.state = "dry run".into();
            return Ok(hunt);
        }
        if hunt.what_if {
            self.store.put(&HuntRules { hunt_id: hunt.id.clone(), sources: req.rules }).await?;
        }
        self.store.put(&hunt).await?;
        self.audit.event(
            "hunt_start",
            Some(caller),
            json!({"hunt": hunt.id, "since_ms": since_ms, "types": hunt.types, "max_size": hunt.max_size, "rate": rate, "what_if_rules": hunt.what_if_rules,
                   "in_scope": hunt.in_scope, "bytes_in_scope": hunt.bytes_in_scope}),
        );
        self.wake.notify_one();
        Ok(hunt)
    }

    /// Count `hunt`'s scope into it.
    async fn count(&self, hunt: &mut pb::Hunt) -> Result<(), CoreError> {
        let scope = self.scope(hunt, None).await?;
        hunt.ruleset_id = self.rules.current().id.clone();
        hunt.in_scope = scope.items.len() as u64;
        hunt.bytes_in_scope = scope.bytes;
        hunt.size_unknown = scope.size_unknown;
        hunt.scope_truncated = scope.truncated;
        Ok(())
    }

    pub async fn get(&self, caller: &Caller, id: &str) -> Result<pb::Hunt, CoreError> {
        caller.require(Op::Inventory)?;
        self.store.get::<pb::Hunt>(id).await?.ok_or_else(|| CoreError::NotFound(format!("no hunt {id:?}")))
    }

    pub async fn list(&self, caller: &Caller) -> Result<pb::ListHuntsResponse, CoreError> {
        caller.require(Op::Inventory)?;
        let mut hunts = self.store.all::<pb::Hunt>().await?;
        hunts.sort_by_key(|h| std::cmp::Reverse(h.created_ms));
        Ok(pb::ListHuntsResponse { hunts })
    }

    /// What a what-if hunt's rules matched.
    pub async fn matches(&self, caller: &Caller, id: &str) -> Result<pb::HuntMatchesResponse, CoreError> {
        let hunt = self.get(caller, id).await?;
        if !hunt.what_if {
            return Err(CoreError::FailedPrecondition(format!(
                "{id} is not a what-if hunt: its changes are verdicts, in sightings"
            )));
        }
        let mut matches: Vec<pb::HuntMatch> =
            self.store.all::<pb::HuntMatch>().await?.into_iter().filter(|m| m.hunt_id == id && detection(m.verdict)).collect();
        matches.sort_by(|a, b| a.sha256.cmp(&b.sha256));
        Ok(pb::HuntMatchesResponse { matches })
    }

    /// Stop a queued or running hunt (a running one stops within seconds).
    pub async fn cancel(&self, caller: &Caller, id: &str) -> Result<pb::Hunt, CoreError> {
        caller.require(Op::Admin)?;
        let mut hunt = self.store.get::<pb::Hunt>(id).await?.ok_or_else(|| CoreError::NotFound(format!("no hunt {id:?}")))?;
        if matches!(hunt.state.as_str(), "queued" | "running") {
            hunt.state = "cancelled".into();
            hunt.finished_ms = qala_common::now_ms();
            self.store.put(&hunt).await?;
            self.audit.event("hunt_cancel", Some(caller), json!({"hunt": id}));
        }
        Ok(hunt)
    }

    /// The contents a hunt takes: sighted since its `since_ms`, with no
    /// verdict under the rules in force, of its types and size; resuming,
    /// also those judged since it started (`judged_since`), so that a
    /// changed verdict made before a restart still reaches the holders.
    async fn scope(&self, hunt: &pb::Hunt, judged_since: Option<i64>) -> Result<Scope, CoreError> {
        self.sightings.flush().await;
        let (sighted, truncated) = self.store.call(|s| s.sighted_since(hunt.since_ms, MAX_SCOPE)).await?;
        let current = self.rules.current().id.clone();
        let mut earlier = self.store.all::<RulesetSeen>().await?;
        earlier.retain(|r| r.id != current);
        earlier.sort_by_key(|r| std::cmp::Reverse(r.first_ms));
        earlier.truncate(EARLIER);
        if hunt.what_if {
            // Every content in the window, whatever its verdict: what is
            // known of it (type, size) comes from the rules in force first.
            earlier.insert(0, RulesetSeen { id: current.clone(), first_ms: 0 });
        }
        let mut scope = Scope { items: Vec::new(), bytes: 0, size_unknown: 0, truncated };
        for chunk in sighted.chunks(CHUNK) {
            let judged: BTreeSet<String> = self
                .store
                .call(|s| s.get_many(&current, chunk))
                .await?
                .into_iter()
                .filter(|v| !hunt.what_if && !crate::store::expired(v) && judged_since.is_none_or(|t| v.scanned_at_ms < t))
                .map(|v| v.sha256)
                .collect();
            let mut before: HashMap<String, pb::Verdict> = HashMap::new();
            let unknown: Vec<String> = chunk.iter().filter(|h| !judged.contains(*h)).cloned().collect();
            for r in &earlier {
                let missing: Vec<String> = unknown.iter().filter(|h| !before.contains_key(*h)).cloned().collect();
                if missing.is_empty() {
                    break;
                }
                for v in self.store.call(|s| s.get_many(&r.id, &missing)).await? {
                    before.insert(v.sha256.clone(), v);
                }
            }
            for sha256 in unknown {
                let before = before.remove(&sha256);
                if !hunt.types.is_empty() && !before.as_ref().is_some_and(|v| hunt.types.contains(&v.file_type)) {
                    continue;
                }
                if hunt.max_size != 0 && before.as_ref().is_none_or(|v| v.size > hunt.max_size) {
                    continue;
                }
                match &before {
                    Some(v) => scope.bytes += v.size,
                    None => scope.size_unknown += 1,
                }
                scope.items.push(Item { sha256, before });
            }
        }
        Ok(scope)
    }

    /// The agents present (stream open somewhere), and whether each uploads.
    async fn present(&self) -> Arc<HashMap<String, bool>> {
        {
            let g = self.present.lock().unwrap_or_else(|p| p.into_inner());
            if g.0.is_some_and(|at| at.elapsed() < TICK) {
                return g.1.clone();
            }
        }
        let map: Arc<HashMap<String, bool>> = match self.store.all::<Presence>().await {
            Ok(all) => Arc::new(all.into_iter().map(|p| (p.agent_id, p.uploads)).collect()),
            Err(e) => {
                warn!(error = %e, "hunts: reading which agents are connected failed");
                Arc::default()
            }
        };
        *self.present.lock().unwrap_or_else(|p| p.into_inner()) = (Some(Instant::now()), map.clone());
        map
    }

    /// Run hunts, one at a time, until `stop`; `busy` says live uploads
    /// fill half the upload slots (a hunt asks nothing meanwhile).
    pub async fn run(self: Arc<Self>, busy: impl Fn() -> bool + Send + Sync + 'static, mut stop: watch::Receiver<bool>) {
        let busy = Arc::new(busy);
        let mut rules = self.rules.subscribe();
        let mut in_force = String::new();
        loop {
            let current = self.rules.current();
            if current.id != in_force {
                let first = in_force.is_empty();
                in_force = current.id.clone();
                if self.store.get::<RulesetSeen>(&current.id).await.ok().flatten().is_none() {
                    let seen = RulesetSeen { id: current.id.clone(), first_ms: qala_common::now_ms() };
                    if let Err(e) = self.store.put(&seen).await {
                        warn!(error = %e, "hunts: recording the rules in force failed");
                    }
                }
                if !first && self.settings.on_rules_change {
                    self.on_rules_change(&current.id).await;
                }
            }
            match self.next_hunt().await {
                Some(hunt) => self.run_one(hunt, busy.clone(), stop.clone()).await,
                None => {
                    tokio::select! {
                        _ = tokio::time::sleep(TICK) => {}
                        _ = self.wake.notified() => {}
                        _ = rules.changed() => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                }
            }
            if *stop.borrow() {
                return;
            }
        }
    }

    /// New rules came into force and `--hunt-on-rules-change` is set: one
    /// hunt per ruleset, however many coordinators see the change.
    async fn on_rules_change(&self, ruleset_id: &str) {
        let id = format!("rules-{}", &ruleset_id[..ruleset_id.len().min(16)]);
        if self.store.get::<pb::Hunt>(&id).await.ok().flatten().is_some() {
            return;
        }
        let now = qala_common::now_ms();
        let mut hunt = pb::Hunt {
            id: id.clone(),
            state: "queued".into(),
            since_ms: now - DEFAULT_SINCE.as_millis() as i64,
            rate: DEFAULT_RATE,
            started_by: "rules change".into(),
            created_ms: now,
            ..Default::default()
        };
        if let Err(e) = self.count(&mut hunt).await {
            warn!(error = %e, "hunts: counting a rules-change hunt failed");
            return;
        }
        match self.store.put(&hunt).await {
            Ok(()) => {
                self.audit.event("hunt_start", None, json!({"hunt": id, "ruleset_id": ruleset_id, "in_scope": hunt.in_scope}))
            }
            Err(e) => warn!(error = %e, "hunts: queueing a rules-change hunt failed"),
        }
    }

    /// The oldest hunt queued or running whose lock this coordinator takes.
    async fn next_hunt(&self) -> Option<pb::Hunt> {
        let mut hunts = match self.store.all::<pb::Hunt>().await {
            Ok(h) => h,
            Err(e) => {
                warn!(error = %e, "hunts: reading them failed");
                return None;
            }
        };
        hunts.retain(|h| matches!(h.state.as_str(), "queued" | "running"));
        hunts.sort_by_key(|h| (h.created_ms, h.id.clone()));
        // One at a time: only the oldest may run; the rest wait queued.
        let hunt = hunts.into_iter().next()?;
        self.store.lock(&lock_key(&hunt.id), &self.token, LOCK_TTL).await.then_some(hunt)
    }

    async fn run_one(
        self: &Arc<Self>,
        mut hunt: pb::Hunt,
        busy: Arc<impl Fn() -> bool + Send + Sync>,
        stop: watch::Receiver<bool>,
    ) {
        let id = hunt.id.clone();
        let resumed = hunt.state == "running";
        hunt.state = "running".into();
        if hunt.started_ms == 0 {
            hunt.started_ms = qala_common::now_ms();
        }
        let judged_since = resumed.then_some(hunt.started_ms);
        let scope = match self.scope(&hunt, judged_since).await {
            Ok(s) => s,
            Err(e) => {
                warn!(hunt = id, error = %e, "hunts: reading the scope failed; trying again");
                self.store.unlock(&lock_key(&id), &self.token).await;
                tokio::time::sleep(TICK).await;
                return;
            }
        };
        if !resumed {
            // Counted again as it starts: what was judged since it was queued is out.
            hunt.in_scope = scope.items.len() as u64;
            hunt.bytes_in_scope = scope.bytes;
            hunt.size_unknown = scope.size_unknown;
            hunt.scope_truncated = scope.truncated;
            hunt.ruleset_id = self.rules.current().id.clone();
        }
        let ahead: BTreeSet<String> = hunt.settled_ahead.iter().cloned().collect();
        let items: Vec<Item> =
            scope.items.into_iter().filter(|i| i.sha256 >= hunt.cursor && !ahead.contains(&i.sha256)).collect();
        info!(hunt = id, resumed, left = items.len(), "hunt running");
        let run = Arc::new(Run {
            hunt: Mutex::new(hunt),
            in_flight: Mutex::default(),
            stopped: std::sync::atomic::AtomicBool::new(false),
            saved: Mutex::new(Instant::now()),
            pace: tokio::sync::Mutex::new(Instant::now()),
        });
        if !self.save(&run, true).await {
            self.store.unlock(&lock_key(&id), &self.token).await;
            return;
        }
        let order: Vec<String> = items.iter().map(|i| i.sha256.clone()).collect();
        *run.in_flight.lock().unwrap_or_else(|p| p.into_inner()) = Flight { begun: 0, order, ..Default::default() };
        let tasks = futures::stream::iter(items).map(|item| {
            let (this, run, busy, stop) = (self.clone(), run.clone(), busy.clone(), stop.clone());
            async move {
                run.begin(&item.sha256);
                let settled = this.settle(&run, &item, &*busy, stop).await;
                (item, settled)
            }
        });
        // Futures are started in scope order, so every content not begun
        // sorts after every one begun.
        let mut tasks = tasks.buffer_unordered(WINDOW);
        while let Some((item, settled)) = tasks.next().await {
            if matches!(settled, Settled::Stopped) {
                run.stopped.store(true, std::sync::atomic::Ordering::Relaxed);
                continue;
            }
            {
                let mut h = run.hunt.lock().unwrap_or_else(|p| p.into_inner());
                match settled {
                    Settled::Rescanned { changed } => {
                        h.rescanned += 1;
                        h.changed += changed as u64;
                    }
                    Settled::WhatIf { matched } => {
                        h.rescanned += 1;
                        h.matched += matched as u64;
                    }
                    Settled::JudgedMeanwhile { changed } => {
                        h.judged_meanwhile += 1;
                        h.changed += changed as u64;
                    }
                    Settled::NoHolderOnline => h.no_holder_online += 1,
                    Settled::Declined => h.declined += 1,
                    Settled::Unanswered => h.unanswered += 1,
                    Settled::Stopped => {}
                }
            }
            run.end(&item.sha256);
            if !self.save(&run, false).await {
                run.stopped.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        if run.stopped.load(std::sync::atomic::Ordering::Relaxed) || *stop.borrow() {
            // Cancelled, its lock lost, or this coordinator stopping: what
            // is saved is where it resumes.
            if *stop.borrow() {
                self.save(&run, true).await;
            }
            self.store.unlock(&lock_key(&id), &self.token).await;
            return;
        }
        {
            let mut h = run.hunt.lock().unwrap_or_else(|p| p.into_inner());
            h.state = "done".into();
            h.finished_ms = qala_common::now_ms();
            h.cursor = String::new();
            h.settled_ahead.clear();
        }
        if self.save(&run, true).await {
            let h = run.hunt.lock().unwrap_or_else(|p| p.into_inner()).clone();
            info!(hunt = id, rescanned = h.rescanned, changed = h.changed, "hunt done");
            self.audit.event(
                "hunt_done",
                None,
                json!({"hunt": id, "in_scope": h.in_scope, "rescanned": h.rescanned, "changed": h.changed,
                       "no_holder_online": h.no_holder_online, "declined": h.declined, "unanswered": h.unanswered,
                       "judged_meanwhile": h.judged_meanwhile, "asked": h.asked}),
            );
        }
        if run.hunt.lock().unwrap_or_else(|p| p.into_inner()).what_if {
            self.what_ifs.finish(&id).await;
        }
        self.store.unlock(&lock_key(&id), &self.token).await;
    }

    /// Save the hunt's counters and cursor (at most every [`SAVE_EVERY`]
    /// unless `now`), renewing its lock; false if it must stop: cancelled,
    /// or another coordinator holds it.
    async fn save(&self, run: &Run, now: bool) -> bool {
        {
            let mut saved = run.saved.lock().unwrap_or_else(|p| p.into_inner());
            if !now && saved.elapsed() < SAVE_EVERY {
                return true;
            }
            *saved = Instant::now();
        }
        let mut hunt = run.hunt.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match self.store.get::<pb::Hunt>(&hunt.id).await {
            Ok(Some(stored)) if stored.state == "cancelled" => return false,
            Ok(None) => return false,
            _ => {}
        }
        if !self.store.relock(&lock_key(&hunt.id), &self.token, LOCK_TTL).await {
            warn!(hunt = hunt.id, "hunts: another coordinator holds this hunt now");
            return false;
        }
        if hunt.state == "running" {
            (hunt.cursor, hunt.settled_ahead) = run.cursor();
        }
        if let Err(e) = self.store.put(&hunt).await {
            warn!(hunt = hunt.id, error = %e, "hunts: saving progress failed");
        }
        true
    }

    /// Judge one content again: ask its holders in turn until one uploads
    /// it or all decline.
    async fn settle(
        &self,
        run: &Run,
        item: &Item,
        busy: &(impl Fn() -> bool + Send + Sync),
        stop: watch::Receiver<bool>,
    ) -> Settled {
        let sha = &item.sha256;
        let (hunt_id, rate, what_if) = {
            let h = run.hunt.lock().unwrap_or_else(|p| p.into_inner());
            (h.id.clone(), h.rate, h.what_if)
        };
        let mut tried = 0;
        let mut declined = 0;
        let holders = match self.sightings.holders_of(sha).await {
            Ok(h) => h,
            Err(e) => {
                warn!(hunt = hunt_id, error = %e, "hunts: reading who holds a content failed");
                return Settled::Stopped;
            }
        };
        loop {
            if run.stopped.load(std::sync::atomic::Ordering::Relaxed) || *stop.borrow() {
                return Settled::Stopped;
            }
            // Scanned for this what-if hunt already (before a restart).
            if what_if && let Ok(Some(m)) = self.store.get::<pb::HuntMatch>(&format!("{hunt_id}:{sha}")).await {
                return Settled::WhatIf { matched: detection(m.verdict) };
            }
            // Judged meanwhile (a live upload, another holder's rescan).
            if !what_if && let Ok(Some(v)) = self.judged(sha).await {
                // A changed detection reaches the holders whoever made it
                // (a live upload, this hunt before a restart).
                let changed = self.rescanned(&hunt_id, item, &v).await;
                return if tried > 0 { Settled::Rescanned { changed } } else { Settled::JudgedMeanwhile { changed } };
            }
            if tried >= TRIES {
                return if declined == tried { Settled::Declined } else { Settled::Unanswered };
            }
            let present = self.present().await;
            let candidates: Vec<&String> = holders.iter().filter(|a| present.get(*a) == Some(&true)).collect();
            // Each content starts at another holder (by its hash), spreading
            // a hunt's uploads over the fleet.
            let first = usize::from_str_radix(&sha[..2], 16).unwrap_or(0);
            let pick =
                (!candidates.is_empty() && tried < candidates.len()).then(|| candidates[(first + tried) % candidates.len()]);
            let Some(agent) = pick.cloned() else {
                return match tried {
                    0 => Settled::NoHolderOnline,
                    _ if declined == tried => Settled::Declined,
                    _ => Settled::Unanswered,
                };
            };
            // Paced, and live uploads first.
            run.pace(rate, busy, &stop).await;
            tried += 1;
            run.asked();
            let asked_ms = qala_common::now_ms();
            let reason =
                if what_if { format!("{hunt_id}: what-if scan") } else { format!("{hunt_id}: scan under the rules in force") };
            let cause = format!("{hunt_id}:{agent}:{sha}:{asked_ms}");
            let ask = pb::Notice {
                kind: "upload".into(),
                sha256: sha.clone(),
                reason,
                hunt_id: hunt_id.clone(),
                what_if,
                ..Default::default()
            };
            if let Err(e) = self.notices.notify(ask, &cause, Some(vec![agent.clone()])).await {
                warn!(hunt = hunt_id, error = %e, "hunts: asking for an upload failed");
                continue;
            }
            self.audit.event("hunt_ask", None, json!({"hunt": hunt_id, "sha256": sha, "agent_id": agent}));
            match self.wait(&hunt_id, what_if, sha, &agent, asked_ms, stop.clone()).await {
                Answer::WhatIf(matched) => return Settled::WhatIf { matched },
                Answer::Verdict(v) => return Settled::Rescanned { changed: self.rescanned(&hunt_id, item, &v).await },
                Answer::Declined => declined += 1,
                Answer::Nothing => {}
                Answer::Stopped => return Settled::Stopped,
            }
        }
    }

    /// Wait for `agent`'s upload of `sha` (the verdict stored under the
    /// rules in force) or its refusal, within the ask timeout.
    async fn wait(
        &self,
        hunt_id: &str,
        what_if: bool,
        sha: &str,
        agent: &str,
        asked_ms: i64,
        mut stop: watch::Receiver<bool>,
    ) -> Answer {
        let result_key = format!("{hunt_id}:{sha}");
        let deadline = Instant::now() + self.settings.ask_timeout;
        let action_key = format!("{sha}:{agent}");
        while Instant::now() < deadline {
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = stop.wait_for(|s| *s) => return Answer::Stopped,
            }
            if what_if {
                if let Ok(Some(m)) = self.store.get::<pb::HuntMatch>(&result_key).await {
                    return Answer::WhatIf(detection(m.verdict));
                }
            } else if let Ok(Some(v)) = self.judged(sha).await {
                return Answer::Verdict(Box::new(v));
            }
            if let Ok(Some(a)) = self.store.get::<pb::ActionRecord>(&action_key).await
                && a.action == "hunt_declined"
                && a.at_ms >= asked_ms
            {
                return Answer::Declined;
            }
        }
        Answer::Nothing
    }

    /// The content's verdict under the rules in force, if stored.
    async fn judged(&self, sha: &str) -> Result<Option<pb::Verdict>, CoreError> {
        let rules = self.rules.current();
        Ok(self.store.call(|s| s.get(&rules.id, sha)).await?.filter(|v| !crate::store::expired(v)))
    }

    /// `v` is the content's verdict under the rules in force: a detection
    /// that was not one before goes to every holder. Whether it changed.
    async fn rescanned(&self, hunt_id: &str, item: &Item, v: &pb::Verdict) -> bool {
        let changed = match &item.before {
            Some(b) => b.verdict != v.verdict,
            None => detection(v.verdict),
        };
        if changed && detection(v.verdict) {
            let rules: Vec<&str> = v.detections.iter().map(|d| d.rule.as_str()).take(8).collect();
            let reason = format!("{hunt_id}: {}", rules.join(", "));
            let cause = format!("{hunt_id}:verdict:{}", v.ruleset_id);
            match self.notices.notify(Notices::verdict_changed(&item.sha256, &reason, hunt_id), &cause, None).await {
                Ok(n) => self.audit.event("notice", None, json!({"sha256": item.sha256, "reason": reason, "agents": n})),
                Err(e) => warn!(hunt = hunt_id, error = %e, "hunts: a changed verdict's notice was not made"),
            }
        }
        changed
    }
}

enum Answer {
    Verdict(Box<pb::Verdict>),
    WhatIf(bool),
    Declined,
    Nothing,
    Stopped,
}

fn lock_key(id: &str) -> String {
    format!("hunt:{id}")
}

/// Contents of a running hunt begun and not settled, and how many of
/// its scope (in order) were begun.
#[derive(Default)]
struct Flight {
    started: BTreeSet<String>,
    /// Settled, and not yet behind the cursor.
    ended: BTreeSet<String>,
    begun: usize,
    order: Vec<String>,
}

/// A hunt as it runs here.
struct Run {
    hunt: Mutex<pb::Hunt>,
    in_flight: Mutex<Flight>,
    stopped: std::sync::atomic::AtomicBool,
    saved: Mutex<Instant>,
    /// When the next upload may be asked for.
    pace: tokio::sync::Mutex<Instant>,
}

impl Run {
    fn begin(&self, sha: &str) {
        let mut f = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        f.started.insert(sha.to_string());
        f.begun += 1;
    }

    fn end(&self, sha: &str) {
        let mut f = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        f.started.remove(sha);
        f.ended.insert(sha.to_string());
    }

    /// Every content of the scope sorting before the first is settled
    /// (`~` sorts after every sha256: all are), and so is each of the second.
    fn cursor(&self) -> (String, Vec<String>) {
        let mut f = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        let cursor = f.started.iter().next().or_else(|| f.order.get(f.begun)).cloned().unwrap_or_else(|| "~".into());
        f.ended = f.ended.split_off(&cursor);
        (cursor, f.ended.iter().cloned().collect())
    }

    fn asked(&self) {
        self.hunt.lock().unwrap_or_else(|p| p.into_inner()).asked += 1;
    }

    /// Wait for this hunt's next slot at `rate` per second, while live
    /// uploads fill half the upload slots.
    async fn pace(&self, rate: f64, busy: &(impl Fn() -> bool + Send + Sync), stop: &watch::Receiver<bool>) {
        let mut next = self.pace.lock().await;
        loop {
            let now = Instant::now();
            if *next > now {
                tokio::time::sleep(*next - now).await;
            }
            if !busy() || *stop.borrow() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        *next = Instant::now() + Duration::from_secs_f64(1.0 / rate);
    }
}
