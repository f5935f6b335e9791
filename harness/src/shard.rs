//! Sharding one selection over several workers (`--sharding hash:K/N`, `balanced:K/N`).
//!
//! Every test the patterns match — planned or skipped — belongs to exactly one shard, and a
//! shard reports only its own tests, so the shards' reports merge without conflicts into
//! what the unsharded run reports.
//!
//! - `hash:K/N` (coreos-assembler's spelling and hash): FNV-1 (64 bit) of the test name,
//!   modulo N, plus one. It depends on the name alone, so a test stays in its shard when
//!   others are added or removed, and bogie's shards equal coreos-assembler's.
//! - `balanced:K/N`: greedy longest-processing-time bin packing over known durations (from
//!   a previous run, `--durations`): tests sorted by duration (longest first, then by name)
//!   each go to the shard with the least work so far (the lowest number on ties). A test
//!   without a known duration costs the median of the known ones; a skipped test costs
//!   nothing. Every shard computes the same assignment from the same inputs.
//!
//! Shards are numbered from 1, as in coreos-assembler.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::select::Selected;

/// How tests are split over shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// By a stable hash of the test name.
    Hash,
    /// By durations of a previous run.
    Balanced,
}

/// One shard of a sharded run: `index` of `total`, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sharding {
    /// How tests are assigned.
    pub strategy: Strategy,
    /// This shard, 1..=total.
    pub index: u32,
    /// Number of shards.
    pub total: u32,
}

/// A `--sharding` value that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("--sharding {value:?}: {reason} (expected hash:K/N or balanced:K/N with 1 <= K <= N)")]
pub struct ShardingError {
    /// The value given.
    pub value: String,
    /// What is wrong.
    pub reason: String,
}

impl FromStr for Sharding {
    type Err = ShardingError;

    /// Parses `hash:K/N`, `balanced:K/N`, or a bare `K/N` (hash).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| ShardingError {
            value: s.to_string(),
            reason: reason.to_string(),
        };
        let (strategy, rest) = match s.split_once(':') {
            Some(("hash", r)) => (Strategy::Hash, r),
            Some(("balanced", r)) => (Strategy::Balanced, r),
            Some((other, _)) => return Err(bad(&format!("unknown strategy {other:?}"))),
            None => (Strategy::Hash, s),
        };
        let (k, n) = rest.split_once('/').ok_or_else(|| bad("no K/N"))?;
        let index: u32 = k.trim().parse().map_err(|_| bad("K is not a number"))?;
        let total: u32 = n.trim().parse().map_err(|_| bad("N is not a number"))?;
        if total == 0 || index == 0 || index > total {
            return Err(bad("out of range"));
        }
        Ok(Sharding {
            strategy,
            index,
            total,
        })
    }
}

impl fmt::Display for Sharding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self.strategy {
            Strategy::Hash => "hash",
            Strategy::Balanced => "balanced",
        };
        write!(f, "{s}:{}/{}", self.index, self.total)
    }
}

/// FNV-1 64-bit hash (Go's `hash/fnv.New64`, which coreos-assembler shards by).
pub fn fnv1_64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        h ^= u64::from(*b);
    }
    h
}

/// The shard (1-based) `name` belongs to under `hash:_/total`.
pub fn hash_shard(name: &str, total: u32) -> u32 {
    (fnv1_64(name.as_bytes()) % u64::from(total.max(1))) as u32 + 1
}

/// Greedy longest-first bin packing: the shard (1-based) of every item, by name.
/// `items` are (name, cost); `None` costs the median of the known costs (1 s if none).
pub fn balanced_assignment(
    items: &[(String, Option<Duration>)],
    total: u32,
) -> HashMap<String, u32> {
    let total = total.max(1) as usize;
    let mut known: Vec<Duration> = items.iter().filter_map(|(_, d)| *d).collect();
    known.sort();
    let fallback = known
        .get(known.len() / 2)
        .copied()
        .unwrap_or(Duration::from_secs(1));
    let mut sorted: Vec<(&str, Duration)> = items
        .iter()
        .map(|(n, d)| (n.as_str(), d.unwrap_or(fallback)))
        .collect();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let mut load = vec![Duration::ZERO; total];
    let mut out = HashMap::new();
    for (name, cost) in sorted {
        let (i, _) = load
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.cmp(b.1).then(a.0.cmp(&b.0)))
            .expect("at least one shard");
        load[i] += cost;
        out.insert(name.to_string(), i as u32 + 1);
    }
    out
}

