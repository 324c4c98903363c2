//! WeChat's payment notify: `POST /pay/notify` (also at
//! `/pay/parseOrderNotifyResult`, the tutorial's path). The version is the
//! merchant's (`[wechat] api_version`): v2 gets XML replies, v3 gets 204 or
//! a 4xx/5xx with WeChat's JSON error body.

use std::sync::Arc;

use warp::filters::BoxedFilter;
use warp::http::{HeaderMap, StatusCode};
use warp::reply::{self, reply, Reply, Response};
use warp::Filter;

use super::{body, with, PeerAddr};
use crate::pay::Payments;
use crate::wechat::v3::verify::SignedHeaders;
use crate::wechat::xml::MAX_XML_BYTES;

/// The header on the answer to `GET /pay/notify`, by which `paybridge
/// doctor` knows that the notify URL reaches PayBridge (WeChat only POSTs).
pub const MARKER_HEADER: &str = "x-paybridge-notify";

/// The notify routes.
pub fn routes(pay: Arc<Payments>) -> BoxedFilter<(Response,)> {
    let path = warp::path!("pay" / "notify").or(warp::path!("pay" / "parseOrderNotifyResult")).unify();
    // A GET changes nothing and is never WeChat: it says what answers here.
    let marker = path.and(warp::get()).map(|| {
        let text = reply::with_header("PayBridge: WeChat Pay notifies are POSTed here\n", MARKER_HEADER, "1");
        reply::with_status(reply::with_header(text, "allow", "POST"), StatusCode::METHOD_NOT_ALLOWED).into_response()
    });
    let path = warp::path!("pay" / "notify").or(warp::path!("pay" / "parseOrderNotifyResult")).unify();
    marker
        .or(path
            .and(warp::post())
            .and(warp::ext::optional::<PeerAddr>())
            .and(warp::header::headers_cloned())
            .and(body::limited(MAX_XML_BYTES))
            .and(with(pay))
            .then(|peer: Option<PeerAddr>, headers: HeaderMap, body: bytes::Bytes, pay: Arc<Payments>| async move {
                let peer = peer.map(|p| p.0);
                if pay.api_version() == "v3" {
                    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
                    let signed = SignedHeaders {
                        timestamp: header("wechatpay-timestamp"),
                        nonce: header("wechatpay-nonce"),
                        signature: header("wechatpay-signature"),
                        serial: header("wechatpay-serial"),
                    };
                    let ack = pay.handle_notify_v3(&signed, &body, peer).await;
                    return match ack.success {
                        true => reply::with_status(reply(), StatusCode::NO_CONTENT).into_response(),
                        false => {
                            let status = StatusCode::from_u16(ack.status).unwrap_or(StatusCode::BAD_REQUEST);
                            let json = reply::with_header(ack.to_json(), "content-type", "application/json");
                            reply::with_status(json, status).into_response()
                        }
                    };
                }
                let ack = pay.handle_notify(&body, peer).await;
                reply::with_header(ack.to_xml(), "content-type", "text/xml; charset=utf-8").into_response()
            }))
        .unify()
        .boxed()
}
