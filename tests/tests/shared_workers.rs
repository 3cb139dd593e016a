//! Workers register once, with any coordinator: with a shared (Redis)
//! store every coordinator dispatches to every live worker, so a worker
//! needs one address for all of them (a Kubernetes Service, a compose
//! service name). On real processes: two coordinators, workers each
//! registered with one of them only; each coordinator sees both workers,
//! scans through each reach both, a stopped worker leaves both rings, and
//! a revoked one is not taken back from the store.

use qala_tests::{Cluster, Proc, Redis, bin, coordinator_command, eicar, repo_root, wait_for};
use serde_json::Value;
use std::time::Duration;

fn worker_ids(cluster: &Cluster, url: &str) -> Vec<String> {
    let s = cluster.status_at(url).unwrap();
    let mut ids: Vec<String> =
        s["workers"].as_array().unwrap().iter().map(|w| w["worker_id"].as_str().unwrap().to_string()).collect();
    ids.sort();
    ids
}

/// Worker `id` registered with the coordinator whose cluster listener is `at` only.
fn worker_with_one(cluster: &Cluster, id: &str, at: &str) -> Proc {
    let tls = cluster.worker_tls(id).unwrap();
    let args: Vec<String> =
        ["--coordinator", at, "--listen", "127.0.0.1:0", "--threads", "1", "--tls", &tls.display().to_string()]
            .map(String::from)
            .to_vec();
    Proc::spawn(&format!("worker-{id}"), &bin("qala-worker"), &args, cluster.dir.path()).unwrap()
}

#[test]
fn every_coordinator_dispatches_to_every_worker_registered_with_any() {
    let redis_dir = tempfile::tempdir().unwrap();
    let redis = Redis::start(redis_dir.path()).unwrap();
    let mut cluster = Cluster::start(&repo_root().join("rules"), Some(&redis.url()), 0).unwrap();
    let second = cluster.add_coordinator().unwrap();
    let (a, b) = (cluster.url(), second.clone());
    let cluster_urls = cluster.cluster_urls();
    let mut w1 = worker_with_one(&cluster, "w1", &cluster_urls[0]);
    let mut w2 = worker_with_one(&cluster, "w2", &cluster_urls[1]);
    for url in [&a, &b] {
        cluster.wait_ready_at(url, 2).unwrap();
        assert_eq!(worker_ids(&cluster, url), ["w1", "w2"], "{url}");
    }

    // New files through each coordinator land on both workers (placement
    // is by content): each coordinator dials the worker it did not register.
    let tree = tempfile::tempdir().unwrap();
    for i in 0..24 {
        std::fs::write(tree.path().join(format!("f{i:02}.txt")), format!("file {i} for sharing")).unwrap();
    }
    std::fs::write(tree.path().join("eicar.com"), eicar()).unwrap();
    for url in [&a, &b] {
        // Files not stored yet on this round: rename the contents per round.
        for i in 0..24 {
            std::fs::write(tree.path().join(format!("f{i:02}.txt")), format!("file {i} for sharing via {url}")).unwrap();
        }
        let (_, lines) = cluster.scan_at(url, &[tree.path()]).unwrap();
        let fresh: Vec<&Value> = lines.iter().filter(|l| l["cached"] == false).collect();
        assert_eq!(fresh.len(), 24 + usize::from(url == &a), "{lines:?}");
        let mut by: Vec<&str> = fresh.iter().filter_map(|l| l["worker_id"].as_str()).collect();
        by.sort();
        by.dedup();
        assert_eq!(by, ["w1", "w2"], "through {url}: {lines:?}");
    }

    // A stopped worker leaves both rings; a revoked one is not taken back
    // from the store by the coordinator it never registered with.
    w2.kill_hard().unwrap();
    for url in [&a, &b] {
        wait_for(&format!("w2 out at {url}"), Duration::from_secs(30), || (worker_ids(&cluster, url) == ["w1"]).then_some(()))
            .unwrap();
    }
    coordinator_command(&["pki", "revoke", "w1", "--store", &redis.url()]).unwrap();
    for url in [&a, &b] {
        wait_for(&format!("w1 out at {url}"), Duration::from_secs(30), || worker_ids(&cluster, url).is_empty().then_some(()))
            .unwrap();
    }
    // Three heartbeat intervals later, still out of both (w1 still runs).
    std::thread::sleep(Duration::from_secs(7));
    assert!(w1.is_running());
    for url in [&a, &b] {
        assert!(worker_ids(&cluster, url).is_empty(), "a revoked worker came back at {url}");
    }
    drop(w1.terminate());
}
