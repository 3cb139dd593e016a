//! Quarantine: a detected file moved into a root-only directory, defanged
//! (XOR-ed with a per-item key behind a header, so it can neither run nor
//! be found again by another scanner), with a record of where it came
//! from; restored byte-identical with owner, mode and times.
//!
//! Each item is two files, `ID.bin` (header + XOR-ed content) and
//! `ID.json` (the record), both 0600 in a 0700 directory. A record carries
//! an HMAC-SHA256 under the quarantine's own key (`.key`, 0600): a record
//! edited to restore somewhere else is refused. Restore walks the original
//! directory one component at a time with `O_NOFOLLOW` (a directory
//! swapped for a symbolic link since is refused), creates the file with
//! `O_EXCL` (never overwrites), checks the sha256 of what it wrote, and
//! only then drops the quarantined copy.

use crate::os::{DirFd, FileStamp, Ownership, create_private, mkdir_private, open_regular};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

const MAGIC: &[u8; 16] = b"QALA-QUARANTINE\n";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub id: String,
    pub original_path: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub atime_ns: i64,
    pub mtime_ns: i64,
    pub size: u64,
    pub sha256: String,
    pub verdict: String,
    pub rules: Vec<String>,
    pub quarantined_ms: i64,
    /// XOR key of the content (hex).
    pub key: String,
    /// HMAC-SHA256 of the record without this field, under the quarantine key.
    #[serde(default)]
    pub mac: String,
}

#[derive(Debug, thiserror::Error)]
pub enum QuarantineError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("no quarantined item {0:?}")]
    NotFound(String),
    #[error("the record of {0} does not verify (edited?): refused")]
    Tampered(String),
    #[error("{0}")]
    Refused(String),
    #[error("{path} changed since it was scanned (sha256 {now}): not quarantined")]
    Changed { path: String, now: String },
}

pub struct Quarantine {
    dir: PathBuf,
}

use qala_common::now_ms;

fn xor(buf: &mut [u8], key: &[u8; 32], offset: u64) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= key[((offset + i as u64) % 32) as usize];
    }
}

