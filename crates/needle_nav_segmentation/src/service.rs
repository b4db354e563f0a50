//! The segmentation service without ROS: one worker thread owns the network and runs requests
//! in arrival order; a request that arrives while one runs is queued (up to `max_queue`) or
//! refused, as configured. Every accepted request gets exactly one outcome, errors and
//! panics included. A request naming a PACS series has it retrieved by the worker (C-GET, into
//! the request's output folder) before segmenting it, and the DICOM SEG stored back (C-STORE)
//! when asked. The `vessel_segmentation` node only converts messages to and from this.

use super::pipeline::{SegmentationOptions, SegmentationResult, StageTime, VesselSegmenter};
use super::scheduling::{lower_current_thread, WorkerScheduling};
use crate::request;
use needle_nav_pacs::PacsConfig;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// The fields of a `SegmentVessels` request.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentRequest {
    /// A DICOM folder or a NIfTI file; empty when `pacs_series` names the input.
    pub input_path: String,
    /// A series to retrieve from the configured PACS instead of `input_path`.
    pub pacs_series: Option<PacsSeries>,
    /// Store the DICOM SEG back to the configured PACS.
    pub store_seg_to_pacs: bool,
    pub output_dir: String,
    pub hu_refinement: bool,
    pub write_surface: bool,
    pub patch_overlap: f32,
}

/// A series in a PACS, by its UIDs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacsSeries {
    pub study_instance_uid: String,
    pub series_instance_uid: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServiceLimits {
    pub max_input_voxels: u64,
    pub queue_when_busy: bool,
    pub max_queue: usize,
    /// A request whose output_dir holds an earlier result replaces it (true) or is answered
    /// with an error naming the files (false, the default): the request has no overwrite field.
    pub overwrite_results: bool,
    /// DICOM input: leave out unreadable slices with a warning instead of refusing the series.
    pub skip_unreadable_slices: bool,
    /// Scheduling class of the worker thread (and of the inference threads it creates).
    pub scheduling: WorkerScheduling,
    /// The PACS requests may take their series from and store their DICOM SEG to (none when
    /// its host is empty).
    pub pacs: PacsConfig,
}

/// Why a request was not accepted; answered at once.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("busy: a segmentation is running and queue_when_busy is false; try again later")]
    Busy,
    #[error("busy: a segmentation is running and {queued} are queued (max_queue {max_queue}); try again later")]
    QueueFull { queued: usize, max_queue: usize },
    #[error("the segmentation worker has stopped")]
    Stopped,
}

pub type Outcome = Result<SegmentationResult, String>;

struct Job {
    request: SegmentRequest,
    /// None: the series named by `request.pacs_series` is retrieved first.
    input: Option<request::SegmentationInput>,
    reply: oneshot::Sender<Outcome>,
}

/// Segmentation workers still running in this process (the process must not exit under one:
/// exiting while ONNX Runtime is loading or running in another thread can crash its teardown).
static RUNNING_WORKERS: AtomicUsize = AtomicUsize::new(0);

/// Counts a worker from its start to its end, panics included.
struct WorkerGuard;

