//! `qala-agent-footprint [FILES]`: what the agent service costs a
//! workstation, measured on a local cluster (embedded store, one worker):
//!
//! - idle: RSS and CPU time of a service watching an empty directory, over 10 s;
//! - a scheduled scan of FILES small files (default 100,000; 1,000 distinct
//!   contents): wall time, CPU time (and so its share of one core, against
//!   `limits.cpu_percent`), peak RSS, nice and I/O priority of the process;
//! - the upload cap: a 16 MiB file uploaded by `scan` with
//!   `--max-upload-rate 4M` and without, in the same run.

use anyhow::{Context, Result};
use qala_tests::{Cluster, Proc, bin, pseudo_random, repo_root, status_kib};
use std::path::Path;
use std::time::{Duration, Instant};

/// utime + stime in seconds, and the nice value.
fn cpu_and_nice(pid: u32) -> (f64, i64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = 100.0; // USER_HZ
    let ut: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let st: f64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    (((ut + st) / tick), f.get(16).and_then(|v| v.parse().ok()).unwrap_or(0))
}

fn verdict_lines(log: &Path) -> usize {
    std::fs::read_to_string(log).unwrap_or_default().lines().filter(|l| l.contains("\"event\":\"verdict\"")).count()
}

fn service(cluster: &Cluster, name: &str, config: &Path) -> Result<Proc> {
    let args = ["--config".to_string(), config.display().to_string(), "service".to_string()];
    let p = Proc::spawn(name, &bin("qala-agent"), &args, cluster.dir.path())?;
    qala_tests::wait_for("service start", Duration::from_secs(30), || {
        p.log_text().contains("\"event\":\"started\"").then_some(())
    })?;
    Ok(p)
}

fn config(cluster: &Cluster, dir: &Path, name: &str, body: &str) -> Result<std::path::PathBuf> {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[server]\nurl = {:?}\nca = {:?}\ntoken_file = {:?}\n\n[paths]\nquarantine = {:?}\nspool = {:?}\nhash_cache = {:?}\n\n{body}",
            cluster.url(),
            cluster.ca(),
            cluster.token_file("agent"),
            dir.join(format!("{name}-q")),
            dir.join(format!("{name}-spool")),
            dir.join(format!("{name}-hashes")),
        ),
    )?;
    Ok(path)
}

fn main() -> Result<()> {
    let files: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(100_000);
    let cluster = Cluster::start(&repo_root().join("rules"), None, 1)?;
    let work = tempfile::tempdir()?;
    let w = work.path();

    // Idle.
    std::fs::create_dir_all(w.join("empty"))?;
    let cfg = config(&cluster, w, "idle", &format!("[watch]\npaths = [{:?}]\nbackend = \"inotify\"\n", w.join("empty")))?;
    let idle = service(&cluster, "idle", &cfg)?;
    std::thread::sleep(Duration::from_secs(1));
    let (cpu0, nice) = cpu_and_nice(idle.pid());
    std::thread::sleep(Duration::from_secs(10));
    let (cpu1, _) = cpu_and_nice(idle.pid());
    println!(
        "idle service: RSS {} KiB (RssAnon {} KiB), CPU {:.3} s over 10 s, nice {nice}",
        status_kib(idle.pid(), "VmRSS:"),
        status_kib(idle.pid(), "RssAnon:"),
        cpu1 - cpu0
    );
    drop(idle);

    // A scheduled scan of many small files.
    let tree = w.join("tree");
    for i in 0..files {
        let d = tree.join(format!("d{}", i / 1000));
        if i % 1000 == 0 {
            std::fs::create_dir_all(&d)?;
        }
        std::fs::write(d.join(format!("f{i}.txt")), format!("file content number {}\n", i % 1000))?;
    }
    for cpu in [0u32, 25] {
        let name = format!("scan-cpu{cpu}");
        let cfg = config(
            &cluster,
            w,
            &name,
            &format!("[schedule]\npaths = [{tree:?}]\ninterval = \"24h\"\nat_start = true\n\n[limits]\ncpu_percent = {cpu}\n"),
        )?;
        let started = Instant::now();
        let p = service(&cluster, &name, &cfg)?;
        let mut peak = 0;
        while verdict_lines(&p.log) < files {
            peak = peak.max(status_kib(p.pid(), "VmRSS:"));
            std::thread::sleep(Duration::from_millis(200));
            anyhow::ensure!(started.elapsed() < Duration::from_secs(900), "scan did not finish: {}", p.log_text());
        }
        let secs = started.elapsed().as_secs_f64();
        let (cpu_s, nice) = cpu_and_nice(p.pid());
        let hwm = status_kib(p.pid(), "VmHWM:");
        println!(
            "scheduled scan of {files} files, cpu_percent = {cpu}: {secs:.1} s, agent CPU {cpu_s:.1} s ({:.0}% of one core), peak RSS {} KiB (VmHWM {hwm} KiB), nice {nice}",
            100.0 * cpu_s / secs,
            peak.max(hwm)
        );
    }

    // The upload cap.
    let big = w.join("big.bin");
    std::fs::write(&big, pseudo_random(99, 16 << 20))?;
    for (label, extra) in [("no cap", &[][..]), ("--max-upload-rate 4M", &["--max-upload-rate", "4M"][..])] {
        // A new content each time: the cluster has not seen it.
        let f = w.join(format!("upload-{}.bin", label.len()));
        let mut data = std::fs::read(&big)?;
        data[0] = label.len() as u8;
        std::fs::write(&f, &data)?;
        let started = Instant::now();
        let out = cluster.agent_command(&cluster.url(), "agent").arg("scan").args(extra).arg(&f).output().context("scan")?;
        let secs = started.elapsed().as_secs_f64();
        let summary = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or("").to_string();
        println!("upload of 16 MiB, {label}: {secs:.2} s ({:.1} MiB/s)\n  {summary}", 16.0 / secs);
    }
    Ok(())
}
