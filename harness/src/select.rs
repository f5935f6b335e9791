//! Selection: which registered tests a run plans and which it skips, each skip with its
//! reason. Globs (`cl.*`) as kola matches them, platform/arch/distro/channel/offering lists,
//! version ranges, tags (`--tag T`, `--tag '!T'`, `needs-internet` with `--no-net`,
//! `platform-independent`), the image's capabilities, then the denylist. Sharding
//! (`shard.rs`) applies to the result.

use std::collections::BTreeSet;

use crate::arch::Arch;
use crate::denylist::{Resolved, Verdict};
pub use crate::pattern::{glob, platform_matches, SelectError};
use crate::test::{Test, Version};

/// coreos-assembler's tag for tests that need the internet (skipped with `--no-net`).
pub const NEEDS_INTERNET: &str = "needs-internet";
/// coreos-assembler's tag for tests whose result does not depend on the platform: they run
/// on qemu only, unless `--run-platform-independent`.
pub const PLATFORM_INDEPENDENT: &str = "platform-independent";

/// What the run is.
#[derive(Debug, Clone)]
pub struct Filter {
    /// Name patterns (globs); empty means `*`.
    pub patterns: Vec<String>,
    /// Platform name.
    pub platform: String,
    /// Architecture.
    pub arch: Arch,
    /// Distro (`cl`).
    pub distro: String,
    /// Channel, when given.
    pub channel: Option<String>,
    /// Offering, when given.
    pub offering: Option<String>,
    /// Image version, when known.
    pub version: Option<Version>,
    /// Capabilities of image and platform.
    pub provides: BTreeSet<String>,
    /// `--no-net`: skip tests tagged `needs-internet`.
    pub no_net: bool,
    /// `--tag T`: run only tests with one of these tags (empty: no constraint).
    pub tags: Vec<String>,
    /// `--tag '!T'`: skip tests with any of these tags.
    pub exclude_tags: Vec<String>,
    /// `--run-platform-independent`: run `platform-independent` tests on any platform.
    pub run_platform_independent: bool,
    /// The denylist entries that apply to this run (`--denylist`, `--denylist-test`).
    pub denylist: Resolved,
}

/// A test's fate in this run.
#[derive(Debug, Clone)]
pub enum Selected {
    /// It runs.
    Run(Test),
    /// It is skipped, with the reason.
    Skip(Test, String),
}

impl Selected {
    /// The test.
    pub fn test(&self) -> &Test {
        match self {
            Selected::Run(t) | Selected::Skip(t, _) => t,
        }
    }
}

fn is_glob(p: &str) -> bool {
    p.contains(['*', '?', '['])
}

/// Selects tests: every test matching a pattern is returned, planned or skipped with a
/// reason. A pattern that matches nothing is an error.
pub fn select(tests: &[Test], f: &Filter) -> Result<Vec<Selected>, SelectError> {
    let patterns: Vec<String> = if f.patterns.is_empty() {
        vec!["*".to_string()]
    } else {
        f.patterns.clone()
    };
    let matchers = patterns
        .iter()
        .map(|p| glob(p).map(|g| (p.clone(), g)))
        .collect::<Result<Vec<_>, _>>()?;
    for (p, g) in &matchers {
        if !tests.iter().any(|t| g.is_match(&t.name)) {
            return Err(SelectError::Unknown(p.clone()));
        }
    }
    let mut out = Vec::new();
    for t in tests {
        let hits: Vec<&String> = matchers
            .iter()
            .filter(|(_, g)| g.is_match(&t.name))
            .map(|(p, _)| p)
            .collect();
        if hits.is_empty() {
            continue;
        }
        // kola: naming a test exactly ignores its version range.
        let exact = hits.iter().any(|p| !is_glob(p));
        let reason = skip_reason(t, f, exact).or_else(|| match f.denylist.verdict(&t.name) {
            Some(Verdict::Skip(r)) => Some(r),
            _ => None,
        });
        match reason {
            Some(r) => out.push(Selected::Skip(t.clone(), r)),
            None => out.push(Selected::Run(t.clone())),
        }
    }
    Ok(out)
}

/// Why a test does not run under `f`, or None when it runs: the test's own exclusion,
/// then where it runs, its version range (unless `exact`), then tags and capabilities.
pub fn skip_reason(t: &Test, f: &Filter, exact: bool) -> Option<String> {
    if let Some(why) = &t.unsupported {
        return Some(why.clone());
    }
    target_mismatch(t, f)
        .or_else(|| (!exact).then(|| version_mismatch(t, f)).flatten())
        .or_else(|| unmet_privileged_needs(t, f))
        .or_else(|| unmet_needs(t, f))
}

