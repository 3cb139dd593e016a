//! The Redis store over TLS with an ACL user: `rediss://`, the server's CA
//! and the password given apart from the spec (a file named in the
//! environment), for the coordinator and for `token` commands alike.
//! (Its own test binary: it sets the environment its processes inherit.)

use qala_coordinator::store::{RedisStore, VerdictStore};
use qala_tests::{Cluster, Proc, coordinator_command, eicar, free_port, repo_root, wait_for, which};
use std::path::Path;
use std::time::Duration;

#[test]
fn redis_over_tls_with_an_acl_user() {
    let dir = tempfile::tempdir().unwrap();
    pki_with_redis_cert(dir.path());
    let pki = dir.path().join("pki");
    let port = free_port();
    let _redis = tls_redis(dir.path(), "redis-tls", port, &[]);
    let password = dir.path().join("redis.password");
    std::fs::write(&password, "s3cret-pass\n").unwrap();
    let ca = std::fs::read(pki.join("ca.pem")).unwrap();
    let spec = format!("rediss://qala@127.0.0.1:{port}");

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        qala_tls::install_crypto_provider();
        let store = RedisStore::configure(&spec, Some("s3cret-pass"), Some(ca.clone())).unwrap();
        wait_for("redis over TLS", Duration::from_secs(10), || {
            tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(store.ping())).ok()
        })
        .unwrap();
        let wrong = RedisStore::configure(&spec, Some("wrong"), Some(ca.clone())).unwrap();
        assert!(wrong.ping().await.is_err(), "a wrong password was accepted");
        let plain = RedisStore::configure(&format!("redis://qala@127.0.0.1:{port}"), Some("s3cret-pass"), None).unwrap();
        assert!(plain.ping().await.is_err(), "plain text to the TLS port was answered");
        let untrusted = RedisStore::configure(&spec, Some("s3cret-pass"), None).unwrap();
        assert!(untrusted.ping().await.is_err(), "a server certificate of an unknown CA was trusted");
    });

    // The whole cluster on it: tokens, verdicts, cache hits.
    // SAFETY: this binary has this one test; set before any process starts.
    unsafe {
        std::env::set_var("QALA_STORE_PASSWORD_FILE", &password);
        std::env::set_var("QALA_STORE_CA", pki.join("ca.pem"));
    }
    let cluster = Cluster::start(&repo_root().join("rules"), Some(&spec), 1).unwrap();
    let status = cluster.status().unwrap();
    assert_eq!(status["store_healthy"], true, "{status}");
    assert!(!status["store"].as_str().unwrap().contains("s3cret"));
    let tree = tempfile::tempdir().unwrap();
    std::fs::write(tree.path().join("e.com"), eicar()).unwrap();
    let (code, lines) = cluster.scan(&[tree.path()]).unwrap();
    assert_eq!((code, lines[0]["cached"].as_bool()), (1, Some(false)), "{lines:?}");
    let (_, lines) = cluster.scan(&[tree.path()]).unwrap();
    assert_eq!(lines[0]["cached"], true, "the verdict was not stored in Redis");
    // The password never shows in the process list.
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", cluster.coordinator.as_ref().unwrap().pid())).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains("s3cret"));
}

/// A TLS Redis process with the ACL user `qala` (default user off), its
/// certificate from a Qala PKI in `dir`.
fn tls_redis(dir: &Path, name: &str, port: u16, extra: &[&str]) -> Proc {
    let server = dir.join("pki/coordinators/redis");
    let mut args: Vec<String> = [
        "--port",
        "0",
        "--tls-port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        dir.to_str().unwrap(),
        "--tls-cert-file",
        server.join("coordinator.pem").to_str().unwrap(),
        "--tls-key-file",
        server.join("coordinator-key.pem").to_str().unwrap(),
        "--tls-ca-cert-file",
        dir.join("pki/ca.pem").to_str().unwrap(),
        "--tls-auth-clients",
        "no",
        "--tls-replication",
        "yes",
        "--user",
        "default",
        "off",
        "--user",
        "qala",
        "on",
        ">s3cret-pass",
        "~*",
        "&*",
        "+@all",
    ]
    .map(String::from)
    .to_vec();
    args.extend(extra.iter().map(|s| s.to_string()));
    Proc::spawn(name, &which("redis-server").expect("redis-server"), &args, dir).unwrap()
}

