//! `ros2 launch` cannot be installed here, so this checks every launch file against the
//! package the way launch_ros would resolve it: executables exist, parameter files exist
//! and validate for their node, inline parameters are known keys with valid values,
//! remapped topics are topics the node really uses, included files exist.

use needle_nav_core::interfaces::{NodeKind, ALL_IN_ONE_EXECUTABLE};
use needle_nav_nodes::config::{build_config, check_node_config, node_section, Overrides};
use needle_nav_nodes::lifecycle_manager::ManagerConfig;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// Built executables, as cargo reports them to integration tests (the command line, from
/// another crate of the workspace, lies beside them: scripts/test.sh builds every binary first).
fn built_executable(name: &str) -> Option<String> {
    if name == "needle_nav" {
        let beside = Path::new(env!("CARGO_BIN_EXE_needle_nav_stack")).with_file_name("needle_nav");
        return Some(beside.to_string_lossy().into_owned());
    }
    Some(
        match name {
            "marker_tracker" => env!("CARGO_BIN_EXE_marker_tracker"),
            "marker_classifier" => env!("CARGO_BIN_EXE_marker_classifier"),
            "lesion_registration" => env!("CARGO_BIN_EXE_lesion_registration"),
            "needle_target" => env!("CARGO_BIN_EXE_needle_target"),
            "vessel_segmentation" => env!("CARGO_BIN_EXE_vessel_segmentation"),
            "trajectory_planner" => env!("CARGO_BIN_EXE_trajectory_planner"),
            "igtl_bridge" => env!("CARGO_BIN_EXE_igtl_bridge"),
            "needle_nav_stack" => env!("CARGO_BIN_EXE_needle_nav_stack"),
            "lifecycle_manager" => env!("CARGO_BIN_EXE_lifecycle_manager"),
            _ => return None,
        }
        .to_string(),
    )
}

/// The executables the workspace declares: the ROS nodes' crate and the command line's.
fn cargo_bins() -> Vec<String> {
    let mut bins = Vec::new();
    for krate in ["crates/needle_nav_ros", "crates/needle_nav"] {
        let text = std::fs::read_to_string(root().join(krate).join("Cargo.toml")).unwrap();
        let doc: toml::Table = text.parse().unwrap();
        bins.extend(doc["bin"].as_array().unwrap().iter().map(|b| b["name"].as_str().unwrap().to_string()));
    }
    bins
}

/// Resolves `$(var x)`, `$(find-pkg-share needle_nav)` and `$(not ...)`, nested ones first;
/// anything else is an error.
fn substitute(text: &str, vars: &HashMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("$(") {
        out.push_str(&rest[..start]);
        // The matching parenthesis, counting nested substitutions.
        let mut depth = 0usize;
        let mut end = None;
        for (i, c) in rest[start + 1..].char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(start + 1 + i);
                        break;
                    }
                }
                _ => {}
            }
        }
        let end = end.ok_or_else(|| format!("unclosed substitution in `{text}`"))?;
        let inner = substitute(&rest[start + 2..end], vars)?;
        let mut words = inner.split_whitespace();
        let value = match (words.next(), words.next()) {
            (Some("var"), Some(name)) => {
                vars.get(name).cloned().ok_or_else(|| format!("undefined launch argument `{name}`"))?
            }
            // The package installs launch/ and config/ into share/needle_nav: the repo root mirrors it.
            (Some("find-pkg-share"), Some("needle_nav")) => root().display().to_string(),
            // launch's boolean `not`: true/false (also 1/0), answered as true/false.
            (Some("not"), Some(b)) => match b {
                "true" | "True" | "1" => "false".to_string(),
                "false" | "False" | "0" => "true".to_string(),
                other => return Err(format!("`$(not {other})`: not a boolean")),
            },
            _ => return Err(format!("unsupported substitution `$({inner})`")),
        };
        out.push_str(&value);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn attr(node: roxmltree::Node, name: &str, vars: &HashMap<String, String>) -> Result<Option<String>, String> {
    node.attribute(name).map(|v| substitute(v, vars)).transpose()
}

