//! Logging set-up shared by every executable: plain text to stderr (colours only on a terminal).
//!
//! Logging must never block or kill guidance. Log lines go into a bounded queue that one thread
//! (`needle_nav_log`) writes to stderr; when stderr is slow or full (a pipe nobody reads) the
//! queue drops lines instead of making the caller wait, and when stderr is closed (a pipe into
//! `head`) the writes fail quietly. Before this, `needle_nav_stack 2>&1 | head` ended the
//! process with "failed printing to stderr: Broken pipe" and a full pipe stalled the nodes.
//! The queue is `tracing-appender`'s non-blocking writer in its lossy mode.

use std::io::Write;

/// Keeps the log thread alive; dropping it flushes what is queued (for at most about a second).
#[must_use = "logging stops when the guard is dropped"]
pub struct LogGuard(#[allow(dead_code)] Option<tracing_appender::non_blocking::WorkerGuard>);

/// Lines the queue holds before it drops new ones.
const QUEUED_LINES: usize = 10_000;

/// stderr that stops writing after it found the reader gone.
struct QuietStderr {
    closed: bool,
}

impl Write for QuietStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if !self.closed {
            if let Err(e) = std::io::stderr().write_all(buf) {
                // A closed pipe stays closed: stop trying. Other errors drop only this line.
                self.closed = e.kind() == std::io::ErrorKind::BrokenPipe;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.closed {
            let _ = std::io::stderr().flush();
        }
        Ok(())
    }
}

/// Installs the global subscriber. Keep the guard until the process ends.
pub fn init_tracing() -> LogGuard {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("needle_nav_log")
        .finish(QuietStderr { closed: false });
    let installed = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer)
        .try_init()
        .is_ok();
    LogGuard(installed.then_some(guard))
}

/// Prints a line on stdout for the user (summaries), ignoring a closed or failing stdout: a
/// report nobody can read must not turn a clean run into a crash.
pub fn print_line(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}
