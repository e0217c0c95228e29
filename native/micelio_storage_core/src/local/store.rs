//! The local store under the `Store` contract.

use super::*;
use crate::store::Capabilities;

/// The local store under the contract. Each operation is the blocking call
/// above, run in place on a dirty scheduler or on the blocking pool from
/// the async runtime (`offload`).
#[async_trait]
impl Store for LocalStore {
    fn backend(&self) -> &'static str {
        "local"
    }

    fn capabilities(&self) -> Capabilities {
        // A copy is made on disk by the engine: no bytes reach the BEAM.
        Capabilities {
            server_side_copy: true,
            ..Capabilities::default()
        }
    }

    fn blocking(&self) -> bool {
        true
    }

    async fn get(
        &self,
        key: &Key,
        opts: &GetOptions,
        deadline: Deadline,
    ) -> Result<Object, StoreError> {
        let (store, key, alloc) = (self.clone(), key.clone(), opts.alloc);
        let (unchanged_if, range) = (opts.if_none_match.clone(), opts.range);
        offload(move || {
            if let Some(etag) = unchanged_if {
                if store.stat(&key, deadline)?.etag == crate::object::bare_etag(&etag) {
                    return Err(StoreError::NotModified);
                }
            }
            let mut body = alloc(0);
            let meta = match range {
                Some(range) => store.get_range_into(&key, range, deadline, &mut *body)?,
                None => store.get_into(&key, deadline, &mut *body)?,
            };
            Ok(Object {
                body: Body::Buf(body),
                meta,
            })
        })
        .await
    }

    async fn head(
        &self,
        key: &Key,
        _opts: &HeadOptions,
        deadline: Deadline,
    ) -> Result<ObjectMeta, StoreError> {
        let (store, key) = (self.clone(), key.clone());
        offload(move || store.stat(&key, deadline)).await
    }

    async fn put(
        &self,
        key: &Key,
        body: Bytes,
        opts: &PutOptions,
        deadline: Deadline,
    ) -> Result<(), StoreError> {
        let (store, key, opts) = (self.clone(), key.clone(), opts.clone());
        offload(move || store.write(&key, &body, &opts, deadline)).await
    }

    /// Each chunk is appended to the staged temp file as it arrives.
    async fn put_stream(
        &self,
        key: &Key,
        mut source: Box<dyn ByteSource>,
        opts: &PutOptions,
        xfer: &Transfer,
    ) -> Result<(), StoreError> {
        let (store, k) = (self.clone(), key.clone());
        let staged = Arc::new(offload(move || store.stage(&k)).await?);
        let mut done = 0u64;
        while let Some(chunk) = xfer.within(source.read(transfer::CHUNK)).await? {
            done += chunk.len() as u64;
            let staged = staged.clone();
            offload(move || staged.write(&chunk)).await?;
            xfer.report(done, None);
        }
        let opts = opts.clone();
        offload(move || {
            let staged = Arc::try_unwrap(staged)
                .map_err(|_| StoreError::Panic("staged file still shared".into()))?;
            staged.commit(&opts)
        })
        .await?;
        xfer.report(done, Some(done));
        Ok(())
    }

    /// A copy in the kernel (`copy_file_range`) into a temp file, renamed.
    async fn put_file(
        &self,
        key: &Key,
        path: &std::path::Path,
        opts: &PutOptions,
        xfer: &Transfer,
    ) -> Result<(), StoreError> {
        let source = FileSource::open(path).await?;
        let total = source.size();
        let (store, key, opts, xfer) = (self.clone(), key.clone(), opts.clone(), xfer.clone());
        offload(move || {
            let mut progress = |n| xfer.report(n, total);
            store.write_from_file(&key, source.file(), &opts, xfer.limit, &mut progress)?;
            xfer.report(total.unwrap_or(0), total);
            Ok(())
        })
        .await
    }

    async fn get_stream(
        &self,
        key: &Key,
        opts: &GetOptions,
        _xfer: &Transfer,
    ) -> Result<(ObjectMeta, ByteStream), StoreError> {
        let (store, k) = (self.clone(), key.clone());
        let (fd, meta) = offload(move || store.open_for_stream(&k)).await?;
        let (start, end) = opts
            .range
            .unwrap_or(ByteRange {
                offset: 0,
                length: None,
            })
            .within(meta.size);
        let fd = Arc::new(fd);
        let stream = futures_util::stream::try_unfold(start, move |at| {
            let fd = fd.clone();
            async move {
                if at >= end {
                    return Ok(None);
                }
                let want = ((end - at) as usize).min(transfer::CHUNK);
                let chunk = offload(move || {
                    let mut buf = bytes::BytesMut::zeroed(want);
                    let n = loop {
                        match rustix::io::pread(&*fd, &mut buf[..], at) {
                            Ok(n) => break n,
                            Err(Errno::INTR) => continue,
                            Err(e) => return Err(StoreError::from(e)),
                        }
                    };
                    buf.truncate(n);
                    Ok(buf.freeze())
                })
                .await?;
                if chunk.is_empty() {
                    // Truncated under us by an outside writer.
                    return Err(StoreError::Changed);
                }
                let next = at + chunk.len() as u64;
                Ok(Some((chunk, next)))
            }
        });
        Ok((meta, Box::pin(stream)))
    }

    /// A copy in the kernel into a temp file beside `path`, renamed.
    async fn get_file(
        &self,
        key: &Key,
        path: &std::path::Path,
        opts: &GetOptions,
        xfer: &Transfer,
    ) -> Result<ObjectMeta, StoreError> {
        if opts.range.is_some() {
            return Err(StoreError::InvalidConfig(
                "range",
                "get_file copies whole objects; use stream/2 for a range".into(),
            ));
        }
        let (store, key, path, xfer) =
            (self.clone(), key.clone(), path.to_path_buf(), xfer.clone());
        offload(move || {
            let dest = DestFile::create(&path)?;
            let mut progress = |n| xfer.report(n, None);
            let meta = store.read_to_file(&key, dest.file(), xfer.limit, &mut progress)?;
            dest.commit(false)?;
            xfer.report(meta.size, Some(meta.size));
            Ok(meta)
        })
        .await
    }

    async fn delete(
        &self,
        key: &Key,
        opts: &DeleteOptions,
        deadline: Deadline,
    ) -> Result<(), StoreError> {
        let (store, key, durable) = (self.clone(), key.clone(), opts.durable);
        offload(move || store.remove(&key, durable, deadline)).await
    }

    async fn list(
        &self,
        prefix: &Prefix,
        _opts: &ListOptions,
        deadline: Deadline,
    ) -> Result<Vec<String>, StoreError> {
        let (store, prefix) = (self.clone(), prefix.clone());
        offload(move || store.keys(&prefix, deadline)).await
    }

    async fn list_page(
        &self,
        prefix: &Prefix,
        opts: &PageOptions,
        deadline: Deadline,
    ) -> Result<Page, StoreError> {
        let (store, prefix, opts) = (self.clone(), prefix.clone(), opts.clone());
        offload(move || store.page(&prefix, opts.cursor.as_deref(), opts.limit, deadline)).await
    }

    async fn list_level(&self, prefix: &Prefix, deadline: Deadline) -> Result<Level, StoreError> {
        let (store, prefix) = (self.clone(), prefix.clone());
        offload(move || store.level(&prefix, deadline)).await
    }

    async fn copy(
        &self,
        from: &Key,
        to: &Key,
        opts: &CopyOptions,
        deadline: Deadline,
    ) -> Result<(), StoreError> {
        let (store, from, to, opts) = (self.clone(), from.clone(), to.clone(), opts.clone());
        offload(move || store.copy_file(&from, &to, &opts, deadline)).await
    }

    /// Writes, reads back and deletes a probe object under the reserved
    /// prefix `.micelio-health/`, with a name no other prober uses.
    async fn health(&self, deadline: Deadline) -> Result<(), StoreError> {
        let store = self.clone();
        offload(move || {
            let name = format!("{HEALTH_PROBE}-{:016x}", rand::random::<u64>());
            let key = Key::parse(name.as_bytes())?;
            let body = name.as_bytes();
            store.write(&key, body, &PutOptions::default(), deadline)?;
            let read = store.read(&key, deadline);
            store.remove(&key, false, deadline)?;
            if read?.0 == body {
                Ok(())
            } else {
                Err(StoreError::Corrupt)
            }
        })
        .await
    }

    async fn delete_many(
        &self,
        keys: &[Key],
        opts: &DeleteOptions,
        deadline: Deadline,
    ) -> Result<DeleteManyOutcome, StoreError> {
        let (store, keys, durable) = (self.clone(), keys.to_vec(), opts.durable);
        offload(move || {
            let mut outcome = DeleteManyOutcome::default();
            for key in keys {
                let result = deadline
                    .check()
                    .and_then(|()| store.remove(&key, durable, deadline));
                outcome.record(key, result);
            }
            Ok(outcome)
        })
        .await
    }
}
