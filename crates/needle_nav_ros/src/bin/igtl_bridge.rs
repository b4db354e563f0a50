//! The `igtl_bridge` node as its own executable.
fn main() -> std::process::ExitCode {
    needle_nav_ros::runtime::main_single(needle_nav_core::interfaces::NodeKind::IgtlBridge)
}
