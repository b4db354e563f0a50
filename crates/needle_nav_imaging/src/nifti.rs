//! NIfTI-1 (`.nii` / `.nii.gz`) writing. NIfTI world coordinates are RAS, DICOM's are LPS:
//! the affine flips x and y. sform and qform both carry the same (scanner) transform.

use flate2::write::GzEncoder;
use flate2::Compression;
use nalgebra::{Matrix3, Matrix4, Rotation3, UnitQuaternion};
use needle_nav_core::volume::{Geometry, DIRECTION_TOL, VOXEL_SIZE_RANGE_MM};
use std::io::Write;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum NiftiError {
    #[error("cannot write {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{0}")]
    Geometry(String),
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{path} is not a NIfTI-1 file we can read: {reason}")]
    Format { path: String, reason: String },
}

/// A NIfTI volume read as f32 (scl_slope/scl_inter applied) on its patient geometry (LPS, mm).
#[derive(Debug, Clone, PartialEq)]
pub struct NiftiImage {
    pub geometry: Geometry,
    pub data: Vec<f32>,
    pub datatype: i16,
    pub description: String,
    /// Non-fatal oddities (no sform/qform, ...).
    pub warnings: Vec<String>,
}

/// The grid size a NIfTI-1 header declares, read without loading the voxels (a size guard
/// before the real read). None when the file is not a readable NIfTI-1 header.
pub fn read_dims(path: &Path) -> Option<[usize; 3]> {
    use std::io::Read;
    let file = std::fs::File::open(path).ok()?;
    let mut head = [0u8; 348];
    let mut magic = [0u8; 2];
    std::fs::File::open(path).ok()?.read_exact(&mut magic).ok()?;
    if magic == [0x1f, 0x8b] {
        flate2::read::GzDecoder::new(file).read_exact(&mut head).ok()?;
    } else {
        std::io::BufReader::new(file).read_exact(&mut head).ok()?;
    }
    let big = match i32::from_le_bytes([head[0], head[1], head[2], head[3]]) {
        348 => false,
        v if v.swap_bytes() == 348 => true,
        _ => return None,
    };
    let dim = |n: usize| {
        let b = [head[40 + 2 * n], head[41 + 2 * n]];
        (if big { i16::from_be_bytes(b) } else { i16::from_le_bytes(b) }).max(1) as usize
    };
    Some([dim(1), dim(2), dim(3)])
}

