//! `qala-agent service`: the long-lived process the systemd unit runs.
//! Real-time watch (inotify, or fanotify as root) and optional on-access
//! blocking, scheduled rescans and the offline spool's drain, all feeding
//! one [`pipeline::Pipeline`]; check-ins keep the coordinator's inventory
//! current and every action taken is reported to it.

pub mod events;
pub mod notices;
#[cfg(target_os = "linux")]
pub mod on_access;
pub mod pipeline;
pub mod spool;
pub mod watch;

use crate::client::Client;
use crate::config::{AgentConfig, WatchBackend};
use crate::walk::{Excludes, WalkOptions};
use events::Events;
use pipeline::{Memo, Pipeline};
use qala_proto::v1 as pb;
use serde_json::json;
use spool::Spool;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use tokio::sync::{mpsc, watch as tokio_watch};

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    Config(String),
    #[error("{0}: {1}")]
    Io(&'static str, #[source] std::io::Error),
}

/// What this machine is, for the inventory.
pub fn agent_info() -> pb::AgentInfo {
    pb::AgentInfo {
        hostname: gethostname::gethostname().to_string_lossy().into_owned(),
        os: crate::os::os_description(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

fn glob_escape(p: &Path) -> String {
    let mut out = String::new();
    for c in p.to_string_lossy().chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Asked to stop: SIGTERM or SIGINT.
#[cfg(unix)]
pub async fn stop_requested() -> Result<(), ServiceError> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| ServiceError::Io("SIGTERM handler", e))?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}

/// Set by the Windows service's control handler when the service manager
/// asks the service to stop (or the system shuts down).
#[cfg(windows)]
pub static STOP: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Asked to stop: Ctrl+C, or the service manager ([`STOP`]).
#[cfg(windows)]
pub async fn stop_requested() -> Result<(), ServiceError> {
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = STOP.notified() => {}
    }
    Ok(())
}

/// Run the service until SIGTERM or SIGINT (Windows: Ctrl+C or [`STOP`]). `cfg`'s paths are filled in
/// (see [`crate::config::PathsConfig::fill`]).
pub async fn run(cfg: AgentConfig, client: Client, agent_id: String) -> Result<(), ServiceError> {
    let root = crate::os::is_root();
    let refuse = |why: &str| Err(ServiceError::Config(why.to_string()));
    let backend = match cfg.watch.backend {
        WatchBackend::Auto if root => WatchBackend::Fanotify,
        WatchBackend::Auto => WatchBackend::Inotify,
        WatchBackend::Fanotify if !root => return refuse("watch.backend = \"fanotify\" needs root (CAP_SYS_ADMIN)"),
        b => b,
    };
    if cfg.watch.on_access.on() && !root {
        return refuse("watch.on_access needs root (fanotify permission events need CAP_SYS_ADMIN)");
    }
    if cfg.watch.on_access.on() && cfg.watch.paths.is_empty() {
        return refuse("watch.on_access is set but watch.paths is empty");
    }
    let (Some(quarantine_dir), Some(spool_path)) = (cfg.paths.quarantine.clone(), cfg.paths.spool.clone()) else {
        return refuse("paths.quarantine and paths.spool are not set");
    };
    let cache_path = cfg.paths.hash_cache.clone();

    crate::limits::set_cpu_share(cfg.limits.cpu_percent);
    // The agent's own files are never scanned (a quarantined file is
    // defanged; the spool and cache change all the time).
    let mut exclude = cfg.scan.exclude.clone();
    exclude.push(format!("{}/**", glob_escape(&quarantine_dir)));
    for own in [Some(&spool_path), cache_path.as_ref(), cfg.paths.held.as_ref()].into_iter().flatten() {
        if let Some(dir) = own.parent() {
            exclude.push(format!("{}/.*.tmp", glob_escape(dir)));
        }
        exclude.push(glob_escape(own));
    }
    let excludes = Arc::new(Excludes::new(&exclude).map_err(|e| ServiceError::Config(format!("scan.exclude: {e}")))?);
    let private_globs: Vec<String> =
        cfg.scan.upload_exclude.clone().unwrap_or_else(|| crate::os::PRIVATE_DATA.iter().map(|s| s.to_string()).collect());
    let private = Excludes::new(&private_globs).map_err(|e| ServiceError::Config(format!("scan.upload_exclude: {e}")))?;
    let cache = cache_path.map(|p| Arc::new(crate::cache::HashCache::open(p)));
    let held = cfg.paths.held.clone().map(|p| Arc::new(crate::held::HeldIndex::open(p)));
    let spool = Arc::new(Spool::open(&spool_path, cfg.paths.spool_max));
    let quarantine = match crate::quarantine::Quarantine::open(&quarantine_dir) {
        Ok(q) => Some(q),
        Err(e) => {
            tracing::warn!(dir = %quarantine_dir.display(), error = %e, "no quarantine: quarantine actions will fail");
            None
        }
    };

    let (stop_tx, stop_rx) = tokio_watch::channel(false);
    let (events, reporter) = Events::start(client.clone(), stop_rx.clone());
    let memo = Arc::new(Memo::default());
    let pipeline = Arc::new(Pipeline {
        client: client.clone(),
        events: events.clone(),
        spool: spool.clone(),
        memo: memo.clone(),
        quarantine,
        actions: cfg.actions,
        walk: WalkOptions {
            threads: cfg.limits.threads.max(1),
            exclude: Vec::new(),
            max_file_size: cfg.scan.max_file_size.map(|s| s.0),
            one_file_system: cfg.scan.one_file_system,
            cache: cache.clone(),
        },
        excludes: excludes.clone(),
        private,
        lookup_only: cfg.scan.lookup_only,
        agent_id: agent_id.clone(),
        concurrency: 4,
        online: AtomicBool::new(true),
        cache_saved: std::sync::Mutex::new(std::time::Instant::now()),
        held: held.clone(),
        sightings: cfg.scan.sightings(),
        gone: Default::default(),
    });
    let (jobs_tx, jobs_rx) = mpsc::channel::<Vec<PathBuf>>(256);
    let worker = tokio::spawn(pipeline.clone().run(jobs_rx, stop_rx.clone()));
    tokio::spawn(pipeline.clone().drain(stop_rx.clone()));

    // Watch: backend -> debouncer -> jobs.
    let (watch_tx, watch_rx) = mpsc::channel::<PathBuf>(65_536);
    let mut _inotify = None;
    // The links in the paths the admin named are followed once, here.
    let watch_paths: Vec<PathBuf> = cfg.watch.paths.iter().map(|p| crate::os::resolve_root(p)).collect();
    if !watch_paths.is_empty() {
        match backend {
            #[cfg(target_os = "linux")]
            WatchBackend::Fanotify => {
                crate::os::fanotify::watch(&watch_paths, watch_tx.clone()).map_err(|e| ServiceError::Io("fanotify watch", e))?;
            }
            #[cfg(target_os = "linux")]
            _ => {
                let watcher = crate::os::inotify::watch(&watch_paths, watch_tx.clone());
                _inotify = Some(watcher.map_err(|e| ServiceError::Io("inotify watch", e))?);
            }
            #[cfg(not(target_os = "linux"))]
            _ => {
                let watcher = watch::portable(&watch_paths, watch_tx.clone());
                _inotify = Some(watcher.map_err(|e| ServiceError::Config(format!("watch: {e}")))?);
            }
        }
    }
    let debouncer = watch::Debouncer { quiet: Duration::from_millis(cfg.watch.debounce_ms.max(10)) };
    tokio::spawn(debouncer.run(watch_rx, excludes.clone(), jobs_tx.clone()));

    #[cfg(target_os = "linux")]
    if cfg.watch.on_access.on() {
        let on_access = Arc::new(on_access::OnAccess {
            client: client.clone(),
            cache: cache.clone(),
            memo: memo.clone(),
            events: events.clone(),
            timeout: Duration::from_millis(cfg.watch.on_access_timeout_ms.max(10)),
            max_size: cfg.watch.on_access_max_size.0,
            later: watch_tx.clone(),
            hashing: tokio::sync::Semaphore::new(2),
            fail_closed: cfg.watch.on_access == crate::config::OnAccess::FailClosed,
        });
        on_access.start(&watch_paths, tokio::runtime::Handle::current()).map_err(|e| ServiceError::Io("on-access", e))?;
    }
    drop(watch_tx);

    // Scheduled rescans.
    if !cfg.schedule.paths.is_empty() && !cfg.schedule.interval.0.is_zero() {
        let (paths, every, at_start, jobs, mut stop) = (
            cfg.schedule.paths.iter().map(|p| crate::os::resolve_root(p)).collect::<Vec<_>>(),
            cfg.schedule.interval.0,
            cfg.schedule.at_start,
            jobs_tx.clone(),
            stop_rx.clone(),
        );
        tokio::spawn(async move {
            if !at_start {
                tokio::select! { _ = tokio::time::sleep(every) => {}, _ = stop.changed() => return }
            }
            loop {
                if jobs.send(paths.clone()).await.is_err() {
                    return;
                }
                tokio::select! { _ = tokio::time::sleep(every) => {}, _ = stop.changed() => return }
            }
        });
    }

    // Notices about contents this machine holds (only when the coordinator
    // knows what it holds).
    let listener = match (&held, cfg.scan.sightings()) {
        (Some(held), true) => {
            let private = Excludes::new(&private_globs).map_err(|e| ServiceError::Config(format!("scan.upload_exclude: {e}")))?;
            let uploads = !cfg.scan.lookup_only;
            let l =
                Arc::new(notices::Listener::new(client.clone(), held.clone(), jobs_tx.clone(), events.clone(), uploads, private));
            tokio::spawn(l.clone().run(stop_rx.clone()));
            Some(l)
        }
        _ => None,
    };

    // Check-ins: at start, then every few minutes; each brings what a
    // notice stream that was down missed.
    let checkin_every = cfg.server.checkin_every();
    {
        let (client, mut stop, listener, pipeline) = (client.clone(), stop_rx.clone(), listener.clone(), pipeline.clone());
        tokio::spawn(async move {
            loop {
                let after = listener.as_ref().map_or(0, |l| l.after_ms());
                match client.checkin(agent_info(), after).await {
                    Ok(r) => {
                        if let Some(l) = &listener {
                            for n in r.notices {
                                l.handle(n).await;
                            }
                        }
                        pipeline.report_gone().await;
                    }
                    Err(e) => tracing::warn!(error = %e.message(), "check-in failed"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(checkin_every) => {}
                    _ = stop.changed() => return,
                }
            }
        });
    }

    events.emit(
        "started",
        None,
        json!({
            "agent_id": agent_id,
            "version": env!("CARGO_PKG_VERSION"),
            "watch": watch_paths, "backend": format!("{backend:?}").to_lowercase(),
            "on_access": format!("{:?}", cfg.watch.on_access), "spooled": spool.len(),
            "quarantine": quarantine_dir, "lookup_only": cfg.scan.lookup_only, "sightings": cfg.scan.sightings(),
        }),
    );

    stop_requested().await?;
    let _ = stop_tx.send(true);
    // The files being answered get a few seconds to finish (the unit allows
    // 20); a longer scheduled walk is cut off and runs again next time.
    if tokio::time::timeout(Duration::from_secs(5), worker).await.is_err() {
        tracing::warn!("stopping with a scan still in progress");
    }
    if let Some(c) = &cache
        && let Err(e) = c.save()
    {
        tracing::warn!(error = %e, "hash cache not saved");
    }
    pipeline.save_held();
    // Give queued action reports a moment to leave.
    let _ = tokio::time::timeout(Duration::from_secs(2), reporter).await;
    events.emit("stopped", None, json!({"spooled": spool.len()}));
    Ok(())
}
