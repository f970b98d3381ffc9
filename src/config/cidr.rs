//! Address blocks in the config (`trustedProxies`): `10.0.0.0/8`, `::1`. Read on the thread that
//! loads the config; [`Cidr::contains`] is asked by the workers.

use std::net::IpAddr;

use serde_json::Value;

use super::ConfigError;
use super::reader::{Reader, kind_of};

/// An address block such as `10.0.0.0/8` or `::1/128`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `ADDR/PREFIX`, or a bare address (a block of one).
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let invalid = || format!("{text:?} is not an address block like \"10.0.0.0/8\" or \"::1\"");
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address.parse().map_err(|_| invalid())?;
        let width = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix.parse::<u8>().ok().filter(|&bits| bits <= width).ok_or_else(invalid)?,
            None => width,
        };
        Ok(Cidr { network, prefix })
    }

    /// Whether `address` lies in this block (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, address: IpAddr) -> bool {
        let (network, address, width) = match (self.network, address.to_canonical()) {
            (IpAddr::V4(network), IpAddr::V4(address)) => {
                (u128::from(u32::from(network)), u128::from(u32::from(address)), 32)
            }
            (IpAddr::V6(network), IpAddr::V6(address)) => (u128::from(network), u128::from(address), 128),
            _ => return false,
        };
        let shift = width - u32::from(self.prefix);
        shift >= width || (network >> shift) == (address >> shift)
    }
}

impl Reader<'_> {
    pub(super) fn trusted_proxies(&self) -> Result<Vec<Cidr>, ConfigError> {
        match self.object.get("trustedProxies") {
            None => Ok(Vec::new()),
            Some(Value::Array(list)) => list
                .iter()
                .enumerate()
                .map(|(index, entry)| {
                    let key = format!("trustedProxies[{index}]");
                    match entry {
                        Value::String(text) => Cidr::parse(text).map_err(|problem| self.error(&key, problem)),
                        other => Err(self.error(&key, format!("must be a string, got {}", kind_of(other)))),
                    }
                })
                .collect(),
            Some(other) => {
                Err(self.error("trustedProxies", format!("must be a list of address blocks, got {}", kind_of(other))))
            }
        }
    }
}
