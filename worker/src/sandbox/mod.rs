//! Scans run in sandboxed child processes, one per scan thread.
//!
//! The worker process holds the mTLS key and the network; it never parses a
//! file. Each scan thread owns a long-lived child (the same binary, started
//! with [`CHILD_ARG`]) that loads one ruleset, then confines itself
//! ([`confine`]: RLIMIT_DATA/AS, landlock with no file and no TCP access,
//! a seccomp allow-list without open, socket, clone or exec) and scans file
//! after file. Files travel as sealed memfds (from [`DISK_FROM`] on,
//! read-only descriptors of unlinked files on disk) passed over a Unix
//! socket ([`wire`]) with their verified sha256: the bytes the worker
//! received are mapped by the child, never copied. Nobody on the worker
//! hashes the root: its sha256, md5 and sha1 are the coordinator's, computed
//! while it received the upload. A child that crashes, runs out of memory or outlives its deadline
//! is killed and replaced; the file it was scanning is tried once more in a
//! fresh child (alone: a child scans one file at a time), and a file that
//! kills two children is answered `unscannable` (`worker_crash`).

pub mod child;
mod confine;
mod wire;

use prost::Message;
use qala_common::KeptFiles;
use qala_engine::Limits;
use qala_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The first argument that makes the worker binary a scan child.
pub const CHILD_ARG: &str = "__scan-child";

/// Largest verdict a child may send (verdicts are bounded to 4 MiB).
const MAX_REPLY: usize = 64 << 20;

/// How long a child may take to load its rules and confine itself.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// What a child is told first (with the ruleset's memfd, if any).
#[derive(Serialize, Deserialize)]
struct Hello {
    /// `None`: a probe that confines itself, answers and exits.
    ruleset_id: Option<String>,
    memory_limit: u64,
}

/// What a child answers once confined.
#[derive(Serialize, Deserialize)]
struct Ready {
    rule_count: u32,
    confinement: String,
}

/// A ruleset as the worker holds it: the shipped bytes in a sealed memfd
/// (each child maps them), and what the coordinator's policy says.
#[derive(Debug)]
pub struct Shipped {
    pub id: String,
    pub rule_count: u32,
    pub limits: Limits,
    file: File,
}

impl Shipped {
    pub fn new(id: String, rule_count: u32, limits: Limits, bytes: &[u8]) -> std::io::Result<Self> {
        Ok(Self { id, rule_count, limits, file: sealed(bytes)? })
    }
}

/// How children are started.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The worker binary (children are the same program).
    pub exe: PathBuf,
    /// RLIMIT_DATA of each child, bytes.
    pub memory_limit: u64,
}

impl Settings {
    pub fn new(memory_limit: u64) -> std::io::Result<Self> {
        Ok(Self { exe: std::env::current_exe()?, memory_limit })
    }
}

/// An anonymous in-memory file, closed on exec.
pub fn memfd(name: &str) -> std::io::Result<File> {
    use nix::sys::memfd::{MFdFlags, memfd_create};
    let fd = memfd_create(name, MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)?;
    Ok(File::from(fd))
}

/// Uploads from this size on are held in an unlinked file on disk (the
/// temporary directory) rather than in memory, and mapped from there.
pub const DISK_FROM: u64 = 64 << 20;

/// Where a worker holds one upload while it arrives and is scanned.
pub enum Upload {
    /// A memfd, sealed before the scan.
    Memory(File),
    /// An unlinked file in the temporary directory: page cache the kernel
    /// can write back, not memory of the worker; kept for a later upload
    /// in `.1` if given.
    Disk(File, Option<Arc<KeptUploads>>),
}

impl Upload {
    /// Room for an upload of `size` bytes: on disk from [`DISK_FROM`] on.
    pub fn new(size: u64) -> std::io::Result<Upload> {
        if size >= DISK_FROM {
            Ok(Upload::Disk(tempfile::tempfile_in(std::env::temp_dir())?, None))
        } else {
            Ok(Upload::Memory(memfd("qala-upload")?))
        }
    }

    /// As [`Upload::new`], a disk upload written over a file `kept` holds
    /// (cut to `size` bytes, so its scan sees nothing of an earlier upload)
    /// and given back there after its scan if no child holds it any more
    /// ([`Keep::give_back`]).
    pub fn reusing(size: u64, kept: &Arc<KeptUploads>) -> std::io::Result<Upload> {
        if size < DISK_FROM {
            return Upload::new(size);
        }
        let file = match kept.take(size) {
            Some(f) => {
                use std::io::{Seek, SeekFrom};
                let mut f = f;
                if f.metadata()?.len() > size {
                    f.set_len(size)?;
                }
                f.seek(SeekFrom::Start(0))?;
                f
            }
            None => tempfile::tempfile_in(std::env::temp_dir())?,
        };
        Ok(Upload::Disk(file, Some(kept.clone())))
    }

