//! needle_nav command line: digital-patient cases, interface table, parameter-file checks.
//! Needs no ROS installation.

use clap::{Parser, Subcommand};
use needle_nav_core::interfaces::{NodeKind, ALL_IN_ONE_EXECUTABLE};
use needle_nav_nodes::config::{self, check_node_config};
use needle_nav_sim::patient_case::{self, CaseConfig};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "needle_nav", version, about = "needle_nav: breathing-compensated needle guidance (ROS 2, Rust)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a digital-patient case: DICOM series, NIfTI, labels, masks, 4-D phases, case.json.
    Phantom {
        /// Output folder (created).
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        seed: Option<u64>,
        /// Contrast-enhanced CT (the default).
        #[arg(long, conflicts_with = "plain")]
        contrast: bool,
        /// Non-contrast CT: vessels near blood's plain HU.
        #[arg(long)]
        plain: bool,
        /// Number of 4-D CT phases over one breathing cycle (1: planning CT only).
        #[arg(long)]
        phases: Option<usize>,
        /// Grid size, e.g. 512x512x300.
        #[arg(long, value_parser = parse_triple::<usize>)]
        dims: Option<[usize; 3]>,
        /// Voxel size in mm, e.g. 0.75x0.75x1.
        #[arg(long, value_parser = parse_triple::<f64>)]
        spacing: Option<[f64; 3]>,
        /// Full case configuration (YAML: phantom, breathing, phases); flags override it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Refuse grids with more voxels than this, before anything is allocated (phantom.max_voxels;
        /// default 512^3, about 1.6 GB).
        #[arg(long)]
        max_voxels: Option<u64>,
        /// Replace a needle_nav case already in --out: its files that the new case does not
        /// rewrite (e.g. 4-D phases) are removed. A folder holding anything else is always refused.
        #[arg(long)]
        overwrite: bool,
    },
    /// Train the learned marker classifier (logistic regression) on labelled digital-patient
    /// marker traces and write the model JSON with its held-out accuracy.
    TrainClassifier {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 40)]
        train_cases: u64,
        #[arg(long, default_value_t = 20)]
        test_cases: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Window length the classifier node uses (window_s) [s].
        #[arg(long, default_value_t = 12.0)]
        window_s: f64,
    },
    /// Accuracy of the breathing-compensated target on digital patients and of the motion models
    /// on real breathing (ExtMarker); prints a report and writes it as JSON.
    Evaluate {
        /// Patients in the registration (predicted vs observed TRE) study.
        #[arg(long, default_value_t = 500)]
        trials: usize,
        /// Patients in the target-over-time study (150 s of breathing each).
        #[arg(long, default_value_t = 20)]
        tracking_trials: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Marker localisation error in the CT, RMS of the 3-D error [mm].
        #[arg(long, default_value_t = 0.2)]
        ct_fle_mm: f64,
        /// Robot latency to predict across [s].
        #[arg(long, default_value_t = 0.15)]
        latency_s: f64,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Segment arteries, veins and the aorta in a chest CT (DICOM series folder or NIfTI) with the
    /// vessel network; writes the label map, a JSON summary and a surface point cloud to --out,
    /// and for a DICOM series a DICOM Segmentation (vessel_seg.dcm) referencing it.
    Segment {
        /// DICOM series directory or .nii / .nii.gz file.
        input: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// ONNX model (default: the model shipped with the package).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Skip the HU-window refinement (network labels only).
        #[arg(long)]
        no_refinement: bool,
        /// Do not write the surface point cloud.
        #[arg(long)]
        no_surface: bool,
        /// Most HU-window refinement passes (voxels of growth); 0 = until nothing changes.
        #[arg(long, default_value_t = needle_nav_segmentation::pipeline::DEFAULT_REFINEMENT_PASSES)]
        refinement_passes: usize,
        /// Patch overlap 0..0.9 (0: the default, 0.25).
        #[arg(long, default_value_t = 0.0)]
        overlap: f64,
        /// Inference threads.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Scheduling class of the segmentation (all its threads): idle (SCHED_IDLE, only CPU time
        /// nothing else wants, e.g. guidance on the same machine), batch (SCHED_BATCH, nice 19), normal.
        #[arg(long, value_enum, default_value_t = needle_nav_segmentation::scheduling::WorkerScheduling::Idle)]
        scheduling: needle_nav_segmentation::scheduling::WorkerScheduling,
        /// Refuse inputs with more voxels than this.
        #[arg(long, default_value_t = 512 * 512 * 1024)]
        max_voxels: u64,
        /// Run the classic threshold + region-growing extraction instead of the network
        /// (baseline for comparison: a binary vessel mask, no vessel classes).
        #[arg(long)]
        classic: bool,
        /// Replace an earlier result in --out (vessel_labels.nii.gz, vessel_summary.json,
        /// vessel_surface.ply; with --classic vessel_mask_classic.nii.gz); without it such a
        /// folder is refused before anything is computed.
        #[arg(long)]
        overwrite: bool,
        /// DICOM input: leave out slices that cannot be read (with a warning) instead of refusing
        /// the series; a gap they leave is still refused.
        #[arg(long)]
        skip_unreadable_slices: bool,
    },
    /// Real-data gates of the vessel segmentation (chest CTA, plain and contrast abdomen CT,
    /// plain thorax series in ../shared/data: Dice, labelled fractions, outside-body vessel,
    /// class volumes, class confusion) and Dice per class on digital patients, each with and
    /// without the HU-window refinement; prints markdown tables, --json writes every figure.
    EvaluateSegmentation {
        #[arg(long)]
        model: Option<PathBuf>,
        /// Folder with the shared real data (default: $NEEDLE_NAV_SHARED_DATA or ../shared/data).
        #[arg(long)]
        shared_data: Option<PathBuf>,
        /// Digital-patient seeds (each scored as contrast and as plain CT); none of the training seeds.
        #[arg(long, value_delimiter = ',', default_values_t = vec![9001u64, 9002])]
        seeds: Vec<u64>,
        /// Only the real cases (skips the digital patients, which take most of the time).
        #[arg(long)]
        real_only: bool,
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Write every figure as JSON to this file (atomically: a temporary name, then a rename).
        #[arg(long, alias = "out")]
        json: Option<PathBuf>,
    },
    /// Rigid registration with FRE/TRE, JSON on stdin -> JSON on stdout (see core::registration::register_json).
    /// Exit status 0: registered; 1: no registration from these markers ({"error"} on stdout); 2: unusable input.
    Register,
    /// Print every node with its topics and services (name, type, QoS, direction) as JSON.
    Interfaces,
    /// Like `ros2 bag info`: topics, types, counts, duration of a rosbag2 MCAP bag, from reading
    /// every message and checking it against metadata.yaml (exit 1 if they disagree).
    BagInfo {
        /// The bag folder (metadata.yaml and the .mcap file).
        bag: PathBuf,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Validate a ROS 2 parameter file against every node it has a section for.
    CheckConfig {
        /// Parameter file (config/<node>.yaml format).
        file: PathBuf,
    },
    /// Convert a DICOM Segmentation (BINARY; artery, vein and aorta segments found by their
    /// property type codes) to a NIfTI label map (1 artery, 2 vein, 3 aorta). Without --ct the
    /// labels are on the grid the SEG's frames span; with --ct on that CT's grid (the SEG must
    /// be in its frame of reference and its frames on its slices).
    SegToNifti {
        /// The DICOM SEG file.
        seg: PathBuf,
        /// The NIfTI file to write (.nii or .nii.gz).
        #[arg(long)]
        out: PathBuf,
        /// Put the labels on this CT's grid (DICOM series folder or NIfTI).
        #[arg(long)]
        ct: Option<PathBuf>,
    },
    /// Write NIfTI vessel labels (1 artery, 2 vein, 3 aorta, on the series' grid) as a DICOM
    /// Segmentation referencing a DICOM CT series, as `segment` does for its own labels.
    NiftiToSeg {
        /// The label map (.nii / .nii.gz) on the series' grid.
        labels: PathBuf,
        /// The DICOM CT series folder the labels were made from.
        #[arg(long)]
        series: PathBuf,
        /// The SEG file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Plan a straight needle path without ROS, with the same code as the trajectory_planner node:
    /// segment the CT with the vessel network (or take --labels, or --no-network), derive the
    /// obstacle layers from the CT, judge every path, and write plan.json and layers/*.nii.gz to --out.
    /// Exit status 0: a safe plan; 3: refused (plan.json says why); 2: unusable input.
    Plan(PlanArgs),
    /// Talk to the PACS the nodes are configured for (the `pacs` block of their parameter file,
    /// overridable here): echo (C-ECHO), find (C-FIND), get a series (C-GET), store files (C-STORE).
    /// Exit status 0: done; 1: the PACS refused or could not be reached (the message says why); 2: bad arguments.
    Pacs(needle_nav::pacs_command::PacsArgs),
}

fn parse_point(s: &str) -> Result<[f64; 3], String> {
    let v: Vec<f64> = s
        .split(',')
        .map(|p| p.trim().parse::<f64>().map_err(|_| format!("`{p}` in `{s}` is not a number")))
        .collect::<Result<_, _>>()?;
    match v.as_slice() {
        [x, y, z] if v.iter().all(|c| c.is_finite()) => Ok([*x, *y, *z]),
        _ => Err(format!("`{s}`: expected three finite numbers X,Y,Z")),
    }
}

fn parse_triple<T: std::str::FromStr>(s: &str) -> Result<[T; 3], String> {
    let parts: Vec<&str> = s.split('x').collect();
    if parts.len() != 3 {
        return Err(format!("`{s}`: expected three values like 256x256x160"));
    }
    let parse = |p: &str| p.parse::<T>().map_err(|_| format!("`{p}` in `{s}` is not a number"));
    Ok([parse(parts[0])?, parse(parts[1])?, parse(parts[2])?])
}

fn main() -> ExitCode {
    let _log = needle_nav_nodes::logging::init_tracing();
    match Cli::parse().command {
        Command::Phantom { out, seed, contrast: _, plain, phases, dims, spacing, config, max_voxels, overwrite } => {
            let mut case = match config {
                None => CaseConfig::default(),
                Some(path) => {
                    let text = match std::fs::read_to_string(&path) {
                        Ok(t) => t,
                        Err(e) => {
                            eprintln!("cannot read {}: {e}", path.display());
                            return ExitCode::from(2);
                        }
                    };
                    match serde_yaml::from_str::<CaseConfig>(&text) {
                        Ok(c) => c,
                        Err(e) => {
                            eprintln!("{}: {e}", path.display());
                            return ExitCode::from(2);
                        }
                    }
                }
            };
            if let Some(seed) = seed {
                case.phantom.seed = seed;
                case.breathing.seed = seed;
            }
            if plain {
                case.phantom.contrast = false;
            }
            if let Some(k) = phases {
                case.phases = k;
            }
            if let Some(d) = dims {
                case.phantom.dims = d;
            }
            if let Some(s) = spacing {
                case.phantom.spacing_mm = s;
            }
            if let Some(m) = max_voxels {
                case.phantom.max_voxels = m;
            }
            match patient_case::write_case_with(&out, &case, overwrite) {
                Ok(summary) => {
                    println!(
                        "wrote {} ({} voxels per volume): render {:.2} s, DICOM {:.2} s, NIfTI {:.2} s, total {:.2} s",
                        summary.dir.display(),
                        summary.voxels,
                        summary.seconds_render,
                        summary.seconds_dicom,
                        summary.seconds_nifti,
                        summary.seconds_total
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("phantom: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::TrainClassifier { out, train_cases, test_cases, seed, window_s } => {
            let model = needle_nav_sim::classifier_training::train_classifier(train_cases, test_cases, seed, window_s);
            let text = match serde_json::to_string_pretty(&model) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("cannot encode the model: {e}");
                    return ExitCode::from(1);
                }
            };
            if let Err(e) = std::fs::write(&out, text + "\n") {
                eprintln!("cannot write {}: {e}", out.display());
                return ExitCode::from(1);
            }
            println!("wrote {}: {}", out.display(), model.report);
            ExitCode::SUCCESS
        }
        Command::Evaluate { trials, tracking_trials, seed, ct_fle_mm, latency_s, out } => {
            let started = std::time::Instant::now();
            let report = needle_nav::evaluation::evaluate(&needle_nav::evaluation::EvaluationOptions {
                trials,
                tracking_trials,
                seed,
                ct_fle_mm,
                latency_s,
            });
            let text = serde_json::to_string_pretty(&report).unwrap_or_default();
            println!("{text}");
            eprintln!("evaluation took {:.1} s", started.elapsed().as_secs_f64());
            if let Some(path) = out {
                if let Err(e) = std::fs::write(&path, text + "\n") {
                    eprintln!("cannot write {}: {e}", path.display());
                    return ExitCode::from(1);
                }
            }
            ExitCode::SUCCESS
        }
        Command::Segment {
            input,
            out,
            classic: true,
            max_voxels,
            overwrite,
            skip_unreadable_slices,
            scheduling,
            ..
        } => {
            needle_nav_segmentation::scheduling::lower_current_thread(scheduling, "segment");
            classic_command(&input, &out, max_voxels, overwrite, skip_unreadable_slices)
        }
        Command::Segment {
            input,
            out,
            model,
            no_refinement,
            refinement_passes,
            no_surface,
            overlap,
            threads,
            scheduling,
            max_voxels,
            classic: false,
            overwrite,
            skip_unreadable_slices,
        } => {
            // The main thread, before the model is loaded: the inference threads inherit it.
            needle_nav_segmentation::scheduling::lower_current_thread(scheduling, "segment");
            let passes = if refinement_passes == 0 { usize::MAX } else { refinement_passes };
            segment_command(
                &input,
                &out,
                model,
                (!no_refinement).then_some(passes),
                !no_surface,
                overlap,
                threads,
                max_voxels,
                overwrite,
                skip_unreadable_slices,
            )
        }
        Command::EvaluateSegmentation { model, shared_data, seeds, real_only, threads, json } => {
            use needle_nav_segmentation::{evaluation, pipeline, OnnxVesselModel, VesselSegmenter};
            let model_path = model.unwrap_or_else(pipeline::default_model_path);
            let shared = shared_data
                .or_else(|| std::env::var_os("NEEDLE_NAV_SHARED_DATA").map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("../shared/data"));
            let mut segmenter = match OnnxVesselModel::load(&model_path, threads) {
                Ok(m) => VesselSegmenter::new(m),
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(1);
                }
            };
            let started = std::time::Instant::now();
            let seeds = if real_only { Vec::new() } else { seeds };
            let report = evaluation::evaluate(&mut segmenter, &model_path.display().to_string(), &shared, &seeds);
            println!("{}", evaluation::markdown(&report));
            for s in &report.skipped {
                eprintln!("skipped: {s}");
            }
            for c in report.real_cases.iter().filter(|c| c.error.is_some()) {
                eprintln!("real case {} not scored: {}", c.id, c.error.as_deref().unwrap_or_default());
            }
            eprintln!(
                "evaluation took {:.1} s (real cases {:.1} s, digital patients {:.1} s)",
                started.elapsed().as_secs_f64(),
                report.real_case_seconds,
                report.digital_patient_seconds
            );
            if let Some(path) = json {
                let text = match serde_json::to_string_pretty(&report) {
                    Ok(t) => t + "\n",
                    Err(e) => {
                        eprintln!("cannot serialise the report: {e}");
                        return ExitCode::from(1);
                    }
                };
                if let Err(e) = needle_nav_imaging::output_files::write_file_atomically(&path, text.as_bytes()) {
                    eprintln!("cannot write {}: {e}", path.display());
                    return ExitCode::from(1);
                }
            }
            ExitCode::SUCCESS
        }
        Command::Register => {
            let mut input = String::new();
            if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut input) {
                eprintln!("cannot read stdin: {e}");
                return ExitCode::from(2);
            }
            use needle_nav_core::registration::{register_request, RegisterRequestError};
            // The same JSON as before on stdout; the exit status from the typed result:
            // 0 registered, 1 no registration from these markers, 2 unusable input.
            match register_request(&input) {
                Ok(r) => match serde_json::to_string(&r) {
                    Ok(text) => {
                        println!("{text}");
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("cannot serialise the result: {e}");
                        ExitCode::from(1)
                    }
                },
                Err(e) => {
                    println!("{}", serde_json::json!({ "error": e.to_string() }));
                    ExitCode::from(match e {
                        RegisterRequestError::InvalidInput(_) => 2,
                        RegisterRequestError::Registration(_) => 1,
                    })
                }
            }
        }
        Command::BagInfo { bag, json } => match needle_nav_bags::info(&bag) {
            Err(e) => {
                eprintln!("{}: {e}", bag.display());
                ExitCode::from(1)
            }
            Ok(summary) => {
                if json {
                    println!("{}", serde_json::to_string_pretty(&summary).unwrap_or_default());
                } else {
                    println!("bag:       {}", bag.display());
                    println!("duration:  {:.3} s", summary.duration_s);
                    println!("messages:  {}", summary.messages);
                    for t in &summary.topics {
                        println!("topic:     {} | {} | {} messages", t.name, t.type_name, t.messages);
                    }
                    for p in &summary.problems {
                        println!("PROBLEM:   {p}");
                    }
                }
                if summary.problems.is_empty() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
        },
        Command::Interfaces => {
            let nodes: Vec<serde_json::Value> = NodeKind::ALL
                .iter()
                .map(|k| {
                    let endpoints: Vec<serde_json::Value> = k
                        .endpoints()
                        .iter()
                        .map(|(dir, ep)| serde_json::json!({"direction": dir, "name": ep.name, "type": ep.type_name, "qos": ep.qos}))
                        .collect();
                    serde_json::json!({"node": k.name(), "executable": k.name(), "endpoints": endpoints})
                })
                .collect();
            let doc = serde_json::json!({"all_in_one_executable": ALL_IN_ONE_EXECUTABLE, "nodes": nodes});
            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Command::Plan(args) => plan_command(args),
        Command::Pacs(args) => needle_nav::pacs_command::run(args),
        Command::SegToNifti { seg, out, ct } => seg_to_nifti_command(&seg, &out, ct.as_deref()),
        Command::NiftiToSeg { labels, series, out } => nifti_to_seg_command(&labels, &series, &out),
        Command::CheckConfig { file } => {
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("cannot read {}: {e}", file.display());
                    return ExitCode::from(2);
                }
            };
            let mut checked = 0;
            for kind in NodeKind::ALL {
                let section = match config::node_section(&text, kind.name()) {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("{}: {e}", file.display());
                        return ExitCode::from(2);
                    }
                };
                if section.is_empty() {
                    continue;
                }
                if let Err(e) = check_node_config(kind.name(), section, &Vec::new()) {
                    eprintln!("{}: {e}", file.display());
                    return ExitCode::from(2);
                }
                println!("{}: {} ok", file.display(), kind.name());
                checked += 1;
            }
            if checked == 0 {
                eprintln!("{}: no section for any needle_nav node", file.display());
                return ExitCode::from(2);
            }
            ExitCode::SUCCESS
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn segment_command(
    input: &std::path::Path,
    out: &std::path::Path,
    model: Option<PathBuf>,
    refinement_passes: Option<usize>,
    surface: bool,
    overlap: f64,
    threads: usize,
    max_voxels: u64,
    overwrite: bool,
    skip_unreadable_slices: bool,
) -> ExitCode {
    use needle_nav_segmentation::{pipeline, OnnxVesselModel, SegmentationOptions, VesselSegmenter};
    let request = match needle_nav_segmentation::request::validate(
        &input.display().to_string(),
        &out.display().to_string(),
        overlap as f32,
    ) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bad request: {e}");
            return ExitCode::from(2);
        }
    };
    let options = SegmentationOptions {
        hu_refinement: refinement_passes.is_some(),
        refinement_max_passes: refinement_passes.unwrap_or(0),
        write_surface: surface,
        patch_overlap: overlap,
        max_input_voxels: max_voxels,
        overwrite,
        skip_unreadable_slices,
        ..SegmentationOptions::new(out)
    };
    // Before the model is loaded: an earlier result is kept unless --overwrite.
    if let Err(e) = needle_nav_segmentation::outputs::check_output_dir(&options) {
        eprintln!("{e}");
        return ExitCode::from(1);
    }
    let model_path = model.unwrap_or_else(pipeline::default_model_path);
    let model = match OnnxVesselModel::load(&model_path, threads) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let mut segmenter = VesselSegmenter::new(model);
    let mut last_shown = std::time::Instant::now();
    let mut progress = |stage: &str, done: usize, total: usize| {
        if done == total || last_shown.elapsed().as_secs_f64() > 1.0 {
            eprintln!("[{stage}] {done}/{total}");
            last_shown = std::time::Instant::now();
        }
    };
    match segmenter.run(&request, &options, &mut progress) {
        Ok(r) => {
            for w in &r.warnings {
                eprintln!("warning: {w}");
            }
            for ((name, n), ml) in r.class_names.iter().zip(&r.voxel_counts).zip(&r.volumes_ml).skip(1) {
                println!("{name:>8}: {n:>9} voxels {ml:>8.1} ml");
            }
            let stages: Vec<String> = r.stages.iter().map(|s| format!("{} {:.2} s", s.stage, s.seconds)).collect();
            println!(
                "{} phase (vessel median {:.0} HU); refinement relabelled {} voxels; {} patches",
                if r.contrast_enhanced { "contrast" } else { "plain" },
                r.vessel_median_hu.unwrap_or(f32::NAN),
                r.refined_voxels,
                r.patches
            );
            println!("time: {} ; total {:.2} s", stages.join(", "), r.total_seconds);
            println!("model {}", r.model);
            match (&r.dicom_seg_path, &r.dicom_seg_note) {
                (Some(p), _) => {
                    println!("DICOM SEG {} ({})", p.display(), r.dicom_seg_sop_instance_uid.as_deref().unwrap_or(""))
                }
                (None, Some(note)) => println!("no DICOM SEG: {note}"),
                (None, None) => {}
            }
            println!("wrote {}", r.summary_json_path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("segmentation failed: {e}");
            ExitCode::from(1)
        }
    }
}

/// The baseline the network replaces, timed the same way (load -> mask written).
fn classic_command(
    input: &std::path::Path,
    out: &std::path::Path,
    max_voxels: u64,
    overwrite: bool,
    skip_unreadable_slices: bool,
) -> ExitCode {
    use needle_nav_imaging::output_files::{refuse_existing, Staged};
    use needle_nav_segmentation::classic::{threshold_region_growing, ClassicOptions};
    const MASK_FILE: &str = "vessel_mask_classic.nii.gz";
    let started = std::time::Instant::now();
    let request =
        match needle_nav_segmentation::request::validate(&input.display().to_string(), &out.display().to_string(), 0.0)
        {
            Ok(r) => r,
            Err(e) => {
                eprintln!("bad request: {e}");
                return ExitCode::from(2);
            }
        };
    if let Err(e) = refuse_existing(out, &[MASK_FILE], overwrite, "needle_nav segment --classic --overwrite") {
        eprintln!("{e}");
        return ExitCode::from(1);
    }
    let load = needle_nav_imaging::dicom_read::LoadOptions { skip_unreadable_slices };
    let (ct, warnings, _) = match needle_nav_segmentation::pipeline::load_input(&request, max_voxels, &load) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    if let Err(e) = ct.geometry.validate() {
        eprintln!("the CT's grid: {e}");
        return ExitCode::from(1);
    }
    let load_s = started.elapsed().as_secs_f64();
    let t = std::time::Instant::now();
    let mask = threshold_region_growing(&ct.data, ct.geometry.dims, &ClassicOptions::default());
    let grow_s = t.elapsed().as_secs_f64();
    let t = std::time::Instant::now();
    let path = out.join(MASK_FILE);
    let written = Staged::new(out).and_then(|mut staged| {
        let tmp = staged.path(MASK_FILE);
        needle_nav_imaging::nifti::write(&tmp, &ct.geometry, &mask, "needle_nav classic vessel mask").map_err(|e| {
            needle_nav_imaging::output_files::OutputError::Write {
                path: path.display().to_string(),
                reason: e.to_string(),
            }
        })?;
        staged.commit(&[])
    });
    if let Err(e) = written {
        eprintln!("{e}");
        return ExitCode::from(1);
    }
    let voxels = mask.iter().filter(|m| **m > 0).count();
    println!("classic: {voxels} vessel voxels");
    println!(
        "time: load {load_s:.2} s, threshold+region growing {grow_s:.2} s, write {:.2} s ; total {:.2} s",
        t.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    println!("wrote {}", path.display());
    ExitCode::SUCCESS
}

fn seg_to_nifti_command(seg: &std::path::Path, out: &std::path::Path, ct: Option<&std::path::Path>) -> ExitCode {
    use needle_nav_imaging::{dicom_seg, dicom_source};
    use needle_nav_segmentation::outputs::vessel_segment_classes;
    let classes = vessel_segment_classes();
    let labels = match ct {
        None => match dicom_seg::read_seg(seg, &classes) {
            Ok(image) => match image.declared_grid() {
                Ok(v) => v,
                Err(reason) => {
                    eprintln!("{}: {reason}", seg.display());
                    return ExitCode::from(1);
                }
            },
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(1);
            }
        },
        Some(ct) => {
            let request = match needle_nav_segmentation::request::input_kind(&ct.display().to_string()) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("--ct: {e}");
                    return ExitCode::from(2);
                }
            };
            let loaded = needle_nav_segmentation::pipeline::load_input(&request, 1 << 31, &Default::default());
            let (volume, _, _) = match loaded {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("--ct: {e}");
                    return ExitCode::from(1);
                }
            };
            let frame_of_reference = match &request {
                needle_nav_segmentation::request::SegmentationInput::DicomDirectory(dir) => {
                    match dicom_source::frame_of_reference(dir, &volume.geometry) {
                        Ok(f) => f,
                        Err(e) => {
                            eprintln!("--ct: {e}");
                            return ExitCode::from(1);
                        }
                    }
                }
                needle_nav_segmentation::request::SegmentationInput::Nifti(_) => None,
            };
            match dicom_seg::read_seg_on_grid(seg, &classes, &volume.geometry, frame_of_reference.as_deref()) {
                Ok((labels, warnings)) => {
                    for w in warnings {
                        eprintln!("warning: {w}");
                    }
                    labels
                }
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(1);
                }
            }
        }
    };
    if let Err(e) =
        needle_nav_imaging::nifti::write(out, &labels.geometry, &labels.data, "needle_nav vessels 1a 2v 3ao")
    {
        eprintln!("cannot write {}: {e}", out.display());
        return ExitCode::from(1);
    }
    let counts: Vec<String> = classes
        .iter()
        .map(|c| format!("{} {}", c.name, labels.data.iter().filter(|v| **v == c.label).count()))
        .collect();
    println!("{:?} voxels; {}", labels.geometry.dims, counts.join(", "));
    println!("wrote {}", out.display());
    ExitCode::SUCCESS
}

