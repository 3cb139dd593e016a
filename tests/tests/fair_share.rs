//! Every door under one quota and one fair share per client, on real
//! processes: clamd callers are one client per peer address (the tests
//! connect from 127.0.0.1 and from 127.0.0.2), their streams are admitted
//! under the client's upload slots and byte rate before a byte is read,
//! take their spool as they arrive, and share the scan threads fairly with
//! other clients.

#[path = "../../engine/tests/builders/mod.rs"]
mod builders;

use qala_tests::{Cluster, Options, free_port, repo_root};
use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A bounded bomb: a 36 KB zip of 200 tiny packed PEs whose stubs never
/// end (the attack of the issue), made distinct by `seed`; each scan runs
/// to the submission's work budget (about a second of one thread).
fn bomb(seed: u32) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for i in 0..200u32 {
        // i nops, a counted loop of a count of its own, then spin.
        let mut stub = vec![0x90; (i % 50) as usize + 1];
        stub.push(0xB9);
        stub.extend_from_slice(&(0xFFFF_0000u32 ^ seed.wrapping_mul(7919) ^ i).to_le_bytes());
        stub.extend_from_slice(&[0x49, 0x75, 0xFD, 0xEB, 0xFE]);
        w.start_file(format!("m{i}.exe"), zip::write::SimpleFileOptions::default()).unwrap();
        w.write_all(&builders::packed_pe(&[], false, Some(&stub))).unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn clean(seed: u64) -> Vec<u8> {
    format!("clean file {seed} of the other client\n").repeat(200).into_bytes()
}

struct Clamd {
    cluster: Cluster,
    addr: SocketAddr,
}

fn start(extra: &[&str]) -> Clamd {
    let port = free_port();
    let mut options = Options::default();
    // Per-client limits as shipped, not the raised ones of other tests.
    options.coordinator_args.clear();
    options.coordinator_args.extend(["--clamd-listen", &format!("127.0.0.1:{port}")].map(String::from));
    options.coordinator_args.extend(extra.iter().map(|s| s.to_string()));
    let cluster = Cluster::start_with(&repo_root().join("rules"), None, 1, options).unwrap();
    Clamd { cluster, addr: SocketAddr::from(([127, 0, 0, 1], port)) }
}

/// A connection to `to` from the loopback address `from` (127.0.0.x).
async fn connect(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::from((from, 0))).unwrap();
    s.connect(to).await.unwrap()
}

/// `zINSTREAM` of `data` in 64 KiB chunks; the reply, and how long it took.
async fn instream(from: [u8; 4], to: SocketAddr, data: &[u8]) -> (String, Duration) {
    let started = Instant::now();
    let mut s = connect(from, to).await;
    s.write_all(b"zINSTREAM\0").await.unwrap();
    for c in data.chunks(64 << 10) {
        s.write_all(&(c.len() as u32).to_be_bytes()).await.unwrap();
        s.write_all(c).await.unwrap();
    }
    s.write_all(&[0, 0, 0, 0]).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    (String::from_utf8_lossy(&out).trim_end_matches('\0').to_string(), started.elapsed())
}

fn p50(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// While one client (127.0.0.2) streams bounded bombs on 8 connections,
/// another's clean files keep a p50 latency of at most the idle p50 plus
/// one bomb scan: the bomber holds at most its share of the worker's scan
/// threads and its further bombs queue behind its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_client_streaming_bombs_leaves_another_its_share_of_the_threads() {
    let c = start(&[]);
    let (bomber, other) = ([127, 0, 0, 2], [127, 0, 0, 1]);
    let mut idle = Vec::new();
    for i in 0..15 {
        let (reply, took) = instream(other, c.addr, &clean(i)).await;
        assert_eq!(reply, "stream: OK", "{}", c.cluster.logs());
        idle.push(took);
    }
    let (reply, one_bomb) = instream(bomber, c.addr, &bomb(0)).await;
    assert!(reply.starts_with("stream: "), "{reply}");
    eprintln!("one bomb ({} bytes) alone: {one_bomb:?}: {reply}", bomb(0).len());
    assert!(one_bomb < Duration::from_secs(10), "a bomb is held to its work budget: {one_bomb:?}");

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut bombers = Vec::new();
    for conn in 0..8u32 {
        let (stop, addr) = (stop.clone(), c.addr);
        bombers.push(tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                instream(bomber, addr, &bomb(1 + conn * 1000 + n)).await;
            }
            n
        }));
    }
    // Every slot of the worker filled with bombs before the other client
    // comes.
    tokio::time::sleep(one_bomb * 3).await;
    let mut busy = Vec::new();
    for i in 100..115 {
        let (reply, took) = instream(other, c.addr, &clean(i)).await;
        assert_eq!(reply, "stream: OK");
        busy.push(took);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut bombs = 0;
    for b in bombers {
        bombs += b.await.unwrap();
    }
    let (idle_p50, busy_p50) = (p50(idle), p50(busy.clone()));
    eprintln!(
        "clean files of the other client: idle p50 {idle_p50:?}, while {bombs} bombs streamed on 8 connections p50 {busy_p50:?} (max {:?}); one bomb scan {one_bomb:?}",
        busy.iter().max().unwrap()
    );
    assert!(busy_p50 <= idle_p50 + one_bomb, "p50 {busy_p50:?} > idle {idle_p50:?} + one bomb {one_bomb:?}");
}

