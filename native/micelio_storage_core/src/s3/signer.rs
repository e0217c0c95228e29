//! AWS Signature Version 4, written from the AWS docs ("Create a signed AWS
//! API request" and "Authenticating Requests: Using Query Parameters").
//!
//! S3's rules: each path segment is URI-encoded once (RFC 3986 unreserved
//! characters stay, everything else is `%XX`, space is `%20`); the query is
//! sorted by encoded name, then value; header values are trimmed with inner
//! runs of spaces collapsed. One timestamp is taken per request and used for
//! both `x-amz-date` and the credential scope.

use std::fmt;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The SHA-256 of an empty payload.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// The payload hash that tells S3 the body is not signed (https only).
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// Access key, secret and optional session token. `Debug` never shows secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The access key id (not secret, but shown only in part).
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
    /// The session token of temporary credentials.
    pub session_token: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"******")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "******"),
            )
            .finish()
    }
}

/// A UTC timestamp in the two forms SigV4 uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmzDate {
    /// `YYYYMMDD`
    pub date: String,
    /// `YYYYMMDDTHHMMSSZ`
    pub datetime: String,
}

impl AmzDate {
    /// The timestamp of `unix_secs` seconds after the epoch.
    pub fn from_unix(unix_secs: i64) -> Self {
        let days = unix_secs.div_euclid(86_400);
        let secs = unix_secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        let date = format!("{y:04}{m:02}{d:02}");
        let datetime = format!(
            "{date}T{:02}{:02}{:02}Z",
            secs / 3600,
            (secs % 3600) / 60,
            secs % 60
        );
        AmzDate { date, datetime }
    }

    /// Now, read once.
    pub fn now() -> Self {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        Self::from_unix(secs)
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

// The encoding SigV4 requires is the one every URL of ours uses: it lives
// with the HTTP helpers, and is re-exported here for the signer's users.
pub use crate::http::encode::uri_encode;

/// Hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The request parts that are signed.
#[derive(Debug, Clone)]
pub struct CanonicalInput<'a> {
    /// `GET`, `PUT`, ...
    pub method: &'a str,
    /// The path, already URI-encoded once (`/bucket/my%20key`).
    pub encoded_path: &'a str,
    /// Query parameters, not encoded; sorted and encoded here.
    pub query: &'a [(String, String)],
    /// Headers to sign (host included), any case, any order.
    pub headers: &'a [(String, String)],
    /// Hex SHA-256 of the body, or `UNSIGNED-PAYLOAD`.
    pub payload_hash: &'a str,
}

/// The result of signing: what to put in the `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// `host;x-amz-date;...`
    pub signed_headers: String,
    /// Hex signature.
    pub signature: String,
    /// The full `Authorization` header value.
    pub authorization: String,
}

/// The canonical query string: encoded names and values, sorted.
pub fn canonical_query(query: &[(String, String)]) -> String {
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The canonical request, and the signed header list.
pub fn canonical_request(input: &CanonicalInput) -> (String, String) {
    let mut headers: Vec<(String, String)> = input
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), collapse_spaces(v)))
        .collect();
    headers.sort_by(|a, b| a.0.cmp(&b.0));
    // Repeated headers are joined with commas, in order.
    let mut merged: Vec<(String, String)> = Vec::with_capacity(headers.len());
    for (k, v) in headers {
        match merged.last_mut() {
            Some((lk, lv)) if *lk == k => {
                lv.push(',');
                lv.push_str(&v);
            }
            _ => merged.push((k, v)),
        }
    }
    let signed_headers = merged
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical_headers: String = merged.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let request = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        input.method,
        input.encoded_path,
        canonical_query(input.query),
        canonical_headers,
        signed_headers,
        input.payload_hash
    );
    (request, signed_headers)
}

fn collapse_spaces(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Signs requests for one set of credentials, region and service, caching
/// the derived signing key for the day.
pub struct Signer {
    credentials: Credentials,
    region: String,
    service: String,
    key_cache: Mutex<Option<(String, [u8; 32])>>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("credentials", &self.credentials)
            .field("region", &self.region)
            .field("service", &self.service)
            .finish()
    }
}

impl Signer {
    /// A signer for `service` (`"s3"`) in `region`.
    pub fn new(credentials: Credentials, region: &str, service: &str) -> Self {
        Signer {
            credentials,
            region: region.to_string(),
            service: service.to_string(),
            key_cache: Mutex::new(None),
        }
    }

