//! The lifecycle manager (like nav2_lifecycle_manager): configures and activates the nodes named
//! by `node_names` in order, and takes them down in reverse order on SIGINT/SIGTERM.
fn main() -> std::process::ExitCode {
    needle_nav_ros::lifecycle_manager::main()
}
