//! Writing a result without losing the previous one: every file goes to a temporary name in
//! its final folder and is renamed into place only once all of them are complete, so a failed
//! or interrupted write leaves the earlier result as it was (plus, at worst, `.partial-*` files,
//! which are never read and are removed on the next write).

use std::path::{Path, PathBuf};

/// Prefix of the temporary names (hidden files in the output folder).
pub const PARTIAL_PREFIX: &str = ".partial-";
/// Prefix of the previous result's files while the new ones are put in place.
pub const PREVIOUS_PREFIX: &str = ".previous-";

/// Final paths whose staged write is made to fail (tests of the failure path; writes as root
/// cannot be made to fail by permissions). Only with the `fault-injection` feature, which only
/// tests turn on (as a dev-dependency feature, so never in a shipped build).
#[cfg(any(test, feature = "fault-injection"))]
pub static FAIL_WRITES: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error(
        "{dir} already holds a result ({}); it is kept: choose another output folder, or ask to replace it \
         ({how_to_replace})",
        .files.join(", ")
    )]
    Exists { dir: String, files: Vec<String>, how_to_replace: String },
    #[error("cannot write {path}: {reason}; the previous result, if any, is unchanged")]
    Write { path: String, reason: String },
    #[error("cannot put {path} in place: {source}")]
    Commit { path: String, source: std::io::Error },
}

/// The files among `names` that exist in `dir`.
pub fn existing(dir: &Path, names: &[&str]) -> Vec<String> {
    names.iter().filter(|n| dir.join(n).exists()).map(|n| n.to_string()).collect()
}

/// Refuses when `dir` holds any of `names` and replacing was not asked for.
pub fn refuse_existing(dir: &Path, names: &[&str], overwrite: bool, how_to_replace: &str) -> Result<(), OutputError> {
    let found = existing(dir, names);
    if overwrite || found.is_empty() {
        return Ok(());
    }
    Err(OutputError::Exists { dir: dir.display().to_string(), files: found, how_to_replace: how_to_replace.into() })
}

/// Writes one file through a temporary name beside it and a rename: a reader, or a restart after a
/// crash mid-write, sees the old file or the new one, never half of one.
pub fn write_file_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let tmp = partial_path(dir, &name);
    std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, path)).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// The temporary name of `name` in `dir`: hidden, unique to this process and call, and with
/// the same ending (writers that choose the format by the ending, `.nii.gz`, still do).
pub fn partial_path(dir: &Path, name: &str) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("{PARTIAL_PREFIX}{}-{n}-{name}", std::process::id()))
}

/// Files being written under temporary names; dropped without [`Staged::commit`], they are removed.
#[derive(Debug)]
pub struct Staged {
    dir: PathBuf,
    /// (temporary, final), renamed in this order.
    entries: Vec<(PathBuf, PathBuf)>,
}

impl Staged {
    pub fn new(dir: &Path) -> Result<Staged, OutputError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| OutputError::Write { path: dir.display().to_string(), reason: e.to_string() })?;
        Ok(Staged { dir: dir.to_path_buf(), entries: Vec::new() })
    }

    /// Where to write the file that will become `dir/name`.
    pub fn path(&mut self, name: &str) -> PathBuf {
        #[allow(unused_mut)]
        let mut tmp = partial_path(&self.dir, name);
        #[cfg(any(test, feature = "fault-injection"))]
        if FAIL_WRITES.lock().is_ok_and(|f| f.contains(&self.dir.join(name))) {
            tmp = self.dir.join(".no-such-folder").join(name);
        }
        self.entries.push((tmp.clone(), self.dir.join(name)));
        tmp
    }

    /// The final path of `name`.
    pub fn final_path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Puts every staged file in place, in the order they were staged, and removes `obsolete`
    /// (files of the previous result that this one does not rewrite). The previous files are
    /// first moved aside and restored if any step fails, so the folder holds either the whole
    /// previous result or the whole new one.
    pub fn commit(mut self, obsolete: &[PathBuf]) -> Result<(), OutputError> {
        let entries = std::mem::take(&mut self.entries);
        let mut targets: Vec<&PathBuf> = entries.iter().map(|(_, t)| t).collect();
        targets.extend(obsolete);
        for target in &targets {
            if target.is_dir() {
                let source = std::io::Error::other("a folder is in the way of the result file");
                return Err(OutputError::Commit { path: target.display().to_string(), source });
            }
        }
        // Move the previous files aside.
        let mut aside: Vec<(PathBuf, PathBuf)> = Vec::new();
        let restore = |aside: &[(PathBuf, PathBuf)]| {
            for (original, moved) in aside {
                let _ = std::fs::rename(moved, original);
            }
        };
        for target in &targets {
            if target.exists() {
                let name = target.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
                let moved = self.dir.join(format!("{PREVIOUS_PREFIX}{}-{name}", std::process::id()));
                if let Err(source) = std::fs::rename(target, &moved) {
                    restore(&aside);
                    for (tmp, _) in &entries {
                        let _ = std::fs::remove_file(tmp);
                    }
                    return Err(OutputError::Commit { path: target.display().to_string(), source });
                }
                aside.push(((*target).clone(), moved));
            }
        }
        for (n, (tmp, target)) in entries.iter().enumerate() {
            if let Err(source) = std::fs::rename(tmp, target) {
                for (_, placed) in &entries[..n] {
                    let _ = std::fs::remove_file(placed);
                }
                for (rest, _) in &entries[n..] {
                    let _ = std::fs::remove_file(rest);
                }
                restore(&aside);
                return Err(OutputError::Commit { path: target.display().to_string(), source });
            }
        }
        for (_, moved) in &aside {
            if let Err(e) = std::fs::remove_file(moved) {
                tracing::warn!("cannot remove the previous result's {}: {e}", moved.display());
            }
        }
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        for (tmp, _) in &self.entries {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_appear_only_on_commit_and_vanish_when_dropped() {
        let dir = std::env::temp_dir().join(format!("nn_output_files_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut staged = Staged::new(&dir).unwrap();
        let tmp = staged.path("a.nii.gz");
        assert!(tmp.to_string_lossy().ends_with("-a.nii.gz"), "{}", tmp.display());
        std::fs::write(&tmp, "new").unwrap();
        std::fs::write(dir.join("a.nii.gz"), "old").unwrap();
        drop(staged);
        assert!(!tmp.exists());
        assert_eq!(std::fs::read_to_string(dir.join("a.nii.gz")).unwrap(), "old");

        std::fs::write(dir.join("stale.ply"), "old").unwrap();
        let mut staged = Staged::new(&dir).unwrap();
        std::fs::write(staged.path("a.nii.gz"), "new").unwrap();
        std::fs::write(staged.path("b.json"), "summary").unwrap();
        staged.commit(&[dir.join("stale.ply")]).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("a.nii.gz")).unwrap(), "new");
        assert_eq!(std::fs::read_to_string(dir.join("b.json")).unwrap(), "summary");
        assert!(!dir.join("stale.ply").exists());
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left.len(), 2, "{left:?}");

        let err = refuse_existing(&dir, &["a.nii.gz", "c.ply"], false, "--overwrite").unwrap_err().to_string();
        assert!(err.contains("already holds a result (a.nii.gz)") && err.contains("--overwrite"), "{err}");
        assert!(refuse_existing(&dir, &["a.nii.gz"], true, "--overwrite").is_ok());
        assert!(refuse_existing(&dir, &["c.ply"], false, "--overwrite").is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
