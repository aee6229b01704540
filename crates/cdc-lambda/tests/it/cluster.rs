//! A replicated self-managed cluster (`scripts/cluster.sh`: ZooKeeper and two replicas of one
//! shard): the schema created `ON CLUSTER` through one replica, and the convergence schedules
//! delivered by two invocations that write and read through different replicas, with the
//! configuration the README prescribes (`CLICKHOUSE_CLUSTER`, `CLICKHOUSE_INSERT_QUORUM` = every
//! replica of the shard). `sales_fact` must equal the oracle on both replicas.
//!
//! `CLICKHOUSE_CLUSTER_URLS` (the replicas' HTTP URLs, comma-separated) and
//! `CLICKHOUSE_CLUSTER_NAME` say where the cluster is; without them these tests say so and pass
//! (`scripts/test.sh` always starts the cluster and sets them).

use std::sync::Arc;

use cdc_clickhouse::dialect::Dialect;
use cdc_clickhouse::{RawSql, Warehouse, WarehouseOptions};
use cdc_core::decode::DecodeOptions;
use cdc_lambda::pipeline::Pipeline;

use crate::convergence::{deliver, generate_history, run_schedules, schedule};
use crate::support::services::env_or;
use crate::support::*;

/// Schedules run on the cluster (`CLUSTER_SCHEDULES` overrides); each takes a few seconds there.
const SCHEDULES: u64 = 12;
/// Schedules at a time: each has its own database, so their quorum inserts never meet.
const PARALLEL_SCHEDULES: usize = 2;

struct Cluster {
    urls: Vec<String>,
    name: String,
}

impl Cluster {
    /// The cluster of the environment, or `None` (printed) when there is none.
    fn from_env(test: &str) -> Option<Self> {
        let (Ok(urls), Ok(name)) = (std::env::var("CLICKHOUSE_CLUSTER_URLS"), std::env::var("CLICKHOUSE_CLUSTER_NAME"))
        else {
            eprintln!(
                "{test}: skipped, no replicated cluster (set CLICKHOUSE_CLUSTER_URLS and CLICKHOUSE_CLUSTER_NAME, \
                 e.g. after scripts/cluster.sh start)"
            );
            return None;
        };
        let urls: Vec<String> = urls.split(',').map(|u| u.trim().to_string()).filter(|u| !u.is_empty()).collect();
        assert!(urls.len() >= 2, "CLICKHOUSE_CLUSTER_URLS names {} replicas; the tests need two", urls.len());
        Some(Self { urls, name })
    }

    /// A warehouse on replica `replica` with the README's cluster configuration: the schema
    /// `ON CLUSTER`, every insert acknowledged by every replica of the shard.
    fn warehouse(&self, replica: usize, database: &str) -> Warehouse {
        let settings = cdc_clickhouse::config::ClickHouseSettings::new(
            self.urls[replica].clone(),
            env_or("CLICKHOUSE_USER", "default"),
            env_or("CLICKHOUSE_PASSWORD", ""),
            database,
        );
        let options = WarehouseOptions {
            cluster: Some(self.name.clone()),
            insert_quorum: Some(self.urls.len().to_string()),
            ..WarehouseOptions::default()
        };
        Warehouse::with_options(&settings, &options)
    }

    fn pipeline(&self, replica: usize, database: &str) -> Arc<Pipeline> {
        Arc::new(Pipeline::new(DecodeOptions::default(), self.warehouse(replica, database)))
    }

    /// Drops a test's database on every replica (its replicated tables leave ZooKeeper with it).
    async fn drop_database(&self, database: &str) {
        let warehouse = self.warehouse(0, "default");
        let sql = format!("DROP DATABASE IF EXISTS {database} ON CLUSTER {}", self.name);
        if let Err(e) = warehouse.execute(&sql).await {
            eprintln!("could not drop {database} on the cluster: {e}");
        }
    }
}

/// `name<TAB>engine` of every table of `database` on one replica, sorted.
async fn tables(warehouse: &Warehouse, database: &str) -> Vec<String> {
    let sql = format!("SELECT name, engine FROM system.tables WHERE database = '{database}' ORDER BY name");
    let text = warehouse.fetch_tsv(&sql).await.expect("system.tables");
    text.lines().map(str::to_string).collect()
}

