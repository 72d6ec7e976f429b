//! SHA-256 of bytes and files, as lowercase hex: the one checksum used in lock files,
//! manifests and SHA256SUMS; and `Fields`, the hash of a sequence of named values that
//! digests of several inputs are built from.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

pub fn sha256_file(path: &Path) -> Result<String> {
    Ok(hex(&sha256_state(path)?.finalize()))
}

/// The hash state after a whole file, so that a file which extends it can be hashed by feeding
/// only its tail.
pub fn sha256_state(path: &Path) -> Result<Sha256> {
    let mut h = Sha256::new();
    feed(&mut h, path, 0)?;
    Ok(h)
}

/// Finishes `state` (the hash of a file's first `skip` bytes) with the rest of `path`.
pub fn sha256_continue(mut state: Sha256, path: &Path, skip: u64) -> Result<String> {
    feed(&mut state, path, skip)?;
    Ok(hex(&state.finalize()))
}

/// SHA-256 over named fields, each written as `len(name) name len(data) data` with 8-byte
/// little-endian lengths. The encoding is prefix-free: two different sequences of fields never
/// give the same bytes, whatever the fields hold (no separators to escape, no Debug text).
pub struct Fields(Sha256);

impl Fields {
    /// Starts a digest; `domain` (the first field) keeps digests of different things apart.
    pub fn new(domain: &str) -> Fields {
        let mut f = Fields(Sha256::new());
        f.field("domain", domain.as_bytes());
        f
    }

    pub fn field(&mut self, name: &str, data: &[u8]) -> &mut Fields {
        for part in [name.as_bytes(), data] {
            self.0.update((part.len() as u64).to_le_bytes());
            self.0.update(part);
        }
        self
    }

    pub fn u64(&mut self, name: &str, value: u64) -> &mut Fields {
        self.field(name, &value.to_le_bytes())
    }

    pub fn finish(self) -> String {
        hex(&self.0.finalize())
    }
}

fn feed(h: &mut Sha256, path: &Path, skip: u64) -> Result<()> {
    use std::io::Seek;
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    f.seek(std::io::SeekFrom::Start(skip))
        .with_context(|| format!("seeking in {}", path.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn continuing_a_state_equals_hashing_the_whole_file() {
        let dir = std::env::temp_dir().join(format!("xtask-digest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a"), dir.join("b"));
        std::fs::write(&a, vec![7u8; 3 << 20]).unwrap();
        let mut long = vec![7u8; 3 << 20];
        long.extend_from_slice(b"footer");
        std::fs::write(&b, &long).unwrap();
        let cont = super::sha256_continue(super::sha256_state(&a).unwrap(), &b, 3 << 20).unwrap();
        assert_eq!(cont, super::sha256_file(&b).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fields_are_unambiguous() {
        let digest = |fields: &[(&str, &[u8])]| {
            let mut f = super::Fields::new("test");
            for (n, d) in fields {
                f.field(n, d);
            }
            f.finish()
        };
        let base = digest(&[("a", b"bc")]);
        // Moving bytes between name and data, or between fields, changes the digest.
        for other in [
            digest(&[("ab", b"c")]),
            digest(&[("a", b"b"), ("", b"c")]),
            digest(&[("a", b"bc"), ("", b"")]),
            digest(&[("a", b"b"), ("c", b"")]),
            digest(&[]),
        ] {
            assert_ne!(base, other);
        }
        assert_eq!(base, digest(&[("a", b"bc")]));
        let mut other_domain = super::Fields::new("other");
        other_domain.field("a", b"bc");
        assert_ne!(base, other_domain.finish());
    }

    #[test]
    fn known_vector() {
        assert_eq!(
            super::sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
