//! Breathing correction: a calm-breathing baseline of the correction markers, the deviation of
//! live motion from it, a correlation model from marker motion to lesion displacement fitted on
//! the CT frames where both are known, entry-point interpolation, and prediction ahead by the
//! robot's latency. Plain geometry in one frame (metres), no ROS types.

use nalgebra::{DMatrix, DVector, Point3, Vector3};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CorrectionError {
    #[error("need at least {need} samples, have {have}")]
    TooFewSamples { have: usize, need: usize },
    #[error("correction marker {0} missing from a sample")]
    MissingMarker(u32),
    #[error("the markers' motion is too small to define a breathing signal ({amplitude_m:.5} m)")]
    NoBreathing { amplitude_m: f64 },
    #[error("the correlation model is ill-conditioned: the CT frames do not span the breathing cycle")]
    IllConditioned,
    #[error("non-finite input")]
    NonFinite,
}

/// One observation of the correction markers: positions in the order of `Baseline::marker_ids`.
pub type MarkerSet = Vec<Point3<f64>>;

/// The breathing surrogate: the mean of the correction markers' displacements from their
/// end-exhale reference, projected on their common principal direction, scaled so that a
/// baseline breath has depth 1 (0 at end-exhale).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub marker_ids: Vec<u32>,
    /// End-exhale positions (the CT's phase) [m].
    pub reference: Vec<Point3<f64>>,
    /// Unit direction of each marker's breathing motion.
    pub directions: Vec<Vector3<f64>>,
    /// Baseline breath depth along the directions (95th minus 5th percentile of the mean projection) [m].
    pub depth_m: f64,
    /// Baseline trajectory: per sample, the displacement of every marker from its reference [m].
    pub trajectory: Vec<Vec<Vector3<f64>>>,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

impl Baseline {
    /// Records the baseline from calm-breathing samples (every sample holds every marker).
    pub fn record(marker_ids: Vec<u32>, samples: &[MarkerSet]) -> Result<Baseline, CorrectionError> {
        let n = marker_ids.len();
        if samples.len() < 20 {
            return Err(CorrectionError::TooFewSamples { have: samples.len(), need: 20 });
        }
        if samples.iter().any(|s| s.len() != n) {
            return Err(CorrectionError::MissingMarker(marker_ids.first().copied().unwrap_or(0)));
        }
        if samples.iter().flatten().any(|p| !p.iter().all(|c| c.is_finite())) {
            return Err(CorrectionError::NonFinite);
        }
        let mut directions = Vec::with_capacity(n);
        let mut proj_all: Vec<Vec<f64>> = Vec::with_capacity(n);
        for m in 0..n {
            let pts: Vec<Point3<f64>> = samples.iter().map(|s| s[m]).collect();
            let mean = pts.iter().fold(Vector3::zeros(), |a, p| a + p.coords) / pts.len() as f64;
            let mut cov = nalgebra::Matrix3::zeros();
            for p in &pts {
                let d = p.coords - mean;
                cov += d * d.transpose();
            }
            let eig = nalgebra::SymmetricEigen::new(cov);
            let imax = eig.eigenvalues.imax();
            let mut dir: Vector3<f64> = eig.eigenvectors.column(imax).into_owned();
            let proj: Vec<f64> = pts.iter().map(|p| (p.coords - mean).dot(&dir)).collect();
            // Orient so inhale is positive: end-exhale is the longer plateau, so the median lies nearer it.
            let mut sorted = proj.clone();
            sorted.sort_by(f64::total_cmp);
            let (lo, hi, med) = (percentile(&sorted, 0.05), percentile(&sorted, 0.95), percentile(&sorted, 0.5));
            if hi - med < med - lo {
                dir = -dir;
            }
            proj_all.push(pts.iter().map(|p| (p.coords - mean).dot(&dir)).collect());
            directions.push(dir);
        }
        let mean_proj: Vec<f64> =
            (0..samples.len()).map(|i| proj_all.iter().map(|p| p[i]).sum::<f64>() / n as f64).collect();
        let mut sorted = mean_proj.clone();
        sorted.sort_by(f64::total_cmp);
        let (lo, hi) = (percentile(&sorted, 0.05), percentile(&sorted, 0.95));
        let depth_m = hi - lo;
        if depth_m < 0.5e-3 {
            return Err(CorrectionError::NoBreathing { amplitude_m: depth_m });
        }
        // Reference: mean position over the end-exhale samples (lowest 15 % of the surrogate).
        let cut = percentile(&sorted, 0.15);
        let exhale: Vec<usize> = (0..samples.len()).filter(|&i| mean_proj[i] <= cut).collect();
        let reference: Vec<Point3<f64>> = (0..n)
            .map(|m| {
                Point3::from(
                    exhale.iter().fold(Vector3::zeros(), |a, &i| a + samples[i][m].coords) / exhale.len() as f64,
                )
            })
            .collect();
        let trajectory = samples.iter().map(|s| (0..n).map(|m| s[m] - reference[m]).collect()).collect();
        Ok(Baseline { marker_ids, reference, directions, depth_m, trajectory })
    }

