use super::*;
use crate::config::{
    build_config, embedded_default_file, node_section, IgtlBridgeConfig, LesionRegistrationConfig,
    MarkerClassifierConfig, MarkerTrackerConfig, NeedleTargetConfig, TrajectoryPlannerConfig, VesselSegmentationConfig,
};
use serde_yaml::Value;
use std::collections::BTreeSet;

/// The shipped parameter file of `kind`, loaded as at start, as (key, value) leaves.
fn shipped_keys(kind: NodeKind) -> Vec<(String, Value)> {
    fn keys<T: serde::Serialize + serde::de::DeserializeOwned + crate::config::Validate>(
        node: &str,
    ) -> Vec<(String, Value)> {
        let section = node_section(embedded_default_file(node).unwrap(), node).unwrap();
        config_keys(&build_config::<T>(node, section, &Vec::new()).unwrap()).unwrap()
    }
    let node = kind.name();
    match kind {
        NodeKind::MarkerTracker => keys::<MarkerTrackerConfig>(node),
        NodeKind::MarkerClassifier => keys::<MarkerClassifierConfig>(node),
        NodeKind::LesionRegistration => keys::<LesionRegistrationConfig>(node),
        NodeKind::NeedleTarget => keys::<NeedleTargetConfig>(node),
        NodeKind::VesselSegmentation => keys::<VesselSegmentationConfig>(node),
        NodeKind::TrajectoryPlanner => keys::<TrajectoryPlannerConfig>(node),
        NodeKind::IgtlBridge => keys::<IgtlBridgeConfig>(node),
    }
}

/// Whether the configuration of `kind` with `key` set to `value` passes the start-up checks.
fn builds(kind: NodeKind, key: &str, value: Value) -> bool {
    let node = kind.name();
    let section = node_section(embedded_default_file(node).unwrap(), node).unwrap();
    let o = vec![(key.to_string(), value)];
    match kind {
        NodeKind::MarkerTracker => build_config::<MarkerTrackerConfig>(node, section, &o).is_ok(),
        NodeKind::MarkerClassifier => build_config::<MarkerClassifierConfig>(node, section, &o).is_ok(),
        NodeKind::LesionRegistration => build_config::<LesionRegistrationConfig>(node, section, &o).is_ok(),
        NodeKind::NeedleTarget => build_config::<NeedleTargetConfig>(node, section, &o).is_ok(),
        NodeKind::VesselSegmentation => build_config::<VesselSegmentationConfig>(node, section, &o).is_ok(),
        NodeKind::TrajectoryPlanner => build_config::<TrajectoryPlannerConfig>(node, section, &o).is_ok(),
        NodeKind::IgtlBridge => build_config::<IgtlBridgeConfig>(node, section, &o).is_ok(),
    }
}

#[test]
fn every_config_key_has_exactly_one_spec_and_every_spec_a_key() {
    for kind in NodeKind::ALL {
        let specs = node_parameter_specs(kind);
        let names: Vec<&str> = specs.iter().map(|s| s.name).collect();
        let unique: BTreeSet<&str> = names.iter().copied().collect();
        assert_eq!(unique.len(), names.len(), "{}: a parameter declared twice in {names:?}", kind.name());
        let keys: BTreeSet<String> = shipped_keys(kind).into_iter().map(|(k, _)| k).collect();
        let declared: BTreeSet<String> = unique.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            keys.difference(&declared).collect::<Vec<_>>(),
            Vec::<&String>::new(),
            "{}: keys without a spec",
            kind.name()
        );
        assert_eq!(
            declared.difference(&keys).collect::<Vec<_>>(),
            Vec::<&String>::new(),
            "{}: specs without a key",
            kind.name()
        );
        for s in &specs {
            assert!(!s.description.is_empty(), "{}.{} has no description", kind.name(), s.name);
        }
    }
}

