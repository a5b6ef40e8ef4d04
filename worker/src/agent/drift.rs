//! `--drift-file`: an operator's (or a test's) handle to shake the synthetic
//! traffic while the agent runs.
//!
//! The file holds `FRACTION [tag]`. Each time its content changes, the
//! compute thread shuffles the popularity of that fraction of every layer's
//! experts ([`TrafficGenerator::induce_drift`](crate::traffic::TrafficGenerator::induce_drift))
//! at the next step boundary. Content present when the agent starts counts
//! as a change. The file is read at most every [`CHECK_EVERY`].

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tracing::warn;

/// How often the file is looked at.
pub const CHECK_EVERY: Duration = Duration::from_millis(100);

/// Watches one drift file.
#[derive(Debug)]
pub struct DriftFile {
    path: PathBuf,
    seen: Option<String>,
    next_check: Instant,
}

impl DriftFile {
    pub fn new(path: PathBuf) -> Self {
        DriftFile {
            path,
            seen: None,
            next_check: Instant::now(),
        }
    }

    /// The fraction to shuffle when the content changed since the last look.
    pub fn poll(&mut self, now: Instant) -> Option<f64> {
        if now < self.next_check {
            return None;
        }
        self.next_check = now + CHECK_EVERY;
        // A missing file is the normal "no drift requested" state.
        let content = std::fs::read_to_string(&self.path).ok()?;
        let content = content.trim().to_owned();
        if content.is_empty() || self.seen.as_deref() == Some(content.as_str()) {
            return None;
        }
        let fraction = parse_fraction(&content);
        self.seen = Some(content);
        match fraction {
            Some(f) => Some(f),
            None => {
                warn!(path = %self.path.display(), "drift file does not start with a fraction in [0, 1]");
                None
            }
        }
    }
}

fn parse_fraction(content: &str) -> Option<f64> {
    let f: f64 = content.split_whitespace().next()?.parse().ok()?;
    (0.0..=1.0).contains(&f).then_some(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_once_per_content_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("drift");
        let mut d = DriftFile::new(path.clone());
        let mut now = Instant::now();
        assert_eq!(d.poll(now), None);
        std::fs::write(&path, "0.5\n").unwrap();
        assert_eq!(d.poll(now), None, "checked too recently");
        now += CHECK_EVERY;
        assert_eq!(d.poll(now), Some(0.5));
        now += CHECK_EVERY;
        assert_eq!(d.poll(now), None);
        std::fs::write(&path, "0.5 second").unwrap();
        now += CHECK_EVERY;
        assert_eq!(d.poll(now), Some(0.5));
        std::fs::write(&path, "2.0").unwrap();
        now += CHECK_EVERY;
        assert_eq!(d.poll(now), None);
    }
}
