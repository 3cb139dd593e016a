//! Scan slots on one worker, shared fairly between the clients that have
//! work for it.
//!
//! A worker admits `capacity` calls at once (twice its scan threads: one
//! file arrives while another is scanned). Alone, a client may hold them
//! all. Once two or more clients have work on the worker (a slot held, a
//! file waiting, or a slot given back less than [`LINGER`] ago), each may
//! hold at most `threads / clients` (at least one): a client streaming slow
//! files (bounded bombs) then holds at most its share of the scan threads,
//! its further files queue behind its own, and the others' files find a
//! thread free instead of a queue of bombs in the worker. A freed slot goes
//! to the waiting client holding the fewest, then to the longest waiting.
//!
//! Clients are token or certificate names; clamd callers are one client per
//! peer address (`clamd@ADDRESS`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How long a client that gave back its last slot still counts as having
/// work: a client sending one file after another is not pushed out between
/// two of them.
pub const LINGER: Duration = Duration::from_secs(2);

/// The slots of one worker.
pub struct FairSlots {
    inner: Arc<Inner>,
}

struct Inner {
    capacity: usize,
    threads: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    used: usize,
    seq: u64,
    clients: HashMap<Arc<str>, Client>,
}

struct Client {
    held: usize,
    waiting: VecDeque<(u64, oneshot::Sender<FairPermit>)>,
    last: Instant,
}

impl Client {
    fn active(&self, now: Instant) -> bool {
        self.held > 0 || !self.waiting.is_empty() || now.duration_since(self.last) < LINGER
    }
}

/// One slot, held by one client; given back when dropped.
pub struct FairPermit {
    inner: Arc<Inner>,
    client: Arc<str>,
}

impl Drop for FairPermit {
    fn drop(&mut self) {
        self.inner.release(&self.client);
    }
}

/// A request for a slot, waiting its turn; dropping it leaves the queue.
pub struct Waiting {
    rx: oneshot::Receiver<FairPermit>,
}

impl Waiting {
    /// The slot, once granted.
    pub async fn granted(&mut self) -> FairPermit {
        match (&mut self.rx).await {
            Ok(p) => p,
            // The sender is only dropped unsent when the slots go away with
            // their worker; such a waiter is dropped by the ranking recheck.
            Err(_) => std::future::pending().await,
        }
    }
}

impl FairSlots {
    pub fn new(capacity: usize, threads: usize) -> Self {
        let capacity = capacity.max(1);
        let threads = threads.clamp(1, capacity);
        Self { inner: Arc::new(Inner { capacity, threads, state: Mutex::default() }) }
    }

    /// Ask for a slot for `client`: granted now if its turn has come, else
    /// queued.
    pub fn request(&self, client: &str) -> Result<FairPermit, Waiting> {
        let (tx, mut rx) = oneshot::channel();
        let grants = {
            let mut st = self.inner.lock();
            st.seq += 1;
            let seq = st.seq;
            let c = st.client(client);
            c.waiting.push_back((seq, tx));
            self.inner.pick(&mut st)
        };
        self.inner.send(grants);
        match rx.try_recv() {
            Ok(p) => Ok(p),
            Err(_) => Err(Waiting { rx }),
        }
    }

    /// A slot for `client` if one is free for it now and no one is ahead.
    pub fn try_acquire(&self, client: &str) -> Option<FairPermit> {
        let mut st = self.inner.lock();
        let now = Instant::now();
        st.forget_idle(now);
        if st.used >= self.inner.capacity {
            return None;
        }
        st.client(client);
        let name = st.clients.get_key_value(client).map(|(k, _)| k.clone())?;
        let cap = self.inner.cap(&st, now);
        let c = st.clients.get(&name)?;
        let others_waiting =
            st.clients.iter().any(|(n, o)| *n != name && o.held < cap && o.waiting.iter().any(|w| !w.1.is_closed()));
        if c.held >= cap || !c.waiting.is_empty() || others_waiting {
            return None;
        }
        let c = st.clients.get_mut(&name)?;
        c.held += 1;
        c.last = now;
        st.used += 1;
        Some(FairPermit { inner: self.inner.clone(), client: name })
    }

    /// Look again at who may be granted (a client's linger may have ended).
    pub fn poke(&self) {
        let grants = self.inner.pick(&mut self.inner.lock());
        self.inner.send(grants);
    }

    /// Slots held now, in all and by `client`.
    #[cfg(test)]
    pub fn held(&self, client: &str) -> (usize, usize) {
        let st = self.inner.lock();
        (st.used, st.clients.get(client).map_or(0, |c| c.held))
    }
}

impl State {
    fn client(&mut self, name: &str) -> &mut Client {
        if !self.clients.contains_key(name) {
            self.clients.insert(Arc::from(name), Client { held: 0, waiting: VecDeque::new(), last: Instant::now() });
        }
        let c = self.clients.get_mut(name).expect("just inserted");
        c.last = Instant::now();
        c
    }