/// Path of the first empty sequence in a YAML document, if any.
fn empty_sequence(v: &serde_yaml::Value, path: String) -> Option<String> {
    match v {
        serde_yaml::Value::Sequence(s) if s.is_empty() => Some(path),
        serde_yaml::Value::Mapping(m) => m.iter().find_map(|(k, v)| {
            let key = k.as_str().unwrap_or("?");
            empty_sequence(v, if path.is_empty() { key.to_string() } else { format!("{path}.{key}") })
        }),
        _ => None,
    }
}

/// Nodes an executable hosts (the all-in-one hosts the six of the stack).
fn hosted(exec: &str) -> Vec<NodeKind> {
    if exec == ALL_IN_ONE_EXECUTABLE {
        NodeKind::STACK.to_vec()
    } else {
        NodeKind::from_name(exec).into_iter().collect()
    }
}

/// The lifecycle manager: its parameters are valid and it manages only needle_nav nodes.
fn check_manager_element(
    el: roxmltree::Node,
    vars: &HashMap<String, String>,
    started: &mut Started,
) -> Result<(), String> {
    let mut inline: Overrides = Vec::new();
    for child in el.children().filter(|c| c.is_element()) {
        if child.tag_name().name() != "param" || child.has_attribute("from") {
            return Err("lifecycle_manager takes only inline <param name= value=>".into());
        }
        let name = attr(child, "name", vars)?.ok_or("param without name")?;
        let value = attr(child, "value", vars)?.ok_or("param without value")?;
        inline.push((name, serde_yaml::from_str(&value).map_err(|e| e.to_string())?));
    }
    let cfg: ManagerConfig =
        build_config("lifecycle_manager", serde_yaml::Mapping::new(), &inline).map_err(|e| e.to_string())?;
    for name in &cfg.node_names {
        if NodeKind::from_name(name).is_none() {
            return Err(format!("lifecycle_manager: `{name}` is not a needle_nav node"));
        }
    }
    started.managed.extend(cfg.node_names);
    Ok(())
}

/// What a launch file starts: executables, and the nodes a lifecycle manager manages.
#[derive(Debug, Default)]
struct Started {
    execs: Vec<String>,
    managed: Vec<String>,
}

