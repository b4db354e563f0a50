//! HU-window refinement: voxels the network left unlabelled whose HU lies in a vessel window
//! take the majority vessel label of their 3x3x3 neighbourhood (if their HU is in that class's
//! window), repeated until nothing changes. This grows labels along vessels and reconnects
//! vessel ends the network broke, without leaking into tissue outside the windows.

use super::HuWindows;

/// Refines `labels` in place; returns how many voxels were relabelled and the passes taken.
/// `dims` = [nx, ny, nz], i fastest. `max_passes` bounds the work on pathological inputs.
pub fn refine(
    labels: &mut [u8],
    hu: &[f32],
    dims: [usize; 3],
    windows: &HuWindows,
    max_passes: usize,
) -> (usize, usize) {
    let [nx, ny, nz] = dims;
    assert_eq!(labels.len(), nx * ny * nz);
    assert_eq!(hu.len(), labels.len());
    let idx = |i: usize, j: usize, k: usize| (k * ny + j) * nx + i;
    // Candidates: unlabelled voxels inside some window next to a labelled voxel.
    let mut frontier: Vec<usize> = Vec::new();
    let neighbours = |v: usize, out: &mut Vec<usize>| {
        out.clear();
        let (i, j, k) = (v % nx, (v / nx) % ny, v / (nx * ny));
        for dk in -1i64..=1 {
            for dj in -1i64..=1 {
                for di in -1i64..=1 {
                    if di == 0 && dj == 0 && dk == 0 {
                        continue;
                    }
                    let (a, b, c) = (i as i64 + di, j as i64 + dj, k as i64 + dk);
                    if a >= 0 && b >= 0 && c >= 0 && (a as usize) < nx && (b as usize) < ny && (c as usize) < nz {
                        out.push(idx(a as usize, b as usize, c as usize));
                    }
                }
            }
        }
    };
    let mut nb = Vec::with_capacity(26);
    for v in 0..labels.len() {
        if labels[v] != 0 {
            neighbours(v, &mut nb);
            for &w in &nb {
                if labels[w] == 0 && windows.any_contains(hu[w]) {
                    frontier.push(w);
                }
            }
        }
    }
    frontier.sort_unstable();
    frontier.dedup();
    let (mut changed_total, mut passes) = (0, 0);
    while !frontier.is_empty() && passes < max_passes {
        passes += 1;
        // Decide every candidate from the labels of the previous pass (order-independent).
        let mut decisions = Vec::new();
        for &v in &frontier {
            if labels[v] != 0 {
                continue;
            }
            neighbours(v, &mut nb);
            let mut counts = [0usize; 256];
            for &w in &nb {
                counts[labels[w] as usize] += 1;
            }
            let (best, n) =
                (1..256).map(|l| (l, counts[l])).max_by_key(|&(l, n)| (n, std::cmp::Reverse(l))).unwrap_or((0, 0));
            // Majority among the labelled neighbours, and the voxel's HU fits that class.
            let labelled: usize = counts[1..].iter().sum();
            if n > 0 && 2 * n > labelled && windows.contains(best as u8, hu[v]) {
                decisions.push((v, best as u8));
            }
        }
        if decisions.is_empty() {
            break;
        }
        let mut next = Vec::new();
        for &(v, l) in &decisions {
            labels[v] = l;
        }
        for &(v, _) in &decisions {
            neighbours(v, &mut nb);
            for &w in &nb {
                if labels[w] == 0 && windows.any_contains(hu[w]) {
                    next.push(w);
                }
            }
        }
        changed_total += decisions.len();
        next.sort_unstable();
        next.dedup();
        frontier = next;
    }
    (changed_total, passes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_vessel_is_reconnected_inside_its_window_and_nothing_leaks() {
        // A straight vessel along i (HU 300) with a 4-voxel gap the "network" missed, in tissue of 40 HU.
        let dims = [20, 5, 5];
        let n = 20 * 5 * 5;
        let idx = |i: usize, j: usize, k: usize| (k * 5 + j) * 20 + i;
        let mut hu = vec![40.0f32; n];
        let mut labels = vec![0u8; n];
        for i in 0..20 {
            hu[idx(i, 2, 2)] = 300.0;
            if !(8..12).contains(&i) {
                labels[idx(i, 2, 2)] = 1;
            }
        }
        let (changed, passes) = refine(&mut labels, &hu, dims, &HuWindows::contrast(), 100);
        assert_eq!(changed, 4);
        assert!(passes >= 2, "the gap closes from both ends over passes: {passes}");
        for i in 0..20 {
            assert_eq!(labels[idx(i, 2, 2)], 1);
        }
        // Tissue at 40 HU is outside the contrast windows: untouched.
        assert_eq!(labels.iter().filter(|&&l| l != 0).count(), 20);
    }

    #[test]
    fn the_majority_decides_and_a_voxel_outside_that_class_window_stays_unlabelled() {
        // Centre voxel unlabelled with 3 artery and 1 vein neighbours: becomes artery if its HU is in
        // the artery window, stays unlabelled if only the vein window contains it.
        let dims = [3, 3, 3];
        let mut hu = vec![0.0f32; 27];
        let mut labels = vec![0u8; 27];
        for v in [0, 1, 2] {
            labels[v] = 1;
        }
        labels[26] = 2;
        hu[13] = 300.0;
        let windows = HuWindows { windows: vec![(1, 150.0, 700.0), (2, 120.0, 600.0)] };
        let mut a = labels.clone();
        refine(&mut a, &hu, dims, &windows, 10);
        assert_eq!(a[13], 1);
        let mut b = labels.clone();
        hu[13] = 130.0; // only the vein window (120..600) holds it, but artery is the majority
        refine(&mut b, &hu, dims, &windows, 10);
        assert_eq!(b[13], 0);
    }
}
