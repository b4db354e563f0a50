//! A planning CT that lives in a PACS: the planner retrieves the series itself (it needs the
//! CT's voxels for its own obstacle layers, not only the network's labels) into
//! `output_dir/pacs_input/<series uid>/`, then plans on that folder as on `ct_path`.

use crate::config::TrajectoryPlannerConfig;
use crate::plan_files::{planning_input, PlanningInput};

/// The study and series of the planning CT when it is to come from the PACS.
pub fn pacs_series(cfg: &TrajectoryPlannerConfig) -> Option<needle_nav_pacs::SeriesRef> {
    let series = cfg.ct_series_instance_uid.trim();
    (!series.is_empty()).then(|| needle_nav_pacs::SeriesRef {
        study_instance_uid: cfg.ct_study_instance_uid.trim().to_string(),
        series_instance_uid: series.to_string(),
    })
}

/// Retrieves the series (blocking: run it off the executor) and reads the planning input from
/// it with the configured target. The error says what failed, the PACS's own words included.
pub fn retrieve_planning_input(
    cfg: &TrajectoryPlannerConfig,
    series: &needle_nav_pacs::SeriesRef,
) -> Result<(PlanningInput, needle_nav_pacs::Retrieved), String> {
    let folder = needle_nav_pacs::retrieve_folder(std::path::Path::new(&cfg.output_dir), &series.series_instance_uid);
    let got = needle_nav_pacs::get_series(&cfg.pacs, &series.study_instance_uid, &series.series_instance_uid, &folder)
        .map_err(|e| format!("planning CT from the PACS: {e}"))?;
    let with_ct = TrajectoryPlannerConfig { ct_path: got.folder.display().to_string(), ..cfg.clone() };
    match planning_input(&with_ct)? {
        Some(input) => Ok((input, got)),
        None => Err(format!("the series retrieved into {} could not be used as the planning CT", got.folder.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_series_uid_names_a_pacs_ct_and_a_pacs_that_is_down_is_a_clear_error() {
        assert_eq!(pacs_series(&TrajectoryPlannerConfig::default()), None);
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let cfg = TrajectoryPlannerConfig {
            ct_study_instance_uid: "1.2.3".into(),
            ct_series_instance_uid: " 1.2.3.4 ".into(),
            output_dir: std::env::temp_dir().join(format!("nn_pacs_ct_{}", std::process::id())).display().to_string(),
            pacs: needle_nav_pacs::PacsConfig { host: "127.0.0.1".into(), port, ..Default::default() },
            ..Default::default()
        };
        let series = pacs_series(&cfg).unwrap();
        assert_eq!(series.series_instance_uid, "1.2.3.4");
        let e = retrieve_planning_input(&cfg, &series).unwrap_err();
        assert!(
            e.starts_with("planning CT from the PACS: PACS unreachable") && e.contains("connection refused"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&cfg.output_dir);
    }
}
