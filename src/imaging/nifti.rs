//! NIfTI-1 (`.nii` / `.nii.gz`) writing. NIfTI world coordinates are RAS, DICOM's are LPS:
//! the affine flips x and y. sform and qform both carry the same (scanner) transform.

use super::volume::Geometry;
use flate2::write::GzEncoder;
use flate2::Compression;
use nalgebra::{Matrix3, Matrix4, Rotation3, UnitQuaternion};
use std::io::Write;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum NiftiError {
    #[error("cannot write {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{0}")]
    Geometry(String),
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
