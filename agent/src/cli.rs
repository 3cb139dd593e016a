//! Command-line interface of `qala-agent`.

use crate::config::{ScanFlags, ServiceFlags};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(name = "qala-agent", version, about = "Qala endpoint agent: scan paths through a Qala cluster, query verdicts by hash")]
pub struct Cli {
    /// The configuration file (server, watch paths, actions, limits); read
    /// if it exists, flags and environment override it.
    #[arg(long, global = true, env = "QALA_CONFIG", default_value = crate::config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// Coordinator URL (https://HOST:PORT; default: the config file's, else
    /// https://127.0.0.1:7000).
    #[arg(long, global = true, env = "QALA_SERVER")]
    pub server: Option<String>,
    /// CA certificate the coordinator's certificate is checked against
    /// (default: the system's roots).
    #[arg(long, global = true, env = "QALA_CA")]
    pub ca: Option<PathBuf>,
    /// A client certificate (from `qala-coordinator pki client`) to
    /// authenticate with instead of a token; with --key.
    #[arg(long, global = true, env = "QALA_CERT", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The client certificate's key.
    #[arg(long, global = true, env = "QALA_KEY", requires = "cert")]
    pub key: Option<PathBuf>,
    /// File holding this client's token (or set QALA_TOKEN).
    #[arg(long, global = true, env = "QALA_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// This client's token, from the environment only (a flag would show
    /// in `ps`): QALA_TOKEN.
    #[arg(long = "token-from-env", global = true, env = "QALA_TOKEN", hide = true, hide_env_values = true)]
    pub token: Option<String>,
    /// Plain text (http://) to a loopback coordinator started with --insecure.
    #[arg(long, global = true)]
    pub insecure: bool,
    /// Agent id sent with uploads (defaults to the host name).
    #[arg(long, global = true, env = "QALA_AGENT_ID")]
    pub agent_id: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Scan files and directories (recursively): exit 0 all clean, 1 something detected, 2 errors.
    Scan {
        /// One JSON object per line per file instead of text.
        #[arg(long)]
        json: bool,
        /// Print only files that are not clean (detections, errors,
        /// unknown), and the summary.
        #[arg(short = 'i', long)]
        infected: bool,
        /// No progress bar, even on a terminal.
        #[arg(long)]
        no_progress: bool,
        /// Uploads in flight at once.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Hashing threads (defaults to the CPU count).
        #[arg(long)]
        threads: Option<usize>,
        #[command(flatten)]
        flags: ScanFlags,
        /// Files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Print the stored verdict for each sha256, or `unknown`.
    Lookup {
        #[arg(long)]
        json: bool,
        #[arg(required = true)]
        sha256: Vec<String>,
    },
    /// Show the coordinator's rules, workers and store.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Run as a service: real-time watch, on-access blocking, scheduled
    /// rescans and the offline spool, as the config file says (the systemd
    /// unit runs this).
    Service {
        #[command(flatten)]
        flags: ServiceFlags,
    },
    /// Trade a fleet join token for this agent's own token: the token is
    /// written (0600) to --token-out and the server, CA, token file and
    /// agent id into the config file.
    Enroll {
        /// File holding the fleet join token (role agent-enroll).
        #[arg(long, value_name = "FILE")]
        join_token_file: PathBuf,
        /// Where to write this agent's token (default /etc/qala/agent.token,
        /// next to the config file).
        #[arg(long, value_name = "FILE")]
        token_out: Option<PathBuf>,
    },
    /// Read the config file and say what the service would do (exit 2 if
    /// it does not parse).
    CheckConfig,
    /// Prepare this machine's agent (what the MSI runs; any package may):
    /// the config file's directory made private (Windows: SYSTEM and
    /// Administrators only), the server and a copy of the CA written into
    /// the config file, and with a join token, enrollment now, or, when the
    /// coordinator cannot be reached, at the service's next start. Empty
    /// values are ignored (an upgrade keeps what is set).
    Setup {
        /// Coordinator URL (https://HOST:PORT).
        #[arg(long, value_name = "URL")]
        server: Option<String>,
        /// CA certificate file to copy beside the config file (ca.pem).
        #[arg(long, value_name = "FILE")]
        ca_file: Option<String>,
        /// A fleet join token (role agent-enroll); kept in join.token
        /// beside the config file until enrollment succeeds.
        #[arg(long, value_name = "TOKEN", hide_env_values = true)]
        join_token: Option<String>,
    },
    /// The Windows service "QalaAgent": install (automatic start, as
    /// LocalSystem, running `service` with this config file), uninstall,
    /// start, stop, or run (what the service manager starts).
    #[cfg(windows)]
    WindowsService {
        #[command(subcommand)]
        action: WindowsServiceAction,
    },
    /// Quarantined files: list, restore, purge.
    Quarantine {
        /// The quarantine directory (default: the config's, else
        /// /var/lib/qala/quarantine for root).
        #[arg(long, env = "QALA_QUARANTINE_DIR")]
        dir: Option<PathBuf>,
        #[command(subcommand)]
        command: QuarantineCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum QuarantineCommand {
    /// Every quarantined file: id, original path, sha256, verdict, rules.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Put ID back where it was, byte-identical, with owner, mode and times
    /// (never through a symbolic link, never over an existing file).
    Restore { id: String },
    /// Delete ID from the quarantine for good.
    Purge { id: String },
    /// Who may read the quarantine: its directory's mode and owner (Unix);
    /// on Windows the access list the agent sets and the one the directory
    /// has now, as SDDL.
    Access,
}

/// What `windows-service` does.
#[cfg(windows)]
#[derive(Debug, Clone, Copy, Subcommand)]
pub enum WindowsServiceAction {
    /// Register the service (automatic start, LocalSystem).
    Install,
    /// Stop and remove the service.
    Uninstall,
    /// Start it.
    Start,
    /// Stop it.
    Stop,
    /// Run as the service (the service manager's command; logs to
    /// agent.log beside the config file).
    Run,
}
