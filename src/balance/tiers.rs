//! Backup servers (`backup: true`): a pool's balancer in two tiers, primaries first.
//!
//! A [`TieredBalancer`] owns two [`Balancer`]s under the pool's algorithm, one over the primary
//! (non-backup) servers and one over the backups, each with its own sub-list of the pool's
//! backends and the index maps to and from the pool's full list, which stays in config order.
//! It is built with the pool, on the thread that builds the pool (`main`, or `config-watcher` on a
//! reload); `pick` runs on every `worker-N`, `refresh` on the `health` thread.
//!
//! A request goes to a primary whenever one is eligible: not tried yet for this request, and
//! available (or, under `failOpen` with no backend available at all, any). Only when none is do the backups
//! take it, as HAProxy's `backup` servers do: the first eligible backup in config order takes
//! everything, or, with `allBackups` (HAProxy's `option allbackups`), the backups share it by
//! the pool's algorithm. When a primary is eligible again, traffic goes back to it at once.
//!
//! Each tier keeps its own state, so backups never disturb the primaries:
//!
//! - `round_robin`, `weighted_round_robin`, `random`: a rotation or draw of each tier's own;
//!   a retry under `round_robin` goes to the next eligible backend of the same tier.
//! - `least_conn`, `least_time`, `p2c`: loads are compared within a tier only.
//! - `ip_hash`: the client address modulo the eligible count of the tier in use, so a backup
//!   that takes over or leaves moves no primary key.
//! - `url_hash`, `sticky`: rendezvous hashing over each tier's own servers; a sticky cookie
//!   names a backup only while the backups are in use, and the client goes back to its primary
//!   (with a new cookie) when one returns.
//! - `maglev`: one lookup table for the primaries, another for the backups.
//!
//! So while the primaries are up, every key maps exactly as it would in a pool without the
//! backups, and after an outage every key comes back to the primary it had.

use std::sync::Arc;

use super::{Algorithm, BalanceSettings, Balancer, PickRequest};
use crate::backend::Backend;
use crate::config::MAX_RETRIES_LIMIT;

/// How many tried backends are translated into a tier's indices without allocating: the first
/// attempt and every retry. A longer list (attempts skipped because another request took a
/// probation trial first) is translated into a `Vec`.
const TRIED_ON_STACK: usize = MAX_RETRIES_LIMIT as usize + 1;

/// The pool's primaries first, its backups only when no primary can be chosen.
#[derive(Debug)]
pub struct TieredBalancer {
    primaries: Tier,
    /// `None` when the pool has no backup: the primaries are then the whole pool.
    backups: Option<Tier>,
    all_backups: bool,
    /// For each backend of the pool, in config order: whether it is a backup, and its index in
    /// its tier.
    slots: Vec<(bool, usize)>,
}

/// One tier: a sub-list of the pool, in config order, and the balancer over it.
#[derive(Debug)]
struct Tier {
    backends: Vec<Arc<Backend>>,
    /// The index in the pool's full list of each backend of `backends`.
    positions: Vec<usize>,
    balancer: Balancer,
}

impl Tier {
    /// The tier of the backends at `positions` in the pool's `backends`.
    fn new(algorithm: Algorithm, settings: &BalanceSettings, backends: &[Arc<Backend>], positions: Vec<usize>) -> Tier {
        let backends: Vec<Arc<Backend>> = positions.iter().map(|&index| Arc::clone(&backends[index])).collect();
        let balancer = Balancer::new(algorithm, settings.clone(), &backends);
        Tier { backends, positions, balancer }
    }

    /// The tier's choice, as an index in the full list; `local_tried` in the tier's indices.
    fn pick(&self, request: &PickRequest<'_>, local_tried: &[usize]) -> Option<usize> {
        self.balancer.pick(&self.backends, request, local_tried).map(|local| self.positions[local])
    }
}

impl TieredBalancer {
    /// The balancer for a pool of `backends` (in config order), each tier under `algorithm`.
    pub fn new(
        algorithm: Algorithm,
        settings: BalanceSettings,
        backends: &[Arc<Backend>],
        all_backups: bool,
    ) -> TieredBalancer {
        let (mut primary_positions, backup_positions): (Vec<usize>, Vec<usize>) =
            (0..backends.len()).partition(|&index| !backends[index].backup);
        let backups = if primary_positions.is_empty() {
            // A pool of backups only (the config refuses one): they serve as its primaries.
            primary_positions = backup_positions;
            None
        } else if backup_positions.is_empty() {
            None
        } else {
            Some(Tier::new(algorithm, &settings, backends, backup_positions))
        };
        let primaries = Tier::new(algorithm, &settings, backends, primary_positions);
        let mut slots = vec![(false, 0); backends.len()];
        for (local, &index) in primaries.positions.iter().enumerate() {
            slots[index] = (false, local);
        }
        for (local, &index) in backups.iter().flat_map(|tier| tier.positions.iter().enumerate()) {
            slots[index] = (true, local);
        }
        TieredBalancer { primaries, backups, all_backups, slots }
    }

