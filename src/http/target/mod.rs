//! The one reading of a request's host and path; pure functions, called on the worker thread.
//!
//! The router, the request sent to the backend and any later certificate choice all take the host
//! and the path from here, so no two of them can read the same request two ways. Nothing is
//! guessed: a target or host that could be read more than one way is refused, and the caller
//! answers `400` for every [`TargetError`].
//!
//! Rules:
//! - The request target is one of the four forms of RFC 9112 §3.2 ([`split_target`]); a `#`
//!   anywhere is refused, since fragments are never sent.
//! - The host comes from an absolute-form target's authority when there is one, else from `Host`
//!   (RFC 9112 §3.2.2, RFC 9110 §7.2); when both are present they must name the same host, ports
//!   aside ([`request_host`]).
//! - A host is ASCII lower case, without its port and without one trailing dot; an IPv6 literal
//!   keeps its brackets and is written in its canonical form; userinfo, percent-escapes,
//!   sub-delimiters and empty labels are refused ([`normalise_host`]).
//! - A path has its percent-escapes of unreserved characters decoded and every other escape in
//!   upper case (RFC 3986 §6.2.2.1, §6.2.2.2), repeated slashes merged and dot-segments removed
//!   (§5.2.4), with `..;x` counting as `..`; encoded `/`, `\` and NUL, a literal `\`, and a path
//!   that climbs above `/` are refused ([`normalise_path`]).
//! - Host patterns match exactly or one more label (`*.example.com`) ([`HostPattern`]); path
//!   prefixes match whole segments (`/v1` is not a prefix of `/v1beta`) ([`prefix_matches`]).

mod host;
mod path;

use std::fmt;

pub use host::{HostPattern, normalise_host, request_host};
pub use path::{normalise_path, prefix_matches, strip_prefix, validate_prefix};

/// Why a request's target or host was refused. Every variant is answered with `400`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetError {
    /// The target is none of origin-form (`/a`), absolute-form (`http://h/a`), authority-form
    /// (`h:443`) or asterisk-form (`*`); an empty target is none of them either.
    BadForm,
    /// An absolute-form target whose scheme is neither `http` nor `https`.
    UnsupportedScheme,
    /// A `#` in the target: fragments are never part of a request.
    Fragment,
    /// A byte outside visible ASCII (a space, a control byte, a byte above 0x7E) in the target.
    TargetCharacter,
    /// The authority carries userinfo (`user@host`), which a request never sends.
    Userinfo,
    /// The host contains a byte no host name may: whitespace, a control byte, non-ASCII, one of
    /// `/ \ ? # @ %`, a sub-delimiter (`! $ & ' ( ) * + , ; =`) or a stray `[`, `]` or `:`.
    HostCharacter,
    /// The host has an empty label: `a..b`, `.a`, `a..` (only one trailing dot is allowed).
    HostEmptyLabel,
    /// A bracketed host that is not a valid IPv6 address, or text after the `]` other than a port.
    BadIpLiteral,
    /// The port is not 1 to 5 digits naming a number up to 65535.
    BadPort,
    /// An authority with a port but no host (`:8080`), or an absolute-form target with no host.
    MissingHost,
    /// An absolute-form target and the `Host` field name different hosts.
    HostMismatch,
    /// The path does not start with `/`.
    PathNotAbsolute,
    /// A `%` in the path not followed by two hexadecimal digits.
    BadPercentEscape,
    /// An encoded NUL (`%00`), `/` (`%2F`) or `\` (`%5C`) in the path, which backends decode
    /// differently.
    ForbiddenEscape,
    /// A byte no path may contain: a literal `\`, `?`, a space, a control byte or non-ASCII.
    PathCharacter,
    /// The path's dot-segments climb above the root (`/..`, `/a/../..`).
    AboveRoot,
}

impl fmt::Display for TargetError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.reason())
    }
}

