//! One HTTP stub for tests: binds 127.0.0.1:0, answers by a closure or an actix route table,
//! records every request, and stops on drop or [`Stub::shutdown`]. For the ad-hoc neighbours a
//! test stands in for (an agent, Telegram, an orchestrator, a receiver), not for the real stand-ins.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServerHandle, ServiceRequest, ServiceResponse};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, App, HttpMessage, HttpResponse, HttpServer};
use futures::StreamExt;

/// One request a [`Stub`] received, as it arrived.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// The path and query, e.g. `/bot123:abc/setWebhook`.
    pub path: String,
    /// Header names in lower case, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The body, lossily as text (tests send JSON).
    pub body: String,
}

impl Recorded {
    /// E.g. `POST /bot123:abc/setWebhook`.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

type Log = Arc<Mutex<Vec<Recorded>>>;

/// The log, as app data the recording middleware finds.
struct Recorder(Log);

/// Reads the body once, records the request, and hands it on unchanged (the body put back).
async fn record(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let mut payload = req.take_payload();
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        body.extend_from_slice(&chunk?);
    }
    let body = body.freeze();
    let seen = Recorded {
        method: req.method().to_string(),
        path: req
            .uri()
            .path_and_query()
            .map_or_else(|| req.path().to_owned(), |p| p.to_string()),
        headers: req
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    if let Some(log) = req.app_data::<web::Data<Recorder>>() {
        log.0.lock().unwrap().push(seen.clone());
    }
    req.extensions_mut().insert(seen);
    req.set_payload(Payload::from(body));
    next.call(req).await
}

/// A running stub server; see the module doc.
pub struct Stub {
    pub addr: SocketAddr,
    log: Log,
    handle: ServerHandle,
}

impl Stub {
    /// Answers every request with `answer(request)`.
    pub fn answer<F>(answer: F) -> Stub
    where
        F: Fn(&Recorded) -> HttpResponse + Send + Sync + 'static,
    {
        let answer = Arc::new(answer);
        Stub::routes(move |cfg| {
            let answer = answer.clone();
            cfg.default_service(web::to(move |req: actix_web::HttpRequest| {
                let answer = answer.clone();
                async move {
                    let seen = req
                        .extensions()
                        .get::<Recorded>()
                        .cloned()
                        .expect("recorded by the stub's middleware");
                    answer(&seen)
                }
            }));
        })
    }

    /// Answers every request with 200 and the JSON `body`.
    pub fn json(body: &'static str) -> Stub {
        Stub::answer(move |_| {
            HttpResponse::Ok()
                .content_type("application/json")
                .body(body)
        })
    }

    /// Serves the route table `configure` builds (an actix `App::configure`).
    pub fn routes<F>(configure: F) -> Stub
    where
        F: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
    {
        let log: Log = Arc::default();
        let recorder = log.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(Recorder(recorder.clone())))
                .wrap(from_fn(record))
                .configure(configure.clone())
        })
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", 0))
        .expect("stub: bind 127.0.0.1:0");
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Stub { addr, log, handle }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().clone()
    }

    /// Stops accepting, lets requests in flight finish, and frees the port.
    pub async fn shutdown(self) {
        self.handle.stop(true).await;
    }
}

/// A 127.0.0.1 port free at the time of asking, for a child process to bind.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}

impl Drop for Stub {
    fn drop(&mut self) {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let h = self.handle.clone();
            rt.spawn(async move { h.stop(false).await });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_by_the_closure_records_and_frees_the_port_on_shutdown() {
        let stub = Stub::answer(|r| HttpResponse::Ok().body(format!("{} {}", r.method, r.body)));
        let answer = reqwest::Client::new()
            .post(format!("{}/bot1:a/sendMessage?x=1", stub.url()))
            .header("X-Probe", "yes")
            .body("hi")
            .send()
            .await
            .unwrap();
        assert_eq!(answer.text().await.unwrap(), "POST hi");
        let seen = stub.requests();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].line(), "POST /bot1:a/sendMessage?x=1");
        assert_eq!(seen[0].header("x-probe"), Some("yes"));
        let addr = stub.addr;
        stub.shutdown().await;
        assert!(
            std::net::TcpStream::connect(addr).is_err(),
            "nothing listens after shutdown"
        );
    }

    /// Recording reads the body; the route's own extractor still gets all of it.
    #[tokio::test]
    async fn a_route_table_still_reads_the_body_it_records() {
        let stub = Stub::routes(|cfg| {
            cfg.route(
                "/echo",
                web::post().to(|body: web::Json<serde_json::Value>| async move {
                    HttpResponse::Ok().json(body.into_inner())
                }),
            );
        });
        let http = reqwest::Client::new();
        let sent = serde_json::json!({"message": "x".repeat(100_000)});
        let echoed = http.post(format!("{}/echo", stub.url())).json(&sent);
        let got: serde_json::Value = echoed.send().await.unwrap().json().await.unwrap();
        assert_eq!(got, sent);
        let missing = http.get(format!("{}/other", stub.url())).send().await;
        assert_eq!(missing.unwrap().status(), 404);
        let seen = stub.requests();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].body, sent.to_string());
        assert_eq!(seen[1].line(), "GET /other");
    }
}
