//! Reader for the "ExtMarker" breathing traces: 3-D positions of external chest/abdomen markers
//! of breathing volunteers at about 10 Hz (Krilavicius et al., 2013; Pohl et al., Computer Methods
//! and Programs in Biomedicine, 2022; CC BY 4.0). One file per marker and session, named
//! `<session>-<marker>-...csv`, with the header `"Frame";"Timestamp";"x";"y";"z"`, `;`-separated
//! fields, decimal commas, timestamps in ms, positions in mm. Quirks of the published files, all
//! handled here: half of them end with an all-zero row (dropped; anywhere else it is an error),
//! timestamp 100000 is written `1e+05`, and a few timestamps are mis-scaled (repaired from the
//! frame counter, see [`parse_trace_with_repairs`]).

use crate::breathing::{BreathingError, BreathingSignal};
use nalgebra::Point3;
use needle_nav_core::classification::principal_displacement;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// One marker's trace, in SI units (s, m).
#[derive(Debug, Clone, PartialEq)]
pub struct ExtMarkerTrace {
    pub session: String,
    pub marker: String,
    pub frames: Vec<u64>,
    pub times_s: Vec<f64>,
    pub positions_m: Vec<Point3<f64>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExtMarkerError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// `column` is the 1-based field number; `text` is the offending field (or line).
    #[error("{path}:{line}:{column}: {reason}: `{text}`")]
    Parse { path: String, line: usize, column: usize, text: String, reason: String },
    #[error("{path}:{line}:1: all-zero row before the end of the file (only the last row may be all zeros)")]
    ZeroRow { path: String, line: usize },
    #[error("{path}:{line}: frame number or timestamp does not increase")]
    NotIncreasing { path: String, line: usize },
    #[error("{path}: no data rows")]
    Empty { path: String },
    #[error("{path}: file name is not `<session>-<marker>-...csv`")]
    BadFileName { path: String },
    #[error("no trace of session `{session}` in {dir}")]
    NoSuchSession { dir: String, session: String },
    #[error("session `{session}` has more than one trace of marker `{marker}` in {dir}")]
    DuplicateMarker { dir: String, session: String, marker: String },
    #[error("breathing signal of {session}-{marker}: {source}")]
    Signal {
        session: String,
        marker: String,
        #[source]
        source: BreathingError,
    },
    #[error("no whole breathing cycle found in {session}-{marker}")]
    NoCycles { session: String, marker: String },
}

const COLUMNS: [&str; 5] = ["Frame", "Timestamp", "x", "y", "z"];

struct Row {
    line: usize,
    frame: u64,
    time_ms: f64,
    xyz_mm: [f64; 3],
}

impl Row {
    fn is_zero(&self) -> bool {
        self.frame == 0 && self.time_ms == 0.0 && self.xyz_mm.iter().all(|&v| v == 0.0)
    }
}

/// A number written with an optional sign, digits, an optional decimal comma and an optional
/// exponent (the exporter writes timestamp 100000 ms as `1e+05`). A decimal point is refused:
/// in this format it could only be a thousands separator or a foreign file.
fn parse_decimal_comma(s: &str) -> Option<f64> {
    let (mantissa, exponent) = match s.split_once(['e', 'E']) {
        Some((m, e)) => (m, Some(e)),
        None => (s, None),
    };
    let all_digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    let unsigned = |p: &str| p.strip_prefix(['-', '+']).unwrap_or(p).to_string();
    let digits = unsigned(mantissa);
    let (int, frac) = match digits.split_once(',') {
        Some((i, f)) => (i, Some(f)),
        None => (digits.as_str(), None),
    };
    if !all_digits(int) || frac.is_some_and(|f| !all_digits(f)) || exponent.is_some_and(|e| !all_digits(&unsigned(e))) {
        return None;
    }
    s.replacen(',', ".", 1).parse().ok()
}

/// Parses the text of one trace file; `path_for_errors` only labels the errors. Timestamps off
/// the frame clock are repaired (see [`parse_trace_with_repairs`]) and logged as warnings.
pub fn parse_trace(
    text: &str,
    path_for_errors: &str,
    session: &str,
    marker: &str,
) -> Result<ExtMarkerTrace, ExtMarkerError> {
    let (trace, repairs) = parse_trace_with_repairs(text, path_for_errors, session, marker)?;
    for r in &repairs {
        tracing::warn!(
            "{path_for_errors}:{}: timestamp {} ms is off the frame clock, replaced by {:.1} ms",
            r.line,
            r.found_ms,
            r.repaired_ms
        );
    }
    Ok(trace)
}

/// A timestamp replaced because it disagreed with the frame counter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimestampRepair {
    /// 1-based line in the file.
    pub line: usize,
    pub found_ms: f64,
    pub repaired_ms: f64,
}

/// Rows needed before a frame clock is fitted: with fewer, a bad timestamp cannot be told apart
/// from a bad clock, and the file is only checked for increasing timestamps.
const MIN_ROWS_FOR_CLOCK: usize = 20;
/// At most this fraction of rows may be repaired; more means the clock itself is broken.
const MAX_REPAIRED_FRACTION: f64 = 0.05;

