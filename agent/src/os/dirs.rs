//! Where the agent keeps its own files when the configuration does not
//! say: system-wide for root (`/var/lib/qala`, `/var/cache/qala`; on
//! Windows, for an elevated agent or the service, `%ProgramData%\Qala`),
//! else under the user's base directories, which the binary reads from the
//! environment (the library reads none).

use std::path::PathBuf;

/// The user's base directories (XDG on Linux), as the binary found them.
#[derive(Debug, Clone, Default)]
pub struct UserDirs {
    /// `$XDG_STATE_HOME`, else `~/.local/state`.
    pub state: Option<PathBuf>,
    /// `$XDG_DATA_HOME`, else `~/.local/share`.
    pub data: Option<PathBuf>,
    /// `$XDG_CACHE_HOME`, else `~/.cache`.
    pub cache: Option<PathBuf>,
    /// Windows: `%ProgramData%` (the system's data, `C:\ProgramData`).
    pub program_data: Option<PathBuf>,
}

/// Where an elevated agent keeps its files on Windows, below
/// `%ProgramData%` (the MSI makes it with an access list for SYSTEM and
/// Administrators).
pub fn windows_system_dir(program_data: Option<&std::path::Path>) -> PathBuf {
    program_data.map(PathBuf::from).unwrap_or_else(|| PathBuf::from(r"C:\ProgramData")).join("Qala")
}

/// The default places of the agent's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivateDirs {
    /// The offline spool of verdicts to fetch and actions to report.
    pub spool: PathBuf,
    /// Quarantined files.
    pub quarantine: PathBuf,
    /// The hash cache; none without a cache directory.
    pub hash_cache: Option<PathBuf>,
    /// The certificate revocation lists fetched at check-in.
    pub crl_cache: PathBuf,
    /// Which paths hold which content ([`crate::held`]).
    pub held: PathBuf,
}

impl PrivateDirs {
    /// For root, the system's places; for anyone else, `user`'s (the
    /// current directory when a base directory is unknown).
    pub fn new(root: bool, user: &UserDirs) -> Self {
        if root && cfg!(windows) {
            let d = windows_system_dir(user.program_data.as_deref());
            return Self {
                spool: d.join("spool"),
                quarantine: d.join("quarantine"),
                hash_cache: Some(d.join("hashes")),
                crl_cache: d.join("crls.pem"),
                held: d.join("held"),
            };
        }
        if root {
            return Self {
                spool: PathBuf::from("/var/lib/qala/spool"),
                quarantine: PathBuf::from("/var/lib/qala/quarantine"),
                hash_cache: Some(PathBuf::from("/var/cache/qala/hashes")),
                crl_cache: PathBuf::from("/var/lib/qala/crls.pem"),
                held: PathBuf::from("/var/lib/qala/held"),
            };
        }
        let under = |base: &Option<PathBuf>| base.clone().unwrap_or_else(|| PathBuf::from(".")).join("qala");
        Self {
            spool: under(&user.state).join("spool"),
            quarantine: under(&user.data).join("quarantine"),
            hash_cache: user.cache.as_ref().map(|c| c.join("qala").join("hashes")),
            crl_cache: under(&user.state).join("crls.pem"),
            held: under(&user.state).join("held"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_uses_the_system_places_others_their_own() {
        let user = UserDirs {
            state: Some("/h/.local/state".into()),
            data: Some("/h/.local/share".into()),
            cache: None,
            program_data: None,
        };
        let me = PrivateDirs::new(false, &user);
        assert_eq!(me.spool, PathBuf::from("/h/.local/state/qala/spool"));
        assert_eq!(me.quarantine, PathBuf::from("/h/.local/share/qala/quarantine"));
        assert_eq!(me.hash_cache, None, "no cache directory, no cache");
        assert_eq!(PrivateDirs::new(true, &user).quarantine, PathBuf::from("/var/lib/qala/quarantine"));
    }
}