fn check_node_element(
    el: roxmltree::Node,
    vars: &HashMap<String, String>,
    file: &Path,
    started: &mut Started,
) -> Result<String, String> {
    let pkg = attr(el, "pkg", vars)?.ok_or("node without pkg")?;
    let exec = attr(el, "exec", vars)?.ok_or("node without exec")?;
    if pkg == "rviz2" {
        // The optional viewer: it must open the package's own rviz configuration.
        let args = attr(el, "args", vars)?.unwrap_or_default();
        let config = args.split_whitespace().skip_while(|a| *a != "-d").nth(1).ok_or("rviz2 without -d CONFIG")?;
        if exec != "rviz2" || !Path::new(config).is_file() {
            return Err(format!("rviz2 node: exec `{exec}`, config {config} not found"));
        }
        return Ok(exec);
    }
    if pkg != "needle_nav" {
        return Err(format!("node of another package `{pkg}`"));
    }
    if !cargo_bins().contains(&exec) {
        return Err(format!("exec `{exec}` is not an executable of Cargo.toml"));
    }
    let path = built_executable(&exec).ok_or_else(|| format!("exec `{exec}` unknown to this test"))?;
    if !Path::new(&path).is_file() {
        return Err(format!("executable {path} was not built"));
    }
    if exec == "lifecycle_manager" {
        return check_manager_element(el, vars, started).map(|()| exec);
    }
    let kinds = hosted(&exec);
    if kinds.is_empty() {
        return Err(format!("exec `{exec}` hosts no node"));
    }
    if let Some(name) = attr(el, "name", vars)? {
        // A different name would make the node miss its section of the parameter file.
        if kinds.len() != 1 || name != exec {
            return Err(format!("node name `{name}` differs from its executable `{exec}` (or renames the all-in-one)"));
        }
    }
    let mut files: Vec<(PathBuf, String)> = Vec::new();
    let mut inline: Overrides = Vec::new();
    for child in el.children().filter(|c| c.is_element()) {
        match child.tag_name().name() {
            "param" => {
                if let Some(from) = attr(child, "from", vars)? {
                    let p = PathBuf::from(&from);
                    let text = std::fs::read_to_string(&p).map_err(|e| format!("parameter file {from}: {e}"))?;
                    let doc: serde_yaml::Value = serde_yaml::from_str(&text).map_err(|e| format!("{from}: {e}"))?;
                    if let Some(path) = empty_sequence(&doc, String::new()) {
                        // rcl's parameter-file parser cannot type an empty list and refuses the file.
                        return Err(format!("parameter file {from}: `{path}` is an empty list, which ROS 2 rejects"));
                    }
                    files.push((p, text));
                } else {
                    let name = attr(child, "name", vars)?.ok_or("param without name or from")?;
                    let value = attr(child, "value", vars)?.ok_or("param without value")?;
                    // launch_ros reads inline values as YAML scalars; an empty value is the empty string.
                    let v: serde_yaml::Value = if value.is_empty() {
                        serde_yaml::Value::String(String::new())
                    } else {
                        serde_yaml::from_str(&value).map_err(|e| e.to_string())?
                    };
                    if name == "autostart" {
                        // The lifecycle parameter every node has (the runtime's, not node configuration).
                        if !v.is_bool() {
                            return Err(format!("autostart `{value}` is not a boolean"));
                        }
                        continue;
                    }
                    inline.push((name, v));
                }
            }
            "remap" => {
                let from = attr(child, "from", vars)?.ok_or("remap without from")?;
                let to = attr(child, "to", vars)?.ok_or("remap without to")?;
                let used =
                    kinds.iter().any(|k| k.endpoints().iter().any(|(_, ep)| ep.name == from.trim_start_matches('/')));
                if !used {
                    return Err(format!("remap from `{from}`: no node of `{exec}` uses that topic or service"));
                }
                if to.is_empty() || to.contains(' ') {
                    return Err(format!("remap to `{to}` is not a valid name"));
                }
            }
            other => return Err(format!("unexpected <{other}> inside <node>")),
        }
    }
    for kind in &kinds {
        let mut section = serde_yaml::Mapping::new();
        for (path, text) in &files {
            let part = node_section(text, kind.name()).map_err(|e| format!("{}: {e}", path.display()))?;
            for (k, v) in part {
                section.insert(k, v);
            }
        }
        if section.is_empty() && kinds.len() == 1 && !files.is_empty() {
            return Err(format!("no parameter file section applies to {}", kind.name()));
        }
        check_node_config(kind.name(), section, &inline)
            .map_err(|e| format!("{} in {}: {e}", kind.name(), file.display()))?;
    }
    Ok(exec)
}

/// Checks a launch file and the files it includes; returns the executables it starts.
fn check_launch_file(file: &Path, given: &HashMap<String, String>) -> Result<Vec<String>, String> {
    let mut started = Started::default();
    check_launch_file_into(file, given, &mut started)?;
    Ok(started.execs)
}

/// Like [`check_launch_file`], also returning the managed nodes.
fn check_launch_file_into(file: &Path, given: &HashMap<String, String>, started: &mut Started) -> Result<(), String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let doc = roxmltree::Document::parse(&text).map_err(|e| format!("{}: not XML: {e}", file.display()))?;
    let launch = doc.root_element();
    if launch.tag_name().name() != "launch" {
        return Err(format!("{}: root element must be <launch>", file.display()));
    }
    let mut vars = HashMap::new();
    for el in launch.descendants().filter(|n| n.is_element()) {
        let parent_is_launch = el.parent_element().map(|p| p.tag_name().name() == "launch").unwrap_or(false);
        match el.tag_name().name() {
            "launch" => {}
            "arg" if parent_is_launch => {
                let name = el.attribute("name").ok_or("arg without name")?.to_string();
                let value = match given.get(&name) {
                    Some(v) => v.clone(),
                    None => attr(el, "default", &vars)?.ok_or_else(|| format!("argument `{name}` has no default"))?,
                };
                vars.insert(name, value);
            }
            "arg" => {} // arguments of an <include>, handled there
            "set_env" => {
                attr(el, "name", &vars)?.ok_or("set_env without name")?;
                attr(el, "value", &vars)?.ok_or("set_env without value")?;
            }
            "node" => {
                let exec =
                    check_node_element(el, &vars, file, started).map_err(|e| format!("{}: {e}", file.display()))?;
                started.execs.push(exec);
            }
            "param" | "remap" => {} // checked with their node
            "include" => {
                let inc = attr(el, "file", &vars)?.ok_or("include without file")?;
                let mut args = HashMap::new();
                for a in el.children().filter(|c| c.has_tag_name("arg")) {
                    let n = a.attribute("name").ok_or("include arg without name")?.to_string();
                    let v = attr(a, "value", &vars)?.ok_or("include arg without value")?;
                    args.insert(n, v);
                }
                check_launch_file_into(Path::new(&inc), &args, started)?;
            }
            other => return Err(format!("{}: element <{other}> not checked by this test", file.display())),
        }
    }
    Ok(())
}

