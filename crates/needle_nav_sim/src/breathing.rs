//! Breathing motion model of Lujan et al. (Med. Phys. 26, 1999): the displacement
//! z(t) = z0 - b cos^{2n}(pi t / tau - phi) rests at end-exhale most of the cycle and
//! dips briefly at inhale. [`LujanBreathing::inhale_fraction`] is cos^{2n}(...) in [0, 1].
//!
//! [`BreathingSignal`] is the full physiological signal used by the simulation: Lujan-shaped cycles
//! with cycle-to-cycle variability, baseline drift, deep breaths and coughs (seeded), or a
//! recorded trace (see `extmarker`).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp, StandardNormal};
use std::f64::consts::PI;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LujanBreathing {
    /// Breathing period tau [s].
    pub period_s: f64,
    /// Shape exponent n (1: sinusoidal; 2-3: typical, flat end-exhale).
    pub n: u32,
    /// Phase offset phi [rad].
    pub phase_rad: f64,
}

impl LujanBreathing {
    /// cos^{2n}(pi t / tau - phi): 1 at full inhale, 0 at end-exhale.
    pub fn inhale_fraction(&self, t_s: f64) -> f64 {
        let c = (std::f64::consts::PI * t_s / self.period_s - self.phase_rad).cos();
        c.powi(2 * self.n as i32)
    }

    /// Position in the cycle, in [0, 1), 0 at full inhale.
    pub fn phase(&self, t_s: f64) -> f64 {
        let cycles = t_s / self.period_s - self.phase_rad / std::f64::consts::PI;
        cycles.rem_euclid(1.0)
    }
}

// ---------------------------------------------------------------------------------------------
// Physiological breathing signal: cycle-to-cycle variability, drift, deep breaths and coughs.
// ---------------------------------------------------------------------------------------------

/// Parameters of [`BreathingSignal::synthetic`]. Amplitudes are in units of a normal full inhale.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreathingConfig {
    pub seed: u64,
    /// Mean period of a normal breath [s].
    pub mean_period_s: f64,
    /// Cycle-to-cycle coefficient of variation of the period.
    pub period_cv: f64,
    /// Cycle-to-cycle coefficient of variation of the amplitude.
    pub amplitude_cv: f64,
    /// Lujan shape exponent n (1..=4): larger gives a flatter, longer end-exhale.
    pub shape_n: u32,
    /// Baseline drift in normal amplitudes per minute (may be negative).
    pub drift_per_min: f64,
    /// Probability that a cycle is a deep breath.
    pub deep_breath_probability: f64,
    /// Amplitude multiplier of a deep breath.
    pub deep_breath_amplitude: f64,
    /// Period multiplier of a deep breath.
    pub deep_breath_period_scale: f64,
    /// Poisson rate of coughs [1/min].
    pub cough_rate_per_min: f64,
    /// Peak of a cough bump in normal amplitudes.
    pub cough_amplitude: f64,
    /// Duration of a cough bump [s].
    pub cough_duration_s: f64,
}

impl Default for BreathingConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            mean_period_s: 4.0,
            period_cv: 0.15,
            amplitude_cv: 0.12,
            shape_n: 2,
            drift_per_min: 0.05,
            deep_breath_probability: 0.05,
            deep_breath_amplitude: 1.8,
            deep_breath_period_scale: 1.4,
            cough_rate_per_min: 0.3,
            cough_amplitude: 0.6,
            cough_duration_s: 0.4,
        }
    }
}

/// Random cycle factors are clamped to this range of their nominal value (physiological bounds).
const FACTOR_MIN: f64 = 0.4;
const FACTOR_MAX: f64 = 2.5;
/// Longest signal [`BreathingSignal::synthetic`] builds (a day), to bound memory.
const MAX_SYNTHETIC_DURATION_S: f64 = 86_400.0;

impl BreathingConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), BreathingError> {
        let bad =
            |field: &'static str, reason: &str| Err(BreathingError::InvalidConfig { field, reason: reason.into() });
        let in_range = |v: f64, lo: f64, hi: f64| v.is_finite() && v >= lo && v <= hi;
        if !in_range(self.mean_period_s, 0.5, 30.0) {
            return bad("mean_period_s", "must be within [0.5, 30] s");
        }
        if !in_range(self.period_cv, 0.0, 1.0) {
            return bad("period_cv", "must be within [0, 1]");
        }
        if !in_range(self.amplitude_cv, 0.0, 1.0) {
            return bad("amplitude_cv", "must be within [0, 1]");
        }
        if !(1..=4).contains(&self.shape_n) {
            return bad("shape_n", "must be within 1..=4");
        }
        if !in_range(self.drift_per_min, -10.0, 10.0) {
            return bad("drift_per_min", "must be finite and within [-10, 10] amplitudes per minute");
        }
        if !in_range(self.deep_breath_probability, 0.0, 1.0) {
            return bad("deep_breath_probability", "must be within [0, 1]");
        }
        if !in_range(self.deep_breath_amplitude, 1.0, 10.0) {
            return bad("deep_breath_amplitude", "must be within [1, 10]");
        }
        if !in_range(self.deep_breath_period_scale, 0.5, 4.0) {
            return bad("deep_breath_period_scale", "must be within [0.5, 4]");
        }
        if !in_range(self.cough_rate_per_min, 0.0, 60.0) {
            return bad("cough_rate_per_min", "must be within [0, 60] per minute");
        }
        if !in_range(self.cough_amplitude, 0.0, 10.0) {
            return bad("cough_amplitude", "must be within [0, 10]");
        }
        if !(in_range(self.cough_duration_s, 0.0, 5.0) && self.cough_duration_s > 0.0) {
            return bad("cough_duration_s", "must be within (0, 5] s");
        }
        Ok(())
    }
}