    /// The credentials in use.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// `kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")`,
    /// cached per day (the region and service are fixed per signer).
    pub fn signing_key(&self, date: &str) -> [u8; 32] {
        let mut cache = self.key_cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((d, key)) = cache.as_ref() {
            if d == date {
                return *key;
            }
        }
        let secret = format!("AWS4{}", self.credentials.secret_access_key);
        let k_date = hmac(secret.as_bytes(), date.as_bytes());
        let k_region = hmac(&k_date, self.region.as_bytes());
        let k_service = hmac(&k_region, self.service.as_bytes());
        let key = hmac(&k_service, b"aws4_request");
        *cache = Some((date.to_string(), key));
        key
    }

    /// `<access key id>/<scope>`, the credential a request or policy names.
    pub fn credential(&self, date: &AmzDate) -> String {
        format!("{}/{}", self.credentials.access_key_id, self.scope(date))
    }

    /// The signature of a POST policy: HMAC of its base64 text with the
    /// day's signing key, in hex.
    pub fn sign_policy(&self, date: &AmzDate, policy_base64: &str) -> String {
        hex::encode(hmac(
            &self.signing_key(&date.date),
            policy_base64.as_bytes(),
        ))
    }

    fn scope(&self, date: &AmzDate) -> String {
        format!(
            "{}/{}/{}/aws4_request",
            date.date, self.region, self.service
        )
    }