/// Keeps the tests of shard `s`: planned or skipped, every matched test is in exactly one
/// shard. `durations` (by test name) drive `balanced`; skipped tests cost nothing.
pub fn apply(
    selected: Vec<Selected>,
    s: &Sharding,
    durations: &HashMap<String, Duration>,
) -> Vec<Selected> {
    match s.strategy {
        Strategy::Hash => selected
            .into_iter()
            .filter(|x| hash_shard(&x.test().name, s.total) == s.index)
            .collect(),
        Strategy::Balanced => {
            let items: Vec<(String, Option<Duration>)> = selected
                .iter()
                .map(|x| match x {
                    Selected::Run(t) => (t.name.clone(), durations.get(&t.name).copied()),
                    Selected::Skip(t, _) => (t.name.clone(), Some(Duration::ZERO)),
                })
                .collect();
            let a = balanced_assignment(&items, s.total);
            selected
                .into_iter()
                .filter(|x| a.get(&x.test().name) == Some(&s.index))
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test::Test;

    #[test]
    fn parses_and_prints() {
        let s: Sharding = "hash:2/3".parse().unwrap();
        assert_eq!((s.strategy, s.index, s.total), (Strategy::Hash, 2, 3));
        assert_eq!(s.to_string(), "hash:2/3");
        let s: Sharding = "balanced:1/4".parse().unwrap();
        assert_eq!(s.strategy, Strategy::Balanced);
        assert_eq!("3/3".parse::<Sharding>().unwrap().to_string(), "hash:3/3");
        for bad in [
            "hash:0/3", "hash:4/3", "hash:1/0", "hash:x/3", "rr:1/2", "hash:1",
        ] {
            let e = bad.parse::<Sharding>().unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn fnv1_matches_go() {
        // Go: fnv.New64(); h.Write([]byte("a")); h.Sum64() == 0xaf63bd4c8601b7be
        assert_eq!(fnv1_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1_64(b"a"), 0xaf63_bd4c_8601_b7be);
    }

    #[test]
    fn hash_partitions_exactly() {
        let names: Vec<String> = (0..200).map(|i| format!("t.{i}")).collect();
        let sel: Vec<Selected> = names
            .iter()
            .map(|n| Selected::Run(Test::new(n, |_c| async { Ok(()) })))
            .collect();
        let mut seen: Vec<String> = Vec::new();
        for k in 1..=3 {
            let s = Sharding {
                strategy: Strategy::Hash,
                index: k,
                total: 3,
            };
            let part = apply(sel.clone(), &s, &HashMap::new());
            assert!(!part.is_empty());
            seen.extend(part.iter().map(|x| x.test().name.clone()));
        }
        seen.sort();
        let mut want = names.clone();
        want.sort();
        assert_eq!(seen, want);
    }

    #[test]
    fn balanced_is_longest_first_greedy() {
        let d = |s| Some(Duration::from_secs(s));
        let items = vec![
            ("a".to_string(), d(10)),
            ("b".to_string(), d(9)),
            ("c".to_string(), d(6)),
            ("d".to_string(), d(5)),
            ("e".to_string(), d(4)),
            ("f".to_string(), None), // median of known: 6
        ];
        let a = balanced_assignment(&items, 2);
        // a(10)->1, b(9)->2, c(6)->2 (15), f(6)->1 (16), d(5)->2 (20), e(4)->1 (20)
        let shard = |n: &str| a[n];
        assert_eq!(
            [
                shard("a"),
                shard("b"),
                shard("c"),
                shard("f"),
                shard("d"),
                shard("e")
            ],
            [1, 2, 2, 1, 2, 1]
        );
    }
}
