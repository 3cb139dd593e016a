//! `qala-agent service` as a workstation runs it, on real processes:
//! enrollment with a fleet join token, the inventory, real-time watch
//! (inotify; fanotify as root) with actions on detections and their audit,
//! quarantine and restore, the offline spool across a restart, and
//! on-access blocking on a private tmpfs.

use qala_tests::{Cluster, Proc, bin, coordinator_command, eicar, repo_root, wait_for};
use serde_json::Value;
use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The JSON event lines the service wrote so far (its log mixes them
/// with tracing lines on stderr).
fn events(proc_log: &Path) -> Vec<Value> {
    std::fs::read_to_string(proc_log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn of_kind<'a>(ev: &'a [Value], kind: &str) -> Vec<&'a Value> {
    ev.iter().filter(|e| e["event"] == kind).collect()
}

/// Verdict events per path.
fn verdicts(ev: &[Value]) -> HashMap<String, Vec<Value>> {
    let mut m: HashMap<String, Vec<Value>> = HashMap::new();
    for e in of_kind(ev, "verdict") {
        m.entry(e["path"].as_str().unwrap().to_string()).or_default().push(e.clone());
    }
    m
}

fn service(cluster: &Cluster, name: &str, config: &Path, extra: &[&str]) -> Proc {
    let mut args = vec!["--config".to_string(), config.display().to_string(), "service".to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    let p = Proc::spawn(name, &bin("qala-agent"), &args, cluster.dir.path()).unwrap();
    wait_for("the service to start", Duration::from_secs(30), || (!of_kind(&events(&p.log), "started").is_empty()).then_some(()))
        .unwrap_or_else(|e| panic!("{e}: {}", p.log_text()));
    p
}

fn write_config(path: &Path, body: &str) {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    std::fs::write(path, format!("{old}\n{body}")).unwrap();
}

fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn enrolled_agent_watches_quarantines_restores_and_is_audited() {
    let cluster = Cluster::start(&repo_root().join("rules"), None, 1).unwrap();
    let d = cluster.dir.path();
    let watched = d.join("home");
    let outside = d.join("outside");
    for dir in [&watched, &outside, &watched.join("build")] {
        std::fs::create_dir_all(dir).unwrap();
    }
    // Enrollment: a fleet join token for the agent's own token.
    cluster.add_token("agent-enroll", "fleet").unwrap();
    let config = d.join("etc/agent.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    write_config(
        &config,
        &format!(
            "[watch]\npaths = [{:?}]\ndebounce_ms = 300\nbackend = \"inotify\"\n\n[scan]\nexclude = [\"**/build/**\"]\n\n[actions]\nmalicious = \"quarantine\"\n\n[paths]\nquarantine = {:?}\nspool = {:?}\nhash_cache = {:?}\ncrl_cache = {:?}\nheld = {:?}\n",
            watched,
            d.join("quarantine"),
            d.join("state/spool"),
            d.join("state/hashes"),
            d.join("state/crls.pem"),
            d.join("state/held")
        ),
    );
    let out = Command::new(bin("qala-agent"))
        .args(["--config", config.to_str().unwrap(), "enroll", "--server", &cluster.url(), "--ca"])
        .arg(cluster.ca())
        .arg("--join-token-file")
        .arg(cluster.token_file("fleet"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token_file = d.join("etc/agent.token");
    assert_eq!(std::fs::metadata(&token_file).unwrap().mode() & 0o777, 0o600);
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("debounce_ms = 300"), "enrollment kept the rest of the config:\n{text}");
    let agent_id = text.lines().find_map(|l| l.strip_prefix("agent_id = ")).unwrap().trim_matches('"').to_string();
    // A join token is only good for enrolling: it cannot scan.
    let denied = cluster.agent_as(&cluster.url(), "fleet", &["lookup", &"0".repeat(64)]).unwrap();
    assert_eq!(denied.status.code(), Some(2), "{}", String::from_utf8_lossy(&denied.stdout));

    let svc = service(&cluster, "agent-service", &config, &[]);

    // Created in pieces (settles once), EICAR, moved in, excluded, a FIFO.
    let clean = watched.join("report.txt");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&clean).unwrap();
        for i in 0..5 {
            writeln!(f, "line {i}").unwrap();
            f.flush().unwrap();
            std::thread::sleep(Duration::from_millis(40));
        }
    }
    let evil = watched.join("invoice.com");
    std::fs::write(&evil, eicar()).unwrap();
    std::fs::set_permissions(&evil, std::fs::Permissions::from_mode(0o640)).unwrap();
    let evil_meta = std::fs::metadata(&evil).unwrap();
    std::fs::write(outside.join("moved.txt"), b"moved in from elsewhere").unwrap();
    std::fs::rename(outside.join("moved.txt"), watched.join("moved.txt")).unwrap();
    std::fs::write(watched.join("build/out.o"), b"excluded").unwrap();
    let fifo = watched.join("pipe");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    std::fs::write(watched.join("after-fifo.txt"), b"still watched").unwrap();

    let expect = ["report.txt", "invoice.com", "moved.txt", "after-fifo.txt"];
    let ev = wait_for("a verdict for every watched file", Duration::from_secs(60), || {
        let ev = events(&svc.log);
        let v = verdicts(&ev);
        let done =
            expect.iter().all(|n| v.contains_key(&watched.join(n).display().to_string())) && !of_kind(&ev, "action").is_empty();
        done.then_some(ev)
    })
    .unwrap_or_else(|e| panic!("{e}: {}", svc.log_text()));
    // Settled once: no file answered twice, the excluded one never.
    std::thread::sleep(Duration::from_millis(1500));
    drop(ev);
    let ev = events(&svc.log);
    let v = verdicts(&ev);
    for n in expect {
        assert_eq!(v[&watched.join(n).display().to_string()].len(), 1, "{n} answered once: {ev:?}");
    }
    assert!(!v.keys().any(|p| p.contains("/build/")), "excluded path scanned");
    assert!(!v.keys().any(|p| p.ends_with("/pipe")), "FIFO opened");
    // Modified after its verdict: scanned once more, the new content.
    let first_sha = v[&clean.display().to_string()][0]["sha256"].as_str().unwrap().to_string();
    std::fs::write(&clean, b"rewritten").unwrap();
    let again = wait_for("the modified file answered again", Duration::from_secs(30), || {
        let v = verdicts(&events(&svc.log));
        let got = v.get(&clean.display().to_string()).cloned().unwrap_or_default();
        (got.len() >= 2).then_some(got)
    })
    .unwrap_or_else(|e| panic!("{e}: {}", svc.log_text()));
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(verdicts(&events(&svc.log))[&clean.display().to_string()].len(), 2, "modified once, answered once more");
    assert_ne!(again[1]["sha256"].as_str().unwrap(), first_sha);
    assert_eq!(again[1]["sha256"], qala_tests::sha256_hex(b"rewritten"));
    let evil_v = &v[&evil.display().to_string()][0];
    assert_eq!(evil_v["verdict"], "malicious");
    assert_eq!(v[&clean.display().to_string()][0]["verdict"], "clean");

    // Quarantined: gone from its place, defanged in a 0700 directory.
    let ev = events(&svc.log);
    let action = of_kind(&ev, "action").into_iter().find(|a| a["action"] == "quarantine").expect("a quarantine action").clone();
    assert_eq!(action["path"], evil.display().to_string());
    assert!(!evil.exists());
    let qdir = d.join("quarantine");
    assert_eq!(std::fs::metadata(&qdir).unwrap().mode() & 0o777, 0o700);
    let id = action["detail"].as_str().unwrap().to_string();
    let stored = std::fs::read(qdir.join(format!("{id}.bin"))).unwrap();
    assert!(!stored.windows(20).any(|w| w == &eicar()[..20]), "quarantined copy still carries EICAR");

    // The coordinator audited the action under the agent's id, and lists it.
    let audited = wait_for("the action in the audit log", Duration::from_secs(20), || {
        cluster.audit().into_iter().find(|a| a["event"] == "agent_action" && a["action"] == "quarantine")
    })
    .unwrap();
    assert_eq!(audited["client"], agent_id.as_str());
    assert_eq!(audited["path"], evil.display().to_string());
    cluster.add_token("analyst", "analyst").unwrap();
    let listed = coordinator_command(&[
        "agents",
        "list",
        "--json",
        "--server",
        &cluster.url(),
        "--ca",
        cluster.ca().to_str().unwrap(),
        "--token-file",
        cluster.token_file("analyst").to_str().unwrap(),
    ])
    .unwrap();
    let me: Value = listed
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|a| a["agent_id"] == agent_id.as_str())
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(me["actions"].as_u64().unwrap() >= 1, "{me}");
    assert!(me["version"].as_str().unwrap().starts_with(env!("CARGO_PKG_VERSION").split('.').next().unwrap()));
    assert!(!me["hostname"].as_str().unwrap().is_empty() && me["last_seen_ms"].as_i64().unwrap() > 0);
    // An agent token cannot read the inventory.
    let refused = coordinator_command(&[
        "agents",
        "list",
        "--server",
        &cluster.url(),
        "--ca",
        cluster.ca().to_str().unwrap(),
        "--token-file",
        token_file.to_str().unwrap(),
    ]);
    assert!(refused.is_err(), "agent token listed the inventory");

    // Stop the service (a restored file would be quarantined again), then
    // restore: byte-identical, with its mode and times.
    svc.terminate().unwrap();
    let quarantine = |args: &[&str]| {
        Command::new(bin("qala-agent")).args(["--config", config.to_str().unwrap(), "quarantine"]).args(args).output().unwrap()
    };
    let list = quarantine(&["list", "--json"]);
    let listed: Value = serde_json::from_slice(list.stdout.split(|&b| b == b'\n').next().unwrap()).unwrap();
    assert_eq!(listed["id"], id.as_str());
    assert_eq!(listed["original_path"], evil.display().to_string());
    // A record edited to restore elsewhere is refused.
    let record = qdir.join(format!("{id}.json"));
    let good = std::fs::read_to_string(&record).unwrap();
    std::fs::write(&record, good.replace("invoice.com", "startup.com")).unwrap();
    let tampered = quarantine(&["restore", &id]);
    assert!(!tampered.status.success());
    assert!(
        String::from_utf8_lossy(&tampered.stderr).contains("does not verify"),
        "{}",
        String::from_utf8_lossy(&tampered.stderr)
    );
    assert!(!watched.join("startup.com").exists());
    std::fs::write(&record, good).unwrap();
    let restored = quarantine(&["restore", &id]);
    assert!(restored.status.success(), "{}", String::from_utf8_lossy(&restored.stderr));
    assert_eq!(std::fs::read(&evil).unwrap(), eicar());
    let m = std::fs::metadata(&evil).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o640);
    assert_eq!((m.mtime(), m.mtime_nsec()), (evil_meta.mtime(), evil_meta.mtime_nsec()));
    assert_eq!((m.uid(), m.gid()), (evil_meta.uid(), evil_meta.gid()));
    assert!(quarantine(&["list"]).stdout.is_empty());
}

