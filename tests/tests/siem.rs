//! SIEM export against a local syslog listener and an HTTP receiver:
//! detections and agent actions arrive as RFC 5424 frames and JSON POSTs,
//! a receiver that fails is retried, and a dead one costs a bounded queue.

use qala_proto::v1 as pb;
use qala_tests::{Cluster, Options, coordinator_command, eicar, free_port, repo_root, sha256_hex, wait_for};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Collect octet-counted syslog frames from every connection.
fn syslog_listener() -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let frames = Arc::new(Mutex::new(Vec::new()));
    let out = frames.clone();
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            let out = out.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(conn);
                loop {
                    let mut len = Vec::new();
                    if r.read_until(b' ', &mut len).unwrap_or(0) == 0 {
                        return;
                    }
                    let n: usize = String::from_utf8_lossy(&len).trim().parse().unwrap();
                    let mut msg = vec![0u8; n];
                    r.read_exact(&mut msg).unwrap();
                    out.lock().unwrap().push(String::from_utf8(msg).unwrap());
                }
            });
        }
    });
    (port, frames)
}

/// An HTTP receiver that answers 500 to its first request and 200 after;
/// every request body kept.
/// (request line, body) of each request received.
type Requests = Arc<Mutex<Vec<(String, String)>>>;

fn http_receiver() -> (u16, Requests) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let out = got.clone();
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            let mut r = BufReader::new(conn);
            let mut head = String::new();
            let mut len = 0;
            loop {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                if line == "\r\n" || line.is_empty() {
                    break;
                }
                head.push_str(&line);
            }
            let mut body = vec![0u8; len];
            r.read_exact(&mut body).unwrap();
            let first = out.lock().unwrap().is_empty();
            out.lock().unwrap().push((head.lines().next().unwrap_or("").to_string(), String::from_utf8(body).unwrap()));
            let status = if first { "500 Internal Server Error" } else { "200 OK" };
            let _ = r.get_mut().write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes());
        }
    });
    (port, got)
}

#[tokio::test(flavor = "multi_thread")]
async fn detections_and_agent_actions_reach_syslog_and_a_webhook_with_retry() {
    let (syslog, frames) = syslog_listener();
    let (hook, posts) = http_receiver();
    let mut options = Options::default();
    options.coordinator_args.extend(
        [
            "--siem-syslog",
            &format!("tcp://127.0.0.1:{syslog}"),
            "--siem-webhook",
            &format!("http://127.0.0.1:{hook}/qala/events"),
        ]
        .map(String::from),
    );
    let cluster = Cluster::start_with(&repo_root().join("rules"), None, 1, options).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("eicar.com"), eicar()).unwrap();
    std::fs::write(dir.path().join("clean.txt"), b"nothing to see").unwrap();
    let (code, _) = cluster.scan(&[dir.path()]).unwrap();
    assert_eq!(code, 1);

    // An agent's action report.
    let channel = cluster.channel(&cluster.url()).await;
    let token = qala_tls::BearerToken::new(Some(&cluster.token("agent"))).unwrap();
    let mut agents = pb::agents_client::AgentsClient::with_interceptor(channel, token);
    let action = pb::AgentAction {
        action: "quarantine".into(),
        path: "/home/u/eicar.com".into(),
        sha256: sha256_hex(&eicar()),
        verdict: "malicious".into(),
        rules: vec!["eicar.EICAR_Test_File".into()],
        at_ms: 1_795_800_000_000,
        detail: "q-1".into(),
    };
    agents.report_actions(pb::ReportActionsRequest { actions: vec![action] }).await.unwrap();

    let frames = wait_for("two syslog frames", Duration::from_secs(20), || {
        let f = frames.lock().unwrap().clone();
        (f.len() >= 2).then_some(f)
    })
    .unwrap();
    let detection = frames.iter().find(|f| f.contains(" DETECTION ")).expect("a detection frame");
    assert!(detection.starts_with("<106>1 "), "facility 13, critical: {detection}");
    let json: Value = serde_json::from_str(&detection[detection.find('{').unwrap()..]).unwrap();
    assert_eq!(json["sha256"], sha256_hex(&eicar()));
    assert_eq!(json["detections"][0]["rule"], "EICAR_Test_File");
    assert_eq!(frames.len(), 2, "no event for the clean file: {frames:?}");
    let action = frames.iter().find(|f| f.contains(" AGENT_ACTION ")).expect("an agent action frame");
    assert!(action.starts_with("<109>1 2026-11-27T17:20:00Z ") && action.contains("\"action\":\"quarantine\""), "{action}");

    // The webhook failed once (500) and got the same event again.
    let posts = wait_for("the webhook's retry and the action", Duration::from_secs(30), || {
        let p = posts.lock().unwrap().clone();
        (p.len() >= 3).then_some(p)
    })
    .unwrap();
    assert_eq!(posts[0].0, "POST /qala/events HTTP/1.1");
    assert_eq!(posts[0].1, posts[1].1, "the failed event is sent again, not lost");
    let events: Vec<Value> = posts[1..].iter().map(|(_, b)| serde_json::from_str(b).unwrap()).collect();
    assert_eq!(events.iter().map(|e| e["event"].as_str().unwrap()).collect::<Vec<_>>(), ["detection", "agent_action"]);
}

