//! `qala-bench-rescan DIR [RULES]`: how much the agent's hash cache saves.
//! Starts a local cluster (embedded store, one worker), scans DIR once (every
//! verdict stored, the cache filled), then rescans it with the cache and
//! with `--no-cache`, alternately, three times each, in text and in JSON
//! output, and prints the medians, their ratio, and what each run read
//! (file content and rchar, from the agent's summary).

use anyhow::{Context, Result};
use qala_tests::{Cluster, repo_root};
use std::path::PathBuf;
use std::time::Instant;

fn main() -> Result<()> {
    let mut args = std::env::args_os().skip(1);
    let dir = PathBuf::from(args.next().context("usage: qala-bench-rescan DIR [RULES]")?);
    let rules = args.next().map_or_else(|| repo_root().join("rules"), PathBuf::from);
    let cluster = Cluster::start(&rules, None, 1)?;
    let scan = |extra: &[&str]| -> Result<(f64, String)> {
        let started = Instant::now();
        let out = cluster.agent_command(&cluster.url(), "agent").arg("scan").args(extra).arg(&dir).output()?;
        let secs = started.elapsed().as_secs_f64();
        let text = [out.stdout, out.stderr].concat();
        let summary = String::from_utf8_lossy(&text).lines().find(|l| l.starts_with("scanned ")).unwrap_or("").to_string();
        Ok((secs, summary))
    };
    let (secs, summary) = scan(&[])?;
    println!("first scan: {secs:.2}s\n  {summary}");
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    // The floor under any rescan: process start, TLS handshake, one call.
    let floor: Vec<f64> = (0..5)
        .map(|_| {
            let started = Instant::now();
            let _ = cluster.agent_command(&cluster.url(), "agent").args(["lookup", &"0".repeat(64)]).output();
            started.elapsed().as_secs_f64()
        })
        .collect();
    println!("floor (qala-agent lookup of one digest: process start, TLS, one call): {:.3}s median of 5", median(floor));
    for (mode, flags) in [("text", &[][..]), ("--json", &["--json"][..])] {
        let (mut cached, mut uncached) = (Vec::new(), Vec::new());
        let mut last = (String::new(), String::new());
        for _ in 0..3 {
            let (s, l) = scan(flags)?;
            cached.push(s);
            last.0 = l;
            let (s, l) = scan(&[flags, &["--no-cache"]].concat())?;
            uncached.push(s);
            last.1 = l;
        }
        let (c, u) = (median(cached), median(uncached));
        println!("{mode} output: rescan {c:.2}s with the hash cache, {u:.2}s with --no-cache (medians of 3): {:.1}x", u / c);
        println!("  cache:    {}\n  no cache: {}", last.0, last.1);
    }
    Ok(())
}
