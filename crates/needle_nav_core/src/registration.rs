//! Point-based rigid registration of fiducial markers (image <-> tracker), with the error
//! theory of Fitzpatrick, West & Maurer (1998, IEEE TMI 17:694) for FRE and TRE predictions,
//! and leave-one-out outlier rejection.
//!
//! Unit-agnostic: every length (points, FLE, FRE, limits) is in the caller's unit (metres in
//! needle_nav).

use nalgebra::{DMatrix, Isometry3, Matrix3, Point3, Rotation3, SymmetricEigen, Translation3, UnitQuaternion, Vector3};
use serde::{Deserialize, Serialize};

/// Why a registration was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RegistrationError {
    #[error("not enough markers: have {have}, need at least {need}")]
    NotEnoughMarkers { have: usize, need: usize },
    #[error("degenerate marker layout (near-collinear): spread ratio {spread_ratio:.4} below {limit:.4}")]
    Degenerate { spread_ratio: f64, limit: f64 },
    #[error("fiducial registration error {fre_rms:.3e} above the limit {limit:.3e}")]
    FreTooHigh { fre_rms: f64, limit: f64 },
    #[error("non-finite coordinate in marker {index}")]
    NonFinite { index: usize },
    #[error(
        "{side} marker {index}: coordinate {value:e} is beyond ±{} (max_abs_coordinate), not a physical position",
        if *limit < 1e6 { limit.to_string() } else { format!("{limit:e}") }
    )]
    CoordinateOutOfRange { side: &'static str, index: usize, value: f64, limit: f64 },
    #[error("the {what} did not converge within {iterations} iterations (numerically unusable input)")]
    NoConvergence { what: &'static str, iterations: usize },
    #[error("point sets differ in length: {moving} moving, {fixed} fixed")]
    LengthMismatch { moving: usize, fixed: usize },
    #[error("bad weights: {0}")]
    BadWeights(String),
    #[error("bad registration config `{key}`: {reason}")]
    BadConfig { key: &'static str, reason: String },
}

/// Limits and error model for [`register`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrationConfig {
    /// Fewest markers a registration may use (>= 3); outlier rejection never goes below it.
    pub min_markers: usize,
    /// Most markers that may be excluded as outliers.
    pub max_outliers: usize,
    /// Refuse a registration whose RMS FRE is above this.
    pub max_fre: f64,
    /// RMS fiducial localisation error (3-D, both point sets together), the error model for
    /// outlier rejection and TRE prediction.
    pub fle_rms: f64,
    /// Below this [`spread_ratio`] the layout counts as near-collinear (rotation about the line
    /// undetermined).
    pub min_spread_ratio: f64,
    /// A marker is an outlier when its leave-one-out prediction error exceeds this many times
    /// the error expected from FLE alone (see [`register`]).
    pub outlier_factor: f64,
    /// Refuse any coordinate farther than this from the origin along an axis: 10 (metres in
    /// needle_nav) is beyond any tracker or CT frame, and coordinates near 1e154 overflow the
    /// squares the fit is made of.
    pub max_abs_coordinate: f64,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        Self {
            min_markers: 3,
            max_outliers: 1,
            max_fre: 2e-3,
            fle_rms: 0.35e-3,
            min_spread_ratio: 0.05,
            outlier_factor: 3.0,
            max_abs_coordinate: 10.0,
        }
    }
}