/// Syslog over TLS to a real TLS server (`openssl s_server`, which prints
/// what it receives) whose certificate comes from a CA given with
/// `--siem-ca`; the same receiver under a CA Qala was not told of gets nothing.
#[test]
fn detections_reach_a_tls_syslog_receiver_it_trusts_only() {
    let dir = tempfile::tempdir().unwrap();
    let serve = |name: &str| {
        let pki = dir.path().join(name);
        coordinator_command(&["pki", "init", &pki.display().to_string()]).unwrap();
        let port = free_port();
        let mut server = std::process::Command::new("openssl")
            .args(["s_server", "-quiet", "-accept", &format!("127.0.0.1:{port}"), "-cert"])
            .arg(pki.join("coordinator.pem"))
            .arg("-key")
            .arg(pki.join("coordinator-key.pem"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("openssl s_server");
        let out = Arc::new(Mutex::new(String::new()));
        let mut stdout = server.stdout.take().unwrap();
        let sink = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    return;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        wait_for("openssl s_server listening", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
        })
        .unwrap();
        (server, port, pki, out)
    };
    // One receiver per sink (s_server serves one connection at a time; the
    // readiness probe's aborted handshake does not stop it).
    let (mut trusted, port, pki, received) = serve("siem-pki");
    let (mut stranger, stranger_port, _, stranger_received) = serve("other-pki");
    let mut options = Options::default();
    let ca = pki.join("ca.pem").display().to_string();
    options.coordinator_args.extend(["--siem-syslog", &format!("tls://127.0.0.1:{port}"), "--siem-ca", &ca].map(String::from));
    let cluster = Cluster::start_with(&repo_root().join("rules"), None, 1, options).unwrap();
    let mut options = Options::default();
    options
        .coordinator_args
        .extend(["--siem-syslog", &format!("tls://127.0.0.1:{stranger_port}"), "--siem-ca", &ca].map(String::from));
    let untrusting = Cluster::start_with(&repo_root().join("rules"), None, 1, options).unwrap();
    std::fs::write(dir.path().join("eicar.com"), eicar()).unwrap();
    assert_eq!(cluster.scan(&[&dir.path().join("eicar.com")]).unwrap().0, 1);
    assert_eq!(untrusting.scan(&[&dir.path().join("eicar.com")]).unwrap().0, 1);

    let text = wait_for("a detection over TLS", Duration::from_secs(20), || {
        let t = received.lock().unwrap().clone();
        t.contains(" DETECTION ").then_some(t)
    })
    .unwrap();
    let frame = &text[text.find("<106>1 ").expect("an RFC 5424 frame")..];
    assert!(frame.contains(&sha256_hex(&eicar())) && frame.contains("EICAR_Test_File"), "{frame}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(stranger_received.lock().unwrap().as_str(), "", "a receiver Qala does not trust gets nothing");
    let _ = trusted.kill();
    let _ = stranger.kill();
    let _ = (trusted.wait(), stranger.wait());
}

#[test]
fn a_dead_receiver_costs_a_bounded_queue_not_the_scans() {
    let dead = free_port();
    let http = free_port();
    let mut options = Options::default();
    options.coordinator_args.extend(
        [
            "--siem-webhook",
            &format!("http://127.0.0.1:{dead}/"),
            "--siem-queue",
            "2",
            "--http-listen",
            &format!("127.0.0.1:{http}"),
        ]
        .map(String::from),
    );
    let cluster = Cluster::start_with(&repo_root().join("rules"), None, 1, options).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let inner = qala_tests::zip_of(&[("e.com", &eicar())]);
    for i in 0..5u8 {
        // Five different detected files.
        std::fs::write(dir.path().join(format!("{i}.zip")), [inner.as_slice(), &[i; 1]].concat()).unwrap();
    }
    let (code, lines) = cluster.scan(&[dir.path()]).unwrap();
    assert_eq!(code, 1);
    assert!(lines.iter().all(|l| l["verdict"] == "malicious"), "{lines:?}");
    cluster.add_token("metrics", "prom").unwrap();
    let out = std::process::Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(cluster.ca())
        .arg("-H")
        .arg(format!("Authorization: Bearer {}", cluster.token("prom")))
        .arg(format!("https://127.0.0.1:{http}/metrics"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let value = |name: &str| -> i64 {
        text.lines().find(|l| l.starts_with(&format!("{name} "))).and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap()
    };
    assert_eq!((value("qala_siem_events_sent"), value("qala_siem_events_dropped")), (0, 3), "{text}");
}

/// A valid agent token that forges action reports by the thousand is held
/// to its rate, and what it does get in cannot push a detection out of the
/// queue of a lagging SIEM: detections wait ahead of action reports and are
/// dropped last. An admin token's IOC list writes have a rate too.
#[tokio::test(flavor = "multi_thread")]
async fn forged_action_reports_are_rate_limited_and_never_push_detections_out() {
    let hook = free_port(); // nothing listens yet: the SIEM lags
    let mut options = Options::default();
    options.coordinator_args.extend(
        [
            "--siem-webhook",
            &format!("http://127.0.0.1:{hook}/events"),
            "--siem-queue",
            "20",
            "--agent-actions-rate",
            "100",
            "--ioc-write-rate",
            "3",
        ]
        .map(String::from),
    );
    let cluster = Cluster::start_with(&repo_root().join("rules"), None, 1, options).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("eicar.com"), eicar()).unwrap();
    assert_eq!(cluster.scan(&[dir.path()]).unwrap().0, 1);

    let channel = cluster.channel(&cluster.url()).await;
    let token = qala_tls::BearerToken::new(Some(&cluster.token("agent"))).unwrap();
    let mut agents = pb::agents_client::AgentsClient::with_interceptor(channel.clone(), token);
    let forged = |n: usize| {
        (0..n)
            .map(|i| pb::AgentAction { action: "quarantine".into(), path: format!("/forged/{i}"), ..Default::default() })
            .collect::<Vec<_>>()
    };
    let ok = agents.report_actions(pb::ReportActionsRequest { actions: forged(60) }).await.unwrap();
    assert_eq!(ok.into_inner().recorded, 60);
    let ok = agents.report_actions(pb::ReportActionsRequest { actions: forged(40) }).await.unwrap();
    assert_eq!(ok.into_inner().recorded, 40);
    let busy = agents.report_actions(pb::ReportActionsRequest { actions: forged(10) }).await.unwrap_err();
    assert_eq!(busy.code(), tonic::Code::ResourceExhausted, "{busy:?}");
    assert!(busy.message().contains("more than 100 actions a minute"), "{busy:?}");
    let hint: u64 = busy.metadata().get("retry-after-ms").unwrap().to_str().unwrap().parse().unwrap();
    assert!((5_000..=7_000).contains(&hint), "10 actions at 100 a minute come back in about 6 s: {hint}");

    // IOC writes: 3 a minute for this admin token.
    let admin_token = qala_tls::BearerToken::new(Some(&cluster.token("admin"))).unwrap();
    let mut admin = pb::admin_client::AdminClient::with_interceptor(channel, admin_token);
    for i in 0..3 {
        let text = format!("{:064x} forged-{i}\n", i + 1);
        admin.add_iocs(pb::AddIocsRequest { list: "block".into(), text }).await.unwrap();
    }
    let busy = admin.add_iocs(pb::AddIocsRequest { list: "block".into(), text: format!("{:064x}\n", 9) }).await.unwrap_err();
    assert_eq!(busy.code(), tonic::Code::ResourceExhausted, "{busy:?}");
    assert!(busy.message().contains("IOC list writes a minute"), "{busy:?}");

    // The SIEM comes back: the detection is still queued, and goes first.
    let listener = TcpListener::bind(("127.0.0.1", hook)).unwrap();
    let got: Requests = Arc::new(Mutex::new(Vec::new()));
    let out = got.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut r = BufReader::new(conn);
            'conn: loop {
                let mut len = 0;
                let mut first = String::new();
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        break 'conn;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                    if line == "\r\n" {
                        break;
                    }
                    if first.is_empty() {
                        first = line;
                    }
                }
                let mut body = vec![0u8; len];
                r.read_exact(&mut body).unwrap();
                out.lock().unwrap().push((first, String::from_utf8(body).unwrap()));
                let _ = r.get_mut().write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
            }
        }
    });
    let events = wait_for("the queue sent", Duration::from_secs(90), || {
        let p = got.lock().unwrap().clone();
        (p.len() >= 20).then_some(p)
    })
    .unwrap();
    let kinds: Vec<String> =
        events.iter().map(|(_, b)| serde_json::from_str::<Value>(b).unwrap()["event"].as_str().unwrap().to_string()).collect();
    assert_eq!(kinds[0], "detection", "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| *k == "detection").count(), 1);
    assert_eq!(kinds.len(), 20, "the queue held 20 events: {kinds:?}");
}
