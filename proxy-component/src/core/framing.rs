//! DNS over a stream: the two-byte length prefix of RFC 1035 §4.2.2, as used by
//! DNS over TCP (RFC 7766 §8) and DNS over TLS (RFC 7858 §3.3).
//!
//! [`Deframer`] turns a byte stream cut at arbitrary points back into messages;
//! [`frame_into`] does the reverse, appending to a buffer so that several
//! answers can be coalesced into one write (RFC 7766 §8).

use thiserror::Error;

/// The largest message a two-byte length prefix can describe (RFC 1035 §4.2.2).
pub const MAX_MESSAGE_LEN: usize = 65_535;

/// Length of the prefix in front of every message (RFC 1035 §4.2.2).
const PREFIX_LEN: usize = 2;

/// Consumed bytes are only moved to the front of the buffer once at least this
/// many have piled up and they make up half the buffer, so each byte is copied
/// a bounded number of times however the input is coalesced.
const COMPACT_MIN: usize = 4096;

/// A framing violation. The stream cannot be resynchronised after one: the
/// shell closes the connection.
#[non_exhaustive]
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    /// A length prefix of 0. No DNS message is shorter than its 12-byte header
    /// (RFC 1035 §4.1.1), so the peer is not speaking DNS.
    #[error("zero-length DNS frame")]
    ZeroLength,
    /// A length prefix above the configured maximum.
    #[error("DNS frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// The announced length.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
}

/// Reassembles length-prefixed messages from a byte stream (RFC 7766 §8).
///
/// Accepts input cut at any byte and coalesced in any way. Once
/// [`next_message`](Self::next_message) has returned an error it keeps
/// returning it: the offending prefix is never consumed.
#[derive(Debug)]
pub struct Deframer {
    buf: Vec<u8>,
    /// Read offset into `buf`: bytes before it belong to returned messages.
    start: usize,
    max_len: usize,
}

impl Deframer {
    /// A deframer rejecting frames longer than `max_len` bytes. Values above
    /// [`MAX_MESSAGE_LEN`] are clamped to it, the most a prefix can express.
    pub fn new(max_len: usize) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            max_len: max_len.min(MAX_MESSAGE_LEN),
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start >= COMPACT_MIN && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete message, without its prefix. `Ok(None)` means more
    /// bytes are needed. An oversized or empty frame is reported as soon as its
    /// prefix is complete, without waiting for its body.
    pub fn next_message(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let pending = &self.buf[self.start..];
        let [hi, lo, body @ ..] = pending else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        if len == 0 {
            return Err(FrameError::ZeroLength);
        }
        if len > self.max_len {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_len,
            });
        }
        let Some(message) = body.get(..len) else {
            return Ok(None);
        };
        let message = message.to_vec();
        self.start += PREFIX_LEN + len;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        Ok(Some(message))
    }

    /// Bytes held that do not yet form a complete message. Non-zero at an idle
    /// timeout means the peer stopped in the middle of a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Whether the next frame has started and is not complete yet: the peer
    /// owes bytes. False when nothing is held, or when a complete message
    /// waits to be taken.
    pub fn holds_partial_frame(&self) -> bool {
        match &self.buf[self.start..] {
            [] => false,
            [_] => true,
            [hi, lo, body @ ..] => body.len() < usize::from(u16::from_be_bytes([*hi, *lo])),
        }
    }
}

/// Appends the two-byte big-endian length of `msg` and `msg` itself to `out`
/// (RFC 1035 §4.2.2), so several messages can go out in one write.
///
/// Precondition: `msg.len() <= MAX_MESSAGE_LEN`. Breaking it panics in debug
/// builds; in release builds nothing is appended, which keeps the stream in
/// sync. Use [`try_frame_into`] to handle the case.
pub fn frame_into(out: &mut Vec<u8>, msg: &[u8]) {
    let result = try_frame_into(out, msg);
    debug_assert!(result.is_ok(), "frame_into: {result:?}");
}

