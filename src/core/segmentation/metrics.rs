//! Overlap measures for the evaluation.

/// Dice of `label` between two label maps; None when neither holds the label (undefined).
pub fn dice(predicted: &[u8], truth: &[u8], label: u8) -> Option<f64> {
    dice_by(predicted, truth, |l| l == label)
}

/// Dice of "any vessel" (label > 0).
pub fn dice_any(predicted: &[u8], truth: &[u8]) -> Option<f64> {
    dice_by(predicted, truth, |l| l > 0)
}

fn dice_by(predicted: &[u8], truth: &[u8], is: impl Fn(u8) -> bool) -> Option<f64> {
    assert_eq!(predicted.len(), truth.len());
    let (mut both, mut p, mut t) = (0usize, 0usize, 0usize);
    for (a, b) in predicted.iter().zip(truth) {
        let (x, y) = (is(*a), is(*b));
        both += usize::from(x && y);
        p += usize::from(x);
        t += usize::from(y);
    }
    (p + t > 0).then(|| 2.0 * both as f64 / (p + t) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dice_matches_hand_counts() {
        let pred = [0, 1, 1, 2, 2, 0, 3];
        let truth = [0, 1, 0, 2, 1, 0, 0];
        // label 1: pred {1,2}, truth {1,4}: 2*1/4
        assert_eq!(dice(&pred, &truth, 1), Some(0.5));
        assert_eq!(dice(&pred, &truth, 2), Some(2.0 / 3.0));
        assert_eq!(dice(&pred, &truth, 3), Some(0.0));
        assert_eq!(dice(&pred, &truth, 4), None);
        // any: pred {1,2,3,4,6}, truth {1,3,4}: 2*3/8
        assert_eq!(dice_any(&pred, &truth), Some(0.75));
    }
}
