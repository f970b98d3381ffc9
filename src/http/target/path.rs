//! The path of a request: one normal form (RFC 3986 §6.2.2, §5.2.4) and the segment-aware prefix
//! matching that routes use.

use super::TargetError;

/// The origin-form path `raw_path` (without its query) in normal form, or why it is refused.
///
/// In order:
/// 1. Percent-escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded and every other
///    escape is written with upper-case hex digits (`%3a` is `%3A`). A `%` without two hex digits,
///    an encoded NUL, `/` or `\` (`%00`, `%2F`, `%5C`, in any case) is refused, as are a literal
///    `\`, `?` or `#`, spaces, control bytes and non-ASCII bytes.
/// 2. Repeated slashes are merged (`//a///b` is `/a/b`).
/// 3. Dot-segments are removed (RFC 3986 §5.2.4), after decoding, so `%2e%2e` is `..`. A segment
///    that is `.` or `..` followed by `;` and a parameter (`..;x`) is that dot-segment, parameter
///    and all. A path that would climb above `/` is refused, not clamped.
///
/// A trailing slash is kept (`/a/` stays `/a/`), and a path ending in a dot-segment ends with one
/// (`/a/b/..` is `/a/`). Letters keep their case. The result is its own normal form.
pub fn normalise_path(raw_path: &[u8]) -> Result<String, TargetError> {
    if raw_path.first() != Some(&b'/') {
        return Err(TargetError::PathNotAbsolute);
    }
    let decoded = decode_unreserved(raw_path)?;
    let mut segments: Vec<&str> = Vec::new();
    let mut ends_with_slash = false;
    // Everything after the leading `/`; an empty piece is a repeated or a trailing slash.
    for segment in decoded[1..].split('/') {
        match DotSegment::of(segment) {
            _ if segment.is_empty() => ends_with_slash = true,
            Some(DotSegment::Current) => ends_with_slash = true,
            Some(DotSegment::Parent) => {
                segments.pop().ok_or(TargetError::AboveRoot)?;
                ends_with_slash = true;
            }
            None => {
                segments.push(segment);
                ends_with_slash = false;
            }
        }
    }
    let mut path = String::with_capacity(decoded.len());
    for segment in &segments {
        path.push('/');
        path.push_str(segment);
    }
    if ends_with_slash || segments.is_empty() {
        path.push('/');
    }
    Ok(path)
}

/// A segment that names a place relative to its own: `.` or `..`, with or without a `;` parameter.
enum DotSegment {
    Current,
    Parent,
}

impl DotSegment {
    fn of(segment: &str) -> Option<DotSegment> {
        let name = segment.split(';').next().unwrap_or(segment);
        match name {
            "." => Some(DotSegment::Current),
            ".." => Some(DotSegment::Parent),
            _ => None,
        }
    }
}

/// Step 1 of [`normalise_path`]: escapes decoded or upper-cased, refused bytes refused.
fn decode_unreserved(raw_path: &[u8]) -> Result<String, TargetError> {
    let mut decoded = String::with_capacity(raw_path.len());
    let mut rest = raw_path;
    while let Some((&byte, after)) = rest.split_first() {
        rest = after;
        match byte {
            b'%' => {
                let (high, low) = match rest {
                    [high, low, ..] => (hex_value(*high), hex_value(*low)),
                    _ => (None, None),
                };
                let (Some(high), Some(low)) = (high, low) else { return Err(TargetError::BadPercentEscape) };
                rest = &rest[2..];
                let value = high << 4 | low;
                if matches!(value, 0 | b'/' | b'\\') {
                    return Err(TargetError::ForbiddenEscape);
                }
                if is_unreserved(value) {
                    decoded.push(char::from(value));
                } else {
                    decoded.push('%');
                    decoded.push(char::from(HEX_DIGITS[usize::from(high)]));
                    decoded.push(char::from(HEX_DIGITS[usize::from(low)]));
                }
            }
            b'#' => return Err(TargetError::Fragment),
            b'\\' | b'?' => return Err(TargetError::PathCharacter),
            byte if byte.is_ascii_graphic() => decoded.push(char::from(byte)),
            _ => return Err(TargetError::PathCharacter),
        }
    }
    Ok(decoded)
}

const HEX_DIGITS: &[u8; 16] = b"0123456789ABCDEF";

fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit).to_digit(16).and_then(|value| u8::try_from(value).ok())
}