    pub fn algorithm(&self) -> Algorithm {
        self.primaries.balancer.algorithm()
    }

    pub fn settings(&self) -> &BalanceSettings {
        self.primaries.balancer.settings()
    }

    /// Brings both tiers' derived state (the Maglev tables) up to date with the backends'
    /// health. Called by the health thread after each round, never by a request.
    pub fn refresh(&self, backends: &[Arc<Backend>]) {
        debug_assert_eq!(backends.len(), self.slots.len(), "the pool this balancer was built for");
        self.primaries.balancer.refresh(&self.primaries.backends);
        if let Some(backups) = &self.backups {
            backups.balancer.refresh(&backups.backends);
        }
    }

    /// The index in `backends` (the pool's full list, as given to [`TieredBalancer::new`]) of
    /// the backend for this attempt, skipping unavailable backends and those in `tried` (also
    /// indices in the full list); `None` if no backend is left in either tier.
    ///
    /// A primary if any is eligible, as [`Balancer::pick`] judges it; else, with `allBackups`,
    /// the backups' balancer's choice; else the first eligible backup in config order.
    pub fn pick(&self, backends: &[Arc<Backend>], request: &PickRequest<'_>, tried: &[usize]) -> Option<usize> {
        debug_assert_eq!(backends.len(), self.slots.len(), "the pool this balancer was built for");
        let Some(backups) = &self.backups else {
            return self.primaries.pick(request, tried);
        };
        if let Some(index) = self.in_tier(false, tried, |local| self.primaries.pick(request, local)) {
            return Some(index);
        }
        if self.all_backups {
            return self.in_tier(true, tried, |local| backups.pick(request, local));
        }
        backups
            .positions
            .iter()
            .copied()
            .find(|&index| (request.fail_open || backends[index].is_available(request.now)) && !tried.contains(&index))
    }