/// Reads a `.nii` or `.nii.gz` (NIfTI-1, either byte order, 3-D or 4-D with one volume).
pub fn read(path: &Path) -> Result<NiftiImage, NiftiError> {
    use std::io::Read;
    let p = path.display().to_string();
    let raw = std::fs::read(path).map_err(|e| NiftiError::Read { path: p.clone(), reason: e.to_string() })?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| NiftiError::Read { path: p.clone(), reason: format!("gzip: {e}") })?;
        out
    } else {
        raw
    };
    let bad = |reason: String| NiftiError::Format { path: p.clone(), reason };
    if bytes.len() < 348 {
        return Err(bad(format!("{} bytes is shorter than a NIfTI-1 header", bytes.len())));
    }
    let big = match i32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) {
        348 => false,
        v if v.swap_bytes() == 348 => true,
        v => return Err(bad(format!("sizeof_hdr is {v}, not 348 (NIfTI-2 is not supported)"))),
    };
    let b2 = |at: usize| [bytes[at], bytes[at + 1]];
    let b4 = |at: usize| [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]];
    let i16_at = |at: usize| if big { i16::from_be_bytes(b2(at)) } else { i16::from_le_bytes(b2(at)) };
    let f32_at = |at: usize| if big { f32::from_be_bytes(b4(at)) } else { f32::from_le_bytes(b4(at)) };
    match &bytes[344..348] {
        b"n+1\0" => {}
        b"ni1\0" => return Err(bad("header and image in separate files (.hdr/.img) are not supported".into())),
        m => return Err(bad(format!("magic {m:?} is not NIfTI-1"))),
    }
    let ndim = i16_at(40);
    let dim: Vec<i16> = (0..8).map(|n| i16_at(40 + 2 * n)).collect();
    if !(3..=4).contains(&ndim) || (ndim == 4 && dim[4] > 1) {
        return Err(bad(format!(
            "{ndim}-D image with dims {:?}: only one 3-D volume is supported",
            &dim[1..=ndim.clamp(1, 7) as usize]
        )));
    }
    if dim[1..4].iter().any(|&d| d < 1) {
        return Err(bad(format!("non-positive dimensions {:?}", &dim[1..4])));
    }
    let dims = [dim[1] as usize, dim[2] as usize, dim[3] as usize];
    let datatype = i16_at(70);
    let pixdim: Vec<f32> = (0..8).map(|n| f32_at(76 + 4 * n)).collect();
    let raw_offset = f32_at(108);
    if !(raw_offset.is_finite() && raw_offset < bytes.len() as f32 + 1.0) {
        return Err(bad(format!("vox_offset {raw_offset} is not an offset within the file of {} bytes", bytes.len())));
    }
    let vox_offset = raw_offset.max(352.0) as usize;
    let (slope, inter) = (f32_at(112), f32_at(116));
    let (qform_code, sform_code) = (i16_at(252), i16_at(254));
    let description = String::from_utf8_lossy(&bytes[148..228]).trim_end_matches('\0').to_string();
    let mut warnings = Vec::new();
    // RAS affine: sform, else qform, else pixdim only; each checked as a physical grid, naming
    // the header fields it came from, and sform and qform must agree when both are set.
    let pixdims = |fields: &str| -> Result<[f64; 3], NiftiError> {
        let mut out = [0.0; 3];
        for axis in 0..3 {
            let stored = pixdim[axis + 1];
            let v = stored as f64;
            let (lo, hi) = VOXEL_SIZE_RANGE_MM;
            if !(v.is_finite() && (lo..=hi).contains(&v)) {
                return Err(bad(format!(
                    "pixdim[{}] = {stored:e} ({fields}) is not a voxel size of a patient image ({lo}..{hi} mm)",
                    axis + 1
                )));
            }
            out[axis] = v;
        }
        Ok(out)
    };
    let sform = if sform_code > 0 {
        let mut a = Matrix4::<f64>::identity();
        for row in 0..3 {
            for col in 0..4 {
                a[(row, col)] = f32_at(280 + 16 * row + 4 * col) as f64;
            }
        }
        Some(grid_of(&a, dims, "sform (srow_x, srow_y, srow_z)").map_err(|e| bad(e.to_string()))?)
    } else {
        None
    };
    let qform = if qform_code > 0 {
        let (b, c, d) = (f32_at(256) as f64, f32_at(260) as f64, f32_at(264) as f64);
        let norm = b * b + c * c + d * d;
        if !(norm.is_finite() && norm <= 1.0 + 1e-5) {
            return Err(bad(format!(
                "qform quaternion (quatern_b, quatern_c, quatern_d) = ({b}, {c}, {d}) is not a rotation (b^2 + c^2 \
                 + d^2 = {norm:e} > 1)"
            )));
        }
        let w = (1.0 - norm).max(0.0).sqrt();
        let r = UnitQuaternion::from_quaternion(nalgebra::Quaternion::new(w, b, c, d)).to_rotation_matrix();
        let qfac = if pixdim[0] < 0.0 { -1.0 } else { 1.0 };
        let zooms = pixdims("the qform's voxel size")?;
        let mut a = Matrix4::<f64>::identity();
        for row in 0..3 {
            for col in 0..3 {
                let scale = zooms[col] * if col == 2 { qfac } else { 1.0 };
                a[(row, col)] = r[(row, col)] * scale;
            }
        }
        a[(0, 3)] = f32_at(268) as f64;
        a[(1, 3)] = f32_at(272) as f64;
        a[(2, 3)] = f32_at(276) as f64;
        Some(grid_of(&a, dims, "qform (quatern_*, qoffset_*, pixdim)").map_err(|e| bad(e.to_string()))?)
    } else {
        None
    };
    let geometry = match (sform, qform) {
        (Some(s), Some(q)) => {
            if let Some(difference) = disagreement(&s, &q) {
                return Err(bad(format!(
                    "sform and qform disagree ({difference}): which one is the scanner's geometry is unknown"
                )));
            }
            s
        }
        (Some(s), None) => s,
        (None, Some(q)) => q,
        (None, None) => {
            warnings.push("no sform or qform: orientation unknown, assuming voxel axes = RAS".into());
            let zooms = pixdims("no sform or qform")?;
            let mut a = Matrix4::<f64>::identity();
            for axis in 0..3 {
                a[(axis, axis)] = zooms[axis];
            }
            grid_of(&a, dims, "pixdim").map_err(|e| bad(e.to_string()))?
        }
    };
    let n = geometry.voxel_count();
    let width = match datatype {
        2 | 256 => 1,
        4 | 512 => 2,
        8 | 16 | 768 => 4,
        64 => 8,
        other => return Err(bad(format!("datatype {other} is not supported (only scalar integer and float types)"))),
    };
    let end = n.checked_mul(width).and_then(|b| b.checked_add(vox_offset)).unwrap_or(usize::MAX);
    if bytes.len() < end {
        return Err(bad(format!(
            "truncated: {} bytes of image data for {} voxels of {width} bytes",
            bytes.len().saturating_sub(vox_offset),
            n
        )));
    }
    let v = &bytes[vox_offset..end];
    let take = |i: usize, w: usize| -> &[u8] { &v[i * w..i * w + w] };
    let mut data: Vec<f32> = (0..n)
        .map(|i| match datatype {
            2 => v[i] as f32,
            256 => v[i] as i8 as f32,
            4 => {
                let x = take(i, 2);
                (if big { i16::from_be_bytes([x[0], x[1]]) } else { i16::from_le_bytes([x[0], x[1]]) }) as f32
            }
            512 => {
                let x = take(i, 2);
                (if big { u16::from_be_bytes([x[0], x[1]]) } else { u16::from_le_bytes([x[0], x[1]]) }) as f32
            }
            8 => {
                let x = take(i, 4);
                let a = [x[0], x[1], x[2], x[3]];
                (if big { i32::from_be_bytes(a) } else { i32::from_le_bytes(a) }) as f32
            }
            768 => {
                let x = take(i, 4);
                let a = [x[0], x[1], x[2], x[3]];
                (if big { u32::from_be_bytes(a) } else { u32::from_le_bytes(a) }) as f32
            }
            16 => {
                let x = take(i, 4);
                let a = [x[0], x[1], x[2], x[3]];
                if big {
                    f32::from_be_bytes(a)
                } else {
                    f32::from_le_bytes(a)
                }
            }
            _ => {
                let x = take(i, 8);
                let a = [x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7]];
                (if big { f64::from_be_bytes(a) } else { f64::from_le_bytes(a) }) as f32
            }
        })
        .collect();
    if slope != 0.0 && slope.is_finite() && (slope != 1.0 || inter != 0.0) {
        for x in &mut data {
            *x = *x * slope + inter;
        }
    }
    Ok(NiftiImage { geometry, data, datatype, description, warnings })
}