/// Like [`parse_trace`], also returning the repaired timestamps. The recorder's frame counter
/// runs at a fixed rate (60 Hz in ExtMarker) and the timestamp is that clock in ms; a few rows of
/// the published files carry mis-scaled timestamps (`768;25,6` where the clock gives 12800 ms).
/// A clock `offset + rate * frame` is fitted by medians; a timestamp more than half a row
/// interval off it is replaced by the clock's time. Nothing is repaired in files of fewer than
/// 20 rows or where over 5% of rows are off the clock; non-increasing timestamps left after
/// this are an error.
pub fn parse_trace_with_repairs(
    text: &str,
    path_for_errors: &str,
    session: &str,
    marker: &str,
) -> Result<(ExtMarkerTrace, Vec<TimestampRepair>), ExtMarkerError> {
    let path = || path_for_errors.to_string();
    let parse_err = |line: usize, column: usize, text: &str, reason: String| ExtMarkerError::Parse {
        path: path(),
        line,
        column,
        text: text.to_string(),
        reason,
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // `lines` also strips the `\r` of the files' CRLF endings.
    let lines: Vec<&str> = text.lines().collect();
    let Some(last_nonblank) = lines.iter().rposition(|l| !l.trim().is_empty()) else {
        return Err(ExtMarkerError::Empty { path: path() });
    };

    let header: Vec<&str> = lines[0].split(';').map(|f| f.trim().trim_matches('"')).collect();
    for (i, expected) in COLUMNS.iter().enumerate() {
        let found = header.get(i).copied().unwrap_or("");
        if !found.eq_ignore_ascii_case(expected) {
            return Err(parse_err(1, i + 1, found, format!("expected header field `{expected}`")));
        }
    }
    if header.len() > COLUMNS.len() {
        return Err(parse_err(1, COLUMNS.len() + 1, header[COLUMNS.len()], "extra header field".into()));
    }

    let mut rows = Vec::with_capacity(last_nonblank);
    for (index, raw) in lines.iter().enumerate().take(last_nonblank + 1).skip(1) {
        let line = index + 1;
        if raw.trim().is_empty() {
            return Err(parse_err(line, 1, raw, "empty line inside the data".into()));
        }
        let fields: Vec<&str> = raw.split(';').map(str::trim).collect();
        if fields.len() < COLUMNS.len() {
            let reason = format!("missing field `{}`: expected 5 fields", COLUMNS[fields.len()]);
            return Err(parse_err(line, fields.len() + 1, "", reason));
        }
        if fields.len() > COLUMNS.len() {
            return Err(parse_err(line, COLUMNS.len() + 1, fields[COLUMNS.len()], "extra field".into()));
        }
        let frame = fields[0]
            .parse::<u64>()
            .map_err(|_| parse_err(line, 1, fields[0], "frame number is not a non-negative integer".into()))?;
        let mut numbers = [0.0; 4];
        for (k, number) in numbers.iter_mut().enumerate() {
            let field = fields[k + 1];
            *number = parse_decimal_comma(field).ok_or_else(|| {
                parse_err(line, k + 2, field, format!("`{}` is not a decimal-comma number", COLUMNS[k + 1]))
            })?;
        }
        rows.push(Row { line, frame, time_ms: numbers[0], xyz_mm: [numbers[1], numbers[2], numbers[3]] });
    }

    // The recorder ends every file with an all-zero row; anywhere else such a row is damage.
    if rows.last().is_some_and(Row::is_zero) {
        rows.pop();
    }
    if let Some(zero) = rows.iter().find(|r| r.is_zero()) {
        return Err(ExtMarkerError::ZeroRow { path: path(), line: zero.line });
    }
    if rows.is_empty() {
        return Err(ExtMarkerError::Empty { path: path() });
    }
    if let Some(w) = rows.windows(2).find(|w| w[1].frame <= w[0].frame) {
        return Err(ExtMarkerError::NotIncreasing { path: path(), line: w[1].line });
    }
    let repairs = repair_timestamps(&mut rows);
    if let Some(w) = rows.windows(2).find(|w| w[1].time_ms <= w[0].time_ms) {
        return Err(ExtMarkerError::NotIncreasing { path: path(), line: w[1].line });
    }

    let trace = ExtMarkerTrace {
        session: session.to_string(),
        marker: marker.to_string(),
        frames: rows.iter().map(|r| r.frame).collect(),
        times_s: rows.iter().map(|r| r.time_ms * 1e-3).collect(),
        positions_m: rows.iter().map(|r| Point3::new(r.xyz_mm[0], r.xyz_mm[1], r.xyz_mm[2]) * 1e-3).collect(),
    };
    Ok((trace, repairs))
}

/// Replaces timestamps that are off the fitted frame clock (rows have strictly increasing frames).
fn repair_timestamps(rows: &mut [Row]) -> Vec<TimestampRepair> {
    if rows.len() < MIN_ROWS_FOR_CLOCK {
        return Vec::new();
    }
    let mut rates: Vec<f64> =
        rows.windows(2).map(|w| (w[1].time_ms - w[0].time_ms) / (w[1].frame - w[0].frame) as f64).collect();
    let mut steps: Vec<f64> = rows.windows(2).map(|w| (w[1].frame - w[0].frame) as f64).collect();
    let (Some(rate), Some(step)) = (median(&mut rates), median(&mut steps)) else {
        return Vec::new();
    };
    if !(rate.is_finite() && rate > 0.0) {
        return Vec::new();
    }
    let mut offsets: Vec<f64> = rows.iter().map(|r| r.time_ms - rate * r.frame as f64).collect();
    let Some(offset) = median(&mut offsets) else {
        return Vec::new();
    };
    let clock = |r: &Row| offset + rate * r.frame as f64;
    let tolerance = 0.5 * rate * step;
    let off: Vec<usize> = (0..rows.len()).filter(|&i| (rows[i].time_ms - clock(&rows[i])).abs() > tolerance).collect();
    if off.len() as f64 > MAX_REPAIRED_FRACTION * rows.len() as f64 {
        return Vec::new();
    }
    off.into_iter()
        .map(|i| {
            let repaired_ms = clock(&rows[i]);
            let repair = TimestampRepair { line: rows[i].line, found_ms: rows[i].time_ms, repaired_ms };
            rows[i].time_ms = repaired_ms;
            repair
        })
        .collect()
}

/// (session, marker) from a file name `<session>-<marker>-...csv`; `None` if it is not one.
fn session_and_marker(file_name: &str) -> Option<(String, String)> {
    let stem = file_name.len().checked_sub(4).and_then(|n| {
        let (stem, ext) = (file_name.get(..n)?, file_name.get(n..)?);
        ext.eq_ignore_ascii_case(".csv").then_some(stem)
    })?;
    let mut parts = stem.split('-');
    let (session, marker) = (parts.next()?, parts.next()?);
    let ok = |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric());
    (ok(session) && ok(marker)).then(|| (session.to_string(), marker.to_string()))
}