impl TargetError {
    /// The reason, short enough for a log line and a `400` body, naming no internals.
    pub fn reason(&self) -> &'static str {
        match self {
            TargetError::BadForm => "request target is not in origin, absolute, authority or asterisk form",
            TargetError::UnsupportedScheme => "absolute-form target with a scheme other than http or https",
            TargetError::Fragment => "request target contains a fragment (#)",
            TargetError::TargetCharacter => "request target contains a space, control or non-ASCII byte",
            TargetError::Userinfo => "host contains userinfo (@)",
            TargetError::HostCharacter => "host contains a character no host name may contain",
            TargetError::HostEmptyLabel => "host has an empty label",
            TargetError::BadIpLiteral => "host is not a valid IPv6 literal",
            TargetError::BadPort => "port is not a number from 0 to 65535",
            TargetError::MissingHost => "authority has no host",
            TargetError::HostMismatch => "Host field and request target name different hosts",
            TargetError::PathNotAbsolute => "path does not start with /",
            TargetError::BadPercentEscape => "path has a % not followed by two hex digits",
            TargetError::ForbiddenEscape => "path contains an encoded NUL, / or \\",
            TargetError::PathCharacter => "path contains a backslash, ?, space, control or non-ASCII byte",
            TargetError::AboveRoot => "path climbs above /",
        }
    }
}

impl std::error::Error for TargetError {}

/// The four forms of a request target (RFC 9112 §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetForm {
    /// `/path?query`: what clients send to an origin server.
    Origin,
    /// `http://authority/path?query`: what clients send to a proxy; the authority names the host.
    Absolute,
    /// `host:port`: only for `CONNECT`.
    Authority,
    /// `*`: only for `OPTIONS`, about the server rather than a resource.
    Asterisk,
}

/// A request target cut into its parts, each a slice of the target as it arrived (nothing is
/// decoded or normalised here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    pub form: TargetForm,
    /// The authority (`host[:port]`) of absolute-form and authority-form targets.
    pub authority: Option<&'a [u8]>,
    /// The path of origin-form and absolute-form targets, starting with `/` (`/` when an
    /// absolute-form target has none); empty for authority-form and asterisk-form.
    pub path: &'a [u8],
    /// What follows the first `?`, without it: `None` when there is no `?`, `Some(b"")` for a bare
    /// `?`.
    pub query: Option<&'a [u8]>,
}

/// The length of an `http://` or `https://` prefix of `target`, compared case-insensitively.
pub(crate) fn http_scheme_length(target: &[u8]) -> Option<usize> {
    [&b"http://"[..], b"https://"].into_iter().find_map(|scheme| {
        let prefix = target.get(..scheme.len())?;
        prefix.eq_ignore_ascii_case(scheme).then_some(scheme.len())
    })
}

/// Whether `target` starts with a URI scheme (RFC 3986 §3.1) followed by `://`.
fn has_scheme(target: &[u8]) -> bool {
    let Some(colon) = target.iter().position(|&byte| byte == b':') else { return false };
    let (scheme, rest) = target.split_at(colon);
    scheme.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme.iter().all(|&byte| byte.is_ascii_alphanumeric() || matches!(byte, b'+' | b'-' | b'.'))
        && rest.starts_with(b"://")
}

/// Cuts a request target into its form, authority, path and query (RFC 9112 §3.2).
///
/// The target must be visible ASCII without `#`. An absolute-form target must use `http` or
/// `https` (in any case) and name an authority; an authority-form target is `host:port` with a
/// port. Hosts and paths are checked by [`normalise_host`] and [`normalise_path`], not here.
pub fn split_target(target: &[u8]) -> Result<Target<'_>, TargetError> {
    if target.contains(&b'#') {
        return Err(TargetError::Fragment);
    }
    if !target.iter().all(|&byte| byte.is_ascii_graphic()) {
        return Err(TargetError::TargetCharacter);
    }
    if target == b"*" {
        return Ok(Target { form: TargetForm::Asterisk, authority: None, path: b"", query: None });
    }
    if target.starts_with(b"/") {
        let (path, query) = split_query(target);
        return Ok(Target { form: TargetForm::Origin, authority: None, path, query });
    }
    if let Some(scheme_length) = http_scheme_length(target) {
        let rest = &target[scheme_length..];
        let authority_end = rest.iter().position(|&byte| byte == b'/' || byte == b'?').unwrap_or(rest.len());
        let (authority, rest) = rest.split_at(authority_end);
        if authority.is_empty() {
            return Err(TargetError::MissingHost);
        }
        let (path, query) = split_query(rest);
        let path = if path.is_empty() { b"/" } else { path };
        return Ok(Target { form: TargetForm::Absolute, authority: Some(authority), path, query });
    }
    if has_scheme(target) {
        return Err(TargetError::UnsupportedScheme);
    }
    if is_authority_form(target) {
        return Ok(Target { form: TargetForm::Authority, authority: Some(target), path: b"", query: None });
    }
    Err(TargetError::BadForm)
}