    /// Displacements of a live sample from the references.
    pub fn displacements(&self, sample: &[Point3<f64>]) -> Vec<Vector3<f64>> {
        sample.iter().zip(&self.reference).map(|(p, r)| p - r).collect()
    }

    /// The breathing surrogate of a sample (0 end-exhale, 1 a baseline breath).
    pub fn surrogate(&self, sample: &[Point3<f64>]) -> f64 {
        let d = self.displacements(sample);
        let mean: f64 = d.iter().zip(&self.directions).map(|(d, u)| d.dot(u)).sum::<f64>() / d.len().max(1) as f64;
        mean / self.depth_m
    }

    /// Deviation of a sample from the baseline breathing: RMS over markers of the distance to the
    /// nearest baseline configuration [m]. Large when the patient moves or breathes differently.
    pub fn deviation(&self, sample: &[Point3<f64>]) -> f64 {
        let d = self.displacements(sample);
        let n = d.len().max(1) as f64;
        self.trajectory
            .iter()
            .map(|b| (b.iter().zip(&d).map(|(b, d)| (b - d).norm_squared()).sum::<f64>() / n).sqrt())
            .fold(f64::INFINITY, f64::min)
    }
}

/// Lesion displacement as a linear function of the surrogate s and its rate ds/dt (the rate
/// term captures hysteresis): d(s, ds) = c0 + c1 s + c2 ds, per axis, fitted by least squares on
/// the CT frames (4-D CT phases) where both the markers and the lesion are known.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CorrelationModel {
    /// Rows: axes x, y, z; columns: c0, c1, c2 [m, m, m s].
    pub coefficients: [[f64; 3]; 3],
    /// RMS residual of the fit [m].
    pub fit_rms_m: f64,
    pub frames: usize,
}

impl CorrelationModel {
    /// `surrogate`, `rate` and `lesion_displacement` per CT frame. With fewer than 4 frames only
    /// the c0 + c1 s part is fitted (no hysteresis term).
    pub fn fit(
        surrogate: &[f64],
        rate: &[f64],
        lesion_displacement: &[Vector3<f64>],
    ) -> Result<CorrelationModel, CorrectionError> {
        let k = surrogate.len();
        if k < 2 || rate.len() != k || lesion_displacement.len() != k {
            return Err(CorrectionError::TooFewSamples { have: k, need: 2 });
        }
        let use_rate = k >= 4;
        let cols = if use_rate { 3 } else { 2 };
        let a = DMatrix::from_fn(k, cols, |r, c| match c {
            0 => 1.0,
            1 => surrogate[r],
            _ => rate[r],
        });
        let svd = a.clone().svd(true, true);
        let smax = svd.singular_values.max();
        if svd.singular_values.min() < 1e-6 * smax.max(1e-12) {
            return Err(CorrectionError::IllConditioned);
        }
        let mut coefficients = [[0.0; 3]; 3];
        let mut sq = 0.0;
        for axis in 0..3 {
            let b = DVector::from_iterator(k, lesion_displacement.iter().map(|d| d[axis]));
            let x = svd.solve(&b, 1e-12).map_err(|_| CorrectionError::IllConditioned)?;
            for c in 0..cols {
                coefficients[axis][c] = x[c];
            }
            sq += (&a * &x - &b).norm_squared();
        }
        Ok(CorrelationModel { coefficients, fit_rms_m: (sq / k as f64).sqrt(), frames: k })
    }

    pub fn lesion_displacement(&self, surrogate: f64, rate: f64) -> Vector3<f64> {
        Vector3::from_fn(|axis, _| {
            let c = self.coefficients[axis];
            c[0] + c[1] * surrogate + c[2] * rate
        })
    }
}

/// Displacement at `at` interpolated from marker displacements by inverse-distance weighting
/// (power 2): nearby skin moves most like the entry point.
pub fn interpolate_displacement(
    at: &Point3<f64>,
    markers: &[Point3<f64>],
    displacements: &[Vector3<f64>],
) -> Vector3<f64> {
    let mut sum = Vector3::zeros();
    let mut weights = 0.0;
    for (p, d) in markers.iter().zip(displacements) {
        let dist2 = (p - at).norm_squared();
        if dist2 < 1e-12 {
            return *d;
        }
        let w = 1.0 / dist2;
        sum += d * w;
        weights += w;
    }
    if weights > 0.0 {
        sum / weights
    } else {
        Vector3::zeros()
    }
}

