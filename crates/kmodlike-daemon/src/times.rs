//! Times in `kmodctl`'s output and arguments.
//!
//! The daemon sends epoch seconds. On a terminal `kmodctl` prints them for a person
//! (`2026-12-01 09:31:05 UTC, 3m 12s ago`); into a pipe or a file it prints RFC 3339
//! (`2026-12-01T09:31:05Z`), which scripts and `date -d` read. `--since` takes either an RFC 3339
//! time or an age such as `10m`, `2h 30m` or `1day`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How times are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeStyle {
    /// For a person: UTC date and time and how long ago.
    Human,
    /// RFC 3339, UTC, whole seconds.
    Rfc3339,
}

impl TimeStyle {
    /// Human on a terminal, RFC 3339 otherwise.
    pub fn for_terminal(is_terminal: bool) -> TimeStyle {
        if is_terminal {
            TimeStyle::Human
        } else {
            TimeStyle::Rfc3339
        }
    }
}

fn system_time(epoch_secs: f64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs_f64(epoch_secs.max(0.0))
}

/// `epoch_secs` in `style`, measured against `now` for the age.
pub fn format_time(epoch_secs: f64, style: TimeStyle, now: SystemTime) -> String {
    let t = system_time(epoch_secs);
    let stamp = humantime::format_rfc3339_seconds(t).to_string();
    match style {
        TimeStyle::Rfc3339 => stamp,
        TimeStyle::Human => {
            let shown = stamp.replacen('T', " ", 1).trim_end_matches('Z').to_owned();
            match now.duration_since(t) {
                Ok(age) => {
                    let age = Duration::from_secs(age.as_secs());
                    if age.is_zero() {
                        format!("{shown} UTC, just now")
                    } else {
                        format!("{shown} UTC, {} ago", humantime::format_duration(age))
                    }
                }
                Err(_) => format!("{shown} UTC"),
            }
        }
    }
}

/// Parse `--since`: an RFC 3339 time (`2026-12-01T09:00:00Z`) or an age before `now` (`10m`,
/// `1h 30m`, `2days`). Returns epoch seconds.
pub fn parse_since(text: &str, now: SystemTime) -> Result<f64, String> {
    let t = match humantime::parse_rfc3339_weak(text) {
        Ok(t) => t,
        Err(_) => {
            let age = humantime::parse_duration(text).map_err(|e| {
                format!(
                    "--since {text:?}: neither an RFC 3339 time (2026-12-01T09:00:00Z) nor an \
                     age such as 10m or 2h ({e})"
                )
            })?;
            now.checked_sub(age).unwrap_or(UNIX_EPOCH)
        }
    };
    Ok(t.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: f64 = 1_764_581_465.0; // 2025-12-01T09:31:05Z

    fn now() -> SystemTime {
        system_time(NOW)
    }

    #[test]
    fn rfc3339_off_a_terminal_and_human_on_one() {
        assert_eq!(format_time(NOW, TimeStyle::Rfc3339, now()), "2025-12-01T09:31:05Z");
        assert_eq!(
            format_time(NOW - 192.0, TimeStyle::Human, now()),
            "2025-12-01 09:27:53 UTC, 3m 12s ago"
        );
        assert_eq!(format_time(NOW, TimeStyle::Human, now()), "2025-12-01 09:31:05 UTC, just now");
    }

    #[test]
    fn since_takes_a_time_or_an_age() {
        assert_eq!(parse_since("2025-12-01T09:31:05Z", now()), Ok(NOW));
        assert_eq!(parse_since("10m", now()), Ok(NOW - 600.0));
        assert_eq!(parse_since("1h 30m", now()), Ok(NOW - 5400.0));
        let e = parse_since("yesterday", now()).unwrap_err();
        assert!(e.contains("--since \"yesterday\"") && e.contains("RFC 3339"), "{e}");
    }
}
