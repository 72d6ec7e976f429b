//! Per-period deltas of the kernel's cumulative counters (nftables, conntrack, ENA), which
//! restart from 0 whenever their table is rebuilt or the machine boots. The rule throughout: an
//! undercount is acceptable, a doubled or negative count never is, so whenever the history of a
//! counter is in doubt its traffic since the last sample is dropped rather than guessed.
//!
//! A snapshot is `(generation, values)`: the generation is the caller's name for "the counters
//! were rebuilt" (a new nftables table, a new device); it must change only when every counter
//! of the snapshot restarted from 0.

use std::collections::BTreeMap;

/// Why a counter counts as restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// It went down within one generation.
    WentDown { previous: u64, current: u64 },
    /// The snapshot's generation changed (the counters were rebuilt).
    Generation { previous: u64, current: u64 },
}

/// A counter that restarted between two samples: its delta is its current value, and what it
/// counted between the previous sample and the restart is lost. Worth a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reset<K> {
    pub name: K,
    pub cause: Cause,
}

/// What one snapshot gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update<K> {
    /// The counters to publish for this period (zero deltas included: they are true zeros).
    pub deltas: BTreeMap<K, u64>,
    /// The counters among `deltas` that restarted.
    pub resets: Vec<Reset<K>>,
    /// The counters that only set a baseline this time (the first snapshot, or new since the
    /// last one): nothing is published for them.
    pub baselines: Vec<K>,
}

/// The previous snapshot, to difference the next one against. A new tracker (a restarted
/// process) publishes nothing for its first snapshot: the kernel's counters may predate it, and
/// their totals were counted by the previous process already.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deltas<K> {
    last: Option<(u64, BTreeMap<K, u64>)>,
}

impl<K: Ord + Clone> Default for Deltas<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Ord + Clone> Deltas<K> {
    pub fn new() -> Self {
        Self { last: None }
    }

