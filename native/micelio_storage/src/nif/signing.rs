//! The SigV4 signer on its own, for `Micelio.Storage.S3.sign_headers/4`:
//! signing with given keys is pure computation, so it runs inline.

use micelio_storage_core::s3::signer::{AmzDate, Credentials, Signer};
use rustler::{Env, Term};

use super::guarded;
use crate::terms::ok;

/// Signs one request: returns the headers to add (`x-amz-date`,
/// `x-amz-content-sha256`, `x-amz-security-token`, `authorization`).
#[rustler::nif]
#[allow(clippy::too_many_arguments)]
fn s3_sign_headers<'a>(
    env: Env<'a>,
    credentials: (String, String, Option<String>),
    region: String,
    service: String,
    method: String,
    encoded_path: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    payload_hash: String,
    unix_time: i64,
) -> Term<'a> {
    guarded(env, || {
        let (access_key_id, secret_access_key, session_token) = credentials;
        let signer = Signer::new(
            Credentials {
                access_key_id,
                secret_access_key,
                session_token,
            },
            &region,
            &service,
        );
        let date = AmzDate::from_unix(unix_time);
        let mut all = headers.clone();
        signer.sign_headers(
            &method,
            &encoded_path,
            &query,
            &mut all,
            &payload_hash,
            &date,
        );
        let added: Vec<(String, String)> = all.split_off(headers.len());
        Ok(ok(env, added))
    })
}
