//! A guard in front of dicom-rs (dicom-parser 0.10) for input from outside: files from disk or a
//! PACS, data sets from a PACS association.
//!
//! dicom-rs allocates and zero-fills a value's declared length before it reads the value, so one
//! corrupt length field in a 3 KB file cost up to 4 GiB and minutes (found by the `dicom_series`
//! fuzz target), and a few hostile layouts make it loop or grow without end (found by the
//! `dicom_seg` target). [`check_file`] and [`check_data_set`] walk the element headers the way
//! dicom-parser does and refuse what would do that, before dicom-rs sees the bytes; [`guarded`]
//! turns a panic inside dicom-rs into an error. The walk must read the layout exactly as the parser
//! does: where the two part ways a gap opens, which the fuzz targets are there to find.

use std::panic::{catch_unwind, AssertUnwindSafe};

const UNDEFINED: u32 = u32::MAX;

/// How a data set is encoded (PS3.5 7.1), as its transfer syntax says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoding {
    pub explicit_vr: bool,
    pub big_endian: bool,
}

impl Encoding {
    /// Explicit VR little endian: the file meta, and every transfer syntax but three.
    pub const EXPLICIT_LE: Encoding = Encoding { explicit_vr: true, big_endian: false };
    /// Implicit VR little endian: DIMSE command sets, and the default transfer syntax.
    pub const IMPLICIT_LE: Encoding = Encoding { explicit_vr: false, big_endian: false };

    /// The encoding of a transfer syntax's data set; None for deflated ones (their bytes are not
    /// the data set: it has to be inflated first).
    pub fn of_transfer_syntax(uid: &str) -> Option<Encoding> {
        // Trimmed as dicom-object trims the file meta's (a fuzzed file padded it with a form feed).
        match uid.trim_end_matches(|c: char| c.is_whitespace() || c == '\0') {
            "1.2.840.10008.1.2" => Some(Encoding::IMPLICIT_LE),
            "1.2.840.10008.1.2.2" => Some(Encoding { explicit_vr: true, big_endian: true }),
            "1.2.840.10008.1.2.1.99" | "1.2.840.10008.1.2.4.95" => None,
            _ => Some(Encoding::EXPLICIT_LE),
        }
    }
}

/// Checks a DICOM file (with or without the 128-byte preamble) before dicom-rs reads it: every
/// declared length must fit in what is left of the file, binary values must be whole values, and
/// every undefined-length sequence and item must be closed. Walks the file meta as dicom-object
/// reads it (up to its group length), then the data set in its transfer syntax as dicom-parser
/// reads it, up to the pixel data, or through it with `through_pixel_data`; a deflated data set is
/// inflated first (up to [`MAX_INFLATED_BYTES`]). Where dicom-rs would stop with an error of its
/// own (a malformed header, no file meta), the walk stops and leaves the verdict to dicom-rs.
/// Err: what is wrong, naming the element.
pub fn check_file(bytes: &[u8], through_pixel_data: bool) -> Result<(), String> {
    let at = if bytes.get(128..132) == Some(b"DICM") {
        132
    } else if bytes.starts_with(b"DICM") {
        4
    } else {
        // No file meta: dicom-object refuses the file; the walk reads it as a data set anyway.
        return DataSetWalk::new(bytes, 0, Encoding::EXPLICIT_LE, through_pixel_data, "file").run();
    };
    let Some((data_set_at, syntax)) = walk_file_meta(bytes, at)? else {
        return Ok(()); // a file meta dicom-object itself refuses
    };
    match Encoding::of_transfer_syntax(&syntax) {
        Some(encoding) => DataSetWalk::new(bytes, data_set_at, encoding, through_pixel_data, "file").run(),
        None => {
            // Deflated: dicom-rs inflates the data set (raw deflate) and reads it in explicit VR
            // little endian; so does the walk, up to a limit (a few KB can inflate to gigabytes).
            let inflated = inflate(&bytes[data_set_at.min(bytes.len())..])?;
            DataSetWalk::new(&inflated, 0, Encoding::EXPLICIT_LE, through_pixel_data, "inflated data set").run()
        }
    }
}

/// The most a deflated data set may inflate to: 1 GiB, as much as the PACS client takes.
pub const MAX_INFLATED_BYTES: u64 = 1 << 30;

fn inflate(compressed: &[u8]) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::DeflateDecoder::new(compressed)
        .take(MAX_INFLATED_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("the deflated data set does not inflate: {e}"))?;
    if out.len() as u64 > MAX_INFLATED_BYTES {
        return Err(format!("the deflated data set inflates to more than {MAX_INFLATED_BYTES} bytes"));
    }
    Ok(out)
}

