//! The `/ws` endpoint after routing (RFC 6455): checking the opening handshake
//! (`websocket_key`), reading and checking client frames, unmasking them, echoing data frames,
//! answering pings and the close handshake; and the helpers behind it: frame headers, masking,
//! `sha1` and `base64_encode` for `Sec-WebSocket-Accept`, and the public [`websocket_accept`]
//! and [`websocket_frame`] that tests use to speak the protocol.
//!
//! Runs on the connection's own `echo-<port>-conn` thread: after the `101` that thread stays in
//! `websocket` until a close, an error or the idle timeout, then the connection ends.

use std::io;

use super::conn::Conn;
use super::request::{Framing, Request};

/// Appended to a `Sec-WebSocket-Key` before hashing it into `Sec-WebSocket-Accept`.
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Largest frame payload accepted from a client.
const MAX_FRAME_PAYLOAD: u64 = 16 * 1024 * 1024;
/// Largest payload of a control frame (close, ping, pong).
const MAX_CONTROL_PAYLOAD: u64 = 125;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// Close status: the peer broke the protocol.
const CLOSE_PROTOCOL_ERROR: u16 = 1002;
/// Close status: a message too big to process.
const CLOSE_TOO_BIG: u16 = 1009;

/// The `Sec-WebSocket-Accept` value answering `key`: base64 of the SHA-1 of the key followed
/// by the RFC 6455 GUID. The key is used exactly as given (no trimming).
pub fn websocket_accept(key: &str) -> String {
    base64_encode(&sha1(format!("{key}{WEBSOCKET_GUID}").as_bytes()))
}

/// One complete WebSocket frame with the FIN bit set: the low 4 bits of `opcode`, the payload
/// length in its shortest form and the payload. With `mask` the mask bit is set, the key is
/// included and the payload is masked with it (as a client must send); without, the frame is
/// unmasked (as a server sends).
pub fn websocket_frame(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut frame = frame_header(true, opcode, payload.len() as u64, mask);
    let start = frame.len();
    frame.extend_from_slice(payload);
    if let Some(mask) = mask {
        apply_mask(&mut frame[start..], mask, 0);
    }
    frame
}

/// Renders a frame header: FIN and opcode, the payload length (7, 16 or 64 bits) and the mask.
fn frame_header(fin: bool, opcode: u8, length: u64, mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut header = Vec::with_capacity(14);
    header.push(if fin { 0x80 } else { 0 } | (opcode & 0x0F));
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match length {
        0..=125 => header.push(mask_bit | length as u8),
        126..=0xFFFF => {
            header.push(mask_bit | 126);
            header.extend_from_slice(&(length as u16).to_be_bytes());
        }
        _ => {
            header.push(mask_bit | 127);
            header.extend_from_slice(&length.to_be_bytes());
        }
    }
    if let Some(mask) = mask {
        header.extend_from_slice(&mask);
    }
    header
}

/// XORs `data` with `mask`; `offset` is the position of `data[0]` within the frame payload.
fn apply_mask(data: &mut [u8], mask: [u8; 4], offset: u64) {
    let phase = (offset % 4) as usize;
    for (i, byte) in data.iter_mut().enumerate() {
        *byte ^= mask[(phase + i) % 4];
    }
}

