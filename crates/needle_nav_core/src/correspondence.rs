//! Which CT marker is which tracker marker: the two sides number their markers differently (CT
//! detection order vs tracker ids), and either may miss markers or see extra ones. Markers are
//! identified by their constellation: inter-marker distances, then a proper rigid motion.
//!
//! Search: every well-shaped image triplet is matched against every tracker triplet with the
//! same side lengths (within tolerance); each match seeds a rigid transform, which is grown by
//! nearest-marker assignment and refitted until stable, then pruned until the set is consistent.
//! The largest consistent set wins; a different one of the same size means the layout is
//! symmetric (or too noisy for the tolerance) and the answer is refused rather than guessed.

use crate::registration::{rigid_register, spread_ratio};
use nalgebra::{Isometry3, Point3};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CorrespondenceError {
    #[error("too few markers to match: {image} in the image, {tracker} from the tracker, need {need} on each side")]
    TooFew { image: usize, tracker: usize, need: usize },
    #[error("no set of markers agrees in distances and rigid motion within {tolerance:.3e}")]
    NoConsistentMatch { tolerance: f64 },
    #[error(
        "ambiguous marker identities (symmetric layout?): two different assignments fit, RMS residuals \
         {best:.3e} and {second:.3e} (tolerance {tolerance:.3e})"
    )]
    Ambiguous { best: f64, second: f64, tolerance: f64 },
    #[error("non-finite marker coordinate or tolerance")]
    NonFinite,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Correspondence {
    /// (image index, tracker index), ascending by image index.
    pub pairs: Vec<(usize, usize)>,
    /// RMS over all pairs of pairs of (image distance - tracker distance).
    pub rms_distance_error: f64,
    /// RMS FRE of the rigid registration image -> tracker over `pairs`.
    pub rms_residual_after_registration: f64,
}

/// Shortest triangle (as a spread ratio) that may seed a hypothesis: thinner ones leave the
/// rotation about their long side poorly determined.
const MIN_SEED_SPREAD: f64 = 0.05;
/// Assignment gate while a seed's transform is refined, as a multiple of the tolerance; the
/// final set is held to the tolerance itself.
const GATE_FACTOR: f64 = 2.0;
const MAX_REFINEMENTS: usize = 10;

/// Finds the largest set of pairs (at least `min_pairs`, and at least 3) that is consistent:
/// every two pairs' distances agree within `tolerance` (|d_image - d_tracker|), and the
/// least-squares proper rigid motion image -> tracker over the set leaves every residual within
/// `tolerance`. The second condition tells a mirror image apart, which distances cannot. Either
/// side may have extra or missing markers; markers that moved beyond tolerance (breathing) are
/// left out. If a different assignment of the same size is also consistent and contradicts the
/// best one (some marker paired differently), returns `Ambiguous`. Two non-contradicting sets of
/// the same size (a marker right at the tolerance) give their common pairs.
///
/// Tolerance: with per-axis localisation noise sigma on both sides, a distance difference has
/// standard deviation 2 sigma, so about 10 sigma keeps false rejections below 1e-6 per pair.
pub fn match_markers(
    image: &[Point3<f64>],
    tracker: &[Point3<f64>],
    tolerance: f64,
    min_pairs: usize,
) -> Result<Correspondence, CorrespondenceError> {
    let finite = |p: &Point3<f64>| p.coords.iter().all(|c| c.is_finite());
    if !tolerance.is_finite() || !image.iter().all(finite) || !tracker.iter().all(finite) {
        return Err(CorrespondenceError::NonFinite);
    }
    let need = min_pairs.max(3);
    if image.len() < need || tracker.len() < need {
        return Err(CorrespondenceError::TooFew { image: image.len(), tracker: tracker.len(), need });
    }
    let problem = Problem::new(image, tracker, tolerance);
    let candidates = problem.search(need);
    let Some(best) = candidates.first() else {
        return Err(CorrespondenceError::NoConsistentMatch { tolerance });
    };
    let top: Vec<&Candidate> = candidates.iter().filter(|c| c.pairs.len() == best.pairs.len()).collect();
    if let Some(rival) = top.iter().find(|c| contradicts(&best.pairs, &c.pairs)) {
        return Err(CorrespondenceError::Ambiguous { best: best.rms, second: rival.rms, tolerance });
    }
    let common: Vec<(usize, usize)> =
        best.pairs.iter().copied().filter(|p| top.iter().all(|c| c.pairs.contains(p))).collect();
    if common.len() < need {
        let second = top.get(1).map_or(best.rms, |c| c.rms);
        return Err(CorrespondenceError::Ambiguous { best: best.rms, second, tolerance });
    }
    let rms_residual_after_registration = problem.fit(&common).map_or(f64::NAN, |(_, rms)| rms);
    Ok(Correspondence {
        rms_distance_error: problem.rms_distance_error(&common),
        rms_residual_after_registration,
        pairs: common,
    })
}

