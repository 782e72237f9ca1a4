//! Walking a message's sections (RFC 1035 §4.1): where the question and each
//! record lie, and the OPT pseudo-RR (RFC 6891 §6.1). Records are skipped by
//! their RDLENGTH; only names are validated, and only the OPT is decoded.

use std::ops::Range;
use std::time::Duration;

use super::name::{own_pointer, pointer_target, run_end, skip_name};
use super::{EDNS_UDP_PAYLOAD, HEADER_LEN, MessageError, Section, counts};

/// RFC 6891 §6.1.1.
pub(super) const TYPE_OPT: u16 = 41;
/// RFC 2931 §3: SIG(0) is a SIG RR, last in the additional section.
const TYPE_SIG: u16 = 24;
/// RFC 8945 §4.1: TSIG, last in the additional section.
const TYPE_TSIG: u16 = 250;
/// RFC 7828 §3.1: edns-tcp-keepalive.
pub(super) const OPTION_KEEPALIVE: u16 = 11;
/// RFC 7830 §4.
pub(super) const OPTION_PADDING: u16 = 12;
/// RFC 6891 §6.1.4: the DO bit in the OPT TTL field.
pub(super) const DO_BIT: u32 = 0x8000;
/// Size of the fixed part of an RR after its owner name (RFC 1035 §4.1.3).
const RR_FIXED_LEN: usize = 10;
/// Size of an OPT RR with empty RDATA: root owner plus the fixed part.
pub(super) const OPT_RR_LEN: usize = 1 + RR_FIXED_LEN;

/// One resource record's position and fixed fields (RFC 1035 §4.1.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Rr {
    pub(super) start: usize,
    pub(super) rtype: u16,
    pub(super) class: u16,
    pub(super) ttl: u32,
    pub(super) rdata: Range<usize>,
}

impl Rr {
    pub(super) fn end(&self) -> usize {
        self.rdata.end
    }
}

/// Reads the RR at `pos`, validating its owner name and that its RDATA fits.
pub(super) fn read_rr(msg: &[u8], pos: usize, section: Section) -> Result<Rr, MessageError> {
    let name_end = skip_name(msg, pos, section)?;
    let truncated = MessageError::Truncated { section };
    let fixed = msg
        .get(name_end..name_end + RR_FIXED_LEN)
        .ok_or(truncated.clone())?;
    let be16 = |i: usize| u16::from_be_bytes([fixed[i], fixed[i + 1]]);
    let rdata_start = name_end + RR_FIXED_LEN;
    let rdata = rdata_start..rdata_start + usize::from(be16(8));
    if rdata.end > msg.len() {
        return Err(truncated);
    }
    Ok(Rr {
        start: pos,
        rtype: be16(0),
        class: be16(2),
        ttl: u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]),
        rdata,
    })
}

/// Validates the question entry at `pos` (RFC 1035 §4.1.2) and returns its end.
pub(super) fn skip_question(msg: &[u8], pos: usize) -> Result<usize, MessageError> {
    let end = skip_name(msg, pos, Section::Question)? + 4;
    if end > msg.len() {
        return Err(MessageError::Truncated {
            section: Section::Question,
        });
    }
    Ok(end)
}

/// The OPT pseudo-RR of a message (RFC 6891 §6.1.2, §6.1.3). Ranges index
/// the bytes of the message it was found in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opt {
    /// The bytes of the whole OPT RR.
    pub range: Range<usize>,
    /// The bytes of its RDATA: the options (RFC 6891 §6.1.2).
    pub rdata: Range<usize>,
    /// The requestor's UDP payload size (the CLASS field, RFC 6891 §6.2.3).
    pub udp_payload: u16,
    /// DNSSEC OK (RFC 3225 §3, RFC 6891 §6.1.4).
    pub dnssec_ok: bool,
    /// Whether it carries a Padding option (RFC 7830 §3).
    pub has_padding: bool,
    /// Its edns-tcp-keepalive option (RFC 7828 §3.1), the last if several.
    pub keepalive: Option<Keepalive>,
}

/// An edns-tcp-keepalive option (RFC 7828 §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// The TIMEOUT field, in units of 100 ms, when the option holds exactly
    /// its two octets; `None` when it is empty, as clients send it (RFC 7828
    /// §3.2.1), or of any other length (malformed, RFC 7828 §3.1).
    pub timeout: Option<u16>,
}

