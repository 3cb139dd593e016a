//! Coordinator command line: the flags of a running coordinator (each also
//! settable from the environment, `QALA_COORDINATOR_*`) and the `pki` and
//! `token` commands.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "qala-coordinator",
    version,
    about = "Qala coordinator: agent API, rules, placement over workers, verdict store",
    subcommand_negates_reqs = true,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address for agents, analysts and administrators, e.g. 127.0.0.1:7000
    /// (port 0 picks a free port).
    #[arg(long, env = "QALA_COORDINATOR_LISTEN", default_value = "127.0.0.1:7000")]
    pub listen: String,
    /// Address for workers (Register, Heartbeat, Enroll); with TLS only
    /// worker certificates of the cluster CA may register there.
    #[arg(long, env = "QALA_COORDINATOR_CLUSTER_LISTEN", default_value = "127.0.0.1:7001")]
    pub cluster_listen: String,
    /// Directory made by `qala-coordinator pki init` (or `pki coordinator`):
    /// ca.pem, coordinator.pem, coordinator-key.pem, crl.pem, and
    /// issuing-ca.pem with issuing-ca-key.pem to enroll workers (the root's
    /// ca-key.pem is not read: keep it elsewhere). Files are reloaded when
    /// they change.
    #[arg(long, env = "QALA_COORDINATOR_TLS")]
    pub tls: Option<PathBuf>,
    /// A certificate chain (PEM) for the agents' listener (--listen) and the
    /// REST listener instead of the coordinator's cluster certificate: a
    /// web-PKI one (an ACME CA's, say), for clients that check the host name
    /// against the system's roots (qala-agent and the admin CLI without
    /// --ca). Client certificates are still the cluster CA's. Reloaded when
    /// it changes. Workers keep the cluster listener and its certificate.
    #[arg(long, env = "QALA_COORDINATOR_PUBLIC_CERT", requires = "public_key", requires = "tls")]
    pub public_cert: Option<PathBuf>,
    /// The key of --public-cert.
    #[arg(long, env = "QALA_COORDINATOR_PUBLIC_KEY", requires = "public_cert")]
    pub public_key: Option<PathBuf>,
    /// Plain text instead of TLS, for a test setup on one machine: refuses
    /// to listen on anything but a loopback address.
    #[arg(long, env = "QALA_COORDINATOR_INSECURE", conflicts_with = "tls")]
    pub insecure: bool,
    /// Rules: a .yar/.yara file or a directory of them (recursive, one namespace per file).
    #[arg(long, env = "QALA_COORDINATOR_RULES", required = true)]
    pub rules: Option<PathBuf>,
    /// Verdict store: embedded:PATH (a local file, the default), or Redis:
    /// redis://HOST:PORT[/DB] (rediss:// for TLS),
    /// redis+cluster://HOST:PORT[,HOST:PORT...] or
    /// redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTER[/DB] (rediss+cluster,
    /// rediss+sentinel with TLS). USER@ may come before the hosts; give the
    /// password with --store-password-file or QALA_STORE_PASSWORD.
    #[arg(long, env = "QALA_COORDINATOR_STORE", default_value = "embedded:qala-data/verdicts.redb")]
    pub store: String,
    #[command(flatten)]
    pub store_auth: StoreAuth,
    #[command(flatten)]
    pub policy: Policy,
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
    /// Most uploads one client (one token) has in flight at once.
    #[arg(long, env = "QALA_COORDINATOR_CLIENT_MAX_UPLOADS", default_value_t = 32)]
    pub client_max_uploads: usize,
    /// Bytes per second one client (one token) may upload; 0 for no limit.
    #[arg(long, env = "QALA_COORDINATOR_CLIENT_MAX_BYTES_PER_SEC", default_value_t = 128 * 1024 * 1024)]
    pub client_max_bytes_per_sec: u64,
    /// Most concurrent HTTP/2 streams (calls) on one connection.
    #[arg(long, env = "QALA_COORDINATOR_MAX_STREAMS", default_value_t = 128)]
    pub max_streams_per_connection: u32,
    /// An upload that sends nothing for this many seconds is cancelled.
    #[arg(long, env = "QALA_COORDINATOR_UPLOAD_STALL_SECS", default_value_t = 30)]
    pub upload_stall_secs: u64,
    /// Bytes of uploads held at once (memory and spool files, counted by
    /// their announced size); past it RESOURCE_EXHAUSTED, and the agent retries.
    #[arg(long, env = "QALA_COORDINATOR_SPOOL_MAX_BYTES", default_value_t = 8 * 1024 * 1024 * 1024)]
    pub spool_max_bytes: u64,
    /// Of those, bytes held in memory: uploads up to 16 MiB stay in memory
    /// whole (as received, never copied) while this has room; the others
    /// spill to temporary files. 0 keeps only the first 256 KiB of each.
    #[arg(long, env = "QALA_COORDINATOR_SPOOL_MEMORY_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub spool_memory_bytes: u64,
    /// Spill files kept open (unlinked) between uploads, up to this many
    /// bytes of them (at most the spool quota): the next large uploads
    /// write over their page cache instead of taking new pages. This much
    /// disk stays in use while the coordinator is idle; 0 closes each spill
    /// file with its upload.
    #[arg(long, env = "QALA_COORDINATOR_SPOOL_KEEP_BYTES", default_value_t = 1024 * 1024 * 1024)]
    pub spool_keep_bytes: u64,
    /// Largest upload scanned while no worker has said its own limit; larger
    /// ones are answered `unscannable` (max_file_size) without being read.
    #[arg(long, env = "QALA_COORDINATOR_MAX_FILE_SIZE", default_value_t = 1024 * 1024 * 1024)]
    pub max_file_size: u64,
    /// Audit log: `-` for standard output (the debug log goes to standard
    /// error), or a file appended to.
    #[arg(long, env = "QALA_COORDINATOR_AUDIT_LOG", default_value = "-")]
    pub audit_log: String,
    /// How often the client tokens and revoked workers are read again from
    /// the store, in milliseconds.
    #[arg(long, env = "QALA_COORDINATOR_AUTH_REFRESH_MS", default_value_t = 2000)]
    pub auth_refresh_ms: u64,
    /// Where the client tokens (their hashes) and revoked workers read last
    /// are kept, so a coordinator started while the store is down still
    /// authenticates (0600).
    #[arg(long, env = "QALA_COORDINATOR_AUTH_CACHE", default_value = "qala-data/auth-cache.json")]
    pub auth_cache: PathBuf,
    /// Lifetime of the certificates given to enrolled workers, in seconds
    /// (they renew at half of it, over mutual TLS).
    #[arg(long, env = "QALA_COORDINATOR_ENROLL_CERT_SECS", default_value_t = 12 * 3600)]
    pub enroll_cert_secs: u64,
    /// Host names enrolled workers' certificates may carry: names,
    /// `*.DOMAIN` (e.g. a Kubernetes headless service's domain) and IP
    /// networks (10.20.0.0/16), comma-separated or repeated. None by
    /// default; never a coordinator's name or a loopback one.
    #[arg(long, env = "QALA_COORDINATOR_ENROLL_HOSTS", value_delimiter = ',')]
    pub enroll_hosts: Vec<String>,
    /// Enrollments per minute one join token may make on this coordinator
    /// (worker-enroll and agent-enroll tokens; also the burst).
    #[arg(long, env = "QALA_COORDINATOR_ENROLL_RATE", default_value_t = 60)]
    pub enroll_rate: u32,
    /// Actions (quarantined, deleted, ...) one agent may report per minute
    /// (also the burst); past it the agent is told to come back later and
    /// keeps them meanwhile.
    #[arg(long, env = "QALA_COORDINATOR_AGENT_ACTIONS_RATE", default_value_t = 1200)]
    pub agent_actions_rate: u32,
    /// IOC list writes (imports, removals) one token may make per minute.
    #[arg(long, env = "QALA_COORDINATOR_IOC_WRITE_RATE", default_value_t = 60)]
    pub ioc_write_rate: u32,
    /// Address of a plain-HTTP listener of Prometheus `/metrics` (no token)
    /// and the probes' `/healthz` and `/readyz`, e.g. 127.0.0.1:9300 (off
    /// unless given; on a container's address, keep it to the cluster's
    /// network). `qala-coordinator health` asks it.
    #[arg(long, env = "QALA_COORDINATOR_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Address of the REST/JSON API and Prometheus `/metrics`, e.g.
    /// 127.0.0.1:7080 (off unless given); same TLS and tokens as gRPC.
    #[arg(long, env = "QALA_COORDINATOR_HTTP_LISTEN")]
    pub http_listen: Option<String>,
    #[command(flatten)]
    pub clamd: ClamdConfig,
    #[command(flatten)]
    pub retention: RetentionConfig,
    /// Send detections and agent actions to syslog: tcp://HOST:PORT or
    /// tls://HOST:PORT (RFC 5424, octet-counted).
    #[arg(long, env = "QALA_COORDINATOR_SIEM_SYSLOG")]
    pub siem_syslog: Option<String>,
    /// POST detections and agent actions as JSON to this http(s):// URL.
    #[arg(long, env = "QALA_COORDINATOR_SIEM_WEBHOOK")]
    pub siem_webhook: Option<String>,
    /// CA certificate of a TLS syslog server or HTTPS webhook (default: system roots).
    #[arg(long, env = "QALA_COORDINATOR_SIEM_CA")]
    pub siem_ca: Option<PathBuf>,
    /// Events held per SIEM sink while it is unreachable; past it the oldest are dropped.
    #[arg(long, env = "QALA_COORDINATOR_SIEM_QUEUE", default_value_t = 10_000)]
    pub siem_queue: usize,
}

