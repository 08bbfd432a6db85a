//! Every random stream of hmdp, and the draws made from them outside a model's own sampling.
//!
//! Randomness is organised so that results never depend on scheduling. An *instance* (the
//! parameters) is drawn from the instance seed ([`instance_stream`]). Each *scenario* of a set
//! (train, dev, test) has its own counter-based ChaCha8 stream, chosen by the scenario's index
//! ([`scenario_stream`]): it draws the initial state and then the noise of every period. A
//! policy's own randomness comes from a separate stream per scenario ([`policy_stream`]), so two
//! policies see exactly the same initial states and noise (common random numbers), and a seed
//! gives the same numbers on any number of threads.
//!
//! The draws ([`unit`], [`standard_normal`], [`shuffle`]) are written out here rather than taken
//! from `rand`, so that the numbers a seed gives are fixed by this file alone.

use rand::rngs::ChaCha8Rng;
use rand::{Rng, SeedableRng};

/// The three fixed scenario sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScenarioSet {
    Train,
    Dev,
    Test,
}

impl ScenarioSet {
    /// The set's name, as `--scenario-set` takes it.
    pub fn name(self) -> &'static str {
        match self {
            ScenarioSet::Train => "train",
            ScenarioSet::Dev => "dev",
            ScenarioSet::Test => "test",
        }
    }

    fn tag(self) -> u64 {
        match self {
            ScenarioSet::Train => 1,
            ScenarioSet::Dev => 2,
            ScenarioSet::Test => 3,
        }
    }
}

/// SplitMix64 finaliser: turns (seed, purpose) pairs into unrelated 64-bit seeds.
fn mix(seed: u64, purpose: u64) -> u64 {
    let mut z = seed ^ purpose.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn stream(seed: u64, purpose: u64, index: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(mix(seed, purpose));
    rng.set_stream(index);
    rng
}

/// The random stream an instance's parameters are drawn from.
pub fn instance_stream(seed: u64) -> ChaCha8Rng {
    stream(seed, 0, 0)
}

/// The random stream of scenario `index` of a set.
pub fn scenario_stream(seed: u64, set: ScenarioSet, index: u64) -> ChaCha8Rng {
    stream(seed, set.tag(), index)
}

/// The seeds of a simulation: one for the scenarios (initial states and noise), one for the
/// policy's own randomness, so that policies trained or run with other seeds meet the same
/// scenarios.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seeds {
    pub scenarios: u64,
    pub policy: u64,
}

impl Seeds {
    /// One seed for both.
    pub fn same(seed: u64) -> Seeds {
        Seeds { scenarios: seed, policy: seed }
    }
}

/// The random stream a policy uses in scenario `index` of a set.
pub fn policy_stream(seed: u64, set: ScenarioSet, index: u64) -> ChaCha8Rng {
    stream(seed, 16 + set.tag(), index)
}

/// A uniform draw in [0, 1) with 53 random bits.
pub fn unit(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A standard normal draw (Box–Muller).
pub fn standard_normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1 = 1.0 - unit(rng);
    let u2 = unit(rng);
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Shuffles `items` in place (Fisher–Yates, one [`unit`] draw per position from the last down).
pub fn shuffle<T>(items: &mut [T], rng: &mut ChaCha8Rng) {
    for i in (1..items.len()).rev() {
        let j = (unit(rng) * (i + 1) as f64) as usize;
        items.swap(i, j.min(i));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_differ_by_set_index_and_purpose_and_repeat_by_seed() {
        let first = |mut rng: ChaCha8Rng| rng.next_u64();
        let a = first(scenario_stream(5, ScenarioSet::Dev, 3));
        assert_eq!(a, first(scenario_stream(5, ScenarioSet::Dev, 3)));
        for other in [
            scenario_stream(5, ScenarioSet::Test, 3),
            scenario_stream(5, ScenarioSet::Dev, 4),
            scenario_stream(6, ScenarioSet::Dev, 3),
            policy_stream(5, ScenarioSet::Dev, 3),
            instance_stream(5),
        ] {
            assert_ne!(a, first(other));
        }
    }

    #[test]
    fn shuffle_permutes_and_depends_only_on_the_stream() {
        let mut order: Vec<usize> = (0..50).collect();
        shuffle(&mut order, &mut policy_stream(1, ScenarioSet::Train, 0));
        let mut again: Vec<usize> = (0..50).collect();
        shuffle(&mut again, &mut policy_stream(1, ScenarioSet::Train, 0));
        assert_eq!(order, again);
        assert_ne!(order, (0..50).collect::<Vec<_>>());
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        shuffle(&mut Vec::<usize>::new(), &mut policy_stream(1, ScenarioSet::Train, 0));
    }

    #[test]
    fn draws_have_their_moments() {
        let mut rng = scenario_stream(9, ScenarioSet::Test, 0);
        let n = 100_000;
        let units: Vec<f64> = (0..n).map(|_| unit(&mut rng)).collect();
        assert!(units.iter().all(|u| (0.0..1.0).contains(u)));
        let mean = units.iter().sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.005, "{mean}");
        let normals: Vec<f64> = (0..n).map(|_| standard_normal(&mut rng)).collect();
        let mean = normals.iter().sum::<f64>() / n as f64;
        let variance = normals.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.015 && (variance - 1.0).abs() < 0.02, "{mean} {variance}");
    }
}
