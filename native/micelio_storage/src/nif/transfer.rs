//! Transfers of objects larger than memory, on the runtime, answered by
//! message like `store_run`:
//!
//! - `store_put_file` / `store_get_file`: a file to or from a key;
//! - `store_put_stream`: an upload fed by the calling process, one chunk
//!   per `{ref, :more}` request, through `stream_feed`;
//! - `store_get_stream`: a download sent as `{ref, :chunk, binary}`
//!   messages, one per unit of demand given with `stream_demand`.
//!
//! With progress on, `{ref, :progress, done, total}` arrives every few MiB
//! and at the end. Each step of a transfer is bounded by `idle_ms`, the
//! whole by `limit_ms`. The final `{ref, result, retries}` comes last.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use micelio_storage_core::error::StoreError;
use micelio_storage_core::object::ObjectMeta;
use micelio_storage_core::store::{GetOptions, PutOptions};
use micelio_storage_core::transfer::{Progress, PullSource, Transfer};
use rustler::env::OwnedEnv;
use rustler::{Atom, Binary, Encoder, Env, LocalPid, ResourceArc, Term};

use super::guarded;
use super::store::StoreResource;
use crate::buffers::{body_bytes, bytes_term};
use crate::runtime::{spawn_reply, Reply, ReplyTag};
use crate::terms::{content_bytes, decode_attributes, decode_range, meta_term, ok, ok_atom};
use micelio_storage_core::store::check_object_options;

mod atoms {
    rustler::atoms! { progress, more, chunk, eof, meta }
}

/// Progress messages come at most every this many bytes (and at the end).
const PROGRESS_EVERY: u64 = 4 << 20;

/// Sends `{ref, tag, ...}` messages to the caller from any thread.
#[derive(Clone)]
struct Messenger {
    pid: LocalPid,
    /// The reply ref, made anew in each message's env.
    reply_ref: Arc<ReplyTag>,
}

impl Messenger {
    fn new(env: Env, reply_ref: Term) -> Self {
        Messenger {
            pid: env.pid(),
            reply_ref: Arc::new(ReplyTag::of(reply_ref)),
        }
    }

    fn send(&self, body: impl for<'a> FnOnce(Env<'a>, Term<'a>) -> Term<'a>) {
        let mut msg_env = OwnedEnv::new();
        let _ = msg_env.send_and_clear(&self.pid, |env| body(env, self.reply_ref.term(env)));
    }

    /// A progress listener that sends at most every `PROGRESS_EVERY` bytes.
    fn progress(&self) -> Progress {
        let me = self.clone();
        let last = AtomicU64::new(0);
        Arc::new(move |done, total| {
            let prev = last.load(Ordering::Relaxed);
            let finished = total == Some(done);
            if done >= prev + PROGRESS_EVERY || (finished && done != prev) {
                last.store(done, Ordering::Relaxed);
                me.send(|env, r| (r, atoms::progress(), done, total).encode(env));
            }
        })
    }
}

fn transfer(idle_ms: u64, limit_ms: u64, progress: Option<Progress>) -> Transfer {
    let mut xfer = Transfer::new(
        Duration::from_millis(idle_ms),
        (limit_ms > 0).then(|| Duration::from_millis(limit_ms)),
    );
    xfer.progress = progress;
    xfer
}

/// The task's own bound: the overall limit, or a year.
fn task_timeout(limit_ms: u64) -> Duration {
    if limit_ms == 0 {
        Duration::from_secs(365 * 24 * 3600)
    } else {
        Duration::from_millis(limit_ms)
    }
}

fn key(term: Term) -> Result<micelio_storage_core::key::Key, StoreError> {
    let raw: Binary = term
        .decode()
        .map_err(|_| StoreError::InvalidKey(Vec::new()))?;
    micelio_storage_core::key::Key::parse(raw.as_slice())
}

fn path(term: Term) -> Result<PathBuf, StoreError> {
    let raw: String = term
        .decode()
        .map_err(|_| StoreError::InvalidConfig("path", "expected a string".into()))?;
    Ok(PathBuf::from(raw))
}

struct Done;
impl Reply for Done {
    fn encode_reply<'a>(self, env: Env<'a>) -> Term<'a> {
        ok_atom(env)
    }
}

struct Meta(ObjectMeta);
impl Reply for Meta {
    fn encode_reply<'a>(self, env: Env<'a>) -> Term<'a> {
        ok(env, meta_term(env, &self.0))
    }
}