/// Checks that `request` is a WebSocket opening handshake (RFC 6455 §4.2.1) and returns its
/// `Sec-WebSocket-Key`, or says what is wrong with it.
pub(super) fn websocket_key(request: &Request, framing: Framing) -> Result<String, &'static str> {
    if request.method != "GET" {
        return Err("a WebSocket upgrade must be a GET");
    }
    if request.minor < 1 {
        return Err("a WebSocket upgrade needs HTTP/1.1");
    }
    if framing != Framing::Length(0) {
        return Err("a WebSocket upgrade must not have a body");
    }
    if !request.has_token("upgrade", "websocket") {
        return Err("Upgrade must name websocket");
    }
    if !request.has_token("connection", "upgrade") {
        return Err("Connection must contain upgrade");
    }
    let mut versions = request.values("sec-websocket-version");
    if !matches!((versions.next(), versions.next()), (Some(version), None) if version.trim_ascii() == b"13") {
        return Err("Sec-WebSocket-Version must be 13");
    }
    let mut keys = request.values("sec-websocket-key");
    match (keys.next(), keys.next()) {
        (Some(key), None) if !key.trim_ascii().is_empty() && key.trim_ascii().iter().all(u8::is_ascii_graphic) => {
            Ok(String::from_utf8_lossy(key.trim_ascii()).into_owned())
        }
        _ => Err("exactly one Sec-WebSocket-Key is needed"),
    }
}

/// A frame header as read from the client.
struct FrameHead {
    fin: bool,
    /// The three RSV bits; no extension is negotiated, so they must be zero.
    rsv: u8,
    opcode: u8,
    masked: bool,
    /// All zeros when the frame is not masked.
    mask: [u8; 4],
    length: u64,
}

