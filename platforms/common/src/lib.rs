//! What bogie's cloud and bare-metal platforms share.
//!
//! - [`RunTags`]: the `bogie:run`, `bogie:created` and `bogie:basename` tags every cloud
//!   resource of a run carries, and the names derived from them;
//! - [`gc`]: the options and report of `bogie gc` (age cut-off, basename filter);
//! - [`redact`] and [`Secret`]: credentials never reach logs, errors or reports;
//! - [`http`]: one HTTP client setup (rustls with ring) and error bodies turned into
//!   redacted, short messages;
//! - [`ignition`]: reading SSH keys back out of a rendered Ignition config, and writing the
//!   console artifact.

pub mod gc;
pub mod http;
pub mod ignition;
pub mod redact;
pub mod tags;

pub use gc::{GcItem, GcOptions, GcReport};
pub use redact::{redact, Secret};
pub use tags::RunTags;

/// Parses `10s`, `5m`, `6h`, `2d`, `90` (seconds) into a duration.
pub fn parse_age(s: &str) -> Option<std::time::Duration> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().ok()?;
    let mult = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        _ => return None,
    };
    (v >= 0.0 && v.is_finite()).then(|| std::time::Duration::from_secs_f64(v * mult))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_parse() {
        assert_eq!(parse_age("6h").unwrap().as_secs(), 6 * 3600);
        assert_eq!(parse_age("2d").unwrap().as_secs(), 2 * 86400);
        assert_eq!(parse_age("90").unwrap().as_secs(), 90);
        assert_eq!(parse_age("1.5m").unwrap().as_secs(), 90);
        assert!(parse_age("6 weeks").is_none());
        assert!(parse_age("").is_none());
    }
}
