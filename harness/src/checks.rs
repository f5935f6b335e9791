//! kola's console and journal checks: patterns that fail a test when they appear on a
//! machine's console or in its journal (kernel panic, oops, emergency shell, SELinux
//! denials, failed units, ...), also used by `bogie check-console`.

use std::sync::OnceLock;

use bogie_reports::{Failure, FailureClass};
use regex::Regex;

use crate::failure::make_failure;
use crate::test::TestFlags;
pub use crate::text::strip_ansi;

/// One console check.
#[derive(Debug)]
pub struct ConsoleCheck {
    /// A short description, as kola prints it.
    pub desc: &'static str,
    /// The failure class a match means.
    pub class: FailureClass,
    /// Skip this check when the test sets this flag.
    pub skip_flag: Option<fn(&TestFlags) -> bool>,
    /// Whether the check also applies to the journal (some lines only matter on the console).
    pub journal: bool,
    re: Regex,
}

/// A line that matched a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckMatch {
    /// The check's description.
    pub desc: &'static str,
    /// The class of the problem.
    pub class: FailureClass,
    /// The matching line (trimmed).
    pub line: String,
    /// 1-based line number in the scanned text.
    pub line_no: usize,
}

fn check(
    desc: &'static str,
    class: FailureClass,
    pattern: &str,
    skip_flag: Option<fn(&TestFlags) -> bool>,
    journal: bool,
) -> ConsoleCheck {
    ConsoleCheck {
        desc,
        class,
        skip_flag,
        journal,
        re: Regex::new(pattern).expect("console check patterns are valid"),
    }
}

/// Every check, in kola's order.
///
/// Long on purpose: one table entry per check; splitting it would only scatter the table.
pub fn checks() -> &'static [ConsoleCheck] {
    static CHECKS: OnceLock<Vec<ConsoleCheck>> = OnceLock::new();
    CHECKS.get_or_init(|| {
        use FailureClass::*;
        vec![
            check(
                "emergency shell",
                Systemd,
                r"You are in emergency mode|Entering emergency mode|Starting (?:Emergency Shell|emergency\.service)|Reached target (?:Emergency Mode|emergency\.target)",
                Some(|f| f.no_emergency_shell_check),
                true,
            ),
            check(
                "kernel panic",
                Kernel,
                r"Kernel panic - not syncing",
                Some(|f| f.no_kernel_panic_check),
                true,
            ),
            check("kernel oops", Kernel, r"Oops:", None, true),
            check(
                "kernel warning",
                Kernel,
                r"WARNING: CPU: \d+ PID: \d+ at",
                None,
                true,
            ),
            check("kernel BUG", Kernel, r"\bBUG: (?:unable to handle|kernel NULL pointer|soft lockup|scheduling while atomic|KASAN)", None, true),
            check(
                "failure of disk under I/O",
                Kernel,
                r"rejecting I/O to offline device",
                None,
                true,
            ),
            check(
                "bad page table",
                Kernel,
                r"mm/pgtable-generic\.c:\d+: bad (?:pmd|pud|pgd)",
                None,
                true,
            ),
            check(
                "ext4 error",
                Kernel,
                r"EXT4-fs (?:error|warning \(device \S+\): ext4_mb_generate_buddy)|EXT4-fs \(\S+\): Remounting filesystem read-only|JBD2: .*journal abort|Aborting journal on device",
                None,
                true,
            ),
            check(
                "fsck inconsistency",
                Systemd,
                r"UNEXPECTED INCONSISTENCY; RUN fsck MANUALLY",
                None,
                true,
            ),
            check(
                "GRUB magic broken",
                Kernel,
                r"(?:error: )?invalid magic number|you need to load the kernel first",
                None,
                false,
            ),
            check(
                "Ignition failure",
                Systemd,
                r"ignition\[\d+\]: .*context canceled|IGNITION FAILED|Ignition failed:",
                None,
                true,
            ),
            check(
                "initrd-cleanup killed",
                Systemd,
                r"initrd-cleanup\.service: Main process exited, code=killed",
                None,
                true,
            ),
            check("Go panic", Assertion, r"^(?:.*\]: )?panic: ", None, true),
            check(
                "segfault",
                Kernel,
                r"\bsegfault at [0-9a-f]+ ip [0-9a-f]+|SIGSEGV",
                None,
                true,
            ),
            check(
                "core dump",
                Systemd,
                r"systemd-coredump\[\d+\]: Process \d+ \(.*\) of user \d+ dumped core",
                None,
                true,
            ),
            check(
                "verity corruption",
                Kernel,
                r"device-mapper: verity: .*(?:metadata block|data block) \d+ is corrupted",
                Some(|f| f.no_verity_corruption_check),
                true,
            ),
            check(
                "disk I/O error",
                Kernel,
                r"blk_update_request: I/O error, dev (?:[^s]|s[^r]|sr[^0])|I/O error, dev (?:vd|sd|nvme|xvd)",
                None,
                true,
            ),
            check(
                "seccomp kill",
                Seccomp,
                r"audit: type=1326 .* sig=31 ",
                None,
                true,
            ),
            check(
                "failed unit",
                Systemd,
                r"(?:\[FAILED\] Failed to start|Failed to start [^\n]*\.|Dependency failed for )",
                None,
                true,
            ),
            check(
                "systemd isolate failure",
                Systemd,
                r"Failed to isolate default target",
                None,
                true,
            ),
            check(
                "systemd freezing",
                Systemd,
                r"systemd\[1\]: Freezing execution|Caught <SEGV>",
                None,
                true,
            ),
            check(
                "ordering cycle",
                Systemd,
                r"Found ordering cycle on ",
                None,
                true,
            ),
            check(
                "SELinux denial",
                Selinux,
                r"avc:\s+denied",
                Some(|f| f.no_selinux_avc_checks),
                true,
            ),
        ]
    })
}

