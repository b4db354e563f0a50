//! The classic extraction the network replaces, kept as a baseline for the benchmark and the
//! evaluation: threshold the contrast-enhanced blood pool and region-grow (26-connected) from
//! bright seeds, dropping small components. It finds "vessel or not", never which vessel.

use std::collections::VecDeque;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassicOptions {
    /// Voxels inside [lo, hi] HU may join a region.
    pub window_hu: (f32, f32),
    /// Regions start from voxels at least this bright (and inside the window).
    pub seed_hu: f32,
    /// Regions smaller than this are noise.
    pub min_component_voxels: usize,
}

impl Default for ClassicOptions {
    fn default() -> Self {
        ClassicOptions { window_hu: (150.0, 700.0), seed_hu: 250.0, min_component_voxels: 50 }
    }
}

/// Binary vessel mask (1 = vessel), `dims` = [nx, ny, nz], i fastest.
pub fn threshold_region_growing(hu: &[f32], dims: [usize; 3], o: &ClassicOptions) -> Vec<u8> {
    let [nx, ny, nz] = dims;
    let n = nx * ny * nz;
    let inside = |v: usize| hu[v] >= o.window_hu.0 && hu[v] <= o.window_hu.1;
    // 0 unvisited, 1 kept, 2 visited (dropped or not in window)
    let mut state = vec![0u8; n];
    let mut queue = VecDeque::new();
    let mut component = Vec::new();
    for seed in 0..n {
        if state[seed] != 0 || !inside(seed) || hu[seed] < o.seed_hu {
            continue;
        }
        component.clear();
        state[seed] = 2;
        queue.push_back(seed);
        while let Some(v) = queue.pop_front() {
            component.push(v);
            let (i, j, k) = ((v % nx) as i64, ((v / nx) % ny) as i64, (v / (nx * ny)) as i64);
            for dk in -1..=1i64 {
                for dj in -1..=1i64 {
                    for di in -1..=1i64 {
                        let (a, b, c) = (i + di, j + dj, k + dk);
                        if a < 0 || b < 0 || c < 0 || a >= nx as i64 || b >= ny as i64 || c >= nz as i64 {
                            continue;
                        }
                        let w = (c as usize * ny + b as usize) * nx + a as usize;
                        if state[w] == 0 && inside(w) {
                            state[w] = 2;
                            queue.push_back(w);
                        }
                    }
                }
            }
        }
        if component.len() >= o.min_component_voxels {
            for v in &component {
                state[*v] = 1;
            }
        }
    }
    state.iter().map(|s| u8::from(*s == 1)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_a_tube_from_its_bright_seed_and_drops_dim_or_small_regions() {
        let dims = [30, 20, 20];
        let idx = |i: usize, j: usize, k: usize| (k * 20 + j) * 30 + i;
        let mut hu = vec![40.0f32; 30 * 20 * 20];
        // A 3x3 tube along i at 200 HU with one 300 HU seed voxel.
        for i in 0..30 {
            for j in 4..7 {
                for k in 4..7 {
                    hu[idx(i, j, k)] = 200.0;
                }
            }
        }
        hu[idx(15, 5, 5)] = 300.0;
        // A tube in window but without a seed, and a tiny bright speck.
        for i in 0..30 {
            hu[idx(i, 15, 15)] = 200.0;
        }
        hu[idx(2, 15, 2)] = 400.0;
        // Bone-bright, outside the window: a barrier.
        hu[idx(5, 5, 5)] = 1200.0;
        let mask = threshold_region_growing(&hu, dims, &ClassicOptions::default());
        assert_eq!(mask.iter().map(|m| *m as usize).sum::<usize>(), 30 * 9 - 1);
        assert_eq!(mask[idx(0, 4, 4)], 1, "grown past the bone voxel diagonally");
        assert_eq!(mask[idx(10, 15, 15)], 0);
        assert_eq!(mask[idx(2, 15, 2)], 0);
    }
}
