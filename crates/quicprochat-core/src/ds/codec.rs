//! The serialised form of a [`DsGroupView`]: one self-checking blob for the server's store.
//!
//! Layout: magic `QPCDSV1\0`, u32 group-id length, group id, u32 entry count, then
//! entries (u32 key length, key, u32 value length, value) of the OpenMLS memory store
//! sorted by key, and finally a SHA-256 of everything before it. Decoding checks
//! every length against the remaining input, so bad bytes are an error, never a panic
//! or an oversized allocation.

use std::collections::HashMap;
use std::sync::RwLock;

use openmls::prelude::{GroupId, PublicGroup};
use openmls_memory_storage::MemoryStorage;
use openmls_rust_crypto::RustCrypto;
use openmls_traits::public_storage::PublicStorageProvider as _;
use sha2::{Digest, Sha256};

use super::{DsError, DsGroupView};
use crate::ciphersuite::is_allowed_ciphersuite;

const MAGIC: &[u8; 8] = b"QPCDSV1\0";
const DIGEST_LEN: usize = 32;
/// Largest blob accepted by [`DsGroupView::from_bytes`] (PQ groups of 1000 need a few MB).
pub const MAX_VIEW_BYTES: usize = 256 * 1024 * 1024;

impl DsGroupView {
    /// Serialises the whole view (group state and pending proposals).
    pub fn to_bytes(&self) -> Result<Vec<u8>, DsError> {
        // Commits do not store the tree (`deferred_tree`): store the live one.
        self.storage.write_tree(self.group.group_id(), self.group.treesync()).map_err(DsError::internal)?;
        let values = match self.storage.values.read() {
            Ok(guard) => guard,
            // A panic while holding the lock cannot leave the map half-written:
            // every write is a single insert or remove.
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut entries: Vec<(&Vec<u8>, &Vec<u8>)> = values.iter().collect();
        entries.sort();
        let group_id = self.group_id();
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        put_bytes(&mut out, &group_id);
        put_len(&mut out, entries.len());
        for (key, value) in entries {
            put_bytes(&mut out, key);
            put_bytes(&mut out, value);
        }
        let digest = Sha256::digest(&out);
        out.extend_from_slice(&digest);
        Ok(out)
    }

    /// Restores a view written by [`DsGroupView::to_bytes`]; bounded, never panics on bad bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<DsGroupView, DsError> {
        if bytes.len() > MAX_VIEW_BYTES {
            return Err(DsError::TooLarge { len: bytes.len(), max: MAX_VIEW_BYTES });
        }
        let corrupt = |reason: &str| DsError::CorruptState { reason: reason.to_owned() };
        if bytes.len() < MAGIC.len() + DIGEST_LEN || !bytes.starts_with(MAGIC) {
            return Err(corrupt("not a serialised group view"));
        }
        let (body, digest) = bytes.split_at(bytes.len() - DIGEST_LEN);
        if Sha256::digest(body).as_slice() != digest {
            return Err(corrupt("checksum mismatch"));
        }
        let mut reader = Reader { rest: &body[MAGIC.len()..] };
        let group_id = reader.bytes()?.to_vec();
        let count = reader.len()?;
        // Each entry takes at least 8 bytes, which bounds the map's capacity.
        let mut values = HashMap::with_capacity(count.min(reader.rest.len() / 8));
        for _ in 0..count {
            let key = reader.bytes()?.to_vec();
            let value = reader.bytes()?.to_vec();
            values.insert(key, value);
        }
        if !reader.rest.is_empty() {
            return Err(corrupt("trailing bytes"));
        }
        let storage = MemoryStorage { values: RwLock::new(values) };
        // openmls_memory_storage 0.6 unwraps its JSON decoding, so a damaged
        // entry (behind a valid checksum) would panic; found by the
        // `mls_ingress` fuzz target. Contain it and report corrupt state.
        let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            PublicGroup::load(&storage, &GroupId::from_slice(&group_id))
        }))
        .map_err(|_| corrupt("a stored group entry does not decode"))?;
        let group = loaded
            .map_err(|err| DsError::CorruptState { reason: err.to_string() })?
            .ok_or_else(|| corrupt("group state missing"))?;
        // The state stored under this id must be that group's (found by fuzzing:
        // otherwise the view re-serialises under another id and cannot be reloaded).
        if group.group_id().as_slice() != group_id.as_slice() {
            return Err(corrupt("stored state belongs to another group"));
        }
        let ciphersuite = group.ciphersuite();
        if !is_allowed_ciphersuite(ciphersuite) {
            return Err(DsError::CiphersuiteNotAllowed { ciphersuite: ciphersuite.into() });
        }
        Ok(DsGroupView { storage, group, crypto: RustCrypto::default() })
    }
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    // Values come from an in-memory map; none reaches 4 GiB.
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_len(out, bytes.len());
    out.extend_from_slice(bytes);
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn len(&mut self) -> Result<usize, DsError> {
        let head = self.take(4)?;
        let mut buf = [0u8; 4];
        buf.copy_from_slice(head);
        Ok(u32::from_be_bytes(buf) as usize)
    }

    fn bytes(&mut self) -> Result<&'a [u8], DsError> {
        let len = self.len()?;
        self.take(len)
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], DsError> {
        if self.rest.len() < len {
            return Err(DsError::CorruptState { reason: "truncated".to_owned() });
        }
        let (head, tail) = self.rest.split_at(len);
        self.rest = tail;
        Ok(head)
    }
}
