//! The four operations needle_nav needs from a PACS, each on its own association: C-ECHO (is it
//! there and does it accept us), C-FIND at series level (which series a study has, and which
//! study a series is in), C-GET of one series into a folder (the images come back on the same
//! association, so no inbound port is needed as C-MOVE would), C-STORE of one file.

use crate::association::{command, element, text_of, Association, Proposal, EXPLICIT_VR_LE, IMPLICIT_VR_LE};
use crate::config::PacsConfig;
use crate::error::PacsError;
use crate::status::{status_meaning, StatusClass};
use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const VERIFICATION: &str = "1.2.840.10008.1.1";
pub const STUDY_ROOT_FIND: &str = "1.2.840.10008.5.1.4.1.2.2.1";
pub const STUDY_ROOT_GET: &str = "1.2.840.10008.5.1.4.1.2.2.3";
/// The image storage classes a planning CT comes in; C-GET asks to receive these.
pub const CT_STORAGE_CLASSES: [&str; 2] = ["1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1"];
/// Transfer syntaxes we accept images in (needle_nav_imaging decodes each of them).
pub const IMAGE_TRANSFER_SYNTAXES: [&str; 7] = [
    EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
    "1.2.840.10008.1.2.4.90", // JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91", // JPEG 2000
    "1.2.840.10008.1.2.4.70", // JPEG lossless, first-order prediction
    "1.2.840.10008.1.2.4.57", // JPEG lossless
    "1.2.840.10008.1.2.5",    // RLE lossless
];

/// A series as the PACS describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesInfo {
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub modality: String,
    pub description: String,
    pub number: String,
    /// NumberOfSeriesRelatedInstances, when the PACS gives it.
    pub instances: Option<u32>,
}

/// What a C-GET brought.
#[derive(Debug, Clone, PartialEq)]
pub struct Retrieved {
    pub folder: PathBuf,
    pub files: Vec<PathBuf>,
    /// Sub-operations that ended with a warning (the images are there).
    pub warnings: u32,
    pub seconds: f64,
}

/// What a C-STORE did.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub sop_instance_uid: String,
    /// The PACS's warning status, if it stored with one.
    pub warning: Option<String>,
}

fn find_and_get_contexts() -> Vec<Proposal> {
    vec![Proposal {
        abstract_syntax: STUDY_ROOT_FIND.into(),
        transfer_syntaxes: vec![EXPLICIT_VR_LE.into(), IMPLICIT_VR_LE.into()],
        we_store: false,
    }]
}

/// C-ECHO: the round trip time when the PACS accepts us and answers success.
pub fn echo(cfg: &PacsConfig) -> Result<Duration, PacsError> {
    let started = Instant::now();
    let op = "C-ECHO";
    let proposals = [Proposal {
        abstract_syntax: VERIFICATION.into(),
        transfer_syntaxes: vec![EXPLICIT_VR_LE.into(), IMPLICIT_VR_LE.into()],
        we_store: false,
    }];
    let mut a = Association::open(cfg, &proposals, op)?;
    let (pc, _) = a.context_for(VERIFICATION).ok_or_else(|| no_context(&a, op))?;
    let id = a.next_message_id();
    a.send_message(
        pc,
        vec![
            element(tags::AFFECTED_SOP_CLASS_UID, VR::UI, VERIFICATION),
            element(tags::COMMAND_FIELD, VR::US, command::C_ECHO_RQ),
            element(tags::MESSAGE_ID, VR::US, id),
        ],
        None,
        op,
    )?;
    let rsp = a.receive_message(op)?;
    let status = rsp.u16(tags::STATUS).ok_or_else(|| a.protocol(op, "C-ECHO response without a status".into()))?;
    check_final(&a, op, status, rsp.text(tags::ERROR_COMMENT))?;
    a.release();
    Ok(started.elapsed())
}

