//! Process plumbing shared by every executable: logging, the ROS context, one spin thread
//! per node, node tasks on a tokio runtime, and clean shutdown on SIGINT/SIGTERM.

use crate::context::ExitWaits;
pub use crate::context::{NodeContext, NodeError, RosContext};
use crate::lifecycle_server::SharedNode;
use needle_nav_core::interfaces::NodeKind;
use needle_nav_core::run_timeline::{secs, ClockStart, RunClock};
use needle_nav_nodes::config::ConfigError;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Options of the executables, given before `--ros-args`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOptions {
    /// Stop by itself after this long (demos, tests).
    pub run_for: Option<Duration>,
    /// Start the `run_for` clock only when the trajectory planner has published its finished plan,
    /// waiting at most this long for it (the demo: guidance is judged after planning).
    pub plan_wait: Option<Duration>,
    /// Also run a monitor and print what the stack did at the end.
    pub summary: bool,
    /// Host only these nodes (all-in-one executable; empty list: only the monitor).
    pub only: Option<Vec<NodeKind>>,
    /// Record every topic the nodes publish into this new bag folder.
    pub record: Option<std::path::PathBuf>,
    /// Record only these topics (fully qualified); empty: all.
    pub record_topics: Vec<String>,
    /// Play this bag into the nodes, then stop `linger` after its last message.
    pub play: Option<std::path::PathBuf>,
    pub play_rate: f64,
    /// Publish /clock from the bag (nodes need use_sim_time:=true).
    pub play_clock: bool,
    /// Play only these topics (fully qualified); empty: all.
    pub play_topics: Vec<String>,
    /// Publish each tracker sample only after needle_target answered the previous one (lossless replay).
    pub play_lockstep: bool,
    pub linger: Duration,
    /// Write summary.txt, report.md and plan.png into this folder at the end (with --summary).
    pub report: Option<std::path::PathBuf>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            run_for: None,
            plan_wait: None,
            summary: false,
            only: None,
            record: None,
            record_topics: Vec::new(),
            play: None,
            play_rate: 1.0,
            play_clock: false,
            play_topics: Vec::new(),
            play_lockstep: false,
            linger: Duration::from_secs(2),
            report: None,
        }
    }
}

