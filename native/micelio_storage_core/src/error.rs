//! The error kinds every backend reports, and how they reach Elixir.
//!
//! The NIF crate encodes each variant as a term callers can pattern-match: an
//! atom or a small tagged tuple. Messages never carry credentials.

/// Everything that can go wrong in a storage operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The key does not exist (or is not a regular file).
    #[error("not found")]
    NotFound,
    /// A get with `if_none_match` found the object unchanged (internal to
    /// cache revalidation).
    #[error("not modified")]
    NotModified,
    /// A conditional put lost: the ETag did not match, or the key already existed.
    #[error("precondition failed")]
    PreconditionFailed,
    /// The key breaks the key rules (see `key.rs`).
    #[error("invalid key {0:?}")]
    InvalidKey(Vec<u8>),
    /// The list prefix breaks the key rules.
    #[error("invalid prefix {0:?}")]
    InvalidPrefix(Vec<u8>),
    /// The key resolves through a symlink or otherwise leaves the root.
    #[error("unsafe path {0:?}")]
    UnsafePath(Vec<u8>),
    /// The operation ran past its deadline.
    #[error("timeout")]
    Timeout,
    /// A filesystem error, named like Erlang's `File` errors (`:enospc`, `:eacces`, ...).
    #[error("io error {0}")]
    Io(i32),
    /// The bucket (or container) the store names does not exist: S3's
    /// `NoSuchBucket`, or a HEAD 404 whose bucket check failed. Never
    /// reported as `NotFound`.
    #[error("no such bucket {0:?}")]
    NoSuchBucket(String),
    /// The service refused the credentials or the request (HTTP 403), with
    /// the service's own code (S3's `<Code>`).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// Any other error answer of a storage service that no kind above
    /// covers, with the service's own status, code and message kept as
    /// detail. `service` names it (`"s3"`); Elixir sees
    /// `{:<service>_error, status, code, message}`, so S3's stay
    /// `{:s3_error, ...}`.
    #[error("{service} error {status} {code}: {message}")]
    Service {
        service: &'static str,
        status: u16,
        code: String,
        message: String,
    },
    /// The connection failed (refused, reset, DNS, TLS).
    #[error("network error: {0}")]
    Network(String),
    /// Temporary credentials could not be fetched (container or instance
    /// metadata endpoint). The message names the step, never a secret.
    #[error("credentials: {0}")]
    Credentials(String),
    /// A bug: Rust code panicked. The VM keeps running.
    #[error("panic: {0}")]
    Panic(String),
    /// The backend has no such operation (presigned URLs on local, stats
    /// on a store without a cache). Reaches Elixir as
    /// `{:invalid_config, :backend, message}`: the backend setting is what
    /// to change.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A store could not be built from its configuration.
    #[error("invalid config {0}: {1}")]
    InvalidConfig(&'static str, String),
    /// Stored data failed its checksum.
    #[error("corrupt data")]
    Corrupt,
    /// A transfer's content did not match the checksum the server gave
    /// (base64 CRC-32s, expected then received).
    #[error("checksum mismatch: expected {0}, got {1}")]
    ChecksumMismatch(String, String),
    /// The object was replaced while it was being read in parts.
    #[error("the object changed during the read")]
    Changed,
}

impl StoreError {
    /// Maps an OS error to `NotFound` or `Io`.
    pub fn from_errno(err: rustix::io::Errno) -> Self {
        use rustix::io::Errno;
        match err {
            Errno::NOENT | Errno::NOTDIR => StoreError::NotFound,
            other => StoreError::Io(other.raw_os_error()),
        }
    }
}

impl From<std::io::Error> for StoreError {
    fn from(err: std::io::Error) -> Self {
        match err.kind() {
            std::io::ErrorKind::NotFound => StoreError::NotFound,
            _ => StoreError::Io(err.raw_os_error().unwrap_or(libc_eio())),
        }
    }
}

impl From<rustix::io::Errno> for StoreError {
    fn from(err: rustix::io::Errno) -> Self {
        StoreError::Io(err.raw_os_error())
    }
}

fn libc_eio() -> i32 {
    rustix::io::Errno::IO.raw_os_error()
}

/// The Erlang name of an errno, as `File` reports it (`:enoent`, `:enospc`, ...).
pub fn errno_name(code: i32) -> Option<&'static str> {
    use rustix::io::Errno;
    let errno = Errno::from_raw_os_error(code);
    let name = match errno {
        Errno::ACCESS => "eacces",
        Errno::PERM => "eperm",
        Errno::NOSPC => "enospc",
        Errno::DQUOT => "edquot",
        Errno::ROFS => "erofs",
        Errno::ISDIR => "eisdir",
        Errno::NOTDIR => "enotdir",
        Errno::NOTEMPTY => "enotempty",
        Errno::EXIST => "eexist",
        Errno::NAMETOOLONG => "enametoolong",
        Errno::MFILE => "emfile",
        Errno::NFILE => "enfile",
        Errno::IO => "eio",
        Errno::LOOP => "eloop",
        Errno::XDEV => "exdev",
        Errno::INVAL => "einval",
        Errno::NOENT => "enoent",
        Errno::BUSY => "ebusy",
        Errno::FBIG => "efbig",
        _ => return None,
    };
    Some(name)
}

/// The text of a panic payload, for `{:panic, msg}`.
pub fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}
