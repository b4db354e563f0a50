//! Time accounting of a stack run, free of ROS: when the judged run time (`--run-for`) starts
//! and ends when it waits for the plan (`--plan-wait`), and how the targets split around the
//! first usable registration (the summary's figures).

use std::collections::BTreeMap;
use std::time::Duration;

/// When a run stops: `run_for` after the process start, or, with `plan_wait`, `run_for` after the
/// plan was published (at most `plan_wait` after the start: a planning that does not finish must
/// not keep the process alive forever).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RunClock {
    pub run_for: Option<Duration>,
    pub plan_wait: Option<Duration>,
}

/// Why the judged run time started when it did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ClockStart {
    /// At the process start (no `--plan-wait`).
    AtStart,
    /// When the finished plan was published, this long after the start.
    PlanFinished(Duration),
    /// `--plan-wait` ran out before the plan was finished.
    PlanWaitOver(Duration),
}

impl ClockStart {
    /// Time after the process start.
    pub fn at(self) -> Duration {
        match self {
            ClockStart::AtStart => Duration::ZERO,
            ClockStart::PlanFinished(t) | ClockStart::PlanWaitOver(t) => t,
        }
    }
}

impl RunClock {
    /// When the judged run time started, given the time since the start (`elapsed`) and when the
    /// finished plan was seen (`plan_done`); None while it is still waiting for the plan.
    pub fn start(&self, elapsed: Duration, plan_done: Option<Duration>) -> Option<ClockStart> {
        let Some(wait) = self.plan_wait else { return Some(ClockStart::AtStart) };
        match plan_done {
            Some(t) if t <= wait => Some(ClockStart::PlanFinished(t)),
            _ if elapsed >= wait => Some(ClockStart::PlanWaitOver(wait)),
            _ => None,
        }
    }

    /// Whether the run is over at `elapsed` (never without `run_for`).
    pub fn over(&self, elapsed: Duration, plan_done: Option<Duration>) -> bool {
        match (self.run_for, self.start(elapsed, plan_done)) {
            (Some(run_for), Some(start)) => elapsed >= start.at() + run_for,
            _ => false,
        }
    }

    /// The longest the run can take (for outer time limits); None without `run_for`.
    pub fn longest(&self) -> Option<Duration> {
        self.run_for.map(|r| r + self.plan_wait.unwrap_or(Duration::ZERO))
    }
}

/// Valid and invalid targets (invalid ones by reason) of one span of the run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetCounts {
    pub valid: u64,
    pub invalid: BTreeMap<String, u64>,
}

impl TargetCounts {
    pub fn total(&self) -> u64 {
        self.valid + self.invalid.values().sum::<u64>()
    }

    /// Valid share in percent; None without targets.
    pub fn valid_percent(&self) -> Option<f64> {
        let n = self.total();
        (n > 0).then(|| 100.0 * self.valid as f64 / n as f64)
    }

    /// Invalid reasons, most frequent first (ties by name, so the order is stable).
    pub fn reasons(&self) -> Vec<(&str, u64)> {
        let mut r: Vec<(&str, u64)> = self.invalid.iter().map(|(k, n)| (k.as_str(), *n)).collect();
        r.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        r
    }

    fn add(&mut self, valid: bool, reason: &str) {
        if valid {
            self.valid += 1;
        } else {
            *self.invalid.entry(reason_kind(reason)).or_default() += 1;
        }
    }
}

/// Targets before and after the first usable registration: before it no target can be valid,
/// so only the part after it says how well the guidance works.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetTally {
    pub before_registration: TargetCounts,
    pub after_registration: TargetCounts,
}

impl TargetTally {
    /// Counts one target; `registered`: a usable registration had been seen when it came.
    pub fn add(&mut self, registered: bool, valid: bool, reason: &str) {
        let span = if registered { &mut self.after_registration } else { &mut self.before_registration };
        span.add(valid, reason);
    }

    /// Both spans together.
    pub fn all(&self) -> TargetCounts {
        let mut all = self.before_registration.clone();
        all.valid += self.after_registration.valid;
        for (k, n) in &self.after_registration.invalid {
            *all.invalid.entry(k.clone()).or_default() += n;
        }
        all
    }
}

