//! Triage: which kind of problem made a test fail, and a signature of it that is the same
//! across tests, machines, arches and runs when the cause is the same.
//!
//! [`classify`] looks at the error message and the console/journal excerpt; the classes are
//! tried in this order and the first that matches wins:
//!
//! 1. [`FailureClass::Kernel`]: `Kernel panic`, `Oops`, `BUG:`, `WARNING: CPU: N PID: N`, ...
//!    (a panic explains a timeout, so it beats the harness's timeout words);
//! 2. [`FailureClass::Timeout`]: the harness's own words, `test timed out after ...` (see
//!    [`timeout_message`]) or `exceeded its timeout`;
//! 3. [`FailureClass::Selinux`]: `avc:  denied`;
//! 4. [`FailureClass::Seccomp`]: `audit: type=1326`, `seccomp`, `SIGSYS`, runc's
//!    `operation not permitted`;
//! 5. [`FailureClass::Etcd`]: `etcdserver:`, `etcdctl`, `rafthttp`, etcd's own error log lines,
//!    `context deadline exceeded` next to an etcd endpoint;
//! 6. [`FailureClass::Docker`]: `docker:`, `Error response from daemon`, `OCI runtime`,
//!    containerd/dockerd error lines;
//! 7. [`FailureClass::Systemd`]: `Failed to start`, `Dependency failed`, `entered failed state`,
//!    `failed units` (a unit that fails is systemd's report, even when the unit is
//!    `etcd-member.service`);
//! 8. [`FailureClass::Harness`]: `ssh: `, `connection refused`, `never reached SSH`,
//!    `machine did not boot`, `handshake`, `platform error`, `QEMU exited`, ...;
//! 9. else [`FailureClass::Assertion`].
//!
//! [`decisive_line`] is the line that decided, and [`signature`] masks its volatile parts.

use std::net::Ipv6Addr;
use std::sync::LazyLock;
use std::time::Duration;

use regex::{Captures, Regex};

use crate::model::{Failure, FailureClass};

/// The longest signature, in characters.
pub const SIGNATURE_MAX: usize = 200;

/// The message the harness should use when a test runs out of time, so triage files it under
/// [`FailureClass::Timeout`]: `test timed out after 600s`.
pub fn timeout_message(limit: Duration) -> String {
    format!("test timed out after {}s", limit.as_secs())
}

/// One pattern: a regex, and optionally a second one the same line must also match.
struct Pattern {
    re: Regex,
    and: Option<Regex>,
}

impl Pattern {
    fn matches(&self, line: &str) -> bool {
        self.re.is_match(line) && self.and.as_ref().is_none_or(|a| a.is_match(line))
    }
}

/// A class and its patterns in tiers: the decisive line is the first line matching the first
/// tier that matches anywhere (so `Failed to start X` beats an earlier `Main process exited`).
struct Rule {
    class: FailureClass,
    tiers: Vec<Vec<Pattern>>,
}

fn p(re: &str) -> Pattern {
    Pattern {
        re: Regex::new(re).expect("valid triage regex"),
        and: None,
    }
}

fn p_and(re: &str, and: &str) -> Pattern {
    Pattern {
        re: Regex::new(re).expect("valid triage regex"),
        and: Some(Regex::new(and).expect("valid triage regex")),
    }
}