/// C-FIND at series level: the series of a study (`series` empty), or the series with this UID
/// in whichever study holds it (`study` empty), or both given.
pub fn find_series(cfg: &PacsConfig, study: &str, series: &str) -> Result<Vec<SeriesInfo>, PacsError> {
    let op = "C-FIND";
    let mut a = Association::open(cfg, &find_and_get_contexts(), op)?;
    let (pc, ts) = a.context_for(STUDY_ROOT_FIND).ok_or_else(|| no_context(&a, op))?;
    let uid_or_empty = |v: &str| if v.is_empty() { PrimitiveValue::Empty } else { PrimitiveValue::from(v) };
    let identifier = InMemDicomObject::from_element_iter([
        DataElement::new(tags::QUERY_RETRIEVE_LEVEL, VR::CS, PrimitiveValue::from("SERIES")),
        DataElement::new(tags::STUDY_INSTANCE_UID, VR::UI, uid_or_empty(study)),
        DataElement::new(tags::SERIES_INSTANCE_UID, VR::UI, uid_or_empty(series)),
        DataElement::new(tags::MODALITY, VR::CS, PrimitiveValue::Empty),
        DataElement::new(tags::SERIES_DESCRIPTION, VR::LO, PrimitiveValue::Empty),
        DataElement::new(tags::SERIES_NUMBER, VR::IS, PrimitiveValue::Empty),
        DataElement::new(tags::NUMBER_OF_SERIES_RELATED_INSTANCES, VR::IS, PrimitiveValue::Empty),
    ]);
    let data = crate::association::encode_data(&identifier, &ts).map_err(|r| a.protocol(op, r))?;
    let id = a.next_message_id();
    a.send_message(
        pc,
        vec![
            element(tags::AFFECTED_SOP_CLASS_UID, VR::UI, STUDY_ROOT_FIND),
            element(tags::COMMAND_FIELD, VR::US, command::C_FIND_RQ),
            element(tags::MESSAGE_ID, VR::US, id),
            element(tags::PRIORITY, VR::US, 0_u16),
        ],
        Some(&data),
        op,
    )?;
    let mut found = Vec::new();
    loop {
        let rsp = a.receive_message(op)?;
        let status = rsp.u16(tags::STATUS).ok_or_else(|| a.protocol(op, "C-FIND response without a status".into()))?;
        if status_meaning(status).0 == StatusClass::Pending {
            let bytes = rsp.data.as_deref().unwrap_or_default();
            let m = crate::association::decode_data(bytes, &ts).map_err(|r| a.protocol(op, r))?;
            let text = |tag| text_of(&m, tag).unwrap_or_default();
            found.push(SeriesInfo {
                study_instance_uid: text(tags::STUDY_INSTANCE_UID),
                series_instance_uid: text(tags::SERIES_INSTANCE_UID),
                modality: text(tags::MODALITY),
                description: text(tags::SERIES_DESCRIPTION),
                number: text(tags::SERIES_NUMBER),
                instances: text(tags::NUMBER_OF_SERIES_RELATED_INSTANCES).trim().parse().ok(),
            });
            continue;
        }
        check_final(&a, op, status, rsp.text(tags::ERROR_COMMENT))?;
        break;
    }
    a.release();
    Ok(found)
}

/// Where a series is: the PACS's description of it, or why it cannot be taken from `study`.
pub fn locate_series(cfg: &PacsConfig, study: &str, series: &str) -> Result<SeriesInfo, PacsError> {
    // Asked by series alone: a series found under another study is a different error from none.
    let matches = find_series(cfg, "", series)?;
    let Some(found) = matches.iter().find(|s| s.series_instance_uid == series) else {
        return Err(PacsError::SeriesNotFound { address: cfg.address(), series: series.into() });
    };
    if !study.is_empty() && found.study_instance_uid != study {
        return Err(PacsError::SeriesInAnotherStudy {
            address: cfg.address(),
            series: series.into(),
            study: study.into(),
            found_study: found.study_instance_uid.clone(),
        });
    }
    Ok(found.clone())
}

