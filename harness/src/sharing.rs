//! Shared machines: tests that leave their machine as they found it (kola's non-exclusive
//! tests) run one after another on one machine when their machines would be the same.
//!
//! Tests share when they are `non_exclusive`, have one harness-booted machine, do not need a
//! first boot, and ask for the same machine (config, memory, disks, kernel arguments, SSH
//! user, key handling). Two tests never share when either lists the other in `conflicts`
//! (names or globs). A group of such tests is split into at most `parallel` units so that
//! sharing never idles the host; each unit runs its tests in order on one machine.
//!
//! Each test keeps its own result and artifacts: `<out>/<test>/<machine>/` holds the part of
//! the console and of the journal written during that test and the machine's config; the
//! machine's own files (disk, whole console, QEMU log) are in `<out>/shared/<machine>/`. A
//! failure is reported against the test that failed, and a machine is not handed on after a
//! failure (nor when it is no longer `running`): the next test gets a fresh machine.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use globset::Glob;

use crate::machine::TestMachine;
use crate::platform::Cluster;
use crate::test::Test;

/// The directory under the run's output dir for shared machines' own files.
pub const SHARED_DIR: &str = "shared";

/// The key under which tests may share a machine; None when `t` may not share.
pub fn share_key(t: &Test, run_memory_mb: Option<u32>) -> Option<String> {
    let shape = shape_key(t, run_memory_mb)?;
    Some(format!(
        "{shape};cfg={}",
        t.config
            .as_ref()
            .map(|c| c.render())
            .unwrap_or_else(|| "-".into()),
    ))
}

/// Everything of [`share_key`] but the config: the machine a test asks for besides its
/// Ignition config (tests of one shape may share once their configs are merged, see
/// [`crate::buckets`]). None when `t` may not share.
pub fn shape_key(t: &Test, run_memory_mb: Option<u32>) -> Option<String> {
    if !t.non_exclusive
        || t.cluster_size != 1
        || t.needs_first_boot
        // The next test would not see the first boot.
        || !t.first_boot_kernel_args.is_empty()
    {
        return None;
    }
    Some(format!(
        "user={:?};nokey={};noupd={};nosel={};mem={:?};disks={:?};primary={:?};nics={};kargs={:?};firstboot={:?};tpm={}",
        t.default_user,
        t.flags.no_ssh_key_in_user_data,
        t.flags.no_disable_updates,
        t.flags.no_enable_selinux,
        t.min_memory_mb.or(run_memory_mb),
        t.extra_disks,
        t.primary_disk_gib,
        t.extra_nics,
        t.kernel_args,
        t.first_boot_kernel_args,
        crate::plan::needs_tpm(t),
    ))
}

fn matches(pattern: &str, name: &str) -> bool {
    if pattern == name {
        return true;
    }
    if !pattern.contains(['*', '?', '[']) {
        return false;
    }
    Glob::new(pattern)
        .map(|g| g.compile_matcher().is_match(name))
        .unwrap_or(false)
}

/// Whether `a` and `b` must not share a machine (either names the other in `conflicts`).
pub fn conflict(a: &Test, b: &Test) -> bool {
    a.conflicts.iter().any(|p| matches(p, &b.name))
        || b.conflicts.iter().any(|p| matches(p, &a.name))
}

/// Splits ordered tests into scheduling units: a unit runs its tests one after another on
/// one machine (exclusive tests are units of one). Units keep the tests' order (longest
/// known first) and are ordered by their known total duration, longest first; ties keep
/// the order of their first test.
pub fn plan_units(
    tests: Vec<Test>,
    parallel: usize,
    durations: &HashMap<String, Duration>,
    share: bool,
    run_memory_mb: Option<u32>,
) -> Vec<Vec<Test>> {
    let parallel = parallel.max(1);
    // (first index, tests) so ties keep the original order.
    let mut units: Vec<(usize, Vec<Test>)> = Vec::new();
    // key -> conflict-free bins of (index, test)
    type Bin = Vec<(usize, Test)>;
    let mut groups: Vec<(String, Vec<Bin>)> = Vec::new();
    for (i, t) in tests.into_iter().enumerate() {
        let key = if share {
            share_key(&t, run_memory_mb)
        } else {
            None
        };
        let Some(key) = key else {
            units.push((i, vec![t]));
            continue;
        };
        let bins = match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, bins)) => bins,
            None => {
                groups.push((key, Vec::new()));
                &mut groups.last_mut().expect("just pushed").1
            }
        };
        match bins
            .iter_mut()
            .find(|bin| !bin.iter().any(|(_, o)| conflict(o, &t)))
        {
            Some(bin) => bin.push((i, t)),
            None => bins.push(vec![(i, t)]),
        }
    }
    let known = |t: &Test| durations.get(&t.name).copied().unwrap_or_default();
    for (_, bins) in groups {
        for bin in bins {
            // Longest-processing-time first into at most `parallel` chunks.
            let k = bin.len().min(parallel);
            let mut chunks: Vec<(Duration, Vec<(usize, Test)>)> =
                (0..k).map(|_| (Duration::ZERO, Vec::new())).collect();
            for (i, t) in bin {
                let c = chunks
                    .iter_mut()
                    .min_by_key(|(d, v)| (*d, v.len()))
                    .expect("k >= 1");
                c.0 += known(&t);
                c.1.push((i, t));
            }
            for (_, chunk) in chunks {
                let first = chunk[0].0;
                units.push((first, chunk.into_iter().map(|(_, t)| t).collect()));
            }
        }
    }
    let total = |u: &[Test]| u.iter().map(known).sum::<Duration>();
    units.sort_by(|(ia, a), (ib, b)| total(b).cmp(&total(a)).then(ia.cmp(ib)));
    units.into_iter().map(|(_, u)| u).collect()
}

