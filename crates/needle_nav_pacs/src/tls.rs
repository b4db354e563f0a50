//! The rustls client configuration for DICOM over TLS: the PACS's certificate checked against
//! the configured authority, our certificate sent when configured.

use crate::config::PacsTls;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};
use std::sync::Arc;

pub fn client_config(tls: &PacsTls) -> Result<ClientConfig, String> {
    let read_certs = |path: &str, key: &str| -> Result<Vec<CertificateDer<'static>>, String> {
        let certs: Result<Vec<_>, _> =
            CertificateDer::pem_file_iter(path).map_err(|e| format!("{key} {path}: {e}"))?.collect();
        let certs = certs.map_err(|e| format!("{key} {path}: {e}"))?;
        if certs.is_empty() {
            return Err(format!("{key} {path}: no PEM certificate in it"));
        }
        Ok(certs)
    };
    let mut roots = RootCertStore::empty();
    for cert in read_certs(&tls.ca_file, "pacs.tls.ca_file")? {
        roots.add(cert).map_err(|e| format!("pacs.tls.ca_file {}: {e}", tls.ca_file))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?
        .with_root_certificates(roots);
    if tls.client_cert_file.trim().is_empty() {
        return Ok(builder.with_no_client_auth());
    }
    let chain = read_certs(&tls.client_cert_file, "pacs.tls.client_cert_file")?;
    let key = PrivateKeyDer::from_pem_file(&tls.client_key_file)
        .map_err(|e| format!("pacs.tls.client_key_file {}: {e}", tls.client_key_file))?;
    builder.with_client_auth_cert(chain, key).map_err(|e| format!("client certificate and key: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_or_empty_files_are_named() {
        let tmp = std::env::temp_dir().join(format!("nn_pacs_tls_{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        let empty = tmp.join("empty.pem");
        std::fs::write(&empty, b"").unwrap();
        let t = |ca: &str| PacsTls { enabled: true, ca_file: ca.into(), ..Default::default() };
        let e = client_config(&t("/nonexistent/ca.pem")).unwrap_err();
        assert!(e.contains("pacs.tls.ca_file") && e.contains("/nonexistent/ca.pem"), "{e}");
        let e = client_config(&t(empty.to_str().unwrap())).unwrap_err();
        assert!(e.contains("no PEM certificate"), "{e}");
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
