//! The packed datagram list of the host's `datagram-batch` calls
//! (`packed-datagrams`): the host reads what the sandboxed component hands
//! it, so its reader takes untrusted bytes.
//!
//! Input: the list itself.
//!
//! Checked: reading never panics and stops after its first error; the
//! datagrams read, written again, are exactly the bytes before the error
//! (or all of them), and the error is where those bytes end; a datagram
//! is never longer than the 65,535 bytes a header can say; the bytes of an
//! IPv4 peer's IPv6-only fields were zero.

use packed_datagrams::{HEADER, MAX_PAYLOAD, Malformed, push, read};

/// Checks one input; panics if an invariant does not hold.
pub fn check(data: &[u8]) {
    let mut rewritten = Vec::new();
    let mut error = None;
    let mut after_error = 0;
    for datagram in read(data) {
        if error.is_some() {
            after_error += 1;
            continue;
        }
        match datagram {
            Ok((payload, peer)) => {
                assert!(payload.len() <= MAX_PAYLOAD);
                push(&mut rewritten, payload, peer).expect("what was read fits");
            }
            Err(e) => error = Some(e),
        }
    }
    assert_eq!(after_error, 0, "nothing is read after an error");
    match error {
        None => assert_eq!(rewritten, data, "a whole list is written back as it was"),
        Some(Malformed { at }) => {
            assert_eq!(
                at,
                rewritten.len(),
                "the error is where the whole datagrams end"
            );
            assert_eq!(
                rewritten,
                data[..at],
                "the datagrams before the error are the list's"
            );
            // What follows is not one whole datagram of the layout.
            let rest = &data[at..];
            let whole = rest.len() >= HEADER
                && rest.len() >= HEADER + usize::from(u16::from_le_bytes([rest[0], rest[1]]))
                && matches!(rest[4], 4 | 6)
                && rest[5..8] == [0; 3]
                && (rest[4] == 6 || (rest[8..16] == [0; 8] && rest[20..32] == [0; 12]));
            assert!(!whole, "a whole datagram at byte {at} was refused");
        }
    }
}
