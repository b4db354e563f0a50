//! A PACS that answers with too much: the client refuses it with a protocol error naming the
//! limit, instead of filling memory. The peer is dicom-ul's own acceptor (an independent
//! implementation of the upper layer) on the loopback interface, sending what no real PACS sends.

use dicom_ul::pdu::{PDataValue, PDataValueType};
use dicom_ul::{Pdu, ServerAssociationOptions};
use needle_nav_pacs::{echo, PacsConfig, PacsError};
use std::net::TcpListener;
use std::thread;

const VERIFICATION: &str = "1.2.840.10008.1.1";

/// Accepts one association, reads the C-ECHO request, then sends `answer`'s PDUs.
fn fake_pacs(answer: impl FnOnce() -> Vec<Pdu> + Send + 'static) -> (PacsConfig, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let port = listener.local_addr().expect("local address").port();
    let peer = thread::spawn(move || {
        let (socket, _) = listener.accept().expect("accept");
        let mut association = ServerAssociationOptions::new()
            .accept_any()
            .ae_title("HOSTILE")
            .with_abstract_syntax(VERIFICATION)
            .establish(socket)
            .expect("association");
        let _request = association.receive().expect("the C-ECHO request");
        let pc = association.presentation_contexts()[0].id;
        for mut pdu in answer() {
            if let Pdu::PData { data } = &mut pdu {
                data.iter_mut().for_each(|v| v.presentation_context_id = pc);
            }
            // The client hangs up once it has refused: later sends fail, which is the point.
            if association.send(&pdu).is_err() {
                return;
            }
        }
    });
    let cfg = PacsConfig {
        host: "127.0.0.1".into(),
        port,
        called_ae_title: "HOSTILE".into(),
        timeout_s: 10.0,
        ..PacsConfig::default()
    };
    (cfg, peer)
}

fn command_fragment(data: Vec<u8>, is_last: bool) -> Pdu {
    Pdu::PData {
        data: vec![PDataValue { presentation_context_id: 1, value_type: PDataValueType::Command, is_last, data }],
    }
}

#[test]
fn a_command_that_never_ends_is_refused_at_64_kib() {
    // 16 KB fragments without a last one: 5 of them pass the limit.
    let (cfg, peer) = fake_pacs(|| (0..8).map(|_| command_fragment(vec![0u8; 16 * 1024 - 100], false)).collect());
    let err = echo(&cfg).unwrap_err();
    assert!(
        matches!(&err, PacsError::Protocol { reason, .. } if reason == "a command set from the PACS exceeds 65536 bytes"),
        "{err}"
    );
    peer.join().expect("the fake PACS");
}

#[test]
fn a_command_declaring_a_gigabyte_is_refused_before_it_is_decoded() {
    // (0000,0100) CommandField declaring 1 GiB in 12 bytes: dicom-rs alone would allocate it.
    let mut command = vec![0x00, 0x00, 0x00, 0x01];
    command.extend_from_slice(&(1u32 << 30).to_le_bytes());
    command.extend_from_slice(&[0x30, 0x80, 0, 0]);
    let (cfg, peer) = fake_pacs(move || vec![command_fragment(command, true)]);
    let err = echo(&cfg).unwrap_err();
    let expected = "unreadable command from the PACS: element (0000,0100) declares 1073741824 bytes but only 4 remain in the data set";
    assert!(matches!(&err, PacsError::Protocol { reason, .. } if reason == expected), "{err}");
    peer.join().expect("the fake PACS");
}
