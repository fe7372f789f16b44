//! `rateLimit:` on a rule: as written, checked as it is read (so errors carry the file, line
//! and column), and as the compiler reads it.
//!
//! ```yaml
//! rateLimit: { packetsPerSecond: 5000, burst: 500 }                 # one bucket for the rule
//! rateLimit: { bytesPerSecond: 10000000, burstBytes: 2000000 }
//! rateLimit: { packetsPerSecond: 200, per: source, maxSources: 65536,
//!              ceiling: { packetsPerSecond: 5000, burst: 500 } }    # one bucket per source
//! ```
//! A burst defaults to one second's worth of its rate.
//!
//! What a limit may say also depends on its rule (an allow rule's, `per: source` on ingress,
//! `per: destination` on egress) and on the limits before it (the per-source tables together
//! are capped). serde gives a value nothing but its text, so while a policy is read the rule
//! around a limit and the sources counted so far are kept beside the reader ([`reading_rule`],
//! [`counting_sources`], as `values::checking_interfaces` keeps the agent's interfaces), and
//! each check runs in the visitor of the value it is about: its error then carries that
//! value's line and column.

use std::{cell::Cell, fmt, thread::LocalKey};

use boundary_common::{Direction, bucket::RATE_MAX};
use serde::{
    Deserialize,
    de::{EnumAccess, Error as _, MapAccess, VariantAccess as _, value::MapAccessDeserializer},
};

use super::values::RuleAction;

/// The fastest packet rate a limit may set (a billion packets a second is beyond any link).
pub const PACKET_RATE_MAX: u64 = 1_000_000_000;
/// The slowest byte rate: one MTU a second. Below it a limit is a typing error.
pub const BYTE_RATE_MIN: u64 = 1_500;
/// The fastest byte rate: 800 Gbit/s (what the bucket arithmetic keeps exact, see
/// `boundary_common::bucket`).
pub const BYTE_RATE_MAX: u64 = RATE_MAX;
/// The smallest byte burst: one MTU (a larger packet still passes a full bucket).
pub const BYTE_BURST_MIN: u64 = 1_500;
/// A burst worth more than this many seconds of its rate is refused: a bucket that deep is
/// not a limit.
pub const BURST_SECONDS_MAX: u64 = 3_600;
/// Default and largest `maxSources`.
pub const MAX_SOURCES_DEFAULT: u32 = 65_536;
pub const MAX_SOURCES_MAX: u32 = 1_048_576;
/// Sources all per-source tables of a policy keep together: the kernel preallocates every
/// table whole, [`PEER_ENTRY_BYTES`] an entry (bpftool's `memlock` of a 65,536-entry table),
/// so this is about 208 MiB.
pub const PEER_ENTRIES_MAX: u64 = 2_097_152;
pub const PEER_ENTRY_BYTES: u64 = 104;

/// A rate and the bucket depth that goes with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rate {
    pub per_second: u64,
    pub burst: u64,
}

/// Who shares a bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Per {
    /// Everything the rule admits.
    Rule,
    /// Each source address (ingress rules).
    Source,
    /// Each destination address (egress rules).
    Destination,
}

impl Per {
    pub fn as_str(self) -> &'static str {
        match self {
            Per::Rule => "rule",
            Per::Source => "source",
            Per::Destination => "destination",
        }
    }
}

/// A rule's rate limit, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RateLimit {
    pub packets: Option<Rate>,
    pub bytes: Option<Rate>,
    pub per: Per,
    /// Buckets kept per rule when `per` is a peer (least recently used evicted beyond).
    pub max_sources: u32,
    /// A rule-wide bucket every peer's packets also pay into (`per` a peer only).
    pub ceiling: Option<Rate>,
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(p) = self.packets {
            parts.push(format!("{} pkt/s burst {}", p.per_second, p.burst));
        }
        if let Some(b) = self.bytes {
            parts.push(format!("{} B/s burst {} B", b.per_second, b.burst));
        }
        write!(f, "{} per {}", parts.join(", "), self.per.as_str())?;
        if self.per != Per::Rule {
            write!(f, " (up to {})", self.max_sources)?;
        }
        if let Some(c) = self.ceiling {
            write!(f, ", ceiling {} pkt/s burst {}", c.per_second, c.burst)?;
        }
        Ok(())
    }
}