fn put_options(attributes: Term, durable: bool) -> Result<PutOptions, StoreError> {
    Ok(PutOptions {
        durable,
        attributes: decode_attributes(attributes)?,
        ..PutOptions::default()
    })
}

/// The options of an upload (`store_put_file`, `store_put_stream`), as
/// Elixir sends them: one map, decoded whole (a missing or misspelled
/// field fails the call with `{:invalid_config, :options, _}`).
#[derive(rustler::NifMap)]
struct UploadOptions<'a> {
    /// `nil` or the attributes map (content type, metadata, ...).
    attributes: Term<'a>,
    durable: bool,
    /// Each step's bound, in ms (the call's `:timeout`).
    idle_ms: u64,
    /// The whole transfer's bound, in ms (`:transfer_timeout`; 0: none).
    limit_ms: u64,
    /// Send `{ref, :progress, done, total}` messages.
    progress: bool,
}

/// The options of a download (`store_get_file`, `store_get_stream`).
#[derive(rustler::NifMap)]
struct DownloadOptions<'a> {
    /// `nil` or `{offset, length}`.
    range: Term<'a>,
    idle_ms: u64,
    limit_ms: u64,
    progress: bool,
}

fn options<'a, T: rustler::Decoder<'a>>(term: Term<'a>) -> Result<T, StoreError> {
    term.decode().map_err(|_| {
        StoreError::InvalidConfig("options", "not the options of this transfer".into())
    })
}

/// Uploads the file at `path` under `key`.
#[rustler::nif]
fn store_put_file<'a>(
    env: Env<'a>,
    store: ResourceArc<StoreResource>,
    reply_ref: Term<'a>,
    key_term: Term<'a>,
    path_term: Term<'a>,
    options_term: Term<'a>,
) -> Term<'a> {
    guarded(env, || {
        let (key, path) = (key(key_term)?, path(path_term)?);
        let o: UploadOptions = options(options_term)?;
        store.shared().check_key(&key)?;
        let opts = put_options(o.attributes, o.durable)?;
        check_object_options(&*store.shared(), &opts.attributes)?;
        let messenger = Messenger::new(env, reply_ref);
        let limit_ms = o.limit_ms;
        let xfer = transfer(
            o.idle_ms,
            limit_ms,
            o.progress.then(|| messenger.progress()),
        );
        let shared = store.shared();
        let work = async move {
            shared.put_file(&key, &path, &opts, &xfer).await?;
            Ok(Done)
        };
        Ok(spawn_reply(env, reply_ref, task_timeout(limit_ms), work)?.encode(env))
    })
}

/// Downloads `key` into the file at `path` (whole, or not at all).
#[rustler::nif]
fn store_get_file<'a>(
    env: Env<'a>,
    store: ResourceArc<StoreResource>,
    reply_ref: Term<'a>,
    key_term: Term<'a>,
    path_term: Term<'a>,
    options_term: Term<'a>,
) -> Term<'a> {
    guarded(env, || {
        let (key, path) = (key(key_term)?, path(path_term)?);
        let o: DownloadOptions = options(options_term)?;
        store.shared().check_key(&key)?;
        let opts = GetOptions {
            range: decode_range(o.range)?,
            ..GetOptions::default()
        };
        let messenger = Messenger::new(env, reply_ref);
        let limit_ms = o.limit_ms;
        let xfer = transfer(
            o.idle_ms,
            limit_ms,
            o.progress.then(|| messenger.progress()),
        );
        let shared = store.shared();
        let work = async move { Ok(Meta(shared.get_file(&key, &path, &opts, &xfer).await?)) };
        Ok(spawn_reply(env, reply_ref, task_timeout(limit_ms), work)?.encode(env))
    })
}

/// The producer side of an upload fed from Elixir.
pub struct Feeder {
    tx: tokio::sync::mpsc::UnboundedSender<Result<Option<Bytes>, StoreError>>,
}

#[rustler::resource_impl]
impl rustler::Resource for Feeder {}

