//! Time as the service keeps it: Unix milliseconds (the unit of every stored
//! time), RFC 3339 on the wire, the fixed grid of load windows that
//! telemetry is summed into, and the spans of that history a reader asks for.

use std::ops::Range;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Unix milliseconds as RFC 3339 (UTC, millisecond precision).
pub fn rfc3339(ms: i64) -> String {
    let time = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(time).to_string()
}

/// `span` in whole milliseconds, as stored times are compared.
pub fn millis(span: Duration) -> i64 {
    i64::try_from(span.as_millis()).unwrap_or(i64::MAX)
}

/// Parses an RFC 3339 time (`2026-01-01T00:00:00Z`, `...00.250Z`,
/// `...00+02:00`) into Unix milliseconds. Every year from 0000 to 9999 is a
/// time (before 1970 the result is negative), as the OpenAPI `date-time`
/// format allows; fractions finer than a millisecond are cut. Also takes a
/// space for the `T` and no zone at all (UTC), as earlier versions did.
pub fn parse_rfc3339(text: &str) -> Result<i64, String> {
    ballast_protocol::rfc3339::parse(text)
        .ok_or_else(|| format!("`{text}` is not an RFC 3339 time like 2026-01-01T00:00:00Z"))
}

/// A stretch of history: the windows that start at or after `since` and
/// before `until`; an absent end is open. Parsed from RFC 3339 text, so an
/// empty or backwards span is refused before anything is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    since_ms: Option<i64>,
    until_ms: Option<i64>,
}

/// Why a span was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpanError {
    #[error("since: {0}")]
    Since(String),
    #[error("until: {0}")]
    Until(String),
    #[error("since ({since}) is not before until ({until}): the span is empty")]
    Empty { since: String, until: String },
}

impl Span {
    /// All of history.
    pub const ALL: Span = Span {
        since_ms: None,
        until_ms: None,
    };

    /// The span between two optional RFC 3339 times.
    pub fn parse(since: Option<&str>, until: Option<&str>) -> Result<Span, SpanError> {
        let since_ms = since
            .map(parse_rfc3339)
            .transpose()
            .map_err(SpanError::Since)?;
        let until_ms = until
            .map(parse_rfc3339)
            .transpose()
            .map_err(SpanError::Until)?;
        if let (Some(s), Some(u)) = (since_ms, until_ms) {
            if s >= u {
                return Err(SpanError::Empty {
                    since: rfc3339(s),
                    until: rfc3339(u),
                });
            }
        }
        Ok(Span { since_ms, until_ms })
    }

    /// Where the span starts (inclusive), in Unix milliseconds.
    pub fn since_ms(&self) -> Option<i64> {
        self.since_ms
    }

    /// Where the span ends (exclusive), in Unix milliseconds.
    pub fn until_ms(&self) -> Option<i64> {
        self.until_ms
    }

    /// The span as the trace route's query string (`""`, `?since=..`, ...).
    pub fn query(&self) -> String {
        let pairs: Vec<String> = [("since", self.since_ms), ("until", self.until_ms)]
            .into_iter()
            .filter_map(|(name, ms)| ms.map(|ms| format!("{name}={}", rfc3339(ms))))
            .collect();
        if pairs.is_empty() {
            String::new()
        } else {
            format!("?{}", pairs.join("&"))
        }
    }
}

/// The cluster load windows: bucket `b` covers `[b × len, (b + 1) × len)`
/// milliseconds, the same grid for every worker, so windows that end in the
/// same bucket add up without any coordination. A window is *closed* once
/// `grace` has passed after its end: late telemetry had its chance, and
/// planning and history read it as final.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowGrid {
    len_ms: i64,
    grace_ms: i64,
}

impl WindowGrid {
    pub fn new(len: Duration, grace: Duration) -> Self {
        Self::from_millis(millis(len), millis(grace))
    }

    /// A grid as stored: lengths in milliseconds (at least 1 and 0).
    pub fn from_millis(len_ms: i64, grace_ms: i64) -> Self {
        WindowGrid {
            len_ms: len_ms.max(1),
            grace_ms: grace_ms.max(0),
        }
    }

    /// One window's length in milliseconds.
    pub fn len_ms(self) -> i64 {
        self.len_ms
    }

    /// How long after its end a window still takes late telemetry.
    pub fn grace_ms(self) -> i64 {
        self.grace_ms
    }

    /// The bucket of a window that ends at `end_ms`.
    pub fn bucket_of(self, end_ms: i64) -> i64 {
        end_ms.div_euclid(self.len_ms)
    }

    /// Where bucket `bucket` starts, in Unix milliseconds.
    pub fn start_ms(self, bucket: i64) -> i64 {
        bucket.saturating_mul(self.len_ms)
    }

    /// Where bucket `bucket` ends (exclusive).
    pub fn end_ms(self, bucket: i64) -> i64 {
        bucket.saturating_add(1).saturating_mul(self.len_ms)
    }

    /// Every bucket below this one is closed at `now_ms`.
    pub fn closed_before(self, now_ms: i64) -> i64 {
        self.bucket_of(now_ms.saturating_sub(self.grace_ms))
    }

