//! The machine's side of an external test: the executable, its data and the systemd unit
//! go over in one tar stream; the unit is started and watched over SSH until it ends or
//! asks for a reboot through autopkgtest's `/tmp/autopkgtest-reboot MARK` (or
//! `/tmp/autopkgtest-reboot-prepare MARK`), after which the machine reboots, the boot id
//! must change, and the unit starts again with `AUTOPKGTEST_REBOOT_MARK=MARK`.
//!
//! The reboot helpers hand the mark over through a file under [`STATE_DIR`] and wait for
//! the harness to acknowledge it, so the mark is safe on this side before the machine goes
//! down. The unit's output (stdout and stderr, by its syslog identifier) is read from the
//! journal after each boot and goes into the test's output; a failure names the test file,
//! how it ended and the last line it wrote.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail};

use super::tar::Tar;
use crate::cluster::TestCluster;
use crate::failure::HarnessError;
use crate::machine::{wait_settled, TestMachine};
use crate::text::shell_quote;

/// What the test body needs to run one external test on its machine.
#[derive(Debug, Clone)]
pub struct ExternalTest {
    /// The test's name (`KOLA_TEST`).
    pub name: String,
    /// The executable on this host, as found (`DIR/tests/kola/...`).
    pub executable: PathBuf,
    /// Data directories copied to [`ExternalTest::data_dest`], later ones over earlier:
    /// the shared `tests/kola/data`, then the test's own `data`.
    pub data: Vec<PathBuf>,
    /// The systemd unit it runs as (`KOLA_UNIT`).
    pub unit: String,
    /// `KOLA_EXT_DATA` on the machine.
    pub data_dest: String,
    /// Whether it may ask for reboots (exclusive tests only, as in kola).
    pub reboots: bool,
}

/// Where the executables go on the machine.
pub(crate) const BIN_DIR: &str = "/var/opt/kola/bin";
/// Where the reboot helpers and the harness talk (cleared by every boot).
pub(crate) const STATE_DIR: &str = "/run/bogie-ext";
/// How often the unit is looked at.
const POLL: Duration = Duration::from_secs(1);
/// How many lines of output a failure message carries.
const TAIL: usize = 60;

/// The unit's name without `.service` (also its syslog identifier).
fn unit_base(spec: &ExternalTest) -> &str {
    spec.unit.trim_end_matches(".service")
}