/// Whether a cycle is an ordinary breath or a deep one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CycleKind {
    Normal,
    Deep,
}

/// One breath, from end-exhale to the next end-exhale.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BreathCycle {
    pub start_s: f64,
    pub period_s: f64,
    /// Peak above the cycle's end-exhale baseline.
    pub amplitude: f64,
    pub kind: CycleKind,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BreathingError {
    #[error("breathing config field `{field}` {reason}")]
    InvalidConfig { field: &'static str, reason: String },
    #[error("signal duration {duration_s} s must be finite and within (0, {max_s}] s")]
    InvalidDuration { duration_s: f64, max_s: f64 },
    #[error("a recorded breathing signal needs at least 2 samples, got {count}")]
    TooFewSamples { count: usize },
    #[error("{times} sample times but {values} values")]
    LengthMismatch { times: usize, values: usize },
    #[error("sample time {index} is not finite")]
    NonFiniteTime { index: usize },
    #[error("sample value {index} is not finite")]
    NonFiniteValue { index: usize },
    #[error("sample times must increase strictly: time {index} is not after the previous one")]
    NotIncreasing { index: usize },
}

#[derive(Debug, Clone)]
enum Source {
    Synthetic {
        n: u32,
        drift_per_s: f64,
        cough_amplitude: f64,
        cough_duration_s: f64,
        /// Cycle start times, for binary search.
        starts: Vec<f64>,
    },
    Samples {
        times: Vec<f64>,
        values: Vec<f64>,
    },
}

/// A dimensionless breathing signal: 0 at end-exhale, about 1 at a normal full inhale.
/// It covers `[start_s, start_s + duration_s]` and repeats with that period beyond.
#[derive(Debug, Clone)]
pub struct BreathingSignal {
    source: Source,
    cycles: Vec<BreathCycle>,
    /// Peak times of the coughs.
    cough_times_s: Vec<f64>,
    start_s: f64,
    duration_s: f64,
}

/// A log-normal factor with mean 1 and the given coefficient of variation, clamped.
fn variability_factor(rng: &mut ChaCha8Rng, cv: f64) -> f64 {
    let sigma2 = (1.0 + cv * cv).ln();
    let z: f64 = StandardNormal.sample(rng);
    (-0.5 * sigma2 + sigma2.sqrt() * z).exp().clamp(FACTOR_MIN, FACTOR_MAX)
}

impl BreathingSignal {
    /// Seeded synthetic signal covering [0, duration_s]; it is built from whole cycles, so
    /// [`Self::duration_s`] is the end of the last cycle (>= the request). Beyond it the signal
    /// repeats periodically (with the accumulated drift as a step at each repetition).
    pub fn synthetic(cfg: &BreathingConfig, duration_s: f64) -> Result<BreathingSignal, BreathingError> {
        cfg.validate()?;
        if !(duration_s.is_finite() && duration_s > 0.0 && duration_s <= MAX_SYNTHETIC_DURATION_S) {
            return Err(BreathingError::InvalidDuration { duration_s, max_s: MAX_SYNTHETIC_DURATION_S });
        }
        // Separate streams: changing the cough settings leaves the breaths unchanged.
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let mut cough_rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        cough_rng.set_stream(1);

        let mut cycles = Vec::new();
        let mut t = 0.0;
        while t < duration_s {
            // Always draw all three numbers so the sequence does not depend on the outcomes.
            let deep = rng.random::<f64>() < cfg.deep_breath_probability;
            let period_factor = variability_factor(&mut rng, cfg.period_cv);
            let amplitude_factor = variability_factor(&mut rng, cfg.amplitude_cv);
            let (kind, period_scale, amplitude_scale) = if deep {
                (CycleKind::Deep, cfg.deep_breath_period_scale, cfg.deep_breath_amplitude)
            } else {
                (CycleKind::Normal, 1.0, 1.0)
            };
            let period_s = (cfg.mean_period_s * period_factor * period_scale)
                .clamp(FACTOR_MIN * cfg.mean_period_s, FACTOR_MAX * cfg.mean_period_s);
            cycles.push(BreathCycle { start_s: t, period_s, amplitude: amplitude_factor * amplitude_scale, kind });
            t += period_s;
        }
        let span = t;

        // Poisson process of cough onsets; each bump lies wholly inside the span, so the
        // periodic repetition stays continuous apart from the drift.
        let mut cough_times_s = Vec::new();
        if cfg.cough_rate_per_min > 0.0 && cfg.cough_amplitude > 0.0 {
            if let Ok(gap) = Exp::new(cfg.cough_rate_per_min / 60.0) {
                let mut onset = gap.sample(&mut cough_rng);
                while onset + cfg.cough_duration_s <= span {
                    cough_times_s.push(onset + 0.5 * cfg.cough_duration_s);
                    onset += gap.sample(&mut cough_rng);
                }
            }
        }

        let starts = cycles.iter().map(|c| c.start_s).collect();
        Ok(BreathingSignal {
            source: Source::Synthetic {
                n: cfg.shape_n,
                drift_per_s: cfg.drift_per_min / 60.0,
                cough_amplitude: cfg.cough_amplitude,
                cough_duration_s: cfg.cough_duration_s,
                starts,
            },
            cycles,
            cough_times_s,
            start_s: 0.0,
            duration_s: span,
        })
    }

    /// A recorded (e.g. real) signal, linear interpolation between samples, periodic beyond its
    /// range `[times_s[0], times_s[last]]`. Cycles are found from its end-exhale minima (see
    /// [`detect_cycles`]); a cycle is `Deep` when its amplitude is over 1.5x the median.
    pub fn from_samples(times_s: Vec<f64>, values: Vec<f64>) -> Result<BreathingSignal, BreathingError> {
        if times_s.len() != values.len() {
            return Err(BreathingError::LengthMismatch { times: times_s.len(), values: values.len() });
        }
        if times_s.len() < 2 {
            return Err(BreathingError::TooFewSamples { count: times_s.len() });
        }
        if let Some(index) = times_s.iter().position(|t| !t.is_finite()) {
            return Err(BreathingError::NonFiniteTime { index });
        }
        if let Some(index) = values.iter().position(|v| !v.is_finite()) {
            return Err(BreathingError::NonFiniteValue { index });
        }
        if let Some(i) = times_s.windows(2).position(|w| w[1] <= w[0]) {
            return Err(BreathingError::NotIncreasing { index: i + 1 });
        }
        let cycles = detect_cycles(&times_s, &values);
        let start_s = times_s[0];
        let duration_s = times_s[times_s.len() - 1] - start_s;
        Ok(BreathingSignal {
            source: Source::Samples { times: times_s, values },
            cycles,
            cough_times_s: Vec::new(),
            start_s,
            duration_s,
        })
    }

    /// `t_s` mapped into the covered range (identity inside it).
    fn wrap(&self, t_s: f64) -> f64 {
        let rel = t_s - self.start_s;
        if (0.0..=self.duration_s).contains(&rel) {
            t_s
        } else {
            self.start_s + rel.rem_euclid(self.duration_s)
        }
    }

    /// The breathing signal at `t_s`.
    pub fn inhale(&self, t_s: f64) -> f64 {
        let t = self.wrap(t_s);
        match &self.source {
            Source::Synthetic { n, drift_per_s, cough_amplitude, cough_duration_s, starts } => {
                let c = &self.cycles[cycle_index(starts, t)];
                let u = ((t - c.start_s) / c.period_s).clamp(0.0, 1.0);
                let breath = c.amplitude * (PI * u).sin().powi(2 * *n as i32);
                let cough: f64 =
                    self.coughs_near(t, *cough_duration_s).map(|s| cough_amplitude * (PI * s).sin().powi(2)).sum();
                breath + drift_per_s * t + cough
            }
            Source::Samples { times, values } => {
                let (i, w) = segment(times, t);
                values[i] + w * (values[i + 1] - values[i])
            }
        }
    }

    /// d inhale / dt [1/s].
    pub fn velocity(&self, t_s: f64) -> f64 {
        let t = self.wrap(t_s);
        match &self.source {
            Source::Synthetic { n, drift_per_s, cough_amplitude, cough_duration_s, starts } => {
                let c = &self.cycles[cycle_index(starts, t)];
                let u = ((t - c.start_s) / c.period_s).clamp(0.0, 1.0);
                let m = 2 * *n as i32;
                let breath = c.amplitude * m as f64 * (PI * u).sin().powi(m - 1) * (PI * u).cos() * PI / c.period_s;
                let cough: f64 = self
                    .coughs_near(t, *cough_duration_s)
                    .map(|s| cough_amplitude * (2.0 * PI * s).sin() * PI / cough_duration_s)
                    .sum();
                breath + drift_per_s + cough
            }
            Source::Samples { times, values } => {
                let (i, _) = segment(times, t);
                (values[i + 1] - values[i]) / (times[i + 1] - times[i])
            }
        }
    }

    /// Position in the current cycle in [0, 1), 0 = end-exhale. Outside the detected cycles of a
    /// recorded signal, the nearest cycle's period is extended.
    pub fn phase(&self, t_s: f64) -> f64 {
        let t = self.wrap(t_s);
        let Some(first) = self.cycles.first() else {
            return 0.0;
        };
        let u = if t < first.start_s {
            (t - first.start_s) / first.period_s
        } else {
            // Cycles are contiguous; past the last one its period is extended.
            let c = &self.cycles[self.cycles.partition_point(|c| c.start_s <= t).saturating_sub(1)];
            (t - c.start_s) / c.period_s
        };
        let p = u.rem_euclid(1.0);
        // rem_euclid can round up to exactly 1.0 for tiny negative inputs.
        if p >= 1.0 {
            0.0
        } else {
            p
        }
    }

    pub fn cycles(&self) -> &[BreathCycle] {
        &self.cycles
    }

    /// Peak times of the coughs [s].
    pub fn cough_times_s(&self) -> &[f64] {
        &self.cough_times_s
    }

    /// Length of the covered range [s]; the signal repeats with this period.
    pub fn duration_s(&self) -> f64 {
        self.duration_s
    }

    /// First covered time [s]: 0 for a synthetic signal, the first sample time of a recorded one.
    pub fn start_s(&self) -> f64 {
        self.start_s
    }

    /// Normalised positions in [0, 1] within the bumps of the coughs active at `t`.
    fn coughs_near(&self, t: f64, duration_s: f64) -> impl Iterator<Item = f64> + '_ {
        let half = 0.5 * duration_s;
        let first = self.cough_times_s.partition_point(|&c| c < t - half);
        self.cough_times_s[first..]
            .iter()
            .take_while(move |&&c| c <= t + half)
            .map(move |&c| (t - (c - half)) / duration_s)
    }
}

