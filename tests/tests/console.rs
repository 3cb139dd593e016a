//! The analyst console in a real browser: a cluster (coordinator with its
//! REST listener over TLS, two workers) with data an analyst would look
//! at, then tests/browser/console.mjs drives Debian's Chromium through it
//! with playwright-core: logins refused and accepted, the file page of a
//! zip found by its md5 (EICAR at its path in the tree, the agent that
//! holds it), the live feed, the fleet and health pages, admin buttons
//! and CSRF, hostile names rendered as text, the Azerbaijani catalog.
//! Any dialog or Content-Security-Policy violation fails it. Screenshots
//! are kept under `$CARGO_TARGET_DIR/qala-artifacts/console/`.

use qala_proto::v1 as pb;
use qala_tests::fleet::agent;
use qala_tests::{Cluster, Options, eicar, free_port, repo_root, sha256_hex, wait_for, zip_of};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const MARKER: &str = "QALA-CONSOLE-MARKER";

/// Names an attacker picks: markup, a `javascript:` URL, bidi overrides
/// and isolates, zero-width and control characters.
const HOSTILE: &[&str] = &[
    "<img src=x onerror=alert(1)>.txt",
    "javascript:alert(document.domain)",
    "invoice\u{202E}fdp.exe",
    "bell\u{7}esc\u{1b}[31mred.txt",
    "<script>alert(2)</script>.js",
    "\u{2066}isolate\u{2069}zero\u{200B}width.txt",
];

fn md5_hex(path: &Path) -> String {
    let out = Command::new("md5sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().to_string()
}

fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| repo_root().join("target"));
    target.join("qala-artifacts").join("console")
}