    /// Calls `pick` with the backends of `tried` that are in the tier (`backup` or not), as
    /// indices in that tier, on the stack unless the list is unusually long.
    fn in_tier<R>(&self, backup: bool, tried: &[usize], pick: impl FnOnce(&[usize]) -> R) -> R {
        let local = tried.iter().map(|&index| self.slots[index]).filter(|slot| slot.0 == backup).map(|slot| slot.1);
        if tried.len() > TRIED_ON_STACK {
            return pick(&local.collect::<Vec<usize>>());
        }
        let mut buffer = [0usize; TRIED_ON_STACK];
        let mut count = 0;
        for index in local {
            buffer[count] = index;
            count += 1;
        }
        pick(&buffer[..count])
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::backend::{test_backend, test_backup};
    use crate::balance::tests::{client, mark_down, mark_up};

    /// Primaries at 0, 2 and 4 and backups at 1 and 3, interleaved so the index maps matter.
    fn pool() -> Vec<Arc<Backend>> {
        vec![
            Arc::new(test_backend(3101, 1)),
            Arc::new(test_backup(3102, 1)),
            Arc::new(test_backend(3103, 2)),
            Arc::new(test_backup(3104, 1)),
            Arc::new(test_backend(3105, 1)),
        ]
    }

    const PRIMARIES: [usize; 3] = [0, 2, 4];
    const BACKUPS: [usize; 2] = [1, 3];

    fn tiered(algorithm: Algorithm, backends: &[Arc<Backend>], all_backups: bool) -> TieredBalancer {
        TieredBalancer::new(algorithm, BalanceSettings::default(), backends, all_backups)
    }

    /// Where each of `keys` keys goes (key `k` as client 10.x.y.z and as `/item/k`), after `tried`.
    fn picks(balancer: &TieredBalancer, backends: &[Arc<Backend>], keys: u32, tried: &[usize]) -> Vec<Option<usize>> {
        (0..keys)
            .map(|key| {
                let target = format!("/item/{key}");
                let request = PickRequest { target: &target, ..PickRequest::from_client(client(key)) };
                balancer.pick(backends, &request, tried)
            })
            .collect()
    }

    fn chosen(picks: &[Option<usize>]) -> HashSet<usize> {
        picks.iter().map(|pick| pick.expect("a backend")).collect()
    }

    fn set(indices: &[usize]) -> HashSet<usize> {
        indices.iter().copied().collect()
    }

    #[test]
    fn backups_get_nothing_while_a_primary_is_available() {
        for algorithm in Algorithm::ALL {
            for all_backups in [false, true] {
                let backends = pool();
                let balancer = tiered(algorithm, &backends, all_backups);
                let seen = chosen(&picks(&balancer, &backends, 300, &[]));
                assert_eq!(seen, set(&PRIMARIES), "{algorithm:?}, all_backups {all_backups}");
                mark_down(&backends[0]);
                mark_down(&backends[2]);
                balancer.refresh(&backends);
                let seen = chosen(&picks(&balancer, &backends, 100, &[]));
                assert_eq!(seen, set(&[4]), "{algorithm:?}: the last primary takes it all");
            }
        }
    }

    #[test]
    fn the_first_backup_takes_everything_when_the_primaries_are_down() {
        for algorithm in Algorithm::ALL {
            let backends = pool();
            let balancer = tiered(algorithm, &backends, false);
            PRIMARIES.iter().for_each(|&index| mark_down(&backends[index]));
            balancer.refresh(&backends);
            assert_eq!(chosen(&picks(&balancer, &backends, 200, &[])), set(&[1]), "{algorithm:?}");
            mark_down(&backends[1]);
            balancer.refresh(&backends);
            assert_eq!(chosen(&picks(&balancer, &backends, 200, &[])), set(&[3]), "{algorithm:?}: then the next");
            mark_down(&backends[3]);
            balancer.refresh(&backends);
            assert!(picks(&balancer, &backends, 20, &[]).iter().all(Option::is_none), "{algorithm:?}");
        }
    }

    #[test]
    fn with_all_backups_the_backups_share_by_the_algorithm() {
        for algorithm in Algorithm::ALL {
            let backends = pool();
            let balancer = tiered(algorithm, &backends, true);
            PRIMARIES.iter().for_each(|&index| mark_down(&backends[index]));
            balancer.refresh(&backends);
            assert_eq!(chosen(&picks(&balancer, &backends, 300, &[])), set(&BACKUPS), "{algorithm:?}");
        }
    }

    #[test]
    fn a_primary_that_comes_back_takes_the_traffic_back() {
        for algorithm in Algorithm::ALL {
            for all_backups in [false, true] {
                let backends = pool();
                let balancer = tiered(algorithm, &backends, all_backups);
                PRIMARIES.iter().for_each(|&index| mark_down(&backends[index]));
                balancer.refresh(&backends);
                assert!(chosen(&picks(&balancer, &backends, 100, &[])).is_subset(&set(&BACKUPS)));
                mark_up(&backends[2]);
                balancer.refresh(&backends);
                assert_eq!(chosen(&picks(&balancer, &backends, 100, &[])), set(&[2]), "{algorithm:?}");
            }
        }
    }

    #[test]
    fn tried_backends_are_skipped_in_both_tiers() {
        for algorithm in Algorithm::ALL {
            let backends = pool();
            let first_backup = tiered(algorithm, &backends, false);
            let all_backups = tiered(algorithm, &backends, true);
            for balancer in [&first_backup, &all_backups] {
                for pick in picks(balancer, &backends, 50, &[0, 4]) {
                    assert_eq!(pick, Some(2), "{algorithm:?}: the one primary left");
                }
            }
            for pick in picks(&first_backup, &backends, 50, &PRIMARIES) {
                assert_eq!(pick, Some(1), "{algorithm:?}");
            }
            for pick in picks(&first_backup, &backends, 50, &[0, 2, 4, 1]) {
                assert_eq!(pick, Some(3), "{algorithm:?}");
            }
            for key in 0..50 {
                let target = format!("/item/{key}");
                let request = PickRequest { target: &target, ..PickRequest::from_client(client(key)) };
                let first = all_backups.pick(&backends, &request, &PRIMARIES).unwrap();
                assert!(BACKUPS.contains(&first), "{algorithm:?}");
                let second = all_backups.pick(&backends, &request, &[0, 2, 4, first]).unwrap();
                assert!(BACKUPS.contains(&second) && second != first, "{algorithm:?}");
            }
            for balancer in [&first_backup, &all_backups] {
                assert!(picks(balancer, &backends, 10, &[3, 0, 1, 2, 4]).iter().all(Option::is_none));
            }
        }
    }

    #[test]
    fn a_long_tried_list_is_translated_too() {
        // Longer than the stack buffer: the same answer from the fallback.
        let backends = pool();
        let balancer = tiered(Algorithm::RoundRobin, &backends, false);
        let mut tried: Vec<usize> = [0, 4].repeat(TRIED_ON_STACK);
        assert_eq!(balancer.pick(&backends, &PickRequest::from_client(client(1)), &tried), Some(2));
        tried.push(2);
        assert_eq!(balancer.pick(&backends, &PickRequest::from_client(client(1)), &tried), Some(1));
    }

    #[test]
    fn fail_open_tries_the_primaries_before_the_backups() {
        for algorithm in Algorithm::ALL {
            let backends = pool();
            let balancer = tiered(algorithm, &backends, false);
            backends.iter().for_each(|backend| mark_down(backend));
            balancer.refresh(&backends);
            let request = PickRequest { fail_open: true, ..PickRequest::from_client(client(7)) };
            let first = balancer.pick(&backends, &request, &[]).unwrap();
            assert!(PRIMARIES.contains(&first), "{algorithm:?}");
            assert_eq!(balancer.pick(&backends, &request, &PRIMARIES), Some(1), "{algorithm:?}");
        }
    }

    #[test]
    fn hash_keys_on_the_primaries_do_not_move_for_the_backups() {
        // The tiered pool maps every key as a pool of the primaries alone does, by name, and
        // the backups' own table maps keys as a pool of the backups alone does.
        for algorithm in [Algorithm::IpHash, Algorithm::UrlHash, Algorithm::Sticky, Algorithm::Maglev] {
            let backends = pool();
            let primaries: Vec<Arc<Backend>> = PRIMARIES.iter().map(|&index| Arc::clone(&backends[index])).collect();
            let backups: Vec<Arc<Backend>> = BACKUPS.iter().map(|&index| Arc::clone(&backends[index])).collect();
            let alone = TieredBalancer::new(algorithm, BalanceSettings::default(), &primaries, false);
            let backups_alone = TieredBalancer::new(algorithm, BalanceSettings::default(), &backups, false);
            let balancer = tiered(algorithm, &backends, true);
            let names = |list: &[Arc<Backend>], picks: Vec<Option<usize>>| -> Vec<String> {
                picks.into_iter().map(|pick| list[pick.unwrap()].name.clone()).collect()
            };
            let before = names(&backends, picks(&balancer, &backends, 2_000, &[]));
            assert_eq!(before, names(&primaries, picks(&alone, &primaries, 2_000, &[])), "{algorithm:?}");

            PRIMARIES.iter().for_each(|&index| mark_down(&backends[index]));
            balancer.refresh(&backends);
            assert_eq!(
                names(&backends, picks(&balancer, &backends, 2_000, &[])),
                names(&backups, picks(&backups_alone, &backups, 2_000, &[])),
                "{algorithm:?}: the backups' own table"
            );

            PRIMARIES.iter().for_each(|&index| mark_up(&backends[index]));
            balancer.refresh(&backends);
            assert_eq!(names(&backends, picks(&balancer, &backends, 2_000, &[])), before, "{algorithm:?}: keys return");
        }
    }

    #[test]
    fn a_pool_of_one_kind_is_one_balancer() {
        let backends: Vec<Arc<Backend>> = (0..3).map(|index| Arc::new(test_backend(3201 + index, 1))).collect();
        let balancer = tiered(Algorithm::RoundRobin, &backends, false);
        assert!(balancer.backups.is_none());
        let request = PickRequest::from_client(client(1));
        let sequence: Vec<Option<usize>> = (0..4).map(|_| balancer.pick(&backends, &request, &[])).collect();
        assert_eq!(sequence, [Some(0), Some(1), Some(2), Some(0)]);
        assert_eq!(balancer.pick(&backends, &request, &[1]), Some(2));

        // Backups only (the config refuses such a pool): they are its primaries.
        let backups: Vec<Arc<Backend>> = (0..2).map(|index| Arc::new(test_backup(3301 + index, 1))).collect();
        let balancer = tiered(Algorithm::RoundRobin, &backups, false);
        assert!(balancer.backups.is_none());
        let sequence: Vec<Option<usize>> = (0..3).map(|_| balancer.pick(&backups, &request, &[])).collect();
        assert_eq!(sequence, [Some(0), Some(1), Some(0)]);
    }
}
