//! Breathing motion model of Lujan et al. (Med. Phys. 26, 1999): the displacement
//! z(t) = z0 - b cos^{2n}(pi t / tau - phi) rests at end-exhale most of the cycle and
//! dips briefly at inhale. [`LujanBreathing::inhale_fraction`] is cos^{2n}(...) in [0, 1].

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
}
