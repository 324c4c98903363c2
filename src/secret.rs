//! A string that must never be printed: merchant key, app secret, passwords.
//!
//! SECURITY: `Debug` and `Display` print `***`, so a secret that slips into a
//! `tracing` field, an error message or a `{:?}` of a config struct stays hidden.
//! The only way to the value is [`Secret::expose`], which is easy to grep for.

use std::fmt;

use serde::Deserialize;

/// A secret value; see the module docs.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself. Call only where the value is used (signing, an upstream call).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when no value was configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_the_value() {
        let s = Secret::new("192006250b4c09247ec02edce69f6a2d");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        assert_eq!(s.expose(), "192006250b4c09247ec02edce69f6a2d");
    }
}
