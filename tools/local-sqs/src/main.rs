//! A local SQS endpoint (the awsJson1_0 protocol current AWS SDKs speak) for the tests and the demo.
//!
//! The engine is rustack's (`rustack-sqs-core`: one actor per queue, no scan of the whole queue per
//! call), served over HTTP/1.1 by `rustack-sqs-http`. Usage: `local-sqs [--host H] [--port P]`
//! (default 127.0.0.1:9324). Queue URLs are `http://H:P/000000000000/NAME`. State is in memory
//! only; SIGINT / SIGTERM stop it.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use rustack_sqs_core::config::SqsConfig;
use rustack_sqs_core::handler::RustackSqsHandler;
use rustack_sqs_core::provider::RustackSqs;
use rustack_sqs_http::service::{SqsHttpConfig, SqsHttpService};
use tokio::net::TcpListener;

fn parse_args() -> Result<(String, u16), String> {
    let mut host = "127.0.0.1".to_string();
    let mut port: u16 = 9324;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--host" => host = args.next().ok_or("--host needs a value")?,
            "--port" => {
                port = args.next().ok_or("--port needs a value")?.parse().map_err(|e| format!("--port: {e}"))?
            }
            other => return Err(format!("unknown argument {other:?} (usage: local-sqs [--host H] [--port P])")),
        }
    }
    Ok((host, port))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let (host, port) = match parse_args() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("local-sqs: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let addr: SocketAddr = match format!("{host}:{port}").parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("local-sqs: {host}:{port}: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("local-sqs: cannot listen on {addr}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let config = SqsConfig { host: host.clone(), port, ..SqsConfig::default() };
    let provider = Arc::new(RustackSqs::new(config));
    let service = SqsHttpService::new(
        Arc::new(RustackSqsHandler::new(provider)),
        SqsHttpConfig { skip_signature_validation: true, ..SqsHttpConfig::default() },
    );
    eprintln!("local-sqs: listening on http://{addr}");
    let stop = async {
        #[cfg(unix)]
        {
            if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                return;
            }
        }
        let _ = tokio::signal::ctrl_c().await;
    };
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let service = service.clone();
                tokio::spawn(async move {
                    let _ = Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }
    }
    eprintln!("local-sqs: stopped");
    std::process::ExitCode::SUCCESS
}