fn is_csv(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"))
}

/// Reads one trace file; session and marker come from its name.
pub fn read_trace(path: &Path) -> Result<ExtMarkerTrace, ExtMarkerError> {
    let (text, shown, session, marker) = read_named(path)?;
    parse_trace(&text, &shown, &session, &marker)
}

/// Like [`read_trace`], also returning the repaired timestamps.
pub fn read_trace_with_repairs(path: &Path) -> Result<(ExtMarkerTrace, Vec<TimestampRepair>), ExtMarkerError> {
    let (text, shown, session, marker) = read_named(path)?;
    parse_trace_with_repairs(&text, &shown, &session, &marker)
}

/// (text, path as shown in errors, session, marker) of a trace file.
fn read_named(path: &Path) -> Result<(String, String, String, String), ExtMarkerError> {
    let shown = path.display().to_string();
    let (session, marker) = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(session_and_marker)
        .ok_or_else(|| ExtMarkerError::BadFileName { path: shown.clone() })?;
    let text = std::fs::read_to_string(path).map_err(|source| ExtMarkerError::Io { path: shown.clone(), source })?;
    Ok((text, shown, session, marker))
}

/// The `.csv` files of a folder, sorted, each with its session and marker.
fn csv_files(dir: &Path) -> Result<Vec<(PathBuf, String, String)>, ExtMarkerError> {
    let io = |source| ExtMarkerError::Io { path: dir.display().to_string(), source };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if is_csv(&path) && path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let named = p.file_name().and_then(|n| n.to_str()).and_then(session_and_marker);
            match named {
                Some((s, m)) => Ok((p, s, m)),
                None => Err(ExtMarkerError::BadFileName { path: p.display().to_string() }),
            }
        })
        .collect()
}

/// Session ids of the `.csv` traces in `dir`, sorted. A `.csv` not named like a trace is an error.
pub fn list_sessions(dir: &Path) -> Result<Vec<String>, ExtMarkerError> {
    let sessions: BTreeSet<String> = csv_files(dir)?.into_iter().map(|(_, s, _)| s).collect();
    Ok(sessions.into_iter().collect())
}

/// All traces of one session, sorted by marker.
pub fn read_session(dir: &Path, session: &str) -> Result<Vec<ExtMarkerTrace>, ExtMarkerError> {
    let mut traces = Vec::new();
    for (path, s, _) in csv_files(dir)? {
        if s == session {
            traces.push(read_trace(&path)?);
        }
    }
    if traces.is_empty() {
        return Err(ExtMarkerError::NoSuchSession { dir: dir.display().to_string(), session: session.to_string() });
    }
    traces.sort_by(|a, b| a.marker.cmp(&b.marker));
    if let Some(w) = traces.windows(2).find(|w| w[0].marker == w[1].marker) {
        return Err(ExtMarkerError::DuplicateMarker {
            dir: dir.display().to_string(),
            session: session.to_string(),
            marker: w[0].marker.clone(),
        });
    }
    Ok(traces)
}

