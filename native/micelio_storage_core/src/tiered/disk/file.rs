//! One cache file of the disk tier: its name and its bytes. A header
//! (magic, CRC-32 of the header with key and tag, CRC-32 of the content,
//! lengths, mtime), the key, the tag field (ETag and attributes), then the
//! content. Reads check every length against the file's before they size
//! anything, and both CRCs.

use std::fs::File;
use std::io::Read;

use sha2::{Digest, Sha256};

use super::Name;
use crate::attributes::Attributes;
use crate::object::{BodyBuf, ObjectMeta};

const MAGIC: &[u8; 4] = b"MSC1";
/// magic, header crc, body crc, key len, etag len, body len, mtime ns.
pub(super) const HEADER_LEN: usize = 4 + 4 + 4 + 4 + 4 + 8 + 16;

/// The file name of `key`: the first 16 bytes of its SHA-256.
pub(super) fn name_of(key: &str) -> Name {
    let digest = Sha256::digest(key.as_bytes());
    let mut name = [0u8; 16];
    name.copy_from_slice(&digest[..16]);
    name
}

/// The fixed part of a file's header, as read.
pub(super) struct Header {
    header_crc: u32,
    pub(super) body_crc: u32,
    pub(super) key_len: usize,
    pub(super) etag_len: usize,
    body_len: u64,
    mtime: i128,
}

impl Header {
    fn parse(b: &[u8; HEADER_LEN]) -> Option<Header> {
        if &b[..4] != MAGIC {
            return None;
        }
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        Some(Header {
            header_crc: u32_at(4),
            body_crc: u32_at(8),
            key_len: u32_at(12) as usize,
            etag_len: u32_at(16) as usize,
            body_len: u64::from_le_bytes(b[20..28].try_into().unwrap()),
            mtime: i128::from_le_bytes(b[28..44].try_into().unwrap()),
        })
    }

    /// Checks the header CRC, the key and the file length; returns the metadata.
    fn check(&self, fixed: &[u8], rest: &[u8], key: &str, file_len: u64) -> Option<ObjectMeta> {
        let total = (HEADER_LEN + self.key_len + self.etag_len) as u64 + self.body_len;
        if total != file_len || rest.len() != self.key_len + self.etag_len {
            return None;
        }
        let mut crc = crc32fast::Hasher::new();
        crc.update(&fixed[8..]);
        crc.update(rest);
        if crc.finalize() != self.header_crc || &rest[..self.key_len] != key.as_bytes() {
            return None;
        }
        // The tag field is the ETag, then the attributes after a newline.
        let field = std::str::from_utf8(&rest[self.key_len..]).ok()?;
        let (etag, attributes) = match field.split_once('\n') {
            Some((etag, attrs)) => (etag, Attributes::decode(attrs.as_bytes())?),
            None => (field, Attributes::default()),
        };
        Some(ObjectMeta {
            size: self.body_len,
            etag: etag.to_string(),
            last_modified_ns: self.mtime,
            attributes,
        })
    }
}

/// The header's tag field: the ETag, and the attributes when there are any.
pub(super) fn tag_field(meta: &ObjectMeta) -> String {
    if meta.attributes.is_empty() {
        meta.etag.clone()
    } else {
        format!("{}\n{}", meta.etag, meta.attributes.encode())
    }
}

pub(super) fn encode_header(key: &str, body_crc: u32, body_len: u64, meta: &ObjectMeta) -> Vec<u8> {
    let tag = tag_field(meta);
    let mut h = Vec::with_capacity(HEADER_LEN + key.len() + tag.len());
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&[0; 4]);
    h.extend_from_slice(&body_crc.to_le_bytes());
    h.extend_from_slice(&(key.len() as u32).to_le_bytes());
    h.extend_from_slice(&(tag.len() as u32).to_le_bytes());
    h.extend_from_slice(&body_len.to_le_bytes());
    h.extend_from_slice(&meta.last_modified_ns.to_le_bytes());
    h.extend_from_slice(key.as_bytes());
    h.extend_from_slice(tag.as_bytes());
    let crc = crc32fast::hash(&h[8..]);
    h[4..8].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Reads a cache file into `buf`, checking length, key and both CRCs.
pub(super) fn read_checked<B: BodyBuf + ?Sized>(
    f: &mut File,
    key: &str,
    buf: &mut B,
) -> Option<ObjectMeta> {
    let file_len = f.metadata().ok()?.len();
    read_checked_from(f, file_len, key, buf)
}

/// `read_checked` of any reader of `file_len` bytes.
fn read_checked_from<R: Read, B: BodyBuf + ?Sized>(
    f: &mut R,
    file_len: u64,
    key: &str,
    buf: &mut B,
) -> Option<ObjectMeta> {
    let (h, meta) = read_header(f, file_len, key)?;
    buf.resize(h.body_len as usize);
    f.read_exact(buf.bytes_mut()).ok()?;
    (crc32fast::hash(buf.bytes_mut()) == h.body_crc).then_some(meta)
}

/// Reads and checks a cache file's header (for `key`, in a file of
/// `file_len` bytes). The lengths it names size a buffer only once they are
/// known to add up to the file's length: a damaged header naming a 4 GiB
/// key allocates nothing.
pub(super) fn read_header<R: Read>(
    f: &mut R,
    file_len: u64,
    key: &str,
) -> Option<(Header, ObjectMeta)> {
    let mut fixed = [0u8; HEADER_LEN];
    f.read_exact(&mut fixed).ok()?;
    let h = Header::parse(&fixed)?;
    let declared = (HEADER_LEN as u64)
        .checked_add(h.key_len as u64)?
        .checked_add(h.etag_len as u64)?
        .checked_add(h.body_len)?;
    if declared != file_len {
        return None;
    }
    let mut rest = vec![0u8; h.key_len + h.etag_len];
    f.read_exact(&mut rest).ok()?;
    let meta = h.check(&fixed, &rest, key, file_len)?;
    Some((h, meta))
}

/// Parses a whole cache file held in memory (for the fuzz target): the
/// metadata when it is a sound file for `key`.
pub fn parse_cache_file(bytes: &[u8], key: &str) -> Option<ObjectMeta> {
    let mut body: Vec<u8> = Vec::new();
    read_checked_from(
        &mut std::io::Cursor::new(bytes),
        bytes.len() as u64,
        key,
        &mut body,
    )
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// The metadata of a test object of `size` bytes (also the tier's tests).
    pub(in crate::tiered::disk) fn meta(size: usize) -> ObjectMeta {
        ObjectMeta {
            size: size as u64,
            etag: "e1".into(),
            last_modified_ns: 42,
            attributes: Default::default(),
        }
    }

    #[test]
    fn a_damaged_header_sizes_nothing_from_its_lengths() {
        let mut file = encode_header("k", crc32fast::hash(b"z"), 1, &meta(1));
        file.extend_from_slice(b"z");
        assert!(parse_cache_file(&file, "k").is_some());
        // A key length of 4 GiB: refused before any buffer is made for it.
        file[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse_cache_file(&file, "k").is_none());
        file[12..16].copy_from_slice(&1u32.to_le_bytes());
        file[20..28].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(parse_cache_file(&file, "k").is_none());
    }
}
