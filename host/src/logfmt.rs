//! How log lines look (`log_format`): tracing's text lines, or one JSON
//! object per line for log collectors. The host's own events and the
//! component's (which arrive as a message and key/value strings through the
//! WIT `log` interface) render alike in both.
//!
//! A JSON line holds `time` (RFC 3339, UTC), `level` (lower case), `target`,
//! `message`, then every field as a key of its own: numbers and booleans the
//! host logs stay JSON numbers and booleans, everything else is a string.

use std::fmt;
use std::sync::OnceLock;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::Level;
use crate::config::LogFormat;

/// Target of the component's events.
pub const COMPONENT_TARGET: &str = "dnsproxy::component";

/// Target of the query log (`log_queries`): its own, so the filter lets it
/// through whatever `log_level` says.
pub const QUERY_TARGET: &str = "dnsproxy::query";

/// The name of the field that carries a component event's fields in JSON
/// mode (see [`ComponentFields`]); never printed as such.
const COMPONENT_FIELDS: &str = "component_fields";

/// The format chosen at start-up; text until then.
static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// The format in use.
pub fn format() -> LogFormat {
    FORMAT.get().copied().unwrap_or_default()
}

/// The filter: `level` for everything, the query log at info when it is
/// on; `RUST_LOG`, when set, refines it (e.g. `wasmtime=debug`).
pub fn filter(level: Level, log_queries: bool) -> EnvFilter {
    let mut directives = level.as_str().to_owned();
    if log_queries {
        directives.push_str(&format!(",{QUERY_TARGET}=info"));
    }
    match std::env::var("RUST_LOG") {
        Ok(extra) if !extra.trim().is_empty() => {
            EnvFilter::try_new(format!("{directives},{extra}"))
                .unwrap_or_else(|_| EnvFilter::new(&directives))
        }
        _ => EnvFilter::new(directives),
    }
}

/// Replaces the filter of the installed subscriber (a reload).
type SetFilter = Box<dyn Fn(EnvFilter) -> bool + Send + Sync>;

/// How to change the filter, once [`init`] installed a subscriber.
static SET_FILTER: OnceLock<SetFilter> = OnceLock::new();

/// Installs the global subscriber writing to stderr in `format`; its
/// filter can be replaced later ([`set_filter`]), its format cannot.
pub fn init(format: LogFormat, filter: EnvFilter) {
    let _ = FORMAT.set(format);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    // The reload layer wraps the formatter, so it comes last.
    macro_rules! install {
        ($builder:expr) => {{
            let builder = $builder.with_filter_reloading();
            let handle = builder.reload_handle();
            let _ = SET_FILTER.set(Box::new(move |f| handle.reload(f).is_ok()));
            builder.init();
        }};
    }
    match format {
        LogFormat::Text => install!(builder),
        LogFormat::Json => install!(builder.event_format(Json)),
    }
}

/// Filters with `filter` from now on (a reload of `log_level` or
/// `log_queries`); false if no subscriber was installed by [`init`].
pub fn set_filter(filter: EnvFilter) -> bool {
    SET_FILTER.get().is_some_and(|set| set(filter))
}

/// A component event's fields, carried as one tracing field in JSON mode:
/// tracing's field names are static, the component's are not. Its `Debug`
/// form is the JSON object of the fields, which [`Json`] merges into the
/// line.
pub struct ComponentFields<'a>(pub &'a [(String, String)]);

impl fmt::Debug for ComponentFields<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let map: Map<String, Value> = self
            .0
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        f.write_str(&Value::Object(map).to_string())
    }
}

/// The text line of a component event: the message, then ` key=value` each.
pub fn text_line(message: &str, fields: &[(String, String)]) -> String {
    let mut line = message.to_owned();
    for (k, v) in fields {
        line.push(' ');
        line.push_str(k);
        line.push('=');
        line.push_str(v);
    }
    line
}

/// The JSON event format (see the module doc).
struct Json;

impl<S, N> FormatEvent<S, N> for Json
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut time = String::new();
        SystemTime.format_time(&mut Writer::new(&mut time))?;
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert("time".into(), Value::String(time));
        line.insert(
            "level".into(),
            Value::String(meta.level().as_str().to_ascii_lowercase()),
        );
        line.insert("target".into(), Value::String(meta.target().to_owned()));
        let mut visitor = Fields(&mut line);
        event.record(&mut visitor);
        writeln!(writer, "{}", Value::Object(line))
    }
}

/// Collects an event's fields into the line's object.
struct Fields<'a>(&'a mut Map<String, Value>);

