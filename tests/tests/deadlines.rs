//! Deadlines: a scan that runs too long ends as `unscannable` with a timeout
//! reason, is never cached, and the cluster goes on. (Its own test binary:
//! the time limits are set through the environment the processes inherit.)

use qala_tests::{Cluster, wait_for, zip_of};
use std::time::Duration;

/// Rules that take seconds on any file of some size.
fn slow_rules(dir: &std::path::Path) {
    std::fs::write(
        dir.join("slow.yar"),
        "import \"math\" rule slow { condition: for all i in (0..999) : ( for all j in (0..999) : ( math.entropy(i, filesize - j) >= 0.0 ) ) }",
    )
    .unwrap();
}

#[test]
fn scans_past_their_deadline_are_unscannable_timeouts_and_not_cached() {
    let rules = tempfile::tempdir().unwrap();
    slow_rules(rules.path());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("slow.bin"), vec![1u8; 200_000]).unwrap();

    // The cluster's policy (set on the coordinator, shipped to the worker):
    // rule time per object (1 s).
    // SAFETY: this binary has this one test; no thread reads the env meanwhile.
    unsafe { std::env::set_var("QALA_POLICY_OBJECT_TIMEOUT", "1") };
    let cluster = Cluster::start(rules.path(), None, 1).unwrap();
    for round in 0..2 {
        let (_, lines) = cluster.scan(&[dir.path()]).unwrap();
        assert_eq!(lines[0]["verdict"], "unscannable", "{}", lines[0]);
        assert_eq!(lines[0]["limits_hit"][0]["limit"], "object_timeout", "{}", lines[0]);
        assert_eq!(lines[0]["cached"], false, "round {round}: a timeout is never cached");
    }
    drop(cluster);

    // The coordinator's deadline on the worker call (1 s), rules given 2 s
    // per object.
    unsafe {
        std::env::set_var("QALA_POLICY_OBJECT_TIMEOUT", "2");
        std::env::set_var("QALA_COORDINATOR_SCAN_TIMEOUT", "1");
    }
    let cluster = Cluster::start(rules.path(), None, 1).unwrap();
    let (_, lines) = cluster.scan(&[dir.path()]).unwrap();
    assert_eq!(lines[0]["verdict"], "unscannable", "{}\n{}", lines[0], cluster.logs());
    assert_eq!(lines[0]["limits_hit"][0]["limit"], "scan_timeout", "{}", lines[0]);
    // The worker is still in the ring and serves the next file.
    std::fs::write(dir.path().join("slow.bin"), b"tiny").unwrap();
    let (_, lines) = cluster.scan(&[dir.path()]).unwrap();
    assert_eq!(lines[0]["verdict"], "clean", "{}", lines[0]);
    wait_for("worker live", Duration::from_secs(10), || cluster.wait_ready(1).ok()).unwrap();

    // A zip of 20 slow members: past the deadline the worker stops the scan
    // at its next object instead of spending 2 s on each of the 21.
    let members: Vec<(String, Vec<u8>)> =
        (0..20u8).map(|i| (format!("m{i:02}.bin"), (0..200_000u32).map(|j| (j as u8) ^ i).collect())).collect();
    let entries: Vec<(&str, &[u8])> = members.iter().map(|(n, d)| (n.as_str(), d.as_slice())).collect();
    std::fs::write(dir.path().join("slow.bin"), zip_of(&entries)).unwrap();
    let (_, lines) = cluster.scan(&[dir.path()]).unwrap();
    assert_eq!(lines[0]["limits_hit"][0]["limit"], "scan_timeout", "{}", lines[0]);
    let line = wait_for("the worker to cancel the scan", Duration::from_secs(20), || {
        cluster.workers[0].log_text().lines().find(|l| l.contains("scan cancelled")).map(str::to_string)
    })
    .unwrap();
    let objects: u32 = line.split("objects=").nth(1).and_then(|r| r.split(' ').next()).and_then(|n| n.parse().ok()).unwrap();
    assert!(objects < 21, "the cancelled scan went on through {objects} objects: {line}");
    eprintln!("worker: {line}");
}