/// How to predict the surrogate ahead by the robot's latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PredictionMethod {
    /// No prediction: the latest value.
    None,
    /// Linear extrapolation of the slope over the last 0.2 s.
    Linear,
    /// Autoregressive model on the 10 Hz-decimated signal, refitted on the last 30 s, iterated.
    Autoregressive,
}

/// Why no prediction can be vouched for.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PredictionError {
    #[error("no samples yet")]
    NoSamples,
    #[error("{have_s:.2} s of uninterrupted breathing history, {need_s:.2} s needed")]
    TooShort { have_s: f64, need_s: f64 },
    #[error(
        "the predicted change {change:.2} is beyond what the recent breathing did in that time ({limit:.2}, in breaths)"
    )]
    Implausible { change: f64, limit: f64 },
    #[error("the predicted value {value:.2} is outside the recent breathing ({low:.2} to {high:.2}, in breaths)")]
    OutOfRange { value: f64, low: f64, high: f64 },
    #[error(
        "irregular breathing (a cough or a sudden movement): the last 0.4 s departs {surprise:.1} times the \
         model's usual error from it"
    )]
    Irregular { surprise: f64 },
}

/// Online predictor of a scalar signal sampled at arbitrary (increasing) times.
///
/// A gap longer than `MAX_GAP_S` (an occlusion) restarts the history: extrapolating across it, or
/// running the AR model on bins that skip the gap, gave predictions tens of millimetres off.
/// The AR coefficients are kept across gaps (the patient's breathing dynamics do not change).
#[derive(Debug, Clone)]
pub struct Predictor {
    method: PredictionMethod,
    history: std::collections::VecDeque<(f64, f64)>,
    /// 10 Hz samples (bin means) for the AR model; NaN where a gap restarted the history.
    decimated: std::collections::VecDeque<f64>,
    bin: (f64, f64, f64), // (bin start, sum, count)
    ar: Option<ArModel>,
    since_fit: usize,
}

/// An autoregressive model of the mean-removed 10 Hz series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArModel {
    /// Weights of the last `AR_ORDER` bins, oldest first.
    weights: Vec<f64>,
    mean: f64,
    /// RMS one-step residual of the fit, at least 2 % of the fitted series' range: what
    /// "surprising" means for this patient (a noise-free signal would make anything surprising).
    residual_rms: f64,
}

impl ArModel {
    /// The next value after `recent` (the last `AR_ORDER` values, oldest first).
    fn step(&self, recent: impl IntoIterator<Item = f64>) -> f64 {
        self.mean + self.weights.iter().zip(recent).map(|(w, x)| w * (x - self.mean)).sum::<f64>()
    }
}

const AR_ORDER: usize = 8;
const AR_STEP_S: f64 = 0.1;
const AR_HISTORY: usize = 300;
/// Bins needed for an AR fit (5 s: more than a breath).
const AR_MIN_FIT: usize = 50;
/// One-step errors above this many fit residuals mark irregular breathing ...
const IRREGULAR_SURPRISE: f64 = 6.0;
/// ... when they occur in this many most recent bins.
const IRREGULAR_WINDOW: usize = 4;
/// A longer pause between samples restarts the history [s].
pub const MAX_GAP_S: f64 = 0.25;
/// Linear extrapolation needs this much history [s].
const LINEAR_MIN_SPAN_S: f64 = 0.1;

/// What of a predictor survives a restart: its method and the fitted AR model (the patient's
/// breathing dynamics). The history does not: a restart is a gap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictorState {
    pub method: PredictionMethod,
    pub ar: Option<ArModel>,
    /// The 10 Hz series of the last 30 s (`None` where a gap was): what the breathing did, which
    /// bounds what a prediction may claim. Without it a resumed predictor refused until it had
    /// seen whole breaths again.
    #[serde(default)]
    pub recent_bins: Vec<Option<f64>>,
}

/// Why a saved predictor state is not used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PredictorStateError {
    #[error("{0} bins of history, at most {AR_HISTORY}")]
    TooMuchHistory(usize),
    #[error("non-finite breathing history")]
    NonFiniteHistory,
    #[error("AR model of order {0}, expected {AR_ORDER}")]
    WrongOrder(usize),
    #[error("AR model with non-finite coefficients")]
    NonFiniteCoefficients,
    #[error("AR model residual {0} must be finite and > 0")]
    BadResidual(f64),
}

