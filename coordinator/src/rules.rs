//! The rules in force: compiled once here, shipped to workers as bytes.
//!
//! A reload (SIGHUP, or a change noticed by polling the rule files) compiles
//! the whole set again off the async runtime. If any file fails, the errors
//! are logged and kept for `Status`, and the previous rules stay in force.

use qala_common::now_ms;
use qala_engine::{Limits, RuleFileError, RulesError, compile_rules, rules_fingerprint};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::signal::unix::Signal;
use tokio::sync::watch;
use tracing::{error, info};

/// A compiled ruleset as the coordinator keeps it: serialized, ready to ship.
#[derive(Debug)]
pub struct LoadedRules {
    pub id: String,
    pub bytes: Arc<Vec<u8>>,
    pub rule_count: u32,
    pub file_count: u32,
    /// Each file compiled: its path relative to the rules path, and its size.
    pub files: Vec<(String, u64)>,
    /// The compiler's warnings: file (relative to the rules path), message.
    pub warnings: Vec<(String, String)>,
    pub loaded_at_ms: i64,
    /// A what-if hunt's rules: shipped beside the rules in force, never current.
    pub what_if: bool,
}

#[derive(Default, Clone)]
pub struct ReloadFailure {
    pub errors: Vec<RuleFileError>,
    pub at_ms: i64,
}

pub struct RulesManager {
    path: PathBuf,
    /// The scan policy compiled into every ruleset.
    policy: Limits,
    current: watch::Sender<Arc<LoadedRules>>,
    last_failure: Mutex<Option<ReloadFailure>>,
    fingerprint: Mutex<String>,
    /// Serialises reloads so two triggers never compile at once.
    reload_lock: tokio::sync::Mutex<()>,
    /// Reloads that brought new rules into force, and reloads refused.
    reloads: std::sync::atomic::AtomicU64,
    reload_failures: std::sync::atomic::AtomicU64,
}

fn compile(path: PathBuf, policy: Limits) -> Result<(LoadedRules, String), RulesError> {
    let fingerprint = rules_fingerprint(&path)?;
    let ruleset = compile_rules(&path, &policy)?;
    let bytes = ruleset.to_bytes()?;
    Ok((
        LoadedRules {
            id: ruleset.id.clone(),
            bytes: Arc::new(bytes),
            rule_count: ruleset.rule_count as u32,
            file_count: ruleset.file_count as u32,
            files: ruleset.files.clone(),
            warnings: ruleset
                .warnings
                .iter()
                .map(|w| (w.path.strip_prefix(&path).unwrap_or(&w.path).display().to_string(), w.message.clone()))
                .collect(),
            loaded_at_ms: now_ms(),
            what_if: false,
        },
        fingerprint,
    ))
}

async fn compile_off_runtime(path: PathBuf, policy: Limits) -> Result<(LoadedRules, String), RulesError> {
    tokio::task::spawn_blocking(move || compile(path, policy)).await.unwrap_or_else(|e| {
        Err(RulesError::Compile(vec![RuleFileError { path: PathBuf::new(), message: format!("compiler crashed: {e}") }]))
    })
}

/// Most bytes of rules a what-if hunt may bring.
pub const MAX_WHAT_IF_BYTES: usize = 16 << 20;

/// Compile a what-if hunt's rules, `(file name, text)`, with the scan
/// policy in force; errors name the files as given.
pub fn compile_what_if(sources: &[(String, String)], policy: &Limits) -> Result<LoadedRules, RulesError> {
    let bad = |message: String| RulesError::Compile(vec![RuleFileError { path: PathBuf::new(), message }]);
    if sources.is_empty() {
        return Err(bad("no rules given".into()));
    }
    if sources.iter().map(|(n, t)| n.len() + t.len()).sum::<usize>() > MAX_WHAT_IF_BYTES {
        return Err(bad(format!("more than {} MiB of rules", MAX_WHAT_IF_BYTES >> 20)));
    }
    let dir = tempfile::tempdir().map_err(|e| bad(format!("a directory to compile in: {e}")))?;
    for (i, (name, text)) in sources.iter().enumerate() {
        // Only the file's own name, made safe; numbered so two files never clash.
        let stem: String = std::path::Path::new(name)
            .file_stem()
            .map(|s| s.to_string_lossy().chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect())
            .unwrap_or_default();
        std::fs::write(dir.path().join(format!("{i:04}_{stem}.yar")), text).map_err(|e| bad(format!("{name}: {e}")))?;
    }
    let ruleset = compile_rules(dir.path(), policy).map_err(|e| match e {
        RulesError::Compile(errors) => RulesError::Compile(
            errors
                .into_iter()
                .map(|mut f| {
                    let shown = f.path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
                    let i: usize = shown.get(..4).and_then(|n| n.parse().ok()).unwrap_or(usize::MAX);
                    let name = sources.get(i).map_or(shown.clone(), |s| s.0.clone());
                    f.message = f.message.replace(&f.path.display().to_string(), &name);
                    f.path = PathBuf::from(name);
                    f
                })
                .collect(),
        ),
        other => other,
    })?;
    let bytes = ruleset.to_bytes()?;
    Ok(LoadedRules {
        id: ruleset.id.clone(),
        bytes: Arc::new(bytes),
        rule_count: ruleset.rule_count as u32,
        file_count: ruleset.file_count as u32,
        files: sources.iter().map(|(n, t)| (n.clone(), t.len() as u64)).collect(),
        warnings: Vec::new(),
        loaded_at_ms: now_ms(),
        what_if: true,
    })
}

