//! `qala-bench-lookups [--store embedded|redis] [--conns N] [--batch N]
//! [--seconds S] [--known N] [--fill N] [--only hits|misses|first-seen]`: the hash-first path under load. Starts a
//! local cluster (one worker), stores `--known` small files' verdicts by
//! uploading them and `--fill` more written straight into the store (default
//! 200,000: a store as small as 2,048 verdicts answers from the CPU's caches
//! and hides what a larger keyspace costs each lookup), then drives `--conns` connections, each its own enrolled
//! agent token (as a fleet would), sending `Lookup` batches of `--batch`
//! digests as fast as answers come back: first only digests the store knows
//! (hits), then digests nobody has seen (misses, new ones every call). One
//! Markdown row per mode: calls/s, digests/s, p50/p99 call latency. Run by
//! hand (`./scripts/bench-lookups.sh` runs it on both stores); compare runs
//! made in the same script on the same machine only.

use anyhow::{Context, Result, bail};
use qala_proto::v1 as pb;
use qala_tests::{Cluster, Options, Redis, pseudo_random, repo_root, scan_messages, sha256_hex};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

struct Args {
    redis: bool,
    conns: usize,
    batch: usize,
    seconds: f64,
    known: usize,
    fill: usize,
    only: Option<String>,
}

fn args() -> Result<Args> {
    let mut a = Args { redis: false, conns: 32, batch: 512, seconds: 10.0, known: 2048, fill: 200_000, only: None };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| -> Result<String> { it.next().with_context(|| format!("{name} needs a value")) };
        match arg.as_str() {
            "--store" => {
                a.redis = match value("--store")?.as_str() {
                    "redis" => true,
                    "embedded" => false,
                    s => bail!("--store is embedded or redis, not {s:?}"),
                }
            }
            "--conns" => a.conns = value("--conns")?.parse()?,
            "--batch" => a.batch = value("--batch")?.parse()?,
            "--seconds" => a.seconds = value("--seconds")?.parse()?,
            "--known" => a.known = value("--known")?.parse()?,
            "--fill" => a.fill = value("--fill")?.parse()?,
            "--only" => a.only = Some(value("--only")?),
            other => bail!("unknown argument {other:?}"),
        }
    }
    if a.conns == 0 || a.batch == 0 || a.known < a.batch {
        bail!("--conns and --batch must be positive and --known at least --batch");
    }
    Ok(a)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Upload `n` distinct small files so that their verdicts are stored;
