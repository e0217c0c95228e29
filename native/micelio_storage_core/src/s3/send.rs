//! Sending: the retry loop, attempts and their logging, and the clock
//! skew learned from the server's answers.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use reqwest::{Method, StatusCode};

use super::signer::AmzDate;
use crate::error::StoreError;
use crate::http::body::{read_body, BodyError, MAX_PARSED_BODY};
use crate::object::{vec_body, BodyAlloc, BodyBuf, Deadline};
use crate::observe;

use super::requests::Request;
use super::response::{malformed, Answer};
use super::{error, xml, S3Inner, S3Store};

impl S3Store {
    /// Sends one signed request, retrying what is safe to retry.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn send(
        &self,
        method: Method,
        path: &str,
        query: Vec<(String, String)>,
        headers: Vec<(String, String)>,
        body: Option<Bytes>,
        idempotent: bool,
        deadline: Deadline,
    ) -> Result<Answer, StoreError> {
        let ans = self
            .send_into(
                method, path, query, headers, body, idempotent, vec_body, false, deadline,
            )
            .await?;
        Ok(ans.into_bytes())
    }

    /// Like `send`, for requests whose success answer must be one whole
    /// `<root>` document (CopyObject, CompleteMultipartUpload). A 200 that
    /// carries an `<Error>` is that error, retried as its code would be
    /// with its own status (InternalError as a 500, SlowDown as a 503); a
    /// 200 with anything else is `MalformedXML`.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn send_document(
        &self,
        method: Method,
        path: &str,
        query: Vec<(String, String)>,
        headers: Vec<(String, String)>,
        body: Option<Bytes>,
        idempotent: bool,
        root: &'static str,
        deadline: Deadline,
    ) -> Result<Answer, StoreError> {
        let request = Request::new(self, method, path, query, headers, body).await;
        let ans = self
            .retrying(&request, idempotent, deadline, || async {
                let resp = self.start_attempt(&request, deadline).await?;
                let ans = self.finish_attempt(&request, resp, vec_body, false).await?;
                match xml::expect_document(ans.body.as_slice(), root) {
                    Ok(()) => Ok(ans),
                    Err(e) if e.code == "MalformedXML" => {
                        Err(Attempt::Failed(malformed(ans.status, e.message)))
                    }
                    // Status 0: the status is the one S3 gives the code.
                    Err(e) => Err(Attempt::Failed(error::from_code(0, e, &self.bucket))),
                }
            })
            .await?;
        Ok(ans.into_bytes())
    }

    /// Like `send`, reading the body into a buffer from `alloc`; a
    /// `whole_body` (an object's content) is not held to the cap on parsed
    /// answers when it is a success. Retries
    /// stop at the deadline: no backoff sleeps past it.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn send_into(
        &self,
        method: Method,
        path: &str,
        query: Vec<(String, String)>,
        headers: Vec<(String, String)>,
        body: Option<Bytes>,
        idempotent: bool,
        alloc: BodyAlloc,
        whole_body: bool,
        deadline: Deadline,
    ) -> Result<Answer<Box<dyn BodyBuf>>, StoreError> {
        let request = Request::new(self, method, path, query, headers, body).await;
        self.retrying(&request, idempotent, deadline, || async {
            let resp = self.start_attempt(&request, deadline).await?;
            self.finish_attempt(&request, resp, alloc, whole_body).await
        })
        .await
    }

    /// Sends a GET whose body the caller reads as it arrives: the response
    /// once its status is a success (errors are read and mapped). Retried
    /// like `send` until then.
    pub(super) async fn open_body(
        &self,
        path: &str,
        headers: Vec<(String, String)>,
        deadline: Deadline,
    ) -> Result<reqwest::Response, StoreError> {
        let request = Request::new(self, Method::GET, path, vec![], headers, None).await;
        self.retrying(&request, true, deadline, || async {
            let resp = self.start_attempt(&request, deadline).await?;
            if resp.status().is_success() {
                Ok(resp)
            } else {
                self.finish_attempt(&request, resp, vec_body, false)
                    .await
                    .map(|_| unreachable!("finish_attempt fails on a status that is not a success"))
            }
        })
        .await
    }

    /// The retry loop around one request's attempts.
    pub(super) async fn retrying<T, F, Fut>(
        &self,
        request: &Request,
        idempotent: bool,
        deadline: Deadline,
        attempt_once: F,
    ) -> Result<T, StoreError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, Attempt>>,
    {
        let method = &request.method;
        let mut attempt = 0;
        let mut skew_retried = false;
        loop {
            let result = attempt_once().await;
            if let Err(Attempt::Skewed(_)) = &result {
                if !skew_retried {
                    // Signed again with the corrected clock, at once: the
                    // server refused the time, not the request.
                    skew_retried = true;
                    continue;
                }
            }
            let retry = match &result {
                Ok(_) | Err(Attempt::Skewed(_)) => false,
                // Nothing reached the server: always safe to try again.
                Err(Attempt::Connect(_)) => true,
                // A 503 or 429 was not applied: safe to send again even
                // when the request must not be replayed once applied.
                Err(Attempt::Failed(e)) => {
                    (idempotent && error::is_retryable(e)) || error::not_applied(e)
                }
            };
            let backoff = self.policy.backoff(attempt);
            if !retry || attempt >= self.policy.max_retries || backoff >= deadline.remaining() {
                if retry && attempt > 0 {
                    self.log_give_up(method, &request.path, attempt + 1);
                }
                return result.map_err(Attempt::into_error);
            }
            if let Err(e) = &result {
                self.log_retry(method, attempt + 1, e);
            }
            observe::retried();
            tokio::time::sleep(backoff).await;
            attempt += 1;
        }
    }

    /// Logs a retry (debug): endpoint, operation, attempt and the error's
    /// kind. The path and query are left out: they hold keys, never secrets,
    /// but keys are the app's data.
    pub(super) fn log_retry(&self, method: &Method, attempt: u32, failed: &Attempt) {
        let why = match failed {
            Attempt::Connect(e) | Attempt::Failed(e) | Attempt::Skewed(e) => error_kind(e),
        };
        observe::log(
            observe::Level::Debug,
            format!("S3 {method} failed ({why}), retrying"),
            vec![
                ("endpoint", self.endpoint.clone()),
                ("operation", method.to_string()),
                ("attempt", attempt.to_string()),
            ],
        );
    }

    /// Logs a give-up after the last retry (warning).
    pub(super) fn log_give_up(&self, method: &Method, _path: &str, attempts: u32) {
        observe::log(
            observe::Level::Warning,
            format!("S3 {method} gave up after {attempts} attempts"),
            vec![
                ("endpoint", self.endpoint.clone()),
                ("operation", method.to_string()),
                ("attempt", attempts.to_string()),
            ],
        );
    }

    /// Signs and sends one attempt; the response is not read yet.
    pub(super) async fn start_attempt(
        &self,
        request: &Request,
        deadline: Deadline,
    ) -> Result<reqwest::Response, Attempt> {
        let left = deadline.remaining();
        if left.is_zero() {
            return Err(Attempt::Failed(StoreError::Timeout));
        }
        let mut signed = request.headers.clone();
        signed.push(("host".to_string(), self.host.clone()));
        if let Some(b) = &request.body {
            signed.push(("content-length".to_string(), b.len().to_string()));
        }
        // Nothing was sent yet when credentials cannot be had: retried like
        // a failed connection.
        let signer = self.signers.current().await.map_err(Attempt::Connect)?;
        // One clock reading per attempt, for x-amz-date and the scope alike,
        // corrected by what the server told us of its clock.
        let date = AmzDate::from_unix(self.now_unix());
        signer.sign_headers(
            request.method.as_str(),
            &request.path,
            &request.query,
            &mut signed,
            &request.payload_hash,
            &date,
        );
        let mut req = self
            .client
            .request(request.method.clone(), &request.url)
            .timeout(self.request_timeout.min(left));
        for (k, v) in &signed {
            if k != "host" {
                req = req.header(k.as_str(), v.as_str());
            }
        }
        if let Some(b) = &request.body {
            req = req.body(b.clone());
        }
        req.send()
            .await
            .map_err(|e| Attempt::from_reqwest(e, &self.endpoint))
    }

    /// Reads a response's body into a buffer from `alloc` and checks its status.
    pub(super) async fn finish_attempt(
        &self,
        request: &Request,
        mut resp: reqwest::Response,
        alloc: BodyAlloc,
        whole_body: bool,
    ) -> Result<Answer<Box<dyn BodyBuf>>, Attempt> {
        let status = resp.status();
        let resp_headers = resp.headers().clone();
        // Only an object's content may be larger than what a parser takes.
        let cap = if whole_body && status.is_success() {
            None
        } else {
            Some(MAX_PARSED_BODY)
        };
        let body = read_body(&mut resp, alloc, cap)
            .await
            .map_err(|e| match e {
                BodyError::Network(e) => Attempt::Failed(network_error(e, &self.endpoint)),
                BodyError::TooLarge(cap) => Attempt::Failed(StoreError::Network(format!(
                    "{}: the answer's body is larger than the {} MiB a parsed answer may be",
                    self.endpoint,
                    cap >> 20
                ))),
            })?;
        if status.is_success() {
            Ok(Answer {
                status,
                headers: resp_headers,
                body,
            })
        } else if status == StatusCode::NOT_MODIFIED {
            Err(Attempt::Failed(StoreError::NotModified))
        } else if status.is_redirection() {
            Err(Attempt::Failed(error::redirect(
                status.as_u16(),
                &resp_headers,
                body.as_slice(),
            )))
        } else if let Some(err) = self.learn_skew(request, status, &resp_headers, body.as_slice()) {
            Err(Attempt::Skewed(err))
        } else if status == StatusCode::NOT_FOUND && request.method == Method::HEAD {
            // A HEAD answer has no body to name a code: its 404 is the
            // object's (or the bucket's, which callers check apart).
            Err(Attempt::Failed(StoreError::NotFound))
        } else {
            Err(Attempt::Failed(error::from_response(
                status.as_u16(),
                body.as_slice(),
                &self.bucket,
            )))
        }
    }
}

