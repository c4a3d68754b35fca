//! Responses as the Alibaba Cloud gateway writes them: JSON with `RequestId` (also in
//! `x-acs-request-id`), error bodies with `Code`/`Message`/`HostId`/`Recommend` as
//! `application/json;charset=utf-8` (the SDKs parse XML only for `text/xml;charset=utf-8`), and
//! `x-acs-retry-after` (milliseconds) on throttling.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::Value;

use crate::error::ApiError;

/// A response.
pub type Resp = Response<Full<Bytes>>;

const JSON: &str = "application/json;charset=utf-8";

fn with_body(status: StatusCode, content_type: &'static str, body: String) -> Resp {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn with_request_id(mut response: Resp, request_id: &str) -> Resp {
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert("x-acs-request-id", value);
    }
    response
}

/// A plain-text response (the metadata service's form).
pub fn text(status: StatusCode, body: &str) -> Resp {
    with_body(status, "text/plain", body.to_owned())
}

/// A JSON response without a request id (the admin API).
pub fn json(status: StatusCode, value: &Value) -> Resp {
    with_body(status, JSON, value.to_string())
}

/// A successful API answer: `value` with `RequestId` added.
pub fn api_ok(mut value: Value, request_id: &str) -> Resp {
    if let Some(object) = value.as_object_mut() {
        object.insert("RequestId".to_owned(), Value::from(request_id));
    }
    with_request_id(json(StatusCode::OK, &value), request_id)
}

/// An API error answer.
pub fn api_error(error: &ApiError, request_id: &str, host: &str) -> Resp {
    let mut response = with_request_id(
        json(error.status(), &error.body(request_id, host)),
        request_id,
    );
    if let Some(millis) = error.retry_after_millis() {
        response
            .headers_mut()
            .insert("x-acs-retry-after", HeaderValue::from(millis));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_json_with_request_id_and_retry_after() {
        let error = ApiError::internal_failure().with_retry_after_millis(Some(250));
        let response = api_error(&error, "RID", "h");
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.headers()["content-type"], JSON);
        assert_eq!(response.headers()["x-acs-request-id"], "RID");
        assert_eq!(response.headers()["x-acs-retry-after"], "250");
    }
}
