//! Worker configuration: command-line flags, each also settable from the
//! environment (`QALA_WORKER_*`).

use clap::Parser;
use std::time::Duration;

#[derive(Debug, Clone, Parser)]
#[command(name = "qala-worker", version, about = "Qala scan worker: registers with a coordinator and scans the files it sends")]
pub struct Config {
    /// Coordinator URL to register with, e.g. http://127.0.0.1:7000; with
    /// several coordinators (sharing a Redis store), each one's own URL,
    /// comma-separated or the flag repeated: the worker registers and
    /// heartbeats with every one of them.
    #[arg(long, env = "QALA_WORKER_COORDINATOR", value_delimiter = ',', required = true)]
    pub coordinator: Vec<String>,
    /// Address to listen on for the coordinator's calls (port 0 picks a free port).
    #[arg(long, env = "QALA_WORKER_LISTEN", default_value = "127.0.0.1:0")]
    pub listen: String,
    /// URL the coordinator should dial; defaults to http://<bound listen address>.
    #[arg(long, env = "QALA_WORKER_ADVERTISE")]
    pub advertise: Option<String>,
    /// Stable worker id (placement follows it); defaults to <hostname>-<port>.
    #[arg(long, env = "QALA_WORKER_ID")]
    pub id: Option<String>,
    /// Scan threads, each with its own yara-x scanner; defaults to the CPU count.
    #[arg(long, env = "QALA_WORKER_THREADS")]
    pub threads: Option<usize>,
    /// Largest file accepted for scanning (bytes); larger ones are answered `unscannable`.
    #[arg(long, env = "QALA_WORKER_MAX_FILE_SIZE", default_value_t = 1024 * 1024 * 1024)]
    pub max_file_size: u64,
    /// Deepest container nesting followed.
    #[arg(long, env = "QALA_WORKER_MAX_DEPTH", default_value_t = 17)]
    pub max_depth: u32,
    /// Most objects scanned per submission.
    #[arg(long, env = "QALA_WORKER_MAX_OBJECTS", default_value_t = 10_000)]
    pub max_objects: u32,
    /// Most bytes extracted from containers per submission.
    #[arg(long, env = "QALA_WORKER_MAX_TOTAL_BYTES", default_value_t = 400 * 1024 * 1024)]
    pub max_total_bytes: u64,
    /// Largest extracted object scanned in full (bytes).
    #[arg(long, env = "QALA_WORKER_MAX_OBJECT_SIZE", default_value_t = 100 * 1024 * 1024)]
    pub max_object_size: u64,
    /// Largest extracted/compressed ratio followed for one member.
    #[arg(long, env = "QALA_WORKER_MAX_RATIO", default_value_t = 250)]
    pub max_ratio: u64,
    /// Rule-engine timeout per object, in seconds.
    #[arg(long, env = "QALA_WORKER_OBJECT_TIMEOUT", default_value_t = 30)]
    pub object_timeout_secs: u64,
    /// Wall-clock budget per submission, in seconds; objects not reached are not scanned.
    #[arg(long, env = "QALA_WORKER_MAX_SCAN_TIME", default_value_t = 120)]
    pub max_scan_time_secs: u64,
    /// Count a submission that hit a scan limit as at least suspicious.
    #[arg(long, env = "QALA_WORKER_ALERT_EXCEEDED")]
    pub alert_exceeded: bool,
    /// Count a submission with encrypted members as at least suspicious.
    #[arg(long, env = "QALA_WORKER_ALERT_ENCRYPTED")]
    pub alert_encrypted: bool,
    /// On SIGTERM, how long in-flight scans may take to finish (seconds);
    /// past it the worker exits and the coordinator replays what it held to
    /// the next worker.
    #[arg(long, env = "QALA_WORKER_DRAIN_TIMEOUT", default_value_t = 30)]
    pub drain_timeout_secs: u64,
}

impl Config {
    pub fn limits(&self) -> qala_engine::Limits {
        qala_engine::Limits {
            max_depth: self.max_depth,
            max_objects: self.max_objects,
            max_total_bytes: self.max_total_bytes,
            max_object_size: self.max_object_size,
            max_ratio: self.max_ratio,
            object_timeout: Duration::from_secs(self.object_timeout_secs.max(1)),
            max_scan_time: Duration::from_secs(self.max_scan_time_secs.max(1)),
            alert_exceeded: self.alert_exceeded,
            alert_encrypted: self.alert_encrypted,
        }
    }
}
