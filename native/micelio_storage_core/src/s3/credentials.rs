//! Where a store's credentials come from: fixed keys, or temporary
//! credentials fetched from the ECS/EKS container endpoint or the EC2
//! instance metadata service (IMDSv2), refreshed before they expire.
//!
//! Each set of credentials gets its own `Signer` (and so its own signing-key
//! cache); requests take the current one, a cheap `Arc` clone.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::StoreError;
use crate::http::body::read_parsed;
use crate::s3::signer::{Credentials, Signer};

/// Fetched credentials are replaced this long before they expire, like the
/// AWS SDKs do; a failed refresh keeps using them until `GRACE` before.
const REFRESH_BEFORE: Duration = Duration::from_secs(5 * 60);
const GRACE: Duration = Duration::from_secs(10);
/// IMDSv2 session tokens asked for: six hours, the maximum.
const IMDS_TOKEN_TTL: &str = "21600";

/// How a store gets its credentials.
#[derive(Clone)]
pub enum CredentialSource {
    /// Keys from the configuration.
    Static(Credentials),
    /// `GET uri` with an optional `Authorization` token (ECS task roles, EKS
    /// Pod Identity). A token file is read again on every refresh: it rotates.
    Container {
        /// The full credentials URI.
        uri: String,
        /// A fixed authorization token.
        token: Option<String>,
        /// A file holding the authorization token.
        token_file: Option<PathBuf>,
    },
    /// The EC2 instance metadata service, IMDSv2 (session token first).
    Instance {
        /// `http://169.254.169.254` unless overridden.
        endpoint: String,
    },
    /// STS `AssumeRoleWithWebIdentity` with the token in a file (EKS IRSA,
    /// any OIDC provider). The file is read again on every refresh: the
    /// platform rotates it.
    WebIdentity {
        /// `AWS_ROLE_ARN`.
        role_arn: String,
        /// `AWS_ROLE_SESSION_NAME`.
        session_name: String,
        /// `AWS_WEB_IDENTITY_TOKEN_FILE`.
        token_file: PathBuf,
        /// `https://sts.<region>.amazonaws.com` unless overridden.
        sts_endpoint: String,
    },
}

impl fmt::Debug for CredentialSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialSource::Static(c) => f.debug_tuple("Static").field(c).finish(),
            CredentialSource::Container {
                uri, token_file, ..
            } => f
                .debug_struct("Container")
                .field("uri", uri)
                .field("token", &"<redacted>")
                .field("token_file", token_file)
                .finish(),
            CredentialSource::Instance { endpoint } => f
                .debug_struct("Instance")
                .field("endpoint", endpoint)
                .finish(),
            CredentialSource::WebIdentity {
                role_arn,
                session_name,
                token_file,
                sts_endpoint,
            } => f
                .debug_struct("WebIdentity")
                .field("role_arn", role_arn)
                .field("session_name", session_name)
                .field("token_file", token_file)
                .field("sts_endpoint", sts_endpoint)
                .finish(),
        }
    }
}

struct Current {
    signer: Arc<Signer>,
    /// `None`: never expires (static keys).
    expires: Option<SystemTime>,
}

/// Hands out a signer for valid credentials, fetching them when needed.
pub struct Signers {
    source: CredentialSource,
    region: String,
    service: String,
    client: reqwest::Client,
    current: RwLock<Option<Current>>,
    /// One refresh at a time; the others wait for its result.
    refresh: tokio::sync::Mutex<()>,
}

impl fmt::Debug for Signers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signers")
            .field("source", &self.source)
            .field("region", &self.region)
            .finish()
    }
}

impl Signers {
    /// Signers for `service` in `region`; `client` fetches credentials.
    pub fn new(
        source: CredentialSource,
        region: &str,
        service: &str,
        client: reqwest::Client,
    ) -> Self {
        let current = match &source {
            CredentialSource::Static(c) => Some(Current {
                signer: Arc::new(Signer::new(c.clone(), region, service)),
                expires: None,
            }),
            _ => None,
        };
        Signers {
            source,
            region: region.to_string(),
            service: service.to_string(),
            client,
            current: RwLock::new(current),
            refresh: tokio::sync::Mutex::new(()),
        }
    }

