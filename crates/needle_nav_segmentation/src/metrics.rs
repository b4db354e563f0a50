//! Overlap measures for the evaluation.

/// Dice of `label` between two label maps; None when neither holds the label (undefined).
pub fn dice(predicted: &[u8], truth: &[u8], label: u8) -> Option<f64> {
    dice_by(predicted, truth, |l| l == label)
}

/// Dice of "any vessel" (label > 0).
pub fn dice_any(predicted: &[u8], truth: &[u8]) -> Option<f64> {
    dice_by(predicted, truth, |l| l > 0)
}

/// Dice of label `class` against a reference mask (a structure of a reference label image that
/// has no class of its own); None when both are empty.
pub fn dice_against_mask(predicted: &[u8], class: u8, reference: &[bool]) -> Option<f64> {
    assert_eq!(predicted.len(), reference.len());
    dice_of(predicted.iter().zip(reference).map(|(l, r)| (*l == class, *r)))
}

/// Fraction of the reference voxels labelled with any of `classes`; None for an empty reference.
pub fn fraction_labelled(predicted: &[u8], classes: &[u8], reference: &[bool]) -> Option<f64> {
    assert_eq!(predicted.len(), reference.len());
    let (mut hit, mut total) = (0u64, 0u64);
    for (l, _) in predicted.iter().zip(reference).filter(|(_, r)| **r) {
        total += 1;
        hit += u64::from(classes.contains(l));
    }
    (total > 0).then(|| hit as f64 / total as f64)
}

fn dice_by(predicted: &[u8], truth: &[u8], is: impl Fn(u8) -> bool) -> Option<f64> {
    assert_eq!(predicted.len(), truth.len());
    dice_of(predicted.iter().zip(truth).map(|(a, b)| (is(*a), is(*b))))
}

/// Dice from (predicted, reference) membership pairs.
fn dice_of(pairs: impl Iterator<Item = (bool, bool)>) -> Option<f64> {
    let (mut both, mut p, mut t) = (0u64, 0u64, 0u64);
    for (x, y) in pairs {
        both += u64::from(x && y);
        p += u64::from(x);
        t += u64::from(y);
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