impl Quarantine {
    /// Open (creating, 0700) the quarantine at `dir`.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        mkdir_private(dir)?;
        Ok(Self { dir: dir.to_path_buf() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn mac_key(&self) -> std::io::Result<Vec<u8>> {
        let path = self.dir.join(".key");
        match std::fs::read(&path) {
            Ok(k) if k.len() == 32 => return Ok(k),
            Ok(_) => return Err(std::io::Error::other(format!("{}: not a 32-byte key", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut k = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut k);
        let mut f = create_private(&path)?;
        f.write_all(&k)?;
        f.sync_all()?;
        Ok(k.to_vec())
    }

    fn sign(&self, r: &Record) -> std::io::Result<String> {
        let mut unsigned = r.clone();
        unsigned.mac.clear();
        let body = serde_json::to_vec(&unsigned).map_err(std::io::Error::other)?;
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.mac_key()?).map_err(std::io::Error::other)?;
        mac.update(&body);
        Ok(hex::encode(mac.finalize().into_bytes()))
    }

    fn valid_id(id: &str) -> bool {
        !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    }

    /// Move `path` (whose content was scanned as `sha256`) into quarantine.
    /// The file is opened without following links and must still hash to
    /// `sha256`, and still be the same inode when it is unlinked.
    pub fn add(&self, path: &Path, sha256: &str, verdict: &str, rules: &[String]) -> Result<Record, QuarantineError> {
        let (mut src, m) = open_regular(path)?;
        let mut key = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut key);
        let id = format!("{}-{}", now_ms(), hex::encode(&key[..4]));
        let bin = self.dir.join(format!("{id}.bin"));
        let tmp = self.dir.join(format!(".{id}.tmp"));
        let mut out = create_private(&tmp)?;
        out.write_all(MAGIC)?;
        let (mut h, mut off, mut buf) = (Sha256::new(), 0u64, vec![0u8; 1 << 20]);
        loop {
            let n = src.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            xor(&mut buf[..n], &key, off);
            out.write_all(&buf[..n])?;
            off += n as u64;
        }
        out.sync_all()?;
        let now = hex::encode(h.finalize());
        if now != sha256 {
            let _ = std::fs::remove_file(&tmp);
            return Err(QuarantineError::Changed { path: path.display().to_string(), now });
        }
        let owner = Ownership::of(&m);
        let mut record = Record {
            id: id.clone(),
            original_path: std::path::absolute(path)?,
            uid: owner.uid,
            gid: owner.gid,
            mode: owner.mode,
            atime_ns: owner.atime_ns,
            mtime_ns: owner.mtime_ns,
            size: off,
            sha256: sha256.to_string(),
            verdict: verdict.to_string(),
            rules: rules.to_vec(),
            quarantined_ms: now_ms(),
            key: hex::encode(key),
            mac: String::new(),
        };
        record.mac = self.sign(&record)?;
        std::fs::rename(&tmp, &bin)?;
        let json = serde_json::to_vec_pretty(&record).map_err(std::io::Error::other)?;
        let mut f = create_private(&self.dir.join(format!("{id}.json")))?;
        f.write_all(&json)?;
        f.sync_all()?;
        // Unlink only the inode that was copied (not one swapped in since),
        // in its directory reached without following a link.
        if let Err(e) = crate::os::remove_same(path, &FileStamp::open(&src, &m)?) {
            self.purge(&id)?;
            return Err(QuarantineError::Refused(format!("{} was not removed ({e}): not quarantined", path.display())));
        }
        Ok(record)
    }

    /// A record, verified against its MAC.
    pub fn get(&self, id: &str) -> Result<Record, QuarantineError> {
        if !Self::valid_id(id) {
            return Err(QuarantineError::NotFound(id.to_string()));
        }
        let text = match std::fs::read(self.dir.join(format!("{id}.json"))) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(QuarantineError::NotFound(id.to_string())),
            Err(e) => return Err(e.into()),
        };
        let r: Record = serde_json::from_slice(&text).map_err(|_| QuarantineError::Tampered(id.to_string()))?;
        if r.id != id || self.sign(&r)? != r.mac {
            return Err(QuarantineError::Tampered(id.to_string()));
        }
        Ok(r)
    }

    /// Every record (those that do not verify are listed as errors).
    pub fn list(&self) -> std::io::Result<Vec<Result<Record, QuarantineError>>> {
        let mut ids: Vec<String> = std::fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".json")).map(String::from))
            .collect();
        ids.sort();
        Ok(ids.iter().map(|id| self.get(id)).collect())
    }

    pub fn purge(&self, id: &str) -> Result<(), QuarantineError> {
        if !Self::valid_id(id) || !self.dir.join(format!("{id}.json")).exists() {
            return Err(QuarantineError::NotFound(id.to_string()));
        }
        let _ = std::fs::remove_file(self.dir.join(format!("{id}.bin")));
        std::fs::remove_file(self.dir.join(format!("{id}.json")))?;
        Ok(())
    }

    /// Put item `id` back where it was, byte-identical, with its owner,
    /// mode and times; returns the path written.
    pub fn restore(&self, id: &str) -> Result<PathBuf, QuarantineError> {
        let r = self.get(id)?;
        let path = &r.original_path;
        let refuse = |why: &str| QuarantineError::Refused(format!("{}: {why}: not restored", path.display()));
        if !path.is_absolute() || path.components().any(|c| matches!(c, Component::ParentDir | Component::CurDir)) {
            return Err(refuse("not a plain absolute path"));
        }
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else { return Err(refuse("no file name")) };
        let dirfd = DirFd::open_nofollow(dir).map_err(|e| refuse(&format!("directory {}: {e}", dir.display())))?;
        let mut key = [0u8; 32];
        hex::decode_to_slice(&r.key, &mut key).map_err(|_| QuarantineError::Tampered(id.to_string()))?;
        let mut src = std::fs::File::open(self.dir.join(format!("{id}.bin")))?;
        let mut magic = [0u8; 16];
        src.read_exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(QuarantineError::Tampered(id.to_string()));
        }
        let mut out = dirfd.create_new(name).map_err(|e| refuse(&e.to_string()))?;
        let (mut h, mut off, mut buf) = (Sha256::new(), 0u64, vec![0u8; 1 << 20]);
        let written = (|| -> std::io::Result<()> {
            loop {
                let n = src.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                xor(&mut buf[..n], &key, off);
                h.update(&buf[..n]);
                out.write_all(&buf[..n])?;
                off += n as u64;
            }
        })();
        // Removes the name this call created.
        let unlink = || {
            let _ = dirfd.unlink(name);
        };
        if let Err(e) = written {
            unlink();
            return Err(e.into());
        }
        if hex::encode(h.finalize()) != r.sha256 {
            unlink();
            return Err(QuarantineError::Tampered(id.to_string()));
        }
        let owner = Ownership { uid: r.uid, gid: r.gid, mode: r.mode, atime_ns: r.atime_ns, mtime_ns: r.mtime_ns };
        if let Err(e) = owner.apply(&out) {
            unlink();
            return Err(refuse(&format!("setting owner, mode and times: {e}")));
        }
        out.sync_all()?;
        self.purge(id)?;
        Ok(path.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn round_trip_defanged_and_tamper_refused() {
        let dir = tempfile::tempdir().unwrap();
        let q = Quarantine::open(&dir.path().join("q")).unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir(&home).unwrap();
        let file = home.join("evil.exe");
        let content = b"MZ this would be malware".repeat(100);
        std::fs::write(&file, &content).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o751)).unwrap();
        let before = std::fs::metadata(&file).unwrap();
        let sha = hex::encode(Sha256::digest(&content));
        assert!(matches!(q.add(&file, &"0".repeat(64), "malicious", &[]), Err(QuarantineError::Changed { .. })));
        let r = q.add(&file, &sha, "malicious", &["t.evil".into()]).unwrap();
        assert!(!file.exists());
        let stored = std::fs::read(q.dir().join(format!("{}.bin", r.id))).unwrap();
        assert!(!stored.windows(8).any(|w| w == b"MZ this "), "the copy is defanged");
        assert_eq!(std::fs::metadata(q.dir().join(format!("{}.bin", r.id))).unwrap().mode() & 0o777, 0o600);
        assert_eq!(q.list().unwrap().len(), 1);

        // A record edited to point elsewhere is refused.
        let json = q.dir().join(format!("{}.json", r.id));
        let good = std::fs::read_to_string(&json).unwrap();
        std::fs::write(&json, good.replace("evil.exe", "other.exe")).unwrap();
        assert!(matches!(q.restore(&r.id), Err(QuarantineError::Tampered(_))));
        std::fs::write(&json, &good).unwrap();

        // The directory swapped for a link: refused, nothing written there.
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::rename(&home, dir.path().join("home.real")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &home).unwrap();
        let e = q.restore(&r.id).unwrap_err();
        assert!(matches!(e, QuarantineError::Refused(_)), "{e}");
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
        std::fs::remove_file(&home).unwrap();
        std::fs::rename(dir.path().join("home.real"), &home).unwrap();

        // An existing file is never overwritten.
        std::fs::write(&file, b"new").unwrap();
        assert!(q.restore(&r.id).is_err());
        std::fs::remove_file(&file).unwrap();

        assert_eq!(q.restore(&r.id).unwrap(), file);
        assert_eq!(std::fs::read(&file).unwrap(), content);
        let after = std::fs::metadata(&file).unwrap();
        assert_eq!(after.mode() & 0o7777, 0o751);
        assert_eq!((after.mtime(), after.mtime_nsec()), (before.mtime(), before.mtime_nsec()));
        assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));
        assert!(q.list().unwrap().is_empty());
        assert!(matches!(q.restore(&r.id), Err(QuarantineError::NotFound(_))));
        assert!(matches!(q.get("../../etc/passwd"), Err(QuarantineError::NotFound(_))));
    }
}
