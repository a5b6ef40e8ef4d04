//! Time as the service keeps it: Unix milliseconds (the unit of every stored
//! time), RFC 3339 on the wire, and the fixed grid of load windows that
//! telemetry is summed into.

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

/// The cluster load windows: bucket `b` covers `[b × len, (b + 1) × len)`
/// milliseconds, the same grid for every worker, so windows that end in the
/// same bucket add up without any coordination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowGrid {
    len_ms: i64,
}

impl WindowGrid {
    pub fn new(len: Duration) -> Self {
        WindowGrid {
            len_ms: millis(len).max(1),
        }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_tile_time() {
        let grid = WindowGrid::new(Duration::from_secs(10));
        assert_eq!(grid.bucket_of(0), 0);
        assert_eq!(grid.bucket_of(9_999), 0);
        assert_eq!(grid.bucket_of(10_000), 1);
        assert_eq!(grid.bucket_of(-1), -1);
        assert_eq!((grid.start_ms(3), grid.end_ms(3)), (30_000, 40_000));
        assert_eq!(rfc3339(1_500), "1970-01-01T00:00:01.500Z");
    }
}