impl Keepalive {
    /// The server's idle timeout, if the option carries one (RFC 7828
    /// §3.3.2): 0 asks the client to close the connection once idle.
    pub fn idle_timeout(self) -> Option<Duration> {
        self.timeout
            .map(|units| Duration::from_millis(u64::from(units) * 100))
    }
}

/// Decodes an RR of type OPT: its owner must be the root (RFC 6891 §6.1.2) and
/// its options must tile the RDATA exactly.
fn parse_opt(msg: &[u8], rr: &Rr) -> Result<Opt, MessageError> {
    if msg.get(rr.start) != Some(&0) {
        return Err(MessageError::OptNotRoot { offset: rr.start });
    }
    let mut has_padding = false;
    let mut keepalive = None;
    for option in options(msg, rr.rdata.clone()) {
        let (code, range) = option?;
        match code {
            OPTION_PADDING => has_padding = true,
            OPTION_KEEPALIVE => {
                let data = &msg[range.start + 4..range.end];
                keepalive = Some(Keepalive {
                    timeout: <[u8; 2]>::try_from(data).ok().map(u16::from_be_bytes),
                });
            }
            _ => {}
        }
    }
    Ok(Opt {
        range: rr.start..rr.end(),
        rdata: rr.rdata.clone(),
        udp_payload: rr.class,
        dnssec_ok: rr.ttl & DO_BIT != 0,
        has_padding,
        keepalive,
    })
}

/// The `{code, length, data}` options in an OPT RDATA (RFC 6891 §6.1.2), as
/// the code and the byte range of the whole option.
pub(super) fn options(
    msg: &[u8],
    rdata: Range<usize>,
) -> impl Iterator<Item = Result<(u16, Range<usize>), MessageError>> + '_ {
    let mut pos = rdata.start;
    std::iter::from_fn(move || {
        if pos >= rdata.end {
            return None;
        }
        let bad = MessageError::BadOptOptions { offset: pos };
        let Some(&[c0, c1, l0, l1]) = msg.get(pos..pos + 4).filter(|_| pos + 4 <= rdata.end) else {
            pos = rdata.end;
            return Some(Err(bad));
        };
        let end = pos + 4 + usize::from(u16::from_be_bytes([l0, l1]));
        if end > rdata.end {
            pos = rdata.end;
            return Some(Err(bad));
        }
        let option = (u16::from_be_bytes([c0, c1]), pos..end);
        pos = end;
        Some(Ok(option))
    })
}

/// Appends an OPT RR (RFC 6891 §6.1.2): root owner, payload
/// [`EDNS_UDP_PAYLOAD`], extended RCODE 0, version 0, the DO bit, and
/// `rdata`, its options (which fit a u16: the caller checked the message does).
pub(super) fn write_opt(out: &mut Vec<u8>, dnssec_ok: bool, rdata: &[u8]) {
    out.push(0);
    out.extend_from_slice(&TYPE_OPT.to_be_bytes());
    out.extend_from_slice(&EDNS_UDP_PAYLOAD.to_be_bytes());
    let ttl: u32 = if dnssec_ok { DO_BIT } else { 0 };
    out.extend_from_slice(&ttl.to_be_bytes());
    out.extend_from_slice(&u16::try_from(rdata.len()).unwrap_or(0).to_be_bytes());
    out.extend_from_slice(rdata);
}

/// The bytes of an OPT RR with the options of the codes in `drop` left out.
/// The OPT was validated by the walk, so its options tile its RDATA.
pub(super) fn opt_without(msg: &[u8], opt: &Opt, drop: &[u16]) -> Vec<u8> {
    let rdlen_at = opt.rdata.start - 2;
    let mut out = msg[opt.range.start..rdlen_at].to_vec();
    let mut rdata = Vec::with_capacity(opt.rdata.len());
    for (code, range) in options(msg, opt.rdata.clone()).flatten() {
        if !drop.contains(&code) {
            rdata.extend_from_slice(&msg[range]);
        }
    }
    // Fits: it is no longer than the original RDATA.
    out.extend_from_slice(&u16::try_from(rdata.len()).unwrap_or(0).to_be_bytes());
    out.extend_from_slice(&rdata);
    out
}

/// Where everything lies in a message that parses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Layout {
    /// End of the question section.
    pub(super) question_end: usize,
    /// End of the last record; bytes after it are not counted by the header.
    pub(super) end: usize,
    /// The OPT RR in the additional section.
    pub(super) opt: Option<Opt>,
    /// A TSIG or SIG(0) record is present in the additional section.
    pub(super) signed: bool,
}