/// Voxel types that can be written.
pub trait NiftiVoxel: Copy {
    const DATATYPE: i16;
    const BITPIX: i16;
    fn write_le(self, out: &mut Vec<u8>);
}

impl NiftiVoxel for u8 {
    const DATATYPE: i16 = 2;
    const BITPIX: i16 = 8;
    fn write_le(self, out: &mut Vec<u8>) {
        out.push(self);
    }
}

impl NiftiVoxel for i16 {
    const DATATYPE: i16 = 4;
    const BITPIX: i16 = 16;
    fn write_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}

impl NiftiVoxel for f32 {
    const DATATYPE: i16 = 16;
    const BITPIX: i16 = 32;
    fn write_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}

const LPS_TO_RAS: [f64; 3] = [-1.0, -1.0, 1.0];

/// Why an affine gives no patient grid; `fields` names the header fields it came from.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AffineError {
    #[error("{fields} holds the non-finite value {value}")]
    NonFinite { fields: &'static str, value: f64 },
    #[error("{fields}: voxel axis {axis} has zero length (singular affine)")]
    ZeroAxis { fields: &'static str, axis: usize },
    #[error("{fields}: {source}")]
    Grid { fields: &'static str, source: needle_nav_core::volume::GeometryError },
}

/// The patient grid (LPS) of a voxel-to-RAS affine, checked ([`Geometry::validate`]); the error
/// names `fields`, the header fields the affine came from.
fn grid_of(a: &Matrix4<f64>, dims: [usize; 3], fields: &'static str) -> Result<Geometry, AffineError> {
    if let Some(x) = a.fixed_view::<3, 4>(0, 0).iter().find(|x| !x.is_finite()) {
        return Err(AffineError::NonFinite { fields, value: *x });
    }
    let mut spacing = [0.0; 3];
    let mut direction = [[0.0; 3]; 3];
    for col in 0..3 {
        let v = nalgebra::Vector3::new(LPS_TO_RAS[0] * a[(0, col)], LPS_TO_RAS[1] * a[(1, col)], a[(2, col)]);
        let n = v.norm();
        if !(n.is_finite() && n > 0.0) {
            return Err(AffineError::ZeroAxis { fields, axis: col });
        }
        spacing[col] = n;
        direction[col] = [v.x / n, v.y / n, v.z / n];
    }
    let origin_mm = [LPS_TO_RAS[0] * a[(0, 3)], LPS_TO_RAS[1] * a[(1, 3)], a[(2, 3)]];
    let g = Geometry { dims, spacing_mm: spacing, origin_mm, direction };
    g.validate().map_err(|source| AffineError::Grid { fields, source })?;
    Ok(g)
}

/// How two grids of one file differ beyond float32 rounding, if they do.
fn disagreement(s: &Geometry, q: &Geometry) -> Option<String> {
    for axis in 0..3 {
        let (a, b) = (s.spacing_mm[axis], q.spacing_mm[axis]);
        if (a - b).abs() > 1e-3 * a.max(b) {
            return Some(format!("voxel size along axis {axis}: {a} vs {b} mm"));
        }
        let cos: f64 = (0..3).map(|r| s.direction[axis][r] * q.direction[axis][r]).sum();
        if cos < 1.0 - DIRECTION_TOL {
            return Some(format!("direction of axis {axis}: {:?} vs {:?}", s.direction[axis], q.direction[axis]));
        }
    }
    let offset = (0..3).map(|r| (s.origin_mm[r] - q.origin_mm[r]).powi(2)).sum::<f64>().sqrt();
    // Half the smallest voxel: no voxel centre moves to another voxel.
    let tolerance = 0.5 * s.spacing_mm.iter().fold(f64::INFINITY, |m, &v| m.min(v));
    (offset > tolerance).then(|| format!("origins {offset:.2} mm apart"))
}

/// The 4x4 voxel-to-RAS affine of a geometry.
pub fn ras_affine(g: &Geometry) -> Matrix4<f64> {
    let mut a = Matrix4::identity();
    let d = g.direction_matrix();
    for r in 0..3 {
        for c in 0..3 {
            a[(r, c)] = LPS_TO_RAS[r] * d[(r, c)] * g.spacing_mm[c];
        }
        a[(r, 3)] = LPS_TO_RAS[r] * g.origin_mm[r];
    }
    a
}

/// NIfTI quaternion parameters (b, c, d), qfac, and offsets of the RAS transform.
fn quaternion(g: &Geometry) -> Result<([f32; 3], f32), NiftiError> {
    let mut r: Matrix3<f64> = Matrix3::from_fn(|row, col| LPS_TO_RAS[row] * g.direction_matrix()[(row, col)]);
    let mut qfac = 1.0;
    if r.determinant() < 0.0 {
        // NIfTI stores an improper rotation as a proper one with qfac = -1 on the third axis.
        qfac = -1.0;
        r.set_column(2, &(-r.column(2)));
    }
    if (r.transpose() * r - Matrix3::identity()).norm() > 1e-6 {
        return Err(NiftiError::Geometry("direction matrix is not orthonormal".into()));
    }
    let q = UnitQuaternion::from_rotation_matrix(&Rotation3::from_matrix_unchecked(r));
    let mut q = *q.quaternion();
    if q.w < 0.0 {
        q = -q;
    }
    Ok(([q.i as f32, q.j as f32, q.k as f32], qfac))
}

fn header<T: NiftiVoxel>(g: &Geometry, description: &str) -> Result<Vec<u8>, NiftiError> {
    let mut h = vec![0u8; 352];
    let put_i16 = |h: &mut Vec<u8>, at: usize, v: i16| h[at..at + 2].copy_from_slice(&v.to_le_bytes());
    let put_i32 = |h: &mut Vec<u8>, at: usize, v: i32| h[at..at + 4].copy_from_slice(&v.to_le_bytes());
    let put_f32 = |h: &mut Vec<u8>, at: usize, v: f32| h[at..at + 4].copy_from_slice(&v.to_le_bytes());
    put_i32(&mut h, 0, 348);
    h[38] = b'r';
    let dims = [3, g.dims[0] as i16, g.dims[1] as i16, g.dims[2] as i16, 1, 1, 1, 1];
    for (n, d) in dims.iter().enumerate() {
        put_i16(&mut h, 40 + 2 * n, *d);
    }
    put_i16(&mut h, 70, T::DATATYPE);
    put_i16(&mut h, 72, T::BITPIX);
    let ([b, c, d], qfac) = quaternion(g)?;
    let pixdim = [qfac, g.spacing_mm[0] as f32, g.spacing_mm[1] as f32, g.spacing_mm[2] as f32, 1.0, 1.0, 1.0, 1.0];
    for (n, v) in pixdim.iter().enumerate() {
        put_f32(&mut h, 76 + 4 * n, *v);
    }
    put_f32(&mut h, 108, 352.0); // vox_offset
    put_f32(&mut h, 112, 1.0); // scl_slope
    put_f32(&mut h, 116, 0.0); // scl_inter
    h[123] = 2 | 8; // xyzt_units: mm, s
    let text = description.as_bytes();
    h[148..148 + text.len().min(79)].copy_from_slice(&text[..text.len().min(79)]);
    put_i16(&mut h, 252, 1); // qform_code: scanner
    put_i16(&mut h, 254, 1); // sform_code: scanner
    let a = ras_affine(g);
    for (n, v) in [b, c, d, a[(0, 3)] as f32, a[(1, 3)] as f32, a[(2, 3)] as f32].iter().enumerate() {
        put_f32(&mut h, 256 + 4 * n, *v);
    }
    for row in 0..3 {
        for col in 0..4 {
            put_f32(&mut h, 280 + 16 * row + 4 * col, a[(row, col)] as f32);
        }
    }
    h[344..348].copy_from_slice(b"n+1\0");
    Ok(h)
}

/// Writes a volume; gzip-compressed when the name ends in `.gz`.
pub fn write<T: NiftiVoxel>(path: &Path, geometry: &Geometry, data: &[T], description: &str) -> Result<(), NiftiError> {
    let io = |source| NiftiError::Io { path: path.display().to_string(), source };
    if data.len() != geometry.voxel_count() {
        return Err(NiftiError::Geometry(format!("{} values for {:?} voxels", data.len(), geometry.dims)));
    }
    if geometry.dims.iter().any(|&d| d > i16::MAX as usize) {
        return Err(NiftiError::Geometry(format!("dimensions {:?} exceed NIfTI-1's 32767", geometry.dims)));
    }
    let mut bytes = header::<T>(geometry, description)?;
    bytes.reserve(data.len() * (T::BITPIX as usize / 8));
    for v in data {
        v.write_le(&mut bytes);
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let file = std::fs::File::create(path).map_err(io)?;
    let mut out = std::io::BufWriter::new(file);
    if path.extension().is_some_and(|e| e == "gz") {
        let mut gz = GzEncoder::new(out, Compression::fast());
        gz.write_all(&bytes).map_err(io)?;
        gz.finish().map_err(io)?.flush().map_err(io)?;
    } else {
        out.write_all(&bytes).map_err(io)?;
        out.flush().map_err(io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axial_lps_grid_gives_the_flipped_ras_affine() {
        let g = Geometry::axial([2, 2, 2], [0.5, 0.6, 2.0], [10.0, -20.0, 30.0]);
        let a = ras_affine(&g);
        // voxel (1, 1, 1) is at LPS (10.5, -19.4, 32) = RAS (-10.5, 19.4, 32)
        let v = a * nalgebra::Vector4::new(1.0, 1.0, 1.0, 1.0);
        approx::assert_relative_eq!(
            nalgebra::Vector3::new(v.x, v.y, v.z),
            nalgebra::Vector3::new(-10.5, 19.4, 32.0),
            epsilon = 1e-12
        );
        let ([b, c, d], qfac) = quaternion(&g).unwrap();
        // diag(-1, -1, 1) is a rotation by pi about z: quaternion (0, 0, 0, 1).
        assert_eq!((b, c, d.abs(), qfac), (0.0, 0.0, 1.0, 1.0));
    }

    #[test]
    fn write_then_read_round_trips_values_and_geometry() {
        let g = Geometry::axial([5, 4, 3], [0.7, 0.8, 2.5], [-10.0, 20.0, -30.0]);
        let data: Vec<i16> = (0..60).map(|v| v as i16 * 37 - 1000).collect();
        let path = std::env::temp_dir().join(format!("nn_nifti_{}.nii.gz", std::process::id()));
        write(&path, &g, &data, "round trip").unwrap();
        let img = read(&path).unwrap();
        assert_eq!(img.geometry.dims, g.dims);
        for a in 0..3 {
            assert!((img.geometry.spacing_mm[a] - g.spacing_mm[a]).abs() < 1e-5);
            assert!((img.geometry.origin_mm[a] - g.origin_mm[a]).abs() < 1e-4);
        }
        assert_eq!(img.data, data.iter().map(|&v| v as f32).collect::<Vec<_>>());
        assert_eq!(img.description, "round trip");
        std::fs::remove_file(&path).unwrap();
    }

    fn shared(rel: &str) -> std::path::PathBuf {
        let p = needle_nav_sim::extmarker::shared_data_dir().join(rel);
        assert!(p.exists(), "shared data not found: {}", p.display());
        p
    }

    #[test]
    fn real_files_match_the_published_facts() {
        // MANIFEST.md: chest CTA 122x102x112 at 1.5 mm iso, int16 HU -1064..3343; pulmonary artery 14,261 voxels.
        let ct = read(&shared("chest_cta_pulmonary_artery/ct_cropped.nii.gz")).unwrap();
        assert_eq!(ct.geometry.dims, [122, 102, 112]);
        assert!(ct.geometry.spacing_mm.iter().all(|s| (s - 1.5).abs() < 1e-4), "{:?}", ct.geometry.spacing_mm);
        let (lo, hi) = ct.data.iter().fold((f32::MAX, f32::MIN), |(l, h), v| (l.min(*v), h.max(*v)));
        assert_eq!((lo, hi), (-1064.0, 3343.0));
        let pa = read(&shared("chest_cta_pulmonary_artery/pulmonary_artery.nii.gz")).unwrap();
        assert_eq!(pa.data.iter().filter(|v| **v != 0.0).count(), 14_261);
        assert_eq!(pa.geometry.dims, ct.geometry.dims);
        // MANIFEST.md: the abdomen DICOM segmentation is 512x512x20 in LAS: i -> left (+x), j -> anterior (-y).
        let seg = read(&shared("abdomen_ct_vessels/example_seg_dicom.nii.gz")).unwrap();
        assert_eq!(seg.geometry.dims, [512, 512, 20]);
        assert_eq!(read_dims(&shared("abdomen_ct_vessels/example_seg_dicom.nii.gz")), Some([512, 512, 20]));
        assert_eq!(read_dims(&shared("chest_cta_pulmonary_artery/ct_cropped.nii.gz")), Some([122, 102, 112]));
        let d = seg.geometry.direction;
        assert!(d[0][0] > 0.99 && d[1][1] < -0.99 && d[2][2] > 0.99, "{d:?}");
    }

    #[test]
    fn broken_files_give_clear_errors() {
        let path = std::env::temp_dir().join(format!("nn_nifti_bad_{}.nii", std::process::id()));
        std::fs::write(&path, b"not a nifti file at all").unwrap();
        assert!(matches!(read(&path), Err(NiftiError::Format { .. })));
        assert_eq!(read_dims(&path), None);
        let g = Geometry::axial([4, 4, 4], [1.0; 3], [0.0; 3]);
        write(&path, &g, &[0i16; 64], "x").unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(360);
        std::fs::write(&path, &bytes).unwrap();
        let err = read(&path).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
        assert!(matches!(read(std::path::Path::new("/nonexistent.nii")), Err(NiftiError::Read { .. })));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_huge_vox_offset_is_an_error_not_an_overflow() {
        // Found while writing the `nifti` fuzz target and confirmed with its binary (vox_offset 1e30
        // panicked at `vox_offset + n * width`: overflow; in release a wrapped slice range panics).
        let path = std::env::temp_dir().join(format!("nn_nifti_voxoffset_{}.nii", std::process::id()));
        let g = Geometry::axial([4, 4, 4], [1.0; 3], [0.0; 3]);
        write(&path, &g, &[0i16; 64], "x").unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        for huge in [f32::MAX, 1e30, f32::INFINITY] {
            bytes[108..112].copy_from_slice(&huge.to_le_bytes());
            std::fs::write(&path, &bytes).unwrap();
            let err = read(&path).unwrap_err();
            assert!(matches!(&err, NiftiError::Format { reason, .. } if reason.contains("vox_offset")), "{err}");
        }
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn header_fields_are_at_their_nifti1_offsets() {
        let g = Geometry::axial([3, 4, 5], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]);
        let h = header::<i16>(&g, "x").unwrap();
        assert_eq!(i32::from_le_bytes(h[0..4].try_into().unwrap()), 348);
        assert_eq!(i16::from_le_bytes(h[42..44].try_into().unwrap()), 3);
        assert_eq!(i16::from_le_bytes(h[70..72].try_into().unwrap()), 4);
        assert_eq!(&h[344..348], b"n+1\0");
        assert_eq!(f32::from_le_bytes(h[108..112].try_into().unwrap()), 352.0);
    }
}
