//! `qala-scan-footprint DIR [WORKERS]`: how much memory a one-shot scan of
//! a large tree takes through a local cluster as deployed by default (TLS,
//! the embedded store with its default page cache, WORKERS workers of 2
//! threads, default 1): `qala-agent scan -i DIR` with the hash cache of a
//! first scan, then the same again (the rescan: everything from the cache
//! and the store). Prints, for each, the wall time, files and bytes per
//! second, and the peak resident memory of the agent (`ru_maxrss` of the
//! finished process), the coordinator and each worker with its scan
//! children (`VmHWM`).

use anyhow::{Context, Result, bail};
use qala_tests::{Cluster, peak_rss_kib, repo_root, tree_peak_rss_kib};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::time::Instant;

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn main() -> Result<()> {
    let mut args = std::env::args_os().skip(1);
    let usage = "usage: qala-scan-footprint DIR [WORKERS]";
    let dir = PathBuf::from(args.next().context(usage)?);
    let workers: usize = args.next().map(|r| r.to_string_lossy().parse()).transpose()?.unwrap_or(1);
    let cluster = Cluster::start(&repo_root().join("rules"), None, workers)?;
    let coordinator = cluster.coordinator.as_ref().context("no coordinator")?.pid();
    for round in ["first scan", "rescan"] {
        let started = Instant::now();
        let mut child = cluster
            .agent_command(&cluster.url(), "agent")
            .args(["scan", "--no-progress", "-i"])
            .arg(&dir)
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().context("stdout")?;
        let reader = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
        // wait4: the finished agent's own peak resident memory.
        let (mut status, mut ru): (libc::c_int, libc::rusage) = (0, unsafe { std::mem::zeroed() });
        // SAFETY: a child of this process; status and ru are valid for writes.
        let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut ru) };
        if pid < 0 {
            bail!("wait4: {}", std::io::Error::last_os_error());
        }
        let secs = started.elapsed().as_secs_f64();
        let text = reader.join().unwrap_or_default();
        let exit = std::process::ExitStatus::from_raw(status);
        let summary = text.lines().find(|l| l.starts_with("scanned ")).unwrap_or("").to_string();
        if !summary.contains(" 0 errors") {
            bail!("the scan had errors ({exit}):\n{}", text.lines().rev().take(20).collect::<Vec<_>>().join("\n"));
        }
        let files: f64 = summary.split_whitespace().nth(1).and_then(|n| n.replace(',', "").parse().ok()).unwrap_or(0.0);
        println!("{round}: {secs:.1} s, {:.0} files/s; {}", files / secs, summary.split(';').next().unwrap_or(""));
        let worker_mib: Vec<String> = cluster.workers.iter().map(|w| format!("{:.0}", mib(tree_peak_rss_kib(w.pid())))).collect();
        println!(
            "  peak RSS: agent {:.0} MiB, coordinator {:.0} MiB, workers {} MiB (with their scan children)",
            mib(ru.ru_maxrss as u64),
            mib(peak_rss_kib(coordinator)),
            worker_mib.join(", ")
        );
    }
    let store = cluster.dir.path().join("verdicts.redb");
    println!("verdict store: {:.1} MB", std::fs::metadata(&store).map(|m| m.len()).unwrap_or(0) as f64 / 1e6);
    Ok(())
}
