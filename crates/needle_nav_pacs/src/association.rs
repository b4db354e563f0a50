//! One association with the PACS (plain TCP or TLS) and the DIMSE messages exchanged on it:
//! commands encoded and decoded, data sets sent in fragments that fit the PACS's PDU size.
//! dicom-ul does the upper layer; DIMSE message assembly is not in any dicom-rs crate (its
//! tools each inline it), so it is here.

use crate::config::PacsConfig;
use crate::error::{chain, PacsError};
use crate::tls;
use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::{TransferSyntax, TransferSyntaxIndex};
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::{entries, TransferSyntaxRegistry};
use dicom_ul::association::client::TlsStream;
use dicom_ul::pdu::{PDataValue, PDataValueType, PresentationContextNegotiated};
use dicom_ul::{ClientAssociation, ClientAssociationOptions, Pdu};
use needle_nav_dicom_guard::{check_data_set, guarded, Encoding};
use std::net::TcpStream;

pub const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";

/// DIMSE command fields (PS3.7 E.1).
pub mod command {
    pub const C_STORE_RQ: u16 = 0x0001;
    pub const C_STORE_RSP: u16 = 0x8001;
    pub const C_GET_RQ: u16 = 0x0010;
    pub const C_GET_RSP: u16 = 0x8010;
    pub const C_FIND_RQ: u16 = 0x0020;
    pub const C_FIND_RSP: u16 = 0x8020;
    pub const C_ECHO_RQ: u16 = 0x0030;
    pub const C_ECHO_RSP: u16 = 0x8030;
}

/// The most a command set may take: a few hundred bytes in practice (PS3.7 9.3); more is a broken
/// or hostile peer, refused before it fills memory.
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;
/// The most one data set may take: 1 GiB holds an enhanced CT of 2000 slices of 512 x 512 x 16 bit.
pub const MAX_DATA_SET_BYTES: usize = 1 << 30;

/// CommandDataSetType: no data set follows.
pub const NO_DATA_SET: u16 = 0x0101;
const DATA_SET_PRESENT: u16 = 0x0000;

/// A presentation context to propose: abstract syntax, transfer syntaxes, and whether we take
/// the SCP role for it (to receive C-STORE sub-operations of a C-GET).
pub struct Proposal {
    pub abstract_syntax: String,
    pub transfer_syntaxes: Vec<String>,
    pub we_store: bool,
}

enum Link {
    Plain(ClientAssociation<TcpStream>),
    Tls(Box<ClientAssociation<TlsStream>>),
}

/// A received DIMSE message: its presentation context, command and data set bytes.
pub struct Message {
    pub context_id: u8,
    pub command: InMemDicomObject,
    pub data: Option<Vec<u8>>,
}

impl Message {
    pub fn u16(&self, tag: Tag) -> Option<u16> {
        self.command.element(tag).ok().and_then(|e| e.to_int::<u16>().ok())
    }

    pub fn text(&self, tag: Tag) -> Option<String> {
        text_of(&self.command, tag)
    }

    pub fn field(&self) -> u16 {
        self.u16(tags::COMMAND_FIELD).unwrap_or(0)
    }
}

/// A string element without DICOM's padding.
pub fn text_of(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let e = obj.element(tag).ok()?;
    let s = e.to_str().ok()?;
    let s = s.trim_end_matches(['\0', ' ']).trim_start();
    (!s.is_empty()).then(|| s.to_string())
}

pub struct Association {
    link: Option<Link>,
    pub address: String,
    pub timeout_s: f64,
    next_message_id: u16,
}

impl Association {
    /// Connects and negotiates the proposed presentation contexts.
    pub fn open(cfg: &PacsConfig, proposals: &[Proposal], what: &str) -> Result<Association, PacsError> {
        if !cfg.is_configured() {
            return Err(PacsError::NotConfigured);
        }
        cfg.validate().map_err(|(key, reason)| PacsError::Config { key: key.into(), reason })?;
        let address = cfg.address();
        let mut options = ClientAssociationOptions::new()
            .calling_ae_title(cfg.calling_ae_title.trim().to_string())
            .called_ae_title(cfg.called_ae_title.trim().to_string())
            .connection_timeout(cfg.connect_timeout())
            .read_timeout(cfg.timeout())
            .write_timeout(cfg.timeout());
        for p in proposals {
            options = options.with_presentation_context(p.abstract_syntax.clone(), p.transfer_syntaxes.clone());
            if p.we_store {
                options = options.with_role_selection(p.abstract_syntax.clone(), false, true);
            }
        }
        let target = (cfg.host.trim().to_string(), cfg.port);
        let fail = |e| PacsError::from_ul(e, &address, what, cfg.timeout_s);
        let mut link = if cfg.tls.enabled {
            let config =
                tls::client_config(&cfg.tls).map_err(|reason| PacsError::Tls { address: address.clone(), reason })?;
            let server_name =
                if cfg.tls.server_name.trim().is_empty() { cfg.host.trim() } else { cfg.tls.server_name.trim() };
            let a = options.tls_config(config).server_name(server_name).establish_tls(target).map_err(fail)?;
            Link::Tls(Box::new(a))
        } else {
            Link::Plain(options.establish(target).map_err(fail)?)
        };
        // A DIMSE message goes out as a command PDU and then data PDUs, each one write: with
        // Nagle's algorithm the second waits for the PACS to acknowledge the first.
        let socket = match &mut link {
            Link::Plain(a) => a.inner_stream(),
            Link::Tls(a) => &a.inner_stream().sock,
        };
        if let Err(e) = socket.set_nodelay(true) {
            tracing::debug!(pacs = %address, "TCP_NODELAY not set: {e}");
        }
        tracing::debug!(pacs = %address, "association established for {what}");
        Ok(Association { link: Some(link), address, timeout_s: cfg.timeout_s, next_message_id: 1 })
    }

