//! Requests the platform's own clients send, valid for any HTTP/1.0 or 1.1 proxy in between.

use reqwest::header::CONTENT_LENGTH;
use reqwest::{Method, RequestBuilder};

/// Marks a request without a body with `Content-Length: 0`. hyper sends no length for an empty
/// body, and a proxy speaking HTTP/1.0 upstream (nginx's default) then forwards a POST of unknown
/// length, which the services refuse with 400. GET and HEAD are left as they are.
pub fn without_body(method: &Method, rb: RequestBuilder) -> RequestBuilder {
    if matches!(*method, Method::GET | Method::HEAD) {
        rb
    } else {
        rb.header(CONTENT_LENGTH, "0")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodiless_writes_carry_a_zero_length() {
        let c = reqwest::Client::new();
        for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            let req = without_body(&m, c.request(m.clone(), "http://127.0.0.1:1/x"))
                .build()
                .unwrap();
            assert_eq!(req.headers()[CONTENT_LENGTH], "0", "{m}");
        }
        let req = without_body(&Method::GET, c.get("http://127.0.0.1:1/x"))
            .build()
            .unwrap();
        assert!(req.headers().get(CONTENT_LENGTH).is_none());
    }
}
