//! Our SigV4 signer against the AWS SDK's (`aws-sigv4`), on random
//! requests: methods, keys of the key grammar, query parameters, headers,
//! payload hashes, dates, with and without a session token, signed in
//! headers and as presigned URLs. Any difference fails, with the request.
//!
//! `MICELIO_SIGV4_CASES` sets how many requests (default 2,000); the seed
//! is printed, and `MICELIO_SIGV4_SEED` replays one.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials as AwsCredentials;
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest,
    SignatureLocation, SigningSettings, UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use micelio_storage_core::s3::signer::{uri_encode, AmzDate, Credentials, Signer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SEGMENTS: &[&str] = &[
    "a", "sessions", "a b", "+", "%2F", "&", "?", "#", "=", "~", "*", "'", "(", ")", "ünï",
    "e\u{301}", "\u{e9}", "🙂", "x.y", "-_", "UPPER", "1",
];
const VALUES: &[&str] = &[
    "", "v", "a b", "a  b ", "+/=", "ünï", "🙂", "x,y", "1;2", " lead",
];
const HEADERS: &[&str] = &[
    "content-type",
    "x-amz-meta-owner",
    "x-amz-meta-build",
    "range",
    "if-match",
    "if-none-match",
    "cache-control",
    "x-amz-copy-source",
    "content-md5",
];
/// Name-value pairs (headers or query parameters).
type Pairs = Vec<(String, String)>;

const METHODS: &[&str] = &["GET", "PUT", "HEAD", "DELETE", "POST"];

struct Case {
    method: String,
    key: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    payload_hash: String,
    unix: i64,
    token: Option<String>,
    region: String,
}

fn pick<'a>(rng: &mut StdRng, from: &[&'a str]) -> &'a str {
    from[rng.random_range(0..from.len())]
}

fn case(rng: &mut StdRng) -> Case {
    let segments = rng.random_range(1..4);
    let key = (0..segments)
        .map(|_| pick(rng, SEGMENTS).to_string())
        .collect::<Vec<_>>()
        .join("/");
    let query = (0..rng.random_range(0..4))
        .map(|i| {
            let name = if rng.random_bool(0.5) {
                pick(
                    rng,
                    &["uploadId", "partNumber", "list-type", "prefix", "delete"],
                )
                .to_string()
            } else {
                format!("{}{i}", pick(rng, SEGMENTS))
            };
            (name, pick(rng, VALUES).to_string())
        })
        .collect();
    let mut headers: Vec<(String, String)> = Vec::new();
    for _ in 0..rng.random_range(0..4) {
        let name = pick(rng, HEADERS);
        if !headers.iter().any(|(n, _)| n == name) {
            let value = pick(rng, &["text/plain", "bytes=0-9", "\"abc\"", "a  b", "x"]);
            headers.push((name.to_string(), value.to_string()));
        }
    }
    let payload_hash = if rng.random_bool(0.3) {
        "UNSIGNED-PAYLOAD".to_string()
    } else {
        (0..64)
            .map(|_| char::from(b"0123456789abcdef"[rng.random_range(0..16)]))
            .collect()
    };
    Case {
        method: pick(rng, METHODS).to_string(),
        key,
        query,
        headers,
        payload_hash,
        unix: rng.random_range(1_500_000_000..2_000_000_000),
        token: rng
            .random_bool(0.3)
            .then(|| "FwoGZXIvYXdzE//token+with/chars==".to_string()),
        region: pick(rng, &["us-east-1", "eu-west-1", "auto"]).to_string(),
    }
}

fn ours(c: &Case) -> Signer {
    Signer::new(
        Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: c.token.clone(),
        },
        &c.region,
        "s3",
    )
}

// The query as a URL carries it: each part percent-encoded (the SDK
// decodes it again before it builds the canonical query).
fn url(c: &Case, host: &str) -> String {
    let path = format!("/bucket/{}", uri_encode(&c.key, true));
    let query: Vec<String> = c
        .query
        .iter()
        .map(|(k, v)| format!("{}={}", uri_encode(k, false), uri_encode(v, false)))
        .collect();
    if query.is_empty() {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}{path}?{}", query.join("&"))
    }
}

