//! cdc-tools' integration tests, one binary: the AWS side against local services (`aws`),
//! outages, deadlines and TLS (`outage`), end to end from PostgreSQL (`e2e`, `e2e_tables`,
//! `e2e_privacy`), `repair` (`repair`), and what the capture emits (`capture`).

mod aws;
mod capture;
mod e2e;
mod e2e_privacy;
mod e2e_tables;
mod outage;
mod repair;
mod support;
