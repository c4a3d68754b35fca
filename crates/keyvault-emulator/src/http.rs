//! HTTP plumbing shared by every endpoint: the parsed request, body reading with a size limit,
//! and JSON / error responses with the headers the service sends (`WWW-Authenticate` on 401,
//! `Retry-After` only when a test asked for it, `x-ms-request-id`).

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, HeaderMap, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::Value;

use crate::error::ServiceError;
use crate::identity::new_guid;
use crate::state::Config;

/// The response body type.
pub type Body = Full<Bytes>;

/// A response.
pub type Resp = Response<Body>;

/// Requests bodies larger than this are refused.
const MAX_BODY: usize = 1 << 20;

/// The connection is to be closed without a response (an injected fault).
#[derive(Debug)]
pub struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by an injected fault")
    }
}

impl std::error::Error for Dropped {}

/// The segments of a path after its leading '/', trailing empty segments removed (an empty
/// segment inside, as in `/keys/k//wrapkey`, stays: it means "latest").
pub fn segments(path: &str) -> Vec<String> {
    let mut segments: Vec<String> = path
        .strip_prefix('/')
        .unwrap_or(path)
        .split('/')
        .map(str::to_owned)
        .collect();
    while segments.len() > 1 && segments.last().is_some_and(String::is_empty) {
        segments.pop();
    }
    segments
}

/// A request, with the body not yet read.
pub struct Req {
    /// The method.
    pub method: Method,
    /// The path as sent.
    pub path: String,
    /// Path segments after the leading '/', trailing empty segments removed.
    pub segments: Vec<String>,
    /// Decoded query pairs.
    pub query: Vec<(String, String)>,
    /// Headers.
    pub headers: HeaderMap,
    /// `host[:port]` from the Host header (or the emulator's default).
    pub host: String,
    body: Option<ReqBody>,
}

/// A request body: streamed from a connection, or already in memory (the fuzz entry point).
enum ReqBody {
    Incoming(Incoming),
    Buffered(Bytes),
}

impl Req {
    /// Splits a hyper request.
    pub fn new(request: http::Request<Incoming>, default_host: &str) -> Self {
        let (parts, body) = request.into_parts();
        Self::from_parts(parts, ReqBody::Incoming(body), default_host)
    }

    /// A request whose body is already in memory; used by [`crate::fuzzing`].
    pub(crate) fn buffered(request: http::Request<Bytes>, default_host: &str) -> Self {
        let (parts, body) = request.into_parts();
        Self::from_parts(parts, ReqBody::Buffered(body), default_host)
    }

    fn from_parts(parts: http::request::Parts, body: ReqBody, default_host: &str) -> Self {
        let path = parts.uri.path().to_owned();
        let segments = segments(&path);
        let query = parts
            .uri
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let host = parts
            .headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
            .or_else(|| parts.uri.authority().map(|a| a.to_string()))
            .unwrap_or_else(|| default_host.to_owned());
        Self {
            method: parts.method,
            path,
            segments,
            query,
            headers: parts.headers,
            host,
            body: Some(body),
        }
    }

    /// `https://{host}`.
    pub fn base(&self) -> String {
        format!("https://{}", self.host)
    }

    /// A query parameter, by case-insensitive name.
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Reads the whole body (at most 1 MiB).
    pub async fn body(&mut self) -> Result<Bytes, ServiceError> {
        let body = match self.body.take() {
            None => return Ok(Bytes::new()),
            Some(ReqBody::Buffered(bytes)) if bytes.len() <= MAX_BODY => return Ok(bytes),
            Some(ReqBody::Buffered(_)) => {
                return Err(ServiceError::bad_parameter(
                    "The request body could not be read.",
                ));
            }
            Some(ReqBody::Incoming(body)) => body,
        };
        Limited::new(body, MAX_BODY)
            .collect()
            .await
            .map(|collected| collected.to_bytes())
            .map_err(|_| ServiceError::bad_parameter("The request body could not be read."))
    }

    /// Reads a JSON object body; an empty body reads as `{}`.
    pub async fn json(&mut self) -> Result<Value, ServiceError> {
        let bytes = self.body().await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Object(Default::default()));
        }
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|_| ServiceError::bad_parameter("The request body is not valid JSON."))?;
        if value.is_object() {
            Ok(value)
        } else {
            Err(ServiceError::bad_parameter(
                "The request body must be a JSON object.",
            ))
        }
    }

    /// Reads an `application/x-www-form-urlencoded` body.
    pub async fn form(&mut self) -> Result<Vec<(String, String)>, ServiceError> {
        let bytes = self.body().await?;
        Ok(form_urlencoded::parse(&bytes).into_owned().collect())
    }
}

fn with_common_headers(mut response: Resp) -> Resp {
    if let Ok(id) = HeaderValue::from_str(&new_guid()) {
        response.headers_mut().insert("x-ms-request-id", id);
    }
    response
}

/// A JSON response.
pub fn json(status: StatusCode, value: &Value) -> Resp {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    with_common_headers(response)
}

/// An empty response.
pub fn empty(status: StatusCode) -> Resp {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    with_common_headers(response)
}

/// The `WWW-Authenticate` challenge of this vault.
pub fn challenge(config: &Config) -> String {
    format!(
        "Bearer authorization=\"{}/{}\", resource=\"{}\"",
        config.challenge_authority.trim_end_matches('/'),
        config.tenant_id,
        config.resource
    )
}

/// A Key Vault error response.
pub fn service_error(error: &ServiceError, config: &Config) -> Resp {
    let mut response = json(error.status(), &error.body());
    if error.is_challenge()
        && let Ok(value) = HeaderValue::from_str(&challenge(config))
    {
        response.headers_mut().insert(WWW_AUTHENTICATE, value);
    }
    if let Some(seconds) = error.retry_after() {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}
