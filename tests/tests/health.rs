//! What a probe sees, on real processes: the coordinator's and the
//! worker's plain-HTTP `/healthz`, `/readyz` and `/metrics`
//! (`--metrics-listen`) and the `health` commands exec probes run. Not
//! ready says why (no worker yet; a worker whose join token is used up
//! or expired stays up, says so and does not exit); a worker restarted
//! comes back under its id; a verdict store that stops answering leaves
//! the coordinator live and ready, named as degraded.

use qala_tests::{Cluster, Options, Proc, Redis, bin, coordinator_command, free_port, repo_root, wait_for};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// `GET path` on `addr`: status and JSON body (Null when not JSON).
fn get(addr: &str, path: &str) -> Option<(u16, Value)> {
    let (code, body) = qala_common::health::probe(addr, path, Duration::from_secs(5)).ok()?;
    Some((code, serde_json::from_str(&body).unwrap_or(Value::String(body))))
}

fn reasons(v: &Value) -> String {
    v["reasons"].as_array().map(|r| r.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("; ")).unwrap_or_default()
}

/// Run `program ARGS`: exit code and both outputs.
fn run(program: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(bin(program)).args(args).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

fn admin(cluster: &Cluster, args: &[&str]) -> String {
    let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    all.extend([
        "--server".into(),
        cluster.url(),
        "--ca".into(),
        cluster.ca().display().to_string(),
        "--token-file".into(),
        cluster.token_file("admin").display().to_string(),
    ]);
    coordinator_command(&all.iter().map(String::as_str).collect::<Vec<_>>()).unwrap()
}

fn join_token(cluster: &Cluster, name: &str, limits: &[&str]) -> PathBuf {
    let mut args = vec!["token", "add", "--role", "worker-enroll", name];
    args.extend(limits);
    let out = admin(cluster, &args);
    let file = cluster.token_file(name);
    qala_tests::write_token(&file, out.lines().last().unwrap().trim()).unwrap();
    file
}

/// Flags of a worker enrolling as `id` with `token`, health on `health`.
fn worker_flags(cluster: &Cluster, token: &Path, id: &str, health: &str) -> Vec<String> {
    [
        "--enroll-token-file",
        &token.display().to_string(),
        "--ca",
        &cluster.ca().display().to_string(),
        "--id",
        id,
        "--enroll-dir",
        &cluster.dir.path().join(format!("enrolled-{id}")).display().to_string(),
        "--crl-cache",
        &cluster.dir.path().join(format!("crls-{id}.pem")).display().to_string(),
        "--metrics-listen",
        health,
    ]
    .map(String::from)
    .to_vec()
}

/// Start a worker outside the cluster's list (it is expected not to join).
fn lone_worker(cluster: &Cluster, name: &str, flags: &[String]) -> Proc {
    let mut args: Vec<String> =
        ["--coordinator", &cluster.cluster_url(), "--listen", "127.0.0.1:0", "--threads", "1"].map(String::from).to_vec();
    args.extend(flags.iter().cloned());
    Proc::spawn(name, &bin("qala-worker"), &args, cluster.dir.path()).unwrap()
}

fn wait_readyz(addr: &str, code: u16, what: &str) -> Value {
    wait_for(what, Duration::from_secs(60), || get(addr, "/readyz").filter(|(c, _)| *c == code).map(|(_, v)| v)).unwrap()
}

#[test]
fn probes_see_why_a_coordinator_or_worker_is_not_ready() {
    let chealth = format!("127.0.0.1:{}", free_port());
    let mut options = Options::default();
    options.coordinator_args.extend(["--metrics-listen".to_string(), chealth.clone()]);
    let mut cluster = Cluster::start_with(&repo_root().join("rules"), None, 0, options).unwrap();

    // No worker yet: live, not ready, and why.
    wait_for("the coordinator's /healthz", Duration::from_secs(30), || get(&chealth, "/healthz").filter(|(c, _)| *c == 200))
        .unwrap();
    let (code, body) = get(&chealth, "/readyz").unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(reasons(&body).contains("no live worker"), "{body}");
    assert!(!body["ruleset_id"].as_str().unwrap().is_empty(), "rules are in force: {body}");
    let (code, text) = run("qala-coordinator", &["health", "--address", &chealth]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("503") && text.contains("no live worker"), "{text}");
    let (code, text) = run("qala-coordinator", &["health", "--address", &chealth, "--live"]);
    assert_eq!(code, 0, "{text}");
    // Metrics without a token on this listener (and only here).
    let (code, metrics) = get(&chealth, "/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(metrics.as_str().unwrap().contains("qala_workers_alive"), "{metrics}");

    // A worker enrolls with a one-use join token: both ready.
    let token = join_token(&cluster, "once", &["--uses", "1"]);
    let w1 = format!("127.0.0.1:{}", free_port());
    let w1_flags = worker_flags(&cluster, &token, "w1", &w1);
    cluster.add_worker_with("w1", &w1_flags).unwrap();
    let body = wait_readyz(&w1, 200, "w1 ready");
    assert_eq!((body["worker_id"].as_str(), body["registered_with"].as_u64()), (Some("w1"), Some(1)), "{body}");
    assert_eq!(body["ruleset_id"], cluster.status().unwrap()["rules"]["ruleset_id"], "{body}");
    let body = wait_readyz(&chealth, 200, "the coordinator ready");
    assert_eq!(body["workers_holding_rules"], 1, "{body}");
    assert_eq!(run("qala-worker", &["health", "--address", &w1]).0, 0);
    assert_eq!(run("qala-coordinator", &["health", "--address", &chealth]).0, 0);
    let (_, metrics) = get(&w1, "/metrics").unwrap();
    assert!(metrics.as_str().unwrap().contains("qala_worker_slots"), "{metrics}");

    // The token is used up: a second worker stays up, not ready, and says so.
    let w2 = format!("127.0.0.1:{}", free_port());
    let mut refused = lone_worker(&cluster, "worker-w2", &worker_flags(&cluster, &token, "w2", &w2));
    let body = wait_for("w2 to say why", Duration::from_secs(60), || {
        get(&w2, "/readyz").filter(|(c, v)| *c == 503 && reasons(v).contains("enrollment failed")).map(|(_, v)| v)
    })
    .unwrap();
    assert!(reasons(&body).contains("used up"), "{body}");
    assert_eq!(get(&w2, "/healthz").unwrap().0, 200);
    let (code, text) = run("qala-worker", &["health", "--address", &w2]);
    assert!(code == 1 && text.contains("used up"), "{text}");
    assert!(refused.is_running(), "a refused worker with a probe to answer does not exit");
    let stopping = Instant::now();
    refused.terminate().unwrap();
    assert!(stopping.elapsed() < Duration::from_secs(10), "SIGTERM while waiting to enroll again");

    // An expired join token: the same.
    let token = join_token(&cluster, "brief", &["--expires", "1s"]);
    std::thread::sleep(Duration::from_millis(1500));
    let w3 = format!("127.0.0.1:{}", free_port());
    let _expired = lone_worker(&cluster, "worker-w3", &worker_flags(&cluster, &token, "w3", &w3));
    let body = wait_for("w3 to say why", Duration::from_secs(60), || {
        get(&w3, "/readyz").filter(|(c, v)| *c == 503 && reasons(v).contains("enrollment failed")).map(|(_, v)| v)
    })
    .unwrap();
    assert!(reasons(&body).contains("expired"), "{body}");

    // w1 restarted: back under its id (its certificate; the token is spent).
    cluster.workers.remove(0).terminate().unwrap();
    wait_for("the coordinator not ready without w1", Duration::from_secs(30), || {
        get(&chealth, "/readyz").filter(|(c, _)| *c == 503)
    })
    .unwrap();
    cluster.add_worker_with("w1", &w1_flags).unwrap();
    let body = wait_readyz(&w1, 200, "w1 ready again");
    assert_eq!(body["worker_id"], "w1", "{body}");
    cluster.wait_ready(1).unwrap();
    assert_eq!(cluster.status().unwrap()["workers"][0]["worker_id"], "w1");
}

#[test]
fn a_store_that_does_not_answer_leaves_the_coordinator_live_and_says_so() {
    let redis_dir = tempfile::tempdir().unwrap();
    let redis = Redis::start(redis_dir.path()).unwrap();
    let chealth = format!("127.0.0.1:{}", free_port());
    let mut options = Options::default();
    options.coordinator_args.extend(["--metrics-listen".to_string(), chealth.clone()]);
    let cluster = Cluster::start_with(&repo_root().join("rules"), Some(&redis.url()), 1, options).unwrap();
    cluster.wait_ready(1).unwrap();
    let body = wait_readyz(&chealth, 200, "ready on Redis");
    assert_eq!((body["store_healthy"].as_bool(), body["degraded"].as_array().map(Vec::len)), (Some(true), Some(0)), "{body}");

    drop(redis);
    let body = wait_for("the store named as degraded", Duration::from_secs(60), || {
        // A scan makes the store be asked; the answer must still come.
        let _ = cluster.scan(&[&repo_root().join("README.md")]);
        get(&chealth, "/readyz").filter(|(_, v)| v["store_healthy"] == false)
    })
    .unwrap();
    assert_eq!(body.0, 200, "scanning without the cache is still scanning: {}", body.1);
    assert!(body.1["degraded"][0].as_str().unwrap().contains("verdict store"), "{}", body.1);
    assert_eq!(get(&chealth, "/healthz").unwrap().0, 200);
}