impl ExtMarkerTrace {
    /// Linear interpolation, clamped to the first and last sample (the origin for an empty trace).
    pub fn position_at(&self, t_s: f64) -> Point3<f64> {
        let n = self.times_s.len().min(self.positions_m.len());
        if n == 0 {
            return Point3::origin();
        }
        if n == 1 || t_s <= self.times_s[0] {
            return self.positions_m[0];
        }
        if t_s >= self.times_s[n - 1] {
            return self.positions_m[n - 1];
        }
        let i = self.times_s[..n].partition_point(|&s| s <= t_s).saturating_sub(1).min(n - 2);
        let w = (t_s - self.times_s[i]) / (self.times_s[i + 1] - self.times_s[i]);
        self.positions_m[i] + (self.positions_m[i + 1] - self.positions_m[i]) * w
    }

    /// Time from the first to the last sample [s] (0 with fewer than two samples).
    pub fn duration_s(&self) -> f64 {
        match (self.times_s.first(), self.times_s.last()) {
            (Some(a), Some(b)) => b - a,
            _ => 0.0,
        }
    }
}

fn median(values: &mut [f64]) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let m = values.len() / 2;
    match values.len() {
        0 => None,
        n if n % 2 == 0 => Some(0.5 * (values[m - 1] + values[m])),
        _ => Some(values[m]),
    }
}

/// Time over which the orientation score takes velocities: a few samples at 10 Hz, so that the
/// 0.1 mm quantisation of the files does not dominate.
const VELOCITY_LAG_S: f64 = 0.3;

/// Positive when inhale is towards +d. Exhale is the longer, flatter part of a breath: the signal
/// dwells near end-exhale, so the median lies nearer that extreme, and it falls back more slowly
/// than it rose (inspiration takes about a third of the cycle), so the fastest velocities point
/// towards inhale. Each term is a normalised asymmetry of 2nd/50th/98th percentiles, in [-1, 1]:
/// `(hi - med) - (med - lo)` over `hi - lo` for the displacement, `(hi + lo) / (hi - lo)` for its
/// velocity. On the ExtMarker traces either alone puts inhale against the recorder's +z (the
/// way the chest rises) in 2-3 of 18 traces (near-sinusoidal breathing; markers whose rise and
/// fall take equally long); their sum does so in one, in the irregular session 201205101536.
fn inhale_direction_score(times: &[f64], d: &[f64]) -> f64 {
    let asymmetry = |mut v: Vec<f64>, velocity: bool| {
        if v.len() < 2 {
            return 0.0;
        }
        v.sort_by(f64::total_cmp);
        let pct = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
        let (lo, mid, hi) = (pct(0.02), pct(0.5), pct(0.98));
        let span = hi - lo;
        match (span > 0.0, velocity) {
            (false, _) => 0.0,
            (true, false) => ((hi - mid) - (mid - lo)) / span,
            (true, true) => (hi + lo) / span,
        }
    };
    let n = times.len().min(d.len());
    let velocities: Vec<f64> = (0..n)
        .filter_map(|i| {
            let j = i + times[i..n].partition_point(|&t| t < times[i] + VELOCITY_LAG_S);
            (j < n && times[j] > times[i]).then(|| (d[j] - d[i]) / (times[j] - times[i]))
        })
        .collect();
    let score = asymmetry(d[..n].to_vec(), false) + asymmetry(velocities, true);
    if score.is_finite() {
        score
    } else {
        0.0
    }
}

/// Dimensionless breathing signal of one marker: principal-axis displacement, sign chosen so that inhale is
/// positive (exhale is the longer, flatter part: the median lies nearer the end-exhale extreme, and the
/// signal falls back more slowly than it rose; see `inhale_direction_score`), shifted so that end-exhale
/// is about 0 and scaled so the median cycle amplitude is 1.
pub fn breathing_signal(trace: &ExtMarkerTrace) -> Result<BreathingSignal, ExtMarkerError> {
    let signal_err =
        |source| ExtMarkerError::Signal { session: trace.session.clone(), marker: trace.marker.clone(), source };
    let no_cycles = || ExtMarkerError::NoCycles { session: trace.session.clone(), marker: trace.marker.clone() };
    let mut d = principal_displacement(&trace.positions_m);
    if d.len() < 2 {
        return Err(signal_err(BreathingError::TooFewSamples { count: d.len() }));
    }
    if trace.times_s.len() != d.len() {
        let mismatch = BreathingError::LengthMismatch { times: trace.times_s.len(), values: d.len() };
        return Err(signal_err(mismatch));
    }
    if inhale_direction_score(&trace.times_s, &d) < 0.0 {
        d.iter_mut().for_each(|v| *v = -*v);
    }

    let raw = BreathingSignal::from_samples(trace.times_s.clone(), d.clone()).map_err(signal_err)?;
    let cycles = raw.cycles();
    let last = cycles.last().ok_or_else(no_cycles)?;
    let mut end_exhale: Vec<f64> = cycles.iter().map(|c| raw.inhale(c.start_s)).collect();
    end_exhale.push(raw.inhale(last.start_s + last.period_s));
    let mut amplitudes: Vec<f64> = cycles.iter().map(|c| c.amplitude).collect();
    let base = median(&mut end_exhale).ok_or_else(no_cycles)?;
    let amplitude = median(&mut amplitudes).ok_or_else(no_cycles)?;
    if amplitude.is_nan() || amplitude <= 0.0 {
        return Err(no_cycles());
    }
    let values = d.iter().map(|v| (v - base) / amplitude).collect();
    BreathingSignal::from_samples(trace.times_s.clone(), values).map_err(signal_err)
}

