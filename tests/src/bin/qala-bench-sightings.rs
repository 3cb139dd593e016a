//! `qala-bench-sightings [--agents N] [--files N]`: what a sighting costs in
//! each store. Records N agents x M files through the store's own
//! interface (the coordinator's batches of 100,000), in an embedded store
//! (file size) and a fresh Redis (`used_memory`), and prints bytes per
//! sighting and the write rate. Run by hand; the README's figures come
//! from it.

use anyhow::{Context, Result, bail};
use qala_coordinator::store::{self, Sighting, VerdictStore};
use qala_tests::{Redis, redis_cmd, sha256_hex};
use std::sync::Arc;
use std::time::Instant;

fn args() -> Result<(usize, usize)> {
    let (mut agents, mut files) = (100, 10_000);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let v: usize = it.next().with_context(|| format!("{a} needs a value"))?.parse()?;
        match a.as_str() {
            "--agents" => agents = v,
            "--files" => files = v,
            other => bail!("unknown argument {other:?}"),
        }
    }
    Ok((agents, files))
}

/// Agent ids as enrollment makes them: host name, dash, 16 hex.
fn agent_id(i: usize) -> String {
    format!("ws-{i:05}.corp.example.org-{:016x}", (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// Every agent holds every file of a shared pool (the OS and software
/// every machine has) and a tenth of its own.
async fn fill(s: &Arc<dyn VerdictStore>, agents: usize, files: usize) -> Result<f64> {
    let shared: Vec<String> = (0..files * 9 / 10).map(|i| sha256_hex(format!("shared {i}").as_bytes())).collect();
    let t = Instant::now();
    let now = qala_common::now_ms();
    let mut batch = Vec::with_capacity(100_000);
    for a in 0..agents {
        let id = agent_id(a);
        let own = (0..files - shared.len()).map(|i| sha256_hex(format!("own {a} {i}").as_bytes()));
        for sha in shared.iter().cloned().chain(own) {
            batch.push(Sighting { agent_id: id.clone(), sha256: sha, first_seen_ms: now, last_seen_ms: now });
            if batch.len() == 100_000 {
                s.record_sightings(&batch, 1_000_000).await?;
                batch.clear();
            }
        }
    }
    s.record_sightings(&batch, 1_000_000).await?;
    Ok((agents * files) as f64 / t.elapsed().as_secs_f64())
}

fn used_memory(port: u16) -> Result<u64> {
    let info: String = redis_cmd(port, &["INFO", "memory"])?;
    info.lines().find_map(|l| l.strip_prefix("used_memory:")).context("no used_memory")?.trim().parse().context("used_memory")
}

#[tokio::main]
async fn main() -> Result<()> {
    let (agents, files) = args()?;
    let n = (agents * files) as f64;
    println!("{agents} agents x {files} files = {n} sightings");
    println!("| store | bytes per sighting | sightings written/s |");
    println!("|---|---|---|");
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("sightings.redb");
    let spec = |s: String| store::StoreSpec { spec: s, password: None, ca: None, cache_bytes: None };
    let embedded = store::open(&spec(format!("embedded:{}", path.display()))).await?;
    let before = std::fs::metadata(&path)?.len();
    let rate = fill(&embedded, agents, files).await?;
    drop(embedded);
    let after = std::fs::metadata(&path)?.len();
    println!("| embedded (redb file) | {:.0} | {rate:.0} |", (after - before) as f64 / n);

    let redis = Redis::start(dir.path())?;
    let r = store::open(&spec(redis.url())).await?;
    let before = used_memory(redis.port)?;
    let rate = fill(&r, agents, files).await?;
    let after = used_memory(redis.port)?;
    println!("| Redis (used_memory) | {:.0} | {rate:.0} |", (after - before) as f64 / n);
    Ok(())
}