impl Layout {
    /// Replaces the OPT RR of `msg` (laid out by `self`) with `with`, an OPT RR
    /// with the same owner and fixed fields and a subset of its options, with
    /// neither Padding nor edns-tcp-keepalive among them (the options the
    /// proxy removes), or with nothing to remove it; then updates the layout
    /// to match, so no second walk is needed: only the OPT and the records
    /// after it move, and nothing after the OPT is recorded but where the
    /// records end.
    ///
    /// Compression pointers of the records after the OPT are kept valid (see
    /// [`splice_records`]); `Ok(false)` and `Err` as there, with `msg` and the
    /// layout untouched. Without an OPT nothing changes. ARCOUNT is the
    /// caller's.
    pub(super) fn replace_opt(
        &mut self,
        msg: &mut Vec<u8>,
        with: &[u8],
    ) -> Result<bool, MessageError> {
        let Some(opt) = self.opt.clone() else {
            return Ok(true);
        };
        if !splice_records(msg, opt.range.clone(), with, self.end)? {
            return Ok(false);
        }
        self.end = self.end - opt.range.len() + with.len();
        let end = opt.range.start + with.len();
        self.opt = (!with.is_empty()).then_some(Opt {
            range: opt.range.start..end,
            rdata: opt.rdata.start..end,
            has_padding: false,
            keepalive: None,
            ..opt
        });
        Ok(true)
    }
}

/// What [`scan`] found before it hit an error.
#[derive(Debug, Default)]
pub(super) struct Partial {
    pub(super) question_end: Option<usize>,
    pub(super) opt: Option<Opt>,
}

/// Walks the whole message.
pub(super) fn walk(msg: &[u8]) -> Result<Layout, MessageError> {
    scan(msg, &mut Partial::default())
}

/// Walks the whole message, recording in `partial` what it found along the
/// way so a caller can still use it when a later part is malformed.
pub(super) fn scan(msg: &[u8], partial: &mut Partial) -> Result<Layout, MessageError> {
    let [qd, an, ns, ar] = counts(msg).ok_or(MessageError::TooShort { len: msg.len() })?;
    let mut pos = HEADER_LEN;
    for _ in 0..qd {
        pos = skip_question(msg, pos)?;
    }
    let question_end = pos;
    partial.question_end = Some(pos);
    let mut opt = None;
    let mut signed = false;
    for (section, count) in [
        (Section::Answer, an),
        (Section::Authority, ns),
        (Section::Additional, ar),
    ] {
        for _ in 0..count {
            let rr = read_rr(msg, pos, section)?;
            if section == Section::Additional {
                match rr.rtype {
                    TYPE_OPT if opt.is_some() => return Err(MessageError::MultipleOpt),
                    TYPE_OPT => {
                        let found = parse_opt(msg, &rr)?;
                        partial.opt = Some(found.clone());
                        opt = Some(found);
                    }
                    TYPE_SIG | TYPE_TSIG => signed = true,
                    _ => {}
                }
            }
            pos = rr.end();
        }
    }
    Ok(Layout {
        question_end,
        end: pos,
        opt,
        signed,
    })
}

/// One field of an RDATA layout, for the types whose RDATA may hold
/// compressed names.
#[derive(Clone, Copy)]
enum Field {
    Name,
    Fixed(usize),
    CharString,
}

/// RDATA layouts of the types a compressor may compress names in: those of
/// RFC 1035 (RFC 3597 §4) and those RFC 3597 §4 says receivers should also
/// decompress. The trailing fixed parts (e.g. SOA's counters) do not matter.
fn rdata_fields(rtype: u16) -> &'static [Field] {
    use Field::{CharString, Fixed, Name};
    match rtype {
        // NS, MD, MF, CNAME, MB, MG, MR, PTR, NXT
        2 | 3 | 4 | 5 | 7 | 8 | 9 | 12 | 30 => &[Name],
        // SOA, MINFO, RP
        6 | 14 | 17 => &[Name, Name],
        // MX, AFSDB, RT
        15 | 18 | 21 => &[Fixed(2), Name],
        // SIG (RFC 2535 §4.1): 18 fixed octets, then the signer's name
        24 => &[Fixed(18), Name],
        // PX
        26 => &[Fixed(2), Name, Name],
        // SRV
        33 => &[Fixed(6), Name],
        // NAPTR
        35 => &[Fixed(4), CharString, CharString, CharString, Name],
        _ => &[],
    }
}