/// Groups reasons that differ only in numbers ("stale ... 0.031 s" and "stale ... 0.032 s").
pub fn reason_kind(reason: &str) -> String {
    reason.split(':').next().unwrap_or(reason).trim().to_string()
}

/// Seconds with one decimal, for the summary's timeline.
pub fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: f64) -> Duration {
        Duration::from_secs_f64(x)
    }

    #[test]
    fn without_plan_wait_the_clock_runs_from_the_start_as_before() {
        let c = RunClock { run_for: Some(s(45.0)), plan_wait: None };
        assert_eq!(c.start(s(0.0), None), Some(ClockStart::AtStart));
        assert!(!c.over(s(44.9), None));
        assert!(c.over(s(45.0), None), "a plan never seen does not matter");
        assert!(c.over(s(45.0), Some(s(30.0))), "nor does one seen");
        assert_eq!(c.longest(), Some(s(45.0)));
        assert!(!RunClock::default().over(s(1e6), None), "no --run-for: runs until stopped");
        assert_eq!(RunClock::default().longest(), None);
    }

    #[test]
    fn with_plan_wait_the_clock_starts_when_the_plan_is_published() {
        let c = RunClock { run_for: Some(s(45.0)), plan_wait: Some(s(120.0)) };
        assert_eq!(c.start(s(20.0), None), None, "still waiting");
        assert!(!c.over(s(100.0), None));
        assert_eq!(c.start(s(30.0), Some(s(25.0))), Some(ClockStart::PlanFinished(s(25.0))));
        assert!(!c.over(s(69.9), Some(s(25.0))));
        assert!(c.over(s(70.0), Some(s(25.0))));
        assert_eq!(c.longest(), Some(s(165.0)));
    }

    #[test]
    fn plan_wait_bounds_the_wait_for_a_plan_that_does_not_come() {
        let c = RunClock { run_for: Some(s(10.0)), plan_wait: Some(s(60.0)) };
        assert_eq!(c.start(s(59.0), None), None);
        assert_eq!(c.start(s(60.0), None), Some(ClockStart::PlanWaitOver(s(60.0))));
        assert!(!c.over(s(69.9), None));
        assert!(c.over(s(70.0), None));
        // A plan that comes after the wait ran out does not move the clock back.
        assert_eq!(c.start(s(65.0), Some(s(64.0))), Some(ClockStart::PlanWaitOver(s(60.0))));
        assert!(c.over(s(70.0), Some(s(64.0))));
        assert_eq!(ClockStart::PlanWaitOver(s(60.0)).at(), s(60.0));
        assert_eq!(ClockStart::AtStart.at(), Duration::ZERO);
    }

    #[test]
    fn targets_are_counted_before_and_after_the_first_usable_registration() {
        let mut t = TargetTally::default();
        for _ in 0..30 {
            t.add(false, false, "no usable registration");
        }
        t.add(false, false, "starting");
        for _ in 0..10 {
            t.add(true, false, "no calm-breathing baseline recorded yet: 3.2 s of 10.0 s");
        }
        t.add(true, false, "stale tracker data: 0.031 s");
        t.add(true, false, "stale tracker data: 0.032 s");
        for _ in 0..28 {
            t.add(true, true, "");
        }
        let after = &t.after_registration;
        assert_eq!((after.valid, after.total()), (28, 40));
        assert!((after.valid_percent().unwrap() - 70.0).abs() < 1e-12);
        assert_eq!(after.reasons(), [("no calm-breathing baseline recorded yet", 10), ("stale tracker data", 2)]);
        let before = &t.before_registration;
        assert_eq!((before.valid, before.total()), (0, 31));
        assert_eq!(before.reasons(), [("no usable registration", 30), ("starting", 1)]);
        let all = t.all();
        assert_eq!((all.valid, all.total()), (28, 71));
        assert_eq!(all.invalid.len(), 4);
        assert_eq!(TargetCounts::default().valid_percent(), None);
    }

    #[test]
    fn reasons_differing_only_in_numbers_are_one_kind() {
        assert_eq!(reason_kind("stale tracker data: 0.031 s"), "stale tracker data");
        assert_eq!(reason_kind("starting"), "starting");
        assert_eq!(secs(s(24.96)), "25.0 s");
    }
}