/// Like [`frame_into`], but reports a message too long for the prefix instead
/// of dropping it. `out` is left untouched on error.
pub fn try_frame_into(out: &mut Vec<u8>, msg: &[u8]) -> Result<(), FrameError> {
    let len = u16::try_from(msg.len()).map_err(|_| FrameError::TooLarge {
        len: msg.len(),
        max: MAX_MESSAGE_LEN,
    })?;
    out.reserve(PREFIX_LEN + msg.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(msg);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(msgs: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for m in msgs {
            frame_into(&mut out, m);
        }
        out
    }

    fn drain(d: &mut Deframer) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(m) = d.next_message().expect("valid frames") {
            out.push(m);
        }
        out
    }

    #[test]
    fn rfc1035_prefix_is_big_endian_length() {
        let mut out = vec![0xAA];
        frame_into(&mut out, &[1; 300]);
        assert_eq!(&out[..3], &[0xAA, 0x01, 0x2C]);
        assert_eq!(out.len(), 1 + 2 + 300);
    }

    #[test]
    fn zero_length_frame_is_rejected() {
        let mut d = Deframer::new(MAX_MESSAGE_LEN);
        d.push(&[0, 0, 1, 2, 3]);
        assert_eq!(d.next_message(), Err(FrameError::ZeroLength));
        // The error is sticky: the stream cannot be resynchronised.
        assert_eq!(d.next_message(), Err(FrameError::ZeroLength));
    }

    #[test]
    fn oversized_frame_is_rejected_before_its_body_arrives() {
        let mut d = Deframer::new(512);
        d.push(&[0x02, 0x01]);
        assert_eq!(
            d.next_message(),
            Err(FrameError::TooLarge { len: 513, max: 512 })
        );
    }

    #[test]
    fn frame_of_exactly_max_len_is_accepted() {
        let mut d = Deframer::new(512);
        d.push(&framed(&[&[7; 512]]));
        assert_eq!(d.next_message(), Ok(Some(vec![7; 512])));
    }

    #[test]
    fn max_len_above_prefix_range_is_clamped() {
        let mut d = Deframer::new(1 << 20);
        d.push(&framed(&[&[1; MAX_MESSAGE_LEN]]));
        assert_eq!(
            d.next_message().map(|m| m.map(|m| m.len())),
            Ok(Some(MAX_MESSAGE_LEN))
        );
    }

    #[test]
    fn rfc7766_frame_split_at_every_byte_is_reassembled() {
        let msgs: [&[u8]; 3] = [b"first message!", b"x", &[0xC0; 40]];
        let wire = framed(&msgs);
        for cut in 0..=wire.len() {
            let mut d = Deframer::new(MAX_MESSAGE_LEN);
            d.push(&wire[..cut]);
            let mut got = drain(&mut d);
            d.push(&wire[cut..]);
            got.extend(drain(&mut d));
            assert_eq!(got, msgs.map(<[u8]>::to_vec), "cut at {cut}");
            assert_eq!(d.buffered(), 0);
        }
    }

    #[test]
    fn rfc7766_frames_fed_one_byte_at_a_time() {
        let msgs: [&[u8]; 2] = [b"abc", b"defgh"];
        let mut d = Deframer::new(MAX_MESSAGE_LEN);
        let mut got = Vec::new();
        for b in framed(&msgs) {
            d.push(&[b]);
            got.extend(drain(&mut d));
        }
        assert_eq!(got, msgs.map(<[u8]>::to_vec));
    }

    #[test]
    fn buffered_counts_a_half_sent_frame() {
        let mut d = Deframer::new(MAX_MESSAGE_LEN);
        let wire = framed(&[b"hello", b"world"]);
        d.push(&wire[..wire.len() - 2]);
        assert_eq!(d.next_message(), Ok(Some(b"hello".to_vec())));
        assert_eq!(d.next_message(), Ok(None));
        assert_eq!(d.buffered(), 2 + 3);
        d.push(&wire[wire.len() - 2..]);
        assert_eq!(d.next_message(), Ok(Some(b"world".to_vec())));
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn many_coalesced_small_frames_compact_the_buffer() {
        let mut d = Deframer::new(MAX_MESSAGE_LEN);
        let one = framed(&[&[9; 10]]);
        // Keep a partial frame pending so the buffer never empties by itself.
        for _ in 0..10_000 {
            d.push(&one[..5]);
            while d.next_message().expect("valid").is_some() {}
            d.push(&one[5..]);
        }
        assert!(d.buf.len() < 2 * COMPACT_MIN + one.len(), "{}", d.buf.len());
        assert_eq!(drain(&mut d).len(), 1);
    }

    #[test]
    fn try_frame_into_rejects_message_longer_than_prefix_range() {
        let mut out = vec![1];
        let big = vec![0; MAX_MESSAGE_LEN + 1];
        assert_eq!(
            try_frame_into(&mut out, &big),
            Err(FrameError::TooLarge {
                len: MAX_MESSAGE_LEN + 1,
                max: MAX_MESSAGE_LEN
            })
        );
        assert_eq!(out, [1]);
    }

    #[test]
    fn partial_frame_is_told_apart_from_a_waiting_message() {
        let mut d = Deframer::new(MAX_MESSAGE_LEN);
        assert!(!d.holds_partial_frame());
        d.push(&[0]);
        assert!(d.holds_partial_frame());
        d.push(&[3, 1, 2]);
        assert!(d.holds_partial_frame());
        d.push(&[3]);
        assert!(!d.holds_partial_frame(), "a complete message waits");
        assert_eq!(d.next_message().unwrap(), Some(vec![1, 2, 3]));
        assert!(!d.holds_partial_frame());
    }
}