    pub fn file(&mut self) -> &mut File {
        match self {
            Upload::Memory(f) | Upload::Disk(f, _) => f,
        }
    }

    /// The upload, frozen for its scan: a memfd sealed against any change;
    /// a disk file reopened read-only, its writable descriptor closed (the
    /// worker is its only writer and has stopped), or held aside in the
    /// returned [`Keep`] for a later upload, not written while any child
    /// may hold the file.
    pub fn freeze(self) -> std::io::Result<(File, Keep)> {
        match self {
            Upload::Memory(f) => {
                seal(&f)?;
                Ok((f, Keep(None)))
            }
            Upload::Disk(f, kept) => {
                use std::os::fd::AsRawFd;
                let read_only = File::open(format!("/proc/self/fd/{}", f.as_raw_fd()))?;
                Ok((read_only, Keep(kept.map(|k| (f, k)))))
            }
        }
    }
}

/// Disk-held uploads' files kept open (unlinked) between uploads
/// ([`KeptFiles`], `--upload-keep-bytes`): the next large upload writes
/// over page cache already in place. A file comes back only once no scan
/// child holds a descriptor or a map of it ([`ScanChild::holds`]): no child
/// ever sees a later upload through an earlier one's file.
pub type KeptUploads = KeptFiles;

/// Most files kept, whatever their sizes.
pub const KEEP_FILES: usize = 8;

/// A frozen disk upload's writable descriptor, for [`KeptUploads`].
pub struct Keep(Option<(File, Arc<KeptUploads>)>);

impl Keep {
    /// Whether the file goes back to be kept (so its scan must find out
    /// whether the child let go of it).
    pub fn wanted(&self) -> bool {
        self.0.is_some()
    }

    /// Keep the file for a later upload if every child that scanned it has
    /// let go of it (`released`) and there is room; otherwise close it.
    pub fn give_back(self, released: bool) {
        if let (Some((file, kept)), true) = (self.0, released) {
            kept.give_back(file);
        }
    }
}

/// Whether process `pid` holds `file`: a descriptor of it or a map of it,
/// from `/proc` (by inode number alone, so a match on another device only
/// ever errs towards "holds"). `true` as well when `/proc` cannot tell.
pub fn process_holds(pid: u32, file: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    file.metadata().map_or(true, |m| holds_inode(pid, m.ino()))
}

fn holds_inode(pid: u32, ino: u64) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return true };
    for fd in fds {
        let Ok(fd) = fd else { return true };
        match std::fs::metadata(fd.path()) {
            Ok(m) if m.ino() == ino => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {} // closed meanwhile
            Err(_) => return true,
        }
    }
    let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else { return true };
    // address perms offset dev inode [path]
    maps.lines().any(|l| l.split_whitespace().nth(4).is_none_or(|i| i.parse::<u64>().map_or(true, |i| i == ino)))
}

/// Seal a memfd: from now on nobody (worker or child) can write, grow or
/// shrink it, so a child maps exactly what the worker verified.
pub fn seal(file: &File) -> std::io::Result<()> {
    use nix::fcntl::{FcntlArg, SealFlag, fcntl};
    let seals = SealFlag::F_SEAL_SEAL | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_WRITE;
    fcntl(file.as_fd(), FcntlArg::F_ADD_SEALS(seals))?;
    Ok(())
}

fn sealed(bytes: &[u8]) -> std::io::Result<File> {
    use std::io::Write;
    let mut f = memfd("qala-rules")?;
    f.write_all(bytes)?;
    seal(&f)?;
    Ok(f)
}

/// Why a scan got no verdict from its child.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("scan child died: {0}")]
    Died(String),
    #[error("scan child still busy {0:?} past the scan deadline; killed")]
    Overtime(Duration),
    #[error("scan child could not start: {0}")]
    Start(String),
}

/// One sandboxed child with one ruleset loaded.
pub struct ScanChild {
    process: std::process::Child,
    sock: UnixStream,
    pub ruleset_id: String,
    pub confinement: String,
}