impl RateLimit {
    /// Canonical text of what the limit says, for its bucket's fingerprint: a bucket is kept
    /// across reloads while its rule and this text stay the same.
    pub fn canonical(&self) -> String {
        let rate =
            |r: Option<Rate>| r.map_or("-".to_owned(), |r| format!("{}/{}", r.per_second, r.burst));
        format!(
            "p{}|b{}|{}|{}|c{}",
            rate(self.packets),
            rate(self.bytes),
            self.per.as_str(),
            self.max_sources,
            rate(self.ceiling)
        )
    }
}

impl<'de> Deserialize<'de> for RateLimit {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RateLimit;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("struct RawRateLimit")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RateLimit, A::Error> {
                let raw = RawRateLimit::deserialize(MapAccessDeserializer::new(map))?;
                let limit = RateLimit::try_from(raw).map_err(A::Error::custom)?;
                suits_its_rule(&limit).map_err(A::Error::custom)?;
                Ok(limit)
            }
        }
        // Checked in the visitor, while the reader is at the block: its errors then carry the
        // block's own line and column (`try_from` would report the rule's).
        d.deserialize_map(Visitor)
    }
}

impl<'de> Deserialize<'de> for Per {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Per;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("rule, source or destination")
            }
            fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Per, A::Error> {
                let per = match unit_variant(data, PER_VARIANTS)? {
                    "rule" => Per::Rule,
                    "source" => Per::Source,
                    _ => Per::Destination,
                };
                suits_its_direction(per).map_err(A::Error::custom)?;
                Ok(per)
            }
        }
        // Checked in the visitor, so that a peer of the wrong direction is refused at `per`.
        // Read as an enum, as the derived parsing did: `per: !source` is a YAML tag naming
        // the variant, not an empty string.
        d.deserialize_enum("Per", PER_VARIANTS, Visitor)
    }
}

const PER_VARIANTS: &[&str] = &["rule", "source", "destination"];
const ACTION_VARIANTS: &[&str] = &["allow", "deny"];

/// The variant an enum's value names (a plain `deny`, or the tag of `!deny`), one of
/// `variants`, holding nothing (`!deny allow` is refused, not read as either).
fn unit_variant<'de, A: EnumAccess<'de>>(
    data: A,
    variants: &'static [&'static str],
) -> Result<&'static str, A::Error> {
    let (name, value): (String, _) = data.variant()?;
    value.unit_variant()?;
    variants
        .iter()
        .find(|v| **v == name)
        .copied()
        .ok_or_else(|| A::Error::unknown_variant(&name, variants))
}

/// A rule's `action:`, read as an enum (as the derived parsing of [`RuleAction`] reads it:
/// `!deny` is the tag form of `deny`, `!deny allow` is refused), where a deny rule whose
/// `rateLimit` came first is refused: at the action, the limit being behind the reader.
pub(super) fn rule_action<'de, D: serde::Deserializer<'de>>(d: D) -> Result<RuleAction, D::Error> {
    struct Visitor;
    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = RuleAction;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("allow or deny")
        }
        fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<RuleAction, A::Error> {
            let action = if unit_variant(data, ACTION_VARIANTS)? == "deny" {
                RuleAction::Deny
            } else {
                RuleAction::Allow
            };
            RULE.with(|r| {
                let Some(mut rule) = r.get() else {
                    return Ok(action);
                };
                if action == RuleAction::Deny && rule.limited {
                    return Err(A::Error::custom(DENY_LIMITED));
                }
                rule.action = Some(action);
                r.set(Some(rule));
                Ok(action)
            })
        }
    }
    d.deserialize_enum("RuleAction", ACTION_VARIANTS, Visitor)
}

/// The rule a limit is read in, so far.
#[derive(Clone, Copy)]
struct RuleSoFar {
    direction: Direction,
    /// Its `action:`, once read.
    action: Option<RuleAction>,
    /// Whether its `rateLimit:` was read.
    limited: bool,
}

thread_local! {
    /// The rule being read, while a policy's rules are read ([`reading_rule`]).
    static RULE: Cell<Option<RuleSoFar>> = const { Cell::new(None) };
    /// The sources the per-source limits read so far keep, while a policy is read
    /// ([`counting_sources`]).
    static SOURCES: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Puts a thread-local back as it was when dropped, also when the read panics.
struct Restore<T: Copy + 'static>(&'static LocalKey<Cell<T>>, T);