/// Checks a data set without file meta (a DIMSE command set, or a data set received on an
/// association in its negotiated transfer syntax) the way [`check_file`] checks a file's.
pub fn check_data_set(bytes: &[u8], encoding: Encoding) -> Result<(), String> {
    DataSetWalk::new(bytes, 0, encoding, true, "data set").run()
}

/// Checks that `len` bytes from `from` are in `bytes` (the `whole` file or data set).
fn fits(bytes: &[u8], (group, element): (u16, u16), len: u32, from: usize, whole: &str) -> Result<(), String> {
    let remaining = bytes.len().saturating_sub(from);
    if len as usize > remaining {
        return Err(format!(
            "element ({group:04X},{element:04X}) declares {len} bytes but only {remaining} remain in the {whole}"
        ));
    }
    Ok(())
}

/// The file meta as dicom-object 0.10 reads it: (0002,0000) first, then elements (explicit VR
/// little endian) until its group length is consumed; the data set starts where that reading
/// stopped, whatever group comes next. Ok(None): a meta dicom-object refuses on its own.
fn walk_file_meta(bytes: &[u8], at: usize) -> Result<Option<(usize, String)>, String> {
    let walk = ElementWalk { bytes, big_endian: false, explicit_vr: true };
    let Some(first) = walk.header(at) else { return Ok(None) };
    if (first.group, first.element, first.len) != (0x0002, 0x0000, 4) {
        return Ok(None);
    }
    let Some(group_length) = walk.u32_at(at + first.size) else { return Ok(None) };
    let mut at = at + first.size + 4;
    let mut consumed = 0u64;
    let mut syntax = String::new();
    while consumed < u64::from(group_length) {
        let Some(h) = walk.header(at) else { return Ok(None) };
        if h.len == UNDEFINED {
            return Ok(None);
        }
        let value_at = at + h.size;
        fits(bytes, (h.group, h.element), h.len, value_at, "file")?;
        if (h.group, h.element) == (0x0002, 0x0010) {
            syntax = String::from_utf8_lossy(&bytes[value_at..value_at + h.len as usize]).into_owned();
        }
        at = value_at + h.len as usize;
        consumed += (h.size + h.len as usize) as u64;
    }
    Ok(Some((at, syntax)))
}

/// An open sequence or item, as dicom-parser's `DataSetReader` keeps them.
struct Open {
    item: bool,
    /// None: undefined length, closed by a delimiter.
    len: Option<u32>,
    /// Where its value starts.
    base: usize,
    pixel_data: bool,
}

/// dicom-parser 0.10's `DataSetReader` state machine, reading positions and declared lengths only:
/// at sequence level it expects item headers; at element level, element headers, where only the
/// item delimiter (FFFE,E00D) is special (any other FFFE tag is a plain element with a value) and
/// an undefined-length element is a sequence whatever its VR, unless it is the pixel data.
struct DataSetWalk<'a> {
    walk: ElementWalk<'a>,
    at: usize,
    through_pixel_data: bool,
    whole: &'a str,
    open: Vec<Open>,
    in_sequence: bool,
    delimiter_check_pending: bool,
}

impl<'a> DataSetWalk<'a> {
    fn new(bytes: &'a [u8], at: usize, encoding: Encoding, through_pixel_data: bool, whole: &'a str) -> Self {
        DataSetWalk {
            walk: ElementWalk { bytes, big_endian: encoding.big_endian, explicit_vr: encoding.explicit_vr },
            at,
            through_pixel_data,
            whole,
            open: Vec::new(),
            in_sequence: false,
            delimiter_check_pending: false,
        }
    }

    fn fits(&self, tag: (u16, u16), len: u32, from: usize) -> Result<(), String> {
        fits(self.walk.bytes, tag, len, from, self.whole)
    }

    fn push(&mut self, item: bool, len: u32, pixel_data: bool) {
        let len = (len != UNDEFINED).then_some(len);
        self.open.push(Open { item, len, base: self.at, pixel_data });
    }