#[test]
fn shipped_values_lie_inside_their_ranges_and_have_parameter_types() {
    for kind in NodeKind::ALL {
        let specs = node_parameter_specs(kind);
        for (key, value) in shipped_keys(kind) {
            let spec = specs.iter().find(|s| s.name == key).unwrap();
            let v = ParameterValue::from_yaml(&value).unwrap_or_else(|| panic!("{key}: {value:?} has no type"));
            match (spec.range, &v) {
                (Range::None, _) => {}
                (Range::Float { min, max, .. }, ParameterValue::Double(x)) => {
                    assert!(*x >= min && *x <= max, "{}.{key} = {x} outside [{min}, {max}]", kind.name())
                }
                (Range::Integer { min, max, .. }, ParameterValue::Integer(x)) => {
                    assert!(*x >= min && *x <= max, "{}.{key} = {x} outside [{min}, {max}]", kind.name())
                }
                (r, v) => panic!("{}.{key}: range {r:?} does not fit a {}", kind.name(), v.kind()),
            }
        }
    }
}

/// The ranges say what `Validate` enforces: a value just beyond either bound is refused at start.
#[test]
fn values_just_outside_a_range_are_refused_at_start_too() {
    for kind in NodeKind::ALL {
        for spec in config_specs(kind) {
            let outside: Vec<Value> = match spec.range {
                Range::None => continue,
                Range::Float { min, max, .. } => {
                    let d = ((max - min) * 1e-6).max(1e-9);
                    vec![Value::from(min - d), Value::from(max + d)]
                }
                Range::Integer { min, max, .. } => {
                    [min.checked_sub(1), max.checked_add(1)].into_iter().flatten().map(Value::from).collect()
                }
            };
            for v in outside {
                // Beyond an unsigned type's limits serde refuses it, which is a refusal too.
                assert!(!builds(kind, spec.name, v.clone()), "{}.{} = {v:?} was accepted", kind.name(), spec.name);
            }
        }
    }
}

fn needle_target() -> ParameterStore<NeedleTargetConfig> {
    let standard: Vec<_> = STANDARD_PARAMETERS.iter().map(|p| (p.spec.clone(), p.default.clone())).collect();
    ParameterStore::new(
        "needle_target",
        NeedleTargetConfig::default(),
        &node_parameter_specs(NodeKind::NeedleTarget),
        &standard,
    )
    .unwrap()
}

fn set(name: &str, v: ParameterValue) -> Vec<(String, ParameterValue)> {
    vec![(name.to_string(), v)]
}

#[test]
fn listing_follows_prefixes_and_depth() {
    let s = needle_target();
    // needle_target: 16 top-level keys, 6 sample checks, 5 + 3 diagnostics thresholds (inputs,
    // targets), and the runtime's use_sim_time and autostart.
    let all = s.list(&[], 0);
    assert_eq!(all.names.len(), 16 + 6 + 5 + 3 + 2);
    let mut prefixes = all.prefixes.clone();
    prefixes.sort();
    assert_eq!(prefixes, vec!["diagnostics.inputs", "diagnostics.targets", "sample_checks"]);
    let top = s.list(&[], 1);
    assert_eq!(top.names.len(), 16 + 2);
    assert!(top.names.iter().all(|n| !n.contains('.')) && top.prefixes.is_empty());
    let checks = s.list(&["sample_checks".into()], 1);
    assert_eq!(checks.names.len(), 6);
    assert!(checks.names.contains(&"sample_checks.max_markers".to_string()));
    assert_eq!(s.list(&["sample".into()], 0).names, Vec::<String>::new(), "a prefix is a whole name part");
    assert_eq!(s.list(&["frame_id".into()], 1).names, vec!["frame_id".to_string()]);
}

#[test]
fn describe_and_get_show_the_spec_and_the_value() {
    let s = needle_target();
    let (spec, kind) = s.describe("deviation_tolerance_m").unwrap();
    assert_eq!(kind, ParameterType::Double);
    assert_eq!(spec.mutability, Mutability::Dynamic);
    assert_eq!(spec.range, Range::Float { min: 0.0, max: 0.1, step: 0.0 });
    assert!(spec.full_description().ends_with("[m]"));
    assert_eq!(s.get("deviation_tolerance_m"), Some(&ParameterValue::Double(0.005)));
    assert_eq!(s.get("sample_checks.max_markers"), Some(&ParameterValue::Integer(64)));
    assert_eq!(s.get("prediction"), Some(&ParameterValue::String("autoregressive".into())));
    assert_eq!(
        s.describe("use_sim_time").map(|(s, t)| (s.mutability, t)),
        Some((Mutability::ReadOnly, ParameterType::Bool))
    );
    assert_eq!(s.get("nope"), None);
}