#[derive(Debug, Clone)]
struct Candidate {
    /// Sorted by image index.
    pairs: Vec<(usize, usize)>,
    rms: f64,
}

/// Two assignments contradict when a marker on either side has different partners.
fn contradicts(a: &[(usize, usize)], b: &[(usize, usize)]) -> bool {
    a.iter().any(|&(i, t)| b.iter().any(|&(j, u)| (i == j) != (t == u)))
}

struct Problem<'a> {
    image: &'a [Point3<f64>],
    tracker: &'a [Point3<f64>],
    tol: f64,
    d_image: Vec<Vec<f64>>,
    d_tracker: Vec<Vec<f64>>,
}

fn distances(points: &[Point3<f64>]) -> Vec<Vec<f64>> {
    points.iter().map(|p| points.iter().map(|q| (p - q).norm()).collect()).collect()
}

impl<'a> Problem<'a> {
    fn new(image: &'a [Point3<f64>], tracker: &'a [Point3<f64>], tol: f64) -> Self {
        Self { image, tracker, tol, d_image: distances(image), d_tracker: distances(tracker) }
    }

    fn agree(&self, i: usize, j: usize, a: usize, b: usize) -> bool {
        (self.d_image[i][j] - self.d_tracker[a][b]).abs() <= self.tol
    }

    /// Every consistent candidate of at least `need` pairs found from the triplet seeds, largest
    /// first, then by RMS residual.
    fn search(&self, need: usize) -> Vec<Candidate> {
        let (n, m) = (self.image.len(), self.tracker.len());
        // Tracker ordered pairs whose distance matches each image pair (i < j).
        let pair_matches: Vec<Vec<Vec<(usize, usize)>>> = (0..n)
            .map(|i| {
                (0..n)
                    .map(|j| {
                        let ordered = (0..m).flat_map(|a| (0..m).map(move |b| (a, b)));
                        ordered.filter(|&(a, b)| j > i && a != b && self.agree(i, j, a, b)).collect()
                    })
                    .collect()
            })
            .collect();
        let mut found: Vec<Candidate> = Vec::new();
        for (i, row) in pair_matches.iter().enumerate() {
            for (j, matches) in row.iter().enumerate().skip(i + 1) {
                for k in j + 1..n {
                    if matches.is_empty()
                        || spread_ratio(&[self.image[i], self.image[j], self.image[k]]) < MIN_SEED_SPREAD
                    {
                        continue;
                    }
                    for &(a, b) in matches {
                        for c in 0..m {
                            if c == a || c == b || !self.agree(i, k, a, c) || !self.agree(j, k, b, c) {
                                continue;
                            }
                            let seed = [(i, a), (j, b), (k, c)];
                            // A seed inside a set already found would grow into that set again.
                            if found.iter().any(|f| seed.iter().all(|p| f.pairs.contains(p))) {
                                continue;
                            }
                            let at_least = found.iter().map(|f| f.pairs.len()).max().unwrap_or(0).max(need);
                            if let Some(cand) = self.grow(&seed, at_least) {
                                if !found.iter().any(|f| f.pairs == cand.pairs) {
                                    found.push(cand);
                                }
                            }
                        }
                    }
                }
            }
        }
        found.sort_by(|a, b| b.pairs.len().cmp(&a.pairs.len()).then(a.rms.total_cmp(&b.rms)));
        found
    }

    /// Least-squares rigid motion image -> tracker over `pairs`, with its RMS residual.
    fn fit(&self, pairs: &[(usize, usize)]) -> Option<(Isometry3<f64>, f64)> {
        let moving: Vec<Point3<f64>> = pairs.iter().map(|&(i, _)| self.image[i]).collect();
        let fixed: Vec<Point3<f64>> = pairs.iter().map(|&(_, a)| self.tracker[a]).collect();
        let t = rigid_register(&moving, &fixed, None).ok()?;
        let sum: f64 = moving.iter().zip(&fixed).map(|(p, q)| (t * p - q).norm_squared()).sum();
        Some((t, (sum / pairs.len() as f64).sqrt()))
    }