/// Options for a scan.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScanOptions {
    /// The test's flags (some checks are skipped by flags).
    pub flags: TestFlags,
    /// Skip SELinux AVC checks (`--disable-selinux-avc-checks`).
    pub no_avc_checks: bool,
    /// Scanning a journal rather than a console.
    pub journal: bool,
}

/// Scans text for every check; returns each matching line once (first check that matches).
pub fn scan(text: &str, opts: ScanOptions) -> Vec<CheckMatch> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        for c in checks() {
            if opts.journal && !c.journal {
                continue;
            }
            if c.skip_flag.is_some_and(|f| f(&opts.flags)) {
                continue;
            }
            if opts.no_avc_checks && c.class == FailureClass::Selinux {
                continue;
            }
            if c.re.is_match(line) {
                out.push(CheckMatch {
                    desc: c.desc,
                    class: c.class,
                    line: strip_ansi(line).trim().to_string(),
                    line_no: i + 1,
                });
                break;
            }
        }
    }
    out
}

/// A check's match on one machine's console or journal, found while collecting.
#[derive(Debug, Clone)]
pub struct Hit {
    /// The match.
    pub found: CheckMatch,
    /// The machine's id.
    pub machine: String,
    /// `console` or `journal`.
    pub source: &'static str,
}

/// The checks phase: as kola does, console and journal problems fail a test even when its
/// body passed (unless it skipped). An assertion failure takes the first hit's class and
/// signature (a kernel, SELinux or unit problem usually explains it); every failure gets
/// the hits as its excerpt.
pub fn judge(failure: &mut Option<Failure>, hits: &[Hit], skipped: bool) {
    let Some(first) = hits.first() else { return };
    if skipped {
        return;
    }
    let mut excerpt = String::new();
    for h in hits.iter().take(20) {
        excerpt.push_str(&format!(
            "{} {}:{}: {}\n",
            h.machine, h.source, h.found.line_no, h.found.line
        ));
    }
    match failure.as_mut() {
        Some(f) if f.class == FailureClass::Assertion || f.class == FailureClass::Timeout => {
            if f.class == FailureClass::Assertion {
                f.class = first.found.class;
                f.signature = bogie_reports::triage::signature(&first.found.line);
            }
            f.push_excerpt(&excerpt);
        }
        Some(f) => f.push_excerpt(&excerpt),
        None => {
            let msg = format!(
                "found {} on machine {}: {}",
                first.found.desc, first.source, first.found.line
            );
            *failure = Some(make_failure(first.found.class, &msg, &excerpt));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classes(text: &str) -> Vec<(&'static str, FailureClass)> {
        scan(text, ScanOptions::default())
            .into_iter()
            .map(|m| (m.desc, m.class))
            .collect()
    }

    #[test]
    fn finds_kernel_problems() {
        let t = "[    5.123456] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\n\
                 [   12.000001] Oops: 0002 [#1] SMP PTI\n\
                 [   13.1] WARNING: CPU: 1 PID: 345 at kernel/sched/core.c:1234 foo+0x12/0x30\n";
        assert_eq!(
            classes(t),
            vec![
                ("kernel panic", FailureClass::Kernel),
                ("kernel oops", FailureClass::Kernel),
                ("kernel warning", FailureClass::Kernel)
            ]
        );
    }

    #[test]
    fn finds_units_emergency_and_avc() {
        let t = "\x1b[0;1;31m[FAILED]\x1b[0m Failed to start etcd-member.service - etcd.\n\
                 You are in emergency mode. After logging in, type \"journalctl -xb\"\n\
                 audit: type=1400 audit(1700000000.123:45): avc:  denied  { read } for pid=1 comm=\"x\"\n";
        let m = scan(t, ScanOptions::default());
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].class, FailureClass::Systemd);
        assert!(m[0]
            .line
            .starts_with("[FAILED] Failed to start etcd-member.service"));
        assert_eq!(m[1].desc, "emergency shell");
        assert_eq!(m[2].class, FailureClass::Selinux);
        let none = scan(
            t,
            ScanOptions {
                no_avc_checks: true,
                flags: TestFlags {
                    no_emergency_shell_check: true,
                    ..Default::default()
                },
                journal: false,
            },
        );
        assert_eq!(none.len(), 1);
    }

    #[test]
    fn clean_boot_log_has_no_matches() {
        let t = "[    0.000000] Linux version 6.1.0-28-cloud-amd64\n\
                 [  OK  ] Started ssh.service - OpenBSD Secure Shell server.\n\
                 [  OK  ] Reached target multi-user.target - Multi-User System.\n\
                 Debian GNU/Linux 12 localhost ttyS0\n";
        assert!(classes(t).is_empty());
    }

    #[test]
    fn sr0_io_errors_are_ignored() {
        assert!(classes("blk_update_request: I/O error, dev sr0, sector 0").is_empty());
        assert_eq!(
            classes("blk_update_request: I/O error, dev vda, sector 12").len(),
            1
        );
    }
}