/// Index of the cycle that contains `t` (starts sorted, starts[0] <= t).
fn cycle_index(starts: &[f64], t: f64) -> usize {
    starts.partition_point(|&s| s <= t).saturating_sub(1)
}

/// Segment `i` (between samples i and i+1) containing `t`, and the weight of sample i+1.
fn segment(times: &[f64], t: f64) -> (usize, f64) {
    let i = times.partition_point(|&s| s <= t).saturating_sub(1).min(times.len() - 2);
    let w = ((t - times[i]) / (times[i + 1] - times[i])).clamp(0.0, 1.0);
    (i, w)
}

/// Fraction of the robust range (5th to 95th percentile) a signal must rise or fall to count
/// as a new breath: rejects noise and small wiggles, keeps shallow breaths.
const HYSTERESIS_FRACTION: f64 = 0.3;
/// The range is taken over this window around each sample, so that a stretch of shallow
/// breathing next to large movements (real traces have both) still shows its breaths...
const RANGE_WINDOW_S: f64 = 30.0;
/// ... evaluated once per block of this length, to bound the cost on long records ...
const RANGE_BLOCK_S: f64 = 5.0;
/// ... but never below this fraction of the whole record's value, so noise in a breath-hold
/// is not taken for breaths.
const HYSTERESIS_FLOOR: f64 = 0.25;
/// Most samples sorted per window (a longer window is subsampled).
const RANGE_MAX_SAMPLES: usize = 2048;

