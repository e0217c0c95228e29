//! The operations a caller can ask of a store, as they arrive from Elixir.
//!
//! A request is typed at the boundary: `Request` is a rustler
//! `NifTaggedEnum`, so each arrives as `{name, %{field => value}}` (or a
//! bare atom when it has no fields), built on the Elixir side by
//! `Micelio.Storage.Operation`, the one place that spells the fields. A
//! misspelled name or a field of the wrong type fails to decode as a whole
//! (`{:invalid_config, :operation, _}`), never half-read. Each variant runs
//! the `Store` method of the same name.
//!
//! Keys and content are checked and taken here, once, before any work is
//! scheduled; the same decoded operation then runs on any store.

use micelio_storage_core::attributes::Attributes;
use micelio_storage_core::bucket::{bucket_of, CorsRule};
use micelio_storage_core::error::StoreError;
use micelio_storage_core::key::{Key, Prefix};
use micelio_storage_core::object::{BodyAlloc, Deadline, Object, ObjectMeta};
use micelio_storage_core::store::{
    check_object_options, ByteRange, CopyOptions, DeleteManyOutcome, DeleteOptions, GetOptions,
    HeadOptions, Level, ListOptions, Page, PageOptions, PostPolicyOptions, PresignOptions,
    PresignedPost, PutOptions, SharedStore,
};
use rustler::{Binary, Encoder, Env, Term};

use super::documents::{CorsRuleTerm, PostPolicyTerm, PresignedPostTerm};
use crate::buffers::{body_bytes, body_term, BeamBody};
use crate::runtime::Reply;
use crate::terms::{
    body_reply, content_bytes, decode_attributes, decode_condition, decode_range, error_reason,
    meta_term, ok, ok_atom,
};

mod atoms {
    rustler::atoms! { error, partial }
}

/// A request as it crosses the boundary. Keys, prefixes, content, ranges
/// and put conditions stay terms here: they are checked (with errors of
/// their own: `:invalid_key`, `:invalid_prefix`, ...) when the request
/// becomes an `Operation`.
#[derive(rustler::NifTaggedEnum)]
enum Request<'a> {
    Get {
        key: Term<'a>,
        with_meta: bool,
        range: Term<'a>,
    },
    Head {
        key: Term<'a>,
    },
    Put {
        key: Term<'a>,
        content: Term<'a>,
        condition: Term<'a>,
        durable: bool,
        attributes: Term<'a>,
    },
    Delete {
        key: Term<'a>,
        durable: bool,
    },
    List {
        prefix: Term<'a>,
    },
    Copy {
        from: Term<'a>,
        to: Term<'a>,
        durable: bool,
        if_absent: bool,
    },
    DeleteMany {
        keys: Vec<Term<'a>>,
        durable: bool,
    },
    PresignedUrl {
        key: Term<'a>,
        method: String,
        expires_in: u64,
        unix_time: Option<i64>,
        content_type: Option<String>,
        response_content_type: Option<String>,
        response_content_disposition: Option<String>,
    },
    Health,
    IncompleteUploads,
    AbortIncompleteUploads {
        prefix: Term<'a>,
        older_than_ms: u64,
    },
    ListPage {
        prefix: Term<'a>,
        start_after: Option<String>,
        limit: usize,
    },
    ListLevel {
        prefix: Term<'a>,
    },
    PublicUrl {
        key: Term<'a>,
    },
    PresignedPost {
        key_or_prefix: Term<'a>,
        conditions: PostPolicyTerm,
    },
    CreateBucket,
    PutCors {
        rules: Term<'a>,
    },
    GetCors,
    PutLifecycleAbortIncomplete {
        days: u32,
    },
    PutTags {
        key: Term<'a>,
        tags: Vec<(String, String)>,
    },
    GetTags {
        key: Term<'a>,
    },
}

