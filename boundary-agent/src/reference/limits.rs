//! Rate limits in the reference: each bucket as the policy says it, one token bucket per
//! rule (or per rule and peer address), paid exactly on a clock the caller sets. The datapath
//! pays per CPU from credits drawn in batches (`boundary_common::bucket`); on one CPU with a
//! clock that stands still the two admit the same packets, which the differential test checks.
//!
//! Step 5b of the decision: a packet the policy allows by a rule with a limit pays into the
//! rule's bucket (and, per peer, the peer's own bucket, then the rule's ceiling). Over the
//! limit it is rescued by a failsafe entry, else passed as `audit` in an audit-mode workload,
//! else dropped as `rate_limited`; either way it opens no flow.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
};

use boundary_common::bucket::{cost, depth, interval, max_units, take, ticks};

use crate::policy::{
    Bucket, Tables,
    ratelimit::{Per, Rate},
};

/// A peer as its bucket is kept: its address, or for IPv6 its /64 (a host holds a whole
/// /64; a bucket per address would give it a fresh burst from every address it takes).
fn peer_key(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(_) => peer,
        IpAddr::V6(a) => {
            let bits = u128::from(a) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
    }
}

/// A bucket as the datapath knows it: (fingerprint, index), the peer's address per peer.
type Key = (u64, u32, Option<IpAddr>);

/// Every bucket's theoretical arrival time (ticks) of packets and bytes.
#[derive(Clone, Debug, Default)]
pub struct Limits {
    /// Now, in ns: set by the caller (a clock that stands still unless it moves it).
    pub clock_ns: u64,
    tats: HashMap<Key, [u64; 2]>,
}

impl Limits {
    /// Whether a packet of `packets` segments and `bytes` bytes from or to `peer` is within
    /// `bucket`'s limit, paying for it if so.
    pub fn admit(&mut self, bucket: &Bucket, peer: IpAddr, packets: u64, bytes: u64) -> bool {
        let now = ticks(self.clock_ns);
        let l = bucket.limit;
        if l.per == Per::Rule {
            let key = (bucket.fingerprint, bucket.index, None);
            return self.pay(key, [l.packets, l.bytes], [packets, bytes], now);
        }
        // The ceiling first, given back when the peer's own bucket cannot pay.
        let ceiling = match (bucket.ceiling, l.ceiling) {
            (Some((index, fingerprint)), Some(rate)) => {
                let key = (fingerprint, index, None);
                let before = self.tats.get(&key).copied();
                if !self.pay(key, [Some(rate), None], [packets, 0], now) {
                    return false;
                }
                Some((key, before))
            }
            _ => None,
        };
        let key = (bucket.fingerprint, bucket.index, Some(peer_key(peer)));
        if self.pay(key, [l.packets, l.bytes], [packets, bytes], now) {
            return true;
        }
        if let Some((key, before)) = ceiling {
            match before {
                Some(tats) => self.tats.insert(key, tats),
                None => self.tats.remove(&key),
            };
        }
        false
    }

    /// After a reload to `tables`: forgets the buckets it does not keep (the datapath makes
    /// a bucket anew, full, when its rule or limit changed or it was given another number).
    pub fn keep_only(&mut self, tables: &Tables) {
        let kept: HashSet<(u64, u32)> = tables.buckets.values().flat_map(Bucket::held).collect();
        self.tats.retain(|(f, i, _), _| kept.contains(&(*f, *i)));
    }

    /// Pays both dimensions or neither (the datapath gives back, or keeps in the CPU's credit
    /// for the next packet, what one dimension took when the other cannot pay).
    fn pay(&mut self, key: Key, rates: [Option<Rate>; 2], units: [u64; 2], now: u64) -> bool {
        // A bucket first seen is full: the datapath makes it full before it is used.
        let tats = self.tats.entry(key).or_insert([now, now]);
        let mut next = *tats;
        for d in 0..2 {
            let Some(r) = rates[d] else { continue };
            let i = interval(r.per_second);
            let c = cost(units[d], i, max_units(i));
            match take(tats[d], now, c, depth(r.per_second, r.burst)) {
                Some(t) => next[d] = t,
                None => return false,
            }
        }
        *tats = next;
        true
    }
}