/// Positions of the compression pointers that end names (owner names and
/// names in RDATA) of the records laid out from `from` to `end`, all in the
/// additional section.
pub(super) fn name_pointers(
    msg: &[u8],
    from: usize,
    end: usize,
) -> Result<Vec<usize>, MessageError> {
    let mut pointers = Vec::new();
    let mut pos = from;
    while pos < end {
        let rr = read_rr(msg, pos, Section::Additional)?;
        pointers.extend(own_pointer(msg, rr.start));
        let mut at = rr.rdata.start;
        let bad = MessageError::BadRdata { offset: rr.start };
        for field in rdata_fields(rr.rtype) {
            at = match *field {
                Field::Name => {
                    let name_end = skip_name(msg, at, Section::Additional)?;
                    pointers.extend(own_pointer(msg, at));
                    name_end
                }
                Field::Fixed(len) => at + len,
                Field::CharString => at + 1 + usize::from(*msg.get(at).ok_or(bad.clone())?),
            };
            if at > rr.rdata.end {
                return Err(bad);
            }
        }
        pos = rr.end();
    }
    Ok(pointers)
}

/// Replaces `msg[range]` with `with`, keeping valid the compression pointers of
/// the records that follow it up to `records_end` (RFC 1035 §4.1.4): those
/// pointing past the edit move with it. Returns `Ok(false)`, leaving `msg`
/// untouched, if a moved pointer would no longer fit in 14 bits, and an error
/// if one points into the edited bytes or to labels running into them (the
/// name would change).
pub(super) fn splice_records(
    msg: &mut Vec<u8>,
    range: Range<usize>,
    with: &[u8],
    records_end: usize,
) -> Result<bool, MessageError> {
    let removed = range.len();
    let inserted = with.len();
    let mut moving = Vec::new();
    for at in name_pointers(msg, range.end, records_end)? {
        let target = pointer_target(msg, at).ok_or(MessageError::BadPointer { offset: at })?;
        if target < range.start {
            // Its labels must end before the edit too. Runs reached through
            // further pointers lie before this one (see `name::Labels`).
            if run_end(msg, target).is_none_or(|end| end > range.start) {
                return Err(MessageError::PointerIntoOpt { offset: at });
            }
            continue;
        }
        if target < range.end {
            return Err(MessageError::PointerIntoOpt { offset: at });
        }
        moving.push((at, target));
    }
    // A name read through a pointer that moves must not run over a moving
    // pointer as label bytes, which a pointer landing off a label start
    // (malformed: RFC 1035 §4.1.4) can make it do: rewriting that pointer
    // would change the name, or leave the message unreadable.
    let starts: Vec<usize> = moving.iter().map(|&(at, _)| at).collect();
    if let Some(&(at, _)) = moving
        .iter()
        .find(|&&(_, target)| runs_over(msg, target, &starts))
    {
        return Err(MessageError::BadPointer { offset: at });
    }
    let mut moved = Vec::with_capacity(moving.len());
    for (at, target) in moving {
        let new_target = target - removed + inserted;
        let Ok(new_target) = u16::try_from(new_target) else {
            return Ok(false);
        };
        if new_target > 0x3FFF {
            return Ok(false);
        }
        moved.push((at - removed + inserted, new_target));
    }
    msg.splice(range, with.iter().copied());
    for (at, target) in moved {
        msg[at..at + 2].copy_from_slice(&(0xC000 | target).to_be_bytes());
    }
    Ok(true)
}

