//! The external platform through the harness, against fake SSH hosts on loopback: existing
//! hosts (the run's key installed and removed again), provisioning commands run locally and
//! on a management host, and the input errors.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bogie_harness::cluster::{BringUp, TestEnv};
use bogie_harness::runner::{run_attempt, AttemptContext, AttemptOutcome, KeepPolicy};
use bogie_harness::ssh::SshKey;
use bogie_harness::{Arch, ImageInfo, Platform, PlatformError, Test};
use bogie_platform_external::{ExternalOptions, ExternalPlatform, HostSpec};
use support::FakeHost;

fn image() -> ImageInfo {
    ImageInfo {
        path: "installed".into(),
        manifest: None,
        arch: None,
        version: None,
        provides: Default::default(),
        provides_from: Default::default(),
    }
}

fn me() -> String {
    let o = std::process::Command::new("id")
        .arg("-un")
        .output()
        .unwrap();
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

fn ctx(p: Arc<dyn Platform>, out: &std::path::Path) -> AttemptContext {
    AttemptContext {
        platform: p,
        key: SshKey::generate(),
        key_path: out.join("id"),
        out_dir: out.to_path_buf(),
        env: TestEnv {
            platform: "external".into(),
            arch: Arch::Amd64,
            image: Arc::new(image()),
            version: None,
            provides: Default::default(),
            internet: false,
        },
        default_timeout: Duration::from_secs(60),
        bring_up: BringUp {
            ssh_timeout: Duration::from_secs(20),
            ssh_attempt_timeout: Duration::from_secs(5),
            settle_timeout: Duration::from_secs(10),
            boot_watch: None,
        },
        keep: KeepPolicy::None,
        no_avc_checks: false,
        memory_mb: None,
        cancel: tokio_util::sync::CancellationToken::new(),
        extra_keys: vec![],
        ignition_version: bogie_harness::setup::IgnitionVersion::V3,
    }
}

fn login_key(dir: &std::path::Path) -> (SshKey, std::path::PathBuf) {
    let k = SshKey::generate();
    let p = dir.join("login_ed25519");
    k.write(&p).unwrap();
    (k, p)
}

fn passed(o: &AttemptOutcome) {
    assert!(
        o.attempt.passed,
        "the attempt failed: {:?}\noutput: {}",
        o.attempt.failure, o.attempt.output
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_hosts_get_the_run_key_for_the_test_and_lose_it_after() {
    let out = tempfile::tempdir().unwrap();
    let (login, login_path) = login_key(out.path());
    let a = FakeHost::start(login.public_openssh()).await;
    let b = FakeHost::start(login.public_openssh()).await;
    let user = me();
    let mut o = ExternalOptions::new(Arch::Amd64, image());
    o.hosts = vec![
        format!("{user}@127.0.0.1:{}", a.port).parse().unwrap(),
        HostSpec {
            user: None,
            host: "127.0.0.1".into(),
            port: b.port,
        },
    ];
    o.user = Some(user.clone());
    o.key = Some(login_path);
    let p = Arc::new(ExternalPlatform::new(o).unwrap());
    let c = ctx(p.clone(), out.path());
    let run_key = c.key.public_openssh().to_string();
    let (ha, hb) = (a.home.path().to_path_buf(), b.home.path().to_path_buf());
    let test = Test::new("external.two-hosts", move |cl| {
        let (ha, hb, run_key) = (ha.clone(), hb.clone(), run_key.clone());
        async move {
            let ms = cl.machines();
            anyhow::ensure!(ms.len() == 2, "two machines");
            for m in &ms {
                let o = m.ssh("echo hello from $HOME").await?;
                anyhow::ensure!(
                    o.success() && o.stdout_str().starts_with("hello from /"),
                    "{o:?}"
                );
            }
            // While the test runs, each host has the run's key, marked.
            for h in [&ha, &hb] {
                let keys = std::fs::read_to_string(h.join(".ssh/authorized_keys"))?;
                anyhow::ensure!(keys.contains(&run_key), "run key missing: {keys}");
                anyhow::ensure!(
                    keys.lines().filter(|l| l.contains(" bogie-")).count() == 1,
                    "{keys}"
                );
            }
            Ok(())
        }
    })
    .cluster_size(2)
    .default_user(&user);
    let outcome = run_attempt(&c, &test, 1, Box::new(|_| {})).await;
    passed(&outcome);
    // Afterwards only the login key is left.
    for h in [&a, &b] {
        assert_eq!(h.authorized_keys(), format!("{}\n", login.public_openssh()));
    }
    // The console artifact says there is none.
    let m = &outcome.attempt.machines[0];
    let console = std::fs::read_to_string(out.path().join(m.console.as_ref().unwrap())).unwrap();
    assert!(console.contains("no serial console"), "{console}");

    // Hosts are reused by the next test; a test needing more machines than hosts fails
    // as a harness problem.
    let again = Test::new("external.again", |cl| async move {
        cl.machine()?.must_ssh("true").await?;
        Ok(())
    })
    .default_user(&user);
    passed(&run_attempt(&c, &again, 1, Box::new(|_| {})).await);
    let too_big = Test::new("external.three", |_| async { Ok(()) })
        .cluster_size(3)
        .default_user(&user);
    let r = run_attempt(&c, &too_big, 1, Box::new(|_| {})).await;
    let f = r.attempt.failure.unwrap();
    assert_eq!(f.class, bogie_reports::FailureClass::Harness);
    assert!(
        f.message
            .contains("more machines than the 2 --external-host"),
        "{}",
        f.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_commands_boot_deprovision_and_stream_the_console() {
    let out = tempfile::tempdir().unwrap();
    let (login, login_path) = login_key(out.path());
    // The "machine" the commands provision: a fake host whose authorized_keys the commands
    // fill from the Ignition config in $USERDATA, as `flatcar-install -i` would.
    let node = FakeHost::start(login.public_openssh()).await;
    let node_keys = node.home.path().join(".ssh/authorized_keys");
    let log = out.path().join("provisioning.log");
    let provision = format!(
        "set -e\n\
         printf '%s' \"$USERDATA\" > \"$BOGIE_MACHINE_DIR/userdata\"\n\
         printf '%s' \"$USERDATA\" | grep -o 'ssh-ed25519 [A-Za-z0-9+/=]*' >> {keys}\n\
         echo \"provisioned $BOGIE_MACHINE_ID\" >> {log}\n\
         echo 'installing...'\n\
         echo 127.0.0.1:{port}\n",
        keys = node_keys.display(),
        log = log.display(),
        port = node.port
    );
    let user = me();
    for remote in [false, true] {
        let mgmt = FakeHost::start(login.public_openssh()).await;
        let mut o = ExternalOptions::new(Arch::Amd64, image());
        o.provisioning_cmds = Some(provision.clone());
        o.deprovisioning_cmds = Some(format!(
            "echo \"deprovisioned $IPADDR\" >> {}",
            log.display()
        ));
        o.serial_console_cmd = Some("echo \"serial console of $IPADDR\"; sleep 300".into());
        if remote {
            o.hosts = vec![format!("{user}@127.0.0.1:{}", mgmt.port).parse().unwrap()];
            o.key = Some(login_path.clone());
        }
        let p = Arc::new(ExternalPlatform::new(o).unwrap());
        let c = ctx(p, out.path());
        let test = Test::new("external.provisioned", |cl| async move {
            let m = cl.machine()?;
            let o = m.ssh("echo up").await?;
            anyhow::ensure!(o.stdout_str() == "up", "{o:?}");
            Ok(())
        })
        .default_user(&user);
        let outcome = run_attempt(&c, &test, 1, Box::new(|_| {})).await;
        passed(&outcome);
        let m = &outcome.attempt.machines[0];
        let mdir = out
            .path()
            .join(m.console.as_ref().unwrap())
            .parent()
            .unwrap()
            .to_path_buf();
        let ign = std::fs::read_to_string(mdir.join("ignition.json")).unwrap();
        if !remote {
            // $BOGIE_MACHINE_DIR is local: the config arrived unchanged.
            assert_eq!(std::fs::read_to_string(mdir.join("userdata")).unwrap(), ign);
        }
        let console = std::fs::read_to_string(mdir.join("console.txt")).unwrap();
        assert!(
            console.contains("serial console of 127.0.0.1"),
            "remote={remote}: {console:?}"
        );
        let l = std::fs::read_to_string(&log).unwrap();
        assert!(l.contains(&format!("provisioned {}", m.id)), "{l}");
        assert!(l.trim_end().ends_with("deprovisioned 127.0.0.1"), "{l}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_provisioning_is_a_harness_failure_with_its_stderr() {
    let out = tempfile::tempdir().unwrap();
    let mut o = ExternalOptions::new(Arch::Amd64, image());
    o.provisioning_cmds = Some("echo 'no free board in the lab' >&2; exit 3".into());
    o.provision_attempts = 2;
    let p = Arc::new(ExternalPlatform::new(o).unwrap());
    let c = ctx(p, out.path());
    let test = Test::new("external.noboard", |_| async { Ok(()) });
    let r = run_attempt(&c, &test, 1, Box::new(|_| {})).await;
    let f = r.attempt.failure.unwrap();
    assert_eq!(f.class, bogie_reports::FailureClass::Harness);
    assert!(
        f.message.contains("no free board in the lab"),
        "{}",
        f.message
    );
    let mut o = ExternalOptions::new(Arch::Amd64, image());
    o.provisioning_cmds = Some("echo done".into());
    o.provision_attempts = 1;
    let p = Arc::new(ExternalPlatform::new(o).unwrap());
    let r = run_attempt(&ctx(p, out.path()), &test, 1, Box::new(|_| {})).await;
    assert!(r
        .attempt
        .failure
        .unwrap()
        .message
        .contains("not an address"));
}

#[test]
fn input_errors() {
    let e = ExternalPlatform::new(ExternalOptions::new(Arch::Amd64, image())).unwrap_err();
    assert!(
        matches!(&e, PlatformError::Input(m) if m.contains("--external-host")),
        "{e}"
    );
    let mut o = ExternalOptions::new(Arch::Amd64, image());
    o.hosts = vec!["board:22".parse().unwrap()];
    let e = ExternalPlatform::new(o.clone()).unwrap_err();
    assert!(
        matches!(&e, PlatformError::Input(m) if m.contains("--external-key")),
        "{e}"
    );
    o.key = Some("/nonexistent/key".into());
    assert!(matches!(
        ExternalPlatform::new(o.clone()),
        Err(PlatformError::Input(_))
    ));
    o.provisioning_cmds = Some("true".into());
    o.hosts.push("other:22".parse().unwrap());
    let e = ExternalPlatform::new(o).unwrap_err();
    assert!(
        matches!(&e, PlatformError::Input(m) if m.contains("at most one")),
        "{e}"
    );
}
