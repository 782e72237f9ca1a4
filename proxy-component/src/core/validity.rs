//! The notAfter time of a DER certificate (RFC 5280 §4.1.2.5), for the
//! certificate-expiry metric. Reads only the path to it: Certificate ->
//! TBSCertificate -> (version) serial, signature, issuer -> validity. The
//! certificate was verified by webpki before this runs; this never decides
//! anything about trust.

/// A DER element: its tag and contents, and what follows it.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

const SEQUENCE: u8 = 0x30;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
/// `[0] EXPLICIT Version`.
const VERSION: u8 = 0xa0;

/// notAfter of a DER-encoded X.509 certificate, in seconds since 1970;
/// `None` if the DER does not have the expected shape.
pub fn not_after(cert_der: &[u8]) -> Option<i64> {
    let (SEQUENCE, cert, _) = element(cert_der)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = element(cert)? else {
        return None;
    };
    let (tag, _, mut rest) = element(tbs)?;
    if tag == VERSION {
        // Skip the serial number too.
        rest = element(rest)?.2;
    }
    // signature AlgorithmIdentifier, issuer Name.
    let rest = element(rest)?.2;
    let rest = element(rest)?.2;
    let (SEQUENCE, validity, _) = element(rest)? else {
        return None;
    };
    let (_, _, after) = element(validity)?;
    let (tag, time, _) = element(after)?;
    parse_time(tag, time)
}

/// UTCTime `YYMMDDHHMMSSZ` (years 1950-2049, RFC 5280 §4.1.2.5.1) or
/// GeneralizedTime `YYYYMMDDHHMMSSZ` (§4.1.2.5.2).
fn parse_time(tag: u8, text: &[u8]) -> Option<i64> {
    let digits = |s: &[u8]| -> Option<i64> {
        s.iter().try_fold(0i64, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    };
    let (year, rest) = match (tag, text.len()) {
        (UTC_TIME, 13) => {
            let yy = digits(&text[..2])?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        (GENERALIZED_TIME, 15) => (digits(&text[..4])?, &text[4..]),
        _ => return None,
    };
    if rest[10] != b'Z' {
        return None;
    }
    let month = digits(&rest[0..2])?;
    let day = digits(&rest[2..4])?;
    let (h, m, s) = (
        digits(&rest[4..6])?,
        digits(&rest[6..8])?,
        digits(&rest[8..10])?,
    );
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate skeleton: TBSCertificate with the given version flag
    /// and validity times, then a dummy signature.
    fn cert(version: bool, not_after: (u8, &str)) -> Vec<u8> {
        fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
            let mut out = vec![tag];
            if body.len() < 0x80 {
                out.push(body.len() as u8);
            } else {
                out.push(0x82);
                out.extend_from_slice(&(body.len() as u16).to_be_bytes());
            }
            out.extend_from_slice(body);
            out
        }
        let mut tbs = Vec::new();
        if version {
            tbs.extend(tlv(VERSION, &tlv(0x02, &[2])));
        }
        tbs.extend(tlv(0x02, &[0x01; 20])); // serial
        tbs.extend(tlv(SEQUENCE, &[0x06, 0x01, 0x00])); // algorithm
        tbs.extend(tlv(SEQUENCE, &[0x31; 150])); // issuer (long form)
        let mut validity = tlv(UTC_TIME, b"250101000000Z");
        validity.extend(tlv(not_after.0, not_after.1.as_bytes()));
        tbs.extend(tlv(SEQUENCE, &validity));
        tbs.extend(tlv(SEQUENCE, &[0x31; 10])); // subject
        let mut body = tlv(SEQUENCE, &tbs);
        body.extend(tlv(SEQUENCE, &[0x06, 0x01, 0x00]));
        body.extend(tlv(0x03, &[0x00, 0xff]));
        tlv(SEQUENCE, &body)
    }

    #[test]
    fn rfc5280_utc_time_and_generalized_time() {
        assert_eq!(
            not_after(&cert(true, (UTC_TIME, "261126094000Z"))),
            Some(1_795_686_000)
        );
        assert_eq!(
            not_after(&cert(false, (GENERALIZED_TIME, "21250101000000Z"))),
            Some(4_891_363_200)
        );
        // UTCTime years 50-99 are 19xx (RFC 5280 §4.1.2.5.1).
        assert_eq!(not_after(&cert(true, (UTC_TIME, "700101000000Z"))), Some(0));
    }

    #[test]
    fn malformed_der_has_no_time() {
        assert_eq!(not_after(&cert(true, (UTC_TIME, "26112609400Z"))), None);
        assert_eq!(not_after(&cert(true, (UTC_TIME, "261326094000Z"))), None);
        assert_eq!(not_after(&cert(true, (0x04, "261126094000Z"))), None);
        let whole = cert(true, (UTC_TIME, "261126094000Z"));
        for cut in 0..whole.len() - 1 {
            // Truncated input never panics; the outer length no longer fits.
            assert_eq!(not_after(&whole[..cut]), None, "{cut}");
        }
        assert_eq!(not_after(&[]), None);
    }
}