impl RunOptions {
    /// Parses the arguments before `--ros-args` (everything after belongs to ROS).
    pub fn parse(args: &[String]) -> Result<RunOptions, String> {
        let mut opts = RunOptions::default();
        let mut it = args.iter().skip(1).take_while(|a| a.as_str() != "--ros-args");
        while let Some(a) = it.next() {
            match a.as_str() {
                "--run-for" => {
                    let v = it.next().ok_or("--run-for needs seconds")?;
                    let s: f64 = v.parse().map_err(|_| format!("--run-for: `{v}` is not a number of seconds"))?;
                    if !(s.is_finite() && s > 0.0) {
                        return Err(format!("--run-for: {s} must be > 0"));
                    }
                    opts.run_for = Some(Duration::from_secs_f64(s));
                }
                "--plan-wait" => {
                    let v = it.next().ok_or("--plan-wait needs seconds")?;
                    let s: f64 = v.parse().map_err(|_| format!("--plan-wait: `{v}` is not a number of seconds"))?;
                    if !(s.is_finite() && s > 0.0) {
                        return Err(format!("--plan-wait: {s} must be > 0"));
                    }
                    opts.plan_wait = Some(Duration::from_secs_f64(s));
                }
                "--summary" => opts.summary = true,
                "--only" => {
                    let v = it.next().ok_or("--only needs a comma-separated list of nodes (or none)")?;
                    let mut kinds = Vec::new();
                    for name in v.split(',').filter(|n| !n.is_empty() && *n != "none") {
                        kinds.push(NodeKind::from_name(name).ok_or_else(|| format!("--only: no node `{name}`"))?);
                    }
                    opts.only = Some(kinds);
                }
                "--record" => opts.record = Some(it.next().ok_or("--record needs a new bag folder")?.into()),
                "--record-topics" => {
                    let v = it.next().ok_or("--record-topics needs a comma-separated list of topics")?;
                    opts.record_topics = v.split(',').filter(|t| !t.is_empty()).map(super::bag_io::qualified).collect();
                    let known: Vec<String> = needle_nav_core::interfaces::published_topics()
                        .iter()
                        .map(|e| super::bag_io::qualified(e.name))
                        .collect();
                    if let Some(bad) = opts.record_topics.iter().find(|t| !known.contains(t)) {
                        return Err(format!("--record-topics: {bad} is not a needle_nav topic ({})", known.join(", ")));
                    }
                }
                "--play" => opts.play = Some(it.next().ok_or("--play needs a bag folder")?.into()),
                "--rate" => {
                    let v = it.next().ok_or("--rate needs a factor")?;
                    let r: f64 = v.parse().map_err(|_| format!("--rate: `{v}` is not a number"))?;
                    if !(r.is_finite() && r > 0.0 && r <= 1000.0) {
                        return Err(format!("--rate: {r} must be in (0, 1000]"));
                    }
                    opts.play_rate = r;
                }
                "--clock" => opts.play_clock = true,
                "--lockstep" => opts.play_lockstep = true,
                "--topics" => {
                    let v = it.next().ok_or("--topics needs a comma-separated list of topics")?;
                    opts.play_topics = v.split(',').filter(|t| !t.is_empty()).map(super::bag_io::qualified).collect();
                }
                "--linger" => {
                    let v = it.next().ok_or("--linger needs seconds")?;
                    let s: f64 = v.parse().map_err(|_| format!("--linger: `{v}` is not a number of seconds"))?;
                    if !(s.is_finite() && s >= 0.0) {
                        return Err(format!("--linger: {s} must be >= 0"));
                    }
                    opts.linger = Duration::from_secs_f64(s);
                }
                "--report" => opts.report = Some(it.next().ok_or("--report needs a folder")?.into()),
                "-h" | "--help" => return Err(String::new()),
                other => return Err(format!("unknown option `{other}`")),
            }
        }
        if opts.plan_wait.is_some() && opts.run_for.is_none() {
            return Err("--plan-wait needs --run-for (it delays when the --run-for clock starts)".into());
        }
        Ok(opts)
    }

    /// The run's stop rule.
    pub fn clock(&self) -> RunClock {
        RunClock { run_for: self.run_for, plan_wait: self.plan_wait }
    }
}

pub use needle_nav_nodes::logging::init_tracing;

fn usage(program: &str) -> String {
    format!(
        "usage: {program} [--run-for SECONDS [--plan-wait SECONDS]] [--summary [--report DIR]] [--only NODE,NODE|none]\n\
         \x20      [--record NEW_BAG_DIR [--record-topics T,T]] [--play BAG_DIR [--rate R] [--clock] [--lockstep] [--topics T,T] [--linger SECONDS]]\n\
         \x20      [--ros-args --params-file FILE -p key:=value ...]\n\
         Parameters default to config/<node>.yaml ($NEEDLE_NAV_CONFIG_DIR or the installed share/needle_nav/config).\n\
         --record writes a rosbag2 (MCAP) bag of every topic the nodes publish; --play publishes a bag's\n\
         messages with their recorded spacing (/clock with --clock: run the nodes with -p use_sim_time:=true)\n\
         and stops the process --linger seconds (default 2) after its last message. --lockstep publishes each\n\
         tracker sample only after needle_target answered the previous one (lossless replay under load; exit 1\n\
         when an answer does not come within 30 s). --plan-wait W starts the --run-for clock when the trajectory\n\
         planner has published its finished plan (any status but pending), or after W seconds without one."
    )
}