impl PredictorState {
    /// A state read from a file is checked before it is used.
    pub fn check(&self) -> Result<(), PredictorStateError> {
        if self.recent_bins.len() > AR_HISTORY {
            return Err(PredictorStateError::TooMuchHistory(self.recent_bins.len()));
        }
        if self.recent_bins.iter().flatten().any(|v| !v.is_finite()) {
            return Err(PredictorStateError::NonFiniteHistory);
        }
        if let Some(ar) = &self.ar {
            if ar.weights.len() != AR_ORDER {
                return Err(PredictorStateError::WrongOrder(ar.weights.len()));
            }
            if !(ar.weights.iter().all(|w| w.is_finite()) && ar.mean.is_finite()) {
                return Err(PredictorStateError::NonFiniteCoefficients);
            }
            if !(ar.residual_rms.is_finite() && ar.residual_rms > 0.0) {
                return Err(PredictorStateError::BadResidual(ar.residual_rms));
            }
        }
        Ok(())
    }
}

impl Predictor {
    /// The part that survives a restart.
    pub fn state(&self) -> PredictorState {
        PredictorState {
            method: self.method,
            ar: self.ar.clone(),
            recent_bins: self.decimated.iter().map(|v| v.is_finite().then_some(*v)).collect(),
        }
    }

    /// A predictor with a saved model and no history: it predicts once `AR_ORDER` bins (0.8 s)
    /// of new samples have arrived, instead of the `AR_MIN_FIT` bins (5 s) a new fit needs.
    pub fn restored(state: &PredictorState) -> Predictor {
        let mut p = Predictor::new(state.method);
        p.ar = state.ar.clone();
        p.decimated = state.recent_bins.iter().map(|v| v.unwrap_or(f64::NAN)).collect();
        // The restart itself is a gap: no AR row, prediction or change spans it.
        if p.decimated.back().is_some_and(|v| !v.is_nan()) {
            p.decimated.push_back(f64::NAN);
        }
        p
    }

    pub fn new(method: PredictionMethod) -> Predictor {
        Predictor {
            method,
            history: Default::default(),
            decimated: Default::default(),
            bin: (f64::NAN, 0.0, 0.0),
            ar: None,
            since_fit: 0,
        }
    }

    pub fn push(&mut self, t_s: f64, value: f64) {
        if !(t_s.is_finite() && value.is_finite()) {
            return;
        }
        if let Some(&(t_prev, _)) = self.history.back() {
            if t_s == t_prev {
                return; // a repeated sample carries nothing new
            }
            // A gap, or time going back (a replay restarted), restarts the history.
            if t_s - t_prev > MAX_GAP_S || t_s < t_prev {
                // NaN marks the gap in the decimated series: no AR row, prediction or change spans it.
                self.history.clear();
                if self.decimated.back().is_some_and(|v| !v.is_nan()) {
                    self.decimated.push_back(f64::NAN);
                }
                self.bin = (f64::NAN, 0.0, 0.0);
            }
        }
        self.history.push_back((t_s, value));
        while self.history.front().is_some_and(|(t, _)| t_s - t > 0.5) {
            self.history.pop_front();
        }
        if self.bin.0.is_nan() {
            self.bin = (t_s, 0.0, 0.0);
        }
        if t_s - self.bin.0 >= AR_STEP_S && self.bin.2 > 0.0 {
            let closed = self.bin.1 / self.bin.2;
            // Bins the samples skipped (a short dropout) are interpolated, so the series keeps 10 Hz.
            let steps = ((t_s - self.bin.0) / AR_STEP_S).floor();
            let skipped = steps as usize - 1;
            self.push_bin(closed);
            for j in 1..=skipped {
                self.push_bin(closed + (value - closed) * j as f64 / (skipped + 1) as f64);
            }
            self.bin = (self.bin.0 + AR_STEP_S * steps, 0.0, 0.0);
        }
        self.bin.1 += value;
        self.bin.2 += 1.0;
    }

    fn push_bin(&mut self, v: f64) {
        self.decimated.push_back(v);
        if self.decimated.len() > AR_HISTORY {
            self.decimated.pop_front();
        }
        self.since_fit += 1;
        let due = self.ar.is_none() || self.since_fit >= 20;
        if self.method == PredictionMethod::Autoregressive && due {
            if let Some(fit) = fit_ar(self.decimated.make_contiguous(), AR_ORDER, AR_MIN_FIT) {
                self.ar = Some(fit);
                self.since_fit = 0;
            }
        }
    }

