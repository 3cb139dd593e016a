//! The console's sessions on the REST listener, as a browser and an
//! attacker would use them (curl on real processes): login with an
//! analyst or admin token sets a `__Host-` cookie (Secure, HttpOnly,
//! SameSite=Strict) holding a session id, never the token; an agent's or
//! an unknown token is refused and audited; the cookie works for reads;
//! a write with the cookie needs the CSRF header and a same-site origin;
//! logout, idle expiry and a revoked token end the session; a second
//! coordinator on the same Redis knows the session; every answer carries
//! the security headers.

use qala_tests::{Cluster, Options, Redis, coordinator_command, free_port, repo_root, wait_for};
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;

struct Answer {
    code: u16,
    headers: HashMap<String, Vec<String>>,
    body: Value,
}

/// `METHOD url` with `headers` and `body`: status, headers (lower-case
/// names) and JSON body.
fn http(cluster: &Cluster, method: &str, url: &str, headers: &[(&str, &str)], body: Option<&str>) -> Answer {
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sS", "-D", "-", "-X", method, "--cacert"]).arg(cluster.ca());
    for (k, v) in headers {
        cmd.arg("-H").arg(format!("{k}: {v}"));
    }
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data-binary", b]);
    }
    let out = cmd.arg(url).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let code = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|c| c.parse().ok()).unwrap_or(0);
    let mut map: HashMap<String, Vec<String>> = HashMap::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            map.entry(k.trim().to_ascii_lowercase()).or_default().push(v.trim().to_string());
        }
    }
    Answer { code, headers: map, body: serde_json::from_str(body.trim()).unwrap_or(Value::Null) }
}

fn token(cluster: &Cluster, name: &str) -> String {
    std::fs::read_to_string(cluster.token_file(name)).unwrap().trim().to_string()
}

/// Log in as token `name` at `base`: the Set-Cookie line and the session id.
fn login(cluster: &Cluster, base: &str, name: &str) -> (String, String) {
    let body = serde_json::json!({"token": token(cluster, name)}).to_string();
    let a = http(cluster, "POST", &format!("{base}/v1/session"), &[], Some(&body));
    assert_eq!(a.code, 200, "login as {name}: {}", a.body);
    let set = a.headers["set-cookie"][0].clone();
    let id = set.split(';').next().unwrap().split_once('=').unwrap().1.to_string();
    (set, id)
}

fn with_cookie(id: &str) -> String {
    format!("__Host-qala_session={id}")
}

