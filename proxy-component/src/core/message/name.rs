//! Domain names on the wire (RFC 1035 §3.1, §4.1.4): validation, skipping and
//! comparison without decompressing into a buffer.

use super::{HEADER_LEN, MessageError, Section};

/// RFC 1035 §3.1: a name is at most 255 octets on the wire, root label included.
const MAX_NAME_LEN: usize = 255;

/// A name has at most 127 labels, and every pointer emitted by a real
/// compressor is followed by at least one label, so more hops than this
/// can only come from a crafted chain. Bounds the work per name.
const MAX_POINTER_HOPS: u8 = 127;

/// The labels of the name at `pos`, following compression pointers.
///
/// Loops are impossible by construction: every pointer must point strictly
/// before the start of the run of labels it ends (RFC 1035 §4.1.4: a pointer
/// refers to a *prior* occurrence of a name), and never into the header, and
/// the run it points to must end before that start too, so each run lies
/// wholly before the one that pointed to it. Hops are also capped. (A run
/// that crossed into the name pointing to it would make the name depend on
/// bytes after it: a truncated copy of a message could then no longer be
/// read.)
/// Yields each non-root label; ends after the root label or at the first
/// error, after which [`Labels::end`] tells where the name's own bytes end.
#[derive(Debug, Clone)]
pub(super) struct Labels<'a> {
    msg: &'a [u8],
    pos: usize,
    /// Where the current run of labels started: pointers must point before it.
    run_start: usize,
    /// Where the current run must end: the start of the run whose pointer
    /// led here (no limit for the name's own bytes).
    limit: usize,
    /// Offset of the pointer that led to the current run, for errors.
    pointer_at: usize,
    /// End of the name's bytes at its own position: after the root label, or
    /// after the first pointer.
    end: Option<usize>,
    wire_len: usize,
    hops: u8,
    section: Section,
    done: bool,
}

impl<'a> Labels<'a> {
    pub(super) fn new(msg: &'a [u8], pos: usize, section: Section) -> Self {
        Self {
            msg,
            pos,
            run_start: pos,
            limit: usize::MAX,
            pointer_at: pos,
            end: None,
            wire_len: 0,
            hops: 0,
            section,
            done: false,
        }
    }

    fn fail(&mut self, error: MessageError) -> Option<Result<&'a [u8], MessageError>> {
        self.done = true;
        Some(Err(error))
    }
}

impl<'a> Iterator for Labels<'a> {
    type Item = Result<&'a [u8], MessageError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            let at = self.pos;
            let Some(&len_byte) = self.msg.get(at) else {
                return self.fail(MessageError::Truncated {
                    section: self.section,
                });
            };
            match len_byte & 0xC0 {
                0x00 => {
                    let len = usize::from(len_byte);
                    if at + 1 + len > self.limit {
                        return self.fail(MessageError::BadPointer {
                            offset: self.pointer_at,
                        });
                    }
                    self.wire_len += 1 + len;
                    if self.wire_len > MAX_NAME_LEN {
                        return self.fail(MessageError::NameTooLong { offset: at });
                    }
                    if len == 0 {
                        self.end.get_or_insert(at + 1);
                        self.done = true;
                        return None;
                    }
                    let Some(label) = self.msg.get(at + 1..at + 1 + len) else {
                        return self.fail(MessageError::Truncated {
                            section: self.section,
                        });
                    };
                    self.pos = at + 1 + len;
                    return Some(Ok(label));
                }
                0xC0 => {
                    if at + 2 > self.limit {
                        return self.fail(MessageError::BadPointer {
                            offset: self.pointer_at,
                        });
                    }
                    let Some(&low) = self.msg.get(at + 1) else {
                        return self.fail(MessageError::Truncated {
                            section: self.section,
                        });
                    };
                    let target = usize::from(u16::from_be_bytes([len_byte & 0x3F, low]));
                    self.hops += 1;
                    if target >= self.run_start
                        || target < HEADER_LEN
                        || self.hops > MAX_POINTER_HOPS
                    {
                        return self.fail(MessageError::BadPointer { offset: at });
                    }
                    self.end.get_or_insert(at + 2);
                    self.limit = self.run_start;
                    self.pointer_at = at;
                    self.pos = target;
                    self.run_start = target;
                }
                // 0b01 (RFC 6891 §5, extended labels, deprecated) and 0b10
                // (reserved, RFC 1035 §4.1.4): nothing we can parse.
                _ => return self.fail(MessageError::BadLabel { offset: at }),
            }
        }
    }
}