/// The clamd protocol front door (mail gateways, file servers, anything that
/// speaks to clamd). clamd has no authentication: a listener binds loopback
/// unless `--clamd-allow` names the networks allowed to use it.
#[derive(Debug, Clone, Args)]
pub struct ClamdConfig {
    /// TCP address for clamd clients, e.g. 127.0.0.1:3310 (off unless given).
    #[arg(long, env = "QALA_COORDINATOR_CLAMD_LISTEN")]
    pub clamd_listen: Option<String>,
    /// Unix socket for clamd clients, e.g. /run/qala/clamd.ctl (mode 0660;
    /// off unless given).
    #[arg(long, env = "QALA_COORDINATOR_CLAMD_SOCKET")]
    pub clamd_socket: Option<PathBuf>,
    /// Networks allowed to connect to --clamd-listen besides loopback, as
    /// NET/PREFIX or addresses, comma separated; required to bind anything
    /// but a loopback address.
    #[arg(long, env = "QALA_COORDINATOR_CLAMD_ALLOW", value_delimiter = ',')]
    pub clamd_allow: Vec<String>,
    /// Let clamd clients send RELOAD (recompile the rules); otherwise RELOAD
    /// is answered `COMMAND UNAVAILABLE`.
    #[arg(long, env = "QALA_COORDINATOR_CLAMD_ALLOW_RELOAD")]
    pub clamd_allow_reload: bool,
    /// Largest INSTREAM accepted (clamd's StreamMaxLength); a longer stream
    /// is answered `INSTREAM size limit exceeded. ERROR`.
    #[arg(long, env = "QALA_COORDINATOR_CLAMD_STREAM_MAX_LENGTH", default_value_t = 25 * 1024 * 1024)]
    pub clamd_stream_max_length: u64,
    /// Most clamd connections open at once; more wait in the listen queue.
    #[arg(long, env = "QALA_COORDINATOR_CLAMD_MAX_CONNECTIONS", default_value_t = 128)]
    pub clamd_max_connections: usize,
    /// The answer for a file Qala could not judge (its scans crashed or
    /// timed out, or it is on the poison list): `error` (`... ERROR`, so the
    /// client applies its own on-fail action; clamav-milter tempfails),
    /// `found` (`Heuristics.Qala.Unscannable FOUND`) or `ok` (let it through).
    /// A file over the size limit is a limit hit, `OK` as with ClamAV.
    #[arg(long, env = "QALA_COORDINATOR_CLAMD_UNSCANNABLE", value_enum, default_value_t = UnscannableAnswer::Error)]
    pub clamd_unscannable: UnscannableAnswer,
}

