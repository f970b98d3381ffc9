//! The two buffers every connection side owns: [`Inbound`] for bytes read but not yet used, and
//! [`Outbound`] for bytes to send, gathered so that a head and the start of a body leave in one
//! write.
//!
//! Invariant: bytes read past the end of one message stay in `Inbound` and belong to the next
//! (a pipelined request, or nothing at all for a backend response).

use std::io::{self, Read, Write};

/// The largest request or response head accepted, and so the smallest inbound buffer.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Size of an inbound buffer: a full head plus room to read body bytes behind it.
pub const INBOUND_CAPACITY: usize = MAX_HEAD_BYTES + 16 * 1024;
/// Outbound bytes gathered before a write is forced.
pub const OUTBOUND_CAPACITY: usize = 64 * 1024;

/// Bytes read from a stream and not yet consumed.
#[derive(Debug)]
pub struct Inbound {
    buf: Vec<u8>,
    capacity: usize,
    start: usize,
    end: usize,
    received: u64,
}

impl Default for Inbound {
    fn default() -> Self {
        Inbound::new()
    }
}

impl Inbound {
    /// An empty buffer; its memory is allocated on the first read, so an `Inbound` that is only
    /// moved around (as buffers are between a worker and its pair) costs nothing.
    pub fn new() -> Inbound {
        Inbound::with_capacity(INBOUND_CAPACITY)
    }

    /// An empty buffer that will hold up to `capacity` unconsumed bytes: at least the largest
    /// head its owner accepts.
    pub fn with_capacity(capacity: usize) -> Inbound {
        Inbound { buf: Vec::new(), capacity, start: 0, end: 0, received: 0 }
    }

    /// The bytes read and not yet consumed.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub fn consume(&mut self, count: usize) {
        assert!(count <= self.end - self.start, "consumed more than was buffered");
        self.start += count;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// The most unconsumed bytes this buffer holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Puts `bytes` (read from the same stream elsewhere) in the buffer, as if just read, growing
    /// it if they would not fit.
    pub fn load(&mut self, bytes: &[u8]) {
        if self.buffered().len() + bytes.len() > self.capacity {
            let mut grown = Vec::with_capacity(self.buffered().len() + bytes.len() + self.capacity);
            grown.extend_from_slice(self.buffered());
            self.capacity = grown.capacity();
            grown.resize(self.capacity, 0);
            self.end -= self.start;
            self.start = 0;
            self.buf = grown;
        } else if self.buf.is_empty() {
            self.buf = vec![0; self.capacity];
        } else if self.end + bytes.len() > self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        self.buf[self.end..self.end + bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
        self.received += bytes.len() as u64;
    }

    /// Takes the unconsumed bytes out, in a buffer of their own size (empty, and allocating
    /// nothing, when there are none).
    pub fn take_buffered(&mut self) -> Vec<u8> {
        let taken = self.buffered().to_vec();
        self.start = 0;
        self.end = 0;
        taken
    }

    /// Total bytes ever read into this buffer.
    pub fn received(&self) -> u64 {
        self.received
    }

    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
        self.received = 0;
    }

