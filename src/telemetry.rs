//! Logs and metrics plumbing shared by the manager and the agent.

use std::io::IsTerminal;

use prometheus::{Encoder, Registry, TextEncoder};

/// How the manager and the agent write their logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Lines for people; coloured only when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object a line, for log shippers.
    Json,
}

/// A binary's exit: success, or its error logged as one line with its
/// causes, in the log's format (no backtrace), and a failure code.
pub fn exit_code(result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Logs to stderr through `tracing`, filtered by `RUST_LOG` (default `info`).
/// Colour codes only reach a terminal, and not even then with `NO_COLOR`
/// set: a file, a pipe or journald gets plain text.
pub fn init_tracing(format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(
                std::io::stderr().is_terminal()
                    && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
            )
            .init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Registers a metric built from fixed names and labels. A failure is a
/// programming error (caught by the metrics unit tests), not a runtime
/// condition, hence the panic.
pub fn register<M: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<M>,
) -> M {
    let metric = metric.unwrap_or_else(|e| panic!("invalid metric definition: {e}"));
    registry
        .register(Box::new(metric.clone()))
        .unwrap_or_else(|e| panic!("duplicate metric: {e}"));
    metric
}

/// The Prometheus text exposition of every metric in `registry`.
pub fn render(registry: &Registry) -> String {
    let mut buf = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&registry.gather(), &mut buf) {
        tracing::warn!(error = %e, "cannot encode metrics");
    }
    String::from_utf8(buf).unwrap_or_default()
}

/// An error and its causes in one line, `outer: inner: …`, for logs and
/// health answers.
pub fn with_causes(error: &dyn std::error::Error) -> String {
    std::iter::successors(Some(error), |e| e.source())
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}
