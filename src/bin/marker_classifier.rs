//! The `marker_classifier` node as its own executable.
fn main() -> std::process::ExitCode {
    needle_nav::ros::runtime::main_single(needle_nav::interfaces::NodeKind::MarkerClassifier)
}
