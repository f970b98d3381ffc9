//! `healthCheckStatus`: the statuses a health probe counts as healthy, read from the config and
//! matched by the `health` thread (and the `reload-probe` threads) against each probe's answer.

use std::fmt;
use std::ops::RangeInclusive;

/// The statuses a probe counts as healthy (`healthCheckStatus`): ranges of status codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthyStatuses(Vec<RangeInclusive<u16>>);

impl Default for HealthyStatuses {
    /// Any answer below 500: a backend that answers HTTP at all is up, one that answers 5xx is not.
    fn default() -> Self {
        HealthyStatuses(vec![100..=499])
    }
}

impl fmt::Display for HealthyStatuses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ranges: Vec<String> = self
            .0
            .iter()
            .map(|range| match (range.start(), range.end()) {
                (low, high) if low == high => low.to_string(),
                (low, high) => format!("{low}-{high}"),
            })
            .collect();
        f.write_str(&ranges.join(", "))
    }
}

impl HealthyStatuses {
    const EXPECTED: &str = "must be \"2xx\", \"2xx-3xx\", a range like \"200-399\" or a list like [200, 204]";

    pub fn contains(&self, status: u16) -> bool {
        self.0.iter().any(|range| range.contains(&status))
    }

    /// Reads `healthCheckStatus`: a class (`"2xx"`), a range of classes or codes (`"2xx-3xx"`,
    /// `"200-399"`), one code (`200` or `"200"`), or a non-empty list of those (`[200, 204]`).
    /// Every code is from 100 to 599. The error is the problem, for the caller to name the key.
    pub fn from_json(value: &serde_json::Value) -> Result<HealthyStatuses, String> {
        use serde_json::Value;
        let entry = |value: &Value| match value {
            Value::String(text) => parse_status_range(text),
            Value::Number(_) => match value.as_u64() {
                Some(code) if (100..=599).contains(&code) => Ok(code as u16..=code as u16),
                _ => Err(format!("{value} is not a status from 100 to 599")),
            },
            other => Err(format!("{}, got {other}", HealthyStatuses::EXPECTED)),
        };
        match value {
            Value::Array(list) if list.is_empty() => Err("must list at least one status".to_string()),
            Value::Array(list) => list.iter().map(entry).collect::<Result<_, _>>().map(HealthyStatuses),
            single => entry(single).map(|range| HealthyStatuses(vec![range])),
        }
    }
}

/// `"2xx"`, `"2xx-3xx"`, `"200-399"`, `"204"` (or a mix such as `"200-3xx"`) as a range of codes.
fn parse_status_range(text: &str) -> Result<RangeInclusive<u16>, String> {
    let invalid = || format!("{}, got {text:?}", HealthyStatuses::EXPECTED);
    // One side: a code, or a class whose lowest and highest codes it stands for.
    let side = |part: &str| -> Result<(u16, u16), String> {
        let part = part.trim();
        let bytes = part.as_bytes();
        let (low, high) = match bytes {
            [class @ b'1'..=b'5', b'x' | b'X', b'x' | b'X'] => {
                let hundreds = u16::from(class - b'0') * 100;
                (hundreds, hundreds + 99)
            }
            [_, _, _] if bytes.iter().all(u8::is_ascii_digit) => {
                let code: u16 = part.parse().map_err(|_| invalid())?;
                (code, code)
            }
            _ => return Err(invalid()),
        };
        if !(100..=599).contains(&low) {
            return Err(format!("{part:?} is not a status from 100 to 599"));
        }
        Ok((low, high))
    };
    let (low, high) = match text.split_once('-') {
        Some((from, to)) => (side(from)?.0, side(to)?.1),
        None => side(text)?,
    };
    if low > high {
        return Err(format!("{text:?} must go from the lower status to the higher"));
    }
    Ok(low..=high)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statuses(value: serde_json::Value) -> Result<HealthyStatuses, String> {
        HealthyStatuses::from_json(&value)
    }

    #[test]
    fn healthy_status_forms() {
        let default = HealthyStatuses::default();
        assert!([100, 200, 204, 301, 404, 499].iter().all(|&code| default.contains(code)), "below 500");
        assert!(![500, 503, 599].iter().any(|&code| default.contains(code)));
        assert_eq!(default.to_string(), "100-499");

        let two = statuses("2xx".into()).unwrap();
        assert!(two.contains(200) && two.contains(299) && !two.contains(199) && !two.contains(300));
        let two_three = statuses("2xx-3xx".into()).unwrap();
        assert_eq!(two_three, HealthyStatuses(vec![200..=399]));
        assert_eq!(statuses("200-399".into()).unwrap(), two_three);
        assert_eq!(statuses("200-3xx".into()).unwrap(), two_three, "a code and a class");
        assert_eq!(statuses("2XX".into()).unwrap(), two);
        assert_eq!(statuses("204".into()).unwrap(), HealthyStatuses(vec![204..=204]));
        assert_eq!(statuses(serde_json::json!(204)).unwrap(), HealthyStatuses(vec![204..=204]));
        let list = statuses(serde_json::json!([200, 204, "3xx"])).unwrap();
        assert!(list.contains(200) && list.contains(204) && list.contains(302));
        assert!(!list.contains(201) && !list.contains(404));
        assert_eq!(list.to_string(), "200, 204, 300-399");
    }

    #[test]
    fn healthy_status_mistakes_say_what_is_wrong() {
        let cases = [
            (
                serde_json::json!("2xxx"),
                "must be \"2xx\", \"2xx-3xx\", a range like \"200-399\" or a list like [200, 204], got \"2xxx\"",
            ),
            (
                serde_json::json!("ok"),
                "must be \"2xx\", \"2xx-3xx\", a range like \"200-399\" or a list like [200, 204], got \"ok\"",
            ),
            (
                serde_json::json!("6xx"),
                "must be \"2xx\", \"2xx-3xx\", a range like \"200-399\" or a list like [200, 204], got \"6xx\"",
            ),
            (serde_json::json!("3xx-2xx"), "\"3xx-2xx\" must go from the lower status to the higher"),
            (serde_json::json!("099-200"), "\"099\" is not a status from 100 to 599"),
            (serde_json::json!("200-600"), "\"600\" is not a status from 100 to 599"),
            (
                serde_json::json!("200-"),
                "must be \"2xx\", \"2xx-3xx\", a range like \"200-399\" or a list like [200, 204], got \"200-\"",
            ),
            (serde_json::json!([]), "must list at least one status"),
            (serde_json::json!([200, 600]), "600 is not a status from 100 to 599"),
            (serde_json::json!([200, 2.5]), "2.5 is not a status from 100 to 599"),
            (
                serde_json::json!(true),
                "must be \"2xx\", \"2xx-3xx\", a range like \"200-399\" or a list like [200, 204], got true",
            ),
            (
                serde_json::json!([[200]]),
                "must be \"2xx\", \"2xx-3xx\", a range like \"200-399\" or a list like [200, 204], got [200]",
            ),
        ];
        for (value, expected) in cases {
            assert_eq!(statuses(value.clone()), Err(expected.to_string()), "{value}");
        }
    }
}
