//! Pass 9: rate-limit buckets.
//!
//! Every rule with a limit pays into a bucket of its own, numbered in the datapath's bucket
//! array. A bucket is known by its fingerprint: the rule's (workload, direction, name) and the
//! limit's terms. A reload that keeps both keeps the bucket, and so its fill and every CPU's
//! credit in it; a changed limit is a new bucket, which starts full. A new bucket takes a
//! number no bucket of the live policy holds, because the live policy's packets still pay into
//! those until the swap's grace period ends.

use std::collections::{BTreeMap, BTreeSet};

use boundary_common::maps::{MAX_BUCKETS, NO_BUCKET};

use super::{CompileError, RuleInfo};
use crate::policy::{fingerprint::fnv1a, ratelimit::RateLimit};

/// Bucket fingerprint -> bucket, as installed: what [`assign`] keeps.
pub type BucketTable = BTreeMap<u64, u32>;

/// The bucket a rule pays into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bucket {
    /// Its index in the datapath's bucket array (never [`NO_BUCKET`]).
    pub index: u32,
    /// What keeps it across reloads (see the module's doc).
    pub fingerprint: u64,
    pub limit: RateLimit,
    /// A limit kept per peer with a rule-wide ceiling: the ceiling's own bucket (index,
    /// fingerprint), which every peer's packets also pay into.
    pub ceiling: Option<(u32, u64)>,
}

impl Bucket {
    /// Every (fingerprint, index) this bucket holds.
    pub fn held(&self) -> impl Iterator<Item = (u64, u32)> {
        std::iter::once((self.fingerprint, self.index)).chain(
            self.ceiling
                .map(|(index, fingerprint)| (fingerprint, index)),
        )
    }
}

/// The fingerprint of `limit`'s bucket on the rule of fingerprint `rule`.
pub fn bucket_fingerprint(rule: u64, limit: &RateLimit) -> u64 {
    fnv1a(format!("{rule:016x}|{}", limit.canonical()).as_bytes())
}

/// The fingerprint of the ceiling bucket of the bucket of fingerprint `bucket`.
fn ceiling_fingerprint(bucket: u64) -> u64 {
    fnv1a(format!("{bucket:016x}|ceiling").as_bytes())
}

