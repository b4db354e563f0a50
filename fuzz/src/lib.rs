//! Helpers shared by the fuzz targets: a scratch folder per process (the parsers read files,
//! not bytes), splitting one input into several files, and a panic hook for parsers whose
//! panics the library deliberately catches.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Separates the files packed into one fuzz input (several DICOM slices, metadata.yaml + MCAP).
/// Also in the dictionaries, so that mutations can add and remove files.
pub const FILE_SEPARATOR: &[u8] = b"\n--NNFUZZ-FILE--\n";

/// Splits `data` at every [`FILE_SEPARATOR`] (at most `max` parts; the rest stays in the last).
pub fn split_files(data: &[u8], max: usize) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let mut rest = data;
    while parts.len() + 1 < max {
        match rest.windows(FILE_SEPARATOR.len()).position(|w| w == FILE_SEPARATOR) {
            Some(at) => {
                parts.push(&rest[..at]);
                rest = &rest[at + FILE_SEPARATOR.len()..];
            }
            None => break,
        }
    }
    parts.push(rest);
    parts
}

/// A scratch folder for this process under the temp dir (tmpfs when TMPDIR points there),
/// emptied on every call: each input starts from nothing.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("needle_nav_fuzz_{name}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("cannot create the fuzz scratch folder");
    dir
}

pub fn write(path: &Path, bytes: &[u8]) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("cannot create a scratch subfolder");
    }
    std::fs::write(path, bytes).expect("cannot write a scratch file");
}

static CAUGHT: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// libfuzzer-sys aborts on every panic, even one the library catches on purpose (the DICOM
/// reader runs dicom-rs, the bag reader mcap, under `catch_unwind` and report their panics as a
/// bad file). This hook lets such panics unwind; one that escapes the target still aborts in
/// libfuzzer-sys and is a crash. Each distinct panic location is printed once, so that
/// third-party panics stay visible.
pub fn let_caught_panics_unwind() {
    std::panic::set_hook(Box::new(|info| {
        let at = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        let mut seen = CAUGHT.lock().unwrap_or_else(|e| e.into_inner());
        if seen.insert(at.clone()) {
            eprintln!("needle_nav_fuzz: panic at {at} (caught by the library unless a crash follows): {info}");
        }
    }));
}

/// A cursor over the fuzz bytes for targets that build structured input (tracker samples):
/// reads past the end as zeros, so every input is usable.
pub struct Bytes<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Bytes<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Bytes { data, at: 0 }
    }
    pub fn is_empty(&self) -> bool {
        self.at >= self.data.len()
    }
    pub fn u8(&mut self) -> u8 {
        let b = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    pub fn i16(&mut self) -> i16 {
        self.u16() as i16
    }
    pub fn f64(&mut self) -> f64 {
        let mut b = [0u8; 8];
        for x in &mut b {
            *x = self.u8();
        }
        f64::from_le_bytes(b)
    }
}