#[test]
fn an_accepted_set_changes_the_value_and_the_configuration() {
    let mut s = needle_target();
    let a = s.set_atomically(set("deviation_tolerance_m", ParameterValue::Double(0.01))).unwrap();
    assert_eq!(a.config.deviation_tolerance_m, 0.01);
    assert_eq!(a.changed, set("deviation_tolerance_m", ParameterValue::Double(0.01)));
    assert_eq!(s.get("deviation_tolerance_m"), Some(&ParameterValue::Double(0.01)));
    // An integer for a double, as the parameter file reads `2`: stored as 2.0.
    let a = s.set_atomically(set("stale_after_periods", ParameterValue::Integer(2))).unwrap();
    assert_eq!(a.config.stale_after_periods, 2.0);
    assert_eq!(s.get("stale_after_periods"), Some(&ParameterValue::Double(2.0)));
    let a = s.set_atomically(set("sample_checks.max_markers", ParameterValue::Integer(8))).unwrap();
    assert_eq!(a.config.sample_checks.max_markers, 8);
    assert_eq!(s.config().sample_checks.max_markers, 8);
}

#[test]
fn refused_sets_say_why_and_change_nothing() {
    let mut s = needle_target();
    let before = s.config().clone();
    let r = |s: &mut ParameterStore<NeedleTargetConfig>, name: &str, v| s.set_atomically(set(name, v)).unwrap_err();
    assert_eq!(r(&mut s, "nope", ParameterValue::Bool(true)), SetRefused::Unknown("nope".into()));
    assert_eq!(r(&mut s, "frame_id", ParameterValue::String("x".into())), SetRefused::ReadOnly("frame_id".into()));
    assert_eq!(r(&mut s, "use_sim_time", ParameterValue::Bool(true)), SetRefused::ReadOnly("use_sim_time".into()));
    assert_eq!(
        r(&mut s, "deviation_tolerance_m", ParameterValue::String("big".into())),
        SetRefused::WrongType {
            name: "deviation_tolerance_m".into(),
            expected: ParameterType::Double,
            given: ParameterType::String
        }
    );
    // A double where an integer is declared is not rounded.
    assert!(matches!(
        r(&mut s, "sample_checks.max_markers", ParameterValue::Double(8.0)),
        SetRefused::WrongType { .. }
    ));
    let e = r(&mut s, "gate_surrogate", ParameterValue::Double(1.5));
    assert_eq!(e.to_string(), "parameter `gate_surrogate`: 1.5 is outside [0, 1]");
    // Inside the range but refused by the start-up check (> 0), with its words.
    let e = r(&mut s, "deviation_tolerance_m", ParameterValue::Double(0.0));
    assert!(matches!(&e, SetRefused::Invalid { key, .. } if key == "deviation_tolerance_m"), "{e}");
    assert_eq!(s.config(), &before);
    assert_eq!(s.get("deviation_tolerance_m"), Some(&ParameterValue::Double(0.005)));
}

#[test]
fn cross_field_rules_are_checked_on_the_resulting_configuration() {
    let mut s = ParameterStore::new(
        "marker_classifier",
        MarkerClassifierConfig::default(),
        &node_parameter_specs(NodeKind::MarkerClassifier),
        &[],
    )
    .unwrap();
    // threshold 3 mm: a hysteresis of 4 mm is inside its range but above the threshold.
    let e = s.set_atomically(set("hysteresis_m", ParameterValue::Double(0.004))).unwrap_err();
    assert!(matches!(&e, SetRefused::Invalid { key, .. } if key == "hysteresis_m"), "{e}");
    // Raising the threshold in the same atomic set makes it valid.
    let both = vec![
        ("threshold_m".to_string(), ParameterValue::Double(0.005)),
        ("hysteresis_m".to_string(), ParameterValue::Double(0.004)),
    ];
    let a = s.set_atomically(both).unwrap();
    assert_eq!((a.config.threshold_m, a.config.hysteresis_m), (0.005, 0.004));
}