    /// The least-squares slope of the signal over its last `window_s` (since the last gap) [1/s];
    /// refused when those samples span less than `min_span_s` or are fewer than 3.
    pub fn slope(&self, window_s: f64, min_span_s: f64) -> Result<f64, PredictionError> {
        let &(t_last, _) = self.history.back().ok_or(PredictionError::NoSamples)?;
        let window = || self.history.iter().filter(|(t, _)| t_last - t <= window_s);
        let (n, t_sum, v_sum) = window().fold((0.0, 0.0, 0.0), |(n, a, b), (t, v)| (n + 1.0, a + t, b + v));
        let span = window().next().map_or(0.0, |(t0, _)| t_last - t0);
        if span < min_span_s || n < 3.0 {
            return Err(PredictionError::TooShort { have_s: span, need_s: min_span_s });
        }
        let (tm, vm) = (t_sum / n, v_sum / n);
        let (num, den) =
            window().fold((0.0, 0.0), |(num, den), (t, v)| (num + (t - tm) * (v - vm), den + (t - tm).powi(2)));
        Ok(num / den)
    }

    /// The newest value, if any.
    pub fn latest(&self) -> Option<f64> {
        self.history.back().map(|&(_, v)| v)
    }

    /// Predicted value `horizon_s` after the latest sample; an error when the history is too short
    /// (after the start or a gap) or the prediction leaves what the signal has done in that time.
    pub fn predict(&self, horizon_s: f64) -> Result<f64, PredictionError> {
        let &(t_last, v_last) = self.history.back().ok_or(PredictionError::NoSamples)?;
        match self.method {
            PredictionMethod::None => Ok(v_last),
            PredictionMethod::Linear => {
                let (t0, v0) =
                    self.history.iter().find(|(t, _)| t_last - t <= 0.2).copied().unwrap_or((t_last, v_last));
                if t_last - t0 < LINEAR_MIN_SPAN_S {
                    return Err(PredictionError::TooShort { have_s: t_last - t0, need_s: LINEAR_MIN_SPAN_S });
                }
                Ok(v_last + (v_last - v0) / (t_last - t0) * horizon_s)
            }
            PredictionMethod::Autoregressive => {
                // Bins since the last gap.
                let have = self.decimated.iter().rev().take_while(|v| !v.is_nan()).count();
                let need = if self.ar.is_some() { AR_ORDER } else { AR_MIN_FIT };
                let Some(model) = self.ar.as_ref().filter(|_| have >= AR_ORDER) else {
                    return Err(PredictionError::TooShort {
                        have_s: have as f64 * AR_STEP_S,
                        need_s: need as f64 * AR_STEP_S,
                    });
                };
                // Iterate the AR model from the decimated history; then shift so it starts at the latest value.
                let mut recent: Vec<f64> = self.decimated.iter().rev().take(AR_ORDER).rev().copied().collect();
                let base = *recent.last().unwrap_or(&v_last);
                let steps = (horizon_s / AR_STEP_S).ceil().max(0.0) as usize;
                let mut path = vec![base];
                for _ in 0..steps {
                    let next = model.step(recent.iter().copied());
                    recent.remove(0);
                    recent.push(next);
                    path.push(next);
                }
                // Interpolate within the last step and add the offset between the raw and decimated values.
                let frac = if steps == 0 { 0.0 } else { horizon_s / AR_STEP_S - (steps - 1) as f64 };
                let ahead = if steps == 0 {
                    base
                } else {
                    path[steps - 1] + (path[steps] - path[steps - 1]) * frac.clamp(0.0, 1.0)
                };
                // The model extrapolates only breathing like the one it was fitted on: refuse while
                // the last bins surprise it (a cough), and predictions leaving the breathing seen.
                let surprise = self.surprise(model, have);
                if surprise > IRREGULAR_SURPRISE {
                    return Err(PredictionError::Irregular { surprise });
                }
                let change = ahead - base;
                let (limit, low, high) = self.plausible_change(steps.max(1));
                if !change.is_finite() || change.abs() > limit {
                    return Err(PredictionError::Implausible { change, limit });
                }
                let value = v_last + change;
                if !(low..=high).contains(&value) {
                    return Err(PredictionError::OutOfRange { value, low, high });
                }
                Ok(value)
            }
        }
    }

    /// The largest one-step error of the model over the last `IRREGULAR_WINDOW` bins (those with
    /// `AR_ORDER` bins before them since the gap) and over the samples of the bin still open (so a
    /// cough is caught within milliseconds, not at the end of its bin), in units of its fit residual.
    fn surprise(&self, model: &ArModel, have: usize) -> f64 {
        let d = &self.decimated;
        let first = d.len() - have; // the first bin since the gap
        let floor = model.residual_rms.max(1e-9);
        let closed = (first + AR_ORDER..d.len())
            .rev()
            .take(IRREGULAR_WINDOW)
            .map(|i| (d[i] - model.step(d.range(i - AR_ORDER..i).copied())).abs() / floor)
            .fold(0.0, f64::max);
        // The open bin: its samples' mean against the model's path from the last closed bin
        // (centred half a step before the open bin) to the next.
        let (n, t_sum, v_sum) = self
            .history
            .iter()
            .filter(|(t, _)| *t >= self.bin.0)
            .fold((0.0, 0.0, 0.0), |(n, a, b), (t, v)| (n + 1.0, a + t, b + v));
        if n == 0.0 || have < AR_ORDER {
            return closed;
        }
        let last = d[d.len() - 1];
        let next = model.step(d.range(d.len() - AR_ORDER..).copied());
        let centre = self.bin.0 - 0.5 * AR_STEP_S;
        let expected = last + (next - last) * ((t_sum / n - centre) / AR_STEP_S);
        closed.max((v_sum / n - expected).abs() / floor)
    }

