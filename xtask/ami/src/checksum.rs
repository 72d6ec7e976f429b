//! Checksums of the EBS direct APIs: each PutSnapshotBlock carries the base64 SHA-256 of its
//! block; CompleteSnapshot carries the LINEAR aggregate, the SHA-256 over the raw per-block
//! digests concatenated in ascending block order, base64.

use sha2::{Digest, Sha256};

/// Raw SHA-256 of one block.
pub fn block_digest(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

pub fn base64(bytes: &[u8]) -> String {
    aws_smithy_types::base64::encode(bytes)
}

/// The LINEAR aggregate; blocks must be pushed in ascending index order.
#[derive(Default)]
pub struct LinearChecksum {
    hasher: Sha256,
}

impl LinearChecksum {
    pub fn push(&mut self, block_digest: &[u8; 32]) {
        self.hasher.update(block_digest);
    }

    pub fn finish_base64(self) -> String {
        base64(&self.hasher.finalize())
    }
}

/// Lower-case hex, for the image's sha256 as the manifest records it.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_checksum_is_base64_sha256() {
        // SHA-256("abc"), a FIPS 180-2 test vector.
        let d = block_digest(b"abc");
        assert_eq!(
            hex(&d),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(base64(&d), "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=");
    }

    #[test]
    fn linear_checksum_hashes_raw_digests_in_order() {
        let a = block_digest(&[1u8; 512]);
        let b = block_digest(&[2u8; 512]);
        let mut concat = Vec::new();
        concat.extend_from_slice(&a);
        concat.extend_from_slice(&b);
        let want = base64(&block_digest(&concat));

        let mut lin = LinearChecksum::default();
        lin.push(&a);
        lin.push(&b);
        assert_eq!(lin.finish_base64(), want);

        // Order matters: the aggregate is not a set hash.
        let mut rev = LinearChecksum::default();
        rev.push(&b);
        rev.push(&a);
        assert_ne!(rev.finish_base64(), want);
    }

    #[test]
    fn linear_checksum_of_nothing_is_sha256_of_empty() {
        assert_eq!(
            LinearChecksum::default().finish_base64(),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
    }
}