    fn run(mut self) -> Result<(), String> {
        loop {
            if self.delimiter_check_pending {
                // A defined-length sequence or item ends where its length says.
                match self.open.last() {
                    Some(Open { len: Some(len), base, item, .. }) => {
                        let end = *base as u64 + u64::from(*len);
                        if end == self.at as u64 {
                            self.in_sequence = *item;
                            self.open.pop();
                            continue;
                        }
                        if end < self.at as u64 {
                            return Ok(()); // dicom-parser stops: inconsistent sequence end
                        }
                        self.delimiter_check_pending = false;
                    }
                    _ => self.delimiter_check_pending = false,
                }
            }
            if self.in_sequence {
                // An item header: 8 bytes, tag and length, in any encoding.
                let Some((group, element, len)) = self.item_header(self.at) else {
                    return self.at_the_end();
                };
                match (group, element) {
                    (0xFFFE, 0xE000) => {
                        let Some(pixel_data) = self.open.last().map(|o| o.pixel_data) else { return Ok(()) };
                        if len != UNDEFINED {
                            self.fits((group, element), len, self.at + 8)?;
                        }
                        self.at += 8;
                        self.in_sequence = false;
                        self.push(true, len, pixel_data);
                        self.delimiter_check_pending |= len == 0;
                    }
                    (0xFFFE, 0xE00D) => {
                        self.at += 8;
                        self.open.pop();
                        self.in_sequence = true;
                        self.delimiter_check_pending = true;
                    }
                    (0xFFFE, 0xE0DD) => {
                        self.at += 8;
                        self.open.pop();
                        self.in_sequence = false;
                        self.delimiter_check_pending = true;
                    }
                    _ => return Ok(()), // dicom-parser stops: not an item
                }
                continue;
            }
            if let Some(Open { item: true, pixel_data: true, len, .. }) = self.open.last() {
                // A pixel data fragment (or the offset table): raw bytes of the item's length.
                let Some(len) = *len else { return Ok(()) }; // dicom-parser stops
                self.at += len as usize; // checked when its item header was read
                self.delimiter_check_pending = true;
                continue;
            }
            let Some(h) = self.walk.header(self.at) else {
                return self.at_the_end();
            };
            let value_at = self.at + h.size;
            let vr = h.vr;
            if (h.group, h.element) == (0x7FE0, 0x0010) && !self.through_pixel_data {
                return Ok(());
            }
            if h.len != UNDEFINED {
                self.fits((h.group, h.element), h.len, value_at)?;
            }
            if vr == dicom_core::VR::SQ {
                self.at = value_at;
                self.in_sequence = true;
                self.push(false, h.len, false);
                self.delimiter_check_pending |= h.len == 0;
            } else if (h.group, h.element) == (0xFFFE, 0xE00D) {
                self.at = value_at;
                if !self.open.is_empty() {
                    self.in_sequence = true;
                    self.open.pop();
                    self.delimiter_check_pending = true;
                }
            } else if (h.group, h.element) == (0x7FE0, 0x0010) && h.len == UNDEFINED {
                // Encapsulated pixel data: a sequence of fragments, the offset table first.
                self.at = value_at;
                self.push(false, UNDEFINED, true);
                self.in_sequence = true;
            } else if h.len == UNDEFINED {
                self.at = value_at;
                self.in_sequence = true;
                self.push(false, UNDEFINED, false);
            } else {
                // dicom-parser reads whole binary values only (`len / size` of them) but counts
                // `len` bytes as read, so a remainder puts the next header off by its size.
                let size = value_size(vr);
                if h.len as usize % size != 0 {
                    return Err(format!(
                        "element ({:04X},{:04X}) of VR {vr} declares {} bytes, not a whole number of {size}-byte values",
                        h.group, h.element, h.len
                    ));
                }
                self.at = value_at + h.len as usize;
                self.delimiter_check_pending = true;
            }
        }
    }

    /// Where the input ends: dicom-parser ends there too, but a sequence or item of undefined
    /// length still open makes dicom-object 0.10 loop without end, growing (found by fuzzing).
    fn at_the_end(&self) -> Result<(), String> {
        let open_undefined = self.open.iter().filter(|o| o.len.is_none()).count();
        if open_undefined > 0 {
            return Err(format!(
                "{open_undefined} sequence(s) or item(s) of undefined length are not closed at the end of the {}",
                self.whole
            ));
        }
        Ok(())
    }

    fn item_header(&self, at: usize) -> Option<(u16, u16, u32)> {
        Some((self.walk.u16_at(at)?, self.walk.u16_at(at + 2)?, self.walk.u32_at(at + 4)?))
    }
}

