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
//! checkin_interval = "5m"                 # inventory check-ins of the service
//!
//! [scan]
//! exclude = ["/var/lib/docker/**", "*.iso"]
//! max_file_size = "512M"
//! one_file_system = false
//! lookup_only = false                      # privacy mode: never upload
//! upload_exclude = ["**/.ssh/**"]          # replaces the default list
//! sightings = true                         # false: the coordinator records nothing this machine holds
//!
//! [watch]
//! paths = ["/home", "/tmp", "/var/tmp"]
//! debounce_ms = 1000
//! backend = "auto"                         # auto (fanotify as root), inotify, fanotify
//! on_access = false                        # block malicious files on open (root): true or
//!                                           # "fail-open" (allow what cannot be judged in time), "fail-closed" (deny it)
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
//! crl_cache = "/var/lib/qala/crls.pem"     # revocation lists from check-ins
//! spool_max = 100000
//! ```

use crate::os::dirs::PrivateDirs;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Where the service looks for its configuration by default.
#[cfg(not(windows))]
pub const DEFAULT_PATH: &str = "/etc/qala/agent.toml";
/// The configuration file's default place on Windows (the MSI writes it).
#[cfg(windows)]
pub const DEFAULT_PATH: &str = r"C:\ProgramData\Qala\agent.toml";

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
    /// How often the service reports to the inventory (check-in); 5
    /// minutes unless set.
    pub checkin_interval: Option<Duration>,
}

impl ServerConfig {
    /// How often the service checks in.
    pub fn checkin_every(&self) -> std::time::Duration {
        self.checkin_interval.map_or(std::time::Duration::from_secs(300), |d| d.0).max(std::time::Duration::from_secs(1))
    }
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
    /// Let the coordinator record which contents (sha256s, never paths)
    /// this agent holds, so new indicators reach it (default true).
    pub sightings: Option<bool>,
}

impl ScanConfig {
    /// Whether sightings are on (the default).
    pub fn sightings(&self) -> bool {
        self.sightings.unwrap_or(true)
    }
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

/// On-access blocking: off, or on with what happens when no answer can be
/// had in time. `true` is `fail-open`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnAccess {
    #[default]
    Off,
    /// Allow an open the agent cannot judge in time (busy hashing, over
    /// the size cap, no answer before the deadline); scan it after.
    FailOpen,
    /// Deny it instead (never for the agent's own opens).
    FailClosed,
}

impl OnAccess {
    pub fn on(self) -> bool {
        self != OnAccess::Off
    }
}

