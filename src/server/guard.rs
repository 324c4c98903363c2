//! The reply body guard: a reply keeps its connection busy until its last
//! byte is handed over, and tells the watchdog each time it moves.

use super::watchdog::{Busy, Writing};

/// A reply body that keeps its connection busy until it is dropped, and
/// tells it when the reply moves.
pub(super) struct Guarded<B> {
    pub(super) body: B,
    pub(super) writing: Writing,
    pub(super) _busy: Busy,
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for Guarded<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        let polled = std::pin::Pin::new(&mut self.body).poll_frame(cx);
        // hyper asks for the next frame only once the last one found room
        // (an HTTP/2 window, a free write buffer): a frame taken is progress.
        if let std::task::Poll::Ready(Some(Ok(_))) = &polled {
            self.writing.0.moved();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}
