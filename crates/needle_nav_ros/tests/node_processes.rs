//! Real node processes on a private ROS domain, observed by an r2r probe node in this
//! process. Waits are for discovery and messages (with deadlines), never fixed sleeps.

mod common;

use common::{join_private_domain, run_to_exit, serial, NodeProcess};
use futures::{FutureExt, StreamExt};
use needle_nav_core::interfaces::{MARKERS, REGISTRATION, TARGET};
use needle_nav_ros::{msg, qos};
use std::time::{Duration, Instant};

const TRACKER: &str = env!("CARGO_BIN_EXE_marker_tracker");
const TARGET_NODE: &str = env!("CARGO_BIN_EXE_needle_target");
const REGISTRATION_NODE: &str = env!("CARGO_BIN_EXE_lesion_registration");
const CLASSIFIER: &str = env!("CARGO_BIN_EXE_marker_classifier");
const STACK: &str = env!("CARGO_BIN_EXE_needle_nav_stack");
const ALL_SINGLE: [&str; 6] = [
    env!("CARGO_BIN_EXE_marker_tracker"),
    env!("CARGO_BIN_EXE_marker_classifier"),
    env!("CARGO_BIN_EXE_lesion_registration"),
    env!("CARGO_BIN_EXE_needle_target"),
    env!("CARGO_BIN_EXE_vessel_segmentation"),
    env!("CARGO_BIN_EXE_trajectory_planner"),
];
const DISCOVERY: Duration = Duration::from_secs(30);

fn probe(name: &str) -> r2r::Node {
    join_private_domain();
    let ctx = r2r::Context::create().expect("ROS context");
    r2r::Node::create(ctx, name, "").expect("probe node")
}

/// Spins `node` and drains `stream` until `done` holds for what arrived, or the deadline.
fn collect<T, S>(node: &mut r2r::Node, stream: &mut S, timeout: Duration, done: impl Fn(&[T]) -> bool) -> Vec<T>
where
    S: futures::Stream<Item = T> + Unpin,
{
    let mut got = Vec::new();
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline && !done(&got) {
        node.spin_once(Duration::from_millis(10));
        while let Some(Some(m)) = stream.next().now_or_never() {
            got.push(m);
        }
    }
    got
}

#[test]
fn tracker_streams_markers_and_target_is_published_invalid_with_its_reason() {
    let _serial = serial();
    let mut node = probe("probe_stream");
    let mut markers = node.subscribe::<msg::TrackedMarkerArray>(MARKERS.name, qos::profile(MARKERS.qos)).unwrap();
    let mut targets = node.subscribe::<msg::NeedleTarget>(TARGET.name, qos::profile(TARGET.qos)).unwrap();

    let _tracker = NodeProcess::start(
        TRACKER,
        &["--ros-args", "-p", "rate_hz:=100.0", "-p", "dropout_probability:=0.0", "-p", "occlusion_rate_per_min:=0.0"],
    );
    let _target = NodeProcess::start(TARGET_NODE, &[]);
    let _registration = NodeProcess::start(REGISTRATION_NODE, &[]);

    let samples = collect(&mut node, &mut markers, DISCOVERY, |g| g.len() >= 120);
    assert!(samples.len() >= 120, "only {} tracker samples", samples.len());
    let first = &samples[samples.len() - 100];
    let last = &samples[samples.len() - 1];
    let span = (needle_nav_ros::convert::time_to_ns(&last.header.stamp)
        - needle_nav_ros::convert::time_to_ns(&first.header.stamp)) as f64
        * 1e-9;
    let rate = 99.0 / span;
    assert!((80.0..120.0).contains(&rate), "tracker rate {rate} Hz, configured 100 Hz");
    assert_eq!(last.header.frame_id, "tracker");
    assert_eq!(last.markers.len(), 12);
    assert!(last.markers.iter().all(|m| m.position.x.is_finite() && m.visible));
    // Sequence numbers count up without repeats.
    assert!(samples.windows(2).all(|w| w[1].sequence > w[0].sequence));

    // Until the registration node's status arrives the reason is "no registration received";
    // after it, the reason must carry the registration's own explanation.
    let explained = |t: &msg::NeedleTarget| {
        t.reason_code == msg::NeedleTarget::REASON_NO_REGISTRATION as u8 && t.reason.contains("ct_case_dir")
    };
    let got = collect(&mut node, &mut targets, DISCOVERY, |g: &[msg::NeedleTarget]| g.iter().any(explained));
    let t = got
        .iter()
        .find(|t| explained(t))
        .unwrap_or_else(|| panic!("no target explaining the missing registration among {} targets", got.len()));
    assert!(!t.valid);
    assert!(got.iter().all(|t| !t.valid), "a target was published as valid without a registration");
    assert_ne!(t.source_stamp.sec, 0, "target must carry its tracker sample's stamp");

    // A late joiner still receives the latched registration status.
    let mut regs =
        node.subscribe::<msg::LesionRegistration>(REGISTRATION.name, qos::profile(REGISTRATION.qos)).unwrap();
    let r = collect(&mut node, &mut regs, DISCOVERY, |g| !g.is_empty());
    assert_eq!(r.first().map(|r| r.status), Some(msg::LesionRegistration::STATUS_NO_IMAGE_DATA as u8));
}

