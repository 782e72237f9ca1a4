//! Child processes with continuously captured output, stopped by PID.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// How often log and exit conditions are polled.
const POLL: Duration = Duration::from_millis(20);

/// Text captured from a child's stdout and stderr (interleaved as it arrives).
#[derive(Clone, Default)]
pub(crate) struct LogBuf {
    text: Arc<Mutex<String>>,
    /// Capture threads still reading (their stream is not at its end yet).
    open: Arc<AtomicUsize>,
}

impl LogBuf {
    pub(crate) fn get(&self) -> String {
        self.text
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits up to `timeout` until every captured stream has reached its end (the
    /// child closed it, e.g. by exiting), so [`LogBuf::get`] has all it wrote.
    pub(crate) fn wait_drained(&self, timeout: Duration) -> bool {
        wait_until(timeout, || self.open.load(Ordering::Acquire) == 0)
    }

    fn push(&self, s: &str) {
        self.text
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_str(s);
    }

    /// Appends everything `reader` produces, on a background thread.
    fn capture(&self, mut reader: impl Read + Send + 'static) {
        let buf = self.clone();
        self.open.fetch_add(1, Ordering::AcqRel);
        thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            loop {
                match reader.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.push(&String::from_utf8_lossy(&chunk[..n])),
                }
            }
            buf.open.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

/// A running child whose stdout and stderr go to a [`LogBuf`].
pub(crate) struct Running {
    child: Child,
    exited: Option<ExitStatus>,
}

impl Running {
    /// Spawns `cmd` with stdin closed and both output streams captured into `log`.
    pub(crate) fn spawn(mut cmd: Command, log: &LogBuf) -> std::io::Result<Self> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn()?;
        if let Some(out) = child.stdout.take() {
            log.capture(out);
        }
        if let Some(err) = child.stderr.take() {
            log.capture(err);
        }
        Ok(Self {
            child,
            exited: None,
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the child has exited (never blocks).
    pub(crate) fn try_status(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// Waits up to `timeout` for the child to exit on its own.
    pub(crate) fn wait_within(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_status() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(POLL);
        }
    }

    /// SIGTERM (via `kill <pid>` of this child only), up to `grace` to exit, then SIGKILL.
    pub(crate) fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        if self.try_status().is_none() {
            // The child is not reaped yet, so its PID cannot have been reused.
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if self.wait_within(grace).is_none() {
                let _ = self.child.kill();
                self.exited = self.child.wait().ok();
            }
        }
        self.exited
    }

    /// SIGKILL this child (only) and reap it.
    pub(crate) fn kill(&mut self) -> Option<ExitStatus> {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            self.exited = self.child.wait().ok();
        }
        self.exited
    }
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes; returns
/// whether it held. Tests wait on conditions with this, never on fixed sleeps.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(POLL);
    }
}