impl<'de> Deserialize<'de> for OnAccess {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Given {
            Flag(bool),
            Mode(String),
        }
        match Given::deserialize(d)? {
            Given::Flag(false) => Ok(OnAccess::Off),
            Given::Flag(true) => Ok(OnAccess::FailOpen),
            Given::Mode(m) => match m.as_str() {
                "off" => Ok(OnAccess::Off),
                "fail-open" => Ok(OnAccess::FailOpen),
                "fail-closed" => Ok(OnAccess::FailClosed),
                other => Err(serde::de::Error::custom(format!(
                    "on_access = {other:?}: use false, true, \"fail-open\" or \"fail-closed\""
                ))),
            },
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WatchConfig {
    pub paths: Vec<PathBuf>,
    pub debounce_ms: u64,
    pub backend: WatchBackend,
    pub on_access: OnAccess,
    pub on_access_timeout_ms: u64,
    pub on_access_max_size: Size,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            paths: Vec::new(),
            debounce_ms: 1000,
            backend: WatchBackend::Auto,
            on_access: OnAccess::Off,
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
    /// The certificate revocation lists fetched at check-in (PEM).
    pub crl_cache: Option<PathBuf>,
    /// Which paths hold which content (sha256), kept by the service.
    pub held: Option<PathBuf>,
    pub spool_max: usize,
}

impl Default for PathsConfig {
    fn default() -> Self {
        Self { quarantine: None, spool: None, hash_cache: None, crl_cache: None, held: None, spool_max: 100_000 }
    }
}

impl PathsConfig {
    /// The places the file does not name, from `defaults`.
    pub fn fill(&mut self, defaults: &PrivateDirs) {
        self.quarantine.get_or_insert_with(|| defaults.quarantine.clone());
        self.spool.get_or_insert_with(|| defaults.spool.clone());
        self.crl_cache.get_or_insert_with(|| defaults.crl_cache.clone());
        self.held.get_or_insert_with(|| defaults.held.clone());
        if self.hash_cache.is_none() {
            self.hash_cache = defaults.hash_cache.clone();
        }
    }
}

/// Flags of `qala-agent scan` that override the file's `[scan]` and
/// `[limits]` settings.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ScanFlags {
    /// Cap uploads at SIZE bytes per second (K, M, G; default: the
    /// config's limits.upload_bytes_per_sec; 0: no cap).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_upload_rate: Option<u64>,
    /// Leave out paths matching GLOB (repeatable, added to the config's):
    /// a glob without `/` matches file and directory names (`*.iso`), one
    /// with `/` whole paths (`/var/lib/docker/**`).
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Skip files larger than SIZE (bytes, or with K, M, G).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_file_size: Option<u64>,
    /// Stay on the filesystem of each path given.
    #[arg(long)]
    pub one_file_system: bool,
    /// Read and hash every file, ignoring the hash cache.
    #[arg(long)]
    pub no_cache: bool,
    /// The hash cache file (default: ~/.cache/qala/hashes, or
    /// /var/cache/qala/hashes for root).
    #[arg(long, env = "QALA_HASH_CACHE", value_name = "FILE")]
    pub cache: Option<PathBuf>,
    /// Never upload content: files the cluster does not know are
    /// reported `unknown` (exit 0 when nothing is detected).
    #[arg(long, env = "QALA_LOOKUP_ONLY")]
    pub lookup_only: bool,
    /// Paths looked up but never uploaded (repeatable; replaces the
    /// default list: ~/.ssh, ~/.gnupg, keyrings, password store, browser
    /// and mail profiles).
    #[arg(long, value_name = "GLOB")]
    pub upload_exclude: Vec<String>,
}

/// A scan's settings: its flags over the file.
#[derive(Debug, Clone)]
pub struct ScanSettings {
    pub exclude: Vec<String>,
    pub max_file_size: Option<u64>,
    pub one_file_system: bool,
    /// The hash cache, unless turned off.
    pub cache: Option<PathBuf>,
    pub lookup_only: bool,
    pub upload_exclude: Vec<String>,
    /// Upload bytes per second (0: no cap).
    pub upload_rate: u64,
}

/// Flags of `qala-agent service` that override the file.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServiceFlags {
    /// Watch these paths (adds to the config's watch.paths).
    #[arg(long, value_name = "PATH")]
    pub watch: Vec<PathBuf>,
    /// Block opening malicious files (fanotify, root).
    #[arg(long)]
    pub on_access: bool,
    /// Never upload (as scan --lookup-only).
    #[arg(long, env = "QALA_LOOKUP_ONLY")]
    pub lookup_only: bool,
    /// Action on malicious files: report, quarantine or delete.
    #[arg(long, value_parser = Action::parse)]
    pub malicious: Option<Action>,
    /// Action on suspicious files: report, quarantine or delete.
    #[arg(long, value_parser = Action::parse)]
    pub suspicious: Option<Action>,
    /// The quarantine directory.
    #[arg(long, env = "QALA_QUARANTINE_DIR")]
    pub quarantine_dir: Option<PathBuf>,
    /// The offline spool file.
    #[arg(long, env = "QALA_SPOOL")]
    pub spool: Option<PathBuf>,
    /// The hash cache file.
    #[arg(long, env = "QALA_HASH_CACHE")]
    pub cache: Option<PathBuf>,
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
        number_or_text(d, Size, |s| parse_size(s).map(Size))
    }
}

/// A size in bytes, or with a unit in powers of 1024: `4K`, `25MiB`, `2g`
/// (parse-size).
pub fn parse_size(s: &str) -> Result<u64, String> {
    parse_size::Config::new().with_binary().parse_size(s.trim()).map_err(|_| format!("not a size: {s} (use bytes, or K, M, G)"))
}

/// A duration written as `"90s"`, `"15m"`, `"24h"`, `"7d"`, `"1h 30m"` or
/// seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duration(pub std::time::Duration);

/// A duration in humantime's words, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map(std::time::Duration::from_secs).map_err(|e| format!("{s:?}: {e}"));
    }
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e} (use a number with s, m, h or d)"))
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        number_or_text(d, |n| Duration(std::time::Duration::from_secs(n)), |s| parse_duration(s).map(Duration))
    }
}