/// A server clock further than this from ours, told by a 403 to a HEAD
/// (which has no body to say RequestTimeTooSkewed), is taken for skew.
pub(super) const SKEW_TOLERANCE_SECS: i64 = 300;

impl S3Inner {
    /// Now in unix seconds, on the server's clock as far as we know it.
    pub(super) fn now_unix(&self) -> i64 {
        let ours = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        ours + self.clock_offset.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// When an answer says our clock is off (403 RequestTimeTooSkewed, or a
    /// 403 to a HEAD whose `Date` is more than 5 minutes away), learns the
    /// offset from its `Date` and returns the error to retry once with.
    /// The AWS SDKs correct skew the same way.
    pub(super) fn learn_skew(
        &self,
        request: &Request,
        status: StatusCode,
        headers: &reqwest::header::HeaderMap,
        body: &[u8],
    ) -> Option<StoreError> {
        if status != StatusCode::FORBIDDEN {
            return None;
        }
        let server = headers
            .get("date")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs() as i64)?;
        let ours = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let offset = server - ours;
        let code = xml::parse_error(body).code;
        let skewed = code == "RequestTimeTooSkewed"
            || (request.method == Method::HEAD && offset.abs() > SKEW_TOLERANCE_SECS);
        if !skewed {
            return None;
        }
        self.clock_offset
            .store(offset, std::sync::atomic::Ordering::Relaxed);
        if !self
            .skew_logged
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            observe::log(
                observe::Level::Warning,
                format!(
                    "the clock of the S3 server at {} is {offset} s from ours; requests and presigned URLs are now signed with its time",
                    self.endpoint
                ),
                vec![
                    ("endpoint", self.endpoint.clone()),
                    ("skew_seconds", offset.to_string()),
                ],
            );
        }
        let code = if code.is_empty() {
            "RequestTimeTooSkewed".to_string()
        } else {
            code
        };
        Some(StoreError::Forbidden(code))
    }
}

