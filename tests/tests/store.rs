//! One conformance suite for every verdict store backend: embedded (redb
//! file) and Redis (a real redis-server).

use qala_coordinator::store::{self, EmbeddedStore, Guarded, Poisoned, Record, RedisStore, Revoked, VerdictStore};
use qala_proto::v1::{Detection, LimitHit, Verdict, VerdictKind};
use qala_tests::{Redis, RedisCluster, RedisSentinel, redis_cmd, sha256_hex};
use std::sync::Arc;

fn verdict(ruleset: &str, content: &str, kind: VerdictKind, limits: bool) -> Verdict {
    Verdict {
        sha256: sha256_hex(content.as_bytes()),
        size: content.len() as u64,
        verdict: kind as i32,
        ruleset_id: ruleset.into(),
        detections: if kind == VerdictKind::Malicious {
            vec![Detection { rule: "R".into(), namespace: "ns".into(), object: "x.zip/y".into(), ..Default::default() }]
        } else {
            vec![]
        },
        limits_hit: if limits {
            vec![LimitHit { limit: "max_depth".into(), object: "x".into(), detail: String::new() }]
        } else {
            vec![]
        },
        ..Default::default()
    }
}

async fn conformance(store: Arc<dyn VerdictStore>) {
    let s = store.as_ref();
    let bad = verdict("rs1", "bad", VerdictKind::Malicious, false);
    let good = verdict("rs1", "good", VerdictKind::Clean, false);
    assert!(s.get("rs1", &bad.sha256).await.unwrap().is_none());

    assert!(store::save(s, &bad, &store::Keep::default()).await.unwrap());
    assert!(store::save(s, &good, &store::Keep::default()).await.unwrap());
    assert_eq!(s.get("rs1", &bad.sha256).await.unwrap(), Some(bad.clone()));

    // Keyed by ruleset: other rules never see it.
    assert!(s.get("rs2", &bad.sha256).await.unwrap().is_none());

    let unknown = sha256_hex(b"unknown");
    let mut many = s.get_many("rs1", &[bad.sha256.clone(), unknown.clone(), good.sha256.clone()]).await.unwrap();
    many.sort_by(|a, b| a.sha256.cmp(&b.sha256));
    let mut want = vec![bad.clone(), good.clone()];
    want.sort_by(|a, b| a.sha256.cmp(&b.sha256));
    assert_eq!(many, want);
    assert!(s.get_many("rs1", &[]).await.unwrap().is_empty());

    // Kept only an hour, marked partial: a clean verdict that hit a limit,
    // had an error or an encrypted member.
    let partial = verdict("rs1", "partial", VerdictKind::Clean, true);
    assert!(store::save(s, &partial, &store::Keep::default()).await.unwrap());
    let got = s.get("rs1", &partial.sha256).await.unwrap().unwrap();
    assert!(got.partial && got.expires_at_ms > 0, "{got:?}");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let hour = store::PARTIAL_TTL.as_millis() as i64;
    assert!(got.expires_at_ms > now + hour - 60_000 && got.expires_at_ms <= now + hour, "kept about an hour");
    for (what, mut v) in [
        ("errors", verdict("rs1", "err", VerdictKind::Clean, false)),
        ("encrypted", verdict("rs1", "enc", VerdictKind::Clean, false)),
    ] {
        if what == "errors" {
            v.errors.push("zip member 3: corrupt deflate stream".into());
        } else {
            v.encrypted.push("x.zip/secret.doc".into());
        }
        assert!(store::save(s, &v, &store::Keep::default()).await.unwrap());
        assert!(s.get("rs1", &v.sha256).await.unwrap().unwrap().partial, "{what}");
    }
    // Past its time it is gone.
    let mut brief = verdict("rs1", "brief", VerdictKind::Clean, true);
    brief.partial = true;
    brief.expires_at_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64 + 30;
    s.put(&brief, None).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(s.get("rs1", &brief.sha256).await.unwrap().is_none(), "an expired verdict was served");
    assert!(s.get_many("rs1", &[brief.sha256.clone()]).await.unwrap().is_empty());
    // Never kept: an unscannable one.
    let unscannable = verdict("rs1", "odd", VerdictKind::Unscannable, false);
    assert!(!store::save(s, &unscannable, &store::Keep::default()).await.unwrap());
    assert!(s.get("rs1", &unscannable.sha256).await.unwrap().is_none());
    // A detection with a limit hit is still worth caching.
    let bad_partial = verdict("rs1", "bad-partial", VerdictKind::Malicious, true);
    assert!(store::save(s, &bad_partial, &store::Keep::default()).await.unwrap());

    // Overwrite replaces.
    let mut newer = bad.clone();
    newer.worker_id = "w9".into();
    s.put(&newer, None).await.unwrap();
    assert_eq!(s.get("rs1", &bad.sha256).await.unwrap().unwrap().worker_id, "w9");

    // md5 and sha1 index the sha256s of their files; one md5 may name several.
    let mut one = verdict("rs1", "collide-1", VerdictKind::Clean, false);
    let mut two = verdict("rs1", "collide-2", VerdictKind::Malicious, false);
    (one.md5, one.sha1) = ("79054025255fb1a26e4bc422aef54eb4".into(), "a".repeat(40));
    (two.md5, two.sha1) = (one.md5.clone(), "b".repeat(40));
    assert!(store::save(s, &one, &store::Keep::default()).await.unwrap());
    assert!(store::save(s, &two, &store::Keep::default()).await.unwrap());
    let mut by_md5 = s.resolve("md5", &one.md5).await.unwrap();
    by_md5.sort();
    let mut want = vec![one.sha256.clone(), two.sha256.clone()];
    want.sort();
    assert_eq!(by_md5, want);
    assert_eq!(s.resolve("sha1", &"b".repeat(40)).await.unwrap(), [two.sha256.clone()]);
    assert!(s.resolve("md5", &"0".repeat(32)).await.unwrap().is_empty());
    assert!(s.resolve("sha1", &one.md5).await.unwrap().is_empty(), "kinds do not mix");

    // The detections feed: each detection stored, oldest first, from a time on.
    let feed = s.detections(0, 1000).await.unwrap();
    let shas: Vec<&str> = feed.iter().map(|e| e.sha256.as_str()).collect();
    assert!(shas.contains(&bad.sha256.as_str()) && shas.contains(&two.sha256.as_str()), "{shas:?}");
    assert!(!shas.contains(&good.sha256.as_str()) && !shas.contains(&one.sha256.as_str()), "clean verdicts are no detections");
    assert!(feed.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
    assert!(feed.iter().all(|e| e.detections.iter().all(|d| d.meta.is_empty())));
    assert_eq!(s.detections(0, 1).await.unwrap().len(), 1);
    let later = feed.last().unwrap().at_ms + 1;
    assert!(s.detections(later, 10).await.unwrap().is_empty());
    let all = feed.len() as u64;
    assert_eq!(s.purge_detections(later).await.unwrap(), all);
    assert!(s.detections(0, 10).await.unwrap().is_empty());

    // Verdicts kept by level: clean ones expire, detections are kept.
    let keep = store::Keep { clean: std::time::Duration::from_millis(50), ..Default::default() };
    let short = verdict("rs1", "short-lived", VerdictKind::Clean, false);
    let kept = verdict("rs1", "kept-bad", VerdictKind::Malicious, false);
    assert!(store::save(s, &short, &keep).await.unwrap());
    assert!(store::save(s, &kept, &keep).await.unwrap());
    assert!(s.get("rs1", &short.sha256).await.unwrap().unwrap().expires_at_ms > 0);
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    assert!(s.get("rs1", &short.sha256).await.unwrap().is_none(), "a clean verdict outlived its retention");
    assert_eq!(s.get("rs1", &kept.sha256).await.unwrap().unwrap().expires_at_ms, 0);

    records(store.clone()).await;
    sightings(s).await;
}

/// Sightings: which agent holds which content, kept per (agent, sha256)
/// with first and last seen, listed by content and by agent, capped per
/// agent (least recently seen go, the agent marked truncated) and purged
/// by age.
async fn sightings(s: &dyn VerdictStore) {
    use qala_coordinator::store::Sighting;
    let seen = |agent: &str, content: &str, at: i64| Sighting {
        agent_id: agent.into(),
        sha256: sha256_hex(content.as_bytes()),
        first_seen_ms: at,
        last_seen_ms: at,
    };
    let x = sha256_hex(b"x");
    assert!(s.sightings_of(&x).await.unwrap().is_empty());
    assert_eq!(s.sightings_by("a", 10).await.unwrap(), (vec![], false));
    s.record_sightings(&[seen("a", "x", 1000), seen("b", "x", 1100), seen("a", "y", 1200)], 100).await.unwrap();
    // Seen again later: last seen moves, first seen stays; an older report
    // moves nothing back.
    s.record_sightings(&[seen("a", "x", 5000), seen("b", "x", 900)], 100).await.unwrap();
    let mut of_x = s.sightings_of(&x).await.unwrap();
    of_x.sort_by(|p, q| p.agent_id.cmp(&q.agent_id));
    let both = vec![
        Sighting { agent_id: "a".into(), sha256: x.clone(), first_seen_ms: 1000, last_seen_ms: 5000 },
        Sighting { agent_id: "b".into(), sha256: x.clone(), first_seen_ms: 1100, last_seen_ms: 1100 },
    ];
    assert_eq!(of_x, both);
    let (held, cut) = s.sightings_by("a", 10).await.unwrap();
    assert_eq!(held.iter().map(|h| h.sha256.clone()).collect::<Vec<_>>(), vec![x.clone(), sha256_hex(b"y")], "most recent first");
    assert_eq!((held[0].first_seen_ms, held[0].last_seen_ms), (1000, 5000));
    assert!(!cut);
    assert_eq!(s.sightings_by("a", 1).await.unwrap().0.len(), 1, "the limit holds");

    // The cap: agent c may keep 3; the least recently seen go.
    let many: Vec<Sighting> = (0..5).map(|i| seen("c", &format!("c{i}"), 2000 + i)).collect();
    s.record_sightings(&many, 3).await.unwrap();
    let (held, cut) = s.sightings_by("c", 10).await.unwrap();
    let names: Vec<String> = held.iter().map(|h| h.sha256.clone()).collect();
    assert_eq!(names, ["c4", "c3", "c2"].map(|c| sha256_hex(c.as_bytes())).to_vec());
    assert!(cut, "the list says it was cut");
    assert!(s.sightings_of(&sha256_hex(b"c0")).await.unwrap().is_empty(), "a dropped sighting is gone by content too");
    assert_eq!(s.sightings_by("a", 10).await.unwrap().0.len(), 2, "other agents keep theirs");

    // Content sighted since a time, each once whoever holds it (what a hunt scopes).
    let mut want: Vec<String> = ["x", "c3", "c4"].map(|c| sha256_hex(c.as_bytes())).to_vec();
    want.sort();
    assert_eq!(s.sighted_since(2003, 100).await.unwrap(), (want.clone(), false));
    assert_eq!(s.sighted_since(0, 100).await.unwrap().0.len(), 5, "x is held by two agents and counted once");
    let (some, cut) = s.sighted_since(2003, 2).await.unwrap();
    assert!(cut && some.len() == 2 && some.iter().all(|h| want.contains(h)), "the limit holds and says so: {some:?}");
    assert_eq!(s.sighted_since(6000, 100).await.unwrap(), (vec![], false));

    // An agent that no longer holds a content: its sighting goes, nobody else's.
    let gone = [sha256_hex(b"y"), sha256_hex(b"never seen")];
    assert_eq!(s.forget_sightings("a", &gone).await.unwrap(), 1);
    assert_eq!(s.forget_sightings("a", &gone).await.unwrap(), 0);
    assert_eq!(s.sightings_by("a", 10).await.unwrap().0.iter().map(|h| h.sha256.clone()).collect::<Vec<_>>(), vec![x.clone()]);
    assert!(s.sightings_of(&sha256_hex(b"y")).await.unwrap().is_empty());
    assert_eq!(s.sightings_of(&x).await.unwrap().len(), 2);

    // Retention: what was last seen before 1150 goes (b's x), the rest stays.
    assert_eq!(s.purge_sightings(1150).await.unwrap(), 1);
    assert_eq!(s.sightings_of(&x).await.unwrap(), vec![both[0].clone()]);
    assert_eq!(s.sightings_by("b", 10).await.unwrap(), (vec![], false));
    assert_eq!(s.purge_sightings(10_000).await.unwrap(), 4);
    assert!(s.sightings_of(&x).await.unwrap().is_empty());
    assert_eq!(s.sightings_by("c", 10).await.unwrap(), (vec![], false), "an agent with nothing left starts afresh");
}

/// The records kept besides verdicts, through the typed operations every
/// kind shares (written once, over each backend's rows).
async fn records(s: Arc<dyn VerdictStore>) {
    use qala_proto::v1::{IocEntry, TokenRecord};
    let s = Guarded::new(s);
    // IOC lists: entries by list, kind and digest, replaced in place, with a version that moves.
    let v0 = s.version::<IocEntry>().await.unwrap();
    let ioc = |list: &str, kind: &str, digest: &str, name: &str| IocEntry {
        list: list.into(),
        kind: kind.into(),
        digest: digest.into(),
        name: name.into(),
        added_ms: 1,
        source: "test".into(),
    };
    let entries: Vec<_> = (0..2500).map(|i| ioc("block", "md5", &format!("{i:032x}"), "Family.A")).collect();
    s.put_all(&entries).await.unwrap();
    s.put_all(&[ioc("allow", "sha256", &"a".repeat(64), "ticket 42"), ioc("block", "md5", &format!("{:032x}", 7), "Family.B")])
        .await
        .unwrap();
    let v1 = s.version::<IocEntry>().await.unwrap();
    assert_ne!(v0, v1);
    let listed = s.all::<IocEntry>().await.unwrap();
    assert_eq!(listed.len(), 2501);
    assert_eq!(listed.iter().find(|e| e.digest == format!("{:032x}", 7)).unwrap().name, "Family.B");
    let eight = ioc("block", "md5", &format!("{:032x}", 8), "");
    assert!(s.delete::<IocEntry>(&eight.key()).await.unwrap());
    assert!(!s.delete::<IocEntry>(&eight.key()).await.unwrap());
    assert_ne!(s.version::<IocEntry>().await.unwrap(), v1);
    assert_eq!(s.all::<IocEntry>().await.unwrap().len(), 2500);

    // Client tokens (hashes only) and revoked ids, shared by coordinators;
    // another kind's version does not move with them.
    let iocs_version = s.version::<IocEntry>().await.unwrap();
    let token = |name: &str, role: &str| TokenRecord {
        name: name.into(),
        role: role.into(),
        sha256: sha256_hex(name.as_bytes()),
        created_ms: 1,
        ..Default::default()
    };
    s.put(&token("ops", "admin")).await.unwrap();
    s.put(&token("ws-17", "agent")).await.unwrap();
    s.put(&token("ws-17", "analyst")).await.unwrap();
    let mut tokens = s.all::<TokenRecord>().await.unwrap();
    tokens.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(tokens, vec![token("ops", "admin"), token("ws-17", "analyst")]);
    assert_eq!(s.get::<TokenRecord>("ws-17").await.unwrap(), Some(token("ws-17", "analyst")));
    assert!(s.delete::<TokenRecord>("ws-17").await.unwrap());
    assert!(!s.delete::<TokenRecord>("ws-17").await.unwrap());
    assert_eq!(s.all::<TokenRecord>().await.unwrap(), vec![token("ops", "admin")]);
    assert_eq!(s.get::<TokenRecord>("ws-17").await.unwrap(), None);
    s.put(&Revoked { id: "w3".into(), at_ms: 5 }).await.unwrap();
    s.put(&Revoked { id: "w3".into(), at_ms: 6 }).await.unwrap();
    assert_eq!(s.all::<Revoked>().await.unwrap(), vec![Revoked { id: "w3".into(), at_ms: 6 }]);
    assert_eq!(s.version::<IocEntry>().await.unwrap(), iocs_version);

    // The poison list: entries answer until they expire, and expired ones
    // are dropped when the next is added.
    let now = qala_common::now_ms();
    let poisoned = |sha: &str, detail: &str, until_ms| Poisoned { sha256: sha.into(), detail: detail.into(), until_ms };
    s.put(&poisoned("aa", "killed by SIGSEGV", now + 60_000)).await.unwrap();
    s.put(&poisoned("bb", "killed by SIGABRT", now - 1)).await.unwrap();
    assert_eq!(s.get::<Poisoned>("aa").await.unwrap().map(|p| p.detail), Some("killed by SIGSEGV".into()));
    assert_eq!(s.get::<Poisoned>("bb").await.unwrap(), None, "expired");
    assert_eq!(s.get::<Poisoned>("cc").await.unwrap(), None);
    s.put(&poisoned("dd", "x", now + 60_000)).await.unwrap();
    assert_eq!(s.call(|s| s.rows(Poisoned::TABLE)).await.unwrap().len(), 2, "the expired entry was dropped");
}

#[tokio::test]
async fn embedded_store_conforms_and_persists() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("sub/verdicts.redb");
    {
        let s = EmbeddedStore::open(&path).unwrap();
        conformance(Arc::new(s)).await;
    }
    let s = store::open(&format!("embedded:{}", path.display()).as_str().into()).await.unwrap();
    let bad = verdict("rs1", "bad", VerdictKind::Malicious, false);
    assert_eq!(s.get("rs1", &bad.sha256).await.unwrap().unwrap().worker_id, "w9", "survives reopening");
    assert!(s.describe().starts_with("embedded:"));
}

