//! Worker configuration: command-line flags, each also settable from the
//! environment (`QALA_WORKER_*`).

use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Parser)]
#[command(name = "qala-worker", version, about = "Qala scan worker: registers with a coordinator and scans the files it sends")]
pub struct Config {
    /// URL of a coordinator's cluster listener, e.g. https://qala.example.org:7001;
    /// with several coordinators (sharing a Redis store), each one's own
    /// URL, comma-separated or the flag repeated: the worker registers and
    /// heartbeats with every one of them.
    #[arg(long, env = "QALA_WORKER_COORDINATOR", value_delimiter = ',', required = true)]
    pub coordinator: Vec<String>,
    /// Directory made by `qala-coordinator pki worker DIR ID`: ca.pem,
    /// worker.pem, worker-key.pem (reloaded when they change). The worker id
    /// is the one in the certificate.
    #[arg(long, env = "QALA_WORKER_TLS", conflicts_with_all = ["insecure", "enroll_token_file"])]
    pub tls: Option<PathBuf>,
    /// Get a short-lived certificate from the coordinator with a
    /// `worker-enroll` token read from this file (and renew it), instead of
    /// a pre-made --tls directory. Needs --id and --ca.
    #[arg(long, env = "QALA_WORKER_ENROLL_TOKEN_FILE", requires_all = ["id", "ca"], conflicts_with = "insecure")]
    pub enroll_token_file: Option<PathBuf>,
    /// CA certificate of the cluster, to check the coordinator while enrolling.
    #[arg(long, env = "QALA_WORKER_CA")]
    pub ca: Option<PathBuf>,
    /// Where an enrolled worker keeps its certificate and key.
    #[arg(long, env = "QALA_WORKER_ENROLL_DIR", default_value = "qala-data/worker-enrolled")]
    pub enroll_dir: PathBuf,
    /// Plain text instead of TLS, for a test setup on one machine: only on
    /// a loopback address, to loopback coordinators.
    #[arg(long, env = "QALA_WORKER_INSECURE")]
    pub insecure: bool,
    /// Address to listen on for the coordinator's calls (port 0 picks a free port).
    #[arg(long, env = "QALA_WORKER_LISTEN", default_value = "127.0.0.1:0")]
    pub listen: String,
    /// URL the coordinator should dial; defaults to https://<bound listen
    /// address> (http:// with --insecure). Its host must be one the
    /// worker's certificate names.
    #[arg(long, env = "QALA_WORKER_ADVERTISE")]
    pub advertise: Option<String>,
    /// Stable worker id (placement follows it); with --tls it must be the
    /// certificate's (which it defaults to); else defaults to <hostname>-<port>.
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
    /// Most bytes of decoded objects one scan holds at once (the file and
    /// the objects on the way down to the one being scanned).
    #[arg(long, env = "QALA_WORKER_MAX_SCAN_MEMORY", default_value_t = 512 * 1024 * 1024)]
    pub max_scan_memory: u64,
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
    /// A call that sends nothing for this many seconds is cancelled and
    /// frees its admission slot.
    #[arg(long, env = "QALA_WORKER_UPLOAD_STALL_SECS", default_value_t = 30)]
    pub upload_stall_secs: u64,
}

impl Config {
    pub fn limits(&self) -> qala_engine::Limits {
        qala_engine::Limits {
            max_depth: self.max_depth,
            max_objects: self.max_objects,
            max_total_bytes: self.max_total_bytes,
            max_object_size: self.max_object_size,
            max_ratio: self.max_ratio,
            max_scan_memory: self.max_scan_memory,
            object_timeout: Duration::from_secs(self.object_timeout_secs.max(1)),
            max_scan_time: Duration::from_secs(self.max_scan_time_secs.max(1)),
            alert_exceeded: self.alert_exceeded,
            alert_encrypted: self.alert_encrypted,
        }
    }
}