fn aws_settings(location: SignatureLocation, expires: Option<Duration>) -> SigningSettings {
    let mut settings = SigningSettings::default();
    // S3: paths are encoded once and never normalized.
    settings.percent_encoding_mode = PercentEncodingMode::Single;
    settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    settings.signature_location = location;
    settings.expires_in = expires;
    settings
}

fn aws_sign(
    c: &Case,
    host: &str,
    location: SignatureLocation,
    expires: Option<Duration>,
) -> (Pairs, Pairs) {
    let identity = AwsCredentials::new(
        "AKIDEXAMPLE",
        "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        c.token.clone(),
        None,
        "differential",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&c.region)
        .name("s3")
        .time(UNIX_EPOCH + Duration::from_secs(c.unix as u64))
        .settings(aws_settings(location, expires))
        .build()
        .expect("params")
        .into();
    let mut headers: Vec<(&str, &str)> = vec![("host", host)];
    headers.extend(c.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let body = if location == SignatureLocation::QueryParams {
        SignableBody::UnsignedPayload
    } else {
        SignableBody::Precomputed(c.payload_hash.clone())
    };
    let signable =
        SignableRequest::new(&c.method, url(c, host), headers.into_iter(), body).expect("signable");
    let (instructions, _) = sign(signable, &params).expect("signed").into_parts();
    let headers = instructions
        .headers()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let params = instructions
        .params()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    (headers, params)
}

fn seed() -> u64 {
    std::env::var("MICELIO_SIGV4_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(7)
        })
}

fn cases() -> usize {
    std::env::var("MICELIO_SIGV4_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000)
}

#[test]
fn header_signatures_match_the_sdk() {
    let seed = seed();
    println!("sigv4 differential (headers): seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let host = "bucket.s3.example.com";
    for _ in 0..cases() {
        let c = case(&mut rng);
        let mut headers = vec![("host".to_string(), host.to_string())];
        headers.extend(c.headers.iter().cloned());
        let path = format!("/bucket/{}", uri_encode(&c.key, true));
        ours(&c).sign_headers(
            &c.method,
            &path,
            &c.query,
            &mut headers,
            &c.payload_hash,
            &AmzDate::from_unix(c.unix),
        );
        let mine = headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .map(|(_, v)| v.clone())
            .expect("authorization");
        let (theirs, _) = aws_sign(&c, host, SignatureLocation::Headers, None);
        let theirs = theirs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
            .map(|(_, v)| v.clone())
            .expect("sdk authorization");
        assert_eq!(
            mine, theirs,
            "seed {seed}: {} {:?} query {:?} headers {:?} token {:?}",
            c.method, c.key, c.query, c.headers, c.token
        );
    }
}

#[test]
fn presigned_urls_match_the_sdk() {
    let seed = seed();
    println!("sigv4 differential (presigned): seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed.wrapping_add(1));
    let host = "bucket.s3.example.com";
    for _ in 0..cases() {
        let mut c = case(&mut rng);
        // A presigned URL signs only `host` among the headers here.
        c.headers.clear();
        let expires = rng.random_range(1..604_800u64);
        let path = format!("/bucket/{}", uri_encode(&c.key, true));
        let query = ours(&c).presign_query(
            &c.method,
            host,
            &path,
            expires,
            &AmzDate::from_unix(c.unix),
            &c.query,
            &[],
        );
        let mine = query
            .split('&')
            .find_map(|p| p.strip_prefix("X-Amz-Signature="))
            .expect("signature")
            .to_string();
        let (_, params) = aws_sign(
            &c,
            host,
            SignatureLocation::QueryParams,
            Some(Duration::from_secs(expires)),
        );
        let theirs = params
            .iter()
            .find(|(k, _)| k == "X-Amz-Signature")
            .map(|(_, v)| v.clone())
            .expect("sdk signature");
        assert_eq!(
            mine, theirs,
            "seed {seed}: {} {:?} query {:?} token {:?} expires {expires}",
            c.method, c.key, c.query, c.token
        );
    }
}
