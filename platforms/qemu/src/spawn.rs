//! Starting QEMU so that it never outlives bogie by accident.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not the process.
//! tokio's blocking-pool threads exit after being idle, so a QEMU forked from one would be
//! killed mid-test. Every QEMU is therefore forked from one dedicated thread that lives as
//! long as the process.

use std::io;
use std::os::unix::process::CommandExt;
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

use tokio::process::{Child, Command};
use tokio::sync::oneshot;

struct Request {
    cmd: Command,
    runtime: tokio::runtime::Handle,
    reply: oneshot::Sender<io::Result<Child>>,
}

static SPAWNER: OnceLock<Option<Mutex<mpsc::Sender<Request>>>> = OnceLock::new();

fn spawner() -> Option<&'static Mutex<mpsc::Sender<Request>>> {
    SPAWNER
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Request>();
            let started = std::thread::Builder::new()
                .name("bogie-qemu-spawner".into())
                .spawn(move || {
                    for mut req in rx {
                        // The child's SIGCHLD reaping registers with the caller's runtime.
                        let _guard = req.runtime.enter();
                        let _ = req.reply.send(req.cmd.spawn());
                    }
                });
            match started {
                Ok(_) => Some(Mutex::new(tx)),
                Err(e) => {
                    tracing::warn!("cannot start the QEMU spawner thread ({e}); forking in place");
                    None
                }
            }
        })
        .as_ref()
}

/// How the child's life is tied to bogie's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// Killed (SIGKILL) when bogie dies, however it dies; its own process group, so a
    /// terminal's Ctrl-C reaches bogie only and bogie tears it down.
    TiedToBogie,
    /// Its own session: survives bogie (for kept machines).
    Detached,
}

/// Spawns `cmd` with the given lifetime.
pub async fn spawn(mut cmd: Command, lifetime: Lifetime) -> io::Result<Child> {
    let parent = std::process::id() as libc::pid_t;
    cmd.kill_on_drop(lifetime == Lifetime::TiedToBogie);
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
    // system calls (setsid, setpgid, prctl, getppid); it allocates nothing on success.
    unsafe {
        cmd.as_std_mut().pre_exec(move || {
            match lifetime {
                Lifetime::Detached => {
                    if libc::setsid() < 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Lifetime::TiedToBogie => {
                    if libc::setpgid(0, 0) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                    if libc::prctl(
                        libc::PR_SET_PDEATHSIG,
                        libc::SIGKILL as libc::c_ulong,
                        0,
                        0,
                        0,
                    ) < 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                    // bogie died between fork and prctl: do not start an orphan.
                    if libc::getppid() != parent {
                        return Err(io::Error::from_raw_os_error(libc::ESRCH));
                    }
                }
            }
            Ok(())
        });
    }
    let Some(tx) = spawner() else {
        return cmd.spawn();
    };
    let (reply, rx) = oneshot::channel();
    let req = Request {
        cmd,
        runtime: tokio::runtime::Handle::current(),
        reply,
    };
    tx.lock()
        .map_err(|_| io::Error::other("QEMU spawner lock poisoned"))?
        .send(req)
        .map_err(|_| io::Error::other("QEMU spawner thread is gone"))?;
    rx.await
        .map_err(|_| io::Error::other("QEMU spawner thread dropped the request"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session_and_group(pid: u32) -> (i64, i64) {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = after.split_whitespace().collect();
        // fields after the command: state ppid pgrp session
        (f[2].parse().unwrap(), f[3].parse().unwrap())
    }

    #[tokio::test]
    async fn tied_children_get_their_own_group_and_detached_their_own_session() {
        let mut c = Command::new("sleep");
        c.arg("30");
        let mut child = spawn(c, Lifetime::TiedToBogie).await.unwrap();
        let pid = child.id().unwrap();
        let (pgrp, sid) = session_and_group(pid);
        assert_eq!(pgrp, pid as i64);
        assert_ne!(sid, pid as i64);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        assert!(status.contains("PPid:"));
        child.kill().await.unwrap();

        let mut c = Command::new("sleep");
        c.arg("30");
        let mut child = spawn(c, Lifetime::Detached).await.unwrap();
        let pid = child.id().unwrap();
        assert_eq!(session_and_group(pid), (pid as i64, pid as i64));
        child.kill().await.unwrap();
    }
}