impl RegistrationConfig {
    pub fn validate(&self) -> Result<(), RegistrationError> {
        let bad = |key, reason: &str| Err(RegistrationError::BadConfig { key, reason: reason.to_string() });
        if self.min_markers < 3 {
            return bad("min_markers", "must be at least 3 (a rigid transform needs 3 points)");
        }
        if !(self.max_fre.is_finite() && self.max_fre > 0.0) {
            return bad("max_fre", "must be finite and positive");
        }
        if !(self.fle_rms.is_finite() && self.fle_rms > 0.0) {
            return bad("fle_rms", "must be finite and positive");
        }
        if !(self.min_spread_ratio.is_finite() && (0.0..1.0).contains(&self.min_spread_ratio)) {
            return bad("min_spread_ratio", "must be in [0, 1)");
        }
        if !(self.outlier_factor.is_finite() && self.outlier_factor > 0.0) {
            return bad("outlier_factor", "must be finite and positive");
        }
        // Above 1e100 the scatter sums (squares of coordinates, times the marker count) overflow.
        if !(self.max_abs_coordinate.is_finite() && self.max_abs_coordinate > 0.0 && self.max_abs_coordinate <= 1e100) {
            return bad("max_abs_coordinate", "must be positive and at most 1e100");
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RegistrationStatus {
    Ok,
    OutlierExcluded,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RegistrationResult {
    /// fixed ≈ transform * moving.
    pub transform: Isometry3<f64>,
    pub status: RegistrationStatus,
    /// Indices into the inputs of the markers the transform was fitted to, ascending.
    pub used: Vec<usize>,
    /// Indices of the markers rejected as outliers, in the order they were rejected.
    pub excluded: Vec<usize>,
    /// |transform * moving - fixed| per used marker, parallel to `used`.
    pub residuals: Vec<f64>,
    /// RMS of `residuals` (weighted by the normalised weights when weights were given).
    pub fre_rms: f64,
}

impl RegistrationResult {
    /// Predicted RMS TRE at `target` (moving frame) from the markers actually used. `moving`
    /// must be the slice given to [`register`]; NaN if it is too short for `used`.
    pub fn predicted_tre_at(&self, moving: &[Point3<f64>], target: &Point3<f64>, fle_rms: f64) -> f64 {
        let fiducials: Option<Vec<Point3<f64>>> = self.used.iter().map(|&i| moving.get(i).copied()).collect();
        match fiducials {
            Some(f) => predicted_tre(&f, target, fle_rms),
            None => f64::NAN,
        }
    }
}

/// Least-squares rigid transform T with fixed[i] ≈ T * moving[i] (Arun 1987 / Umeyama SVD, with
/// the reflection fix so det(R) = +1); optional non-negative weights (weighted centroids and
/// covariance). Does not judge the layout: for collinear points the rotation about the line is
/// arbitrary (use [`register`] for a checked registration).
pub fn rigid_register(
    moving: &[Point3<f64>],
    fixed: &[Point3<f64>],
    weights: Option<&[f64]>,
) -> Result<Isometry3<f64>, RegistrationError> {
    check_inputs(moving, fixed, weights, NUMERIC_COORDINATE_LIMIT)?;
    if moving.len() < 3 {
        return Err(RegistrationError::NotEnoughMarkers { have: moving.len(), need: 3 });
    }
    let all: Vec<usize> = (0..moving.len()).collect();
    fit(moving, fixed, weights, &all)
}

/// Ratio of the 2nd to the 1st singular value of the centred points (0 = collinear, ~1 = well
/// spread). 0 for fewer than two distinct points.
pub fn spread_ratio(points: &[Point3<f64>]) -> f64 {
    if points.len() < 2 {
        return 0.0;
    }
    let c = centroid(points);
    let scatter = points.iter().fold(Matrix3::zeros(), |acc, p| {
        let d = p - c;
        acc + d * d.transpose()
    });
    // Singular values of the centred point matrix are the square roots of the scatter's eigenvalues.
    let Some(eigen) = symmetric_eigen(scatter) else {
        return 0.0;
    };
    let mut ev: Vec<f64> = eigen.eigenvalues.iter().map(|&l| l.max(0.0)).collect();
    ev.sort_by(|a, b| b.total_cmp(a));
    if ev[0] <= 0.0 || !ev[0].is_finite() {
        return 0.0;
    }
    (ev[1] / ev[0]).sqrt()
}

/// Predicted RMS target registration error at `target` (Fitzpatrick, West & Maurer 1998, IEEE
/// TMI 17:694, eq. 46): TRE^2 = FLE^2/N * (1 + 1/3 * sum_k d_k^2 / f_k^2), d_k = distance of
/// target from principal axis k of the fiducial configuration, f_k = RMS distance of the
/// fiducials from that axis. `fle_rms` is the RMS FLE. First-order theory, equal isotropic FLE
/// on every fiducial, unweighted fit. Infinite for fewer than 3 or exactly collinear fiducials.
pub fn predicted_tre(fiducials: &[Point3<f64>], target: &Point3<f64>, fle_rms: f64) -> f64 {
    let n = fiducials.len();
    if n < 3 {
        return f64::INFINITY;
    }
    let c = centroid(fiducials);
    let cov = fiducials.iter().fold(Matrix3::zeros(), |acc, p| {
        let d = p - c;
        acc + d * d.transpose()
    }) / n as f64;
    let Some(eigen) = symmetric_eigen(cov) else {
        return f64::NAN;
    };
    let axes = eigen.eigenvectors;
    let dist_from_axis = |p: &Point3<f64>, axis: &Vector3<f64>| {
        let d = p - c;
        (d - axis * d.dot(axis)).norm()
    };
    let mut sum = 0.0;
    for k in 0..3 {
        let axis: Vector3<f64> = axes.column(k).into_owned();
        let f_sq = fiducials.iter().map(|p| dist_from_axis(p, &axis).powi(2)).sum::<f64>() / n as f64;
        if f_sq <= 0.0 {
            return f64::INFINITY;
        }
        sum += dist_from_axis(target, &axis).powi(2) / f_sq;
    }
    (fle_rms * fle_rms / n as f64 * (1.0 + sum / 3.0)).sqrt()
}

/// Expected RMS FRE for a given FLE: sqrt((N-2)/N) * FLE (same paper, eq. 10); 0 for N <= 2.
pub fn expected_fre(n: usize, fle_rms: f64) -> f64 {
    if n <= 2 {
        return 0.0;
    }
    ((n as f64 - 2.0) / n as f64).sqrt() * fle_rms
}

/// Registration with leave-one-out outlier rejection, refusing what should not be trusted.
///
/// Outlier rule (leave-one-out, studentised). Leaving marker i out of the fit, its prediction
/// error e_i = T_{-i} * moving[i] - fixed[i] has, under the FLE model, covariance
/// sigma^2 (I - H_ii)^-1 (sigma^2 = FLE^2/3 per axis, H_ii the marker's 3x3 leverage block in the
/// linearised fit), and the drop in the sum of squared residuals when i is excluded,
/// dSSE_i = SSE(all) - SSE(without i), equals e_i^T (I - H_ii) e_i to first order: the
/// leave-one-out error measured against its own covariance, anisotropy included. A marker far
/// from the others, whose leave-one-out prediction is naturally poor, is therefore not rejected
/// for its position alone. Under the null dSSE_i / sigma^2 ~ chi2_3, so
/// z_i = sqrt(dSSE_i) / FLE ~ sqrt(chi2_3 / 3), the scale of a single marker's error in FLE
/// units, and z > 3 (the default `outlier_factor`) happens by chance with probability about 6e-6
/// per marker. While more than `min_markers` remain and fewer than `max_outliers` were excluded,
/// the marker with the largest z_i is excluded if z_i > `outlier_factor`; a marker whose removal
/// would leave a degenerate layout is never a candidate. With weights, residuals are weighted by
/// the weights normalised to mean 1 over the markers in use (exact for equal weights, an
/// approximation otherwise). The largest dSSE also picks the true outlier where the isotropic
/// TRE normalisation of e_i does not: a gross outlier drags the fit, and a neighbour's
/// leave-one-out error can then look as large as its own (masking, seen with 6 markers).
///
/// Refuses: bad config, length mismatch, non-finite input, bad weights, fewer than `min_markers`
/// markers, a near-collinear layout of the markers used (smaller spread ratio of the two sides),
/// and an RMS FRE of the used markers above `max_fre`.
pub fn register(
    moving: &[Point3<f64>],
    fixed: &[Point3<f64>],
    weights: Option<&[f64]>,
    config: &RegistrationConfig,
) -> Result<RegistrationResult, RegistrationError> {
    config.validate()?;
    check_inputs(moving, fixed, weights, config.max_abs_coordinate)?;
    let n = moving.len();
    if n < config.min_markers {
        return Err(RegistrationError::NotEnoughMarkers { have: n, need: config.min_markers });
    }
    let fle = config.fle_rms;
    let mut used: Vec<usize> = (0..n).collect();
    let mut excluded = Vec::new();
    while used.len() > config.min_markers && excluded.len() < config.max_outliers {
        let total: f64 = used.iter().map(|&i| weight(weights, i)).sum();
        let scale = used.len() as f64 / total;
        let sse = |idx: &[usize]| -> Result<f64, RegistrationError> {
            let t = fit(moving, fixed, weights, idx)?;
            Ok(idx.iter().map(|&j| scale * weight(weights, j) * (t * moving[j] - fixed[j]).norm_squared()).sum())
        };
        let sse_all = sse(&used)?;
        let mut worst: Option<(usize, f64)> = None;
        for (pos, &i) in used.iter().enumerate() {
            let rest: Vec<usize> = used.iter().copied().filter(|&j| j != i).collect();
            if !usable(moving, fixed, weights, &rest, config.min_spread_ratio) {
                continue;
            }
            let z = (sse_all - sse(&rest)?).max(0.0).sqrt() / fle;
            if worst.map_or(true, |(_, wz)| z > wz) {
                worst = Some((pos, z));
            }
        }
        match worst {
            Some((pos, z)) if z > config.outlier_factor => excluded.push(used.remove(pos)),
            _ => break,
        }
    }

    let used_moving: Vec<Point3<f64>> = used.iter().map(|&i| moving[i]).collect();
    let used_fixed: Vec<Point3<f64>> = used.iter().map(|&i| fixed[i]).collect();
    let spread = spread_ratio(&used_moving).min(spread_ratio(&used_fixed));
    if spread < config.min_spread_ratio {
        return Err(RegistrationError::Degenerate { spread_ratio: spread, limit: config.min_spread_ratio });
    }
    let transform = fit(moving, fixed, weights, &used)?;
    let residuals: Vec<f64> = used.iter().map(|&i| (transform * moving[i] - fixed[i]).norm()).collect();
    let fre_rms = weighted_rms(&residuals, &used, weights);
    if !fre_rms.is_finite() {
        return Err(RegistrationError::NoConvergence { what: "rigid fit (non-finite residuals)", iterations: 0 });
    }
    if fre_rms > config.max_fre {
        return Err(RegistrationError::FreTooHigh { fre_rms, limit: config.max_fre });
    }
    let status = if excluded.is_empty() { RegistrationStatus::Ok } else { RegistrationStatus::OutlierExcluded };
    Ok(RegistrationResult { transform, status, used, excluded, residuals, fre_rms })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonInput {
    moving: Vec<[f64; 3]>,
    fixed: Vec<[f64; 3]>,
    #[serde(default)]
    weights: Option<Vec<f64>>,
    #[serde(default)]
    targets: Vec<[f64; 3]>,
    #[serde(default)]
    config: RegistrationConfig,
}

/// JSON in, JSON out, for the command line and the peer test.
///
/// Input: {"moving": [[x,y,z],..], "fixed": [...], "weights": [...] (optional), "targets":
/// [[x,y,z],..] (optional, moving frame), "config": {...} (optional, [`RegistrationConfig`])}.
/// Output: {"status", "rotation_matrix" (3x3, list of rows), "translation", "fre_rms",
/// "residuals", "used", "excluded", "predicted_tre" (per target, RMS, from the used markers and
/// `config.fle_rms`), "targets_fixed" (each target mapped into the fixed frame), "expected_fre"
/// (for the number of used markers)}, or {"error": "..."}. Non-finite numbers come out as null.
pub fn register_json(input: &str) -> String {
    let value = match register_request(input) {
        Ok(r) => serde_json::to_value(&r),
        Err(e) => Ok(serde_json::json!({ "error": e.to_string() })),
    };
    value.map(|v| v.to_string()).unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }).to_string())
}

/// The answer of [`register_request`] (what [`register_json`] prints on success).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegisterResponse {
    pub status: RegistrationStatus,
    /// 3x3, list of rows.
    pub rotation_matrix: Vec<[f64; 3]>,
    pub translation: [f64; 3],
    pub fre_rms: f64,
    pub residuals: Vec<f64>,
    pub used: Vec<usize>,
    pub excluded: Vec<usize>,
    /// Per target, RMS, from the used markers and `config.fle_rms`.
    pub predicted_tre: Vec<f64>,
    /// Each target mapped into the fixed frame.
    pub targets_fixed: Vec<[f64; 3]>,
    /// For the number of used markers.
    pub expected_fre: f64,
}

/// Why [`register_request`] gave no registration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RegisterRequestError {
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error(transparent)]
    Registration(#[from] RegistrationError),
}