impl Fields<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        self.0.insert(field.name().to_owned(), value);
    }
}

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == COMPONENT_FIELDS
            && let Ok(Value::Object(fields)) = serde_json::from_str(&text)
        {
            self.0.extend(fields);
            return;
        }
        self.put(field, Value::String(text));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_owned()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::String(value.to_string()));
    }
}

/// Emits a component event at `level` to `target`, in the current format
/// (tracing needs both as constants, hence a macro).
macro_rules! component_event {
    ($level:expr, $target:expr, $message:expr, $fields:expr) => {{
        match format() {
            LogFormat::Text => {
                let line = text_line($message, $fields);
                tracing::event!(target: $target, $level, "{line}");
            }
            LogFormat::Json => {
                tracing::event!(
                    target: $target,
                    $level,
                    component_fields = ?ComponentFields($fields),
                    "{}",
                    $message
                );
            }
        }
    }};
}

/// Renders one event of the component, in the current format. Query log
/// events ([`dnsproxy_core::shell::log::QUERY_EVENT`]) go to
/// [`QUERY_TARGET`], the rest to [`COMPONENT_TARGET`].
pub fn component_event(level: Level, message: &str, fields: &[(String, String)]) {
    use tracing::Level as T;
    if message == dnsproxy_core::shell::log::QUERY_EVENT {
        component_event!(T::INFO, QUERY_TARGET, message, fields);
        return;
    }
    match level {
        Level::Error => component_event!(T::ERROR, COMPONENT_TARGET, message, fields),
        Level::Warn => component_event!(T::WARN, COMPONENT_TARGET, message, fields),
        Level::Info => component_event!(T::INFO, COMPONENT_TARGET, message, fields),
        Level::Debug => component_event!(T::DEBUG, COMPONENT_TARGET, message, fields),
        Level::Trace => component_event!(T::TRACE, COMPONENT_TARGET, message, fields),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    /// Captures what the subscriber writes.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("not poisoned").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Capture {
        type Writer = Capture;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    /// The JSON lines `emit` writes, parsed.
    fn json_lines(emit: impl FnOnce()) -> Vec<Map<String, Value>> {
        let capture = Capture::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(capture.clone())
            .with_max_level(tracing::Level::TRACE)
            .event_format(Json)
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        let out =
            String::from_utf8(capture.0.lock().expect("not poisoned").clone()).expect("utf-8");
        out.lines()
            .map(|l| match serde_json::from_str(l) {
                Ok(Value::Object(o)) => o,
                other => panic!("not a JSON object: {l} ({other:?})"),
            })
            .collect()
    }

    #[test]
    fn host_events_are_one_json_object_per_line_with_typed_fields() {
        let lines = json_lines(|| {
            tracing::warn!(target: "dnsproxy::x", count = 3u64, ok = true, name = %"a b", "hello \"you\"");
        });
        let [line] = &lines[..] else {
            panic!("one line, got {lines:?}");
        };
        assert_eq!(line["level"], "warn");
        assert_eq!(line["target"], "dnsproxy::x");
        assert_eq!(line["message"], "hello \"you\"");
        assert_eq!(line["count"], 3);
        assert_eq!(line["ok"], true);
        assert_eq!(line["name"], "a b");
        let time = line["time"].as_str().expect("time is a string");
        assert!(time.ends_with('Z') && time.contains('T'), "{time}");
    }

    #[test]
    fn component_fields_become_keys_of_the_line() {
        let fields = [
            ("upstream".to_owned(), "quad9".to_owned()),
            ("error".to_owned(), "pin \"x\"\n".to_owned()),
        ];
        let lines = json_lines(|| {
            tracing::event!(
                target: COMPONENT_TARGET,
                tracing::Level::ERROR,
                component_fields = ?ComponentFields(&fields),
                "{}",
                "upstream refused"
            );
        });
        let [line] = &lines[..] else {
            panic!("one line, got {lines:?}");
        };
        assert_eq!(line["message"], "upstream refused");
        assert_eq!(line["level"], "error");
        assert_eq!(line["target"], COMPONENT_TARGET);
        assert_eq!(line["upstream"], "quad9");
        assert_eq!(line["error"], "pin \"x\"\n");
        assert!(!line.contains_key(COMPONENT_FIELDS));
    }

    #[test]
    fn text_lines_append_key_value_pairs() {
        let fields = [("client".to_owned(), "127.0.0.1:5".to_owned())];
        assert_eq!(text_line("query", &fields), "query client=127.0.0.1:5");
        assert_eq!(text_line("serving", &[]), "serving");
    }
}
