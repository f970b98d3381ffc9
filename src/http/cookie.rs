//! The one thing the load balancer reads from and writes into cookies: the `sticky` backend name.

use crate::http::head::Fields;

/// The value of the cookie called `name` in the request's `Cookie` fields (RFC 6265 §5.4 syntax:
/// `a=1; b=2`, possibly over several fields), without surrounding quotes.
pub fn find<'a>(fields: &'a Fields, name: &str) -> Option<&'a str> {
    fields
        .values("cookie")
        .flat_map(|value| value.split(|&byte| byte == b';'))
        .filter_map(|pair| {
            let pair = pair.trim_ascii();
            let equals = pair.iter().position(|&byte| byte == b'=')?;
            (&pair[..equals] == name.as_bytes()).then(|| &pair[equals + 1..])
        })
        .find_map(|value| {
            let value = value.strip_prefix(b"\"").and_then(|v| v.strip_suffix(b"\"")).unwrap_or(value);
            std::str::from_utf8(value).ok()
        })
}

/// The `Set-Cookie` field that pins a client to `backend`: for the whole site, invisible to
/// scripts, sent with same-site requests and top-level navigation, for the browser session.
pub fn set_cookie_field(name: &str, backend: &str) -> String {
    format!("Set-Cookie: {name}={backend}; Path=/; HttpOnly; SameSite=Lax\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::{HeadLimits, parse_request};

    fn fields(head: &str) -> Fields {
        parse_request(head.as_bytes(), &HeadLimits::default()).unwrap().unwrap().0.fields
    }

    #[test]
    fn finds_the_named_cookie_among_others_and_across_fields() {
        let head = fields("GET / HTTP/1.1\r\nHost: a\r\nCookie: theme=dark; lb=b-1\r\nCookie: other=x\r\n\r\n");
        assert_eq!(find(&head, "lb"), Some("b-1"));
        assert_eq!(find(&head, "other"), Some("x"));
        assert_eq!(find(&head, "LB"), None, "cookie names are case-sensitive");
        assert_eq!(find(&head, "missing"), None);
        let quoted = fields("GET / HTTP/1.1\r\nHost: a\r\nCookie: lb=\"web-2\"\r\n\r\n");
        assert_eq!(find(&quoted, "lb"), Some("web-2"));
        let prefix = fields("GET / HTTP/1.1\r\nHost: a\r\nCookie: xlb=1;lb=2\r\n\r\n");
        assert_eq!(find(&prefix, "lb"), Some("2"), "a longer name is a different cookie");
    }

    #[test]
    fn the_set_cookie_field_is_one_header_line() {
        assert_eq!(set_cookie_field("lb", "web-1"), "Set-Cookie: lb=web-1; Path=/; HttpOnly; SameSite=Lax\r\n");
    }
}