/// Reads the next frame header; `Ok(None)` when the client closed between frames.
fn read_frame_head(conn: &mut Conn) -> io::Result<Option<FrameHead>> {
    if !conn.buffer_at_least(2)? {
        return if conn.buffered().is_empty() { Ok(None) } else { Err(io::ErrorKind::UnexpectedEof.into()) };
    }
    let (first, second) = (conn.buffered()[0], conn.buffered()[1]);
    let masked = second & 0x80 != 0;
    let extended = match second & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let size = 2 + extended + if masked { 4 } else { 0 };
    if !conn.buffer_at_least(size)? {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let bytes = &conn.buffered()[..size];
    let length = match extended {
        0 => u64::from(second & 0x7F),
        _ => bytes[2..2 + extended].iter().fold(0, |length, &byte| (length << 8) | u64::from(byte)),
    };
    let mut mask = [0; 4];
    if masked {
        mask.copy_from_slice(&bytes[size - 4..]);
    }
    conn.consume(size);
    Ok(Some(FrameHead { fin: first & 0x80 != 0, rsv: first & 0x70, opcode: first & 0x0F, masked, mask, length }))
}

/// The close status a frame calls for, if it is not acceptable; `in_message` says a
/// fragmented message is in progress.
fn frame_problem(frame: &FrameHead, in_message: bool) -> Option<u16> {
    let broken = frame.rsv != 0
        || !frame.masked
        || frame.length >> 63 != 0
        || match frame.opcode {
            OP_CONTINUATION => !in_message,
            OP_TEXT | OP_BINARY => in_message,
            OP_CLOSE | OP_PING | OP_PONG => !frame.fin || frame.length > MAX_CONTROL_PAYLOAD,
            _ => true,
        };
    if broken {
        Some(CLOSE_PROTOCOL_ERROR)
    } else if frame.length > MAX_FRAME_PAYLOAD {
        Some(CLOSE_TOO_BIG)
    } else {
        None
    }
}

/// Serves an upgraded connection: echoes frames until a close, an error or the idle timeout.
/// Bytes already buffered behind the handshake are the start of the frame stream.
pub(super) fn websocket(conn: &mut Conn, scratch: &mut [u8]) -> io::Result<()> {
    // A fragmented data message has started and not yet finished.
    let mut in_message = false;
    loop {
        let Some(frame) = read_frame_head(conn)? else {
            return Ok(());
        };
        if let Some(code) = frame_problem(&frame, in_message) {
            return close_websocket(conn, &code.to_be_bytes());
        }
        match frame.opcode {
            OP_CONTINUATION | OP_TEXT | OP_BINARY => {
                in_message = !frame.fin;
                echo_frame(conn, &frame, scratch)?;
            }
            OP_PING => {
                let payload = read_control_payload(conn, &frame)?;
                conn.write_all(&websocket_frame(OP_PONG, &payload, None))?;
            }
            OP_CLOSE => {
                let payload = read_control_payload(conn, &frame)?;
                let reply = match payload.len() {
                    0 => Vec::new(),
                    // A status code is two bytes: one alone is malformed.
                    1 => CLOSE_PROTOCOL_ERROR.to_be_bytes().to_vec(),
                    _ => payload[..2].to_vec(),
                };
                return close_websocket(conn, &reply);
            }
            _ => {
                // A pong: nothing to do.
                read_control_payload(conn, &frame)?;
            }
        }
    }
}

/// Sends a close frame with `payload`, then closes the connection.
fn close_websocket(conn: &mut Conn, payload: &[u8]) -> io::Result<()> {
    conn.write_all(&websocket_frame(OP_CLOSE, payload, None))?;
    conn.linger_close();
    Ok(())
}

/// Reads and unmasks the payload of a control frame (at most 125 bytes).
fn read_control_payload(conn: &mut Conn, frame: &FrameHead) -> io::Result<Vec<u8>> {
    let length = frame.length.min(MAX_CONTROL_PAYLOAD) as usize;
    if !conn.buffer_at_least(length)? {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let mut payload = conn.buffered()[..length].to_vec();
    conn.consume(length);
    apply_mask(&mut payload, frame.mask, 0);
    Ok(payload)
}

/// Echoes one data frame unmasked, streaming its payload through `scratch` block by block.
fn echo_frame(conn: &mut Conn, frame: &FrameHead, scratch: &mut [u8]) -> io::Result<()> {
    let header = frame_header(frame.fin, frame.opcode, frame.length, None);
    // The header goes out with the first block of payload.
    scratch[..header.len()].copy_from_slice(&header);
    let mut filled = header.len();
    let mut done = 0u64;
    loop {
        let remaining = frame.length - done;
        let want = (scratch.len() - filled).min(usize::try_from(remaining).unwrap_or(usize::MAX));
        if want > 0 {
            let n = conn.read_into(&mut scratch[filled..filled + want])?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            apply_mask(&mut scratch[filled..filled + n], frame.mask, done);
            filled += n;
            done += n as u64;
        }
        conn.write_all(&scratch[..filled])?;
        filled = 0;
        if done == frame.length {
            return Ok(());
        }
    }
}

/// SHA-1 (RFC 3174) of `data`; only needed for `Sec-WebSocket-Accept`.
fn sha1(data: &[u8]) -> [u8; 20] {
    let mut state: [u32; 5] = [0x6745_2301, 0xEFCD_AB89, 0x98BA_DCFE, 0x1032_5476, 0xC3D2_E1F0];
    // Padding: a 1 bit, zeros up to 56 bytes modulo 64, then the length in bits (big-endian).
    let mut message = data.to_vec();
    message.push(0x80);
    while message.len() % 64 != 56 {
        message.push(0);
    }
    message.extend_from_slice(&(data.len() as u64).wrapping_mul(8).to_be_bytes());
    for block in message.chunks_exact(64) {
        let mut words = [0u32; 80];
        for (word, bytes) in words.iter_mut().zip(block.chunks_exact(4)) {
            *word = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        }
        for t in 16..80 {
            words[t] = (words[t - 3] ^ words[t - 8] ^ words[t - 14] ^ words[t - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = state;
        for (t, &word) in words.iter().enumerate() {
            let (f, k) = match t {
                0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
                20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let temp = a.rotate_left(5).wrapping_add(f).wrapping_add(e).wrapping_add(k).wrapping_add(word);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = temp;
        }
        for (value, add) in state.iter_mut().zip([a, b, c, d, e]) {
            *value = value.wrapping_add(add);
        }
    }
    let mut digest = [0u8; 20];
    for (bytes, value) in digest.chunks_exact_mut(4).zip(state) {
        bytes.copy_from_slice(&value.to_be_bytes());
    }
    digest
}

/// Standard base64 (RFC 4648 §4) with `=` padding; encoding only.
fn base64_encode(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for group in data.chunks(3) {
        let byte = |i: usize| u32::from(group.get(i).copied().unwrap_or(0));
        let bits = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        // n input bytes give n + 1 characters; `=` fills the group up to four.
        for i in 0..4 {
            if i <= group.len() {
                out.push(char::from(ALPHABET[((bits >> (18 - 6 * i)) & 0x3F) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::echo::test_client::{Client, backend, start};
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    /// The RFC 6455 §1.3 example key and its accept value.
    const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
    const MASK: Option<[u8; 4]> = Some([0x37, 0xFA, 0x21, 0x3D]);

    fn ws_request() -> String {
        format!(
            "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\n\
             Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
    }

    fn ws_answer() -> String {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {WS_ACCEPT}\r\nX-Backend: test-echo\r\n\r\n"
        )
    }

    /// Connects and completes the opening handshake, checking the exact `101` head.
    fn ws_connect(addr: SocketAddr) -> Client {
        let mut client = Client::connect(addr);
        client.send(ws_request().as_bytes());
        let answer = ws_answer();
        assert_eq!(String::from_utf8_lossy(&client.take(answer.len())), answer);
        client
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    #[test]
    fn sha1_matches_rfc_3174() {
        assert_eq!(hex(&sha1(b"abc")), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(
            hex(&sha1(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
            "84983e441c3bd26ebaae4aa1f95129e5e54670f1"
        );
        assert_eq!(hex(&sha1(&vec![b'a'; 1_000_000])), "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
        assert_eq!(
            hex(&sha1(&b"01234567012345670123456701234567".repeat(20))),
            "dea356a2cddd90c7a7ecedc5ebb563934f460452"
        );
        assert_eq!(hex(&sha1(b"")), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    }

    #[test]
    fn base64_matches_rfc_4648() {
        for (input, output) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(input.as_bytes()), output, "{input:?}");
        }
        assert_eq!(base64_encode(&[0xFB, 0xFF, 0xBF]), "+/+/");
    }

    #[test]
    fn accept_matches_rfc_6455() {
        assert_eq!(websocket_accept(WS_KEY), WS_ACCEPT);
    }

    #[test]
    fn frames_use_the_shortest_length() {
        assert_eq!(websocket_frame(OP_TEXT, b"hi", None), b"\x81\x02hi");
        assert_eq!(websocket_frame(OP_PING, b"", None), b"\x89\x00");
        // RFC 6455 §5.7: a masked "Hello".
        assert_eq!(
            websocket_frame(OP_TEXT, b"Hello", Some([0x37, 0xFA, 0x21, 0x3D])),
            [0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58]
        );
        assert_eq!(websocket_frame(OP_BINARY, &[0; 125], None)[..2], [0x82, 125]);
        assert_eq!(websocket_frame(OP_BINARY, &[0; 126], None)[..4], [0x82, 126, 0, 126]);
        assert_eq!(websocket_frame(OP_BINARY, &[0; 65535], None)[..4], [0x82, 126, 0xFF, 0xFF]);
        let frame = websocket_frame(OP_BINARY, &[0; 65536], MASK);
        assert_eq!(frame[..10], [0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!(frame.len(), 10 + 4 + 65536);
    }

    #[test]
    fn websocket_handshake_and_text_echo() {
        let mut client = ws_connect(backend());
        client.send(&websocket_frame(OP_TEXT, b"hello", MASK));
        // Exactly one unmasked frame comes back.
        assert_eq!(client.take(7), b"\x81\x05hello");
        client.send(&websocket_frame(OP_TEXT, "grüße".as_bytes(), MASK));
        assert_eq!(client.frame(), (true, OP_TEXT, "grüße".as_bytes().to_vec()));
        assert!(client.buf.is_empty());
    }

    #[test]
    fn websocket_echoes_a_large_binary_frame() {
        let mut client = ws_connect(backend());
        // More than 65535 bytes: the 64-bit length form.
        let payload: Vec<u8> = (0..70_000u32).map(|i| (i % 241) as u8).collect();
        client.send(&websocket_frame(OP_BINARY, &payload, MASK));
        let head = client.take(10);
        assert_eq!(head, [0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
        assert_eq!(client.take(payload.len()), payload);
        // Then a 16-bit length and an empty frame.
        client.send(&websocket_frame(OP_BINARY, &payload[..300], MASK));
        assert_eq!(client.frame(), (true, OP_BINARY, payload[..300].to_vec()));
        client.send(&websocket_frame(OP_BINARY, b"", MASK));
        assert_eq!(client.frame(), (true, OP_BINARY, Vec::new()));
    }

    #[test]
    fn websocket_fragments_are_echoed_frame_by_frame() {
        let mut client = ws_connect(backend());
        let mut first = websocket_frame(OP_TEXT, b"hel", MASK);
        first[0] &= 0x7F; // not FIN
        let mut middle = websocket_frame(OP_CONTINUATION, b"l", MASK);
        middle[0] &= 0x7F;
        client.send(&first);
        client.send(&middle);
        // A control frame may come between fragments.
        client.send(&websocket_frame(OP_PING, b"p", MASK));
        client.send(&websocket_frame(OP_CONTINUATION, b"o", MASK));
        assert_eq!(client.frame(), (false, OP_TEXT, b"hel".to_vec()));
        assert_eq!(client.frame(), (false, OP_CONTINUATION, b"l".to_vec()));
        assert_eq!(client.frame(), (true, OP_PONG, b"p".to_vec()));
        assert_eq!(client.frame(), (true, OP_CONTINUATION, b"o".to_vec()));
    }

    #[test]
    fn websocket_ping_gets_pong_and_pong_is_ignored() {
        let mut client = ws_connect(backend());
        client.send(&websocket_frame(OP_PONG, b"unsolicited", MASK));
        client.send(&websocket_frame(OP_PING, b"are you there", MASK));
        assert_eq!(client.frame(), (true, OP_PONG, b"are you there".to_vec()));
        client.send(&websocket_frame(OP_PING, b"", MASK));
        assert_eq!(client.frame(), (true, OP_PONG, Vec::new()));
        assert!(client.buf.is_empty());
    }

    #[test]
    fn websocket_close_is_echoed_then_the_connection_ends() {
        let addr = backend();
        let mut client = ws_connect(addr);
        client.send(&websocket_frame(OP_CLOSE, b"\x03\xE8bye", MASK));
        assert_eq!(client.frame(), (true, OP_CLOSE, vec![0x03, 0xE8]));
        client.expect_eof();

        let mut client = ws_connect(addr);
        client.send(&websocket_frame(OP_CLOSE, b"", MASK));
        assert_eq!(client.frame(), (true, OP_CLOSE, Vec::new()));
        client.expect_eof();
    }

    #[test]
    fn websocket_frame_right_behind_the_handshake() {
        let mut client = Client::connect(backend());
        let mut bytes = ws_request().into_bytes();
        bytes.extend_from_slice(&websocket_frame(OP_TEXT, b"early", MASK));
        bytes.extend_from_slice(&websocket_frame(OP_PING, b"too", MASK));
        client.send(&bytes);
        let answer = ws_answer();
        assert_eq!(String::from_utf8_lossy(&client.take(answer.len())), answer);
        assert_eq!(client.frame(), (true, OP_TEXT, b"early".to_vec()));
        assert_eq!(client.frame(), (true, OP_PONG, b"too".to_vec()));
    }

    #[test]
    fn websocket_protocol_errors_close_with_a_status() {
        let addr = backend();
        // Unmasked client frame: 1002.
        let mut client = ws_connect(addr);
        client.send(&websocket_frame(OP_TEXT, b"naked", None));
        assert_eq!(client.frame(), (true, OP_CLOSE, 1002u16.to_be_bytes().to_vec()));
        client.expect_eof();
        // Continuation without a message, unknown opcode, fragmented ping, RSV bit: 1002.
        let mut unfinished_ping = websocket_frame(OP_PING, b"", MASK);
        unfinished_ping[0] &= 0x7F;
        let mut rsv = websocket_frame(OP_TEXT, b"x", MASK);
        rsv[0] |= 0x40;
        for frame in
            [websocket_frame(OP_CONTINUATION, b"x", MASK), websocket_frame(0x3, b"", MASK), unfinished_ping, rsv]
        {
            let mut client = ws_connect(addr);
            client.send(&frame);
            assert_eq!(client.frame(), (true, OP_CLOSE, 1002u16.to_be_bytes().to_vec()), "{frame:02x?}");
            client.expect_eof();
        }
        // Over 16 MiB announced: 1009 before any payload is read.
        let mut client = ws_connect(addr);
        let mut head = frame_header(true, OP_BINARY, MAX_FRAME_PAYLOAD + 1, MASK);
        assert_eq!(head.len(), 14);
        head.extend_from_slice(b"abc");
        client.send(&head);
        assert_eq!(client.frame(), (true, OP_CLOSE, 1009u16.to_be_bytes().to_vec()));
        client.expect_eof();
    }

    #[test]
    fn bad_websocket_requests_get_400() {
        let addr = backend();
        let valid = ws_request();
        for (raw, why) in [
            ("GET /ws HTTP/1.1\r\nHost: x\r\n\r\n".to_string(), "Upgrade"),
            (valid.replace("Upgrade: WebSocket\r\n", "Upgrade: h2c\r\n"), "Upgrade"),
            (valid.replace("keep-alive, Upgrade", "keep-alive"), "Connection"),
            (valid.replace("Version: 13", "Version: 8"), "Version"),
            (valid.replace(&format!("Sec-WebSocket-Key: {WS_KEY}\r\n"), ""), "Key"),
            (valid.replace("GET", "POST").replace("Host: x", "Host: x\r\nContent-Length: 2"), "GET"),
            (valid.replace("Host: x", "Host: x\r\nContent-Length: 2"), "body"),
        ] {
            let mut client = Client::connect(addr);
            let body = if raw.contains("Content-Length: 2") { "ab" } else { "" };
            client.send(format!("{raw}{body}").as_bytes());
            let response = client.response(false);
            assert_eq!(response.status, 400, "{raw}");
            assert_eq!(response.header("content-type"), Some("text/plain"));
            assert_eq!(response.header("content-length"), Some(response.body.len().to_string().as_str()));
            assert_eq!(response.header("sec-websocket-version"), Some("13"));
            assert_eq!(response.header("connection"), None);
            let text = String::from_utf8(response.body).unwrap();
            assert!(text.starts_with("bad request: ") && text.contains(why), "{raw}: {text}");
            // Keep-alive rules apply: the connection serves the next request.
            client.send(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            assert_eq!(client.response(false).body, b"ok");
            client.expect_eof();
        }
        let mut client = Client::connect(addr);
        client.send(valid.replace("HTTP/1.1", "HTTP/1.0").replace("keep-alive, ", "").as_bytes());
        let response = client.response(false);
        assert_eq!(response.status, 400);
        assert_eq!(response.header("connection"), Some("close"));
        client.expect_eof();
    }

    #[test]
    fn websocket_latency_applies_to_the_handshake_only() {
        let addr = start(false, Duration::from_millis(300));
        let started = Instant::now();
        let mut client = ws_connect(addr);
        assert!(started.elapsed() >= Duration::from_millis(300));
        let started = Instant::now();
        client.send(&websocket_frame(OP_TEXT, b"quick", MASK));
        assert_eq!(client.frame(), (true, OP_TEXT, b"quick".to_vec()));
        assert!(started.elapsed() < Duration::from_millis(300));
    }

    #[test]
    fn websocket_fail_mode_closes_without_answering() {
        let mut client = Client::connect(start(true, Duration::ZERO));
        client.send(ws_request().as_bytes());
        client.expect_eof();
    }
}
