//! Graceful shutdown of the coordinator: on SIGTERM it stops accepting new
//! calls and finishes the scans in flight before it exits. (Its own test
//! binary: the policy's rule-time limit is set through the environment.)

use qala_proto::v1 as pb;
use qala_tests::{Cluster, scan_messages, wait_for};
use std::time::Duration;

async fn scan(mut client: qala_tests::Scanner, data: Vec<u8>) -> Result<pb::ScanResponse, tonic::Status> {
    Ok(client.scan(tokio_stream::iter(scan_messages(&data, "slow.bin"))).await?.into_inner())
}

#[tokio::test(flavor = "multi_thread")]
async fn coordinator_finishes_in_flight_scans_on_sigterm_then_exits() {
    // Each scan takes the worker's 2 s of rule time.
    // SAFETY: this binary has this one test; set before any process starts.
    unsafe { std::env::set_var("QALA_POLICY_OBJECT_TIMEOUT", "2") };
    let rules = tempfile::tempdir().unwrap();
    std::fs::write(
        rules.path().join("slow.yar"),
        "import \"math\" rule slow { condition: for all i in (0..999) : ( for all j in (0..999) : ( math.entropy(i, filesize - j) >= 0.0 ) ) }",
    )
    .unwrap();
    let mut cluster = Cluster::start(rules.path(), None, 1).unwrap();
    let mut scans = Vec::new();
    for i in 0..3u8 {
        let client = cluster.scanner().await;
        scans.push(tokio::spawn(scan(client, (0..200_000u32).map(|j| (j as u8) ^ i).collect())));
    }
    // The worker has them (its heartbeat reports calls in flight).
    wait_for("scans in flight on the worker", Duration::from_secs(10), || {
        (cluster.status().ok()?["workers"][0]["in_flight"].as_u64()? >= 1).then_some(())
    })
    .unwrap();

    let coordinator = cluster.coordinator.take().unwrap();
    let exited = tokio::task::spawn_blocking(move || coordinator.terminate());
    // New calls are refused once it is shutting down.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let late = match tokio::time::timeout(Duration::from_secs(5), cluster.scanner_try()).await {
        Ok(Ok(client)) => scan(client, b"sent after SIGTERM".to_vec()).await,
        Ok(Err(e)) => Err(tonic::Status::unavailable(e.to_string())),
        Err(_) => Err(tonic::Status::unavailable("no connection")),
    };
    assert!(late.is_err(), "a call after SIGTERM was accepted: {late:?}");

    for s in scans {
        let r = s.await.unwrap().unwrap_or_else(|e| panic!("an in-flight scan was dropped: {e}"));
        let v = r.verdict.unwrap();
        assert_eq!(v.verdict, pb::VerdictKind::Unscannable as i32, "{v:?}");
        assert_eq!(v.limits_hit[0].limit, "object_timeout", "{v:?}");
    }
    let status = exited.await.unwrap().unwrap();
    assert!(status.success(), "coordinator exit: {status:?}");
}