/// The rules: the repository's, a marker rule whose meta is hostile, and a
/// file with a compiler warning at a known line.
fn rules(dir: &Path) -> (PathBuf, u32) {
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    for e in std::fs::read_dir(repo_root().join("rules")).unwrap().flatten() {
        std::fs::copy(e.path(), rules.join(e.file_name())).unwrap();
    }
    std::fs::write(
        rules.join("console_marker.yar"),
        format!(
            "rule Console_Marker {{\n  meta:\n    description = \"<script>alert(3)</script> report\u{202E}fdp.exe\"\n    \
             author = \"javascript:alert(4)\"\n    mitre_attack = \"T1204.002\"\n    severity = \"malicious\"\n  \
             strings:\n    $m = \"{MARKER}\"\n  condition:\n    $m\n}}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        rules.join("slow.yar"),
        "rule Slow_One {\n  strings:\n    $a = \"x\"\n  condition:\n    $a and filesize == 0\n}\n",
    )
    .unwrap();
    (rules, 3)
}

/// The browser's packages: `npm ci` from the pinned lockfile when missing.
fn node_modules() -> PathBuf {
    let dir = repo_root().join("tests/browser");
    if !dir.join("node_modules/playwright-core").exists() {
        let st = Command::new("npm").args(["ci", "--no-audit", "--no-fund"]).current_dir(&dir).status().expect("npm");
        assert!(st.success(), "npm ci in tests/browser");
    }
    dir
}

#[test]
fn the_console_in_chromium() {
    let browser = node_modules();
    let tmp = tempfile::tempdir().unwrap();
    let (rules_dir, warning_line) = rules(tmp.path());
    let port = free_port();
    let mut options = Options::default();
    options.coordinator_args.extend(["--http-listen".to_string(), format!("127.0.0.1:{port}")]);
    let cluster = Cluster::start_with(&rules_dir, None, 2, options).unwrap();
    let base = format!("https://127.0.0.1:{port}");
    let url = cluster.url();
    cluster.add_token("analyst", "ana").unwrap();
    cluster.add_token("agent", "holder-1").unwrap();
    let token = |name: &str| std::fs::read_to_string(cluster.token_file(name)).unwrap().trim().to_string();

    // A zip holding a zip holding EICAR, and members with hostile names.
    let inner = zip_of(&[("eicar.com", &eicar())]);
    let hostile: Vec<(String, Vec<u8>)> =
        HOSTILE.iter().enumerate().map(|(i, n)| (n.to_string(), format!("{MARKER} member {i}\n").into_bytes())).collect();
    let mut entries: Vec<(&str, &[u8])> = vec![("inner.zip", &inner)];
    entries.extend(hostile.iter().map(|(n, d)| (n.as_str(), d.as_slice())));
    let outer = zip_of(&entries);
    let outer_path = tmp.path().join("outer.zip");
    std::fs::write(&outer_path, &outer).unwrap();
    let zip_sha = sha256_hex(&outer);

    // An agent that holds it (a service: it scans its home at start).
    let holder = agent(&cluster, &url, "holder-1", &[("outer.zip", &outer)], "", "report");
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string();

    // A mail with a hostile subject, scanned by the CLI agent.
    let subject = "<b>Invoice</b> \u{202E}fdp.exe";
    let mail = format!(
        "From: a@example.org\r\nTo: b@example.org\r\nSubject: {subject}\r\nDate: Mon, 7 Dec 2026 08:00:00 +0000\r\n\
         Message-ID: <x@example.org>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n{MARKER} in a mail\r\n"
    );
    let mail_path = tmp.path().join("mail.eml");
    std::fs::write(&mail_path, &mail).unwrap();
    let (code, lines) = cluster.scan(&[&mail_path]).unwrap();
    assert_eq!(code, 1, "the mail is a detection: {lines:?}");
    let mail_sha = sha256_hex(mail.as_bytes());

    // Agents whose host names are hostile (checked in by their own tokens).
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut hostile_agents = Vec::new();
    for (i, name) in ["<b>ws</b><img src=x onerror=alert(5)>", "host\u{202E}exe.txt", "zero\u{200B}width", "javascript:alert(6)"]
        .iter()
        .enumerate()
    {
        let id = format!("hostile-{i}");
        cluster.add_token("agent", &id).unwrap();
        let t = token(&id);
        rt.block_on(async {
            let channel = cluster.channel(&url).await;
            let mut client =
                pb::agents_client::AgentsClient::with_interceptor(channel, qala_tls::BearerToken::new(Some(&t)).unwrap());
            let info = pb::AgentInfo { hostname: name.to_string(), os: "Windows 11 <x>".into(), version: "9.9".into() };
            client.checkin(pb::CheckinRequest { info: Some(info), ..Default::default() }).await.unwrap();
        });
        hostile_agents.push(id);
    }

    // The holder's sighting is in the store before the browser looks.
    wait_for("the holder's sighting", Duration::from_secs(20), || {
        let (code, v) = qala_tests::fleet::rest(&cluster, port, "GET", &format!("/v1/sightings/{zip_sha}"), "ana", None);
        (code == 200 && v["holders"].as_array().is_some_and(|h| !h.is_empty())).then_some(())
    })
    .unwrap();
    let mut agents = vec!["holder-1".to_string()];
    agents.extend(hostile_agents.iter().cloned());

    let config = json!({
        "base": base,
        "console": repo_root().join("coordinator/console"),
        "artifacts": artifacts(),
        "marker": MARKER,
        "tokens": {"analyst": token("ana"), "admin": token("admin"), "agent": token("agent")},
        "names": {"analyst": "ana"},
        "zip": {"md5": md5_hex(&outer_path), "sha256": zip_sha, "member": "inner.zip/eicar.com", "member_parent": "inner.zip"},
        "holder": {"agent_id": "holder-1", "hostname": hostname, "holds": [zip_sha]},
        "mail": {"sha256": mail_sha, "subject_plain": "<b>Invoice</b>"},
        "agents": agents,
        "workers": ["w1", "w2"],
        "warning": {"file": "slow.yar", "line": warning_line},
        "hostile": {
            "plain": ["<img src=x onerror=alert(1)>.txt", "javascript:alert(document.domain)", "<script>alert(2)</script>.js",
                      "<script>alert(3)</script> report", "javascript:alert(4)"],
            "codes": ["U+202E", "U+0007", "U+001B", "U+2066", "U+2069", "U+200B"],
            "raw_invisible": ["\u{202E}", "\u{200B}", "\u{2066}"],
            "agents": hostile_agents,
            "plain_hosts": ["<b>ws</b><img src=x onerror=alert(5)>", "javascript:alert(6)"],
            "host_codes": ["U+202E", "U+200B"],
        },
    });
    let config_path = tmp.path().join("console.json");
    std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    let out = Command::new("node")
        .arg(browser.join("console.mjs"))
        .arg(&config_path)
        .env("NODE_EXTRA_CA_CERTS", cluster.ca())
        .current_dir(&browser)
        .output()
        .expect("node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    println!("screenshots: {}", artifacts().display());
    let failed: Vec<&str> = stdout.lines().filter(|l| l.starts_with("not ok")).collect();
    assert!(failed.is_empty() && out.status.success(), "browser cases failed: {failed:#?}\n{stderr}\n{}", cluster.logs());
    let passed = stdout.lines().filter(|l| l.starts_with("ok - ")).count();
    assert!(passed >= 20, "every case ran: {passed} passed\n{stdout}");
    drop(holder);
}
