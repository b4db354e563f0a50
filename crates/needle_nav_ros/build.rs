//! Links libpython into the node executables when built against the PyPI ROS 2 wheels:
//! their librcl depends on `*_rosidl_generator_py.so`, which needs CPython symbols at load
//! time. scripts/setup.sh sets the two variables; a normal /opt/ros install sets neither.
fn main() {
    println!("cargo:rerun-if-env-changed=NEEDLE_NAV_LINK_PYTHON");
    println!("cargo:rerun-if-env-changed=NEEDLE_NAV_PYTHON_LIBDIR");
    let lib = std::env::var("NEEDLE_NAV_LINK_PYTHON").unwrap_or_default();
    if lib.is_empty() {
        return;
    }
    if let Ok(dir) = std::env::var("NEEDLE_NAV_PYTHON_LIBDIR") {
        if !dir.is_empty() {
            println!("cargo:rustc-link-search=native={dir}");
            println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        }
    }
    println!("cargo:rustc-link-arg=-Wl,--push-state,--no-as-needed,-l{lib},--pop-state");
}
