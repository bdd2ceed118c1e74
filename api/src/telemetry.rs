//! Telemetry, initialised in one place: tracing to stderr (text by default, JSON with
//! `SYNCFLEET_LOG_FORMAT=json`, level from `RUST_LOG`), and, when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, every span exported over OTLP/HTTP (protobuf)
//! with a batching exporter, so a run's span (`sync_run` with `integration.id`,
//! `sync_log.id`, `fence`, `trigger`, `attempt`) reaches a collector.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// Keeps the exporter alive; flushes pending spans when dropped.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take()
            && let Err(e) = p.shutdown()
        {
            eprintln!("syncfleet: flushing traces failed: {e}");
        }
    }
}

fn otlp_provider(role: &str) -> Option<SdkTracerProvider> {
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|e| !e.trim().is_empty())?;
    // The exporter reads the endpoint (and OTEL_EXPORTER_OTLP_HEADERS etc.) itself.
    match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
    {
        Ok(exporter) => {
            let resource = Resource::builder()
                .with_service_name("syncfleet")
                .with_attribute(opentelemetry::KeyValue::new(
                    "syncfleet.role",
                    role.to_owned(),
                ))
                .build();
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(resource)
                    .build(),
            )
        }
        Err(e) => {
            eprintln!("syncfleet: OTLP export to {endpoint} disabled: {e}");
            None
        }
    }
}

/// Initialises tracing for a process in `role` (`standalone`, `api`, `worker`, …).
pub fn init(format: LogFormat) -> Telemetry {
    init_role(format, "syncfleet")
}

pub fn init_role(format: LogFormat, role: &str) -> Telemetry {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,sea_orm=warn"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
        LogFormat::Text => fmt.boxed(),
    };
    let provider = otlp_provider(role);
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("syncfleet")));
    // `try_init`: a second initialisation (tests starting several apps) is a no-op.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init();
    Telemetry { provider }
}