/// Entry point of a single-node executable.
pub fn main_single(kind: NodeKind) -> ExitCode {
    main_nodes(&[kind])
}

/// Entry point hosting `kinds` in one process.
pub fn main_nodes(kinds: &[NodeKind]) -> ExitCode {
    let _log = init_tracing();
    let args: Vec<String> = std::env::args().collect();
    let program = args.first().cloned().unwrap_or_default();
    let opts = match RunOptions::parse(&args) {
        Ok(o) => o,
        Err(msg) if msg.is_empty() => {
            needle_nav_nodes::logging::print_line(&usage(&program));
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("{msg}\n{}", usage(&program));
            return ExitCode::from(2);
        }
    };
    match run(kinds, &opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ NodeError::Config(_)) => {
            tracing::error!("{e}");
            ExitCode::from(2)
        }
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(1)
        }
    }
}

/// The ROS context. rcl refuses arguments our own check let through with an error that r2r
/// turns into a panic: caught here and reported as a bad argument (exit 2), without a backtrace.
pub(crate) fn create_context() -> Result<r2r::Context, NodeError> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let created = std::panic::catch_unwind(r2r::Context::create);
    std::panic::set_hook(hook);
    match created {
        Ok(ctx) => ctx.ros("cannot initialise ROS 2"),
        Err(payload) => {
            let text = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown error".into());
            Err(NodeError::Config(ConfigError::BadRosArgs(format!("ROS 2 refused the arguments: {text}"))))
        }
    }
}

