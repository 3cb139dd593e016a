//! Service agents for tests of sightings, notices and hunts: each with its
//! own token, home, state and log, and the readers of what they did.

use crate::{Cluster, Proc, bin, wait_for};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub fn events(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

pub struct Agent {
    pub home: PathBuf,
    pub proc: Proc,
    pub quarantine: PathBuf,
}

impl Agent {
    pub fn events(&self) -> Vec<Value> {
        events(&self.proc.log)
    }

    /// Whether the service answered `file` (a verdict, or unknown and not
    /// uploaded when lookup-only).
    pub fn answered(&self, file: &str) -> bool {
        let path = self.home.join(file).display().to_string();
        self.events().iter().any(|e| (e["event"] == "verdict" || e["event"] == "unknown") && e["path"] == path.as_str())
    }

    pub fn action_on(&self, file: &str) -> Option<Value> {
        let path = self.home.join(file).display().to_string();
        self.events().into_iter().find(|e| e["event"] == "action" && e["path"] == path.as_str())
    }

    pub fn notices_about(&self, sha: &str) -> usize {
        self.events().iter().filter(|e| e["event"] == "notice" && e["sha256"] == sha).count()
    }
}

/// A service agent with its own token, home and state, watching and
/// scanning `home` at start, quarantining what is malicious.
pub fn agent(cluster: &Cluster, url: &str, name: &str, files: &[(&str, &[u8])], scan: &str, malicious: &str) -> Agent {
    let d = cluster.dir.path().join(name);
    let home = d.join("home");
    std::fs::create_dir_all(&home).unwrap();
    for (f, data) in files {
        let path = home.join(f);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    }
    let config = d.join("agent.toml");
    let quarantine = d.join("quarantine");
    std::fs::write(
        &config,
        format!(
            "[server]\nagent_id = {name:?}\ncheckin_interval = \"2s\"\n\n[scan]\n{scan}\n\n[watch]\npaths = [{home:?}]\ndebounce_ms = 200\nbackend = \"inotify\"\n\n\
             [schedule]\npaths = [{home:?}]\ninterval = \"1h\"\nat_start = true\n\n[actions]\nmalicious = {malicious:?}\n\n\
             [paths]\nquarantine = {quarantine:?}\nspool = {:?}\nhash_cache = {:?}\ncrl_cache = {:?}\nheld = {:?}\n",
            d.join("spool"),
            d.join("hashes"),
            d.join("crls.pem"),
            d.join("held"),
        ),
    )
    .unwrap();
    let args: Vec<String> = [
        "--server",
        url,
        "--ca",
        &cluster.ca().display().to_string(),
        "--token-file",
        &cluster.token_file(name).display().to_string(),
        "--config",
        &config.display().to_string(),
        "service",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let proc = Proc::spawn(name, &bin("qala-agent"), &args, cluster.dir.path()).unwrap();
    let a = Agent { home, proc, quarantine };
    for (f, _) in files {
        wait_for(&format!("{name} to answer {f}"), Duration::from_secs(60), || a.answered(f).then_some(()))
            .unwrap_or_else(|e| panic!("{e}: {}", a.proc.log_text()));
    }
    a
}

/// `qala-coordinator sightings HASH --json` at `url` as `token`: one JSON
/// object per holder, or the error text.
pub fn sightings(cluster: &Cluster, url: &str, token: &str, hash: &str) -> Result<Vec<Value>, String> {
    let out = std::process::Command::new(bin("qala-coordinator"))
        .args(["sightings", hash, "--json", "--server", url, "--ca"])
        .arg(cluster.ca())
        .arg("--token-file")
        .arg(cluster.token_file(token))
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect())
}

/// `METHOD path` on the coordinator's REST listener at `port` as the token
/// named `who`, with `body` as JSON when given: the status and the JSON
/// answer (Null if it is not JSON).
pub fn rest(cluster: &Cluster, port: u16, method: &str, path: &str, who: &str, body: Option<&str>) -> (u16, Value) {
    let token = std::fs::read_to_string(cluster.token_file(who)).unwrap();
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sS", "-w", "\n%{http_code}", "-X", method, "--cacert"]).arg(cluster.ca());
    cmd.arg("-H").arg(format!("Authorization: Bearer {}", token.trim()));
    if let Some(body) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data-binary", body]);
    }
    let out = cmd.arg(format!("https://127.0.0.1:{port}{path}")).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), serde_json::from_str(body).unwrap_or(Value::Null))
}