static RULES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    vec![
        Rule {
            class: FailureClass::Kernel,
            tiers: vec![vec![
                p(r"Kernel panic - not syncing"),
                p(r"\bBUG: "),
                p(r"\bkernel BUG at\b"),
                p(r"\bOops(?::| -) "),
                p(r"\bWARNING: CPU: \d+ PID: \d+"),
                p(r"\bgeneral protection fault\b"),
                p(r"\bINFO: task \S+ blocked for more than \d+ seconds"),
            ]],
        },
        Rule {
            class: FailureClass::Timeout,
            tiers: vec![vec![
                p(r"(?i)\btest (?:\S+ )?timed out after\b"),
                p(r"(?i)\bexceeded (?:its |the )?(?:test )?timeout\b"),
            ]],
        },
        Rule {
            class: FailureClass::Selinux,
            tiers: vec![vec![p(r"\bavc:\s+denied\b")]],
        },
        Rule {
            class: FailureClass::Seccomp,
            tiers: vec![vec![
                p(r"\baudit: type=1326\b"),
                p(r"\btype=SECCOMP\b"),
                p(r"(?i)\bseccomp\b"),
                p(r"\bSIGSYS\b"),
                p_and(r"(?i)operation not permitted", r"(?i)\brunc\b"),
            ]],
        },
        Rule {
            class: FailureClass::Etcd,
            tiers: vec![vec![
                p(r"\betcdserver: "),
                p(r"\betcdctl\b"),
                p(r"\brafthttp\b"),
                p_and(
                    r"\betcd(?:-member)?(?:\[\d+\])?: ",
                    r#"(?i)"level":"(?:error|warn|fatal|panic)"|\blevel=(?:error|warning|fatal)\b|\s[EWCF] \| |\berror\b"#,
                ),
                p_and(
                    r"context deadline exceeded",
                    r"(?i)etcd|clientv3|:2379\b|:2380\b",
                ),
            ]],
        },
        Rule {
            class: FailureClass::Docker,
            tiers: vec![vec![
                p(r"\bdocker: "),
                p(r"Error response from daemon"),
                p(r"\bOCI runtime\b"),
                p(r"containerd\.sock\b"),
                p(r"\bcontainerd: "),
                p_and(
                    r"\b(?:containerd|dockerd)(?:\[\d+\])?: ",
                    r"\blevel=(?:error|fatal)\b",
                ),
            ]],
        },
        Rule {
            class: FailureClass::Systemd,
            tiers: vec![
                vec![p(r"\bFailed to start "), p(r"\bDependency failed for ")],
                vec![
                    p(r"\bentered failed state\b"),
                    p(r"\bFailed with result '"),
                    p(r"(?i)\bfailed units?\b"),
                ],
            ],
        },
        Rule {
            class: FailureClass::Harness,
            tiers: vec![vec![
                p(r"\bssh: "),
                p(r"(?i)\bconnection refused\b"),
                p(r"(?i)\bno SSH\b"),
                p(r"(?i)\bnever reached SSH\b"),
                p(r"(?i)\bmachine did not boot\b"),
                p(r"(?i)\bhandshake\b"),
                p(r"(?i)\bplatform error\b"),
                p(r"(?i)\bQEMU exited\b"),
            ]],
        },
    ]
});

/// The class and the deciding line of `text`.
fn analyze(text: &str) -> (FailureClass, &str) {
    for rule in RULES.iter() {
        for tier in &rule.tiers {
            if let Some(line) = text
                .lines()
                .find(|line| tier.iter().any(|pat| pat.matches(line)))
            {
                return (rule.class, line.trim());
            }
        }
    }
    let first = text.lines().map(str::trim).find(|l| !l.is_empty());
    (FailureClass::Assertion, first.unwrap_or(""))
}

/// The class of a failure from its message and excerpt (see the module docs for the order).
pub fn classify(text: &str) -> FailureClass {
    analyze(text).0
}

/// The line that decides the class: the panic line, the AVC line, the `Failed to start X`
/// line, ...; for an assertion, the first non-empty line. Trimmed.
pub fn decisive_line(text: &str) -> &str {
    analyze(text).1
}

/// The class and signature of a failure: `message` (the error chain) followed by `excerpt`
/// (console/journal lines) is classified, and its decisive line masked.
pub fn triage(message: &str, excerpt: &str) -> (FailureClass, String) {
    let text = join_text(message, excerpt);
    let (class, line) = analyze(&text);
    (class, signature(line))
}