/// Starts an upload of chunks the caller feeds: `{:ok, guard, feeder}`.
#[rustler::nif]
fn store_put_stream<'a>(
    env: Env<'a>,
    store: ResourceArc<StoreResource>,
    reply_ref: Term<'a>,
    key_term: Term<'a>,
    options_term: Term<'a>,
) -> Term<'a> {
    guarded(env, || {
        let key = key(key_term)?;
        let o: UploadOptions = options(options_term)?;
        store.shared().check_key(&key)?;
        let opts = put_options(o.attributes, o.durable)?;
        check_object_options(&*store.shared(), &opts.attributes)?;
        let messenger = Messenger::new(env, reply_ref);
        let (idle_ms, limit_ms) = (o.idle_ms, o.limit_ms);
        let xfer = transfer(idle_ms, limit_ms, o.progress.then(|| messenger.progress()));
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let asker = messenger.clone();
        let ask = Box::new(move || asker.send(|env, r| (r, atoms::more()).encode(env)));
        let source = PullSource::new(ask, rx, Duration::from_millis(idle_ms));
        let shared = store.shared();
        let work = async move {
            shared
                .put_stream(&key, Box::new(source), &opts, &xfer)
                .await?;
            Ok(Done)
        };
        let guard = spawn_reply(env, reply_ref, task_timeout(limit_ms), work)?;
        let feeder = ResourceArc::new(Feeder { tx });
        Ok((ok_atom(env), guard, feeder).encode(env))
    })
}

/// Hands the upload its next chunk (iodata), `:eof`, or `{:error, message}`
/// when the enumerable failed.
#[rustler::nif]
fn stream_feed<'a>(env: Env<'a>, feeder: ResourceArc<Feeder>, data: Term<'a>) -> Term<'a> {
    guarded(env, || {
        let item = if data.decode::<Atom>().is_ok_and(|a| a == atoms::eof()) {
            Ok(None)
        } else if let Ok((_, message)) = data.decode::<(Atom, String)>() {
            Err(StoreError::InvalidConfig("content", message))
        } else {
            Ok(Some(body_bytes(env, content_bytes(data)?)))
        };
        // A finished upload has dropped its receiver: nothing to tell.
        let _ = feeder.tx.send(item);
        Ok(ok_atom(env))
    })
}

/// The consumer side of a download: demand given by Elixir.
pub struct Reader {
    demand: Arc<tokio::sync::Semaphore>,
}

#[rustler::resource_impl]
impl rustler::Resource for Reader {}

/// Starts a download sent as chunk messages: `{:ok, guard, reader}`.
#[rustler::nif]
fn store_get_stream<'a>(
    env: Env<'a>,
    store: ResourceArc<StoreResource>,
    reply_ref: Term<'a>,
    key_term: Term<'a>,
    options_term: Term<'a>,
) -> Term<'a> {
    guarded(env, || {
        let key = key(key_term)?;
        let o: DownloadOptions = options(options_term)?;
        store.shared().check_key(&key)?;
        let opts = GetOptions {
            range: decode_range(o.range)?,
            ..GetOptions::default()
        };
        let messenger = Messenger::new(env, reply_ref);
        let limit_ms = o.limit_ms;
        // Chunks are their own progress: no progress messages.
        let xfer = transfer(o.idle_ms, limit_ms, None);
        let demand = Arc::new(tokio::sync::Semaphore::new(0));
        let wanted = demand.clone();
        let shared = store.shared();
        let work = async move {
            let (meta, mut stream) = shared.get_stream(&key, &opts, &xfer).await?;
            let head = meta.clone();
            messenger.send(move |env, r| (r, atoms::meta(), meta_term(env, &head)).encode(env));
            loop {
                // The consumer's pace is not a timeout: a Phoenix controller
                // streaming to a slow client may take minutes between
                // chunks. Only the transfer's overall limit (the task's
                // own bound) applies while waiting for demand; `idle`
                // bounds each wait for the store below.
                let permit = wanted
                    .acquire()
                    .await
                    .map_err(|_| StoreError::Panic("demand closed".into()))?;
                permit.forget();
                let next = tokio::time::timeout(xfer.idle, stream.next())
                    .await
                    .map_err(|_| StoreError::Timeout)?;
                match next {
                    None => return Ok(Done),
                    Some(chunk) => {
                        let chunk = chunk?;
                        messenger.send(move |env, r| {
                            (r, atoms::chunk(), bytes_term(env, chunk)).encode(env)
                        });
                    }
                }
            }
        };
        let guard = spawn_reply(env, reply_ref, task_timeout(limit_ms), work)?;
        let reader = ResourceArc::new(Reader { demand });
        Ok((ok_atom(env), guard, reader).encode(env))
    })
}

/// Lets a download send `n` more chunks.
#[rustler::nif]
fn stream_demand(reader: ResourceArc<Reader>, n: usize) -> Atom {
    reader.demand.add_permits(n);
    rustler::types::atom::ok()
}