    /// Each image marker paired with its nearest tracker marker within `gate` of `t * image`;
    /// a tracker marker claimed twice keeps the closer claimant.
    fn assign(&self, t: &Isometry3<f64>, gate: f64) -> Vec<(usize, usize)> {
        let mut claim: Vec<Option<(usize, f64)>> = vec![None; self.tracker.len()];
        for (i, p) in self.image.iter().enumerate() {
            let q = t * p;
            let nearest = self.tracker.iter().map(|r| (q - r).norm()).enumerate().min_by(|x, y| x.1.total_cmp(&y.1));
            if let Some((a, d)) = nearest {
                if d <= gate && claim[a].map_or(true, |(_, e)| d < e) {
                    claim[a] = Some((i, d));
                }
            }
        }
        let mut pairs: Vec<(usize, usize)> =
            claim.iter().enumerate().filter_map(|(a, c)| c.map(|(i, _)| (i, a))).collect();
        pairs.sort_unstable();
        pairs
    }

    /// Grows a seed into the set its transform explains, then prunes it to consistency; `None`
    /// when it ends up with fewer than `at_least` pairs.
    fn grow(&self, seed: &[(usize, usize)], at_least: usize) -> Option<Candidate> {
        let (mut t, _) = self.fit(seed)?;
        let mut pairs = seed.to_vec();
        for _ in 0..MAX_REFINEMENTS {
            let next = self.assign(&t, GATE_FACTOR * self.tol);
            if next.len() < 3 || next == pairs {
                break;
            }
            pairs = next;
            t = self.fit(&pairs)?.0;
        }
        // Pruning only removes pairs: a set already smaller than the best found cannot win.
        if pairs.len() < at_least {
            return None;
        }
        let pruned = self.prune(pairs.clone())?;
        let dropped: Vec<(usize, usize)> = pairs.into_iter().filter(|p| !pruned.pairs.contains(p)).collect();
        Some(self.restore(pruned, dropped)).filter(|c| c.pairs.len() >= at_least)
    }

    /// Greedy pruning can drop a good pair along with a bad one: re-admits dropped pairs, best
    /// fitting first, while the set stays consistent.
    fn restore(&self, mut cand: Candidate, mut dropped: Vec<(usize, usize)>) -> Candidate {
        loop {
            let Some((t, _)) = self.fit(&cand.pairs) else { return cand };
            let residual = |&(i, a): &(usize, usize)| (t * self.image[i] - self.tracker[a]).norm();
            dropped.sort_by(|x, y| residual(x).total_cmp(&residual(y)));
            let admitted = dropped.iter().enumerate().find_map(|(k, &(i, a))| {
                if cand.pairs.iter().any(|&(j, b)| j == i || b == a) {
                    return None;
                }
                let mut trial = cand.pairs.clone();
                trial.push((i, a));
                trial.sort_unstable();
                self.consistent(&trial).map(|rms| (k, Candidate { pairs: trial, rms }))
            });
            match admitted {
                Some((k, bigger)) => {
                    dropped.remove(k);
                    cand = bigger;
                }
                None => return cand,
            }
        }
    }

    /// RMS residual of `pairs` if every distance agrees and every residual is within tolerance.
    fn consistent(&self, pairs: &[(usize, usize)]) -> Option<f64> {
        let all_agree = pairs.iter().all(|&(i, a)| pairs.iter().all(|&(j, b)| i == j || self.agree(i, j, a, b)));
        let (t, rms) = self.fit(pairs)?;
        let fits = pairs.iter().all(|&(i, a)| (t * self.image[i] - self.tracker[a]).norm() <= self.tol);
        (all_agree && fits).then_some(rms)
    }

    /// Drops pairs until every distance agrees and every residual is within tolerance: first
    /// the pair with the most distance disagreements, then the one with the largest residual.
    fn prune(&self, mut pairs: Vec<(usize, usize)>) -> Option<Candidate> {
        loop {
            if pairs.len() < 3 {
                return None;
            }
            let (t, rms) = self.fit(&pairs)?;
            let disagreements: Vec<usize> = pairs
                .iter()
                .map(|&(i, a)| pairs.iter().filter(|&&(j, b)| i != j && !self.agree(i, j, a, b)).count())
                .collect();
            let residuals: Vec<f64> =
                pairs.iter().map(|&(i, a)| (t * self.image[i] - self.tracker[a]).norm()).collect();
            let worst = (0..pairs.len())
                .max_by(|&x, &y| disagreements[x].cmp(&disagreements[y]).then(residuals[x].total_cmp(&residuals[y])))?;
            if disagreements[worst] == 0 && residuals[worst] <= self.tol {
                return Some(Candidate { pairs, rms });
            }
            pairs.remove(worst);
        }
    }

