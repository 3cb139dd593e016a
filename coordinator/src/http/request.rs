//! What every REST route does with a request before the core sees it:
//! the peer's certificate, the JSON body (read only once the caller is
//! checked), and the refusal of a caller whose body was not read.

use super::error::ApiError;
use axum::Extension;
use axum::Json;
use axum::extract::Request;
use axum::http::header;
use futures::StreamExt;
use qala_tls::PeerInfo;
use std::time::Duration;

pub(super) type Peer = Option<Extension<PeerInfo>>;

pub(super) fn peer(p: &Peer) -> Option<&PeerInfo> {
    p.as_ref().map(|Extension(p)| p)
}

/// The JSON body of `request`, read (up to axum's 2 MB) only once the
/// caller has been checked: a stranger's body is never buffered.
pub(super) async fn json_body<T: serde::de::DeserializeOwned>(request: Request) -> Result<T, ApiError> {
    let Json(v) = <Json<T> as axum::extract::FromRequest<()>>::from_request(request, &())
        .await
        .map_err(|e| ApiError::bad_request(e.body_text()))?;
    Ok(v)
}

/// How much of a refused body is still read (and dropped) before the
/// refusal is sent. A client still sending sees the answer, not a reset:
/// over HTTP/2 an answer sent before the body ends is followed by a reset
/// of the stream, and curl (7.88) then reports the reset, not the answer.
/// A larger body announced is not read at all.
const REFUSED_DRAIN: usize = 16 << 20;

/// Answer `e` to a caller refused before its body was read.
pub(super) async fn refused(request: Request, e: ApiError) -> ApiError {
    let announced =
        request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if announced.is_none_or(|n| n <= REFUSED_DRAIN) {
        drain(request.into_body().into_data_stream(), Duration::from_secs(1)).await;
    }
    e
}

/// Read and drop what is left of a refused body, up to [`REFUSED_DRAIN`]
/// bytes, for at most `stall` between pieces and 10 s in all; past either
/// the stream is closed under it.
pub(super) async fn drain<E>(mut body: impl futures::Stream<Item = Result<axum::body::Bytes, E>> + Unpin, stall: Duration) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut left = REFUSED_DRAIN;
    while left > 0 {
        let next = tokio::time::timeout_at(deadline.min(tokio::time::Instant::now() + stall), body.next());
        match next.await {
            Ok(Some(Ok(piece))) => left = left.saturating_sub(piece.len()),
            _ => return,
        }
    }
}
