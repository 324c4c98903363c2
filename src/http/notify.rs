//! WeChat's payment notify: `POST /pay/notify` (also at
//! `/pay/parseOrderNotifyResult`, the tutorial's path).

use std::sync::Arc;

use warp::filters::BoxedFilter;
use warp::reply::{self, Reply, Response};
use warp::Filter;

use super::{body, with, PeerAddr};
use crate::pay::Payments;
use crate::wechat::xml::MAX_XML_BYTES;

/// The notify routes.
pub fn routes(pay: Arc<Payments>) -> BoxedFilter<(Response,)> {
    let path = warp::path!("pay" / "notify").or(warp::path!("pay" / "parseOrderNotifyResult")).unify();
    path.and(warp::post())
        .and(warp::ext::optional::<PeerAddr>())
        .and(body::limited(MAX_XML_BYTES))
        .and(with(pay))
        .then(|peer: Option<PeerAddr>, body: bytes::Bytes, pay: Arc<Payments>| async move {
            let ack = pay.handle_notify(&body, peer.map(|p| p.0)).await;
            reply::with_header(ack.to_xml(), "content-type", "text/xml; charset=utf-8").into_response()
        })
        .boxed()
}
