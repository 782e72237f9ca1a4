//! Minimal wire-format helpers for the checks: header fields, and a loose walk
//! of a message the core has already validated, to find where things lie
//! without using the core's own walker.

use std::ops::Range;

use hickory_proto::op::Message;

/// Header flag bits of the third octet (RFC 1035 §4.1.1).
pub(crate) const QR: u8 = 0x80;
pub(crate) const OPCODE_MASK: u8 = 0x78;
pub(crate) const TC: u8 = 0x02;
pub(crate) const RD: u8 = 0x01;
/// RA, in the fourth octet.
pub(crate) const RA: u8 = 0x80;
pub(crate) const HEADER_LEN: usize = 12;
pub(crate) const TYPE_OPT: u16 = 41;
pub(crate) const OPTION_KEEPALIVE: u16 = 11;
pub(crate) const OPTION_PADDING: u16 = 12;

pub(crate) fn be16(msg: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*msg.get(at)?, *msg.get(at + 1)?]))
}

/// QDCOUNT, ANCOUNT, NSCOUNT, ARCOUNT.
pub(crate) fn counts(msg: &[u8]) -> Option<[u16; 4]> {
    if msg.len() < HEADER_LEN {
        return None;
    }
    Some([4, 6, 8, 10].map(|at| be16(msg, at).unwrap_or_default()))
}

/// The end of the name at `pos`: after its root label or its first pointer.
/// No validity checks beyond staying in bounds.
pub(crate) fn skip_name(msg: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let len = *msg.get(pos)?;
        match len {
            0 => return Some(pos + 1),
            l if l & 0xC0 == 0xC0 => return Some(pos + 2).filter(|&end| end <= msg.len()),
            l => pos += 1 + usize::from(l),
        }
    }
}

/// One record of a message: where it starts and ends, its type and RDATA.
#[derive(Debug, Clone)]
pub(crate) struct Rr {
    pub(crate) range: Range<usize>,
    pub(crate) rtype: u16,
    pub(crate) rdata: Range<usize>,
}

/// Where the question section ends and the records (answer, authority,
/// additional, in order, tagged 0, 1, 2) lie.
pub(crate) struct Layout {
    pub(crate) question_end: usize,
    pub(crate) records: Vec<(u8, Rr)>,
}

impl Layout {
    /// The OPT RR of the additional section, if any.
    pub(crate) fn opt(&self) -> Option<&Rr> {
        self.records
            .iter()
            .find(|(section, rr)| *section == 2 && rr.rtype == TYPE_OPT)
            .map(|(_, rr)| rr)
    }
}

/// Lays out a message by its counts and RDLENGTHs.
pub(crate) fn layout(msg: &[u8]) -> Option<Layout> {
    let [qd, an, ns, ar] = counts(msg)?;
    let mut pos = HEADER_LEN;
    for _ in 0..qd {
        pos = skip_name(msg, pos)? + 4;
    }
    let question_end = pos;
    let mut records = Vec::new();
    for (section, count) in [(0u8, an), (1, ns), (2, ar)] {
        for _ in 0..count {
            let start = pos;
            let fixed = skip_name(msg, pos)?;
            let rtype = be16(msg, fixed)?;
            let rdata_start = fixed + 10;
            let rdata = rdata_start..rdata_start + usize::from(be16(msg, fixed + 8)?);
            pos = rdata.end;
            records.push((
                section,
                Rr {
                    range: start..pos,
                    rtype,
                    rdata,
                },
            ));
        }
    }
    (pos <= msg.len()).then_some(Layout {
        question_end,
        records,
    })
}

/// The `(code, whole option bytes)` of an OPT RDATA, if the options tile it.
pub(crate) fn opt_options(msg: &[u8], rdata: Range<usize>) -> Option<Vec<(u16, &[u8])>> {
    let mut out = Vec::new();
    let mut pos = rdata.start;
    while pos < rdata.end {
        let end = pos + 4 + usize::from(be16(msg, pos + 2)?);
        if end > rdata.end {
            return None;
        }
        out.push((be16(msg, pos)?, msg.get(pos..end)?));
        pos = end;
    }
    Some(out)
}

/// The message as hickory-proto reads it, if it does.
pub(crate) fn hickory(msg: &[u8]) -> Option<Message> {
    Message::from_vec(msg).ok()
}
