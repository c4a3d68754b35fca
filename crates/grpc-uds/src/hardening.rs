//! Process hardening for a daemon that holds secrets, applied first thing in `main`, before any
//! key, PIN or token exists in memory: the process is made non-dumpable (no core dump, no ptrace
//! or /proc/<pid>/mem access by other processes of the same user), core dumps are turned off for
//! good (RLIMIT_CORE soft and hard 0), and memory is locked so secret pages never reach swap —
//! where the OS allows it.
//!
//! Memory locking is `mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)`: every page, present and
//! future, is locked as it is touched (ONFAULT: nothing is prefaulted, so the resident size does
//! not grow). It is attempted only when nothing can later fail because of it — the process has
//! CAP_IPC_LOCK, or RLIMIT_MEMLOCK is (or can be raised to) unlimited. Otherwise locking future
//! mappings would make allocations and thread stacks fail once the limit is reached, so memory
//! is left unlocked and a warning says why and how to fix it. Nothing here ever stops the
//! process: every step that the OS refuses becomes a warning.
//!
//! Also here: the check for running as root. Every call goes through rustix's safe wrappers, so
//! this module needs no `unsafe` either.

use std::fmt;

use rustix::io::Errno;
use rustix::mm::{MlockAllFlags, mlockall};
use rustix::process::{
    DumpableBehavior, Resource, Rlimit, dumpable_behavior, geteuid, getrlimit,
    set_dumpable_behavior, setrlimit,
};

/// CAP_IPC_LOCK's bit in the capability sets of /proc/self/status.
const CAP_IPC_LOCK: u32 = 14;

/// What [`apply`] achieved; logged once logging is set up, by [`Report::log`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// `Ok(())` when the process is no longer dumpable.
    pub not_dumpable: Result<(), String>,
    /// `Ok(())` when RLIMIT_CORE is 0 (soft and hard).
    pub core_dumps_off: Result<(), String>,
    /// Whether memory is locked.
    pub memory: MemoryLock,
}

/// The outcome of locking memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemoryLock {
    /// All present and future pages are locked.
    Locked {
        /// Why the lock cannot fail later: "CAP_IPC_LOCK" or "RLIMIT_MEMLOCK unlimited".
        because: &'static str,
    },
    /// Not attempted, because locking future mappings could make later allocations fail.
    Skipped {
        /// Why, and how to allow it.
        reason: String,
    },
    /// The OS refused.
    Failed {
        /// The error.
        error: String,
    },
}

impl Report {
    /// Whether everything was applied.
    pub fn complete(&self) -> bool {
        self.not_dumpable.is_ok()
            && self.core_dumps_off.is_ok()
            && matches!(self.memory, MemoryLock::Locked { .. })
    }

    /// Logs what was applied (info) and what was not (warn, with the fix).
    pub fn log(&self) {
        match &self.not_dumpable {
            Ok(()) => tracing::info!("process is not dumpable (PR_SET_DUMPABLE 0)"),
            Err(error) => tracing::warn!(
                %error,
                "process is still dumpable: other processes of this user may read its memory"
            ),
        }
        match &self.core_dumps_off {
            Ok(()) => tracing::info!("core dumps off (RLIMIT_CORE 0)"),
            Err(error) => tracing::warn!(
                %error,
                "core dumps are not turned off: a crash could write key material to disk; \
                 set LimitCORE=0 in the service unit"
            ),
        }
        match &self.memory {
            MemoryLock::Locked { because } => tracing::info!(
                because,
                "memory locked (mlockall MCL_CURRENT|MCL_FUTURE|MCL_ONFAULT): key pages are \
                 never swapped out"
            ),
            MemoryLock::Skipped { reason } => tracing::warn!(
                reason = reason.as_str(),
                "memory NOT locked: key pages may be written to swap; keep swap encrypted, or \
                 grant CAP_IPC_LOCK or LimitMEMLOCK=infinity"
            ),
            MemoryLock::Failed { error } => tracing::warn!(
                error = error.as_str(),
                "memory NOT locked: key pages may be written to swap; keep swap encrypted"
            ),
        }
    }
}

impl fmt::Display for MemoryLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Locked { because } => write!(f, "locked ({because})"),
            Self::Skipped { reason } => write!(f, "not locked: {reason}"),
            Self::Failed { error } => write!(f, "not locked: {error}"),
        }
    }
}

/// Makes the process non-dumpable, turns core dumps off and locks memory where allowed. Never
/// fails: what the OS refuses is in the report.
pub fn apply() -> Report {
    Report {
        not_dumpable: make_not_dumpable(),
        core_dumps_off: core_dumps_off(),
        memory: lock_memory(),
    }
}

fn errno(what: &str, error: Errno) -> String {
    format!("{what}: {error}")
}

fn make_not_dumpable() -> Result<(), String> {
    set_dumpable_behavior(DumpableBehavior::NotDumpable)
        .map_err(|error| errno("prctl(PR_SET_DUMPABLE, 0)", error))?;
    match dumpable_behavior() {
        Ok(DumpableBehavior::NotDumpable) => Ok(()),
        Ok(other) => Err(format!("PR_GET_DUMPABLE still says {other:?}")),
        Err(error) => Err(errno("prctl(PR_GET_DUMPABLE)", error)),
    }
}

