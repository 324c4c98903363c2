//! Request bodies with a size limit, chunked or not.
//!
//! warp's `content_length_limit` refuses requests without `Content-Length`;
//! this filter takes both kinds and stops reading as soon as the limit is
//! passed, so a 10 MB body costs at most `limit` bytes of memory.

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use warp::{Filter, Rejection};

/// The body was larger than the endpoint allows.
#[derive(Debug)]
pub struct BodyTooLarge {
    /// The endpoint's limit in bytes.
    pub limit: usize,
}

impl warp::reject::Reject for BodyTooLarge {}

/// The body could not be read (the client went away mid-way).
#[derive(Debug)]
pub struct BodyUnreadable;

impl warp::reject::Reject for BodyUnreadable {}

/// The longest a request body may take to arrive, whatever its size: put
/// into each request by [`crate::server`] (`[http] body_timeout_secs`).
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeout(pub Duration);

/// The body did not arrive in time (a stalled or trickling sender).
#[derive(Debug)]
pub struct BodyLate(pub Duration);

impl warp::reject::Reject for BodyLate {}

/// Without a [`BodyTimeout`] in the request (the simulator's own server).
const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(20);

/// Extracts the whole body, refusing more than `limit` bytes.
pub fn limited(limit: usize) -> impl Filter<Extract = (Bytes,), Error = Rejection> + Clone {
    warp::header::optional::<u64>("content-length")
        .and(warp::ext::optional::<BodyTimeout>())
        .and(warp::body::stream())
        .and_then(move |declared: Option<u64>, timeout: Option<BodyTimeout>, stream| async move {
            let timeout = timeout.map_or(DEFAULT_BODY_TIMEOUT, |t| t.0);
            match tokio::time::timeout(timeout, collect(declared, stream, limit)).await {
                Ok(body) => body,
                Err(_) => Err(warp::reject::custom(BodyLate(timeout))),
            }
        })
}

async fn collect<S, B>(declared: Option<u64>, stream: S, limit: usize) -> Result<Bytes, Rejection>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(warp::reject::custom(BodyTooLarge { limit }));
    }
    let mut body = BytesMut::new();
    let mut stream = std::pin::pin!(stream);
    while let Some(chunk) = stream.next().await {
        let mut chunk = chunk.map_err(|_| warp::reject::custom(BodyUnreadable))?;
        if body.len() + chunk.remaining() > limit {
            return Err(warp::reject::custom(BodyTooLarge { limit }));
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            body.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(body.freeze())
}