    /// The buckets that start inside `span`, never below bucket 0 (no
    /// window ends before 1970).
    pub fn starting_in(self, span: &Span) -> Range<i64> {
        // The first bucket starting at or after `t` is ceil(t / len).
        let first_from =
            |t: i64| t.div_euclid(self.len_ms) + i64::from(t.rem_euclid(self.len_ms) != 0);
        let first = span.since_ms.map_or(0, first_from).max(0);
        let end = span.until_ms.map_or(i64::MAX, first_from).max(first);
        first..end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_tile_time() {
        let grid = WindowGrid::new(Duration::from_secs(10), Duration::from_secs(2));
        assert_eq!(grid.bucket_of(0), 0);
        assert_eq!(grid.bucket_of(9_999), 0);
        assert_eq!(grid.bucket_of(10_000), 1);
        assert_eq!(grid.bucket_of(-1), -1);
        assert_eq!((grid.start_ms(3), grid.end_ms(3)), (30_000, 40_000));
        assert_eq!(rfc3339(1_500), "1970-01-01T00:00:01.500Z");
    }

    #[test]
    fn a_window_closes_after_its_grace() {
        let grid = WindowGrid::new(Duration::from_secs(10), Duration::from_secs(2));
        // Bucket 2 ends at 30 s and closes at 32 s.
        assert_eq!(grid.closed_before(31_999), 2);
        assert_eq!(grid.closed_before(32_000), 3);
        assert_eq!(
            WindowGrid::from_millis(0, -5),
            WindowGrid::from_millis(1, 0)
        );
    }

    #[test]
    fn spans_select_the_buckets_that_start_in_them() {
        let grid = WindowGrid::from_millis(10_000, 0);
        let span = |since, until| Span {
            since_ms: since,
            until_ms: until,
        };
        assert_eq!(grid.starting_in(&Span::ALL), 0..i64::MAX);
        assert_eq!(grid.starting_in(&span(Some(10_000), Some(30_000))), 1..3);
        // A bucket starting before `since` is out, one starting at `until` too.
        assert_eq!(grid.starting_in(&span(Some(10_001), Some(30_001))), 2..4);
        assert_eq!(grid.starting_in(&span(Some(-50_000), Some(5_000))), 0..1);
        assert_eq!(grid.starting_in(&span(None, Some(25_000))), 0..3);
    }

    #[test]
    fn spans_parse_and_refuse_empty_ones() {
        let span = Span::parse(Some("1970-01-01T00:00:10Z"), None).unwrap();
        assert_eq!((span.since_ms(), span.until_ms()), (Some(10_000), None));
        assert_eq!(span.query(), "?since=1970-01-01T00:00:10.000Z");
        assert_eq!(Span::parse(None, None).unwrap(), Span::ALL);
        assert_eq!(Span::ALL.query(), "");
        let both = Span::parse(Some("1970-01-01T00:00:10Z"), Some("1970-01-01T00:00:11Z")).unwrap();
        assert_eq!(
            both.query(),
            "?since=1970-01-01T00:00:10.000Z&until=1970-01-01T00:00:11.000Z"
        );
        assert!(matches!(
            Span::parse(Some("soon"), None),
            Err(SpanError::Since(_))
        ));
        assert!(matches!(
            Span::parse(None, Some("2026-13-01T00:00:00Z")),
            Err(SpanError::Until(_))
        ));
        let empty = Span::parse(Some("1970-01-01T00:00:10Z"), Some("1970-01-01T00:00:10Z"));
        assert!(matches!(empty, Err(SpanError::Empty { .. })), "{empty:?}");
    }

    #[test]
    fn rfc3339_parses_and_round_trips() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:01.500Z"), Ok(1_500));
        assert_eq!(parse_rfc3339("2023-11-14T22:13:20Z"), Ok(1_700_000_000_000));
        assert_eq!(
            rfc3339(parse_rfc3339("2026-03-01T12:00:00.250Z").unwrap()),
            "2026-03-01T12:00:00.250Z"
        );
        assert!(parse_rfc3339("yesterday").unwrap_err().contains("RFC 3339"));
        // The whole date-time range of the OpenAPI format, and offsets.
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), Ok(-1_000));
        assert_eq!(
            parse_rfc3339("0499-09-26T20:00:03Z"),
            Ok(-46_396_987_197_000)
        );
        assert_eq!(
            parse_rfc3339("0000-01-01T00:00:00Z"),
            Ok(-62_167_219_200_000)
        );
        assert_eq!(parse_rfc3339("2000-02-29T00:00:00Z"), Ok(951_782_400_000));
        assert_eq!(
            parse_rfc3339("2023-11-15T00:13:20.123456+02:00"),
            Ok(1_700_000_000_123)
        );
        assert_eq!(parse_rfc3339("2023-11-14 22:13:20"), Ok(1_700_000_000_000));
        for refused in [
            "2023-02-29T00:00:00Z",
            "2023-13-01T00:00:00Z",
            "2023-01-01T24:00:00Z",
            "2023-01-01T00:00:00.Z",
            "2023-01-01T00:00:00+2:00",
            "+2023-01-01T00:00:00Z",
        ] {
            assert!(parse_rfc3339(refused).is_err(), "{refused}");
        }
    }
}
