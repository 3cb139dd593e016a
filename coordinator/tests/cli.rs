//! The coordinator binary refuses bad start-up input with a clear message,
//! and starts degraded when only the verdict store is missing.

use std::process::Command;

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_qala-coordinator")).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn missing_rules_path_is_a_clear_error() {
    let (code, err) = run(&[
        "--insecure",
        "--listen",
        "127.0.0.1:0",
        "--cluster-listen",
        "127.0.0.1:0",
        "--rules",
        "/nonexistent/rules",
        "--store",
        "embedded:/tmp/qala-cli-test.redb",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("/nonexistent/rules"), "{err}");
}

#[test]
fn broken_rules_at_start_name_the_file() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("ok.yar"), "rule ok { condition: true }").unwrap();
    std::fs::write(d.path().join("bad.yar"), "rule bad { condition: what_is_this }").unwrap();
    let store = format!("embedded:{}", d.path().join("v.redb").display());
    let (code, err) = run(&[
        "--insecure",
        "--listen",
        "127.0.0.1:0",
        "--cluster-listen",
        "127.0.0.1:0",
        "--rules",
        d.path().to_str().unwrap(),
        "--store",
        &store,
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("bad.yar") && err.contains("what_is_this"), "{err}");
}

/// Redis down at start is not fatal: the coordinator says so and starts
/// degraded (scanning without the cache until Redis answers).
#[test]
fn unreachable_redis_starts_degraded_with_a_clear_warning() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/../rules");
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("stderr.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_qala-coordinator"))
        .args(["--insecure", "--listen", "127.0.0.1:0", "--cluster-listen", "127.0.0.1:0", "--rules", rules])
        .args(["--store", &format!("redis://127.0.0.1:{port}"), "--auth-cache", d.path().join("auth.json").to_str().unwrap()])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("coordinator listening") || std::time::Instant::now() > deadline {
            break text;
        }
        assert!(child.try_wait().unwrap().is_none(), "the coordinator exited: {text}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(text.contains("verdict store unreachable at start") && text.contains(&port.to_string()), "{text}");
    assert!(text.contains("coordinator listening"), "{text}");
}