fn core_dumps_off() -> Result<(), String> {
    // Hard limit 0 too, so nothing later in the process (a library) can raise it again.
    let off = Rlimit {
        current: Some(0),
        maximum: Some(0),
    };
    setrlimit(Resource::Core, off).map_err(|error| errno("setrlimit(RLIMIT_CORE, 0)", error))?;
    match getrlimit(Resource::Core) {
        now if now == off => Ok(()),
        now => Err(format!("RLIMIT_CORE is still {now:?}")),
    }
}

fn lock_memory() -> MemoryLock {
    let because = if has_capability(CAP_IPC_LOCK) {
        "CAP_IPC_LOCK"
    } else {
        match raise_memlock_limit() {
            Ok(()) => "RLIMIT_MEMLOCK unlimited",
            Err(reason) => return MemoryLock::Skipped { reason },
        }
    };
    let flags = MlockAllFlags::CURRENT | MlockAllFlags::FUTURE | MlockAllFlags::ONFAULT;
    match mlockall(flags) {
        Ok(()) => MemoryLock::Locked { because },
        Err(error) => MemoryLock::Failed {
            error: errno("mlockall(MCL_CURRENT|MCL_FUTURE|MCL_ONFAULT)", error),
        },
    }
}

/// Raises RLIMIT_MEMLOCK's soft limit to unlimited if the hard limit allows it.
fn raise_memlock_limit() -> Result<(), String> {
    let limit = getrlimit(Resource::Memlock);
    match limit.maximum {
        None => {
            if limit.current.is_some() {
                setrlimit(
                    Resource::Memlock,
                    Rlimit {
                        current: None,
                        maximum: None,
                    },
                )
                .map_err(|error| errno("setrlimit(RLIMIT_MEMLOCK, unlimited)", error))?;
            }
            Ok(())
        }
        Some(max) => Err(format!(
            "RLIMIT_MEMLOCK is {max} bytes and the process lacks CAP_IPC_LOCK; locking every \
             future page could make allocations fail once that much is locked"
        )),
    }
}

/// Whether the effective capability set holds capability number `bit` (read from
/// /proc/self/status; `false` when it cannot be read).
fn has_capability(bit: u32) -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| capability_set(&status, "CapEff:"))
        .is_some_and(|set| set & (1 << bit) != 0)
}

fn capability_set(status: &str, field: &str) -> Option<u64> {
    let hex = status.lines().find_map(|line| line.strip_prefix(field))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// The effective user id of this process.
pub fn effective_uid() -> u32 {
    geteuid().as_raw()
}

/// Refused to run as root because the configuration says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootRefused {
    /// The setting that asked for the refusal, as the operator spells it (e.g.
    /// "refuse_root / --refuse-root / KUBE_KMS_REFUSE_ROOT").
    pub setting: &'static str,
}

impl fmt::Display for RootRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "refusing to run as root ({}): run this process as a dedicated user that shares a \
             group with its clients",
            self.setting
        )
    }
}

impl std::error::Error for RootRefused {}

/// Warns loudly when running as root (effective uid 0), or refuses when `refuse` is set;
/// `setting` names the option that sets `refuse`, for the messages.
pub fn check_root(euid: u32, refuse: bool, setting: &'static str) -> Result<(), RootRefused> {
    if euid != 0 {
        return Ok(());
    }
    if refuse {
        return Err(RootRefused { setting });
    }
    tracing::warn!(
        setting,
        "RUNNING AS ROOT: a flaw in this process or a library it uses would give an attacker the \
         whole host; run it as a dedicated user that shares a group with its clients, and set \
         the refusal setting so it can never start as root again"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_sets_parse_from_proc_status() {
        let status = "Name:\tdaemon\nCapInh:\t0000000000000000\nCapEff:\t000001fffeffffff\n";
        let set = capability_set(status, "CapEff:").unwrap();
        assert_ne!(set & (1 << CAP_IPC_LOCK), 0);
        assert_eq!(capability_set(status, "CapInh:"), Some(0));
        assert_eq!(capability_set("CapEff:\tzz\n", "CapEff:"), None);
        assert_eq!(capability_set("", "CapEff:"), None);
    }

    #[test]
    fn root_is_refused_only_when_asked_and_anyone_else_always_runs() {
        const SETTING: &str = "refuse_root / --refuse-root";
        let refused = RootRefused { setting: SETTING };
        assert_eq!(check_root(0, true, SETTING), Err(refused.clone()));
        assert_eq!(check_root(0, false, SETTING), Ok(()));
        assert_eq!(check_root(1000, true, SETTING), Ok(()));
        assert!(refused.to_string().contains("--refuse-root"));
    }

    #[test]
    fn a_skipped_lock_is_not_complete_and_says_why() {
        let report = Report {
            not_dumpable: Ok(()),
            core_dumps_off: Ok(()),
            memory: MemoryLock::Skipped {
                reason: "RLIMIT_MEMLOCK is 8388608 bytes".into(),
            },
        };
        assert!(!report.complete());
        assert!(report.memory.to_string().contains("8388608"));
    }
}