    fn link(&mut self) -> &mut Link {
        // Only `release`/`abort` take the link, and they consume self.
        self.link.as_mut().expect("association used after release")
    }

    pub fn contexts(&self) -> &[PresentationContextNegotiated] {
        match self.link.as_ref() {
            Some(Link::Plain(a)) => a.presentation_contexts(),
            Some(Link::Tls(a)) => a.presentation_contexts(),
            None => &[],
        }
    }

    /// The accepted context for an abstract syntax, with its transfer syntax.
    pub fn context_for(&self, abstract_syntax: &str) -> Option<(u8, String)> {
        self.contexts()
            .iter()
            .find(|c| trim_uid(&c.abstract_syntax) == abstract_syntax)
            .map(|c| (c.id, trim_uid(&c.transfer_syntax).to_string()))
    }

    pub fn transfer_syntax_of(&self, context_id: u8) -> Option<String> {
        self.contexts().iter().find(|c| c.id == context_id).map(|c| trim_uid(&c.transfer_syntax).to_string())
    }

    fn peer_max_pdu(&self) -> u32 {
        match self.link.as_ref() {
            Some(Link::Plain(a)) => a.acceptor_max_pdu_length(),
            Some(Link::Tls(a)) => a.acceptor_max_pdu_length(),
            None => 16384,
        }
    }

    pub fn next_message_id(&mut self) -> u16 {
        let id = self.next_message_id;
        self.next_message_id = self.next_message_id.wrapping_add(1).max(1);
        id
    }

    fn send_pdu(&mut self, pdu: &Pdu, operation: &str) -> Result<(), PacsError> {
        let r = match self.link() {
            Link::Plain(a) => a.send(pdu),
            Link::Tls(a) => a.send(pdu),
        };
        r.map_err(|e| PacsError::from_ul(e, &self.address, operation, self.timeout_s))
    }

    fn receive_pdu(&mut self, operation: &str) -> Result<Pdu, PacsError> {
        let r = match self.link() {
            Link::Plain(a) => {
                quick_ack(a.inner_stream());
                a.receive()
            }
            Link::Tls(a) => {
                quick_ack(a.inner_stream().get_ref());
                a.receive()
            }
        };
        r.map_err(|e| PacsError::from_ul(e, &self.address, operation, self.timeout_s))
    }

    /// Sends a command and, if given, its data set (already encoded in the context's transfer syntax).
    pub fn send_message(
        &mut self,
        context_id: u8,
        command: Vec<DataElement<InMemDicomObject>>,
        data: Option<&[u8]>,
        operation: &str,
    ) -> Result<(), PacsError> {
        let mut command = command;
        let data_set_type = if data.is_some() { DATA_SET_PRESENT } else { NO_DATA_SET };
        command.push(DataElement::new(tags::COMMAND_DATA_SET_TYPE, VR::US, PrimitiveValue::from(data_set_type)));
        let command = encode_command(command).map_err(|reason| self.protocol(operation, reason))?;
        self.send_fragments(context_id, PDataValueType::Command, &command, operation)?;
        if let Some(data) = data {
            self.send_fragments(context_id, PDataValueType::Data, data, operation)?;
        }
        Ok(())
    }