#[tokio::test]
async fn redis_store_conforms() {
    let d = tempfile::tempdir().unwrap();
    let redis = Redis::start(d.path()).unwrap();
    let s = RedisStore::new(&redis.url()).unwrap();
    s.ping().await.unwrap();
    conformance(Arc::new(s)).await;
    let again = store::open(&redis.url().as_str().into()).await.unwrap();
    let bad = verdict("rs1", "bad", VerdictKind::Malicious, false);
    assert!(again.get("rs1", &bad.sha256).await.unwrap().is_some(), "a second client sees the same data");
}

/// Revoked worker ids as an older Qala kept them (a hash of id -> Unix ms)
/// are records of the new kind once a coordinator connects: a revocation
/// is never lost to an upgrade.
#[tokio::test]
async fn redis_revocations_of_an_older_qala_are_kept() {
    let d = tempfile::tempdir().unwrap();
    let redis = Redis::start(d.path()).unwrap();
    let _: i64 = redis_cmd(redis.port, &["HSET", "qala:v1:revoked-workers", "w7", "123", "client:ops", "456"]).unwrap();
    let s = Guarded::new(Arc::new(RedisStore::new(&redis.url()).unwrap()));
    let mut revoked = s.all::<Revoked>().await.unwrap();
    revoked.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(revoked, [Revoked { id: "client:ops".into(), at_ms: 456 }, Revoked { id: "w7".into(), at_ms: 123 }]);
    let old: i64 = redis_cmd(redis.port, &["EXISTS", "qala:v1:revoked-workers"]).unwrap();
    assert_eq!(old, 0, "the old hash is gone");
}

