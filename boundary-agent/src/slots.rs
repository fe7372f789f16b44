//! Connection slots, of the HTTP endpoints (`metrics/http`) and the identity endpoint
//! (`identity/server.rs`): at most a fixed number of connections are served at once, and a new
//! one is always admitted, the oldest being closed to make room for it.
//!
//! Why the oldest: a probe, a scrape or a workload registering sends its whole request on
//! connecting (or handshakes at once) and is answered in milliseconds, so when all slots are
//! taken the oldest connections are the ones trickling a request or a handshake in, or not
//! reading their answer. Refusing the newcomer instead would let whoever holds the slots turn
//! the kubelet (or every workload) away; queueing it would hold its probe past its timeout.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use tokio::sync::oneshot;

/// The live connections, oldest first (ids only grow).
#[derive(Debug)]
pub struct Slots {
    capacity: usize,
    live: Arc<Mutex<Live>>,
}

#[derive(Debug, Default)]
struct Live {
    next: u64,
    /// Dropping a connection's sender is what tells it to close.
    conns: BTreeMap<u64, oneshot::Sender<()>>,
}

/// One admitted connection's slot, held by its task: dropping it frees the slot.
#[derive(Debug)]
pub struct Slot {
    id: u64,
    live: Arc<Mutex<Live>>,
    closed: oneshot::Receiver<()>,
}

impl Slots {
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "at least one connection");
        Self {
            capacity,
            live: Arc::default(),
        }
    }

    /// Admits a connection. If every slot was taken, the oldest connection is told to close
    /// first (and `true` returned): its slot is free from now on.
    pub fn admit(&self) -> (Slot, bool) {
        let mut live = lock(&self.live);
        let evicted = live.conns.len() >= self.capacity && live.conns.pop_first().is_some();
        let id = live.next;
        live.next += 1;
        let (tx, rx) = oneshot::channel();
        live.conns.insert(id, tx);
        let slot = Slot {
            id,
            live: Arc::clone(&self.live),
            closed: rx,
        };
        (slot, evicted)
    }

    /// Connections admitted and neither finished nor closed to make room.
    #[cfg(test)]
    pub fn open(&self) -> usize {
        lock(&self.live).conns.len()
    }
}

impl Slot {
    /// Resolves once this connection was closed to make room for a newer one.
    pub async fn evicted(&mut self) {
        // Never sent on: the sender is dropped, which the receiver sees as an error.
        let _ = (&mut self.closed).await;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.live).conns.remove(&self.id);
    }
}

fn lock(live: &Mutex<Live>) -> MutexGuard<'_, Live> {
    // The map stays consistent whatever panicked while holding it: every change is one call.
    live.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_finished_connection_frees_its_slot() {
        let slots = Slots::new(2);
        let (a, evicted) = slots.admit();
        assert!(!evicted);
        let (_b, evicted) = slots.admit();
        assert!(!evicted);
        assert_eq!(slots.open(), 2);
        drop(a);
        assert_eq!(slots.open(), 1);
        let (_c, evicted) = slots.admit();
        assert!(!evicted, "a slot was free");
        assert_eq!(slots.open(), 2);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn when_full_the_oldest_is_closed_and_the_newcomer_admitted() {
        let slots = Slots::new(2);
        let (mut oldest, _) = slots.admit();
        let (mut middle, _) = slots.admit();
        let (mut newest, evicted) = slots.admit();
        assert!(evicted);
        assert_eq!(slots.open(), 2);
        tokio::time::timeout(Duration::from_secs(1), oldest.evicted())
            .await
            .expect("the oldest is told to close");
        let short = Duration::from_millis(20);
        assert!(
            tokio::time::timeout(short, middle.evicted()).await.is_err(),
            "the others keep going"
        );
        assert!(tokio::time::timeout(short, newest.evicted()).await.is_err());
        // The closed one ending later does not free a slot it no longer holds.
        drop(oldest);
        assert_eq!(slots.open(), 2);
        let (_next, evicted) = slots.admit();
        assert!(evicted, "still full");
        tokio::time::timeout(Duration::from_secs(1), middle.evicted())
            .await
            .expect("now the middle one is the oldest");
    }
}
