//! The scan child: a process of its own (the worker binary started again
//! with `__scan-child`, empty environment, no descriptors but its socket to
//! the worker and stderr), which loads one ruleset, confines itself, then
//! scans the files the worker hands it one at a time and answers each with
//! a bounded verdict. It holds no key and cannot open a file or a socket; if
//! a hostile file crashes it, only it dies.

use super::{Hello, Ready, confine, wire};
use crate::convert;
use prost::Message;
use qala_engine::{Engine, Hasher, Report, Ruleset};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Run the child; never returns.
pub fn main() -> ! {
    let code = match run() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("qala scan child: {e}");
            2
        }
    };
    std::process::exit(code)
}

fn run() -> Result<(), String> {
    // The worker's pid follows CHILD_ARG.
    let worker = std::env::args().nth(2).and_then(|p| p.parse().ok());
    confine::die_with_parent(worker)?;
    confine::close_inherited();
    // SAFETY: the worker started us with our end of the socket as stdin.
    let mut sock = UnixStream::from(unsafe { OwnedFd::from_raw_fd(0) });
    // The worker cancels a scan (its caller stopped waiting) with SIGUSR1.
    let cancel = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGUSR1, cancel.clone()).map_err(|e| format!("SIGUSR1: {e}"))?;

    let (hello, fd) = wire::recv(&mut sock, 64 * 1024).map_err(|e| format!("no hello from the worker: {e}"))?;
    let hello: Hello = serde_json::from_slice(&hello).map_err(|e| format!("bad hello: {e}"))?;
    let ruleset = match (&hello.ruleset_id, fd) {
        (Some(id), Some(fd)) => {
            let file = std::fs::File::from(fd);
            // SAFETY: a sealed memfd: nobody can change or shrink it.
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| format!("mapping the rules: {e}"))?;
            Some(Ruleset::from_bytes(id.clone(), &map).map_err(|e| e.to_string())?)
        }
        (Some(_), None) => return Err("rules announced without a descriptor".into()),
        (None, _) => None,
    };
    let mut engine = ruleset.as_ref().map(|r| Engine::new(r, r.limits.clone()));
    if let Some(engine) = engine.as_mut() {
        // The first scan starts yara-x's timer thread: before the filter,
        // which allows no new threads.
        let _ = engine.scan(b"qala warm-up", "");
    }
    confine::limit_resources(hello.memory_limit)?;
    let landlock = confine::landlock();
    confine::seccomp()?;
    let ready =
        Ready { rule_count: ruleset.as_ref().map_or(0, |r| r.rule_count as u32), confinement: format!("seccomp, {landlock}") };
    wire::send(&mut sock, &serde_json::to_vec(&ready).unwrap_or_default(), None).map_err(|e| format!("answering: {e}"))?;
    let (Some(engine), Some(ruleset)) = (engine.as_mut(), ruleset.as_ref()) else {
        return Ok(()); // a probe: confinement checked, nothing to scan
    };

    loop {
        let (request, fd) = match wire::recv(&mut sock, 64 * 1024) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()), // the worker closed us
            Err(e) => return Err(format!("reading a request: {e}")),
        };
        let file = std::fs::File::from(fd.ok_or("a scan request without a file")?);
        let len = file.metadata().map_err(|e| format!("file size: {e}"))?.len();
        // SAFETY: a sealed memfd, as above, or (64 MiB and more) a file
        // whose only writer, the worker, has stopped and closed it for
        // writing. An empty file cannot be mapped.
        let map = if len == 0 { None } else { Some(unsafe { memmap2::Mmap::map(&file) }.map_err(|e| format!("mapping: {e}"))?) };
        let data: &[u8] = map.as_deref().unwrap_or_default();
        let sha256 = verified_sha256(&request);
        engine.set_object_digests(digest_kinds(&request));
        cancel.store(false, Ordering::Relaxed);
        let start = Instant::now();
        let unhashed = words(&request).any(|w| w == b"unhashed");
        let report = catch_unwind(AssertUnwindSafe(|| match &sha256 {
            Some(sha) if unhashed => engine.scan_unhashed(data, sha, cancel.clone()),
            Some(sha) => engine.scan_verified(data, sha, cancel.clone()),
            None => engine.scan_cancellable(data, "", cancel.clone()),
        }))
        .unwrap_or_else(|panic| panicked(data, start, &panic));
        let verdict = convert::verdict(report, &ruleset.id, "");
        // Let go of the file before answering: the worker may write a later
        // upload into it once it has the answer and finds it unheld.
        drop(map);
        drop(file);
        wire::send(&mut sock, &verdict.encode_to_vec(), None).map_err(|e| format!("answering: {e}"))?;
    }
}