/// How long an orderly shutdown may take before the process ends itself (exit code 1).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Watches SIGINT/SIGTERM and the run time limit on a thread of its own and asks the process to
/// stop; a second signal ends the process at once (exit 1), and so does a shutdown that takes
/// longer than [`SHUTDOWN_GRACE`].
fn start_stop_watch(
    stop_tx: watch::Sender<bool>,
    clock: RunClock,
    started: Instant,
    plan_done: Arc<OnceLock<Duration>>,
) -> Result<(), NodeError> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let signalled = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let requested = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        // Registered first: a signal while a stop is already requested exits at once.
        signal_hook::flag::register_conditional_shutdown(sig, 1, requested.clone())
            .and_then(|_| signal_hook::flag::register_usize(sig, signalled.clone(), sig as usize))
            .and_then(|_| signal_hook::flag::register(sig, requested.clone()))
            .map_err(|e| NodeError::Runtime(format!("cannot install SIGINT/SIGTERM handlers: {e}")))?;
    }
    std::thread::Builder::new()
        .name("needle_nav_stop".into())
        .spawn(move || {
            let mut clock_started = false;
            loop {
                if requested.load(Ordering::SeqCst) {
                    match signalled.load(Ordering::SeqCst) as i32 {
                        SIGINT => tracing::info!("SIGINT: shutting down"),
                        SIGTERM => tracing::info!("SIGTERM: shutting down"),
                        _ => tracing::info!("shutting down"),
                    }
                    break;
                }
                let (elapsed, plan) = (started.elapsed(), plan_done.get().copied());
                if !clock_started && clock.plan_wait.is_some() {
                    // Said once, so that the log shows when the judged run time began.
                    match clock.start(elapsed, plan) {
                        Some(ClockStart::PlanFinished(t)) => {
                            tracing::info!("plan published after {}: the run time starts now", secs(t));
                            clock_started = true;
                        }
                        Some(ClockStart::PlanWaitOver(t)) => {
                            tracing::warn!("no finished plan within --plan-wait {}: the run time starts now", secs(t));
                            clock_started = true;
                        }
                        _ => {}
                    }
                }
                if clock.over(elapsed, plan) {
                    tracing::info!("run time over: shutting down");
                    requested.store(true, Ordering::SeqCst);
                    break;
                }
                if *stop_tx.borrow() {
                    requested.store(true, Ordering::SeqCst); // stopped from inside (bag finished)
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = stop_tx.send(true);
            std::thread::sleep(SHUTDOWN_GRACE);
            tracing::error!("shutdown did not finish within {SHUTDOWN_GRACE:?}: ending the process");
            // Give the log thread a moment, then end without running exit handlers (they may be what hangs).
            std::thread::sleep(Duration::from_millis(200));
            // SAFETY: _exit ends the process immediately; nothing is touched afterwards.
            unsafe { libc::_exit(1) }
        })
        .map_err(|e| NodeError::Runtime(format!("cannot start the stop thread: {e}")))?;
    Ok(())
}

/// Starts the nodes, spins them until SIGINT/SIGTERM (or `run_for`), then shuts down.
pub fn run(kinds: &[NodeKind], opts: &RunOptions) -> Result<(), NodeError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("needle_nav")
        .build()
        .map_err(|e| NodeError::Runtime(format!("cannot start the tokio runtime: {e}")))?;
    let args: Vec<String> = std::env::args().collect();
    let our_nodes: Vec<&str> = NodeKind::ALL.iter().map(|k| k.name()).collect();
    needle_nav_nodes::config::ros_args::check(&args, &our_nodes)?;
    let ctx = create_context()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_flag = Arc::new(AtomicBool::new(false));

    // Signals and the optional run time limit both end the process the same way. They are
    // watched by a plain thread, not a task: a stop must work even when every runtime worker is
    // stuck, and a stop that does not finish within SHUTDOWN_GRACE ends the process anyway.
    let started = Instant::now();
    // When the finished plan was seen (for --plan-wait), relative to `started`.
    let plan_done: Arc<OnceLock<Duration>> = Arc::new(OnceLock::new());
    start_stop_watch(stop_tx.clone(), opts.clock(), started, plan_done.clone())?;

    let mut spinners = Vec::new();
    let mut monitor = None;
    let mut recorder = None;
    let mut nodes_to_spin = Vec::new();
    // A replay that could not deliver every sample ends the process with an error.
    let play_failure: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    // Every node of the process: its ROS clock follows /clock when use_sim_time:=true.
    // What nodes ask the process to wait for before it exits (the segmentation workers).
    let exit_waits = ExitWaits::default();
    let make_node = |name: &str| -> Result<(r2r::Node, NodeContext), NodeError> {
        let mut node = r2r::Node::create(ctx.clone(), name, "").ros(format!("cannot create node {name}"))?;
        if super::params::use_sim_time(&node) {
            node.get_time_source().enable_sim_time(&mut node).ros(format!("{name}: cannot follow /clock"))?;
            tracing::info!(node = name, "use_sim_time: the node's clock follows /clock");
        }
        let cx = NodeContext::new(name, rt.handle().clone(), stop_rx.clone(), node.get_ros_clock(), exit_waits.clone());
        Ok((node, cx))
    };
    // The bag node comes first, so that the recorder hears the nodes' first messages.
    if opts.record.is_some() || opts.play.is_some() {
        let (mut node, cx) = make_node("needle_nav_bag")?;
        if let Some(dir) = &opts.record {
            let topics: Vec<_> = needle_nav_core::interfaces::published_topics()
                .into_iter()
                .filter(|e| {
                    opts.record_topics.is_empty() || opts.record_topics.contains(&super::bag_io::qualified(e.name))
                })
                .collect();
            recorder = Some(super::bag_io::Recorder::start(&mut node, &cx, dir, &topics)?);
        }
        if let Some(dir) = &opts.play {
            let play = super::bag_io::PlayOptions {
                rate: opts.play_rate,
                clock: opts.play_clock,
                topics: opts.play_topics.clone(),
                start_delay: Duration::from_secs(1),
                lockstep: opts.play_lockstep.then_some(super::bag_io::LOCKSTEP_TIMEOUT),
            };
            let (stop_tx, linger, failure) = (stop_tx.clone(), opts.linger, play_failure.clone());
            super::bag_io::start_player(&mut node, &cx, dir, play, move |outcome| {
                *failure.lock().unwrap_or_else(|p| p.into_inner()) = outcome.problem();
                tokio::spawn(async move {
                    tokio::time::sleep(linger).await;
                    tracing::info!("bag finished: shutting down");
                    let _ = stop_tx.send(true);
                });
            })?;
        }
        nodes_to_spin.push(("needle_nav_bag".to_string(), SharedNode::new(node)));
    }
    // The all-in-one can host a subset (benchmarks, debugging).
    let kinds: Vec<NodeKind> = match &opts.only {
        Some(only) => kinds.iter().copied().filter(|k| only.contains(k)).collect(),
        None => kinds.to_vec(),
    };
    // Every node is a managed (lifecycle) node; its servers live as long as the process.
    let mut lifecycle_servers = Vec::new();
    for &kind in &kinds {
        let (node, cx) = make_node(kind.name())?;
        let autostart = super::params::autostart(&node);
        let (server, shared) = super::lifecycle_server::LifecycleServer::start(kind, node, &cx)?;
        if autostart {
            let _in_runtime = rt.enter();
            server.autostart()?;
            tracing::info!(node = kind.name(), "started (autostart: configured and active)");
        } else {
            tracing::info!(
                node = kind.name(),
                "started unconfigured (autostart:=false): waiting for a lifecycle manager"
            );
        }
        lifecycle_servers.push(server);
        nodes_to_spin.push((kind.name().to_string(), shared));
    }
    if opts.plan_wait.is_some() {
        let (mut node, cx) = make_node("needle_nav_run_clock")?;
        watch_plan(&mut node, &cx, started, plan_done)?;
        nodes_to_spin.push(("needle_nav_run_clock".into(), SharedNode::new(node)));
    }
    if opts.summary {
        let (mut node, cx) = make_node("needle_nav_monitor")?;
        monitor = Some(super::monitor::Monitor::start(&mut node, &cx, started, opts.clock())?);
        nodes_to_spin.push(("needle_nav_monitor".into(), SharedNode::new(node)));
    }
    // One spin thread per node: a message for one node never waits behind another's.
    for (name, node) in nodes_to_spin {
        let stop = stop_flag.clone();
        let handle = std::thread::Builder::new()
            .name(format!("spin_{name}"))
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    node.spin_once(Duration::from_millis(20));
                }
                drop(node);
            })
            .map_err(|e| NodeError::Runtime(format!("cannot start spin thread: {e}")))?;
        spinners.push(handle);
    }

    let mut wait = stop_rx.clone();
    rt.block_on(async move {
        let _ = wait.wait_for(|stop| *stop).await;
    });
    if let Some(m) = &monitor {
        m.mark_stopped();
    }
    stop_flag.store(true, Ordering::Relaxed);
    for h in spinners {
        let _ = h.join();
    }
    if let Some(r) = recorder {
        match r.finish() {
            Ok((dir, counts)) => {
                let total: u64 = counts.values().sum();
                needle_nav_nodes::logging::print_line(&format!(
                    "bag            : {total} messages on {} topics in {}",
                    counts.len(),
                    dir.display()
                ));
            }
            Err(e) => tracing::error!("the bag could not be closed: {e}"),
        }
    }
    if let Some(m) = monitor {
        let text = m.report();
        needle_nav_nodes::logging::print_line(&text);
        if let Some(dir) = &opts.report {
            match m.write_report(dir, &text) {
                Ok(files) => needle_nav_nodes::logging::print_line(&format!("report         : {}", files.join(", "))),
                Err(e) => tracing::error!("the report could not be written to {}: {e}", dir.display()),
            }
        }
    }
    drop(lifecycle_servers);
    rt.shutdown_timeout(Duration::from_secs(2));
    // The node tasks are gone, so background work (segmentation workers) is winding down; let it finish first.
    for abandoned in exit_waits.wait_all(Duration::from_secs(5)) {
        tracing::warn!("{abandoned} still running was abandoned");
    }
    tracing::info!("stopped cleanly");
    let play_failure = play_failure.lock().unwrap_or_else(|p| p.into_inner()).take();
    match play_failure {
        Some(problem) => Err(NodeError::Runtime(problem)),
        None => Ok(()),
    }
}