/// returns their sha256s.
async fn store_known(cluster: &Cluster, n: usize) -> Result<Vec<String>> {
    let next = Arc::new(AtomicU64::new(0));
    let shas = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut client = cluster.scanner_with(&cluster.url(), Some("admin")).await;
        let (next, shas) = (next.clone(), shas.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n as u64 {
                    return Ok::<_, anyhow::Error>(());
                }
                let data = pseudo_random(0x5eed_0000 + i, 512);
                let v = client.scan(tokio_stream::iter(scan_messages(&data, "known.bin"))).await?.into_inner();
                let sha = v.verdict.context("no verdict")?.sha256;
                if sha != sha256_hex(&data) {
                    bail!("verdict for the wrong file");
                }
                shas.lock().await.push(sha);
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let v = shas.lock().await.clone();
    Ok(v)
}

/// Write `n` more clean verdicts under `ruleset_id` straight into the
/// store (nobody asks for them): the keyspace a store that has served a
/// while holds.
async fn fill(store: &str, ruleset_id: &str, n: usize) -> Result<()> {
    let store = qala_coordinator::store::open(&store.into()).await?;
    let mut tasks = tokio::task::JoinSet::new();
    const WRITERS: usize = 16;
    for w in 0..WRITERS {
        let (store, ruleset_id) = (store.clone(), ruleset_id.to_string());
        tasks.spawn(async move {
            for i in (w..n).step_by(WRITERS) {
                let v = pb::Verdict {
                    sha256: sha256_hex(format!("filler {i}").as_bytes()),
                    ruleset_id: ruleset_id.clone(),
                    size: 512 + i as u64 % 4096,
                    scanned_at_ms: qala_common::now_ms(),
                    ..Default::default()
                };
                store.put(&v, None).await?;
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(())
}

/// Drive lookups on every connection for `seconds`; `digests(conn, call)`
/// gives each call's batch.
async fn drive(
    clients: &[qala_tests::Scanner],
    seconds: f64,
    digests: Arc<dyn Fn(usize, u64) -> Vec<String> + Send + Sync>,
    expect_hits: bool,
) -> Result<(u64, u64, Vec<Duration>)> {
    let stop = Arc::new(AtomicBool::new(false));
    let (calls, answered) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for (c, client) in clients.iter().enumerate() {
        let mut client = client.clone();
        let (stop, calls, answered, latencies, digests) =
            (stop.clone(), calls.clone(), answered.clone(), latencies.clone(), digests.clone());
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            let mut call = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let sha256s = digests(c, call);
                let asked = sha256s.len();
                let t = Instant::now();
                let r =
                    client.lookup(pb::LookupRequest { sha256: sha256s, brief: true, ..Default::default() }).await?.into_inner();
                mine.push(t.elapsed());
                if expect_hits && r.verdicts.len() != asked {
                    bail!("asked {asked} known digests, {} answered", r.verdicts.len());
                }
                if !expect_hits && !r.verdicts.is_empty() {
                    bail!("unknown digests answered");
                }
                calls.fetch_add(1, Ordering::Relaxed);
                answered.fetch_add(asked as u64, Ordering::Relaxed);
                call += 1;
            }
            latencies.lock().await.extend(mine);
            Ok::<_, anyhow::Error>(())
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await??;
    }
    let mut lat = latencies.lock().await.clone();
    lat.sort();
    Ok((calls.load(Ordering::Relaxed), answered.load(Ordering::Relaxed), lat))
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = args()?;
    let redis_dir = tempfile::tempdir()?;
    let redis = if a.redis { Some(Redis::start(redis_dir.path())?) } else { None };
    let store = redis.as_ref().map(Redis::url);
    let mut cluster = Cluster::prepare(&repo_root().join("rules"), store.as_deref(), Options::default())?;
    for c in 0..a.conns {
        cluster.add_token_offline("agent", &format!("bench-agent-{c:04}"))?;
    }
    cluster.start_coordinator()?;
    cluster.add_worker("w1")?;
    cluster.wait_ready(1)?;
    let known = Arc::new(store_known(&cluster, a.known).await?);
    if a.fill > 0 {
        let ruleset_id = cluster.scanner().await.lookup(pb::LookupRequest::default()).await?.into_inner().ruleset_id;
        // The embedded store is one process's file: written between two
        // runs of the coordinator.
        let restart = !a.redis;
        if restart {
            cluster.coordinator.take().context("no coordinator")?.terminate()?;
        }
        let t = Instant::now();
        fill(&cluster.store, &ruleset_id, a.fill).await?;
        eprintln!("{} filler verdicts written in {:.1} s", a.fill, t.elapsed().as_secs_f64());
        if restart {
            cluster.start_coordinator()?;
            cluster.wait_ready(1)?;
        }
    }
    let mut clients = Vec::new();
    for c in 0..a.conns {
        clients.push(cluster.scanner_with(&cluster.url(), Some(&format!("bench-agent-{c:04}"))).await);
    }
    let store_name = if a.redis { "redis" } else { "embedded" };
    println!("| store | mode | conns | batch | calls | calls/s | digests/s | p50 | p99 |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let batch = a.batch;
    let hits: Arc<dyn Fn(usize, u64) -> Vec<String> + Send + Sync> = {
        let known = known.clone();
        Arc::new(move |c, call| {
            let start = (c * 7919 + call as usize * batch) % known.len();
            (0..batch).map(|i| known[(start + i) % known.len()].clone()).collect()
        })
    };
    // Each agent's own unknown files, asked about again on each pass (its
    // private or lookup-only files, files not uploaded yet).
    let unknown: Arc<Vec<Vec<String>>> = Arc::new(
        (0..a.conns).map(|c| (0..a.known).map(|i| sha256_hex(format!("unknown {c} {i}").as_bytes())).collect()).collect(),
    );
    let misses: Arc<dyn Fn(usize, u64) -> Vec<String> + Send + Sync> = Arc::new(move |c, call| {
        let mine = &unknown[c];
        let start = call as usize * batch % mine.len();
        (0..batch).map(|i| mine[(start + i) % mine.len()].clone()).collect()
    });
    // Digests nobody has asked about before, new ones every call: every
    // one a first sighting (an agent's first scan).
    let first: Arc<dyn Fn(usize, u64) -> Vec<String> + Send + Sync> =
        Arc::new(move |c, call| (0..batch).map(|i| sha256_hex(format!("new {c} {call} {i}").as_bytes())).collect());
    for (mode, f, expect) in [("hits", hits, true), ("misses", misses, false), ("first-seen", first, false)] {
        if a.only.as_deref().is_some_and(|o| o != mode) {
            continue;
        }
        // A 1 s warm-up (connections, caches; for hits and misses several
        // passes over each connection's digests), then, for those two,
        // 3 s for the sightings of the first pass to be written (their
        // cost is what first-seen measures); then the measured run.
        drive(&clients, 1.0, f.clone(), expect).await?;
        if mode != "first-seen" {
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        let (calls, digests, lat) = drive(&clients, a.seconds, f, expect).await?;
        println!(
            "| {store_name} | {mode} | {} | {batch} | {calls} | {:.0} | {:.0} | {:.1} ms | {:.1} ms |",
            a.conns,
            calls as f64 / a.seconds,
            digests as f64 / a.seconds,
            percentile(&lat, 0.50).as_secs_f64() * 1e3,
            percentile(&lat, 0.99).as_secs_f64() * 1e3,
        );
    }
    drop(cluster);
    Ok(())
}