/// How the clamd door answers an `unscannable` verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum UnscannableAnswer {
    Ok,
    Error,
    Found,
}

/// How long the store keeps verdicts and detection events.
#[derive(Debug, Clone, Args)]
pub struct RetentionConfig {
    /// Days a clean verdict is kept (then the file is scanned again when
    /// seen); 0 keeps it for good.
    #[arg(long, env = "QALA_COORDINATOR_KEEP_CLEAN_DAYS", default_value_t = 30.0)]
    pub keep_clean_days: f64,
    /// Days a suspicious verdict is kept; 0 (the default) keeps it for good.
    #[arg(long, env = "QALA_COORDINATOR_KEEP_SUSPICIOUS_DAYS", default_value_t = 0.0)]
    pub keep_suspicious_days: f64,
    /// Days a malicious verdict is kept; 0 (the default) keeps it for good.
    #[arg(long, env = "QALA_COORDINATOR_KEEP_MALICIOUS_DAYS", default_value_t = 0.0)]
    pub keep_malicious_days: f64,
    /// Days the detections feed (`GET /v1/detections`) keeps an event.
    #[arg(long, env = "QALA_COORDINATOR_DETECTIONS_KEEP_DAYS", default_value_t = 90.0)]
    pub detections_keep_days: f64,
    /// Days a sighting (which agent holds which content) is kept after the
    /// agent last reported it; 0 keeps them for good.
    #[arg(long, env = "QALA_COORDINATOR_SIGHTINGS_KEEP_DAYS", default_value_t = 90.0)]
    pub sightings_keep_days: f64,
    /// Sightings kept per agent; past it the least recently seen go and the
    /// agent's list is marked truncated.
    #[arg(long, env = "QALA_COORDINATOR_SIGHTINGS_PER_AGENT", default_value_t = 1_000_000)]
    pub sightings_per_agent: u64,
    /// Record no sightings at all (then no notice reaches an agent and
    /// hunts have nothing in scope).
    #[arg(long, env = "QALA_COORDINATOR_NO_SIGHTINGS")]
    pub no_sightings: bool,
    /// Start a hunt (content sighted in the last 30 days) whenever new
    /// rules come into force. Off by default: every rule edit would put
    /// the whole fleet's content in scope.
    #[arg(long, env = "QALA_COORDINATOR_HUNT_ON_RULES_CHANGE")]
    pub hunt_on_rules_change: bool,
    /// Seconds an agent asked by a hunt has to upload the file or decline
    /// before the next holder is asked.
    #[arg(long, env = "QALA_COORDINATOR_HUNT_ASK_TIMEOUT_SECS", default_value_t = 120)]
    pub hunt_ask_timeout_secs: u64,
    /// A console session unused this many seconds ends.
    #[arg(long, env = "QALA_COORDINATOR_SESSION_IDLE_SECS", default_value_t = 1800)]
    pub session_idle_secs: u64,
    /// A console session ends this many seconds after login, used or not.
    #[arg(long, env = "QALA_COORDINATOR_SESSION_MAX_SECS", default_value_t = 43_200)]
    pub session_max_secs: u64,
}

