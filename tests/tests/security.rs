//! Trust: workers prove who they are with certificates of the cluster CA,
//! clients with tokens of the right role; plain text, other CAs, other
//! workers' ids and addresses, revoked tokens and revoked workers are
//! refused; one client's stalled uploads cannot take the others' capacity.

use qala_proto::v1::{self as pb, cluster_client::ClusterClient, worker_client::WorkerClient};
use qala_tests::{
    Cluster, Options, Redis, coordinator_command, eicar, free_port, repo_root, scan_messages, sha256_hex, wait_for,
};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tonic::Code;

fn register(id: &str, address: &str) -> pb::RegisterRequest {
    pb::RegisterRequest {
        worker_id: id.into(),
        address: address.into(),
        threads: 1,
        engine_version: qala_engine::ENGINE_VERSION.into(),
        max_in_flight: 2,
        max_file_size: 1 << 20,
        ..Default::default()
    }
}

fn identity(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("worker.pem"), dir.join("worker-key.pem"))
}

fn live_workers(cluster: &Cluster) -> Vec<String> {
    let s = cluster.status().unwrap();
    s["workers"].as_array().unwrap().iter().map(|w| w["worker_id"].as_str().unwrap().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn workers_must_prove_who_they_are() {
    let mut cluster = Cluster::start(&repo_root().join("rules"), None, 1).unwrap();

    // A certificate of another CA: the handshake fails, it never registers.
    let other = cluster.dir.path().join("other-pki");
    coordinator_command(&["pki", "init", other.to_str().unwrap()]).unwrap();
    coordinator_command(&["pki", "worker", other.to_str().unwrap(), "w9"]).unwrap();
    cluster.add_worker_with("w9", &["--tls".into(), other.join("workers/w9").display().to_string()]).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(live_workers(&cluster), ["w1"]);
    assert!(cluster.workers[1].log_text().contains("registration failed"), "{}", cluster.workers[1].log_text());

    // No certificate at all.
    let mut anonymous = ClusterClient::new(cluster.channel(&cluster.cluster_url()).await);
    let e = anonymous.register(register("w5", "https://127.0.0.1:1")).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");

    // w1's certificate, claiming w2's id, or a plain-text address (the
    // address is only where the coordinator dials, requiring w1's
    // certificate there: tests/identities.rs).
    let (cert, key) = identity(&cluster.worker_tls("w1").unwrap());
    let mut as_w1 = ClusterClient::new(cluster.channel_as(&cluster.cluster_url(), Some((&cert, &key))).await);
    let e = as_w1.register(register("w2", "https://127.0.0.1:1")).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = as_w1.register(register("w1", "http://127.0.0.1:4000")).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = as_w1.heartbeat(pb::HeartbeatRequest { worker_id: "w2".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert_eq!(live_workers(&cluster), ["w1"]);

    // Register is not served on the agents' listener at all.
    let mut wrong_door = ClusterClient::new(cluster.channel_as(&cluster.url(), Some((&cert, &key))).await);
    let e = wrong_door.register(register("w1", "https://127.0.0.1:1")).await.unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented, "{e:?}");

    // Plain text to TLS listeners fails.
    for url in [cluster.url(), cluster.cluster_url()] {
        let plain = url.replace("https://", "http://");
        let channel = tonic::transport::Endpoint::from_shared(plain).unwrap().connect_lazy();
        let mut c = pb::scanner_client::ScannerClient::new(channel);
        let r = tokio::time::timeout(Duration::from_secs(10), c.lookup(pb::LookupRequest::default())).await.unwrap();
        assert!(r.is_err(), "a plain-text call to {url} was answered: {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_certificate_cannot_push_rules_or_files_to_a_peer() {
    let cluster = Cluster::start(&repo_root().join("rules"), None, 2).unwrap();
    let status = cluster.status().unwrap();
    let w1 = status["workers"].as_array().unwrap().iter().find(|w| w["worker_id"] == "w1").unwrap()["address"]
        .as_str()
        .unwrap()
        .to_string();
    let (cert, key) = identity(&cluster.worker_tls("w2").unwrap());
    let mut as_w2 = WorkerClient::new(cluster.channel_as(&w1, Some((&cert, &key))).await);
    let junk = pb::RulesChunk { ruleset_id: "evil".into(), data: b"not rules".to_vec(), what_if: false };
    let e = as_w2.load_rules(tokio_stream::iter([junk])).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let header = pb::WorkerScanRequest {
        msg: Some(pb::worker_scan_request::Msg::Header(pb::WorkerScanHeader {
            sha256: sha256_hex(b"x"),
            size: 1,
            file_name: "x".into(),
            ruleset_id: status["rules"]["ruleset_id"].as_str().unwrap().into(),
            ..Default::default()
        })),
    };
    let e = as_w2.scan_file(tokio_stream::iter([header])).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    // Without a certificate the worker does not even finish the handshake.
    let channel = qala_tls::client_config(Some(&cluster.ca()), None).unwrap();
    let endpoint = tonic::transport::Endpoint::from_shared(w1.clone()).unwrap().tls_config(channel).unwrap();
    let r = async {
        let mut c = WorkerClient::new(endpoint.connect().await?);
        c.load_rules(tokio_stream::iter([pb::RulesChunk { ruleset_id: "x".into(), data: vec![], what_if: false }])).await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    }
    .await;
    assert!(r.is_err(), "a worker served a client without a certificate");
    // The coordinator's own certificate is still served.
    let mut coordinator = WorkerClient::new(cluster.worker_channel(&w1).await);
    let id = status["rules"]["ruleset_id"].as_str().unwrap().to_string();
    let r = coordinator
        .load_rules(tokio_stream::iter([pb::RulesChunk { ruleset_id: id.clone(), data: vec![], what_if: false }]))
        .await
        .unwrap();
    assert_eq!(r.into_inner().ruleset_id, id);
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_need_a_live_token_of_the_right_role() {
    let cluster = Cluster::start(&repo_root().join("rules"), None, 1).unwrap();
    cluster.add_token("analyst", "soc").unwrap();
    let data = eicar();
    let sha = sha256_hex(&data);

    let mut none = cluster.scanner_with(&cluster.url(), None).await;
    let e = none.scan(tokio_stream::iter(scan_messages(&data, "e.com"))).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let e = none.lookup(pb::LookupRequest { sha256: vec![sha.clone()], ..Default::default() }).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let mut analyst = cluster.scanner_with(&cluster.url(), Some("soc")).await;
    let e = analyst.scan(tokio_stream::iter(scan_messages(&data, "e.com"))).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("analyst"), "{e:?}");
    // Nothing was stored by the refused calls.
    let got = analyst.get_verdict(pb::GetVerdictRequest { sha256: sha.clone() }).await.unwrap().into_inner();
    assert!(got.verdict.is_none());
    let mut agent = cluster.scanner().await;
    let e = agent.get_verdict(pb::GetVerdictRequest { sha256: sha.clone() }).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // The agent: one line and exit 2, without a token or with the wrong role.
    let tree = tempfile::tempdir().unwrap();
    std::fs::write(tree.path().join("e.com"), &data).unwrap();
    let out = std::process::Command::new(qala_tests::bin("qala-agent"))
        .args(["--server", &cluster.url(), "--ca", cluster.ca().to_str().unwrap(), "scan"])
        .arg(tree.path())
        .env_remove("QALA_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not authorized") && err.lines().count() == 1, "{err}");
    assert!(out.stdout.is_empty(), "{out:?}");
    let out = cluster.agent_as(&cluster.url(), "soc", &["scan", tree.path().to_str().unwrap()]).unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("PermissionDenied"), "{out:?}");

    // A token revoked while the coordinator runs stops working within seconds.
    let (code, lines) = cluster.scan(&[tree.path()]).unwrap();
    assert_eq!((code, lines[0]["verdict"].as_str()), (1, Some("malicious")));
    let (ca, admin) = (cluster.ca().display().to_string(), cluster.token_file("admin").display().to_string());
    let revoked_at = Instant::now();
    coordinator_command(&["token", "revoke", "agent", "--server", &cluster.url(), "--ca", &ca, "--token-file", &admin]).unwrap();
    let took = wait_for("the revoked token to be refused", Duration::from_secs(10), || {
        let out = cluster.agent(&["scan", tree.path().to_str().unwrap()]).ok()?;
        (out.status.code() == Some(2)).then(|| revoked_at.elapsed())
    })
    .unwrap();
    eprintln!("revoked token refused after {took:?}");
    let listed =
        coordinator_command(&["token", "list", "--server", &cluster.url(), "--ca", &ca, "--token-file", &admin]).unwrap();
    assert!(listed.contains("soc\tanalyst") && !listed.contains("agent\t"), "{listed}");

    // The audit log: scans, lookups, the detection served, admin actions and refusals.
    let audit = cluster.audit();
    let has = |f: &dyn Fn(&serde_json::Value) -> bool| audit.iter().any(f);
    assert!(has(&|l| l["event"] == "scan"
        && l["client"] == "agent"
        && l["sha256"] == sha.as_str()
        && l["verdict"] == "malicious"));
    assert!(has(&|l| l["event"] == "verdict_served" && l["sha256"] == sha.as_str()));
    assert!(has(&|l| l["event"] == "lookup" && l["client"] == "agent"));
    assert!(has(&|l| l["event"] == "admin" && l["action"] == "token_revoked" && l["token_name"] == "agent"));
    assert!(has(&|l| l["event"] == "admin" && l["action"] == "token_added" && l["token_name"] == "soc"));
    assert!(has(&|l| l["event"] == "denied" && l["code"] == "PermissionDenied"));
    let text = std::fs::read_to_string(cluster.audit_log("coordinator")).unwrap();
    assert!(!text.contains(&cluster.token("admin")) && !text.contains(&cluster.token("soc")), "a token in the audit log");
}

#[test]
fn authentication_works_while_redis_is_down() {
    let d = tempfile::tempdir().unwrap();
    let redis = Redis::start(d.path()).unwrap();
    let cluster = Cluster::start(&repo_root().join("rules"), Some(&redis.url()), 1).unwrap();
    // A token revoked in the store directly (as another coordinator or an
    // offline `token revoke --store` would) is refused within the refresh
    // interval (300 ms in these tests, 2 s by default).
    cluster.add_token("agent", "doomed").unwrap();
    let tree = tempfile::tempdir().unwrap();
    std::fs::write(tree.path().join("e.com"), eicar()).unwrap();
    let out = cluster.agent_as(&cluster.url(), "doomed", &["scan", tree.path().to_str().unwrap()]).unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let t = Instant::now();
    coordinator_command(&["token", "revoke", "doomed", "--store", &redis.url()]).unwrap();
    let took = wait_for("the revoked token to be refused", Duration::from_secs(10), || {
        let out = cluster.agent_as(&cluster.url(), "doomed", &["scan", tree.path().to_str().unwrap()]).ok()?;
        (out.status.code() == Some(2)).then(|| t.elapsed())
    })
    .unwrap();
    eprintln!("token revoked in the store refused after {took:?}");
    drop(redis);
    wait_for("degraded", Duration::from_secs(10), || (cluster.status().ok()?["store_healthy"] == false).then_some(())).unwrap();
    let (code, lines) = cluster.scan(&[tree.path()]).unwrap();
    assert_eq!((code, lines[0]["verdict"].as_str()), (1, Some("malicious")), "{lines:?}");
    let out = cluster.agent_as(&cluster.url(), "doomed", &["scan", tree.path().to_str().unwrap()]).unwrap();
    assert_eq!(out.status.code(), Some(2), "a revoked token came back while Redis was down");
    // Still refused without a token.
    let out = std::process::Command::new(qala_tests::bin("qala-agent"))
        .args(["--server", &cluster.url(), "--ca", cluster.ca().to_str().unwrap(), "scan", tree.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn an_enrolled_worker_scans_renews_and_once_revoked_is_refused() {
    let options = Options {
        coordinator_args: ["--enroll-cert-secs", "10", "--client-max-uploads", "64"].map(String::from).to_vec(),
        ..Options::default()
    };
    let mut cluster = Cluster::start_with(&repo_root().join("rules"), None, 0, options).unwrap();
    cluster.add_token("worker-enroll", "autoscaler").unwrap();
    let dir = cluster.dir.path().join("e1");
    let flags: Vec<String> = vec![
        "--enroll-token-file".into(),
        cluster.token_file("autoscaler").display().to_string(),
        "--id".into(),
        "e1".into(),
        "--ca".into(),
        cluster.ca().display().to_string(),
        "--enroll-dir".into(),
        dir.display().to_string(),
    ];
    cluster.add_worker_with("e1", &flags).unwrap();
    cluster.wait_ready(1).unwrap();
    let tree = tempfile::tempdir().unwrap();
    std::fs::write(tree.path().join("e.com"), eicar()).unwrap();
    let (_, lines) = cluster.scan(&[tree.path()]).unwrap();
    assert_eq!((lines[0]["verdict"].as_str(), lines[0]["worker_id"].as_str()), (Some("malicious"), Some("e1")), "{lines:?}");
    let key_mode = std::fs::metadata(dir.join("worker-key.pem")).unwrap();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&key_mode.permissions()) & 0o777, 0o600);

    // Renewed at half its 10 s life; the worker keeps scanning.
    let first = std::fs::read(dir.join("worker.pem")).unwrap();
    wait_for("a renewed certificate", Duration::from_secs(20), || {
        (std::fs::read(dir.join("worker.pem")).ok()? != first).then_some(())
    })
    .unwrap();
    std::fs::write(tree.path().join("new.txt"), "after renewal").unwrap();
    let (code, _) = cluster.scan(&[tree.path()]).unwrap();
    assert_eq!(code, 1);

    // Revoked: out of the ring at once, and refused from then on.
    let (ca, admin) = (cluster.ca().display().to_string(), cluster.token_file("admin").display().to_string());
    coordinator_command(&["pki", "revoke", "e1", "--server", &cluster.url(), "--ca", &ca, "--token-file", &admin]).unwrap();
    assert!(live_workers(&cluster).is_empty());
    std::thread::sleep(Duration::from_secs(2));
    assert!(live_workers(&cluster).is_empty(), "a revoked worker came back");
    let log = cluster.workers[0].log_text();
    assert!(log.contains("revoked"), "{log}");
    assert!(cluster.audit().iter().any(|l| l["action"] == "worker_revoked" && l["worker_id"] == "e1"));
}

#[tokio::test(flavor = "multi_thread")]
async fn stalled_uploads_of_one_client_neither_starve_others_nor_keep_their_permits() {
    let options = Options {
        coordinator_args: ["--client-max-uploads", "32", "--max-uploads", "64", "--upload-stall-secs", "3"]
            .map(String::from)
            .to_vec(),
        ..Options::default()
    };
    let cluster = Cluster::start_with(&repo_root().join("rules"), None, 1, options).unwrap();
    cluster.add_token("agent", "other").unwrap();
    // 300 uploads from one client that send a header and a first chunk, then nothing.
    let mut stalled = Vec::new();
    let mut senders = Vec::new();
    for conn in 0..3 {
        let client = cluster.scanner().await;
        for i in 0..100u64 {
            let data = qala_tests::pseudo_random(conn * 1000 + i, 100_000);
            let msgs = scan_messages(&data, "stalled.bin");
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            tx.send(msgs[0].clone()).await.unwrap();
            tx.send(pb::ScanRequest { msg: Some(pb::scan_request::Msg::Chunk(data[..1000].to_vec().into())) }).await.unwrap();
            senders.push(tx);
            let mut c = client.clone();
            stalled.push(tokio::spawn(async move { c.scan(tokio_stream::wrappers::ReceiverStream::new(rx)).await }));
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Another client scans meanwhile, at once.
    let mut other = cluster.scanner_with(&cluster.url(), Some("other")).await;
    let t = Instant::now();
    for i in 0..20u64 {
        let data = qala_tests::pseudo_random(1 << 40 | i, 50_000);
        let v = tokio::time::timeout(Duration::from_secs(10), other.scan(tokio_stream::iter(scan_messages(&data, "ok.bin"))))
            .await
            .expect("another client's scan waited on the stalled uploads")
            .unwrap();
        assert_eq!(v.into_inner().verdict.unwrap().verdict, pb::VerdictKind::Clean as i32);
    }
    eprintln!("20 scans of another client beside 300 stalled uploads: {:?}", t.elapsed());
    // Past the client's 32, its uploads were refused at once with a retry hint;
    // the 32 it held are cancelled after 3 s without data.
    let results = futures::future::join_all(stalled).await;
    let codes: Vec<Code> = results.into_iter().map(|r| r.unwrap().unwrap_err().code()).collect();
    let refused = codes.iter().filter(|c| **c == Code::ResourceExhausted).count();
    let timed_out = codes.iter().filter(|c| **c == Code::DeadlineExceeded).count();
    assert_eq!((refused, timed_out), (268, 32), "{codes:?}");
    drop(senders);
    // Their permits came back: the same client scans again.
    let mut again = cluster.scanner().await;
    for i in 0..40u64 {
        let data = qala_tests::pseudo_random(2 << 40 | i, 10_000);
        again.scan(tokio_stream::iter(scan_messages(&data, "again.bin"))).await.unwrap();
    }
}

#[test]
fn a_full_spool_is_answered_and_retried_and_no_file_is_lost() {
    let options = Options {
        coordinator_args: ["--spool-max-bytes", "3000000", "--client-max-uploads", "64", "--client-max-bytes-per-sec", "0"]
            .map(String::from)
            .to_vec(),
        ..Options::default()
    };
    let cluster = Cluster::start_with(&repo_root().join("rules"), None, 1, options).unwrap();
    let tree = tempfile::tempdir().unwrap();
    for i in 0..16u64 {
        std::fs::write(tree.path().join(format!("f{i}.bin")), qala_tests::pseudo_random(i, 1 << 20)).unwrap();
    }
    let (code, lines) = cluster.scan(&[tree.path()]).unwrap();
    assert_eq!(code, 0, "{lines:?}");
    assert_eq!(lines.len(), 16);
    assert!(lines.iter().all(|l| l["verdict"] == "clean"), "{lines:?}");
    let busy = cluster.status().unwrap()["busy_rejections"].as_u64().unwrap();
    assert!(busy > 0, "the spool quota was never hit");
    assert!(cluster.audit().iter().any(|l| l["event"] == "scan" && l["error"] == "ResourceExhausted"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_upload_is_answered_without_being_read() {
    let cluster = Cluster::start(&repo_root().join("rules"), None, 1).unwrap();
    let header = pb::ScanHeader {
        sha256: sha256_hex(b"huge"),
        size: 5 << 30,
        file_name: "huge.iso".into(),
        agent_id: "t".into(),
        ..Default::default()
    };
    let mut c = cluster.scanner().await;
    // Only the header is ever sent; the stream stays open.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(pb::ScanRequest { msg: Some(pb::scan_request::Msg::Header(header)) }).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), c.scan(tokio_stream::wrappers::ReceiverStream::new(rx)))
        .await
        .expect("the coordinator waited for the body")
        .unwrap()
        .into_inner();
    let v = r.verdict.unwrap();
    assert_eq!(v.verdict, pb::VerdictKind::Unscannable as i32);
    assert_eq!(v.limits_hit[0].limit, "max_file_size");
    drop(tx);
}

#[test]
fn insecure_mode_is_loopback_only_and_works_there() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("embedded:{}", dir.path().join("v.redb").display());
    let rules = repo_root().join("rules");
    let out = std::process::Command::new(qala_tests::bin("qala-coordinator"))
        .args(["--insecure", "--listen", "0.0.0.0:0", "--cluster-listen", "127.0.0.1:0", "--rules", rules.to_str().unwrap()])
        .args(["--store", &store])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("only allowed on a loopback address"), "{out:?}");
    let out = std::process::Command::new(qala_tests::bin("qala-coordinator"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--cluster-listen",
            "127.0.0.1:0",
            "--rules",
            rules.to_str().unwrap(),
            "--store",
            &store,
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls DIR"), "{out:?}");

    // On loopback, plain text end to end: coordinator, worker, agent.
    let token = coordinator_command(&["token", "add", "--role", "agent", "local", "--store", &store]).unwrap();
    let token = token.lines().last().unwrap().to_string();
    let (port, cport) = (free_port(), free_port());
    let _c = qala_tests::Proc::spawn(
        "coordinator",
        &qala_tests::bin("qala-coordinator"),
        &["--insecure", "--listen", &format!("127.0.0.1:{port}"), "--cluster-listen", &format!("127.0.0.1:{cport}")]
            .iter()
            .map(|s| s.to_string())
            .chain(["--rules".into(), rules.display().to_string(), "--store".into(), store.clone()])
            .chain([
                "--auth-cache".into(),
                dir.path().join("a.json").display().to_string(),
                "--audit-log".into(),
                "/dev/null".into(),
            ])
            .collect::<Vec<_>>(),
        dir.path(),
    )
    .unwrap();
    let _w = qala_tests::Proc::spawn(
        "worker",
        &qala_tests::bin("qala-worker"),
        &["--insecure", "--coordinator", &format!("http://127.0.0.1:{cport}"), "--id", "local", "--threads", "1"]
            .map(String::from),
        dir.path(),
    )
    .unwrap();
    let tree = tempfile::tempdir().unwrap();
    std::fs::write(tree.path().join("e.com"), eicar()).unwrap();
    let out = wait_for("a plain-text scan", Duration::from_secs(30), || {
        let out = std::process::Command::new(qala_tests::bin("qala-agent"))
            .args([
                "--insecure",
                "--server",
                &format!("http://127.0.0.1:{port}"),
                "scan",
                "--json",
                tree.path().to_str().unwrap(),
            ])
            .env("QALA_TOKEN", &token)
            .output()
            .ok()?;
        (out.status.code() == Some(1)).then_some(out)
    })
    .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"malicious\""), "{out:?}");
    // An agent refuses plain text to anything but loopback.
    let out = std::process::Command::new(qala_tests::bin("qala-agent"))
        .args(["--insecure", "--server", "http://scan.example.org:7000", "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_client_certificate_can_stand_in_for_a_token_and_be_revoked() {
    let cluster = Cluster::start(&repo_root().join("rules"), None, 1).unwrap();
    let pki = cluster.pki.display().to_string();
    let dir =
        std::path::PathBuf::from(coordinator_command(&["pki", "client", &pki, "gateway", "--role", "agent"]).unwrap().trim());
    let soc = std::path::PathBuf::from(coordinator_command(&["pki", "client", &pki, "soc", "--role", "analyst"]).unwrap().trim());
    let tree = tempfile::tempdir().unwrap();
    std::fs::write(tree.path().join("e.com"), eicar()).unwrap();
    let scan_as = |dir: &Path| {
        std::process::Command::new(qala_tests::bin("qala-agent"))
            .args(["--server", &cluster.url(), "--ca", cluster.ca().to_str().unwrap()])
            .arg("--cert")
            .arg(dir.join("client.pem"))
            .arg("--key")
            .arg(dir.join("client-key.pem"))
            .args(["scan", "--json", tree.path().to_str().unwrap()])
            .env_remove("QALA_TOKEN")
            .output()
            .unwrap()
    };
    let out = scan_as(&dir);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(cluster.audit().iter().any(|l| l["event"] == "scan" && l["client"] == "gateway"));
    // Its role counts as a token's would.
    let out = scan_as(&soc);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("PermissionDenied"), "{out:?}");
    // A client certificate of another CA gets no handshake.
    let other = cluster.dir.path().join("other-pki");
    coordinator_command(&["pki", "init", other.to_str().unwrap()]).unwrap();
    let foreign = std::path::PathBuf::from(
        coordinator_command(&["pki", "client", other.to_str().unwrap(), "gateway", "--role", "agent"]).unwrap().trim(),
    );
    assert_eq!(scan_as(&foreign).status.code(), Some(2));
    // Revoked: refused from then on.
    let (ca, admin) = (cluster.ca().display().to_string(), cluster.token_file("admin").display().to_string());
    coordinator_command(&[
        "pki",
        "revoke",
        "--client",
        "gateway",
        "--server",
        &cluster.url(),
        "--ca",
        &ca,
        "--token-file",
        &admin,
    ])
    .unwrap();
    let out = scan_as(&dir);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("revoked"), "{out:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_and_enroll_refuse_wrong_callers_and_garbage() {
    use pb::admin_client::AdminClient;
    let cluster = Cluster::start(&repo_root().join("rules"), None, 0).unwrap();
    cluster.add_token("worker-enroll", "scaler").unwrap();
    let bearer = |name: Option<&str>| qala_tls::BearerToken::new(name.map(|n| cluster.token(n)).as_deref()).unwrap();
    let add = |name: &str, role: &str| pb::AddTokenRequest { name: name.into(), role: role.into(), ..Default::default() };

    let api = cluster.channel(&cluster.url()).await;
    let e = AdminClient::with_interceptor(api.clone(), bearer(None)).add_token(add("x", "agent")).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let e = AdminClient::with_interceptor(api.clone(), bearer(Some("agent"))).add_token(add("x", "admin")).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let mut admin = AdminClient::with_interceptor(api, bearer(Some("admin")));
    for (name, role) in [("x", "root"), ("a b", "agent"), ("", "agent")] {
        let e = admin.add_token(add(name, role)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{name:?}/{role:?}: {e:?}");
    }
    let e = admin.revoke_worker(pb::RevokeWorkerRequest { worker_id: "../etc".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    let enroll = |id: &str, csr: &str| pb::EnrollRequest { worker_id: id.into(), csr_pem: csr.into(), hosts: vec![] };
    let cl = cluster.channel(&cluster.cluster_url()).await;
    let e = ClusterClient::with_interceptor(cl.clone(), bearer(None)).enroll(enroll("w1", "x")).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let e = ClusterClient::with_interceptor(cl.clone(), bearer(Some("agent"))).enroll(enroll("w1", "x")).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let mut scaler = ClusterClient::with_interceptor(cl, bearer(Some("scaler")));
    let garbage = String::from_utf8_lossy(&qala_tests::pseudo_random(3, 4096)).into_owned();
    for (id, csr) in [
        ("w1", garbage.as_str()),
        ("w1", "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"),
        ("../etc", "x"),
    ] {
        let e = scaler.enroll(enroll(id, csr)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{id:?}: {e:?}");
    }
    // Nothing was added by the refused calls.
    let listed = cluster.dir.path().join("admin.token");
    let out = coordinator_command(&[
        "token",
        "list",
        "--server",
        &cluster.url(),
        "--ca",
        cluster.ca().to_str().unwrap(),
        "--token-file",
        listed.to_str().unwrap(),
    ])
    .unwrap();
    assert!(!out.contains("x\t"), "{out}");
}

/// Files are created new and renamed into place, never written through a
/// link someone planted where one goes: a dangling link where `pki init`
/// writes the root key gets replaced (the key never lands where the link
/// pointed), an audit log that is a link is refused at start with one line,
/// and keys and the audit log get their modes from the start.
#[test]
fn files_are_created_new_never_through_a_planted_link() {
    use std::os::unix::fs::{PermissionsExt, symlink};
    let d = tempfile::tempdir().unwrap();
    let pki = d.path().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    let planted = d.path().join("elsewhere-key.pem");
    symlink(&planted, pki.join("ca-key.pem")).unwrap();
    qala_tests::coordinator_command(&["pki", "init", pki.to_str().unwrap()]).unwrap();
    assert!(!planted.exists(), "the root key was written through the planted link");
    let key = std::fs::symlink_metadata(pki.join("ca-key.pem")).unwrap();
    assert!(key.is_file() && key.permissions().mode() & 0o777 == 0o600, "{key:?}");
    assert_eq!(std::fs::metadata(pki.join("ca.pem")).unwrap().permissions().mode() & 0o777, 0o644);

    let victim = d.path().join("victim.log");
    std::fs::write(&victim, b"precious\n").unwrap();
    let link = d.path().join("audit.jsonl");
    symlink(&victim, &link).unwrap();
    let rules = qala_tests::repo_root().join("rules");
    let store = format!("embedded:{}", d.path().join("v.redb").display());
    let start = |audit: &Path| {
        std::process::Command::new(qala_tests::bin("qala-coordinator"))
            .args(["--insecure", "--listen", "127.0.0.1:0", "--cluster-listen", "127.0.0.1:0", "--store", &store])
            .arg("--rules")
            .arg(&rules)
            .arg("--audit-log")
            .arg(audit)
            .arg("--auth-cache")
            .arg(d.path().join("auth-cache.json"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let out = start(&link).wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("audit log") && err.contains("is a symbolic link"), "{err}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious\n");
    // A real audit log is made 0600 (it holds endpoints' paths).
    let log = d.path().join("real-audit.jsonl");
    let mut running = start(&log);
    let made = qala_tests::wait_for("the audit log", Duration::from_secs(20), || std::fs::metadata(&log).ok());
    let _ = running.kill();
    let _ = running.wait();
    assert_eq!(made.unwrap().permissions().mode() & 0o777, 0o600);
}

/// Sends raw bytes as a gRPC message (whatever a hostile client writes).
#[derive(Clone, Default)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

/// A caller with no valid credentials is refused on its headers, before
/// its message is decoded: 8 MiB of bytes that are no protobuf message get
/// UNAUTHENTICATED without a token or with a made-up one (no decode error:
/// the body was never decoded), while the same bytes from an admin fail to
/// decode.
#[tokio::test(flavor = "multi_thread")]
async fn a_stranger_is_refused_before_its_message_is_decoded() {
    let cluster = Cluster::start(&repo_root().join("rules"), None, 0).unwrap();
    let garbage = vec![0xFFu8; 8 << 20];
    let call = |token: Option<String>| {
        let cluster = &cluster;
        let garbage = garbage.clone();
        async move {
            let channel = cluster.channel(&cluster.url()).await;
            let mut grpc = tonic::client::Grpc::new(channel).max_encoding_message_size(16 << 20);
            grpc.ready().await.unwrap();
            let mut req = tonic::Request::new(garbage);
            if let Some(t) = token {
                req.metadata_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
            }
            let path = tonic::codegen::http::uri::PathAndQuery::from_static("/qala.v1.Admin/AddIocs");
            grpc.unary(req, path, RawCodec).await.unwrap_err()
        }
    };
    for token in [None, Some("made-up".to_string())] {
        let e = call(token.clone()).await;
        assert_eq!(e.code(), Code::Unauthenticated, "{token:?}: {e:?}");
    }
    let e = call(Some(cluster.token("admin"))).await;
    assert_ne!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(e.message().to_lowercase().contains("decod"), "an admin's garbage is decoded, and fails: {e:?}");
    let denied = cluster.audit().into_iter().filter(|l| l["event"] == "denied" && l["op"] == "any").count();
    assert_eq!(denied, 2, "both strangers audited");
}

/// REST reads a JSON body only once the caller is known: a stranger who
/// announces 2 MB and sends a byte is answered 401 at once, not held while
/// the coordinator waits for (and buffers) the rest.
#[test]
fn rest_answers_a_stranger_before_reading_its_body() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let rules = repo_root().join("rules");
    let store = format!("embedded:{}", dir.path().join("v.redb").display());
    let (port, cport, http) = (free_port(), free_port(), free_port());
    let _c = qala_tests::Proc::spawn(
        "coordinator",
        &qala_tests::bin("qala-coordinator"),
        &[
            "--insecure",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--cluster-listen",
            &format!("127.0.0.1:{cport}"),
            "--http-listen",
            &format!("127.0.0.1:{http}"),
            "--rules",
            rules.to_str().unwrap(),
            "--store",
            &store,
            "--auth-cache",
            dir.path().join("a.json").to_str().unwrap(),
            "--audit-log",
            "/dev/null",
        ]
        .map(String::from),
        dir.path(),
    )
    .unwrap();
    let mut s = wait_for("the REST listener", Duration::from_secs(30), || std::net::TcpStream::connect(("127.0.0.1", http)).ok())
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for path in ["/v1/lookup", "/v1/iocs"] {
        let started = Instant::now();
        write!(s, "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2000000\r\n\r\n{{")
            .unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).expect("an answer before the body was sent");
        assert_eq!(&head, b"HTTP/1.1 401", "{path}: {}", String::from_utf8_lossy(&head));
        assert!(started.elapsed() < Duration::from_secs(5));
        s = std::net::TcpStream::connect(("127.0.0.1", http)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }
}