/// [`register_json`] with typed input errors and result (the CLI's exit status follows the variant).
pub fn register_request(input: &str) -> Result<RegisterResponse, RegisterRequestError> {
    let de = &mut serde_json::Deserializer::from_str(input);
    let parsed: JsonInput =
        serde_path_to_error::deserialize(de).map_err(|e| RegisterRequestError::InvalidInput(e.to_string()))?;
    let to_points = |v: &[[f64; 3]]| v.iter().map(|p| Point3::new(p[0], p[1], p[2])).collect::<Vec<_>>();
    let moving = to_points(&parsed.moving);
    let fixed = to_points(&parsed.fixed);
    let targets = to_points(&parsed.targets);
    let result = register(&moving, &fixed, parsed.weights.as_deref(), &parsed.config)?;
    let r = result.transform.rotation.to_rotation_matrix();
    let rows: Vec<[f64; 3]> = (0..3).map(|i| [r[(i, 0)], r[(i, 1)], r[(i, 2)]]).collect();
    let t = result.transform.translation.vector;
    let fle = parsed.config.fle_rms;
    let predicted: Vec<f64> = targets.iter().map(|p| result.predicted_tre_at(&moving, p, fle)).collect();
    let mapped: Vec<[f64; 3]> = targets
        .iter()
        .map(|p| {
            let q = result.transform * p;
            [q.x, q.y, q.z]
        })
        .collect();
    Ok(RegisterResponse {
        status: result.status,
        rotation_matrix: rows,
        translation: [t.x, t.y, t.z],
        fre_rms: result.fre_rms,
        residuals: result.residuals.clone(),
        used: result.used.clone(),
        excluded: result.excluded.clone(),
        predicted_tre: predicted,
        targets_fixed: mapped,
        expected_fre: expected_fre(result.used.len(), fle),
    })
}