/// Scan locks through two clients of one store.
async fn locks(a: &dyn VerdictStore, b: &dyn VerdictStore) {
    use std::time::Duration;
    assert!(a.shared(), "coordinators share a Redis store");
    let ttl = Duration::from_secs(5);
    assert!(a.lock("rs1:x", "A", ttl).await.unwrap());
    assert!(!b.lock("rs1:x", "B", ttl).await.unwrap(), "held by A");
    assert!(b.lock("rs1:y", "B", ttl).await.unwrap(), "another key is free");
    assert!(!b.relock("rs1:x", "B", ttl).await.unwrap(), "B cannot extend A's lock");
    b.unlock("rs1:x", "B").await.unwrap();
    assert!(!b.lock("rs1:x", "B", ttl).await.unwrap(), "B cannot release A's lock");
    assert!(a.relock("rs1:x", "A", ttl).await.unwrap());
    a.unlock("rs1:x", "A").await.unwrap();
    assert!(b.lock("rs1:x", "B", ttl).await.unwrap(), "free once A let go");
    // A holder that dies without letting go: the lock expires.
    assert!(a.lock("rs1:z", "A", Duration::from_millis(200)).await.unwrap());
    assert!(!b.lock("rs1:z", "B", ttl).await.unwrap());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(b.lock("rs1:z", "B", ttl).await.unwrap(), "expired");
    assert!(!a.relock("rs1:z", "A", ttl).await.unwrap(), "A's expired lock is B's now");
}

