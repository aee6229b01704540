//! What the end-to-end tests share: the `cdc-tools` binary run with the test's environment,
//! PostgreSQL clients, and (from cdc-lambda's tests) the local SQS engine and queues.

#![allow(dead_code)] // each test crate uses its own part

// The local SQS engine, queues and `Stop`, shared with cdc-lambda's tests rather than copied.
#[path = "../../../cdc-lambda/tests/services/mod.rs"]
mod services;
pub use services::*;

use std::process::{Child, Command, Stdio};

/// Where a command's log goes: one file per test crate, process and command.
pub fn log_path(command: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("cdc-{}-{}-{command}.log", env!("CARGO_CRATE_NAME"), std::process::id()))
}

/// The test's ClickHouse (as [`LocalSqs::env`] gives it to the processor), for its checks and
/// clean-up.
pub fn clickhouse_settings(database: &str) -> cdc_clickhouse::config::ClickHouseSettings {
    cdc_clickhouse::config::ClickHouseSettings::new(
        env_or("CLICKHOUSE_URL", "http://127.0.0.1:8123"),
        env_or("CLICKHOUSE_USER", "default"),
        env_or("CLICKHOUSE_PASSWORD", ""),
        database,
    )
}

/// Runs `cdc-tools` with the test's environment. Long-running children write their logs to
/// a file (an unread pipe would fill and block them); stdout (EMF metrics) is discarded.
pub fn processor(args: &[&str], env: &[(&str, String)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cdc-tools"));
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path(args[0]))
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null());
    command.args(args).stdout(Stdio::null()).stderr(stderr);
    for (k, v) in env {
        command.env(k, v);
    }
    command
}

/// The last lines of each command's log, for a failure report; the logs are removed.
pub fn log_tails(commands: &[&str], lines: usize) -> String {
    let mut out = String::new();
    for command in commands {
        let text = std::fs::read_to_string(log_path(command)).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(lines).collect();
        if !tail.is_empty() {
            out.push_str(&format!(
                "--- {command}: last log lines\n{}\n",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
        let _ = std::fs::remove_file(log_path(command));
    }
    out
}

/// Waits (at most `limit`) for the `generate` child to end; returns its exit status and the
/// summary it printed on stdout (the child must have been spawned with a piped stdout).
pub async fn wait_for_generator(
    generator: &mut Child,
    limit: std::time::Duration,
) -> (std::process::ExitStatus, String) {
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = generator.try_wait().expect("generator") {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "generator did not finish");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let mut summary = String::new();
    std::io::Read::read_to_string(&mut generator.stdout.take().expect("generator stdout"), &mut summary)
        .expect("generator summary");
    (status, summary)
}

pub async fn pg(database: &str) -> tokio_postgres::Client {
    cdc_tools::postgres::connect(&pg_url(database)).await.unwrap_or_else(|e| panic!("{e:#}"))
}
