//! What can go wrong talking to a PACS, each case saying what happened and what to check.

use dicom_ul::pdu::{AssociationRJ, AssociationRJResult, AssociationRJServiceUserReason, AssociationRJSource};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PacsError {
    #[error("no PACS configured (parameter pacs.host is empty)")]
    NotConfigured,
    #[error("invalid PACS parameter {key}: {reason}")]
    Config { key: String, reason: String },
    #[error("PACS unreachable at {address}: {reason}")]
    Unreachable { address: String, reason: String },
    #[error("the PACS at {address} rejected the association ({result}, by the {source_}): {reason}{hint}")]
    Rejected { address: String, result: String, source_: String, reason: String, hint: String },
    #[error("TLS with the PACS at {address} failed: {reason}")]
    Tls { address: String, reason: String },
    #[error("the PACS at {address} accepts none of the presentation contexts proposed for {what}")]
    NoPresentationContext { address: String, what: String },
    #[error("the PACS at {address} did not answer within {seconds} s ({operation}; parameter pacs.timeout_s)")]
    Timeout { address: String, operation: String, seconds: f64 },
    #[error("the association with the PACS at {address} broke during {operation}: {reason}")]
    Protocol { address: String, operation: String, reason: String },
    #[error("series {series} not found in the PACS at {address}")]
    SeriesNotFound { address: String, series: String },
    #[error("series {series} is in study {found_study} in the PACS at {address}, not in the requested study {study}")]
    SeriesInAnotherStudy { address: String, series: String, study: String, found_study: String },
    #[error("{operation} failed at the PACS at {address}: status {status:04X}H ({meaning}){comment}")]
    Status { address: String, operation: String, status: u16, meaning: String, comment: String },
    #[error(
        "retrieve of series {series} from {address} incomplete: {completed} image(s) received, {failed} failed, \
         {warning} with warnings{detail}"
    )]
    RetrieveIncomplete { address: String, series: String, completed: u32, failed: u32, warning: u32, detail: String },
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
}

impl PacsError {
    /// A `PacsError` from a DICOM upper-layer error, for the operation that was under way.
    pub(crate) fn from_ul(
        e: dicom_ul::association::Error,
        address: &str,
        operation: &str,
        timeout_s: f64,
    ) -> PacsError {
        use dicom_ul::association::Error as Ul;
        let address = address.to_string();
        let io_kind = io_kind_in_chain(&e);
        let timed_out = matches!(io_kind, Some(std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut));
        match e {
            Ul::Rejected { association_rj, .. } => rejected(&address, &association_rj),
            Ul::Connect { source, .. } => {
                let reason = match source.kind() {
                    std::io::ErrorKind::ConnectionRefused => {
                        "connection refused (is the PACS running, and listening on this port?)".to_string()
                    }
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
                        "no answer to the connection (parameter pacs.connect_timeout_s)".to_string()
                    }
                    _ => source.to_string(),
                };
                PacsError::Unreachable { address, reason }
            }
            Ul::ToAddress { source, .. } => {
                PacsError::Unreachable { address, reason: format!("cannot resolve the host: {source}") }
            }
            Ul::NoAcceptedPresentationContexts { .. } => {
                PacsError::NoPresentationContext { address, what: operation.to_string() }
            }
            Ul::TlsConnection { .. }
            | Ul::TlsHandshake { .. }
            | Ul::InvalidServerName { .. }
            | Ul::TlsConfigMissing { .. } => PacsError::Tls { address, reason: chain(&e) },
            Ul::TlsNotSupported => PacsError::Tls {
                address,
                reason: "the PACS answers with TLS: set pacs.tls.enabled (and its certificates)".into(),
            },
            _ if timed_out => PacsError::Timeout { address, operation: operation.to_string(), seconds: timeout_s },
            // A TLS alert arrives as a read error once the handshake is done (TLS 1.3 checks the
            // client certificate after it).
            other if chain(&other).contains("received fatal alert") => {
                let reason = chain(&other);
                let hint = if reason.contains("CertificateRequired") {
                    "; the PACS requires a client certificate: set pacs.tls.client_cert_file and client_key_file"
                } else {
                    ""
                };
                PacsError::Tls { address, reason: format!("{reason}{hint}") }
            }
            Ul::ConnectionClosed { .. } => PacsError::Protocol {
                address,
                operation: operation.to_string(),
                reason: "the PACS closed the connection (a PACS that expects TLS, or one that refuses us, does this)"
                    .into(),
            },
            other => PacsError::Protocol { address, operation: operation.to_string(), reason: chain(&other) },
        }
    }
}

/// The A-ASSOCIATE-RJ in words, with what to check for the common reasons.
pub(crate) fn rejected(address: &str, rj: &AssociationRJ) -> PacsError {
    let result = match rj.result {
        AssociationRJResult::Permanent => "permanent",
        AssociationRJResult::Transient => "transient, try again later",
    };
    let (source_, hint) = match &rj.source {
        AssociationRJSource::ServiceUser(r) => (
            "service user (the PACS application)",
            match r {
                AssociationRJServiceUserReason::CalledAETitleNotRecognized => {
                    "; check pacs.called_ae_title: it must be the PACS's own AE title"
                }
                AssociationRJServiceUserReason::CallingAETitleNotRecognized => {
                    "; the PACS does not know our AE title (pacs.calling_ae_title): add it to the PACS's modalities"
                }
                _ => "",
            },
        ),
        AssociationRJSource::ServiceProviderASCE(_) => ("service provider (ACSE)", ""),
        AssociationRJSource::ServiceProviderPresentation(_) => ("service provider (presentation)", ""),
    };
    PacsError::Rejected {
        address: address.to_string(),
        result: result.into(),
        source_: source_.into(),
        reason: rj.source.to_string(),
        hint: hint.into(),
    }
}

/// The message of an error and of each of its causes.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !parts.contains(&text) {
            parts.push(text);
        }
        cause = c.source();
    }
    parts.join(": ")
}

fn io_kind_in_chain(e: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        cause = c.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_ul::pdu::{AssociationRJServiceProviderPresentationReason, AssociationRJServiceUserReason as R};

    #[test]
    fn a_rejection_says_who_rejected_why_and_what_to_check() {
        let rj = AssociationRJ {
            result: AssociationRJResult::Permanent,
            source: AssociationRJSource::ServiceUser(R::CalledAETitleNotRecognized),
        };
        let m = rejected("WRONG@127.0.0.1:4242", &rj).to_string();
        assert!(m.contains("rejected the association (permanent"), "{m}");
        assert!(m.contains("called AE title not recognized") && m.contains("pacs.called_ae_title"), "{m}");
        let rj = AssociationRJ {
            result: AssociationRJResult::Permanent,
            source: AssociationRJSource::ServiceUser(R::CallingAETitleNotRecognized),
        };
        let m = rejected("ORTHANC@h:1", &rj).to_string();
        assert!(m.contains("calling AE title not recognized") && m.contains("pacs.calling_ae_title"), "{m}");
        let rj = AssociationRJ {
            result: AssociationRJResult::Transient,
            source: AssociationRJSource::ServiceProviderPresentation(
                AssociationRJServiceProviderPresentationReason::TemporaryCongestion,
            ),
        };
        let m = rejected("ORTHANC@h:1", &rj).to_string();
        assert!(m.contains("transient") && m.contains("presentation") && m.contains("congestion"), "{m}");
    }
}