/// Checks the series is in the study (C-FIND), then C-GETs it into `folder`, one file per image
/// named by its SOPInstanceUID. The images arrive in a staging folder that replaces `folder`
/// only when the retrieve is complete: a failed retrieve leaves an earlier one as it was.
pub fn get_series(cfg: &PacsConfig, study: &str, series: &str, folder: &Path) -> Result<Retrieved, PacsError> {
    let started = Instant::now();
    locate_series(cfg, study, series)?;
    let op = "C-GET";
    let staging = staging_folder(folder);
    let io =
        |path: &Path, e: std::io::Error| PacsError::File { path: path.display().to_string(), reason: e.to_string() };
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(|e| io(&staging, e))?;
    let outcome = retrieve_into(cfg, study, series, &staging, op);
    let (files, warnings) = match outcome {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    if folder.exists() {
        std::fs::remove_dir_all(folder).map_err(|e| io(folder, e))?;
    }
    std::fs::rename(&staging, folder).map_err(|e| io(folder, e))?;
    let files = files.iter().filter_map(|f| f.file_name()).map(|n| folder.join(n)).collect();
    Ok(Retrieved { folder: folder.to_path_buf(), files, warnings, seconds: started.elapsed().as_secs_f64() })
}

fn staging_folder(folder: &Path) -> PathBuf {
    let name = folder.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "series".into());
    folder.with_file_name(format!(".{name}.incoming-{}", std::process::id()))
}

