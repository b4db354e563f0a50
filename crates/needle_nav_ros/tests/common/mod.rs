//! Helpers for tests that start real node processes on a private ROS domain.
#![allow(dead_code)]

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// The test process's own ROS context lives for the whole binary, so its tests run one at a time.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// A private ROS domain: NEEDLE_NAV_TEST_DOMAIN, or one derived from the process id.
pub fn domain_id() -> String {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        std::env::var("NEEDLE_NAV_TEST_DOMAIN").unwrap_or_else(|_| (20 + std::process::id() % 80).to_string())
    })
    .clone()
}

/// Puts this process on the private domain (before its ROS context is created).
pub fn join_private_domain() {
    std::env::set_var("ROS_DOMAIN_ID", domain_id());
    std::env::set_var("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST");
}

pub struct NodeProcess {
    pub name: String,
    child: Child,
    log: PathBuf,
}

impl NodeProcess {
    pub fn start(exe: &str, args: &[&str]) -> NodeProcess {
        let name = PathBuf::from(exe).file_name().unwrap().to_string_lossy().to_string();
        let log = std::env::temp_dir().join(format!("nn_{}_{}_{}.log", name, std::process::id(), unique()));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(exe)
            .args(args)
            .env("ROS_DOMAIN_ID", domain_id())
            .env("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {exe}: {e}"));
        NodeProcess { name, child, log }
    }

    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Waits until the log contains `needle`; panics with the log otherwise.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited ({status}) before logging `{needle}`:\n{}", self.name, self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{} did not log `{needle}` within {timeout:?}:\n{}", self.name, self.log());
    }

    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal(libc::SIGTERM);
            if self.wait_exit(Duration::from_secs(3)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Runs an executable to completion (for invalid-configuration cases).
pub fn run_to_exit(exe: &str, args: &[&str], timeout: Duration) -> (Option<i32>, String) {
    let mut p = NodeProcess::start(exe, args);
    let status = p.wait_exit(timeout);
    (status.and_then(|s| s.code()), p.log())
}