/// Where the shared data folder is: $NEEDLE_NAV_SHARED_DATA, else <crate root>/../shared/data.
pub fn shared_data_dir() -> PathBuf {
    match std::env::var_os("NEEDLE_NAV_SHARED_DATA") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("..").join("shared").join("data"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breathing::{BreathingConfig, CycleKind};
    use approx::assert_relative_eq;
    use nalgebra::Vector3;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, Normal};

    const HEADER: &str = "\"Frame\";\"Timestamp\";\"x\";\"y\";\"z\"\r\n";

    fn parse(body: &str) -> Result<ExtMarkerTrace, ExtMarkerError> {
        parse_trace(&format!("{HEADER}{body}"), "mem.csv", "S", "M")
    }

    fn median_of(values: &[f64]) -> f64 {
        median(&mut values.to_vec()).expect("non-empty")
    }

    #[test]
    fn decimal_commas_units_and_trailing_zero_row() {
        let t =
            parse("0;0;-490,7;4,1;64,7\r\n7;117;-490,75;-4;+64,2\r\n13;217;0;0,05;63\r\n0;0;0;0;0\r\n").expect("valid");
        assert_eq!((t.session.as_str(), t.marker.as_str()), ("S", "M"));
        assert_eq!(t.frames, vec![0, 7, 13]);
        assert_eq!(t.times_s.len(), 3);
        assert_relative_eq!(t.times_s[1], 0.117, epsilon = 1e-15);
        assert_relative_eq!(t.times_s[2], 0.217, epsilon = 1e-15);
        assert_relative_eq!(t.positions_m[0], Point3::new(-0.4907, 0.0041, 0.0647), epsilon = 1e-15);
        assert_relative_eq!(t.positions_m[1], Point3::new(-0.49075, -0.004, 0.0642), epsilon = 1e-15);
        assert_relative_eq!(t.positions_m[2], Point3::new(0.0, 0.00005, 0.063), epsilon = 1e-15);
        assert_relative_eq!(t.duration_s(), 0.217, epsilon = 1e-15);
        // Without the zero row (and with LF endings and a trailing blank line) nothing is dropped.
        let plain = parse_trace("Frame;Timestamp;x;y;z\n0;0;1;2;3\n5;100;1;2;4\n\n", "p.csv", "S", "M").expect("valid");
        assert_eq!(plain.frames, vec![0, 5]);
    }

    #[test]
    fn malformed_rows_name_file_line_and_column() {
        let expect_parse = |body: &str, line: usize, column: usize, text: &str| match parse(body) {
            Err(e @ ExtMarkerError::Parse { .. }) => {
                let ExtMarkerError::Parse { path, line: l, column: c, text: t, .. } = &e else { unreachable!() };
                assert_eq!((path.as_str(), *l, *c, t.as_str()), ("mem.csv", line, column, text), "{e}");
                assert!(e.to_string().starts_with(&format!("mem.csv:{line}:{column}:")), "{e}");
            }
            other => panic!("expected a parse error at {line}:{column}, got {other:?}"),
        };
        expect_parse("0;0;1;2;3\n5;100;4,1x;2;3\n", 3, 3, "4,1x");
        expect_parse("0;0;1;2;3\n5;100;4.1;2;3\n", 3, 3, "4.1");
        expect_parse("0;0;1;2;3\n5;100;1;;3\n", 3, 4, "");
        expect_parse("0;0;1;2;3\n5;100;1;2;3,\n", 3, 5, "3,");
        expect_parse("0;0;1;2;3\n5;1e;1;2;3\n", 3, 2, "1e");
        expect_parse("0;0;1;2;3\n5;1e+0,5;1;2;3\n", 3, 2, "1e+0,5");
        expect_parse("0;0;1;2;3\n5;100;1;2;inf\n", 3, 5, "inf");
        expect_parse("0;0;1;2;3\n5;100;1;2;NaN\n", 3, 5, "NaN");
        expect_parse("0;0;1;2;3\n5;100;1;2;1,2,3\n", 3, 5, "1,2,3");
        expect_parse("-1;0;1;2;3\n", 2, 1, "-1");
        expect_parse("0;0;1;2\n", 2, 5, "");
        expect_parse("0;0;1;2;3;4\n", 2, 6, "4");
        expect_parse("0;0;1;2;3\n\n5;100;1;2;3\n", 3, 1, "");
        match parse_trace("Frame;Time;x;y;z\n0;0;1;2;3\n", "h.csv", "S", "M") {
            Err(ExtMarkerError::Parse { line: 1, column: 2, .. }) => {}
            other => panic!("bad header accepted: {other:?}"),
        }
    }

    #[test]
    fn zero_row_elsewhere_non_increasing_and_empty_are_rejected() {
        match parse("0;0;1;2;3\n0;0;0;0;0\n7;117;1;2;3\n0;0;0;0;0\n") {
            Err(e @ ExtMarkerError::ZeroRow { line: 3, .. }) => assert!(e.to_string().contains("mem.csv:3:1"), "{e}"),
            other => panic!("zero row in the middle accepted: {other:?}"),
        }
        match parse("0;0;1;2;3\n7;117;1;2;3\n13;117;1;2;3\n") {
            Err(ExtMarkerError::NotIncreasing { line: 4, .. }) => {}
            other => panic!("repeated timestamp accepted: {other:?}"),
        }
        match parse("0;0;1;2;3\n7;117;1;2;3\n6;217;1;2;3\n") {
            Err(ExtMarkerError::NotIncreasing { line: 4, .. }) => {}
            other => panic!("decreasing frame accepted: {other:?}"),
        }
        for text in ["", "\r\n", &format!("{HEADER}0;0;0;0;0\r\n"), HEADER] {
            assert!(matches!(parse_trace(text, "e.csv", "S", "M"), Err(ExtMarkerError::Empty { .. })), "{text:?}");
        }
    }

    #[test]
    fn position_at_interpolates_and_clamps() {
        let t = parse("0;0;0;0;0,5\n5;1000;10;0;0,5\n9;3000;10;20;0,5\n").expect("valid");
        assert_relative_eq!(t.position_at(0.5), Point3::new(0.005, 0.0, 0.0005), epsilon = 1e-15);
        assert_relative_eq!(t.position_at(2.0), Point3::new(0.01, 0.01, 0.0005), epsilon = 1e-15);
        assert_eq!(t.position_at(-1.0), t.positions_m[0]);
        assert_eq!(t.position_at(99.0), t.positions_m[2]);
        assert_eq!(t.position_at(1.0), t.positions_m[1]);
    }

    /// A scratch folder of this test process, removed on drop.
    struct Scratch(PathBuf);
    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!("needle_nav_extmarker_{name}_{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("create scratch folder");
            Scratch(dir)
        }
        fn write(&self, name: &str, text: &str) {
            std::fs::write(self.0.join(name), text).expect("write scratch file");
        }
    }
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn files_sessions_and_names() {
        let dir = Scratch::new("files");
        let body = format!("{HEADER}0;0;1;2;3\r\n7;100;1;2;4\r\n0;0;0;0;0\r\n");
        dir.write("20-UCC-1-N-1-6.csv", &body);
        dir.write("10-LAC-1-N-1-6.csv", &body);
        dir.write("20-LAC-1-N-1-6.csv", &body);
        dir.write("SOURCE.md", "not a trace");
        assert_eq!(list_sessions(&dir.0).expect("listed"), vec!["10", "20"]);
        let s = read_session(&dir.0, "20").expect("read");
        assert_eq!(s.iter().map(|t| t.marker.as_str()).collect::<Vec<_>>(), vec!["LAC", "UCC"]);
        assert!(s.iter().all(|t| t.session == "20" && t.frames == vec![0, 7]));
        assert!(matches!(read_session(&dir.0, "30"), Err(ExtMarkerError::NoSuchSession { .. })));
        let missing = read_trace(&dir.0.join("40-LAC-x.csv")).expect_err("missing file");
        assert!(matches!(&missing, ExtMarkerError::Io { path, .. } if path.contains("40-LAC-x.csv")), "{missing}");
        dir.write("20-UCC-2-N-1-6.csv", &body);
        assert!(matches!(read_session(&dir.0, "20"), Err(ExtMarkerError::DuplicateMarker { .. })));
        dir.write("notes.csv", &body);
        let err = list_sessions(&dir.0).expect_err("badly named csv");
        assert!(matches!(&err, ExtMarkerError::BadFileName { path } if path.ends_with("notes.csv")), "{err}");
        assert!(matches!(list_sessions(&dir.0.join("nope")), Err(ExtMarkerError::Io { .. })));
        assert_eq!(session_and_marker("201205101519-LAC-1-T-222-6.csv"), Some(("201205101519".into(), "LAC".into())));
        assert_eq!(session_and_marker("a-b.CSV"), Some(("a".into(), "b".into())));
        for bad in ["abc.csv", "-LAC-1.csv", "1--x.csv", "1-LAC.txt", ".csv"] {
            assert_eq!(session_and_marker(bad), None, "{bad}");
        }
    }

    #[test]
    fn breathing_signal_of_a_simulated_marker_has_inhale_positive() {
        let truth = BreathingSignal::synthetic(
            &BreathingConfig { seed: 4, cough_rate_per_min: 0.0, drift_per_min: 0.0, ..BreathingConfig::default() },
            200.0,
        )
        .expect("valid");
        let noise = Normal::new(0.0, 5e-5).expect("valid");
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        // Both signs of the excursion: the principal axis sign must not decide inhale's sign.
        for excursion in [Vector3::new(0.002, -0.008, 0.003), Vector3::new(-0.002, 0.008, -0.003)] {
            let times_s: Vec<f64> = (0..2000).map(|i| i as f64 * 0.1).collect();
            let positions_m = times_s
                .iter()
                .map(|&t| {
                    let jitter = Vector3::from_fn(|_, _| noise.sample(&mut rng));
                    Point3::new(-0.39, 0.004, 0.087) + excursion * truth.inhale(t) + jitter
                })
                .collect();
            let trace = ExtMarkerTrace {
                session: "S".into(),
                marker: "M".into(),
                frames: (0..2000).collect(),
                times_s: times_s.clone(),
                positions_m,
            };
            let rec = breathing_signal(&trace).expect("signal");
            let normal_amp = median_of(
                &truth.cycles().iter().filter(|c| c.kind == CycleKind::Normal).map(|c| c.amplitude).collect::<Vec<_>>(),
            );
            // Same signal up to the scale of the median breath: small residual everywhere.
            let worst =
                times_s.iter().map(|&t| (rec.inhale(t) * normal_amp - truth.inhale(t)).abs()).fold(0.0, f64::max);
            assert!(worst < 0.1, "largest deviation from the true signal {worst}");
            let amps: Vec<f64> = rec.cycles().iter().map(|c| c.amplitude).collect();
            assert_relative_eq!(median_of(&amps), 1.0, epsilon = 1e-9);
        }
    }

    // ---- Real data: every ExtMarker file in the shared folder. ----

    fn real_data_dir() -> PathBuf {
        let dir = shared_data_dir().join("breathing_traces_extmarker");
        assert!(
            dir.is_dir(),
            "ExtMarker data not found: looked in {} (set NEEDLE_NAV_SHARED_DATA to the shared data folder)",
            dir.display()
        );
        dir
    }

    fn real_files() -> Vec<PathBuf> {
        let dir = real_data_dir();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| is_csv(p))
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no .csv files in {}", dir.display());
        files
    }

    /// The independent check: a bare split of one data line into (frame, ms, mm, mm, mm).
    fn split_row(line: &str) -> Vec<f64> {
        line.trim_end().split(';').map(|f| f.replace(',', ".").parse::<f64>().expect("a number")).collect()
    }

    /// Every data row of every file against a bare split of its line. Half of the published files
    /// end with the all-zero row, half do not (MANIFEST.md says all do); a few timestamps are off
    /// the 60 Hz frame clock and must come back repaired, all others exactly as written.
    #[test]
    fn real_traces_parse_completely_and_exactly() {
        let (mut with_zero_row, mut repaired, mut files) = (0, 0, 0);
        for path in real_files() {
            let name = path.display();
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
            let lines: Vec<&str> = text.lines().collect();
            let (t, repairs) = read_trace_with_repairs(&path).unwrap_or_else(|e| panic!("{e}"));
            let zero_row = split_row(lines[lines.len() - 1]) == vec![0.0; 5];
            with_zero_row += usize::from(zero_row);
            files += 1;
            assert_eq!(t.times_s.len(), lines.len() - 1 - usize::from(zero_row), "{name}: rows");
            assert_eq!((t.frames.len(), t.positions_m.len()), (t.times_s.len(), t.times_s.len()));
            for (k, line) in lines[1..=t.times_s.len()].iter().enumerate() {
                let v = split_row(line);
                assert_eq!(t.frames[k] as f64, v[0], "{name}: frame of row {k}");
                let mm = t.positions_m[k].coords * 1e3;
                assert_relative_eq!(mm, Vector3::new(v[2], v[3], v[4]), max_relative = 1e-12, epsilon = 1e-12);
                // The frame clock, independently: frame / 60 s; the files round it to the ms.
                let clock_ms = v[0] * 1000.0 / 60.0;
                let repair = repairs.iter().find(|r| r.line == k + 2);
                if (v[1] - clock_ms).abs() > 1.0 {
                    let r = repair.unwrap_or_else(|| panic!("{name}:{}: timestamp {} not repaired", k + 2, v[1]));
                    assert_eq!(r.found_ms, v[1]);
                    assert!((r.repaired_ms - clock_ms).abs() < 1.0, "{name}:{}: {r:?}", k + 2);
                    assert_relative_eq!(t.times_s[k] * 1e3, r.repaired_ms, max_relative = 1e-12);
                } else {
                    assert!(repair.is_none(), "{name}:{}: good timestamp repaired", k + 2);
                    assert_relative_eq!(t.times_s[k] * 1e3, v[1], max_relative = 1e-12);
                }
            }
            repaired += repairs.len();
            assert!(t.positions_m.iter().all(|p| p.coords != Vector3::zeros()), "{name}: a zero row remains");
            assert!(t.times_s.windows(2).all(|w| w[1] > w[0]), "{name}: timestamps");
            let dts: Vec<f64> = t.times_s.windows(2).map(|w| w[1] - w[0]).collect();
            let dt = median_of(&dts);
            assert!((0.08..=0.12).contains(&dt), "{name}: median sampling interval {dt} s");
        }
        eprintln!("{files} files, {with_zero_row} with the trailing zero row, {repaired} timestamps repaired");
    }

    #[test]
    fn real_data_has_six_sessions_of_three_markers() {
        let dir = real_data_dir();
        let sessions = list_sessions(&dir).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(sessions.len(), 6, "{sessions:?}");
        for s in &sessions {
            let traces = read_session(&dir, s).unwrap_or_else(|e| panic!("{e}"));
            let markers: Vec<&str> = traces.iter().map(|t| t.marker.as_str()).collect();
            assert_eq!(markers.len(), 3, "session {s}: {markers:?}");
            assert!(markers.windows(2).all(|w| w[0] < w[1]), "session {s}: {markers:?}");
        }
    }

    #[test]
    fn real_breathing_signals_have_physiological_periods() {
        for path in real_files() {
            let t = read_trace(&path).unwrap_or_else(|e| panic!("{e}"));
            let s = breathing_signal(&t).unwrap_or_else(|e| panic!("{e}"));
            let periods: Vec<f64> = s.cycles().iter().map(|c| c.period_s).collect();
            let amps: Vec<f64> = s.cycles().iter().map(|c| c.amplitude).collect();
            let (period, amp) = (median_of(&periods), median_of(&amps));
            let mm = principal_displacement(&t.positions_m);
            let range_mm =
                1e3 * (mm.iter().copied().fold(f64::MIN, f64::max) - mm.iter().copied().fold(f64::MAX, f64::min));
            eprintln!(
                "{}-{}: {:.1} s, {} cycles, median period {period:.2} s, period CV {:.2}, median amplitude {amp:.3}, \
                 deep {}, range {range_mm:.1} mm",
                t.session,
                t.marker,
                t.duration_s(),
                periods.len(),
                {
                    let m = periods.iter().sum::<f64>() / periods.len() as f64;
                    (periods.iter().map(|p| (p - m).powi(2)).sum::<f64>() / periods.len() as f64).sqrt() / m
                },
                s.cycles().iter().filter(|c| c.kind == CycleKind::Deep).count(),
            );
            assert!(periods.len() >= 10, "{}-{}: only {} cycles", t.session, t.marker, periods.len());
            assert!((2.0..=8.0).contains(&period), "{}-{}: median period {period} s", t.session, t.marker);
            assert!((amp - 1.0).abs() <= 0.1, "{}-{}: median amplitude {amp}", t.session, t.marker);
        }
    }

    /// Inhale direction against physics: the anterior surface rises at inhale, +z in the recorder
    /// frame (z is highest for the upper chest markers). Allowed: one trace of the disturbed
    /// session 201205101536, whose breathing is irregular.
    #[test]
    fn real_breathing_signals_mostly_inhale_along_plus_z() {
        let mut against = Vec::new();
        let files = real_files();
        for path in &files {
            let t = read_trace(path).unwrap_or_else(|e| panic!("{e}"));
            let s = breathing_signal(&t).unwrap_or_else(|e| panic!("{e}"));
            let n = t.times_s.len() as f64;
            let inhale: Vec<f64> = t.times_s.iter().map(|&u| s.inhale(u)).collect();
            let (mi, mz) = (inhale.iter().sum::<f64>() / n, t.positions_m.iter().map(|p| p.z).sum::<f64>() / n);
            let cov: f64 = inhale.iter().zip(&t.positions_m).map(|(a, p)| (a - mi) * (p.z - mz)).sum();
            if cov <= 0.0 {
                against.push(format!("{}-{}", t.session, t.marker));
            }
        }
        eprintln!("inhale against +z in {} of {} traces: {against:?}", against.len(), files.len());
        assert!(against.len() <= 1 && against.iter().all(|a| a.starts_with("201205101536")), "{against:?}");
    }

    #[test]
    fn off_clock_timestamps_are_repaired_and_reported() {
        // 40 rows at 60 Hz, every 6th frame; row 12 (line 14) carries the mis-scaled time of the files.
        let mut body = String::new();
        for k in 0..40u64 {
            let frame = 6 * k;
            let ms = if k == 12 { frame as f64 / 30.0 } else { (frame as f64 * 1000.0 / 60.0).round() };
            body += &format!("{frame};{};1;2;{k}\n", ms.to_string().replace('.', ","));
        }
        let (t, repairs) = parse_trace_with_repairs(&format!("{HEADER}{body}"), "r.csv", "S", "M").expect("valid");
        assert_eq!(repairs.len(), 1, "{repairs:?}");
        assert_eq!(repairs[0].line, 14);
        assert_relative_eq!(repairs[0].found_ms, 2.4, epsilon = 1e-12);
        assert_relative_eq!(repairs[0].repaired_ms, 1200.0, epsilon = 0.5);
        assert_relative_eq!(t.times_s[12], 1.2, epsilon = 5e-4);
        assert_eq!(t.times_s.len(), 40);
        assert_eq!(parse(&body).expect("valid"), t);
        // A clock that steps back for half the file is not a glitch: rejected, not repaired.
        let mut stepped = String::new();
        for k in 0..40u64 {
            let ms = 100 * k - if k >= 20 { 1500 } else { 0 };
            stepped += &format!("{};{ms};1;2;{k}\n", 6 * k);
        }
        match parse(&stepped) {
            Err(ExtMarkerError::NotIncreasing { line: 22, .. }) => {}
            other => panic!("clock step accepted: {other:?}"),
        }
    }
}
