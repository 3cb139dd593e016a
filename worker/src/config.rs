//! Worker configuration: command-line flags, each also settable from the
//! environment (`QALA_WORKER_*`).

use clap::Parser;
use std::path::PathBuf;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "qala-worker",
    version,
    about = "Qala scan worker: registers with a coordinator and scans the files it sends",
    after_help = "`qala-worker health [--address ADDR] [--live]` asks a running worker whether it is ready (exec probes)."
)]
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
    /// Get a short-lived certificate from a coordinator with a
    /// `worker-enroll` join token read from this file, instead of a pre-made
    /// --tls directory; it is renewed over mutual TLS without the token,
    /// which is read again only to enroll anew once the certificate has
    /// expired (the worker was down). Needs --ca.
    #[arg(long, env = "QALA_WORKER_ENROLL_TOKEN_FILE", requires = "ca", conflicts_with = "insecure")]
    pub enroll_token_file: Option<PathBuf>,
    /// A host name or IP address an enrolled certificate should name
    /// (repeat); each must be one the coordinator allows (its
    /// --enroll-hosts). None by default: coordinators know a worker by its
    /// id, not by its address.
    #[arg(long = "cert-host", env = "QALA_WORKER_CERT_HOSTS", value_delimiter = ',')]
    pub cert_hosts: Vec<String>,
    /// CA certificate of the cluster, to check the coordinator while enrolling.
    #[arg(long, env = "QALA_WORKER_CA")]
    pub ca: Option<PathBuf>,
    /// Where an enrolled worker keeps its certificate and key.
    #[arg(long, env = "QALA_WORKER_ENROLL_DIR", default_value = "qala-data/worker-enrolled")]
    pub enroll_dir: PathBuf,
    /// Where the worker keeps the newest certificate revocation lists it
    /// was given, for its next start (the --tls directory may be read-only).
    #[arg(long, env = "QALA_WORKER_CRL_CACHE", default_value = "qala-data/worker-crls.pem")]
    pub crl_cache: PathBuf,
    /// Plain text instead of TLS, for a test setup on one machine: only on
    /// a loopback address, to loopback coordinators.
    #[arg(long, env = "QALA_WORKER_INSECURE")]
    pub insecure: bool,
    /// Address to listen on for the coordinator's calls (port 0 picks a free port).
    #[arg(long, env = "QALA_WORKER_LISTEN", default_value = "127.0.0.1:0")]
    pub listen: String,
    /// Address of the plain-HTTP listener of Prometheus `/metrics` and the
    /// probes' `/healthz` and `/readyz` (e.g. 127.0.0.1:9310; on a
    /// container's address, keep it to the cluster's network); off unless
    /// given. `qala-worker health` asks it.
    #[arg(long, env = "QALA_WORKER_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// URL the coordinator should dial; defaults to https://<the first
    /// --cert-host>:<port>, else https://<this host's name>:<port> when
    /// listening on all addresses, else https://<bound listen address>
    /// (http:// with --insecure). The coordinator requires this worker's
    /// certificate there, whatever names it carries.
    #[arg(long, env = "QALA_WORKER_ADVERTISE")]
    pub advertise: Option<String>,
    /// Stable worker id (placement follows it); with --tls it must be the
    /// certificate's (which it defaults to); enrolling, it defaults to this
    /// host's name; with --insecure, to <hostname>-<port>.
    #[arg(long, env = "QALA_WORKER_ID")]
    pub id: Option<String>,
    /// Scan threads, each with its own yara-x scanner; defaults to the CPU count.
    #[arg(long, env = "QALA_WORKER_THREADS")]
    pub threads: Option<usize>,
    /// Largest file accepted for scanning (bytes); larger ones are answered `unscannable`.
    #[arg(long, env = "QALA_WORKER_MAX_FILE_SIZE", default_value_t = 1024 * 1024 * 1024)]
    pub max_file_size: u64,
    /// Files of disk-held uploads (64 MiB and more) kept open, unlinked,
    /// between uploads, up to this many bytes of them: the next large
    /// uploads write over their page cache instead of taking new pages. A
    /// file is kept only once no scan child holds it. This much disk stays
    /// in use while the worker is idle; 0 closes each with its upload.
    #[arg(long, env = "QALA_WORKER_UPLOAD_KEEP_BYTES", default_value_t = 1024 * 1024 * 1024)]
    pub upload_keep_bytes: u64,
    /// Heap of each sandboxed scan child (RLIMIT_DATA), MiB; its address
    /// space is this plus 8 GiB of reservations. A child over it dies and is
    /// replaced; the file is retried once, alone.
    #[arg(long, env = "QALA_WORKER_SCAN_CHILD_MEMORY_MIB", default_value_t = 1024)]
    pub scan_child_memory_mib: u64,
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
