//! Harness for Qala's end-to-end tests: real `qala-coordinator`,
//! `qala-worker`, `qala-agent` and `redis-server` processes on loopback
//! ports chosen at run time, each killed when its handle drops.
//!
//! The binaries are looked up next to the test executable (`target/<profile>`)
//! or in `$QALA_BIN_DIR`. `cargo test --workspace` builds them, because each
//! binary's own package has integration tests.

pub mod fleet;

use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// EICAR, assembled at run time so no file of the repository contains it.
pub fn eicar() -> Vec<u8> {
    let mut v = br"*H+H$!ELIF-TSET-SURIVITNA-DRADNATS-RACIE$}7)CC7)^P(45XZP\4[PA@%P!O5X".to_vec();
    v.reverse();
    v
}

/// `len` distinct pseudo-random bytes for `seed` (xorshift): test and load
/// files that are all different and compress to nothing.
pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = 0x2545_F491_4F6C_DD1D ^ (seed + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// The messages of one `Scan` call for `data`: its header (sha256, size,
/// `name`), then the content in chunks.
pub fn scan_messages(data: &[u8], name: &str) -> Vec<qala_proto::v1::ScanRequest> {
    use qala_proto::v1::{ScanHeader, ScanRequest, scan_request::Msg};
    let header = ScanHeader {
        sha256: sha256_hex(data),
        size: data.len() as u64,
        file_name: name.into(),
        agent_id: "qala-tests".into(),
        ..Default::default()
    };
    let mut msgs = vec![ScanRequest { msg: Some(Msg::Header(header)) }];
    msgs.extend(data.chunks(qala_proto::CHUNK_BYTES).map(|c| ScanRequest { msg: Some(Msg::Chunk(c.to_vec().into())) }));
    msgs
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// A zip holding `entries` (deflated).
pub fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in entries {
        w.start_file(*name, opts).expect("zip entry");
        w.write_all(data).expect("zip write");
    }
    w.finish().expect("zip finish").into_inner()
}

/// Directory holding the Qala binaries.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("QALA_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("current exe");
    let here = exe.parent().expect("exe dir");
    // A binary of this crate sits beside the others (target/<profile>); a
    // test sits one level down (target/<profile>/deps).
    if here.join("qala-coordinator").exists() {
        return here.to_path_buf();
    }
    here.parent().expect("target dir").to_path_buf()
}

pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(p.exists(), "{} not found: build with `cargo test --workspace` or set QALA_BIN_DIR", p.display());
    p
}

/// The repository root (for bundled rules and test data).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").to_path_buf()
}

/// Peak resident memory (VmHWM) of a live process, in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}

/// A `kB` field of `/proc/PID/status` (`VmRSS:`, `RssAnon:`, ...), 0 if absent.
pub fn status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find(|l| l.starts_with(key)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0)
}

/// The live child processes of `pid` (a worker's scan children).
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        out.extend(text.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
    }
    out
}

/// Peak resident memory of `pid` plus that of each of its live children,
/// in KiB: a worker's own and its scan children's, which parse the files.
pub fn tree_peak_rss_kib(pid: u32) -> u64 {
    peak_rss_kib(pid) + children_of(pid).into_iter().map(peak_rss_kib).sum::<u64>()
}

/// Start the peak resident memory of `pid` and its children afresh
/// (`clear_refs` 5), so the next figure is one file's.
pub fn reset_peak_rss(pid: u32) {
    for p in std::iter::once(pid).chain(children_of(pid)) {
        let _ = std::fs::write(format!("/proc/{p}/clear_refs"), "5");
    }
}

