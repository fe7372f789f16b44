//! An entry of the agent config's `interfaces:`: an exact interface name (`eth0`) or a glob
//! over names (`veth*`, `lxc*`, `eth?`), for interfaces that come and go (pod veths).
//!
//! Two wildcards only: `*` (any run of characters, none included) and `?` (one character).
//! Everything else is literal. Linux accepts `*` and `?` in a name, but no interface manager
//! makes such names; `[`, `]` and `\` are refused so that a shell-style class or escape is
//! not silently taken literally.

use std::fmt;

use super::InterfaceName;

/// The longest interface name Linux accepts (`IFNAMSIZ` less its NUL).
const MAX_NAME: usize = 15;

/// A validated `interfaces:` entry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum InterfacePattern {
    /// One interface, by name.
    Exact(InterfaceName),
    /// Every interface whose name the glob matches.
    Glob(String),
}

impl InterfacePattern {
    /// Whether `name` is an interface this entry stands for.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            InterfacePattern::Exact(n) => n.as_str() == name,
            InterfacePattern::Glob(g) => glob_matches(g.as_bytes(), name.as_bytes()),
        }
    }

    /// The name, for an exact entry.
    pub fn exact(&self) -> Option<&InterfaceName> {
        match self {
            InterfacePattern::Exact(n) => Some(n),
            InterfacePattern::Glob(_) => None,
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            InterfacePattern::Exact(n) => n.as_str(),
            InterfacePattern::Glob(g) => g,
        }
    }
}

impl TryFrom<String> for InterfacePattern {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if !s.contains(['*', '?']) {
            if s.contains(['[', ']', '\\']) {
                return Err(format!(
                    "{s:?}: only `*` and `?` are wildcards (no character classes or escapes)"
                ));
            }
            return InterfaceName::try_from(s).map(InterfacePattern::Exact);
        }
        if s.contains(['[', ']', '\\']) {
            return Err(format!(
                "interface pattern {s:?}: only `*` (any characters) and `?` (one character) are wildcards; character classes and escapes are not supported"
            ));
        }
        if s.contains(['/', ':']) || s.chars().any(char::is_whitespace) {
            return Err(format!(
                "interface pattern {s:?} contains a character Linux refuses in a name"
            ));
        }
        let fixed = s
            .chars()
            .filter(|&c| c != '*')
            .map(char::len_utf8)
            .sum::<usize>();
        if fixed > MAX_NAME {
            return Err(format!(
                "interface pattern {s:?} can never match: interface names are at most {MAX_NAME} bytes"
            ));
        }
        if !s.chars().any(|c| c != '*' && c != '?') {
            return Err(format!(
                "interface pattern {s:?} matches every interface (loopback and tunnels included); name a prefix such as \"veth*\""
            ));
        }
        Ok(InterfacePattern::Glob(s))
    }
}

impl fmt::Display for InterfacePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `*` and `?` glob matching over bytes, by the classic two-pointer walk with one backtrack
/// point (the last `*`): linear in practice, at most pattern x name steps, and names are 15
/// bytes. `?` matches one byte: interface names are ASCII in practice, and a multibyte name
/// only meets a `?` pattern that was written for ASCII names anyway.
fn glob_matches(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == b'?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                // Let the last `*` take one more byte and retry from there.
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(s: &str) -> InterfacePattern {
        InterfacePattern::try_from(s.to_owned()).expect(s)
    }

    #[test]
    fn globs_match_names() {
        for (p, yes, no) in [
            (
                "veth*",
                &["veth", "veth0", "vethabc123"][..],
                &["eth0", "xveth0", "vet"][..],
            ),
            ("eth?", &["eth0", "eth9"], &["eth", "eth10", "veth0"]),
            ("*-ext", &["br-ext", "-ext"], &["br-ext0", "ext"]),
            ("lxc*x?", &["lxcx1", "lxcaaxbx1"], &["lxcx", "lxcx12"]),
            (
                "a*b*c",
                &["abc", "aXbYc", "abbbc", "acbc"],
                &["ab", "acb", "abcd"],
            ),
        ] {
            let g = pat(p);
            assert!(matches!(g, InterfacePattern::Glob(_)), "{p}");
            for n in yes {
                assert!(g.matches(n), "{p} should match {n}");
            }
            for n in no {
                assert!(!g.matches(n), "{p} should not match {n}");
            }
        }
        let e = pat("eth0");
        assert_eq!(e.exact().map(InterfaceName::as_str), Some("eth0"));
        assert!(e.matches("eth0") && !e.matches("eth01"));
    }

    #[test]
    fn implausible_patterns_are_refused_with_why() {
        for (p, why) in [
            ("*", "matches every interface"),
            ("?*", "matches every interface"),
            ("eth[0-3]", "character classes"),
            ("eth\\*", "character classes"),
            ("veth/*", "refuses"),
            ("a b*", "refuses"),
            ("abcdefghijklmnop*", "never match"),
            ("eth[0]", "only `*` and `?`"),
            ("this-name-is-too-long", "1 to 15 bytes"),
        ] {
            let e = InterfacePattern::try_from(p.to_owned()).expect_err(p);
            assert!(e.contains(why), "{p}: {e}");
        }
        // Fifteen literal bytes and a star: still a name length.
        assert!(InterfacePattern::try_from("abcdefghijklmno*".to_owned()).is_ok());
    }
}