#[test]
fn atomic_sets_are_all_or_nothing_and_plain_sets_one_by_one() {
    let mut s = needle_target();
    let changes = vec![
        ("deviation_tolerance_m".to_string(), ParameterValue::Double(0.01)),
        ("gate_surrogate".to_string(), ParameterValue::Double(2.0)),
    ];
    assert!(s.set_atomically(changes.clone()).is_err());
    assert_eq!(s.config().deviation_tolerance_m, 0.005);
    let (results, applied) = s.set_each(changes);
    assert!(results[0].is_ok());
    assert!(matches!(results[1], Err(SetRefused::OutOfRange { .. })));
    let applied = applied.unwrap();
    assert_eq!(applied.changed, set("deviation_tolerance_m", ParameterValue::Double(0.01)));
    assert_eq!(applied.config.deviation_tolerance_m, 0.01);
    assert_eq!(s.config().gate_surrogate, 0.15);
}

#[test]
fn a_config_key_without_a_spec_is_an_error() {
    let specs: Vec<ParameterSpec> =
        node_parameter_specs(NodeKind::NeedleTarget).into_iter().filter(|s| s.name != "gate_surrogate").collect();
    let e = ParameterStore::new("needle_target", NeedleTargetConfig::default(), &specs, &[]).unwrap_err();
    assert_eq!(e, StoreError::Undeclared { node: "needle_target".into(), key: "gate_surrogate".into() });
}

/// A valid new value for a dynamic parameter: half-way from the default to the range's top.
fn changed(spec: &ParameterSpec, v: &ParameterValue) -> ParameterValue {
    match (spec.range, v) {
        (Range::Float { max, .. }, ParameterValue::Double(x)) => ParameterValue::Double((x + (x * 2.0).min(max)) / 2.0),
        (Range::Integer { max, .. }, ParameterValue::Integer(x)) => ParameterValue::Integer((x + 1).min(max)),
        (r, v) => panic!("{}: no new value for {v:?} in {r:?}", spec.name),
    }
}

/// Sets every dynamic parameter of a node through its store, applies the result to the node's
/// machine and checks that the machine now holds exactly the store's configuration: a dynamic
/// parameter the machine does not take on would show as a difference.
fn every_dynamic_parameter_reaches<T, M>(
    kind: NodeKind,
    config: T,
    mut machine: M,
    apply: impl Fn(&mut M, &T),
    held: impl Fn(&M) -> T,
) where
    T: serde::Serialize + serde::de::DeserializeOwned + crate::config::Validate + Clone + PartialEq + std::fmt::Debug,
{
    let specs = node_parameter_specs(kind);
    let mut store = ParameterStore::new(kind.name(), config, &specs, &[]).unwrap();
    // The configuration's own run-time parameters; diagnostics thresholds reach the diagnostics
    // code through the node's configuration updates, not the machine.
    let changes: Vec<(String, ParameterValue)> = config_specs(kind)
        .iter()
        .filter(|s| s.mutability == Mutability::Dynamic)
        .map(|s| (s.name.to_string(), changed(s, store.get(s.name).unwrap())))
        .collect();
    assert!(!changes.is_empty());
    let applied = store.set_atomically(changes.clone()).unwrap();
    assert_eq!(applied.changed.len(), changes.len());
    apply(&mut machine, &applied.config);
    assert_eq!(held(&machine), applied.config, "{}", kind.name());
}

#[test]
fn every_dynamic_parameter_reaches_the_running_machine() {
    use crate::{lesion_registration::*, marker_classifier::*, needle_target::*};
    let c = NeedleTargetConfig::default();
    every_dynamic_parameter_reaches(
        NodeKind::NeedleTarget,
        c.clone(),
        NeedleTargetMachine::new(c, BaselineFile::Off, StateFile::Off),
        NeedleTargetMachine::apply_dynamic,
        |m| m.config().clone(),
    );
    let c = LesionRegistrationConfig::default();
    every_dynamic_parameter_reaches(
        NodeKind::LesionRegistration,
        c.clone(),
        LesionRegistrationMachine::new(c, "tracker"),
        LesionRegistrationMachine::apply_dynamic,
        |m| m.config().clone(),
    );
    let c = MarkerClassifierConfig::default();
    every_dynamic_parameter_reaches(
        NodeKind::MarkerClassifier,
        c.clone(),
        MarkerClassifierMachine::new(c, None),
        MarkerClassifierMachine::apply_dynamic,
        |m| m.config().clone(),
    );
}