fn nifti_to_seg_command(labels: &std::path::Path, series: &std::path::Path, out: &std::path::Path) -> ExitCode {
    use needle_nav_segmentation::outputs::{self, SegSource};
    let fail = |m: String| {
        eprintln!("{m}");
        ExitCode::from(1)
    };
    let ct = match needle_nav_imaging::dicom_read::load_series(series, None) {
        Ok(ct) => ct,
        Err(e) => return fail(format!("--series: {e}")),
    };
    let input = needle_nav_segmentation::request::SegmentationInput::DicomDirectory(series.to_path_buf());
    let source = match outputs::seg_source(&input, &ct.volume.geometry) {
        Ok(s) => s,
        Err(e) => return fail(format!("no DICOM SEG: {e}")),
    };
    let image = match needle_nav_imaging::nifti::read(labels) {
        Ok(i) => i,
        Err(e) => return fail(format!("{}: {e}", labels.display())),
    };
    if image.geometry.dims != ct.volume.geometry.dims {
        return fail(format!(
            "the labels {} ({:?}) are not on the series' grid ({:?})",
            labels.display(),
            image.geometry.dims,
            ct.volume.geometry.dims
        ));
    }
    let volume = needle_nav_core::volume::Volume {
        geometry: ct.volume.geometry.clone(),
        data: image.data.iter().map(|v| *v as u8).collect(),
    };
    let version = format!("needle_nav {}", env!("CARGO_PKG_VERSION"));
    let seg = SegSource { series: &source, algorithm_name: "labels from NIfTI", algorithm_version: &version };
    let started = std::time::Instant::now();
    match outputs::write_seg_file(out, &volume, &seg) {
        Ok(uid) => {
            println!("SEG write {:.3} s", started.elapsed().as_secs_f64());
            println!("wrote {} ({uid})", out.display());
            ExitCode::SUCCESS
        }
        Err(e) => fail(e.to_string()),
    }
}