fn days(d: f64) -> std::time::Duration {
    std::time::Duration::from_secs_f64((d.max(0.0) * 86_400.0).min(1e12))
}

impl RetentionConfig {
    pub fn sightings(&self) -> crate::core::sightings::SightingSettings {
        crate::core::sightings::SightingSettings {
            enabled: !self.no_sightings,
            keep: days(self.sightings_keep_days),
            per_agent: self.sightings_per_agent.max(1),
        }
    }

    pub fn hunts(&self) -> crate::core::hunts::HuntSettings {
        crate::core::hunts::HuntSettings {
            on_rules_change: self.hunt_on_rules_change,
            ask_timeout: std::time::Duration::from_secs(self.hunt_ask_timeout_secs.max(1)),
        }
    }

    pub fn sessions(&self) -> crate::core::sessions::SessionSettings {
        let absolute = std::time::Duration::from_secs(self.session_max_secs.max(1));
        crate::core::sessions::SessionSettings {
            idle: std::time::Duration::from_secs(self.session_idle_secs.max(1)).min(absolute),
            absolute,
        }
    }

    pub fn keep(&self) -> crate::store::Keep {
        crate::store::Keep {
            clean: days(self.keep_clean_days),
            suspicious: days(self.keep_suspicious_days),
            malicious: days(self.keep_malicious_days),
        }
    }