/// clamd streams are admitted under their client's upload slots before a
/// byte of them is read: with one slot per client, a second stream of the
/// same peer waits, unread, while the first holds it; another peer's does
/// not. Their bytes pass at the client's byte rate, and take their room
/// in the spool as they arrive: past the spool quota the stream is
/// refused as busy.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clamd_streams_take_the_clients_slots_rate_and_spool_before_they_are_read() {
    let c = start(&[
        "--client-max-uploads",
        "1",
        "--client-max-bytes-per-sec",
        "262144",
        "--spool-max-bytes",
        "1048576",
        "--clamd-stream-max-length",
        "33554432",
    ]);
    let (a, b) = ([127, 0, 0, 2], [127, 0, 0, 1]);
    // The first stream of peer a: begun, then held open.
    let mut first = connect(a, c.addr).await;
    first.write_all(b"zINSTREAM\0").await.unwrap();
    let part = clean(1);
    first.write_all(&(part.len() as u32).to_be_bytes()).await.unwrap();
    first.write_all(&part).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Peer a's second stream (24 MiB) waits, unread, for a's only slot;
    // peer b's is served.
    let addr = c.addr;
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = sent.clone();
    let second = tokio::spawn(async move {
        let mut s = connect(a, addr).await;
        s.write_all(b"zINSTREAM\0").await.unwrap();
        let data = qala_tests::pseudo_random(2, 24 << 20);
        for c in data.chunks(64 << 10) {
            let frame = [&(c.len() as u32).to_be_bytes()[..], c].concat();
            if s.write_all(&frame).await.is_err() {
                break; // refused: the reply says why
            }
            counted.fetch_add(c.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        let _ = s.write_all(&[0, 0, 0, 0]).await;
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).trim_end_matches('\0').to_string()
    });
    let (reply, took) = instream(b, c.addr, &clean(3)).await;
    assert_eq!(reply, "stream: OK");
    assert!(took < Duration::from_secs(5), "{took:?}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!second.is_finished(), "a second stream of the same peer was served while the first held its slot");
    let unread = sent.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("the waiting stream got {} KiB into the socket buffers of 24 MiB", unread >> 10);
    assert!(unread < 16 << 20, "the waiting stream was read ({unread} bytes) before it was admitted");
    let held = Instant::now();
    first.write_all(&[0, 0, 0, 0]).await.unwrap();
    let mut out = Vec::new();
    first.read_to_end(&mut out).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out).trim_end_matches('\0'), "stream: OK");
    let reply = second.await.unwrap();
    eprintln!("a second stream of one peer waited for its slot; answered {:?} after the first ended: {reply}", held.elapsed());
    assert!(reply.contains("spool full") && reply.ends_with("ERROR"), "admitted, then past the 1 MiB spool quota: {reply}");

    // 256 KiB/s with a second of burst: 768 KiB take at least two seconds.
    let data = qala_tests::pseudo_random(7, 768 << 10);
    let (reply, took) = instream(b, c.addr, &data).await;
    assert_eq!(reply, "stream: OK");
    assert!(took >= Duration::from_millis(1800), "768 KiB at 256 KiB/s in {took:?}");
    eprintln!("768 KiB at --client-max-bytes-per-sec 262144: {took:?}");

    // A stream past the 1 MiB spool quota is refused as busy, not held.
    let data = qala_tests::pseudo_random(8, 1100 << 10);
    let (reply, _) = instream(a, c.addr, &data).await;
    assert!(reply.contains("spool full") && reply.ends_with("ERROR"), "{reply}");
    let audit = c.cluster.audit();
    assert!(audit.iter().any(|e| e["event"] == "clamd_session" && e["client"] == "clamd@127.0.0.2"), "{audit:?}");
}
