//! Parsers for single values. Each returns what it expected on failure; the
//! caller adds the key, the value and its origin.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use dnsproxy_core::core::pins::Pin;
use dnsproxy_core::shell::tls::{self, TrustError};
use rustls_pki_types::DnsName;

use super::defaults::{DurationLimits, IntLimits};
use super::error::Expected;
use super::{CaBundle, Level, LogFormat, Strategy};

/// A port from 1 to 65535.
pub(super) fn port(text: &str) -> Result<u16, Expected> {
    match digits(text).and_then(|t| t.parse::<u16>().ok()) {
        Some(port) if port != 0 => Ok(port),
        _ => Err(Expected::Port),
    }
}

/// An IP literal, optionally in brackets (`[::1]`).
pub(super) fn ip(text: &str) -> Option<IpAddr> {
    let bare = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    bare.parse().ok()
}

/// `local_host`: IP literals, comma-separated (`0.0.0.0, ::`), each served
/// on `local_port`. A repeated address counts once; a wildcard with another
/// address of its family is refused (the wildcard covers it, and the two
/// binds would collide).
pub(super) fn local_hosts(text: &str) -> Result<Vec<IpAddr>, Expected> {
    let mut out: Vec<IpAddr> = Vec::new();
    for item in text.split(',').map(str::trim) {
        let addr = ip(item).ok_or(Expected::LocalHost)?;
        if !out.contains(&addr) {
            out.push(addr);
        }
    }
    let overlaps = |v4: bool| {
        let family: Vec<_> = out.iter().filter(|a| a.is_ipv4() == v4).collect();
        family.len() > 1 && family.iter().any(|a| a.is_unspecified())
    };
    if overlaps(true) || overlaps(false) {
        return Err(Expected::LocalHostOverlap);
    }
    Ok(out)
}

/// `metrics_listen`: an IP literal and a port (`127.0.0.1:9153`,
/// `[::1]:9153`).
pub(super) fn metrics_listen(text: &str) -> Result<SocketAddr, Expected> {
    text.trim()
        .parse::<SocketAddr>()
        .ok()
        .filter(|a| a.port() != 0)
        .ok_or(Expected::ListenAddr)
}

/// `tls_host`: an IP literal. A host name gets its own message, because the
/// name belongs in `tls_hostname` (the proxy does no name lookups).
pub(super) fn tls_host(text: &str) -> Result<IpAddr, Expected> {
    ip(text).ok_or_else(|| {
        if DnsName::try_from(text).is_ok() && text.bytes().any(|b| b.is_ascii_alphabetic()) {
            Expected::IpNotHostname
        } else {
            Expected::IpAddr
        }
    })
}

/// `tls_hostname`: a DNS name as rustls accepts it for SNI and verification
/// (RFC 6066 §3: SNI carries host names, never IP literals).
pub(super) fn dns_name(text: &str) -> Result<String, Expected> {
    match DnsName::try_from(text) {
        Ok(_) if ip(text).is_none() => Ok(text.to_owned()),
        _ => Err(Expected::DnsName),
    }
}

/// An SPKI pin: base64 (RFC 4648 §4, padded, as in RFC 7469 §2.4) of a SHA-256
/// digest, decoded here once so nothing downstream parses it again.
pub(super) fn pin(text: &str) -> Result<Pin, Expected> {
    Pin::from_base64(text).map_err(|_| Expected::Pin)
}

/// `4s`, `1500ms`, `1.5s`, or a bare number of seconds, within `limits`.
pub(super) fn duration(text: &str, limits: DurationLimits) -> Result<Duration, Expected> {
    let expected = || Expected::Duration {
        min: limits.min,
        max: limits.max,
    };
    let (number, nanos_per_unit) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1_000_000)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1_000_000_000)
    } else {
        (text, 1_000_000_000)
    };
    let nanos = decimal_nanos(number.trim_end(), nanos_per_unit).ok_or_else(expected)?;
    let value = u64::try_from(nanos)
        .map(Duration::from_nanos)
        .map_err(|_| expected())?;
    if value < limits.min || value > limits.max {
        return Err(expected());
    }
    Ok(value)
}

