//! The gRPC API as a client sees it: health and reflection on every server,
//! sha256 verification of uploads, coalescing of concurrent scans.

use qala_proto::v1::{self as pb, scan_request::Msg};
use qala_tests::{Cluster, repo_root, sha256_hex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

fn header(sha256: &str, size: u64, name: &str) -> pb::ScanRequest {
    pb::ScanRequest {
        msg: Some(Msg::Header(pb::ScanHeader {
            sha256: sha256.into(),
            size,
            file_name: name.into(),
            agent_id: "test".into(),
            ..Default::default()
        })),
    }
}

fn chunk(data: &[u8]) -> pb::ScanRequest {
    pb::ScanRequest { msg: Some(Msg::Chunk(data.to_vec().into())) }
}

async fn client(cluster: &Cluster) -> qala_tests::Scanner {
    cluster.scanner().await
}

fn worker_url(cluster: &Cluster, id: &str) -> String {
    let s = cluster.status().unwrap();
    s["workers"].as_array().unwrap().iter().find(|w| w["worker_id"] == id).unwrap()["address"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn health_and_reflection_on_coordinator_and_worker() {
    let cluster = Cluster::start(&repo_root().join("rules"), None, 1).unwrap();
    let worker = worker_url(&cluster, "w1");
    for (url, service) in [(cluster.url(), "qala.v1.Scanner"), (worker.clone(), "qala.v1.Worker")] {
        // Workers accept coordinators only: ask as one.
        let channel = if url == worker { cluster.worker_channel(&url).await } else { cluster.channel(&url).await };
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
        let resp = health.check(tonic_health::pb::HealthCheckRequest { service: service.into() }).await.unwrap();
        assert_eq!(resp.into_inner().status(), tonic_health::pb::health_check_response::ServingStatus::Serving);

        use tonic_reflection::pb::v1::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest,
            server_reflection_response::MessageResponse,
        };
        let mut refl = ServerReflectionClient::new(channel);
        let req =
            ServerReflectionRequest { host: String::new(), message_request: Some(MessageRequest::ListServices(String::new())) };
        let mut stream = refl.server_reflection_info(tokio_stream::iter([req])).await.unwrap().into_inner();
        let resp = stream.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else { panic!("{resp:?}") };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        assert!(names.iter().any(|n| n == service), "{names:?}");
        assert!(names.iter().any(|n| n == "grpc.health.v1.Health"), "{names:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn mismatched_sha256_or_size_is_rejected_and_nothing_is_stored() {
    let cluster = Cluster::start(&repo_root().join("rules"), None, 1).unwrap();
    let mut c = client(&cluster).await;
    let claimed = sha256_hex(b"what I claim");
    let content = b"what I send instead!";

    let req = vec![header(&claimed, content.len() as u64, "liar.txt"), chunk(content)];
    let err = c.scan(tokio_stream::iter(req)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("sha256 mismatch"), "{}", err.message());

    let real = sha256_hex(content);
    let req = vec![header(&real, 5, "short.txt"), chunk(content)];
    let err = c.scan(tokio_stream::iter(req)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    let err = c.scan(tokio_stream::iter(vec![chunk(content)])).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("header"));

    let err = c.scan(tokio_stream::iter(vec![header("not-hex", 1, "x"), chunk(b"x")])).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let mut analyst = cluster.scanner_with(&cluster.url(), Some("admin")).await;
    let got = analyst.get_verdict(pb::GetVerdictRequest { sha256: claimed.clone() }).await.unwrap().into_inner();
    assert!(got.verdict.is_none(), "nothing stored for the claimed digest");

    // The cluster is fine afterwards: the honest upload works.
    let req = vec![header(&real, content.len() as u64, "honest.txt"), chunk(content)];
    let resp = c.scan(tokio_stream::iter(req)).await.unwrap().into_inner();
    let v = resp.verdict.unwrap();
    assert_eq!((v.sha256.as_str(), v.verdict), (real.as_str(), pb::VerdictKind::Clean as i32));
}

/// Scans the workers ran in all (their heartbeat counters), once settled.
fn scans_on_workers(cluster: &Cluster) -> u64 {
    let mut last = None;
    qala_tests::wait_for("heartbeat counters", Duration::from_secs(10), || {
        let s = cluster.status().ok()?;
        let n: u64 = s["workers"].as_array()?.iter().map(|w| w["scanned"].as_u64().unwrap_or(0)).sum();
        // Two equal readings a heartbeat apart.
        let settled = last == Some(n) && n > 0;
        last = Some(n);
        std::thread::sleep(Duration::from_millis(400));
        settled.then_some(n)
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_complete_uploads_of_one_sha256_are_scanned_once() {
    let cluster = Cluster::start(&repo_root().join("rules"), None, 2).unwrap();
    let content: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let sha = sha256_hex(&content);
    let mut calls = Vec::new();
    for i in 0..8 {
        let mut c = client(&cluster).await;
        let req: Vec<pb::ScanRequest> = std::iter::once(header(&sha, content.len() as u64, &format!("{i}.bin")))
            .chain(content.chunks(256 * 1024).map(chunk))
            .collect();
        calls.push(tokio::spawn(async move { c.scan(tokio_stream::iter(req)).await }));
    }
    let answers: Vec<_> = futures::future::join_all(calls).await.into_iter().map(|a| a.unwrap().unwrap().into_inner()).collect();
    assert_eq!(answers.iter().filter(|a| !a.cached).count(), 1, "exactly one upload led the scan");
    assert!(answers.iter().all(|a| a.verdict == answers[0].verdict));
    assert_eq!(scans_on_workers(&cluster), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_upload_never_delays_another_clients_upload_of_the_same_content() {
    let cluster = Cluster::start(&repo_root().join("rules"), None, 2).unwrap();
    cluster.add_token("agent", "other-agent").unwrap();
    let content: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let sha = sha256_hex(&content);

    // A (one client): header and the first MiB, then it stalls.
    let (tx_a, rx_a) = mpsc::channel(4);
    tx_a.send(header(&sha, content.len() as u64, "a.bin")).await.unwrap();
    tx_a.send(chunk(&content[..1 << 20])).await.unwrap();
    let mut ca = client(&cluster).await;
    let a = tokio::spawn(async move { ca.scan(ReceiverStream::new(rx_a)).await });
    tokio::time::sleep(Duration::from_millis(700)).await;

    // B (another client): the whole file while A stalls. B is scanned at
    // once: a claim on a content is taken only by a complete, verified upload.
    let mut cb = cluster.scanner_with(&cluster.url(), Some("other-agent")).await;
    let req: Vec<pb::ScanRequest> =
        std::iter::once(header(&sha, content.len() as u64, "b.bin")).chain(content.chunks(256 * 1024).map(chunk)).collect();
    let b = tokio::time::timeout(Duration::from_secs(20), cb.scan(tokio_stream::iter(req)))
        .await
        .expect("B waited for A's stalled upload")
        .unwrap()
        .into_inner();
    assert!(!b.cached, "B scanned its own upload");
    assert!(!a.is_finished(), "A is still stalled");

    // A, once complete, is answered from B's stored verdict.
    for c in content[1 << 20..].chunks(256 * 1024) {
        tx_a.send(chunk(c)).await.unwrap();
    }
    drop(tx_a);
    let a = a.await.unwrap().unwrap().into_inner();
    assert!(a.cached, "A was answered by B's scan");
    assert_eq!(a.verdict, b.verdict);
    assert_eq!(scans_on_workers(&cluster), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn waiting_uploads_do_not_block_others_on_their_connection() {
    // Six uploads lead scans and six more wait for them (same contents),
    // all on ONE connection. Waiting streams must still be read: left
    // unread, their data would take the connection's flow-control window
    // and the leaders' uploads could never end.
    let cluster = Cluster::start(&repo_root().join("rules"), None, 1).unwrap();
    let shared = client(&cluster).await;
    let contents: Vec<Vec<u8>> = (0..6u32)
        .map(|k| (0..4_000_000u32).map(|i| (i.wrapping_mul(2654435761).wrapping_add(k * 7919) >> 11) as u8).collect())
        .collect();
    let mut leaders = Vec::new();
    for content in &contents {
        let (tx, rx) = mpsc::channel(4);
        tx.send(header(&sha256_hex(content), content.len() as u64, "lead.bin")).await.unwrap();
        tx.send(chunk(&content[..256 * 1024])).await.unwrap();
        let mut c = shared.clone();
        leaders.push((tx, tokio::spawn(async move { c.scan(ReceiverStream::new(rx)).await })));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut waiters = Vec::new();
    for content in &contents {
        let req: Vec<pb::ScanRequest> = std::iter::once(header(&sha256_hex(content), content.len() as u64, "wait.bin"))
            .chain(content.chunks(256 * 1024).map(chunk))
            .collect();
        let mut c = shared.clone();
        waiters.push(tokio::spawn(async move { c.scan(tokio_stream::iter(req)).await }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut calls = Vec::new();
    for ((tx, call), content) in leaders.into_iter().zip(&contents) {
        let rest = content[256 * 1024..].to_vec();
        tokio::spawn(async move {
            for c in rest.chunks(256 * 1024) {
                if tx.send(chunk(c)).await.is_err() {
                    return;
                }
            }
        });
        calls.push(call);
    }
    let all = futures::future::join_all(calls.into_iter().chain(waiters));
    let answers = tokio::time::timeout(Duration::from_secs(60), all).await.expect("the uploads on one connection stalled");
    let answers: Vec<_> = answers.into_iter().map(|a| a.unwrap().unwrap().into_inner()).collect();
    for (k, content) in contents.iter().enumerate() {
        let (lead, wait) = (&answers[k], &answers[k + contents.len()]);
        assert_eq!(lead.verdict.as_ref().unwrap().sha256, sha256_hex(content));
        assert_eq!(lead.verdict, wait.verdict);
        assert!(lead.cached != wait.cached, "one scanned, the other was answered by that scan");
    }
}
