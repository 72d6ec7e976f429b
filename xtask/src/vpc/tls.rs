//! The AWS double's TLS: a short-lived leaf certificate for the regional endpoints' names (and
//! the double's address), signed at test time with the committed TEST-ONLY CA
//! (`images/test-ca/`) by the openssl CLI. Only test profiles may trust that CA.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::netns::sh;

/// The files of an issued leaf.
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA certificate it chains to.
    pub ca: PathBuf,
}

/// The leaf's X.509 v3 extensions (openssl `-extfile` syntax).
fn extensions(names: &[&str], addrs: &[Ipv4Addr]) -> String {
    let san: Vec<String> = names
        .iter()
        .map(|n| format!("DNS:{n}"))
        .chain(addrs.iter().map(|a| format!("IP:{a}")))
        .collect();
    format!(
        "subjectAltName={}\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        san.join(",")
    )
}

/// Issues a P-256 leaf for `names` and `addrs`, valid for 30 days from now, into `dir`.
pub fn issue_leaf(ca_dir: &Path, dir: &Path, names: &[&str], addrs: &[Ipv4Addr]) -> Result<Leaf> {
    let ca = ca_dir.join("ca.pem");
    let ca_key = ca_dir.join("ca.key");
    for f in [&ca, &ca_key] {
        if !f.is_file() {
            anyhow::bail!("the test CA file {} is missing", f.display());
        }
    }
    let key = dir.join("endpoint.key");
    let csr = dir.join("endpoint.csr");
    let cert = dir.join("endpoint.pem");
    let ext = dir.join("endpoint.ext");
    let first = names.first().context("a leaf needs at least one name")?;
    std::fs::write(&ext, extensions(names, addrs))
        .with_context(|| format!("writing {}", ext.display()))?;
    let p = |x: &Path| x.to_string_lossy().into_owned();
    sh(
        "openssl",
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &p(&key),
            "-out",
            &p(&csr),
            "-subj",
            &format!("/CN={first}"),
        ],
    )
    .context("creating the endpoint's key (package openssl)")?;
    // A random serial, and no serial file written next to the committed CA.
    sh(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            &p(&csr),
            "-CA",
            &p(&ca),
            "-CAkey",
            &p(&ca_key),
            "-set_serial",
            &format!("0x{:016x}", serial()),
            "-days",
            "30",
            "-sha256",
            "-extfile",
            &p(&ext),
            "-out",
            &p(&cert),
        ],
    )
    .context("signing the endpoint's certificate with the test CA")?;
    Ok(Leaf { cert, key, ca })
}

fn serial() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (t.as_nanos() as u64) ^ (u64::from(std::process::id()) << 40)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_names_every_host_and_address_for_servers_only() {
        let e = extensions(
            &[
                "ec2.us-east-1.amazonaws.com",
                "monitoring.us-east-1.amazonaws.com",
            ],
            &[Ipv4Addr::new(203, 0, 113, 20)],
        );
        assert!(e.starts_with("subjectAltName=DNS:ec2.us-east-1.amazonaws.com,DNS:monitoring.us-east-1.amazonaws.com,IP:203.0.113.20\n"));
        assert!(e.contains("CA:FALSE") && e.contains("extendedKeyUsage=serverAuth"));
    }
}
