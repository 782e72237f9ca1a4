//! A reader of the Prometheus text exposition format (0.0.4): the samples
//! of a scrape, with what `dnsproxy top` asks of them (sums over labels,
//! histogram buckets). Comments (`# HELP`, `# TYPE`) are skipped: the
//! metric names say what each sample is.

use std::collections::BTreeMap;
use std::fmt;

/// One sample line: `name{label="value",...} value [timestamp]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric name, with its `_bucket`/`_sum`/`_count` suffix if any.
    pub name: String,
    /// Labels in the order written.
    pub labels: Vec<(String, String)>,
    /// The value (`+Inf`, `-Inf` and `NaN` included).
    pub value: f64,
}

impl Sample {
    /// The value of label `key`, if present.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A line that is not a sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What was wrong.
    pub what: &'static str,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.what)
    }
}

impl std::error::Error for ParseError {}

/// All samples of a scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scrape {
    /// In the order served.
    pub samples: Vec<Sample>,
}

impl Scrape {
    /// Parses an exposition. Blank lines and comments are skipped.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let mut samples = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            samples.push(sample(line).map_err(|what| ParseError { line: i + 1, what })?);
        }
        Ok(Self { samples })
    }

    /// The samples named `name`.
    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }

    /// The sum of every sample named `name`; `None` if there is none.
    pub fn sum(&self, name: &str) -> Option<f64> {
        self.named(name).map(|s| s.value).reduce(|a, b| a + b)
    }

    /// The sum of the samples named `name` whose label `key` is `value`.
    pub fn sum_where(&self, name: &str, key: &str, value: &str) -> Option<f64> {
        self.named(name)
            .filter(|s| s.label(key) == Some(value))
            .map(|s| s.value)
            .reduce(|a, b| a + b)
    }

    /// The samples named `name` summed by the value of label `key`.
    pub fn by_label(&self, name: &str, key: &str) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for s in self.named(name) {
            if let Some(v) = s.label(key) {
                *out.entry(v.to_owned()).or_insert(0.0) += s.value;
            }
        }
        out
    }

    /// The cumulative buckets of histogram `name` (`name_bucket` samples)
    /// whose labels include every pair of `with`, summed over the other
    /// labels, sorted by upper bound (`le`).
    pub fn buckets(&self, name: &str, with: &[(&str, &str)]) -> Vec<(f64, f64)> {
        let bucket = format!("{name}_bucket");
        let mut by_le: Vec<(f64, f64)> = Vec::new();
        for s in self.named(&bucket) {
            if !with.iter().all(|(k, v)| s.label(k) == Some(v)) {
                continue;
            }
            let Some(le) = s.label("le").and_then(parse_value) else {
                continue;
            };
            match by_le.iter_mut().find(|(b, _)| *b == le) {
                Some((_, count)) => *count += s.value,
                None => by_le.push((le, s.value)),
            }
        }
        by_le.sort_by(|a, b| a.0.total_cmp(&b.0));
        by_le
    }
}

/// One sample line.
fn sample(line: &str) -> Result<Sample, &'static str> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .ok_or("no value")?;
    let name = &line[..name_end];
    let valid_name = name.chars().enumerate().all(|(i, c)| {
        c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
    });
    if name.is_empty() || !valid_name {
        return Err("bad metric name");
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = after;
        loop {
            rest = rest.trim_start_matches([' ', ',']);
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = rest.find('=').ok_or("label without =")?;
            let key = rest[..eq].trim();
            if key.is_empty() {
                return Err("empty label name");
            }
            let (value, after) = quoted(rest[eq + 1..].trim_start())?;
            labels.push((key.to_owned(), value));
            rest = after;
        }
    }
    let mut fields = rest.split_whitespace();
    let value = fields
        .next()
        .and_then(parse_value)
        .ok_or("bad or missing value")?;
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// A double-quoted label value with `\\`, `\"` and `\n` escapes, and the
/// text after it.
fn quoted(text: &str) -> Result<(String, &str), &'static str> {
    let body = text.strip_prefix('"').ok_or("label value not quoted")?;
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &body[i + 1..])),
            '\\' => match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, c @ ('\\' | '"'))) => out.push(c),
                _ => return Err("bad escape in label value"),
            },
            c => out.push(c),
        }
    }
    Err("unterminated label value")
}

/// A sample value: a float, `+Inf`, `-Inf` or `NaN`.
fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP dnsproxy_queries_total Answers sent to clients.
# TYPE dnsproxy_queries_total counter
dnsproxy_queries_total{protocol="udp",rcode="NOERROR"} 90
dnsproxy_queries_total{protocol="tcp",rcode="NOERROR"} 5
dnsproxy_queries_total{protocol="udp",rcode="NXDOMAIN"} 5 1700000000000

dnsproxy_answer_duration_seconds_bucket{protocol="udp",le="0.001"} 10
dnsproxy_answer_duration_seconds_bucket{protocol="udp",le="+Inf"} 95
dnsproxy_answer_duration_seconds_bucket{protocol="tcp",le="0.001"} 1
dnsproxy_answer_duration_seconds_bucket{protocol="tcp",le="+Inf"} 5
dnsproxy_build_info{version="0.1.0 \"x\"\\y\n"} 1
dnsproxy_inflight 3
"#;

    #[test]
    fn parses_samples_labels_values_and_timestamps() {
        let scrape = Scrape::parse(TEXT).expect("valid");
        assert_eq!(scrape.samples.len(), 9);
        assert_eq!(scrape.sum("dnsproxy_queries_total"), Some(100.0));
        assert_eq!(
            scrape.sum_where("dnsproxy_queries_total", "rcode", "NXDOMAIN"),
            Some(5.0)
        );
        let by_rcode = scrape.by_label("dnsproxy_queries_total", "rcode");
        assert_eq!(by_rcode["NOERROR"], 95.0);
        assert_eq!(scrape.sum("dnsproxy_inflight"), Some(3.0));
        assert_eq!(scrape.sum("dnsproxy_missing"), None);
        let info = scrape.named("dnsproxy_build_info").next().expect("info");
        assert_eq!(info.label("version"), Some("0.1.0 \"x\"\\y\n"));
    }

    #[test]
    fn histogram_buckets_are_summed_over_other_labels_and_sorted() {
        let scrape = Scrape::parse(TEXT).expect("valid");
        assert_eq!(
            scrape.buckets("dnsproxy_answer_duration_seconds", &[]),
            [(0.001, 11.0), (f64::INFINITY, 100.0)]
        );
        assert_eq!(
            scrape.buckets("dnsproxy_answer_duration_seconds", &[("protocol", "tcp")]),
            [(0.001, 1.0), (f64::INFINITY, 5.0)]
        );
    }

    #[test]
    fn malformed_lines_are_errors_with_their_line_number() {
        for (text, line) in [
            ("ok 1\nbad{x=\"1\" 2\n", 2),
            ("x{a=1} 2", 1),
            ("x 1\n\nx{a=\"\\q\"} 1", 3),
            ("9x 1", 1),
            ("x", 1),
            ("x abc", 1),
        ] {
            let err = Scrape::parse(text).expect_err(text);
            assert_eq!(err.line, line, "{text}: {err}");
        }
    }
}
