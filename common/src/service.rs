//! The HTTP service scaffolding both services share: the first lines of `main`, a server run on a listener the caller bound
//! until a shutdown future resolves (so tests start a service in-process on port 0 and stop it
//! without a signal), the SIGTERM/SIGINT future the binaries pass in, per-request tracking
//! (metrics and span), and the JSON error body.

use std::future::Future;
use std::io;
use std::net::TcpListener;
use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServerHandle, ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};
use tokio::task::JoinHandle;
use tracing::Instrument;

/// The first lines of a service's `main`: runs `<bin> call ...` (the image's probe) and exits, or
/// installs telemetry, exiting with one line naming what is wrong when it cannot.
pub fn start(service: &'static str) -> crate::telemetry::Telemetry {
    if let Some(code) = crate::call::from_args() {
        std::process::exit(code);
    }
    crate::telemetry::init(service).unwrap_or_else(|e| {
        eprintln!("{service}: {e}");
        std::process::exit(1);
    })
}

/// Binds `0.0.0.0:port` for a binary; tests bind `127.0.0.1:0` themselves.
pub fn listen(port: u16) -> io::Result<TcpListener> {
    TcpListener::bind(("0.0.0.0", port))
}

/// Resolves on the first SIGTERM or SIGINT: what a binary passes to its service's `serve`.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// A running actix server (built with `disable_signals()` and `listen(listener)`), owned by the
/// service that drives its shutdown.
pub struct Http {
    handle: ServerHandle,
    task: JoinHandle<io::Result<()>>,
}

impl Http {
    pub fn spawn(server: Server) -> Self {
        Http {
            handle: server.handle(),
            task: tokio::spawn(server),
        }
    }

    /// Waits for `shutdown`; `Some(result)` when the server stopped by itself first.
    pub async fn until(&mut self, shutdown: impl Future<Output = ()>) -> Option<io::Result<()>> {
        tokio::select! {
            () = shutdown => None,
            r = &mut self.task => Some(r.unwrap_or_else(|e| Err(io::Error::other(e)))),
        }
    }

    /// Stops accepting and lets the requests in flight finish (within the server's
    /// `shutdown_timeout`).
    pub async fn drain(self) -> io::Result<()> {
        self.handle.stop(true).await;
        self.task.await.unwrap_or_else(|e| Err(io::Error::other(e)))
    }
}

/// The body of every error response: `{"error": message}`.
pub fn error_body(status: StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(crate::wire::ErrorBody::new(message))
}

/// Where [`track`] counts each response: by method (a closed set), route template (never the
/// concrete path: it would carry tenant ids) and status.
pub trait RequestCounter: Send + Sync + 'static {
    fn count_request(&self, method: crate::metrics::HttpMethod, route: &str, status: StatusCode);
}

/// When [`track`] runs a request in its own span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spans {
    /// Always (log lines of the request carry its method and route).
    Always,
    /// Only when spans are exported: the hot path (the router's `/tg`) skips the span otherwise.
    WhenExporting,
}

/// What [`track`] reads from the app data.
pub struct RequestTracking {
    counter: Arc<dyn RequestCounter>,
    spans: Spans,
}

impl RequestTracking {
    /// App data for `App::app_data`, next to `.wrap(from_fn(track))`.
    pub fn data(counter: Arc<dyn RequestCounter>, spans: Spans) -> web::Data<Self> {
        web::Data::new(RequestTracking { counter, spans })
    }
}

/// Middleware: counts every response through the app's [`RequestTracking`] and runs the request in
/// a span that continues the caller's trace (W3C `traceparent`).
pub async fn track(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let tracking = req.app_data::<web::Data<RequestTracking>>().cloned();
    let method = crate::metrics::HttpMethod::of(req.method().as_str());
    let spans = tracking.as_ref().map_or(Spans::Always, |t| t.spans);
    let span = if spans == Spans::Always || crate::telemetry::exporting() {
        let span = tracing::info_span!(
            "http request",
            method = %method,
            route = req.match_pattern().as_deref().unwrap_or("unmatched"),
            trace_id = tracing::field::Empty
        );
        crate::telemetry::set_parent_from(&span, |name| {
            req.headers().get(name).and_then(|v| v.to_str().ok())
        });
        crate::telemetry::record_trace_id(&span);
        span
    } else {
        tracing::Span::none()
    };
    let res = next.call(req).instrument(span).await;
    if let Some(t) = tracking {
        let (route, status) = match &res {
            Ok(r) => (r.request().match_pattern(), r.status()),
            Err(e) => (None, e.as_response_error().status_code()),
        };
        let route = route.unwrap_or_else(|| "unmatched".into());
        t.counter.count_request(method, &route, status);
    }
    res
}
