//! One conformance suite for every verdict store backend: embedded (redb
//! file) and Redis (a real redis-server).

use qala_coordinator::store::{self, EmbeddedStore, RedisStore, VerdictStore};
use qala_proto::v1::{Detection, LimitHit, Verdict, VerdictKind};
use qala_tests::{Redis, sha256_hex};

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

async fn conformance(s: &dyn VerdictStore) {
    let bad = verdict("rs1", "bad", VerdictKind::Malicious, false);
    let good = verdict("rs1", "good", VerdictKind::Clean, false);
    assert!(s.get("rs1", &bad.sha256).await.unwrap().is_none());

    assert!(store::save(s, &bad).await.unwrap());
    assert!(store::save(s, &good).await.unwrap());
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

    // Never cached: a clean verdict that hit a limit, an unscannable one.
    let partial = verdict("rs1", "partial", VerdictKind::Clean, true);
    assert!(!store::save(s, &partial).await.unwrap());
    assert!(s.get("rs1", &partial.sha256).await.unwrap().is_none());
    let unscannable = verdict("rs1", "odd", VerdictKind::Unscannable, false);
    assert!(!store::save(s, &unscannable).await.unwrap());
    assert!(s.get("rs1", &unscannable.sha256).await.unwrap().is_none());
    // A detection with a limit hit is still worth caching.
    let bad_partial = verdict("rs1", "bad-partial", VerdictKind::Malicious, true);
    assert!(store::save(s, &bad_partial).await.unwrap());

    // Overwrite replaces.
    let mut newer = bad.clone();
    newer.worker_id = "w9".into();
    s.put(&newer).await.unwrap();
    assert_eq!(s.get("rs1", &bad.sha256).await.unwrap().unwrap().worker_id, "w9");
}

#[tokio::test]
async fn embedded_store_conforms_and_persists() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("sub/verdicts.redb");
    {
        let s = EmbeddedStore::open(&path).unwrap();
        conformance(&s).await;
    }
    let s = store::open(&format!("embedded:{}", path.display())).await.unwrap();
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
    conformance(&s).await;
    let again = store::open(&redis.url()).await.unwrap();
    let bad = verdict("rs1", "bad", VerdictKind::Malicious, false);
    assert!(again.get("rs1", &bad.sha256).await.unwrap().is_some(), "a second client sees the same data");
}

#[tokio::test]
async fn redis_scan_locks_exclude_other_holders_and_expire() {
    use std::time::Duration;
    let d = tempfile::tempdir().unwrap();
    let redis = Redis::start(d.path()).unwrap();
    let (a, b) = (RedisStore::new(&redis.url()).unwrap(), RedisStore::new(&redis.url()).unwrap());
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
    assert!(rt.block_on(store::open("embedded:")).is_err());
}
