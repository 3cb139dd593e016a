//! The agent's configuration file (`/etc/qala/agent.toml`): one TOML file
//! for the service, read at start; command-line flags and environment
//! variables override it. Unknown keys are an error (a misspelt
//! `on_acess = true` must not silently leave a machine unprotected).
//!
//! ```toml
//! [server]
//! url = "https://qala.example.org:7000"
//! ca = "/etc/qala/ca.pem"
//! token_file = "/etc/qala/agent.token"   # written by `qala-agent enroll`
//! agent_id = "ws-042-3fa9c1"              # written by `qala-agent enroll`
//!
//! [scan]
//! exclude = ["/var/lib/docker/**", "*.iso"]
//! max_file_size = "512M"
//! one_file_system = false
//! lookup_only = false                      # privacy mode: never upload
//! upload_exclude = ["**/.ssh/**"]          # replaces the default list
//!
//! [watch]
//! paths = ["/home", "/tmp", "/var/tmp"]
//! debounce_ms = 1000
//! backend = "auto"                         # auto (fanotify as root), inotify, fanotify
//! on_access = false                        # block malicious files on open (root)
//! on_access_timeout_ms = 500
//! on_access_max_size = "64M"
//!
//! [schedule]
//! paths = ["/"]
//! interval = "24h"                         # "0" turns scheduled rescans off
//! at_start = false
//!
//! [actions]
//! malicious = "quarantine"                 # report, quarantine or delete
//! suspicious = "report"
//!
//! [limits]
//! upload_bytes_per_sec = "10M"             # 0: no cap
//! nice = 10
//! ionice = "idle"                          # idle, best-effort or none
//! cpu_percent = 50                         # share of one core for hashing; 0: no cap
//! threads = 2
//!
//! [paths]
//! quarantine = "/var/lib/qala/quarantine"
//! spool = "/var/lib/qala/spool"
//! hash_cache = "/var/cache/qala/hashes"
//! spool_max = 100000
//! ```

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Where the service looks for its configuration by default.
pub const DEFAULT_PATH: &str = "/etc/qala/agent.toml";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    pub server: ServerConfig,
    pub scan: ScanConfig,
    pub watch: WatchConfig,
    pub schedule: ScheduleConfig,
    pub actions: ActionsConfig,
    pub limits: LimitsConfig,
    pub paths: PathsConfig,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub url: Option<String>,
    pub ca: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
    pub agent_id: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScanConfig {
    pub exclude: Vec<String>,
    pub max_file_size: Option<Size>,
    pub one_file_system: bool,
    pub lookup_only: bool,
    /// Replaces the default private paths when set.
    pub upload_exclude: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WatchBackend {
    /// fanotify when root, inotify otherwise.
    #[default]
    Auto,
    Inotify,
    Fanotify,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WatchConfig {
    pub paths: Vec<PathBuf>,
    pub debounce_ms: u64,
    pub backend: WatchBackend,
    pub on_access: bool,
    pub on_access_timeout_ms: u64,
    pub on_access_max_size: Size,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            paths: Vec::new(),
            debounce_ms: 1000,
            backend: WatchBackend::Auto,
            on_access: false,
            on_access_timeout_ms: 500,
            on_access_max_size: Size(64 << 20),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleConfig {
    pub paths: Vec<PathBuf>,
    pub interval: Duration,
    pub at_start: bool,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self { paths: Vec::new(), interval: Duration(std::time::Duration::from_secs(24 * 3600)), at_start: false }
    }
}

/// What the agent does with a file of a given verdict.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    #[default]
    Report,
    Quarantine,
    Delete,
}

impl Action {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "report" => Ok(Action::Report),
            "quarantine" => Ok(Action::Quarantine),
            "delete" => Ok(Action::Delete),
            _ => Err(format!("{s:?}: use report, quarantine or delete")),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ActionsConfig {
    pub malicious: Action,
    pub suspicious: Action,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IoNice {
    #[default]
    Idle,
    BestEffort,
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub upload_bytes_per_sec: Size,
    pub nice: i32,
    pub ionice: IoNice,
    pub cpu_percent: u32,
    pub threads: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self { upload_bytes_per_sec: Size(0), nice: 10, ionice: IoNice::Idle, cpu_percent: 50, threads: 2 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PathsConfig {
    pub quarantine: Option<PathBuf>,
    pub spool: Option<PathBuf>,
    pub hash_cache: Option<PathBuf>,
    pub spool_max: usize,
}

impl Default for PathsConfig {
    fn default() -> Self {
        Self { quarantine: None, spool: None, hash_cache: None, spool_max: 100_000 }
    }
}

/// A size in bytes, written as a number or a string with K, M or G.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Size(pub u64);

/// A value written as a bare number or as text with a unit.
fn number_or_text<'de, D: serde::Deserializer<'de>, T>(
    d: D,
    number: impl FnOnce(u64) -> T,
    text: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        N(u64),
        S(String),
    }
    match Raw::deserialize(d)? {
        Raw::N(n) => Ok(number(n)),
        Raw::S(s) => text(&s).map_err(serde::de::Error::custom),
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        number_or_text(d, Size, |s| crate::walk::parse_size(s).map(Size))
    }
}

/// A duration written as `"90s"`, `"15m"`, `"24h"`, `"7d"` or seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duration(pub std::time::Duration);

pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("{s:?}: use a number with s, m, h or d"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return Err(format!("{s:?}: use a number with s, m, h or d")),
    };
    Ok(std::time::Duration::from_secs(secs))
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        number_or_text(d, |n| Duration(std::time::Duration::from_secs(n)), |s| parse_duration(s).map(Duration))
    }
}

impl AgentConfig {
    /// Read `path`; a missing file is the defaults only when `required` is false.
    pub fn load(path: &Path, required: bool) -> anyhow::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => Ok(Self::default()),
            Err(e) => Err(anyhow::anyhow!("{}: {e}", path.display())),
        }
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }
}

