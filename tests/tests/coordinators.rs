//! Several coordinators behind one service: they share a Redis store, every
//! worker registers with each of them, a verdict found through one is a
//! cache hit through the others, and one content sent to two coordinators
//! at once is scanned once (the store's scan lock).

use qala_proto::v1 as pb;
use qala_tests::{Cluster, Redis, eicar, pseudo_random, repo_root, scan_messages, sha256_hex};
use std::collections::HashMap;

async fn scan(mut client: qala_tests::Scanner, data: std::sync::Arc<Vec<u8>>) -> pb::ScanResponse {
    client.scan(tokio_stream::iter(scan_messages(&data, "twice.bin"))).await.unwrap().into_inner()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_coordinators_share_workers_verdicts_and_scan_locks() {
    let d = tempfile::tempdir().unwrap();
    let redis = Redis::start(d.path()).unwrap();
    let mut cluster = Cluster::start(&repo_root().join("rules"), Some(&redis.url()), 0).unwrap();
    let second = cluster.add_coordinator().unwrap();
    cluster.add_worker("w1").unwrap();
    cluster.add_worker("w2").unwrap();
    // Membership: each coordinator knows both workers and shipped them its rules.
    let first = cluster.url();
    let a = cluster.wait_ready_at(&first, 2).unwrap();
    let b = cluster.wait_ready_at(&second, 2).unwrap();
    assert_eq!(a["rules"]["ruleset_id"], b["rules"]["ruleset_id"], "same rules, same ruleset id");

    // The same content sent to both at once is scanned once: one answer is
    // the scan, the other waited for it (or found it stored).
    let files: Vec<_> = (0..12).map(|i| std::sync::Arc::new(pseudo_random(i, 3 << 20))).collect();
    let mut pairs = Vec::new();
    for data in &files {
        let (a, b) = (cluster.scanner_with(&first, Some("agent")).await, cluster.scanner_with(&second, Some("agent")).await);
        pairs.push((tokio::spawn(scan(a, data.clone())), tokio::spawn(scan(b, data.clone()))));
    }
    for (data, (x, y)) in files.iter().zip(pairs) {
        let (x, y) = (x.await.unwrap(), y.await.unwrap());
        let sha = sha256_hex(data);
        assert_eq!(x.verdict.as_ref().unwrap().sha256, sha);
        assert_eq!(x.verdict, y.verdict, "both coordinators answer the same verdict");
        assert!(x.cached != y.cached, "exactly one of the two scanned {sha}: {} / {}", x.cached, y.cached);
    }
    let logs: String = cluster.workers.iter().map(|w| w.log_text()).collect();
    let mut scans: HashMap<String, usize> = HashMap::new();
    for line in logs.lines().filter(|l| l.contains("scanned")) {
        for data in &files {
            let sha = sha256_hex(data);
            if line.contains(&sha) {
                *scans.entry(sha).or_default() += 1;
            }
        }
    }
    assert_eq!(scans.len(), files.len(), "every file was scanned: {scans:?}");
    assert!(scans.values().all(|&n| n == 1), "a file scanned twice across coordinators: {scans:?}");

    // A verdict found through one coordinator is a cache hit through the other.
    let tree = tempfile::tempdir().unwrap();
    std::fs::write(tree.path().join("eicar.com"), eicar()).unwrap();
    for i in 0..5 {
        std::fs::write(tree.path().join(format!("f{i}.txt")), format!("shared verdict {i}\n").repeat(100)).unwrap();
    }
    let (code, via_first) = cluster.scan_at(&first, &[tree.path()]).unwrap();
    assert_eq!(code, 1, "{via_first:?}");
    assert!(via_first.iter().all(|l| l["cached"] == false), "{via_first:?}");
    let (code, via_second) = cluster.scan_at(&second, &[tree.path()]).unwrap();
    assert_eq!(code, 1);
    assert_eq!(via_second.len(), 6);
    for (x, y) in via_first.iter().zip(&via_second) {
        assert_eq!(y["cached"], true, "{y}");
        assert_eq!(x["verdict"], y["verdict"]);
        assert_eq!(x["sha256"], y["sha256"]);
    }

    // One coordinator lost: the other still has the workers and scans.
    cluster.coordinator.as_mut().unwrap().kill_hard().unwrap();
    std::fs::write(tree.path().join("new.txt"), "after the first coordinator died").unwrap();
    let (_, after) = cluster.scan_at(&second, &[tree.path()]).unwrap();
    let new = after.iter().find(|l| l["path"].as_str().unwrap().ends_with("new.txt")).unwrap();
    assert_eq!(new["verdict"], "clean", "{new}");
    assert_eq!(new["cached"], false);
}