fn launch_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("launch"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".launch.xml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_launch_file_matches_the_package() {
    let files = launch_files();
    assert!(files.len() >= 3, "expected the stack, sim and all-in-one launch files, found {files:?}");
    for f in &files {
        // XML 1.0 (section 2.5) forbids `--` inside a comment: Python's parser, which ROS 2 launch
        // uses, refuses the file, while roxmltree here would accept it.
        let text = std::fs::read_to_string(f).unwrap();
        for comment in text.split("<!--").skip(1) {
            let body = comment.split("-->").next().unwrap_or_default();
            assert!(!body.contains("--"), "{}: `--` inside a comment", f.display());
        }
        let execs = check_launch_file(f, &HashMap::new()).unwrap_or_else(|e| panic!("{e}"));
        assert!(!execs.is_empty(), "{} starts nothing", f.display());
    }
}

#[test]
fn the_sim_launch_starts_all_six_nodes_and_the_all_in_one_hosts_them() {
    let sim = check_launch_file(&root().join("launch/needle_nav_sim.launch.xml"), &HashMap::new()).unwrap();
    for kind in NodeKind::STACK {
        assert!(sim.contains(&kind.name().to_string()), "sim launch misses {}", kind.name());
    }
    let all = check_launch_file(&root().join("launch/needle_nav_all_in_one.launch.xml"), &HashMap::new()).unwrap();
    // Besides the stack, only the lifecycle manager (started with lifecycle:=true).
    let all: Vec<String> = all.into_iter().filter(|e| e != "lifecycle_manager").collect();
    assert_eq!(all, vec![ALL_IN_ONE_EXECUTABLE.to_string()]);
}