    fn forget_idle(&mut self, now: Instant) {
        for c in self.clients.values_mut() {
            while c.waiting.front().is_some_and(|w| w.1.is_closed()) {
                c.waiting.pop_front();
            }
        }
        self.clients.retain(|_, c| c.active(now));
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most slots one client may hold now.
    fn cap(&self, st: &State, now: Instant) -> usize {
        let active = st.clients.values().filter(|c| c.active(now)).count();
        if active <= 1 { self.capacity } else { (self.threads / active).max(1) }
    }

    /// Grant free slots to waiting clients, fewest held first; the grants
    /// are sent by the caller once the lock is released.
    fn pick(&self, st: &mut State) -> Vec<(Arc<str>, oneshot::Sender<FairPermit>)> {
        let now = Instant::now();
        st.forget_idle(now);
        let mut grants = Vec::new();
        while st.used < self.capacity {
            let cap = self.cap(st, now);
            let next = st
                .clients
                .iter()
                .filter(|(_, c)| c.held < cap)
                .filter_map(|(n, c)| c.waiting.front().map(|w| (c.held, w.0, n.clone())))
                .min();
            let Some((_, _, name)) = next else { break };
            let c = st.clients.get_mut(&name).expect("picked from the map");
            let (_, tx) = c.waiting.pop_front().expect("has a waiter");
            if tx.is_closed() {
                continue;
            }
            c.held += 1;
            c.last = now;
            st.used += 1;
            grants.push((name, tx));
        }
        grants
    }

    /// Hand out grants (outside the lock); one whose waiter left is given
    /// back at once.
    fn send(self: &Arc<Self>, grants: Vec<(Arc<str>, oneshot::Sender<FairPermit>)>) {
        for (client, tx) in grants {
            let permit = FairPermit { inner: self.clone(), client };
            drop(tx.send(permit)); // a refused permit is dropped: its slot goes back
        }
    }

    fn release(self: &Arc<Self>, client: &str) {
        let grants = {
            let mut st = self.lock();
            st.used = st.used.saturating_sub(1);
            if let Some(c) = st.clients.get_mut(client) {
                c.held = c.held.saturating_sub(1);
                c.last = Instant::now();
            }
            self.pick(&mut st)
        };
        self.send(grants);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn soon(w: &mut Waiting) -> Option<FairPermit> {
        tokio::time::timeout(Duration::from_millis(50), w.granted()).await.ok()
    }

    /// A worker of 4 threads (8 slots): a client alone takes every slot; a
    /// second client with work gets freed slots first, up to half the
    /// threads, however many files the first one has queued; the first is
    /// then held to the other half.
    #[tokio::test]
    async fn a_busy_client_keeps_at_most_its_share_once_another_has_work() {
        let slots = FairSlots::new(8, 4);
        let mut bombs: Vec<FairPermit> = (0..8).map(|_| slots.request("bomber").ok().expect("alone: granted")).collect();
        let mut queued: Vec<Waiting> = (0..20).map(|_| slots.request("bomber").err().expect("full")).collect();
        assert_eq!(slots.held("bomber"), (8, 8));

        let mut clean: Vec<Waiting> = (0..3).map(|_| slots.request("clean").err().expect("full")).collect();
        drop(bombs.pop());
        let c1 = soon(&mut clean[0]).await.expect("the first freed slot goes to the client holding none");
        drop(bombs.pop());
        let c2 = soon(&mut clean[1]).await.expect("and the second");
        assert_eq!(slots.held("clean"), (8, 2));
        // Its share is 2 of the 4 threads: the bomber's next slots are not
        // its, nor the bomber's while the bomber is over its own share.
        for _ in 0..4 {
            drop(bombs.pop());
        }
        assert!(soon(&mut clean[2]).await.is_none());
        assert!(soon(&mut queued[0]).await.is_none());
        assert_eq!(slots.held("bomber"), (4, 2));
        // Below its share, the bomber's next file goes in: 2 threads each.
        drop(bombs.pop());
        let b = soon(&mut queued[0]).await.expect("the bomber under its share");
        assert!(soon(&mut queued[1]).await.is_none(), "and never over it");
        assert_eq!(slots.held("bomber"), (4, 2));
        assert!(slots.try_acquire("clean").is_none(), "the clean client at its share");
        drop(c1);
        let c3 = soon(&mut clean[2]).await.expect("its own queued file takes the slot it gave back");
        assert_eq!(slots.held("clean"), (4, 2));
        drop((b, c2, c3, bombs));
    }

    #[tokio::test]
    async fn a_client_alone_again_gets_every_slot_after_the_linger() {
        let slots = FairSlots::new(4, 2);
        let a = slots.request("a").ok().expect("alone");
        let b = slots.request("b").ok().expect("b holds none");
        let mut a2 = slots.request("a").err().expect("a at its share of 2 threads / 2 clients");
        drop(b);
        assert!(soon(&mut a2).await.is_none(), "b lingers: a stays at its share for a moment");
        tokio::time::sleep(LINGER + Duration::from_millis(100)).await;
        slots.poke();
        let a2 = soon(&mut a2).await.expect("b is gone: a may take every slot");
        let a3 = slots.try_acquire("a").expect("a third");
        assert_eq!(slots.held("a"), (3, 3));
        drop((a, a2, a3));
        assert_eq!(slots.held("a"), (0, 0));
    }

    #[test]
    fn a_waiter_that_leaves_gives_its_turn_away() {
        let slots = FairSlots::new(1, 1);
        let held = slots.request("a").ok().unwrap();
        let gone = slots.request("b").err().unwrap();
        let mut next = slots.request("c").err().unwrap();
        drop(gone);
        drop(held);
        let p = next.rx.try_recv().expect("c is granted the slot b left");
        assert_eq!(slots.held("c"), (1, 1));
        drop(p);
        assert_eq!(slots.held("c"), (0, 0));
    }
}