/// Coordinates beyond this make the fit's sums of squares overflow whatever the unit; the limit
/// of [`rigid_register`], which has no config.
pub const NUMERIC_COORDINATE_LIMIT: f64 = 1e100;
/// Iterations allowed to the 3x3 SVD and eigen decompositions (they converge in a few dozen on
/// any finite input; without a bound nalgebra iterates for ever on overflowing entries).
const MAX_DECOMPOSITION_ITERATIONS: usize = 1000;

fn check_inputs(
    moving: &[Point3<f64>],
    fixed: &[Point3<f64>],
    weights: Option<&[f64]>,
    max_abs_coordinate: f64,
) -> Result<(), RegistrationError> {
    if moving.len() != fixed.len() {
        return Err(RegistrationError::LengthMismatch { moving: moving.len(), fixed: fixed.len() });
    }
    if let Some(index) =
        moving.iter().zip(fixed).position(|(m, f)| !(m.coords.iter().chain(f.coords.iter())).all(|c| c.is_finite()))
    {
        return Err(RegistrationError::NonFinite { index });
    }
    for (side, points) in [("moving", moving), ("fixed", fixed)] {
        for (index, p) in points.iter().enumerate() {
            if let Some(&value) = p.coords.iter().find(|c| c.abs() > max_abs_coordinate) {
                return Err(RegistrationError::CoordinateOutOfRange { side, index, value, limit: max_abs_coordinate });
            }
        }
    }
    if let Some(w) = weights {
        if w.len() != moving.len() {
            return Err(RegistrationError::BadWeights(format!("{} weights for {} markers", w.len(), moving.len())));
        }
        if let Some(i) = w.iter().position(|x| !(x.is_finite() && *x >= 0.0)) {
            return Err(RegistrationError::BadWeights(format!("weight {i} is {}, must be finite and >= 0", w[i])));
        }
        let positive = w.iter().filter(|&&x| x > 0.0).count();
        // Zero-weight markers do not constrain the fit, so they do not count towards the three needed.
        if positive < 3.min(moving.len()) {
            return Err(RegistrationError::BadWeights(format!(
                "only {positive} weights are positive, need at least 3"
            )));
        }
    }
    Ok(())
}

/// Whether the markers `idx` can carry a registration: three positive weights and a layout that
/// is not near-collinear on either side.
fn usable(
    moving: &[Point3<f64>],
    fixed: &[Point3<f64>],
    weights: Option<&[f64]>,
    idx: &[usize],
    min_spread: f64,
) -> bool {
    let positive = idx.iter().filter(|&&i| weights.map_or(true, |w| w[i] > 0.0)).count();
    if positive < 3 {
        return false;
    }
    let m: Vec<Point3<f64>> = idx.iter().map(|&i| moving[i]).collect();
    let f: Vec<Point3<f64>> = idx.iter().map(|&i| fixed[i]).collect();
    spread_ratio(&m).min(spread_ratio(&f)) >= min_spread
}

fn centroid(points: &[Point3<f64>]) -> Point3<f64> {
    let sum = points.iter().fold(Vector3::zeros(), |acc, p| acc + p.coords);
    Point3::from(sum / points.len() as f64)
}

fn weight(weights: Option<&[f64]>, i: usize) -> f64 {
    weights.map_or(1.0, |w| w[i])
}

fn weighted_rms(residuals: &[f64], idx: &[usize], weights: Option<&[f64]>) -> f64 {
    let total: f64 = idx.iter().map(|&i| weight(weights, i)).sum();
    let sum: f64 = residuals.iter().zip(idx).map(|(r, &i)| weight(weights, i) * r * r).sum();
    (sum / total).sqrt()
}

/// The weighted Arun/Umeyama fit over the markers `idx` (inputs already checked, total weight > 0).
fn fit(
    moving: &[Point3<f64>],
    fixed: &[Point3<f64>],
    weights: Option<&[f64]>,
    idx: &[usize],
) -> Result<Isometry3<f64>, RegistrationError> {
    let total: f64 = idx.iter().map(|&i| weight(weights, i)).sum();
    let mean = |pts: &[Point3<f64>]| {
        Point3::from(idx.iter().fold(Vector3::zeros(), |acc, &i| acc + pts[i].coords * weight(weights, i)) / total)
    };
    let (cm, cf) = (mean(moving), mean(fixed));
    let h = idx
        .iter()
        .fold(Matrix3::zeros(), |acc, &i| acc + (moving[i] - cm) * (fixed[i] - cf).transpose() * weight(weights, i));
    let no_convergence = RegistrationError::NoConvergence {
        what: "SVD of the cross-covariance",
        iterations: MAX_DECOMPOSITION_ITERATIONS,
    };
    if !h.iter().all(|x| x.is_finite()) {
        return Err(no_convergence);
    }
    let r = proper_rotation(&h).ok_or(no_convergence.clone())?;
    let rotation = UnitQuaternion::from_rotation_matrix(&Rotation3::from_matrix_unchecked(r));
    let translation = cf.coords - rotation * cm.coords;
    if !(rotation.coords.iter().all(|x| x.is_finite()) && translation.iter().all(|x| x.is_finite())) {
        return Err(no_convergence);
    }
    Ok(Isometry3::from_parts(Translation3::from(translation), rotation))
}

/// Eigen decomposition with bounded iterations: None for non-finite entries or no convergence.
fn symmetric_eigen(m: Matrix3<f64>) -> Option<SymmetricEigen<f64, nalgebra::U3>> {
    if !m.iter().all(|x| x.is_finite()) {
        return None;
    }
    SymmetricEigen::try_new(m, f64::EPSILON, MAX_DECOMPOSITION_ITERATIONS)
}

