//! Memory admission for `-j auto`: a test starts only while the host's `MemAvailable`, minus
//! the memory reserved by the tests already admitted, covers its machines' memory.
//!
//! Reservations are held until the test ends, even though the machines' memory also shows
//! up in `MemAvailable` as they touch it; the double count errs on the side of not
//! overcommitting (coreos-assembler gates QEMU runs the same way). A test is always
//! admitted when nothing else runs, so one that needs more than the host has still runs,
//! alone. When `MemAvailable` cannot be read, admission does not restrict.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Where free memory comes from (MiB); `/proc/meminfo` in real runs, a stub in tests.
pub type MemorySource = Box<dyn Fn() -> Option<u64> + Send + Sync>;

/// `MemAvailable` from `/proc/meminfo`, in MiB.
pub fn proc_mem_available_mib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_available_mib(&text)
}

/// `MemAvailable` from the text of `/proc/meminfo`, in MiB.
pub fn parse_mem_available_mib(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let rest = l.strip_prefix("MemAvailable:")?;
        let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kib / 1024)
    })
}

#[derive(Debug, Default)]
struct State {
    reserved_mib: u64,
    running: usize,
}

/// The admission gate: shared by the scheduler's tests.
pub struct Admission {
    source: MemorySource,
    state: Mutex<State>,
    released: Notify,
    poll: Duration,
}

impl fmt::Debug for Admission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.state.lock().expect("poisoned");
        f.debug_struct("Admission")
            .field("reserved_mib", &s.reserved_mib)
            .field("running", &s.running)
            .finish_non_exhaustive()
    }
}

/// Memory held for one admitted test; released when dropped.
#[derive(Debug)]
pub struct Reservation {
    gate: Arc<Admission>,
    mib: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        {
            let mut s = self.gate.state.lock().expect("poisoned");
            s.reserved_mib = s.reserved_mib.saturating_sub(self.mib);
            s.running = s.running.saturating_sub(1);
        }
        self.gate.released.notify_waiters();
    }
}

impl Reservation {
    /// MiB this reservation holds.
    pub fn mib(&self) -> u64 {
        self.mib
    }
}

impl Admission {
    /// A gate reading free memory from `source` (MiB).
    pub fn new(source: MemorySource) -> Arc<Admission> {
        Arc::new(Admission {
            source,
            state: Mutex::new(State::default()),
            released: Notify::new(),
            poll: Duration::from_secs(2),
        })
    }

    /// A gate on this host's `MemAvailable`.
    pub fn from_proc_meminfo() -> Arc<Admission> {
        Admission::new(Box::new(proc_mem_available_mib))
    }

    /// MiB currently reserved by admitted tests.
    pub fn reserved_mib(&self) -> u64 {
        self.state.lock().expect("poisoned").reserved_mib
    }

    /// Admits a test needing `need_mib` now, if memory allows (or nothing else runs).
    pub fn try_admit(self: &Arc<Self>, need_mib: u64) -> Option<Reservation> {
        let available = (self.source)();
        let mut s = self.state.lock().expect("poisoned");
        let fits = match available {
            None => true,
            Some(avail) => avail.saturating_sub(s.reserved_mib) >= need_mib,
        };
        if s.running > 0 && !fits {
            return None;
        }
        if !fits {
            tracing::warn!(
                need_mib,
                available_mib = available.unwrap_or_default(),
                "a test needs more memory than the host has available; running it alone"
            );
        }
        s.reserved_mib += need_mib;
        s.running += 1;
        Some(Reservation {
            gate: self.clone(),
            mib: need_mib,
        })
    }

    /// Waits until a test needing `need_mib` is admitted; None when `cancel` fires first.
    /// Rechecks whenever a reservation is released and every couple of seconds (free memory
    /// also changes outside bogie).
    pub async fn admit(
        self: &Arc<Self>,
        need_mib: u64,
        cancel: &CancellationToken,
    ) -> Option<Reservation> {
        let mut logged = false;
        loop {
            let released = self.released.notified();
            if let Some(r) = self.try_admit(need_mib) {
                return Some(r);
            }
            if !logged {
                tracing::info!(
                    need_mib,
                    reserved_mib = self.reserved_mib(),
                    "waiting for memory before starting the next test"
                );
                logged = true;
            }
            tokio::select! {
                _ = released => {}
                _ = tokio::time::sleep(self.poll) => {}
                _ = cancel.cancelled() => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn gate(avail: Arc<AtomicU64>) -> Arc<Admission> {
        Admission::new(Box::new(move || Some(avail.load(Ordering::SeqCst))))
    }

    #[test]
    fn parses_meminfo() {
        let m = "MemTotal:       24684000 kB\nMemFree:        17000000 kB\nMemAvailable:   21577728 kB\n";
        assert_eq!(parse_mem_available_mib(m), Some(21072));
        assert_eq!(parse_mem_available_mib("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn admits_while_memory_minus_reservations_covers_the_need() {
        let avail = Arc::new(AtomicU64::new(4096));
        let g = gate(avail.clone());
        let a = g.try_admit(1024).expect("fits");
        let b = g.try_admit(2048).expect("fits: 4096 - 1024 >= 2048");
        assert_eq!(g.reserved_mib(), 3072);
        assert!(g.try_admit(2048).is_none(), "4096 - 3072 < 2048");
        let c = g.try_admit(1024).expect("exactly fits");
        assert!(g.try_admit(1).is_none());
        drop(b);
        assert_eq!(g.reserved_mib(), 2048);
        let d = g.try_admit(2048).expect("fits again after a release");
        // Free memory dropping outside bogie also blocks admission.
        drop((a, c, d));
        avail.store(1000, Ordering::SeqCst);
        let e = g.try_admit(512).expect("fits");
        assert!(g.try_admit(512).is_none(), "1000 - 512 < 512");
        drop(e);
    }

    #[test]
    fn a_test_too_big_for_the_host_runs_alone() {
        let g = gate(Arc::new(AtomicU64::new(1000)));
        let big = g.try_admit(8192).expect("nothing runs: admitted alone");
        assert!(g.try_admit(1).is_none());
        drop(big);
        assert!(g.try_admit(1).is_some());
    }

    #[test]
    fn unknown_memory_does_not_restrict() {
        let g = Admission::new(Box::new(|| None));
        let _a = g.try_admit(1 << 20).unwrap();
        let _b = g.try_admit(1 << 20).unwrap();
    }

    #[tokio::test]
    async fn waiting_tests_start_when_memory_is_released() {
        let g = gate(Arc::new(AtomicU64::new(2048)));
        let first = g.try_admit(2048).unwrap();
        let cancel = CancellationToken::new();
        let g2 = g.clone();
        let c2 = cancel.clone();
        let waiter = tokio::spawn(async move { g2.admit(1024, &c2).await.map(|r| r.mib()) });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        drop(first);
        assert_eq!(waiter.await.unwrap(), Some(1024));
        // Cancellation ends the wait.
        let _hold = g.try_admit(2048).unwrap();
        let g3 = g.clone();
        let c3 = cancel.clone();
        let waiter = tokio::spawn(async move { g3.admit(2048, &c3).await.is_none() });
        cancel.cancel();
        assert!(waiter.await.unwrap());
    }
}