/// One decoded request.
pub enum Operation {
    Get {
        key: Key,
        with_meta: bool,
        range: Option<ByteRange>,
    },
    Head {
        key: Key,
    },
    Put {
        key: Key,
        body: bytes::Bytes,
        opts: PutOptions,
    },
    Delete {
        key: Key,
        opts: DeleteOptions,
    },
    List {
        prefix: Prefix,
    },
    Copy {
        from: Key,
        to: Key,
        opts: CopyOptions,
    },
    DeleteMany {
        keys: Vec<Key>,
        opts: DeleteOptions,
    },
    Presign {
        key: Key,
        opts: PresignOptions,
    },
    Health,
    IncompleteUploads,
    AbortIncompleteUploads {
        prefix: Prefix,
        older_than_ms: u64,
    },
    ListPage {
        prefix: Prefix,
        opts: PageOptions,
    },
    ListLevel {
        prefix: Prefix,
    },
    PublicUrl {
        key: Key,
    },
    PresignPost {
        key_or_prefix: String,
        opts: PostPolicyOptions,
    },
    CreateBucket,
    PutCors {
        rules: Vec<CorsRule>,
    },
    GetCors,
    PutLifecycleAbortIncomplete {
        days: u32,
    },
    PutTags {
        key: Key,
        tags: Vec<(String, String)>,
    },
    GetTags {
        key: Key,
    },
}

/// What an operation answers.
pub enum Outcome {
    Done,
    Object(Object, bool),
    Meta(ObjectMeta),
    Keys(Vec<String>),
    Text(String),
    Deleted(DeleteManyOutcome),
    Uploads(Vec<(String, String)>),
    Count(u64),
    Page(Page),
    Level(Level),
    Post(PresignedPost),
    Name(String),
    Cors(Vec<CorsRule>),
    Pairs(Vec<(String, String)>),
}

fn prefix(term: Term) -> Result<Prefix, StoreError> {
    let raw: Binary = term
        .decode()
        .map_err(|_| StoreError::InvalidPrefix(Vec::new()))?;
    Prefix::parse(raw.as_slice())
}

fn key(term: Term) -> Result<Key, StoreError> {
    let raw: Binary = term
        .decode()
        .map_err(|_| StoreError::InvalidKey(Vec::new()))?;
    Key::parse(raw.as_slice())
}

fn bad_request() -> StoreError {
    StoreError::InvalidConfig("operation", "not a known operation".into())
}

