//! The host of a request: from the `Host` field or an absolute-form target's authority
//! (RFC 9110 §7.2, RFC 9112 §3.2.2, RFC 3986 §3.2.2), and host patterns from the config.

use std::fmt;
use std::net::Ipv6Addr;

use super::{TargetError, http_scheme_length, split_target};

/// A host and what followed it in an authority.
struct Authority<'a> {
    /// Lower case, without a trailing dot; an IPv6 literal in brackets; empty for "no host".
    host: String,
    /// The text after a `:` (empty for `host:`), `None` without a `:`.
    port: Option<&'a [u8]>,
}

/// The host of a `Host` field value or an absolute-form authority, normalised: ASCII lower case,
/// the port removed, one trailing dot removed (`example.com.` is `example.com`), an IPv6 literal
/// kept in brackets in its canonical form (RFC 5952: `[0:0::ABCD]:80` is `[::abcd]`).
///
/// A reg-name may hold only letters, digits, `-`, `.`, `_` and `~` (the unreserved characters of
/// RFC 3986): percent-escapes, userinfo and the sub-delimiters (`,` `;` `*` and the like, which
/// some readers split a host on) are refused, and so is an empty label. A port must be 1 to 5
/// digits up to 65535; `host:` has no port. An empty input is "no host" and gives an empty string.
pub fn normalise_host(raw: &[u8]) -> Result<String, TargetError> {
    read_authority(raw).map(|authority| authority.host)
}

fn read_authority(raw: &[u8]) -> Result<Authority<'_>, TargetError> {
    if raw.contains(&b'@') {
        return Err(TargetError::Userinfo);
    }
    let (host, port) = if raw.first() == Some(&b'[') {
        let close = raw.iter().position(|&byte| byte == b']').ok_or(TargetError::BadIpLiteral)?;
        let port = match &raw[close + 1..] {
            [] => None,
            [b':', port @ ..] => Some(port),
            _ => return Err(TargetError::BadIpLiteral),
        };
        (ip_literal(&raw[1..close])?, port)
    } else {
        let (name, port) = match raw.iter().position(|&byte| byte == b':') {
            Some(colon) => (&raw[..colon], Some(&raw[colon + 1..])),
            None => (raw, None),
        };
        (reg_name(name, port.is_some())?, port)
    };
    if let Some(port) = port {
        check_port(port)?;
    }
    Ok(Authority { host, port })
}

/// The inside of `[...]`: an IPv6 address, written canonically. IPvFuture and zone identifiers
/// (`%25eth0`) are refused.
fn ip_literal(inside: &[u8]) -> Result<String, TargetError> {
    let text = std::str::from_utf8(inside).map_err(|_| TargetError::BadIpLiteral)?;
    let address: Ipv6Addr = text.parse().map_err(|_| TargetError::BadIpLiteral)?;
    Ok(format!("[{address}]"))
}

/// A registered name (or IPv4 address, which has the same characters), lower-cased, without one
/// trailing dot.
fn reg_name(name: &[u8], has_port: bool) -> Result<String, TargetError> {
    if !name.iter().all(|&byte| is_host_byte(byte)) {
        return Err(TargetError::HostCharacter);
    }
    if name.is_empty() {
        return if has_port { Err(TargetError::MissingHost) } else { Ok(String::new()) };
    }
    let name = name.strip_suffix(b".").unwrap_or(name);
    if name.split(|&byte| byte == b'.').any(<[u8]>::is_empty) {
        return Err(TargetError::HostEmptyLabel);
    }
    // Every byte is ASCII, checked above.
    Ok(String::from_utf8_lossy(name).to_ascii_lowercase())
}

/// The unreserved characters of RFC 3986 §2.3.
fn is_host_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// 1 to 5 digits naming a number up to 65535, or nothing at all (`host:` has no port).
fn check_port(port: &[u8]) -> Result<(), TargetError> {
    if port.is_empty() {
        return Ok(());
    }
    if port.len() > 5 || !port.iter().all(u8::is_ascii_digit) {
        return Err(TargetError::BadPort);
    }
    let value = port.iter().fold(0u32, |value, &digit| value * 10 + u32::from(digit - b'0'));
    if value > u32::from(u16::MAX) { Err(TargetError::BadPort) } else { Ok(()) }
}