    /// Takes the snapshot of this sample. For each counter in `values`:
    /// - absent from the previous snapshot (or no previous snapshot): a baseline, no delta;
    /// - the generation changed: it restarted, the delta is its current value;
    /// - it went down: it restarted, likewise;
    /// - otherwise the delta is current − previous.
    ///
    /// A counter missing from `values` is forgotten, so when it comes back it starts a new
    /// baseline.
    pub fn update(&mut self, generation: u64, values: BTreeMap<K, u64>) -> Update<K> {
        let mut out = Update {
            deltas: BTreeMap::new(),
            resets: Vec::new(),
            baselines: Vec::new(),
        };
        let previous = self.last.take();
        for (name, &current) in &values {
            let before = previous
                .as_ref()
                .and_then(|(g, v)| v.get(name).map(|p| (*g, *p)));
            let Some((previous_generation, previous_value)) = before else {
                out.baselines.push(name.clone());
                continue;
            };
            let cause = if previous_generation != generation {
                Some(Cause::Generation {
                    previous: previous_generation,
                    current: generation,
                })
            } else if current < previous_value {
                Some(Cause::WentDown {
                    previous: previous_value,
                    current,
                })
            } else {
                None
            };
            let delta = match cause {
                Some(cause) => {
                    out.resets.push(Reset {
                        name: name.clone(),
                        cause,
                    });
                    current
                }
                // Not below previous_value here, so this never saturates.
                None => current.saturating_sub(previous_value),
            };
            out.deltas.insert(name.clone(), delta);
        }
        self.last = Some((generation, values));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(pairs: &[(&'static str, u64)]) -> BTreeMap<&'static str, u64> {
        pairs.iter().copied().collect()
    }

    fn deltas(u: &Update<&'static str>) -> Vec<(&'static str, u64)> {
        u.deltas.iter().map(|(k, v)| (*k, *v)).collect()
    }

    #[test]
    fn the_first_snapshot_is_a_baseline_only() {
        let mut d = Deltas::new();
        let u = d.update(1, snap(&[("bytes", 5_000_000), ("packets", 9_000)]));
        assert!(u.deltas.is_empty());
        assert!(u.resets.is_empty());
        assert_eq!(u.baselines, ["bytes", "packets"]);
        // Even if it came with a generation the tracker never saw: a fresh process knows
        // nothing of what the previous one published.
        let mut d = Deltas::new();
        assert!(d.update(77, snap(&[("bytes", 1)])).deltas.is_empty());
    }

    #[test]
    fn steady_increments() {
        let mut d = Deltas::new();
        d.update(1, snap(&[("bytes", 100), ("packets", 10)]));
        let u = d.update(1, snap(&[("bytes", 250), ("packets", 12)]));
        assert_eq!(deltas(&u), [("bytes", 150), ("packets", 2)]);
        assert!(u.resets.is_empty() && u.baselines.is_empty());
        // No traffic is a published zero, not a gap.
        let u = d.update(1, snap(&[("bytes", 250), ("packets", 12)]));
        assert_eq!(deltas(&u), [("bytes", 0), ("packets", 0)]);
    }

    #[test]
    fn a_counter_that_goes_down_restarted() {
        let mut d = Deltas::new();
        d.update(1, snap(&[("bytes", 1_000), ("packets", 10)]));
        let u = d.update(1, snap(&[("bytes", 40), ("packets", 11)]));
        assert_eq!(deltas(&u), [("bytes", 40), ("packets", 1)]);
        assert_eq!(
            u.resets,
            [Reset {
                name: "bytes",
                cause: Cause::WentDown {
                    previous: 1_000,
                    current: 40
                }
            }]
        );
        // And counts on from its new value.
        let u = d.update(1, snap(&[("bytes", 100), ("packets", 11)]));
        assert_eq!(deltas(&u), [("bytes", 60), ("packets", 0)]);
    }

    #[test]
    fn a_new_generation_restarts_every_counter() {
        let mut d = Deltas::new();
        d.update(1, snap(&[("bytes", 1_000), ("packets", 10)]));
        // Higher than before, but the table was rebuilt: what it holds is since the rebuild.
        let u = d.update(2, snap(&[("bytes", 5_000), ("packets", 3)]));
        assert_eq!(deltas(&u), [("bytes", 5_000), ("packets", 3)]);
        let cause = Cause::Generation {
            previous: 1,
            current: 2,
        };
        assert_eq!(
            u.resets,
            [
                Reset {
                    name: "bytes",
                    cause
                },
                Reset {
                    name: "packets",
                    cause
                }
            ]
        );
        let u = d.update(2, snap(&[("bytes", 5_500), ("packets", 4)]));
        assert_eq!(deltas(&u), [("bytes", 500), ("packets", 1)]);
        assert!(u.resets.is_empty());
    }

    #[test]
    fn the_top_of_u64_is_not_a_wraparound() {
        let mut d = Deltas::new();
        d.update(1, snap(&[("c", u64::MAX - 5)]));
        assert_eq!(deltas(&d.update(1, snap(&[("c", u64::MAX)]))), [("c", 5)]);
        assert_eq!(deltas(&d.update(1, snap(&[("c", u64::MAX)]))), [("c", 0)]);
        // Down from the top is a restart (delta 3), not a wrap (which would claim 4).
        let u = d.update(1, snap(&[("c", 3)]));
        assert_eq!(deltas(&u), [("c", 3)]);
        assert_eq!(u.resets.len(), 1);
        // From 0 to the top in one period: the whole range, no overflow.
        let mut d = Deltas::new();
        d.update(1, snap(&[("c", 0)]));
        assert_eq!(
            deltas(&d.update(1, snap(&[("c", u64::MAX)]))),
            [("c", u64::MAX)]
        );
    }

    #[test]
    fn a_missing_counter_starts_a_new_baseline_when_it_returns() {
        let mut d = Deltas::new();
        d.update(1, snap(&[("a", 10), ("b", 100)]));
        // b could not be read this time: a is published, b is not.
        let u = d.update(1, snap(&[("a", 15)]));
        assert_eq!(deltas(&u), [("a", 5)]);
        // b is back, much higher: its history is in doubt, so it is a baseline again.
        let u = d.update(1, snap(&[("a", 20), ("b", 900)]));
        assert_eq!(deltas(&u), [("a", 5)]);
        assert_eq!(u.baselines, ["b"]);
        let u = d.update(1, snap(&[("a", 20), ("b", 950)]));
        assert_eq!(deltas(&u), [("a", 0), ("b", 50)]);
        // A counter new in a new generation is a baseline too, not a reset.
        let u = d.update(2, snap(&[("a", 1), ("c", 7)]));
        assert_eq!(deltas(&u), [("a", 1)]);
        assert_eq!(u.baselines, ["c"]);
    }

    #[test]
    fn owned_names_work_too() {
        let mut d: Deltas<String> = Deltas::default();
        d.update(3, BTreeMap::from([("x".to_string(), 1)]));
        let u = d.update(3, BTreeMap::from([("x".to_string(), 4)]));
        assert_eq!(u.deltas, BTreeMap::from([("x".to_string(), 3)]));
    }

    /// A small deterministic generator (xorshift64*), so the simulation needs no crate.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn published_deltas_never_exceed_the_true_traffic() {
        for seed in 1..=200u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let mut d = Deltas::new();
            let mut generation = 0;
            // The kernel's counter, and the traffic since the first sample.
            let mut counter: u64 = rng.below(1 << 40);
            let mut truth: u64 = 0;
            let mut published: u64 = 0;
            let mut started = false;
            let mut lossless = true;
            for _ in 0..300 {
                // Traffic before the sample, maybe split by a restart.
                let before = rng.below(1_000_000);
                let after;
                match rng.below(20) {
                    // The table is rebuilt (new generation, from 0).
                    0 => {
                        generation += 1;
                        after = rng.below(1_000_000);
                        counter = after;
                        lossless = false;
                    }
                    // The counter restarts without the generation saying so.
                    1 => {
                        after = rng.below(1_000_000);
                        counter = after;
                        lossless = false;
                    }
                    _ => {
                        after = 0;
                        counter += before;
                    }
                }
                if started {
                    truth += before + after;
                }
                // Sometimes the counter cannot be read.
                let readable = rng.below(15) != 0;
                if !readable {
                    lossless = false;
                }
                let values = if readable {
                    BTreeMap::from([("c", counter)])
                } else {
                    BTreeMap::new()
                };
                let u = d.update(generation, values);
                published += u.deltas.get("c").copied().unwrap_or(0);
                started = true;
                assert!(published <= truth, "seed {seed}: {published} > {truth}");
            }
            if lossless {
                assert_eq!(published, truth, "seed {seed}");
            }
        }
    }

    #[test]
    fn without_restarts_nothing_is_lost() {
        let mut d = Deltas::new();
        let mut rng = Rng(42);
        let mut counter = 123_456;
        d.update(9, snap(&[("c", counter)]));
        let mut truth = 0;
        let mut published = 0;
        for _ in 0..1_000 {
            let t = rng.below(1 << 30);
            counter += t;
            truth += t;
            published += d.update(9, snap(&[("c", counter)])).deltas["c"];
        }
        assert_eq!(published, truth);
    }
}