impl RulesManager {
    /// The scan policy compiled into every ruleset.
    pub fn policy(&self) -> &Limits {
        &self.policy
    }

    /// Compile the rules at `path`; fails if they do not compile (a
    /// coordinator never starts without rules).
    pub async fn load(path: PathBuf, policy: Limits) -> Result<Arc<Self>, RulesError> {
        info!(path = %path.display(), "compiling rules");
        let (rules, fingerprint) = compile_off_runtime(path.clone(), policy.clone()).await?;
        info!(
            ruleset_id = rules.id,
            rules = rules.rule_count,
            files = rules.file_count,
            bytes = rules.bytes.len(),
            "rules compiled"
        );
        let (current, _) = watch::channel(Arc::new(rules));
        Ok(Arc::new(Self {
            path,
            policy,
            current,
            last_failure: Mutex::new(None),
            fingerprint: Mutex::new(fingerprint),
            reload_lock: tokio::sync::Mutex::new(()),
            reloads: Default::default(),
            reload_failures: Default::default(),
        }))
    }

    /// The rule file or directory compiled.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    pub fn current(&self) -> Arc<LoadedRules> {
        self.current.borrow().clone()
    }

    /// Notified whenever new rules come into force.
    pub fn subscribe(&self) -> watch::Receiver<Arc<LoadedRules>> {
        self.current.subscribe()
    }

    /// (new rulesets brought into force, reloads refused) since start.
    pub fn reload_counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.reloads.load(Relaxed), self.reload_failures.load(Relaxed))
    }

    pub fn last_failure(&self) -> Option<ReloadFailure> {
        self.last_failure.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Compile again; on success the new rules come into force (if they
    /// differ), on failure the old ones stay and the errors are kept.
    pub async fn reload(&self) -> Result<bool, RulesError> {
        let _guard = self.reload_lock.lock().await;
        match compile_off_runtime(self.path.clone(), self.policy.clone()).await {
            Ok((rules, fingerprint)) => {
                *self.fingerprint.lock().unwrap_or_else(|p| p.into_inner()) = fingerprint;
                *self.last_failure.lock().unwrap_or_else(|p| p.into_inner()) = None;
                if rules.id == self.current().id {
                    return Ok(false);
                }
                info!(ruleset_id = rules.id, rules = rules.rule_count, files = rules.file_count, "new rules in force");
                self.current.send_replace(Arc::new(rules));
                self.reloads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok(true)
            }
            Err(e) => {
                let errors = match &e {
                    RulesError::Compile(list) => list.clone(),
                    other => vec![RuleFileError { path: self.path.clone(), message: other.to_string() }],
                };
                if let Ok(fp) = rules_fingerprint(&self.path) {
                    *self.fingerprint.lock().unwrap_or_else(|p| p.into_inner()) = fp;
                }
                for f in &errors {
                    error!(file = %f.path.display(), error = %f.message, "rule file failed to compile; previous rules stay in force");
                }
                *self.last_failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(ReloadFailure { errors, at_ms: now_ms() });
                self.reload_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Reload on `hup` (SIGHUP, installed by the caller as early as it can:
    /// the default action would kill the process) and whenever the rule files
    /// change (polled every `poll`), until `stop` flips.
    pub async fn watch(self: Arc<Self>, mut hup: Option<Signal>, poll: Duration, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let by_signal = tokio::select! {
                _ = stop.changed() => return,
                _ = async { match hup.as_mut() { Some(h) => { h.recv().await; } None => std::future::pending::<()>().await } } => true,
                _ = tick.tick() => false,
            };
            if !by_signal {
                let changed = match rules_fingerprint(&self.path) {
                    Ok(fp) => fp != *self.fingerprint.lock().unwrap_or_else(|p| p.into_inner()),
                    Err(_) => false,
                };
                if !changed {
                    continue;
                }
                info!("rule files changed; reloading");
            } else {
                info!("SIGHUP: reloading rules");
            }
            let _ = self.reload().await;
        }
    }
}
