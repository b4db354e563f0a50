//! Checks the ROS arguments (`--ros-args ...`) before rcl parses them. rcl's own parser reports a
//! malformed parameter file or `-p key` without a value as an error that r2r turns into a panic
//! with a backtrace; and a misspelled node section in a parameter file (`needle_targt:`) is
//! silently ignored by rcl, so the node ran with defaults the user did not mean. Both are now a
//! clear error naming the argument or section (exit code 2).

use super::{ConfigError, ParamFileError};
use serde_yaml::Value;

/// ROS arguments that take a value (rcl's `--ros-args` grammar).
const WITH_VALUE: [&str; 9] =
    ["-p", "--param", "-r", "--remap", "--params-file", "--log-level", "-e", "--enclave", "--log-config-file"];
/// ROS arguments that are flags.
const FLAGS: [&str; 6] = [
    "--enable-rosout-logs",
    "--disable-rosout-logs",
    "--enable-stdout-logs",
    "--disable-stdout-logs",
    "--enable-external-lib-logs",
    "--disable-external-lib-logs",
];

fn bad(reason: String) -> ConfigError {
    ConfigError::BadRosArgs(reason)
}

/// Checks every `--ros-args` block of `args` (the whole command line); `our_nodes` are the
/// needle_nav node names, for telling a misspelled section from another package's node.
pub fn check(args: &[String], our_nodes: &[&str]) -> Result<(), ConfigError> {
    let mut in_ros = false;
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--ros-args" => in_ros = true,
            "--" => in_ros = false,
            _ if !in_ros => {}
            flag if FLAGS.contains(&flag) => {}
            option if WITH_VALUE.contains(&option) => {
                let value = it.next().ok_or_else(|| bad(format!("`{option}` needs a value")))?;
                match option {
                    "-p" | "--param" => check_param(value)?,
                    "-r" | "--remap" => {
                        if !value.split_once(":=").is_some_and(|(from, to)| !from.is_empty() && !to.is_empty()) {
                            return Err(bad(format!("`{option} {value}`: a remapping needs `from:=to`")));
                        }
                    }
                    "--params-file" => check_params_file(std::path::Path::new(value), our_nodes)?,
                    _ => {}
                }
            }
            other => return Err(bad(format!("unknown ROS argument `{other}`"))),
        }
    }
    Ok(())
}

/// `name:=value`, where value is YAML (as rcl reads it).
fn check_param(arg: &str) -> Result<(), ConfigError> {
    let Some((name, value)) = arg.split_once(":=") else {
        return Err(bad(format!("`-p {arg}`: a parameter needs `name:=value`")));
    };
    let key = name.rsplit(':').next().unwrap_or(name);
    if key.is_empty() || key.starts_with('.') || key.ends_with('.') || key.contains("..") {
        return Err(bad(format!("`-p {arg}`: `{name}` is not a parameter name")));
    }
    serde_yaml::from_str::<Value>(value)
        .map(|_| ())
        .map_err(|e| bad(format!("`-p {arg}`: the value is not valid YAML ({e})")))
}

/// A ROS 2 parameter file: node sections (possibly under namespaces) each with `ros__parameters`.
pub fn check_params_file(path: &std::path::Path, our_nodes: &[&str]) -> Result<(), ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Unreadable {
        node: "ros-args".into(),
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    check_params_text(&text, our_nodes).map_err(|reason| ConfigError::BadFile {
        node: "ros-args".into(),
        path: shown,
        reason,
    })
}

/// The checks of [`check_params_file`] on the file's text.
pub fn check_params_text(text: &str, our_nodes: &[&str]) -> Result<(), ParamFileError> {
    let doc: Value = serde_yaml::from_str(text).map_err(|e| ParamFileError::Yaml(e.to_string()))?;
    match doc {
        Value::Null => Ok(()),
        Value::Mapping(top) => check_level(&top, "", our_nodes),
        _ => Err(ParamFileError::TopLevelNotMapping),
    }
}