impl ScanChild {
    /// Start a child for `rules` and wait until it is confined.
    pub fn spawn(rules: &Shipped, settings: &Settings) -> Result<ScanChild, Failure> {
        let (child, sock, ready) = start(Some(rules), settings)?;
        Ok(ScanChild { process: child, sock, ruleset_id: rules.id.clone(), confinement: ready.confinement })
    }

    /// Scan `file` (a sealed memfd) whose sha256 the coordinator verified:
    /// the child takes it as the root's and does not hash it again; with
    /// `unhashed` it does not hash the root at all (the verdict's md5 and
    /// sha1 are left empty: the coordinator has them). The
    /// engine keeps to the policy's `max_scan_time` itself; a child still
    /// busy `grace` after `deadline` is killed. Setting `cancel` asks the
    /// child to stop (SIGUSR1). `kinds`: the digests of nested objects
    /// computed besides sha256.
    pub fn scan(
        &mut self,
        file: &File,
        sha256: &str,
        unhashed: bool,
        kinds: qala_engine::DigestKinds,
        deadline: Duration,
        cancel: &AtomicBool,
    ) -> Result<pb::Verdict, Failure> {
        let md5 = if kinds.md5 { " md5" } else { "" };
        let sha1 = if kinds.sha1 { " sha1" } else { "" };
        let unhashed = if unhashed { " unhashed" } else { "" };
        let request = format!("scan {sha256}{md5}{sha1}{unhashed}");
        if wire::send(&mut self.sock, request.as_bytes(), Some(file.as_fd())).is_err() {
            return Err(Failure::Died(self.reap()));
        }
        let start = Instant::now();
        let mut signalled = false;
        loop {
            if readable(&self.sock, Duration::from_millis(200)) {
                return match wire::recv(&mut self.sock, MAX_REPLY) {
                    Ok((reply, _)) => pb::Verdict::decode(&reply[..]).map_err(|e| {
                        let _ = self.process.kill();
                        Failure::Died(format!("sent an unreadable verdict ({e}); killed"))
                    }),
                    Err(_) => Err(Failure::Died(self.reap())),
                };
            }
            if cancel.load(Ordering::Relaxed) && !signalled {
                let pid = nix::unistd::Pid::from_raw(self.process.id() as i32);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGUSR1);
                signalled = true;
            }
            if start.elapsed() > deadline {
                let _ = self.process.kill();
                let _ = self.process.wait();
                return Err(Failure::Overtime(start.elapsed()));
            }
        }
    }

    /// Whether this child holds `file` (a descriptor or a map of it) now;
    /// once it has answered for it and holds neither it cannot get the
    /// file back (it cannot open files, and only the worker sends it
    /// descriptors).
    pub fn holds(&self, file: &File) -> bool {
        process_holds(self.process.id(), file)
    }

    /// How the child ended (it closed its socket: it is dying or dead).
    fn reap(&mut self) -> String {
        let _ = self.process.kill();
        match self.process.wait() {
            Ok(status) => describe(status),
            Err(e) => format!("lost ({e})"),
        }
    }
}

impl Drop for ScanChild {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// Start a child that confines itself without rules and exits: proves at
/// the worker's start that scans can be sandboxed here. Returns what the
/// child enforced.
pub fn probe(settings: &Settings) -> Result<String, Failure> {
    let (mut child, _sock, ready) = start(None, settings)?;
    let _ = child.wait();
    Ok(ready.confinement)
}

fn start(rules: Option<&Shipped>, settings: &Settings) -> Result<(std::process::Child, UnixStream, Ready), Failure> {
    let fail = |what: &str, e: &dyn std::fmt::Display| Failure::Start(format!("{what}: {e}"));
    let (mut ours, theirs) = UnixStream::pair().map_err(|e| fail("socketpair", &e))?;
    let mut child = Command::new(&settings.exe)
        .arg(CHILD_ARG)
        .arg(std::process::id().to_string())
        .env_clear()
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| fail(&format!("starting {}", settings.exe.display()), &e))?;
    let hello = Hello { ruleset_id: rules.map(|r| r.id.clone()), memory_limit: settings.memory_limit };
    let hello = serde_json::to_vec(&hello).map_err(|e| fail("hello", &e))?;
    let sent = wire::send(&mut ours, &hello, rules.map(|r| r.file.as_fd()));
    let ready = sent.ok().filter(|_| readable(&ours, START_TIMEOUT)).and_then(|_| wire::recv(&mut ours, 64 * 1024).ok());
    let ready = match ready.map(|(r, _)| serde_json::from_slice::<Ready>(&r)) {
        Some(Ok(ready)) => ready,
        _ => {
            let _ = child.kill();
            let status = child.wait().map(describe).unwrap_or_default();
            return Err(Failure::Start(format!("no answer from the child ({status}; its reason is in the log above)")));
        }
    };
    Ok((child, ours, ready))
}

