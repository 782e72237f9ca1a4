//! Which TCP streams owe their peer an ACK when the event loop's turn ends.
//!
//! While answers are still owed on an upstream connection, each read is
//! acknowledged at once (see
//! [`UpstreamConn::acks_at_once`](crate::core::upstream_conn::UpstreamConn::acks_at_once)):
//! a server that leaves Nagle's algorithm on holds its next small answer
//! until then. But a query written on the same stream later in the same
//! turn carries that ACK in its own segment. So a read only marks its
//! stream as owing an ACK, a write of data clears the mark, and what is
//! still owed when the loop is about to wait is acknowledged then, in the
//! wait call itself.

/// The streams owing an ACK, by key (a descriptor): a few at most, one per
/// upstream connection with answers owed, so a list.
#[derive(Debug)]
pub struct AcksOwed<K> {
    owed: Vec<K>,
}

impl<K: Copy + Eq> Default for AcksOwed<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Copy + Eq> AcksOwed<K> {
    /// None owed.
    pub const fn new() -> Self {
        Self { owed: Vec::new() }
    }

    /// `key`'s stream was read, and the read is to be acknowledged at once.
    pub fn read(&mut self, key: K) {
        if !self.owed.contains(&key) {
            self.owed.push(key);
        }
    }

    /// `key`'s stream sent data: its segment acknowledged all that was read
    /// so far. Also for a stream that goes away (its key may be reused).
    pub fn sent(&mut self, key: K) {
        if let Some(i) = self.owed.iter().position(|k| *k == key) {
            self.owed.swap_remove(i);
        }
    }

    /// The ACKs to send now, the loop being about to wait; none owed after.
    pub fn take(&mut self) -> std::vec::Drain<'_, K> {
        self.owed.drain(..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taken(acks: &mut AcksOwed<i32>) -> Vec<i32> {
        let mut keys: Vec<i32> = acks.take().collect();
        keys.sort_unstable();
        keys
    }

    #[test]
    fn a_read_is_acknowledged_at_the_wait() {
        let mut acks = AcksOwed::new();
        acks.read(7);
        assert_eq!(taken(&mut acks), [7]);
        assert_eq!(taken(&mut acks), [] as [i32; 0], "one ACK per read");
    }

    #[test]
    fn a_write_after_the_read_carries_its_ack() {
        let mut acks = AcksOwed::new();
        acks.read(7);
        acks.read(9);
        acks.sent(7);
        assert_eq!(taken(&mut acks), [9]);
    }

    #[test]
    fn a_write_before_the_read_does_not() {
        let mut acks = AcksOwed::new();
        acks.sent(7);
        acks.read(7);
        assert_eq!(taken(&mut acks), [7]);
    }

    #[test]
    fn reads_of_one_stream_in_a_turn_owe_one_ack() {
        let mut acks = AcksOwed::new();
        acks.read(7);
        acks.read(7);
        acks.read(3);
        assert_eq!(taken(&mut acks), [3, 7]);
        acks.read(3);
        acks.sent(3);
        acks.sent(3);
        assert_eq!(taken(&mut acks), [] as [i32; 0]);
    }
}