    pub fn detections(&self) -> std::time::Duration {
        days(self.detections_keep_days)
    }
}

/// How the coordinator opens its store: Redis's password and the CA of a
/// `rediss://` server (never on the command line itself), the embedded
/// store's page cache.
#[derive(Debug, Clone, Default, Args)]
pub struct StoreAuth {
    /// File holding the Redis password (or set QALA_STORE_PASSWORD).
    #[arg(long, env = "QALA_STORE_PASSWORD_FILE")]
    pub store_password_file: Option<PathBuf>,
    /// The Redis password, from the environment only (a flag would show in
    /// `ps`): QALA_STORE_PASSWORD.
    #[arg(long = "store-password-from-env", env = "QALA_STORE_PASSWORD", hide = true, hide_env_values = true)]
    pub store_password: Option<String>,
    /// CA certificate of a rediss:// server (PEM; default: the system's roots).
    #[arg(long, env = "QALA_STORE_CA")]
    pub store_ca: Option<PathBuf>,
    /// Page cache of the embedded store (redb), in bytes: what the store
    /// keeps of its file in memory besides the kernel's page cache.
    #[arg(long, env = "QALA_STORE_CACHE_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub store_cache_bytes: u64,
}

impl StoreAuth {
    /// The store spec with the password from the file or the environment.
    pub fn spec(&self, spec: &str) -> Result<crate::store::StoreSpec, crate::store::StoreError> {
        let password = match &self.store_password_file {
            Some(f) => Some(
                std::fs::read_to_string(f)
                    .map_err(|e| crate::store::StoreError::Spec(format!("{}: {e}", f.display())))?
                    .trim_end_matches(['\n', '\r'])
                    .to_string(),
            ),
            None => self.store_password.clone().filter(|p| !p.is_empty()),
        };
        Ok(crate::store::StoreSpec {
            spec: spec.to_string(),
            password,
            ca: self.store_ca.clone(),
            cache_bytes: Some(self.store_cache_bytes).filter(|&b| b > 0),
        })
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The cluster's certificates: a CA, coordinators, workers; revoking a worker.
    Pki {
        #[command(subcommand)]
        command: PkiCommand,
    },
    /// Client tokens: add (prints the token once), list, revoke.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// The inventory of enrolled endpoint agents.
    Agents {
        #[command(subcommand)]
        command: AgentsCommand,
    },
    /// Hunts: content agents were seen holding, judged again under the
    /// rules in force (with --server: start and cancel need an admin token,
    /// status an analyst or admin one).
    Hunt {
        #[command(subcommand)]
        command: HuntCommand,
    },
    /// Which agents hold a content (by sha256, or the md5/sha1 of a stored
    /// submission): agent id, host, first and last seen, last check-in (an
    /// analyst or admin token with --server).
    Sightings {
        hash: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Ask a running coordinator whether it is ready (`/readyz`: rules in
    /// force, a live worker holding them) or alive (--live), on its
    /// --metrics-listen; exit 0 if so (exec probes).
    Health {
        /// The coordinator's --metrics-listen address (0.0.0.0 reaches this host).
        #[arg(long, env = "QALA_COORDINATOR_METRICS_LISTEN", default_value = "127.0.0.1:9300")]
        address: String,
        /// Only whether the coordinator answers (/healthz).
        #[arg(long)]
        live: bool,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 5)]
        timeout_secs: u64,
    },
    /// Hash IOC lists: block (sha256, sha1, md5: answered malicious without
    /// a scan) and allow (sha256 only: answered clean, a false-positive override).
    Ioc {
        #[command(subcommand)]
        command: IocCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum HuntCommand {
    /// Count the content sighted since --since whose verdict under the
    /// rules in force is unknown (printed first), and queue a hunt of it.
    Start {
        /// The window: content last seen this long ago or since (`30d`, `12h`, `90m`).
        #[arg(long, default_value = "30d")]
        since: String,
        /// Only content whose last known type is this (`pe`, `zip`, ...); repeatable.
        #[arg(long = "type")]
        types: Vec<String>,
        /// Only content whose last known size is at most this (`10M`, `512K`, bytes).
        #[arg(long)]
        max_size: Option<String>,
        /// Uploads asked per second at most (default 5).
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        /// Count the scope only; queue nothing.
        #[arg(long)]
        dry_run: bool,
        /// A what-if hunt with the rules in this file or directory (`.yar`,
        /// `.yara`) only: every content in the window is scanned with them,
        /// matches are reported (`hunt matches ID`), no verdict changes.
        #[arg(long)]
        rules: Option<PathBuf>,
        /// Wait for it to finish, printing its progress.
        #[arg(long)]
        wait: bool,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// One hunt's progress, or every hunt's.
    Status {
        id: Option<String>,
        /// Wait for it to finish, printing its progress.
        #[arg(long, requires = "id")]
        wait: bool,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// The contents a what-if hunt's rules matched, with the rules.
    Matches {
        id: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Stop a queued or running hunt.
    Cancel {
        id: String,
        #[command(flatten)]
        target: AdminTarget,
    },
}

#[derive(Debug, Subcommand)]
pub enum IocCommand {
    /// Put one digest on a list.
    Add {
        /// `block` or `allow`.
        #[arg(long, default_value = "block")]
        list: String,
        /// sha256, sha1 or md5 (hex; allow lists: sha256 only).
        digest: String,
        /// What it is (a malware family, a report, a ticket).
        #[arg(long, default_value = "")]
        name: String,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Take one digest off a list.
    Remove {
        #[arg(long, default_value = "block")]
        list: String,
        digest: String,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Every entry: list, kind, digest, name.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Import FILE: one digest per line with an optional name after a
    /// space, or CSV (digest,name,...); `#` comments; `-` for standard input.
    Import {
        #[arg(long, default_value = "block")]
        list: String,
        file: PathBuf,
        #[command(flatten)]
        target: AdminTarget,
    },
}

#[derive(Debug, Subcommand)]
pub enum AgentsCommand {
    /// Agent id, host, OS, version, last check-in and actions reported
    /// (an analyst or admin token with --server).
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// One agent: its record and what it holds that is a detection now
    /// (needs --server: verdicts are read under the rules in force).
    Show {
        agent_id: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: AdminTarget,
    },
}

#[derive(Debug, Subcommand)]
pub enum PkiCommand {
    /// Create the root CA (DIR/ca.pem, DIR/ca-key.pem) and its revocation
    /// list (DIR/crl.pem), and the first coordinator's certificate and
    /// issuing CA at the top of DIR (coordinator.pem, coordinator-key.pem,
    /// issuing-ca.pem, issuing-ca-key.pem; localhost, 127.0.0.1 and ::1
    /// always named).
    Init {
        dir: PathBuf,
        /// Another DNS name or IP address the coordinator is reached at (repeat).
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// The coordinator's name in its certificate.
        #[arg(long, default_value = "coordinator")]
        name: String,
    },
    /// Another coordinator's certificate and issuing CA, with the root's
    /// certificate and list: DIR/coordinators/NAME/, its --tls directory.
    Coordinator {
        dir: PathBuf,
        name: String,
        #[arg(long = "host")]
        hosts: Vec<String>,
    },
    /// A worker's certificate: DIR/workers/ID/ (ca.pem, worker.pem,
    /// worker-key.pem) to copy to the worker's host. Names the hosts given,
    /// or localhost and 127.0.0.1.
    Worker {
        dir: PathBuf,
        id: String,
        #[arg(long = "host")]
        hosts: Vec<String>,
    },
    /// A client certificate (`qala:client:ROLE:NAME`) for a client that
    /// authenticates with it instead of a token: DIR/clients/NAME/.
    Client {
        dir: PathBuf,
        name: String,
        /// agent, analyst, admin, metrics, worker-enroll or agent-enroll.
        #[arg(long)]
        role: String,
    },
    /// Revoke. With --server or --store: worker ID (or, with --client, the
    /// client certificate NAME) is refused from now on by every coordinator
    /// sharing the store, and the certificates the store knows to be the
    /// worker's go on their issuing CAs' revocation lists; --serial revokes
    /// one such certificate. With --dir (where the root key is kept): the
    /// certificates the root issued (--coordinator NAME: its certificate and
    /// issuing CA; a worker's; a client's; --serial) go on the root's list,
    /// DIR/crl.pem, to publish (`pki publish-crl`, or both flags at once).
    Revoke {
        /// A worker id (or a client name with --client).
        id: Option<String>,
        /// ID is a client certificate's name, not a worker id.
        #[arg(long)]
        client: bool,
        /// A coordinator's name (needs --dir: only the root revokes one).
        #[arg(long, conflicts_with_all = ["id", "serial"])]
        coordinator: Option<String>,
        /// One certificate, by its serial (hex).
        #[arg(long, conflicts_with = "id")]
        serial: Option<String>,
        /// The PKI directory holding the root key: revoke in the root's list.
        #[arg(long)]
        dir: Option<PathBuf>,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Publish a revocation list of the root (FILE, PEM or DER, as `pki
    /// revoke --dir` writes it) to the store: every coordinator, worker and
    /// agent goes by it within seconds. An older list than the one held is
    /// refused.
    PublishCrl {
        file: PathBuf,
        #[command(flatten)]
        target: AdminTarget,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a token; the token alone is printed on the last line (only the
    /// store's copy of its hash remains). A name in use is refused unless
    /// --replace.
    Add {
        /// agent, analyst, admin, metrics, worker-enroll or agent-enroll.
        #[arg(long)]
        role: String,
        name: String,
        /// It stops working after this long (e.g. 24h, 7d, 90m).
        #[arg(long)]
        expires: Option<humantime::Duration>,
        /// Join tokens: most enrollments it may be spent on (each new
        /// worker or agent spends one; renewals spend none).
        #[arg(long)]
        uses: Option<u64>,
        /// Replace the token of this name (its holders are locked out).
        #[arg(long)]
        replace: bool,
        /// Register the token in this file (made elsewhere: a deployment's
        /// secret) instead of making one; with --store only. Adding the
        /// same token again under the same name and role changes nothing.
        #[arg(long)]
        from_file: Option<PathBuf>,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Names, roles and creation times of the tokens.
    List {
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Revoke the token NAME (running coordinators refuse it within seconds).
    Revoke {
        name: String,
        #[command(flatten)]
        target: AdminTarget,
    },
}

/// Where an administrative command acts: on the store directly (no
/// coordinator running on an embedded store), or through a running
/// coordinator's admin API.
#[derive(Debug, Clone, Args)]
pub struct AdminTarget {
    /// Work on this store directly (as in `--store`).
    #[arg(long, conflicts_with = "server")]
    pub store: Option<String>,
    #[command(flatten)]
    pub store_auth: StoreAuth,
    /// A running coordinator's URL (https://HOST:PORT).
    #[arg(long)]
    pub server: Option<String>,
    /// CA certificate the coordinator's certificate is checked against.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// File holding an admin token (or set QALA_TOKEN).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// The admin token, from the environment only: QALA_TOKEN.
    #[arg(long = "token-from-env", env = "QALA_TOKEN", hide = true, hide_env_values = true)]
    pub token: Option<String>,
    /// Plain text to a loopback coordinator started with --insecure.
    #[arg(long)]
    pub insecure: bool,
}

/// The cluster's scan policy: limits and alert flags, shipped to every
/// worker with the rules and part of the ruleset id (a change is a new
/// ruleset, so verdicts judged under the old policy are not served).
#[derive(Args, Debug, Clone)]
pub struct Policy {
    /// Deepest container nesting followed.
    #[arg(long, env = "QALA_POLICY_MAX_DEPTH", default_value_t = 17)]
    pub max_depth: u32,
    /// Most objects scanned per submission.
    #[arg(long, env = "QALA_POLICY_MAX_OBJECTS", default_value_t = 10_000)]
    pub max_objects: u32,
    /// Most bytes extracted from containers per submission.
    #[arg(long, env = "QALA_POLICY_MAX_TOTAL_BYTES", default_value_t = 400 * 1024 * 1024)]
    pub max_total_bytes: u64,
    /// Largest extracted object scanned in full (bytes).
    #[arg(long, env = "QALA_POLICY_MAX_OBJECT_SIZE", default_value_t = 100 * 1024 * 1024)]
    pub max_object_size: u64,
    /// Most bytes of decoded objects one scan holds at once (the file and
    /// the objects on the way down to the one being scanned).
    #[arg(long, env = "QALA_POLICY_MAX_SCAN_MEMORY", default_value_t = 512 * 1024 * 1024)]
    pub max_scan_memory: u64,
    /// Largest extracted/compressed ratio followed for one member.
    #[arg(long, env = "QALA_POLICY_MAX_RATIO", default_value_t = 250)]
    pub max_ratio: u64,
    /// Rule-engine timeout per object, in seconds.
    #[arg(long, env = "QALA_POLICY_OBJECT_TIMEOUT", default_value_t = 30)]
    pub object_timeout_secs: u64,
    /// Wall-clock budget per submission, in seconds; objects not reached are not scanned.
    #[arg(long, env = "QALA_POLICY_MAX_SCAN_TIME", default_value_t = 120)]
    pub max_scan_time_secs: u64,
    /// Work budget per submission, in emulator instructions (unpacking
    /// packed executables): at least this many...
    #[arg(long, env = "QALA_POLICY_WORK_FLOOR", default_value_t = 100_000_000)]
    pub work_floor: u64,
    /// ...and this many per byte of the submission (a run takes at most 50
    /// million; 100 million is about a second).
    #[arg(long, env = "QALA_POLICY_WORK_PER_BYTE", default_value_t = 256)]
    pub work_per_byte: u64,
    /// Count a submission that hit a scan limit as at least suspicious.
    #[arg(long, env = "QALA_POLICY_ALERT_EXCEEDED")]
    pub alert_exceeded: bool,
    /// Count a submission with encrypted members as at least suspicious.
    #[arg(long, env = "QALA_POLICY_ALERT_ENCRYPTED")]
    pub alert_encrypted: bool,
}

impl Policy {
    pub fn limits(&self) -> qala_engine::Limits {
        qala_engine::Limits {
            max_depth: self.max_depth,
            max_objects: self.max_objects,
            max_total_bytes: self.max_total_bytes,
            max_object_size: self.max_object_size,
            max_ratio: self.max_ratio,
            max_scan_memory: self.max_scan_memory,
            object_timeout: std::time::Duration::from_secs(self.object_timeout_secs.max(1)),
            max_scan_time: std::time::Duration::from_secs(self.max_scan_time_secs.max(1)),
            work_floor: self.work_floor,
            work_per_byte: self.work_per_byte,
            alert_exceeded: self.alert_exceeded,
            alert_encrypted: self.alert_encrypted,
        }
    }
}