fn check_level(level: &serde_yaml::Mapping, prefix: &str, our_nodes: &[&str]) -> Result<(), ParamFileError> {
    for (key, value) in level {
        let name = key.as_str().ok_or_else(|| ParamFileError::NameNotString { prefix: prefix.to_string() })?;
        let full = if prefix.is_empty() { name.to_string() } else { format!("{prefix}/{name}") };
        let Value::Mapping(inner) = value else {
            return Err(ParamFileError::NeitherSectionNorNamespace(full));
        };
        match inner.get("ros__parameters") {
            Some(Value::Mapping(_)) | Some(Value::Null) => {
                if inner.len() > 1 {
                    return Err(ParamFileError::OutsideParameters(full));
                }
                check_section_name(&full, our_nodes)?;
            }
            Some(_) => return Err(ParamFileError::ParametersNotMapping(full)),
            None => check_level(inner, &full, our_nodes)?,
        }
    }
    Ok(())
}

/// A section for another package's node is fine; one whose name is one or two letters off a
/// needle_nav node is a typo that would silently leave that node on its defaults.
fn check_section_name(full: &str, our_nodes: &[&str]) -> Result<(), ParamFileError> {
    let node = full.rsplit('/').next().unwrap_or(full);
    if node == "**" || node == "*" || our_nodes.contains(&node) {
        return Ok(());
    }
    let close = our_nodes.iter().map(|n| (edit_distance(n, node), *n)).min();
    match close {
        Some((d, n)) if d <= 2 => {
            Err(ParamFileError::MisspeltNode { section: full.to_string(), suggestion: n.to_string() })
        }
        _ => Ok(()),
    }
}

/// Levenshtein distance (names are short).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: [&str; 2] = ["needle_target", "marker_tracker"];

    fn args(a: &[&str]) -> Vec<String> {
        std::iter::once("exe").chain(a.iter().copied()).map(String::from).collect()
    }

    #[test]
    fn well_formed_arguments_pass() {
        let ok = args(&[
            "--run-for",
            "3",
            "--ros-args",
            "-p",
            "rate_hz:=100.0",
            "--param",
            "needle_target:sample_checks.max_markers:=12",
            "-r",
            "__ns:=/robot",
            "--log-level",
            "debug",
            "--disable-rosout-logs",
            "--",
            "-p",
        ]);
        assert_eq!(check(&ok, &OURS), Ok(()));
    }

    #[test]
    fn a_parameter_without_a_value_and_other_malformed_arguments_are_named() {
        for (a, expect) in [
            (vec!["--ros-args", "-p", "rate_hz"], "`-p rate_hz`"),
            (vec!["--ros-args", "-p"], "`-p` needs a value"),
            (vec!["--ros-args", "-p", ":=3"], "not a parameter name"),
            (vec!["--ros-args", "-p", "a:=[1, 2"], "not valid YAML"),
            (vec!["--ros-args", "-r", "foo"], "from:=to"),
            (vec!["--ros-args", "--params-file"], "needs a value"),
            (vec!["--ros-args", "--bogus"], "`--bogus`"),
        ] {
            let err = check(&args(&a), &OURS).unwrap_err().to_string();
            assert!(err.contains(expect), "{a:?}: {err}");
        }
    }

    #[test]
    fn parameter_files_are_checked_for_shape_and_misspelled_sections() {
        let ok = "/**:\n  ros__parameters:\n    use_sim_time: true\nrobot:\n  needle_target:\n    ros__parameters:\n      robot_latency_s: 0.1\nsome_other_driver:\n  ros__parameters:\n    port: 3\n";
        assert_eq!(check_params_text(ok, &OURS), Ok(()));
        for (text, expect) in [
            ("needle_targt:\n  ros__parameters:\n    robot_latency_s: 0.1\n", "did you mean `needle_target`"),
            ("/ns/marker_trackr:\n  ros__parameters: {}\n", "did you mean `marker_tracker`"),
            ("needle_target:\n  ros__parameters: 3\n", "must be a mapping"),
            ("needle_target:\n  ros__parameters: {}\n  extra: 1\n", "under `ros__parameters`"),
            ("needle_target: 5\n", "neither a node section"),
            ("- a\n- b\n", "top level"),
            ("needle_target:\n  ros__parameters:\n    a: [1,\n", "line"),
        ] {
            let err = check_params_text(text, &OURS).unwrap_err().to_string();
            assert!(err.contains(expect), "{text:?}: {err}");
        }
    }

    #[test]
    fn a_missing_parameter_file_is_named() {
        let err = check(&args(&["--ros-args", "--params-file", "/no/such/file.yaml"]), &OURS).unwrap_err();
        assert!(err.to_string().contains("/no/such/file.yaml"), "{err}");
    }

    #[test]
    fn edit_distance_matches_hand_counts() {
        assert_eq!(edit_distance("needle_target", "needle_targt"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }
}