/// 95th minus 5th percentile (0 when empty).
fn robust_range(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let pct = |p: f64| sorted[((sorted.len() - 1) as f64 * p).round() as usize];
    pct(0.95) - pct(0.05)
}

/// Hysteresis per sample: the fraction of the local robust range, floored.
fn local_hysteresis(times: &[f64], values: &[f64], global: f64) -> Vec<f64> {
    let t0 = times[0];
    let block = |t: f64| ((t - t0) / RANGE_BLOCK_S) as usize;
    let blocks = block(times[times.len() - 1]) + 1;
    let per_block: Vec<f64> = (0..blocks)
        .map(|b| {
            let centre = t0 + (b as f64 + 0.5) * RANGE_BLOCK_S;
            let i0 = times.partition_point(|&t| t < centre - 0.5 * RANGE_WINDOW_S);
            let i1 = times.partition_point(|&t| t <= centre + 0.5 * RANGE_WINDOW_S);
            let stride = (i1.saturating_sub(i0) / RANGE_MAX_SAMPLES).max(1);
            let window: Vec<f64> = values[i0..i1.max(i0)].iter().step_by(stride).copied().collect();
            (HYSTERESIS_FRACTION * robust_range(&window)).max(HYSTERESIS_FLOOR * global)
        })
        .collect();
    times.iter().map(|&t| per_block[block(t).min(blocks - 1)]).collect()
}
/// The end-exhale plateau edges are where the signal rises this fraction of the adjacent
/// breath's amplitude above the minimum.
const PLATEAU_FRACTION: f64 = 0.1;
/// A detected cycle is deep when its amplitude is over this multiple of the median.
const DEEP_FACTOR: f64 = 1.5;