    fn sign_canonical(&self, canonical: &str, date: &AmzDate) -> String {
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{}\n{}\n{}",
            date.datetime,
            self.scope(date),
            sha256_hex(canonical.as_bytes())
        );
        hex::encode(hmac(
            &self.signing_key(&date.date),
            string_to_sign.as_bytes(),
        ))
    }

    /// Signs `input` (whose headers must already hold `host`, `x-amz-date`
    /// and, for session credentials, `x-amz-security-token`).
    pub fn sign(&self, input: &CanonicalInput, date: &AmzDate) -> Signature {
        let (canonical, signed_headers) = canonical_request(input);
        let signature = self.sign_canonical(&canonical, date);
        let authorization = format!(
            "AWS4-HMAC-SHA256 Credential={}/{}, SignedHeaders={}, Signature={}",
            self.credentials.access_key_id,
            self.scope(date),
            signed_headers,
            signature
        );
        Signature {
            signed_headers,
            signature,
            authorization,
        }
    }

    /// Adds `x-amz-date`, `x-amz-content-sha256`, the session token and
    /// `authorization` to `headers` (which must hold `host`).
    pub fn sign_headers(
        &self,
        method: &str,
        encoded_path: &str,
        query: &[(String, String)],
        headers: &mut Vec<(String, String)>,
        payload_hash: &str,
        date: &AmzDate,
    ) {
        headers.push(("x-amz-date".into(), date.datetime.clone()));
        headers.push(("x-amz-content-sha256".into(), payload_hash.into()));
        if let Some(token) = &self.credentials.session_token {
            headers.push(("x-amz-security-token".into(), token.clone()));
        }
        let sig = self.sign(
            &CanonicalInput {
                method,
                encoded_path,
                query,
                headers,
                payload_hash,
            },
            date,
        );
        headers.push(("authorization".into(), sig.authorization));
    }

    /// A presigned URL query (`X-Amz-*` parameters) valid for `expires_in` seconds.
    /// Returns the full query string to append after `?`.
    #[allow(clippy::too_many_arguments)]
    pub fn presign_query(
        &self,
        method: &str,
        host: &str,
        encoded_path: &str,
        expires_in: u64,
        date: &AmzDate,
        extra_query: &[(String, String)],
        extra_headers: &[(String, String)],
    ) -> String {
        let mut signed_names: Vec<String> = extra_headers
            .iter()
            .map(|(k, _)| k.to_ascii_lowercase())
            .chain(std::iter::once("host".to_string()))
            .collect();
        signed_names.sort();
        let mut query = vec![
            (
                "X-Amz-Algorithm".to_string(),
                "AWS4-HMAC-SHA256".to_string(),
            ),
            (
                "X-Amz-Credential".to_string(),
                format!("{}/{}", self.credentials.access_key_id, self.scope(date)),
            ),
            ("X-Amz-Date".to_string(), date.datetime.clone()),
            ("X-Amz-Expires".to_string(), expires_in.to_string()),
            ("X-Amz-SignedHeaders".to_string(), signed_names.join(";")),
        ];
        if let Some(token) = &self.credentials.session_token {
            query.push(("X-Amz-Security-Token".to_string(), token.clone()));
        }
        query.extend(extra_query.iter().cloned());
        let mut headers = vec![("host".to_string(), host.to_string())];
        headers.extend(extra_headers.iter().cloned());
        let (canonical, _) = canonical_request(&CanonicalInput {
            method,
            encoded_path,
            query: &query,
            headers: &headers,
            payload_hash: UNSIGNED_PAYLOAD,
        });
        let signature = self.sign_canonical(&canonical, date);
        query.push(("X-Amz-Signature".to_string(), signature));
        canonical_query(&query)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The AWS SigV4 test suite: service "service", region us-east-1,
    // 2015-08-30T12:36:00Z, these example credentials.
    const TOKEN: &str = "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA==";

    fn signer() -> Signer {
        Signer::new(
            Credentials {
                access_key_id: "AKIDEXAMPLE".into(),
                secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
                session_token: None,
            },
            "us-east-1",
            "service",
        )
    }

    fn date() -> AmzDate {
        AmzDate::from_unix(1_440_938_160)
    }

    fn vector(
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        extra: &[(&str, &str)],
    ) -> Signature {
        let query: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut headers = vec![
            ("Host".to_string(), "example.amazonaws.com".to_string()),
            ("X-Amz-Date".to_string(), "20150830T123600Z".to_string()),
        ];
        headers.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let encoded = path
            .split('/')
            .map(|s| uri_encode(s, false))
            .collect::<Vec<_>>()
            .join("/");
        signer().sign(
            &CanonicalInput {
                method,
                encoded_path: &encoded,
                query: &query,
                headers: &headers,
                payload_hash: EMPTY_SHA256,
            },
            &date(),
        )
    }

    #[test]
    fn dates_format_as_amz_dates() {
        assert_eq!(
            date(),
            AmzDate {
                date: "20150830".into(),
                datetime: "20150830T123600Z".into()
            }
        );
        assert_eq!(AmzDate::from_unix(0).datetime, "19700101T000000Z");
        assert_eq!(AmzDate::from_unix(951_782_400).date, "20000229");
    }

    #[test]
    fn derives_the_published_signing_key() {
        assert_eq!(
            hex::encode(signer().signing_key("20150830")),
            "938127b5336810ddb6a5d6af445fcac9e371f9ed418ed386b022aed82901be75"
        );
    }

    #[test]
    fn get_vanilla() {
        let sig = vector("GET", "/", &[], &[]);
        assert_eq!(sig.authorization, "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
    }

    #[test]
    fn post_vanilla() {
        let sig = vector("POST", "/", &[], &[]);
        assert_eq!(
            sig.signature,
            "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
        );
    }

    #[test]
    fn get_vanilla_query_order_key_case() {
        let sig = vector(
            "GET",
            "/",
            &[("Param2", "value2"), ("Param1", "value1")],
            &[],
        );
        assert_eq!(
            sig.signature,
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
        );
    }

    #[test]
    fn get_unreserved() {
        let sig = vector(
            "GET",
            "/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
            &[],
            &[],
        );
        assert_eq!(
            sig.signature,
            "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f"
        );
    }

    #[test]
    fn get_utf8() {
        let sig = vector("GET", "/ሴ", &[], &[]);
        assert_eq!(
            sig.signature,
            "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85"
        );
    }

    #[test]
    fn get_header_value_trim() {
        let sig = vector(
            "GET",
            "/",
            &[],
            &[("My-Header1", " value1"), ("My-Header2", "\"a   b   c\"")],
        );
        assert_eq!(sig.signed_headers, "host;my-header1;my-header2;x-amz-date");
        assert_eq!(
            sig.signature,
            "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736"
        );
    }

    #[test]
    fn post_sts_header_before() {
        let sig = vector("POST", "/", &[], &[("X-Amz-Security-Token", TOKEN)]);
        assert_eq!(sig.signed_headers, "host;x-amz-date;x-amz-security-token");
        assert_eq!(
            sig.signature,
            "85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead"
        );
    }

    #[test]
    fn query_spaces_are_percent_20_never_plus() {
        let q = vec![
            ("prefix".to_string(), "a b+c".to_string()),
            ("list-type".to_string(), "2".to_string()),
        ];
        assert_eq!(canonical_query(&q), "list-type=2&prefix=a%20b%2Bc");
    }

    #[test]
    fn debug_never_shows_secrets() {
        let mut s = signer();
        s.credentials.session_token = Some("tok-secret".into());
        let shown = format!("{s:?}");
        assert!(!shown.contains("wJalrXUtnFEMI"));
        assert!(!shown.contains("tok-secret"));
        assert!(shown.contains("AKIDEXAMPLE"));
    }

    #[test]
    fn the_signing_key_is_cached_per_day() {
        let s = signer();
        let a = s.signing_key("20150830");
        assert_eq!(s.signing_key("20150830"), a);
        assert_ne!(s.signing_key("20150831"), a);
    }
}
