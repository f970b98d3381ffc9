//! Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load
//! Balancer", NSDI 2016, §3.4), with weights.
//!
//! A lookup table of prime size `M` (65537 by default) maps a key's hash to a backend. Each
//! backend has a preference list, a permutation of the table's slots given by two hashes of its
//! identity: `offset = h1 % M`, `skip = h2 % (M - 1) + 1`, the `j`-th preference being
//! `(offset + j × skip) % M`. The backends take turns claiming their next free preferred slot
//! until the table is full, in the order of their names. A heavier backend takes more turns: each round it earns
//! `weight / max weight` of a turn, so its share of slots follows its weight.
//!
//! Built over the healthy backends only, the table spreads keys almost evenly and, when one
//! backend leaves, moves its keys and very few others (the paper's Figure 12). Building costs
//! about a millisecond, so it is done off the request path, when the healthy set changes; a
//! lookup is one hash and one array read.

use super::hash::{fnv1a, mix};

/// The table size the paper uses for small clusters; a prime, so every skip visits every slot.
pub const DEFAULT_TABLE_SIZE: usize = 65_537;

/// One Maglev lookup table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaglevTable {
    /// Backend index (into the pool's list) for each slot; empty when no backend was eligible.
    slots: Vec<u32>,
}

/// A backend as the table builder sees it.
#[derive(Debug, Clone, Copy)]
pub struct Member<'a> {
    /// The backend's position in the pool.
    pub index: usize,
    /// What identifies it across processes: its name.
    pub identity: &'a str,
    pub weight: u32,
}

impl MaglevTable {
    /// The table of size `size` (a prime) over `members`.
    pub fn build(members: &[Member<'_>], size: usize) -> MaglevTable {
        if members.is_empty() {
            return MaglevTable { slots: Vec::new() };
        }
        // Turns go in name order, so that the list's order in the config does not matter.
        let mut members = members.to_vec();
        members.sort_by(|a, b| a.identity.cmp(b.identity));
        let size_u64 = size as u64;
        let permutations: Vec<(u64, u64)> = members
            .iter()
            .map(|member| {
                let identity = fnv1a(member.identity.as_bytes());
                let offset = mix(identity) % size_u64;
                let skip = mix(identity ^ 0x5bd1_e995_5bd1_e995) % (size_u64 - 1) + 1;
                (offset, skip)
            })
            .collect();
        let max_weight = members.iter().map(|member| member.weight).max().unwrap_or(1).max(1);
        let mut next = vec![0u64; members.len()];
        let mut credit = vec![0u64; members.len()];
        const NO_BACKEND: u32 = u32::MAX;
        let mut slots = vec![NO_BACKEND; size];
        let mut filled = 0;
        while filled < size {
            for (turn, member) in members.iter().enumerate() {
                // Whole turns are counted in units of max_weight, so integer arithmetic is exact.
                credit[turn] += u64::from(member.weight);
                if credit[turn] < u64::from(max_weight) {
                    continue;
                }
                credit[turn] -= u64::from(max_weight);
                let (offset, skip) = permutations[turn];
                let mut slot = ((offset + next[turn] * skip) % size_u64) as usize;
                while slots[slot] != NO_BACKEND {
                    next[turn] += 1;
                    slot = ((offset + next[turn] * skip) % size_u64) as usize;
                }
                slots[slot] = member.index as u32;
                next[turn] += 1;
                filled += 1;
                if filled == size {
                    break;
                }
            }
        }
        MaglevTable { slots }
    }

    /// The backend for a key hash, and the slot it came from; `None` for an empty table.
    pub fn lookup(&self, key: u64) -> Option<(usize, usize)> {
        if self.slots.is_empty() {
            return None;
        }
        let slot = (key % self.slots.len() as u64) as usize;
        Some((self.slots[slot] as usize, slot))
    }

    /// The backend in the slot `steps` after `slot`: where a key goes when its own backend
    /// cannot take it (a retry, or a backend that failed since the table was built).
    pub fn after(&self, slot: usize, steps: usize) -> usize {
        self.slots[(slot + steps) % self.slots.len()] as usize
    }

    pub fn size(&self) -> usize {
        self.slots.len()
    }
}

/// Whether `number` is prime (trial division; table sizes are small).
pub fn is_prime(number: u64) -> bool {
    if number < 2 {
        return false;
    }
    let mut divisor = 2;
    while divisor * divisor <= number {
        if number.is_multiple_of(divisor) {
            return false;
        }
        divisor += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::hash::key_hash;

    fn members(names: &[String], weights: &[u32]) -> Vec<(String, u32)> {
        names.iter().cloned().zip(weights.iter().copied()).collect()
    }

    fn table(set: &[(String, u32)], indices: &[usize]) -> MaglevTable {
        let members: Vec<Member<'_>> =
            indices.iter().map(|&index| Member { index, identity: &set[index].0, weight: set[index].1 }).collect();
        MaglevTable::build(&members, DEFAULT_TABLE_SIZE)
    }

    fn names(count: usize) -> Vec<String> {
        (0..count).map(|index| format!("http://10.0.0.{index}:80")).collect()
    }

    #[test]
    fn every_slot_is_filled_in_proportion_to_weight() {
        let set = members(&names(4), &[1, 2, 3, 4]);
        let table = table(&set, &[0, 1, 2, 3]);
        let mut counts = [0usize; 4];
        for &slot in &table.slots {
            counts[slot as usize] += 1;
        }
        for (index, &count) in counts.iter().enumerate() {
            let expected = DEFAULT_TABLE_SIZE as f64 * (index + 1) as f64 / 10.0;
            assert!((count as f64 - expected).abs() / expected < 0.01, "{counts:?}");
        }
    }

    #[test]
    fn the_same_members_always_build_the_same_table() {
        let set = members(&names(5), &[1; 5]);
        assert_eq!(table(&set, &[0, 1, 2, 3, 4]), table(&set, &[0, 1, 2, 3, 4]));
        assert_eq!(table(&set, &[]).lookup(key_hash(b"x")), None);
    }

    #[test]
    fn table_sizes_must_be_prime() {
        assert!(is_prime(65_537) && is_prime(251) && is_prime(2));
        assert!(!is_prime(65_536) && !is_prime(1) && !is_prime(0) && !is_prime(65_535));
    }
}
