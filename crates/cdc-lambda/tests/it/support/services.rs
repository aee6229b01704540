//! The local services of the tests against real parts: the local SQS engine, and children
//! stopped when the test ends.

use std::process::{Child, Command};

pub(crate) fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// Children killed and reaped however the test ends.
pub(crate) struct Stop(pub Vec<Child>);

impl Drop for Stop {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
/// The local SQS engine, started with `scripts/sqs.sh` unless it already answers, and stopped
/// again only if started here.
pub(crate) struct LocalSqs {
    pub endpoint: String,
    port: String,
    started_here: bool,
}

impl LocalSqs {
    pub(crate) fn start() -> Self {
        let port = env_or("LOCAL_SQS_PORT", "9324");
        let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/sqs.sh"))
            .arg("start")
            .env("LOCAL_SQS_PORT", &port)
            .output()
            .expect("run scripts/sqs.sh");
        assert!(out.status.success(), "scripts/sqs.sh start failed: {}", String::from_utf8_lossy(&out.stderr));
        let started_here = String::from_utf8_lossy(&out.stdout).trim() == "started";
        Self { endpoint: format!("http://127.0.0.1:{port}"), port, started_here }
    }
}

impl Drop for LocalSqs {
    fn drop(&mut self) {
        if self.started_here {
            let _ = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/sqs.sh"))
                .arg("stop")
                .env("LOCAL_SQS_PORT", &self.port)
                .status();
        }
    }
}