/// Wait up to `timeout` for `sock` to have something to read (or be closed).
fn readable(sock: &UnixStream, timeout: Duration) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let end = Instant::now() + timeout;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        let ms = PollTimeout::try_from(left.as_millis().min(60_000) as i32).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(sock.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, ms) {
            Ok(0) if left.is_zero() => return false,
            Ok(0) => continue,
            Ok(_) => return true,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return true, // let the read report it
        }
    }
}

fn describe(status: std::process::ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (_, Some(sig)) => {
            let name = nix::sys::signal::Signal::try_from(sig).map(|s| s.as_str()).unwrap_or("unknown signal");
            let why = match sig {
                libc::SIGABRT => " (aborted: an allocation over the memory limit, or a bug)",
                libc::SIGSEGV | libc::SIGBUS => " (memory fault)",
                libc::SIGKILL => " (killed: out of memory, or by the worker)",
                libc::SIGSYS => " (a forbidden system call)",
                _ => "",
            };
            format!("killed by {name}{why}")
        }
        _ => "ended".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::fs::MetadataExt;
    use std::process::{Command, Stdio};

    #[test]
    fn a_process_holds_a_file_by_descriptor_or_by_map_and_not_once_it_let_go() {
        let file = tempfile::tempfile().unwrap();
        file.set_len(1 << 16).unwrap();
        let ino = file.metadata().unwrap().ino();
        let with = Command::new("sleep").arg("30").stdin(Stdio::from(file.try_clone().unwrap())).spawn().unwrap();
        let without = Command::new("sleep").arg("30").stdin(Stdio::null()).spawn().unwrap();
        assert!(holds_inode(with.id(), ino), "a descriptor of it");
        assert!(!holds_inode(without.id(), ino));
        for mut p in [with, without] {
            p.kill().unwrap();
            p.wait().unwrap();
        }
        // A map of it, with no descriptor left (this process).
        // SAFETY: a file only this test writes, and it does not.
        let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
        drop(file);
        assert!(holds_inode(std::process::id(), ino), "a map of it");
        drop(map);
        assert!(!holds_inode(std::process::id(), ino));
        assert!(holds_inode(u32::MAX, ino), "a process /proc cannot tell about");
    }

    fn frozen_bytes(file: &mut File) -> Vec<u8> {
        let mut out = Vec::new();
        file.read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn a_kept_upload_file_is_cut_to_the_next_upload_and_kept_only_once_released() {
        let kept = KeptUploads::new(1 << 30, KEEP_FILES);
        let first = vec![0xa5u8; DISK_FROM as usize + 4096];
        let mut up = Upload::reusing(first.len() as u64, &kept).unwrap();
        up.file().write_all(&first).unwrap();
        let (mut f, keep) = up.freeze().unwrap();
        let ino = f.metadata().unwrap().ino();
        assert!(keep.wanted());
        assert_eq!(frozen_bytes(&mut f), first);
        keep.give_back(true);
        assert_eq!(kept.kept_bytes(), first.len() as u64);

        // The next, smaller upload is written over it from its start and
        // its frozen file ends where the upload does.
        let second: Vec<u8> = (0..DISK_FROM as u32).map(|i| (i % 253) as u8).collect();
        let mut up = Upload::reusing(second.len() as u64, &kept).unwrap();
        up.file().write_all(&second).unwrap();
        let (mut f, keep) = up.freeze().unwrap();
        assert_eq!(f.metadata().unwrap().ino(), ino, "the kept file");
        assert_eq!(kept.kept_bytes(), 0);
        assert_eq!(frozen_bytes(&mut f), second);
        // A file some child may still hold is not kept.
        keep.give_back(false);
        assert_eq!(kept.kept_bytes(), 0);

        // Smaller uploads stay in memfds; nothing is kept without room.
        assert!(matches!(Upload::reusing(1000, &kept).unwrap(), Upload::Memory(_)));
        let none = KeptUploads::new(0, KEEP_FILES);
        let mut up = Upload::reusing(DISK_FROM, &none).unwrap();
        up.file().write_all(&second).unwrap();
        let (_, keep) = up.freeze().unwrap();
        keep.give_back(true);
        assert_eq!(none.kept_bytes(), 0);
    }
}
