//! Freshness: how long after its commit in PostgreSQL a change is queryable in ClickHouse.
//!
//! Enters: PostgreSQL and ClickHouse connections. Leaves: a [`FreshnessReport`] (p50 / p99 / max).
//!
//! Method (a probe, honest and independent of the processor): a probe customer, product, order and
//! order item live at reserved ids (>= [`RESERVED_ID_BASE`], never touched by the generator).
//! Every `--interval-ms` the probe commits a marker transaction that sets the probe customer's
//! `name` to `probe-<run>-<n>`, taking the wall-clock time just BEFORE sending the transaction as
//! its commit time (so a measured latency is never shorter than the true one; the transaction's
//! own round trip, ~1 ms, is included). A watcher polls ClickHouse every `--poll-ms` for the
//! newest marker visible in the `customers` mirror (`FINAL`, `_is_deleted = 0`) and in
//! `sales_fact` (`customer_name` of the probe order item: the denormalized path, which needs the
//! fact re-derivation after the customer change). A marker counts as visible at the end of the
//! first poll that shows it or a later one (versions only grow, so a later marker implies the
//! state includes this commit). Latency = visible − commit; the poll period adds at most
//! `--poll-ms` to each sample.
//! Markers not visible `--settle` seconds after the last commit are reported as lost.

use std::time::{Duration, Instant};

use anyhow::Context;

use crate::generator::RESERVED_ID_BASE;
use crate::postgres::{self, DEFAULT_PG_URL};
use cdc_clickhouse::Warehouse;

/// The probe's rows, in every table, use this id.
const PROBE_ID: i64 = RESERVED_ID_BASE + 1;

/// `cdc-tools freshness`: commit-to-queryable latency under whatever load is running. ClickHouse
/// is reached as the function reaches it ([`cdc_lambda::config::clickhouse_settings`]).
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[arg(long, env = "CDC_PG_URL", default_value = DEFAULT_PG_URL, hide_env_values = true)]
    pub(crate) pg_url: String,
    /// Seconds of markers.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) duration: f64,
    /// Milliseconds between marker transactions.
    #[arg(long, default_value_t = 100)]
    interval_ms: u64,
    /// Milliseconds between ClickHouse polls.
    #[arg(long, default_value_t = 50)]
    pub(crate) poll_ms: u64,
    /// Seconds to wait for the last markers after the last commit.
    #[arg(long, default_value_t = 30.0)]
    settle: f64,
}

/// Latency figures of one path, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq)]
struct Latency {
    markers: usize,
    pub(crate) seen: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    mean_ms: f64,
}

impl Latency {
    fn from_samples(markers: usize, mut samples: Vec<f64>) -> Self {
        samples.sort_by(f64::total_cmp);
        let pct = |p: f64| -> f64 {
            if samples.is_empty() {
                return f64::NAN;
            }
            // Nearest-rank percentile.
            let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
            samples[rank.clamp(1, samples.len()) - 1]
        };
        Self {
            markers,
            seen: samples.len(),
            p50_ms: pct(50.0),
            p99_ms: pct(99.0),
            max_ms: samples.last().copied().unwrap_or(f64::NAN),
            mean_ms: if samples.is_empty() { f64::NAN } else { samples.iter().sum::<f64>() / samples.len() as f64 },
        }
    }

