//! Test fixtures: a realistic run report.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use crate::model::*;
use crate::triage;

pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 21, 2, 47, 1).unwrap()
}

pub fn info(id: &str, platform: &str, arch: &str) -> RunInfo {
    RunInfo {
        id: id.to_string(),
        platform: platform.to_string(),
        arch: arch.to_string(),
        version: "4799.0.0".to_string(),
        distro: "cl".to_string(),
        channel: "alpha".to_string(),
        image: "flatcar_production_image.bin".to_string(),
        shard: None,
        cmdline: vec!["bogie".into(), "run".into(), "cl.*".into()],
        started: t0(),
    }
}

pub fn passed(number: u32, secs: f64) -> Attempt {
    Attempt {
        number,
        passed: true,
        started: t0(),
        duration: Duration::from_secs_f64(secs),
        failure: None,
        output: String::new(),
        machines: vec![MachineArtifacts {
            console: Some(format!("cl.test/m{number}/console.txt").into()),
            ..MachineArtifacts::new(format!("m{number}"))
        }],
        subtests: vec![],
    }
}

pub fn failed(number: u32, secs: f64, message: &str, excerpt: &str) -> Attempt {
    Attempt {
        passed: false,
        failure: Some(triage::failure(message, excerpt)),
        output: format!("harness.go:88: {message}"),
        ..passed(number, secs)
    }
}

pub fn test(name: &str, status: Status, attempts: Vec<Attempt>) -> TestResult {
    TestResult {
        name: name.to_string(),
        status,
        skip_reason: None,
        platform: "qemu".to_string(),
        arch: "amd64".to_string(),
        attempts,
        tags: vec![],
    }
}

/// Why the missing tests of a killed run (in these fixtures) have no result.
pub const NOT_ENDED: &str = "no result: the run did not end";

/// A qemu/amd64 test that never reported.
pub fn not_run(name: &str) -> TestResult {
    TestResult::not_run(name, "qemu", "amd64", NOT_ENDED)
}

/// [`sample_report`] killed before `lost` reported: `lost` is not run, the run not ended.
pub fn killed_report(lost: &str) -> RunReport {
    let mut r = sample_report();
    r.tests.retain(|t| t.name != lost);
    r.tests.push(not_run(lost));
    r.end = RunEnd::NotEnded;
    r
}

pub const ETCD_EXCERPT: &str = "Nov 21 02:47:01 localhost etcd-member[812]: {\"level\":\"error\",\"msg\":\"etcdserver: request timed out\"}\nsecond line";
pub const SSH_MSG: &str =
    "ssh: waiting for 127.0.0.1:34567: timed out after 300s: connection reset by peer";
pub const AVC_EXCERPT: &str = "audit: type=1400 audit(1700000000.123:45): avc:  denied  { read } for  pid=1234 comm=\"dockerd\" name=\"config.json\" dev=\"vda9\" ino=12345 tclass=file permissive=0";

/// cl.basic pass, cl.etcd-member.discovery fail x2, coreos.ignition.once flaky,
/// cl.filesystem pass with subtests, cl.cloudinit.basic skip, coreos.selinux.enforce warn,
/// docker.base fail with a failed subtest.
pub fn sample_report() -> RunReport {
    let mut fs_attempt = passed(1, 20.25);
    fs_attempt.subtests = vec![
        SubtestResult {
            name: "cl.filesystem/deadlinks".into(),
            status: Status::Pass,
            duration: Duration::from_secs_f64(1.5),
            message: String::new(),
        },
        SubtestResult {
            name: "cl.filesystem/suid".into(),
            status: Status::Skip,
            duration: Duration::ZERO,
            message: "not on this image".into(),
        },
    ];
    let mut docker_attempt = failed(
        1,
        30.0,
        "docker: Error response from daemon: pull access denied for busybx",
        "",
    );
    docker_attempt.subtests = vec![
        SubtestResult {
            name: "docker.base/docker-info".into(),
            status: Status::Pass,
            duration: Duration::from_secs(2),
            message: String::new(),
        },
        SubtestResult {
            name: "docker.base/pull".into(),
            status: Status::Fail,
            duration: Duration::from_secs(3),
            message: "docker: Error response from daemon: pull access denied for busybx".into(),
        },
    ];
    let mut skipped = TestResult::skipped(
        "cl.cloudinit.basic",
        "qemu",
        "amd64",
        "not supported on qemu-unpriv",
    );
    skipped.tags = vec!["cloudinit".into()];
    RunReport {
        end: RunEnd::Completed,
        info: info("run-a", "qemu", "amd64"),
        tests: vec![
            test("cl.basic", Status::Pass, vec![passed(1, 93.5)]),
            test(
                "cl.etcd-member.discovery",
                Status::Fail,
                vec![
                    failed(1, 61.0, "etcdctl get failed: exit status 1", ETCD_EXCERPT),
                    failed(2, 62.0, "etcdctl get failed: exit status 1", ETCD_EXCERPT),
                ],
            ),
            test(
                "coreos.ignition.once",
                Status::Flaky,
                vec![failed(1, 300.0, SSH_MSG, ""), passed(2, 40.0)],
            ),
            test("cl.filesystem", Status::Pass, vec![fs_attempt]),
            skipped,
            test(
                "coreos.selinux.enforce",
                Status::Warn,
                vec![failed(1, 12.0, "found SELinux denials", AVC_EXCERPT)],
            ),
            test("docker.base", Status::Fail, vec![docker_attempt]),
        ],
    }
}