/// `redis-cli` over TLS as `qala` (`auth` false: no user, for a sentinel).
fn cli(dir: &Path, port: u16, auth: bool, args: &[&str]) -> String {
    let mut cmd = std::process::Command::new("redis-cli");
    cmd.args(["--tls", "--cacert", dir.join("pki/ca.pem").to_str().unwrap(), "-h", "127.0.0.1", "-p", &port.to_string()]);
    if auth {
        cmd.args(["--user", "qala", "--pass", "s3cret-pass", "--no-auth-warning"]);
    }
    let out = cmd.args(args).output().expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn pki_with_redis_cert(dir: &Path) {
    let pki = dir.join("pki");
    coordinator_command(&["pki", "init", pki.to_str().unwrap()]).unwrap();
    coordinator_command(&["pki", "coordinator", pki.to_str().unwrap(), "redis", "--host", "127.0.0.1"]).unwrap();
}

/// Store a verdict and a token through `spec`, read them back.
fn round_trip(dir: &Path, spec: &str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        qala_tls::install_crypto_provider();
        let ca = std::fs::read(dir.join("pki/ca.pem")).unwrap();
        let store = RedisStore::configure(spec, Some("s3cret-pass"), Some(ca)).unwrap();
        let mut last = String::new();
        for _ in 0..100 {
            match store.ping().await {
                Ok(()) => break,
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        store.ping().await.unwrap_or_else(|e| panic!("{spec}: {e} (before: {last})"));
        let v = qala_proto::v1::Verdict {
            sha256: qala_tests::sha256_hex(b"tls"),
            ruleset_id: "rs".into(),
            verdict: qala_proto::VerdictKind::Malicious as i32,
            ..Default::default()
        };
        store.put(&v, None).await.unwrap();
        assert_eq!(store.get("rs", &v.sha256).await.unwrap(), Some(v.clone()));
        let t = qala_proto::v1::TokenRecord {
            name: "n".into(),
            role: "agent".into(),
            sha256: "ab".into(),
            created_ms: 1,
            ..Default::default()
        };
        let store = qala_coordinator::store::Guarded::new(std::sync::Arc::new(store));
        store.put(&t).await.unwrap();
        assert_eq!(store.all::<qala_proto::v1::TokenRecord>().await.unwrap(), vec![t]);
        let wrong = RedisStore::configure(spec, Some("wrong"), Some(std::fs::read(dir.join("pki/ca.pem")).unwrap())).unwrap();
        assert!(wrong.get("rs", &v.sha256).await.is_err(), "{spec}: a wrong password was accepted");
    });
}

#[test]
fn redis_cluster_over_tls_with_an_acl_user() {
    let d = tempfile::tempdir().unwrap();
    pki_with_redis_cert(d.path());
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let _nodes: Vec<Proc> = ports
        .iter()
        .map(|&p| {
            let conf = format!("nodes-{p}.conf");
            tls_redis(
                d.path(),
                &format!("redis-{p}"),
                p,
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &conf,
                    "--cluster-node-timeout",
                    "2000",
                    "--tls-cluster",
                    "yes",
                ],
            )
        })
        .collect();
    for &p in &ports {
        wait_for("TLS node", Duration::from_secs(10), || cli(d.path(), p, true, &["PING"]).contains("PONG").then_some(()))
            .unwrap();
    }
    for (i, &p) in ports.iter().enumerate() {
        let (first, last) = (i * 16384 / 3, (i + 1) * 16384 / 3 - 1);
        cli(d.path(), p, true, &["CLUSTER", "ADDSLOTSRANGE", &first.to_string(), &last.to_string()]);
    }
    for &p in &ports[1..] {
        cli(d.path(), ports[0], true, &["CLUSTER", "MEET", "127.0.0.1", &p.to_string()]);
    }
    wait_for("TLS cluster ok", Duration::from_secs(30), || {
        ports
            .iter()
            .all(|&p| {
                let info = cli(d.path(), p, true, &["CLUSTER", "INFO"]);
                info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:3")
            })
            .then_some(())
    })
    .unwrap();
    let hosts: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    round_trip(d.path(), &format!("rediss+cluster://qala@{}", hosts.join(",")));
}

#[test]
fn redis_sentinel_over_tls_with_an_acl_user() {
    let d = tempfile::tempdir().unwrap();
    pki_with_redis_cert(d.path());
    let (m, r, s) = (free_port(), free_port(), free_port());
    let _master = tls_redis(d.path(), "master", m, &[]);
    wait_for("TLS master", Duration::from_secs(10), || cli(d.path(), m, true, &["PING"]).contains("PONG").then_some(())).unwrap();
    let _replica = tls_redis(
        d.path(),
        "replica",
        r,
        &["--replicaof", "127.0.0.1", &m.to_string(), "--masteruser", "qala", "--masterauth", "s3cret-pass"],
    );
    wait_for("replica in sync", Duration::from_secs(20), || {
        cli(d.path(), r, true, &["INFO", "replication"]).contains("master_link_status:up").then_some(())
    })
    .unwrap();
    let server = d.path().join("pki/coordinators/redis");
    let conf = d.path().join("sentinel.conf");
    std::fs::write(
        &conf,
        format!(
            "port 0\ntls-port {s}\nbind 127.0.0.1\ndir {dir}\ntls-cert-file {cert}\ntls-key-file {key}\ntls-ca-cert-file {ca}\n\
             tls-auth-clients no\ntls-replication yes\nsentinel monitor qala 127.0.0.1 {m} 1\nsentinel auth-user qala qala\n\
             sentinel auth-pass qala s3cret-pass\nsentinel down-after-milliseconds qala 1000\n",
            dir = d.path().display(),
            cert = server.join("coordinator.pem").display(),
            key = server.join("coordinator-key.pem").display(),
            ca = d.path().join("pki/ca.pem").display(),
        ),
    )
    .unwrap();
    let _sentinel =
        Proc::spawn("sentinel", &which("redis-server").unwrap(), &[conf.display().to_string(), "--sentinel".into()], d.path())
            .unwrap();
    wait_for("sentinel names the master", Duration::from_secs(20), || {
        cli(d.path(), s, false, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "qala"]).contains(&m.to_string()).then_some(())
    })
    .unwrap();
    round_trip(d.path(), &format!("rediss+sentinel://qala@127.0.0.1:{s}/qala"));
}
