//! A call to a worker that sends a header and then nothing gives its
//! admission slot back after the stall timeout instead of holding it for
//! ever. (Its own test binary: the timeout is set through the environment.)

use qala_proto::v1::{self as pb, worker_client::WorkerClient};
use qala_tests::{Cluster, pseudo_random, repo_root, sha256_hex};
use std::time::{Duration, Instant};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_call_frees_its_worker_slot() {
    // SAFETY: this binary has this one test; set before any process starts.
    unsafe { std::env::set_var("QALA_WORKER_UPLOAD_STALL_SECS", "2") };
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
    // Fill all four slots (two threads) with headers and no bodies.
    let start = Instant::now();
    let mut held = Vec::new();
    for i in 0..4 {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(header(i)).await.unwrap();
        let mut client = WorkerClient::new(channel.clone());
        held.push((tx, tokio::spawn(async move { client.scan_file(ReceiverStream::new(rx)).await })));
    }
    for (_tx, call) in held {
        let e = tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .expect("a stalled call held its slot")
            .unwrap()
            .unwrap_err();
        assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    }
    assert!(start.elapsed() >= Duration::from_secs(2));
    // The slots are back: the cluster scans.
    let tree = tempfile::tempdir().unwrap();
    std::fs::write(tree.path().join("a.txt"), "after the stall").unwrap();
    let (code, lines) = cluster.scan(&[tree.path()]).unwrap();
    assert_eq!((code, lines[0]["verdict"].as_str()), (0, Some("clean")), "{lines:?}");
}
