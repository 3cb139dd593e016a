//! `qala-load [WORKERS...] [--streams N] [--files N] [--size BYTES]`: start
//! a local cluster (embedded store) with each worker count in turn, drive N
//! concurrent `Scan` streams of generated, distinct files through the
//! coordinator on loopback, and print one Markdown table row per worker
//! count: files/s, MB/s, p50/p99 verdict latency (first byte sent to verdict
//! received), and the peak RSS of the coordinator and of the largest worker.
//! Run by hand (`./scripts/load.sh`); the machine it runs on is the limit.

use anyhow::{Context, Result, bail};
use qala_proto::v1 as pb;
use qala_tests::{Cluster, peak_rss_kib, pseudo_random, repo_root, scan_messages, sha256_hex};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

struct Args {
    workers: Vec<usize>,
    streams: usize,
    files: usize,
    size: usize,
}

fn args() -> Result<Args> {
    let mut a = Args { workers: Vec::new(), streams: 32, files: 2000, size: 256 * 1024 };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| -> Result<usize> {
            it.next().with_context(|| format!("{name} needs a value"))?.parse().context(name.to_string())
        };
        match arg.as_str() {
            "--streams" => a.streams = value("--streams")?,
            "--files" => a.files = value("--files")?,
            "--size" => a.size = value("--size")?,
            n => a.workers.push(n.parse().with_context(|| format!("not a worker count: {n}"))?),
        }
    }
    if a.workers.is_empty() {
        a.workers = vec![1, 2, 4];
    }
    if a.streams == 0 || a.files == 0 {
        bail!("--streams and --files must be positive");
    }
    Ok(a)
}

/// File `i` of a round: distinct pseudo-random bytes around `size` (75% to
/// 125%), made when it is sent so that large runs do not sit in memory.
fn file(i: usize, size: usize, round: u64) -> Vec<u8> {
    let seed = (round << 40) ^ i as u64;
    let len = size * 3 / 4 + (seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as usize % (size / 2 + 1);
    pseudo_random(seed, len)
}

async fn scan_one(client: &mut qala_tests::Scanner, data: &[u8]) -> Result<pb::Verdict> {
    let msgs = scan_messages(data, "load.bin");
    loop {
        match client.scan(tokio_stream::iter(msgs.clone())).await {
            Ok(r) => return r.into_inner().verdict.context("no verdict"),
            Err(s) if s.code() == tonic::Code::ResourceExhausted => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(s) => bail!("scan failed: {s}"),
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = args()?;
    println!("| workers | streams | files | MB | time | files/s | MB/s | p50 | p99 | coordinator peak RSS | worker peak RSS |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (round, &workers) in a.workers.iter().enumerate() {
        let cluster = Cluster::start(&repo_root().join("rules"), None, workers)?;
        let next = Arc::new(AtomicUsize::new(0));
        let bytes = Arc::new(AtomicUsize::new(0));
        let latencies = Arc::new(Mutex::new(Vec::with_capacity(a.files)));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..a.streams {
            // Each stream its own connection, as separate agents would be.
            let mut client = cluster.scanner().await;
            let (next, bytes, latencies, files, size) = (next.clone(), bytes.clone(), latencies.clone(), a.files, a.size);
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= files {
                        return Ok::<_, anyhow::Error>(());
                    }
                    let data = file(i, size, round as u64);
                    let sha = sha256_hex(&data);
                    let t = Instant::now();
                    let v = scan_one(&mut client, &data).await?;
                    if v.sha256 != sha {
                        bail!("verdict for the wrong file");
                    }
                    latencies.lock().await.push(t.elapsed());
                    bytes.fetch_add(data.len(), Ordering::Relaxed);
                }
            }));
        }
        for t in tasks {
            t.await??;
        }
        let secs = start.elapsed().as_secs_f64();
        let bytes = bytes.load(Ordering::Relaxed);
        let mut lat = latencies.lock().await.clone();
        lat.sort();
        let coordinator = peak_rss_kib(cluster.coordinator.as_ref().context("coordinator")?.pid()) / 1024;
        let worker = cluster.workers.iter().map(|w| peak_rss_kib(w.pid())).max().unwrap_or(0) / 1024;
        println!(
            "| {workers} | {} | {} | {:.1} | {secs:.2} s | {:.0} | {:.1} | {:.1} ms | {:.1} ms | {coordinator} MiB | {worker} MiB |",
            a.streams,
            a.files,
            bytes as f64 / 1e6,
            a.files as f64 / secs,
            bytes as f64 / 1e6 / secs,
            percentile(&lat, 0.50).as_secs_f64() * 1e3,
            percentile(&lat, 0.99).as_secs_f64() * 1e3,
        );
    }
    Ok(())
}
