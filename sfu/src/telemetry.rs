//! Logs and traces. The log layer (tracing's fmt, filtered by `log`) is
//! always on. When an OTLP endpoint is configured (`otlp_endpoint`, or the
//! standard `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
//! variables), spans are also exported over OTLP HTTP/protobuf: one span per
//! signaling request (`POST /whip/{room}` ...) and, as its child, one span per
//! session lifetime (room, identity, resource, kind), all carrying the node
//! (`service.instance.id`). Off by default.

use std::ffi::OsStr;
use std::io::IsTerminal;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Standard variables that turn the exporter on without `otlp_endpoint`.
const OTLP_ENV: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// The installed trace pipeline; [`Telemetry::shutdown`] flushes it.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// True when spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Export what is still buffered (bounded by the exporter's timeout).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(e) = provider.shutdown() {
                eprintln!("sfu: flushing traces failed: {e}");
            }
        }
    }
}

/// The OTLP traces URL: `endpoint` is the collector's base URL
/// (`http://collector:4318`), as OTEL_EXPORTER_OTLP_ENDPOINT is.
fn traces_url(endpoint: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_string()
    } else {
        format!("{base}/v1/traces")
    }
}

fn tracer_provider(endpoint: Option<&str>, node: &str) -> Result<SdkTracerProvider, String> {
    let mut builder = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
    if let Some(endpoint) = endpoint {
        builder = builder.with_endpoint(traces_url(endpoint));
    }
    let exporter = builder
        .build()
        .map_err(|e| format!("cannot build the OTLP exporter: {e}"))?;
    let resource = Resource::builder()
        .with_service_name("sfu")
        .with_attribute(KeyValue::new("service.instance.id", node.to_string()))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// Colour codes in the log only for a person at a terminal: a file, a pipe,
/// journald or `docker logs` gets plain text, and a non-empty `NO_COLOR`
/// (no-color.org) turns them off everywhere.
fn colour_logs(stdout_is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    stdout_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Install the global subscriber: logs filtered by `filter`, and OTLP spans
/// when an endpoint is configured here or in the environment.
pub fn init(filter: &str, otlp_endpoint: Option<&str>, node: &str) -> Result<Telemetry, String> {
    let log_filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = colour_logs(
        std::io::stdout().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let logs = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_ansi(ansi)
        .with_filter(log_filter);
    let enabled = otlp_endpoint.is_some() || OTLP_ENV.iter().any(|k| std::env::var_os(k).is_some());
    if !enabled {
        tracing_subscriber::registry().with(logs).init();
        return Ok(Telemetry { provider: None });
    }
    let provider = tracer_provider(otlp_endpoint, node)?;
    // W3C traceparent on incoming requests continues the caller's trace.
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let spans = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("sfu"))
        .with_filter(EnvFilter::new("info"));
    tracing_subscriber::registry().with(logs).with(spans).init();
    Ok(Telemetry {
        provider: Some(provider),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_at_a_terminal_without_no_color() {
        assert!(colour_logs(true, None));
        assert!(colour_logs(true, Some(OsStr::new(""))));
        assert!(!colour_logs(true, Some(OsStr::new("1"))));
        assert!(!colour_logs(false, None));
    }

    #[test]
    fn the_traces_path_is_appended_once() {
        assert_eq!(traces_url("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(
            traces_url("http://c:4318/v1/traces"),
            "http://c:4318/v1/traces"
        );
    }
}