fn retrieve_into(
    cfg: &PacsConfig,
    study: &str,
    series: &str,
    dir: &Path,
    op: &str,
) -> Result<(Vec<PathBuf>, u32), PacsError> {
    let mut proposals = vec![Proposal {
        abstract_syntax: STUDY_ROOT_GET.into(),
        transfer_syntaxes: vec![EXPLICIT_VR_LE.into(), IMPLICIT_VR_LE.into()],
        we_store: false,
    }];
    // One context per transfer syntax: a PACS picks one transfer syntax per context, and one
    // that cannot transcode (Debian's Orthanc 1.10 cannot decode JPEG 2000) then finds a context
    // for the syntax it stores each image in; with all syntaxes in one context it picks native
    // little endian and fails every JPEG 2000 image (measured: status C000H).
    for class in CT_STORAGE_CLASSES {
        for (i, ts) in IMAGE_TRANSFER_SYNTAXES.iter().enumerate() {
            proposals.push(Proposal {
                abstract_syntax: class.into(),
                transfer_syntaxes: vec![ts.to_string()],
                we_store: i == 0,
            });
        }
    }
    let mut a = Association::open(cfg, &proposals, op)?;
    let (pc, ts) = a.context_for(STUDY_ROOT_GET).ok_or_else(|| no_context(&a, op))?;
    if !CT_STORAGE_CLASSES.iter().any(|c| a.context_for(c).is_some()) {
        let e = no_context(&a, "receiving CT images (C-GET's C-STORE sub-operations)");
        a.abort();
        return Err(e);
    }
    let mut identifier = InMemDicomObject::from_element_iter([
        DataElement::new(tags::QUERY_RETRIEVE_LEVEL, VR::CS, PrimitiveValue::from("SERIES")),
        DataElement::new(tags::SERIES_INSTANCE_UID, VR::UI, PrimitiveValue::from(series)),
    ]);
    if !study.is_empty() {
        identifier.put(DataElement::new(tags::STUDY_INSTANCE_UID, VR::UI, PrimitiveValue::from(study)));
    }
    let data = crate::association::encode_data(&identifier, &ts).map_err(|r| a.protocol(op, r))?;
    let id = a.next_message_id();
    a.send_message(
        pc,
        vec![
            element(tags::AFFECTED_SOP_CLASS_UID, VR::UI, STUDY_ROOT_GET),
            element(tags::COMMAND_FIELD, VR::US, command::C_GET_RQ),
            element(tags::MESSAGE_ID, VR::US, id),
            element(tags::PRIORITY, VR::US, 0_u16),
        ],
        Some(&data),
        op,
    )?;
    let mut files = Vec::new();
    let mut write_errors = Vec::new();
    loop {
        let msg = a.receive_message(op)?;
        match msg.field() {
            command::C_STORE_RQ => {
                let (status, written) = store_received(&a, &msg, dir);
                match written {
                    Ok(path) => files.push(path),
                    Err(e) => write_errors.push(e),
                }
                let rsp_context = msg.context_id;
                let class = msg.text(tags::AFFECTED_SOP_CLASS_UID).unwrap_or_default();
                let instance = msg.text(tags::AFFECTED_SOP_INSTANCE_UID).unwrap_or_default();
                let id = a.next_message_id();
                a.send_message(
                    rsp_context,
                    vec![
                        element(tags::AFFECTED_SOP_CLASS_UID, VR::UI, class.as_str()),
                        element(tags::COMMAND_FIELD, VR::US, command::C_STORE_RSP),
                        element(tags::MESSAGE_ID_BEING_RESPONDED_TO, VR::US, msg.u16(tags::MESSAGE_ID).unwrap_or(id)),
                        element(tags::STATUS, VR::US, status),
                        element(tags::AFFECTED_SOP_INSTANCE_UID, VR::UI, instance.as_str()),
                    ],
                    None,
                    op,
                )?;
            }
            command::C_GET_RSP => {
                let status =
                    msg.u16(tags::STATUS).ok_or_else(|| a.protocol(op, "C-GET response without a status".into()))?;
                let (class, meaning) = status_meaning(status);
                if class == StatusClass::Pending {
                    continue;
                }
                let count = |tag| msg.u16(tag).unwrap_or(0) as u32;
                let failed = count(tags::NUMBER_OF_FAILED_SUBOPERATIONS);
                let warning = count(tags::NUMBER_OF_WARNING_SUBOPERATIONS);
                let completed = count(tags::NUMBER_OF_COMPLETED_SUBOPERATIONS);
                let comment = msg.text(tags::ERROR_COMMENT);
                a.release();
                let mut detail = format!("; final status {status:04X}H ({meaning})");
                if let Some(c) = comment.as_deref() {
                    detail.push_str(&format!(": {c}"));
                }
                if !write_errors.is_empty() {
                    detail.push_str(&format!("; not written here: {}", write_errors.join("; ")));
                }
                let incomplete = || PacsError::RetrieveIncomplete {
                    address: cfg.address(),
                    series: series.into(),
                    completed: completed.max(files.len() as u32),
                    failed,
                    warning,
                    detail: detail.clone(),
                };
                return match class {
                    StatusClass::Success | StatusClass::Warning
                        if failed == 0 && write_errors.is_empty() && !files.is_empty() =>
                    {
                        Ok((files, warning))
                    }
                    StatusClass::Success | StatusClass::Warning => Err(incomplete()),
                    _ if files.is_empty() => Err(PacsError::Status {
                        address: cfg.address(),
                        operation: op.into(),
                        status,
                        meaning: meaning.into(),
                        comment: comment.map(|c| format!(": {c}")).unwrap_or_default(),
                    }),
                    _ => Err(incomplete()),
                };
            }
            other => return Err(a.protocol(op, format!("unexpected DIMSE command {other:04X}H during C-GET"))),
        }
    }
}