/// The platform, architecture, distro, channel or offering the test does not run on.
fn target_mismatch(t: &Test, f: &Filter) -> Option<String> {
    if !t.platforms.is_empty() && !t.platforms.iter().any(|p| platform_matches(p, &f.platform)) {
        return Some(format!(
            "platform {} not in the test's platforms ({})",
            f.platform,
            t.platforms.join(", ")
        ));
    }
    if t.exclude_platforms
        .iter()
        .any(|p| platform_matches(p, &f.platform) && !lifted_for_bogie_qemu(t, p, f))
    {
        return Some(format!("platform {} is excluded by the test", f.platform));
    }
    if !t.architectures.is_empty() && !t.architectures.contains(&f.arch) {
        let list: Vec<&str> = t.architectures.iter().map(|a| a.as_str()).collect();
        return Some(format!(
            "architecture {} not in the test's architectures ({})",
            f.arch,
            list.join(", ")
        ));
    }
    if t.exclude_architectures.contains(&f.arch) {
        return Some(format!("architecture {} is excluded by the test", f.arch));
    }
    if !t.distros.is_empty() && !t.distros.contains(&f.distro) {
        return Some(format!(
            "distro {} not in the test's distros ({})",
            f.distro,
            t.distros.join(", ")
        ));
    }
    if t.exclude_distros.contains(&f.distro) {
        return Some(format!("distro {} is excluded by the test", f.distro));
    }
    if let Some(ch) = &f.channel {
        if !t.channels.is_empty() && !t.channels.contains(ch) {
            return Some(format!("channel {ch} not in the test's channels"));
        }
        if t.exclude_channels.contains(ch) {
            return Some(format!("channel {ch} is excluded by the test"));
        }
    }
    if let Some(off) = &f.offering {
        if !t.offerings.is_empty() && !t.offerings.contains(off) {
            return Some(format!("offering {off} not in the test's offerings"));
        }
    }
    None
}

/// What kola's privileged `qemu` gave the tests it kept off `qemu-unpriv`, by the capability
/// name a test lists in [`Test::privileged_qemu`], with what it is. bogie's QEMU platform
/// provides a name when it offers the same (e.g. `private-network`).
pub const PRIVILEGED_QEMU_NEEDS: &[(&str, &str)] = &[
    (
        "private-network",
        "a network between the cluster's machines",
    ),
    (
        "host-ntp",
        "an NTP server the guest's DHCP names, as kola's at 10.0.0.1",
    ),
    (
        "host-omaha",
        "an Omaha update server the guest reaches at a fixed address",
    ),
];

/// A test kola keeps off `qemu-unpriv` runs on bogie's QEMU (`qemu`, unprivileged) when it
/// names its privileged needs: the `qemu-unpriv` entry of its exclusions is lifted there,
/// and [`unmet_privileged_needs`] checks the needs instead.
fn lifted_for_bogie_qemu(t: &Test, excluded: &str, f: &Filter) -> bool {
    excluded == "qemu-unpriv" && f.platform == "qemu" && t.privileged_qemu_needs.is_some()
}

/// The first privileged-`qemu` need of a lifted test that the run does not provide.
fn unmet_privileged_needs(t: &Test, f: &Filter) -> Option<String> {
    if !t
        .exclude_platforms
        .iter()
        .any(|p| lifted_for_bogie_qemu(t, p, f))
    {
        return None;
    }
    let need = t
        .privileged_qemu_needs
        .iter()
        .flatten()
        .find(|n| !f.provides.contains(*n))?;
    let what = PRIVILEGED_QEMU_NEEDS
        .iter()
        .find(|(n, _)| n == need)
        .map_or("a service of kola's privileged qemu", |(_, w)| *w);
    Some(format!(
        "needs {need} ({what}) from kola's privileged qemu, which bogie's qemu does not provide"
    ))
}

/// The image version outside the test's range.
fn version_mismatch(t: &Test, f: &Filter) -> Option<String> {
    if let Some(v) = f.version {
        if let Some(min) = t.min_version {
            if v < min {
                return Some(format!(
                    "image version {v} is older than the test's minimum {min}"
                ));
            }
        }
        if let Some(end) = t.end_version {
            if v >= end {
                return Some(format!(
                    "image version {v} is at or past the test's end version {end}"
                ));
            }
        }
    }
    None
}

