//! The scheduling class of the thread that runs a vessel segmentation. Segmentation is minutes
//! of CPU that nobody waits for at tracker rate; guidance has a deadline every tracker period.
//! On a shared machine the worker must therefore take only the CPU time that guidance leaves.
//! Threads inherit the policy and nice value of the thread that creates them, so lowering the
//! worker before it creates the ONNX Runtime session lowers the runtime's intra-op pool too.

use serde::{Deserialize, Serialize};

/// How the segmentation worker is scheduled (Linux; elsewhere every choice leaves it as it is).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum WorkerScheduling {
    /// `SCHED_IDLE`: runs only on CPU time no normal thread wants (weight below nice 19).
    #[default]
    Idle,
    /// `SCHED_BATCH` at nice 19: the lowest normal share, and never preempts on wake-up.
    Batch,
    /// Unchanged: the scheduling of the process (the same share as guidance).
    Normal,
}

impl WorkerScheduling {
    pub fn name(self) -> &'static str {
        match self {
            WorkerScheduling::Idle => "idle",
            WorkerScheduling::Batch => "batch",
            WorkerScheduling::Normal => "normal",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SchedulingError {
    #[error("cannot set the {what} of thread {tid}: {source}")]
    Os { what: &'static str, tid: i64, source: std::io::Error },
    #[error("worker scheduling `{0}` is only implemented on Linux")]
    Unsupported(&'static str),
}

/// The kernel's id of the calling thread.
#[cfg(target_os = "linux")]
pub fn current_tid() -> i64 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) }
}

/// Applies `scheduling` to the calling thread (only this thread, and the threads it creates
/// afterwards). Lowering needs no privilege; `Normal` changes nothing.
#[cfg(target_os = "linux")]
pub fn apply_to_current_thread(scheduling: WorkerScheduling) -> Result<(), SchedulingError> {
    let tid = current_tid();
    let set_policy = |policy: libc::c_int, what: &'static str| {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` is a valid sched_param; pid 0 is the calling thread on Linux.
        if unsafe { libc::sched_setscheduler(0, policy, &param) } != 0 {
            return Err(SchedulingError::Os { what, tid, source: std::io::Error::last_os_error() });
        }
        Ok(())
    };
    match scheduling {
        WorkerScheduling::Normal => Ok(()),
        WorkerScheduling::Idle => set_policy(libc::SCHED_IDLE, "scheduling policy (SCHED_IDLE)"),
        WorkerScheduling::Batch => {
            set_policy(libc::SCHED_BATCH, "scheduling policy (SCHED_BATCH)")?;
            // On Linux the nice value belongs to the thread named by its tid.
            // SAFETY: plain system call on our own thread id.
            if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19) } != 0 {
                return Err(SchedulingError::Os {
                    what: "nice value (19)",
                    tid,
                    source: std::io::Error::last_os_error(),
                });
            }
            Ok(())
        }
    }
}

#[cfg(not(target_os = "linux"))]
pub fn apply_to_current_thread(scheduling: WorkerScheduling) -> Result<(), SchedulingError> {
    match scheduling {
        WorkerScheduling::Normal => Ok(()),
        other => Err(SchedulingError::Unsupported(other.name())),
    }
}

/// Lowers the calling thread as configured and logs the outcome; a failure is logged and the
/// work goes on at normal priority (segmentation still works, it only competes with guidance).
pub fn lower_current_thread(scheduling: WorkerScheduling, role: &str) {
    match apply_to_current_thread(scheduling) {
        Ok(()) => tracing::info!(scheduling = scheduling.name(), "{role} scheduling set"),
        Err(e) => tracing::warn!("{role}: {e}; it runs at normal priority and competes with guidance"),
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// Policy (field 41) and nice (field 19) of a thread, read from /proc (the kernel's view,
    /// independent of the calls above).
    fn proc_policy_and_nice(tid: i64) -> (u32, i32) {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
        let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
        // fields[0] is field 3 (state).
        (fields[41 - 3].parse().unwrap(), fields[19 - 3].parse().unwrap())
    }

    fn on_new_thread(scheduling: WorkerScheduling) -> ((u32, i32), (u32, i32)) {
        std::thread::spawn(move || {
            apply_to_current_thread(scheduling).unwrap();
            let own = proc_policy_and_nice(current_tid());
            // A thread created afterwards inherits it (as ONNX Runtime's pool threads do).
            let child = std::thread::spawn(|| proc_policy_and_nice(current_tid())).join().unwrap();
            (own, child)
        })
        .join()
        .unwrap()
    }

    #[test]
    fn the_kernel_reports_the_configured_policy_for_the_thread_and_its_children() {
        // Linux: SCHED_OTHER 0, SCHED_BATCH 3, SCHED_IDLE 5.
        let (own, child) = on_new_thread(WorkerScheduling::Idle);
        assert_eq!((own.0, child.0), (5, 5));
        let (own, child) = on_new_thread(WorkerScheduling::Batch);
        assert_eq!((own, child), ((3, 19), (3, 19)));
        let before = proc_policy_and_nice(current_tid());
        let (own, child) = on_new_thread(WorkerScheduling::Normal);
        assert_eq!((own, child), (before, before), "normal leaves the thread as the process runs");
        // Only the calling thread was lowered.
        assert_eq!(proc_policy_and_nice(current_tid()), before);
    }
}
