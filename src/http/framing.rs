//! Streaming a message body from one side to the other by its framing, never holding it whole.
//!
//! [`copy_body`] moves exactly one body: a fixed length, a chunked body, or everything until the
//! sender closes. Bytes already buffered behind the head go first; bytes past the end of the body
//! stay in the [`Inbound`] buffer for the next message. Chunked bodies are decoded and re-encoded
//! with the same chunk sizes, so what the receiver gets is well-formed whatever spacing or chunk
//! extensions the sender used; trailer fields are read, checked for size, and dropped.
//!
//! Errors say which side failed ([`CopyError`]), because that decides who is to blame: a client
//! that vanished mid-upload is not a backend failure.

use std::io::{self, Read, Write};

use crate::http::buffer::{Inbound, Outbound};
use crate::http::head::BodyFraming;

/// Longest chunk-size line (size and extensions) accepted.
pub const MAX_CHUNK_LINE: usize = 4096;
/// Most trailer bytes accepted after the last chunk.
pub const MAX_TRAILER_BYTES: usize = 16 * 1024;

#[derive(Debug)]
pub enum CopyError {
    /// The sender closed before the body was complete.
    SourceClosed,
    /// Reading from the sender failed (including its read timeout).
    Source(io::Error),
    /// Writing to the receiver failed (including its write timeout).
    Sink(io::Error),
    /// The body's framing was broken (a bad chunk size line, say).
    Malformed(&'static str),
    /// The body is larger than allowed.
    TooLarge,
}

impl CopyError {
    pub fn is_timeout(&self) -> bool {
        matches!(self, CopyError::Source(error) if is_timeout(error))
    }
}

impl std::fmt::Display for CopyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CopyError::SourceClosed => f.write_str("sender closed mid-body"),
            CopyError::Source(error) => write!(f, "reading body: {error}"),
            CopyError::Sink(error) => write!(f, "writing body: {error}"),
            CopyError::Malformed(reason) => write!(f, "malformed body: {reason}"),
            CopyError::TooLarge => f.write_str("body larger than allowed"),
        }
    }
}

/// Whether an I/O error is a socket timeout (`WouldBlock` on Unix, `TimedOut` elsewhere).
pub fn is_timeout(error: &io::Error) -> bool {
    matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// Copies one body framed as `framing` from `source` (bytes in `inbound` first) to `sink`
/// through `outbound`. Returns the number of body bytes (payload, not framing).
///
/// The last bytes may still be gathered in `outbound` on return: the caller flushes them when it
/// chooses (the worker counts a response before its last bytes leave, so that a client holding a
/// complete response always finds it in the metrics).
///
/// A body of more than `max_payload` bytes is refused with [`CopyError::TooLarge`]: a fixed
/// length at once, a chunked body as soon as a chunk would cross the limit.
pub fn copy_body(
    framing: BodyFraming,
    inbound: &mut Inbound,
    source: impl Read,
    outbound: &mut Outbound,
    sink: impl Write,
    max_payload: u64,
) -> Result<u64, CopyError> {
    let mut copier = Copier { inbound, source, outbound, sink, max_payload };
    match framing {
        BodyFraming::Empty => Ok(0),
        BodyFraming::Length(length) if length > max_payload => Err(CopyError::TooLarge),
        BodyFraming::Length(length) => copier.copy_exact(length),
        BodyFraming::UntilClose => copier.copy_until_close(),
        BodyFraming::Chunked => copier.copy_chunked(u64::MAX).map(|(copied, _)| copied),
    }
}

/// Copies the start of a chunked body, whole chunks only, while it stays within `budget` bytes.
/// Returns the payload bytes copied and whether that was the whole body (last chunk and trailers
/// read). If not, it stopped before a chunk that would cross the budget, and [`copy_body`] with
/// [`BodyFraming::Chunked`] copies the rest, resuming at that chunk.
pub fn copy_chunked_prefix(
    inbound: &mut Inbound,
    source: impl Read,
    outbound: &mut Outbound,
    sink: impl Write,
    budget: u64,
    max_payload: u64,
) -> Result<(u64, bool), CopyError> {
    Copier { inbound, source, outbound, sink, max_payload }.copy_chunked(budget)
}

struct Copier<'a, R, W> {
    inbound: &'a mut Inbound,
    source: R,
    outbound: &'a mut Outbound,
    sink: W,
    max_payload: u64,
}