/// The unreserved characters of RFC 3986 §2.3, whose escapes mean the same as the characters.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// Whether the route prefix `prefix` covers the normalised `path`, segment by segment: `/v1` covers
/// `/v1`, `/v1/` and `/v1/x` but not `/v1beta`; a prefix ending in `/` covers what starts with it
/// (`/static/` covers `/static/` and `/static/a`, not `/static`); `/` covers every path. The empty
/// "path" of an authority-form or asterisk-form target is covered by no prefix.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix.ends_with('/') {
        return path.starts_with(prefix);
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// `path` without the route prefix `prefix`, cut at the segment boundary, always starting with `/`:
/// `/v1/x` under `/v1` is `/x`, `/static/a` under `/static/` is `/a`, and `/v1` under `/v1` is `/`.
/// A path the prefix does not cover (see [`prefix_matches`]) is returned unchanged.
pub fn strip_prefix(prefix: &str, path: &str) -> String {
    if !prefix_matches(prefix, path) {
        return path.to_string();
    }
    // The prefix's own trailing `/` is the boundary, and goes back in front of the rest.
    let boundary = prefix.strip_suffix('/').unwrap_or(prefix);
    match path.get(boundary.len()..) {
        Some(rest) if rest.starts_with('/') => rest.to_string(),
        _ => "/".to_string(),
    }
}