fn exe_name(spec: &ExternalTest) -> String {
    spec.executable
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Where the executable is on the machine.
fn remote_exe(spec: &ExternalTest) -> String {
    format!("{BIN_DIR}/{}-{}", unit_base(spec), exe_name(spec))
}

/// A value in a double-quoted systemd setting (`%` and `$` are systemd's own).
fn systemd_quote(s: &str, exec: bool) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '%' => out.push_str("%%"),
            '$' if exec => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The unit the test runs as (kola's, with bogie's paths).
pub(crate) fn unit_file(spec: &ExternalTest) -> String {
    let env = |k: &str, v: &str| {
        format!(
            "Environment={}\n",
            systemd_quote(&format!("{k}={v}"), false)
        )
    };
    format!(
        "[Unit]\nDescription=bogie external test {name}\n\n[Service]\n\
         RemainAfterExit=yes\nEnvironmentFile=-/run/{base}-env\n{}{}{}{}\
         SyslogIdentifier={base}\nExecStart={exec}\n",
        env("KOLA_UNIT", &spec.unit),
        env("KOLA_TEST", &spec.name),
        env("KOLA_TEST_EXE", &exe_name(spec)),
        env("KOLA_EXT_DATA", &spec.data_dest),
        name = spec.name,
        base = unit_base(spec),
        exec = systemd_quote(&remote_exe(spec), true),
    )
}

/// `/tmp/autopkgtest-reboot-prepare` and `/tmp/autopkgtest-reboot`.
pub(crate) fn helpers(reboots: bool) -> (String, String) {
    if !reboots {
        let refuse = "#!/bin/sh\n# Written by bogie for an external test.\n\
            echo \"$0: reboots are not supported in non-exclusive tests (exclusive: false shares the machine)\" >&2\n\
            exit 1\n"
            .to_string();
        return (refuse.clone(), refuse);
    }
    let prepare = format!(
        "#!/bin/sh\n\
         # Written by bogie: autopkgtest's reboot interface. Hands MARK to the harness and\n\
         # returns once the harness has it; the test then reboots the machine itself.\n\
         set -eu\n\
         if [ \"$#\" -ne 1 ] || [ -z \"$1\" ]; then echo \"usage: $0 MARK\" >&2; exit 2; fi\n\
         printf '%s' \"$1\" > {STATE_DIR}/reboot-mark.new\n\
         mv {STATE_DIR}/reboot-mark.new {STATE_DIR}/reboot-mark\n\
         while [ ! -e {STATE_DIR}/reboot-ack ]; do sleep 0.2; done\n"
    );
    let reboot = "#!/bin/sh\n\
         # Written by bogie: autopkgtest's reboot interface. Hands MARK to the harness, then\n\
         # reboots; the test starts again with AUTOPKGTEST_REBOOT_MARK=MARK.\n\
         set -eu\n\
         /tmp/autopkgtest-reboot-prepare \"$@\"\n\
         systemctl reboot\n"
        .to_string();
    (prepare, reboot)
}

/// The files of every boot: the reboot helpers and the unit's environment file.
fn boot_files(t: &mut Tar, spec: &ExternalTest, mark: Option<&str>) {
    let (prepare, reboot) = helpers(spec.reboots);
    t.file("tmp/autopkgtest-reboot-prepare", prepare.as_bytes(), 0o755);
    t.file("tmp/autopkgtest-reboot", reboot.as_bytes(), 0o755);
    let env = mark
        .map(|m| format!("AUTOPKGTEST_REBOOT_MARK='{m}'\n"))
        .unwrap_or_default();
    t.file(
        &format!("run/{}-env", unit_base(spec)),
        env.as_bytes(),
        0o644,
    );
}

/// Everything the first boot needs: executable, unit, data, helpers.
fn install_archive(spec: &ExternalTest) -> anyhow::Result<Vec<u8>> {
    let exe = std::fs::read(&spec.executable)
        .map_err(|e| anyhow!("reading {}: {e}", spec.executable.display()))?;
    let mut t = Tar::new();
    t.file(remote_exe(spec).trim_start_matches('/'), &exe, 0o755);
    t.file(
        &format!("etc/systemd/system/{}", spec.unit),
        unit_file(spec).as_bytes(),
        0o644,
    );
    let dest = spec.data_dest.trim_start_matches('/');
    t.dir(dest, 0o755);
    for d in &spec.data {
        t.tree(d, dest)
            .map_err(|e| anyhow!("copying {}: {e}", d.display()))?;
    }
    boot_files(&mut t, spec, None);
    Ok(t.finish())
}

/// How the unit stands, from `systemctl show` (and the reboot request, if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum State {
    /// Still running.
    Running,
    /// Exited 0.
    Passed,
    /// Ended otherwise (how, in words).
    Failed(String),
    /// Asked for a reboot with this mark.
    Reboot(String),
}

/// The poll command: the reboot mark, then the unit's properties.
fn poll_command(unit: &str) -> String {
    format!(
        "f={STATE_DIR}/reboot-mark; if [ -e $f ]; then printf 'RebootMark=%s\\n' \"$(cat $f)\"; fi; \
         systemctl show -p ActiveState -p SubState -p Result -p ExecMainCode -p ExecMainStatus {unit}"
    )
}

fn signal_name(n: &str) -> &'static str {
    match n {
        "1" => "HUP",
        "2" => "INT",
        "3" => "QUIT",
        "6" => "ABRT",
        "9" => "KILL",
        "11" => "SEGV",
        "13" => "PIPE",
        "15" => "TERM",
        _ => "",
    }
}