impl<R: Read, W: Write> Copier<'_, R, W> {
    /// Sends what is gathered, then blocks for more input. End of stream is an error here.
    fn fill(&mut self) -> Result<(), CopyError> {
        self.outbound.flush(&mut self.sink).map_err(CopyError::Sink)?;
        match self.inbound.fill(&mut self.source) {
            Ok(0) => Err(CopyError::SourceClosed),
            Ok(_) => Ok(()),
            Err(error) => Err(CopyError::Source(error)),
        }
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), CopyError> {
        self.outbound.send(&mut self.sink, bytes).map_err(CopyError::Sink)
    }

    /// Moves up to `limit` buffered bytes to the outbound side; returns how many. When they are
    /// the last `limit` bytes of the body, they are held for the caller's flush.
    fn pass_buffered(&mut self, limit: u64) -> Result<u64, CopyError> {
        let take = self.inbound.buffered().len().min(usize::try_from(limit).unwrap_or(usize::MAX));
        let piece = &self.inbound.buffered()[..take];
        let sent = if take as u64 == limit {
            self.outbound.hold(&mut self.sink, piece)
        } else {
            self.outbound.send(&mut self.sink, piece)
        };
        sent.map_err(CopyError::Sink)?;
        self.inbound.consume(take);
        Ok(take as u64)
    }

    fn copy_exact(&mut self, length: u64) -> Result<u64, CopyError> {
        let mut remaining = length;
        while remaining > 0 {
            if self.inbound.is_empty() {
                self.fill()?;
            }
            remaining -= self.pass_buffered(remaining)?;
        }
        Ok(length)
    }

    fn copy_until_close(&mut self) -> Result<u64, CopyError> {
        let mut copied = 0;
        loop {
            copied += self.pass_buffered(u64::MAX)?;
            match self.fill() {
                Ok(()) => {}
                Err(CopyError::SourceClosed) => return Ok(copied),
                Err(error) => return Err(error),
            }
        }
    }

    /// Copies chunks until the last one (`(bytes, true)`), or until the next chunk would take the
    /// total past `budget` (`(bytes, false)`, leaving that chunk's size line unread).
    fn copy_chunked(&mut self, budget: u64) -> Result<(u64, bool), CopyError> {
        let mut copied: u64 = 0;
        loop {
            let line_length = self.line(MAX_CHUNK_LINE, "chunk size line too long")?;
            let size = parse_chunk_size(&self.inbound.buffered()[..line_length])?;
            let total = copied.saturating_add(size);
            if total > self.max_payload {
                return Err(CopyError::TooLarge);
            }
            if total > budget {
                return Ok((copied, false));
            }
            self.inbound.consume(line_length + 2);
            if size == 0 {
                self.skip_trailers()?;
                self.send(b"0\r\n\r\n")?;
                return Ok((copied, true));
            }
            self.send(format!("{size:x}\r\n").as_bytes())?;
            copied += self.copy_exact(size)?;
            while self.inbound.buffered().len() < 2 {
                self.fill()?;
            }
            if &self.inbound.buffered()[..2] != b"\r\n" {
                return Err(CopyError::Malformed("chunk data not followed by CRLF"));
            }
            self.inbound.consume(2);
            self.send(b"\r\n")?;
        }
    }

    /// Reads trailer lines up to the empty line that ends the message; they are not forwarded.
    fn skip_trailers(&mut self) -> Result<(), CopyError> {
        let mut trailer_bytes: usize = 0;
        loop {
            if trailer_bytes > MAX_TRAILER_BYTES {
                return Err(CopyError::Malformed("trailer section too large"));
            }
            let length = self.line(MAX_TRAILER_BYTES - trailer_bytes, "trailer section too large")?;
            let line = &self.inbound.buffered()[..length];
            let valid = line.is_empty()
                || line.iter().position(|&byte| byte == b':').is_some_and(|colon| {
                    colon > 0
                        && line[..colon].iter().all(|&byte| is_token_byte(byte))
                        && is_field_value(&line[colon + 1..])
                });
            if !valid {
                return Err(CopyError::Malformed("invalid trailer field"));
            }
            self.inbound.consume(length + 2);
            if length == 0 {
                return Ok(());
            }
            trailer_bytes += length + 2;
        }
    }

    /// Waits until a whole CRLF-terminated line is buffered and returns its length without the
    /// CRLF. A bare CR or LF, or a line longer than `limit`, is malformed.
    fn line(&mut self, limit: usize, too_long: &'static str) -> Result<usize, CopyError> {
        let mut scanned = 0;
        loop {
            let buffered = self.inbound.buffered();
            while scanned < buffered.len() {
                match buffered[scanned] {
                    b'\n' => return Err(CopyError::Malformed("bare LF in chunked framing")),
                    b'\r' => {
                        if scanned + 1 == buffered.len() {
                            break;
                        }
                        if buffered[scanned + 1] != b'\n' {
                            return Err(CopyError::Malformed("bare CR in chunked framing"));
                        }
                        return Ok(scanned);
                    }
                    _ => scanned += 1,
                }
                if scanned > limit {
                    return Err(CopyError::Malformed(too_long));
                }
            }
            if scanned > limit {
                return Err(CopyError::Malformed(too_long));
            }
            self.fill()?;
        }
    }
}

