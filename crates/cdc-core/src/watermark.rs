//! Positions that restart: a source whose log positions go backwards (a blue/green switchover,
//! a restore, a new MySQL server) would have every later change rank below the rows already
//! stored, and be lost silently. A mirror's watermark, its highest position with that change's
//! commit time, detects it: a change at a lower position, committed well after the watermark's,
//! cannot come from the same log (docs/versions.md, "Positions that restart").
//!
//! Enters: a mirror's watermark and a change's position and commit time. Leaves: whether the
//! change contradicts the watermark, and the watermark a batch moves to.

use crate::change::{Version, VersionScale};

/// A mirror's highest position so far, and the commit time of the change that carried it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermark {
    pub version: Version,
    pub commit_time_us: i64,
}

impl Watermark {
    /// Whether a change at `version`, committed at `commit_time_us`, contradicts the
    /// watermark: a lower position committed more than `slack_us` after the watermark's change.
    ///
    /// Within one log a lower position can commit later only through a transaction that was
    /// open all the while (it wrote before the watermark's change and committed after it): the
    /// slack is the longest transaction the source runs. A redelivered or delayed old change
    /// committed before the watermark's and never contradicts it.
    pub fn contradicted_by(&self, version: Version, commit_time_us: i64, slack_us: i64) -> bool {
        version < self.version && commit_time_us > self.commit_time_us.saturating_add(slack_us)
    }

    /// The higher of two watermarks (by position).
    pub fn max(self, other: Watermark) -> Watermark {
        if other.version > self.version { other } else { self }
    }
}

/// Whether changes on `scale` carry log positions that can restart: WAL and binlog positions.
/// A µs timestamp (platform, DMS without position) does not restart, and a full-load row
/// (version 1) ranks below everything by design.
pub fn scale_can_restart(scale: VersionScale) -> bool {
    matches!(scale, VersionScale::Lsn | VersionScale::Binlog)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR_US: i64 = 3_600_000_000;

    #[test]
    fn a_lower_position_committed_long_after_the_watermark_contradicts_it() {
        let mark = Watermark { version: Version(5_000), commit_time_us: 10 * HOUR_US };
        // A redelivered or delayed old change: committed before the watermark's.
        assert!(!mark.contradicted_by(Version(4_000), 9 * HOUR_US, HOUR_US));
        // A transaction open across the watermark's change, shorter than the slack.
        assert!(!mark.contradicted_by(Version(4_000), 10 * HOUR_US + HOUR_US / 2, HOUR_US));
        // A new log whose positions start lower.
        assert!(mark.contradicted_by(Version(4_000), 12 * HOUR_US, HOUR_US));
        // At or above the watermark: the log moves on.
        assert!(!mark.contradicted_by(Version(5_000), 12 * HOUR_US, HOUR_US));
        assert!(!mark.contradicted_by(Version(6_000), 12 * HOUR_US, HOUR_US));
    }

    #[test]
    fn watermarks_move_to_the_higher_position_and_only_positions_restart() {
        let low = Watermark { version: Version(1), commit_time_us: 9 };
        let high = Watermark { version: Version(2), commit_time_us: 1 };
        assert_eq!(low.max(high), high);
        assert_eq!(high.max(low), high);
        assert!(scale_can_restart(VersionScale::Lsn) && scale_can_restart(VersionScale::Binlog));
        assert!(!scale_can_restart(VersionScale::Micros) && !scale_can_restart(VersionScale::Load));
    }
}