/// Reads the poll command's output.
pub(crate) fn parse_state(text: &str) -> State {
    let mut props = std::collections::HashMap::new();
    for line in text.lines() {
        if let Some((k, v)) = line.split_once('=') {
            props.insert(k.trim(), v.trim_end());
        }
    }
    if let Some(m) = props.get("RebootMark") {
        return State::Reboot(m.to_string());
    }
    let get = |k: &str| props.get(k).copied().unwrap_or("");
    let status = get("ExecMainStatus");
    let killed = |n: &str| {
        let name = signal_name(n);
        if name.is_empty() {
            format!("killed by signal {n}")
        } else {
            format!("killed by signal {n} ({name})")
        }
    };
    let exited = |n: &str| match n {
        "203" => {
            "could not be executed (status 203/EXEC: no #! line, or its interpreter is missing?)"
                .to_string()
        }
        n => format!("exited with status {n}"),
    };
    match (get("ActiveState"), get("SubState")) {
        ("active", "exited") => match get("ExecMainCode") {
            "1" if status == "0" => State::Passed,
            "1" => State::Failed(exited(status)),
            "2" | "3" => State::Failed(killed(status)),
            c => State::Failed(format!("ended with code {c} and status {status}")),
        },
        ("failed", _) => match get("Result") {
            "exit-code" => State::Failed(exited(status)),
            "signal" | "core-dump" => State::Failed(killed(status)),
            "timeout" => State::Failed("was stopped by systemd's timeout".into()),
            r => State::Failed(format!("failed ({r})")),
        },
        ("inactive", _) => State::Failed("was stopped before it finished (inactive)".into()),
        _ => State::Running,
    }
}

/// Whether a mark can be passed on in the unit's environment file.
fn valid_mark(m: &str) -> bool {
    !m.is_empty() && !m.chars().any(|c| c.is_control() || c == '\'' || c == '\\')
}

/// The failure message: the file, how it ended, and its last line of output.
pub(crate) fn failure(file: &str, how: &str, output: &[String], boot: usize) -> String {
    let last = output
        .iter()
        .enumerate()
        .rev()
        .find(|(_, l)| !l.trim().is_empty());
    let at = if boot > 1 {
        format!(" (boot {boot})")
    } else {
        String::new()
    };
    match last {
        Some((i, l)) => format!(
            "{file} {how}{at} at line {} of its output: {}",
            i + 1,
            l.trim()
        ),
        None => format!("{file} {how}{at} (no output)"),
    }
}