/// Breath cycles of a sampled signal (inhale positive). Minima and maxima are found with
/// hysteresis; each cycle starts at end-exhale, placed from the edges of the exhale plateau
/// (more stable than the arg-min of a flat, noisy exhale), and ends where the next starts.
/// Amplitude: cycle maximum above the mean of its two end values.
pub fn detect_cycles(times: &[f64], values: &[f64]) -> Vec<BreathCycle> {
    let n = times.len().min(values.len());
    if n < 3 {
        return Vec::new();
    }
    let global = HYSTERESIS_FRACTION * robust_range(&values[..n]);
    if global <= 0.0 {
        return Vec::new();
    }
    let hysteresis = local_hysteresis(&times[..n], &values[..n], global);

    // Alternating extrema: (index, is_max).
    let mut extrema: Vec<(usize, bool)> = Vec::new();
    let (mut lo, mut hi) = (0usize, 0usize);
    let mut seeking: Option<bool> = None; // Some(true): looking for the next maximum.
    for i in 1..n {
        let (v, h) = (values[i], hysteresis[i]);
        match seeking {
            None => {
                if v < values[lo] {
                    lo = i;
                }
                if v > values[hi] {
                    hi = i;
                }
                if v > values[lo] + h {
                    extrema.push((lo, false));
                    seeking = Some(true);
                    hi = i;
                } else if v < values[hi] - h {
                    extrema.push((hi, true));
                    seeking = Some(false);
                    lo = i;
                }
            }
            Some(true) => {
                if v > values[hi] {
                    hi = i;
                } else if v < values[hi] - h {
                    extrema.push((hi, true));
                    seeking = Some(false);
                    lo = i;
                }
            }
            Some(false) => {
                if v < values[lo] {
                    lo = i;
                } else if v > values[lo] + h {
                    extrema.push((lo, false));
                    seeking = Some(true);
                    hi = i;
                }
            }
        }
    }

    // Cycle starts, one per minimum with a maximum on both sides (a plateau cut by a record end
    // is not used). The plateau edges a, b are where the signal leaves the minimum by a fixed
    // fraction of the adjacent breath's own amplitude. With the Lujan shape, a cycle of period T
    // peaks at T/2 and reaches that level at x*T from its start, the same x for both breaths, so
    // (s - a) / (s - P) = (b - s) / (Q - s) with P, Q the peak times: solved for s, this undoes
    // the bias of the plain midpoint between a short and a long (or a weak and a deep) breath.
    let mut starts = Vec::new();
    for k in 1..extrema.len().saturating_sub(1) {
        let (m, is_max) = extrema[k];
        if is_max {
            continue;
        }
        let (left_max, right_max) = (extrema[k - 1].0, extrema[k + 1].0);
        let level_left = values[m] + PLATEAU_FRACTION * (values[left_max] - values[m]);
        let level_right = values[m] + PLATEAU_FRACTION * (values[right_max] - values[m]);
        // Time where the signal crosses `level` between samples i and j.
        let crossing = |i: usize, j: usize, level: f64| {
            let (vi, vj) = (values[i], values[j]);
            let w = if vj != vi { ((level - vi) / (vj - vi)).clamp(0.0, 1.0) } else { 0.5 };
            times[i] + w * (times[j] - times[i])
        };
        // Both walks stop before the maxima, which lie above the levels (by at least h).
        let mut i = m;
        while i > left_max && values[i - 1] <= level_left {
            i -= 1;
        }
        let mut j = m;
        while j < right_max && values[j + 1] <= level_right {
            j += 1;
        }
        let a = crossing(i - 1, i, level_left);
        let b = crossing(j + 1, j, level_right);
        let (p, q) = (times[left_max], times[right_max]);
        // q - b > 0 and a - p > 0, so the denominator is positive.
        let s = (a * q - b * p) / ((q - b) + (a - p));
        starts.push(s.clamp(a, b));
    }

    let interp = |t: f64| {
        let (i, w) = segment(&times[..n], t);
        values[i] + w * (values[i + 1] - values[i])
    };
    let mut cycles: Vec<BreathCycle> = starts
        .windows(2)
        .map(|w| {
            let (s, e) = (w[0], w[1]);
            let i0 = times[..n].partition_point(|&t| t < s);
            let i1 = times[..n].partition_point(|&t| t <= e);
            let peak = values[i0..i1].iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let base = 0.5 * (interp(s) + interp(e));
            BreathCycle { start_s: s, period_s: e - s, amplitude: peak - base, kind: CycleKind::Normal }
        })
        .collect();
    let mut amps: Vec<f64> = cycles.iter().map(|c| c.amplitude).collect();
    amps.sort_by(f64::total_cmp);
    if let Some(&median) = amps.get(amps.len() / 2) {
        for c in &mut cycles {
            if c.amplitude > DEEP_FACTOR * median {
                c.kind = CycleKind::Deep;
            }
        }
    }
    cycles
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;

    #[test]
    fn periodic_bounded_and_closed_form_mean() {
        let b = LujanBreathing { period_s: 4.0, n: 2, phase_rad: 0.3 };
        for i in 0..400 {
            let t = i as f64 * 0.01;
            let v = b.inhale_fraction(t);
            assert!((0.0..=1.0).contains(&v));
            assert_relative_eq!(v, b.inhale_fraction(t + 4.0), epsilon = 1e-12);
        }
        // Mean of cos^{2n} over a period is C(2n, n) / 4^n: 6/16 for n = 2.
        let steps = 100_000;
        let mean: f64 =
            (0..steps).map(|i| b.inhale_fraction(4.0 * i as f64 / steps as f64)).sum::<f64>() / steps as f64;
        assert_relative_eq!(mean, 6.0 / 16.0, epsilon = 1e-6);
    }

    fn mean_and_cv(xs: &[f64]) -> (f64, f64) {
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
        (mean, var.sqrt() / mean)
    }

    fn median(xs: &[f64]) -> f64 {
        let mut v = xs.to_vec();
        v.sort_by(f64::total_cmp);
        let m = v.len() / 2;
        if v.len() % 2 == 0 {
            0.5 * (v[m - 1] + v[m])
        } else {
            v[m]
        }
    }

    fn quiet() -> BreathingConfig {
        BreathingConfig {
            period_cv: 0.0,
            amplitude_cv: 0.0,
            drift_per_min: 0.0,
            deep_breath_probability: 0.0,
            cough_rate_per_min: 0.0,
            ..BreathingConfig::default()
        }
    }

    #[test]
    fn config_defaults_and_serde() {
        let cfg = BreathingConfig::default();
        assert_eq!(cfg.validate(), Ok(()));
        assert_eq!((cfg.seed, cfg.mean_period_s, cfg.shape_n), (1, 4.0, 2));
        let partial: BreathingConfig =
            serde_json::from_str(r#"{"seed": 7, "drift_per_min": -0.1}"#).expect("valid json");
        assert_eq!(partial, BreathingConfig { seed: 7, drift_per_min: -0.1, ..BreathingConfig::default() });
        let unknown = serde_json::from_str::<BreathingConfig>(r#"{"mean_period": 4.0}"#);
        assert!(unknown.is_err(), "misspelt field must be rejected");
    }

    #[test]
    fn invalid_configs_are_rejected_naming_the_field() {
        type Edit = fn(&mut BreathingConfig);
        let cases: [(&str, Edit); 13] = [
            ("mean_period_s", |c| c.mean_period_s = 0.0),
            ("mean_period_s", |c| c.mean_period_s = f64::NAN),
            ("period_cv", |c| c.period_cv = -0.1),
            ("amplitude_cv", |c| c.amplitude_cv = f64::INFINITY),
            ("shape_n", |c| c.shape_n = 0),
            ("shape_n", |c| c.shape_n = 5),
            ("drift_per_min", |c| c.drift_per_min = f64::NAN),
            ("deep_breath_probability", |c| c.deep_breath_probability = 1.5),
            ("deep_breath_amplitude", |c| c.deep_breath_amplitude = 0.5),
            ("deep_breath_period_scale", |c| c.deep_breath_period_scale = 0.0),
            ("cough_rate_per_min", |c| c.cough_rate_per_min = -1.0),
            ("cough_amplitude", |c| c.cough_amplitude = f64::NAN),
            ("cough_duration_s", |c| c.cough_duration_s = 0.0),
        ];
        for (field, edit) in cases {
            let mut cfg = BreathingConfig::default();
            edit(&mut cfg);
            let err = BreathingSignal::synthetic(&cfg, 60.0).expect_err(field);
            assert!(matches!(&err, BreathingError::InvalidConfig { field: f, .. } if *f == field), "{err}");
            assert!(err.to_string().contains(field), "{err}");
        }
        for d in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e9] {
            let err = BreathingSignal::synthetic(&BreathingConfig::default(), d).expect_err("bad duration");
            assert!(matches!(err, BreathingError::InvalidDuration { .. }), "{err}");
        }
    }

    #[test]
    fn without_variability_it_is_the_lujan_shape() {
        for n in 1..=4 {
            let cfg = BreathingConfig { shape_n: n, mean_period_s: 3.0, ..quiet() };
            let s = BreathingSignal::synthetic(&cfg, 30.0).expect("valid");
            assert_eq!(s.cycles().len(), 10);
            assert_relative_eq!(s.duration_s(), 30.0, epsilon = 1e-9);
            // sin(x) = cos(x - pi/2): the same curve as LujanBreathing shifted to start at end-exhale.
            let lujan = LujanBreathing { period_s: 3.0, n, phase_rad: PI / 2.0 };
            let steps = 30_000;
            let mut sum = 0.0;
            for i in 0..steps {
                let t = 30.0 * i as f64 / steps as f64;
                assert_relative_eq!(s.inhale(t), lujan.inhale_fraction(t), epsilon = 1e-9);
                assert_relative_eq!(s.phase(t), (t / 3.0).fract(), epsilon = 1e-9);
                sum += s.inhale(t);
            }
            // Closed-form mean of sin^{2n}: C(2n, n) / 4^n.
            let binom = (1..=n).map(|k| (n + k) as f64 / k as f64).product::<f64>();
            assert_relative_eq!(sum / steps as f64, binom / 4f64.powi(n as i32), epsilon = 1e-6);
        }
    }

    #[test]
    fn cycle_statistics_match_the_configuration() {
        for seed in [1, 2, 3] {
            let cfg = BreathingConfig { seed, ..BreathingConfig::default() };
            let s = BreathingSignal::synthetic(&cfg, 4000.0).expect("valid");
            let cycles = s.cycles();
            assert!(cycles.len() >= 800, "{} cycles", cycles.len());
            let normal: Vec<&BreathCycle> = cycles.iter().filter(|c| c.kind == CycleKind::Normal).collect();
            let deep: Vec<&BreathCycle> = cycles.iter().filter(|c| c.kind == CycleKind::Deep).collect();
            let periods: Vec<f64> = normal.iter().map(|c| c.period_s).collect();
            let amps: Vec<f64> = normal.iter().map(|c| c.amplitude).collect();
            let (mean_t, cv_t) = mean_and_cv(&periods);
            let (mean_a, cv_a) = mean_and_cv(&amps);
            assert!((mean_t / cfg.mean_period_s - 1.0).abs() < 0.03, "seed {seed}: mean period {mean_t}");
            assert!((cv_t - cfg.period_cv).abs() < 0.02, "seed {seed}: period cv {cv_t}");
            assert!((mean_a - 1.0).abs() < 0.03, "seed {seed}: mean amplitude {mean_a}");
            assert!((cv_a - cfg.amplitude_cv).abs() < 0.02, "seed {seed}: amplitude cv {cv_a}");
            // All cycles: E[T] = mean * (1 - p + p * scale).
            let all_mean = cycles.iter().map(|c| c.period_s).sum::<f64>() / cycles.len() as f64;
            let p = cfg.deep_breath_probability;
            let expected = cfg.mean_period_s * (1.0 - p + p * cfg.deep_breath_period_scale);
            assert!((all_mean / expected - 1.0).abs() < 0.03, "seed {seed}: all-cycle mean period {all_mean}");
            // Deep fraction: binomial, within 4 standard errors.
            let frac = deep.len() as f64 / cycles.len() as f64;
            let se = (p * (1.0 - p) / cycles.len() as f64).sqrt();
            assert!((frac - p).abs() < 4.0 * se, "seed {seed}: deep fraction {frac}");
            let deep_amp = deep.iter().map(|c| c.amplitude).sum::<f64>() / deep.len() as f64;
            assert!((deep_amp / cfg.deep_breath_amplitude - 1.0).abs() < 0.1, "seed {seed}: deep amplitude {deep_amp}");
            for c in cycles {
                assert!((0.4 * cfg.mean_period_s..=2.5 * cfg.mean_period_s).contains(&c.period_s));
            }
            // Contiguous cycles covering the whole span.
            for w in cycles.windows(2) {
                assert_relative_eq!(w[0].start_s + w[0].period_s, w[1].start_s, epsilon = 1e-9);
            }
            let last = cycles[cycles.len() - 1];
            assert_relative_eq!(last.start_s + last.period_s, s.duration_s(), epsilon = 1e-9);
            assert!(s.duration_s() >= 4000.0);
        }
    }

    #[test]
    fn cough_count_is_poisson_and_coughs_add_a_bump() {
        for (seed, rate) in [(1, 0.3), (2, 0.3), (3, 3.0), (4, 3.0)] {
            let cfg = BreathingConfig { seed, cough_rate_per_min: rate, ..BreathingConfig::default() };
            let s = BreathingSignal::synthetic(&cfg, 4000.0).expect("valid");
            let expected = rate / 60.0 * (s.duration_s() - cfg.cough_duration_s);
            let count = s.cough_times_s().len() as f64;
            assert!(
                (count - expected).abs() < 4.0 * expected.sqrt(),
                "seed {seed}: {count} coughs, expected {expected}"
            );
            // Same seed without coughs: identical breaths (separate random stream), so the
            // difference is exactly the cough bumps.
            let calm = BreathingSignal::synthetic(&BreathingConfig { cough_rate_per_min: 0.0, ..cfg.clone() }, 4000.0)
                .expect("valid");
            assert_eq!(calm.cycles(), s.cycles());
            assert!(calm.cough_times_s().is_empty());
            for w in s.cough_times_s().windows(2) {
                assert!(w[1] > w[0]);
            }
            for &tc in s.cough_times_s() {
                let isolated = s.cough_times_s().iter().all(|&o| o == tc || (o - tc).abs() > cfg.cough_duration_s);
                if isolated {
                    assert_relative_eq!(s.inhale(tc) - calm.inhale(tc), cfg.cough_amplitude, epsilon = 1e-9);
                }
                let outside = tc + 0.51 * cfg.cough_duration_s;
                if s.cough_times_s().iter().all(|&o| (o - outside).abs() > 0.5 * cfg.cough_duration_s) {
                    assert_relative_eq!(s.inhale(outside), calm.inhale(outside), epsilon = 1e-12);
                }
            }
        }
    }

    #[test]
    fn drift_slope_is_recovered_from_the_cycle_minima() {
        for (seed, drift) in [(5, 0.05), (6, 0.4), (7, -0.3)] {
            let cfg = BreathingConfig { seed, drift_per_min: drift, ..BreathingConfig::default() };
            let s = BreathingSignal::synthetic(&cfg, 1200.0).expect("valid");
            let minima: Vec<(f64, f64)> = s
                .cycles()
                .iter()
                .map(|c| {
                    (0..=200)
                        .map(|k| c.start_s + c.period_s * k as f64 / 200.0)
                        .map(|t| (t, s.inhale(t)))
                        .fold((0.0, f64::INFINITY), |best, p| if p.1 < best.1 { p } else { best })
                })
                .collect();
            assert!(minima.len() >= 200);
            let n = minima.len() as f64;
            let (mt, mv) = (minima.iter().map(|m| m.0).sum::<f64>() / n, minima.iter().map(|m| m.1).sum::<f64>() / n);
            let sxy: f64 = minima.iter().map(|m| (m.0 - mt) * (m.1 - mv)).sum();
            let sxx: f64 = minima.iter().map(|m| (m.0 - mt).powi(2)).sum();
            let slope_per_min = sxy / sxx * 60.0;
            assert!((slope_per_min - drift).abs() < 0.02 * drift.abs() + 1e-3, "seed {seed}: slope {slope_per_min}");
        }
    }

    #[test]
    fn same_seed_same_signal_other_seed_other_signal() {
        let cfg = BreathingConfig::default();
        let a = BreathingSignal::synthetic(&cfg, 300.0).expect("valid");
        let b = BreathingSignal::synthetic(&cfg, 300.0).expect("valid");
        let c = BreathingSignal::synthetic(&BreathingConfig { seed: 2, ..cfg }, 300.0).expect("valid");
        assert_eq!(a.cycles(), b.cycles());
        assert_eq!(a.cough_times_s(), b.cough_times_s());
        let times: Vec<f64> = (0..3000).map(|i| i as f64 * 0.1).collect();
        assert!(times.iter().all(|&t| a.inhale(t).to_bits() == b.inhale(t).to_bits()));
        let max_diff = times.iter().map(|&t| (a.inhale(t) - c.inhale(t)).abs()).fold(0.0, f64::max);
        assert!(max_diff > 0.3, "different seeds gave nearly the same signal ({max_diff})");
    }

    #[test]
    fn continuous_with_matching_velocity_and_periodic_beyond_the_span() {
        // Coughs often, so that the test sees many bumps.
        let cfg = BreathingConfig { cough_rate_per_min: 6.0, drift_per_min: 0.3, ..BreathingConfig::default() };
        let s = BreathingSignal::synthetic(&cfg, 600.0).expect("valid");
        let d = s.duration_s();
        let mut prev = s.inhale(0.0);
        let mut max_jump: f64 = 0.0;
        for i in 1..=(d * 1000.0) as usize {
            let t = i as f64 * 1e-3;
            let v = s.inhale(t);
            max_jump = max_jump.max((v - prev).abs());
            prev = v;
            if i % 97 == 0 {
                let h = 1e-6;
                let fd = (s.inhale(t + h) - s.inhale(t - h)) / (2.0 * h);
                assert!((s.velocity(t) - fd).abs() < 1e-4 * (1.0 + fd.abs()), "t {t}: {} vs {fd}", s.velocity(t));
            }
            let p = s.phase(t);
            assert!((0.0..1.0).contains(&p));
        }
        assert!(max_jump < 0.02, "largest step between samples 1 ms apart: {max_jump}");
        assert_eq!(s.inhale(0.0), 0.0);
        for c in s.cycles() {
            assert!(s.phase(c.start_s + 1e-9) < 1e-6);
        }
        for i in 0..1000 {
            let t = 0.37 + i as f64 * 0.5;
            if t < d {
                assert_relative_eq!(s.inhale(t + d), s.inhale(t), epsilon = 1e-9);
                assert_relative_eq!(s.inhale(t - 3.0 * d), s.inhale(t), epsilon = 1e-9);
                assert_relative_eq!(s.phase(t + d), s.phase(t), epsilon = 1e-6);
            }
        }
    }

    #[test]
    fn from_samples_rejects_bad_input() {
        let err = |t: Vec<f64>, v: Vec<f64>| BreathingSignal::from_samples(t, v).expect_err("must be rejected");
        assert_eq!(err(vec![0.0], vec![1.0]), BreathingError::TooFewSamples { count: 1 });
        assert_eq!(err(vec![], vec![]), BreathingError::TooFewSamples { count: 0 });
        assert_eq!(err(vec![0.0, 1.0], vec![1.0]), BreathingError::LengthMismatch { times: 2, values: 1 });
        assert_eq!(err(vec![0.0, 1.0, 1.0], vec![0.0; 3]), BreathingError::NotIncreasing { index: 2 });
        assert_eq!(err(vec![0.0, 2.0, 1.0], vec![0.0; 3]), BreathingError::NotIncreasing { index: 2 });
        assert_eq!(err(vec![0.0, f64::NAN, 1.0], vec![0.0; 3]), BreathingError::NonFiniteTime { index: 1 });
        assert_eq!(err(vec![0.0, 1.0, 2.0], vec![0.0, 0.0, f64::NAN]), BreathingError::NonFiniteValue { index: 2 });
        assert_eq!(err(vec![0.0, 1.0], vec![f64::INFINITY, 0.0]), BreathingError::NonFiniteValue { index: 0 });
    }

    #[test]
    fn from_samples_interpolates_and_repeats() {
        let s = BreathingSignal::from_samples(vec![1.0, 2.0, 4.0], vec![0.0, 1.0, 0.0]).expect("valid");
        assert_eq!((s.start_s(), s.duration_s()), (1.0, 3.0));
        assert_relative_eq!(s.inhale(1.5), 0.5);
        assert_relative_eq!(s.inhale(3.0), 0.5);
        assert_relative_eq!(s.inhale(4.0), 0.0);
        assert_relative_eq!(s.inhale(4.5), 0.5);
        assert_relative_eq!(s.inhale(0.5), s.inhale(3.5));
        assert_relative_eq!(s.velocity(1.2), 1.0);
        assert_relative_eq!(s.velocity(3.0), -0.5);
        assert!(s.cough_times_s().is_empty());
    }

    #[test]
    fn from_samples_recovers_the_period_of_a_sampled_lujan_signal() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for (period, n, phase) in [(3.7, 3, 0.4), (5.0, 1, 1.0), (2.5, 2, -0.7)] {
            let lujan = LujanBreathing { period_s: period, n, phase_rad: phase };
            let times: Vec<f64> = (0..1200).map(|i| i as f64 * 0.1).collect();
            let values: Vec<f64> = times
                .iter()
                .map(|&t| {
                    2.0 * lujan.inhale_fraction(t) + 0.02 * Distribution::<f64>::sample(&StandardNormal, &mut rng)
                })
                .collect();
            let s = BreathingSignal::from_samples(times, values).expect("valid");
            let periods: Vec<f64> = s.cycles().iter().map(|c| c.period_s).collect();
            assert!(periods.len() as f64 >= 120.0 / period - 3.0, "only {} cycles", periods.len());
            assert!((median(&periods) / period - 1.0).abs() < 0.01, "median period {}", median(&periods));
            for c in s.cycles() {
                assert!((c.period_s / period - 1.0).abs() < 0.05, "cycle {c:?}");
                assert!((c.amplitude / 2.0 - 1.0).abs() < 0.05, "cycle {c:?}");
                assert_eq!(c.kind, CycleKind::Normal);
                // Cycle starts sit at end-exhale, where cos^{2n} is ~0 (within 2.5% of a period).
                let from_exhale = (lujan.phase(c.start_s) - 0.5).abs() * period;
                assert!(from_exhale < 0.025 * period, "start {} is {from_exhale} s from end-exhale", c.start_s);
                assert_relative_eq!(s.phase(c.start_s + 0.25 * c.period_s), 0.25, epsilon = 1e-9);
            }
            // Before the first and after the last detected cycle the neighbouring period is extended.
            let (first, last) = (s.cycles()[0], s.cycles()[s.cycles().len() - 1]);
            assert_relative_eq!(s.phase(first.start_s - 0.25 * first.period_s), 0.75, epsilon = 1e-9);
            assert_relative_eq!(s.phase(last.start_s + 1.5 * last.period_s), 0.5, epsilon = 1e-9);
        }
    }

    #[test]
    fn from_samples_finds_the_cycles_of_a_synthetic_signal() {
        let cfg = BreathingConfig { seed: 3, cough_rate_per_min: 0.0, ..BreathingConfig::default() };
        let truth = BreathingSignal::synthetic(&cfg, 600.0).expect("valid");
        let times: Vec<f64> = (0..=(truth.duration_s() * 10.0) as usize).map(|i| i as f64 * 0.1).collect();
        let values: Vec<f64> = times.iter().map(|&t| truth.inhale(t)).collect();
        let rec = BreathingSignal::from_samples(times, values).expect("valid");
        // All but the first and last cycles (plateaus cut by the record ends) are found.
        assert!(rec.cycles().len() + 2 >= truth.cycles().len(), "{} of {}", rec.cycles().len(), truth.cycles().len());
        let mut worst: f64 = 0.0;
        let mut kinds_agree = 0;
        for c in rec.cycles() {
            let k = truth.cycles().partition_point(|t| t.start_s < c.start_s - 1.0);
            let nearest = truth.cycles()[k..]
                .iter()
                .min_by(|a, b| (a.start_s - c.start_s).abs().total_cmp(&(b.start_s - c.start_s).abs()))
                .expect("a true cycle");
            worst = worst.max((nearest.start_s - c.start_s).abs()).max((nearest.period_s - c.period_s).abs());
            kinds_agree += usize::from(nearest.kind == c.kind);
        }
        // Sampled at 10 Hz: start and period within half a sample interval.
        assert!(worst < 0.05, "worst start/period error {worst} s");
        assert!(kinds_agree as f64 >= 0.95 * rec.cycles().len() as f64, "{kinds_agree} kinds agree");
    }
}
