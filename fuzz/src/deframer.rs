//! The stream deframer (`core::framing`, RFC 7766 §8).
//!
//! Input: `[cap_hi, cap_lo, n, repeat, size_1 .. size_n, stream..]`. The
//! deframer's maximum is the big-endian `cap` (`0xFFFF` stands for
//! `usize::MAX`, to test the clamp to 65535), `n % 16` chunk sizes follow, and
//! the stream is the rest, repeated `1 + repeat % 8` times (so that inputs of a
//! few KiB reach the buffer compaction, which starts at 4 KiB).
//!
//! Checked: fed whole, in the given chunk sizes (cycled; a 0 pushes an empty
//! slice) and one byte at a time, the deframer returns the same messages and
//! ends in the same state as a plain model of RFC 1035 §4.2.2 framing; no
//! message is empty or longer than the cap; the messages framed again are the
//! consumed bytes; an error is reported as soon as the bad prefix is complete
//! and keeps being reported however many bytes follow; `buffered()` counts
//! the bytes not yet returned.

use dnsproxy_core::core::framing::{Deframer, FrameError, MAX_MESSAGE_LEN, frame_into};

/// Checks one input; panics if an invariant does not hold.
pub fn check(data: &[u8]) {
    let Some((&[c0, c1, n, repeat], rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let cap = match u16::from_be_bytes([c0, c1]) {
        u16::MAX => usize::MAX,
        cap => usize::from(cap),
    };
    let (sizes, stream) = rest.split_at(usize::from(n % 16).min(rest.len()));
    let stream = stream.repeat(1 + usize::from(repeat % 8));
    let sizes: Vec<usize> = sizes.iter().map(|&s| usize::from(s)).collect();

    let expected = model(&stream, cap);
    let whole = feed(&stream, cap, &[]);
    assert_eq!(whole, expected, "fed in one push");
    assert_eq!(
        feed(&stream, cap, &sizes),
        expected,
        "fed in chunks {sizes:?}"
    );
    assert_eq!(feed(&stream, cap, &[1]), expected, "fed one byte at a time");

    let max = cap.min(MAX_MESSAGE_LEN);
    let mut reframed = Vec::new();
    for m in &expected.messages {
        assert!(!m.is_empty() && m.len() <= max, "{}-byte message", m.len());
        frame_into(&mut reframed, m);
    }
    assert_eq!(
        reframed,
        stream[..reframed.len()],
        "messages are the stream"
    );
}

/// What the deframer returned, and how it ended.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    messages: Vec<Vec<u8>>,
    /// The sticky error, or the bytes still buffered.
    end: Result<usize, FrameError>,
}

/// Feeds `stream` in chunks of `sizes` (cycled; empty = all at once; a 0 is
/// an empty push followed by a one-byte one), draining after every push.
fn feed(stream: &[u8], cap: usize, sizes: &[usize]) -> Outcome {
    let mut d = Deframer::new(cap);
    let mut messages = Vec::new();
    let mut error = None;
    let mut pos = 0;
    let mut cycle = sizes.iter().copied().cycle();
    loop {
        let size = match cycle.next() {
            None => stream.len(),
            Some(0) => {
                d.push(&[]);
                drain(&mut d, &mut messages, &mut error);
                1
            }
            Some(size) => size,
        };
        let end = (pos + size).min(stream.len());
        d.push(&stream[pos..end]);
        pos = end;
        drain(&mut d, &mut messages, &mut error);
        if pos == stream.len() {
            break;
        }
    }
    let end = match error {
        Some(e) => Err(e),
        None => Ok(d.buffered()),
    };
    Outcome { messages, end }
}

/// Takes every complete message; once an error was seen, only that error.
fn drain(d: &mut Deframer, messages: &mut Vec<Vec<u8>>, error: &mut Option<FrameError>) {
    loop {
        match d.next_message() {
            Ok(Some(m)) => {
                assert!(error.is_none(), "a message after {error:?}");
                messages.push(m);
            }
            Ok(None) => {
                assert!(error.is_none(), "the error {error:?} went away");
                return;
            }
            Err(e) => {
                if let Some(first) = error {
                    assert_eq!(&e, first, "the error changed");
                }
                *error = Some(e);
                return;
            }
        }
    }
}

/// RFC 1035 §4.2.2 framing read the plain way, for comparison.
fn model(stream: &[u8], cap: usize) -> Outcome {
    let max = cap.min(MAX_MESSAGE_LEN);
    let mut messages = Vec::new();
    let mut pos = 0;
    let end = loop {
        let Some(&[hi, lo]) = stream.get(pos..pos + 2) else {
            break Ok(stream.len() - pos);
        };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        if len == 0 {
            break Err(FrameError::ZeroLength);
        }
        if len > max {
            break Err(FrameError::TooLarge { len, max });
        }
        let Some(message) = stream.get(pos + 2..pos + 2 + len) else {
            break Ok(stream.len() - pos);
        };
        messages.push(message.to_vec());
        pos += 2 + len;
    };
    Outcome { messages, end }
}