    fn send_fragments(
        &mut self,
        context_id: u8,
        kind: PDataValueType,
        bytes: &[u8],
        operation: &str,
    ) -> Result<(), PacsError> {
        // A PDU's variable part holds one PDV: 4 bytes of length and 2 of header before the fragment.
        let max = self.peer_max_pdu().clamp(1024, 1 << 20) as usize - 6;
        let mut chunks = bytes.chunks(max).peekable();
        if chunks.peek().is_none() {
            let pdu = Pdu::PData {
                data: vec![PDataValue {
                    presentation_context_id: context_id,
                    value_type: kind,
                    is_last: true,
                    data: vec![],
                }],
            };
            return self.send_pdu(&pdu, operation);
        }
        while let Some(chunk) = chunks.next() {
            let pdu = Pdu::PData {
                data: vec![PDataValue {
                    presentation_context_id: context_id,
                    value_type: kind.clone(),
                    is_last: chunks.peek().is_none(),
                    data: chunk.to_vec(),
                }],
            };
            self.send_pdu(&pdu, operation)?;
        }
        Ok(())
    }

    /// Receives one whole DIMSE message (command, and its data set when it has one).
    pub fn receive_message(&mut self, operation: &str) -> Result<Message, PacsError> {
        let mut command_bytes = Vec::new();
        let mut data = Vec::new();
        let mut command: Option<InMemDicomObject> = None;
        let mut data_done = false;
        let mut context_id = 0;
        loop {
            match self.receive_pdu(operation)? {
                Pdu::PData { data: values } => {
                    for v in values {
                        context_id = v.presentation_context_id;
                        match v.value_type {
                            PDataValueType::Command => {
                                if command_bytes.len() + v.data.len() > MAX_COMMAND_BYTES {
                                    return Err(self.protocol(
                                        operation,
                                        format!("a command set from the PACS exceeds {MAX_COMMAND_BYTES} bytes"),
                                    ));
                                }
                                command_bytes.extend_from_slice(&v.data);
                                if v.is_last {
                                    command =
                                        Some(decode_command(&command_bytes).map_err(|r| self.protocol(operation, r))?);
                                }
                            }
                            PDataValueType::Data => {
                                if data.len() + v.data.len() > MAX_DATA_SET_BYTES {
                                    return Err(self.protocol(
                                        operation,
                                        format!("a data set from the PACS exceeds {MAX_DATA_SET_BYTES} bytes"),
                                    ));
                                }
                                data.extend_from_slice(&v.data);
                                data_done |= v.is_last;
                            }
                        }
                    }
                }
                Pdu::AbortRQ { source } => {
                    return Err(self.protocol(operation, format!("the PACS aborted the association ({source:?})")));
                }
                Pdu::ReleaseRQ => {
                    return Err(self.protocol(operation, "the PACS released the association early".into()))
                }
                other => {
                    return Err(self.protocol(operation, format!("unexpected PDU from the PACS: {}", pdu_name(&other))))
                }
            }
            let complete = command.as_ref().map(|cmd| {
                let has_data = cmd.element(tags::COMMAND_DATA_SET_TYPE).ok().and_then(|e| e.to_int::<u16>().ok())
                    != Some(NO_DATA_SET);
                (has_data, !has_data || data_done)
            });
            if let Some((has_data, true)) = complete {
                if let Some(command) = command.take() {
                    return Ok(Message { context_id, command, data: has_data.then_some(data) });
                }
            }
        }
    }

    pub fn protocol(&self, operation: &str, reason: String) -> PacsError {
        PacsError::Protocol { address: self.address.clone(), operation: operation.into(), reason }
    }

    /// Ends the association politely; a PACS that does not answer the release is not an error
    /// of the operation that already succeeded.
    pub fn release(mut self) {
        let r = match self.link.take() {
            Some(Link::Plain(a)) => a.release(),
            Some(Link::Tls(a)) => a.release(),
            None => Ok(()),
        };
        if let Err(e) = r {
            tracing::debug!(pacs = %self.address, "release: {}", chain(&e));
        }
    }

    pub fn abort(mut self) {
        let _ = match self.link.take() {
            Some(Link::Plain(a)) => a.abort(),
            Some(Link::Tls(a)) => a.abort(),
            None => Ok(()),
        };
    }
}

/// Acknowledge what arrives at once instead of after the 40 ms delayed-ACK timer (Linux resets this
/// after some reads, so it is set again before each). A PACS that writes a small message while an
/// earlier one is unacknowledged (Nagle's algorithm) otherwise waits for that timer: C-ECHO took
/// 44 ms instead of 3, a C-GET of 20 images 241 ms instead of 108 (with TCP_NODELAY on our side too: 22).
fn quick_ack(stream: &TcpStream) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let on: libc::c_int = 1;
        // SAFETY: a valid socket descriptor and a c_int option value of the size given.
        let _ = unsafe {
            libc::setsockopt(
                stream.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_QUICKACK,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = stream;
}

pub fn trim_uid(uid: &str) -> &str {
    uid.trim_end_matches(['\0', ' '])
}

fn pdu_name(pdu: &Pdu) -> &'static str {
    match pdu {
        Pdu::Unknown { .. } => "unknown PDU",
        Pdu::AssociationRQ(_) => "A-ASSOCIATE-RQ",
        Pdu::AssociationAC(_) => "A-ASSOCIATE-AC",
        Pdu::AssociationRJ(_) => "A-ASSOCIATE-RJ",
        Pdu::PData { .. } => "P-DATA-TF",
        Pdu::ReleaseRQ => "A-RELEASE-RQ",
        Pdu::ReleaseRP => "A-RELEASE-RP",
        Pdu::AbortRQ { .. } => "A-ABORT",
    }
}

