//! Earned bindings written into the live generation and taken out of it, without a swap.
//!
//! Binding an address: its record first (so a restarted agent knows it), then the entries of
//! a new identity and their port bits, then the identity entry with its deadline, and last the
//! bind sequence of the address's slot, which makes the cached verdicts of its peers misses. A
//! packet that read the sequence before the bump and the identity map before the binding caches
//! a verdict the bump has already made stale; one that read the binding is right. Unbinding
//! goes record, entry, sequence.
//!
//! The keys written join the live generation's keys, so the next swap deletes them with it.

use std::{net::IpAddr, time::SystemTime};

use boundary_common::maps::{
    self as abi, BINDING_MTLS, CHAIN_MAX, ChainLink, EARNED_MAP, EarnedRecord, IDENTITIES_MAP,
    IdentityValue, SERIAL_MAX, SPIFFE_ID_MAX, bind_seq_slot,
};

use super::{
    Maps, MapsError,
    keys::{addr_key, family_addr, policy_key, range_key},
    map_err,
};
use crate::policy::Binding;

/// `CLOCK_MONOTONIC` in ns: the clock of binding deadlines (the datapath reads its coarse
/// variant, the same clock at a tick's resolution).
pub fn monotonic_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always readable");
    u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000_000 + u64::try_from(t.tv_nsec()).unwrap_or(0)
}

/// An earned binding as recorded in [`EARNED_MAP`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EarnedBinding {
    pub addr: IpAddr,
    /// The SPIFFE ID as the certificate has it.
    pub id: String,
    /// The binding's deadline, [`monotonic_ns`].
    pub expires: u64,
    /// The certificate's notAfter and when the binding was last made or renewed, Unix seconds.
    pub not_after: i64,
    pub renewed: i64,
    /// [`abi::issuer_hash`] of the certificate's issuer, and its serial.
    pub issuer: u64,
    pub serial: Vec<u8>,
    /// The intermediates presented above the leaf: (issuer hash, serial), at most
    /// [`abi::CHAIN_MAX`].
    pub chain: Vec<(u64, Vec<u8>)>,
    /// [`abi::issuer_hash`] of the bundle CA the chain ends at.
    pub anchor: u64,
}

impl EarnedBinding {
    /// The deadline as wall-clock time (for display): the same distance from now.
    pub fn expires_at(&self) -> SystemTime {
        let now = monotonic_ns();
        let wall = SystemTime::now();
        if self.expires >= now {
            wall + std::time::Duration::from_nanos(self.expires - now)
        } else {
            wall - std::time::Duration::from_nanos(now - self.expires)
        }
    }

    fn record(&self) -> EarnedRecord {
        let mut r = EarnedRecord {
            expires: self.expires,
            not_after: self.not_after,
            renewed: self.renewed,
            issuer: self.issuer,
            anchor: self.anchor,
            id_len: 0,
            serial_len: 0,
            chain_len: 0,
            pad: [0; 4],
            serial: [0; SERIAL_MAX],
            chain: [ChainLink::default(); CHAIN_MAX],
            id: [0; SPIFFE_ID_MAX],
        };
        for (link, (issuer, serial)) in r.chain.iter_mut().zip(&self.chain) {
            let serial = &serial[..serial.len().min(SERIAL_MAX)];
            link.issuer = *issuer;
            link.serial[..serial.len()].copy_from_slice(serial);
            link.serial_len = u8::try_from(serial.len()).unwrap_or(0);
        }
        r.chain_len = u8::try_from(self.chain.len().min(CHAIN_MAX)).unwrap_or(0);
        let id = &self.id.as_bytes()[..self.id.len().min(SPIFFE_ID_MAX)];
        r.id[..id.len()].copy_from_slice(id);
        r.id_len = u16::try_from(id.len()).unwrap_or(0);
        let serial = &self.serial[..self.serial.len().min(SERIAL_MAX)];
        r.serial[..serial.len()].copy_from_slice(serial);
        r.serial_len = u8::try_from(serial.len()).unwrap_or(0);
        r
    }

    fn from_record(addr: IpAddr, r: &EarnedRecord) -> Option<Self> {
        let id = r.id.get(..usize::from(r.id_len))?;
        Some(Self {
            addr,
            id: String::from_utf8(id.to_vec()).ok()?,
            expires: r.expires,
            not_after: r.not_after,
            renewed: r.renewed,
            issuer: r.issuer,
            serial: r.serial.get(..usize::from(r.serial_len))?.to_vec(),
            chain: r
                .chain
                .get(..usize::from(r.chain_len))?
                .iter()
                .map(|l| {
                    Some((
                        l.issuer,
                        l.serial.get(..usize::from(l.serial_len))?.to_vec(),
                    ))
                })
                .collect::<Option<_>>()?,
            anchor: r.anchor,
        })
    }
}