    fn rms_distance_error(&self, pairs: &[(usize, usize)]) -> f64 {
        let mut sum = 0.0;
        let mut count = 0usize;
        for (x, &(i, a)) in pairs.iter().enumerate() {
            for &(j, b) in &pairs[x + 1..] {
                sum += (self.d_image[i][j] - self.d_tracker[a][b]).powi(2);
                count += 1;
            }
        }
        if count == 0 {
            0.0
        } else {
            (sum / count as f64).sqrt()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::{Translation3, UnitQuaternion, Vector3};
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, Normal};

    const TOL: f64 = 2.5e-3; // 10 sigma for 0.25 mm per-axis noise
    const SIGMA: f64 = 0.25e-3;

    fn random_pose(rng: &mut ChaCha8Rng) -> Isometry3<f64> {
        let n = Normal::new(0.0, 1.0).unwrap();
        let q = nalgebra::Quaternion::new(n.sample(rng), n.sample(rng), n.sample(rng), n.sample(rng));
        let t = Vector3::new(rng.random_range(-0.5..0.5), rng.random_range(-0.5..0.5), rng.random_range(-0.5..0.5));
        Isometry3::from_parts(Translation3::from(t), UnitQuaternion::from_quaternion(q))
    }

    /// Markers in a 16 x 16 x 8 cm region, at least 15 mm apart (as placed on a patient).
    fn random_layout(rng: &mut ChaCha8Rng, n: usize) -> Vec<Point3<f64>> {
        let mut points: Vec<Point3<f64>> = Vec::new();
        while points.len() < n {
            let p = Point3::new(
                rng.random_range(-0.08..0.08),
                rng.random_range(-0.08..0.08),
                rng.random_range(-0.04..0.04),
            );
            if points.iter().all(|q| (p - q).norm() > 0.015) {
                points.push(p);
            }
        }
        points
    }

    fn noise(rng: &mut ChaCha8Rng) -> Vector3<f64> {
        let n = Normal::new(0.0, SIGMA).unwrap();
        Vector3::new(n.sample(rng), n.sample(rng), n.sample(rng))
    }

    /// The tracker's view: moved, noisy, in shuffled order; `order[k]` is the image index of
    /// tracker marker k.
    fn tracker_view(rng: &mut ChaCha8Rng, image: &[Point3<f64>]) -> (Vec<Point3<f64>>, Vec<usize>) {
        let pose = random_pose(rng);
        let mut order: Vec<usize> = (0..image.len()).collect();
        order.shuffle(rng);
        let tracker = order.iter().map(|&i| pose * image[i] + noise(rng)).collect();
        (tracker, order)
    }

    fn truth_pairs(order: &[usize]) -> Vec<(usize, usize)> {
        let mut pairs: Vec<(usize, usize)> = order.iter().enumerate().map(|(k, &i)| (i, k)).collect();
        pairs.sort_unstable();
        pairs
    }

    #[test]
    fn shuffled_noisy_markers_are_matched_exactly() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        // Fewer random markers are often near-isosceles within tolerance, i.e. truly ambiguous.
        for n in [5, 8, 12, 16] {
            for _ in 0..10 {
                let layout = random_layout(&mut rng, n);
                let image: Vec<Point3<f64>> = layout.iter().map(|p| p + noise(&mut rng)).collect();
                let (tracker, order) = tracker_view(&mut rng, &layout);
                let c = match_markers(&image, &tracker, TOL, 3).unwrap();
                assert_eq!(c.pairs, truth_pairs(&order), "n = {n}");
                assert!(c.rms_distance_error < 4.0 * SIGMA && c.rms_residual_after_registration < 4.0 * SIGMA);
            }
        }
    }

