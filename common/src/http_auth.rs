//! Deny-by-default bearer auth for both services: every route is registered through [`Routes`] with
//! its [`Access`], and [`require_bearer`] lets a request through without `API_TOKEN` only when its
//! method and route template are on the service's public list. Unknown routes need the token too.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderMap, AUTHORIZATION};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, Handler, Responder};

use crate::Secret;

/// The body of every 401 for a missing or wrong bearer token.
pub const UNAUTHORIZED_MESSAGE: &str = "missing or invalid API token";

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Probes and metrics: anyone who reaches the port.
    Public,
    /// Authenticated by its handler with another secret (Telegram's per-tenant secret token).
    Handler,
    /// `Authorization: Bearer <API_TOKEN>`.
    Token,
}

/// One entry of a service's route table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub method: Method,
    /// The actix path template, e.g. `/tenants/{id}`.
    pub path: &'static str,
    pub access: Access,
}

/// Every route of a service with its access, enumerable (tests walk it) and what the middleware reads.
#[derive(Debug, Clone, Default)]
pub struct RouteTable(Vec<RouteSpec>);

impl RouteTable {
    pub fn routes(&self) -> &[RouteSpec] {
        &self.0
    }

    /// The access of a request by method and matched template; anything not listed needs the token.
    pub fn access(&self, method: &Method, pattern: Option<&str>) -> Access {
        pattern
            .and_then(|p| self.0.iter().find(|r| r.path == p && r.method == method))
            .map_or(Access::Token, |r| r.access)
    }
}

/// The routes of a service being declared: each with its method, template, access and handler.
#[derive(Default)]
pub struct Routes {
    table: RouteTable,
    /// The plain routes, by path template, in declaration order.
    handlers: Vec<(&'static str, actix_web::Route)>,
    resources: Vec<actix_web::Resource>,
}

impl Routes {
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares a route; the handler bounds are those of `actix_web::Route::to`.
    pub fn add<F, Args>(
        mut self,
        access: Access,
        method: Method,
        path: &'static str,
        handler: F,
    ) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.handlers
            .push((path, web::method(method.clone()).to(handler)));
        self.table.0.push(RouteSpec {
            method,
            path,
            access,
        });
        self
    }

    /// Declares a resource that needs settings of its own (e.g. a larger body limit), with the
    /// access of each method it serves.
    pub fn add_resource(
        mut self,
        path: &'static str,
        methods: &[(Access, Method)],
        resource: actix_web::Resource,
    ) -> Self {
        for (access, method) in methods {
            self.table.0.push(RouteSpec {
                method: method.clone(),
                path,
                access: *access,
            });
        }
        self.resources.push(resource);
        self
    }

    pub fn table(&self) -> &RouteTable {
        &self.table
    }

    /// Registers every route and the auth settings [`require_bearer`] reads.
    pub fn install(self, cfg: &mut web::ServiceConfig, api_token: Option<Secret>) {
        for (path, route) in self.handlers {
            cfg.route(path, route);
        }
        for resource in self.resources {
            cfg.service(resource);
        }
        cfg.app_data(web::Data::new(BearerAuth {
            token: api_token,
            table: self.table,
        }));
    }
}

/// What [`require_bearer`] checks against: the token (`None`: open, refused at start on Kubernetes).
pub struct BearerAuth {
    pub token: Option<Secret>,
    pub table: RouteTable,
}

/// Middleware: answers 401 to a request for a non-public route without the right bearer token.
/// A service that wraps it without [`Routes::install`] (no `BearerAuth`) is refused everything.
pub async fn require_bearer(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let allowed = match req.app_data::<web::Data<BearerAuth>>() {
        None => false,
        Some(auth) => {
            let pattern = req.match_pattern();
            match auth.table.access(req.method(), pattern.as_deref()) {
                Access::Public | Access::Handler => true,
                Access::Token => match &auth.token {
                    None => true,
                    Some(expected) => bearer_matches(req.headers(), expected),
                },
            }
        }
    };
    if !allowed {
        let resp = crate::service::error_body(StatusCode::UNAUTHORIZED, UNAUTHORIZED_MESSAGE);
        return Ok(req.into_response(resp).map_into_right_body());
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_left_body)
}

/// `Authorization: Bearer <expected>`, compared in constant time.
pub fn bearer_matches(headers: &HeaderMap, expected: &Secret) -> bool {
    let presented = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or("");
    // Evaluated even for an empty value, so a missing header takes as long as a wrong one.
    let equal =
        crate::webhook::constant_time_eq(presented.as_bytes(), expected.expose().as_bytes());
    equal && !presented.is_empty()
}

/// The `{param}` segments of a template filled with `value`, to call every route of a table.
pub fn sample_path(template: &str, value: &str) -> String {
    template
        .split('/')
        .map(|seg| {
            if seg.starts_with('{') && seg.ends_with('}') {
                value
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use actix_web::HttpResponse;

    use super::*;

    #[test]
    fn unlisted_routes_and_methods_need_the_token() {
        async fn ok() -> HttpResponse {
            HttpResponse::Ok().finish()
        }
        let routes = Routes::new()
            .add(Access::Public, Method::GET, "/healthz", ok)
            .add(Access::Handler, Method::POST, "/tg/{id}", ok)
            .add(Access::Token, Method::POST, "/chat/{id}", ok);
        let t = routes.table();
        assert_eq!(t.access(&Method::GET, Some("/healthz")), Access::Public);
        assert_eq!(t.access(&Method::POST, Some("/healthz")), Access::Token);
        assert_eq!(t.access(&Method::POST, Some("/tg/{id}")), Access::Handler);
        assert_eq!(t.access(&Method::POST, Some("/chat/{id}")), Access::Token);
        assert_eq!(t.access(&Method::GET, None), Access::Token);
        assert_eq!(
            sample_path("/tenants/{id}/sleep", "bob"),
            "/tenants/bob/sleep"
        );
    }

    #[test]
    fn bearer_needs_the_exact_token() {
        let expected = Secret::new("tok");
        let headers = |v: Option<&str>| {
            let mut h = HeaderMap::new();
            if let Some(v) = v {
                h.insert(AUTHORIZATION, v.parse().unwrap());
            }
            h
        };
        assert!(bearer_matches(&headers(Some("Bearer tok")), &expected));
        for bad in [
            None,
            Some("tok"),
            Some("Bearer tok2"),
            Some("Bearer "),
            Some("Basic tok"),
        ] {
            assert!(!bearer_matches(&headers(bad), &expected), "{bad:?}");
        }
    }
}