impl Maps {
    /// Every earned binding recorded (expired ones included), one read per entry.
    pub fn earned(&self) -> Vec<EarnedBinding> {
        self.earned
            .iter()
            .filter_map(Result::ok)
            .filter_map(|(k, r)| {
                EarnedBinding::from_record(super::keys::addr_of(k.family, k.addr)?, &r)
            })
            .collect()
    }

    /// Records `b` and binds its address in the live generation to `binding`'s identity,
    /// writing that identity's entries first when it is new. A renewal moves the bind sequence
    /// too: a binding that expired while it was on its way had its peer's drops cached.
    pub(in crate::datapath) fn bind_live(
        &mut self,
        b: &EarnedBinding,
        binding: &Binding,
    ) -> Result<(), MapsError> {
        let g = self.datapath_config()?.generation;
        self.earned
            .insert(&addr_key(0, b.addr), &b.record(), 0)
            .map_err(map_err(EARNED_MAP))?;
        let mut policy = Vec::with_capacity(binding.policy.len());
        for (k, v) in &binding.policy {
            let key = policy_key(g, k);
            self.policy
                .insert(&key, v, 0)
                .map_err(map_err(abi::POLICY_MAP))?;
            policy.push(key);
        }
        let mut ranges = Vec::with_capacity(binding.ranges.len());
        for (k, v) in &binding.ranges {
            let key = range_key(g, k);
            self.ranges
                .insert(&key, v, 0)
                .map_err(map_err(abi::RANGES_MAP))?;
            ranges.push(key);
        }
        self.add_port_bits(g, binding.policy.keys().map(|k| k.port))?;
        self.add_bound_bit(g, b.addr)?;
        let key = addr_key(g, b.addr);
        self.identities
            .insert(
                &key,
                &IdentityValue::new(binding.identity, BINDING_MTLS, b.expires)
                    .with_fold(binding.fold),
                0,
            )
            .map_err(map_err(IDENTITIES_MAP))?;
        self.record_live_keys(g, policy, ranges, key);
        self.bump_bind_seq(b.addr)
    }

    /// Takes `addr`'s earned binding out of the record and the live generation, in that
    /// order: a crash in between leaves an entry no record backs, which the next agent's first
    /// generation leaves out (the other order would bring a revoked binding back). A static
    /// binding of the address (the policy's) is left alone.
    pub(crate) fn unbind_live(&mut self, addr: IpAddr) -> Result<(), MapsError> {
        match self.earned.remove(&addr_key(0, addr)) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
            Err(e) => return Err(map_err(EARNED_MAP)(e)),
        }
        let g = self.datapath_config()?.generation;
        let key = addr_key(g, addr);
        if self
            .identities
            .get(&key, 0)
            .is_ok_and(|v| v.source == BINDING_MTLS)
        {
            self.identities
                .remove(&key)
                .map_err(map_err(IDENTITIES_MAP))?;
        }
        self.bump_bind_seq(addr)
    }

    /// Moves the bind sequence of `addr`'s slot.
    fn bump_bind_seq(&mut self, addr: IpAddr) -> Result<(), MapsError> {
        let (_, a) = family_addr(addr);
        let slot = bind_seq_slot(&a);
        let seq = self
            .bind_seq
            .get(&slot, 0)
            .map_err(map_err(abi::BIND_SEQ_MAP))?;
        self.bind_seq
            .set(slot, &seq.wrapping_add(1), 0)
            .map_err(map_err(abi::BIND_SEQ_MAP))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_keeps_what_identity_list_shows() {
        let b = EarnedBinding {
            addr: "10.1.2.3".parse().expect("address"),
            id: "spiffe://example.org/ns/a/sa/b".to_owned(),
            expires: 123,
            not_after: 1_900_000_000,
            renewed: 1_800_000_000,
            issuer: abi::issuer_hash(b"issuer"),
            serial: vec![0x01, 0xff, 0x00, 0x7f],
            chain: vec![(abi::issuer_hash(b"root"), vec![0x42, 0x01])],
            anchor: abi::issuer_hash(b"root"),
        };
        assert_eq!(EarnedBinding::from_record(b.addr, &b.record()), Some(b));
    }
}