/// A free loopback port for a server a test starts (bound then released).
///
/// Taken below Linux's ephemeral range (32768-60999): a port the kernel
/// handed out for `:0` and that was released can be given again at once as
/// the source port of any outgoing connection (a client of another test),
/// and the server then fails with "address in use" (seen in CI). Each
/// test process walks its own stretch of 20000-31999, one port per call.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = (std::process::id().wrapping_mul(2_654_435_761) >> 4) % SPAN;
    for _ in 0..SPAN {
        let port = (LOW + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Poll `f` until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A child process, killed on drop; its stderr goes to a log file.
pub struct Proc {
    pub name: String,
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, program: &Path, args: &[String], log_dir: &Path) -> Result<Proc> {
        let log = log_dir.join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
        let child = Command::new(program)
            .args(args)
            // A worker keeps its revocation lists here, not in the
            // test's working directory.
            .env("QALA_WORKER_CRL_CACHE", log_dir.join(format!("{name}-crls.pem")))
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("spawning {}", program.display()))?;
        Ok(Proc { name: name.to_string(), child, log })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and wait (up to 10 s) for a clean exit; returns the exit status.
    pub fn terminate(mut self) -> Result<std::process::ExitStatus> {
        Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status()?;
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait()? {
                return Ok(st);
            }
            if start.elapsed() > Duration::from_secs(10) {
                bail!("{} did not exit within 10 s of SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no chance to finish anything (a crash, an OOM kill).
    pub fn kill_hard(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A throwaway `redis-server` on a free loopback port, no persistence.
pub struct Redis {
    pub port: u16,
    _proc: Proc,
}

impl Redis {
    pub fn start(dir: &Path) -> Result<Redis> {
        Self::start_on(dir, free_port())
    }

    /// Start on `port` (to bring a stopped Redis back where clients expect it).
    pub fn start_on(dir: &Path, port: u16) -> Result<Redis> {
        Self::start_with(dir, port, &[])
    }

    /// Start on `port` with an append-only file in `dir` (fsync'd on every
    /// write): stopped and started again, it has what it had, as a
    /// production Redis would.
    pub fn start_persistent_on(dir: &Path, port: u16) -> Result<Redis> {
        Self::start_with(dir, port, &["--appendonly", "yes", "--appendfsync", "always"])
    }

    fn start_with(dir: &Path, port: u16, extra: &[&str]) -> Result<Redis> {
        let mut args = redis_args(dir, port);
        // Later flags win over the throwaway defaults.
        args.extend(extra.iter().map(|s| s.to_string()));
        let proc = redis_server(dir, &format!("redis-{port}"), &args)?;
        wait_for("redis PING", Duration::from_secs(10), || redis_ping(port).then_some(()))?;
        Ok(Redis { port, _proc: proc })
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

/// One command on a Redis server (or sentinel) at `port`.
pub fn redis_cmd<T: redis::FromRedisValue>(port: u16, args: &[&str]) -> Result<T> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let mut conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    Ok(cmd.query(&mut conn)?)
}

/// Flags of a throwaway server: loopback `port`, no persistence, files in `dir`.
fn redis_args(dir: &Path, port: u16) -> Vec<String> {
    let dir = dir.display().to_string();
    ["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", &dir]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn redis_server(dir: &Path, name: &str, args: &[String]) -> Result<Proc> {
    let program = which("redis-server").context("redis-server is not installed (apt-get install redis-server)")?;
    Proc::spawn(name, &program, args, dir)
}

/// A throwaway Redis Cluster: `nodes` primaries on free loopback ports, the
/// 16,384 slots split evenly between them.
pub struct RedisCluster {
    pub ports: Vec<u16>,
    _procs: Vec<Proc>,
}

impl RedisCluster {
    pub fn start(dir: &Path, nodes: usize) -> Result<RedisCluster> {
        let ports: Vec<u16> = (0..nodes).map(|_| free_port()).collect();
        let mut procs = Vec::new();
        for &port in &ports {
            let mut args = redis_args(dir, port);
            let conf = format!("nodes-{port}.conf");
            args.extend(
                ["--cluster-enabled", "yes", "--cluster-config-file", &conf, "--cluster-node-timeout", "2000"].map(String::from),
            );
            procs.push(redis_server(dir, &format!("redis-cluster-{port}"), &args)?);
        }
        for &port in &ports {
            wait_for("redis cluster node PING", Duration::from_secs(10), || redis_ping(port).then_some(()))?;
        }
        for (i, &port) in ports.iter().enumerate() {
            let (first, last) = (i * 16384 / nodes, (i + 1) * 16384 / nodes - 1);
            redis_cmd::<()>(port, &["CLUSTER", "ADDSLOTSRANGE", &first.to_string(), &last.to_string()])?;
        }
        for &port in &ports[1..] {
            redis_cmd::<()>(ports[0], &["CLUSTER", "MEET", "127.0.0.1", &port.to_string()])?;
        }
        let known = format!("cluster_known_nodes:{nodes}");
        wait_for("redis cluster state ok", Duration::from_secs(30), || {
            ports
                .iter()
                .all(|&p| {
                    let info: String = redis_cmd(p, &["CLUSTER", "INFO"]).unwrap_or_default();
                    info.contains("cluster_state:ok") && info.contains(&known)
                })
                .then_some(())
        })?;
        Ok(RedisCluster { ports, _procs: procs })
    }

    pub fn url(&self) -> String {
        let hosts: Vec<String> = self.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        format!("redis+cluster://{}", hosts.join(","))
    }
}

/// A throwaway Sentinel group: a master, one replica and one sentinel
/// (quorum 1) watching them as `qala`, quick to fail over.
pub struct RedisSentinel {
    pub master_port: u16,
    pub replica_port: u16,
    pub sentinel_port: u16,
    master: Option<Proc>,
    _replica: Proc,
    _sentinel: Proc,
}

impl RedisSentinel {
    pub const MASTER: &str = "qala";

    pub fn start(dir: &Path) -> Result<RedisSentinel> {
        let (m, r, s) = (free_port(), free_port(), free_port());
        let master = redis_server(dir, &format!("redis-master-{m}"), &redis_args(dir, m))?;
        wait_for("redis master PING", Duration::from_secs(10), || redis_ping(m).then_some(()))?;
        let mut replica_args = redis_args(dir, r);
        replica_args.extend(["--replicaof".into(), "127.0.0.1".into(), m.to_string()]);
        let replica = redis_server(dir, &format!("redis-replica-{r}"), &replica_args)?;
        wait_for("replica in sync", Duration::from_secs(20), || {
            let info: String = redis_cmd(r, &["INFO", "replication"]).ok()?;
            info.contains("master_link_status:up").then_some(())
        })?;
        let conf = dir.join(format!("sentinel-{s}.conf"));
        std::fs::write(
            &conf,
            format!(
                "port {s}\nbind 127.0.0.1\ndir {}\nsentinel monitor {name} 127.0.0.1 {m} 1\n\
                 sentinel down-after-milliseconds {name} 1000\nsentinel failover-timeout {name} 5000\n",
                dir.display(),
                name = Self::MASTER
            ),
        )?;
        let sentinel = redis_server(dir, &format!("redis-sentinel-{s}"), &[conf.display().to_string(), "--sentinel".into()])?;
        // The sentinel learns of the replica from the master's INFO.
        wait_for("sentinel sees the replica", Duration::from_secs(30), || {
            let replicas: Vec<Vec<String>> = redis_cmd(s, &["SENTINEL", "REPLICAS", Self::MASTER]).ok()?;
            replicas.iter().any(|fields| fields.iter().any(|f| f == &r.to_string())).then_some(())
        })?;
        Ok(RedisSentinel {
            master_port: m,
            replica_port: r,
            sentinel_port: s,
            master: Some(master),
            _replica: replica,
            _sentinel: sentinel,
        })
    }

    pub fn url(&self) -> String {
        format!("redis+sentinel://127.0.0.1:{}/{}", self.sentinel_port, Self::MASTER)
    }

    /// The port of the master the sentinel names now.
    pub fn current_master(&self) -> Option<u16> {
        let addr: Vec<String> = redis_cmd(self.sentinel_port, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", Self::MASTER]).ok()?;
        addr.get(1)?.parse().ok()
    }

    /// Kill the master (after it has passed its writes on) and wait until
    /// the sentinel has promoted the replica.
    pub fn fail_over(&mut self) -> Result<()> {
        redis_cmd::<i64>(self.master_port, &["WAIT", "1", "2000"])?;
        if let Some(mut m) = self.master.take() {
            m.kill_hard()?;
        }
        wait_for("sentinel failover", Duration::from_secs(60), || (self.current_master()? == self.replica_port).then_some(()))?;
        Ok(())
    }
}

fn redis_ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(program)).find(|p| p.is_file())
}

/// The gRPC client of `qala.v1.Scanner` the tests use: TLS and a bearer token.
pub type Scanner = qala_proto::v1::scanner_client::ScannerClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, qala_tls::BearerToken>,
>;

/// How [`Cluster::start_with`] starts the coordinators.
#[derive(Debug, Clone)]
pub struct Options {
    /// `--rules-poll-ms`.
    pub rules_poll_ms: u64,
    /// More coordinator flags (quotas, timeouts).
    pub coordinator_args: Vec<String>,
    /// Keep the PKI and token files here (made anew) instead of in the
    /// cluster's temporary directory.
    pub state_dir: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        // The tests drive many uploads as one client: per-client quotas are
        // raised here and tested on their own.
        let args = ["--client-max-uploads", "4096", "--client-max-bytes-per-sec", "0"];
        Options { rules_poll_ms: 300, coordinator_args: args.map(String::from).to_vec(), state_dir: None }
    }
}

/// A coordinator and its workers, over TLS with the cluster's own PKI
/// (`qala-coordinator pki init` in the test's directory) and tokens.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// The coordinator's cluster listener (workers register there).
    pub cluster_port: u16,
    pub rules: PathBuf,
    pub store: String,
    pub coordinator: Option<Proc>,
    /// More coordinators on the same store and rules, each on its own ports
    /// ([`Cluster::add_coordinator`]); workers added later register with all.
    pub peers: Vec<(u16, u16, Proc)>,
    pub workers: Vec<Proc>,
    pub options: Options,
    /// The PKI directory (ca.pem, coordinator.pem, workers/ID/...).
    pub pki: PathBuf,
}

/// Run `qala-coordinator ARGS` to completion (pki and token commands).
pub fn coordinator_command(args: &[&str]) -> Result<String> {
    let out = Command::new(bin("qala-coordinator")).args(args).stdin(Stdio::null()).output()?;
    if !out.status.success() {
        bail!("qala-coordinator {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Write `token` to a 0600 file.
pub fn write_token(path: &Path, token: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    writeln!(f, "{token}")?;
    Ok(())
}

impl Cluster {
    /// Start a coordinator on `store` with `rules`, and `workers` workers
    /// (ids `w1`, `w2`, ...), and wait until all workers hold the rules.
    pub fn start(rules: &Path, store: Option<&str>, workers: usize) -> Result<Cluster> {
        Self::start_with(rules, store, workers, Options::default())
    }

    /// [`Cluster::start`] with the coordinator polling rule files every `rules_poll_ms`.
    pub fn start_with_poll(rules: &Path, store: Option<&str>, workers: usize, rules_poll_ms: u64) -> Result<Cluster> {
        Self::start_with(rules, store, workers, Options { rules_poll_ms, ..Options::default() })
    }

    /// [`Cluster::start`] with `options`. Makes a PKI and two tokens
    /// (`admin`, `agent`) in the store before the coordinator starts.
    pub fn start_with(rules: &Path, store: Option<&str>, workers: usize, options: Options) -> Result<Cluster> {
        let c = Self::prepare(rules, store, options)?;
        let mut c = c;
        c.start_coordinator()?;
        for i in 1..=workers {
            c.add_worker(&format!("w{i}"))?;
        }
        c.wait_ready(workers)?;
        Ok(c)
    }

    /// The directory, PKI and tokens of a cluster, nothing started.
    pub fn prepare(rules: &Path, store: Option<&str>, options: Options) -> Result<Cluster> {
        let dir = tempfile::tempdir()?;
        let store =
            store.map(str::to_string).unwrap_or_else(|| format!("embedded:{}", dir.path().join("verdicts.redb").display()));
        let pki = match &options.state_dir {
            Some(state) => {
                let pki = state.join("pki");
                if pki.exists() {
                    std::fs::remove_dir_all(&pki)?;
                }
                pki
            }
            None => dir.path().join("pki"),
        };
        coordinator_command(&["pki", "init", &pki.display().to_string()])?;
        let c = Cluster {
            port: free_port(),
            cluster_port: free_port(),
            rules: rules.to_path_buf(),
            store,
            coordinator: None,
            peers: Vec::new(),
            workers: Vec::new(),
            dir,
            options,
            pki,
        };
        c.add_token_offline("admin", "admin")?;
        c.add_token_offline("agent", "agent")?;
        Ok(c)
    }

    /// Make a token in the store directly (no coordinator running on an
    /// embedded store); written to `<dir>/<name>.token`, returned. One of
    /// the same name from an earlier run on a kept store (`qala-demo`'s) is
    /// replaced.
    pub fn add_token_offline(&self, role: &str, name: &str) -> Result<String> {
        let out = coordinator_command(&["token", "add", "--replace", "--role", role, name, "--store", &self.store])?;
        let token = out.lines().last().unwrap_or("").trim().to_string();
        write_token(&self.token_file(name), &token)?;
        Ok(token)
    }

    /// Make a token through the running coordinator's admin API.
    pub fn add_token(&self, role: &str, name: &str) -> Result<String> {
        let (ca, admin) = (self.ca().display().to_string(), self.token_file("admin").display().to_string());
        let out = coordinator_command(&[
            "token",
            "add",
            "--role",
            role,
            name,
            "--server",
            &self.url(),
            "--ca",
            &ca,
            "--token-file",
            &admin,
        ])?;
        let token = out.lines().last().unwrap_or("").trim().to_string();
        write_token(&self.token_file(name), &token)?;
        Ok(token)
    }

    /// Where the token named `name` is kept.
    pub fn token_file(&self, name: &str) -> PathBuf {
        self.options.state_dir.as_deref().unwrap_or(self.dir.path()).join(format!("{name}.token"))
    }

    pub fn token(&self, name: &str) -> String {
        std::fs::read_to_string(self.token_file(name)).unwrap_or_default().trim().to_string()
    }

    pub fn ca(&self) -> PathBuf {
        self.pki.join("ca.pem")
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn cluster_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.cluster_port)
    }

    /// Start (or start again) the first coordinator, on its ports. A port
    /// taken meanwhile by another test's process (they are picked free, then
    /// released) is picked anew on a first start.
    pub fn start_coordinator(&mut self) -> Result<()> {
        let first_start = self.coordinator.is_none() && !self.dir.path().join("coordinator.log").exists();
        for _ in 0..5 {
            let before = std::fs::metadata(self.dir.path().join("coordinator.log")).map(|m| m.len() as usize).unwrap_or(0);
            let mut proc = self.spawn_coordinator("coordinator", self.port, self.cluster_port)?;
            match listening(&mut proc, before)? {
                true => {
                    self.coordinator = Some(proc);
                    return Ok(());
                }
                false if first_start => {
                    self.port = free_port();
                    self.cluster_port = free_port();
                }
                false => std::thread::sleep(Duration::from_millis(500)),
            }
        }
        bail!("the coordinator could not bind its ports:{}", self.logs())
    }

    /// Start another coordinator with `extra` flags replacing the
    /// options' flags of the same names (its own `--http-listen`, say); its URL.
    pub fn add_coordinator_with(&mut self, extra: &[String]) -> Result<String> {
        let (port, cluster_port) = (free_port(), free_port());
        let name = format!("coordinator-{}", self.peers.len() + 2);
        let proc = self.spawn_coordinator_with(&name, port, cluster_port, extra)?;
        self.peers.push((port, cluster_port, proc));
        Ok(format!("https://127.0.0.1:{port}"))
    }

    fn spawn_coordinator(&self, name: &str, port: u16, cluster_port: u16) -> Result<Proc> {
        self.spawn_coordinator_with(name, port, cluster_port, &[])
    }

    fn spawn_coordinator_with(&self, name: &str, port: u16, cluster_port: u16, extra: &[String]) -> Result<Proc> {
        let mut args: Vec<String> = vec![
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--cluster-listen".into(),
            format!("127.0.0.1:{cluster_port}"),
            "--tls".into(),
            self.pki.display().to_string(),
            "--rules".into(),
            self.rules.display().to_string(),
            "--store".into(),
            self.store.clone(),
            "--heartbeat-ms".into(),
            "300".into(),
            "--rules-poll-ms".into(),
            self.options.rules_poll_ms.to_string(),
            "--auth-refresh-ms".into(),
            "300".into(),
            "--audit-log".into(),
            self.audit_log(name).display().to_string(),
            "--auth-cache".into(),
            self.dir.path().join(format!("{name}-auth-cache.json")).display().to_string(),
        ];
        // The options' flags, but those `extra` gives (each a flag and its value).
        let given: Vec<&String> = extra.iter().filter(|a| a.starts_with("--")).collect();
        let mut options = self.options.coordinator_args.iter().peekable();
        while let Some(a) = options.next() {
            if given.contains(&a) {
                if options.peek().is_some_and(|v| !v.starts_with("--")) {
                    options.next();
                }
                continue;
            }
            args.push(a.clone());
        }
        args.extend(extra.iter().cloned());
        Proc::spawn(name, &bin("qala-coordinator"), &args, self.dir.path())
    }

    /// The audit log of the coordinator called `name` (`coordinator` for the first).
    pub fn audit_log(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}-audit.jsonl"))
    }

    /// The audit lines written so far by the first coordinator.
    pub fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(self.audit_log("coordinator"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Start another coordinator on the same store and rules; its URL.
    pub fn add_coordinator(&mut self) -> Result<String> {
        let (port, cluster_port) = (free_port(), free_port());
        let proc = self.spawn_coordinator(&format!("coordinator-{}", self.peers.len() + 2), port, cluster_port)?;
        self.peers.push((port, cluster_port, proc));
        Ok(format!("https://127.0.0.1:{port}"))
    }

    /// Every coordinator's URL, the first one's first.
    pub fn urls(&self) -> Vec<String> {
        std::iter::once(self.url()).chain(self.peers.iter().map(|(port, _, _)| format!("https://127.0.0.1:{port}"))).collect()
    }

    /// Every coordinator's cluster listener URL, the first one's first.
    pub fn cluster_urls(&self) -> Vec<String> {
        std::iter::once(self.cluster_url())
            .chain(self.peers.iter().map(|(_, port, _)| format!("https://127.0.0.1:{port}")))
            .collect()
    }

    /// The certificate directory of worker `id`, made on first use.
    pub fn worker_tls(&self, id: &str) -> Result<PathBuf> {
        let dir = self.pki.join("workers").join(id);
        if !dir.exists() {
            coordinator_command(&["pki", "worker", &self.pki.display().to_string(), id])?;
        }
        Ok(dir)
    }

    /// Start worker `id` with its certificate.
    pub fn add_worker(&mut self, id: &str) -> Result<()> {
        let tls = self.worker_tls(id)?;
        self.add_worker_with(id, &["--tls".into(), tls.display().to_string()])
    }

    /// Start worker `id` with `identity` flags (--tls DIR, or enrollment
    /// ones, and a --listen address if it needs one known).
    pub fn add_worker_with(&mut self, id: &str, identity: &[String]) -> Result<()> {
        let mut args: Vec<String> = vec!["--coordinator".into(), self.cluster_urls().join(","), "--threads".into(), "2".into()];
        if !identity.iter().any(|a| a == "--listen") {
            args.extend(["--listen".into(), "127.0.0.1:0".into()]);
        }
        args.extend(identity.iter().cloned());
        self.workers.push(Proc::spawn(&format!("worker-{id}"), &bin("qala-worker"), &args, self.dir.path())?);
        Ok(())
    }

    /// Wait until `n` workers are live and hold the coordinator's rules.
    pub fn wait_ready(&self, n: usize) -> Result<Value> {
        self.wait_ready_at(&self.url(), n)
    }

    /// [`Cluster::wait_ready`] as the coordinator at `url` sees it.
    pub fn wait_ready_at(&self, url: &str, n: usize) -> Result<Value> {
        wait_for(&format!("{n} workers ready at {url}"), Duration::from_secs(60), || {
            let s = self.status_at(url).ok()?;
            let id = s["rules"]["ruleset_id"].as_str()?.to_string();
            let workers = s["workers"].as_array()?;
            (workers.len() == n && workers.iter().all(|w| w["ruleset_id"] == id.as_str())).then_some(s)
        })
        .with_context(|| self.logs())
    }

    pub fn status(&self) -> Result<Value> {
        self.status_at(&self.url())
    }

    /// `status --json` of the coordinator at `url`, as the admin.
    pub fn status_at(&self, url: &str) -> Result<Value> {
        let out = self.agent_as(url, "admin", &["status", "--json"])?;
        if !out.status.success() {
            bail!("status failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// Run `qala-agent --server <this cluster> ARGS` with the agent token.
    pub fn agent(&self, args: &[&str]) -> Result<Output> {
        self.agent_at(&self.url(), args)
    }

    /// Run `qala-agent --server URL ARGS` with the agent token.
    pub fn agent_at(&self, url: &str, args: &[&str]) -> Result<Output> {
        self.agent_as(url, "agent", args)
    }

    /// The `qala-agent` command for `url` with the token named `token`.
    pub fn agent_command(&self, url: &str, token: &str) -> Command {
        let mut cmd = Command::new(bin("qala-agent"));
        cmd.arg("--server").arg(url).arg("--ca").arg(self.ca()).arg("--token-file").arg(self.token_file(token));
        // Each cluster's agents share one hash cache of their own.
        cmd.env("QALA_HASH_CACHE", self.dir.path().join("agent-hashes"));
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Run `qala-agent --server URL ARGS` with the token named `token`.
    pub fn agent_as(&self, url: &str, token: &str, args: &[&str]) -> Result<Output> {
        Ok(self.agent_command(url, token).args(args).output()?)
    }

    /// `scan --json PATHS`: exit code and one JSON object per file, by path.
    pub fn scan(&self, paths: &[&Path]) -> Result<(i32, Vec<Value>)> {
        self.scan_at(&self.url(), paths)
    }

    /// [`Cluster::scan`] through the coordinator at `url`.
    pub fn scan_at(&self, url: &str, paths: &[&Path]) -> Result<(i32, Vec<Value>)> {
        let mut args = vec!["scan", "--json"];
        let paths: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        args.extend(paths.iter().map(String::as_str));
        let out = self.agent_at(url, &args)?;
        let mut lines = Vec::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            lines.push(serde_json::from_str::<Value>(line).with_context(|| format!("bad JSON line {line:?}"))?);
        }
        lines.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
        Ok((out.status.code().unwrap_or(-1), lines))
    }

    /// A TLS channel to `url` checked against the cluster CA, with no
    /// client certificate (an agent's connection).
    pub async fn channel(&self, url: &str) -> tonic::transport::Channel {
        self.channel_as(url, None).await
    }

    /// A TLS channel to `url` presenting `identity` (certificate, key files).
    pub async fn channel_as(&self, url: &str, identity: Option<(&Path, &Path)>) -> tonic::transport::Channel {
        qala_tls::install_crypto_provider();
        let tls = qala_tls::client_config(Some(&self.ca()), identity).expect("client TLS");
        tonic::transport::Endpoint::from_shared(url.to_string())
            .expect("url")
            .tls_config(tls)
            .expect("tls")
            .connect()
            .await
            .unwrap_or_else(|e| panic!("connecting to {url}: {e:?}"))
    }

    /// A channel to a worker as a coordinator (the coordinator's certificate).
    pub async fn worker_channel(&self, address: &str) -> tonic::transport::Channel {
        let (cert, key) = (self.pki.join("coordinator.pem"), self.pki.join("coordinator-key.pem"));
        self.channel_as(address, Some((&cert, &key))).await
    }

    /// A `Scanner` client of `url` with the token named `token` (no token if `None`).
    pub async fn scanner_with(&self, url: &str, token: Option<&str>) -> Scanner {
        let token = token.map(|t| self.token(t));
        let channel = self.channel(url).await;
        qala_proto::v1::scanner_client::ScannerClient::with_interceptor(
            channel,
            qala_tls::BearerToken::new(token.as_deref()).expect("token"),
        )
        .max_decoding_message_size(qala_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(qala_proto::MAX_MESSAGE_BYTES)
    }

    /// [`Cluster::scanner`], failing instead of panicking when the
    /// coordinator cannot be reached.
    pub async fn scanner_try(&self) -> Result<Scanner> {
        qala_tls::install_crypto_provider();
        let tls = qala_tls::client_config(Some(&self.ca()), None)?;
        let channel = tonic::transport::Endpoint::from_shared(self.url())?.tls_config(tls)?.connect().await?;
        Ok(qala_proto::v1::scanner_client::ScannerClient::with_interceptor(
            channel,
            qala_tls::BearerToken::new(Some(&self.token("agent")))?,
        ))
    }

    /// A `Scanner` client of this cluster with the agent token.
    pub async fn scanner(&self) -> Scanner {
        self.scanner_with(&self.url(), Some("agent")).await
    }

    /// All process logs, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for p in self.coordinator.iter().chain(self.peers.iter().map(|(_, _, p)| p)).chain(self.workers.iter()) {
            s.push_str(&format!("\n----- {} -----\n{}", p.name, tail(&p.log_text(), 4000)));
        }
        s
    }
}

/// Wait until a coordinator listens on both its sockets: true; false if it
/// exited because a port was taken; an error for any other exit.
fn listening(proc: &mut Proc, before: usize) -> Result<bool> {
    let start = Instant::now();
    loop {
        let log = proc.log_text();
        let new = log.get(before..).unwrap_or("");
        if new.contains("cluster listener (workers) listening") {
            return Ok(true);
        }
        if !proc.is_running() {
            if new.contains("cannot listen") {
                return Ok(false);
            }
            bail!("{} exited at start:\n{}", proc.name, tail(new, 4000));
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!("{} did not listen within 60 s:\n{}", proc.name, tail(new, 4000));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn tail(s: &str, n: usize) -> &str {
    let start = s.len().saturating_sub(n);
    let start = (start..s.len()).find(|&i| s.is_char_boundary(i)).unwrap_or(s.len());
    &s[start..]
}