/// The sha256 of a request `scan SHA256[ md5][ sha1][ unhashed]` (the
/// worker's coordinator verified it, so the root is not hashed with it
/// again; `unhashed`: the worker computes the root's other digests itself,
/// so the root is not hashed at all); anything else, `None`: the child
/// then hashes the content itself, and the worker compares.
fn verified_sha256(request: &[u8]) -> Option<String> {
    let rest = request.strip_prefix(b"scan ")?;
    let sha = rest.split(|&b| b == b' ').next()?;
    let hex = sha.len() == 64 && sha.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    hex.then(|| String::from_utf8_lossy(sha).into_owned())
}

/// The digests of nested objects a request asks for besides sha256: the
/// words `md5` and `sha1` after the sha256.
fn digest_kinds(request: &[u8]) -> qala_engine::DigestKinds {
    let words: Vec<&[u8]> = words(request).collect();
    qala_engine::DigestKinds { md5: words.contains(&&b"md5"[..]), sha1: words.contains(&&b"sha1"[..]) }
}

/// The words of a request after `scan SHA256`.
fn words(request: &[u8]) -> impl Iterator<Item = &[u8]> {
    request.split(|&b| b == b' ').skip(2)
}

/// The report of a scan the engine itself panicked in: unscannable.
fn panicked(data: &[u8], start: Instant, panic: &Box<dyn std::any::Any + Send>) -> Report {
    let msg = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    let d = Hasher::digest(data);
    Report {
        sha256: d.sha256,
        md5: d.md5,
        sha1: d.sha1,
        size: data.len() as u64,
        file_type: qala_engine::detect(data).as_str(),
        verdict: None,
        detections: Vec::new(),
        executables: Vec::new(),
        limits_hit: Vec::new(),
        errors: vec![format!("engine panicked: {msg}")],
        encrypted: Vec::new(),
        object_meta: Vec::new(),
        objects: Vec::new(),
        object_digest_kinds: Default::default(),
        objects_scanned: 0,
        bytes_scanned: 0,
        duration: start.elapsed(),
    }
}

#[cfg(test)]
mod tests {
    use super::{digest_kinds, verified_sha256};

    #[test]
    fn only_a_lower_case_hex_sha256_is_taken() {
        let good = "0123456789abcdef".repeat(4);
        assert_eq!(verified_sha256(format!("scan {good}").as_bytes()), Some(good.clone()));
        for bad in [
            "scan".to_string(),
            "scan ".to_string(),
            format!("scan {}", good.to_uppercase()),
            format!("scan {}", &good[..63]),
            format!("scan {good}0"),
            format!("scan {}g", &good[..63]),
            format!("scan  {good}"),
            format!("scanx{good}"),
        ] {
            assert_eq!(verified_sha256(bad.as_bytes()), None, "{bad:?}");
        }
        assert_eq!(verified_sha256(b"scan \xff\xfe"), None);
        assert_eq!(verified_sha256(format!("scan {good} md5 sha1").as_bytes()), Some(good.clone()));
        let kinds = |r: String| digest_kinds(r.as_bytes());
        assert_eq!(kinds(format!("scan {good}")), Default::default());
        assert_eq!(kinds(format!("scan {good} sha1")), qala_engine::DigestKinds { md5: false, sha1: true });
        assert_eq!(kinds(format!("scan {good} md5 sha1")), qala_engine::DigestKinds { md5: true, sha1: true });
        assert_eq!(kinds("scan md5".into()), Default::default(), "the first word is the sha256");
        assert_eq!(kinds(format!("scan {good} sha1 unhashed")), qala_engine::DigestKinds { md5: false, sha1: true });
        assert_eq!(verified_sha256(format!("scan {good} unhashed").as_bytes()), Some(good.clone()));
    }
}