/// A ready machine handed from one test of a unit to the next.
pub struct Lease {
    /// The machine's cluster (torn down when the lease ends).
    pub(crate) cluster: Arc<dyn Cluster>,
    /// The machine, with its SSH session.
    pub(crate) machine: TestMachine,
    /// The config the machine booted with (copied into each test's artifacts).
    pub(crate) ignition: String,
    /// Where the journal of the next test starts (`journalctl --after-cursor`).
    pub(crate) journal_cursor: Option<String>,
    /// Console bytes written before the next test.
    pub(crate) console_offset: usize,
    /// Where the machine's own files are.
    pub(crate) machine_dir: PathBuf,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("machine", &self.machine.id())
            .field("machine_dir", &self.machine_dir)
            .finish_non_exhaustive()
    }
}

impl Lease {
    /// The machine's id.
    pub fn machine_id(&self) -> &str {
        self.machine.id()
    }

    /// Tears the machine down (the unit is done, or the run was interrupted).
    pub async fn release(self) {
        if let Some(s) = self.machine.session.lock().await.take() {
            s.close().await;
        }
        if let Err(e) = self.cluster.destroy().await {
            tracing::warn!(machine = self.machine.id(), error = %e, "shared machine teardown failed");
        }
    }
}

/// Where the console and journal of a shared machine's current test begin.
pub(crate) struct SliceFrom {
    /// Console bytes written before the test.
    pub(crate) console_offset: usize,
    /// The journal cursor the test's journal follows.
    pub(crate) journal_cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ignition::Config;

    fn t(name: &str) -> Test {
        Test::new(name, |_c| async { Ok(()) })
    }
    fn shared(name: &str) -> Test {
        t(name).non_exclusive()
    }
    fn names(units: &[Vec<Test>]) -> Vec<Vec<&str>> {
        units
            .iter()
            .map(|u| u.iter().map(|t| t.name.as_str()).collect())
            .collect()
    }

    #[test]
    fn only_compatible_non_exclusive_tests_share() {
        let other = Config::new().file("/etc/x", "x", 0o644);
        let tests = vec![
            shared("a"),
            t("excl"),
            shared("b"),
            shared("cfg").config(other.clone()),
            shared("cfg2").config(other),
            shared("two").cluster_size(2),
            shared("first").needs_first_boot(),
            shared("mem").min_memory_mb(4096),
            shared("c"),
        ];
        let units = plan_units(tests, 1, &HashMap::new(), true, None);
        assert_eq!(
            names(&units),
            vec![
                vec!["a", "b", "c"],
                vec!["excl"],
                vec!["cfg", "cfg2"],
                vec!["two"],
                vec!["first"],
                vec!["mem"],
            ]
        );
        // The run's memory counts like the test's own.
        assert_eq!(
            share_key(&shared("x").min_memory_mb(2048), Some(2048)),
            share_key(&shared("y"), Some(2048))
        );
    }

    #[test]
    fn sharing_off_gives_every_test_its_own_unit() {
        let units = plan_units(
            vec![shared("a"), shared("b")],
            1,
            &HashMap::new(),
            false,
            None,
        );
        assert_eq!(names(&units), vec![vec!["a"], vec!["b"]]);
    }

    #[test]
    fn conflicts_keep_tests_apart_either_way_and_globs_match() {
        let mut a = shared("net.a");
        a.conflicts = vec!["net.b".into()];
        let b = shared("net.b");
        let mut c = shared("disk.c");
        c.conflicts = vec!["net.*".into()];
        let d = shared("disk.d");
        assert!(conflict(&a, &b) && conflict(&b, &a));
        assert!(conflict(&c, &a) && !conflict(&d, &a));
        let units = plan_units(vec![a, b, c, d], 1, &HashMap::new(), true, None);
        assert_eq!(
            names(&units),
            vec![vec!["net.a", "disk.d"], vec!["net.b"], vec!["disk.c"]]
        );
        for u in &units {
            for x in u {
                for y in u {
                    assert!(x.name == y.name || !conflict(x, y));
                }
            }
        }
    }

    #[test]
    fn groups_split_to_keep_every_slot_busy_longest_first() {
        let tests: Vec<Test> = (0..5).map(|i| shared(&format!("s{i}"))).collect();
        let mut d = HashMap::new();
        d.insert("s0".to_string(), Duration::from_secs(50));
        d.insert("s1".to_string(), Duration::from_secs(30));
        d.insert("s2".to_string(), Duration::from_secs(20));
        d.insert("s3".to_string(), Duration::from_secs(10));
        d.insert("s4".to_string(), Duration::from_secs(5));
        let units = plan_units(tests, 2, &d, true, None);
        // Longest first into the emptier chunk: 50+10 and 30+20+5.
        assert_eq!(
            names(&units),
            vec![vec!["s0", "s3"], vec!["s1", "s2", "s4"]]
        );
        // More slots than tests: one test per unit.
        let units = plan_units(
            vec![shared("x"), shared("y")],
            8,
            &HashMap::new(),
            true,
            None,
        );
        assert_eq!(units.len(), 2);
    }

    #[test]
    fn units_are_ordered_longest_first() {
        let mut d = HashMap::new();
        d.insert("slow".to_string(), Duration::from_secs(300));
        d.insert("s1".to_string(), Duration::from_secs(100));
        d.insert("s2".to_string(), Duration::from_secs(250));
        let tests = vec![t("slow"), shared("s2"), shared("s1"), t("new")];
        let units = plan_units(tests, 1, &d, true, None);
        assert_eq!(
            names(&units),
            vec![vec!["s2", "s1"], vec!["slow"], vec!["new"]]
        );
    }
}