/// `host:port` with a non-empty port of digits and no `/` or `?` (RFC 9112 §3.2.3).
fn is_authority_form(target: &[u8]) -> bool {
    let Some(colon) = target.iter().rposition(|&byte| byte == b':') else { return false };
    let port = &target[colon + 1..];
    !target.contains(&b'/')
        && !target.contains(&b'?')
        && colon > 0
        && !port.is_empty()
        && port.iter().all(u8::is_ascii_digit)
}

/// The part before the first `?` and the part after it.
fn split_query(path_and_query: &[u8]) -> (&[u8], Option<&[u8]>) {
    match path_and_query.iter().position(|&byte| byte == b'?') {
        Some(question) => (&path_and_query[..question], Some(&path_and_query[question + 1..])),
        None => (path_and_query, None),
    }
}

/// What the load balancer reads from a request's target and `Host` field, once, for every use:
/// routing, the backend's request line and `Host`, the access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestTarget {
    /// The host the request names ([`request_host`]): normalised, empty when it names none.
    pub host: String,
    /// The target to forward: origin-form with the normalised path and the query as received, or
    /// `*` for an asterisk-form `OPTIONS`.
    pub forwarded: String,
    /// For an absolute-form target, its authority as received (`Example.com:8080`): the backend
    /// is sent an origin-form target, and this as its `Host` (RFC 9112 §3.2.2).
    pub authority: Option<String>,
}

