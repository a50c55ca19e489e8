//! Logging and tracing set-up: `LOG_FORMAT=text|json`, filter from `RUST_LOG` (default `info`), and,
//! with the `otel` feature and `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans exported over OTLP/HTTP
//! (protobuf) with W3C `traceparent` propagation between the services.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer, Registry};

use crate::config::ConfigError;

const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether spans leave the process (OTLP): per-request spans on hot paths are only worth their
/// cost then.
pub fn exporting() -> bool {
    EXPORTING.load(std::sync::atomic::Ordering::Relaxed)
}

/// Keeps the span exporter alive; dropping it flushes the spans not yet sent and shuts it down.
#[must_use = "dropping the guard shuts the span exporter down"]
pub struct Telemetry {
    #[cfg(feature = "otel")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        #[cfg(feature = "otel")]
        if let Some(p) = self.provider.take() {
            if let Err(e) = p.shutdown() {
                eprintln!("telemetry: flushing spans failed: {e}");
            }
        }
    }
}

/// Installs the global subscriber for `service` (also the OTLP `service.name`); a malformed
/// `OTEL_EXPORTER_OTLP_ENDPOINT` or `LOG_FORMAT` is an error naming the variable.
pub fn init(service: &'static str) -> Result<Telemetry, ConfigError> {
    let endpoint = crate::config::url(ENDPOINT, None)?;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,actix_server=warn,aws_config=warn,kube=warn"));
    let fmt_layer = if crate::config::LogFormat::from_env()? == crate::config::LogFormat::Json {
        fmt::layer()
            .with_target(false)
            .json()
            .flatten_event(true)
            .boxed()
    } else {
        // Colour only on a terminal (and not with NO_COLOR): log files stay greppable.
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout())
            && std::env::var_os("NO_COLOR").is_none();
        fmt::layer().with_target(false).with_ansi(ansi).boxed()
    };
    #[cfg(feature = "otel")]
    let provider = match endpoint {
        Some(e) => Some(otel::provider(service, &e).map_err(|reason| ConfigError {
            name: ENDPOINT.to_owned(),
            reason,
        })?),
        None => None,
    };
    #[cfg(not(feature = "otel"))]
    let _ = endpoint;
    #[cfg(feature = "otel")]
    let otel_layer = provider.as_ref().map(|p| otel::layer(p, service));
    #[cfg(not(feature = "otel"))]
    let otel_layer = None::<tracing_subscriber::layer::Identity>;

    let result = Registry::default()
        .with(filter)
        .with(otel_layer)
        .with(fmt_layer)
        .try_init();
    if result.is_ok() {
        tracing::debug!(service, "logging initialised");
    }
    #[cfg(feature = "otel")]
    {
        if provider.is_some() {
            EXPORTING.store(true, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(service, "OTLP span export enabled");
        }
        Ok(Telemetry { provider })
    }
    #[cfg(not(feature = "otel"))]
    Ok(Telemetry {})
}

/// Adds the current span's W3C trace context (`traceparent`, `tracestate`) to an outgoing request.
pub fn inject(rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    let mut headers = reqwest::header::HeaderMap::new();
    inject_headers(&mut headers);
    if headers.is_empty() {
        rb
    } else {
        rb.headers(headers)
    }
}

/// [`inject`] for a request built by hand (`http::HeaderMap`).
pub fn inject_headers(headers: &mut reqwest::header::HeaderMap) {
    #[cfg(feature = "otel")]
    otel::inject(headers);
    #[cfg(not(feature = "otel"))]
    let _ = headers;
}

/// Makes `span` a child of the trace named by an incoming request's W3C headers (`header` looks one up).
pub fn set_parent_from<'a>(span: &tracing::Span, header: impl Fn(&str) -> Option<&'a str>) {
    #[cfg(feature = "otel")]
    otel::set_parent(span, header);
    #[cfg(not(feature = "otel"))]
    let _ = (span, header);
}