impl Operation {
    /// Decodes a request term; bad keys, prefixes or content fail here.
    pub fn decode<'a>(env: Env<'a>, term: Term<'a>) -> Result<Self, StoreError> {
        let request: Request = term.decode().map_err(|_| bad_request())?;
        Ok(match request {
            Request::Get {
                key: k,
                with_meta,
                range,
            } => Operation::Get {
                key: key(k)?,
                with_meta,
                range: decode_range(range)?,
            },
            Request::Head { key: k } => Operation::Head { key: key(k)? },
            Request::Put {
                key: k,
                content,
                condition,
                durable,
                attributes,
            } => {
                let key = key(k)?;
                let opts = PutOptions {
                    condition: decode_condition(condition)?,
                    durable,
                    attributes: decode_attributes(attributes)?,
                };
                let body = body_bytes(env, content_bytes(content)?);
                Operation::Put { key, body, opts }
            }
            Request::Delete { key: k, durable } => Operation::Delete {
                key: key(k)?,
                opts: DeleteOptions { durable },
            },
            Request::List { prefix: p } => Operation::List { prefix: prefix(p)? },
            Request::Copy {
                from,
                to,
                durable,
                if_absent,
            } => Operation::Copy {
                from: key(from)?,
                to: key(to)?,
                opts: CopyOptions { durable, if_absent },
            },
            Request::DeleteMany { keys, durable } => Operation::DeleteMany {
                keys: keys.into_iter().map(key).collect::<Result<_, _>>()?,
                opts: DeleteOptions { durable },
            },
            Request::PresignedUrl {
                key: k,
                method,
                expires_in,
                unix_time,
                content_type,
                response_content_type,
                response_content_disposition,
            } => Operation::Presign {
                key: key(k)?,
                opts: PresignOptions {
                    method,
                    expires_in,
                    unix_time,
                    content_type,
                    response_content_type,
                    response_content_disposition,
                },
            },
            Request::Health => Operation::Health,
            Request::IncompleteUploads => Operation::IncompleteUploads,
            Request::AbortIncompleteUploads {
                prefix: p,
                older_than_ms,
            } => Operation::AbortIncompleteUploads {
                prefix: prefix(p)?,
                older_than_ms,
            },
            Request::ListPage {
                prefix: p,
                start_after,
                limit,
            } => Operation::ListPage {
                prefix: prefix(p)?,
                opts: PageOptions {
                    cursor: start_after,
                    limit,
                },
            },
            Request::ListLevel { prefix: p } => Operation::ListLevel { prefix: prefix(p)? },
            Request::PublicUrl { key: k } => Operation::PublicUrl { key: key(k)? },
            Request::PresignedPost {
                key_or_prefix,
                conditions,
            } => {
                let opts: PostPolicyOptions = conditions.into();
                // An exact key follows the key rules; a prefix, the prefix rules.
                let key_or_prefix = if opts.key_starts_with {
                    prefix(key_or_prefix)?.as_str().to_string()
                } else {
                    key(key_or_prefix)?.as_str().to_string()
                };
                Operation::PresignPost {
                    key_or_prefix,
                    opts,
                }
            }
            Request::CreateBucket => Operation::CreateBucket,
            Request::PutCors { rules } => Operation::PutCors {
                rules: rules
                    .decode::<Vec<CorsRuleTerm>>()
                    .map_err(|_| {
                        StoreError::InvalidConfig(
                            "rules",
                            "expected a list of CORS rule maps".into(),
                        )
                    })?
                    .into_iter()
                    .map(Into::into)
                    .collect(),
            },
            Request::GetCors => Operation::GetCors,
            Request::PutLifecycleAbortIncomplete { days } => {
                Operation::PutLifecycleAbortIncomplete { days }
            }
            Request::PutTags { key: k, tags } => Operation::PutTags {
                key: key(k)?,
                // S3's limits on tags, checked as on a put's `tags:`.
                tags: Attributes {
                    tags,
                    ..Attributes::default()
                }
                .validate()?
                .tags,
            },
            Request::GetTags { key: k } => Operation::GetTags { key: key(k)? },
        })
    }

    /// Runs the operation on `store`. `alloc` makes the buffers GET bodies
    /// are read into.
    pub async fn run(
        self,
        store: SharedStore,
        alloc: BodyAlloc,
        deadline: Deadline,
    ) -> Result<Outcome, StoreError> {
        for key in self.keys() {
            store.check_key(key)?;
        }
        Ok(match self {
            Operation::Get {
                key,
                with_meta,
                range,
            } => {
                let opts = GetOptions {
                    alloc,
                    range,
                    ..GetOptions::default()
                };
                Outcome::Object(store.get(&key, &opts, deadline).await?, with_meta)
            }
            Operation::Head { key } => {
                Outcome::Meta(store.head(&key, &HeadOptions::default(), deadline).await?)
            }
            Operation::Put { key, body, opts } => {
                check_object_options(&*store, &opts.attributes)?;
                store.put(&key, body, &opts, deadline).await?;
                Outcome::Done
            }
            Operation::Delete { key, opts } => {
                store.delete(&key, &opts, deadline).await?;
                Outcome::Done
            }
            Operation::List { prefix } => Outcome::Keys(
                store
                    .list(&prefix, &ListOptions::default(), deadline)
                    .await?,
            ),
            Operation::Copy { from, to, opts } => {
                store.copy(&from, &to, &opts, deadline).await?;
                Outcome::Done
            }
            Operation::DeleteMany { keys, opts } => {
                Outcome::Deleted(store.delete_many(&keys, &opts, deadline).await?)
            }
            Operation::Presign { key, opts } => {
                Outcome::Text(store.presigned_url(&key, &opts, deadline).await?)
            }
            Operation::Health => {
                store.health(deadline).await?;
                Outcome::Done
            }
            Operation::IncompleteUploads => {
                Outcome::Uploads(store.incomplete_uploads(deadline).await?)
            }
            Operation::AbortIncompleteUploads {
                prefix,
                older_than_ms,
            } => Outcome::Count(
                store
                    .abort_incomplete_uploads(
                        &prefix,
                        std::time::Duration::from_millis(older_than_ms),
                        deadline,
                    )
                    .await?,
            ),
            Operation::ListPage { prefix, opts } => {
                Outcome::Page(store.list_page(&prefix, &opts, deadline).await?)
            }
            Operation::ListLevel { prefix } => {
                Outcome::Level(store.list_level(&prefix, deadline).await?)
            }
            Operation::PublicUrl { key } => Outcome::Text(store.public_url(&key)?),
            Operation::CreateBucket => Outcome::Name(
                bucket_of(&*store, "creating buckets")?
                    .create_bucket(deadline)
                    .await?,
            ),
            Operation::PutCors { rules } => {
                bucket_of(&*store, "CORS rules")?
                    .put_cors(&rules, deadline)
                    .await?;
                Outcome::Done
            }
            Operation::GetCors => {
                Outcome::Cors(bucket_of(&*store, "CORS rules")?.get_cors(deadline).await?)
            }
            Operation::PutLifecycleAbortIncomplete { days } => {
                bucket_of(&*store, "lifecycle rules")?
                    .put_lifecycle_abort_incomplete(days, deadline)
                    .await?;
                Outcome::Done
            }
            Operation::PutTags { key, tags } => {
                bucket_of(&*store, "object tags")?
                    .put_tags(&key, &tags, deadline)
                    .await?;
                Outcome::Done
            }
            Operation::GetTags { key } => Outcome::Pairs(
                bucket_of(&*store, "object tags")?
                    .get_tags(&key, deadline)
                    .await?,
            ),
            Operation::PresignPost {
                key_or_prefix,
                opts,
            } => Outcome::Post(
                store
                    .presigned_post(&key_or_prefix, &opts, deadline)
                    .await?,
            ),
        })
    }

    /// The keys the operation names, for the store's own key checks.
    fn keys(&self) -> Vec<&Key> {
        match self {
            Operation::Get { key, .. }
            | Operation::Head { key }
            | Operation::Put { key, .. }
            | Operation::Delete { key, .. }
            | Operation::Presign { key, .. }
            | Operation::PublicUrl { key }
            | Operation::PutTags { key, .. }
            | Operation::GetTags { key } => vec![key],
            Operation::Copy { from, to, .. } => vec![from, to],
            Operation::DeleteMany { keys, .. } => keys.iter().collect(),
            _ => vec![],
        }
    }

    /// A GET body read on a dirty scheduler: always a binary.
    pub fn file_alloc() -> BodyAlloc {
        BeamBody::for_files
    }

    /// A GET body read from the network: a binary once it is large.
    pub fn network_alloc() -> BodyAlloc {
        BeamBody::for_network
    }
}

