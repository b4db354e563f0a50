//! The case file `case.json` of a planning case folder, through both of its readers: the
//! planner's (`planning::planning_input`) and the guidance's (`PlanningCase::load`, which checks
//! the whole document before it reads the CT; the folder has no CT, so it stops there).
#![no_main]
use libfuzzer_sys::fuzz_target;
use needle_nav_nodes::config::TrajectoryPlannerConfig;
use needle_nav_core::ct_markers::MarkerDetectionConfig;
use needle_nav_core::guidance::SelectionConfig;
use needle_nav_fuzz::{scratch, write};

fuzz_target!(|data: &[u8]| {
    let dir = scratch("case");
    write(&dir.join("case.json"), data);
    let cfg = TrajectoryPlannerConfig { ct_case_dir: dir.display().to_string(), ..Default::default() };
    if let Ok(Some(input)) = needle_nav_planning::plan_files::planning_input(&cfg) {
        assert!(input.target_mm.coords.iter().all(|c| c.is_finite()), "non-finite target {:?}", input.target_mm);
        assert!(input.lesion_radius_mm.is_finite() && input.lesion_radius_mm >= 0.0);
    }
    let _ = needle_nav_imaging::planning_case::load_planning_case(&dir, &MarkerDetectionConfig::default(), &SelectionConfig::default());
});