/// Checks a route's `pathPrefix` from the config: it must start with `/` and be a path in the
/// normal form of [`normalise_path`], since requests' paths are compared in that form. The error
/// names the problem and the form to write instead.
pub fn validate_prefix(prefix: &str) -> Result<(), String> {
    if !prefix.starts_with('/') {
        return Err(format!("{prefix:?} must start with \"/\""));
    }
    let normalised = normalise_path(prefix.as_bytes()).map_err(|error| format!("{prefix:?}: {error}"))?;
    if normalised == prefix {
        return Ok(());
    }
    let decoded = decode_unreserved(prefix.as_bytes()).map_err(|error| format!("{prefix:?}: {error}"))?;
    let problem = if decoded.split('/').any(|segment| DotSegment::of(segment).is_some()) {
        "has a dot-segment (\".\" or \"..\")"
    } else if decoded.contains("//") {
        "has an empty segment (\"//\")"
    } else {
        "percent-encodes an unreserved character or writes an escape in lower case"
    };
    Err(format!("{prefix:?} is not a normalised path: it {problem}; write it as {normalised:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use TargetError::*;

    #[test]
    fn paths_are_normalised_or_refused() {
        let cases: &[(&[u8], Result<&str, TargetError>)] = &[
            (b"/", Ok("/")),
            (b"/a", Ok("/a")),
            (b"/a/", Ok("/a/")),
            (b"/A/b", Ok("/A/b")),
            // Escapes: unreserved decoded, the rest upper-cased, the dangerous refused.
            (b"/%7E", Ok("/~")),
            (b"/%7e", Ok("/~")),
            (b"/%41", Ok("/A")),
            (b"/%61%2D%5F%2e%30", Ok("/a-_.0")),
            (b"/%3a", Ok("/%3A")),
            (b"/%3A", Ok("/%3A")),
            (b"/a%20b", Ok("/a%20b")),
            (b"/a%2a", Ok("/a%2A")),
            (b"/%c3%a9", Ok("/%C3%A9")),
            (b"/%25", Ok("/%25")),
            (b"/%252e", Ok("/%252e")),
            (b"/%3B", Ok("/%3B")),
            (b"/%0d%0a", Ok("/%0D%0A")),
            (b"/%2F", Err(ForbiddenEscape)),
            (b"/%2f", Err(ForbiddenEscape)),
            (b"/a%2Fb", Err(ForbiddenEscape)),
            (b"/%5C", Err(ForbiddenEscape)),
            (b"/%5c", Err(ForbiddenEscape)),
            (b"/%00", Err(ForbiddenEscape)),
            (b"/%zz", Err(BadPercentEscape)),
            (b"/%4", Err(BadPercentEscape)),
            (b"/%", Err(BadPercentEscape)),
            (b"/%%41", Err(BadPercentEscape)),
            (b"/%4g", Err(BadPercentEscape)),
            (b"/% 4", Err(BadPercentEscape)),
            // Bytes no path may contain.
            (b"/a\\b", Err(PathCharacter)),
            (b"/\\", Err(PathCharacter)),
            (b"/a b", Err(PathCharacter)),
            (b"/a\tb", Err(PathCharacter)),
            (b"/a\0", Err(PathCharacter)),
            (b"/a\x7f", Err(PathCharacter)),
            (b"/\xc3\xa9", Err(PathCharacter)),
            (b"/a?b", Err(PathCharacter)),
            (b"/a#b", Err(Fragment)),
            (b"", Err(PathNotAbsolute)),
            (b"a/b", Err(PathNotAbsolute)),
            (b"*", Err(PathNotAbsolute)),
            (b"%2Fa", Err(PathNotAbsolute)),
            (b"http://x/a", Err(PathNotAbsolute)),
            // Repeated slashes.
            (b"//", Ok("/")),
            (b"/a//b", Ok("/a/b")),
            (b"//a///b", Ok("/a/b")),
            (b"/a//", Ok("/a/")),
            (b"/a//..", Ok("/")),
            // Dot-segments.
            (b"/.", Ok("/")),
            (b"/./", Ok("/")),
            (b"/a/./b", Ok("/a/b")),
            (b"/a/../b", Ok("/b")),
            (b"/a/b/..", Ok("/a/")),
            (b"/a/b/../", Ok("/a/")),
            (b"/a/.", Ok("/a/")),
            (b"/a/..", Ok("/")),
            (b"/a/b/../../c", Ok("/c")),
            (b"/a/%2e/b", Ok("/a/b")),
            (b"/a/%2E%2e/b", Ok("/b")),
            (b"/a/.%2e", Ok("/")),
            (b"/a/..;x/b", Ok("/b")),
            (b"/a/..;/b", Ok("/b")),
            (b"/a/.;x/b", Ok("/a/b")),
            (b"/a/%2e%2e;x/b", Ok("/b")),
            (b"/a/b;x/c", Ok("/a/b;x/c")),
            (b"/a/...", Ok("/a/...")),
            (b"/a/.b", Ok("/a/.b")),
            (b"/a/..b", Ok("/a/..b")),
            (b"/a/b../c", Ok("/a/b../c")),
            (b"/a/..%3Bx/b", Ok("/a/..%3Bx/b")),
            (b"/..", Err(AboveRoot)),
            (b"/../", Err(AboveRoot)),
            (b"/../a", Err(AboveRoot)),
            (b"/a/../..", Err(AboveRoot)),
            (b"/a/../../b", Err(AboveRoot)),
            (b"/..;/x", Err(AboveRoot)),
            (b"/%2e%2e", Err(AboveRoot)),
            (b"/%2E%2E/etc", Err(AboveRoot)),
            (b"/a/%2e%2e/%2e%2e", Err(AboveRoot)),
            (b"//..", Err(AboveRoot)),
        ];
        for (raw, expected) in cases {
            let expected = expected.map(str::to_string);
            assert_eq!(normalise_path(raw), expected, "normalise_path({:?})", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn prefixes_match_whole_segments() {
        let cases: &[(&str, &str, bool)] = &[
            ("/v1", "/v1", true),
            ("/v1", "/v1/", true),
            ("/v1", "/v1/x", true),
            ("/v1", "/v1/x/y", true),
            ("/v1", "/v1beta", false),
            ("/v1", "/v", false),
            ("/v1", "/", false),
            ("/v1", "/V1", false),
            ("/v1", "/x/v1", false),
            ("/static/", "/static/a", true),
            ("/static/", "/static/", true),
            ("/static/", "/static", false),
            ("/static/", "/staticx/a", false),
            ("/", "/", true),
            ("/", "/anything/at/all", true),
            ("/", "", false),
            ("/v1", "", false),
            ("/a/b", "/a/b/c", true),
            ("/a/b", "/a/bc", false),
            ("/a/b", "/a", false),
        ];
        for (prefix, path, expected) in cases {
            assert_eq!(prefix_matches(prefix, path), *expected, "prefix_matches({prefix:?}, {path:?})");
        }
    }

    #[test]
    fn stripping_a_prefix_leaves_a_path_from_the_boundary() {
        let cases: &[(&str, &str, &str)] = &[
            ("/v1", "/v1/x", "/x"),
            ("/v1", "/v1/x/y/", "/x/y/"),
            ("/v1", "/v1", "/"),
            ("/v1", "/v1/", "/"),
            ("/static/", "/static/a", "/a"),
            ("/static/", "/static/", "/"),
            ("/static/", "/static/a/b", "/a/b"),
            ("/", "/a/b", "/a/b"),
            ("/", "/", "/"),
            ("/a/b", "/a/b/c", "/c"),
            // Not covered: unchanged.
            ("/v1", "/v1beta", "/v1beta"),
            ("/static/", "/static", "/static"),
            ("/v1", "/other", "/other"),
            ("/", "", ""),
        ];
        for (prefix, path, expected) in cases {
            assert_eq!(strip_prefix(prefix, path), *expected, "strip_prefix({prefix:?}, {path:?})");
        }
    }

    #[test]
    fn config_prefixes_must_be_normalised_paths() {
        for good in ["/", "/v1", "/v1/", "/static/", "/a/b", "/%3A", "/a;b", "/~user"] {
            assert_eq!(validate_prefix(good), Ok(()), "{good:?}");
        }
        let bad: &[(&str, &str)] = &[
            ("", "must start with \"/\""),
            ("v1", "must start with \"/\""),
            ("*", "must start with \"/\""),
            ("/v1/../admin", "dot-segment"),
            ("/v1/../admin", "write it as \"/admin\""),
            ("/a/./b", "dot-segment"),
            ("/a/..;x/b", "dot-segment"),
            ("/a/%2e%2e/b", "dot-segment"),
            ("/a/..", "write it as \"/\""),
            ("/a//b", "empty segment"),
            ("/a//b", "write it as \"/a/b\""),
            ("//", "empty segment"),
            ("/%7e", "percent-encodes"),
            ("/%3a", "write it as \"/%3A\""),
            ("/..", "climbs above /"),
            ("/a%2Fb", "encoded"),
            ("/a\\b", "backslash"),
            ("/a?b", "?"),
            ("/a b", "space"),
            ("/%zz", "hex digits"),
        ];
        for (prefix, reason) in bad {
            match validate_prefix(prefix) {
                Ok(()) => panic!("{prefix:?} accepted"),
                Err(error) => assert!(error.contains(reason), "{prefix:?}: {error:?} does not say {reason:?}"),
            }
        }
    }

    /// Paths over a small alphabet rich in the characters that dot-segments, escapes and
    /// parameters are made of: every path of up to three characters after the `/`, then
    /// pseudo-random longer ones from a fixed seed.
    fn generated_paths() -> Vec<String> {
        const ALPHABET: &[u8] = b"a/.%2ef;~x";
        let mut paths = vec!["/".to_string()];
        let mut frontier = vec![String::new()];
        for _ in 0..3 {
            frontier = frontier
                .iter()
                .flat_map(|stem| ALPHABET.iter().map(move |&byte| format!("{stem}{}", char::from(byte))))
                .collect();
            paths.extend(frontier.iter().map(|tail| format!("/{tail}")));
        }
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            // xorshift64: deterministic, good enough to spread the cases.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..4000 {
            let length = 4 + next() % 13;
            let tail: String = (0..length).map(|_| char::from(ALPHABET[(next() % 10) as usize])).collect();
            paths.push(format!("/{tail}"));
        }
        paths
    }

    #[test]
    fn normalising_is_idempotent_and_leaves_no_dot_or_empty_segment_or_encoded_slash() {
        let paths = generated_paths();
        assert!(paths.len() > 5000);
        let mut normalised_count = 0;
        for raw in &paths {
            let Ok(path) = normalise_path(raw.as_bytes()) else { continue };
            normalised_count += 1;
            assert_eq!(normalise_path(path.as_bytes()).as_deref(), Ok(path.as_str()), "{raw:?} -> {path:?}");
            assert!(path.starts_with('/'), "{raw:?} -> {path:?}");
            for forbidden in ["//", "/./", "/../", "%2F", "%2f", "%2E", "%2e", "%7E", "%7e"] {
                assert!(!path.contains(forbidden), "{raw:?} -> {path:?} contains {forbidden:?}");
            }
            for segment in path.split('/') {
                assert!(DotSegment::of(segment).is_none(), "{raw:?} -> {path:?} keeps {segment:?}");
            }
            assert_eq!(validate_prefix(&path), Ok(()), "{raw:?} -> {path:?}");
        }
        assert!(normalised_count > 1000, "only {normalised_count} of {} generated paths normalised", paths.len());
    }
}