impl<T: Copy + 'static> Drop for Restore<T> {
    fn drop(&mut self) {
        self.0.set(self.1);
    }
}

/// Runs `read` (one rule's deserialization, on this thread) with its limit checked against
/// the rule: its direction, and its action wherever it is written.
pub(super) fn reading_rule<T>(direction: Direction, read: impl FnOnce() -> T) -> T {
    let rule = RuleSoFar {
        direction,
        action: None,
        limited: false,
    };
    let _restore = Restore(&RULE, RULE.replace(Some(rule)));
    read()
}

/// The direction of the rule being read, while a policy's rules are read ([`reading_rule`]).
pub(super) fn reading_direction() -> Option<Direction> {
    RULE.get().map(|r| r.direction)
}

/// Runs `read` (a policy's deserialization, on this thread) adding up the sources its
/// per-source limits keep: the limit that takes the total past [`PEER_ENTRIES_MAX`] is refused.
pub(super) fn counting_sources<T>(read: impl FnOnce() -> T) -> T {
    let _restore = Restore(&SOURCES, SOURCES.replace(Some(0)));
    read()
}

const DENY_LIMITED: &str = "a deny rule admits nothing to limit: rateLimit goes on allow rules";

/// What a limit may say given its rule (only what an allow rule admits is limited) and the
/// limits before it (the kernel preallocates every per-source table whole, LRU maps cannot
/// be otherwise: their entries together are capped, so a policy cannot take the host's
/// memory).
fn suits_its_rule(limit: &RateLimit) -> Result<(), String> {
    if let Some(mut rule) = RULE.get() {
        if rule.action == Some(RuleAction::Deny) {
            return Err(DENY_LIMITED.into());
        }
        rule.limited = true;
        RULE.set(Some(rule));
    }
    if let (Some(before), true) = (SOURCES.get(), limit.per != Per::Rule) {
        let total = before + u64::from(limit.max_sources);
        if total > PEER_ENTRIES_MAX {
            return Err(format!(
                "the per-source rate limits keep {total} sources in all with this one (maxSources, default {MAX_SOURCES_DEFAULT} each), more than {PEER_ENTRIES_MAX}: the kernel preallocates each table, about {} MiB for these; lower maxSources",
                (total * PEER_ENTRY_BYTES) >> 20
            ));
        }
        SOURCES.set(Some(total));
    }
    Ok(())
}