#[tokio::test]
async fn migrate_through_one_replica_creates_the_schema_on_every_replica() {
    let Some(cluster) = Cluster::from_env("migrate_through_one_replica_creates_the_schema_on_every_replica") else {
        return;
    };
    let database = fresh_database("cluster_ddl");
    let first = cluster.pipeline(0, &database);
    first.migrate(deadline()).await.expect("migrate ON CLUSTER through replica 1");
    let on_first = tables(first.warehouse(), &database).await;
    let second = cluster.warehouse(1, &database);
    let on_second = tables(&second, &database).await;
    cluster.drop_database(&database).await;

    assert!(!on_first.is_empty(), "migrate created no table");
    assert_eq!(on_first, on_second, "replica 2 has the tables replica 1 has, with the same engines");
    for line in &on_first {
        let (name, engine) = line.split_once('\t').expect("name and engine");
        assert!(
            engine == "View" || engine.starts_with("Replicated"),
            "{name} is {engine}: every table on a cluster is replicated"
        );
    }
    assert!(on_first.iter().any(|l| l == "sales_fact\tReplicatedReplacingMergeTree"), "{on_first:?}");
}

/// One schedule: invocation A writes and reads through replica 1, invocation B through replica
/// 2, concurrently; then both replicas must hold the oracle's facts.
async fn run_schedule(cluster: &Cluster, seed: u64) -> Result<(), String> {
    let database = fresh_database("cluster_conv");
    let (a, b) = (cluster.pipeline(0, &database), cluster.pipeline(1, &database));
    a.migrate(deadline()).await.map_err(|e| format!("migrate: {e}"))?;
    // Servers before 23.2 keep the weaker rule for foreign keys that move (README, "Older
    // ClickHouse"), as in the single-server suite.
    let moves = a.warehouse().dialect().await.map_err(|e| format!("dialect: {e}"))? == Dialect::Modern;
    let history = generate_history(seed, moves);
    let delivered = deliver([a.clone(), b.clone()], schedule(seed, &history.events)).await;
    let expected = history.expected_facts();
    let mut verdict = delivered;
    if verdict.is_ok() {
        for (replica, pipeline) in [(1, &a), (2, &b)] {
            let actual = current_facts(pipeline.warehouse()).await;
            let (missing, extra, wrong) = diff(&expected, &actual);
            if (missing, extra, wrong) != (0, 0, 0) {
                verdict = Err(format!(
                    "replica {replica}: {missing} missing, {extra} extra, {wrong} wrong of {} expected facts",
                    expected.len()
                ));
                break;
            }
        }
    }
    if std::env::var("CONVERGENCE_KEEP").is_err() {
        cluster.drop_database(&database).await;
    } else {
        eprintln!("kept database {database}");
    }
    verdict
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sales_fact_converges_on_every_replica_with_invocations_on_different_replicas() {
    let Some(cluster) = Cluster::from_env("sales_fact_converges_on_every_replica") else {
        return;
    };
    let cluster = &cluster;
    let seeds = ("CONVERGENCE_SEED", "CLUSTER_SCHEDULES", SCHEDULES);
    let limit = std::time::Duration::from_secs(180);
    run_schedules("cluster schedule", seeds, PARALLEL_SCHEDULES, limit, |seed| run_schedule(cluster, seed)).await;
}

#[tokio::test]
async fn a_quorum_the_server_reads_otherwise_is_refused_before_any_schema() {
    let Some(cluster) = Cluster::from_env("a_quorum_the_server_reads_otherwise_is_refused_before_any_schema") else {
        return;
    };
    let database = fresh_database("cluster_auto");
    let settings = cdc_clickhouse::config::ClickHouseSettings::new(
        cluster.urls[0].clone(),
        env_or("CLICKHOUSE_USER", "default"),
        env_or("CLICKHOUSE_PASSWORD", ""),
        &database,
    );
    let options = WarehouseOptions {
        cluster: Some(cluster.name.clone()),
        insert_quorum: Some("auto".into()),
        ..WarehouseOptions::default()
    };
    let warehouse = Warehouse::with_options(&settings, &options);
    let result = warehouse.prepare(deadline()).await;
    let dialect = warehouse.dialect().await.expect("dialect");
    cluster.drop_database(&database).await;
    match dialect {
        // 18.16 reads `auto` as 0: no quorum, so the processor refuses it.
        Dialect::Legacy => {
            let e = result.expect_err("auto refused on a server that reads it as 0");
            assert_eq!(cdc_core::error::Classify::code(&e), "clickhouse.unsupported_setting", "{e}");
        }
        Dialect::Modern => {
            result.expect("a current server takes auto");
        }
    }
}
