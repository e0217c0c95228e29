//! NIFs of the S3 backend. Every request, and presigning (it may have to
//! fetch credentials), runs on the tokio runtime and answers by message;
//! only signing with given keys runs inline.

use std::sync::Arc;
use std::time::Duration;

use micelio_storage_core::error::StoreError;
use micelio_storage_core::key::{Key, Prefix};
use micelio_storage_core::object::PutCondition;
use micelio_storage_core::s3::credentials::CredentialSource;
use micelio_storage_core::s3::signer::{AmzDate, Credentials, Signer};
use micelio_storage_core::s3::{S3Config, S3Store, UrlStyle};
use rustler::{Binary, Env, NifMap, ResourceArc, Term};

use super::reply::BeamBody;
use super::{
    borrow_bytes, content_bytes, decode_condition, guarded, key_string, ok, spawn_checked,
    StoreReply,
};

/// A configured S3 store (client, pool, signer), reused by every call.
pub struct S3StoreResource(pub Arc<S3Store>);

#[rustler::resource_impl]
impl rustler::Resource for S3StoreResource {}

/// The S3 settings as Elixir resolved them.
#[derive(NifMap)]
pub(crate) struct S3ConfigTerm {
    bucket: String,
    region: String,
    endpoint: Option<String>,
    url_style: Option<String>,
    prefix: String,
    /// `"static"`, `"container"` or `"instance"`.
    credentials: String,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    session_token: Option<String>,
    container_credentials_uri: Option<String>,
    container_authorization_token: Option<String>,
    container_authorization_token_file: Option<String>,
    metadata_endpoint: String,
    connect_timeout_ms: u64,
    request_timeout_ms: u64,
    max_retries: u32,
    pool_size: usize,
    unsigned_payload: bool,
    list_page_size: u32,
}

impl S3ConfigTerm {
    pub(crate) fn into_config(self) -> Result<S3Config, StoreError> {
        let missing = |what: &str| StoreError::InvalidConfig("s3_credentials", what.to_string());
        let credentials = match self.credentials.as_str() {
            "static" => CredentialSource::Static(Credentials {
                access_key_id: self
                    .access_key_id
                    .ok_or_else(|| missing("no access key id"))?,
                secret_access_key: self
                    .secret_access_key
                    .ok_or_else(|| missing("no secret access key"))?,
                session_token: self.session_token,
            }),
            "container" => CredentialSource::Container {
                uri: self
                    .container_credentials_uri
                    .ok_or_else(|| missing("no container credentials URI"))?,
                token: self.container_authorization_token,
                token_file: self.container_authorization_token_file.map(Into::into),
            },
            "instance" => CredentialSource::Instance {
                endpoint: self.metadata_endpoint,
            },
            other => return Err(missing(&format!("unknown source {other:?}"))),
        };
        Ok(S3Config {
            bucket: self.bucket,
            region: self.region,
            endpoint: self.endpoint,
            url_style: match self.url_style.as_deref() {
                Some("virtual") => Some(UrlStyle::Virtual),
                Some("path") => Some(UrlStyle::Path),
                _ => None,
            },
            prefix: self.prefix,
            credentials,
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            max_retries: self.max_retries,
            pool_size: self.pool_size,
            unsigned_payload: self.unsigned_payload,
            list_page_size: self.list_page_size,
        })
    }
}

#[rustler::nif(schedule = "DirtyIo")]
fn s3_open(env: Env, config: S3ConfigTerm) -> Term {
    guarded(env, || {
        let store = S3Store::new(config.into_config()?)?;
        Ok(ok(env, ResourceArc::new(S3StoreResource(Arc::new(store)))))
    })
}

#[rustler::nif]
fn s3_get<'a>(
    env: Env<'a>,
    store: ResourceArc<S3StoreResource>,
    reply_ref: Term<'a>,
    key: Binary<'a>,
    with_meta: bool,
    timeout_ms: u64,
) -> Term<'a> {
    spawn_checked(env, reply_ref, timeout_ms, || {
        let key = key_string(key)?;
        let store = store.0.clone();
        Ok(move || async move {
            let key = Key::parse(key.as_bytes())?;
            let (body, meta) = store.get_into::<BeamBody>(key).await?;
            Ok(body.into_reply(with_meta.then_some(meta)))
        })
    })
}

#[rustler::nif]
fn s3_head<'a>(
    env: Env<'a>,
    store: ResourceArc<S3StoreResource>,
    reply_ref: Term<'a>,
    key: Binary<'a>,
    timeout_ms: u64,
) -> Term<'a> {
    spawn_checked(env, reply_ref, timeout_ms, || {
        let key = key_string(key)?;
        let store = store.0.clone();
        Ok(move || async move {
            Ok(StoreReply::Meta(
                store.head(Key::parse(key.as_bytes())?).await?,
            ))
        })
    })
}

#[rustler::nif]
fn s3_put<'a>(
    env: Env<'a>,
    store: ResourceArc<S3StoreResource>,
    reply_ref: Term<'a>,
    key: Binary<'a>,
    content: Term<'a>,
    condition: Term<'a>,
    timeout_ms: u64,
) -> Term<'a> {
    spawn_checked(env, reply_ref, timeout_ms, || {
        let key = key_string(key)?;
        let condition: PutCondition = decode_condition(condition)?;
        let body = borrow_bytes(env, content_bytes(content)?);
        let store = store.0.clone();
        Ok(move || async move {
            store
                .put(Key::parse(key.as_bytes())?, body, &condition)
                .await?;
            Ok(StoreReply::Done)
        })
    })
}

#[rustler::nif]
fn s3_delete<'a>(
    env: Env<'a>,
    store: ResourceArc<S3StoreResource>,
    reply_ref: Term<'a>,
    key: Binary<'a>,
    timeout_ms: u64,
) -> Term<'a> {
    spawn_checked(env, reply_ref, timeout_ms, || {
        let key = key_string(key)?;
        let store = store.0.clone();
        Ok(move || async move {
            store.delete(Key::parse(key.as_bytes())?).await?;
            Ok(StoreReply::Done)
        })
    })
}

#[rustler::nif]
fn s3_list<'a>(
    env: Env<'a>,
    store: ResourceArc<S3StoreResource>,
    reply_ref: Term<'a>,
    prefix: Binary<'a>,
    timeout_ms: u64,
) -> Term<'a> {
    spawn_checked(env, reply_ref, timeout_ms, || {
        let prefix = Prefix::parse(prefix.as_slice())?.as_str().to_string();
        let store = store.0.clone();
        Ok(move || async move {
            let keys = store.list(Prefix::parse(prefix.as_bytes())?).await?;
            Ok(StoreReply::Keys(keys))
        })
    })
}

#[rustler::nif]
#[allow(clippy::too_many_arguments)]
fn s3_presigned_url<'a>(
    env: Env<'a>,
    store: ResourceArc<S3StoreResource>,
    reply_ref: Term<'a>,
    key: Binary<'a>,
    method: String,
    expires_in: u64,
    unix_time: i64,
    timeout_ms: u64,
) -> Term<'a> {
    spawn_checked(env, reply_ref, timeout_ms, || {
        let key = key_string(key)?;
        let store = store.0.clone();
        Ok(move || async move {
            let url = store
                .presigned_url(Key::parse(key.as_bytes())?, &method, expires_in, unix_time)
                .await?;
            Ok(StoreReply::Text(url))
        })
    })
}

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
