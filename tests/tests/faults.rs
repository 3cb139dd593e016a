//! Faults while agents scan: real processes on loopback, each test bounded
//! in time and cleaning up its processes (they are killed on drop).

use qala_tests::{Cluster, bin, eicar, repo_root};
use serde_json::Value;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `count` files under `dir`: every 100th is EICAR (one content, many
/// paths), the others unique pseudo-random bytes of 16 to 272 KiB. Returns
/// path -> expected verdict.
fn generate(dir: &std::path::Path, count: usize) -> HashMap<String, &'static str> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut expected = HashMap::new();
    for i in 0..count {
        let sub = dir.join(format!("d{:02}", i % 20));
        std::fs::create_dir_all(&sub).unwrap();
        let path = sub.join(format!("f{i:04}.bin"));
        let (data, verdict) = if i % 100 == 7 {
            (eicar(), "malicious")
        } else {
            let len = 16 * 1024 + (next() % (256 * 1024)) as usize;
            let mut v = Vec::with_capacity(len + 8);
            while v.len() < len {
                v.extend_from_slice(&next().to_le_bytes());
            }
            (v, "clean")
        };
        std::fs::write(&path, data).unwrap();
        expected.insert(path.display().to_string(), verdict);
    }
    expected
}

fn parse_lines(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout).lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

/// Every expected path has exactly one line, with the expected verdict.
fn check_verdicts(lines: &[Value], expected: &HashMap<String, &str>) {
    let mut seen: HashMap<&str, &Value> = HashMap::new();
    for l in lines {
        let path = l["path"].as_str().unwrap();
        assert!(seen.insert(path, l).is_none(), "two lines for {path}");
    }
    assert_eq!(seen.len(), expected.len(), "one line per file");
    for (path, verdict) in expected {
        let l = seen.get(path.as_str()).unwrap_or_else(|| panic!("no verdict for {path}"));
        assert_eq!(l["verdict"], *verdict, "{l}");
    }
}

/// A worker SIGKILLed in the middle of 2,000 scans, then started again:
/// every file still gets exactly one verdict, and the right one.
#[test]
fn worker_killed_mid_scan_loses_no_file() {
    let started = Instant::now();
    let mut cluster = Cluster::start(&repo_root().join("rules"), None, 3).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let expected = generate(dir.path(), 2000);

    let mut agent = Command::new(bin("qala-agent"))
        .args(["--server", &cluster.url(), "scan", "--json"])
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The agent prints a line per verdict as it comes: read them as they do.
    let stdout = agent.stdout.take().unwrap();
    let printed = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let printed = printed.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                printed.lock().unwrap().push(line.unwrap());
            }
        })
    };
    // Kill w2 once scanning is under way, with uploads in flight on it.
    qala_tests::wait_for("scanning under way", Duration::from_secs(60), || (printed.lock().unwrap().len() >= 150).then_some(()))
        .unwrap();
    cluster.workers[1].kill_hard().unwrap();
    let at_kill = printed.lock().unwrap().len();
    std::thread::sleep(Duration::from_secs(1));
    cluster.add_worker("w2").unwrap();

    let status = agent.wait().unwrap();
    reader.join().unwrap();
    let lines = parse_lines(printed.lock().unwrap().join("\n").as_bytes());
    let logs = cluster.logs();
    assert!(at_kill < 1900, "the kill came too late to test anything ({at_kill} verdicts already)");
    check_verdicts(&lines, &expected);
    assert_eq!(status.code(), Some(1), "detections found; {logs}");
    let coordinator_log = cluster.coordinator.as_ref().unwrap().log_text();
    let replays = coordinator_log.matches("replaying the upload to the next worker").count();
    assert!(replays > 0, "no upload was replayed: {logs}");
    // The restarted worker rejoined the ring.
    cluster.wait_ready(3).unwrap();
    eprintln!("2,000 files, w2 killed after {at_kill} verdicts, {replays} uploads replayed, {:?} in all", started.elapsed());
}
