//! The config reader's primitives: walking one JSON object key by key, reading each value as the
//! kind it must be (a string, a bounded integer, a duration, a size, a path, a boolean), and
//! errors that name the key in full (`pools.api.maxRetries`). Runs on the thread that loads the
//! config.

use std::time::Duration;

use serde_json::{Map, Value};

use super::{ConfigError, Source};
use crate::duration::parse_duration;

/// Walks the top-level object, one key at a time, producing errors that name the key.
pub(super) struct Reader<'a> {
    pub(super) file: Source,
    pub(super) object: &'a Map<String, Value>,
    /// What goes before each key in an error: empty at the top level, `pools.api.` in a pool.
    pub(super) prefix: String,
}

impl Reader<'_> {
    /// A byte count: a whole number, or a string such as `"64KiB"`, `"10MiB"` or `"1GiB"`.
    pub(super) fn size(&self, key: &str, min: u64, max: u64) -> Result<Option<u64>, ConfigError> {
        let bytes = match self.object.get(key) {
            None => return Ok(None),
            Some(Value::String(text)) => parse_size(text).map_err(|problem| self.error(key, problem))?,
            Some(value) => value.as_u64().ok_or_else(|| {
                self.error(key, format!("must be a whole number of bytes or a size like \"64KiB\", got {value}"))
            })?,
        };
        if bytes < min {
            return Err(self.error(key, format!("must be at least {min} bytes")));
        }
        if bytes > max {
            return Err(self.error(key, format!("must be at most {max} bytes")));
        }
        Ok(Some(bytes))
    }

    pub(super) fn error(&self, key: &str, problem: impl Into<String>) -> ConfigError {
        ConfigError { source: self.file.clone(), key: format!("{}{key}", self.prefix), problem: problem.into() }
    }

    pub(super) fn string(&self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.object.get(key) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(other) => Err(self.error(key, format!("must be a string, got {}", kind_of(other)))),
        }
    }

    pub(super) fn integer(&self, key: &str, min: u64, max: u64) -> Result<Option<u64>, ConfigError> {
        match self.object.get(key) {
            None => Ok(None),
            Some(value) => integer_in(value, min, max).map(Some).map_err(|problem| self.error(key, problem)),
        }
    }

    pub(super) fn threshold(&self, key: &str, default: u32) -> Result<u32, ConfigError> {
        Ok(self.integer(key, 1, 1000)?.map_or(default, |n| n as u32))
    }

    pub(super) fn duration(&self, key: &str, default: Duration, zero_allowed: bool) -> Result<Duration, ConfigError> {
        let Some(text) = self.string(key)? else {
            return Ok(default);
        };
        let duration = parse_duration(&text).map_err(|problem| self.error(key, problem))?;
        if duration.is_zero() && !zero_allowed {
            return Err(self.error(key, "must be longer than 0s"));
        }
        Ok(duration)
    }

    pub(super) fn path(&self, key: &str, default: &str) -> Result<String, ConfigError> {
        let Some(path) = self.string(key)? else {
            return Ok(default.to_string());
        };
        let printable = path.bytes().all(|byte| byte.is_ascii_graphic());
        if !path.starts_with('/') || !printable {
            return Err(self.error(key, format!("must be a path starting with \"/\" without spaces, got {path:?}")));
        }
        Ok(path)
    }

    pub(super) fn boolean(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.object.get(key) {
            None => Ok(None),
            Some(Value::Bool(value)) => Ok(Some(*value)),
            Some(other) => Err(self.error(key, format!("must be true or false, got {}", kind_of(other)))),
        }
    }
}

/// A cookie name: an HTTP token (RFC 9110 §5.6.2).
pub(super) fn is_token(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte))
}

pub(super) fn flag_error(source: &Source, problem: String) -> ConfigError {
    ConfigError { source: source.clone(), key: String::new(), problem }
}

pub(super) fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

pub(super) fn integer_in(value: &Value, min: u64, max: u64) -> Result<u64, String> {
    let Some(number) = value.as_u64() else {
        return Err(format!("must be a whole number, got {value}"));
    };
    if number < min {
        return Err(format!("must be at least {min}"));
    }
    if number > max {
        return Err(format!("must be at most {max}"));
    }
    Ok(number)
}

/// `"64KiB"` → 65536. Units: bytes with no suffix, `KiB`, `MiB`, `GiB`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let invalid =
        || format!("must be a whole number of bytes or a size like \"64KiB\", \"10MiB\", \"1GiB\", got {text:?}");
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(invalid());
    }
    let number: u64 = text[..digits].parse().map_err(|_| invalid())?;
    let multiplier: u64 = match &text[digits..] {
        "" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return Err(invalid()),
    };
    number.checked_mul(multiplier).ok_or_else(invalid)
}
