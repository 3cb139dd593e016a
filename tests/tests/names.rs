//! A verdict is a function of content and ruleset only: the name a client
//! gives a file never reaches the workers, the rules or the store, and one
//! client is never told another's file names or mail headers.

use qala_tests::{Cluster, eicar, repo_root, sha256_hex};
use serde_json::Value;

fn scan_one(cluster: &Cluster, token: &str, dir: &std::path::Path) -> Value {
    let out = cluster.agent_as(&cluster.url(), token, &["scan", "--json", dir.to_str().unwrap()]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().next().unwrap_or_else(|| panic!("no output: {out:?}"))).unwrap()
}

#[test]
fn same_bytes_under_two_names_get_one_verdict() {
    let cluster = Cluster::start(&repo_root().join("rules"), None, 1).unwrap();
    let program = b"MZ\x90\x00 a harmless stand-in for a program".to_vec();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    std::fs::write(a.path().join("tool.exe"), &program).unwrap();
    std::fs::write(b.path().join("invoice.pdf.exe"), &program).unwrap();

    let first = scan_one(&cluster, "agent", a.path());
    assert_eq!((first["verdict"].as_str(), first["cached"].as_bool()), (Some("clean"), Some(false)), "{first}");
    // The same bytes under a deceptive name: the cluster's verdict is the
    // cached one (content only); the agent's own name check raises it.
    let second = scan_one(&cluster, "agent", b.path());
    assert_eq!((second["verdict"].as_str(), second["cached"].as_bool()), (Some("suspicious"), Some(true)), "{second}");
    assert_eq!(second["detections"][0]["namespace"], "agent");
    assert_eq!(second["detections"][0]["object"], "invoice.pdf.exe");
    // Fresh content under the deceptive name first: the stored verdict is
    // still the content's (clean), so the harmless name gets clean.
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("invoice.pdf.exe"), b"MZ another stand-in").unwrap();
    assert_eq!(scan_one(&cluster, "agent", other.path())["verdict"], "suspicious");
    std::fs::rename(other.path().join("invoice.pdf.exe"), other.path().join("tool.exe")).unwrap();
    let renamed = scan_one(&cluster, "agent", other.path());
    assert_eq!((renamed["verdict"].as_str(), renamed["cached"].as_bool()), (Some("clean"), Some(true)), "{renamed}");
    let out = cluster.agent(&["lookup", "--json", &sha256_hex(b"MZ another stand-in")]).unwrap();
    let looked: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(looked["verdict"], "clean", "{looked}");
}

#[test]
fn one_client_never_sees_another_clients_names_or_mail_headers() {
    let cluster = Cluster::start(&repo_root().join("rules"), None, 1).unwrap();
    cluster.add_token("agent", "second-workstation").unwrap();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    std::fs::write(a.path().join("secret-salaries-ivanov.exe"), eicar()).unwrap();
    std::fs::write(b.path().join("b.com"), eicar()).unwrap();
    let first = scan_one(&cluster, "agent", a.path());
    assert_eq!(first["detections"][0]["object"], "secret-salaries-ivanov.exe", "{first}");
    let second = scan_one(&cluster, "second-workstation", b.path());
    assert_eq!((second["cached"].as_bool(), second["detections"][0]["object"].as_str()), (Some(true), Some("b.com")), "{second}");
    let out = cluster.agent(&["lookup", "--json", &sha256_hex(&eicar())]).unwrap();
    let looked = String::from_utf8_lossy(&out.stdout);
    assert!(looked.contains("malicious") && !looked.contains("secret"), "{looked}");
    // Not in the store at all.
    let store = std::fs::read(cluster.dir.path().join("verdicts.redb")).unwrap();
    assert!(!store.windows(15).any(|w| w == b"secret-salaries"), "a client's file name is in the store");
    assert!(!cluster.logs().contains("secret-salaries"), "a client's file name is in a log");

    // A mail's headers are content, but only analysts and admins are shown them.
    let mail = format!(
        "From: hr@example.org\r\nTo: all@example.org\r\nSubject: Q3 layoffs list\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n\
         --b\r\nContent-Type: application/octet-stream; name=x.com\r\nContent-Disposition: attachment; filename=x.com\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{}\r\n--b--\r\n",
        base64_of(&eicar())
    );
    let m = tempfile::tempdir().unwrap();
    std::fs::write(m.path().join("mail.eml"), &mail).unwrap();
    let scanned = scan_one(&cluster, "agent", m.path());
    assert_eq!(scanned["verdict"], "malicious", "{scanned}");
    assert_eq!(scanned["object_meta"], serde_json::json!([]), "an agent was shown mail headers: {scanned}");
    let sha = sha256_hex(mail.as_bytes());
    let as_admin = cluster.agent_as(&cluster.url(), "admin", &["lookup", "--json", &sha]).unwrap();
    assert!(String::from_utf8_lossy(&as_admin.stdout).contains("Q3 layoffs"), "{as_admin:?}");
    let as_agent = cluster.agent(&["lookup", "--json", &sha]).unwrap();
    assert!(!String::from_utf8_lossy(&as_agent.stdout).contains("Q3 layoffs"), "{as_agent:?}");
}

fn base64_of(data: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Scan limits and alert flags are cluster policy: set on the coordinator,
/// shipped with the rules (workers take no such flags) and part of the
/// ruleset id, so a policy change is a new ruleset.
#[test]
fn scan_policy_is_set_on_the_coordinator_and_names_the_ruleset() {
    let rules = repo_root().join("rules");
    let nested = qala_tests::zip_of(&[("inner.zip", &qala_tests::zip_of(&[("eicar.com", &eicar())]))]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("nested.zip"), &nested).unwrap();

    let plain = Cluster::start(&rules, None, 1).unwrap();
    let (_, lines) = plain.scan(&[dir.path()]).unwrap();
    assert_eq!(lines[0]["verdict"], "malicious", "{}", lines[0]);
    let plain_id = plain.status().unwrap()["rules"]["ruleset_id"].as_str().unwrap().to_string();

    let options = qala_tests::Options {
        coordinator_args: ["--max-depth", "1", "--alert-exceeded"].map(String::from).to_vec(),
        ..Default::default()
    };
    let strict = Cluster::start_with(&rules, None, 1, options).unwrap();
    let (_, lines) = strict.scan(&[dir.path()]).unwrap();
    // The worker never saw a flag: the depth cap and the alert came with the rules.
    assert_eq!(lines[0]["verdict"], "suspicious", "{}", lines[0]);
    assert_eq!(lines[0]["limits_hit"][0]["limit"], "max_depth", "{}", lines[0]);
    let strict_id = strict.status().unwrap()["rules"]["ruleset_id"].as_str().unwrap().to_string();
    assert_ne!(plain_id, strict_id, "a policy change is a new ruleset");

    let refused = std::process::Command::new(qala_tests::bin("qala-worker")).args(["--max-depth", "3"]).output().unwrap();
    assert!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("--max-depth"));
}