#[test]
fn offline_spool_survives_a_restart_and_answers_each_file_once() {
    let mut cluster = Cluster::prepare(&repo_root().join("rules"), None, Default::default()).unwrap();
    let d = cluster.dir.path().to_path_buf();
    let watched = d.join("docs");
    std::fs::create_dir_all(&watched).unwrap();
    let config = d.join("agent.toml");
    write_config(
        &config,
        &format!(
            "[server]\nurl = {:?}\nca = {:?}\ntoken_file = {:?}\n\n[watch]\npaths = [{:?}]\ndebounce_ms = 200\nbackend = \"inotify\"\n\n[paths]\nquarantine = {:?}\nspool = {:?}\nhash_cache = {:?}\ncrl_cache = {:?}\nheld = {:?}\n",
            cluster.url(),
            cluster.ca(),
            cluster.token_file("agent"),
            watched,
            d.join("quarantine"),
            d.join("spool"),
            d.join("hashes"),
            d.join("crls.pem"),
            d.join("held")
        ),
    );
    // The coordinator is down: files are spooled (paths and hashes only).
    let first = service(&cluster, "agent-1", &config, &[]);
    let mut names = Vec::new();
    for i in 0..12 {
        let name = format!("f{i}.txt");
        // Two files per content: each content uploaded once.
        std::fs::write(watched.join(&name), format!("document {}", i / 2)).unwrap();
        names.push(name);
    }
    std::fs::write(watched.join("eicar.com"), eicar()).unwrap();
    names.push("eicar.com".into());
    wait_for("every file spooled", Duration::from_secs(60), || {
        (of_kind(&events(&first.log), "spooled").len() >= names.len()).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {}", first.log_text()));
    assert!(verdicts(&events(&first.log)).is_empty());
    let spool = std::fs::read_to_string(d.join("spool")).unwrap();
    assert_eq!(spool.lines().count(), names.len());
    assert!(!spool.contains("document"), "the spool holds paths and hashes, never content");
    // A file changed while spooled is hashed again before it is sent.
    std::thread::sleep(Duration::from_millis(50));
    std::fs::write(watched.join("f0.txt"), b"changed while offline").unwrap();
    let log1 = first.log.clone();
    first.terminate().unwrap();

    // Restarted (still offline), then the coordinator comes up.
    // This time detections are deleted.
    let second = service(&cluster, "agent-2", &config, &["--malicious", "delete"]);
    assert!(of_kind(&events(&second.log), "started")[0]["spooled"].as_u64().unwrap() >= names.len() as u64);
    cluster.start_coordinator().unwrap();
    cluster.add_worker("w1").unwrap();
    cluster.wait_ready(1).unwrap();
    let all = wait_for("a verdict for every spooled file", Duration::from_secs(120), || {
        let ev: Vec<Value> = events(&log1).into_iter().chain(events(&second.log)).collect();
        let v = verdicts(&ev);
        names.iter().all(|n| v.contains_key(&watched.join(n).display().to_string())).then_some(ev)
    })
    .unwrap_or_else(|e| panic!("{e}: {}", second.log_text()));
    drop(all);
    std::thread::sleep(Duration::from_secs(2));
    let all: Vec<Value> = events(&log1).into_iter().chain(events(&second.log)).collect();
    let v = verdicts(&all);
    for n in &names {
        let got = &v[&watched.join(n).display().to_string()];
        assert_eq!(got.len(), 1, "{n} answered exactly once: {got:?}");
    }
    assert_eq!(v[&watched.join("eicar.com").display().to_string()][0]["verdict"], "malicious");
    assert!(!watched.join("eicar.com").exists(), "deleted");
    assert!(
        of_kind(&all, "action").iter().any(|a| a["action"] == "delete" && a["path"].as_str().unwrap().ends_with("eicar.com"))
    );
    wait_for("the deletion audited", Duration::from_secs(20), || {
        cluster.audit().into_iter().find(|a| a["event"] == "agent_action" && a["action"] == "delete")
    })
    .unwrap();
    let f0 = &v[&watched.join("f0.txt").display().to_string()][0];
    assert_eq!(f0["sha256"], qala_tests::sha256_hex(b"changed while offline"));
    // Nothing sent twice: one upload per distinct content.
    // (An attempt the coordinator answered with an error, while its worker
    // was still registering, is retried: not a second upload of the content.)
    let scans: Vec<Value> = cluster.audit().into_iter().filter(|a| a["event"] == "scan").collect();
    let answered = scans.iter().filter(|a| a["error"].is_null()).count();
    assert_eq!(answered, 8, "one upload per distinct content (6 documents, the changed one, EICAR): {scans:?}");
    assert_eq!(std::fs::read_to_string(d.join("spool")).unwrap().lines().count(), 0, "spool drained");
}

/// On-access blocking on a private tmpfs (fanotify needs root; as another
/// user, the service must refuse on_access with a clear error).
#[test]
fn on_access_denies_opening_a_malicious_file() {
    let cluster = Cluster::start(&repo_root().join("rules"), None, 1).unwrap();
    let d = cluster.dir.path();
    let config = d.join("agent.toml");
    let mnt = d.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    write_config(
        &config,
        &format!(
            "[server]\nurl = {:?}\nca = {:?}\ntoken_file = {:?}\n\n[watch]\npaths = [{:?}]\ndebounce_ms = 200\nbackend = \"fanotify\"\non_access = true\non_access_timeout_ms = 2000\n\n[paths]\nquarantine = {:?}\nspool = {:?}\nhash_cache = {:?}\ncrl_cache = {:?}\nheld = {:?}\n",
            cluster.url(),
            cluster.ca(),
            cluster.token_file("agent"),
            mnt,
            d.join("quarantine"),
            d.join("spool"),
            d.join("hashes"),
            d.join("crls.pem"),
            d.join("held")
        ),
    );
    if !is_root() {
        let out = Command::new(bin("qala-agent")).args(["--config", config.to_str().unwrap(), "service"]).output().unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("needs root"));
        return;
    }
    // A private tmpfs: the marks cover this mount only, so a stuck agent
    // can never hold up the rest of the machine.
    assert!(Command::new("mount").args(["-t", "tmpfs", "-o", "size=64m", "qala-test"]).arg(&mnt).status().unwrap().success());
    let _umount = Unmount(mnt.clone());
    assert!(Command::new("mount").arg("--make-private").arg(&mnt).status().unwrap().success());
    let svc = service(&cluster, "agent-fanotify", &config, &[]);

    let evil = mnt.join("dropper.com");
    std::fs::write(&evil, eicar()).unwrap();
    let clean = mnt.join("notes.txt");
    std::fs::write(&clean, b"nothing to see").unwrap();
    // fanotify watch: written-and-closed files are scanned.
    wait_for("verdicts through the fanotify watch", Duration::from_secs(60), || {
        let v = verdicts(&events(&svc.log));
        (v.contains_key(&evil.display().to_string()) && v.contains_key(&clean.display().to_string())).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {}", svc.log_text()));
    // Opening the malicious file is denied; the clean one opens.
    let cat = Command::new("cat").arg(&evil).output().unwrap();
    assert!(!cat.status.success(), "opening EICAR was allowed");
    assert!(String::from_utf8_lossy(&cat.stderr).contains("Operation not permitted"), "{}", String::from_utf8_lossy(&cat.stderr));
    assert_eq!(Command::new("cat").arg(&clean).output().unwrap().stdout, b"nothing to see");
    // No verdict yet: allowed at once (fail-open), then scanned.
    let fresh = mnt.join("fresh.bin");
    std::fs::write(&fresh, qala_tests::pseudo_random(7, 4096)).unwrap();
    assert!(Command::new("cat").arg(&fresh).output().unwrap().status.success());
    let denied = wait_for("the denial reported and audited", Duration::from_secs(20), || {
        cluster.audit().into_iter().find(|a| a["event"] == "agent_action" && a["action"] == "access_denied")
    })
    .unwrap();
    assert_eq!(denied["path"], evil.display().to_string());
    assert!(denied["detail"].as_str().unwrap().contains("cat"), "{denied}");
    // The agent gone, the kernel drops its marks: the file opens again.
    svc.terminate().unwrap();
    assert!(Command::new("cat").arg(&evil).output().unwrap().status.success());
}

/// `on_access = "fail-closed"`: an open the agent cannot judge in time (here
/// a file over the on-access size cap) is denied to others, while the
/// agent itself still reads and scans it; a judged clean file opens. The
/// cost of a decision is measured: opens of a clean, already-judged file
/// with on-access against the same opens before the service started.
#[test]
fn on_access_fail_closed_denies_what_it_cannot_judge_but_never_the_agent() {
    if !is_root() {
        return; // fanotify permission events need root (the refusal is tested above)
    }
    let cluster = Cluster::start(&repo_root().join("rules"), None, 1).unwrap();
    let d = cluster.dir.path();
    let config = d.join("agent.toml");
    let mnt = d.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    write_config(
        &config,
        &format!(
            "[server]\nurl = {:?}\nca = {:?}\ntoken_file = {:?}\n\n[watch]\npaths = [{:?}]\ndebounce_ms = 200\nbackend = \"fanotify\"\non_access = \"fail-closed\"\non_access_timeout_ms = 2000\non_access_max_size = \"4K\"\n\n[paths]\nquarantine = {:?}\nspool = {:?}\nhash_cache = {:?}\ncrl_cache = {:?}\nheld = {:?}\n",
            cluster.url(),
            cluster.ca(),
            cluster.token_file("agent"),
            mnt,
            d.join("quarantine"),
            d.join("spool"),
            d.join("hashes"),
            d.join("crls.pem"),
            d.join("held")
        ),
    );
    assert!(Command::new("mount").args(["-t", "tmpfs", "-o", "size=64m", "qala-test"]).arg(&mnt).status().unwrap().success());
    let _umount = Unmount(mnt.clone());
    assert!(Command::new("mount").arg("--make-private").arg(&mnt).status().unwrap().success());
    let clean = mnt.join("notes.txt");
    std::fs::write(&clean, b"nothing to see").unwrap();
    let opens = |n: usize| {
        let started = std::time::Instant::now();
        for _ in 0..n {
            std::fs::read(&clean).unwrap();
        }
        started.elapsed() / n as u32
    };
    let before = opens(200);
    let svc = service(&cluster, "agent-fail-closed", &config, &[]);
    let big = mnt.join("big.bin");
    std::fs::write(&big, qala_tests::pseudo_random(11, 64 << 10)).unwrap();
    std::fs::write(&clean, b"nothing to see").unwrap();
    // The agent reads and scans both (its own opens are never denied).
    wait_for("verdicts on both files", Duration::from_secs(60), || {
        let v = verdicts(&events(&svc.log));
        (v.contains_key(&big.display().to_string()) && v.contains_key(&clean.display().to_string())).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {}", svc.log_text()));
    // Others: the judged clean file opens; the one over the cap cannot be
    // judged in time and is denied.
    assert_eq!(Command::new("cat").arg(&clean).output().unwrap().stdout, b"nothing to see");
    let cat = Command::new("cat").arg(&big).output().unwrap();
    assert!(!cat.status.success(), "fail-closed allowed an open it could not judge");
    let denied = wait_for("the denial reported", Duration::from_secs(20), || {
        cluster.audit().into_iter().find(|a| a["event"] == "agent_action" && a["verdict"] == "unjudged")
    })
    .unwrap();
    assert_eq!(denied["path"], big.display().to_string());
    assert!(denied["detail"].as_str().unwrap().contains("over the on-access size cap"), "{denied}");
    let during = opens(200);
    eprintln!("open+read of a judged clean file: {before:?} without on-access, {during:?} with fail-closed on-access");
    svc.terminate().unwrap();
    assert!(Command::new("cat").arg(&big).output().unwrap().status.success());
}

struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The `Agents` service with hostile callers: no token, the wrong role, a
/// garbage token, an oversized report; what endpoints send is bounded and
/// stripped of control characters before it reaches the inventory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_api_refuses_bad_callers_and_bounds_what_it_keeps() {
    use qala_proto::v1::{self as pb, agents_client::AgentsClient};
    use tonic::Code;
    let cluster = Cluster::start(&repo_root().join("rules"), None, 0).unwrap();
    cluster.add_token("agent-enroll", "fleet").unwrap();
    let client = |token: Option<String>| {
        let cluster = &cluster;
        async move {
            let channel = cluster.channel(&cluster.url()).await;
            AgentsClient::with_interceptor(channel, qala_tls::BearerToken::new(token.as_deref()).unwrap())
        }
    };
    let info = || pb::AgentInfo { hostname: "h".into(), os: "os".into(), version: "1".into() };

    // No token, a garbage token, a token of the wrong role.
    let mut anonymous = client(None).await;
    let e = anonymous.enroll(pb::EnrollAgentRequest { info: Some(info()) }).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let mut garbage = client(Some("qala_".to_string() + &"0".repeat(64))).await;
    assert_eq!(
        garbage.checkin(pb::CheckinRequest { info: Some(info()), ..Default::default() }).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let mut agent = client(Some(cluster.token("agent"))).await;
    let e = agent.enroll(pb::EnrollAgentRequest { info: Some(info()) }).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "an agent token cannot mint tokens: {e:?}");
    let mut fleet = client(Some(cluster.token("fleet"))).await;
    let e = fleet.report_actions(pb::ReportActionsRequest { actions: vec![] }).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "a join token only enrolls: {e:?}");
    assert_eq!(fleet.list_agents(pb::ListAgentsRequest {}).await.unwrap_err().code(), Code::PermissionDenied);

    // A report over the bound is refused whole.
    let many = vec![pb::AgentAction { action: "quarantine".into(), ..Default::default() }; 1001];
    let e = agent.report_actions(pb::ReportActionsRequest { actions: many }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    // Hostile inventory fields: escape sequences and 100 KB names.
    let evil = format!("\u{1b}]0;owned\u{7}{}", "x".repeat(100_000));
    let hostile = pb::AgentInfo { hostname: evil.clone(), os: evil.clone(), version: evil.clone() };
    let enrolled = fleet.enroll(pb::EnrollAgentRequest { info: Some(hostile.clone()) }).await.unwrap().into_inner();
    assert!(enrolled.agent_id.len() <= 64 && enrolled.agent_id.bytes().all(|b| b.is_ascii_graphic()), "{}", enrolled.agent_id);
    let mut me = client(Some(enrolled.token.clone())).await;
    me.checkin(pb::CheckinRequest { info: Some(hostile), ..Default::default() }).await.unwrap();
    let path = format!("/home/u/\u{1b}[2J{}", "p".repeat(10_000));
    let action = pb::AgentAction { action: "quarantine".into(), path, ..Default::default() };
    assert_eq!(me.report_actions(pb::ReportActionsRequest { actions: vec![action] }).await.unwrap().into_inner().recorded, 1);
    let mut admin = client(Some(cluster.token("admin"))).await;
    let agents = admin.list_agents(pb::ListAgentsRequest {}).await.unwrap().into_inner().agents;
    let rec = agents.iter().find(|a| a.agent_id == enrolled.agent_id).unwrap();
    for field in [&rec.hostname, &rec.os, &rec.version] {
        assert!(field.len() <= 255 && !field.chars().any(|c| c.is_control()), "{field:?}");
    }
    assert_eq!(rec.actions, 1);
    let audited = wait_for("the action audited", Duration::from_secs(10), || {
        cluster.audit().into_iter().find(|a| a["event"] == "agent_action" && a["client"] == enrolled.agent_id.as_str())
    })
    .unwrap();
    let p = audited["path"].as_str().unwrap();
    assert!(p.chars().count() <= 4096 && !p.chars().any(|c| c.is_control()), "path kept bounded and plain");
}
