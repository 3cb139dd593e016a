//! `qala-bench-cluster DIR RULES [RUNS]`: the engine alone against the same
//! tree through a local cluster as deployed by default, in one go on the
//! same machine. Each run: `qala-bench DIR RULES 2 full` (the engine alone,
//! 2 threads), then a fresh cluster (TLS on both hops, one worker with 2
//! threads and sandboxed scan children, a new embedded store) and
//! `qala-agent scan --no-cache -i DIR` through it, then the engine alone
//! again (its time is the mean of the runs before and after, so a drift of
//! the machine's speed during the run cancels out); prints both times, the
//! ratio (engine time / cluster time: 1.0 means the cluster is as fast as
//! the engine alone) and the CPU seconds of agent, coordinator and worker
//! (its service, and its scan children). The middle run by ratio is
//! reported last.
//!
//! The ratio compares phases run one after the other, and this machine's
//! speed drifts between them (the same binaries have printed 0.54x and
//! 0.76x minutes apart, with the engine alone measured once, before). The
//! overhead line does much less: it is the CPU of agent, coordinator and
//! worker service per CPU second of scanning, all measured over the same
//! seconds, so a change of the machine's speed cancels out of it.

use anyhow::{Context, Result, bail};
use qala_tests::{Cluster, bin, children_of};
use std::path::PathBuf;
use std::time::Instant;

/// utime + stime (+ reaped children's) of `pid`, in seconds.
fn cpu_secs(pid: u32, with_reaped: bool) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<f64> = rest.split_whitespace().map(|v| v.parse().unwrap_or(0.0)).collect();
    let get = |i: usize| f.get(i).copied().unwrap_or(0.0);
    // Fields after the command: state=0, utime=11, stime=12, cutime=13, cstime=14.
    let mut t = get(11) + get(12);
    if with_reaped {
        t += get(13) + get(14);
    }
    t / 100.0
}

/// A process and its live children (the worker's scan processes).
fn tree_cpu(pid: u32) -> f64 {
    cpu_secs(pid, true) + children_of(pid).into_iter().map(|c| cpu_secs(c, true)).sum::<f64>()
}

fn children_cpu() -> f64 {
    // SAFETY: getrusage fills the struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

struct Run {
    engine: f64,
    cluster: f64,
    agent_cpu: f64,
    coordinator_cpu: f64,
    worker_cpu: f64,
    /// The worker service alone (its scan children not counted).
    service_cpu: f64,
}

impl Run {
    /// CPU of the worker's scan children.
    fn scan_cpu(&self) -> f64 {
        self.worker_cpu - self.service_cpu
    }

    /// CPU of agent, coordinator and worker service per CPU second of the
    /// scan children.
    fn overhead(&self) -> f64 {
        (self.agent_cpu + self.coordinator_cpu + self.service_cpu) / self.scan_cpu().max(1e-9)
    }
}

fn engine_secs(dir: &PathBuf, rules: &PathBuf) -> Result<f64> {
    let out = std::process::Command::new(bin("qala-bench")).arg(dir).arg(rules).args(["2", "full"]).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("qala-engine (full)")).with_context(|| format!("qala-bench: {text}"))?;
    // "... threads: 3.08s, 190.1 MB/s, ..."
    let secs = line.split("threads: ").nth(1).and_then(|r| r.split('s').next()).and_then(|s| s.parse().ok());
    secs.with_context(|| format!("no time in {line:?}"))
}

fn main() -> Result<()> {
    let mut args = std::env::args_os().skip(1);
    let usage = "usage: qala-bench-cluster DIR RULES [RUNS]";
    let dir = PathBuf::from(args.next().context(usage)?);
    let rules = PathBuf::from(args.next().context(usage)?);
    let runs: usize = args.next().map(|r| r.to_string_lossy().parse()).transpose()?.unwrap_or(3);
    let mut results = Vec::new();
    for i in 1..=runs {
        let engine_before = engine_secs(&dir, &rules)?;
        let cluster = Cluster::start(&rules, None, 1)?;
        let coordinator = cluster.coordinator.as_ref().context("no coordinator")?.pid();
        let worker = cluster.workers[0].pid();
        let (c0, w0, s0, a0) = (cpu_secs(coordinator, true), tree_cpu(worker), cpu_secs(worker, false), children_cpu());
        let started = Instant::now();
        let out = cluster
            .agent_command(&cluster.url(), "agent")
            .args(["scan", "--no-cache", "--no-progress", "-i"])
            .arg(&dir)
            .output()?;
        let secs = started.elapsed().as_secs_f64();
        let (agent_cpu, coordinator_cpu) = (children_cpu() - a0, cpu_secs(coordinator, true) - c0);
        let (worker_cpu, service_cpu) = (tree_cpu(worker) - w0, cpu_secs(worker, false) - s0);
        let text = String::from_utf8_lossy(&out.stdout);
        let summary = text.lines().find(|l| l.starts_with("scanned ")).unwrap_or("").to_string();
        if !summary.contains(" 0 errors") {
            bail!("the cluster scan had errors:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
        }
        let store = cluster.dir.path().join("verdicts.redb");
        let store_bytes = std::fs::metadata(&store).map(|m| m.len()).unwrap_or(0);
        drop(cluster);
        let engine_after = engine_secs(&dir, &rules)?;
        let run = Run {
            engine: (engine_before + engine_after) / 2.0,
            cluster: secs,
            agent_cpu,
            coordinator_cpu,
            worker_cpu,
            service_cpu,
        };
        println!(
            "run {i}: engine alone {:.2}s ({engine_before:.2}s before, {engine_after:.2}s after), cluster {:.2}s: {:.2}x; CPU s: agent {:.1}, coordinator {:.1}, worker {:.1} (service {:.1}, scans {:.1}) of {:.1} available; overhead {:.3} CPU s per scan CPU s",
            run.engine,
            run.cluster,
            run.engine / run.cluster,
            run.agent_cpu,
            run.coordinator_cpu,
            run.worker_cpu,
            run.service_cpu,
            run.scan_cpu(),
            2.0 * run.cluster,
            run.overhead()
        );
        println!("  {}; verdict store {:.1} MB", summary.split(';').next().unwrap_or(""), store_bytes as f64 / 1e6);
        results.push(run);
    }
    results.sort_by(|a, b| (a.engine / a.cluster).total_cmp(&(b.engine / b.cluster)));
    let m = &results[results.len() / 2];
    println!(
        "middle of {runs}: engine alone {:.2}s, cluster {:.2}s, ratio {:.2}x (agent {:.1} + coordinator {:.1} + worker {:.1} CPU s)",
        m.engine,
        m.cluster,
        m.engine / m.cluster,
        m.agent_cpu,
        m.coordinator_cpu,
        m.worker_cpu
    );
    let mut overheads: Vec<f64> = results.iter().map(Run::overhead).collect();
    overheads.sort_by(f64::total_cmp);
    println!(
        "overhead, middle of {runs}: {:.3} CPU s of agent, coordinator and worker service per CPU s of scanning (runs: {})",
        overheads[overheads.len() / 2],
        overheads.iter().map(|o| format!("{o:.3}")).collect::<Vec<_>>().join(", ")
    );
    Ok(())
}
