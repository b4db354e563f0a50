//! Full `ros2msg` message definitions (the text rosbag2 stores as an MCAP schema): the type's
//! own .msg text followed by every nested type's, each after a `MSG: pkg/Type` separator.
//! The .msg files come from `share/<pkg>/msg/` on AMENT_PREFIX_PATH; needle_nav's own are
//! compiled in, so a bag can be written even from a bare build.

use super::BagError;
use std::path::PathBuf;

const PRIMITIVES: [&str; 16] = [
    "bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64",
    "uint64", "string", "wstring", "time",
];
const SEPARATOR: &str = "================================================================================";

fn own_definition(name: &str) -> Option<&'static str> {
    Some(match name {
        "TrackedMarker" => include_str!("../../../ros2/needle_nav_msgs/msg/TrackedMarker.msg"),
        "TrackedMarkerArray" => include_str!("../../../ros2/needle_nav_msgs/msg/TrackedMarkerArray.msg"),
        "MarkerFeature" => include_str!("../../../ros2/needle_nav_msgs/msg/MarkerFeature.msg"),
        "MarkerClassification" => include_str!("../../../ros2/needle_nav_msgs/msg/MarkerClassification.msg"),
        "LesionRegistration" => include_str!("../../../ros2/needle_nav_msgs/msg/LesionRegistration.msg"),
        "NeedleTarget" => include_str!("../../../ros2/needle_nav_msgs/msg/NeedleTarget.msg"),
        "NeedlePlan" => include_str!("../../../ros2/needle_nav_msgs/msg/NeedlePlan.msg"),
        "NeedlePathCandidate" => include_str!("../../../ros2/needle_nav_msgs/msg/NeedlePathCandidate.msg"),
        "PhantomGroundTruth" => include_str!("../../../ros2/needle_nav_msgs/msg/PhantomGroundTruth.msg"),
        _ => return None,
    })
}

/// Before the messages had their own package (`needle_nav_msgs`) they were `needle_nav/msg/*`, with
/// the same definitions: bags recorded then still replay, under the current names.
pub const LEGACY_PACKAGE: &str = "needle_nav";
/// The package needle_nav's messages are in.
pub const PACKAGE: &str = "needle_nav_msgs";

/// The type's current name: `needle_nav/msg/X` (a bag from before the package split) is
/// `needle_nav_msgs/msg/X`; every other name is returned as it is.
pub fn current_type_name(type_name: &str) -> std::borrow::Cow<'_, str> {
    match type_name.strip_prefix("needle_nav/msg/") {
        Some(rest) => format!("{PACKAGE}/msg/{rest}").into(),
        None => type_name.into(),
    }
}

/// The .msg text of `pkg/Type` (also accepts `pkg/msg/Type`).
pub fn msg_text(type_name: &str) -> Result<String, BagError> {
    let (pkg, name) = split(type_name)?;
    if pkg == PACKAGE || pkg == LEGACY_PACKAGE {
        if let Some(t) = own_definition(&name) {
            return Ok(t.to_string());
        }
    }
    let prefixes: Vec<PathBuf> =
        std::env::var_os("AMENT_PREFIX_PATH").map(|v| std::env::split_paths(&v).collect()).unwrap_or_default();
    for p in &prefixes {
        let f = p.join("share").join(&pkg).join("msg").join(format!("{name}.msg"));
        if let Ok(t) = std::fs::read_to_string(&f) {
            return Ok(t);
        }
    }
    Err(BagError::Definition(format!(
        "no definition of {pkg}/msg/{name} in share/{pkg}/msg of AMENT_PREFIX_PATH ({} prefixes searched)",
        prefixes.len()
    )))
}

fn split(type_name: &str) -> Result<(String, String), BagError> {
    let parts: Vec<&str> = type_name.split('/').collect();
    match parts.as_slice() {
        [pkg, name] | [pkg, "msg", name] => Ok((pkg.to_string(), name.to_string())),
        _ => Err(BagError::Definition(format!("{type_name} is not a message type name (pkg/msg/Type)"))),
    }
}

/// Nested message types a .msg text refers to, as `pkg/Type`, in order of appearance.
pub fn nested_types(text: &str, own_pkg: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some(ty) = line.split_whitespace().next() else { continue };
        if line.split_whitespace().nth(1).is_some_and(|n| n.contains('=')) {
            continue; // a constant: always primitive
        }
        let base = ty.split('[').next().unwrap_or(ty);
        let base = base.split("<=").next().unwrap_or(base);
        if PRIMITIVES.contains(&base) {
            continue;
        }
        let full = if base == "Header" {
            "std_msgs/Header".to_string()
        } else if base.contains('/') {
            base.replace("/msg/", "/")
        } else {
            format!("{own_pkg}/{base}")
        };
        if !out.contains(&full) {
            out.push(full);
        }
    }
    out
}

/// The full definition of `type_name` with all nested types, as rosbag2 writes it.
pub fn full_definition(type_name: &str) -> Result<String, BagError> {
    let (pkg, _) = split(type_name)?;
    let top = msg_text(type_name)?;
    let mut seen: Vec<String> = Vec::new();
    let mut queue: Vec<String> = nested_types(&top, &pkg);
    let mut text = top.trim_end().to_string();
    text.push('\n');
    while !queue.is_empty() {
        let next = queue.remove(0);
        if seen.contains(&next) {
            continue;
        }
        let body = msg_text(&next)?;
        let (npkg, _) = split(&next)?;
        queue.extend(nested_types(&body, &npkg));
        text += &format!("{SEPARATOR}\nMSG: {next}\n{}\n", body.trim_end());
        seen.push(next);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_types_are_found_in_field_lines_only() {
        let text = "# comment with geometry_msgs/Point\nstd_msgs/Header header\nuint8 OK=0\nTrackedMarker[] markers\n\
                    geometry_msgs/msg/Point[<=3] p\nstring<=8 s\nbuiltin_interfaces/Time stamp\nHeader h2\n";
        assert_eq!(
            nested_types(text, "needle_nav"),
            ["std_msgs/Header", "needle_nav/TrackedMarker", "geometry_msgs/Point", "builtin_interfaces/Time"]
        );
    }

    #[test]
    fn own_messages_have_definitions_even_without_ros() {
        let t = msg_text("needle_nav_msgs/msg/NeedlePlan").unwrap();
        assert!(t.contains("minimum_clearance"));
        assert!(split("nonsense").is_err());
    }
}