/// The bytes of one value of a binary VR (1 for the others: strings and bytes are read whole).
fn value_size(vr: dicom_core::VR) -> usize {
    use dicom_core::VR::*;
    match vr {
        US | SS | OW => 2,
        AT | UL | SL | FL | OF | OL => 4,
        FD | OD | SV | UV | OV => 8,
        _ => 1,
    }
}

struct ElementHeader {
    group: u16,
    element: u16,
    /// The VR dicom-parser reads the value as (see [`ElementWalk::header`]).
    vr: dicom_core::VR,
    len: u32,
    /// Bytes of the header itself.
    size: usize,
}

struct ElementWalk<'a> {
    bytes: &'a [u8],
    big_endian: bool,
    explicit_vr: bool,
}

impl ElementWalk<'_> {
    fn u16_at(&self, at: usize) -> Option<u16> {
        let b: [u8; 2] = self.bytes.get(at..at + 2)?.try_into().ok()?;
        Some(if self.big_endian { u16::from_be_bytes(b) } else { u16::from_le_bytes(b) })
    }

    fn u32_at(&self, at: usize) -> Option<u32> {
        let b: [u8; 4] = self.bytes.get(at..at + 4)?.try_into().ok()?;
        Some(if self.big_endian { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) })
    }

    /// The element header at `at` (PS3.5 7.1); None where the file ends. Its VR is the one
    /// dicom-parser reads the value as: in explicit VR the one written (an unknown one as UN, with
    /// a 4-byte length); in implicit VR and for FFFE tags, OW for pixel and overlay data, else the
    /// dictionary's (the first of "US or SS" and the like), UN for an unknown tag.
    fn header(&self, at: usize) -> Option<ElementHeader> {
        use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
        use dicom_core::VR::{self, *};
        let (group, element) = (self.u16_at(at)?, self.u16_at(at + 2)?);
        if group == 0xFFFE || !self.explicit_vr {
            let vr = if (group, element) == (0x7FE0, 0x0010) || (group >> 8 == 0x60 && element == 0x3000) {
                OW
            } else {
                dicom_dictionary_std::StandardDataDictionary
                    .by_tag(dicom_core::Tag(group, element))
                    .map(|entry| entry.vr().relaxed())
                    .unwrap_or(UN)
            };
            return Some(ElementHeader { group, element, vr, len: self.u32_at(at + 4)?, size: 8 });
        }
        let written: [u8; 2] = self.bytes.get(at + 4..at + 6)?.try_into().ok()?;
        let vr = VR::from_binary(written).unwrap_or(UN);
        let short = matches!(
            vr,
            AE | AS | AT | CS | DA | DS | DT | FL | FD | IS | LO | LT | PN | SH | SL | SS | ST | TM | UI | UL | US
        );
        if short {
            Some(ElementHeader { group, element, vr, len: self.u16_at(at + 6)? as u32, size: 8 })
        } else {
            Some(ElementHeader { group, element, vr, len: self.u32_at(at + 8)?, size: 12 })
        }
    }
}