/// Set `server.url`, `server.ca`, `server.token_file` and `server.agent_id`
/// in the TOML file at `path` (created if missing), keeping everything else
/// in it, comments included; written atomically, mode 0600.
pub fn write_enrollment(path: &Path, url: &str, ca: Option<&Path>, token_file: &Path, agent_id: &str) -> anyhow::Result<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => anyhow::bail!("{}: {e}", path.display()),
    };
    let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let server = doc.entry("server").or_insert(toml_edit::table());
    let server = server.as_table_mut().ok_or_else(|| anyhow::anyhow!("{}: [server] is not a table", path.display()))?;
    server["url"] = toml_edit::value(url);
    if let Some(ca) = ca {
        server["ca"] = toml_edit::value(ca.display().to_string());
    }
    server["token_file"] = toml_edit::value(token_file.display().to_string());
    server["agent_id"] = toml_edit::value(agent_id);
    crate::fsutil::write_atomic(path, doc.to_string().as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example_and_refuses_typos() {
        let doc = include_str!("config.rs");
        let example: String = doc
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| format!("{}\n", l.trim_start_matches("//!").trim_start()))
            .collect();
        let c = AgentConfig::parse(&example).unwrap();
        assert_eq!(c.watch.paths.len(), 3);
        assert_eq!(c.actions.malicious, Action::Quarantine);
        assert_eq!(c.limits.upload_bytes_per_sec, Size(10 << 20));
        assert_eq!(c.schedule.interval.0.as_secs(), 24 * 3600);
        assert_eq!(c.limits.ionice, IoNice::Idle);
        let err = AgentConfig::parse("[watch]\non_acess = true\n").unwrap_err();
        assert!(err.contains("on_acess"), "{err}");
        assert!(AgentConfig::parse("[actions]\nmalicious = \"explode\"\n").is_err());
    }

    #[test]
    fn enrollment_keeps_the_rest_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("agent.toml");
        std::fs::write(&p, "# fleet defaults\n[watch]\npaths = [\"/home\"]\n").unwrap();
        write_enrollment(&p, "https://q:7000", Some(Path::new("/etc/qala/ca.pem")), Path::new("/etc/qala/t"), "h-abc123")
            .unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains("# fleet defaults"));
        let c = AgentConfig::parse(&text).unwrap();
        assert_eq!(c.server.agent_id.as_deref(), Some("h-abc123"));
        assert_eq!(c.watch.paths, vec![PathBuf::from("/home")]);
    }
}