    /// Reads once from `source`, appending to the buffered bytes. Returns how many bytes came
    /// (0 at end of stream). Fails with `OutOfMemory` if the buffer is full of unconsumed bytes,
    /// which callers prevent by refusing heads larger than the buffer.
    pub fn fill(&mut self, mut source: impl Read) -> io::Result<usize> {
        if self.buf.is_empty() {
            self.buf = vec![0; self.capacity];
        }
        if self.end == self.buf.len() {
            if self.start == 0 {
                return Err(io::Error::new(io::ErrorKind::OutOfMemory, "inbound buffer full"));
            }
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let count = loop {
            match source.read(&mut self.buf[self.end..]) {
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        self.end += count;
        self.received += count as u64;
        Ok(count)
    }
}

/// Bytes waiting to be written, sent in as few writes as possible.
#[derive(Debug, Default)]
pub struct Outbound {
    pending: Vec<u8>,
    sent: u64,
}

impl Outbound {
    /// An empty buffer; it grows to at most [`OUTBOUND_CAPACITY`] as bytes are gathered.
    pub fn new() -> Outbound {
        Outbound { pending: Vec::new(), sent: 0 }
    }

    /// Adds bytes to send; writes what is gathered first if they would overflow the buffer, and
    /// writes a large piece straight through rather than copying it.
    pub fn send(&mut self, mut sink: impl Write, bytes: &[u8]) -> io::Result<()> {
        if self.pending.len() + bytes.len() <= OUTBOUND_CAPACITY {
            self.pending.extend_from_slice(bytes);
            return Ok(());
        }
        self.flush(&mut sink)?;
        if bytes.len() >= OUTBOUND_CAPACITY / 2 {
            sink.write_all(bytes)?;
            self.sent += bytes.len() as u64;
        } else {
            self.pending.extend_from_slice(bytes);
        }
        Ok(())
    }

    /// Adds bytes to send and keeps them gathered whatever their size (writing earlier gathered
    /// bytes first if need be), so that they leave only at the next [`Outbound::flush`]. Used for
    /// the last piece of a message, which the caller wants to release itself.
    pub fn hold(&mut self, mut sink: impl Write, bytes: &[u8]) -> io::Result<()> {
        if self.pending.len() + bytes.len() > OUTBOUND_CAPACITY {
            self.flush(&mut sink)?;
        }
        self.pending.extend_from_slice(bytes);
        Ok(())
    }

    /// Writes everything gathered. Call before blocking on a read, so the peer is never kept
    /// waiting for bytes that sit here.
    ///
    /// The gathered bytes are gone afterwards even if the write fails: they belong to this peer's
    /// message and must never be sent anywhere else (the buffer is reused for the next peer).
    pub fn flush(&mut self, mut sink: impl Write) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let written = sink.write_all(&self.pending);
        if written.is_ok() {
            self.sent += self.pending.len() as u64;
        }
        self.pending.clear();
        written
    }

    /// Drops whatever is gathered, unsent.
    pub fn discard(&mut self) {
        self.pending.clear();
    }

    /// Bytes written to the sink so far (not counting what is still pending).
    pub fn sent(&self) -> u64 {
        self.sent
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbound_keeps_unconsumed_bytes_across_fills() {
        let mut inbound = Inbound::new();
        let mut source: &[u8] = b"hello world";
        assert_eq!(inbound.fill(&mut source).unwrap(), 11);
        inbound.consume(6);
        assert_eq!(inbound.buffered(), b"world");
        inbound.consume(5);
        assert!(inbound.is_empty());
        assert_eq!(inbound.received(), 11);
        assert_eq!(inbound.fill(&mut source).unwrap(), 0);
    }

    #[test]
    fn loaded_bytes_read_as_if_just_read_and_grow_the_buffer_when_needed() {
        let mut inbound = Inbound::with_capacity(8);
        inbound.load(b"GET");
        inbound.load(b" / HTTP/1.1");
        assert_eq!(inbound.buffered(), b"GET / HTTP/1.1");
        assert!(inbound.capacity() >= 14);
        inbound.consume(4);
        let mut source: &[u8] = b"\r\n";
        inbound.fill(&mut source).unwrap();
        assert_eq!(inbound.take_buffered(), b"/ HTTP/1.1\r\n");
        assert!(inbound.is_empty());
        assert_eq!(inbound.take_buffered().capacity(), 0, "nothing left allocates nothing");
    }

    #[test]
    fn inbound_compacts_when_full_and_refuses_when_nothing_was_consumed() {
        let mut inbound = Inbound::new();
        let big = vec![7u8; INBOUND_CAPACITY];
        let mut source: &[u8] = &big;
        while inbound.buffered().len() < INBOUND_CAPACITY {
            inbound.fill(&mut source).unwrap();
        }
        let mut more: &[u8] = b"abc";
        assert_eq!(inbound.fill(&mut more).unwrap_err().kind(), io::ErrorKind::OutOfMemory);
        inbound.consume(10);
        assert_eq!(inbound.fill(&mut more).unwrap(), 3);
        assert_eq!(&inbound.buffered()[INBOUND_CAPACITY - 10..], b"abc");
    }

    /// A sink that takes `limit` bytes and then fails, like a peer that went away.
    struct Vanishing {
        taken: Vec<u8>,
        limit: usize,
    }

    impl Write for Vanishing {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            if self.taken.len() >= self.limit {
                return Err(io::Error::from(io::ErrorKind::BrokenPipe));
            }
            let take = bytes.len().min(self.limit - self.taken.len());
            self.taken.extend_from_slice(&bytes[..take]);
            Ok(take)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn bytes_that_could_not_be_sent_are_never_sent_to_the_next_peer() {
        let mut outbound = Outbound::new();
        let mut gone = Vanishing { taken: Vec::new(), limit: 3 };
        outbound.send(&mut gone, b"first peer's response").unwrap();
        assert!(outbound.flush(&mut gone).is_err());
        assert_eq!(outbound.pending(), 0, "nothing of it is left behind");
        let mut next: Vec<u8> = Vec::new();
        outbound.send(&mut next, b"second").unwrap();
        outbound.flush(&mut next).unwrap();
        assert_eq!(next, b"second");
    }

    #[test]
    fn outbound_gathers_small_writes_into_one() {
        let mut written: Vec<u8> = Vec::new();
        let mut outbound = Outbound::new();
        outbound.send(&mut written, b"HTTP/1.1 200 OK\r\n\r\n").unwrap();
        outbound.send(&mut written, b"body").unwrap();
        assert!(written.is_empty());
        outbound.flush(&mut written).unwrap();
        assert_eq!(written, b"HTTP/1.1 200 OK\r\n\r\nbody");
        let large = vec![1u8; OUTBOUND_CAPACITY];
        outbound.send(&mut written, b"x").unwrap();
        outbound.send(&mut written, &large).unwrap();
        assert_eq!(outbound.pending(), 0);
        assert_eq!(outbound.sent(), 23 + 1 + OUTBOUND_CAPACITY as u64);
    }
}
