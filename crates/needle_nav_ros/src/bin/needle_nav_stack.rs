//! The six nodes of the simulated stack in one process (like a component container): no serialisation between
//! them, lowest latency. `--run-for S --summary` stops after S seconds and prints what the
//! stack did.
fn main() -> std::process::ExitCode {
    needle_nav_ros::runtime::main_nodes(&needle_nav_core::interfaces::NodeKind::STACK)
}
