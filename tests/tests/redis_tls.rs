//! The Redis store over TLS with an ACL user: `rediss://`, the server's CA
//! and the password given apart from the spec (a file named in the
//! environment), for the coordinator and for `token` commands alike.
//! (Its own test binary: it sets the environment its processes inherit.)

use qala_coordinator::store::{RedisStore, VerdictStore};
use qala_tests::{Cluster, Proc, coordinator_command, eicar, free_port, repo_root, wait_for, which};
use std::time::Duration;

#[test]
fn redis_over_tls_with_an_acl_user() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    coordinator_command(&["pki", "init", pki.to_str().unwrap()]).unwrap();
    // A server certificate for Redis from the same CA (any qala leaf is one).
    let server = coordinator_command(&["pki", "coordinator", pki.to_str().unwrap(), "redis", "--host", "127.0.0.1"]).unwrap();
    let server = std::path::PathBuf::from(server.trim());
    let port = free_port();
    let args: Vec<String> = [
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
        dir.path().to_str().unwrap(),
        "--tls-cert-file",
        server.join("coordinator.pem").to_str().unwrap(),
        "--tls-key-file",
        server.join("coordinator-key.pem").to_str().unwrap(),
        "--tls-ca-cert-file",
        pki.join("ca.pem").to_str().unwrap(),
        "--tls-auth-clients",
        "no",
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
    let redis = which("redis-server").expect("redis-server");
    let _redis = Proc::spawn("redis-tls", &redis, &args, dir.path()).unwrap();
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
