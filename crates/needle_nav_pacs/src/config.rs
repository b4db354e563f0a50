//! How to reach the PACS: the `pacs` block of a node's parameter file (SI units), checked
//! before any connection is tried.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A configuration key and why its value is refused.
pub type Invalid = (&'static str, String);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PacsConfig {
    /// Host name or address of the PACS's DICOM port; empty: no PACS (requests that need one
    /// are refused as bad requests).
    pub host: String,
    /// The PACS's DICOM port (104 by convention, 4242 in Orthanc's default configuration).
    pub port: u16,
    /// The PACS's own AE title (the "called" AE title); a PACS that checks it rejects others.
    pub called_ae_title: String,
    /// Our AE title (the "calling" AE title); the PACS must know it as a modality to send us
    /// images (C-GET) and, in most PACS, to accept anything from us.
    pub calling_ae_title: String,
    /// Time to open the TCP connection [s].
    pub connect_timeout_s: f64,
    /// Longest wait for any one answer of the PACS (association, each response, each image) [s].
    pub timeout_s: f64,
    pub tls: PacsTls,
}

/// DICOM over TLS (PS3.15 B.1): the PACS's certificate is checked against `ca_file`; a client
/// certificate is sent when the PACS asks for one.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PacsTls {
    pub enabled: bool,
    /// PEM file with the certificate(s) of the authority that signed the PACS's certificate.
    pub ca_file: String,
    /// PEM client certificate and its private key; both empty: no client certificate.
    pub client_cert_file: String,
    pub client_key_file: String,
    /// Name the PACS's certificate must carry; empty: `host`.
    pub server_name: String,
}

impl Default for PacsConfig {
    fn default() -> Self {
        PacsConfig {
            host: String::new(),
            port: 104,
            called_ae_title: "ORTHANC".into(),
            calling_ae_title: "NEEDLE_NAV".into(),
            connect_timeout_s: 5.0,
            timeout_s: 30.0,
            tls: PacsTls::default(),
        }
    }
}

/// An AE title as PS3.5 allows it (VR AE): 1 to 16 characters of printable ASCII without a
/// backslash, not only spaces.
pub fn check_ae_title(title: &str) -> Result<(), String> {
    if title.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if title.len() > 16 {
        return Err(format!("{title:?} is longer than 16 characters"));
    }
    if let Some(c) = title.chars().find(|c| !c.is_ascii() || c.is_ascii_control() || *c == '\\') {
        return Err(format!("{title:?} contains {c:?} (only printable ASCII without backslash is allowed)"));
    }
    Ok(())
}

impl PacsConfig {
    /// Whether a PACS is configured at all (`host` set).
    pub fn is_configured(&self) -> bool {
        !self.host.trim().is_empty()
    }

    /// Checks every key; keys are named as in the parameter file, below `pacs.`.
    pub fn validate(&self) -> Result<(), Invalid> {
        let check = |ok: bool, key: &'static str, reason: String| if ok { Ok(()) } else { Err((key, reason)) };
        check(
            !self.host.contains(char::is_whitespace) || self.host.trim().is_empty(),
            "pacs.host",
            format!("{:?} contains white space", self.host),
        )?;
        check(self.port > 0, "pacs.port", "must be 1..=65535".into())?;
        check_ae_title(&self.called_ae_title).map_err(|r| ("pacs.called_ae_title", r))?;
        check_ae_title(&self.calling_ae_title).map_err(|r| ("pacs.calling_ae_title", r))?;
        for (key, v) in [("pacs.connect_timeout_s", self.connect_timeout_s), ("pacs.timeout_s", self.timeout_s)] {
            check(v.is_finite() && v > 0.0 && v <= 3600.0, key, format!("{v} must be > 0 and <= 3600 s"))?;
        }
        let t = &self.tls;
        if t.enabled {
            check(
                !t.ca_file.trim().is_empty(),
                "pacs.tls.ca_file",
                "TLS needs the authority that signed the PACS's certificate".into(),
            )?;
            check(
                t.client_cert_file.trim().is_empty() == t.client_key_file.trim().is_empty(),
                "pacs.tls.client_key_file",
                "a client certificate needs its key and a key its certificate (set both or neither)".into(),
            )?;
        }
        Ok(())
    }

    /// `CALLED_AE@host:port`, as errors and logs name the PACS.
    pub fn address(&self) -> String {
        format!("{}@{}:{}{}", self.called_ae_title, self.host, self.port, if self.tls.enabled { " (TLS)" } else { "" })
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.connect_timeout_s.clamp(0.001, 3600.0))
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout_s.clamp(0.001, 3600.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_each_bad_key_is_named() {
        PacsConfig::default().validate().unwrap();
        let key = |c: PacsConfig| c.validate().unwrap_err().0;
        assert_eq!(key(PacsConfig { port: 0, ..Default::default() }), "pacs.port");
        assert_eq!(key(PacsConfig { called_ae_title: "".into(), ..Default::default() }), "pacs.called_ae_title");
        assert_eq!(key(PacsConfig { called_ae_title: "   ".into(), ..Default::default() }), "pacs.called_ae_title");
        assert_eq!(
            key(PacsConfig { calling_ae_title: "A_TITLE_OF_17_CHR".into(), ..Default::default() }),
            "pacs.calling_ae_title"
        );
        assert_eq!(
            key(PacsConfig { calling_ae_title: "BACK\\SLASH".into(), ..Default::default() }),
            "pacs.calling_ae_title"
        );
        assert_eq!(key(PacsConfig { timeout_s: 0.0, ..Default::default() }), "pacs.timeout_s");
        assert_eq!(key(PacsConfig { connect_timeout_s: f64::NAN, ..Default::default() }), "pacs.connect_timeout_s");
        assert_eq!(key(PacsConfig { host: "pacs host".into(), ..Default::default() }), "pacs.host");
        let tls = |t: PacsTls| PacsConfig { tls: t, ..Default::default() };
        assert_eq!(key(tls(PacsTls { enabled: true, ..Default::default() })), "pacs.tls.ca_file");
        let with_ca = PacsTls { enabled: true, ca_file: "ca.pem".into(), ..Default::default() };
        tls(with_ca.clone()).validate().unwrap();
        assert_eq!(
            key(tls(PacsTls { client_cert_file: "client.pem".into(), ..with_ca.clone() })),
            "pacs.tls.client_key_file"
        );
        tls(PacsTls { client_cert_file: "c.pem".into(), client_key_file: "k.pem".into(), ..with_ca })
            .validate()
            .unwrap();
        // 16 characters is the most PS3.5 allows.
        PacsConfig { calling_ae_title: "SIXTEEN_CHARS_AE".into(), ..Default::default() }.validate().unwrap();
    }

    #[test]
    fn only_a_host_makes_a_pacs_configured() {
        assert!(!PacsConfig::default().is_configured());
        let c = PacsConfig { host: "127.0.0.1".into(), port: 4242, ..Default::default() };
        assert!(c.is_configured());
        assert_eq!(c.address(), "ORTHANC@127.0.0.1:4242");
    }
}
