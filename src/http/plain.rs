//! The plain-HTTP listener when HTTPS is on: it answers ACME HTTP-01
//! challenges and sends everything else to HTTPS.

use std::sync::Arc;

use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::{self, Reply, Response};
use warp::Filter;

use super::error::json_error;
use super::with;
use crate::tls::HttpChallenges;

/// `/.well-known/acme-challenge/{token}`, and a 308 redirect for the rest.
pub fn routes(challenges: Arc<HttpChallenges>, https_port: u16) -> BoxedFilter<(Response,)> {
    let challenge = warp::path!(".well-known" / "acme-challenge" / String).and(warp::get()).and(with(challenges)).map(
        |token: String, challenges: Arc<HttpChallenges>| match challenges.get(&token) {
            Some(answer) => reply::with_header(answer, "content-type", "application/octet-stream").into_response(),
            None => json_error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such ACME challenge"),
        },
    );
    let redirect = warp::header::optional::<String>("host")
        .and(warp::path::full())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .map(move |host: Option<String>, path: warp::path::FullPath, query: String| {
            let Some(host) = host.filter(|h| !h.is_empty()) else {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "NO_HOST",
                    "this server only speaks HTTPS; send a Host header",
                );
            };
            // Strip a port (IPv6 literals keep their brackets).
            let name = match host.rsplit_once(':') {
                Some((name, port)) if !name.ends_with(':') && port.bytes().all(|b| b.is_ascii_digit()) => name,
                _ => host.as_str(),
            };
            let port = if https_port == 443 { String::new() } else { format!(":{https_port}") };
            let query = if query.is_empty() { String::new() } else { format!("?{query}") };
            let location = format!("https://{name}{port}{}{query}", path.as_str());
            reply::with_header(reply::with_status(reply::reply(), StatusCode::PERMANENT_REDIRECT), "location", location)
                .into_response()
        });
    challenge.or(redirect).unify().boxed()
}
