//! DIMSE messages from a PACS (`pacs_message`), as the PACS client decodes them: a command set
//! (implicit VR little endian) and a data set in a negotiated transfer syntax (a C-FIND
//! identifier, a C-STORE sub-operation of a C-GET). Input: byte 0 picks the transfer syntax,
//! bytes 1-2 (little endian) the command's length; then the command, then the data set.
#![no_main]
use libfuzzer_sys::fuzz_target;
use needle_nav_pacs::association::{decode_command, decode_data, text_of};

const SYNTAXES: [&str; 5] = [
    "1.2.840.10008.1.2",        // implicit VR little endian
    "1.2.840.10008.1.2.1",      // explicit VR little endian
    "1.2.840.10008.1.2.2",      // explicit VR big endian (retired, still offered by old PACS)
    "1.2.840.10008.1.2.1.99",   // deflated
    "1.2.840.10008.1.2.4.90",   // JPEG 2000 lossless (encapsulated pixel data)
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else { return };
    let Some(len) = rest.get(..2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize) else { return };
    let rest = &rest[2..];
    let (command, data_set) = rest.split_at(len.min(rest.len()));
    if let Ok(cmd) = decode_command(command) {
        let _ = text_of(&cmd, dicom_dictionary_std::tags::AFFECTED_SOP_INSTANCE_UID);
    }
    let syntax = SYNTAXES[pick as usize % SYNTAXES.len()];
    if let Ok(obj) = decode_data(data_set, syntax) {
        let _ = text_of(&obj, dicom_dictionary_std::tags::SERIES_INSTANCE_UID);
    }
});