#[test]
fn target_turns_stale_when_the_tracker_stops_and_nan_input_is_refused() {
    let _serial = serial();
    let mut node = probe("probe_stale");
    let mut targets = node.subscribe::<msg::NeedleTarget>(TARGET.name, qos::profile(TARGET.qos)).unwrap();
    let markers_pub =
        node.create_publisher::<msg::TrackedMarkerArray>(MARKERS.name, qos::profile(MARKERS.qos)).unwrap();
    let mut target = NodeProcess::start(TARGET_NODE, &["--ros-args", "-p", "tracker_rate_hz:=100.0"]);
    let mut tracker = NodeProcess::start(TRACKER, &["--ros-args", "-p", "rate_hz:=100.0"]);

    let is = |code: u32| move |g: &[msg::NeedleTarget]| g.iter().any(|t| t.reason_code == code as u8);
    let got = collect(&mut node, &mut targets, DISCOVERY, is(msg::NeedleTarget::REASON_NO_REGISTRATION as u32));
    assert!(is(msg::NeedleTarget::REASON_NO_REGISTRATION as u32)(&got), "no live targets");

    tracker.signal(libc::SIGTERM);
    assert_eq!(tracker.wait_exit(Duration::from_secs(5)).and_then(|s| s.code()), Some(0));
    let got = collect(&mut node, &mut targets, Duration::from_secs(5), is(msg::NeedleTarget::REASON_STALE_DATA as u32));
    let stale = got.iter().find(|t| t.reason_code == msg::NeedleTarget::REASON_STALE_DATA as u8);
    assert!(stale.is_some_and(|t| !t.valid && t.reason.contains("stale")), "no STALE target after the tracker stopped");

    // A sample with a NaN coordinate: the node says so and keeps running.
    let mut sample = msg::TrackedMarkerArray::default();
    sample.header.frame_id = "tracker".into();
    sample.markers.push(msg::TrackedMarker { id: 4, visible: true, ..Default::default() });
    sample.markers[0].position.y = f64::NAN;
    let deadline = Instant::now() + DISCOVERY;
    let mut seen = false;
    while Instant::now() < deadline && !seen {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        sample.header.stamp = needle_nav_ros::convert::ns_to_time(now.as_nanos() as i64);
        markers_pub.publish(&sample).unwrap();
        let got = collect(
            &mut node,
            &mut targets,
            Duration::from_millis(100),
            is(msg::NeedleTarget::REASON_INVALID_INPUT as u32),
        );
        seen = got.iter().any(|t| {
            t.reason_code == msg::NeedleTarget::REASON_INVALID_INPUT as u8 && t.reason.contains("[4]") && !t.valid
        });
    }
    assert!(seen, "NaN input was not reported as invalid input:\n{}", target.log());
    assert!(target.wait_exit(Duration::from_millis(10)).is_none(), "needle_target died on NaN input");
}

