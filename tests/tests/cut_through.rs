//! Cut-through: a fast large upload is streamed to its worker while it
//! arrives, one chunk behind; the last chunk goes only once the upload is
//! verified. A lying upload is never scanned, a paused one gives its worker
//! slot back, and a worker that dies mid-stream costs a replay, not a file.

use qala_proto::v1 as pb;
use qala_tests::{Cluster, eicar, pseudo_random, repo_root, scan_messages, sha256_hex, wait_for, zip_of};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// A 32 MiB zip: EICAR and 32 MiB of noise, stored.
fn large(seed: u64) -> Vec<u8> {
    zip_of(&[("eicar.com", &eicar()), ("noise.bin", &pseudo_random(seed, 32 << 20))])
}

/// Send `msgs` (header first) over a channel: the first `fast` messages at
/// once, then `pause` before each of the rest. Returns the scan's answer.
async fn upload(
    cluster: &Cluster,
    msgs: Vec<pb::ScanRequest>,
    fast: usize,
    pause: Duration,
    at_pause: impl FnOnce() + Send + 'static,
) -> Result<pb::ScanResponse, tonic::Status> {
    let mut client = cluster.scanner().await;
    let (tx, rx) = mpsc::channel(2);
    let sender = tokio::spawn(async move {
        let mut at_pause = Some(at_pause);
        for (i, m) in msgs.into_iter().enumerate() {
            if i >= fast {
                if let Some(f) = at_pause.take() {
                    tokio::task::spawn_blocking(f).await.unwrap();
                }
                tokio::time::sleep(pause).await;
            }
            if tx.send(m).await.is_err() {
                return;
            }
        }
    });
    let answer = client.scan(ReceiverStream::new(rx)).await.map(|r| r.into_inner());
    sender.abort();
    answer
}

fn scanned(cluster: &Cluster) -> Option<u64> {
    cluster.status().ok()?["workers"][0]["scanned"].as_u64()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fast_large_upload_is_cut_through_and_a_lying_one_never_scanned() {
    let cluster = Cluster::start(&repo_root().join("rules"), None, 1).unwrap();
    let data = large(1);
    let msgs = scan_messages(&data, "");
    let n = msgs.len();
    let v = upload(&cluster, msgs, n, Duration::ZERO, || {}).await.unwrap();
    let verdict = v.verdict.unwrap();
    assert_eq!(verdict.verdict, pb::VerdictKind::Malicious as i32, "{verdict:?}");
    assert_eq!(verdict.sha256, sha256_hex(&data));
    assert!(!v.cached);
    let log = cluster.coordinator.as_ref().unwrap().log_text();
    assert_eq!(log.matches("cut-through: upload streamed to its worker").count(), 1, "{log}");
    // Stored as any verdict: the same content again is answered from the store.
    let again = upload(&cluster, scan_messages(&data, ""), n, Duration::ZERO, || {}).await.unwrap();
    assert!(again.cached);

    // A large upload whose content does not match its header's sha256 (a
    // hash nothing is stored under): cut through, then refused.
    let other = large(2);
    let mut lying = scan_messages(&other, "");
    let claimed = sha256_hex(&large(3));
    if let Some(pb::scan_request::Msg::Header(h)) = lying[0].msg.as_mut() {
        h.sha256 = claimed.clone();
    }
    let before = wait_for("the scan count", Duration::from_secs(10), || scanned(&cluster).filter(|&s| s >= 1)).unwrap();
    let err = upload(&cluster, lying, n, Duration::ZERO, || {}).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("sha256 mismatch"), "{}", err.message());
    let log = cluster.coordinator.as_ref().unwrap().log_text();
    assert_eq!(log.matches("cut-through: upload streamed to its worker").count(), 2, "the lying upload was cut through: {log}");
    std::thread::sleep(Duration::from_millis(2500)); // a heartbeat
    assert_eq!(scanned(&cluster), Some(before), "the worker scanned an upload that failed verification");
    let mut client = cluster.scanner().await;
    let found =
        client.lookup(pb::LookupRequest { sha256: vec![claimed], brief: true, ..Default::default() }).await.unwrap().into_inner();
    assert!(found.verdicts.is_empty(), "nothing stored under the claimed hash");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_upload_gives_its_worker_slot_back_and_is_still_answered() {
    let cluster = Cluster::start(&repo_root().join("rules"), None, 1).unwrap();
    let data = large(4);
    let msgs = scan_messages(&data, "");
    let n = msgs.len();
    // All but the last 4 chunks at once (cut through), then 400 ms before
    // each of those: longer than the 250 ms a cut-through upload may pause.
    let cut = n - 4;
    let v = upload(&cluster, msgs, cut, Duration::from_millis(400), || {}).await.unwrap();
    assert_eq!(v.verdict.unwrap().verdict, pb::VerdictKind::Malicious as i32);
    let log = cluster.coordinator.as_ref().unwrap().log_text();
    assert!(log.contains("cut-through: upload streamed to its worker"), "{log}");
    assert!(log.contains("upload paused: cut-through cancelled"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_during_cut_through_costs_a_replay_not_the_file() {
    let mut cluster = Cluster::start(&repo_root().join("rules"), None, 2).unwrap();
    let data = large(5);
    let msgs = scan_messages(&data, "");
    let n = msgs.len();
    // Which worker gets it: the one the coordinator names once it cuts through.
    let coordinator_log = cluster.coordinator.as_ref().unwrap().log.clone();
    let pids: Vec<(String, u32)> = cluster.workers.iter().enumerate().map(|(i, w)| (format!("w{}", i + 1), w.pid())).collect();
    let v = upload(&cluster, msgs, n / 2, Duration::from_millis(5), move || {
        let line = wait_for("the cut-through", Duration::from_secs(10), || {
            std::fs::read_to_string(&coordinator_log)
                .ok()?
                .lines()
                .find(|l| l.contains("cut-through: upload streamed"))
                .map(String::from)
        })
        .unwrap();
        let (_, pid) = pids
            .iter()
            .find(|(id, _)| line.contains(&format!("worker={id} ")) || line.contains(&format!("worker=\"{id}\"")))
            .expect("worker named");
        let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    })
    .await
    .unwrap();
    let verdict = v.verdict.unwrap();
    assert_eq!(verdict.verdict, pb::VerdictKind::Malicious as i32, "{verdict:?}");
    assert_eq!(verdict.sha256, sha256_hex(&data));
    let alive: Vec<bool> = cluster.workers.iter_mut().map(|w| w.is_running()).collect();
    assert_eq!(alive.iter().filter(|a| !**a).count(), 1, "one worker was killed");
    let log = cluster.coordinator.as_ref().unwrap().log_text();
    assert!(log.contains("worker call ended during cut-through") || log.contains("worker failed during cut-through"), "{log}");
}