pub fn element(tag: Tag, vr: VR, value: impl Into<PrimitiveValue>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, value.into())
}

/// A command set in implicit VR little endian (PS3.7 6.3.1), with its group length first.
pub fn encode_command(elements: Vec<DataElement<InMemDicomObject>>) -> Result<Vec<u8>, String> {
    let ts = entries::IMPLICIT_VR_LITTLE_ENDIAN.erased();
    let mut obj = InMemDicomObject::from_element_iter(elements);
    let mut body = Vec::new();
    obj.write_dataset_with_ts(&mut body, &ts).map_err(|e| format!("cannot encode the command: {e}"))?;
    obj.put(DataElement::new(tags::COMMAND_GROUP_LENGTH, VR::UL, PrimitiveValue::from(body.len() as u32)));
    let mut out = Vec::with_capacity(body.len() + 12);
    obj.write_dataset_with_ts(&mut out, &ts).map_err(|e| format!("cannot encode the command: {e}"))?;
    Ok(out)
}

/// A command set from the PACS. Its declared lengths are checked first: dicom-rs would allocate
/// whatever a hostile or broken peer declares.
pub fn decode_command(bytes: &[u8]) -> Result<InMemDicomObject, String> {
    let ts = entries::IMPLICIT_VR_LITTLE_ENDIAN.erased();
    checked_read(bytes, &ts, Encoding::IMPLICIT_LE).map_err(|e| format!("unreadable command from the PACS: {e}"))
}

/// The guard's walk, then dicom-rs's reading, its panics as errors.
fn checked_read(bytes: &[u8], ts: &TransferSyntax, encoding: Encoding) -> Result<InMemDicomObject, String> {
    check_data_set(bytes, encoding)?;
    guarded(|| InMemDicomObject::read_dataset_with_ts(bytes, ts).map_err(|e| e.to_string()))
}

/// A data set encoded in a negotiated transfer syntax.
pub fn encode_data(obj: &InMemDicomObject, transfer_syntax: &str) -> Result<Vec<u8>, String> {
    let ts = TransferSyntaxRegistry
        .get(transfer_syntax)
        .ok_or_else(|| format!("unknown transfer syntax {transfer_syntax}"))?;
    let mut out = Vec::new();
    obj.write_dataset_with_ts(&mut out, ts).map_err(|e| format!("cannot encode the data set: {e}"))?;
    Ok(out)
}

/// A data set from the PACS in its negotiated transfer syntax, checked as [`decode_command`] is.
pub fn decode_data(bytes: &[u8], transfer_syntax: &str) -> Result<InMemDicomObject, String> {
    let ts = TransferSyntaxRegistry
        .get(transfer_syntax)
        .ok_or_else(|| format!("unknown transfer syntax {transfer_syntax}"))?;
    // We never propose a deflated syntax, and its bytes cannot be checked before dicom-rs inflates
    // them (a small message can inflate to gigabytes).
    let encoding = Encoding::of_transfer_syntax(transfer_syntax)
        .ok_or_else(|| format!("a deflated data set from the PACS ({transfer_syntax}), which was not offered"))?;
    checked_read(bytes, ts, encoding).map_err(|e| format!("unreadable data set from the PACS: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_round_trips_with_its_group_length() {
        let bytes = encode_command(vec![
            element(tags::AFFECTED_SOP_CLASS_UID, VR::UI, "1.2.840.10008.1.1"),
            element(tags::COMMAND_FIELD, VR::US, command::C_ECHO_RQ),
            element(tags::MESSAGE_ID, VR::US, 7_u16),
            element(tags::COMMAND_DATA_SET_TYPE, VR::US, NO_DATA_SET),
        ])
        .unwrap();
        // The group length counts the bytes after its own element (8 + 4 bytes in implicit VR).
        let length = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
        assert_eq!(length as usize, bytes.len() - 12);
        let back = decode_command(&bytes).unwrap();
        assert_eq!(back.element(tags::MESSAGE_ID).unwrap().to_int::<u16>().unwrap(), 7);
        // UIDs are padded to even length with NUL; read back without it.
        assert_eq!(text_of(&back, tags::AFFECTED_SOP_CLASS_UID).unwrap(), "1.2.840.10008.1.1");
    }
}