/// The host a request is for, normalised as by [`normalise_host`].
///
/// For an absolute-form target (`http://` or `https://`, in any case) the target's authority wins
/// (RFC 9112 §3.2.2), and a `Host` field that names a different host is refused with
/// [`TargetError::HostMismatch`]: the backend, which may read either, must not be able to read
/// another host than the router did. Ports are not compared (`http://a:80/` with `Host: a:8080`
/// agree), since routes match hosts, not ports. Any other target takes its host from the `Host`
/// field, given as its value (spaces and tabs around it, which are not part of a field value, are
/// ignored); without one, the request has no host and the answer is an empty string.
pub fn request_host(target: &[u8], host_field: Option<&[u8]>) -> Result<String, TargetError> {
    let field_host = host_field.map(|value| normalise_host(trim_whitespace(value))).transpose()?;
    if http_scheme_length(target).is_none() {
        return Ok(field_host.unwrap_or_default());
    }
    let authority = split_target(target)?.authority.unwrap_or_default();
    let target_host = normalise_host(authority)?;
    match field_host {
        Some(field_host) if field_host != target_host => Err(TargetError::HostMismatch),
        _ => Ok(target_host),
    }
}

/// `value` without the spaces and tabs around it (RFC 9110 §5.5).
fn trim_whitespace(value: &[u8]) -> &[u8] {
    let is_text = |byte: &u8| *byte != b' ' && *byte != b'\t';
    let start = value.iter().position(is_text).unwrap_or(value.len());
    let end = value.iter().rposition(is_text).map_or(start, |last| last + 1);
    &value[start..end]
}

/// A host to match from the config: `example.com` (that host only) or `*.example.com` (exactly one
/// more label in front: `a.example.com`, but not `example.com` or `a.b.example.com`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    /// The host, or for a wildcard what follows `*.`; normalised like a request's host.
    name: String,
    wildcard: bool,
}

impl HostPattern {
    /// Reads a pattern from config text. Upper case and one trailing dot are normalised away, as in
    /// a request's host; a port, `*` anywhere but as the whole first label, `*` alone and anything
    /// a host could not be are refused with the reason.
    pub fn parse(text: &str) -> Result<HostPattern, String> {
        if text.is_empty() {
            return Err("a host pattern cannot be empty".to_string());
        }
        if text == "*" || text == "*." {
            return Err(format!("{text:?} would match every host; leave the host out of the match instead"));
        }
        let (name, wildcard) = match text.strip_prefix("*.") {
            Some(suffix) => (suffix, true),
            None => (text, false),
        };
        if name.contains('*') {
            return Err(format!("{text:?}: \"*\" may only be the whole first label, as in \"*.example.com\""));
        }
        let authority = read_authority(name.as_bytes()).map_err(|error| format!("{text:?}: {error}"))?;
        if authority.port.is_some() {
            return Err(format!("{text:?}: a host pattern has no port (routes match hosts on any port)"));
        }
        if authority.host.is_empty() {
            return Err(format!("{text:?}: \"*.\" needs a domain after it, as in \"*.example.com\""));
        }
        if wildcard && authority.host.starts_with('[') {
            return Err(format!("{text:?}: an IP address has no labels for \"*\" to stand for"));
        }
        Ok(HostPattern { name: authority.host, wildcard })
    }

