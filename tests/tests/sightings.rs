//! Sightings and notices on real processes: service agents scan what they
//! hold; the coordinator records which agent holds which content (never a
//! path); `ioc add` reaches the agents that hold the file, and only them,
//! which quarantine it and report the action; analysts read who holds what,
//! agents cannot; an agent with sightings off leaves no record. Embedded
//! store, and Redis with two coordinators (notices cross between them
//! through the store).

use qala_tests::fleet::{agent, events, sightings};
use qala_tests::{Cluster, Options, Redis, coordinator_command, pseudo_random, repo_root, sha256_hex, wait_for};
use serde_json::Value;
use std::time::{Duration, Instant};

fn holders(list: &[Value]) -> Vec<(String, bool, String)> {
    let mut v: Vec<(String, bool, String)> = list
        .iter()
        .map(|h| {
            (
                h["agent_id"].as_str().unwrap().to_string(),
                h["holds"].as_bool().unwrap(),
                h["action"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

fn ioc_add(cluster: &Cluster, url: &str, sha: &str) {
    let (ca, admin) = (cluster.ca().display().to_string(), cluster.token_file("admin").display().to_string());
    coordinator_command(&["ioc", "add", sha, "--name", "Test.Indicator", "--server", url, "--ca", &ca, "--token-file", &admin])
        .unwrap();
}

/// The whole flow on one cluster; `urls` are the coordinators agents and
/// admins use (with two, agents A and B sit on different coordinators
/// from the one the indicator is added at).
fn notices_reach_holders(cluster: &Cluster, urls: &[String], rest: Option<u16>) {
    let (x, y, z) = (pseudo_random(0x51, 3000), pseudo_random(0x52, 3000), pseudo_random(0x53, 3000));
    let (sx, sy, sz) = (sha256_hex(&x), sha256_hex(&y), sha256_hex(&z));
    for (role, name) in
        [("agent", "agent-a"), ("agent", "agent-b"), ("agent", "agent-l"), ("agent", "agent-off"), ("analyst", "analyst")]
    {
        cluster.add_token(role, name).unwrap();
    }
    let url = |i: usize| urls[i % urls.len()].as_str();
    // Every coordinator knows the new tokens (each refreshes its own).
    for u in urls {
        for name in ["agent-a", "agent-b", "agent-l", "agent-off"] {
            wait_for(&format!("{u} to know {name}"), Duration::from_secs(30), || {
                let out = cluster.agent_as(u, name, &["lookup", &"0".repeat(64)]).unwrap();
                (out.status.code() != Some(2)).then_some(())
            })
            .unwrap();
        }
    }
    let a = agent(cluster, url(1), "agent-a", &[("x.bin", &x), ("y.bin", &y)], "", "quarantine");
    // B only reports what is malicious: it keeps holding it.
    let b = agent(cluster, url(1), "agent-b", &[("y.bin", &y)], "", "report");
    let l = agent(cluster, url(0), "agent-l", &[("y.bin", &y)], "lookup_only = true", "quarantine");
    let off = agent(cluster, url(0), "agent-off", &[("x.bin", &x), ("z.bin", &z)], "sightings = false", "quarantine");

    // Who holds what: X on A (and on the agent with sightings off, which
    // is not recorded), Y on A, B and the lookup-only agent, Z nowhere.
    let seen = |sha: &str| holders(&sightings(cluster, url(0), "analyst", sha).unwrap());
    let held = |ids: &[&str]| ids.iter().map(|i| (i.to_string(), true, String::new())).collect::<Vec<_>>();
    wait_for("sightings of X and Y", Duration::from_secs(15), || {
        (seen(&sx) == held(&["agent-a"]) && seen(&sy) == held(&["agent-a", "agent-b", "agent-l"])).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: X {:?} Y {:?}", seen(&sx), seen(&sy)));
    assert!(seen(&sz).is_empty(), "an agent with sightings off leaves no record");
    // Sightings are for analysts and admins: an agent cannot read them.
    let denied = sightings(cluster, url(0), "agent-a", &sx).unwrap_err();
    assert!(denied.contains("PermissionDenied"), "{denied}");
    // No path and no file name reached the coordinator.
    let store_and_logs = std::fs::read_dir(cluster.dir.path())
        .unwrap()
        .flatten()
        // The coordinators' logs, audit logs and store; not the agents' own logs.
        .filter(|e| e.path().is_file() && !e.file_name().to_string_lossy().starts_with("agent-"))
        .map(|e| String::from_utf8_lossy(&std::fs::read(e.path()).unwrap()).into_owned())
        .collect::<String>();
    assert!(!store_and_logs.contains("x.bin") && !store_and_logs.contains("y.bin"), "a file name left an agent");

    // A block entry for X: A, which holds it, quarantines it; nobody else hears of it.
    let t = Instant::now();
    ioc_add(cluster, url(0), &sx);
    let act = wait_for("agent A to quarantine X", Duration::from_secs(60), || a.action_on("x.bin"))
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", a.proc.log_text(), cluster.logs()));
    println!("ioc add -> quarantined on the holder: {} ms", t.elapsed().as_millis());
    assert_eq!(act["action"], "quarantine", "{act}");
    assert_eq!(act["sha256"], sx.as_str());
    assert!(!a.home.join("x.bin").exists() && a.quarantine.exists());
    assert!(a.home.join("y.bin").exists(), "only the file with that content");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(b.notices_about(&sx), 0, "B does not hold X: {}", b.proc.log_text());
    assert_eq!(l.notices_about(&sx), 0);
    assert_eq!(off.notices_about(&sx), 0, "sightings off: the coordinator does not know it holds X");
    assert!(off.home.join("x.bin").exists());
    // The action is audited, and `sightings X` says what was done.
    // (in the audit log of the coordinator A reports to)
    let audit = cluster.audit_log(if urls.len() > 1 { "coordinator-2" } else { "coordinator" });
    wait_for("the action in the audit log", Duration::from_secs(15), || {
        events(&audit)
            .into_iter()
            .find(|e| e["event"] == "agent_action" && e["sha256"] == sx.as_str() && e["client"] == "agent-a")
    })
    .unwrap();
    wait_for("sightings X to show the quarantine", Duration::from_secs(15), || {
        (seen(&sx) == vec![("agent-a".to_string(), false, "quarantine".to_string())]).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}", seen(&sx)));

    // A block entry for Y: every holder acts, the lookup-only agent too.
    ioc_add(cluster, url(1), &sy);
    wait_for("B to find Y malicious", Duration::from_secs(60), || {
        let path = b.home.join("y.bin").display().to_string();
        b.events().into_iter().find(|e| e["event"] == "verdict" && e["path"] == path.as_str() && e["verdict"] == "malicious")
    })
    .unwrap_or_else(|e| panic!("{e}: {}", b.proc.log_text()));
    assert!(b.home.join("y.bin").exists(), "B reports only");
    for (who, ag) in [("A", &a), ("the lookup-only agent", &l)] {
        let act =
            wait_for(&format!("{who} to quarantine Y"), Duration::from_secs(60), || ag.action_on("y.bin")).unwrap_or_else(|e| {
                let now = cluster.agent_as(url(0), "agent-l", &["lookup", &sy]).unwrap();
                panic!("{e}: {}\nlookup at {} now: {}", ag.proc.log_text(), url(0), String::from_utf8_lossy(&now.stdout))
            });
        assert_eq!(act["action"], "quarantine");
    }
    assert_eq!(off.notices_about(&sy), 0);
    if let Some(port) = rest {
        // REST: who holds Y by its md5; what B holds that is a detection now.
        let md5 = md5_hex(&y);
        let (status, v) = rest_get(cluster, port, &format!("/v1/sightings/{md5}"), "analyst");
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["sha256s"], serde_json::json!([sy]));
        let mut ids: Vec<&str> = v["holders"].as_array().unwrap().iter().map(|h| h["agent_id"].as_str().unwrap()).collect();
        ids.sort();
        assert_eq!(ids, ["agent-a", "agent-b", "agent-l"], "{v}");
        let b_row = v["holders"].as_array().unwrap().iter().find(|h| h["agent_id"] == "agent-b").unwrap();
        assert_eq!((&b_row["holds"], &b_row["action"]), (&Value::from(true), &Value::Null), "{v}");
        let (status, _) = rest_get(cluster, port, &format!("/v1/sightings/{sy}"), "agent-a");
        assert_eq!(status, 403, "an agent token cannot read sightings");
        let (status, v) = rest_get(cluster, port, "/v1/agents/agent-b", "analyst");
        assert_eq!(status, 200, "{v}");
        let held: Vec<(&str, &str)> = v["detections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| (d["sha256"].as_str().unwrap(), d["verdict"].as_str().unwrap()))
            .collect();
        assert_eq!(held, [(sy.as_str(), "malicious")], "{v}");
        let (status, v) = rest_get(cluster, port, "/v1/agents/agent-a", "analyst");
        assert_eq!(status, 200, "{v}");
        assert!(v["detections"].as_array().unwrap().is_empty(), "A quarantined both: {v}");
        assert_eq!(rest_get(cluster, port, "/v1/agents/nobody", "analyst").0, 404);
    }
}

fn md5_hex(data: &[u8]) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("md5sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout).split_whitespace().next().unwrap().to_string()
}

/// `GET path` on the REST listener at `port` with the token named `who`.
fn rest_get(cluster: &Cluster, port: u16, path: &str, who: &str) -> (u16, Value) {
    qala_tests::fleet::rest(cluster, port, "GET", path, who, None)
}

#[test]
fn notices_reach_the_holders_only_embedded() {
    let port = qala_tests::free_port();
    let mut options = Options::default();
    options.coordinator_args.extend(["--http-listen", &format!("127.0.0.1:{port}")].map(String::from));
    let cluster = Cluster::start_with(&repo_root().join("rules"), None, 1, options).unwrap();
    notices_reach_holders(&cluster, &[cluster.url()], Some(port));
}

#[test]
fn notices_cross_coordinators_through_redis() {
    let redis_dir = tempfile::tempdir().unwrap();
    let redis = Redis::start(redis_dir.path()).unwrap();
    let mut cluster = Cluster::start(&repo_root().join("rules"), Some(&redis.url()), 0).unwrap();
    let second = cluster.add_coordinator().unwrap();
    cluster.add_worker("w1").unwrap();
    cluster.wait_ready(1).unwrap();
    cluster.wait_ready_at(&second, 1).unwrap();
    notices_reach_holders(&cluster, &[cluster.url(), second], None);
}

/// The new calls refuse what they should: no token, a token of another
/// role, digests that are not sha256s, too many at once; a notice stream
/// for a caller with no token is never opened.
#[tokio::test(flavor = "multi_thread")]
async fn gone_and_notices_refuse_bad_callers_and_bad_digests() {
    use qala_proto::v1::{self as pb, agents_client::AgentsClient};
    let cluster = Cluster::start(&repo_root().join("rules"), None, 0).unwrap();
    cluster.add_token("analyst", "analyst").unwrap();
    let client = |token: Option<String>| {
        let cluster = &cluster;
        async move {
            let channel = cluster.channel(&cluster.url()).await;
            AgentsClient::with_interceptor(channel, qala_tls::BearerToken::new(token.as_deref()).unwrap())
        }
    };
    let mut nobody = client(None).await;
    let s = nobody.gone(pb::GoneRequest { sha256: vec!["0".repeat(64)] }).await.unwrap_err();
    assert_eq!(s.code(), tonic::Code::Unauthenticated, "{s:?}");
    let s = nobody.notices(pb::NoticesRequest { after_ms: 1, uploads: false }).await.unwrap_err();
    assert_eq!(s.code(), tonic::Code::Unauthenticated, "{s:?}");
    let mut analyst = client(Some(cluster.token("analyst"))).await;
    let s = analyst.gone(pb::GoneRequest { sha256: vec!["0".repeat(64)] }).await.unwrap_err();
    assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}");
    let mut agent = client(Some(cluster.token("agent"))).await;
    for bad in [vec!["not hex".to_string()], vec!["A".repeat(64)], vec!["0".repeat(63)], vec!["0".repeat(64); 10_001]] {
        let s = agent.gone(pb::GoneRequest { sha256: bad }).await.unwrap_err();
        assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s:?}");
    }
    // A digest the agent never held: nothing to drop, no error.
    let r = agent.gone(pb::GoneRequest { sha256: vec!["0".repeat(64)] }).await.unwrap().into_inner();
    assert_eq!(r.dropped, 0);
    let s = agent.sightings(pb::SightingsRequest { hash: "0".repeat(64) }).await.unwrap_err();
    assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}");
    let s = analyst.sightings(pb::SightingsRequest { hash: "zz".into() }).await.unwrap_err();
    assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s:?}");
    let s = analyst.get_agent(pb::GetAgentRequest { agent_id: "../x".into() }).await.unwrap_err();
    assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s:?}");
}
