//! The agent binary never fails silently: every file gets a line, errors
//! give exit code 2.

use std::process::Command;

fn dead_server() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!("https://127.0.0.1:{port}")
}

#[test]
fn unreachable_server_reports_each_file_and_exits_2() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("a.txt"), "a").unwrap();
    std::fs::write(d.path().join("b.txt"), "b").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_qala-agent"))
        .args(["--server", &dead_server(), "scan", "--json", d.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    for l in lines {
        assert_eq!(l["verdict"], "error");
        assert!(!l["error"].as_str().unwrap().is_empty());
    }
}

#[test]
fn lookup_rejects_malformed_digests() {
    let out =
        Command::new(env!("CARGO_BIN_EXE_qala-agent")).args(["--server", &dead_server(), "lookup", "xyz"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a sha256"));
}
