//! Backpressure: a coordinator with every upload slot taken turns agents
//! away with RESOURCE_EXHAUSTED and a retry hint; agents wait as told and
//! every file still gets its verdict. (Its own test binary: the limit is set
//! through the environment the coordinator inherits.)

use qala_tests::{Cluster, eicar, repo_root};

#[test]
fn busy_coordinator_slows_agents_down_and_loses_nothing() {
    // SAFETY: set before any thread of this test binary starts a process,
    // and this binary has no other test.
    unsafe { std::env::set_var("QALA_COORDINATOR_MAX_UPLOADS", "1") };
    let cluster = Cluster::start(&repo_root().join("rules"), None, 2).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for i in 0..120u32 {
        let data = if i % 40 == 3 { eicar() } else { format!("file {i} ").repeat(2000 + i as usize).into_bytes() };
        std::fs::write(dir.path().join(format!("f{i:03}")), data).unwrap();
    }
    let (code, lines) = cluster.scan(&[dir.path()]).unwrap();
    assert_eq!(lines.len(), 120, "{}", cluster.logs());
    for l in &lines {
        let eicar = [3, 43, 83].iter().any(|i| l["path"].as_str().unwrap().ends_with(&format!("f{i:03}")));
        assert_eq!(l["verdict"], if eicar { "malicious" } else { "clean" }, "{l}");
    }
    assert_eq!(code, 1);
    let rejected = cluster.status().unwrap()["busy_rejections"].as_u64().unwrap();
    assert!(rejected > 0, "the agent's parallel uploads never met the limit of 1");
    eprintln!("120 files through 1 upload slot: {rejected} uploads told to come back later");
}