#[test]
fn the_checker_rejects_broken_launch_files() {
    // A test that cannot fail is a defect: feed the checker files with each kind of mistake.
    let dir = std::env::temp_dir().join(format!("nn_launch_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        ("missing_exec", r#"<launch><node pkg="needle_nav" exec="no_such_node"/></launch>"#, "not an executable"),
        (
            "bad_param_file",
            r#"<launch><node pkg="needle_nav" exec="needle_target"><param from="/nonexistent/x.yaml"/></node></launch>"#,
            "parameter file",
        ),
        (
            "unknown_key",
            r#"<launch><node pkg="needle_nav" exec="needle_target"><param name="robot_latency" value="0.1"/></node></launch>"#,
            "robot_latency",
        ),
        (
            "bad_value",
            r#"<launch><node pkg="needle_nav" exec="marker_tracker"><param name="rate_hz" value="-4.0"/></node></launch>"#,
            "rate_hz",
        ),
        (
            "bad_remap",
            r#"<launch><node pkg="needle_nav" exec="needle_target"><remap from="needle_nav/markerz" to="x"/></node></launch>"#,
            "remap",
        ),
        ("renamed", r#"<launch><node pkg="needle_nav" exec="needle_target" name="target_node"/></launch>"#, "differs"),
        ("undefined_arg", r#"<launch><node pkg="needle_nav" exec="$(var nope)"/></launch>"#, "undefined"),
        (
            "empty_list",
            r#"<launch><node pkg="needle_nav" exec="needle_target"><param from="EMPTY_LIST_FILE"/></node></launch>"#,
            "empty list",
        ),
        ("missing_include", r#"<launch><include file="/nonexistent/x.launch.xml"/></launch>"#, "x.launch.xml"),
        (
            "bad_managed",
            r#"<launch><node pkg="needle_nav" exec="lifecycle_manager"><param name="node_names" value="[needle_target, nav2_thing]"/></node></launch>"#,
            "not a needle_nav node",
        ),
        (
            "bad_autostart",
            r#"<launch><node pkg="needle_nav" exec="needle_target"><param name="autostart" value="maybe"/></node></launch>"#,
            "autostart",
        ),
        ("bad_not", r#"<launch><node pkg="needle_nav" exec="$(not maybe)"/></launch>"#, "not a boolean"),
    ];
    let empty_list = dir.join("empty_list.yaml");
    std::fs::write(&empty_list, "needle_target:\n  ros__parameters:\n    frame_id: []\n").unwrap();
    for (name, xml, expected) in cases {
        let p = dir.join(format!("{name}.launch.xml"));
        std::fs::write(&p, xml.replace("EMPTY_LIST_FILE", &empty_list.display().to_string())).unwrap();
        let err = check_launch_file(&p, &HashMap::new()).expect_err(name);
        assert!(err.contains(expected), "{name}: error `{err}` does not mention `{expected}`");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn with_lifecycle_the_manager_manages_exactly_the_nodes_the_file_starts() {
    let lifecycle = HashMap::from([("lifecycle".to_string(), "true".to_string())]);
    for (file, all_in_one) in [
        ("needle_nav.launch.xml", false),
        ("needle_nav_sim.launch.xml", false),
        ("needle_nav_all_in_one.launch.xml", true),
    ] {
        let mut started = Started::default();
        check_launch_file_into(&root().join("launch").join(file), &lifecycle, &mut started).unwrap();
        assert!(started.execs.contains(&"lifecycle_manager".to_string()), "{file}: no lifecycle_manager");
        let mut nodes: Vec<String> = if all_in_one {
            NodeKind::STACK.iter().map(|k| k.name().to_string()).collect()
        } else {
            started.execs.iter().filter(|e| NodeKind::from_name(e).is_some()).cloned().collect()
        };
        let mut managed = started.managed.clone();
        nodes.sort();
        managed.sort();
        assert_eq!(managed, nodes, "{file}: managed nodes differ from the started ones");
    }
}

/// The seed the package's CMakeLists writes the shipped case with.
fn shipped_case_seed() -> i64 {
    let text = std::fs::read_to_string(root().join("ros2/needle_nav/CMakeLists.txt")).unwrap();
    let line = text.lines().find(|l| l.trim_start().starts_with("set(NEEDLE_NAV_CASE_SEED")).expect("case seed");
    line.trim().trim_start_matches("set(NEEDLE_NAV_CASE_SEED").trim_end_matches(')').trim().parse().unwrap()
}

#[test]
fn the_shipped_case_is_the_simulated_patient_of_the_default_seed() {
    let seed = shipped_case_seed();
    let tracker = std::fs::read_to_string(root().join("config/marker_tracker.yaml")).unwrap();
    let section = node_section(&tracker, "marker_tracker").unwrap();
    assert_eq!(section.get("seed").and_then(|v| v.as_i64()), Some(seed), "marker_tracker.yaml seed");
    let sim = std::fs::read_to_string(root().join("launch/needle_nav_sim.launch.xml")).unwrap();
    let doc = roxmltree::Document::parse(&sim).unwrap();
    let arg = |name: &str| {
        doc.descendants()
            .find(|n| n.has_tag_name("arg") && n.attribute("name") == Some(name) && n.has_attribute("default"))
            .and_then(|n| n.attribute("default"))
            .map(str::to_string)
    };
    assert_eq!(arg("seed"), Some(seed.to_string()), "sim launch default seed");
    assert_eq!(arg("case_dir").as_deref(), Some("$(find-pkg-share needle_nav)/cases/digital_patient"));
    let cmake = std::fs::read_to_string(root().join("ros2/needle_nav/CMakeLists.txt")).unwrap();
    assert!(cmake.contains("share/${PROJECT_NAME}/cases/digital_patient"), "CMakeLists installs the case elsewhere");
}