/// An integer within `limits`.
pub(super) fn integer(text: &str, limits: IntLimits) -> Result<u32, Expected> {
    match digits(text).and_then(|t| t.parse::<u32>().ok()) {
        Some(n) if (limits.min..=limits.max).contains(&n) => Ok(n),
        _ => Err(Expected::Integer {
            min: limits.min,
            max: limits.max,
        }),
    }
}

/// A log level name, any case.
pub(super) fn log_level(text: &str) -> Result<Level, Expected> {
    Level::from_name(text).ok_or(Expected::LogLevel)
}

/// `workers`: `auto` (any case; `None`, one per usable CPU) or a count.
pub(super) fn workers(text: &str) -> Result<Option<std::num::NonZeroUsize>, Expected> {
    if text.eq_ignore_ascii_case("auto") {
        return Ok(None);
    }
    match digits(text).and_then(|t| t.parse::<usize>().ok()) {
        Some(n) if n <= super::defaults::MAX_WORKERS => std::num::NonZeroUsize::new(n)
            .map(Some)
            .ok_or(Expected::Workers),
        _ => Err(Expected::Workers),
    }
}

/// The `strategy` name, any case.
pub(super) fn strategy(text: &str) -> Result<Strategy, Expected> {
    match text.to_ascii_lowercase().as_str() {
        "priority" => Ok(Strategy::Priority),
        "round_robin" => Ok(Strategy::RoundRobin),
        "fastest" => Ok(Strategy::Fastest),
        _ => Err(Expected::Strategy),
    }
}

pub(super) fn log_format(text: &str) -> Result<LogFormat, Expected> {
    LogFormat::from_name(text).ok_or(Expected::LogFormat)
}

/// A yes/no value, any case: the words Python's configparser takes for a
/// boolean (`getboolean`), so settings.ini reads as it always did.
pub(super) fn boolean(text: &str) -> Result<bool, Expected> {
    const TRUE: [&str; 4] = ["true", "yes", "on", "1"];
    const FALSE: [&str; 4] = ["false", "no", "off", "0"];
    let is = |words: [&str; 4]| words.iter().any(|w| w.eq_ignore_ascii_case(text));
    if is(TRUE) {
        Ok(true)
    } else if is(FALSE) {
        Ok(false)
    } else {
        Err(Expected::Boolean)
    }
}

/// `tls_ca_file`: reads the bundle now and parses every certificate into a
/// trust anchor as the component will, so a bad path or a broken bundle fails
/// at start-up (and in `dnsproxy check`), not at the first query. Relative
/// paths are relative to the working directory, whichever layer names them.
pub(super) fn ca_file(text: &str) -> Result<CaBundle, Expected> {
    let path = PathBuf::from(text);
    let pem = std::fs::read_to_string(Path::new(text)).map_err(Expected::ReadableFile)?;
    match tls::anchors_from_pem(&pem) {
        Ok(_) => Ok(CaBundle { path, pem }),
        Err(TrustError::Empty) => Err(Expected::PemCertificate),
        Err(e) => Err(Expected::ParsableCertificate(e.to_string())),
    }
}

/// `text` if it is a non-empty run of ASCII digits (`str::parse` would also
/// take a leading `+`).
fn digits(text: &str) -> Option<&str> {
    (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())).then_some(text)
}

