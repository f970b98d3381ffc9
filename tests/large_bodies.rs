//! A 1 GiB download and a 1 GiB upload pass through with the load balancer's memory flat:
//! bodies are streamed, never held whole.

mod common;

use std::io::{Read, Write};
use std::thread;

use common::{Client, EchoBackend, LoadBalancer, config};

const GIB: usize = 1 << 30;
/// The load balancer's peak resident memory must stay under this while a GiB passes.
const MEMORY_BOUND_KIB: u64 = 32 * 1024;

/// `echo-backend`'s `/bytes/N` pattern: byte i is i % 251. One buffer holds every phase of it.
fn pattern() -> Vec<u8> {
    (0..251 * 300).map(|index| (index % 251) as u8).collect()
}

/// Reads exactly `total` body bytes, checking each against the pattern without keeping them.
fn read_and_check(stream: &mut impl Read, already: &[u8], total: usize) {
    let pattern = pattern();
    let mut position = 0usize;
    let check = |bytes: &[u8], position: &mut usize| {
        for piece in bytes.chunks(251 * 200) {
            let phase = *position % 251;
            assert!(piece == &pattern[phase..phase + piece.len()], "corrupt body near byte {position}");
            *position += piece.len();
        }
    };
    check(already, &mut position);
    let mut buffer = vec![0u8; 256 * 1024];
    while position < total {
        let count = stream.read(&mut buffer).unwrap();
        assert!(count > 0, "body ended after {position} of {total} bytes");
        check(&buffer[..count], &mut position);
    }
    assert_eq!(position, total);
}

/// Reads a response head, returning it and any body bytes read with it.
fn read_head(stream: &mut impl Read) -> (String, Vec<u8>) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end + 4]).into_owned();
            return (head, buffer[end + 4..].to_vec());
        }
        let count = stream.read(&mut chunk).unwrap();
        assert!(count > 0, "closed before the response head");
        buffer.extend_from_slice(&chunk[..count]);
    }
}

#[test]
fn one_gibibyte_down_and_up_with_flat_memory() {
    let backend = EchoBackend::start(&[]);
    let lb = LoadBalancer::start(&config(&[backend.url()], ""));

    let mut download = Client::connect(lb.addr());
    download.send(format!("GET /bytes/{GIB} HTTP/1.1\r\nHost: lb\r\n\r\n").as_bytes());
    let (head, already) = read_head(&mut download.stream);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains(&format!("Content-Length: {GIB}\r\n")), "{head}");
    read_and_check(&mut download.stream, &already, GIB);

    let mut upload = Client::connect(lb.addr());
    let mut writer = upload.stream.try_clone().unwrap();
    let sender = thread::spawn(move || {
        writer
            .write_all(format!("POST /echo HTTP/1.1\r\nHost: lb\r\nContent-Length: {GIB}\r\n\r\n").as_bytes())
            .unwrap();
        let block: Vec<u8> = pattern()[..251 * 261].to_vec();
        let mut sent = 0;
        while sent < GIB {
            let take = block.len().min(GIB - sent);
            writer.write_all(&block[..take]).unwrap();
            sent += take;
        }
    });
    let (head, already) = read_head(&mut upload.stream);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    read_and_check(&mut upload.stream, &already, GIB);
    sender.join().unwrap();

    let (_, peak) = lb.memory_kib();
    assert!(peak < MEMORY_BOUND_KIB, "peak RSS {peak} KiB while 2 GiB passed through");
    assert_eq!(lb.metrics()["success_requests"], 2);
}
