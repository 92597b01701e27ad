//! One place where failures become HTTP responses.
//!
//! Every error a client can cause maps to a status and a short plain-text
//! reason; nothing here panics, and no error touches another session.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::auth::AuthError;
use crate::backend::BackendError;
use crate::sdpfrag::SdpFragError;

/// An error answered to an HTTP client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Auth(#[from] AuthError),
    #[error("{0}")]
    Backend(#[from] BackendError),
    #[error("bad trickle-ice-sdpfrag: {0}")]
    SdpFrag(#[from] SdpFragError),
    #[error("unsupported Content-Type: expected {expected}")]
    UnsupportedMediaType { expected: &'static str },
    #[error("{0}")]
    BadRequest(String),
    #[error("not found")]
    NotFound,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Auth(e) if e.is_forbidden() => StatusCode::FORBIDDEN,
            ApiError::Auth(_) => StatusCode::UNAUTHORIZED,
            ApiError::Backend(e) => match e {
                BackendError::MalformedSdp(_) => StatusCode::BAD_REQUEST,
                BackendError::UnusableSdp(_) | BackendError::Unprocessable(_) => {
                    StatusCode::UNPROCESSABLE_ENTITY
                }
                BackendError::NotFound | BackendError::ResumeFailed => StatusCode::NOT_FOUND,
                BackendError::NotOwner => StatusCode::FORBIDDEN,
                BackendError::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
                BackendError::PreconditionRequired => StatusCode::PRECONDITION_REQUIRED,
                BackendError::OverCapacity { .. }
                | BackendError::Draining { .. }
                | BackendError::ClusterUnavailable { .. }
                | BackendError::RoomNodeUnregistered { .. } => StatusCode::SERVICE_UNAVAILABLE,
                BackendError::TooManySessions { .. } => StatusCode::TOO_MANY_REQUESTS,
                BackendError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ApiError::SdpFrag(_) | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::NotFound => StatusCode::NOT_FOUND,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(%status, error = %self, "request failed");
        } else {
            tracing::debug!(%status, error = %self, "request rejected");
        }
        let mut resp = (status, format!("{self}\n")).into_response();
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let ApiError::Backend(
            BackendError::OverCapacity { retry_after, .. }
            | BackendError::Draining { retry_after }
            | BackendError::ClusterUnavailable { retry_after }
            | BackendError::RoomNodeUnregistered { retry_after, .. },
        ) = &self
        {
            if let Ok(v) = HeaderValue::from_str(&retry_after.as_secs().max(1).to_string()) {
                headers.insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}
