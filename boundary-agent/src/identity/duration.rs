//! Durations as the config and the CLI write them (`90s`, `10m`, `1h`, `1d`), times as the
//! endpoint answers them (RFC 3339), and the identity section's other small serde helpers.

use std::{net::SocketAddr, time::Duration};

use serde::{Deserialize, Deserializer};

/// `90s`, `10m`, `1h`, `1d`, or a number of seconds; never 0.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (number, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?}: a duration is a number and s, m, h or d (90s, 10m, 1h)"))?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: the unit is s, m, h or d")),
    };
    let secs = n
        .checked_mul(unit)
        .ok_or_else(|| format!("{s:?}: too long"))?;
    if secs == 0 {
        return Err(format!("{s:?}: a duration of 0 is not allowed"));
    }
    Ok(Duration::from_secs(secs))
}

pub fn default_lease() -> Duration {
    Duration::from_secs(3600)
}

pub mod serde_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

/// `""` or absent: `None`; otherwise an `IP:port`.
pub fn optional_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    match s.as_deref() {
        None | Some("") => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| {
            serde::de::Error::custom(format!(
                "listen {s:?}: an IP address and port (0.0.0.0:8444, [::]:8444)"
            ))
        }),
    }
}

/// A time as RFC 3339 in UTC, to the second (`2026-11-30T17:20:26Z`).
pub use crate::timefmt::rfc3339;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_mins(10)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_hours(1)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_hours(24)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        for bad in ["0", "0s", "1w", "h", "", "-1s", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
