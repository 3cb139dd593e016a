//! The coordinator binary refuses bad start-up input with a clear message.

use std::process::Command;

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_qala-coordinator")).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn missing_rules_path_is_a_clear_error() {
    let (code, err) =
        run(&["--listen", "127.0.0.1:0", "--rules", "/nonexistent/rules", "--store", "embedded:/tmp/qala-cli-test.redb"]);
    assert_ne!(code, 0);
    assert!(err.contains("/nonexistent/rules"), "{err}");
}

#[test]
fn broken_rules_at_start_name_the_file() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("ok.yar"), "rule ok { condition: true }").unwrap();
    std::fs::write(d.path().join("bad.yar"), "rule bad { condition: what_is_this }").unwrap();
    let store = format!("embedded:{}", d.path().join("v.redb").display());
    let (code, err) = run(&["--listen", "127.0.0.1:0", "--rules", d.path().to_str().unwrap(), "--store", &store]);
    assert_ne!(code, 0);
    assert!(err.contains("bad.yar") && err.contains("what_is_this"), "{err}");
}

#[test]
fn unreachable_redis_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/../rules");
    let (code, err) = run(&["--listen", "127.0.0.1:0", "--rules", rules, "--store", &format!("redis://127.0.0.1:{port}")]);
    assert_ne!(code, 0);
    assert!(err.contains("redis"), "{err}");
}
