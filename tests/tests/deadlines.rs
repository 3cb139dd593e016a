//! Deadlines: a scan that runs too long ends as `unscannable` with a timeout
//! reason, is never cached, and the cluster goes on. (Its own test binary:
//! the time limits are set through the environment the processes inherit.)

use qala_tests::{Cluster, wait_for};
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

    // The worker's own limit: rule time per object (1 s).
    // SAFETY: this binary has this one test; no thread reads the env meanwhile.
    unsafe { std::env::set_var("QALA_WORKER_OBJECT_TIMEOUT", "1") };
    let cluster = Cluster::start(rules.path(), None, 1).unwrap();
    for round in 0..2 {
        let (_, lines) = cluster.scan(&[dir.path()]).unwrap();
        assert_eq!(lines[0]["verdict"], "unscannable", "{}", lines[0]);
        assert_eq!(lines[0]["limits_hit"][0]["limit"], "object_timeout", "{}", lines[0]);
        assert_eq!(lines[0]["cached"], false, "round {round}: a timeout is never cached");
    }
    drop(cluster);

    // The coordinator's deadline on the worker call (1 s), rules given 30 s.
    unsafe {
        std::env::remove_var("QALA_WORKER_OBJECT_TIMEOUT");
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
}