impl Labels<'_> {
    /// Offset just past the name's own bytes, once iteration ended without error.
    pub(super) fn end(&self) -> Option<usize> {
        self.end
    }
}

/// Validates the name at `pos` and returns the offset just past its own bytes.
pub(super) fn skip_name(msg: &[u8], pos: usize, section: Section) -> Result<usize, MessageError> {
    let mut labels = Labels::new(msg, pos, section);
    for label in labels.by_ref() {
        label?;
    }
    // `end` is set whenever iteration stops without an error.
    labels.end().ok_or(MessageError::Truncated { section })
}

/// Whether two (valid) names are equal, ASCII case-insensitively (RFC 4343 §3).
/// Any malformation makes them unequal.
pub(super) fn names_equal(a: &[u8], a_pos: usize, b: &[u8], b_pos: usize) -> bool {
    let mut a = Labels::new(a, a_pos, Section::Question);
    let mut b = Labels::new(b, b_pos, Section::Question);
    loop {
        match (a.next(), b.next()) {
            (None, None) => return a.end().is_some() && b.end().is_some(),
            (Some(Ok(x)), Some(Ok(y))) if x.eq_ignore_ascii_case(y) => {}
            _ => return false,
        }
    }
}

/// The position of the compression pointer ending the (valid) name at `pos`,
/// if its own bytes end in one.
pub(super) fn own_pointer(msg: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let len = *msg.get(pos)?;
        match len & 0xC0 {
            0x00 if len == 0 => return None,
            0x00 => pos += 1 + usize::from(len),
            0xC0 => return Some(pos),
            _ => return None,
        }
    }
}

/// The end of the run of labels at `pos` (in a valid name): just past the root
/// label or the pointer that ends it.
pub(super) fn run_end(msg: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let len = *msg.get(pos)?;
        match len & 0xC0 {
            0x00 if len == 0 => return Some(pos + 1),
            0x00 => pos += 1 + usize::from(len),
            0xC0 => return Some(pos + 2),
            _ => return None,
        }
    }
}

