//! What orders a batch's changes against the stored rows: each mirror's version scale, pinned by
//! its first change, and its watermark, which detects a source whose log positions restarted
//! (docs/versions.md, "One scale per mirror" and "Positions that restart").

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use cdc_clickhouse::SinkError;
use cdc_core::change::{Version, VersionScale};
use cdc_core::watermark::{self, Watermark};

use super::Pipeline;

/// One message's change: its mirror, its version with the version's scale, and its commit time.
pub(super) struct ScaledChange {
    pub(super) message: usize,
    pub(super) mirror: String,
    pub(super) scale: VersionScale,
    pub(super) version: Version,
    pub(super) commit_time_us: Option<i64>,
}

/// The default of `VERSION_REGRESSION_SLACK_SECONDS`: the longest transaction a source runs.
pub const DEFAULT_REGRESSION_SLACK: Duration = Duration::from_secs(3600);
/// The code logged for a change whose log position contradicts its mirror's watermark.
const REGRESSED: &str = "version.regressed";

/// The code of a change on another version scale than its mirror's.
pub(super) const SCALE_MISMATCH: &str = "version.scale_mismatch";

impl Pipeline {
    /// Pins every mirror of the batch that has no version scale yet to the scale of its first
    /// change here, and returns the messages whose scale differs from their mirror's (a DMS
    /// full-load row, version 1, fits any scale). ClickHouse is asked only while some mirror's
    /// pin is not known to this process (docs/versions.md, "One scale per mirror").
    pub(super) async fn pin_scales(
        &self,
        scaled: &[ScaledChange],
        deadline: Instant,
    ) -> Result<BTreeSet<usize>, SinkError> {
        let cached = |mirror: &str| self.scales.lock().unwrap_or_else(|e| e.into_inner()).get(mirror).copied();
        let mut first: BTreeMap<&str, VersionScale> = BTreeMap::new();
        for change in scaled.iter().filter(|c| c.scale != VersionScale::Load) {
            first.entry(change.mirror.as_str()).or_insert(change.scale);
        }
        let unknown = || -> Vec<(&str, VersionScale)> {
            first.iter().filter(|(mirror, _)| cached(mirror).is_none()).map(|(m, s)| (*m, *s)).collect()
        };
        let w = &self.warehouse;
        let read = async || -> Result<(), SinkError> {
            let pinned = w.version_scales(deadline).await?;
            self.scales.lock().unwrap_or_else(|e| e.into_inner()).extend(pinned);
            Ok(())
        };
        if !unknown().is_empty() {
            read().await?;
            let unpinned = unknown();
            if !unpinned.is_empty() {
                w.pin_version_scales(&unpinned, deadline).await?;
                read().await?;
            }
        }
        Ok(scaled
            .iter()
            .filter(|c| c.scale != VersionScale::Load && cached(&c.mirror).is_some_and(|pinned| pinned != c.scale))
            .map(|c| c.message)
            .collect())
    }

    /// Checks every change on a log-position scale against its mirror's watermark
    /// (`cdc_core::watermark`): a change whose position went backwards is logged at error level
    /// and counted (it is still written: holding it back would let one forged high position
    /// stall its whole mirror); returns the watermarks the others move their mirrors to.
    /// ClickHouse is asked once per process.
    pub(super) async fn check_positions(
        &self,
        scaled: &[ScaledChange],
        deadline: Instant,
    ) -> Result<Vec<(String, Watermark)>, SinkError> {
        let positioned: Vec<(&ScaledChange, i64)> = scaled
            .iter()
            .filter(|c| watermark::scale_can_restart(c.scale))
            .filter_map(|c| Some((c, c.commit_time_us?)))
            .collect();
        if positioned.is_empty() {
            return Ok(Vec::new());
        }
        let mut cached = self.watermarks.lock().await;
        if cached.is_none() {
            *cached = Some(self.warehouse.watermarks(deadline).await?);
        }
        let known = cached.get_or_insert_default();
        let slack_us = i64::try_from(self.regression_slack.as_micros()).unwrap_or(i64::MAX);
        let mut advanced: BTreeMap<&str, Watermark> = BTreeMap::new();
        for (change, commit_time_us) in positioned {
            let mark = Watermark { version: change.version, commit_time_us };
            if let Some(current) = known.get(&change.mirror)
                && current.contradicted_by(mark.version, commit_time_us, slack_us)
            {
                tracing::error!(
                    mirror = %change.mirror,
                    version = change.version.0,
                    watermark = current.version.0,
                    code = REGRESSED,
                    "a change's log position is below its mirror's highest, yet it committed later: the source's \
                     positions restarted (docs/versions.md, \"Positions that restart\")"
                );
                self.regressions.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                continue;
            }
            let entry = advanced.entry(change.mirror.as_str()).or_insert(mark);
            *entry = entry.max(mark);
        }
        Ok(advanced
            .into_iter()
            .filter(|(mirror, mark)| known.get(*mirror).is_none_or(|current| mark.version > current.version))
            .map(|(mirror, mark)| (mirror.to_owned(), mark))
            .collect())
    }

    /// Records watermarks that moved up, then lets this process know them.
    pub(super) async fn advance_watermarks(
        &self,
        marks: Vec<(String, Watermark)>,
        deadline: Instant,
    ) -> Result<(), SinkError> {
        if marks.is_empty() {
            return Ok(());
        }
        let rows: Vec<(&str, Watermark)> = marks.iter().map(|(m, w)| (m.as_str(), *w)).collect();
        self.warehouse.write_watermarks(&rows, deadline).await?;
        if let Some(known) = self.watermarks.lock().await.as_mut() {
            for (mirror, mark) in marks {
                let entry = known.entry(mirror).or_insert(mark);
                *entry = entry.max(mark);
            }
        }
        Ok(())
    }
}