/// Runs third-party parsing so that a panic on a malformed file becomes an error naming the file.
pub fn guarded<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown".into());
            Err(format!("the DICOM parser failed ({msg})"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An element header in explicit VR little endian with a 4-byte length.
    fn explicit_long(group: u16, element: u16, vr: &[u8; 2], len: u32) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&group.to_le_bytes());
        b.extend_from_slice(&element.to_le_bytes());
        b.extend_from_slice(vr);
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&len.to_le_bytes());
        b
    }

    #[test]
    fn an_item_too_long_for_the_file_is_refused_inside_an_undefined_length_element_of_any_vr() {
        // Found by the dicom_seg fuzz target: dicom-parser 0.10 reads an undefined-length element
        // that is not the pixel data as a sequence whatever its VR, and then allocated a 4 GB item;
        // the walk took the element for pixel data fragments and skipped the item.
        for vr in [b"UN", b"OB", b"SQ"] {
            let mut bytes = Vec::new();
            bytes.extend_from_slice(&[0x01, 0x00, 0x00, 0x00]); // (0001,0000)
            bytes.extend_from_slice(vr);
            bytes.extend_from_slice(&[0, 0, 0xFF, 0xFF, 0xFF, 0xFF]); // undefined length
            bytes.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0]); // an item ...
            bytes.extend_from_slice(&0xFD00_FFFFu32.to_le_bytes()); // ... of 4 GB
            bytes.extend_from_slice(&[0u8; 64]);
            let err = check_file(&bytes, true).unwrap_err();
            assert!(err.contains("(FFFE,E000) declares 4244701183 bytes but only 64 remain"), "{err}");
        }
        // The pixel data of undefined length is the one that holds fragments (raw bytes, walked past).
        let mut bytes = vec![0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF];
        bytes.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 4, 0, 0, 0, 0xFE, 0xFF, 0x00, 0xE0]); // 4-byte fragment
        bytes.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        assert_eq!(check_file(&bytes, true), Ok(()));
    }

    #[test]
    fn a_command_set_declaring_more_than_it_holds_is_refused_in_implicit_vr() {
        // (0000,0002) Affected SOP Class UID declaring 1 GB, then 10 bytes: as a hostile PACS could send.
        let mut bytes = vec![0x00, 0x00, 0x02, 0x00];
        bytes.extend_from_slice(&0x4000_0000u32.to_le_bytes());
        bytes.extend_from_slice(b"1.2.3.4.5\0");
        let err = check_data_set(&bytes, Encoding::IMPLICIT_LE).unwrap_err();
        assert_eq!(err, "element (0000,0002) declares 1073741824 bytes but only 10 remain in the data set");
        // The same bytes with a true length pass.
        bytes[4..8].copy_from_slice(&10u32.to_le_bytes());
        assert_eq!(check_data_set(&bytes, Encoding::IMPLICIT_LE), Ok(()));
    }

    #[test]
    fn big_endian_lengths_are_read_big_endian() {
        // (0010,0010) PN of 4 bytes in explicit VR big endian: read little endian it would declare 1024.
        let mut bytes = vec![0x00, 0x10, 0x00, 0x10, b'P', b'N', 0x00, 0x04];
        bytes.extend_from_slice(b"A^B ");
        let be = Encoding::of_transfer_syntax("1.2.840.10008.1.2.2\0").unwrap();
        assert_eq!(check_data_set(&bytes, be), Ok(()));
        assert!(check_data_set(&bytes, Encoding::EXPLICIT_LE).unwrap_err().contains("declares 1024 bytes"));
    }

    #[test]
    fn an_unclosed_undefined_length_sequence_is_refused_and_a_closed_one_passes() {
        let mut bytes = explicit_long(0x0008, 0x1115, b"SQ", UNDEFINED);
        bytes.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]); // item, undefined length
        let err = check_data_set(&bytes, Encoding::EXPLICIT_LE).unwrap_err();
        assert_eq!(err, "2 sequence(s) or item(s) of undefined length are not closed at the end of the data set");
        bytes.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]); // item delimitation
        bytes.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]); // sequence delimitation
        assert_eq!(check_data_set(&bytes, Encoding::EXPLICIT_LE), Ok(()));
    }

    #[test]
    fn a_binary_value_of_a_length_that_is_not_whole_values_is_refused() {
        // Found by the dicom_seg fuzz target: (0008,0100) rewritten as SL of 6 bytes. dicom-parser
        // read one 4-byte value, counted 6, and read the next header 2 bytes early.
        let mut bytes = vec![0x08, 0x00, 0x00, 0x01, b'S', b'L', 6, 0];
        bytes.extend_from_slice(&[1, 0, 0, 0, 2, 0]);
        let err = check_data_set(&bytes, Encoding::EXPLICIT_LE).unwrap_err();
        assert_eq!(err, "element (0008,0100) of VR SL declares 6 bytes, not a whole number of 4-byte values");
        // In implicit VR the dictionary's VR counts: (0028,0010) Rows is US.
        let mut bytes = vec![0x28, 0x00, 0x10, 0x00, 3, 0, 0, 0, 0, 2, 0];
        assert!(check_data_set(&bytes, Encoding::IMPLICIT_LE).unwrap_err().contains("of VR US declares 3 bytes"));
        bytes[4] = 2;
        bytes.pop();
        assert_eq!(check_data_set(&bytes, Encoding::IMPLICIT_LE), Ok(()));
        // Strings and bytes of odd length are read whole: accepted as dicom-parser accepts them.
        let bytes = [0x08, 0x00, 0x3E, 0x10, b'L', b'O', 3, 0, b'a', b'b', b'c'];
        assert_eq!(check_data_set(&bytes, Encoding::EXPLICIT_LE), Ok(()));
    }

    #[test]
    fn a_delimiter_tag_among_elements_is_an_element_with_a_value_as_dicom_parser_reads_it() {
        // Found by the dicom_seg fuzz target: inside an item, dicom-parser treats only (FFFE,E00D)
        // as a delimiter; (FFFE,E0DD) there is a plain element (VR UN) whose 1024-byte value it
        // reads, and the header after it declared 4 GB. The walk took it for a sequence end.
        let mut bytes = explicit_long(0x0020, 0x9113, b"SQ", UNDEFINED);
        bytes.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]); // item
        bytes.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0]);
        bytes.extend_from_slice(&1024u32.to_le_bytes());
        bytes.extend_from_slice(&[0u8; 100]);
        let err = check_data_set(&bytes, Encoding::EXPLICIT_LE).unwrap_err();
        assert_eq!(err, "element (FFFE,E0DD) declares 1024 bytes but only 100 remain in the data set");
    }

    #[test]
    fn defined_length_items_end_where_their_length_says() {
        // A sequence of one 14-byte item holding (0008,0100) SH "113076", then an element after
        // the sequence: all of it is walked, nothing refused.
        let mut bytes = explicit_long(0x0008, 0x9215, b"SQ", UNDEFINED);
        bytes.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 14, 0, 0, 0]);
        bytes.extend_from_slice(&[0x08, 0x00, 0x00, 0x01, b'S', b'H', 6, 0]);
        bytes.extend_from_slice(b"113076");
        bytes.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        bytes.extend_from_slice(&[0x08, 0x00, 0x3E, 0x10, b'L', b'O', 2, 0, b'o', b'k']);
        assert_eq!(check_data_set(&bytes, Encoding::EXPLICIT_LE), Ok(()));
        // The element after the sequence declaring more than is left is seen, so the walk was in step.
        let n = bytes.len();
        bytes[n - 4] = 200;
        assert!(check_data_set(&bytes, Encoding::EXPLICIT_LE).unwrap_err().contains("(0008,103E) declares 200 bytes"));
    }

    #[test]
    fn a_deflated_file_is_walked_inflated() {
        use std::io::Write;
        // File meta (explicit VR LE) naming the deflated syntax, then a deflated data set whose
        // (0008,103E) declares 200 bytes and holds 2.
        let syntax = b"1.2.840.10008.1.2.1.99\0";
        let mut meta = Vec::new();
        meta.extend_from_slice(&[0x02, 0x00, 0x10, 0x00, b'U', b'I', syntax.len() as u8, 0]);
        meta.extend_from_slice(syntax);
        let mut file = vec![0u8; 128];
        file.extend_from_slice(b"DICM");
        file.extend_from_slice(&[0x02, 0x00, 0x00, 0x00, b'U', b'L', 4, 0]);
        file.extend_from_slice(&(meta.len() as u32).to_le_bytes());
        file.extend_from_slice(&meta);
        let deflate = |data_set: &[u8]| {
            let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
            z.write_all(data_set).unwrap();
            z.finish().unwrap()
        };
        let mut bad = file.clone();
        bad.extend_from_slice(&deflate(&[0x08, 0x00, 0x3E, 0x10, b'L', b'O', 200, 0, b'o', b'k']));
        let err = check_file(&bad, true).unwrap_err();
        assert_eq!(err, "element (0008,103E) declares 200 bytes but only 2 remain in the inflated data set");
        let mut good = file.clone();
        good.extend_from_slice(&deflate(&[0x08, 0x00, 0x3E, 0x10, b'L', b'O', 2, 0, b'o', b'k']));
        assert_eq!(check_file(&good, true), Ok(()));
        // Bytes that are not deflate data are refused by name.
        let mut garbage = file;
        garbage.extend_from_slice(&[0xFF; 16]);
        assert!(check_file(&garbage, true).unwrap_err().starts_with("the deflated data set does not inflate"));
    }

    #[test]
    fn deflated_syntaxes_have_no_encoding_of_their_bytes() {
        assert_eq!(Encoding::of_transfer_syntax("1.2.840.10008.1.2.1.99"), None);
        assert_eq!(Encoding::of_transfer_syntax("1.2.840.10008.1.2"), Some(Encoding::IMPLICIT_LE));
        assert_eq!(Encoding::of_transfer_syntax("1.2.840.10008.1.2\0\0\x0c\0 \0"), Some(Encoding::IMPLICIT_LE));
        assert_eq!(Encoding::of_transfer_syntax("1.2.840.10008.1.2.4.90"), Some(Encoding::EXPLICIT_LE));
    }

    #[test]
    fn a_panic_inside_the_parser_becomes_an_error() {
        let r: Result<(), String> = guarded(|| panic!("index out of bounds"));
        assert_eq!(r, Err("the DICOM parser failed (index out of bounds)".into()));
    }
}
