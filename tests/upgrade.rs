//! Upgrade and WebSocket through the load balancer: a real handshake with `echo-backend`'s `/ws`,
//! masked frames echoed back, ping/pong and the close handshake over the tunnel, the idle
//! timeout, and an upgrade the backend declines.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{Client, EchoBackend, LoadBalancer, config};
use loadbalancer::echo::{websocket_accept, websocket_frame};

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn handshake(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: lb\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// Reads one unmasked server frame: (opcode, payload).
fn read_frame(stream: &mut impl Read) -> (u8, Vec<u8>) {
    let mut header = [0u8; 2];
    stream.read_exact(&mut header).unwrap();
    assert_eq!(header[1] & 0x80, 0, "server frames are not masked");
    let length = match header[1] & 0x7f {
        126 => {
            let mut extended = [0u8; 2];
            stream.read_exact(&mut extended).unwrap();
            u64::from(u16::from_be_bytes(extended))
        }
        127 => {
            let mut extended = [0u8; 8];
            stream.read_exact(&mut extended).unwrap();
            u64::from_be_bytes(extended)
        }
        short => u64::from(short),
    };
    let mut payload = vec![0u8; length as usize];
    stream.read_exact(&mut payload).unwrap();
    (header[0] & 0x0f, payload)
}

#[test]
fn a_websocket_session_passes_through_the_tunnel() {
    let backend = EchoBackend::start(&["--name", "ws"]);
    let lb = LoadBalancer::start(&config(&[backend.url()], ""));
    let mut client = Client::connect(lb.addr());
    client.send(handshake("/ws").as_bytes());
    let switched = client.response(true);
    assert_eq!(switched.status, 101, "{}", switched.head);
    assert_eq!(switched.header("upgrade"), Some("websocket"));
    assert_eq!(switched.header("connection"), Some("Upgrade"));
    assert_eq!(switched.header("sec-websocket-accept"), Some(websocket_accept(KEY).as_str()));
    assert_eq!(websocket_accept(KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");

    let mut stream = client.stream.try_clone().unwrap();
    let mut stream_in = client.into_reader();
    stream.write_all(&websocket_frame(0x1, b"hello through the tunnel", Some([1, 2, 3, 4]))).unwrap();
    assert_eq!(read_frame(&mut stream_in), (0x1, b"hello through the tunnel".to_vec()));

    let large: Vec<u8> = (0..70_000u32).map(|index| (index % 253) as u8).collect();
    stream.write_all(&websocket_frame(0x2, &large, Some([9, 8, 7, 6]))).unwrap();
    assert_eq!(read_frame(&mut stream_in), (0x2, large));

    stream.write_all(&websocket_frame(0x9, b"are you there", Some([5, 5, 5, 5]))).unwrap();
    assert_eq!(read_frame(&mut stream_in), (0xA, b"are you there".to_vec()));

    stream.write_all(&websocket_frame(0x8, &1000u16.to_be_bytes(), Some([0, 1, 0, 1]))).unwrap();
    assert_eq!(read_frame(&mut stream_in), (0x8, 1000u16.to_be_bytes().to_vec()));
    let mut rest = Vec::new();
    stream_in.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "the backend's close reaches the client");
    drop((stream, stream_in)); // The client closes its side too: the tunnel is over.

    lb.log.wait_for("\"GET /ws HTTP/1.1\" 101", Duration::from_secs(5));
    let metrics = lb.metrics();
    assert_eq!(metrics["success_requests"], 1);
    assert_eq!(metrics["backends"][0]["active_connections"], 0);
}

#[test]
fn a_frame_sent_right_behind_the_handshake_is_not_lost() {
    let backend = EchoBackend::start(&[]);
    let lb = LoadBalancer::start(&config(&[backend.url()], ""));
    let mut client = Client::connect(lb.addr());
    let mut eager = handshake("/ws").into_bytes();
    eager.extend_from_slice(&websocket_frame(0x1, b"eager", Some([7, 7, 7, 7])));
    client.send(&eager);
    assert_eq!(client.response(true).status, 101);
    assert_eq!(read_frame(&mut client.into_reader()), (0x1, b"eager".to_vec()));
}

#[test]
fn an_idle_tunnel_is_closed_after_the_tunnel_idle_timeout() {
    let backend = EchoBackend::start(&[]);
    let lb = LoadBalancer::start(&config(&[backend.url()], "\"tunnelIdleTimeout\": \"300ms\""));
    let mut client = Client::connect(lb.addr());
    client.send(handshake("/ws").as_bytes());
    assert_eq!(client.response(true).status, 101);
    let started = std::time::Instant::now();
    assert!(client.is_closed(), "the idle tunnel was closed");
    // The tunnel's clock starts as the 101 is sent, a moment before it is read here.
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(250), "closed after {waited:?}");
    assert!(waited < Duration::from_millis(1200), "closed after {waited:?}, not within 4 × tunnelIdleTimeout");
    common::wait_until(Duration::from_secs(5), "the pair to finish", || {
        lb.metrics()["backends"][0]["active_connections"] == 0
    });
}

#[test]
fn a_declined_upgrade_is_an_ordinary_exchange() {
    let backend = EchoBackend::start(&[]);
    let lb = LoadBalancer::start(&config(&[backend.url()], ""));
    let mut client = Client::connect(lb.addr());
    client.send(handshake("/echo-me").as_bytes());
    let response = client.response(false);
    assert_eq!(response.status, 200, "the backend answered normally");
    let seen = response.json()["headers"].to_string();
    assert!(seen.contains("[\"Upgrade\",\"websocket\"]") && seen.contains("[\"Connection\",\"upgrade\"]"), "{seen}");
    client.send(b"GET /ping HTTP/1.1\r\nHost: lb\r\n\r\n");
    assert_eq!(client.response(false).status, 200, "the connection stays usable");
}