/// Whether the name at `pos` reads a byte of one of the pointers starting at
/// `pointers` as a label or label length before it ends; the pointer that
/// ends it is read as a pointer, and does not count.
fn runs_over(msg: &[u8], pos: usize, pointers: &[usize]) -> bool {
    let Some(end) = run_end(msg, pos) else {
        return true;
    };
    let own = own_pointer(msg, pos);
    pointers
        .iter()
        .any(|&p| Some(p) != own && p + 2 > pos && p < end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6891_opt_fields_are_decoded() {
        let mut m = vec![0; 12];
        m[11] = 1; // ARCOUNT
        // root, OPT, payload 4096, ext-rcode 0, version 0, DO, rdlen 8: padding(4) + cookie-less 0-len option 10
        m.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0x80, 0, 0, 8]);
        m.extend_from_slice(&[0, 12, 0, 0, 0, 10, 0, 0]);
        let layout = walk(&m).expect("valid");
        let opt = layout.opt.expect("has OPT");
        assert_eq!(opt.udp_payload, 4096);
        assert!(opt.dnssec_ok);
        assert!(opt.has_padding);
        assert_eq!(opt.range, 12..m.len());
        assert!(!layout.signed);
    }

    #[test]
    fn rfc6891_opt_option_overrunning_rdata_is_rejected() {
        let mut m = vec![0; 12];
        m[11] = 1;
        m.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 6]);
        m.extend_from_slice(&[0, 12, 0, 4, 0, 0]);
        assert_eq!(walk(&m), Err(MessageError::BadOptOptions { offset: 23 }));
    }

    #[test]
    fn rfc6891_opt_with_non_root_owner_is_rejected() {
        let mut m = vec![0; 12];
        m[11] = 1;
        m.extend_from_slice(&[1, b'a', 0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(walk(&m), Err(MessageError::OptNotRoot { offset: 12 }));
    }

    #[test]
    fn rfc6891_two_opt_records_are_rejected() {
        let mut m = vec![0; 12];
        m[11] = 2;
        for _ in 0..2 {
            m.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0]);
        }
        assert_eq!(walk(&m), Err(MessageError::MultipleOpt));
    }

    #[test]
    fn rr_with_rdata_past_the_end_is_truncated() {
        let mut m = vec![0; 12];
        m[7] = 1; // ANCOUNT
        m.extend_from_slice(&[0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 1, 2, 3]);
        assert_eq!(
            walk(&m),
            Err(MessageError::Truncated {
                section: Section::Answer
            })
        );
    }

    #[test]
    fn scan_keeps_what_it_found_before_an_error() {
        let mut m = vec![0; 12];
        m[5] = 1; // QDCOUNT
        m[11] = 2; // ARCOUNT, but only one record follows
        m.extend_from_slice(&[1, b'a', 0, 0, 1, 0, 1]);
        m.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0]);
        let mut partial = Partial::default();
        assert!(scan(&m, &mut partial).is_err());
        assert_eq!(partial.question_end, Some(19));
        assert_eq!(partial.opt.map(|o| o.range), Some(19..30));
    }

    #[test]
    fn rfc1035_splice_moves_pointers_that_follow_the_edit() {
        let mut m = vec![0; 12];
        m[11] = 3;
        // 12: OPT (11 bytes), 23: a.example A, 48: CNAME record owned by a
        // pointer to 23 whose RDATA points to 25 ("example").
        m.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0]);
        m.extend_from_slice(b"\x01a\x07example\x00");
        m.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 1, 2, 3, 4]);
        m.extend_from_slice(&[0xC0, 23, 0, 5, 0, 1, 0, 0, 0, 0, 0, 2, 0xC0, 25]);
        let end = m.len();
        assert_eq!(splice_records(&mut m, 12..23, &[], end), Ok(true));
        assert_eq!(&m[12..23], b"\x01a\x07example\x00");
        assert_eq!(&m[37..39], &[0xC0, 12]);
        assert_eq!(&m[49..51], &[0xC0, 14]);
    }

    #[test]
    fn splice_refuses_a_pointer_to_labels_running_into_the_removed_bytes() {
        let mut m = vec![0; 12];
        m[11] = 3;
        // 12: a TXT record whose one RDATA byte, at 23, reads as a label of
        // length 1 holding the OPT's root owner (24), then a root at 25 (the
        // OPT's type). 24: the OPT. 35: a record owned by a pointer to 23.
        m.extend_from_slice(&[0, 0, 16, 0, 1, 0, 0, 0, 0, 0, 1, 1]);
        m.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0]);
        m.extend_from_slice(&[0xC0, 23, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0]);
        let end = m.len();
        walk(&m).expect("valid");
        let before = m.clone();
        assert_eq!(
            splice_records(&mut m, 24..35, &[], end),
            Err(MessageError::PointerIntoOpt { offset: 35 })
        );
        // Inserting where the labels cross is refused too.
        assert_eq!(
            splice_records(&mut m, 24..24, &[0; 4], end),
            Err(MessageError::PointerIntoOpt { offset: 35 })
        );
        assert_eq!(m, before);
    }

    #[test]
    fn splice_refuses_to_orphan_a_pointer_into_the_removed_bytes() {
        let mut m = vec![0; 12];
        m[11] = 2;
        m.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0]);
        m.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0]);
        let end = m.len();
        assert_eq!(
            splice_records(&mut m, 12..23, &[], end),
            Err(MessageError::PointerIntoOpt { offset: 23 })
        );
    }
}
