//! Faults while agents scan: real processes on loopback, each test bounded
//! in time and cleaning up its processes (they are killed on drop).

use qala_tests::{Cluster, Redis, eicar, free_port, repo_root, wait_for};
use serde_json::Value;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `count` files under `dir`: every 100th is EICAR (one content, many
/// paths), the others unique pseudo-random bytes of 16 to 272 KiB. Returns
/// path -> expected verdict.
fn generate(dir: &Path, count: usize) -> HashMap<String, &'static str> {
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

/// `qala-agent scan --json DIR` running in the background, its lines read
/// as it prints them (one per verdict, as verdicts come).
struct Agent {
    child: Child,
    printed: Arc<Mutex<Vec<String>>>,
    reader: std::thread::JoinHandle<()>,
}

impl Agent {
    fn scan(cluster: &Cluster, dir: &Path) -> Agent {
        let mut child = cluster
            .agent_command(&cluster.url(), "agent")
            .args(["scan", "--json"])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let printed = Arc::new(Mutex::new(Vec::new()));
        let sink = printed.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                sink.lock().unwrap().push(line.unwrap());
            }
        });
        Agent { child, printed, reader }
    }

    fn lines_so_far(&self) -> usize {
        self.printed.lock().unwrap().len()
    }

    fn wait_for_lines(&self, n: usize) {
        wait_for("scanning under way", Duration::from_secs(60), || (self.lines_so_far() >= n).then_some(())).unwrap();
    }

    /// Wait for the agent to exit: its status and its lines as JSON.
    fn finish(mut self) -> (std::process::ExitStatus, Vec<Value>) {
        let status = self.child.wait().unwrap();
        self.reader.join().unwrap();
        let lines =
            self.printed.lock().unwrap().iter().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
        (status, lines)
    }
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

    let agent = Agent::scan(&cluster, dir.path());
    // Kill w2 once scanning is under way, with uploads in flight on it.
    agent.wait_for_lines(150);
    cluster.workers[1].kill_hard().unwrap();
    let at_kill = agent.lines_so_far();
    std::thread::sleep(Duration::from_secs(1));
    cluster.add_worker("w2").unwrap();

    let (status, lines) = agent.finish();
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

/// SIGTERM on a worker in the middle of scans: it drains (stops taking
/// files, finishes what it has) and exits cleanly; no file is lost.
#[test]
fn worker_drains_on_sigterm() {
    let mut cluster = Cluster::start(&repo_root().join("rules"), None, 2).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let expected = generate(dir.path(), 400);
    let agent = Agent::scan(&cluster, dir.path());
    agent.wait_for_lines(40);
    let w1 = cluster.workers.remove(0);
    let log = w1.log.clone();
    let started = Instant::now();
    let status = w1.terminate().unwrap();
    let drained_in = started.elapsed();
    let (agent_status, lines) = agent.finish();
    let log = std::fs::read_to_string(log).unwrap();
    assert!(status.success(), "worker exit {status:?}: {log}");
    assert!(log.contains("draining: finishing in-flight scans") && log.contains("worker stopped"), "{log}");
    assert!(!log.contains("drain timeout"), "drain should finish well within 30 s: {log}");
    check_verdicts(&lines, &expected);
    assert_eq!(agent_status.code(), Some(1), "{}", cluster.logs());
    eprintln!("w1 drained and exited in {drained_in:?}");
}

fn store_healthy(cluster: &Cluster) -> Option<bool> {
    cluster.status().ok()?["store_healthy"].as_bool()
}

/// Redis down at start, up, down during a scan, up again: the cluster keeps
/// scanning without the cache (degraded, said in status), every file gets
/// its verdict, and the cache fills again once Redis answers.
#[test]
fn redis_outages_degrade_and_recover() {
    let redis_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let redis = Redis::start_persistent_on(redis_dir.path(), port).unwrap();
    let mut cluster = Cluster::start(&repo_root().join("rules"), Some(&url), 2).unwrap();
    // Down when the coordinator starts: it starts anyway, degraded, and
    // still knows the client tokens it saw last (its auth cache).
    cluster.coordinator.take().unwrap().terminate().unwrap();
    drop(redis);
    cluster.start_coordinator().unwrap();
    wait_for("degraded", Duration::from_secs(10), || (store_healthy(&cluster) == Some(false)).then_some(())).unwrap();
    assert!(cluster.status().unwrap()["store_error"].as_str().unwrap().contains("127.0.0.1"));
    let dir = tempfile::tempdir().unwrap();
    let expected = generate(dir.path(), 150);
    let (code, lines) = cluster.scan(&[dir.path()]).unwrap();
    check_verdicts(&lines, &expected);
    assert_eq!(code, 1);

    // Up: the coordinator notices without traffic, and the cache fills.
    let redis = Redis::start_persistent_on(redis_dir.path(), port).unwrap();
    wait_for("healthy", Duration::from_secs(10), || (store_healthy(&cluster) == Some(true)).then_some(())).unwrap();
    let (_, lines) = cluster.scan(&[dir.path()]).unwrap();
    check_verdicts(&lines, &expected);
    // (Files of one content are uploaded once; the agent answers the others
    // from that upload, as cached: only the unique, clean files tell.)
    let unique = lines.iter().filter(|l| l["verdict"] == "clean");
    assert!(
        unique.clone().count() > 100 && unique.clone().all(|l| l["cached"] == false),
        "nothing was cached while Redis was down"
    );
    let (_, lines) = cluster.scan(&[dir.path()]).unwrap();
    assert!(lines.iter().all(|l| l["cached"] == true), "cache filled once Redis answered");

    // Down in the middle of a scan of new files, then up again.
    let dir2 = tempfile::tempdir().unwrap();
    let expected2 = generate(dir2.path(), 600);
    let agent = Agent::scan(&cluster, dir2.path());
    agent.wait_for_lines(60);
    drop(redis);
    let at_stop = agent.lines_so_far();
    std::thread::sleep(Duration::from_secs(1));
    let _redis = Redis::start_persistent_on(redis_dir.path(), port).unwrap();
    let (status, lines) = agent.finish();
    assert!(at_stop < 590, "Redis stopped too late to matter ({at_stop} verdicts already)");
    check_verdicts(&lines, &expected2);
    assert_eq!(status.code(), Some(1), "{}", cluster.logs());
    wait_for("healthy again", Duration::from_secs(10), || (store_healthy(&cluster) == Some(true)).then_some(())).unwrap();
    let log = cluster.coordinator.as_ref().unwrap().log_text();
    assert!(log.contains("scanning without the cache (degraded)") && log.contains("cache back in use"), "{log}");
}

