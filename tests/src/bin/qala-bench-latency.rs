//! `qala-bench-latency [SIZES]`: first byte to verdict on an idle local
//! cluster (TLS on both hops, one worker with 2 threads, sandboxed scans,
//! embedded store, the repository's rules), for files of new random content
//! (so every one is uploaded and scanned): p50 and p99 per size, next to the
//! worker's own scan time for the same files (its child's, which leaves
//! the root's hashes to the worker), and from 64 MiB on the engine alone
//! in this process (1 thread, the same rules, the same contents held in
//! memory: hashes, unpacking and rules, as `qala-bench` does), and the
//! worker's memory (RssAnon, RssShmem) after the largest.
//! SIZES: comma-separated bytes with K/M/G (default 4K,1M,64M,700M).

use anyhow::Result;
use qala_tests::{Cluster, pseudo_random, repo_root, scan_messages, status_kib};
use std::time::Instant;

fn size(s: &str) -> u64 {
    let (n, mult) = match s.as_bytes().last() {
        Some(b'K') => (&s[..s.len() - 1], 1 << 10),
        Some(b'M') => (&s[..s.len() - 1], 1 << 20),
        Some(b'G') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    n.parse::<u64>().expect("a size") * mult
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() -> Result<()> {
    let sizes: Vec<String> =
        std::env::args().nth(1).unwrap_or_else(|| "4K,1M,64M,700M".into()).split(',').map(String::from).collect();
    let cluster = Cluster::start(&repo_root().join("rules"), None, 1)?;
    // The engine alone, for the large sizes: the same rules, compiled here
    // with the engine's default limits (the cluster runs the default policy).
    let limits = qala_engine::Limits::default();
    let rules = qala_engine::compile_rules(&repo_root().join("rules"), &limits)?;
    let mut engine = qala_engine::Engine::new(&rules, limits);
    let worker = cluster.workers[0].pid();
    let mut client = cluster.scanner().await;
    let mut seed = 1u64;
    for s in sizes {
        let bytes = size(&s) as usize;
        let samples = match bytes {
            0..=65_536 => 200,
            65_537..=4_194_304 => 50,
            4_194_305..=134_217_728 => 8,
            _ => 3,
        };
        let (mut latency, mut scan, mut alone) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..samples {
            seed += 1;
            let data = pseudo_random(seed, bytes);
            if bytes >= 64 << 20 {
                // Before the upload (the cluster idle), on the same bytes.
                let started = Instant::now();
                let r = engine.scan(&data, "");
                alone.push(started.elapsed().as_secs_f64() * 1000.0);
                anyhow::ensure!(r.verdict.is_some(), "the engine alone did not scan it: {:?}", r.errors);
            }
            let msgs = scan_messages(&data, "");
            drop(data);
            let started = Instant::now();
            let resp = client.scan(tokio_stream::iter(msgs)).await?.into_inner();
            latency.push(started.elapsed().as_secs_f64() * 1000.0);
            let v = resp.verdict.unwrap_or_default();
            scan.push(v.scan_duration_us as f64 / 1000.0);
        }
        if samples <= 8 {
            let each: Vec<String> = latency.iter().map(|ms| format!("{ms:.0}")).collect();
            println!("{s:>5}: each file in turn, first byte to verdict: {} ms", each.join(", "));
        }
        latency.sort_by(f64::total_cmp);
        scan.sort_by(f64::total_cmp);
        println!(
            "{s:>5} ({samples} files): first byte to verdict p50 {:.1} ms, p99 {:.1} ms; the worker's scan p50 {:.1} ms; latency / scan at p50 {:.2}x",
            percentile(&latency, 0.5),
            percentile(&latency, 0.99),
            percentile(&scan, 0.5),
            percentile(&latency, 0.5) / percentile(&scan, 0.5).max(0.001)
        );
        if !alone.is_empty() {
            alone.sort_by(f64::total_cmp);
            println!(
                "{s:>5}: the engine alone (1 thread, in memory) p50 {:.1} ms; latency / engine alone at p50 {:.2}x",
                percentile(&alone, 0.5),
                percentile(&latency, 0.5) / percentile(&alone, 0.5).max(0.001)
            );
        }
    }
    println!(
        "worker after the largest: VmHWM {} KiB, RssAnon {} KiB, RssShmem {} KiB",
        status_kib(worker, "VmHWM:"),
        status_kib(worker, "RssAnon:"),
        status_kib(worker, "RssShmem:")
    );
    Ok(())
}
