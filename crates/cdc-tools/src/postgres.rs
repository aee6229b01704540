//! The one way the tools connect to PostgreSQL.
//!
//! Enters: a connection string (libpq `key=value` form or a `postgresql://` URL, from
//! `--pg-url` / `CDC_PG_URL`). Leaves: a client whose connection runs on its own task.
//!
//! The string may carry a password: every `--pg-url` argument hides its environment value from
//! `--help` (`hide_env_values`), and nothing here puts the string into an error or a log line.

use anyhow::Context;
use tokio_postgres::NoTls;

/// The local cluster `scripts/postgres.sh` starts.
pub(crate) const DEFAULT_PG_URL: &str = "host=127.0.0.1 port=5432 user=postgres dbname=sales";

/// Connects to PostgreSQL and drives the connection on a task of its own; when it closes with an
/// error, the error is logged and the client's next call fails.
pub async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (pg, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .context("connecting to PostgreSQL (is it running? scripts/postgres.sh start)")?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::error!(error = %err, "PostgreSQL connection closed");
        }
    });
    Ok(pg)
}