/// A configuration file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl AgentConfig {
    /// Read `path`; a missing file is the defaults only when `required` is false.
    pub fn load(path: &Path, required: bool) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text).map_err(|message| ConfigError::Invalid { path: shown, message }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => Ok(Self::default()),
            Err(source) => Err(ConfigError::Io { path: shown, source }),
        }
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// A scan's settings: `flags` over this file's (exclusions add up;
    /// an upload exclusion list given replaces the file's, which replaces
    /// the default one of private places, `os_private`).
    pub fn scan_settings(&self, flags: ScanFlags, os_private: &[&str]) -> ScanSettings {
        let mut exclude = flags.exclude;
        exclude.extend(self.scan.exclude.iter().cloned());
        let upload_exclude = if !flags.upload_exclude.is_empty() {
            flags.upload_exclude
        } else if let Some(list) = self.scan.upload_exclude.clone() {
            list
        } else {
            os_private.iter().map(|g| g.to_string()).collect()
        };
        ScanSettings {
            exclude,
            max_file_size: flags.max_file_size.or(self.scan.max_file_size.map(|s| s.0)),
            one_file_system: flags.one_file_system || self.scan.one_file_system,
            cache: if flags.no_cache { None } else { flags.cache.or(self.paths.hash_cache.clone()) },
            lookup_only: flags.lookup_only || self.scan.lookup_only,
            upload_exclude,
            upload_rate: flags.max_upload_rate.unwrap_or(self.limits.upload_bytes_per_sec.0),
        }
    }

    /// The service's flags over this file.
    pub fn apply_service_flags(&mut self, flags: ServiceFlags) {
        self.watch.paths.extend(flags.watch);
        if flags.on_access && !self.watch.on_access.on() {
            self.watch.on_access = OnAccess::FailOpen;
        }
        self.scan.lookup_only |= flags.lookup_only;
        self.actions.malicious = flags.malicious.unwrap_or(self.actions.malicious);
        self.actions.suspicious = flags.suspicious.unwrap_or(self.actions.suspicious);
        self.paths.quarantine = flags.quarantine_dir.or(self.paths.quarantine.take());
        self.paths.spool = flags.spool.or(self.paths.spool.take());
        self.paths.hash_cache = flags.cache.or(self.paths.hash_cache.take());
    }
}

/// Edit `[server]` of the TOML file at `path` (created if missing) with
/// `edit`, keeping everything else in it, comments included; written
/// atomically, mode 0600.
fn edit_server(path: &Path, edit: impl FnOnce(&mut toml_edit::Table)) -> Result<(), ConfigError> {
    let shown = || path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => return Err(ConfigError::Io { path: shown(), source }),
    };
    let mut doc: toml_edit::DocumentMut =
        text.parse().map_err(|e: toml_edit::TomlError| ConfigError::Invalid { path: shown(), message: e.to_string() })?;
    let server = doc.entry("server").or_insert(toml_edit::table());
    let server =
        server.as_table_mut().ok_or_else(|| ConfigError::Invalid { path: shown(), message: "[server] is not a table".into() })?;
    edit(server);
    crate::fsutil::write_atomic(path, doc.to_string().as_bytes()).map_err(|source| ConfigError::Io { path: shown(), source })
}

/// Set `server.url`, `server.ca`, `server.token_file` and `server.agent_id`
/// in the config file at `path` ([`edit_server`]).
pub fn write_enrollment(path: &Path, url: &str, ca: Option<&Path>, token_file: &Path, agent_id: &str) -> Result<(), ConfigError> {
    edit_server(path, |server| {
        server["url"] = toml_edit::value(url);
        if let Some(ca) = ca {
            server["ca"] = toml_edit::value(ca.display().to_string());
        }
        server["token_file"] = toml_edit::value(token_file.display().to_string());
        server["agent_id"] = toml_edit::value(agent_id);
    })
}

/// Set `[server]`'s `url` and `ca` where given ([`edit_server`]).
pub fn write_server(path: &Path, url: Option<&str>, ca: Option<&Path>) -> Result<(), ConfigError> {
    edit_server(path, |server| {
        if let Some(url) = url {
            server["url"] = toml_edit::value(url);
        }
        if let Some(ca) = ca {
            server["ca"] = toml_edit::value(ca.display().to_string());
        }
    })
}

/// Where `setup` keeps a join token until enrollment succeeds: beside the
/// config file.
pub fn pending_join_token(config: &Path) -> PathBuf {
    config.parent().map(|d| d.join("join.token")).unwrap_or_else(|| "join.token".into())
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
        assert_eq!(c.server.checkin_every().as_secs(), 300);
        assert_eq!(AgentConfig::default().server.checkin_every().as_secs(), 300);
        assert_eq!(parse_size("100"), Ok(100));
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size("25MiB"), Ok(25 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert!(parse_size("lots").is_err() && parse_size("5Q").is_err());
        assert_eq!(parse_duration("90s").unwrap().as_secs(), 90);
        assert_eq!(parse_duration("7d").unwrap().as_secs(), 7 * 86400);
        assert_eq!(parse_duration("1h 30m").unwrap().as_secs(), 5400);
        assert_eq!(parse_duration("0").unwrap().as_secs(), 0);
        assert!(parse_duration("soon").is_err());
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
