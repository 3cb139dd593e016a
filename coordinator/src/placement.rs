//! Rendezvous (highest-random-weight) hashing of a file's sha256 over worker
//! ids. Every coordinator computes the same ranking from the same member set,
//! the same content always lands on the same worker, and when a worker joins
//! or leaves only the files whose top choice changes move (about 1/N).

use sha2::{Digest, Sha256};

/// Weight of `worker_id` for `sha256`: the first 8 bytes of
/// sha256(worker_id || 0 || sha256).
pub fn weight(worker_id: &str, sha256: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(worker_id.as_bytes());
    h.update([0u8]);
    h.update(sha256.as_bytes());
    let d = h.finalize();
    u64::from_be_bytes(d[..8].try_into().expect("8 bytes"))
}

/// `ids` ordered from first to last choice for `sha256`. Ties (never seen in
/// practice) break by id so the order is total.
pub fn rank<'a, T: AsRef<str>>(ids: &'a [T], sha256: &str) -> Vec<&'a T> {
    let mut scored: Vec<(u64, &T)> = ids.iter().map(|id| (weight(id.as_ref(), sha256), id)).collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.as_ref().cmp(b.1.as_ref())));
    scored.into_iter().map(|(_, id)| id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(i: u32) -> String {
        hex::encode(Sha256::digest(i.to_le_bytes()))
    }

    #[test]
    fn deterministic_and_independent_of_member_order() {
        let a = ["w1", "w2", "w3"];
        let b = ["w3", "w1", "w2"];
        for i in 0..200 {
            assert_eq!(rank(&a, &sha(i))[0], rank(&b, &sha(i))[0]);
            assert_eq!(rank(&a, &sha(i)), rank(&a, &sha(i)));
        }
    }

    #[test]
    fn spreads_evenly() {
        let ids = ["w1", "w2", "w3", "w4"];
        let mut counts = [0usize; 4];
        for i in 0..8000 {
            let top = rank(&ids, &sha(i))[0];
            counts[ids.iter().position(|x| x == top).unwrap()] += 1;
        }
        for c in counts {
            assert!((1700..2300).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn only_the_removed_workers_files_move() {
        let before = ["w1", "w2", "w3", "w4"];
        let after = ["w1", "w2", "w4"];
        let mut moved = 0;
        for i in 0..4000 {
            let s = sha(i);
            let (b, a) = (*rank(&before, &s)[0], *rank(&after, &s)[0]);
            if b != "w3" {
                assert_eq!(a, b, "a file not on the removed worker moved");
            } else {
                moved += 1;
                // It goes to its second choice.
                assert_eq!(a, *rank(&before, &s)[1]);
            }
        }
        assert!((800..1200).contains(&moved), "{moved}");

        // Adding a worker moves only files to the new worker.
        let grown = ["w1", "w2", "w3", "w4", "w5"];
        for i in 0..4000 {
            let s = sha(i);
            let (b, a) = (*rank(&before, &s)[0], *rank(&grown, &s)[0]);
            assert!(a == b || a == "w5");
        }
    }
}