/// Notes when the first finished plan (any status but pending) arrives, for `--plan-wait`.
fn watch_plan(
    node: &mut r2r::Node,
    cx: &NodeContext,
    started: Instant,
    plan_done: Arc<OnceLock<Duration>>,
) -> Result<(), NodeError> {
    use futures::StreamExt;
    let mut plans = super::nodes::subscription::<super::msg::NeedlePlan>(node, needle_nav_core::interfaces::PLAN)?;
    cx.spawn(async move {
        while let Some(p) = plans.next().await {
            if p.status != super::msg::NeedlePlan::STATUS_PENDING as u8 {
                let _ = plan_done.set(started.elapsed());
                break;
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_stop_at_ros_args() {
        let o = RunOptions::parse(&args(&["x", "--run-for", "2.5", "--summary", "--ros-args", "-p", "a:=1"])).unwrap();
        assert_eq!(o, RunOptions { run_for: Some(Duration::from_millis(2500)), summary: true, ..Default::default() });
        let o = RunOptions::parse(&args(&[
            "x",
            "--play",
            "b",
            "--rate",
            "4",
            "--clock",
            "--lockstep",
            "--topics",
            "needle_nav/markers,/tf",
        ]))
        .unwrap();
        assert_eq!((o.play.as_deref(), o.play_rate, o.play_clock), (Some(std::path::Path::new("b")), 4.0, true));
        assert!(o.play_lockstep && !RunOptions::default().play_lockstep);
        assert_eq!(o.play_topics, ["/needle_nav/markers", "/tf"]);
        assert!(RunOptions::parse(&args(&["x", "--rate", "0"])).is_err());
        assert!(RunOptions::parse(&args(&["x", "--record"])).is_err());
        let o = RunOptions::parse(&args(&["x", "--record", "b", "--record-topics", "needle_nav/target"])).unwrap();
        assert_eq!(o.record_topics, ["/needle_nav/target"]);
        assert!(RunOptions::parse(&args(&["x", "--record-topics", "/not/ours"])).is_err());
        let o = RunOptions::parse(&args(&["x", "--only", "marker_tracker,needle_target"])).unwrap();
        assert_eq!(o.only, Some(vec![NodeKind::MarkerTracker, NodeKind::NeedleTarget]));
        assert_eq!(RunOptions::parse(&args(&["x", "--only", "none"])).unwrap().only, Some(vec![]));
        assert!(RunOptions::parse(&args(&["x", "--only", "bogus"])).is_err());
        assert_eq!(RunOptions::parse(&args(&["x", "--ros-args", "--run-for", "x"])).unwrap(), RunOptions::default());
        assert!(RunOptions::parse(&args(&["x", "--run-for", "-1"])).is_err());
        assert!(RunOptions::parse(&args(&["x", "--bogus"])).is_err());
        let o = RunOptions::parse(&args(&["x", "--run-for", "45", "--plan-wait", "120"])).unwrap();
        assert_eq!(
            o.clock(),
            RunClock { run_for: Some(Duration::from_secs(45)), plan_wait: Some(Duration::from_secs(120)) }
        );
        assert_eq!(RunOptions::default().plan_wait, None, "--run-for alone starts at once, as before");
        assert!(RunOptions::parse(&args(&["x", "--plan-wait", "120"])).is_err(), "nothing to delay");
        assert!(RunOptions::parse(&args(&["x", "--run-for", "4", "--plan-wait", "0"])).is_err());
    }
}