impl Drop for WorkerGuard {
    fn drop(&mut self) {
        RUNNING_WORKERS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Waits until every segmentation worker has finished (they end once their service is dropped and
/// the current job is done); false if some are still running after `timeout`.
pub fn wait_for_workers(timeout: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while RUNNING_WORKERS.load(Ordering::SeqCst) > 0 {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    true
}

pub struct SegmentationService {
    jobs: mpsc::UnboundedSender<Job>,
    accepted: Arc<AtomicUsize>,
    limits: ServiceLimits,
}

impl SegmentationService {
    /// Starts the worker; `make_segmenter` runs on it (loading the model there keeps the
    /// caller responsive, and the inference threads it creates inherit the worker's lowered
    /// scheduling). If it fails, every request is answered with its error.
    pub fn start<F>(limits: ServiceLimits, make_segmenter: F) -> SegmentationService
    where
        F: FnOnce() -> Result<VesselSegmenter, String> + Send + 'static,
    {
        let (jobs, mut queue) = mpsc::unbounded_channel::<Job>();
        let accepted = Arc::new(AtomicUsize::new(0));
        let done = accepted.clone();
        let worker_limits = limits.clone();
        let scheduling = limits.scheduling;
        RUNNING_WORKERS.fetch_add(1, Ordering::SeqCst);
        let guard = WorkerGuard;
        let spawned = std::thread::Builder::new().name("vessel_segmentation".into()).spawn(move || {
            let _running = guard;
            // Before the model is loaded: ONNX Runtime's threads are created with the session.
            lower_current_thread(scheduling, "vessel segmentation worker");
            let mut segmenter = make_segmenter();
            match &segmenter {
                Ok(s) => tracing::info!(patch = ?s.info().patch_size_zyx, "vessel model ready"),
                Err(e) => tracing::error!("vessel model unavailable: {e}"),
            }
            while let Some(job) = queue.blocking_recv() {
                let outcome = match segmenter.as_mut() {
                    Err(e) => Err(e.clone()),
                    Ok(s) => run_job(s, &job, &worker_limits),
                };
                done.fetch_sub(1, Ordering::SeqCst);
                let _ = job.reply.send(outcome);
            }
        });
        if let Err(e) = spawned {
            tracing::error!("cannot start the segmentation worker: {e}");
        }
        SegmentationService { jobs, accepted, limits }
    }

    /// Checks and enqueues a request; the receiver yields its outcome.
    pub fn submit(&self, request: SegmentRequest) -> Result<oneshot::Receiver<Outcome>, Refusal> {
        let input = check_request(&request, &self.limits.pacs).map_err(Refusal::BadRequest)?;
        // Admission: count this request in unless the limits say no (compare-and-swap so two
        // callers cannot both take the last place).
        let limit = if self.limits.queue_when_busy { 1 + self.limits.max_queue } else { 1 };
        self.accepted.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < limit).then_some(n + 1)).map_err(
            |n| {
                if self.limits.queue_when_busy {
                    Refusal::QueueFull { queued: n.saturating_sub(1), max_queue: self.limits.max_queue }
                } else {
                    Refusal::Busy
                }
            },
        )?;
        let (reply, outcome) = oneshot::channel();
        if self.jobs.send(Job { request, input, reply }).is_err() {
            self.accepted.fetch_sub(1, Ordering::SeqCst);
            return Err(Refusal::Stopped);
        }
        Ok(outcome)
    }

    /// Requests accepted and not yet answered (running + queued).
    pub fn pending(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Everything that can be checked before the request is queued: the input (a path, or a PACS
/// series when a PACS is configured), the output folder, the overlap.
fn check_request(r: &SegmentRequest, pacs: &PacsConfig) -> Result<Option<request::SegmentationInput>, String> {
    let no_pacs = "this service has no PACS configured (parameter pacs.host of vessel_segmentation is empty)";
    let input = match &r.pacs_series {
        Some(series) => {
            if !r.input_path.trim().is_empty() {
                return Err("give either input_path or study_instance_uid and series_instance_uid, not both".into());
            }
            if !pacs.is_configured() {
                return Err(no_pacs.into());
            }
            needle_nav_pacs::check_uid(&series.study_instance_uid).map_err(|e| format!("study_instance_uid {e}"))?;
            needle_nav_pacs::check_uid(&series.series_instance_uid).map_err(|e| format!("series_instance_uid {e}"))?;
            request::validate_output(&r.output_dir, r.patch_overlap).map_err(|e| e.to_string())?;
            None
        }
        None => Some(request::validate(&r.input_path, &r.output_dir, r.patch_overlap).map_err(|e| e.to_string())?),
    };
    if r.store_seg_to_pacs {
        if !pacs.is_configured() {
            return Err(no_pacs.into());
        }
        if matches!(input, Some(request::SegmentationInput::Nifti(_))) {
            return Err("store_seg_to_pacs needs DICOM input: a DICOM SEG is written for DICOM input only".into());
        }
    }
    Ok(input)
}

/// Retrieves the request's PACS series into `<output_dir>/pacs_input/<series uid>/`.
fn retrieve(
    series: &PacsSeries,
    output_dir: &str,
    pacs: &PacsConfig,
) -> Result<(request::SegmentationInput, StageTime), String> {
    let folder = needle_nav_pacs::retrieve_folder(Path::new(output_dir), &series.series_instance_uid);
    tracing::info!(pacs = %pacs.address(), series = %series.series_instance_uid, "retrieving into {}", folder.display());
    let got = needle_nav_pacs::get_series(pacs, &series.study_instance_uid, &series.series_instance_uid, &folder)
        .map_err(|e| format!("PACS: {e}"))?;
    tracing::info!(images = got.files.len(), seconds = got.seconds, "series retrieved");
    Ok((
        request::SegmentationInput::DicomDirectory(got.folder),
        StageTime { stage: "pacs_retrieve".into(), seconds: got.seconds },
    ))
}

/// Stores the result's DICOM SEG to the PACS; its outputs stay written whatever happens.
fn store_seg(result: &mut SegmentationResult, pacs: &PacsConfig) -> Result<(), String> {
    let Some(seg) = result.dicom_seg_path.clone() else {
        return Err(format!(
            "segmented (outputs in {}), but no DICOM SEG was written, so none was stored to the PACS",
            result.label_map_path.parent().unwrap_or(Path::new("")).display()
        ));
    };
    let started = std::time::Instant::now();
    let stored = needle_nav_pacs::store_file(pacs, &seg).map_err(|e| {
        format!("segmented (outputs in {}), but storing the DICOM SEG to the PACS failed: {e}", seg.display())
    })?;
    if let Some(w) = &stored.warning {
        result.warnings.push(format!("the PACS stored the DICOM SEG with a warning: {w}"));
    }
    let seconds = started.elapsed().as_secs_f64();
    result.stages.push(StageTime { stage: "pacs_store".into(), seconds });
    result.total_seconds += seconds;
    result.stored_seg_to = Some(pacs.address());
    tracing::info!(pacs = %pacs.address(), sop_instance_uid = %stored.sop_instance_uid, "DICOM SEG stored");
    Ok(())
}

fn run_job(segmenter: &mut VesselSegmenter, job: &Job, limits: &ServiceLimits) -> Outcome {
    let r = &job.request;
    // The PACS's series, retrieved here on the worker (the node's executor never waits on the network).
    let (input, retrieved) = match (&job.input, &r.pacs_series) {
        (Some(input), _) => (input.clone(), None),
        (None, Some(series)) => {
            let (input, stage) = retrieve(series, &r.output_dir, &limits.pacs)?;
            (input, Some(stage))
        }
        (None, None) => return Err("internal error: a request without input (please report)".into()),
    };
    let options = SegmentationOptions {
        hu_refinement: r.hu_refinement,
        write_surface: r.write_surface,
        patch_overlap: r.patch_overlap as f64,
        max_input_voxels: limits.max_input_voxels,
        overwrite: limits.overwrite_results,
        skip_unreadable_slices: limits.skip_unreadable_slices,
        ..SegmentationOptions::new(PathBuf::from(&r.output_dir))
    };
    let mut last_decile = 0;
    let shown_input = match &input {
        request::SegmentationInput::DicomDirectory(p) | request::SegmentationInput::Nifti(p) => p.display().to_string(),
    };
    let mut progress = |stage: &str, done: usize, total: usize| {
        let decile = done * 10 / total.max(1);
        if stage == "inference" && decile > last_decile {
            last_decile = decile;
            tracing::info!(input = %shown_input, "inference {done}/{total} patches");
        }
    };
    // A bug must cost one request, not the service.
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| segmenter.run(&input, &options, &mut progress)));
    match run {
        Ok(Ok(mut result)) => {
            if let Some(stage) = retrieved {
                result.total_seconds += stage.seconds;
                result.stages.insert(0, stage);
            }
            if r.store_seg_to_pacs {
                store_seg(&mut result, &limits.pacs)?;
            }
            Ok(result)
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(format!("internal error while segmenting (please report): {what}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model_info::{example_json, ModelInfo};
    use crate::sliding_window::{PatchPredictor, PredictError};
    use needle_nav_core::volume::Geometry;
    use needle_nav_imaging::nifti;
    use std::time::Duration;

    /// A gate the test opens: requests stay "running" until then, so the admission checks do
    /// not depend on timing.
    #[derive(Clone, Default)]
    struct Gate(Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>);
    impl Gate {
        fn open(&self) {
            *self.0 .0.lock().unwrap() = true;
            self.0 .1.notify_all();
        }
        fn wait(&self) {
            let mut open = self.0 .0.lock().unwrap();
            while !*open {
                open = self.0 .1.wait_timeout(open, Duration::from_secs(30)).unwrap().0;
            }
        }
    }

    /// Closed-form "network": aorta (3) where the normalised input is above 1 (HU > 100 with
    /// the example normalisation); waits for the gate before answering.
    struct BrightIsAorta(Gate);
    impl PatchPredictor for BrightIsAorta {
        fn classes(&self) -> usize {
            4
        }
        fn predict(&mut self, p: &[f32], count: usize, patch: [usize; 3]) -> Result<Vec<f32>, PredictError> {
            self.0.wait();
            let n: usize = patch.iter().product();
            let mut out = vec![0.0; count * 4 * n];
            for b in 0..count {
                for v in 0..n {
                    let c = if p[b * n + v] > 1.0 { 3 } else { 0 };
                    out[(b * 4 + c) * n + v] = 1.0;
                }
            }
            Ok(out)
        }
    }

    fn limits_default() -> ServiceLimits {
        ServiceLimits {
            max_input_voxels: 1 << 24,
            queue_when_busy: true,
            max_queue: 1,
            overwrite_results: false,
            skip_unreadable_slices: false,
            scheduling: WorkerScheduling::Normal,
            pacs: PacsConfig::default(),
        }
    }

    #[test]
    fn an_earlier_result_is_refused_unless_overwrite_results_and_a_failed_write_keeps_it() {
        use crate::outputs::{LABEL_MAP_FILE, SUMMARY_FILE, SURFACE_FILE};
        let tmp = std::env::temp_dir().join(format!("nn_seg_service_overwrite_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let ct = write_case(&tmp);
        let out = tmp.join("out");
        let gate = Gate::default();
        gate.open();
        let keep = SegmentationService::start(limits_default(), segmenter(gate.clone()));
        let run = |service: &SegmentationService, surface: bool| {
            let r = SegmentRequest { write_surface: surface, ..request(&ct, &out) };
            service.submit(r).unwrap().blocking_recv().unwrap()
        };
        let first = run(&keep, true).unwrap();
        let summary = std::fs::read_to_string(&first.summary_json_path).unwrap();
        let labels = std::fs::read(&first.label_map_path).unwrap();
        // Issue 11: a second request silently replaced the first result.
        let e = run(&keep, true).unwrap_err();
        assert!(
            e.contains("already holds a result") && e.contains(LABEL_MAP_FILE) && e.contains("overwrite_results"),
            "{e}"
        );
        assert_eq!(std::fs::read_to_string(out.join(SUMMARY_FILE)).unwrap(), summary);
        let replace = SegmentationService::start(
            ServiceLimits { overwrite_results: true, ..limits_default() },
            segmenter(gate.clone()),
        );
        // Without a surface this time: the earlier run's surface goes, so the folder holds one run.
        let second = run(&replace, false).unwrap();
        assert_ne!(std::fs::read_to_string(&second.summary_json_path).unwrap(), summary);
        assert_eq!(std::fs::read(&second.label_map_path).unwrap().len(), labels.len());
        assert!(!out.join(SURFACE_FILE).exists());
        let names: Vec<String> =
            std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect();
        assert!(names.iter().all(|n| !n.starts_with(".partial")), "{names:?}");
        // A write that fails (here the surface, after the label map was written) names the file
        // and leaves the previous result as it was, with no temporary files behind.
        let before: Vec<Vec<u8>> =
            [LABEL_MAP_FILE, SUMMARY_FILE].iter().map(|f| std::fs::read(out.join(f)).unwrap()).collect();
        needle_nav_imaging::output_files::FAIL_WRITES.lock().unwrap().push(out.join(SURFACE_FILE));
        let e = run(&replace, true).unwrap_err();
        needle_nav_imaging::output_files::FAIL_WRITES.lock().unwrap().clear();
        assert!(e.contains(SURFACE_FILE) && e.contains("previous result"), "{e}");
        let after: Vec<Vec<u8>> =
            [LABEL_MAP_FILE, SUMMARY_FILE].iter().map(|f| std::fs::read(out.join(f)).unwrap()).collect();
        assert!(after == before, "the previous result changed");
        assert!(!out.join(SURFACE_FILE).exists());
        let names: Vec<String> =
            std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
        let _ = std::fs::remove_dir_all(&tmp);
    }

    fn segmenter(gate: Gate) -> impl FnOnce() -> Result<VesselSegmenter, String> + Send + 'static {
        move || {
            let info = ModelInfo::from_json(&example_json()).map_err(|e| e.to_string())?;
            Ok(VesselSegmenter::with_predictor(Box::new(BrightIsAorta(gate)), info, "closed-form"))
        }
    }

    /// A 40 mm cube of air-free tissue with a bright 10 mm bar, 1 mm voxels.
    fn write_case(dir: &std::path::Path) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let g = Geometry::axial([40, 40, 40], [1.0; 3], [0.0; 3]);
        let mut hu = vec![40.0f32; g.voxel_count()];
        for k in 10..30 {
            for j in 15..25 {
                for i in 15..25 {
                    hu[g.offset(i, j, k)] = 300.0;
                }
            }
        }
        let path = dir.join("ct.nii");
        nifti::write(&path, &g, &hu, "test").unwrap();
        path
    }

    fn request(input: &std::path::Path, out: &std::path::Path) -> SegmentRequest {
        SegmentRequest {
            pacs_series: None,
            store_seg_to_pacs: false,
            input_path: input.display().to_string(),
            output_dir: out.display().to_string(),
            hu_refinement: true,
            write_surface: true,
            patch_overlap: 0.0,
        }
    }

    #[test]
    fn queues_in_order_refuses_beyond_the_queue_and_answers_every_request() {
        let tmp = std::env::temp_dir().join(format!("nn_seg_service_{}", std::process::id()));
        let ct = write_case(&tmp);
        let limits =
            ServiceLimits { max_input_voxels: 1 << 24, queue_when_busy: true, max_queue: 1, ..limits_default() };
        let gate = Gate::default();
        let service = SegmentationService::start(limits, segmenter(gate.clone()));
        let first = service.submit(request(&ct, &tmp.join("a"))).unwrap();
        let second = service.submit(request(&ct, &tmp.join("b"))).unwrap();
        let third = service.submit(request(&ct, &tmp.join("c")));
        assert!(matches!(third, Err(Refusal::QueueFull { queued: 1, max_queue: 1 })), "{third:?}");
        let bad = service.submit(request(&tmp.join("missing.nii"), &tmp.join("d")));
        assert!(matches!(bad, Err(Refusal::BadRequest(_))), "{bad:?}");
        gate.open();
        let a = first.blocking_recv().unwrap().unwrap();
        let b = second.blocking_recv().unwrap().unwrap();
        // The bar is 10x10x20 mm = 2 ml of "aorta" on the input grid.
        assert_eq!(a.voxel_counts[3], 2000, "{:?}", a.voxel_counts);
        assert_eq!(b.voxel_counts, a.voxel_counts);
        assert!(a.label_map_path.is_file() && a.summary_json_path.is_file());
        assert_eq!(service.pending(), 0);
        // A fresh request is accepted again once the queue drained.
        let again = service.submit(request(&ct, &tmp.join("e"))).unwrap();
        assert!(again.blocking_recv().unwrap().is_ok());
    }

    /// Scheduling policy (field 41 of /proc/<pid>/task/<tid>/stat) of a thread of this process:
    /// the kernel's view. Linux: SCHED_OTHER 0, SCHED_BATCH 3, SCHED_IDLE 5.
    #[cfg(target_os = "linux")]
    fn kernel_policy_and_nice(tid: i64) -> (u32, i32) {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
        let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
        (fields[41 - 3].parse().unwrap(), fields[19 - 3].parse().unwrap())
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_worker_thread_runs_with_the_configured_scheduling() {
        use crate::scheduling::current_tid;
        for (scheduling, policy) in [(WorkerScheduling::Idle, 5), (WorkerScheduling::Batch, 3)] {
            let (tid_tx, tid_rx) = std::sync::mpsc::channel();
            let gate = Gate::default();
            let make = segmenter(gate.clone());
            let limits = ServiceLimits { scheduling, ..limits_default() };
            // The segmenter is made on the worker: it reports the worker's thread id, and the
            // worker stays alive (waiting for requests) while /proc is read.
            let service = SegmentationService::start(limits, move || {
                let _ = tid_tx.send(current_tid());
                make()
            });
            let tid = tid_rx.recv_timeout(Duration::from_secs(30)).unwrap();
            let (kernel_policy, nice) = kernel_policy_and_nice(tid);
            assert_eq!(
                kernel_policy, policy,
                "{scheduling:?}: the worker thread {tid} runs with policy {kernel_policy}"
            );
            if scheduling == WorkerScheduling::Batch {
                assert_eq!(nice, 19);
            }
            gate.open();
            drop(service);
        }
    }

    #[test]
    fn pacs_requests_are_checked_before_queueing_and_an_unreachable_pacs_is_a_clear_outcome() {
        let tmp = std::env::temp_dir().join(format!("nn_seg_service_pacs_{}", std::process::id()));
        let ct = write_case(&tmp);
        let gate = Gate::default();
        gate.open();
        let series = || PacsSeries { study_instance_uid: "1.2.3".into(), series_instance_uid: "1.2.3.4".into() };
        let by_pacs = |out: &str| SegmentRequest {
            input_path: String::new(),
            pacs_series: Some(series()),
            ..request(&ct, &tmp.join(out))
        };
        let refusal = |service: &SegmentationService, r: SegmentRequest| match service.submit(r) {
            Err(Refusal::BadRequest(m)) => m,
            other => panic!("expected a bad request, got {:?}", other.map(|_| ())),
        };
        let without = SegmentationService::start(limits_default(), segmenter(gate.clone()));
        assert!(refusal(&without, by_pacs("a")).contains("no PACS configured"));
        let store = SegmentRequest { store_seg_to_pacs: true, ..request(&ct, &tmp.join("a")) };
        assert!(refusal(&without, store.clone()).contains("pacs.host"));
        // A port nothing listens on (taken from the OS, then released): connection refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let pacs = PacsConfig { host: "127.0.0.1".into(), port, connect_timeout_s: 2.0, ..PacsConfig::default() };
        let with = SegmentationService::start(ServiceLimits { pacs, ..limits_default() }, segmenter(gate.clone()));
        let both = SegmentRequest { pacs_series: Some(series()), ..request(&ct, &tmp.join("b")) };
        assert!(refusal(&with, both).contains("not both"));
        let bad_uid = SegmentRequest {
            pacs_series: Some(PacsSeries { series_instance_uid: "../../etc".into(), ..series() }),
            ..by_pacs("c")
        };
        assert!(refusal(&with, bad_uid).contains("series_instance_uid"));
        // The test case is NIfTI: no DICOM SEG to store.
        assert!(refusal(&with, store).contains("DICOM input"));
        let e = with.submit(by_pacs("d")).unwrap().blocking_recv().unwrap().unwrap_err();
        assert!(
            e.contains("PACS unreachable") && e.contains("connection refused") && e.contains(&port.to_string()),
            "{e}"
        );
        // Nothing half-retrieved is left behind.
        assert!(!tmp.join("d/pacs_input/1.2.3.4").exists());
        let _ = std::fs::remove_dir_all(&tmp);
    }

    #[test]
    fn refuses_when_busy_if_so_configured_and_reports_errors_as_outcomes() {
        let tmp = std::env::temp_dir().join(format!("nn_seg_service_busy_{}", std::process::id()));
        let ct = write_case(&tmp);
        let gate = Gate::default();
        let limits =
            ServiceLimits { max_input_voxels: 1 << 24, queue_when_busy: false, max_queue: 4, ..limits_default() };
        let service = SegmentationService::start(limits, segmenter(gate.clone()));
        let first = service.submit(request(&ct, &tmp.join("a"))).unwrap();
        let second = service.submit(request(&ct, &tmp.join("b")));
        assert_eq!(second.unwrap_err(), Refusal::Busy);
        gate.open();
        assert!(first.blocking_recv().unwrap().is_ok());
        // 64,000 voxels against a limit of 1,000: an error outcome, not a crash.
        let small = ServiceLimits { max_input_voxels: 1000, queue_when_busy: false, max_queue: 4, ..limits_default() };
        let service = SegmentationService::start(small, segmenter(gate.clone()));
        let e = service.submit(request(&ct, &tmp.join("c"))).unwrap().blocking_recv().unwrap().unwrap_err();
        assert!(e.contains("max_input_voxels"), "{e}");
        // A model that failed to load answers every request with its error.
        let broken = SegmentationService::start(
            ServiceLimits { max_input_voxels: 1 << 24, queue_when_busy: true, max_queue: 1, ..limits_default() },
            || Err("model missing.onnx: no such file".to_string()),
        );
        let e = broken.submit(request(&ct, &tmp.join("d"))).unwrap().blocking_recv().unwrap().unwrap_err();
        assert!(e.contains("missing.onnx"), "{e}");
    }
}
