//! Identities that cannot be borrowed, tried as an attacker would on real
//! processes: a join token cannot take a live worker's id, nor one whose
//! certificate is still valid, nor a host the coordinator does not allow
//! or a coordinator's name; a worker's certificate cannot pose as a
//! coordinator to an agent, the admin CLI or a worker, nor can a
//! certificate a coordinator's issuing CA minted; a coordinator requires
//! the registered id's certificate at the address it dials; a revoked
//! serial (a worker's, a client's, a coordinator's) is refused at the
//! handshake; a worker whose certificate expired while it was down comes
//! back under its id; join tokens run out and expire; and without any
//! revocation list, no certificate is taken.

use qala_proto::v1::{self as pb, cluster_client::ClusterClient};
use qala_tests::{Cluster, Options, Proc, Redis, bin, coordinator_command, eicar, free_port, repo_root, wait_for};
use qala_tls::PeerCert;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;

/// Options for a cluster whose coordinator enrolls workers.
fn enrolling(extra: &[&str]) -> Options {
    let mut o = Options::default();
    o.coordinator_args.extend(extra.iter().map(|s| s.to_string()));
    o
}

/// A join token made through the coordinator with `limits` (--uses N,
/// --expires D), written to `<dir>/<name>.token`.
fn join_token(cluster: &Cluster, role: &str, name: &str, limits: &[&str]) -> PathBuf {
    let mut args = vec!["token", "add", "--role", role, name];
    args.extend(limits);
    let out = admin(cluster, &args).unwrap();
    let file = cluster.token_file(name);
    qala_tests::write_token(&file, out.lines().last().unwrap().trim()).unwrap();
    file
}