/// `int[.frac]` times `nanos_per_unit`, truncated to whole nanoseconds.
fn decimal_nanos(text: &str, nanos_per_unit: u128) -> Option<u128> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Digits beyond nanoseconds do not matter; capping them keeps 10^len small.
    let frac = &frac[..frac.len().min(9)];
    let scale = 10u128.pow(u32::try_from(frac.len()).ok()?);
    let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let frac: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    let scaled = int.checked_mul(scale)?.checked_add(frac)?;
    Some(scaled.checked_mul(nanos_per_unit)? / scale)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::defaults;

    #[test]
    fn durations_accept_seconds_milliseconds_fractions_and_bare_numbers() {
        let limits = DurationLimits {
            default: Duration::ZERO,
            min: Duration::ZERO,
            max: Duration::from_secs(100),
        };
        for (text, want) in [
            ("4s", Duration::from_secs(4)),
            ("1500ms", Duration::from_millis(1500)),
            ("1.5s", Duration::from_millis(1500)),
            ("4", Duration::from_secs(4)),
            ("0.1", Duration::from_millis(100)),
            (".25s", Duration::from_millis(250)),
            ("2.s", Duration::from_secs(2)),
            ("2 s", Duration::from_secs(2)),
            ("1.5ms", Duration::from_micros(1500)),
            ("0.0000000019", Duration::from_nanos(1)),
        ] {
            assert_eq!(duration(text, limits).ok(), Some(want), "{text}");
        }
        for bad in [
            "", "s", ".", "-1s", "+1", "1m", "1h", "1e3", "1.2.3", "1,5s", "four",
        ] {
            assert!(duration(bad, limits).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_outside_limits_are_rejected() {
        let limits = defaults::QUERY_TIMEOUT;
        assert!(duration("99ms", limits).is_err());
        assert!(duration("100ms", limits).is_ok());
        assert!(duration("60s", limits).is_ok());
        assert!(duration("60.001", limits).is_err());
        assert!(duration("99999999999999999999999", limits).is_err());
    }

    #[test]
    fn ports_are_1_to_65535() {
        assert_eq!(port("853").ok(), Some(853));
        assert_eq!(port("65535").ok(), Some(65535));
        for bad in ["0", "65536", "+53", "-1", "abc", ""] {
            assert!(port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tls_host_names_get_the_tls_hostname_hint() {
        assert!(matches!(
            tls_host("dns.quad9.net"),
            Err(Expected::IpNotHostname)
        ));
        assert!(matches!(tls_host("1.1.1"), Err(Expected::IpAddr)));
        assert!(matches!(tls_host("1.1.1.1:853"), Err(Expected::IpAddr)));
        assert_eq!(tls_host("[2620:fe::fe]").ok(), "2620:fe::fe".parse().ok());
    }

    #[test]
    fn tls_hostname_must_be_a_dns_name_not_an_ip() {
        assert!(dns_name("cloudflare-dns.com").is_ok());
        for bad in ["1.1.1.1", "::1", "bad name", "", "a..b"] {
            assert!(dns_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pins_are_base64_of_32_bytes() {
        assert!(pin("47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=").is_ok());
        for bad in [
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU", // unpadded
            "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU=", // URL-safe alphabet
            "AAAA",                                        // 3 bytes
            "xyz",
        ] {
            assert!(pin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn integers_and_log_levels() {
        assert_eq!(integer("65536", defaults::MAX_INFLIGHT).ok(), Some(65536));
        assert!(integer("0", defaults::MAX_INFLIGHT).is_err());
        assert!(integer("65536", defaults::MAX_TCP_CLIENTS).is_err());
        assert!(integer("1k", defaults::MAX_TCP_CLIENTS).is_err());
        assert_eq!(log_level("DEBUG").ok(), Some(Level::Debug));
        assert!(log_level("verbose").is_err());
    }

    #[test]
    fn log_formats_and_booleans() {
        assert_eq!(log_format("JSON").ok(), Some(LogFormat::Json));
        assert_eq!(log_format("text").ok(), Some(LogFormat::Text));
        assert!(log_format("logfmt").is_err());
        for yes in ["true", "Yes", "ON", "1"] {
            assert_eq!(boolean(yes).ok(), Some(true), "{yes}");
        }
        for no in ["false", "No", "off", "0"] {
            assert_eq!(boolean(no).ok(), Some(false), "{no}");
        }
        for bad in ["2", "y", "enabled", "truee"] {
            assert!(boolean(bad).is_err(), "{bad}");
        }
    }
}