#[test]
fn bad_parameters_stop_the_node_with_an_error_naming_the_key() {
    let _serial = serial();
    let cases: [(&[&str], &str); 4] = [
        (&["--ros-args", "-p", "rate_hz:=-3.0"], "`rate_hz`"),
        (&["--ros-args", "-p", "rate_hzz:=3.0"], "`rate_hzz`"),
        (&["--ros-args", "-p", "source:=camera"], "`source`"),
        (&["--ros-args", "-p", "noise_rms_m:=fast"], "`noise_rms_m`"),
    ];
    for (args, key) in cases {
        let (code, log) = run_to_exit(TRACKER, args, Duration::from_secs(10));
        assert_eq!(code, Some(2), "{args:?} should fail with exit code 2:\n{log}");
        assert!(
            log.contains(&format!("marker_tracker: parameter {key}")),
            "{args:?}: error does not name {key}:\n{log}"
        );
    }
    let (code, log) = run_to_exit(CLASSIFIER, &["--bogus-flag"], Duration::from_secs(10));
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains("--bogus-flag"), "{log}");

    // Regression: rcl's parser errors became a panic with a backtrace inside r2r (exit 101), and a
    // misspelled node section in a parameter file was silently ignored.
    let dir = std::env::temp_dir().join(format!("nn_params_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().to_string()
    };
    let malformed = file("malformed.yaml", "needle_target:\n  ros__parameters:\n    robot_latency_s: [0.1,\n");
    let misspelled = file("misspelled.yaml", "needle_targt:\n  ros__parameters:\n    robot_latency_s: 0.1\n");
    let flat = file("flat.yaml", "needle_target:\n  robot_latency_s: 0.1\n");
    let cases: [(&[&str], &str); 5] = [
        (&["--ros-args", "-p", "robot_latency_s"], "`-p robot_latency_s`: a parameter needs `name:=value`"),
        (&["--ros-args", "--params-file", &malformed], "malformed.yaml"),
        (&["--ros-args", "--params-file", &misspelled], "did you mean `needle_target`"),
        (&["--ros-args", "--params-file", &flat], "neither a node section"),
        (&["--ros-args", "--params-file", "/no/such/params.yaml"], "/no/such/params.yaml"),
    ];
    for (args, expect) in cases {
        let (code, log) = run_to_exit(TARGET_NODE, args, Duration::from_secs(10));
        assert_eq!(code, Some(2), "{args:?} should fail with exit code 2:\n{log}");
        assert!(log.contains(expect), "{args:?}: error does not say `{expect}`:\n{log}");
        assert!(!log.contains("panicked") && !log.contains("RUST_BACKTRACE"), "{args:?} panicked:\n{log}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_executable_stops_cleanly_on_sigint_and_sigterm() {
    let _serial = serial();
    let mut all: Vec<&str> = ALL_SINGLE.to_vec();
    all.push(STACK);
    for (i, exe) in all.iter().enumerate() {
        let mut p = NodeProcess::start(exe, &[]);
        p.wait_for_log("started", DISCOVERY);
        let sig = if i % 2 == 0 { libc::SIGINT } else { libc::SIGTERM };
        p.signal(sig);
        let status = p.wait_exit(Duration::from_secs(5));
        assert_eq!(status.and_then(|s| s.code()), Some(0), "{exe} after signal {sig}:\n{}", p.log());
        assert!(p.log().contains("stopped cleanly"), "{exe}:\n{}", p.log());
    }
    // The OpenIGTLink bridge with no tracker to reach (it keeps retrying) and Slicer off (no port
    // to listen on): a stop ends its retry loop too.
    let bridge = env!("CARGO_BIN_EXE_igtl_bridge");
    let mut p = NodeProcess::start(bridge, &["--ros-args", "-p", "slicer_enabled:=false", "-p", "tracker.port:=9"]);
    p.wait_for_log("retrying with back-off", DISCOVERY);
    p.signal(libc::SIGINT);
    let status = p.wait_exit(Duration::from_secs(5));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "igtl_bridge after SIGINT:\n{}", p.log());
    assert!(p.log().contains("stopped cleanly"), "igtl_bridge:\n{}", p.log());
}

/// Regression: SIGINT while the vessel model is still loading on its worker thread used to end the
/// process with a segmentation fault in ONNX Runtime's teardown (3 of 20 tries); the runtime now
/// waits for the worker before exiting.
#[test]
fn segmentation_stops_cleanly_even_while_its_model_loads() {
    let _serial = serial();
    for _ in 0..10 {
        let mut p = NodeProcess::start(env!("CARGO_BIN_EXE_vessel_segmentation"), &[]);
        p.wait_for_log("started", DISCOVERY);
        p.signal(libc::SIGINT);
        let status = p.wait_exit(Duration::from_secs(10));
        assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", p.log());
    }
}