impl Reply for Outcome {
    fn encode_reply<'a>(self, env: Env<'a>) -> Term<'a> {
        match self {
            Outcome::Done => ok_atom(env),
            Outcome::Object(object, with_meta) => {
                let meta = with_meta.then_some(&object.meta);
                let meta = meta.cloned();
                body_reply(env, body_term(env, object.body), meta.as_ref())
            }
            Outcome::Meta(meta) => ok(env, meta_term(env, &meta)),
            Outcome::Keys(keys) => ok(env, keys),
            Outcome::Text(text) => ok(env, text),
            Outcome::Uploads(uploads) => ok(env, uploads),
            Outcome::Count(count) => ok(env, count),
            Outcome::Page(page) => ok(env, (page.keys, page.next)),
            Outcome::Level(level) => ok(env, (level.keys, level.prefixes)),
            Outcome::Name(name) => ok(env, name),
            Outcome::Pairs(pairs) => ok(env, pairs),
            Outcome::Cors(rules) => ok(
                env,
                rules
                    .into_iter()
                    .map(CorsRuleTerm::from)
                    .collect::<Vec<_>>(),
            ),
            Outcome::Post(post) => ok(env, PresignedPostTerm::from(post)),
            Outcome::Deleted(outcome) => {
                let deleted: Vec<&str> = outcome.deleted.iter().map(Key::as_str).collect();
                if outcome.failed.is_empty() {
                    ok(env, deleted)
                } else {
                    let failures: Vec<Term> = outcome
                        .failed
                        .iter()
                        .map(|(k, e)| (k.as_str(), error_reason(env, e)).encode(env))
                        .collect();
                    (atoms::error(), (atoms::partial(), deleted, failures)).encode(env)
                }
            }
        }
    }
}
