//! Decides whether a needle target may be published as valid. Every gate that fails is a
//! reason; the first one in this order is reported.

/// Why a target is not valid. Maps one-to-one onto `NeedleTarget.REASON_*`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidReason {
    #[error("starting: no tracker sample received yet")]
    Starting,
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("stale tracker data: newest sample is {age_s:.3} s old (limit {limit_s:.3} s)")]
    StaleData { age_s: f64, limit_s: f64 },
    #[error("no usable registration: {0}")]
    NoRegistration(String),
    #[error("no calm-breathing baseline recorded yet")]
    NoBaseline,
    #[error("correction markers not visible: {0:?}")]
    MissingMarkers(Vec<u32>),
    #[error("breathing deviates {deviation_m:.4} m from baseline (tolerance {tolerance_m:.4} m)")]
    DeviationTooLarge { deviation_m: f64, tolerance_m: f64 },
    #[error("prediction unreliable: {0}")]
    PredictionUnreliable(String),
    #[error("no 4-D CT correlation model: targets only near end-exhale (breathing at {surrogate:.2} of a breath, gate {gate:.2})")]
    OutsideBreathingGate { surrogate: f64, gate: f64 },
}

/// What the gate needs to know, gathered by the node.
#[derive(Debug, Clone, PartialEq)]
pub struct GateInputs {
    /// Stamp of the newest tracker sample [ns], if any arrived.
    pub newest_sample_ns: Option<i64>,
    /// Now, on the same clock [ns].
    pub now_ns: i64,
    /// Markers in the newest sample that were malformed (NaN etc.).
    pub malformed_marker_ids: Vec<u32>,
    /// `Err(why)` while there is no registration that allows guidance.
    pub registration: Result<(), String>,
    pub stale_after_s: f64,
}

/// The first failing gate, or `Ok` when a target may be published as valid.
pub fn check(inputs: &GateInputs) -> Result<(), InvalidReason> {
    let newest = inputs.newest_sample_ns.ok_or(InvalidReason::Starting)?;
    if !inputs.malformed_marker_ids.is_empty() {
        return Err(InvalidReason::InvalidInput(format!(
            "non-finite position for markers {:?}",
            inputs.malformed_marker_ids
        )));
    }
    let age_s = (inputs.now_ns - newest) as f64 * 1e-9;
    // A sample from the future is as untrustworthy as an old one (clock mismatch).
    if age_s > inputs.stale_after_s || age_s < -inputs.stale_after_s {
        return Err(InvalidReason::StaleData { age_s, limit_s: inputs.stale_after_s });
    }
    inputs.registration.clone().map_err(InvalidReason::NoRegistration)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok_inputs() -> GateInputs {
        GateInputs {
            newest_sample_ns: Some(1_000_000_000),
            now_ns: 1_010_000_000,
            malformed_marker_ids: vec![],
            registration: Ok(()),
            stale_after_s: 0.02,
        }
    }

    #[test]
    fn passes_only_when_every_gate_passes() {
        assert_eq!(check(&ok_inputs()), Ok(()));
        assert_eq!(check(&GateInputs { newest_sample_ns: None, ..ok_inputs() }), Err(InvalidReason::Starting));
        assert!(matches!(
            check(&GateInputs { now_ns: 1_030_000_000, ..ok_inputs() }),
            Err(InvalidReason::StaleData { .. })
        ));
        assert!(matches!(
            check(&GateInputs { now_ns: 900_000_000, ..ok_inputs() }),
            Err(InvalidReason::StaleData { .. })
        ));
        assert!(matches!(
            check(&GateInputs { malformed_marker_ids: vec![3], ..ok_inputs() }),
            Err(InvalidReason::InvalidInput(_))
        ));
        assert_eq!(
            check(&GateInputs { registration: Err("none yet".into()), ..ok_inputs() }),
            Err(InvalidReason::NoRegistration("none yet".into()))
        );
    }
}