    /// The signer of credentials that are not about to expire, fetching new
    /// ones first if needed.
    pub async fn current(&self) -> Result<Arc<Signer>, StoreError> {
        if let Some(signer) = self.cached(REFRESH_BEFORE) {
            return Ok(signer);
        }
        let _one_at_a_time = self.refresh.lock().await;
        if let Some(signer) = self.cached(REFRESH_BEFORE) {
            return Ok(signer);
        }
        let fetched = self.fetch().await;
        self.log_refresh(&fetched);
        match fetched {
            Ok((credentials, expires)) => {
                let signer = Arc::new(Signer::new(credentials, &self.region, &self.service));
                let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
                *current = Some(Current {
                    signer: signer.clone(),
                    expires,
                });
                Ok(signer)
            }
            // The endpoint is down, but what we hold is still valid.
            Err(e) => self.cached(GRACE).ok_or(e),
        }
    }

    /// Logs a fetch of temporary credentials: where from and until when,
    /// or why it failed. Never the credentials.
    fn log_refresh(&self, fetched: &Result<(Credentials, Option<SystemTime>), StoreError>) {
        let source = match &self.source {
            CredentialSource::Static(_) => return,
            CredentialSource::Container { .. } => "container",
            CredentialSource::Instance { .. } => "instance",
            CredentialSource::WebIdentity { .. } => "STS web identity",
        };
        let metadata = vec![
            ("operation", "credentials".to_string()),
            ("source", source.to_string()),
        ];
        match fetched {
            Ok((_, expires)) => {
                let left = expires
                    .and_then(|at| at.duration_since(SystemTime::now()).ok())
                    .map_or("no expiry".to_string(), |d| {
                        format!("{} s left", d.as_secs())
                    });
                crate::observe::log(
                    crate::observe::Level::Info,
                    format!("refreshed S3 credentials from the {source} endpoint ({left})"),
                    metadata,
                );
            }
            Err(e) => crate::observe::log(
                crate::observe::Level::Warning,
                format!("could not refresh S3 credentials from the {source} endpoint: {e}"),
                metadata,
            ),
        }
    }