    fn lost(&self) -> usize {
        self.markers - self.seen
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
struct FreshnessReport {
    /// Commit → visible in the `customers` mirror.
    mirror: Latency,
    /// Commit → visible in `sales_fact` (the denormalized row).
    pub(crate) sales_fact: Latency,
    pub(crate) seconds: f64,
}

impl FreshnessReport {
    pub(crate) fn render(&self) -> String {
        let line = |name: &str, l: &Latency| {
            format!(
                "freshness: {name:<10} markers={} seen={} lost={} p50={:.0} ms p99={:.0} ms max={:.0} ms mean={:.0} ms\n",
                l.markers,
                l.seen,
                l.lost(),
                l.p50_ms,
                l.p99_ms,
                l.max_ms,
                l.mean_ms
            )
        };
        format!("{}{}", line("mirror", &self.mirror), line("sales_fact", &self.sales_fact))
    }
}

/// Creates (or resets) the probe's four rows.
async fn install_probe(pg: &tokio_postgres::Client) -> anyhow::Result<()> {
    let id = PROBE_ID;
    pg.batch_execute(&format!(
        "BEGIN;
         INSERT INTO customers (id, email, name, country, city, created_at)
           VALUES ({id}, 'probe@example.invalid', 'probe', 'ZZ', 'Probe', now())
           ON CONFLICT (id) DO UPDATE SET name = 'probe';
         INSERT INTO products (id, name, category, price, created_at)
           VALUES ({id}, 'probe', 'Probe', 0.01, now()) ON CONFLICT (id) DO NOTHING;
         INSERT INTO orders (id, customer_id, order_date, status, total)
           VALUES ({id}, {id}, now(), 'probe', 0.01) ON CONFLICT (id) DO NOTHING;
         INSERT INTO order_items (id, order_id, product_id, quantity, price)
           VALUES ({id}, {id}, {id}, 1, 0.01) ON CONFLICT (id) DO NOTHING;
         COMMIT;"
    ))
    .await
    .context("installing the freshness probe rows")?;
    Ok(())
}

fn marker_seq(value: &str, run: &str) -> Option<usize> {
    value.strip_prefix(run)?.strip_prefix('-')?.parse().ok()
}

/// Runs the probe for `args.duration` seconds alongside whatever traffic is running.
async fn measure(args: &Args) -> anyhow::Result<FreshnessReport> {
    let pg = postgres::connect(&args.pg_url).await?;
    install_probe(&pg).await?;
    let settings = cdc_lambda::config::clickhouse_settings().await.map_err(|e| anyhow::anyhow!(e.detail))?;
    let ch = Warehouse::new(&settings);
    let run = format!("probe-{:x}", chrono::Utc::now().timestamp_micros());

    let started = Instant::now();
    let commits = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Instant>::new()));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));

    // Writer: one marker transaction per interval.
    let writer = {
        let commits = commits.clone();
        let done = done.clone();
        let run = run.clone();
        let interval = Duration::from_millis(args.interval_ms.max(1));
        let end = started + Duration::from_secs_f64(args.duration.max(0.0));
        tokio::spawn(async move {
            let mut n = 0usize;
            let result: anyhow::Result<()> = async {
                while Instant::now() < end {
                    let due = started + interval * n as u32;
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        tokio::time::sleep(wait).await;
                    }
                    let sql = format!("BEGIN; UPDATE customers SET name = '{run}-{n}' WHERE id = {PROBE_ID}; COMMIT;");
                    let t = Instant::now();
                    pg.batch_execute(&sql).await.context("marker transaction")?;
                    commits.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.push(t);
                    n += 1;
                }
                Ok(())
            }
            .await;
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            result
        })
    };

    // Watcher: polls both paths; records the first time each marker (or a later one) is visible.
    let mut mirror_seen: Vec<Option<Instant>> = Vec::new();
    let mut fact_seen: Vec<Option<Instant>> = Vec::new();
    let poll = Duration::from_millis(args.poll_ms.max(1));
    let mut settle_deadline: Option<Instant> = None;
    loop {
        let tick = Instant::now();
        // A failed poll is a poll that saw nothing new: the next one, or the settle time, decides.
        let mirror = ch.live_customer_name(PROBE_ID).await.ok().flatten().and_then(|v| marker_seq(&v, &run));
        let fact = ch.live_fact_customer_name(PROBE_ID).await.ok().flatten().and_then(|v| marker_seq(&v, &run));
        let now = Instant::now();
        let committed = commits.lock().map(|c| c.len()).unwrap_or(0);
        for (seen, newest) in [(&mut mirror_seen, mirror), (&mut fact_seen, fact)] {
            seen.resize(committed, None);
            if let Some(newest) = newest {
                for slot in seen.iter_mut().take((newest + 1).min(committed)) {
                    slot.get_or_insert(now);
                }
            }
        }
        let writer_done = done.load(std::sync::atomic::Ordering::SeqCst);
        if writer_done {
            let all_seen = mirror_seen.iter().chain(&fact_seen).all(Option::is_some);
            let deadline = *settle_deadline.get_or_insert(now + Duration::from_secs_f64(args.settle.max(0.0)));
            if all_seen || now >= deadline {
                break;
            }
        }
        if let Some(wait) = (tick + poll).checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
    }
    writer.await.context("marker writer panicked")??;

    let commits = commits.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone();
    let latencies = |seen: &[Option<Instant>]| {
        let samples: Vec<f64> = commits
            .iter()
            .zip(seen)
            .filter_map(|(c, s)| s.map(|s| s.saturating_duration_since(*c).as_secs_f64() * 1000.0))
            .collect();
        Latency::from_samples(commits.len(), samples)
    };
    Ok(FreshnessReport {
        mirror: latencies(&mirror_seen),
        sales_fact: latencies(&fact_seen),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// `cdc-tools freshness`: prints p50 / p99 / max per path.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let report = measure(&args).await?;
    print!("{}", report.render());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let l = Latency::from_samples(101, (1..=100).map(f64::from).collect());
        assert_eq!((l.p50_ms, l.p99_ms, l.max_ms), (50.0, 99.0, 100.0));
        assert_eq!(l.lost(), 1);
        let one = Latency::from_samples(1, vec![7.0]);
        assert_eq!((one.p50_ms, one.p99_ms), (7.0, 7.0));
    }

    #[test]
    fn markers_parse_only_for_this_run() {
        assert_eq!(marker_seq("probe-1a-17", "probe-1a"), Some(17));
        assert_eq!(marker_seq("probe-1b-17", "probe-1a"), None);
        assert_eq!(marker_seq("probe", "probe-1a"), None);
    }
}
