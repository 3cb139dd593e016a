//! Flow control under load: many concurrent uploads on few worker slots all
//! finish (none stalls behind unread streams), a worker refuses calls past
//! its admission instead of leaving them unread, and the coordinator's
//! memory stays bounded while it holds many large uploads.

use qala_proto::v1::{self as pb, worker_client::WorkerClient};
use qala_tests::{Cluster, peak_rss_kib, pseudo_random, repo_root, scan_messages, sha256_hex, wait_for};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

async fn scan(client: &mut qala_tests::Scanner, data: &[u8]) -> Result<pb::Verdict, tonic::Status> {
    let v = client.scan(tokio_stream::iter(scan_messages(data, "flow.bin"))).await?.into_inner().verdict.expect("a verdict");
    assert_eq!(v.sha256, sha256_hex(data));
    Ok(v)
}

/// `streams` tasks scanning `files` files of `len` bytes between them,
/// over one shared connection or one connection each; all must finish
/// within two minutes (a stall fails the test instead of hanging it).
async fn drive(cluster: &Cluster, streams: usize, files: u64, len: usize, shared: bool, seed: u64) {
    let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let one = cluster.scanner().await;
    let mut tasks = Vec::new();
    for _ in 0..streams {
        let mut client = if shared { one.clone() } else { cluster.scanner().await };
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= files {
                    return;
                }
                loop {
                    match scan(&mut client, &pseudo_random(seed + i, len)).await {
                        Ok(v) => {
                            assert_eq!(v.verdict, pb::VerdictKind::Clean as i32, "{v:?}");
                            break;
                        }
                        // The coordinator's upload limit: come back later, as agents do.
                        Err(s) if s.code() == Code::ResourceExhausted => tokio::time::sleep(Duration::from_millis(50)).await,
                        Err(s) => panic!("file {i}: {s}"),
                    }
                }
            }
        }));
    }
    let all = futures::future::join_all(tasks);
    let done = tokio::time::timeout(Duration::from_secs(120), all).await.expect("uploads stalled: not all finished in 120 s");
    for r in done {
        r.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn many_uploads_through_few_worker_slots_all_finish() {
    // One worker with 2 threads admits 4 calls; 48 streams share one
    // connection to the coordinator, which has one to the worker. Calls
    // left waiting unread on the worker used to fill that connection's
    // HTTP/2 window and stall every scan.
    let cluster = Cluster::start(&repo_root().join("rules"), None, 1).unwrap();
    drive(&cluster, 48, 480, 300 * 1024, true, 0).await;
    // Every file was scanned once (the count comes with the heartbeats).
    wait_for("the worker's count of scans", Duration::from_secs(10), || {
        (cluster.status().ok()?["workers"][0]["scanned"].as_u64()? == 480).then_some(())
    })
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn coordinator_memory_stays_bounded_with_100_large_uploads_at_once() {
    // 100 agents (a connection each) upload 4 MiB files at once: 400 MiB in
    // flight. The coordinator holds uploads in memory only within its spool
    // memory budget (64 MiB by default), spools the rest past 256 KiB per
    // upload to disk and waits for worker slots; its peak RSS must stay far
    // below what it holds.
    let cluster = Cluster::start(&repo_root().join("rules"), None, 1).unwrap();
    drive(&cluster, 100, 200, 4 << 20, false, 1_000_000).await;
    let rss_mib = peak_rss_kib(cluster.coordinator.as_ref().unwrap().pid()) / 1024;
    eprintln!("coordinator peak RSS with 100 uploads of 4 MiB at once: {rss_mib} MiB");
    assert!(rss_mib > 0, "could not read the coordinator's peak RSS");
    assert!(rss_mib < 192, "coordinator peak RSS {rss_mib} MiB with 100 uploads of 4 MiB in flight");
}

#[tokio::test(flavor = "multi_thread")]
async fn worker_refuses_calls_past_its_admission_at_once() {
    let cluster = Cluster::start(&repo_root().join("rules"), None, 1).unwrap();
    let status = cluster.status().unwrap();
    let address = status["workers"][0]["address"].as_str().unwrap().to_string();
    let ruleset_id = status["rules"]["ruleset_id"].as_str().unwrap().to_string();
    let channel = cluster.worker_channel(&address).await;
    let header = |i: u64| pb::WorkerScanRequest {
        msg: Some(pb::worker_scan_request::Msg::Header(pb::WorkerScanHeader {
            sha256: sha256_hex(&pseudo_random(i, 1000)),
            size: 1000,
            file_name: format!("held-{i}"),
            ruleset_id: ruleset_id.clone(),
            ..Default::default()
        })),
    };
    // Two threads admit four calls: hold four open with their uploads unfinished.
    let mut held = Vec::new();
    for i in 0..4 {
        let (tx, rx) = mpsc::channel(4);
        tx.send(header(i)).await.unwrap();
        let mut client = WorkerClient::new(channel.clone());
        held.push((tx, tokio::spawn(async move { client.scan_file(ReceiverStream::new(rx)).await })));
    }
    // Once the four are in (they wait for their bytes), a fifth is refused
    // at once, not left waiting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(held.iter().all(|(_, call)| !call.is_finished()), "a held call ended early");
    let mut client = WorkerClient::new(channel.clone());
    let call = client.scan_file(tokio_stream::iter([header(9)]));
    let refused = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("the fifth call was left waiting")
        .expect_err("a header-only call cannot be scanned");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("busy"), "{refused:?}");
    // The held calls, once finished, are scanned.
    for (i, (tx, call)) in held.into_iter().enumerate() {
        tx.send(pb::WorkerScanRequest { msg: Some(pb::worker_scan_request::Msg::Chunk(pseudo_random(i as u64, 1000).into())) })
            .await
            .unwrap();
        drop(tx);
        let v = call.await.unwrap().unwrap().into_inner();
        assert_eq!(v.sha256, sha256_hex(&pseudo_random(i as u64, 1000)));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_refuses_a_malformed_sha256_header_instead_of_trusting_it() {
    // The worker passes its coordinator's sha256 to the scan child, which
    // takes it only when well-formed; otherwise the content's own hash is
    // compared and the call refused.
    let cluster = Cluster::start(&repo_root().join("rules"), None, 1).unwrap();
    let status = cluster.status().unwrap();
    let address = status["workers"][0]["address"].as_str().unwrap().to_string();
    let ruleset_id = status["rules"]["ruleset_id"].as_str().unwrap().to_string();
    let channel = cluster.worker_channel(&address).await;
    let data = pseudo_random(42, 1000);
    for claimed in [sha256_hex(&data).to_uppercase(), "g".repeat(64), "not a hash".into(), String::new()] {
        let msgs = [
            pb::WorkerScanRequest {
                msg: Some(pb::worker_scan_request::Msg::Header(pb::WorkerScanHeader {
                    sha256: claimed.clone(),
                    size: 1000,
                    file_name: String::new(),
                    ruleset_id: ruleset_id.clone(),
                    ..Default::default()
                })),
            },
            pb::WorkerScanRequest { msg: Some(pb::worker_scan_request::Msg::Chunk(data.clone().into())) },
        ];
        let err = WorkerClient::new(channel.clone()).scan_file(tokio_stream::iter(msgs)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{claimed:?}: {err:?}");
        assert!(err.message().contains("sha256 mismatch"), "{claimed:?}: {err:?}");
    }
}