/// Writes one image of a C-GET as a DICOM file in the transfer syntax it came in; the status
/// to answer the PACS with, and the file or why it is not there.
fn store_received(a: &Association, msg: &crate::association::Message, dir: &Path) -> (u16, Result<PathBuf, String>) {
    let instance = msg.text(tags::AFFECTED_SOP_INSTANCE_UID).unwrap_or_default();
    let class = msg.text(tags::AFFECTED_SOP_CLASS_UID).unwrap_or_default();
    let Some(ts) = a.transfer_syntax_of(msg.context_id) else {
        return (0xC000, Err(format!("{instance}: came on an unknown presentation context")));
    };
    let written = (|| {
        let bytes = msg.data.as_deref().ok_or("no data set")?;
        let obj = crate::association::decode_data(bytes, &ts)?;
        // A SOP instance UID is a file name a PACS could abuse; keep only what a UID may hold.
        let safe: String = instance.chars().filter(|c| c.is_ascii_digit() || *c == '.').collect();
        if safe.is_empty() {
            return Err("no SOP instance UID".to_string());
        }
        let path = dir.join(format!("{safe}.dcm"));
        let file = obj
            .with_meta(
                FileMetaTableBuilder::new()
                    .transfer_syntax(ts.as_str())
                    .media_storage_sop_class_uid(class.as_str())
                    .media_storage_sop_instance_uid(instance.as_str()),
            )
            .map_err(|e| format!("file meta: {e}"))?;
        file.write_to_file(&path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(path)
    })();
    match written {
        Ok(path) => (0x0000, Ok(path)),
        // A7xx: out of resources (the usual status for a storage failure on our side).
        Err(e) => (0xA700, Err(format!("{instance}: {e}"))),
    }
}

/// C-STOREs one DICOM file, in its own transfer syntax (or native little endian for a native file).
pub fn store_file(cfg: &PacsConfig, path: &Path) -> Result<Stored, PacsError> {
    let op = "C-STORE";
    let file_error = |reason: String| PacsError::File { path: path.display().to_string(), reason };
    let file = dicom_object::open_file(path).map_err(|e| file_error(format!("not a readable DICOM file: {e}")))?;
    let meta = file.meta();
    let class = crate::association::trim_uid(&meta.media_storage_sop_class_uid).to_string();
    let instance = crate::association::trim_uid(&meta.media_storage_sop_instance_uid).to_string();
    let file_ts = crate::association::trim_uid(&meta.transfer_syntax).to_string();
    let native = [EXPLICIT_VR_LE, IMPLICIT_VR_LE];
    let mut offered = vec![file_ts.clone()];
    if native.contains(&file_ts.as_str()) {
        offered.extend(native.iter().filter(|t| **t != file_ts).map(|t| t.to_string()));
    }
    let proposals = [Proposal { abstract_syntax: class.clone(), transfer_syntaxes: offered, we_store: false }];
    let what = format!("storing {} (SOP class {class})", path.display());
    let mut a = Association::open(cfg, &proposals, &what)?;
    let (pc, ts) = a.context_for(&class).ok_or_else(|| no_context(&a, &what))?;
    let data = crate::association::encode_data(&file, &ts).map_err(file_error)?;
    let id = a.next_message_id();
    a.send_message(
        pc,
        vec![
            element(tags::AFFECTED_SOP_CLASS_UID, VR::UI, class.as_str()),
            element(tags::COMMAND_FIELD, VR::US, command::C_STORE_RQ),
            element(tags::MESSAGE_ID, VR::US, id),
            element(tags::PRIORITY, VR::US, 0_u16),
            element(tags::AFFECTED_SOP_INSTANCE_UID, VR::UI, instance.as_str()),
        ],
        Some(&data),
        op,
    )?;
    let rsp = a.receive_message(op)?;
    let status = rsp.u16(tags::STATUS).ok_or_else(|| a.protocol(op, "C-STORE response without a status".into()))?;
    let (class_of_status, meaning) = status_meaning(status);
    check_final(&a, op, status, rsp.text(tags::ERROR_COMMENT))?;
    a.release();
    let warning = (class_of_status == StatusClass::Warning).then(|| format!("status {status:04X}H ({meaning})"));
    Ok(Stored { sop_instance_uid: instance, warning })
}

fn no_context(a: &Association, what: &str) -> PacsError {
    PacsError::NoPresentationContext { address: a.address.clone(), what: what.into() }
}

/// Success and warnings pass; anything else is the operation's error.
fn check_final(a: &Association, op: &str, status: u16, comment: Option<String>) -> Result<(), PacsError> {
    let (class, meaning) = status_meaning(status);
    match class {
        StatusClass::Success | StatusClass::Warning => Ok(()),
        _ => Err(PacsError::Status {
            address: a.address.clone(),
            operation: op.into(),
            status,
            meaning: meaning.into(),
            comment: comment.map(|c| format!(": {c}")).unwrap_or_default(),
        }),
    }
}