/// Runs the test on the cluster's machine.
///
/// Long on purpose: it is autopkgtest's reboot protocol as one loop (copy, start, watch,
/// acknowledge a reboot mark, reboot, check the boot id, start again), and each step's
/// state (the mark, the boot id, the output read so far) carries into the next.
pub(crate) async fn run(c: TestCluster, spec: Arc<ExternalTest>) -> anyhow::Result<()> {
    let m = c.machine()?;
    let file = spec.executable.display().to_string();
    let unit = spec.unit.as_str();
    let mut archive = install_archive(&spec)?;
    let mut first = true;
    let mut mark: Option<String> = None;
    let mut boot = 1;
    loop {
        let boot_id = m.boot_id().await?;
        let clear_data = if first {
            format!("rm -rf {}; ", shell_quote(&spec.data_dest))
        } else {
            String::new()
        };
        let script = format!(
            "set -e; {clear_data}rm -rf {STATE_DIR}; mkdir -p {STATE_DIR}; tar -x -C / -f -; \
             systemctl daemon-reload; systemctl reset-failed {unit} 2>/dev/null || true; \
             systemctl start {unit} 2>&1 || true"
        );
        match &mark {
            None => c.log(format!("=== {file}: starting {unit}")),
            Some(m) => c.log(format!(
                "=== {file}: boot {boot}, starting {unit} with AUTOPKGTEST_REBOOT_MARK={m}"
            )),
        }
        let out = m
            .ssh_with_stdin(
                &format!("sudo sh -c {}", shell_quote(&script)),
                Some(&archive),
            )
            .await?;
        if !out.success() {
            bail!(
                "{file}: installing the test on {} failed: {}",
                m.id(),
                out.stderr_str()
            );
        }
        for l in out.stdout_str().lines() {
            c.log(format!("systemctl: {l}"));
        }
        let state = loop {
            let out = m.ssh(&poll_command(unit)).await?;
            match parse_state(&out.stdout_str()) {
                State::Running => tokio::time::sleep(POLL).await,
                s => break s,
            }
        };
        let output = output_lines(&m, &spec).await;
        for l in &output {
            c.log(l);
        }
        match state {
            State::Passed => {
                c.log(format!("=== {file}: exited 0"));
                return Ok(());
            }
            State::Running => unreachable!("the poll loop ends on a final state"),
            State::Failed(how) => {
                let mut msg = failure(&file, &how, &output, boot);
                msg.push_str(&format!("\n--- output of {} ({unit}):\n", spec.name));
                let skip = output.len().saturating_sub(TAIL);
                for l in &output[skip..] {
                    msg.push_str(l);
                    msg.push('\n');
                }
                let journal = unit_journal(&m, unit).await;
                c.log(format!("--- journal of {unit}:\n{}", journal.trim_end()));
                msg.push_str(&format!("--- journal of {unit}:\n"));
                for l in journal.lines().filter(|l| !is_unit_result_line(l)) {
                    msg.push_str(l);
                    msg.push('\n');
                }
                bail!(msg);
            }
            State::Reboot(new) => {
                if !spec.reboots {
                    bail!("{file} asked for a reboot (mark {new:?}), but non-exclusive tests may not reboot");
                }
                if !valid_mark(&new) {
                    bail!("{file} asked for a reboot with mark {new:?}: a mark may not contain quotes, backslashes or control characters");
                }
                c.log(format!("--- {file}: reboot requested with mark {new}"));
                m.must_ssh(&format!("sudo touch {STATE_DIR}/reboot-ack"))
                    .await?;
                wait_rebooted(&c, &m, &boot_id)
                    .await
                    .map_err(|e| {
                        anyhow!(HarnessError(format!(
                            "{file}: the machine did not come back from the reboot with mark {new}: {e:#}"
                        )))
                    })?;
                wait_settled(&m, m.bring_up.settle_timeout).await?;
                let mut t = Tar::new();
                boot_files(&mut t, &spec, Some(&new));
                archive = t.finish();
                mark = Some(new);
                first = false;
                boot += 1;
            }
        }
    }
}

/// Waits for the new boot; on QEMU, a machine that powers off instead fails at once.
async fn wait_rebooted(c: &TestCluster, m: &TestMachine, before: &str) -> anyhow::Result<()> {
    let local = matches!(c.env().platform.as_str(), "qemu" | "pxe");
    let stopped = async {
        if !local {
            return std::future::pending().await;
        }
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            if !m.platform_machine().is_running().await {
                return anyhow!("machine {} stopped instead of rebooting", m.id());
            }
        }
    };
    tokio::select! {
        r = m.wait_for_new_boot(before) => r,
        e = stopped => Err(e),
    }
}

/// The unit's output of this boot (by its syslog identifier).
async fn output_lines(m: &TestMachine, spec: &ExternalTest) -> Vec<String> {
    let cmd = format!(
        "sudo journalctl --sync 2>/dev/null; sudo journalctl -b -q --no-pager -o cat -t {}",
        unit_base(spec)
    );
    match m.ssh(&cmd).await {
        Ok(o) => o.stdout_str().lines().map(str::to_string).collect(),
        Err(e) => vec![format!("(could not read the output: {e:#})")],
    }
}

/// What systemd said about the unit in this boot.
async fn unit_journal(m: &TestMachine, unit: &str) -> String {
    let cmd = format!(
        "sudo journalctl -b -q --no-pager -o short-monotonic _PID=1 UNIT={unit} | tail -n 20"
    );
    match m.ssh(&cmd).await {
        Ok(o) => {
            let mut s = o.stdout_str();
            s.push('\n');
            s
        }
        Err(e) => format!("(could not read the journal: {e:#})\n"),
    }
}

