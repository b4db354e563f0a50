//! ROS 2 parameter files (`config`): what `needle_nav check-config FILE` does with a file
//! (every node's section, merged and validated), plus a command-line style override.
#![no_main]
use libfuzzer_sys::fuzz_target;
use needle_nav_nodes::config::{self, check_node_config};
use needle_nav_core::interfaces::NodeKind;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for kind in NodeKind::ALL {
        let Ok(section) = config::node_section(text, kind.name()) else { continue };
        let _ = check_node_config(kind.name(), section.clone(), &Vec::new());
        // The same section as `-p key:=value` overrides onto the node's defaults.
        let overrides: Vec<(String, serde_yaml::Value)> =
            section.iter().filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.clone()))).collect();
        let _ = check_node_config(kind.name(), Default::default(), &overrides);
    }
});
