//! `qala-bench DIR RULES [THREADS]`: scan every file under DIR with the
//! engine alone (hashing, type detection, unpacking, executable reports and
//! yara-x), on THREADS threads each with its own engine, and print MB/s and
//! files/s of input. `scripts/bench.sh` runs it beside libyara's `yara -r -p N`
//! on the same directory and rules and prints the ratio.
//!
//! MODE splits the cost: `full` (default), `root` (rules on each file as
//! it is, nothing unpacked: what libyara does), `unpack` (unpacking and
//! executable reports, no rules), `sandboxed` (`full` as a worker runs it:
//! each file copied into a sealed memfd (or a disk file, as a worker holds
//! an upload) and scanned by a confined scan child of `qala-worker`, one
//! per thread).
//!
//! As in a worker, the root is not hashed in the timed part: its sha256,
//! md5 and sha1 are the coordinator's, computed while it receives the
//! upload (the sha256s are worked out here before the clock). Nested
//! objects are hashed as in a worker (sha256, their identity).

use anyhow::{Context, Result};
use qala_engine::{Engine, Limits, Report, Severity, compile_rules};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

fn files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| dir.display().to_string())? {
        let e = e?;
        let t = e.file_type()?;
        if t.is_dir() {
            files(&e.path(), out)?;
        } else if t.is_file() {
            out.push(e.path());
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().context("usage: qala-bench DIR RULES [THREADS]")?);
    let rules_path = PathBuf::from(args.next().context("usage: qala-bench DIR RULES [THREADS]")?);
    let threads: usize = args.next().map(|t| t.parse()).transpose()?.unwrap_or(2);
    let mode = args.next().unwrap_or_else(|| "full".to_string());
    let limits = match mode.as_str() {
        "full" | "unpack" | "sandboxed" => Limits::default(),
        "root" => Limits { max_depth: 0, ..Limits::default() },
        other => anyhow::bail!("unknown mode {other}: full, root, unpack or sandboxed"),
    };

    let t = Instant::now();
    let rules = compile_rules(&rules_path, &qala_engine::Limits::default())?;
    eprintln!("compiled {} rules in {:.2}s", rules.rule_count, t.elapsed().as_secs_f64());
    let mut list = Vec::new();
    files(&dir, &mut list)?;
    let total: u64 = list.iter().map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)).sum();

    if mode == "sandboxed" {
        return sandboxed(&rules, &list, total, threads);
    }
    let shas: Vec<String> =
        list.iter().map(|p| std::fs::read(p).map(|d| qala_engine::Hasher::digest(&d).sha256).unwrap_or_default()).collect();
    let next = AtomicUsize::new(0);
    let (objects, detected, scanned) = (AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0));
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut engine = Engine::new(&rules, limits.clone());
                let cancel = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(path) = list.get(i) else { break };
                    let Ok(data) = std::fs::read(path) else { continue };
                    let r: Report = if mode == "unpack" {
                        qala_engine::fuzzing::unpack_only(&data, &limits)
                    } else {
                        engine.scan_unhashed(&data, &shas[i], cancel.clone())
                    };
                    objects.fetch_add(r.objects_scanned as usize, Ordering::Relaxed);
                    scanned.fetch_add(r.bytes_scanned as usize, Ordering::Relaxed);
                    if matches!(r.verdict, Some(Severity::Malicious | Severity::Suspicious)) {
                        detected.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let secs = start.elapsed().as_secs_f64();
    let scanned_mb = format!(" ({:.1} MB)", scanned.load(Ordering::Relaxed) as f64 / 1e6);
    summary(
        &mode,
        list.len(),
        total,
        objects.load(Ordering::Relaxed),
        &scanned_mb,
        detected.load(Ordering::Relaxed),
        threads,
        secs,
    );
    Ok(())
}

/// The `sandboxed` mode: what a worker does with each file after receiving it.
fn sandboxed(rules: &qala_engine::Ruleset, list: &[PathBuf], total: u64, threads: usize) -> Result<()> {
    use qala_worker::sandbox::{ScanChild, Settings, Shipped, Upload};
    let shipped = Shipped::new(rules.id.clone(), rules.rule_count as u32, rules.limits.clone(), &rules.to_bytes()?)?;
    let exe = std::env::current_exe()?.with_file_name("qala-worker");
    let settings = Settings { exe, memory_limit: 1 << 30 };
    let (next, objects, detected) = (AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0));
    let cancel = std::sync::atomic::AtomicBool::new(false);
    // The coordinator verified each file's sha256 and sends it with the
    // file: worked out here before the clock.
    let shas: Vec<String> =
        list.iter().map(|p| std::fs::read(p).map(|d| qala_engine::Hasher::digest(&d).sha256).unwrap_or_default()).collect();
    // Children start (and load the rules) before the clock, as a worker's do.
    let mut children = (0..threads).map(|_| ScanChild::spawn(&shipped, &settings)).collect::<Result<Vec<_>, _>>()?;
    let start = Instant::now();
    std::thread::scope(|s| {
        for child in children.iter_mut() {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(path) = list.get(i) else { break };
                    // Held as a worker holds an upload.
                    let Ok(mut input) = std::fs::File::open(path) else { continue };
                    let size = input.metadata().map(|m| m.len()).unwrap_or(0);
                    let mut upload = Upload::new(size).expect("upload");
                    std::io::copy(&mut input, upload.file()).expect("copy");
                    let (file, _) = upload.freeze().expect("freeze");
                    let v = child
                        .scan(&file, &shas[i], true, Default::default(), std::time::Duration::from_secs(600), &cancel)
                        .expect("scan child");
                    objects.fetch_add(v.objects_scanned as usize, Ordering::Relaxed);
                    if v.verdict == qala_proto::v1::VerdictKind::Malicious as i32
                        || v.verdict == qala_proto::v1::VerdictKind::Suspicious as i32
                    {
                        detected.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let secs = start.elapsed().as_secs_f64();
    summary("sandboxed", list.len(), total, objects.load(Ordering::Relaxed), "", detected.load(Ordering::Relaxed), threads, secs);
    Ok(())
}

/// The line `scripts/bench.sh` reads (it takes the MB/s figure).
#[allow(clippy::too_many_arguments)]
fn summary(mode: &str, files: usize, total: u64, objects: usize, scanned: &str, detected: usize, threads: usize, secs: f64) {
    println!(
        "qala-engine ({mode}): {files} files, {:.1} MB, {objects} objects{scanned}, {detected} detected, {threads} threads: {secs:.2}s, {:.1} MB/s, {:.0} files/s",
        total as f64 / 1e6,
        total as f64 / 1e6 / secs,
        files as f64 / secs
    );
}