/// The coordinator killed during a scan and started again on its address:
/// agents retry with backoff and resend what the new one does not have;
/// workers register again; every file gets its verdict.
#[test]
fn coordinator_restart_mid_scan_loses_no_file() {
    let mut cluster = Cluster::start(&repo_root().join("rules"), None, 2).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let expected = generate(dir.path(), 800);
    let agent = Agent::scan(&cluster, dir.path());
    agent.wait_for_lines(80);
    cluster.coordinator.as_mut().unwrap().kill_hard().unwrap();
    let at_kill = agent.lines_so_far();
    std::thread::sleep(Duration::from_millis(500));
    cluster.start_coordinator().unwrap();
    let (status, lines) = agent.finish();
    assert!(at_kill < 790, "the restart came too late to matter ({at_kill} verdicts already)");
    check_verdicts(&lines, &expected);
    assert_eq!(status.code(), Some(1), "{}", cluster.logs());
    cluster.wait_ready(2).unwrap();
}

/// The verdict store after a hard kill of the coordinator: a verdict with a
/// detection is synced before it is answered, a clean one within a second
/// (the embedded store skips the sync per clean verdict); both are served
/// from the store by the coordinator started after the kill.
#[test]
fn killed_coordinator_keeps_detections_and_verdicts_older_than_a_second() {
    let mut cluster = Cluster::start(&repo_root().join("rules"), None, 1).unwrap();
    let (early, late) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    std::fs::write(early.path().join("clean.txt"), "a clean file scanned well before the kill\n").unwrap();
    std::fs::write(late.path().join("eicar.com"), eicar()).unwrap();
    let (_, first) = cluster.scan(&[early.path()]).unwrap();
    assert_eq!((first[0]["verdict"].as_str(), first[0]["cached"].as_bool()), (Some("clean"), Some(false)), "{first:?}");
    std::thread::sleep(Duration::from_millis(1500));
    let (code, second) = cluster.scan(&[late.path()]).unwrap();
    assert_eq!(code, 1, "{second:?}");
    // Killed right after the detection was answered.
    cluster.coordinator.as_mut().unwrap().kill_hard().unwrap();
    cluster.start_coordinator().unwrap();
    cluster.wait_ready(1).unwrap();
    let (code, again) = cluster.scan(&[early.path(), late.path()]).unwrap();
    assert_eq!(code, 1, "{again:?}");
    assert_eq!(again.len(), 2, "{again:?}");
    for line in &again {
        assert_eq!(line["cached"], true, "served from the store kept across the kill: {line}");
    }
    assert_eq!(again.iter().filter(|l| l["verdict"] == "malicious").count(), 1, "{again:?}");
}

/// Rules changed in the middle of a scan: each verdict is labelled with the
/// ruleset that produced it (the marker rule exists only in the new one, so
/// the label and the detection must agree), and no file is dropped while
/// workers switch.
#[test]
fn rolling_rules_update_labels_every_verdict_truthfully() {
    let rules = tempfile::tempdir().unwrap();
    let file = rules.path().join("r.yar");
    std::fs::write(&file, "rule absent { strings: $x = \"no-file-has-this-9f2c\" condition: $x }").unwrap();
    let cluster = Cluster::start_with_poll(rules.path(), None, 2, 200).unwrap();
    let old = cluster.status().unwrap()["rules"]["ruleset_id"].as_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    for i in 0..600 {
        let body = format!("QALA-ROLLING-MARKER file {i} ").repeat(400 + i);
        std::fs::write(dir.path().join(format!("f{i:03}.txt")), body).unwrap();
    }
    let agent = Agent::scan(&cluster, dir.path());
    agent.wait_for_lines(60);
    std::fs::write(&file, "rule marker { strings: $m = \"QALA-ROLLING-MARKER\" condition: $m }").unwrap();
    let (_, lines) = agent.finish();
    assert_eq!(lines.len(), 600, "{}", cluster.logs());
    let new = cluster.status().unwrap()["rules"]["ruleset_id"].as_str().unwrap().to_string();
    assert_ne!(old, new, "the rules were reloaded");
    let (mut by_old, mut by_new) = (0, 0);
    for l in &lines {
        let id = l["ruleset_id"].as_str().unwrap();
        if id == old {
            by_old += 1;
            assert_eq!(l["verdict"], "clean", "{l}");
        } else {
            assert_eq!(id, new, "{l}");
            by_new += 1;
            assert_eq!(l["verdict"], "malicious", "{l}");
            assert_eq!(l["detections"][0]["rule"], "marker", "{l}");
        }
    }
    assert!(by_old >= 60 && by_new > 0, "both rulesets answered: {by_old} old, {by_new} new");
    eprintln!("600 files across a rules change: {by_old} by the old ruleset, {by_new} by the new");
}