/// The peer a bucket is kept per is the source on ingress, the destination on egress.
fn suits_its_direction(per: Per) -> Result<(), String> {
    match (per, RULE.get().map(|r| r.direction)) {
        (Per::Source, Some(Direction::Egress)) => Err(
            "`per: source` on an egress rule: the peer of an egress packet is its destination (`per: destination`)".into(),
        ),
        (Per::Destination, Some(Direction::Ingress)) => Err(
            "`per: destination` on an ingress rule: the peer of an ingress packet is its source (`per: source`)".into(),
        ),
        _ => Ok(()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRateLimit {
    packets_per_second: Option<u64>,
    bytes_per_second: Option<u64>,
    burst: Option<u64>,
    burst_bytes: Option<u64>,
    per: Option<Per>,
    max_sources: Option<u32>,
    ceiling: Option<RawCeiling>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawCeiling {
    packets_per_second: u64,
    burst: Option<u64>,
}

impl TryFrom<RawRateLimit> for RateLimit {
    type Error = String;
    fn try_from(r: RawRateLimit) -> Result<Self, String> {
        if r.packets_per_second.is_none() && r.bytes_per_second.is_none() {
            return Err("a rate limit sets packetsPerSecond, bytesPerSecond or both".into());
        }
        let packets = r
            .packets_per_second
            .map(|rate| packet_rate("packetsPerSecond", "burst", rate, r.burst))
            .transpose()?;
        if packets.is_none() && r.burst.is_some() {
            return Err("burst sizes the packetsPerSecond limit, which this one does not set (burstBytes sizes bytesPerSecond)".into());
        }
        let bytes = r
            .bytes_per_second
            .map(|rate| byte_rate(rate, r.burst_bytes))
            .transpose()?;
        if bytes.is_none() && r.burst_bytes.is_some() {
            return Err(
                "burstBytes sizes the bytesPerSecond limit, which this one does not set".into(),
            );
        }
        let per = r.per.unwrap_or(Per::Rule);
        if per == Per::Rule {
            if r.max_sources.is_some() {
                return Err("maxSources applies to `per: source` and `per: destination`: with `per: rule` there is one bucket".into());
            }
            if r.ceiling.is_some() {
                return Err("ceiling applies to `per: source` and `per: destination`: with `per: rule` the limit is rule-wide already".into());
            }
        }
        let max_sources = r.max_sources.unwrap_or(MAX_SOURCES_DEFAULT);
        if !(1..=MAX_SOURCES_MAX).contains(&max_sources) {
            return Err(format!(
                "maxSources must be 1 to {MAX_SOURCES_MAX}, not {max_sources}"
            ));
        }
        let ceiling = r
            .ceiling
            .map(|c| {
                packet_rate(
                    "ceiling.packetsPerSecond",
                    "ceiling.burst",
                    c.packets_per_second,
                    c.burst,
                )
            })
            .transpose()?;
        Ok(Self {
            packets,
            bytes,
            per,
            max_sources,
            ceiling,
        })
    }
}

fn packet_rate(key: &str, burst_key: &str, rate: u64, burst: Option<u64>) -> Result<Rate, String> {
    if !(1..=PACKET_RATE_MAX).contains(&rate) {
        return Err(format!("{key} must be 1 to {PACKET_RATE_MAX}, not {rate}"));
    }
    let burst = burst.unwrap_or(rate);
    if burst == 0 {
        return Err(format!("{burst_key} must be at least 1 packet"));
    }
    within_an_hour(burst_key, burst, rate, "packets")?;
    Ok(Rate {
        per_second: rate,
        burst,
    })
}

fn byte_rate(rate: u64, burst: Option<u64>) -> Result<Rate, String> {
    if !(BYTE_RATE_MIN..=BYTE_RATE_MAX).contains(&rate) {
        return Err(format!(
            "bytesPerSecond must be {BYTE_RATE_MIN} (one MTU a second) to {BYTE_RATE_MAX} (800 Gbit/s), not {rate}"
        ));
    }
    let burst = burst.unwrap_or(rate);
    if burst < BYTE_BURST_MIN {
        return Err(format!(
            "burstBytes must be at least {BYTE_BURST_MIN} (one MTU), not {burst}"
        ));
    }
    within_an_hour("burstBytes", burst, rate, "bytes")?;
    Ok(Rate {
        per_second: rate,
        burst,
    })
}

fn within_an_hour(key: &str, burst: u64, rate: u64, unit: &str) -> Result<(), String> {
    if burst / rate >= BURST_SECONDS_MAX {
        return Err(format!(
            "{key} of {burst} {unit} is more than an hour at {rate}/s: a bucket that deep limits nothing"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<RateLimit, String> {
        serde_yaml_ng::from_str::<RateLimit>(text).map_err(|e| e.to_string())
    }

    #[test]
    fn bursts_default_to_one_second_of_the_rate() {
        let l = read("{ packetsPerSecond: 5000, bytesPerSecond: 1000000 }").expect("valid");
        assert_eq!(
            l.packets,
            Some(Rate {
                per_second: 5000,
                burst: 5000
            })
        );
        assert_eq!(l.bytes.map(|b| b.burst), Some(1_000_000));
        assert_eq!(l.per, Per::Rule);
        assert_eq!(l.ceiling, None);
    }

    #[test]
    fn a_per_source_limit_takes_max_sources_and_a_ceiling() {
        let l = read(
            "{ packetsPerSecond: 10, burst: 5, per: source, maxSources: 1000, ceiling: { packetsPerSecond: 500 } }",
        )
        .expect("valid");
        assert_eq!(l.per, Per::Source);
        assert_eq!(l.max_sources, 1000);
        assert_eq!(
            l.ceiling,
            Some(Rate {
                per_second: 500,
                burst: 500
            })
        );
        assert_eq!(
            l.to_string(),
            "10 pkt/s burst 5 per source (up to 1000), ceiling 500 pkt/s burst 500"
        );
    }

    #[test]
    fn absurd_limits_are_refused_with_what_is_wrong() {
        for (text, wanted) in [
            (
                "{ burst: 5 }",
                "sets packetsPerSecond, bytesPerSecond or both",
            ),
            ("{ packetsPerSecond: 0 }", "packetsPerSecond must be 1 to"),
            (
                "{ packetsPerSecond: 2000000000 }",
                "packetsPerSecond must be 1 to",
            ),
            (
                "{ packetsPerSecond: 10, burst: 0 }",
                "burst must be at least 1 packet",
            ),
            ("{ packetsPerSecond: 1, burst: 3600 }", "more than an hour"),
            ("{ bytesPerSecond: 100 }", "bytesPerSecond must be 1500"),
            (
                "{ bytesPerSecond: 10000, burstBytes: 1000 }",
                "at least 1500 (one MTU)",
            ),
            (
                "{ bytesPerSecond: 10000, burst: 10 }",
                "burst sizes the packetsPerSecond limit",
            ),
            (
                "{ packetsPerSecond: 10, burstBytes: 10000 }",
                "burstBytes sizes the bytesPerSecond",
            ),
            (
                "{ packetsPerSecond: 10, maxSources: 10 }",
                "maxSources applies to",
            ),
            (
                "{ packetsPerSecond: 10, ceiling: { packetsPerSecond: 5 } }",
                "ceiling applies to",
            ),
            (
                "{ packetsPerSecond: 10, per: source, maxSources: 0 }",
                "maxSources must be 1 to",
            ),
            ("{ packetsPerSecond: 10, per: everyone }", "unknown variant"),
            ("{ packetsPerSecond: 10, rate: 5 }", "unknown field"),
            ("{ packetsPerSecond: -1 }", "invalid type"),
        ] {
            let e = read(text).expect_err(text);
            assert!(e.contains(wanted), "{text}: {e}");
        }
    }

    fn policy_error(rule: &str) -> String {
        let text = format!(
            "apiVersion: boundary.dev/v1\nworkloads:\n  - name: w\n    addresses: [10.0.0.1]\n{rule}"
        );
        crate::policy::Policy::from_str("p.yaml", &text)
            .expect_err("refused")
            .to_string()
    }

    #[test]
    fn a_limit_must_suit_its_rule_and_is_refused_where_it_is_written() {
        // Each error names the line and column of the value at fault: the limit's block, its
        // `per`, or the `action` that came after the block.
        for (rule, wanted) in [
            (
                "    ingress: [{ from: { any: true }, action: deny, rateLimit: { packetsPerSecond: 5 } }]\n",
                "p.yaml:5:63: workloads[0].ingress[0].rateLimit: a deny rule admits nothing to limit",
            ),
            (
                "    ingress: [{ from: { any: true }, rateLimit: { packetsPerSecond: 5 }, action: deny }]\n",
                "p.yaml:5:82: workloads[0].ingress[0].action: a deny rule admits nothing to limit",
            ),
            (
                "    egress: [{ to: { any: true }, rateLimit: { packetsPerSecond: 5, per: source } }]\n",
                "p.yaml:5:74: workloads[0].egress[0].rateLimit.per: `per: source` on an egress rule",
            ),
            (
                "    ingress: [{ from: { any: true }, rateLimit: { packetsPerSecond: 5, per: destination } }]\n",
                "p.yaml:5:77: workloads[0].ingress[0].rateLimit.per: `per: destination` on an ingress rule",
            ),
            // Errors in the block itself name the block.
            (
                "    ingress: [{ from: { any: true }, rateLimit: { packetsPerSecond: 0 } }]\n",
                "p.yaml:5:49: workloads[0].ingress[0].rateLimit: packetsPerSecond must be 1 to",
            ),
            (
                "    ingress:\n      - from: { any: true }\n        rateLimit:\n          burst: 5\n",
                "p.yaml:8:11: workloads[0].ingress[0].rateLimit: a rate limit sets packetsPerSecond",
            ),
        ] {
            let e = policy_error(rule);
            assert!(e.starts_with(wanted), "{rule}: {e}");
        }
        // A deny rule without a limit, and a limit on an allow rule in either order, are fine.
        for rule in [
            "    ingress: [{ from: { any: true }, action: deny }]\n",
            "    ingress: [{ rateLimit: { packetsPerSecond: 5, per: source }, from: { any: true }, action: allow }]\n",
            "    egress: [{ action: allow, to: { any: true }, rateLimit: { packetsPerSecond: 5, per: destination } }]\n",
        ] {
            let text = format!(
                "apiVersion: boundary.dev/v1\nworkloads:\n  - name: w\n    addresses: [10.0.0.1]\n{rule}"
            );
            crate::policy::Policy::from_str("p.yaml", &text).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    #[test]
    fn a_tagged_action_or_per_means_its_tag_as_before_the_checks_moved_into_visitors() {
        // `action` and `per` are enums: YAML's tag form names the variant (`action: !deny`).
        // Read as plain strings, the tag was dropped and `!deny allow` read as allow.
        let rules = |rule: &str| {
            let text = format!(
                "apiVersion: boundary.dev/v1\nworkloads:\n  - name: w\n    addresses: [10.0.0.1]\n{rule}"
            );
            crate::policy::Policy::from_str("p.yaml", &text)
                .map(|p| p.workloads[0].ingress.clone())
                .map_err(|e| e.to_string())
        };
        for rule in [
            "    ingress: [{ from: { any: true }, action: !deny allow }]\n",
            "    ingress: [{ from: { any: true }, action: !allow deny }]\n",
            "    ingress: [{ from: { any: true }, rateLimit: { packetsPerSecond: 5, per: !source rule } }]\n",
        ] {
            let read = rules(rule);
            assert!(
                read.as_ref().is_err_and(|e| e.starts_with("p.yaml:5:")),
                "{rule}: {read:?}"
            );
        }
        let deny = rules("    ingress: [{ from: { any: true }, action: !deny }]\n").expect("valid");
        assert_eq!(deny[0].action, RuleAction::Deny);
        let per = rules(
            "    ingress: [{ from: { any: true }, rateLimit: { packetsPerSecond: 5, per: !source } }]\n",
        )
        .expect("valid");
        assert_eq!(per[0].limit.map(|l| l.per), Some(Per::Source));
        // The checks still apply to the tag form (serde_yaml_ng places a tagged value's
        // error at the mapping around it).
        let e = policy_error(
            "    ingress: [{ from: { any: true }, rateLimit: { packetsPerSecond: 5 }, action: !deny }]\n",
        );
        assert!(
            e.starts_with("p.yaml:5:") && e.contains("a deny rule admits nothing to limit"),
            "{e}"
        );
        let e = policy_error(
            "    egress: [{ to: { any: true }, rateLimit: { packetsPerSecond: 5, per: !source } }]\n",
        );
        assert!(
            e.starts_with("p.yaml:5:") && e.contains("`per: source` on an egress rule"),
            "{e}"
        );
    }

    #[test]
    fn per_source_tables_together_are_capped_at_the_limit_past_the_cap() {
        let rule = |port: u32| {
            format!(
                "      - {{ from: {{ any: true }}, ports: [\"{port}/udp\"], rateLimit: {{ packetsPerSecond: 5, per: source, maxSources: 1048576 }} }}\n"
            )
        };
        let two = format!("    ingress:\n{}{}", rule(1), rule(2));
        let text = format!(
            "apiVersion: boundary.dev/v1\nworkloads:\n  - name: w\n    addresses: [10.0.0.1]\n{two}"
        );
        assert!(crate::policy::Policy::from_str("p.yaml", &text).is_ok());
        // The third rule (line 8) is the one past the cap, and its block is named.
        let e = policy_error(&format!("{two}{}", rule(3)));
        assert!(
            e.starts_with("p.yaml:8:61: workloads[0].ingress[2].rateLimit: the per-source rate limits keep 3145728 sources in all"),
            "{e}"
        );
        assert!(e.contains("about 312 MiB"), "{e}");
        // Each policy read counts its own: the same two rules read again are fine.
        assert!(crate::policy::Policy::from_str("p.yaml", &text).is_ok());
    }

    #[test]
    fn the_canonical_text_changes_with_every_term() {
        let a = read("{ packetsPerSecond: 10 }").expect("valid");
        let b = read("{ packetsPerSecond: 10, burst: 11 }").expect("valid");
        let c = read("{ packetsPerSecond: 10, bytesPerSecond: 10000 }").expect("valid");
        let d = read("{ packetsPerSecond: 10, per: source }").expect("valid");
        let texts: std::collections::BTreeSet<String> =
            [a, b, c, d].iter().map(RateLimit::canonical).collect();
        assert_eq!(texts.len(), 4);
    }
}