/// Records the span's OpenTelemetry trace id in its `trace_id` field (declared `Empty`), so JSON log
/// lines inside the span carry it; does nothing when spans are not exported.
pub fn record_trace_id(span: &tracing::Span) {
    #[cfg(feature = "otel")]
    otel::record_trace_id(span);
    #[cfg(not(feature = "otel"))]
    let _ = span;
}

#[cfg(feature = "otel")]
mod otel {
    use std::collections::HashMap;
    use std::time::Duration;

    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
    use opentelemetry_otlp::{SpanExporter, WithExportConfig as _, WithHttpConfig as _};
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use opentelemetry_sdk::Resource;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    use tracing_subscriber::registry::LookupSpan;
    use tracing_subscriber::Layer;

    const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

    /// The tracer provider exporting to `endpoint` (batch export, HTTP protobuf).
    pub fn provider(service: &'static str, endpoint: &str) -> Result<SdkTracerProvider, String> {
        let client = ExportClient::new().map_err(|e| e.to_string())?;
        let exporter = SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| e.to_string())?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(Resource::builder().with_service_name(service).build())
            .build();
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        Ok(provider)
    }

    pub fn layer<S>(provider: &SdkTracerProvider, service: &'static str) -> impl Layer<S>
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    {
        tracing_opentelemetry::layer().with_tracer(provider.tracer(service))
    }

    pub fn inject(headers: &mut reqwest::header::HeaderMap) {
        let cx = tracing::Span::current().context();
        opentelemetry::global::get_text_map_propagator(|p| {
            p.inject_context(&cx, &mut opentelemetry_http::HeaderInjector(headers))
        });
    }

    pub fn set_parent<'a>(span: &tracing::Span, header: impl Fn(&str) -> Option<&'a str>) {
        let carrier: HashMap<String, String> = ["traceparent", "tracestate"]
            .into_iter()
            .filter_map(|k| header(k).map(|v| (k.to_owned(), v.to_owned())))
            .collect();
        if carrier.contains_key("traceparent") {
            let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&carrier));
            let _ = span.set_parent(cx);
        }
    }

    pub fn record_trace_id(span: &tracing::Span) {
        use opentelemetry::trace::TraceContextExt as _;
        let cx = span.context();
        let sc = cx.span().span_context().clone();
        if sc.is_valid() {
            span.record("trace_id", tracing::field::display(sc.trace_id()));
        }
    }

    /// Sends export batches with the workspace's reqwest on a runtime of its own: the SDK exports
    /// from its own thread, and flushing at exit must not depend on the service's runtime still running.
    #[derive(Debug)]
    struct ExportClient {
        http: reqwest::Client,
        runtime: Option<tokio::runtime::Runtime>,
    }

    impl ExportClient {
        fn new() -> std::io::Result<Self> {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("otlp-export")
                .enable_all()
                .build()?;
            let http = reqwest::Client::builder()
                .timeout(EXPORT_TIMEOUT)
                .build()
                .map_err(std::io::Error::other)?;
            Ok(ExportClient {
                http,
                runtime: Some(runtime),
            })
        }
    }

    impl Drop for ExportClient {
        fn drop(&mut self) {
            if let Some(rt) = self.runtime.take() {
                rt.shutdown_background();
            }
        }
    }

    #[async_trait::async_trait]
    impl HttpClient for ExportClient {
        async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
            let rt = self.runtime.as_ref().ok_or("export client shut down")?;
            let request = reqwest::Request::try_from(request)?;
            let http = self.http.clone();
            let (status, headers, body) = rt
                .spawn(async move {
                    let resp = http.execute(request).await?;
                    let (status, headers) = (resp.status(), resp.headers().clone());
                    Ok::<_, reqwest::Error>((status, headers, resp.bytes().await?))
                })
                .await??;
            let mut response = Response::new(body);
            *response.status_mut() = status;
            *response.headers_mut() = headers;
            Ok(response)
        }
    }
}