#[tokio::test]
async fn redis_scan_locks_exclude_other_holders_and_expire() {
    let d = tempfile::tempdir().unwrap();
    let redis = Redis::start(d.path()).unwrap();
    locks(&RedisStore::new(&redis.url()).unwrap(), &RedisStore::new(&redis.url()).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_cluster_store_conforms() {
    let d = tempfile::tempdir().unwrap();
    let cluster = RedisCluster::start(d.path(), 3).unwrap();
    let s = store::open(&cluster.url().as_str().into()).await.unwrap();
    s.ping().await.unwrap();
    // Keys spread over the three primaries: MGET in `get_many` crosses slots.
    conformance(s.clone()).await;
    let many: Vec<Verdict> = (0..50).map(|i| verdict("rs1", &format!("spread {i}"), VerdictKind::Malicious, false)).collect();
    for v in &many {
        s.put(v, None).await.unwrap();
    }
    let shas: Vec<String> = many.iter().map(|v| v.sha256.clone()).collect();
    assert_eq!(s.get_many("rs1", &shas).await.unwrap().len(), 50);
    let other = store::open(&cluster.url().as_str().into()).await.unwrap();
    locks(s.as_ref(), other.as_ref()).await;
    // Every node holds some of the keys: the data is really spread.
    for &port in &cluster.ports {
        let keys: i64 = redis_cmd(port, &["DBSIZE"]).unwrap();
        assert!(keys > 0, "node {port} holds no key");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_sentinel_store_conforms_and_follows_a_failover() {
    let d = tempfile::tempdir().unwrap();
    let mut group = RedisSentinel::start(d.path()).unwrap();
    let s = store::open(&group.url().as_str().into()).await.unwrap();
    conformance(s.clone()).await;
    locks(s.as_ref(), store::open(&group.url().as_str().into()).await.unwrap().as_ref()).await;
    let before = verdict("rs1", "before failover", VerdictKind::Malicious, false);
    s.put(&before, None).await.unwrap();

    group.fail_over().unwrap();
    // The same store object finds the new master: the first calls may fail
    // (the coordinator runs degraded meanwhile), then writes go through.
    let after = verdict("rs1", "after failover", VerdictKind::Malicious, false);
    let start = std::time::Instant::now();
    loop {
        if s.put(&after, None).await.is_ok() {
            break;
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(30), "no write accepted 30 s after the failover");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(s.get("rs1", &after.sha256).await.unwrap(), Some(after.clone()));
    assert_eq!(s.get("rs1", &before.sha256).await.unwrap(), Some(before), "replicated before the failover");
    let on_new_master: Option<Vec<u8>> =
        redis_cmd(group.replica_port, &["GET", &format!("qala:v1:verdict:rs1:{}", after.sha256)]).unwrap();
    assert!(on_new_master.is_some(), "written to the promoted replica");
}

#[tokio::test]
async fn embedded_store_is_not_shared_and_grants_every_lock() {
    let d = tempfile::tempdir().unwrap();
    let s = EmbeddedStore::open(&d.path().join("v.redb")).unwrap();
    assert!(!s.shared());
    let ttl = std::time::Duration::from_secs(5);
    assert!(s.lock("k", "A", ttl).await.unwrap() && s.lock("k", "B", ttl).await.unwrap());
}

#[test]
fn invalid_specs_are_rejected() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    assert!(rt.block_on(store::open(&"embedded:".into())).is_err());
}