    /// Whether `host` (normalised by [`normalise_host`] or [`request_host`]) matches, ignoring
    /// ASCII case.
    pub fn matches(&self, host: &str) -> bool {
        let host = host.as_bytes();
        let name = self.name.as_bytes();
        if !self.wildcard {
            return host.eq_ignore_ascii_case(name);
        }
        let Some(label_end) = host.len().checked_sub(name.len() + 1) else { return false };
        let (label, rest) = host.split_at(label_end);
        rest[0] == b'.' && rest[1..].eq_ignore_ascii_case(name) && !label.is_empty() && !label.contains(&b'.')
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard { write!(formatter, "*.{}", self.name) } else { formatter.write_str(&self.name) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TargetError::*;

    #[test]
    fn hosts_are_normalised_or_refused() {
        let cases: &[(&[u8], Result<&str, TargetError>)] = &[
            (b"example.com", Ok("example.com")),
            (b"Example.COM", Ok("example.com")),
            (b"EXAMPLE.COM", Ok("example.com")),
            (b"example.com:8080", Ok("example.com")),
            (b"example.com:80", Ok("example.com")),
            (b"example.com:0", Ok("example.com")),
            (b"example.com:65535", Ok("example.com")),
            (b"example.com:00080", Ok("example.com")),
            (b"example.com:", Ok("example.com")),
            (b"example.com.", Ok("example.com")),
            (b"Example.com.:8080", Ok("example.com")),
            (b"example.com..", Err(HostEmptyLabel)),
            (b"example..com", Err(HostEmptyLabel)),
            (b".example.com", Err(HostEmptyLabel)),
            (b".", Err(HostEmptyLabel)),
            (b"..", Err(HostEmptyLabel)),
            (b"localhost", Ok("localhost")),
            (b"127.0.0.1", Ok("127.0.0.1")),
            (b"127.0.0.1:3000", Ok("127.0.0.1")),
            (b"127.0.0.1.", Ok("127.0.0.1")),
            (b"my_host-1.internal", Ok("my_host-1.internal")),
            (b"xn--bcher-kva.example", Ok("xn--bcher-kva.example")),
            (b"[::1]", Ok("[::1]")),
            (b"[::1]:8080", Ok("[::1]")),
            (b"[::1]:", Ok("[::1]")),
            (b"[2001:DB8::A]", Ok("[2001:db8::a]")),
            (b"[2001:db8:0:0:0:0:0:1]:443", Ok("[2001:db8::1]")),
            (b"[::ffff:127.0.0.1]", Ok("[::ffff:127.0.0.1]")),
            (b"[::1", Err(BadIpLiteral)),
            (b"[::1]x", Err(BadIpLiteral)),
            (b"[::1]]", Err(BadIpLiteral)),
            (b"[127.0.0.1]", Err(BadIpLiteral)),
            (b"[fe80::1%25eth0]", Err(BadIpLiteral)),
            (b"[v1.x]", Err(BadIpLiteral)),
            (b"[]", Err(BadIpLiteral)),
            (b"[::1]:99999", Err(BadPort)),
            (b"::1", Err(MissingHost)),
            (b"a]", Err(HostCharacter)),
            (b"a[b", Err(HostCharacter)),
            (b"example.com:65536", Err(BadPort)),
            (b"example.com:123456", Err(BadPort)),
            (b"example.com:8o", Err(BadPort)),
            (b"example.com:+80", Err(BadPort)),
            (b"example.com:80:80", Err(BadPort)),
            (b"example.com: 80", Err(BadPort)),
            (b":8080", Err(MissingHost)),
            (b":", Err(MissingHost)),
            (b"", Ok("")),
            (b"user@example.com", Err(Userinfo)),
            (b"user:pass@example.com", Err(Userinfo)),
            (b"example.com@evil.test", Err(Userinfo)),
            (b"@", Err(Userinfo)),
            (b"exa mple.com", Err(HostCharacter)),
            (b" example.com", Err(HostCharacter)),
            (b"example.com\t", Err(HostCharacter)),
            (b"example.com\r\n", Err(HostCharacter)),
            (b"exa\0mple.com", Err(HostCharacter)),
            (b"example.com/", Err(HostCharacter)),
            (b"example.com\\", Err(HostCharacter)),
            (b"example.com?", Err(HostCharacter)),
            (b"example.com#", Err(HostCharacter)),
            (b"ex%61mple.com", Err(HostCharacter)),
            (b"a,b", Err(HostCharacter)),
            (b"a;b", Err(HostCharacter)),
            (b"*.example.com", Err(HostCharacter)),
            (b"b\xc3\xbccher.example", Err(HostCharacter)),
            (b"\xff", Err(HostCharacter)),
        ];
        for (raw, expected) in cases {
            let expected = expected.map(str::to_string);
            assert_eq!(normalise_host(raw), expected, "normalise_host({:?})", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn the_absolute_form_authority_wins_and_must_agree_with_host() {
        let cases: &[(&str, Option<&str>, Result<&str, TargetError>)] = &[
            ("/a", Some("Example.com"), Ok("example.com")),
            ("/a", Some("example.com:8080"), Ok("example.com")),
            ("/a", Some("  example.com\t"), Ok("example.com")),
            ("/a", Some("a b"), Err(HostCharacter)),
            ("/a", None, Ok("")),
            ("/a", Some(""), Ok("")),
            ("*", Some("example.com"), Ok("example.com")),
            ("example.com:443", Some("other.test"), Ok("other.test")),
            ("http://example.com/a", Some("example.com"), Ok("example.com")),
            ("http://example.com/a", None, Ok("example.com")),
            ("http://Example.com:80", Some("example.COM"), Ok("example.com")),
            ("http://example.com:80/", Some("example.com:8080"), Ok("example.com")),
            ("http://example.com/", Some("example.com:8080"), Ok("example.com")),
            ("http://example.com./", Some("example.com"), Ok("example.com")),
            ("HTTPS://x/y?z", Some("X"), Ok("x")),
            ("http://[::1]:8080/", Some("[0::1]"), Ok("[::1]")),
            ("http://example.com/a", Some("other.test"), Err(HostMismatch)),
            ("http://example.com/a", Some("example.com.evil.test"), Err(HostMismatch)),
            ("http://example.com/a", Some(""), Err(HostMismatch)),
            ("http://a:80/", Some("b:80"), Err(HostMismatch)),
            ("http://example.com/a", Some("user@example.com"), Err(Userinfo)),
            ("http://user@example.com/a", Some("example.com"), Err(Userinfo)),
            ("http://example.com:99999/", Some("example.com"), Err(BadPort)),
            ("http://:80/", Some("example.com"), Err(MissingHost)),
            ("http:///a", Some("example.com"), Err(MissingHost)),
            ("http://example.com/#x", Some("example.com"), Err(Fragment)),
        ];
        for (target, host_field, expected) in cases {
            let got = request_host(target.as_bytes(), host_field.map(str::as_bytes));
            assert_eq!(got, expected.map(str::to_string), "request_host({target:?}, {host_field:?})");
        }
    }

    #[test]
    fn host_patterns_parse_or_say_what_is_wrong() {
        let good: &[(&str, &str)] = &[
            ("example.com", "example.com"),
            ("Example.COM", "example.com"),
            ("example.com.", "example.com"),
            ("*.example.com", "*.example.com"),
            ("*.Example.com.", "*.example.com"),
            ("*.com", "*.com"),
            ("localhost", "localhost"),
            ("127.0.0.1", "127.0.0.1"),
            ("[0:0::1]", "[::1]"),
        ];
        for (text, shown) in good {
            let pattern = HostPattern::parse(text).unwrap_or_else(|error| panic!("{text:?}: {error}"));
            assert_eq!(pattern.to_string(), *shown, "{text:?}");
        }
        let bad: &[(&str, &str)] = &[
            ("", "cannot be empty"),
            ("*", "every host"),
            ("*.", "every host"),
            ("a.*.com", "whole first label"),
            ("*example.com", "whole first label"),
            ("*.*.example.com", "whole first label"),
            ("example.*", "whole first label"),
            ("ex*ample.com", "whole first label"),
            ("example.com:8080", "no port"),
            ("example.com:", "no port"),
            ("*.example.com:443", "no port"),
            ("[::1]:80", "no port"),
            ("*..", "empty label"),
            ("example..com", "empty label"),
            ("example.com..", "empty label"),
            ("*.[::1]", "IP address"),
            ("user@example.com", "userinfo"),
            ("exa mple.com", "character"),
            (" example.com", "character"),
            ("example.com/", "character"),
            ("a,b", "character"),
            ("ex%61mple.com", "character"),
            ("[::1", "IPv6"),
            (":80", "no host"),
        ];
        for (text, reason) in bad {
            match HostPattern::parse(text) {
                Ok(pattern) => panic!("{text:?} parsed as {pattern}"),
                Err(error) => assert!(error.contains(reason), "{text:?}: {error:?} does not say {reason:?}"),
            }
        }
    }

    #[test]
    fn an_exact_pattern_matches_one_host_and_a_wildcard_one_more_label() {
        let cases: &[(&str, &str, bool)] = &[
            ("example.com", "example.com", true),
            ("Example.COM", "example.com", true),
            ("example.com", "EXAMPLE.com", true),
            ("example.com", "a.example.com", false),
            ("example.com", "example.co", false),
            ("example.com", "example.com.evil.test", false),
            ("example.com", "", false),
            ("*.example.com", "a.example.com", true),
            ("*.example.com", "A.Example.COM", true),
            ("*.example.com", "www-1.example.com", true),
            ("*.example.com", "example.com", false),
            ("*.example.com", "a.b.example.com", false),
            ("*.example.com", ".example.com", false),
            ("*.example.com", "aexample.com", false),
            ("*.example.com", "a.example.com.evil.test", false),
            ("*.example.com", "a.example.org", false),
            ("*.example.com", "", false),
            ("*.com", "example.com", true),
            ("*.com", "com", false),
            ("[::1]", "[::1]", true),
            ("127.0.0.1", "127.0.0.1", true),
            ("127.0.0.1", "127.0.0.10", false),
        ];
        for (pattern, host, expected) in cases {
            let parsed = HostPattern::parse(pattern).unwrap();
            assert_eq!(parsed.matches(host), *expected, "{pattern:?} matches {host:?}");
        }
    }

    #[test]
    fn a_request_host_matches_after_normalising() {
        let wildcard = HostPattern::parse("*.example.com").unwrap();
        for raw in ["A.Example.COM", "a.example.com.", "a.example.com:8443", "A.EXAMPLE.COM.:80"] {
            let host = normalise_host(raw.as_bytes()).unwrap();
            assert!(wildcard.matches(&host), "{raw:?} read as {host:?}");
        }
        let host = request_host(b"http://A.Example.COM:8080/x", Some(b"a.example.com")).unwrap();
        assert!(wildcard.matches(&host));
    }
}