#[test]
fn console_sessions_are_cookies_that_hold_no_token_and_refuse_cross_site_writes() {
    let redis_dir = tempfile::tempdir().unwrap();
    let redis = Redis::start(redis_dir.path()).unwrap();
    let (port, port2) = (free_port(), free_port());
    let mut options = Options::default();
    options.coordinator_args.extend(["--http-listen".to_string(), format!("127.0.0.1:{port}")]);
    options.coordinator_args.extend(["--session-idle-secs", "4"].map(String::from));
    let mut cluster = Cluster::start_with(&repo_root().join("rules"), Some(&redis.url()), 1, options).unwrap();
    cluster.wait_ready(1).unwrap();
    cluster.add_token("analyst", "ana").unwrap();
    let base = format!("https://127.0.0.1:{port}");

    // Login: the cookie is the session id, never the token.
    let (set, id) = login(&cluster, &base, "ana");
    for part in ["__Host-qala_session=", "Path=/", "Secure", "HttpOnly", "SameSite=Strict", "Max-Age="] {
        assert!(set.contains(part), "{set}");
    }
    assert!(!set.contains("Domain"), "{set}");
    assert!(!set.contains(&token(&cluster, "ana")) && !id.contains(&token(&cluster, "ana")[5..]), "{set}");
    assert!(id.len() >= 64, "a long random id: {set}");
    let me = http(&cluster, "GET", &format!("{base}/v1/session"), &[("Cookie", &with_cookie(&id))], None);
    assert_eq!(
        (me.code, me.body["role"].as_str(), me.body["via"].as_str()),
        (200, Some("analyst"), Some("session")),
        "{}",
        me.body
    );
    // Reads with the cookie, and the security headers on every answer.
    let cluster_view = http(&cluster, "GET", &format!("{base}/v1/cluster"), &[("Cookie", &with_cookie(&id))], None);
    assert_eq!(cluster_view.code, 200, "{}", cluster_view.body);
    for (k, v) in [
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("x-frame-options", "DENY"),
        ("cache-control", "no-store"),
    ] {
        assert_eq!(cluster_view.headers.get(k).map(|v| v[0].as_str()), Some(v), "{k}: {:?}", cluster_view.headers);
    }
    let csp = &cluster_view.headers["content-security-policy"][0];
    assert!(csp.contains("default-src 'none'") && !csp.contains("unsafe"), "{csp}");
    // The session's role holds: an analyst may not write IOC lists.
    let sha = "ab".repeat(32);
    let ioc = serde_json::json!({"list": "block", "entries": [{"kind": "sha256", "digest": sha}]}).to_string();
    let denied =
        http(&cluster, "POST", &format!("{base}/v1/iocs"), &[("Cookie", &with_cookie(&id)), ("x-qala-csrf", "1")], Some(&ioc));
    assert_eq!(denied.code, 403, "{}", denied.body);

    // The console's own doors refuse what they should: no credentials, a
    // wrong role, a bad filter, a file that is not the console's.
    for path in ["/v1/agents", "/v1/history", "/v1/detections/stream"] {
        let a = http(&cluster, "GET", &format!("{base}{path}"), &[], None);
        assert_eq!(a.code, 401, "{path} without credentials: {}", a.body);
    }
    let reload =
        http(&cluster, "POST", &format!("{base}/v1/rules/reload"), &[("Cookie", &with_cookie(&id)), ("x-qala-csrf", "1")], None);
    assert_eq!(reload.code, 403, "an analyst may not reload rules: {}", reload.body);
    let level =
        http(&cluster, "GET", &format!("{base}/v1/detections/stream?level=%3Cx%3E"), &[("Cookie", &with_cookie(&id))], None);
    assert_eq!(level.code, 400, "a bad level: {}", level.body);
    let since = http(&cluster, "GET", &format!("{base}/v1/detections/stream?since=soon"), &[("Cookie", &with_cookie(&id))], None);
    assert_eq!(since.code, 400, "a bad since: {}", since.body);
    for path in ["/console/../Cargo.toml", "/console/js/..%2f..%2fsrc%2flib.rs", "/console/nope.js"] {
        let a = http(&cluster, "GET", &format!("{base}{path}"), &[], None);
        assert_eq!(a.code, 404, "{path}: {}", a.body);
    }
    let page = http(&cluster, "GET", &format!("{base}/console/"), &[], None);
    assert_eq!(page.code, 200);
    let csp = &page.headers["content-security-policy"][0];
    assert!(
        csp.contains("script-src 'self'") && csp.contains("require-trusted-types-for 'script'") && !csp.contains("unsafe"),
        "{csp}"
    );

    // Refused at login: an agent token, an unknown token; both audited.
    for (who, code) in [("agent", 403), ("nobody", 401)] {
        let t = if who == "nobody" { format!("qala_{}", "0".repeat(64)) } else { token(&cluster, who) };
        let a = http(&cluster, "POST", &format!("{base}/v1/session"), &[], Some(&serde_json::json!({"token": t}).to_string()));
        assert_eq!(a.code, code, "{who}: {}", a.body);
        assert!(!a.headers.contains_key("set-cookie"), "{who}");
    }
    let audit = cluster.audit();
    assert!(audit.iter().any(|l| l["action"] == "login" || l["event"] == "login"), "a login audited");
    assert_eq!(audit.iter().filter(|l| l["event"] == "login_failed").count(), 2, "{audit:?}");
    assert!(
        !audit.iter().any(|l| l.to_string().contains(&id) || l.to_string().contains(&token(&cluster, "ana"))),
        "no session id or token in the audit log"
    );

    // Writes with the cookie: the CSRF header and a same-site origin.
    let (_, admin) = login(&cluster, &base, "admin");
    let url = format!("{base}/v1/iocs");
    let c = with_cookie(&admin);
    let forged = http(&cluster, "POST", &url, &[("Cookie", &c)], Some(&ioc));
    assert_eq!(forged.code, 403, "no CSRF header: {}", forged.body);
    let other =
        http(&cluster, "POST", &url, &[("Cookie", &c), ("x-qala-csrf", "1"), ("Origin", "https://evil.example")], Some(&ioc));
    assert_eq!(other.code, 403, "another origin: {}", other.body);
    let site =
        http(&cluster, "POST", &url, &[("Cookie", &c), ("x-qala-csrf", "1"), ("Sec-Fetch-Site", "cross-site")], Some(&ioc));
    assert_eq!(site.code, 403, "cross-site: {}", site.body);
    let scan = http(&cluster, "POST", &format!("{base}/v1/scan"), &[("Cookie", &c), ("Content-Type", "text/plain")], Some("x"));
    assert_eq!(scan.code, 403, "a form-like scan body with the cookie: {}", scan.body);
    let ok = http(&cluster, "POST", &url, &[("Cookie", &c), ("x-qala-csrf", "1"), ("Origin", &base)], Some(&ioc));
    assert_eq!(ok.code, 200, "{}", ok.body);
    let login_elsewhere = http(
        &cluster,
        "POST",
        &format!("{base}/v1/session"),
        &[("Origin", "https://evil.example")],
        Some(&serde_json::json!({"token": token(&cluster, "ana")}).to_string()),
    );
    assert_eq!(login_elsewhere.code, 403, "a login posted from another site: {}", login_elsewhere.body);

    // Another coordinator on the same store knows the session.
    let mut o2 = vec!["--http-listen".to_string(), format!("127.0.0.1:{port2}")];
    o2.extend(["--session-idle-secs", "4"].map(String::from));
    cluster.add_coordinator_with(&o2).unwrap();
    let base2 = format!("https://127.0.0.1:{port2}");
    let there = wait_for("the second coordinator's REST", Duration::from_secs(30), || {
        let a = http(&cluster, "GET", &format!("{base2}/v1/session"), &[("Cookie", &with_cookie(&id))], None);
        (a.code != 0).then_some(a)
    })
    .unwrap();
    assert_eq!((there.code, there.body["name"].as_str()), (200, Some("ana")), "{}", there.body);

    // The live feed at the second coordinator shows a detection stored
    // through the first (read from the store), and its cluster view lists
    // the first one's worker with the worker's own load.
    let mut stream = std::process::Command::new("curl")
        .args(["-sS", "-N", "--max-time", "30", "--cacert"])
        .arg(cluster.ca())
        .args(["-H", &format!("Cookie: {}", with_cookie(&id))])
        .arg(format!("{base2}/v1/detections/stream?level=malicious&since={}", qala_common::now_ms()))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let sample =
        qala_tests::zip_of(&[("eicar.com", &qala_tests::eicar()), ("noise.bin", &qala_tests::pseudo_random(0xfeed, 4096))]);
    let sample_path = cluster.dir.path().join("stream-sample.zip");
    std::fs::write(&sample_path, &sample).unwrap();
    let sha = qala_tests::sha256_hex(&sample);
    let t0 = std::time::Instant::now();
    let (code, _) = cluster.scan_at(&cluster.url(), &[&sample_path]).unwrap();
    assert_eq!(code, 1, "a detection");
    let scanned = t0.elapsed();
    let mut seen = None;
    for line in std::io::BufRead::lines(std::io::BufReader::new(stream.stdout.take().unwrap())) {
        let line = line.unwrap();
        if line.starts_with("data:") && line.contains(&sha) {
            let event: Value = serde_json::from_str(line.trim_start_matches("data:").trim()).unwrap();
            assert_eq!(event["verdict"], "malicious", "{event}");
            seen = Some(t0.elapsed());
            break;
        }
    }
    let _ = stream.kill();
    let _ = stream.wait();
    let seen = seen.expect("the detection in the second coordinator's live feed");
    eprintln!("live feed at the other coordinator: scan answered after {scanned:?}, event after {seen:?}");
    let (w_id, w_bytes) =
        wait_for("the first coordinator's worker, with its load, at the second", Duration::from_secs(20), || {
            let c = http(&cluster, "GET", &format!("{base2}/v1/cluster"), &[("Cookie", &with_cookie(&id))], None);
            let w = c.body["workers"].as_array()?.first()?.clone();
            (w["bytes_scanned"].as_u64()? > 0 && w["p99_ms"].as_f64()? > 0.0)
                .then(|| (w["worker_id"].clone(), w["bytes_scanned"].clone()))
        })
        .unwrap();
    eprintln!("second coordinator lists worker {w_id} with {w_bytes} bytes scanned");

    // Logout ends it everywhere (within the 2 s a session is cached).
    let out =
        http(&cluster, "DELETE", &format!("{base}/v1/session"), &[("Cookie", &with_cookie(&admin)), ("x-qala-csrf", "1")], None);
    assert_eq!(out.code, 204);
    assert!(out.headers["set-cookie"][0].contains("Max-Age=0"));
    for b in [&base, &base2] {
        wait_for("the logged-out session refused", Duration::from_secs(10), || {
            (http(&cluster, "GET", &format!("{b}/v1/session"), &[("Cookie", &with_cookie(&admin))], None).code == 401)
                .then_some(())
        })
        .unwrap();
    }

    // A revoked token ends its sessions within seconds.
    let t0 = std::time::Instant::now();
    let (_, ana2) = login(&cluster, &base, "ana");
    coordinator_command(&["token", "revoke", "ana", "--store", &redis.url()]).unwrap();
    wait_for("the revoked token's session refused", Duration::from_secs(30), || {
        (http(&cluster, "GET", &format!("{base}/v1/cluster"), &[("Cookie", &with_cookie(&ana2))], None).code == 401).then_some(())
    })
    .unwrap();
    eprintln!("revoked token -> its session refused: {:?}", t0.elapsed());

    // Idle expiry: unused for 4 s, the session is gone.
    cluster.add_token("analyst", "ana-b").unwrap();
    let (_, idle) = login(&cluster, &base, "ana-b");
    // In use every second for 7 s: it outlives its 4 s idle time.
    for _ in 0..7 {
        assert_eq!(http(&cluster, "GET", &format!("{base}/v1/session"), &[("Cookie", &with_cookie(&idle))], None).code, 200);
        std::thread::sleep(Duration::from_secs(1));
    }
    std::thread::sleep(Duration::from_secs(5));
    let expired = http(&cluster, "GET", &format!("{base}/v1/session"), &[("Cookie", &with_cookie(&idle))], None);
    assert_eq!(expired.code, 401, "{}", expired.body);
    // A forged cookie is just unknown.
    let forged = http(&cluster, "GET", &format!("{base}/v1/session"), &[("Cookie", &with_cookie(&"f".repeat(64)))], None);
    assert_eq!(forged.code, 401);
}
