//! Structured log events. In the component they go to the host (which renders
//! them with `tracing`); natively to stderr. Filtering happens here, before
//! any field is formatted.

use std::fmt::{self, Display};
use std::rc::Rc;

/// Severity, most severe first. The one log level of the project: the
/// `log_level` setting, the host's log filter and the WIT `log.level` all
/// spell it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
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

impl Level {
    /// Every level, most severe first.
    pub const ALL: [Level; 5] = [
        Level::Error,
        Level::Warn,
        Level::Info,
        Level::Debug,
        Level::Trace,
    ];

    /// The lower-case name, as `log_level` and `tracing` filters spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        }
    }

    /// The level named `name`, in any case.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|l| l.as_str().eq_ignore_ascii_case(name))
    }
}

impl Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the host writes its log lines (`log_format`): the component's events
/// go through the same writer, so both render alike.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum LogFormat {
    /// `2026-11-29T00:00:00Z  INFO target: message key=value`, for people.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, the
    /// message under `fields.message` and every field beside it, for log
    /// collectors.
    Json,
}

impl LogFormat {
    /// Every format.
    pub const ALL: [LogFormat; 2] = [LogFormat::Text, LogFormat::Json];

    /// The name `log_format` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }

    /// The format named `name`, in any case.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|f| f.as_str().eq_ignore_ascii_case(name))
    }
}

impl Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The message of a query log event (`log_queries`): the host sends these
/// to a log target of their own.
pub const QUERY_EVENT: &str = "query";

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
        let mut line = format!("{:>5} {message}", level.as_str().to_ascii_uppercase());
        for (k, v) in fields {
            line.push_str(&format!(" {k}={v}"));
        }
        eprintln!("{line}");
    }
}

/// A filtered handle to a [`Sink`]; cheap to clone.
#[derive(Clone)]
pub struct Log {
    /// Shared by every clone, so a reload's level reaches them all.
    max: Rc<std::cell::Cell<Level>>,
    sink: Rc<dyn Sink>,
}

impl Log {
    /// Events up to `max` go to `sink`.
    pub fn new(max: Level, sink: Rc<dyn Sink>) -> Self {
        Self {
            max: Rc::new(std::cell::Cell::new(max)),
            sink,
        }
    }

    /// Changes the level of this handle and of every clone of it (reload).
    pub fn set_max(&self, max: Level) {
        self.max.set(max);
    }

    /// True if events at `level` are recorded.
    pub fn enabled(&self, level: Level) -> bool {
        level <= self.max.get()
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

impl Log {
    /// Records a query log event ([`QUERY_EVENT`]) at info, whatever the
    /// level: `log_queries` alone decides, and the caller checks it first.
    pub fn query(&self, fields: &[(&str, &dyn Display)]) {
        let fields: Vec<(&str, String)> = fields.iter().map(|(k, v)| (*k, v.to_string())).collect();
        self.sink.emit(Level::Info, QUERY_EVENT, &fields);
    }
}

impl fmt::Debug for Log {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Log")
            .field("max", &self.max.get())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_names_round_trip_in_any_case() {
        for level in Level::ALL {
            assert_eq!(Level::from_name(level.as_str()), Some(level));
            assert_eq!(
                Level::from_name(&level.as_str().to_ascii_uppercase()),
                Some(level)
            );
            assert_eq!(level.to_string(), level.as_str());
        }
        assert_eq!(Level::from_name("Trace"), Some(Level::Trace));
        assert_eq!(Level::from_name("verbose"), None);
        assert_eq!(Level::from_name(""), None);
    }

    #[test]
    fn more_verbose_levels_sort_later() {
        assert!(Level::ALL.windows(2).all(|w| w[0] < w[1]));
        assert!(Log::new(Level::Info, Rc::new(StderrSink)).enabled(Level::Warn));
        assert!(!Log::new(Level::Info, Rc::new(StderrSink)).enabled(Level::Debug));
    }
}