    fn cached(&self, margin: Duration) -> Option<Arc<Signer>> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        let current = current.as_ref()?;
        match current.expires {
            None => Some(current.signer.clone()),
            Some(at) if SystemTime::now() + margin < at => Some(current.signer.clone()),
            Some(_) => None,
        }
    }

    async fn fetch(&self) -> Result<(Credentials, Option<SystemTime>), StoreError> {
        let body = match &self.source {
            CredentialSource::Static(c) => return Ok((c.clone(), None)),
            CredentialSource::Container {
                uri,
                token,
                token_file,
            } => {
                let token = match token_file {
                    Some(path) => Some(read_token_file(path)?),
                    None => token.clone(),
                };
                let mut req = self.client.get(uri);
                if let Some(t) = token {
                    req = req.header("authorization", t);
                }
                self.text("container credentials endpoint", req).await?
            }
            CredentialSource::Instance { endpoint } => self.imds(endpoint).await?,
            CredentialSource::WebIdentity {
                role_arn,
                session_name,
                token_file,
                sts_endpoint,
            } => {
                return self
                    .web_identity(role_arn, session_name, token_file, sts_endpoint)
                    .await
            }
        };
        parse_credentials(body.as_bytes()).map_err(StoreError::Credentials)
    }

    /// `AssumeRoleWithWebIdentity`: an unsigned POST (the token is the
    /// proof), the token in the form body so it is in no URL. Errors give
    /// STS's code only: its messages may quote the token.
    async fn web_identity(
        &self,
        role_arn: &str,
        session_name: &str,
        token_file: &PathBuf,
        endpoint: &str,
    ) -> Result<(Credentials, Option<SystemTime>), StoreError> {
        let token = std::fs::read_to_string(token_file)
            .map(|t| t.trim().to_string())
            .map_err(|e| {
                StoreError::Credentials(format!(
                    "cannot read the web identity token file {}: {}",
                    token_file.display(),
                    e.kind()
                ))
            })?;
        let enc = |v: &str| crate::s3::signer::uri_encode(v, false);
        let form = format!(
            "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&DurationSeconds=3600&RoleArn={}&RoleSessionName={}&WebIdentityToken={}",
            enc(role_arn),
            enc(session_name),
            enc(&token)
        );
        let what = "STS AssumeRoleWithWebIdentity";
        let failed = |detail: String| StoreError::Credentials(format!("{what}: {detail}"));
        let resp = self
            .client
            .post(format!("{}/", endpoint.trim_end_matches('/')))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/xml")
            .body(form)
            .send()
            .await
            .map_err(|e| {
                failed(if e.is_timeout() {
                    "timed out".to_string()
                } else {
                    e.without_url().to_string()
                })
            })?;
        let status = resp.status();
        let body = read_parsed(resp).await.map_err(|e| failed(e.describe()))?;
        if !status.is_success() {
            let code = crate::s3::xml::parse_sts_error_code(&body);
            return Err(failed(
                format!("HTTP {} {}", status.as_u16(), code)
                    .trim_end()
                    .to_string(),
            ));
        }
        let (credentials, expiration) =
            crate::s3::xml::parse_sts_credentials(&body).map_err(failed)?;
        let expires = parse_rfc3339(&expiration)
            .ok_or_else(|| failed(format!("bad Expiration {expiration:?}")))?;
        Ok((credentials, Some(expires)))
    }

    async fn imds(&self, endpoint: &str) -> Result<String, StoreError> {
        let base = endpoint.trim_end_matches('/');
        let token = self
            .text(
                "instance metadata token",
                self.client
                    .put(format!("{base}/latest/api/token"))
                    .header("x-aws-ec2-metadata-token-ttl-seconds", IMDS_TOKEN_TTL),
            )
            .await?;
        let roles_url = format!("{base}/latest/meta-data/iam/security-credentials/");
        let roles = self
            .text(
                "instance metadata role",
                self.client
                    .get(&roles_url)
                    .header("x-aws-ec2-metadata-token", &token),
            )
            .await?;
        let role = roles
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .ok_or_else(|| StoreError::Credentials("the instance has no IAM role".into()))?;
        self.text(
            "instance metadata credentials",
            self.client
                .get(format!("{roles_url}{role}"))
                .header("x-aws-ec2-metadata-token", &token),
        )
        .await
    }

    /// The body of a 200 answer. Errors name the step, never the body (it
    /// may hold credentials).
    async fn text(&self, what: &str, req: reqwest::RequestBuilder) -> Result<String, StoreError> {
        let failed = |detail: String| StoreError::Credentials(format!("{what}: {detail}"));
        let resp = req.send().await.map_err(|e| {
            failed(if e.is_timeout() {
                "timed out".to_string()
            } else {
                e.without_url().to_string()
            })
        })?;
        let status = resp.status();
        if !status.is_success() {
            return Err(failed(format!("HTTP {}", status.as_u16())));
        }
        let body = read_parsed(resp).await.map_err(|e| {
            failed(if e.is_timeout() {
                "timed out".to_string()
            } else {
                e.describe()
            })
        })?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }
}

fn read_token_file(path: &PathBuf) -> Result<String, StoreError> {
    std::fs::read_to_string(path)
        .map(|t| t.trim().to_string())
        .map_err(|e| {
            StoreError::Credentials(format!(
                "cannot read the authorization token file {}: {e}",
                path.display()
            ))
        })
}

/// Parses the JSON both endpoints answer with: `AccessKeyId`,
/// `SecretAccessKey`, `Token` and `Expiration` (RFC 3339), plus `Code` on
/// EC2. Errors never quote the document.
pub fn parse_credentials(body: &[u8]) -> Result<(Credentials, Option<SystemTime>), String> {
    let doc: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("credentials are not JSON ({e})"))?;
    let field = |name: &str| {
        doc.get(name)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
    };
    if let Some(code) = field("Code") {
        if code != "Success" {
            return Err(format!("credentials endpoint answered Code {code:?}"));
        }
    }
    let required = |name: &str| {
        field(name)
            .map(str::to_string)
            .ok_or_else(|| format!("credentials have no {name}"))
    };
    let credentials = Credentials {
        access_key_id: required("AccessKeyId")?,
        secret_access_key: required("SecretAccessKey")?,
        session_token: field("Token").map(str::to_string),
    };
    let expires = match field("Expiration") {
        Some(text) => Some(
            parse_rfc3339(text).ok_or_else(|| format!("bad credentials Expiration {text:?}"))?,
        ),
        None => None,
    };
    Ok((credentials, expires))
}