/// A complete [`Failure`] from an error message and an excerpt: classified, signed, with the
/// first non-empty line of `message` as the one-line message.
pub fn failure(message: &str, excerpt: &str) -> Failure {
    let (class, signature) = triage(message, excerpt);
    let one_line = message
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .to_string();
    Failure {
        class,
        signature,
        message: one_line,
        excerpt: excerpt.to_string(),
    }
}

fn join_text(message: &str, excerpt: &str) -> String {
    if excerpt.is_empty() {
        message.to_string()
    } else if message.is_empty() {
        excerpt.to_string()
    } else {
        format!("{message}\n{excerpt}")
    }
}

macro_rules! re {
    ($name:ident, $pat:expr) => {
        static $name: LazyLock<Regex> =
            LazyLock::new(|| Regex::new($pat).expect("valid signature regex"));
    };
}

// Leading stamps are dropped; the message after them is what identifies the cause.
re!(LEAD_KERNEL, r"^\s*(?:<\d+>)?\[\s*\d+\.\d+\]\s*");
re!(
    LEAD_JOURNAL,
    r"^\s*(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) +\d{1,2} \d{2}:\d{2}:\d{2}(?:\.\d+)? \S+ "
);
re!(
    LEAD_ISO,
    r"^\s*\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?\s+"
);
re!(
    UUID,
    r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"
);
re!(
    ISO_TS,
    r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?"
);
re!(
    JOURNAL_TS,
    r"\b(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) +\d{1,2} \d{2}:\d{2}:\d{2}(?:\.\d+)?"
);
re!(KERNEL_TS, r"\[\s*\d+\.\d+\]");
re!(CLOCK, r"\b\d{2}:\d{2}:\d{2}(?:\.\d+)?\b");
re!(
    TEMP_PATH,
    r#"(?:[^\s"'=:,;()\[\]]*_(?:kola|bogie)_temp|(?:/var)?/tmp)(?:/[^\s"':,;()\[\]]*)?"#
);
re!(IPV4, r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?\b");
re!(
    IPV6_BRACKET,
    r"\[[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*\](?::\d{1,5})?"
);
re!(IP_HOST, r"\bip-\d{1,3}-\d{1,3}-\d{1,3}-\d{1,3}\b");
re!(MACHINE, r"\b(?:bogie-[0-9a-f]{4,}|qemu-\d+)\b");
re!(HEX_0X, r"\b0[xX][0-9a-fA-F]+\b");
re!(DURATION, r"\b(?:\d+(?:\.\d+)?(?:h|min|ms|us|µs|ns|m|s))+\b");
re!(HEX_WORD, r"\b[0-9a-fA-F]{4,}\b");
re!(NUMBER, r"\b\d+\b");
re!(SPACES, r"\s+");

/// Masks the volatile parts of a line so the same cause gives the same string everywhere:
/// leading timestamps are dropped (kernel `[   12.345678]`, journal `Nov 21 02:47:01 host`,
/// ISO), and UUIDs become `<UUID>`, other timestamps `<TS>`, temp paths (`/tmp/...`,
/// `/var/tmp/...`, `_kola_temp/...`) `<PATH>`, IPv4/IPv6 addresses with their ports `<IP>`,
/// `ip-10-0-0-1` hostnames `<HOST>`, machine names (`bogie-<hex>`, `qemu-<n>`) `<MACHINE>`,
/// `0x..` and long hex `<HEX>`, durations (`12.5s`, `300ms`) `<DUR>`, other numbers (PIDs,
/// counts, ports) `<N>`. Whitespace is collapsed and the result capped at [`SIGNATURE_MAX`]
/// characters.
pub fn signature(line: &str) -> String {
    let mut s = line.to_string();
    // Leading stamps, possibly stacked (`Nov 21 02:47:01 host kernel: [ 5.1] BUG: ...`).
    loop {
        let before = s.len();
        for re in [&*LEAD_KERNEL, &*LEAD_JOURNAL, &*LEAD_ISO] {
            s = re.replace(&s, "").into_owned();
        }
        if let Some(rest) = s.strip_prefix("kernel: ") {
            s = rest.to_string();
        }
        if s.len() == before {
            break;
        }
    }
    s = UUID.replace_all(&s, "<UUID>").into_owned();
    s = ISO_TS.replace_all(&s, "<TS>").into_owned();
    s = JOURNAL_TS.replace_all(&s, "<TS>").into_owned();
    s = KERNEL_TS.replace_all(&s, "<TS>").into_owned();
    s = TEMP_PATH.replace_all(&s, "<PATH>").into_owned();
    s = IPV4.replace_all(&s, "<IP>").into_owned();
    s = IPV6_BRACKET
        .replace_all(&s, |c: &Captures| {
            let inner = c[0].trim_start_matches('[');
            let inner = &inner[..inner.find(']').unwrap_or(inner.len())];
            if inner.parse::<Ipv6Addr>().is_ok() {
                "<IP>".to_string()
            } else {
                c[0].to_string()
            }
        })
        .into_owned();
    s = mask_bare_ipv6(&s);
    s = CLOCK.replace_all(&s, "<TS>").into_owned();
    s = IP_HOST.replace_all(&s, "<HOST>").into_owned();
    s = MACHINE.replace_all(&s, "<MACHINE>").into_owned();
    s = HEX_0X.replace_all(&s, "<HEX>").into_owned();
    s = DURATION.replace_all(&s, "<DUR>").into_owned();
    s = HEX_WORD
        .replace_all(&s, |c: &Captures| {
            let w = &c[0];
            if w.bytes().all(|b| b.is_ascii_digit()) {
                "<N>".to_string()
            } else if w.bytes().any(|b| b.is_ascii_digit()) || w.len() >= 8 {
                "<HEX>".to_string()
            } else {
                w.to_string() // an English word made of a-f: "dead", "faded"
            }
        })
        .into_owned();
    s = NUMBER.replace_all(&s, "<N>").into_owned();
    s = SPACES.replace_all(s.trim(), " ").into_owned();
    if s.chars().count() > SIGNATURE_MAX {
        s = s.chars().take(SIGNATURE_MAX).collect();
    }
    s
}

/// Replaces bare IPv6 addresses (`fe80::1`, `2001:db8::2`) by `<IP>`: runs of hex digits and
/// colons that stand alone (no word character or colon next to them) and parse as an address.
fn mask_bare_ipv6(s: &str) -> String {
    let is_part = |c: char| c.is_ascii_hexdigit() || c == ':';
    let mut out = String::with_capacity(s.len());
    let chars: Vec<(usize, char)> = s.char_indices().collect();
    let mut i = 0;
    while i < chars.len() {
        let (start, c) = chars[i];
        let prev_ok = i == 0 || !(chars[i - 1].1.is_alphanumeric() || chars[i - 1].1 == '_');
        if is_part(c) && prev_ok {
            let mut j = i;
            while j < chars.len() && is_part(chars[j].1) {
                j += 1;
            }
            let end = chars.get(j).map_or(s.len(), |&(e, _)| e);
            let next_ok = chars
                .get(j)
                .is_none_or(|&(_, n)| !(n.is_alphanumeric() || n == '_'));
            let token = &s[start..end];
            // A trailing colon is punctuation ("fe80::1: no route"), not part of the address.
            let trimmed = token.strip_suffix(':').filter(|t| !t.ends_with(':'));
            let candidate = trimmed.unwrap_or(token);
            if next_ok
                && candidate.matches(':').count() >= 2
                && candidate.parse::<Ipv6Addr>().is_ok()
            {
                out.push_str("<IP>");
                if trimmed.is_some() {
                    out.push(':');
                }
                i = j;
                continue;
            }
            out.push_str(token);
            i = j;
            continue;
        }
        out.push(c);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PANIC: &str = "[    5.123456] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\n\
        [    5.124000] CPU: 0 PID: 1 Comm: swapper/0 Not tainted 6.6.60-flatcar #1\n\
        [    5.125000] Call Trace:";

    const OOPS: &str =
        "[   42.000001] BUG: unable to handle page fault for address: ffff8880deadbeef\n\
        [   42.000002] #PF: supervisor write access in kernel mode\n\
        [   42.000003] Oops: 0002 [#1] SMP PTI\n\
        [   42.000004] CPU: 1 PID: 345 Comm: kworker/1:2 Not tainted 6.6.60-flatcar #1";

    const WARN: &str = "[   12.345678] ------------[ cut here ]------------\n\
        [   12.345679] WARNING: CPU: 1 PID: 345 at kernel/workqueue.c:3066 __flush_work+0x2c8/0x2e0\n\
        [   12.345680] Modules linked in: overlay xt_conntrack";

    const AVC: &str = "Nov 21 02:47:01 localhost kernel: audit: type=1400 audit(1700000000.123:45): avc:  denied  { read } for  pid=1234 comm=\"dockerd\" name=\"config.json\" dev=\"vda9\" ino=12345 scontext=system_u:system_r:container_runtime_t:s0 tcontext=system_u:object_r:unlabeled_t:s0 tclass=file permissive=0";

    const SECCOMP: &str = "[  100.000000] audit: type=1326 audit(1700000001.456:77): auid=4294967295 uid=0 gid=0 ses=4294967295 pid=2345 comm=\"unshare\" exe=\"/usr/bin/unshare\" sig=31 arch=c000003e syscall=272 compat=0 ip=0x7f1234567890 code=0x0";

    const UNIT: &str = "Nov 21 02:47:01 localhost etcd-member.service: Main process exited, code=exited, status=1/FAILURE\n\
        Nov 21 02:47:01 localhost systemd[1]: etcd-member.service: Failed with result 'exit-code'.\n\
        Nov 21 02:47:01 localhost systemd[1]: Failed to start etcd-member.service - etcd (System Application Container).";

    const ETCD_TIMEOUT: &str = "Error: etcdserver: request timed out";

    const ETCD_JSON: &str = r#"{"level":"warn","ts":"2026-11-21T02:47:01.123Z","caller":"clientv3/retry_interceptor.go:62","msg":"retrying of unary invoker failed","target":"endpoint://client-abc/127.0.0.1:2379","attempt":0,"error":"rpc error: code = DeadlineExceeded desc = context deadline exceeded"}"#;

    const SSH: &str =
        "ssh: waiting for 127.0.0.1:34567: timed out after 300s: connection reset by peer";

    #[test]
    fn kernel_panic() {
        let msg = "machine 3f2a: console check failed";
        let (class, sig) = triage(msg, PANIC);
        assert_eq!(class, FailureClass::Kernel);
        assert_eq!(
            decisive_line(&format!("{msg}\n{PANIC}")),
            "[    5.123456] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)"
        );
        assert_eq!(
            sig,
            "Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(<N>,<N>)"
        );
    }

    #[test]
    fn oops_decides_on_the_bug_line() {
        assert_eq!(classify(OOPS), FailureClass::Kernel);
        assert!(decisive_line(OOPS)
            .ends_with("BUG: unable to handle page fault for address: ffff8880deadbeef"));
        assert_eq!(
            signature(decisive_line(OOPS)),
            "BUG: unable to handle page fault for address: <HEX>"
        );
        // The Oops line alone is kernel too.
        assert_eq!(classify("Oops: 0002 [#1] SMP PTI"), FailureClass::Kernel);
        // arm64 spelling
        assert_eq!(
            classify("[ 3.1] Internal error: Oops: 0000000096000004 [#1] PREEMPT SMP"),
            FailureClass::Kernel
        );
    }

    #[test]
    fn kernel_warning() {
        assert_eq!(classify(WARN), FailureClass::Kernel);
        assert_eq!(
            signature(decisive_line(WARN)),
            "WARNING: CPU: <N> PID: <N> at kernel/workqueue.c:<N> __flush_work+<HEX>/<HEX>"
        );
    }

    #[test]
    fn avc_denial() {
        let (class, sig) = triage("found SELinux denials", AVC);
        assert_eq!(class, FailureClass::Selinux);
        assert!(sig.starts_with("audit: type=<N> audit(<N>.<N>:<N>): avc: denied { read } for pid=<N> comm=\"dockerd\""), "{sig}");
        assert!(!sig.contains("localhost"), "journal host dropped: {sig}");
        // One space after "avc:" too.
        assert_eq!(
            classify("avc: denied { write } for pid=9"),
            FailureClass::Selinux
        );
    }

    #[test]
    fn seccomp_kill() {
        let (class, sig) = triage("process killed", SECCOMP);
        assert_eq!(class, FailureClass::Seccomp);
        assert!(
            sig.contains(
                "comm=\"unshare\" exe=\"/usr/bin/unshare\" sig=<N> arch=<HEX> syscall=<N>"
            ),
            "{sig}"
        );
        assert!(sig.contains("ip=<HEX> code=<HEX>"), "{sig}");
        assert_eq!(
            classify("docker: Error response from daemon: failed to create task: OCI runtime create failed: runc create failed: unshare: operation not permitted"),
            FailureClass::Seccomp
        );
        assert_eq!(classify("bad system call (SIGSYS)"), FailureClass::Seccomp);
    }

    #[test]
    fn failed_unit_is_systemd_and_names_the_unit() {
        let (class, sig) = triage("machine has failed units", UNIT);
        assert_eq!(class, FailureClass::Systemd);
        assert_eq!(
            sig,
            "systemd[<N>]: Failed to start etcd-member.service - etcd (System Application Container)."
        );
        let other = "Dependency failed for docker.service.";
        assert_eq!(classify(other), FailureClass::Systemd);
        assert_eq!(
            classify("unit foo.service entered failed state"),
            FailureClass::Systemd
        );
    }

    #[test]
    fn etcd_errors() {
        assert_eq!(classify(ETCD_TIMEOUT), FailureClass::Etcd);
        assert_eq!(
            signature(ETCD_TIMEOUT),
            "Error: etcdserver: request timed out"
        );
        let (class, sig) = triage("etcdctl put failed", ETCD_JSON);
        assert_eq!(class, FailureClass::Etcd);
        // "etcdctl" in the message decides.
        assert_eq!(sig, "etcdctl put failed");
        // The JSON line alone: the deadline next to an etcd endpoint.
        assert_eq!(classify(ETCD_JSON), FailureClass::Etcd);
        let sig = signature(ETCD_JSON);
        assert!(sig.contains(r#""ts":"<TS>""#), "{sig}");
        assert!(sig.contains("endpoint://client-abc/<IP>"), "{sig}");
        // A deadline elsewhere is not etcd.
        assert_ne!(classify("context deadline exceeded"), FailureClass::Etcd);
        assert_eq!(
            classify("Nov 21 02:47:01 h etcd-member[812]: 2026-11-21 02:47:01.1 E | rafthttp: failed to dial"),
            FailureClass::Etcd
        );
    }

    #[test]
    fn docker_errors() {
        assert_eq!(
            classify("docker: Error response from daemon: pull access denied for busybx."),
            FailureClass::Docker
        );
        assert_eq!(
            classify("containerd[812]: time=\"2026-11-21T02:47:01Z\" level=error msg=\"failed to load plugin\""),
            FailureClass::Docker
        );
        assert_eq!(
            classify("containerd[812]: time=\"2026-11-21T02:47:01Z\" level=info msg=\"starting\""),
            FailureClass::Assertion
        );
    }

    #[test]
    fn ssh_timeout_is_harness() {
        let (class, sig) = triage(SSH, "");
        assert_eq!(class, FailureClass::Harness);
        assert_eq!(
            sig,
            "ssh: waiting for <IP>: timed out after <DUR>: connection reset by peer"
        );
        assert_eq!(
            classify("machine did not boot: QEMU exited with status 1"),
            FailureClass::Harness
        );
    }

    #[test]
    fn harness_timeout_words() {
        let msg = timeout_message(Duration::from_secs(600));
        assert_eq!(msg, "test timed out after 600s");
        assert_eq!(classify(&msg), FailureClass::Timeout);
        // Even with SELinux noise in the excerpt.
        assert_eq!(triage(&msg, AVC).0, FailureClass::Timeout);
        // But a panic explains the timeout.
        assert_eq!(triage(&msg, PANIC).0, FailureClass::Kernel);
    }

    #[test]
    fn assertion_is_the_first_nonempty_line() {
        let text = "\n  expected \"active\", got \"inactive\" for unit foo.service  \nmore";
        assert_eq!(classify(text), FailureClass::Assertion);
        assert_eq!(
            decisive_line(text),
            "expected \"active\", got \"inactive\" for unit foo.service"
        );
        assert_eq!(decisive_line(""), "");
    }

    #[test]
    fn volatile_parts_mask_to_one_signature() {
        let a = "Nov 21 02:47:01 bogie-3fa9c2 kola[1234]: mount /tmp/kola-abc123/disk.img at \
                 10.0.2.15:22 failed after 12.5s (id 6f1c6b2e-5d1a-4c33-9a6e-1b2c3d4e5f60, \
                 host ip-10-0-0-1, machine qemu-3, fe80::5054:ff:fe12:3456, pid=1234, \
                 _kola_temp/qemu-2026-11-21-0247-77/cl.basic/console.txt)";
        let b = "Dec  2 13:01:59 bogie-0b77e1 kola[99]: mount /tmp/kola-zzz999/disk.img at \
                 192.168.122.7:2222 failed after 300ms (id 0a1b2c3d-0000-4c33-9a6e-abcdefabcdef, \
                 host ip-172-31-5-200, machine qemu-12, 2001:db8::1, pid=7, \
                 _kola_temp/qemu-2026-12-02-1301-5/cl.basic/console.txt)";
        let sa = signature(a);
        assert_eq!(sa, signature(b));
        assert_eq!(
            sa,
            "kola[<N>]: mount <PATH> at <IP> failed after <DUR> (id <UUID>, host <HOST>, \
             machine <MACHINE>, <IP>, pid=<N>, <PATH>)"
        );
    }

    #[test]
    fn different_causes_differ() {
        let sigs = [
            PANIC,
            OOPS,
            WARN,
            AVC,
            SECCOMP,
            UNIT,
            ETCD_TIMEOUT,
            ETCD_JSON,
            SSH,
        ]
        .map(|t| signature(decisive_line(t)));
        for (i, a) in sigs.iter().enumerate() {
            for b in &sigs[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_ne!(
            signature("Failed to start docker.service"),
            signature("Failed to start containerd.service")
        );
    }

    #[test]
    fn words_and_names_survive() {
        assert_eq!(
            signature("Dead symbolic links found: [/usr/lib64/python3.11/x.egg-info]"),
            "Dead symbolic links found: [/usr/lib64/python3.<N>/x.egg-info]"
        );
        assert_eq!(
            signature("std::vector at x86_64 ext4 vda9"),
            "std::vector at x86_64 ext4 vda9"
        );
        assert_eq!(signature("got [::1]:2379 and [12]"), "got <IP> and [<N>]");
        let long = "x ".repeat(500);
        assert_eq!(signature(&long).chars().count(), SIGNATURE_MAX);
    }

    #[test]
    fn failure_helper_fills_every_field() {
        let f = failure(
            "ssh: handshake failed\nwhile running cl.basic",
            "console tail",
        );
        assert_eq!(f.class, FailureClass::Harness);
        assert_eq!(f.message, "ssh: handshake failed");
        assert_eq!(f.signature, "ssh: handshake failed");
        assert_eq!(f.excerpt, "console tail");
    }
}