    #[test]
    fn three_markers_match_only_when_the_triangle_is_scalene_beyond_tolerance() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        // Sides 50, 80 and 94.3 mm.
        let scalene = vec![Point3::new(0.0, 0.0, 0.0), Point3::new(0.05, 0.0, 0.0), Point3::new(0.0, 0.08, 0.0)];
        let (tracker, order) = tracker_view(&mut rng, &scalene);
        assert_eq!(match_markers(&scalene, &tracker, TOL, 3).unwrap().pairs, truth_pairs(&order));
        // Sides 50 and 51.5 mm: within tolerance of each other, so two labellings fit.
        let nearly_isosceles =
            vec![Point3::new(0.0, 0.0, 0.0), Point3::new(0.05, 0.0, 0.0), Point3::new(0.0, 0.0515, 0.0)];
        let (tracker, _) = tracker_view(&mut rng, &nearly_isosceles);
        let r = match_markers(&nearly_isosceles, &tracker, TOL, 3);
        assert!(matches!(r, Err(CorrespondenceError::Ambiguous { .. })), "{r:?}");
    }

    #[test]
    fn extra_and_missing_markers_on_either_side() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        for trial in 0..20 {
            let layout = random_layout(&mut rng, 12);
            // Image sees markers 0..10 (10, 11 not detected in the CT); the tracker sees 2..12 plus
            // two stray reflections.
            let image: Vec<Point3<f64>> = layout[..10].iter().map(|p| p + noise(&mut rng)).collect();
            let seen: Vec<Point3<f64>> = layout[2..].to_vec();
            let (mut tracker, order) = tracker_view(&mut rng, &seen);
            let strays = random_layout(&mut rng, 2);
            tracker.extend(strays.iter().map(|p| p + Vector3::new(0.5, 0.5, 0.5)));
            let expected: Vec<(usize, usize)> = {
                let mut v: Vec<(usize, usize)> =
                    order.iter().enumerate().map(|(k, &s)| (s + 2, k)).filter(|&(i, _)| i < 10).collect();
                v.sort_unstable();
                v
            };
            let swap = trial % 2 == 1;
            let c = if swap {
                match_markers(&tracker, &image, TOL, 3).unwrap()
            } else {
                match_markers(&image, &tracker, TOL, 3).unwrap()
            };
            let mut got: Vec<(usize, usize)> =
                if swap { c.pairs.iter().map(|&(t, i)| (i, t)).collect() } else { c.pairs.clone() };
            got.sort_unstable();
            assert_eq!(got, expected, "trial {trial}");
        }
    }

    /// Three markers on the plane x = 0 and two mirror pairs: every distance is preserved by the
    /// mirror permutation, which no proper rotation performs.
    fn mirror_symmetric_layout() -> (Vec<Point3<f64>>, Vec<usize>) {
        let layout = vec![
            Point3::new(0.0, 0.0, 0.0),
            Point3::new(0.0, 0.07, 0.01),
            Point3::new(0.0, 0.02, 0.06),
            Point3::new(0.05, 0.03, -0.02),
            Point3::new(-0.05, 0.03, -0.02),
            Point3::new(0.03, -0.04, 0.05),
            Point3::new(-0.03, -0.04, 0.05),
        ];
        (layout, vec![0, 1, 2, 4, 3, 6, 5])
    }

    #[test]
    fn mirror_symmetric_layout_is_decided_by_chirality() {
        let (layout, mirror) = mirror_symmetric_layout();
        let d = distances(&layout);
        for i in 0..7 {
            for j in 0..7 {
                assert!((d[i][j] - d[mirror[i]][mirror[j]]).abs() < 1e-15, "mirror must keep distances");
            }
        }
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..20 {
            let (tracker, order) = tracker_view(&mut rng, &layout);
            let c = match_markers(&layout, &tracker, TOL, 3).unwrap();
            assert_eq!(c.pairs, truth_pairs(&order));
        }
    }

    #[test]
    fn the_rigid_check_rejects_a_distance_consistent_mirror_assignment() {
        // The search grows seeds by proper rigid motions, so it never proposes the mirror
        // assignment itself; the pruning rule must still refuse it when handed one.
        let (layout, mirror) = mirror_symmetric_layout();
        let problem = Problem::new(&layout, &layout, TOL);
        let identity: Vec<(usize, usize)> = (0..7).map(|i| (i, i)).collect();
        assert_eq!(problem.prune(identity.clone()).map(|c| c.pairs), Some(identity));
        let mirrored: Vec<(usize, usize)> = (0..7).map(|i| (i, mirror[i])).collect();
        let kept = problem.prune(mirrored).map_or(0, |c| c.pairs.len());
        assert!(kept < 7, "mirror assignment kept in full");
    }

    #[test]
    fn a_mirror_image_is_not_matched_in_full() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let image = random_layout(&mut rng, 8);
        let mirrored: Vec<Point3<f64>> = image.iter().map(|p| Point3::new(-p.x, p.y, p.z)).collect();
        match match_markers(&image, &mirrored, TOL, 3) {
            Ok(c) => assert!(c.pairs.len() < 8, "a mirror image matched as a rigid motion"),
            Err(e) => assert!(matches!(e, CorrespondenceError::Ambiguous { .. })),
        }
    }

    #[test]
    fn intrinsically_symmetric_layouts_are_ambiguous() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let rectangle = vec![
            Point3::new(0.0, 0.0, 0.0),
            Point3::new(0.1, 0.0, 0.0),
            Point3::new(0.1, 0.06, 0.0),
            Point3::new(0.0, 0.06, 0.0),
        ];
        let pentagon: Vec<Point3<f64>> = (0..5)
            .map(|k| {
                let a = k as f64 * std::f64::consts::TAU / 5.0;
                Point3::new(0.05 * a.cos(), 0.05 * a.sin(), 0.0)
            })
            .collect();
        for layout in [rectangle, pentagon] {
            let (tracker, _) = tracker_view(&mut rng, &layout);
            let r = match_markers(&layout, &tracker, TOL, 3);
            assert!(matches!(r, Err(CorrespondenceError::Ambiguous { .. })), "{r:?}");
        }
    }

    #[test]
    fn too_few_and_non_finite_are_refused() {
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        let layout = random_layout(&mut rng, 5);
        assert_eq!(
            match_markers(&layout[..2], &layout, TOL, 3),
            Err(CorrespondenceError::TooFew { image: 2, tracker: 5, need: 3 })
        );
        assert_eq!(
            match_markers(&layout, &layout[..4], TOL, 5),
            Err(CorrespondenceError::TooFew { image: 5, tracker: 4, need: 5 })
        );
        let mut bad = layout.clone();
        bad[3].z = f64::INFINITY;
        assert_eq!(match_markers(&layout, &bad, TOL, 3), Err(CorrespondenceError::NonFinite));
        assert_eq!(match_markers(&layout, &layout, f64::NAN, 3), Err(CorrespondenceError::NonFinite));
        // min_pairs above what agrees: the two sides share only three markers.
        let other = random_layout(&mut rng, 5);
        let mixed: Vec<Point3<f64>> = layout[..3].iter().chain(&other[3..]).copied().collect();
        let r = match_markers(&layout, &mixed, TOL, 4);
        assert!(matches!(r, Err(CorrespondenceError::NoConsistentMatch { .. })), "{r:?}");
    }

    #[test]
    fn markers_moved_beyond_tolerance_are_left_out_not_mismatched() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for trial in 0..20 {
            let layout = random_layout(&mut rng, 10);
            let (mut tracker, order) = tracker_view(&mut rng, &layout);
            // Breathing moves two markers (image indices 1 and 6) by 8 mm in the tracker frame.
            let moved = [1, 6];
            for (k, &i) in order.iter().enumerate() {
                if moved.contains(&i) {
                    let dir =
                        Vector3::new(rng.random::<f64>() - 0.5, rng.random::<f64>() - 0.5, rng.random::<f64>() - 0.5);
                    tracker[k] += dir.normalize() * 8e-3;
                }
            }
            let c = match_markers(&layout, &tracker, TOL, 3).unwrap();
            let expected: Vec<(usize, usize)> =
                truth_pairs(&order).into_iter().filter(|(i, _)| !moved.contains(i)).collect();
            assert_eq!(c.pairs, expected, "trial {trial}");
        }
    }

    #[test]
    fn sixteen_markers_are_fast() {
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        let layout = random_layout(&mut rng, 16);
        let image: Vec<Point3<f64>> = layout.iter().map(|p| p + noise(&mut rng)).collect();
        let (tracker, order) = tracker_view(&mut rng, &layout);
        let start = std::time::Instant::now();
        let c = match_markers(&image, &tracker, TOL, 3).unwrap();
        let elapsed = start.elapsed();
        assert_eq!(c.pairs, truth_pairs(&order));
        // Generous for unoptimised CI machines; typically a few ms.
        assert!(elapsed.as_millis() < 500, "{elapsed:?}");
    }
}