/// systemd's lines on how the unit ended, which the failure's first line already says;
/// left in the failure, they would make triage class every failing external test as
/// `systemd`, all with one signature. They stay in the test's output.
fn is_unit_result_line(line: &str) -> bool {
    [
        "Failed with result '",
        "entered failed state",
        "Failed to start ",
    ]
    .iter()
    .any(|p| line.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn spec(unit: &str, reboots: bool) -> ExternalTest {
        ExternalTest {
            name: "ext.demo.100%".into(),
            executable: PathBuf::from("/src/demo/tests/kola/t$x"),
            data: vec![],
            unit: unit.into(),
            data_dest: "/var/opt/kola/extdata".into(),
            reboots,
        }
    }

    #[test]
    fn the_unit_sets_kolas_environment() {
        let u = unit_file(&spec("kola-runext.service", true));
        for line in [
            "Environment=\"KOLA_UNIT=kola-runext.service\"",
            "Environment=\"KOLA_TEST=ext.demo.100%%\"",
            "Environment=\"KOLA_TEST_EXE=t$x\"",
            "Environment=\"KOLA_EXT_DATA=/var/opt/kola/extdata\"",
            "EnvironmentFile=-/run/kola-runext-env",
            "SyslogIdentifier=kola-runext",
            "ExecStart=\"/var/opt/kola/bin/kola-runext-t$$x\"",
            "RemainAfterExit=yes",
        ] {
            assert!(u.lines().any(|l| l == line), "{line} missing from\n{u}");
        }
        let u = unit_file(&spec("kola-runext-3.service", false));
        assert!(u.contains("SyslogIdentifier=kola-runext-3\n"), "{u}");
    }

    #[test]
    fn unit_states_read_as_kola_reads_them() {
        let show = |a: &str, s: &str, r: &str, code: &str, st: &str| {
            parse_state(&format!(
                "ActiveState={a}\nSubState={s}\nResult={r}\nExecMainCode={code}\nExecMainStatus={st}\n"
            ))
        };
        assert_eq!(
            show("active", "running", "success", "0", "0"),
            State::Running
        );
        assert_eq!(
            show("activating", "start", "success", "0", "0"),
            State::Running
        );
        assert_eq!(show("active", "exited", "success", "1", "0"), State::Passed);
        assert_eq!(
            show("failed", "failed", "exit-code", "1", "3"),
            State::Failed("exited with status 3".into())
        );
        assert_eq!(
            show("failed", "failed", "signal", "2", "9"),
            State::Failed("killed by signal 9 (KILL)".into())
        );
        // systemd counts SIGTERM as a clean end; kola's tests do not.
        assert_eq!(
            show("active", "exited", "success", "2", "15"),
            State::Failed("killed by signal 15 (TERM)".into())
        );
        assert!(
            matches!(show("failed", "failed", "exit-code", "1", "203"), State::Failed(s) if s.contains("203/EXEC"))
        );
        assert!(matches!(
            show("inactive", "dead", "success", "0", "0"),
            State::Failed(_)
        ));
        assert_eq!(
            parse_state("RebootMark=mark=1\nActiveState=active\nSubState=running\n"),
            State::Reboot("mark=1".into())
        );
        assert!(valid_mark("mark1") && valid_mark("after update"));
        assert!(!valid_mark("") && !valid_mark("it's") && !valid_mark("a\nb"));
    }

    #[test]
    fn failures_name_the_file_and_the_last_line() {
        let out = vec![
            "+ echo hi".to_string(),
            "hi".into(),
            "+ false".into(),
            "".into(),
        ];
        assert_eq!(
            failure("tests/kola/t", "exited with status 1", &out, 1),
            "tests/kola/t exited with status 1 at line 3 of its output: + false"
        );
        assert_eq!(
            failure("t", "exited with status 1", &[], 2),
            "t exited with status 1 (boot 2) (no output)"
        );
    }

    #[test]
    fn helpers_refuse_reboots_in_shared_machines() {
        let (p, r) = helpers(false);
        assert!(p.contains("not supported in non-exclusive tests") && p == r);
        let (p, r) = helpers(true);
        assert!(p.contains("reboot-mark") && p.contains("reboot-ack"));
        assert!(
            r.contains("/tmp/autopkgtest-reboot-prepare \"$@\"") && r.contains("systemctl reboot")
        );
    }
}