/// A tag or capability the test needs that the run does not give.
fn unmet_needs(t: &Test, f: &Filter) -> Option<String> {
    if f.no_net && t.has_tag(NEEDS_INTERNET) {
        return Some("needs-internet: --no-net was given".to_string());
    }
    if !f.run_platform_independent
        && t.has_tag(PLATFORM_INDEPENDENT)
        && !platform_matches("qemu", &f.platform)
    {
        return Some(format!(
            "platform-independent: runs on qemu only (--run-platform-independent runs it on {})",
            f.platform
        ));
    }
    if let Some(tag) = f.exclude_tags.iter().find(|x| t.has_tag(x)) {
        return Some(format!("tag {tag} is excluded by --tag '!{tag}'"));
    }
    if let Some(rt) = t.required_tag.as_ref().filter(|rt| !f.tags.contains(rt)) {
        return Some(format!("requiredTag {rt}: runs only with --tag {rt}"));
    }
    if !f.tags.is_empty()
        && !f
            .tags
            .iter()
            .any(|x| t.has_tag(x) || t.required_tag.as_ref() == Some(x))
    {
        return Some(format!(
            "none of the tags {} given by --tag",
            f.tags.join(", ")
        ));
    }
    let missing: Vec<&str> = t
        .requires
        .iter()
        .filter(|r| !f.provides.contains(*r))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Some(format!(
            "requires {} (not provided by the image or platform)",
            missing.join(", ")
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str) -> Test {
        Test::new(name, |_c| async { Ok(()) })
    }

    fn filter() -> Filter {
        Filter {
            patterns: vec![],
            platform: "qemu".into(),
            arch: Arch::Amd64,
            distro: "cl".into(),
            channel: None,
            offering: None,
            version: Some(Version::new(4000, 0, 0)),
            provides: ["docker".to_string()].into_iter().collect(),
            no_net: true,
            tags: vec![],
            exclude_tags: vec![],
            run_platform_independent: false,
            denylist: Resolved::default(),
        }
    }

    fn names(s: &[Selected]) -> Vec<(String, Option<String>)> {
        s.iter()
            .map(|x| match x {
                Selected::Run(t) => (t.name.clone(), None),
                Selected::Skip(t, r) => (t.name.clone(), Some(r.clone())),
            })
            .collect()
    }

    #[test]
    fn globs_match_across_dots() {
        let tests = vec![t("cl.basic"), t("cl.ignition.v1.once"), t("docker.base")];
        let mut f = filter();
        f.patterns = vec!["cl.*".into()];
        let s = select(&tests, &f).unwrap();
        assert_eq!(s.len(), 2);
        f.patterns = vec!["nope.*".into()];
        assert!(matches!(select(&tests, &f), Err(SelectError::Unknown(p)) if p == "nope.*"));
    }

    #[test]
    fn every_skip_has_a_reason() {
        let tests = vec![
            t("a").platforms(&["azure"]),
            t("b").architectures(&[Arch::Arm64]),
            t("c").min_version(Version::new(4100, 0, 0)),
            t("d").tags(&["needs-internet"]),
            t("e").requires(&["docker", "tpm"]),
            t("f").platforms(&["qemu-unpriv"]),
        ];
        let s = names(&select(&tests, &filter()).unwrap());
        assert!(s[0].1.as_deref().unwrap().contains("platform qemu not in"));
        assert!(s[1].1.as_deref().unwrap().contains("architecture amd64"));
        assert!(s[2].1.as_deref().unwrap().contains("older than"));
        assert!(s[3].1.as_deref().unwrap().contains("needs-internet"));
        assert_eq!(
            s[4].1.as_deref().unwrap(),
            "requires tpm (not provided by the image or platform)"
        );
        assert_eq!(s[5].1, None);
    }

    #[test]
    fn privileged_qemu_needs_lift_the_qemu_unpriv_exclusion_on_bogies_qemu() {
        let tests = vec![
            t("kept-off").platforms(&["qemu", "!qemu-unpriv"]),
            t("nothing-missing")
                .platforms(&["qemu", "!qemu-unpriv"])
                .privileged_qemu(&[]),
            t("met")
                .platforms(&["!qemu-unpriv"])
                .privileged_qemu(&["private-network"]),
            t("unmet")
                .platforms(&["qemu", "!qemu-unpriv"])
                .privileged_qemu(&["host-ntp"]),
            t("excludes-qemu-too")
                .platforms(&["!qemu", "!qemu-unpriv"])
                .privileged_qemu(&[]),
        ];
        let mut f = filter();
        f.provides.insert("private-network".into());
        let s = names(&select(&tests, &f).unwrap());
        assert_eq!(
            s[0].1.as_deref(),
            Some("platform qemu is excluded by the test")
        );
        assert_eq!(s[1].1, None);
        assert_eq!(s[2].1, None);
        assert_eq!(
            s[3].1.as_deref(),
            Some("needs host-ntp (an NTP server the guest's DHCP names, as kola's at 10.0.0.1) from kola's privileged qemu, which bogie's qemu does not provide")
        );
        assert_eq!(
            s[4].1.as_deref(),
            Some("platform qemu is excluded by the test")
        );
        // Elsewhere the exclusion is what it was.
        f.platform = "azure".into();
        let s = names(&select(&tests[2..3], &f).unwrap());
        assert_eq!(s[0].1, None);
        f.provides.remove("private-network");
        f.platform = "qemu".into();
        let s = names(&select(&tests[2..3], &f).unwrap());
        assert!(s[0]
            .1
            .as_deref()
            .unwrap()
            .starts_with("needs private-network"));
    }

    #[test]
    fn exact_names_ignore_version_ranges() {
        let tests = vec![t("c").min_version(Version::new(4100, 0, 0))];
        let mut f = filter();
        f.patterns = vec!["c".into()];
        assert!(matches!(select(&tests, &f).unwrap()[0], Selected::Run(_)));
    }

    #[test]
    fn tags_channels_offerings_and_versions() {
        let tests = vec![
            t("a").tags(&["smoke"]),
            t("b").tags(&["slow"]),
            t("c").channels(&["alpha", "beta"]),
            t("d").channels(&["!stable"]),
            t("e").offerings(&["pro"]),
            t("f").end_version(Version::new(3760, 0, 0)),
            t("g").distros(&["fcos"]),
            t("h").tags(&[PLATFORM_INDEPENDENT]),
        ];
        let mut f = filter();
        f.tags = vec!["smoke".into()];
        let s = names(&select(&tests, &f).unwrap());
        assert_eq!(s[0].1, None);
        assert!(s[1]
            .1
            .as_deref()
            .unwrap()
            .contains("none of the tags smoke"));
        let mut f = filter();
        f.exclude_tags = vec!["slow".into()];
        f.channel = Some("stable".into());
        f.offering = Some("basic".into());
        let s = names(&select(&tests, &f).unwrap());
        assert_eq!(s[0].1, None);
        assert_eq!(
            s[1].1.as_deref(),
            Some("tag slow is excluded by --tag '!slow'")
        );
        assert_eq!(
            s[2].1.as_deref(),
            Some("channel stable not in the test's channels")
        );
        assert_eq!(
            s[3].1.as_deref(),
            Some("channel stable is excluded by the test")
        );
        assert_eq!(
            s[4].1.as_deref(),
            Some("offering basic not in the test's offerings")
        );
        assert!(s[5]
            .1
            .as_deref()
            .unwrap()
            .contains("past the test's end version 3760.0.0"));
        assert!(s[6].1.as_deref().unwrap().contains("distro cl not in"));
        assert_eq!(s[7].1, None, "platform-independent runs on qemu");
        f.platform = "aws".into();
        let s = names(&select(&tests, &f).unwrap());
        assert!(s[7]
            .1
            .as_deref()
            .unwrap()
            .starts_with("platform-independent"));
        f.run_platform_independent = true;
        let s = names(&select(&tests, &f).unwrap());
        assert_eq!(s[7].1, None);
    }

    #[test]
    fn required_tags_and_unsupported_tests() {
        let mut special = t("special");
        special.required_tag = Some("slow".into());
        let mut never = t("never");
        never.unsupported = Some("kola key additionalNics (2) is not supported".into());
        let tests = vec![special, never];
        let s = names(&select(&tests, &filter()).unwrap());
        assert_eq!(
            s[0].1.as_deref(),
            Some("requiredTag slow: runs only with --tag slow")
        );
        assert_eq!(
            s[1].1.as_deref(),
            Some("kola key additionalNics (2) is not supported")
        );
        let mut f = filter();
        f.tags = vec!["slow".into()];
        let s = names(&select(&tests, &f).unwrap());
        assert_eq!(s[0].1, None, "--tag slow runs it");
    }

    #[test]
    fn denylist_skips_after_the_tests_own_constraints() {
        use crate::denylist::{DenyContext, Denylist};
        let d = Denylist::parse(
            "- pattern: 'x.*'\n  tracker: https://example.com/issues/7\n",
            std::path::Path::new("d.yaml"),
        )
        .unwrap();
        let tests = vec![t("x.one"), t("x.two").platforms(&["azure"]), t("y")];
        let mut f = filter();
        f.denylist = d.resolve(&DenyContext {
            arch: Arch::Amd64,
            platform: "qemu".into(),
            stream: None,
            now: chrono::Utc::now(),
        });
        let s = names(&select(&tests, &f).unwrap());
        assert_eq!(
            s[0].1.as_deref(),
            Some("denylisted: https://example.com/issues/7")
        );
        assert!(s[1].1.as_deref().unwrap().contains("platform qemu not in"));
        assert_eq!(s[2].1, None);
    }
}
