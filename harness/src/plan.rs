//! Decisions about a test's machine taken before anything boots: whether it may start
//! from (or become) a snapshot template, the key its template is planned under, whether it
//! gets a TPM, and the order that puts cold boots first. The machine-level templates
//! themselves are [`crate::snapshot`]'s.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::test::Test;

/// Whether `test`'s machine may start from (or become) a snapshot template.
pub fn can_use_template(test: &Test) -> bool {
    test.cluster_size == 1
        && !test.needs_first_boot
        && test.extra_disks.is_empty()
        // Templates are made and restored with the platform's own NICs and disk size, and
        // a restore is never a first boot.
        && test.extra_nics == 0
        && test.primary_disk_gib.is_none()
        && test.first_boot_kernel_args.is_empty()
        && !test.flags.no_ssh_key_in_user_data
        // Templates are taken after kola's SELinux setup ran: a test that opts out of it
        // must not start from one.
        && !test.flags.no_enable_selinux
        // A template would not carry the TPM's state: machines with one always boot cold.
        && !needs_tpm(test)
}

/// Whether the test's machines get a TPM (it requires the `tpm` capability).
pub fn needs_tpm(test: &Test) -> bool {
    test.requires.iter().any(|r| r == "tpm")
}

/// For planning, before configs are rendered: the key of the config `t`'s machine would
/// share a template under, None when the test cannot use a template.
pub fn test_template_key(t: &Test, run_memory_mb: Option<u32>) -> Option<String> {
    if !can_use_template(t) {
        return None;
    }
    Some(format!(
        "user={:?};noupd={};mem={:?};kargs={:?};cfg={}",
        t.default_user,
        t.flags.no_disable_updates,
        t.min_memory_mb.or(run_memory_mb),
        t.kernel_args,
        t.config
            .as_ref()
            .map(|c| c.render())
            .unwrap_or_else(|| "-".into())
    ))
}

/// Orders scheduling units so that machines that boot cold start first: with equal known
/// durations (usually: none known), a unit that makes its config's template, or whose
/// config has none (`with_template` lacks it), goes before units that will restore from a
/// template. Templates are then ready when their users start, and the long cold boots do
/// not trail at the end of the run. Stable otherwise.
pub fn cold_boots_first(
    units: &mut [Vec<Test>],
    with_template: &HashSet<String>,
    durations: &HashMap<String, Duration>,
    run_memory_mb: Option<u32>,
) {
    let mut seen = HashSet::new();
    let mut ranks: Vec<(Duration, bool)> = Vec::with_capacity(units.len());
    for u in units.iter() {
        let known: Duration = u
            .iter()
            .map(|t| durations.get(&t.name).copied().unwrap_or_default())
            .sum();
        let restores = match test_template_key(&u[0], run_memory_mb) {
            Some(k) if with_template.contains(&k) => !seen.insert(k),
            _ => false,
        };
        ranks.push((known, restores));
    }
    let mut order: Vec<usize> = (0..units.len()).collect();
    order.sort_by(|&a, &b| {
        ranks[b]
            .0
            .cmp(&ranks[a].0)
            .then(ranks[a].1.cmp(&ranks[b].1))
    });
    let mut taken: Vec<Option<Vec<Test>>> =
        units.iter_mut().map(|u| Some(std::mem::take(u))).collect();
    for (slot, i) in order.into_iter().enumerate() {
        units[slot] = taken[i].take().expect("each index once");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cold_boots_go_first_among_equals() {
        let t = |n: &str| Test::new(n, |_c| async { Ok(()) });
        let unique = crate::ignition::Config::new().file("/etc/u", "u", 0o644);
        let mut units = vec![
            vec![t("d1")],
            vec![t("d2")],
            vec![t("own").config(unique)],
            vec![t("d3")],
            vec![t("first").needs_first_boot()],
            vec![t("pair").cluster_size(2)],
        ];
        let key = test_template_key(&units[0][0], None).unwrap();
        let with: std::collections::HashSet<String> = [key].into_iter().collect();
        let mut d = HashMap::new();
        d.insert("d3".to_string(), Duration::from_secs(60));
        cold_boots_first(&mut units, &with, &d, None);
        let names: Vec<&str> = units.iter().map(|u| u[0].name.as_str()).collect();
        // d3's known duration first; then d1 (makes the template) and the cold ones; then d2.
        assert_eq!(names, ["d3", "d1", "own", "first", "pair", "d2"]);
    }
}