#[derive(clap::Args)]
struct PlanArgs {
    /// Case folder with case.json (its CT and lesion centre and radius).
    #[arg(long, conflicts_with_all = ["ct", "target_mm"])]
    case: Option<PathBuf>,
    /// Planning CT: DICOM series folder or NIfTI (with --target-mm).
    #[arg(long, requires = "target_mm")]
    ct: Option<PathBuf>,
    /// Target, CT patient coordinates (LPS) in mm: X,Y,Z.
    #[arg(long, value_parser = parse_point, allow_hyphen_values = true)]
    target_mm: Option<[f64; 3]>,
    /// Lesion radius around the target [mm] (with --ct; a case gives its own).
    #[arg(long, default_value_t = 0.0)]
    lesion_radius_mm: f64,
    #[arg(long)]
    out: PathBuf,
    /// Vessel labels on the CT's grid (instead of running the network): a NIfTI label map, or a
    /// DICOM SEG in the CT's frame of reference whose frames lie on the CT's slices.
    #[arg(long, conflicts_with = "no_network")]
    labels: Option<PathBuf>,
    /// No network labels: the CT-derived layers only.
    #[arg(long)]
    no_network: bool,
    /// ONNX model for the network (default: the shipped one).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Planner parameters (config/trajectory_planner.yaml format; default: the installed file).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Judge only the path from the target through this point out to the skin (a proposed entry), mm: X,Y,Z.
    #[arg(long, value_parser = parse_point, allow_hyphen_values = true)]
    entry_mm: Option<[f64; 3]>,
    /// Preferred direction from the target out to the skin, CT frame (LPS), e.g. 0,1,0 for a
    /// posterior entry (prone patient); overrides the parameter file's approach_direction.
    #[arg(long, value_parser = parse_point, allow_hyphen_values = true)]
    approach: Option<[f64; 3]>,
    /// Largest angle from the approach direction [deg]; overrides max_angle_deg.
    #[arg(long)]
    max_angle_deg: Option<f64>,
    /// Also print plan.json on stdout.
    #[arg(long)]
    json: bool,
    /// Inference threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

fn plan_command(a: PlanArgs) -> ExitCode {
    use needle_nav_nodes::config::{self as cfgmod, TrajectoryPlannerConfig};
    use needle_nav_planning::plan_files;
    let started = std::time::Instant::now();
    let fail = |m: String| {
        eprintln!("{m}");
        ExitCode::from(2)
    };
    let cfg: TrajectoryPlannerConfig = match &a.config {
        Some(file) => {
            let text = match std::fs::read_to_string(file) {
                Ok(t) => t,
                Err(e) => return fail(format!("cannot read {}: {e}", file.display())),
            };
            let section = match cfgmod::node_section(&text, "trajectory_planner") {
                Ok(s) => s,
                Err(e) => return fail(format!("{}: {e}", file.display())),
            };
            match cfgmod::build_config("trajectory_planner", section, &Vec::new()) {
                Ok(c) => c,
                Err(e) => return fail(format!("{}: {e}", file.display())),
            }
        }
        None => match cfgmod::load::<TrajectoryPlannerConfig>("trajectory_planner", &Vec::new()) {
            Ok((c, _)) => c,
            Err(e) => return fail(e.to_string()),
        },
    };
    // The same case / explicit-target rules as the node.
    let cfg = TrajectoryPlannerConfig {
        ct_case_dir: a.case.as_ref().map(|c| c.display().to_string()).unwrap_or_default(),
        ct_path: a.ct.as_ref().map(|c| c.display().to_string()).unwrap_or_default(),
        target_point_m: a.target_mm.map(|t| t.iter().map(|v| v / 1000.0).collect()).unwrap_or(vec![0.0; 3]),
        lesion_radius_m: a.lesion_radius_mm / 1000.0,
        approach_direction: match a.approach {
            Some(d) => {
                let n = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt();
                if n < 1e-9 {
                    return fail(format!("--approach {d:?} has no direction"));
                }
                d.iter().map(|v| v / n).collect()
            }
            None => cfg.approach_direction.clone(),
        },
        max_angle_deg: a.max_angle_deg.unwrap_or(cfg.max_angle_deg),
        ..cfg
    };
    if let Err(e) = needle_nav_nodes::config::Validate::validate(&cfg) {
        return fail(format!("planner parameter `{}`: {}", e.key, e.reason));
    }
    let input = match plan_files::planning_input(&cfg) {
        Ok(Some(i)) => i,
        Ok(None) => return fail("give --case DIR, or --ct PATH with --target-mm X,Y,Z".into()),
        Err(e) => return fail(e),
    };
    // Command-line flags win over the case's own approach.
    let input = plan_files::PlanningInput {
        approach_direction: if a.approach.is_some() { None } else { input.approach_direction },
        max_angle_deg: if a.max_angle_deg.is_some() { None } else { input.max_angle_deg },
        ..input
    };
    if let Err(e) = std::fs::create_dir_all(&a.out) {
        return fail(format!("cannot create {}: {e}", a.out.display()));
    }
    // An earlier run's plan must not outlive a run that fails before writing its own.
    let _ = std::fs::remove_file(a.out.join("plan.json"));
    let mut timing: Vec<(&str, f64)> = Vec::new();
    let labels_path = if a.no_network {
        None
    } else if let Some(l) = a.labels.clone() {
        Some(l)
    } else {
        use needle_nav_segmentation::{pipeline, OnnxVesselModel, SegmentationOptions, VesselSegmenter};
        let t = std::time::Instant::now();
        let request = match needle_nav_segmentation::request::validate(
            &input.ct_path.display().to_string(),
            &a.out.display().to_string(),
            0.0,
        ) {
            Ok(r) => r,
            Err(e) => return fail(format!("bad CT: {e}")),
        };
        let options = SegmentationOptions { write_surface: false, overwrite: true, ..SegmentationOptions::new(&a.out) };
        let model_path = a.model.clone().unwrap_or_else(pipeline::default_model_path);
        let model = match OnnxVesselModel::load(&model_path, a.threads) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(1);
            }
        };
        let mut segmenter = VesselSegmenter::new(model);
        match segmenter.run(&request, &options, &mut |_: &str, _: usize, _: usize| {}) {
            Ok(r) => {
                timing.push(("segmentation", t.elapsed().as_secs_f64()));
                Some(r.label_map_path)
            }
            Err(e) => return fail(format!("segmentation failed: {e}")),
        }
    };
    let options =
        needle_nav_planning::PlannerOptions { proposed_entry_mm: a.entry_mm, ..plan_files::planner_options(&cfg) };
    let t = std::time::Instant::now();
    let run = match plan_files::plan_from_files(&input, labels_path.as_deref(), &options, 1 << 31, Some(&a.out)) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    timing.push(("planning", t.elapsed().as_secs_f64()));
    timing.push(("total", started.elapsed().as_secs_f64()));
    let options = input.options(&options);
    let doc = plan_files::plan_json(&run, &input, labels_path.as_deref(), &options, &a.out, &timing);
    let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    let path = a.out.join("plan.json");
    if let Err(e) = std::fs::write(&path, &text) {
        return fail(format!("cannot write {}: {e}", path.display()));
    }
    if a.json {
        println!("{text}");
    }
    eprintln!("{}", plan_files::plan_summary(&run));
    eprintln!("written: {}", path.display());
    match run.planning.result {
        Ok(_) => ExitCode::SUCCESS,
        Err(_) => ExitCode::from(3),
    }
}
