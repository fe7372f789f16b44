//! SPIFFE IDs (`spiffe://trust-domain/path`) and the patterns rules select them with.

use std::{fmt, str::FromStr};

/// A SPIFFE ID, validated as the SPIFFE ID specification (section 2) says: lower-case scheme
/// and trust domain of `[a-z0-9._-]`, path segments of `[A-Za-z0-9._-]`, no empty, `.` or `..`
/// segment, no trailing slash, no query or fragment, at most 2048 bytes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpiffeId {
    trust_domain: String,
    /// Empty, or `/seg/seg...`.
    path: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{input:?} is not a SPIFFE ID: {why}")]
pub struct SpiffeError {
    pub input: String,
    pub why: &'static str,
}

const SCHEME: &str = "spiffe://";

fn check_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Ok(());
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err("the path must start with '/'");
    };
    for seg in rest.split('/') {
        if seg.is_empty() {
            return Err("path segments cannot be empty (no '//' and no trailing '/')");
        }
        if seg == "." || seg == ".." {
            return Err("path segments cannot be '.' or '..'");
        }
        if !seg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err("path segments use only letters, digits, '.', '_' and '-'");
        }
    }
    Ok(())
}

impl SpiffeId {
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn path(&self) -> &str {
        &self.path
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeError;
    fn from_str(s: &str) -> Result<Self, SpiffeError> {
        let err = |why| SpiffeError {
            input: s.to_owned(),
            why,
        };
        if s.len() > 2048 {
            return Err(err("longer than 2048 bytes"));
        }
        let rest = s
            .strip_prefix(SCHEME)
            .ok_or_else(|| err("it must start with spiffe://"))?;
        if rest.contains(['?', '#']) {
            return Err(err("query and fragment are not allowed"));
        }
        let (td, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
        if td.is_empty() {
            return Err(err("the trust domain is empty"));
        }
        if !td
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
        {
            return Err(err("the trust domain uses only a-z, 0-9, '.', '_' and '-'"));
        }
        check_path(path).map_err(err)?;
        Ok(Self {
            trust_domain: td.to_owned(),
            path: path.to_owned(),
        })
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}{}", self.trust_domain, self.path)
    }
}

/// What a rule selects: one SPIFFE ID, or every ID under a path (`spiffe://td/ns/orders/*`
/// matches `spiffe://td/ns/orders/sa/api` but not `spiffe://td/ns/orders` itself).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SpiffePattern {
    Exact(SpiffeId),
    Under(SpiffeId),
}

impl SpiffePattern {
    pub fn matches(&self, id: &SpiffeId) -> bool {
        match self {
            SpiffePattern::Exact(e) => e == id,
            SpiffePattern::Under(base) => {
                base.trust_domain == id.trust_domain
                    && id.path.len() > base.path.len()
                    && id.path.starts_with(&base.path)
                    && id.path.as_bytes()[base.path.len()] == b'/'
            }
        }
    }

    pub fn trust_domain(&self) -> &str {
        match self {
            SpiffePattern::Exact(i) | SpiffePattern::Under(i) => i.trust_domain(),
        }
    }
}

impl FromStr for SpiffePattern {
    type Err = SpiffeError;
    fn from_str(s: &str) -> Result<Self, SpiffeError> {
        match s.strip_suffix("/*") {
            Some(base) => Ok(SpiffePattern::Under(base.parse()?)),
            None if s.contains('*') => Err(SpiffeError {
                input: s.to_owned(),
                why: "'*' is only allowed as a whole last segment (spiffe://td/path/*)",
            }),
            None => Ok(SpiffePattern::Exact(s.parse()?)),
        }
    }
}

impl fmt::Display for SpiffePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpiffePattern::Exact(i) => write!(f, "{i}"),
            SpiffePattern::Under(i) => write!(f, "{i}/*"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_ids_round_trip() {
        for s in [
            "spiffe://example.org",
            "spiffe://example.org/ns/orders/sa/api",
            "spiffe://a-b_c.d/x.y-z_1",
        ] {
            assert_eq!(s.parse::<SpiffeId>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn invalid_ids_say_why() {
        for (s, why) in [
            ("http://example.org/a", "spiffe://"),
            ("spiffe:///a", "trust domain is empty"),
            ("spiffe://Example.org/a", "trust domain uses"),
            ("spiffe://example.org/a//b", "cannot be empty"),
            ("spiffe://example.org/a/", "cannot be empty"),
            ("spiffe://example.org/a/../b", "'.' or '..'"),
            ("spiffe://example.org/a?b", "query"),
            ("spiffe://example.org/a b", "letters, digits"),
        ] {
            let e = s.parse::<SpiffeId>().unwrap_err();
            assert!(e.to_string().contains(why), "{s}: {e}");
        }
    }

    #[test]
    fn patterns_match_below_their_path_only() {
        let p: SpiffePattern = "spiffe://example.org/ns/orders/*".parse().unwrap();
        let id = |s: &str| s.parse::<SpiffeId>().unwrap();
        assert!(p.matches(&id("spiffe://example.org/ns/orders/sa/api")));
        assert!(p.matches(&id("spiffe://example.org/ns/orders/x")));
        assert!(!p.matches(&id("spiffe://example.org/ns/orders")));
        assert!(!p.matches(&id("spiffe://example.org/ns/ordersx/a")));
        assert!(!p.matches(&id("spiffe://other.org/ns/orders/a")));
        let all: SpiffePattern = "spiffe://example.org/*".parse().unwrap();
        assert!(all.matches(&id("spiffe://example.org/a")));
        assert!(
            "spiffe://example.org/ns/*/sa"
                .parse::<SpiffePattern>()
                .is_err()
        );
        let exact: SpiffePattern = "spiffe://example.org/a".parse().unwrap();
        assert!(exact.matches(&id("spiffe://example.org/a")));
        assert!(!exact.matches(&id("spiffe://example.org/a/b")));
    }
}