/// `1a3f` or `1a3f;name=value` → 0x1a3f. At most 16 hex digits; whitespace only before a `;`.
pub(crate) fn parse_chunk_size(line: &[u8]) -> Result<u64, CopyError> {
    let digits = line.iter().take_while(|byte| byte.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(CopyError::Malformed("invalid chunk size"));
    }
    let rest = &line[digits..];
    let extension = rest.trim_ascii_start();
    if !rest.is_empty() && (!extension.starts_with(b";") || !is_field_value(extension)) {
        return Err(CopyError::Malformed("invalid chunk extension"));
    }
    let text = std::str::from_utf8(&line[..digits]).map_err(|_| CopyError::Malformed("invalid chunk size"))?;
    u64::from_str_radix(text, 16).map_err(|_| CopyError::Malformed("invalid chunk size"))
}

fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

fn is_field_value(bytes: &[u8]) -> bool {
    bytes.iter().all(|&byte| byte == b'\t' || (byte >= 0x20 && byte != 0x7f))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::buffer::OUTBOUND_CAPACITY;

    /// Copies a body given as one input, returning (output, payload bytes, bytes left over).
    fn copy(framing: BodyFraming, input: &[u8]) -> Result<(Vec<u8>, u64, Vec<u8>), CopyError> {
        let mut inbound = Inbound::new();
        let mut source = input;
        let mut outbound = Outbound::new();
        let mut output = Vec::new();
        let copied = copy_body(framing, &mut inbound, &mut source, &mut outbound, &mut output, u64::MAX)?;
        outbound.flush(&mut output).map_err(CopyError::Sink)?;
        let mut rest = inbound.buffered().to_vec();
        rest.extend_from_slice(source);
        Ok((output, copied, rest))
    }

    /// A reader that hands out its bytes a few at a time, as a slow network does.
    struct Trickle<'a>(&'a [u8], usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let take = self.0.len().min(self.1).min(buf.len());
            buf[..take].copy_from_slice(&self.0[..take]);
            self.0 = &self.0[take..];
            Ok(take)
        }
    }

    #[test]
    fn fixed_length_stops_at_the_end_and_leaves_the_next_message() {
        let (output, copied, rest) = copy(BodyFraming::Length(5), b"helloGET / HTTP/1.1").unwrap();
        assert_eq!((output.as_slice(), copied), (&b"hello"[..], 5));
        assert_eq!(rest, b"GET / HTTP/1.1");
        assert!(matches!(copy(BodyFraming::Length(10), b"short"), Err(CopyError::SourceClosed)));
    }

    #[test]
    fn the_last_piece_of_a_body_waits_for_the_callers_flush() {
        let body = vec![5u8; 3 * OUTBOUND_CAPACITY];
        let mut inbound = Inbound::new();
        let mut outbound = Outbound::new();
        let mut output = Vec::new();
        let length = BodyFraming::Length(body.len() as u64);
        copy_body(length, &mut inbound, &body[..], &mut outbound, &mut output, u64::MAX).unwrap();
        assert!(outbound.pending() > 0, "the end of the body is held");
        assert!(output.len() < body.len());
        outbound.flush(&mut output).unwrap();
        assert_eq!(output, body);
    }

    #[test]
    fn until_close_takes_everything() {
        let (output, copied, _) = copy(BodyFraming::UntilClose, b"all of it").unwrap();
        assert_eq!((output.as_slice(), copied), (&b"all of it"[..], 9));
    }

    #[test]
    fn chunked_is_reframed_and_trailers_dropped() {
        let input = b"5;name=value\r\nhello\r\n6 ;x\r\n world\r\n0\r\nX-Checksum: 1\r\n\r\nNEXT";
        let (output, copied, rest) = copy(BodyFraming::Chunked, input).unwrap();
        assert_eq!(String::from_utf8(output).unwrap(), "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
        assert_eq!(copied, 11);
        assert_eq!(rest, b"NEXT");
    }

    #[test]
    fn chunked_survives_one_byte_reads() {
        let input = b"A\r\n0123456789\r\n3\r\nabc\r\n0\r\n\r\n";
        let mut inbound = Inbound::new();
        let mut outbound = Outbound::new();
        let mut output = Vec::new();
        let copied =
            copy_body(BodyFraming::Chunked, &mut inbound, Trickle(input, 1), &mut outbound, &mut output, u64::MAX)
                .unwrap();
        outbound.flush(&mut output).unwrap();
        assert_eq!(copied, 13);
        assert_eq!(output, b"a\r\n0123456789\r\n3\r\nabc\r\n0\r\n\r\n");
    }

    #[test]
    fn malformed_chunked_bodies_are_refused() {
        let cases: [(&[u8], &str); 10] = [
            (b"x\r\n", "invalid chunk size"),
            (b"\r\n", "invalid chunk size"),
            (b"-1\r\n", "invalid chunk size"),
            (b"11111111111111111\r\n", "invalid chunk size"),
            (b"5 \r\nhello\r\n0\r\n\r\n", "invalid chunk extension"),
            (b"5\nhello\r\n0\r\n\r\n", "bare LF in chunked framing"),
            (b"5\rhello\r\n0\r\n\r\n", "bare CR in chunked framing"),
            (b"5\r\nhelloXX0\r\n\r\n", "chunk data not followed by CRLF"),
            (b"5;a\x00b\r\nhello\r\n0\r\n\r\n", "invalid chunk extension"),
            (b"0\r\nbad trailer\r\n\r\n", "invalid trailer field"),
        ];
        for (input, reason) in cases {
            match copy(BodyFraming::Chunked, input) {
                Err(CopyError::Malformed(got)) => assert_eq!(got, reason, "{input:?}"),
                other => panic!("{input:?}: expected Malformed({reason}), got {other:?}"),
            }
        }
        let long_line = [b"1;".as_slice(), &vec![b'a'; MAX_CHUNK_LINE + 10], b"\r\n"].concat();
        assert!(matches!(
            copy(BodyFraming::Chunked, &long_line),
            Err(CopyError::Malformed("chunk size line too long"))
        ));
        let endless_trailers = [b"0\r\n".as_slice(), &b"X-T: v\r\n".repeat(MAX_TRAILER_BYTES / 8 + 1)].concat();
        assert!(matches!(
            copy(BodyFraming::Chunked, &endless_trailers),
            Err(CopyError::Malformed("trailer section too large"))
        ));
        assert!(matches!(copy(BodyFraming::Chunked, b"5\r\nhel"), Err(CopyError::SourceClosed)));
    }

    #[test]
    fn bodies_over_the_limit_are_refused() {
        let mut inbound = Inbound::new();
        let mut outbound = Outbound::new();
        let mut output = Vec::new();
        let result =
            copy_body(BodyFraming::Length(11), &mut inbound, &b"hello world"[..], &mut outbound, &mut output, 10);
        assert!(matches!(result, Err(CopyError::TooLarge)));
        assert!(output.is_empty() && outbound.pending() == 0, "nothing of it is passed on");

        let chunked = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        let result = copy_body(BodyFraming::Chunked, &mut Inbound::new(), &chunked[..], &mut outbound, &mut output, 10);
        assert!(matches!(result, Err(CopyError::TooLarge)));
        let result = copy_body(
            BodyFraming::Chunked,
            &mut Inbound::new(),
            &chunked[..],
            &mut Outbound::new(),
            &mut Vec::new(),
            11,
        );
        assert_eq!(result.unwrap(), 11);
    }

    #[test]
    fn a_chunked_prefix_stops_at_a_chunk_boundary_and_the_rest_resumes() {
        let input = b"4\r\nabcd\r\n4\r\nefgh\r\n4\r\nijkl\r\n0\r\n\r\n";
        let mut inbound = Inbound::new();
        let mut source = &input[..];
        let mut outbound = Outbound::new();
        let mut kept = Vec::new();
        let prefix = copy_chunked_prefix(&mut inbound, &mut source, &mut outbound, &mut kept, 9, u64::MAX).unwrap();
        assert_eq!(prefix, (8, false), "the third chunk would pass the budget");
        outbound.flush(&mut kept).unwrap();
        assert_eq!(kept, b"4\r\nabcd\r\n4\r\nefgh\r\n");
        let mut rest = Vec::new();
        let copied =
            copy_body(BodyFraming::Chunked, &mut inbound, &mut source, &mut outbound, &mut rest, u64::MAX).unwrap();
        outbound.flush(&mut rest).unwrap();
        assert_eq!((copied, rest.as_slice()), (4, &b"4\r\nijkl\r\n0\r\n\r\n"[..]));

        let mut whole = Vec::new();
        let mut outbound = Outbound::new();
        let fitted =
            copy_chunked_prefix(&mut Inbound::new(), &input[..], &mut outbound, &mut whole, 100, u64::MAX).unwrap();
        assert_eq!(fitted, (12, true));
    }
}
