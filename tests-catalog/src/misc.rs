//! Small system tests: `coreos.auth.verify`, `cl.users.shells`.

use std::time::Duration;

use anyhow::{bail, Result};
use bogie_harness::ssh::SshSession;
use bogie_harness::{Test, TestCluster};

/// The tests of this module.
pub fn tests() -> Vec<Test> {
    vec![
        Test::new("coreos.auth.verify", auth_verify)
            .description("a wrong password does not log in over SSH")
            .platforms(&["qemu", "qemu-unpriv", "azure"])
            .distros(&["cl", "fcos", "rhcos"])
            .non_exclusive(),
        Test::new("cl.users.shells", users_shells)
            .description("only root and core have login shells; every other account's shell is nologin/false")
            .platforms(&["qemu", "qemu-unpriv", "azure"])
            .non_exclusive(),
    ]
}

async fn auth_verify(c: TestCluster) -> Result<()> {
    let m = c.machine()?;
    let addr = m.platform_machine().ssh_addr();
    for user in [m.user(), "root"] {
        if SshSession::password_accepted(addr, user, "asdf", Duration::from_secs(30)).await? {
            bail!("SSH accepted the wrong password \"asdf\" for {user}");
        }
    }
    Ok(())
}

/// Accounts that may have a real shell.
const LOGIN_USERS: &[&str] = &["root", "core", "sync", "shutdown", "halt"];

async fn users_shells(c: TestCluster) -> Result<()> {
    let m = c.machine()?;
    let passwd = m.must_ssh("getent passwd").await?;
    let mut bad = Vec::new();
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 {
            bail!("malformed passwd line {line:?}");
        }
        let (user, shell) = (f[0], f[6]);
        if LOGIN_USERS.contains(&user) {
            continue;
        }
        let ok = shell.ends_with("/nologin") || shell.ends_with("/false") || shell == "/bin/sync";
        if !ok {
            bad.push(format!("{user} ({shell})"));
        }
    }
    if !bad.is_empty() {
        bail!("accounts with a login shell: {}", bad.join(", "));
    }
    Ok(())
}
