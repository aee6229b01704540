//! The local services the tests against real parts share: the local SQS engine, a queue with
//! its dead-letter queue, and children stopped when the test ends. `cdc-tools`' end-to-end
//! tests include this file too.

#![allow(dead_code)] // each test crate uses its own part

use std::process::{Child, Command};

pub fn pg_url(database: &str) -> String {
    format!("host=127.0.0.1 port={} user=postgres dbname={database}", env_or("CDC_PG_PORT", "5432"))
}

pub fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// Children killed and reaped however the test ends.
pub struct Stop(pub Vec<Child>);

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
pub struct LocalSqs {
    pub endpoint: String,
    port: String,
    started_here: bool,
}

impl LocalSqs {
    pub fn start() -> Self {
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

    /// The processor's environment for a test named `name` (its source database, ClickHouse
    /// database and queue all take that name).
    pub fn env(&self, name: &str) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL_SQS", self.endpoint.clone()),
            ("AWS_REGION", env_or("AWS_REGION", "us-east-1")),
            ("AWS_ACCESS_KEY_ID", env_or("AWS_ACCESS_KEY_ID", "test")),
            ("AWS_SECRET_ACCESS_KEY", env_or("AWS_SECRET_ACCESS_KEY", "test")),
            ("CLICKHOUSE_URL", env_or("CLICKHOUSE_URL", "http://127.0.0.1:8123")),
            ("CLICKHOUSE_DATABASE", name.to_owned()),
            ("CDC_PG_URL", pg_url(name)),
            ("RUST_LOG", "warn".to_string()),
        ]
    }

    /// A queue `name` whose messages move to `name-dlq` after 5 receives, as the capture
    /// publishes to it and `poll` consumes it.
    pub async fn queues(&self, name: &str) -> Queues {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_sqs::config::Credentials::new("test", "test", None, None, "e2e"))
            .load()
            .await;
        let sqs = aws_sdk_sqs::Client::new(&config);
        let dlq_url = sqs
            .create_queue()
            .queue_name(format!("{name}-dlq"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("the local SQS must answer (scripts/sqs.sh start): {e:?}"))
            .queue_url
            .expect("dlq url");
        let dlq_arn = sqs
            .get_queue_attributes()
            .queue_url(&dlq_url)
            .attribute_names(A::QueueArn)
            .send()
            .await
            .expect("dlq attributes")
            .attributes
            .and_then(|a| a.get(&A::QueueArn).cloned())
            .expect("dlq arn");
        // maxReceiveCount as a JSON number (the local engine rejects the string form).
        let policy = serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 5}).to_string();
        let queue_url = sqs
            .create_queue()
            .queue_name(name)
            .attributes(A::RedrivePolicy, policy)
            .attributes(A::VisibilityTimeout, "60")
            .send()
            .await
            .expect("create queue")
            .queue_url
            .expect("queue url");
        Queues { sqs, queue_url, dlq_url }
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

pub struct Queues {
    pub sqs: aws_sdk_sqs::Client,
    pub queue_url: String,
    pub dlq_url: String,
}

impl Queues {
    /// Messages in the dead-letter queue (up to 10; `usize::MAX` when it cannot be read).
    pub async fn dead_letters(&self) -> usize {
        self.sqs
            .receive_message()
            .queue_url(&self.dlq_url)
            .max_number_of_messages(10)
            .visibility_timeout(0)
            .send()
            .await
            .map(|o| o.messages().len())
            .unwrap_or(usize::MAX)
    }
}