/// The flags of a worker that enrolls as `id` with the join token in
/// `token`, keeping its certificate in `<dir>/enrolled-<id>` unless
/// `extra` says where.
fn enroll_flags(cluster: &Cluster, token: &Path, id: &str, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "--enroll-token-file".into(),
        token.display().to_string(),
        "--ca".into(),
        cluster.ca().display().to_string(),
        "--id".into(),
        id.into(),
    ];
    if !extra.contains(&"--enroll-dir") {
        v.extend(["--enroll-dir".into(), cluster.dir.path().join(format!("enrolled-{id}")).display().to_string()]);
    }
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// Run a worker that must stop by itself (a refused enrollment): its output.
fn worker_to_exit(coordinators: &str, flags: &[String]) -> Output {
    let mut child = Command::new(bin("qala-worker"))
        .args(["--coordinator", coordinators, "--listen", "127.0.0.1:0", "--threads", "1"])
        .args(flags)
        .env("QALA_WORKER_CRL_CACHE", std::env::temp_dir().join(format!("qala-refused-{}-crls.pem", std::process::id())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!("the worker did not stop by itself: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// The one line a refused worker ends with.
fn refusal(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or("").to_string();
    assert!(last.starts_with("qala-worker: "), "{err}");
    last
}

fn live_workers(cluster: &Cluster) -> Vec<(String, String)> {
    let s = cluster.status().unwrap();
    s["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (w["worker_id"].as_str().unwrap().to_string(), w["address"].as_str().unwrap().to_string()))
        .collect()
}

fn leaf(path: &Path) -> PeerCert {
    PeerCert::parse(&qala_tls::load_certs(path).unwrap()[0]).unwrap()
}

fn admin_args(cluster: &Cluster) -> Vec<String> {
    vec![
        "--server".into(),
        cluster.url(),
        "--ca".into(),
        cluster.ca().display().to_string(),
        "--token-file".into(),
        cluster.token_file("admin").display().to_string(),
    ]
}

fn admin(cluster: &Cluster, args: &[&str]) -> anyhow::Result<String> {
    let mut all: Vec<&str> = args.to_vec();
    let target = admin_args(cluster);
    all.extend(target.iter().map(String::as_str));
    coordinator_command(&all)
}

#[test]
fn enrollment_is_the_coordinators_to_control() {
    let mut cluster = Cluster::start_with(
        &repo_root().join("rules"),
        None,
        0,
        enrolling(&["--enroll-hosts", "*.workers.test,10.77.0.0/16", "--enroll-cert-secs", "600"]),
    )
    .unwrap();
    let token = join_token(&cluster, "worker-enroll", "autoscaler", &["--uses", "2"]);
    cluster.add_worker_with("e1", &enroll_flags(&cluster, &token, "e1", &[])).unwrap();
    cluster.wait_ready(1).unwrap();
    let before = live_workers(&cluster);
    let e1_cert = leaf(&cluster.dir.path().join("enrolled-e1/worker.pem"));
    assert_eq!(e1_cert.worker_id().as_deref(), Some("e1"));
    assert!(e1_cert.dns.is_empty() && e1_cert.ips.is_empty(), "no host asked for, none named: {e1_cert:?}");
    assert!(
        !e1_cert.chain.is_empty()
            || std::fs::read_to_string(cluster.dir.path().join("enrolled-e1/worker.pem")).unwrap().matches("BEGIN").count() == 2
    );

    // The attack: the same token, the live worker's id. Refused, in one line.
    let impostor = enroll_flags(&cluster, &token, "e1", &["--enroll-dir", "/nonexistent/impostor"]);
    let line = refusal(&worker_to_exit(&cluster.cluster_url(), &impostor));
    assert!(line.contains("AlreadyExists") && line.contains("registered and heartbeating"), "{line}");
    assert_eq!(live_workers(&cluster), before, "the real worker keeps its place and address");
    let tree = tempfile::tempdir().unwrap();
    std::fs::write(tree.path().join("e.com"), eicar()).unwrap();
    let (_, lines) = cluster.scan(&[tree.path()]).unwrap();
    assert_eq!(lines[0]["worker_id"], "e1", "{lines:?}");

    // Stopped, its id stays its own while its certificate is valid.
    cluster.workers.remove(0).terminate().unwrap();
    wait_for("e1 out of the ring", Duration::from_secs(10), || live_workers(&cluster).is_empty().then_some(())).unwrap();
    let line = refusal(&worker_to_exit(&cluster.cluster_url(), &impostor));
    assert!(line.contains("holds a certificate valid until") && line.contains(&e1_cert.serial), "{line}");

    // Hosts: only what --enroll-hosts allows, never a loopback or
    // coordinator's name; refusals spend no use of the token.
    for (host, why) in [
        ("localhost", "loopback"),
        ("127.0.0.1", "loopback"),
        ("evil.example.org", "not among the hosts this coordinator allows"),
        ("10.78.0.1", "not among"),
    ] {
        let flags = enroll_flags(&cluster, &token, "e5", &["--cert-host", host]);
        let line = refusal(&worker_to_exit(&cluster.cluster_url(), &flags));
        assert!(line.contains("PermissionDenied") && line.contains(why), "{host}: {line}");
    }
    // Allowed: the certificate names that host and nothing else; the
    // coordinator dials the advertised address, where it requires e6's
    // certificate (which does not name 127.0.0.1).
    let port = free_port();
    let advertise = format!("https://127.0.0.1:{port}");
    let mut flags = enroll_flags(
        &cluster,
        &token,
        "e6",
        &["--cert-host", "e6.workers.test", "--cert-host", "10.77.3.4", "--advertise", &advertise],
    );
    flags.extend(["--listen".to_string(), format!("127.0.0.1:{port}")]);
    cluster.add_worker_with("e6", &flags).unwrap();
    cluster.wait_ready(1).unwrap();
    let e6 = leaf(&cluster.dir.path().join("enrolled-e6/worker.pem"));
    assert_eq!(e6.dns, ["e6.workers.test"]);
    assert_eq!(e6.ips, ["10.77.3.4".parse::<std::net::IpAddr>().unwrap()]);
    std::fs::write(tree.path().join("new.txt"), "scanned by e6").unwrap();
    let (_, lines) = cluster.scan(&[tree.path()]).unwrap();
    let fresh = lines.iter().find(|l| l["path"].as_str().unwrap().ends_with("new.txt")).unwrap();
    assert_eq!((fresh["worker_id"].as_str(), fresh["cached"].as_bool()), (Some("e6"), Some(false)), "{lines:?}");

    // Two uses, both spent (e1, e6): the next worker is told so and stops.
    let line = refusal(&worker_to_exit(&cluster.cluster_url(), &enroll_flags(&cluster, &token, "e7", &[])));
    assert!(line.contains("used up") && line.contains("2 of 2"), "{line}");
    let listed = admin(&cluster, &["token", "list"]).unwrap();
    assert!(listed.lines().any(|l| l.starts_with("autoscaler\tworker-enroll") && l.contains("uses=2/2")), "{listed}");

    // The audit log names each enrollment, with the serial.
    let audit = cluster.audit();
    let enrolled: Vec<_> = audit.iter().filter(|l| l["action"] == "worker_enrolled").collect();
    assert_eq!(enrolled.len(), 2, "{enrolled:?}");
    assert!(enrolled.iter().any(|l| l["worker_id"] == "e1" && l["serial"] == e1_cert.serial.as_str()));
}

#[test]
fn a_coordinators_names_are_never_enrolled() {
    // A coordinator whose own name its --enroll-hosts would cover does not start.
    let d = tempfile::tempdir().unwrap();
    let pki = d.path().join("pki");
    coordinator_command(&["pki", "init", pki.to_str().unwrap(), "--host", "scan.workers.test"]).unwrap();
    let out = Command::new(bin("qala-coordinator"))
        .args(["--tls", pki.to_str().unwrap(), "--rules", repo_root().join("rules").to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0", "--cluster-listen", "127.0.0.1:0", "--enroll-hosts", "*.workers.test"])
        .arg("--store")
        .arg(format!("embedded:{}", d.path().join("s.redb").display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("covers scan.workers.test"), "{err}");

    // Another coordinator's name, known from the store: refused too.
    let redis = Redis::start(d.path()).unwrap();
    let mut cluster =
        Cluster::start_with(&repo_root().join("rules"), Some(&redis.url()), 0, enrolling(&["--enroll-hosts", "*.workers.test"]))
            .unwrap();
    let peer_dir = PathBuf::from(
        coordinator_command(&["pki", "coordinator", cluster.pki.to_str().unwrap(), "peer", "--host", "peer.workers.test"])
            .unwrap()
            .trim(),
    );
    let peer = start_coordinator(&cluster, "peer", &peer_dir, &redis.url(), &[]);
    wait_for("the peer's names in the store", Duration::from_secs(15), || peer.log_text().contains("listening").then_some(()))
        .unwrap();
    let token = join_token(&cluster, "worker-enroll", "autoscaler", &[]);
    let flags = enroll_flags(&cluster, &token, "e1", &["--cert-host", "peer.workers.test"]);
    let line = refusal(&worker_to_exit(&cluster.cluster_url(), &flags));
    assert!(line.contains("is a coordinator's name"), "{line}");
    cluster.workers.clear();
}

/// Start a coordinator from TLS directory `tls` on `store`: (its process,
/// API port, cluster port).
fn start_coordinator(cluster: &Cluster, name: &str, tls: &Path, store: &str, extra: &[&str]) -> Proc {
    let (api, cl) = (free_port(), free_port());
    let mut args: Vec<String> = [
        "--listen",
        &format!("127.0.0.1:{api}"),
        "--cluster-listen",
        &format!("127.0.0.1:{cl}"),
        "--tls",
        tls.to_str().unwrap(),
        "--rules",
        repo_root().join("rules").to_str().unwrap(),
        "--store",
        store,
        "--heartbeat-ms",
        "300",
        "--auth-refresh-ms",
        "300",
        "--auth-cache",
        cluster.dir.path().join(format!("{name}-auth-cache.json")).to_str().unwrap(),
        "--audit-log",
        cluster.dir.path().join(format!("{name}-audit.jsonl")).to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let p = Proc::spawn(name, &bin("qala-coordinator"), &args, cluster.dir.path()).unwrap();
    // Tests find the ports in the process's arguments.
    std::fs::write(cluster.dir.path().join(format!("{name}.ports")), format!("{api} {cl}")).unwrap();
    p
}

fn ports_of(cluster: &Cluster, name: &str) -> (u16, u16) {
    let text = std::fs::read_to_string(cluster.dir.path().join(format!("{name}.ports"))).unwrap();
    let mut it = text.split_whitespace().map(|p| p.parse().unwrap());
    (it.next().unwrap(), it.next().unwrap())
}

/// A TLS server presenting `chain`/`key` that counts the handshakes it
/// completes (a client that refuses it completes none, and sends nothing).
async fn fake_coordinator(chain: &Path, key: &Path) -> (u16, Arc<AtomicUsize>) {
    qala_tls::install_crypto_provider();
    let files = qala_tls::ServerTlsFiles { cert: chain.to_path_buf(), key: key.to_path_buf(), client_ca: None };
    let tls = qala_tls::ServerTls::load(files, qala_tls::ClientAuth::None, qala_tls::CrlSet::new()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let completed = Arc::new(AtomicUsize::new(0));
    let count = completed.clone();
    tokio::spawn(async move {
        let mut conns = qala_tls::incoming(listener, Some(tls));
        while let Some(c) = conns.next().await {
            if c.is_ok() {
                count.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    (port, completed)
}

fn output_text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_certificate_cannot_pose_as_a_coordinator() {
    let cluster = Cluster::start(&repo_root().join("rules"), None, 0).unwrap();
    // The attack of the issue: a worker's certificate naming the
    // coordinator's own host (`pki worker` names localhost and 127.0.0.1).
    let w9 = cluster.worker_tls("w9").unwrap();
    let (port, completed) = fake_coordinator(&w9.join("worker.pem"), &w9.join("worker-key.pem")).await;
    let fake = format!("https://127.0.0.1:{port}");
    let tree = tempfile::tempdir().unwrap();
    std::fs::write(tree.path().join("e.com"), eicar()).unwrap();
    let expected = "the server presented worker \"w9\"'s certificate where a coordinator's was expected";

    // The agent.
    let out = tokio::task::spawn_blocking({
        let mut cmd = cluster.agent_command(&fake, "agent");
        cmd.args(["scan", tree.path().to_str().unwrap()]);
        move || cmd.output().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(output_text(&out).contains(expected), "{}", output_text(&out));
    // The admin CLI, with an admin token.
    let mut args = admin_args(&cluster);
    args[1] = fake.clone();
    let out = Command::new(bin("qala-coordinator")).args(["token", "list"]).args(&args).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(expected) && err.lines().count() == 1, "{err}");
    // A worker registering (with its certificate) and one enrolling (with a join token).
    let w2 = cluster.worker_tls("w2").unwrap();
    let mut registering = Proc::spawn(
        "worker-registering",
        &bin("qala-worker"),
        &["--coordinator", &fake, "--tls", w2.to_str().unwrap(), "--listen", "127.0.0.1:0", "--threads", "1"].map(String::from),
        cluster.dir.path(),
    )
    .unwrap();
    let token = join_token(&cluster, "worker-enroll", "autoscaler", &[]);
    let enrolling = tokio::task::spawn_blocking({
        let flags = enroll_flags(&cluster, &token, "e1", &[]);
        let fake = fake.clone();
        move || worker_to_exit(&fake, &flags)
    })
    .await
    .unwrap();
    let line = refusal(&enrolling);
    assert!(line.contains(expected), "{line}");
    wait_for("the registering worker to give up a try", Duration::from_secs(15), || {
        registering.log_text().contains("registration failed").then_some(())
    })
    .unwrap();
    assert!(registering.log_text().contains(expected), "{}", registering.log_text());
    assert!(registering.is_running());

    // A coordinator's certificate minted by a coordinator's issuing CA (its
    // key stolen): refused too, only the root signs coordinators.
    let minted = cluster.dir.path().join("minted");
    std::fs::create_dir_all(&minted).unwrap();
    mint_coordinator(&cluster.pki, &minted);
    let (port2, completed2) = fake_coordinator(&minted.join("chain.pem"), &minted.join("key.pem")).await;
    let out = tokio::task::spawn_blocking({
        let mut cmd = cluster.agent_command(&format!("https://127.0.0.1:{port2}"), "agent");
        cmd.args(["scan", tree.path().to_str().unwrap()]);
        move || cmd.output().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(output_text(&out).contains("not by the cluster's root CA"), "{}", output_text(&out));

    // No handshake completed: no request, no token, was ever sent.
    assert_eq!(completed.load(Ordering::SeqCst), 0);
    assert_eq!(completed2.load(Ordering::SeqCst), 0);
    registering.kill_hard().unwrap();
}

/// A `qala:coordinator:evil` certificate for 127.0.0.1 signed by the
/// cluster's issuing CA, as one who stole its key would make it:
/// `out/chain.pem` (with the issuing CA's) and `out/key.pem`.
fn mint_coordinator(pki: &Path, out: &Path) {
    let ca_key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(pki.join("issuing-ca-key.pem")).unwrap()).unwrap();
    let issuing_pem = std::fs::read_to_string(pki.join("issuing-ca.pem")).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&issuing_pem, ca_key).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    params.subject_alt_names.push(rcgen::SanType::URI("qala:coordinator:evil".try_into().unwrap()));
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    std::fs::write(out.join("chain.pem"), format!("{}{issuing_pem}", cert.pem())).unwrap();
    std::fs::write(out.join("key.pem"), key.serialize_pem()).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_coordinator_requires_the_registered_ids_certificate_where_it_dials() {
    let cluster = Cluster::start(&repo_root().join("rules"), None, 2).unwrap();
    let workers = live_workers(&cluster);
    let w2_address = workers.iter().find(|(id, _)| id == "w2").unwrap().1.clone();
    // w1's key (stolen, or w1 itself misbehaving) registers "w1" at w2's address.
    let w1 = cluster.worker_tls("w1").unwrap();
    let (cert, key) = (w1.join("worker.pem"), w1.join("worker-key.pem"));
    let mut as_w1 = ClusterClient::new(cluster.channel_as(&cluster.cluster_url(), Some((&cert, &key))).await);
    let req = pb::RegisterRequest {
        worker_id: "w1".into(),
        address: w2_address.clone(),
        threads: 2,
        engine_version: qala_engine::ENGINE_VERSION.into(),
        max_in_flight: 4,
        max_file_size: 1 << 30,
        ..Default::default()
    };
    as_w1.register(req).await.unwrap();
    // The coordinator dials w2's address for w1 and is refused there.
    let expected = "the server presented worker \"w2\"'s certificate where worker \"w1\"'s was expected";
    wait_for("the coordinator to refuse w2's certificate for w1", Duration::from_secs(15), || {
        cluster.coordinator.as_ref().unwrap().log_text().contains(expected).then_some(())
    })
    .unwrap();
    // Files ranked to w1 go to w2 under w2's name; none is scanned as w1's there.
    let tree = tempfile::tempdir().unwrap();
    for i in 0..40 {
        std::fs::write(tree.path().join(format!("f{i}.txt")), format!("file {i} of the dial test")).unwrap();
    }
    let (_, lines) = tokio::task::spawn_blocking(move || {
        let r = cluster.scan(&[tree.path()]).unwrap();
        drop(cluster);
        r
    })
    .await
    .unwrap();
    assert_eq!(lines.len(), 40, "{lines:?}");
    assert!(lines.iter().all(|l| l["verdict"] == "clean" && l["worker_id"] == "w2"), "{lines:?}");
}

/// Whether a new TLS connection to `url` with `identity` is refused at the
/// handshake (not answered by the service behind it).
async fn handshake_refused(cluster: &Cluster, url: &str, identity: (&Path, &Path)) -> Option<String> {
    let tls = qala_tls::client_config(Some(&cluster.ca()), Some(identity)).unwrap();
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_string()).unwrap().tls_config(tls).unwrap();
    let mut client = ClusterClient::new(endpoint.connect_lazy());
    match client.heartbeat(pb::HeartbeatRequest { worker_id: "probe".into(), ..Default::default() }).await {
        // A service answer (even a refusal) means the handshake held.
        Ok(_) => None,
        Err(s) if s.code() == tonic::Code::Unavailable || s.code() == tonic::Code::Unknown => Some(chain(&s)),
        Err(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn revoked_serials_are_refused_at_the_handshake() {
    let d = tempfile::tempdir().unwrap();
    let redis = Redis::start(d.path()).unwrap();
    let mut cluster = Cluster::start_with(&repo_root().join("rules"), Some(&redis.url()), 0, enrolling(&[])).unwrap();
    let token = join_token(&cluster, "worker-enroll", "autoscaler", &[]);
    cluster.add_worker_with("e1", &enroll_flags(&cluster, &token, "e1", &[])).unwrap();
    cluster.wait_ready(1).unwrap();
    let e1_dir = cluster.dir.path().join("enrolled-e1");
    let copy = cluster.dir.path().join("e1-copy");
    std::fs::create_dir_all(&copy).unwrap();
    for f in ["worker.pem", "worker-key.pem"] {
        std::fs::copy(e1_dir.join(f), copy.join(f)).unwrap();
    }
    let (cert, key) = (copy.join("worker.pem"), copy.join("worker-key.pem"));
    let serial = leaf(&cert).serial;
    assert!(handshake_refused(&cluster, &cluster.cluster_url(), (&cert, &key)).await.is_none());

    // A worker's certificate, by serial, through the admin API.
    let out = admin(&cluster, &["pki", "revoke", "--serial", &serial]).unwrap();
    assert!(out.contains(&format!("certificate {serial} revoked")), "{out}");
    wait_for_async_refusal(&cluster, &cluster.cluster_url(), (&cert, &key)).await;
    assert_refused_as_revoked(cluster.coordinator.as_ref().unwrap(), 0);
    assert!(cluster.audit().iter().any(|l| l["action"] == "certificate_revoked" && l["serial"] == serial.as_str()));

    // A client certificate, in the root's list (where the root key is), published.
    let pki = cluster.pki.display().to_string();
    let gw = PathBuf::from(coordinator_command(&["pki", "client", &pki, "gateway", "--role", "agent"]).unwrap().trim());
    let tree = tempfile::tempdir().unwrap();
    std::fs::write(tree.path().join("e.com"), eicar()).unwrap();
    let as_gateway = |tree: &Path| {
        Command::new(bin("qala-agent"))
            .args(["--server", &cluster.url(), "--ca", cluster.ca().to_str().unwrap()])
            .arg("--cert")
            .arg(gw.join("client.pem"))
            .arg("--key")
            .arg(gw.join("client-key.pem"))
            .args(["scan", tree.to_str().unwrap()])
            .env_remove("QALA_TOKEN")
            .output()
            .unwrap()
    };
    assert_eq!(as_gateway(tree.path()).status.code(), Some(1), "the gateway's certificate works before");
    // (The root's list alone, not the name: the TLS layer refuses it.)
    let out = coordinator_command(&["pki", "revoke", "--dir", &pki, "--client", "gateway"]).unwrap();
    assert!(out.contains("revoked client \"gateway\"") && out.contains("publish it"), "{out}");
    let out = admin(&cluster, &["pki", "publish-crl", &format!("{pki}/crl.pem")]).unwrap();
    assert!(out.contains("published (1 revoked)"), "{out}");
    let mark = cluster.coordinator.as_ref().unwrap().log_text().len();
    let published = Instant::now();
    wait_for("the gateway refused", Duration::from_secs(10), || (as_gateway(tree.path()).status.code() == Some(2)).then_some(()))
        .unwrap();
    eprintln!(
        "the gateway's client certificate refused {} ms after the root's list was published",
        published.elapsed().as_millis()
    );
    assert_refused_as_revoked(cluster.coordinator.as_ref().unwrap(), mark);

    // A coordinator: "second" (its own certificate and issuing CA) enrolls
    // e2 and serves an agent service, which fetches the root's list at
    // check-in. Revoked where the root key is and published: the agent
    // refuses "second" from its cached list, and the first coordinator
    // refuses e2, which second's issuing CA signed.
    let second_dir = PathBuf::from(coordinator_command(&["pki", "coordinator", &pki, "second"]).unwrap().trim());
    let second = start_coordinator(&cluster, "second", &second_dir, &redis.url(), &[]);
    let (second_api, second_cluster) = ports_of(&cluster, "second");
    wait_for("second listening", Duration::from_secs(20), || second.log_text().contains("cluster listener").then_some(()))
        .unwrap();
    let second_url = format!("https://127.0.0.1:{second_api}");
    let e2 = enroll_flags(&cluster, &token, "e2", &[]);
    let mut e2_args = vec!["--coordinator".to_string(), format!("https://127.0.0.1:{second_cluster},{}", cluster.cluster_url())];
    e2_args.extend(["--listen".into(), "127.0.0.1:0".into(), "--threads".into(), "1".into()]);
    e2_args.extend(e2);
    let e2_proc = Proc::spawn("worker-e2", &bin("qala-worker"), &e2_args, cluster.dir.path()).unwrap();
    wait_for("e2 enrolled through second", Duration::from_secs(30), || e2_proc.log_text().contains("enrolled:").then_some(()))
        .unwrap();
    let e2_dir = cluster.dir.path().join("enrolled-e2");
    let e2_cert = leaf(&e2_dir.join("worker.pem"));
    assert!(e2_cert.issuer.starts_with("CN=Qala issuing CA second,"), "{}", e2_cert.issuer);
    let config = cluster.dir.path().join("agent.toml");
    let crl_cache = cluster.dir.path().join("agent-crls.pem");
    std::fs::write(
        &config,
        format!(
            "[server]\nurl = {:?}\nca = {:?}\ntoken_file = {:?}\ncheckin_interval = \"1s\"\n\n[paths]\nquarantine = {:?}\nspool = {:?}\ncrl_cache = {:?}\nheld = {:?}\n",
            cluster.url(),
            cluster.ca(),
            cluster.token_file("agent"),
            cluster.dir.path().join("q"),
            cluster.dir.path().join("spool"),
            crl_cache,
            cluster.dir.path().join("agent-held")
        ),
    )
    .unwrap();
    let service = Proc::spawn(
        "agent-service",
        &bin("qala-agent"),
        &["--config".to_string(), config.display().to_string(), "service".to_string()],
        cluster.dir.path(),
    )
    .unwrap();
    let scan_second = |tree: &Path| {
        Command::new(bin("qala-agent"))
            .args(["--config", config.to_str().unwrap(), "--server", &second_url, "scan", tree.to_str().unwrap()])
            .output()
            .unwrap()
    };
    assert_eq!(scan_second(tree.path()).status.code(), Some(1), "second serves before its revocation");
    let out = coordinator_command(&["pki", "revoke", "--dir", &pki, "--coordinator", "second"]).unwrap();
    assert!(out.contains("revoked coordinator \"second\"") && out.contains("revoked issuing-ca \"second\""), "{out}");
    let listed = admin(&cluster, &["pki", "publish-crl", &format!("{pki}/crl.pem")]).unwrap();
    assert!(listed.contains("published (3 revoked)"), "{listed}");
    let second_serial = leaf(&second_dir.join("coordinator.pem")).serial;
    wait_for("the agent to fetch the root's list at check-in", Duration::from_secs(20), || {
        let held = qala_tls::CrlSet::new();
        held.load(&crl_cache).ok()?;
        held.is_revoked(&second_serial).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {}", service.log_text()));
    let out = scan_second(tree.path());
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(output_text(&out).to_lowercase().contains("revoked"), "{}", output_text(&out));
    // e2, enrolled by the revoked issuing CA, is refused by the first coordinator.
    let (e2_cert_file, e2_key) = (e2_dir.join("worker.pem"), e2_dir.join("worker-key.pem"));
    let mark = cluster.coordinator.as_ref().unwrap().log_text().len();
    wait_for_async_refusal(&cluster, &cluster.cluster_url(), (&e2_cert_file, &e2_key)).await;
    assert_refused_as_revoked(cluster.coordinator.as_ref().unwrap(), mark);
    drop((service, e2_proc, second));
    cluster.workers.clear();
}

/// The coordinator said, in its log past `since` bytes, that it refused a
/// revoked certificate at a handshake.
/// (The client may see the refusal before the line is written: waited for.)
fn assert_refused_as_revoked(coordinator: &Proc, since: usize) {
    let said = wait_for("the coordinator's log of the refusal", Duration::from_secs(10), || {
        let log = coordinator.log_text();
        log[since..].lines().any(|l| l.contains("refused the client's certificate") && l.contains("Revoked")).then_some(())
    });
    assert!(said.is_ok(), "{}", &coordinator.log_text()[since..]);
}

/// An error and its causes, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Wait (10 s at most) until a new connection with `identity` is refused
/// at the handshake; the reason.
async fn wait_for_async_refusal(cluster: &Cluster, url: &str, identity: (&Path, &Path)) -> String {
    let started = Instant::now();
    loop {
        if let Some(why) = handshake_refused(cluster, url, identity).await {
            eprintln!("refused at the handshake {} ms after the revocation: {why}", started.elapsed().as_millis());
            return why;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "still served with {:?}", identity.0);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn a_worker_whose_certificate_expired_while_down_comes_back_under_its_id() {
    let mut cluster = Cluster::start_with(&repo_root().join("rules"), None, 0, enrolling(&["--enroll-cert-secs", "12"])).unwrap();
    let token = join_token(&cluster, "worker-enroll", "autoscaler", &["--uses", "2"]);
    let flags = enroll_flags(&cluster, &token, "e1", &[]);
    cluster.add_worker_with("e1", &flags).unwrap();
    cluster.wait_ready(1).unwrap();
    let cert_file = cluster.dir.path().join("enrolled-e1/worker.pem");

    // Restarted with its certificate valid: it uses it, spending nothing.
    cluster.workers.remove(0).terminate().unwrap();
    wait_for("e1 out of the ring", Duration::from_secs(10), || live_workers(&cluster).is_empty().then_some(())).unwrap();
    cluster.add_worker_with("e1", &flags).unwrap();
    cluster.wait_ready(1).unwrap();
    assert!(
        cluster.workers[0].log_text().contains("using the certificate enrolled earlier"),
        "{}",
        cluster.workers[0].log_text()
    );

    // Down past its certificate's end: it enrolls anew (its id free again).
    cluster.workers.remove(0).terminate().unwrap();
    wait_for("e1 out of the ring", Duration::from_secs(10), || live_workers(&cluster).is_empty().then_some(())).unwrap();
    let not_after = leaf(&cert_file).not_after;
    while qala_common::now_ms() / 1000 <= not_after + 1 {
        std::thread::sleep(Duration::from_millis(250));
    }
    cluster.add_worker_with("e1", &flags).unwrap();
    let s = cluster.wait_ready(1).unwrap();
    assert_eq!(s["workers"][0]["worker_id"], "e1");
    let log = cluster.workers[0].log_text();
    assert!(log.contains("has expired") && log.contains("enrolled: certificate received"), "{log}");
    let tree = tempfile::tempdir().unwrap();
    std::fs::write(tree.path().join("e.com"), eicar()).unwrap();
    let (code, lines) = cluster.scan(&[tree.path()]).unwrap();
    assert_eq!((code, lines[0]["worker_id"].as_str()), (1, Some("e1")));

    // Both uses spent: a new worker is refused, in one line, and stops.
    let line = refusal(&worker_to_exit(&cluster.cluster_url(), &enroll_flags(&cluster, &token, "e2", &[])));
    assert!(line.contains("used up"), "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn join_tokens_expire_names_are_not_overwritten_and_enrollments_are_rate_limited() {
    let cluster = Cluster::start_with(&repo_root().join("rules"), None, 0, enrolling(&["--enroll-rate", "2"])).unwrap();
    // A name in use is refused; --replace replaces it (the old token dies).
    let e = admin(&cluster, &["token", "add", "--role", "agent", "agent"]).unwrap_err().to_string();
    assert!(e.contains("exists") && e.contains("--replace"), "{e}");
    let e = coordinator_command(&["token", "add", "--role", "agent", "x", "--uses", "3", "--store", "embedded:/nonexistent"])
        .unwrap_err()
        .to_string();
    assert!(!e.is_empty());
    let e = admin(&cluster, &["token", "add", "--role", "agent", "counted", "--uses", "3"]).unwrap_err().to_string();
    assert!(e.contains("join tokens"), "{e}");
    let old = cluster.token("agent");
    let out = admin(&cluster, &["token", "add", "--role", "agent", "agent", "--replace"]).unwrap();
    let new = out.lines().last().unwrap().trim().to_string();
    assert_ne!(old, new);

    // An expired join token: one line, non-zero.
    let short = join_token(&cluster, "worker-enroll", "short", &["--expires", "1s"]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let flags = enroll_flags(&cluster, &short, "e1", &[]);
    let url = cluster.cluster_url();
    let line = refusal(&tokio::task::spawn_blocking(move || worker_to_exit(&url, &flags)).await.unwrap());
    assert!(line.contains("Unauthenticated") && line.contains("expired at"), "{line}");

    // Agents' enrollments, two a minute on this token: the third waits.
    let fleet = join_token(&cluster, "agent-enroll", "fleet", &[]);
    let channel = cluster.channel(&cluster.url()).await;
    let bearer = qala_tls::BearerToken::new(Some(&std::fs::read_to_string(&fleet).unwrap())).unwrap();
    let mut agents = pb::agents_client::AgentsClient::with_interceptor(channel, bearer);
    let info = || pb::EnrollAgentRequest {
        info: Some(pb::AgentInfo { hostname: "ws-1".into(), os: "Linux".into(), version: "test".into() }),
    };
    let mut ids = Vec::new();
    for _ in 0..2 {
        ids.push(agents.enroll(info()).await.unwrap().into_inner().agent_id);
    }
    let e = agents.enroll(info()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    assert!(e.metadata().get("retry-after-ms").is_some(), "{e:?}");
    // Agent ids carry 64 random bits.
    for id in &ids {
        let suffix = id.strip_prefix("ws-1-").unwrap();
        assert!(suffix.len() == 16 && suffix.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    }
    assert_ne!(ids[0], ids[1]);
}

#[test]
fn without_a_revocation_list_no_certificate_is_taken() {
    // A coordinator whose store does not answer at its first start, with no
    // auth cache: it knows no list, and refuses workers' certificates.
    let d = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    // (Tokens are made while the store is up, then it goes.)
    let redis = Redis::start_persistent_on(d.path(), port).unwrap();
    let mut cluster = Cluster::prepare(&repo_root().join("rules"), Some(&url), Options::default()).unwrap();
    drop(redis);
    cluster.start_coordinator().unwrap();
    cluster.add_worker("w1").unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let log = cluster.coordinator.as_ref().unwrap().log_text();
    assert!(log.contains("no certificate revocation list known"), "{log}");
    assert!(cluster.workers[0].log_text().contains("registration failed"), "{}", cluster.workers[0].log_text());
    // The store comes: the root's list (from the TLS directory) and the
    // coordinator's own are stored, and the worker gets in.
    let _redis = Redis::start_persistent_on(d.path(), port).unwrap();
    cluster.wait_ready(1).unwrap();
}

/// A CA of this test's own, standing for a public one (an ACME CA): its
/// certificate, and a leaf for `hosts` signed by it (chain, key).
fn public_ca(dir: &Path) -> (PathBuf, impl Fn(&[&str], &Path)) {
    let mut params = rcgen::CertificateParams::default();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, "Test public root");
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let ca = dir.join("public-ca.pem");
    std::fs::write(&ca, cert.pem()).unwrap();
    let issuer = rcgen::Issuer::new(params, key);
    let leaf = move |hosts: &[&str], out: &Path| {
        let params = rcgen::CertificateParams::new(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>()).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        // Key first: the certificate's change is what reloads the listener.
        std::fs::write(out.join("public-key.pem"), key.serialize_pem()).unwrap();
        std::fs::write(out.join("public.pem"), cert.pem()).unwrap();
    };
    (ca, leaf)
}

#[test]
fn a_public_listener_with_a_web_pki_certificate_keeps_host_name_checks() {
    let d = tempfile::tempdir().unwrap();
    let (roots, leaf) = public_ca(d.path());
    leaf(&["127.0.0.1"], d.path());
    let mut options = Options::default();
    options.coordinator_args.extend([
        "--public-cert".to_string(),
        d.path().join("public.pem").display().to_string(),
        "--public-key".to_string(),
        d.path().join("public-key.pem").display().to_string(),
    ]);
    // (The harness's readiness check dials through the cluster CA: here the
    // worker's own log says when it holds the rules.)
    let mut cluster = Cluster::prepare(&repo_root().join("rules"), None, options).unwrap();
    cluster.start_coordinator().unwrap();
    cluster.add_worker("w1").unwrap();
    wait_for("w1 ready", Duration::from_secs(30), || cluster.workers[0].log_text().contains("rules loaded").then_some(()))
        .unwrap();
    let tree = tempfile::tempdir().unwrap();
    std::fs::write(tree.path().join("e.com"), eicar()).unwrap();
    // The agent without --ca: the system's roots (here, SSL_CERT_FILE) and the host name.
    let agent = |ca: Option<&Path>| {
        let mut cmd = Command::new(bin("qala-agent"));
        cmd.args(["--server", &cluster.url(), "--token-file", cluster.token_file("agent").to_str().unwrap()]);
        if let Some(ca) = ca {
            cmd.arg("--ca").arg(ca);
        }
        cmd.args(["scan", tree.path().to_str().unwrap()])
            .env("SSL_CERT_FILE", &roots)
            .env_remove("SSL_CERT_DIR")
            .output()
            .unwrap()
    };
    let out = agent(None);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    // Through the cluster CA, the public certificate is no coordinator's.
    let out = agent(Some(&cluster.ca()));
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    // A public certificate for another host: refused on the host name.
    leaf(&["scan.example.test"], d.path());
    let out = wait_for("the new certificate in force", Duration::from_secs(15), || {
        let out = agent(None);
        (out.status.code() == Some(2)).then_some(out)
    })
    .unwrap();
    assert!(output_text(&out).contains("certificate not valid for name \"127.0.0.1\""), "{}", output_text(&out));
    // Workers still use the cluster listener and its certificate.
    assert!(!cluster.workers[0].log_text().contains("heartbeat failed"));
}