/// Each limited rule's bucket (rule id -> bucket), and its ceiling's: the one `live` has for
/// its fingerprint, else the lowest index neither `live` nor another rule holds.
pub(super) fn assign(
    rules: &BTreeMap<u32, RuleInfo>,
    live: &BucketTable,
) -> Result<BTreeMap<u32, Bucket>, CompileError> {
    let limited: Vec<(u32, u64, RateLimit)> = rules
        .iter()
        .filter_map(|(&id, r)| {
            r.limit
                .map(|l| (id, bucket_fingerprint(r.fingerprint, &l), l))
        })
        .collect();
    let held: BTreeSet<u32> = live.values().copied().collect();
    let wanted = |f: &u64| live.get(f).copied();
    let mut taken: BTreeSet<u32> = limited
        .iter()
        .flat_map(|(_, f, _)| [wanted(f), wanted(&ceiling_fingerprint(*f))])
        .flatten()
        .collect();
    let mut next = NO_BUCKET + 1;
    let needed = limited.len()
        + limited
            .iter()
            .filter(|(_, _, l)| l.ceiling.is_some())
            .count();
    let mut give = |fingerprint: u64| -> Result<u32, CompileError> {
        if let Some(kept) = wanted(&fingerprint) {
            return Ok(kept);
        }
        while next < MAX_BUCKETS && (held.contains(&next) || taken.contains(&next)) {
            next += 1;
        }
        if next >= MAX_BUCKETS {
            return Err(CompileError::TooManyBuckets {
                count: needed,
                live: held.len(),
                max: MAX_BUCKETS - 1,
            });
        }
        taken.insert(next);
        Ok(next)
    };
    let mut buckets = BTreeMap::new();
    for (id, fingerprint, limit) in limited.iter().copied() {
        let index = give(fingerprint)?;
        let ceiling = match limit.ceiling {
            Some(_) => {
                let f = ceiling_fingerprint(fingerprint);
                Some((give(f)?, f))
            }
            None => None,
        };
        buckets.insert(
            id,
            Bucket {
                index,
                fingerprint,
                limit,
                ceiling,
            },
        );
    }
    Ok(buckets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::compile::{SlotTable, compile_keeping, tests::parse};

    fn policy(limit: &str, extra_rule: bool) -> crate::policy::Policy {
        let extra = if extra_rule {
            "      - { name: first, from: { any: true }, ports: [\"1/tcp\"], rateLimit: { packetsPerSecond: 7 } }\n"
        } else {
            ""
        };
        parse(&format!(
            "apiVersion: boundary.dev/v1
workloads:
  - name: w
    addresses: [10.0.0.1]
    ingress:
{extra}      - {{ name: web, from: {{ any: true }}, ports: [\"80/tcp\"], rateLimit: {limit} }}
      - {{ name: open, from: {{ any: true }}, ports: [\"22/tcp\"] }}
"
        ))
    }

    fn buckets(p: &crate::policy::Policy, live: &BucketTable) -> BTreeMap<String, Bucket> {
        let t = compile_keeping(
            p,
            &SlotTable::new(),
            &crate::policy::RuleTable::new(),
            live,
            16,
        )
        .expect("compiles");
        t.buckets
            .iter()
            .map(|(id, b)| (t.rules[id].name.clone(), *b))
            .collect()
    }

    fn table(b: &BTreeMap<String, Bucket>) -> BucketTable {
        b.values().flat_map(Bucket::held).collect()
    }

    #[test]
    fn only_limited_rules_get_a_bucket_and_never_bucket_zero() {
        let b = buckets(
            &policy("{ packetsPerSecond: 100 }", false),
            &BucketTable::new(),
        );
        assert_eq!(b.keys().collect::<Vec<_>>(), ["web"]);
        assert_eq!(b["web"].index, 1);
    }

    #[test]
    fn an_unchanged_limit_keeps_its_bucket_and_a_changed_one_gets_a_new_one() {
        let first = buckets(
            &policy("{ packetsPerSecond: 100 }", false),
            &BucketTable::new(),
        );
        let live = table(&first);
        // Another rule added before it: the bucket stays.
        let again = buckets(&policy("{ packetsPerSecond: 100 }", true), &live);
        assert_eq!(again["web"].index, first["web"].index);
        assert_ne!(again["first"].index, first["web"].index);
        // The limit changed: a bucket no live one holds, so it starts full.
        let changed = buckets(&policy("{ packetsPerSecond: 100, burst: 5 }", false), &live);
        assert_ne!(changed["web"].index, first["web"].index);
        assert_ne!(changed["web"].fingerprint, first["web"].fingerprint);
    }

    #[test]
    fn a_ceiling_is_a_bucket_of_its_own_kept_with_its_limit() {
        let limit = "{ packetsPerSecond: 10, per: source, ceiling: { packetsPerSecond: 100 } }";
        let first = buckets(&policy(limit, false), &BucketTable::new());
        let (ceiling, _) = first["web"].ceiling.expect("a ceiling bucket");
        assert_ne!(ceiling, first["web"].index);
        let again = buckets(&policy(limit, true), &table(&first));
        assert_eq!(again["web"].ceiling, first["web"].ceiling);
        assert_eq!(again["web"].index, first["web"].index);
        let held: BTreeSet<u32> = again.values().flat_map(|b| b.held().map(|h| h.1)).collect();
        assert_eq!(held.len(), 3, "first, web and web's ceiling");
    }

    #[test]
    fn running_out_of_buckets_is_an_error_not_a_shared_bucket() {
        let live: BucketTable = (1..MAX_BUCKETS).map(|i| (u64::from(i) << 32, i)).collect();
        let p = policy("{ packetsPerSecond: 100 }", false);
        let e = compile_keeping(
            &p,
            &SlotTable::new(),
            &crate::policy::RuleTable::new(),
            &live,
            16,
        )
        .expect_err("full");
        assert!(matches!(e, CompileError::TooManyBuckets { .. }), "{e}");
    }
}