/// Reads `target` and the `Host` field together. Authority-form is refused here: it belongs to
/// `CONNECT` alone, which is refused before.
pub fn read_request_target(target: &[u8], host_field: Option<&[u8]>) -> Result<RequestTarget, TargetError> {
    let parts = split_target(target)?;
    let host = request_host(target, host_field)?;
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let forwarded = match parts.form {
        TargetForm::Asterisk => "*".to_string(),
        TargetForm::Authority => return Err(TargetError::BadForm),
        TargetForm::Origin | TargetForm::Absolute => {
            let mut forwarded = normalise_path(parts.path)?;
            if let Some(query) = parts.query {
                forwarded.push('?');
                forwarded.push_str(&text(query));
            }
            forwarded
        }
    };
    let authority = match parts.form {
        TargetForm::Absolute => parts.authority.map(text),
        _ => None,
    };
    Ok(RequestTarget { host, forwarded, authority })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_target_is_read_once_into_host_forwarded_target_and_authority() {
        let read = |target: &str, host: Option<&str>| read_request_target(target.as_bytes(), host.map(str::as_bytes));
        let expect = |host: &str, forwarded: &str, authority: Option<&str>| {
            Ok(RequestTarget {
                host: host.to_string(),
                forwarded: forwarded.to_string(),
                authority: authority.map(str::to_string),
            })
        };
        assert_eq!(read("/a/./b/../c?x=%2F", Some("Example.COM.:80")), expect("example.com", "/a/c?x=%2F", None));
        assert_eq!(
            read("/%7Euser//x", Some("h")),
            expect("h", "/~user/x", None),
            "the query is the only part kept raw"
        );
        assert_eq!(read("/a?", Some("h")), expect("h", "/a?", None), "a bare ? is kept");
        assert_eq!(read("*", Some("h")), expect("h", "*", None));
        assert_eq!(
            read("HTTP://Api.Example.com:8080/v1/../v2?q", Some("api.example.com")),
            expect("api.example.com", "/v2?q", Some("Api.Example.com:8080")),
            "absolute form: origin form forwarded, the authority becomes Host"
        );
        assert_eq!(read("http://h", None), expect("h", "/", Some("h")), "an HTTP/1.0 absolute form without Host");
        assert_eq!(read("/a", None), expect("", "/a", None), "an HTTP/1.0 request may name no host");
        assert_eq!(read("http://a/x", Some("b")), Err(TargetError::HostMismatch));
        assert_eq!(read("h:443", Some("h")), Err(TargetError::BadForm), "authority form is CONNECT's alone");
        assert_eq!(read("/a/%2e%2e/%2e%2e/etc", Some("h")), Err(TargetError::AboveRoot));
        assert_eq!(read("/a%2Fb", Some("h")), Err(TargetError::ForbiddenEscape));
        assert_eq!(read("/a#frag", Some("h")), Err(TargetError::Fragment));
        assert_eq!(read("/a", Some("bad host")), Err(TargetError::HostCharacter));
    }

    type Expected = Result<(TargetForm, Option<&'static str>, &'static str, Option<&'static str>), TargetError>;

    #[test]
    fn targets_split_into_form_authority_path_and_query() {
        use TargetForm::*;
        let cases: &[(&str, Expected)] = &[
            ("/", Ok((Origin, None, "/", None))),
            ("/a/b", Ok((Origin, None, "/a/b", None))),
            ("/a?b=1", Ok((Origin, None, "/a", Some("b=1")))),
            ("/a?b=1?c=2/d", Ok((Origin, None, "/a", Some("b=1?c=2/d")))),
            ("/a?", Ok((Origin, None, "/a", Some("")))),
            ("/?", Ok((Origin, None, "/", Some("")))),
            ("//a", Ok((Origin, None, "//a", None))),
            ("*", Ok((Asterisk, None, "", None))),
            ("http://Example.com:80", Ok((Absolute, Some("Example.com:80"), "/", None))),
            ("http://x", Ok((Absolute, Some("x"), "/", None))),
            ("http://x?q", Ok((Absolute, Some("x"), "/", Some("q")))),
            ("HTTPS://x/y?z", Ok((Absolute, Some("x"), "/y", Some("z")))),
            ("hTtP://x/y/", Ok((Absolute, Some("x"), "/y/", None))),
            ("http://[::1]:8080/a", Ok((Absolute, Some("[::1]:8080"), "/a", None))),
            ("http://u@x/", Ok((Absolute, Some("u@x"), "/", None))),
            ("example.com:443", Ok((Authority, Some("example.com:443"), "", None))),
            ("[::1]:443", Ok((Authority, Some("[::1]:443"), "", None))),
            ("/a#b", Err(TargetError::Fragment)),
            ("/a?b#c", Err(TargetError::Fragment)),
            ("http://x/#", Err(TargetError::Fragment)),
            ("#", Err(TargetError::Fragment)),
            ("", Err(TargetError::BadForm)),
            ("**", Err(TargetError::BadForm)),
            ("*?x", Err(TargetError::BadForm)),
            ("a/b", Err(TargetError::BadForm)),
            ("example.com", Err(TargetError::BadForm)),
            ("example.com:", Err(TargetError::BadForm)),
            (":443", Err(TargetError::BadForm)),
            ("example.com:443/x", Err(TargetError::BadForm)),
            ("http:/x", Err(TargetError::BadForm)),
            ("http://", Err(TargetError::MissingHost)),
            ("http:///a", Err(TargetError::MissingHost)),
            ("http://?q", Err(TargetError::MissingHost)),
            ("ftp://x/", Err(TargetError::UnsupportedScheme)),
            ("ws://x/", Err(TargetError::UnsupportedScheme)),
            ("/a b", Err(TargetError::TargetCharacter)),
            ("/a\tb", Err(TargetError::TargetCharacter)),
            ("/a\u{e9}", Err(TargetError::TargetCharacter)),
            ("/a\r\n", Err(TargetError::TargetCharacter)),
        ];
        for (target, expected) in cases {
            let got = split_target(target.as_bytes()).map(|split| {
                let text = |bytes: &[u8]| String::from_utf8(bytes.to_vec()).unwrap();
                (split.form, split.authority.map(text), text(split.path), split.query.map(text))
            });
            let expected = expected.map(|(form, authority, path, query)| {
                (form, authority.map(str::to_string), path.to_string(), query.map(str::to_string))
            });
            assert_eq!(got, expected, "split_target({target:?})");
        }
    }

    #[test]
    fn every_error_has_a_short_reason_without_internals() {
        use TargetError::*;
        let all = [
            BadForm,
            UnsupportedScheme,
            Fragment,
            TargetCharacter,
            Userinfo,
            HostCharacter,
            HostEmptyLabel,
            BadIpLiteral,
            BadPort,
            MissingHost,
            HostMismatch,
            PathNotAbsolute,
            BadPercentEscape,
            ForbiddenEscape,
            PathCharacter,
            AboveRoot,
        ];
        let reasons: Vec<String> = all.iter().map(ToString::to_string).collect();
        for (error, reason) in all.iter().zip(&reasons) {
            assert!(!reason.is_empty() && reason.len() < 80, "{error:?}: {reason:?}");
            assert!(!reason.contains(&format!("{error:?}")), "{error:?} names itself: {reason:?}");
        }
        let mut unique = reasons.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), reasons.len(), "two errors share a reason");
    }
}