/// A short name of an error's kind, for logs.
pub(super) fn error_kind(e: &StoreError) -> &'static str {
    match e {
        StoreError::Timeout => "timeout",
        StoreError::Network(_) => "network",
        StoreError::Service { status: 503, .. } => "503",
        StoreError::Service { status: 429, .. } => "429",
        StoreError::Service { .. } => "server error",
        StoreError::Credentials(_) => "credentials",
        _ => "error",
    }
}

pub(super) enum Attempt {
    /// The connection was never made; the request was not sent.
    Connect(StoreError),
    /// The request may have reached the server.
    Failed(StoreError),
    /// The server refused our clock (RequestTimeTooSkewed, or a 403 to a
    /// HEAD with its `Date` far from ours); the offset is learned already.
    Skewed(StoreError),
}

impl Attempt {
    pub(super) fn from_reqwest(e: reqwest::Error, endpoint: &str) -> Self {
        if e.is_connect() {
            Attempt::Connect(network_error(e, endpoint))
        } else {
            Attempt::Failed(network_error(e, endpoint))
        }
    }

    pub(super) fn into_error(self) -> StoreError {
        match self {
            Attempt::Connect(e) | Attempt::Failed(e) | Attempt::Skewed(e) => e,
        }
    }
}

/// A failed connection or transfer, naming the endpoint (scheme, host and
/// port only: never a path, a query or a credential).
pub(super) fn network_error(e: reqwest::Error, endpoint: &str) -> StoreError {
    if e.is_timeout() {
        return StoreError::Timeout;
    }
    let e = e.without_url();
    let mut msg = format!("{endpoint}: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    StoreError::Network(msg)
}