/// The target of the compression pointer at `pos`.
pub(super) fn pointer_target(msg: &[u8], pos: usize) -> Option<usize> {
    let hi = msg.get(pos)?;
    let lo = msg.get(pos + 1)?;
    Some(usize::from(u16::from_be_bytes([hi & 0x3F, *lo])))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 12-byte header followed by `body`.
    fn msg(body: &[u8]) -> Vec<u8> {
        let mut m = vec![0; HEADER_LEN];
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn rfc1035_plain_name_is_skipped() {
        let m = msg(b"\x03www\x07example\x03com\x00rest");
        assert_eq!(skip_name(&m, 12, Section::Question), Ok(12 + 17));
    }

    #[test]
    fn rfc1035_compressed_name_ends_after_its_pointer() {
        // example.com at 12, then www + pointer to 12.
        let m = msg(b"\x07example\x03com\x00\x03www\xC0\x0C");
        assert_eq!(skip_name(&m, 25, Section::Answer), Ok(31));
        let labels: Vec<_> = Labels::new(&m, 25, Section::Answer)
            .collect::<Result<_, _>>()
            .expect("valid");
        assert_eq!(labels, [&b"www"[..], b"example", b"com"]);
    }

    #[test]
    fn rfc1035_pointer_to_itself_is_rejected() {
        let m = msg(b"\xC0\x0C");
        assert_eq!(
            skip_name(&m, 12, Section::Question),
            Err(MessageError::BadPointer { offset: 12 })
        );
    }

    #[test]
    fn rfc1035_pointer_loop_between_two_names_is_rejected() {
        // Name at 12 points forward to 16, which points back to 12.
        let m = msg(b"\x01a\xC0\x10\xC0\x0C");
        assert_eq!(
            skip_name(&m, 12, Section::Answer),
            Err(MessageError::BadPointer { offset: 14 })
        );
        // Starting at 16: pointer to 12 is fine, then 12's pointer to 16 is not
        // before the run that started at 12.
        assert_eq!(
            skip_name(&m, 16, Section::Answer),
            Err(MessageError::BadPointer { offset: 14 })
        );
    }

    #[test]
    fn rfc1035_pointer_to_a_name_running_into_the_pointing_name_is_rejected() {
        // 12: a root. 13: the labels "xy\x01" then a root at 17, which is
        // inside the name at 16: label "\x00", then a pointer to 13.
        let m = msg(b"\x00\x03xy\x01\x00\xC0\x0D");
        assert_eq!(
            skip_name(&m, 16, Section::Answer),
            Err(MessageError::BadPointer { offset: 18 })
        );
        // The same labels ending before the pointing name are a prior name.
        let m = msg(b"\x00\x02xy\x00\x01\x00\xC0\x0D");
        assert_eq!(skip_name(&m, 17, Section::Answer), Ok(21));
    }

    #[test]
    fn rfc1035_pointer_into_header_is_rejected() {
        let m = msg(b"\x01a\xC0\x02");
        assert_eq!(
            skip_name(&m, 12, Section::Question),
            Err(MessageError::BadPointer { offset: 14 })
        );
    }

    #[test]
    fn long_pointer_chain_is_bounded() {
        // A root at 12, then 200 pointers each to the previous one.
        let mut body = vec![0u8];
        for i in 0..200u16 {
            let target = if i == 0 { 12 } else { 13 + 2 * (i - 1) };
            body.extend_from_slice(&(0xC000 | target).to_be_bytes());
        }
        let m = msg(&body);
        let last = 13 + 2 * 199;
        assert!(matches!(
            skip_name(&m, last, Section::Answer),
            Err(MessageError::BadPointer { .. })
        ));
        assert_eq!(
            skip_name(&m, 13 + 2 * 100, Section::Answer),
            Ok(13 + 2 * 101)
        );
    }

    #[test]
    fn rfc1035_label_type_above_63_is_rejected() {
        for b in [0x40, 0x7F, 0x80, 0xBF] {
            let m = msg(&[1, b'a', b, b'x', 0]);
            assert_eq!(
                skip_name(&m, 12, Section::Question),
                Err(MessageError::BadLabel { offset: 14 }),
                "{b:#x}"
            );
        }
    }

    #[test]
    fn rfc1035_name_of_255_octets_is_accepted_256_rejected() {
        // 4 labels of 63 = 256 octets with lengths; minus one: 3*64 + 62+1 + root.
        let mut ok = Vec::new();
        for len in [63, 63, 63, 61] {
            ok.push(len);
            ok.extend(std::iter::repeat_n(b'a', usize::from(len)));
        }
        ok.push(0);
        assert_eq!(ok.len(), 255);
        assert_eq!(skip_name(&msg(&ok), 12, Section::Question), Ok(12 + 255));

        let mut long = ok.clone();
        long[3 * 64] = 62;
        long.insert(3 * 64 + 1, b'a');
        assert_eq!(
            skip_name(&msg(&long), 12, Section::Question),
            Err(MessageError::NameTooLong {
                offset: 12 + 256 - 1
            })
        );
    }

    #[test]
    fn name_running_off_the_end_is_truncated() {
        for body in [&b"\x03ww"[..], b"\x03www", b"\xC0"] {
            assert_eq!(
                skip_name(&msg(body), 12, Section::Authority),
                Err(MessageError::Truncated {
                    section: Section::Authority
                }),
                "{body:?}"
            );
        }
    }

    #[test]
    fn rfc4343_names_compare_case_insensitively() {
        let a = msg(b"\x03WwW\x07Example\x03cOm\x00");
        let b = msg(b"\x07example\x03com\x00\x03www\xC0\x0C");
        assert!(names_equal(&a, 12, &b, 25));
        let c = msg(b"\x03www\x07example\x03org\x00");
        assert!(!names_equal(&a, 12, &c, 12));
        let d = msg(b"\x03www\x07example\x00");
        assert!(!names_equal(&a, 12, &d, 12));
        // Case folding is ASCII only: 0xC1 and 0xE1 are different octets.
        assert!(!names_equal(
            &msg(b"\x01\xC1\x00"),
            12,
            &msg(b"\x01\xE1\x00"),
            12
        ));
    }
}
