//! Coordinator configuration: command-line flags, each also settable from
//! the environment (`QALA_COORDINATOR_*`).

use clap::Parser;
use std::path::PathBuf;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "qala-coordinator",
    version,
    about = "Qala coordinator: agent API, rules, placement over workers, verdict store"
)]
pub struct Config {
    /// Address for agents and workers, e.g. 127.0.0.1:7000 (port 0 picks a free port).
    #[arg(long, env = "QALA_COORDINATOR_LISTEN", default_value = "127.0.0.1:7000")]
    pub listen: String,
    /// Rules: a .yar/.yara file or a directory of them (recursive, one namespace per file).
    #[arg(long, env = "QALA_COORDINATOR_RULES")]
    pub rules: PathBuf,
    /// Verdict store: embedded:PATH (a local file, the default), or Redis:
    /// redis://HOST:PORT[/DB], redis+cluster://HOST:PORT[,HOST:PORT...] (a
    /// Redis Cluster) or redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTER[/DB]
    /// (the master Sentinel names, followed through failovers). USER:PASS@
    /// may come before the hosts.
    #[arg(long, env = "QALA_COORDINATOR_STORE", default_value = "embedded:qala-data/verdicts.redb")]
    pub store: String,
    /// Interval workers heartbeat at, in milliseconds; three missed and a worker leaves the ring.
    #[arg(long, env = "QALA_COORDINATOR_HEARTBEAT_MS", default_value_t = 2000)]
    pub heartbeat_ms: u64,
    /// How often the rule files are checked for changes, in milliseconds (SIGHUP reloads at once).
    #[arg(long, env = "QALA_COORDINATOR_RULES_POLL_MS", default_value_t = 2000)]
    pub rules_poll_ms: u64,
    /// Deadline of one call to a worker (upload and scan), in seconds.
    #[arg(long, env = "QALA_COORDINATOR_SCAN_TIMEOUT", default_value_t = 300)]
    pub scan_timeout_secs: u64,
    /// Most uploads received and scanned at once; past it, agents are told
    /// RESOURCE_EXHAUSTED with a retry hint (`retry-after-ms`) they honour.
    #[arg(long, env = "QALA_COORDINATOR_MAX_UPLOADS", default_value_t = 256)]
    pub max_uploads: usize,
}