    /// What the prediction may claim, from the decimated history (30 s, gaps skipped): a change
    /// over `steps` bins of at most half again the largest seen plus a tenth of the range, and a
    /// value within the range seen widened by half of it on either side (a deep breath may
    /// rightly overshoot what the last 30 s held; -1 breath, as a cough once gave, may not).
    fn plausible_change(&self, steps: usize) -> (f64, f64, f64) {
        let d = &self.decimated;
        // f64::max and min skip the NaN of a gap.
        let most = (steps..d.len()).map(|i| (d[i] - d[i - steps]).abs()).fold(0.0, f64::max);
        let (lo, hi) = d.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
        let range = (hi - lo).max(0.0);
        (1.5 * most + 0.1 * range, lo - 0.5 * range, hi + 0.5 * range)
    }
}

/// Mean-removed AR(p) model by least squares over the rows without a gap (NaN). None with fewer
/// than `min_bins` usable values.
fn fit_ar(x: &[f64], p: usize, min_bins: usize) -> Option<ArModel> {
    let finite: Vec<f64> = x.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.len() < min_bins.max(4 * p) {
        return None;
    }
    let mean = finite.iter().sum::<f64>() / finite.len() as f64;
    let rows: Vec<usize> =
        (0..x.len().saturating_sub(p)).filter(|&r| x[r..=r + p].iter().all(|v| v.is_finite())).collect();
    if rows.len() < 2 * p {
        return None;
    }
    let a = DMatrix::from_fn(rows.len(), p, |r, c| x[rows[r] + c] - mean);
    let b = DVector::from_fn(rows.len(), |r, _| x[rows[r] + p] - mean);
    // Small ridge term keeps the fit stable on flat stretches.
    let ata = a.transpose() * &a + DMatrix::identity(p, p) * 1e-6;
    let sol = ata.cholesky()?.solve(&(a.transpose() * &b));
    let (lo, hi) = finite.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    let residual_rms = ((&a * &sol - &b).norm_squared() / rows.len() as f64).sqrt().max(0.02 * (hi - lo));
    Some(ArModel { weights: sol.iter().copied().collect(), mean, residual_rms })
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;

    fn breathing_samples(n: usize, depth: f64) -> Vec<MarkerSet> {
        (0..n)
            .map(|i| {
                let s = (std::f64::consts::PI * i as f64 / 50.0).sin().powi(4); // Lujan n = 2, period 100 samples
                vec![
                    Point3::new(0.0, 0.0, 0.0) + Vector3::new(0.0, depth, 0.0) * s,
                    Point3::new(0.1, 0.0, 0.0) + Vector3::new(0.0, 0.5 * depth, 0.2 * depth) * s,
                ]
            })
            .collect()
    }

    #[test]
    fn baseline_surrogate_is_zero_at_end_exhale_and_one_at_full_breath() {
        let samples = breathing_samples(400, 0.01);
        let b = Baseline::record(vec![7, 8], &samples).unwrap();
        assert!(b.surrogate(&samples[0]).abs() < 0.02);
        let peak = b.surrogate(&samples[25]);
        assert!((peak - 1.0).abs() < 0.05, "{peak}");
        // A sample on the baseline has ~zero deviation; a shifted one deviates by the shift.
        assert!(b.deviation(&samples[13]) < 1e-9);
        let moved: Vec<Point3<f64>> = samples[0].iter().map(|p| p + Vector3::new(0.004, 0.0, 0.0)).collect();
        assert_relative_eq!(b.deviation(&moved), 0.004, epsilon = 1e-6);
    }

    #[test]
    fn baseline_refuses_still_markers_and_bad_input() {
        let still: Vec<MarkerSet> = (0..50).map(|_| vec![Point3::origin()]).collect();
        assert!(matches!(Baseline::record(vec![1], &still), Err(CorrectionError::NoBreathing { .. })));
        assert!(matches!(Baseline::record(vec![1], &still[..5]), Err(CorrectionError::TooFewSamples { .. })));
        let mut nan = breathing_samples(50, 0.01);
        nan[3][1].x = f64::NAN;
        assert_eq!(Baseline::record(vec![1, 2], &nan), Err(CorrectionError::NonFinite));
    }

    #[test]
    fn correlation_model_recovers_a_linear_law_with_hysteresis() {
        let truth = [[0.001, -0.012, 0.002], [0.0, -0.002, 0.0], [0.0005, 0.004, -0.001]];
        let s: Vec<f64> = (0..8).map(|k| (std::f64::consts::PI * k as f64 / 8.0).sin().powi(2)).collect();
        let r: Vec<f64> = (0..8).map(|k| (2.0 * std::f64::consts::PI * k as f64 / 8.0).sin()).collect();
        let d: Vec<Vector3<f64>> = s
            .iter()
            .zip(&r)
            .map(|(s, r)| Vector3::from_fn(|a, _| truth[a][0] + truth[a][1] * s + truth[a][2] * r))
            .collect();
        let m = CorrelationModel::fit(&s, &r, &d).unwrap();
        for a in 0..3 {
            for c in 0..3 {
                assert_relative_eq!(m.coefficients[a][c], truth[a][c], epsilon = 1e-12);
            }
        }
        assert!(m.fit_rms_m < 1e-12);
        // All frames at one breathing state cannot determine the slope.
        assert_eq!(CorrelationModel::fit(&[0.5; 5], &[0.0; 5], &d[..5]), Err(CorrectionError::IllConditioned));
    }

    #[test]
    fn inverse_distance_interpolation_closed_form() {
        let m = [Point3::new(0.0, 0.0, 0.0), Point3::new(2.0, 0.0, 0.0)];
        let d = [Vector3::new(1.0, 0.0, 0.0), Vector3::new(0.0, 1.0, 0.0)];
        // At (1,0,0) both are at distance 1: the average.
        assert_relative_eq!(interpolate_displacement(&Point3::new(1.0, 0.0, 0.0), &m, &d), Vector3::new(0.5, 0.5, 0.0));
        // At (0.5,0,0): weights 4 and 4/9 -> (4, 4/9)/(40/9) = (0.9, 0.1).
        assert_relative_eq!(
            interpolate_displacement(&Point3::new(0.5, 0.0, 0.0), &m, &d),
            Vector3::new(0.9, 0.1, 0.0),
            epsilon = 1e-12
        );
        assert_eq!(interpolate_displacement(&m[1], &m, &d), d[1]);
    }

    #[test]
    fn predictors_beat_no_prediction_on_a_smooth_breathing_signal() {
        let f = |t: f64| (std::f64::consts::PI * t / 4.0).sin().powi(4);
        let horizon = 0.3;
        let mut errors = std::collections::BTreeMap::new();
        for method in [PredictionMethod::None, PredictionMethod::Linear, PredictionMethod::Autoregressive] {
            let mut p = Predictor::new(method);
            let mut sq = 0.0;
            let mut n = 0.0;
            for i in 0..(120 * 50) {
                let t = i as f64 / 50.0;
                p.push(t, f(t));
                if t > 60.0 {
                    sq += (p.predict(horizon).expect("warm predictor") - f(t + horizon)).powi(2);
                    n += 1.0;
                }
            }
            errors.insert(format!("{method:?}"), (sq / n).sqrt());
        }
        assert!(errors["Linear"] < errors["None"], "{errors:?}");
        assert!(errors["Autoregressive"] < 0.5 * errors["None"], "{errors:?}");
    }

    /// sin^4 breathing with a 4 s period, sampled at `rate` Hz from `from` to `to` seconds.
    fn feed(p: &mut Predictor, from: f64, to: f64, rate: f64) {
        let mut t = from;
        while t < to {
            p.push(t, (std::f64::consts::PI * t / 4.0).sin().powi(4));
            t += 1.0 / rate;
        }
    }

    #[test]
    fn prediction_is_refused_until_enough_history_after_the_start_and_after_a_gap() {
        for method in [PredictionMethod::Linear, PredictionMethod::Autoregressive] {
            let mut p = Predictor::new(method);
            assert_eq!(p.predict(0.15), Err(PredictionError::NoSamples));
            feed(&mut p, 0.0, 0.05, 250.0);
            assert!(matches!(p.predict(0.15), Err(PredictionError::TooShort { .. })), "{method:?}");
            feed(&mut p, 0.05, 30.0, 250.0);
            assert!(p.predict(0.15).is_ok(), "{method:?}");
            // An occlusion of 0.6 s: the history restarts, the AR coefficients are kept.
            feed(&mut p, 30.6, 30.65, 250.0);
            assert!(matches!(p.predict(0.15), Err(PredictionError::TooShort { .. })), "{method:?}");
            feed(&mut p, 30.65, 31.5, 250.0);
            let f = |t: f64| (std::f64::consts::PI * t / 4.0).sin().powi(4);
            let got = p.predict(0.15).unwrap();
            assert!((got - f(31.5 - 0.004 + 0.15)).abs() < 0.05, "{method:?}: {got}");
        }
        // Without prediction the latest value is always available.
        let mut p = Predictor::new(PredictionMethod::None);
        feed(&mut p, 0.0, 0.01, 250.0);
        assert!(p.predict(0.15).is_ok());
    }

    #[test]
    fn slope_is_the_least_squares_one_since_the_last_gap_and_time_going_back_restarts() {
        let mut p = Predictor::new(PredictionMethod::Autoregressive);
        for i in 0..250 {
            let t = i as f64 / 250.0;
            p.push(t, 2.0 * t + if i % 2 == 0 { 0.01 } else { -0.01 }); // alternating noise cancels in pairs
        }
        assert!((p.slope(0.25, 0.15).unwrap() - 2.0).abs() < 0.02);
        p.push(1.6, 3.2); // after a 0.6 s gap only one sample
        assert!(matches!(p.slope(0.25, 0.15), Err(PredictionError::TooShort { .. })));
        // A replay restarting at an earlier time is a restart, not a run of ignored samples.
        feed(&mut p, 0.0, 30.0, 250.0);
        assert!(p.predict(0.15).is_ok());
        feed(&mut p, 5.0, 5.05, 250.0);
        assert!(matches!(p.predict(0.15), Err(PredictionError::TooShort { .. })));
        assert!(p.latest().is_some_and(|v| (v - (std::f64::consts::PI * 5.046 / 4.0).sin().powi(4)).abs() < 0.01));
    }

    #[test]
    fn a_short_dropout_keeps_the_ar_series_at_ten_hertz() {
        let f = |t: f64| (std::f64::consts::PI * t / 4.0).sin().powi(4);
        let mut with_gap = Predictor::new(PredictionMethod::Autoregressive);
        feed(&mut with_gap, 0.0, 20.0, 250.0);
        feed(&mut with_gap, 20.2, 21.0, 250.0); // 0.2 s missing: bridged, not a restart
        let t_last = with_gap.history.back().unwrap().0;
        // The bridged bins keep their time: the series has one bin per 0.1 s since the start.
        let bins = with_gap.decimated.len();
        assert!((bins as f64 - t_last / AR_STEP_S).abs() <= 1.0, "{bins} bins for {t_last} s");
        assert!(with_gap.decimated.iter().all(|v| v.is_finite()));
        assert!((with_gap.predict(0.15).unwrap() - f(t_last + 0.15)).abs() < 0.05);
    }

    #[test]
    fn a_prediction_beyond_what_the_breathing_does_is_refused() {
        let mut p = Predictor::new(PredictionMethod::Autoregressive);
        feed(&mut p, 0.0, 20.0, 250.0);
        let sane = p.predict(0.15).unwrap();
        assert!(sane.is_finite());
        // An explosive model (each step triples the distance from the mean), as an ill-conditioned
        // fit can give: its two steps ahead leave anything the signal did in 0.2 s.
        let mut weights = vec![0.0; AR_ORDER];
        weights[AR_ORDER - 1] = 3.0;
        let residual_rms = 1e9; // not surprised by anything: only the plausibility checks can refuse
        p.ar = Some(ArModel { weights, mean: -0.5, residual_rms });
        match p.predict(0.15) {
            Err(PredictionError::Implausible { change, limit }) => assert!(change.abs() > limit, "{change} {limit}"),
            other => panic!("explosive prediction accepted: {other:?}"),
        }
        // A model that is right about the breathing but is surprised by the last bins (a cough).
        let mut p = Predictor::new(PredictionMethod::Autoregressive);
        feed(&mut p, 0.0, 20.0, 250.0);
        assert!(p.predict(0.15).is_ok());
        let f = |t: f64| (std::f64::consts::PI * t / 4.0).sin().powi(4);
        let mut t = 20.0;
        while t < 20.3 {
            p.push(t, f(t) + 0.6 * (std::f64::consts::PI * (t - 20.0) / 0.3).sin()); // a 0.3 s bump
            t += 0.004;
        }
        assert!(matches!(p.predict(0.15), Err(PredictionError::Irregular { .. })), "{:?}", p.predict(0.15));
        // Once the bump has left the last 0.4 s the prediction is trusted again.
        feed(&mut p, 20.3, 21.5, 250.0);
        assert!(p.predict(0.15).is_ok(), "{:?}", p.predict(0.15));
    }
}
