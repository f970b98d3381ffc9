//! Who the client is: the socket's peer address, unless that peer is a trusted proxy.
//!
//! `X-Forwarded-For` is written by whoever sends the request, so it is believed only as far as
//! the chain of `trustedProxies` goes: starting from the socket peer, each address that is a
//! trusted proxy hands over to the address it says it received the request from (the next one
//! leftwards in `X-Forwarded-For`); the first address that is not trusted is the client. With no
//! trusted proxies configured, the peer address is the client and the header changes nothing.
//! The result feeds `ip_hash`, the rate limiter, `X-Real-IP` and the access log.

use std::net::IpAddr;

use crate::config::Cidr;
use crate::http::head::Fields;

/// The client's address for a request that arrived from `peer` with `fields`.
pub fn client_address(peer: IpAddr, fields: &Fields, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |address: IpAddr| trusted.iter().any(|block| block.contains(address));
    if !is_trusted(peer) {
        return peer;
    }
    let hops: Vec<&[u8]> = fields
        .values("x-forwarded-for")
        .flat_map(|value| value.split(|&byte| byte == b','))
        .map(<[u8]>::trim_ascii)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Some(address) = parse_hop(hop) else {
            // Garbage where an address should be: believe nothing further left.
            return client;
        };
        client = address;
        if !is_trusted(address) {
            return address;
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an IPv4 or IPv6 address, optionally with a port
/// (`192.0.2.1:4711`, `[2001:db8::1]:4711`).
fn parse_hop(hop: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(hop).ok()?;
    if let Ok(address) = text.parse() {
        return Some(address);
    }
    if let Some(bracketed) = text.strip_prefix('[') {
        return bracketed.split(']').next()?.parse().ok();
    }
    let (address, port) = text.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    address.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::{HeadLimits, parse_request};

    fn fields(forwarded_for: &[&str]) -> Fields {
        let lines: String = forwarded_for.iter().map(|value| format!("X-Forwarded-For: {value}\r\n")).collect();
        let text = format!("GET / HTTP/1.1\r\nHost: a\r\n{lines}\r\n");
        parse_request(text.as_bytes(), &HeadLimits::default()).unwrap().unwrap().0.fields
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn blocks(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|text| Cidr::parse(text).unwrap()).collect()
    }

    #[test]
    fn without_trusted_proxies_the_header_is_ignored() {
        let found = client_address(ip("198.51.100.7"), &fields(&["1.2.3.4"]), &[]);
        assert_eq!(found, ip("198.51.100.7"));
        let untrusted_peer = client_address(ip("198.51.100.7"), &fields(&["1.2.3.4"]), &blocks(&["10.0.0.0/8"]));
        assert_eq!(untrusted_peer, ip("198.51.100.7"), "only a trusted peer's header counts");
    }

    #[test]
    fn the_rightmost_untrusted_address_is_the_client() {
        let trusted = blocks(&["10.0.0.0/8", "192.168.1.1"]);
        let cases: [(&[&str], &str); 7] = [
            (&["203.0.113.9"], "203.0.113.9"),
            (&["6.6.6.6, 203.0.113.9"], "203.0.113.9"),
            (&["6.6.6.6, 203.0.113.9, 192.168.1.1"], "203.0.113.9"),
            (&["6.6.6.6", "203.0.113.9, 10.1.1.1"], "203.0.113.9"),
            (&["10.9.9.9, 10.1.1.1"], "10.9.9.9"),
            (&["203.0.113.9:4711"], "203.0.113.9"),
            (&["[2001:db8::5]:80"], "2001:db8::5"),
        ];
        for (header, expected) in cases {
            assert_eq!(client_address(ip("10.0.0.2"), &fields(header), &trusted), ip(expected), "{header:?}");
        }
        assert_eq!(client_address(ip("10.0.0.2"), &fields(&[]), &trusted), ip("10.0.0.2"));
        assert_eq!(
            client_address(ip("10.0.0.2"), &fields(&["203.0.113.9, garbage, 10.1.1.1"]), &trusted),
            ip("10.1.1.1"),
            "nothing left of garbage is believed"
        );
    }
}