/// R = V diag(1, 1, det(V U^T)) U^T for H = U S V^T: the rotation maximising tr(R H), never a
/// reflection. None when the SVD does not converge (bounded iterations).
fn proper_rotation(h: &Matrix3<f64>) -> Option<Matrix3<f64>> {
    // A dynamic matrix takes nalgebra's bidiagonal SVD: its 3x3 special case squares H (H^T H
    // eigenvectors) and drops the signs of the QR diagonal, which loses planar configurations.
    if !h.iter().all(|x| x.is_finite()) {
        return None;
    }
    // `svd()` iterates without bound: on overflowing entries it never converges (issue 11).
    let svd = DMatrix::from_column_slice(3, 3, h.as_slice()).try_svd(
        true,
        true,
        f64::EPSILON,
        MAX_DECOMPOSITION_ITERATIONS,
    )?;
    let (u, v_t) = (svd.u?, svd.v_t?);
    let u = Matrix3::from_column_slice(u.as_slice());
    let v = Matrix3::from_column_slice(v_t.as_slice()).transpose();
    let d = (v * u.transpose()).determinant().signum();
    let r = v * Matrix3::from_diagonal(&Vector3::new(1.0, 1.0, d)) * u.transpose();
    r.iter().all(|x| x.is_finite()).then_some(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, Normal};

    fn random_pose(rng: &mut ChaCha8Rng) -> Isometry3<f64> {
        let n = Normal::new(0.0, 1.0).unwrap();
        let q = nalgebra::Quaternion::new(n.sample(rng), n.sample(rng), n.sample(rng), n.sample(rng));
        let t = Vector3::new(rng.random_range(-0.5..0.5), rng.random_range(-0.5..0.5), rng.random_range(-0.5..0.5));
        Isometry3::from_parts(Translation3::from(t), UnitQuaternion::from_quaternion(q))
    }

    fn random_points(rng: &mut ChaCha8Rng, n: usize, half_width: f64) -> Vec<Point3<f64>> {
        (0..n)
            .map(|_| {
                Point3::new(
                    rng.random_range(-half_width..half_width),
                    rng.random_range(-half_width..half_width),
                    rng.random_range(-half_width..half_width),
                )
            })
            .collect()
    }

    /// Isotropic Gaussian noise with the given 3-D RMS (per-axis sigma = rms / sqrt 3).
    fn noisy(rng: &mut ChaCha8Rng, points: &[Point3<f64>], rms: f64) -> Vec<Point3<f64>> {
        let n = Normal::new(0.0, rms / 3f64.sqrt()).unwrap();
        points.iter().map(|p| p + Vector3::new(n.sample(rng), n.sample(rng), n.sample(rng))).collect()
    }

    fn transformed(t: &Isometry3<f64>, points: &[Point3<f64>]) -> Vec<Point3<f64>> {
        points.iter().map(|p| t * p).collect()
    }

    fn pts(rows: &[[f64; 3]]) -> Vec<Point3<f64>> {
        rows.iter().map(|r| Point3::new(r[0], r[1], r[2])).collect()
    }

    fn assert_same_transform(a: &Isometry3<f64>, b: &Isometry3<f64>, eps: f64) {
        assert_relative_eq!(a.to_homogeneous(), b.to_homogeneous(), epsilon = eps);
    }

    #[test]
    fn recovers_a_random_rigid_transform_exactly_without_noise() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for n in [3, 4, 7, 20] {
            let truth = random_pose(&mut rng);
            let moving = random_points(&mut rng, n, 0.1);
            let fixed = transformed(&truth, &moving);
            let est = rigid_register(&moving, &fixed, None).unwrap();
            assert_same_transform(&est, &truth, 1e-9);
            let r = register(&moving, &fixed, None, &RegistrationConfig::default()).unwrap();
            assert_same_transform(&r.transform, &truth, 1e-9);
            assert!(r.fre_rms < 1e-12 && r.excluded.is_empty() && r.status == RegistrationStatus::Ok);
        }
    }

    #[test]
    fn noisy_estimate_is_unbiased_and_fre_matches_theory() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let (n, fle, trials) = (6, 0.5e-3, 2000);
        let moving = random_points(&mut rng, n, 0.08);
        let truth = random_pose(&mut rng);
        let probe = Point3::new(0.05, -0.12, 0.03);
        let mut sum_err = Vector3::zeros();
        let mut sum_sq_err = 0.0;
        let mut sum_fre_sq = 0.0;
        for _ in 0..trials {
            let fixed = noisy(&mut rng, &transformed(&truth, &moving), fle);
            let r =
                register(&moving, &fixed, None, &RegistrationConfig { max_outliers: 0, ..Default::default() }).unwrap();
            let e = r.transform * probe - truth * probe;
            sum_err += e;
            sum_sq_err += e.norm_squared();
            sum_fre_sq += r.fre_rms.powi(2);
        }
        let mean = sum_err / trials as f64;
        // Standard error of each mean component is at most the RMS error / sqrt(trials).
        let se = (sum_sq_err / trials as f64).sqrt() / (trials as f64).sqrt();
        assert!(mean.amax() < 4.0 * se, "bias {mean:?} vs standard error {se:e}");
        // E[FRE^2] = (N-2)/N FLE^2; FRE^2 ~ chi2 with 3(N-2) = 12 dof: 2000 trials give ~1 % SE.
        let ratio = (sum_fre_sq / trials as f64).sqrt() / expected_fre(n, fle);
        assert!((ratio - 1.0).abs() < 0.03, "FRE / expected = {ratio}");
    }

    #[test]
    fn integer_weights_equal_duplicated_points() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let truth = random_pose(&mut rng);
        let moving = random_points(&mut rng, 5, 0.1);
        let fixed = noisy(&mut rng, &transformed(&truth, &moving), 1e-3);
        let weights = [1.0, 3.0, 2.0, 1.0, 4.0];
        let (mut dup_m, mut dup_f) = (vec![], vec![]);
        for (i, &w) in weights.iter().enumerate() {
            for _ in 0..w as usize {
                dup_m.push(moving[i]);
                dup_f.push(fixed[i]);
            }
        }
        let weighted = rigid_register(&moving, &fixed, Some(&weights)).unwrap();
        let duplicated = rigid_register(&dup_m, &dup_f, None).unwrap();
        assert_same_transform(&weighted, &duplicated, 1e-12);
        let unweighted = rigid_register(&moving, &fixed, None).unwrap();
        assert!((weighted.to_homogeneous() - unweighted.to_homogeneous()).amax() > 1e-6, "weights had no effect");
        let cfg = RegistrationConfig { max_outliers: 0, max_fre: 1.0, ..Default::default() };
        let a = register(&moving, &fixed, Some(&weights), &cfg).unwrap();
        let b = register(&dup_m, &dup_f, None, &cfg).unwrap();
        assert_relative_eq!(a.fre_rms, b.fre_rms, max_relative = 1e-12);
    }

    #[test]
    fn planar_and_mirror_prone_points_give_a_proper_rotation() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        // Coplanar points: H has a zero singular value, so a plain V U^T may be a reflection.
        let planar = pts(&[[0.0, 0.0, 0.0], [0.1, 0.0, 0.0], [0.0, 0.07, 0.0], [0.08, 0.05, 0.0], [0.03, 0.09, 0.0]]);
        for _ in 0..50 {
            let truth = random_pose(&mut rng);
            let fixed = noisy(&mut rng, &transformed(&truth, &planar), 0.3e-3);
            let est = rigid_register(&planar, &fixed, None).unwrap();
            assert_relative_eq!(est.rotation.to_rotation_matrix().matrix().determinant(), 1.0, epsilon = 1e-12);
            assert!(est.rotation.angle_to(&truth.rotation) < 0.02);
        }
        // Fixed = mirror image of moving: the best proper rotation is not a reflection.
        let moving = random_points(&mut rng, 6, 0.1);
        let mirrored: Vec<Point3<f64>> = moving.iter().map(|p| Point3::new(-p.x, p.y, p.z)).collect();
        let h = proper_rotation(&Matrix3::from_diagonal(&Vector3::new(-1.0, 1.0, 1.0))).unwrap();
        assert_relative_eq!(h.determinant(), 1.0, epsilon = 1e-12);
        let est = rigid_register(&moving, &mirrored, None).unwrap();
        assert_relative_eq!(est.rotation.to_rotation_matrix().matrix().determinant(), 1.0, epsilon = 1e-12);
    }

    #[test]
    fn planted_gross_outlier_is_excluded() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let cfg = RegistrationConfig::default();
        for trial in 0..20 {
            let truth = random_pose(&mut rng);
            let moving = random_points(&mut rng, 6, 0.08);
            let mut fixed = noisy(&mut rng, &transformed(&truth, &moving), cfg.fle_rms);
            let bad = trial % 6;
            let dir = Vector3::new(rng.random::<f64>() - 0.5, rng.random::<f64>() - 0.5, rng.random::<f64>() - 0.5);
            fixed[bad] += dir.normalize() * 10e-3;
            let r = register(&moving, &fixed, None, &cfg).unwrap();
            assert_eq!(r.status, RegistrationStatus::OutlierExcluded);
            assert_eq!(r.excluded, vec![bad]);
            assert_eq!(r.used, (0..6).filter(|&i| i != bad).collect::<Vec<_>>());
            assert_eq!(r.residuals.len(), 5);
            assert!(r.transform.rotation.angle_to(&truth.rotation) < 0.02);
            assert!(r.fre_rms < 3.0 * expected_fre(5, cfg.fle_rms));
        }
    }

    #[test]
    fn moderate_outlier_is_found_not_masked_by_its_neighbours() {
        // 3 mm is about 9 FLE: large enough to find, small enough that the fit partly absorbs it.
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        let cfg = RegistrationConfig::default();
        let mut right = 0;
        for _ in 0..200 {
            let truth = random_pose(&mut rng);
            let moving = random_points(&mut rng, 6, 0.08);
            let mut fixed = noisy(&mut rng, &transformed(&truth, &moving), cfg.fle_rms);
            let dir = Vector3::new(rng.random::<f64>() - 0.5, rng.random::<f64>() - 0.5, rng.random::<f64>() - 0.5);
            fixed[2] += dir.normalize() * 3e-3;
            if register(&moving, &fixed, None, &cfg).unwrap().excluded == vec![2] {
                right += 1;
            }
        }
        assert!(right >= 196, "the 3 mm outlier was excluded in only {right} of 200 trials");
    }

    #[test]
    fn clean_noisy_data_keeps_every_marker() {
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        let cfg = RegistrationConfig::default();
        let mut kept_all = 0;
        for _ in 0..200 {
            let truth = random_pose(&mut rng);
            let moving = random_points(&mut rng, 6, 0.08);
            let fixed = noisy(&mut rng, &transformed(&truth, &moving), cfg.fle_rms);
            let r = register(&moving, &fixed, None, &cfg).unwrap();
            if r.excluded.is_empty() {
                kept_all += 1;
            }
        }
        assert!(kept_all >= 190, "only {kept_all} of 200 clean registrations kept every marker");
    }

    #[test]
    fn refuses_what_cannot_be_trusted() {
        let cfg = RegistrationConfig::default();
        let two = pts(&[[0.0, 0.0, 0.0], [0.1, 0.0, 0.0]]);
        assert_eq!(register(&two, &two, None, &cfg), Err(RegistrationError::NotEnoughMarkers { have: 2, need: 3 }));
        assert_eq!(rigid_register(&two, &two, None), Err(RegistrationError::NotEnoughMarkers { have: 2, need: 3 }));
        let line = pts(&[[0.0, 0.0, 0.0], [0.05, 0.0, 0.0001], [0.1, 0.0001, 0.0], [0.15, 0.0, 0.0]]);
        assert!(matches!(register(&line, &line, None, &cfg), Err(RegistrationError::Degenerate { .. })));
        let mut nan = pts(&[[0.0, 0.0, 0.0], [0.1, 0.0, 0.0], [0.0, 0.1, 0.0], [0.0, 0.0, 0.1]]);
        let good = nan.clone();
        nan[2].y = f64::NAN;
        assert_eq!(register(&nan, &good, None, &cfg), Err(RegistrationError::NonFinite { index: 2 }));
        assert_eq!(register(&good, &nan, None, &cfg), Err(RegistrationError::NonFinite { index: 2 }));
        let mut far = good.clone();
        far[0].x += 5e-3;
        far[1].y -= 5e-3;
        let strict = RegistrationConfig { max_outliers: 0, ..cfg.clone() };
        assert!(matches!(register(&good, &far, None, &strict), Err(RegistrationError::FreTooHigh { .. })));
        assert_eq!(
            register(&good, &good[..3], None, &cfg),
            Err(RegistrationError::LengthMismatch { moving: 4, fixed: 3 })
        );
        assert!(matches!(
            register(&good, &good, Some(&[1.0, -1.0, 1.0, 1.0]), &cfg),
            Err(RegistrationError::BadWeights(_))
        ));
        assert!(matches!(register(&good, &good, Some(&[1.0, 1.0]), &cfg), Err(RegistrationError::BadWeights(_))));
        assert!(matches!(
            register(&good, &good, Some(&[1.0, 0.0, 0.0, 1.0]), &cfg),
            Err(RegistrationError::BadWeights(_))
        ));
        let bad_cfg = RegistrationConfig { min_markers: 2, ..cfg.clone() };
        assert!(matches!(
            register(&good, &good, None, &bad_cfg),
            Err(RegistrationError::BadConfig { key: "min_markers", .. })
        ));
        let bad_cfg = RegistrationConfig { fle_rms: 0.0, ..cfg };
        assert!(matches!(
            register(&good, &good, None, &bad_cfg),
            Err(RegistrationError::BadConfig { key: "fle_rms", .. })
        ));
    }

    #[test]
    fn huge_coordinates_are_refused_and_the_decompositions_always_end() {
        // Issue 11: two coordinates of 1e154 made `register` spin for ever (their squares overflow).
        let good = pts(&[[0.0, 0.0, 0.0], [0.1, 0.0, 0.0], [0.0, 0.1, 0.0], [0.0, 0.0, 0.1]]);
        let mut huge = good.clone();
        huge[1].x = 1e154;
        huge[3].z = -1e154;
        let cfg = RegistrationConfig::default();
        assert_eq!(
            register(&good, &huge, None, &cfg),
            Err(RegistrationError::CoordinateOutOfRange { side: "fixed", index: 1, value: 1e154, limit: 10.0 })
        );
        let err = register(&huge, &good, None, &cfg).unwrap_err().to_string();
        assert!(
            err.contains("moving marker 1") && err.contains("1e154") && err.contains("max_abs_coordinate"),
            "{err}"
        );
        // 11 m is beyond the default bound of 10 m, and accepted when the bound is raised.
        let far: Vec<Point3<f64>> = good.iter().map(|p| p * 110.0).collect();
        assert!(matches!(register(&far, &far, None, &cfg), Err(RegistrationError::CoordinateOutOfRange { .. })));
        let wide = RegistrationConfig { max_abs_coordinate: 100.0, ..cfg.clone() };
        assert!(register(&far, &far, None, &wide).is_ok());
        let bad_cfg = RegistrationConfig { max_abs_coordinate: 1e154, ..cfg };
        assert!(matches!(
            register(&good, &good, None, &bad_cfg),
            Err(RegistrationError::BadConfig { key: "max_abs_coordinate", .. })
        ));
        // The unchecked entry points end too, whatever they are given.
        assert!(matches!(rigid_register(&huge, &good, None), Err(RegistrationError::CoordinateOutOfRange { .. })));
        // These return (whatever they return) on overflowing inputs; their callers refuse them first.
        for value in [1e154, 1e155, 1e300] {
            let far = pts(&[[value, 0.0, 0.0], [0.0, value, 0.0], [0.0, 0.1, 0.0], [0.0, 0.0, 0.1]]);
            let ratio = spread_ratio(&far);
            assert!((0.0..=1.0).contains(&ratio), "{value}: {ratio}");
            let _ = predicted_tre(&far, &Point3::origin(), 1e-3);
        }
        for bad in [f64::INFINITY, f64::NAN, 1e308] {
            let m = Matrix3::new(bad, 1.0, 0.0, 2.0, bad, 0.0, 0.0, 0.0, bad);
            let h = m * m.transpose();
            assert!(proper_rotation(&h).is_none() || h.iter().all(|x| x.is_finite()), "{bad}");
            assert!(symmetric_eigen(h).is_none() || h.iter().all(|x| x.is_finite()), "{bad}");
        }
        let nan = Matrix3::from_element(f64::NAN);
        assert!(proper_rotation(&nan).is_none());
        assert!(symmetric_eigen(nan).is_none());
    }

    #[test]
    fn outlier_that_would_leave_a_line_is_not_a_candidate() {
        // Four collinear markers and one off the line: without it the rest is degenerate.
        let moving = pts(&[[0.0, 0.0, 0.0], [0.05, 0.0, 0.0], [0.1, 0.0, 0.0], [0.15, 0.0, 0.0], [0.07, 0.06, 0.0]]);
        let cfg = RegistrationConfig::default();
        let r = register(&moving, &moving, None, &cfg).unwrap();
        assert!(r.excluded.is_empty());
    }

    #[test]
    fn spread_ratio_closed_forms() {
        assert_eq!(spread_ratio(&pts(&[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [2.0, 0.0, 0.0]])), 0.0);
        // Square: equal singular values in the plane.
        let square = pts(&[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 0.0]]);
        assert_relative_eq!(spread_ratio(&square), 1.0, epsilon = 1e-12);
        // 2 x 1 rectangle: singular values in ratio 1 : 2.
        let rect = pts(&[[0.0, 0.0, 5.0], [2.0, 0.0, 5.0], [2.0, 1.0, 5.0], [0.0, 1.0, 5.0]]);
        assert_relative_eq!(spread_ratio(&rect), 0.5, epsilon = 1e-12);
        assert_eq!(spread_ratio(&pts(&[[1.0, 1.0, 1.0]])), 0.0);
    }

    #[test]
    fn predicted_tre_closed_form_for_a_regular_tetrahedron() {
        // Covariance is isotropic (eigenvalues 1), so f_k^2 = 2 for every axis and
        // sum_k d_k^2 = 2 r^2: TRE^2 = FLE^2 / 4 * (1 + r^2 / 3) for any target at distance r.
        let s = 0.05;
        let tet: Vec<Point3<f64>> = pts(&[[1.0, 1.0, 1.0], [1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]])
            .iter()
            .map(|p| p * s)
            .collect();
        let fle = 0.4e-3;
        assert_relative_eq!(predicted_tre(&tet, &Point3::origin(), fle), fle / 2.0, max_relative = 1e-12);
        let target = Point3::new(0.03, -0.07, 0.02);
        let r2 = target.coords.norm_squared() / (s * s);
        assert_relative_eq!(
            predicted_tre(&tet, &target, fle),
            fle / 2.0 * (1.0 + r2 / 3.0).sqrt(),
            max_relative = 1e-12
        );
        assert_relative_eq!(expected_fre(4, fle), fle / 2f64.sqrt(), max_relative = 1e-15);
        let line = pts(&[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [2.0, 0.0, 0.0]]);
        assert_eq!(predicted_tre(&line, &Point3::origin(), fle), f64::INFINITY);
    }

    #[test]
    fn monte_carlo_tre_matches_prediction() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let fle = 0.35e-3;
        let moving = pts(&[
            [0.06, 0.01, 0.0],
            [-0.05, 0.04, 0.01],
            [0.0, -0.06, 0.02],
            [0.03, 0.05, -0.03],
            [-0.04, -0.03, -0.02],
            [0.01, 0.0, 0.04],
        ]);
        let truth = random_pose(&mut rng);
        let cfg = RegistrationConfig { max_outliers: 0, ..Default::default() };
        for target in [Point3::new(0.0, 0.0, 0.0), Point3::new(0.02, -0.05, 0.12), Point3::new(-0.15, 0.05, 0.0)] {
            let trials = 1000;
            let mut sum_sq = 0.0;
            let mut predicted = 0.0;
            for _ in 0..trials {
                // FLE on both sides, half the variance each, as the tracker and the image both contribute.
                let m = noisy(&mut rng, &moving, fle / 2f64.sqrt());
                let f = noisy(&mut rng, &transformed(&truth, &moving), fle / 2f64.sqrt());
                let r = register(&m, &f, None, &cfg).unwrap();
                sum_sq += (r.transform * target - truth * target).norm_squared();
                predicted = r.predicted_tre_at(&moving, &target, fle);
            }
            let observed = (sum_sq / trials as f64).sqrt();
            assert!(
                (observed / predicted - 1.0).abs() < 0.1,
                "target {target}: observed {observed:e}, predicted {predicted:e}"
            );
        }
    }

    #[test]
    fn matches_scikit_surgerycore_reference() {
        // Generated with scikit-surgerycore 0.8.3 (numpy default_rng(20240601)):
        // orthogonal_procrustes(fixed, moving) -> R, T, FRE; sqrt(compute_fre_from_fle(moving, fle^2));
        // sqrt(compute_tre_from_fle(...)) evaluated in the fiducials' principal-axis frame, where
        // its use of eigenvector rows (not columns) makes no difference.
        let moving = pts(&[
            [0.04669140913194565, 0.01293881841570138, -0.013622199434480772],
            [0.07152585968683565, -0.05716089215087776, -0.005743068422061223],
            [0.015798479809645535, 0.006508972103898503, 0.04654947711353678],
            [0.03711200303378298, -0.022232202341803745, -0.05629757532174013],
            [0.03969891642554588, 0.07578277488992659, 0.07258070679941737],
            [0.04674431469411451, -0.07238780790927332, -0.04969327540052229],
        ]);
        let fixed = pts(&[
            [0.30366156206918976, -0.06480479031181133, 0.2853161862443013],
            [0.33717540731336876, -0.11225205722165635, 0.33295279381454546],
            [0.2576959389907284, -0.11329077418811444, 0.27300935304676505],
            [0.3587691304506369, -0.07272647840817263, 0.2789545793905204],
            [0.19681577761402536, -0.06512887117519457, 0.27845675386580043],
            [0.3821756985675011, -0.11049481741171396, 0.30516419734120115],
        ]);
        let r_ref = Matrix3::new(
            0.001323890315853189,
            -0.569645571893653,
            -0.821889390207943,
            0.3931124926532899,
            0.7560163986729295,
            -0.5233562582577296,
            0.9194894319318457,
            -0.3224021205878884,
            0.22493567348485216,
        );
        let t_ref = Vector3::new(0.2997703067621466, -0.10007625992455368, 0.2500314255506203);
        let cfg = RegistrationConfig::default();
        let r = register(&moving, &fixed, None, &cfg).unwrap();
        assert!(r.excluded.is_empty());
        assert_relative_eq!(*r.transform.rotation.to_rotation_matrix().matrix(), r_ref, epsilon = 1e-12);
        assert_relative_eq!(r.transform.translation.vector, t_ref, epsilon = 1e-12);
        assert_relative_eq!(r.fre_rms, 0.0002618960012823875, max_relative = 1e-9);
        let target = Point3::new(0.02, 0.11, -0.04);
        assert_relative_eq!(r.predicted_tre_at(&moving, &target, 0.35e-3), 0.00040628343592755573, max_relative = 1e-9);
        assert_relative_eq!(expected_fre(6, 0.35e-3), 0.00028577380332470414, max_relative = 1e-12);
    }

    #[test]
    fn json_round_trip_and_errors() {
        let input = r#"{"moving": [[0,0,0],[0.1,0,0],[0,0.1,0],[0,0,0.1]],
                        "fixed":  [[1,0,0],[1.1,0,0],[1,0.1,0],[1,0,0.1]],
                        "targets": [[0,0,0]], "config": {"fle_rms": 0.0004}}"#;
        let out: serde_json::Value = serde_json::from_str(&register_json(input)).unwrap();
        assert_eq!(out["status"], "Ok");
        assert_eq!(out["used"], serde_json::json!([0, 1, 2, 3]));
        assert_eq!(out["rotation_matrix"][1][1], 1.0);
        assert_relative_eq!(out["translation"][0].as_f64().unwrap(), 1.0, epsilon = 1e-12);
        assert_relative_eq!(out["targets_fixed"][0][0].as_f64().unwrap(), 1.0, epsilon = 1e-12);
        assert_relative_eq!(out["expected_fre"].as_f64().unwrap(), 0.0004 / 2f64.sqrt(), max_relative = 1e-12);
        let moving = pts(&[[0.0, 0.0, 0.0], [0.1, 0.0, 0.0], [0.0, 0.1, 0.0], [0.0, 0.0, 0.1]]);
        let expected = predicted_tre(&moving, &Point3::origin(), 0.0004);
        assert_relative_eq!(out["predicted_tre"][0].as_f64().unwrap(), expected, max_relative = 1e-15);

        let err: serde_json::Value =
            serde_json::from_str(&register_json(r#"{"moving": [[0,0,0],[1,0,0]], "fixed": [[0,0,0],[1,0,0]]}"#))
                .unwrap();
        assert!(err["error"].as_str().unwrap().contains("not enough markers"));
        let err: serde_json::Value =
            serde_json::from_str(&register_json(r#"{"moving": [], "fixed": [], "config": {"max_frе": 1}}"#)).unwrap();
        assert!(err["error"].as_str().unwrap().contains("config"), "{err}");
        let err: serde_json::Value = serde_json::from_str(&register_json("not json")).unwrap();
        assert!(err["error"].is_string());
    }
}