/// `2026-11-22T12:34:56Z`, with optional fractional seconds and a `Z` or
/// `±hh:mm` offset.
pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<i64> {
        let s = text.get(from..to)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let mut rest = &text[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && rest.as_bytes()[3] == b':' => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let hh: i64 = rest.get(1..3)?.parse().ok()?;
            let mm: i64 = rest.get(4..6)?.parse().ok()?;
            sign * (hh * 3600 + mm * 60)
        }
        _ => return None,
    };
    let unix =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset;
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).ok()?))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix(t: SystemTime) -> u64 {
        t.duration_since(UNIX_EPOCH).unwrap().as_secs()
    }

    #[test]
    fn rfc3339_timestamps() {
        assert_eq!(unix(parse_rfc3339("1970-01-01T00:00:00Z").unwrap()), 0);
        assert_eq!(
            unix(parse_rfc3339("2026-11-22T12:34:56Z").unwrap()),
            1_795_350_896
        );
        assert_eq!(
            unix(parse_rfc3339("2000-02-29T00:00:00.123456Z").unwrap()),
            951_782_400
        );
        assert_eq!(
            unix(parse_rfc3339("2026-11-22T14:34:56+02:00").unwrap()),
            1_795_350_896
        );
        for bad in [
            "",
            "2026-11-22",
            "2026-11-22T12:34:56",
            "2026-13-22T12:34:56Z",
            "2026-11-22T12:34:56.Z",
            "2026-11-22T12:34:56+0200",
            "2026-1x-22T12:34:56Z",
        ] {
            assert!(parse_rfc3339(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn parses_container_and_instance_documents() {
        let doc = br#"{"AccessKeyId":"ASIAX","SecretAccessKey":"s3cr3t","Token":"tok",
                      "Expiration":"2026-11-22T12:34:56Z","RoleArn":"arn:aws:iam::1:role/r"}"#;
        let (c, exp) = parse_credentials(doc).unwrap();
        assert_eq!(c.access_key_id, "ASIAX");
        assert_eq!(c.secret_access_key, "s3cr3t");
        assert_eq!(c.session_token.as_deref(), Some("tok"));
        assert_eq!(unix(exp.unwrap()), 1_795_350_896);

        let ec2 = br#"{"Code":"Success","Type":"AWS-HMAC","AccessKeyId":"A","SecretAccessKey":"S","Token":"T","Expiration":"2026-11-22T12:34:56Z"}"#;
        assert!(parse_credentials(ec2).is_ok());
    }

    #[test]
    fn bad_documents_are_named_without_quoting_secrets() {
        let failed = br#"{"Code":"AssumeRoleUnauthorizedAccess","SecretAccessKey":"s3cr3t"}"#;
        let err = parse_credentials(failed).unwrap_err();
        assert!(err.contains("AssumeRoleUnauthorizedAccess"));
        let no_key = br#"{"SecretAccessKey":"s3cr3t"}"#;
        let err = parse_credentials(no_key).unwrap_err();
        assert!(err.contains("AccessKeyId") && !err.contains("s3cr3t"));
        let err = parse_credentials(b"s3cr3t").unwrap_err();
        assert!(!err.contains("s3cr3t"));
        let bad_date = br#"{"AccessKeyId":"A","SecretAccessKey":"s3cr3t","Expiration":"soon"}"#;
        let err = parse_credentials(bad_date).unwrap_err();
        assert!(err.contains("soon") && !err.contains("s3cr3t"));
    }

    #[tokio::test]
    async fn static_credentials_never_expire_and_need_no_request() {
        let creds = Credentials {
            access_key_id: "AKID".into(),
            secret_access_key: "secret".into(),
            session_token: None,
        };
        let _ = rustls::crypto::ring::default_provider().install_default();
        let signers = Signers::new(
            CredentialSource::Static(creds),
            "us-east-1",
            "s3",
            reqwest::Client::new(),
        );
        let a = signers.current().await.unwrap();
        let b = signers.current().await.unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.credentials().access_key_id, "AKID");
    }
}
