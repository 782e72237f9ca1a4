//! Structured log events. In the component they go to the host (which renders
//! them with `tracing`); natively to stderr. Filtering happens here, before
//! any field is formatted.

use std::fmt::{self, Display};
use std::rc::Rc;

/// Severity, most severe first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Something is broken and needs the operator.
    Error,
    /// Something failed and was worked around.
    Warn,
    /// Start-up and state changes.
    Info,
    /// Per connection (never query names above this level).
    Debug,
    /// Per query.
    Trace,
}

impl Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Error => "ERROR",
            Level::Warn => "WARN",
            Level::Info => "INFO",
            Level::Debug => "DEBUG",
            Level::Trace => "TRACE",
        })
    }
}

/// Where events go.
pub trait Sink {
    /// Records one event whose level passed the filter.
    fn emit(&self, level: Level, message: &str, fields: &[(&str, String)]);
}

/// Writes events to stderr, one line each (native runs).
#[derive(Debug, Default)]
pub struct StderrSink;

impl Sink for StderrSink {
    fn emit(&self, level: Level, message: &str, fields: &[(&str, String)]) {
        let mut line = format!("{level:>5} {message}");
        for (k, v) in fields {
            line.push_str(&format!(" {k}={v}"));
        }
        eprintln!("{line}");
    }
}

/// A filtered handle to a [`Sink`]; cheap to clone.
#[derive(Clone)]
pub struct Log {
    max: Level,
    sink: Rc<dyn Sink>,
}

impl Log {
    /// Events up to `max` go to `sink`.
    pub fn new(max: Level, sink: Rc<dyn Sink>) -> Self {
        Self { max, sink }
    }

    /// True if events at `level` are recorded.
    pub fn enabled(&self, level: Level) -> bool {
        level <= self.max
    }

    /// Records an event; fields are formatted only if it passes the filter.
    pub fn event(&self, level: Level, message: &str, fields: &[(&str, &dyn Display)]) {
        if self.enabled(level) {
            let fields: Vec<(&str, String)> =
                fields.iter().map(|(k, v)| (*k, v.to_string())).collect();
            self.sink.emit(level, message, &fields);
        }
    }
}

impl fmt::Debug for Log {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Log")
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}
