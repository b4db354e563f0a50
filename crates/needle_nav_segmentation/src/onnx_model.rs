//! The vessel network through ONNX Runtime (`ort` with `load-dynamic`): the runtime library is
//! found at run time (`ORT_DYLIB_PATH`, which scripts/setup.sh points at the PyPI onnxruntime
//! wheel's libonnxruntime.so), the model's own metadata is read and checked against the contract
//! before any patch runs.

use crate::model_info::{ModelInfo, ModelInfoError, INPUT_NAME, METADATA_KEY, OUTPUT_NAME};
use crate::sliding_window::{PatchPredictor, PredictError};
use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(
        "ONNX Runtime is not available: {0}. Set ORT_DYLIB_PATH to libonnxruntime.so \
         (scripts/setup.sh installs it from the PyPI onnxruntime wheel and sets it in .setup/env.sh)"
    )]
    Runtime(String),
    #[error("cannot load the model {path}: {reason}")]
    Load { path: String, reason: String },
    #[error("model {path}: {source}")]
    Metadata { path: String, source: ModelInfoError },
    #[error("model {path} does not follow the needle_nav contract: {reason}")]
    Contract { path: String, reason: String },
}

/// The library `ort` loads: `ORT_DYLIB_PATH`, else a `libonnxruntime.so*` on `LD_LIBRARY_PATH`
/// or in the usual system folders.
pub fn runtime_library() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        return Some(PathBuf::from(p));
    }
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("LD_LIBRARY_PATH").map(|v| std::env::split_paths(&v).collect()).unwrap_or_default();
    dirs.extend(["/usr/local/lib", "/usr/lib", "/usr/lib/x86_64-linux-gnu"].map(PathBuf::from));
    dirs.iter().find_map(|d| {
        let entries = std::fs::read_dir(d).ok()?;
        entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libonnxruntime.so")))
    })
}

/// The process's one ONNX Runtime environment (ONNX Runtime allows only one).
fn environment() -> Result<Environment, ModelError> {
    static ENV: OnceLock<Result<Environment, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let lib = runtime_library().ok_or_else(|| "no libonnxruntime.so found".to_string())?;
        if !lib.is_file() {
            return Err(format!("{} does not exist", lib.display()));
        }
        let builder = ort::init_from(&lib).map_err(|e| format!("{}: {e}", lib.display()))?;
        let env = builder.with_name("needle_nav").build().map_err(|e| format!("{}: {e}", lib.display()))?;
        tracing::info!(library = %lib.display(), "ONNX Runtime loaded");
        Ok(env)
    })
    .clone()
    .map_err(ModelError::Runtime)
}

/// A loaded vessel model: one ONNX Runtime session and the model's self-description.
pub struct OnnxVesselModel {
    session: Session,
    pub info: ModelInfo,
    pub path: PathBuf,
}

impl std::fmt::Debug for OnnxVesselModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxVesselModel").field("path", &self.path).field("info", &self.info).finish()
    }
}

impl OnnxVesselModel {
    /// Loads `path` with `threads` intra-op threads and checks its metadata and tensor names.
    pub fn load(path: &Path, threads: usize) -> Result<OnnxVesselModel, ModelError> {
        let shown = path.display().to_string();
        if !path.is_file() {
            return Err(ModelError::Load { path: shown, reason: "no such file".into() });
        }
        let env = environment()?;
        let load = |reason: String| ModelError::Load { path: shown.clone(), reason };
        let session = Session::builder(&env)
            .map_err(|e| load(e.to_string()))?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(|e| load(e.to_string()))?
            .with_intra_threads(threads.max(1))
            .map_err(|e| load(e.to_string()))?
            .commit_from_file(path)
            .map_err(|e| load(e.to_string()))?;
        let text = session
            .metadata()
            .map_err(|e| load(e.to_string()))?
            .custom(METADATA_KEY)
            .ok_or(ModelError::Metadata { path: shown.clone(), source: ModelInfoError::Missing })?;
        let info =
            ModelInfo::from_json(&text).map_err(|source| ModelError::Metadata { path: shown.clone(), source })?;
        let contract = |reason: String| ModelError::Contract { path: shown.clone(), reason };
        let inputs: Vec<&str> = session.inputs().iter().map(|o| o.name()).collect();
        let outputs: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();
        if inputs != [INPUT_NAME] {
            return Err(contract(format!("inputs are {inputs:?}, expected [\"{INPUT_NAME}\"]")));
        }
        if !outputs.contains(&OUTPUT_NAME) {
            return Err(contract(format!("outputs are {outputs:?}, expected \"{OUTPUT_NAME}\"")));
        }
        Ok(OnnxVesselModel { session, info, path: path.to_path_buf() })
    }
}

impl PatchPredictor for OnnxVesselModel {
    fn classes(&self) -> usize {
        self.info.class_names.len()
    }

    fn predict(&mut self, patches: &[f32], count: usize, patch_xyz: [usize; 3]) -> Result<Vec<f32>, PredictError> {
        let [x, y, z] = patch_xyz;
        let classes = self.classes() as i64;
        let shape = [count, 1, z, y, x];
        let tensor = ort::value::Tensor::from_array((shape, patches.to_vec()))
            .map_err(|e| PredictError(format!("input tensor: {e}")))?;
        let outputs = self
            .session
            .run(ort::inputs![INPUT_NAME => tensor])
            .map_err(|e| PredictError(format!("ONNX Runtime: {e}")))?;
        let value =
            outputs.get(OUTPUT_NAME).ok_or_else(|| PredictError(format!("the model produced no '{OUTPUT_NAME}'")))?;
        let (shape, data) =
            value.try_extract_tensor::<f32>().map_err(|e| PredictError(format!("output tensor: {e}")))?;
        let expected = [count as i64, classes, z as i64, y as i64, x as i64];
        if shape[..] != expected[..] {
            return Err(PredictError(format!("output shape {:?}, expected {expected:?}", &shape[..])));
        }
        Ok(data.to_vec())
    }
}
