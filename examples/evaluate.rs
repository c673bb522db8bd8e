//! Every binary metric of a predictions file, as text or one JSON object, with optional plots.
//!
//! ```text
//! cargo run --release --example evaluate -- --predictions FILE.csv [--json] [--plots DIR]
//!     [--threshold 0.5]
//! ```
//!
//! The CSV has the header `id,label,score` (label 0/1, score = probability of class 1) and
//! optional `video` (adds video-level metrics, frame scores averaged per video) and `group`
//! (adds a per-group breakdown) columns.

use std::path::PathBuf;
use std::process::ExitCode;

use deeprecog::cli::Args;
use deeprecog::metrics::{self as m, binary, plot, BinaryReport};
use serde_json::{json, Map, Value};

type AnyResult<T> = Result<T, Box<dyn std::error::Error>>;

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "undefined".into(), |v| format!("{v:.6}"))
}

fn print_report(title: &str, r: &BinaryReport) {
    let c = &r.confusion;
    println!("== {title} (n = {}, positives = {}) ==", r.n, r.positives);
    println!(
        "accuracy@{:<5}        {:.6}   (majority baseline {:.6})",
        r.threshold, r.accuracy, r.majority_baseline
    );
    println!("balanced accuracy     {}", opt(r.balanced_accuracy));
    println!("precision / recall    {} / {}", opt(r.precision), opt(r.recall));
    println!("specificity / F1      {} / {}", opt(r.specificity), opt(r.f1));
    println!("confusion             tp {} fp {} tn {} fn {}", c.tp, c.fp, c.tn, c.fn_);
    println!("ROC-AUC               {}", opt(r.roc_auc));
    println!("average precision     {}", opt(r.average_precision));
    println!("log-loss              {:.6}", r.log_loss);
    println!("EER                   {}", opt(r.eer.map(|e| e.rate)));
    println!("ECE (15 bins)         {:.6}", r.ece);
    let (f1, j) = (r.best_f1.map(|b| b.threshold), r.best_youden.map(|b| b.threshold));
    println!("best F1 / J threshold {} / {}", opt(f1), opt(j));
}

fn run(args: &Args) -> AnyResult<()> {
    let unknown = args.unknown(&["predictions", "json", "plots", "threshold"]);
    if !unknown.is_empty() {
        return Err(format!("unknown options: {unknown:?}").into());
    }
    let path: PathBuf = args.require("predictions")?;
    let threshold: f64 = args.get("threshold")?.unwrap_or(0.5);
    let p = m::predictions::read_csv(&path)?;
    let report = BinaryReport::new(&p.labels, &p.scores, threshold)?;
    let video = match &p.videos {
        Some(ids) => {
            let v = m::aggregate_by_video(ids, &p.labels, &p.scores, m::Aggregation::Mean)?;
            Some((BinaryReport::new(&v.labels, &v.scores, threshold)?, v))
        }
        None => None,
    };
    let mut groups = Map::new();
    let mut breakdown = None;
    if let Some(g) = &p.groups {
        let acc = m::subgroup_breakdown(g, &p.labels, &p.scores, |y, s| {
            binary::accuracy(y, s, threshold)
        })?;
        let auc = m::subgroup_breakdown(g, &p.labels, &p.scores, binary::roc_auc)?;
        let f1 = m::subgroup_breakdown(g, &p.labels, &p.scores, |y, s| {
            m::BinaryConfusion::from_scores(y, s, threshold)?
                .f1()
                .ok_or(m::Error::Undefined { metric: "F1", reason: "no positives" })
        })?;
        for ((a, u), f) in acc.groups.iter().zip(&auc.groups).zip(&f1.groups) {
            let entry = json!({"n": a.n, "positives": a.positives, "accuracy": a.value, "f1": f.value, "roc_auc": u.value});
            groups.insert(a.group.clone(), entry);
        }
        breakdown = Some((acc, f1, auc));
    }
    if let Some(dir) = args.value("plots") {
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir)?;
        if let Ok(roc) = binary::RocCurve::simplified(&p.labels, &p.scores) {
            let mut curves = vec![("frame", roc)];
            if let Some((_, v)) = &video {
                curves.extend(
                    binary::RocCurve::simplified(&v.labels, &v.scores).map(|r| ("video", r)),
                );
            }
            let refs: Vec<(&str, &binary::RocCurve)> =
                curves.iter().map(|(n, c)| (*n, c)).collect();
            plot::roc_curves(&dir.join("roc.png"), &refs, "ROC curve")?;
        }
        if let Ok(pr) = binary::PrCurve::new(&p.labels, &p.scores) {
            let rate = report.positives as f64 / report.n as f64;
            plot::pr_curves(
                &dir.join("pr.png"),
                &[("frame", &pr, rate)],
                "Precision-recall curve",
            )?;
        }
        plot::confusion_matrix(
            &dir.join("confusion.png"),
            &report.confusion,
            ["0", "1"],
            &format!("Confusion matrix at {threshold}"),
        )?;
        let cal = m::calibration(&p.labels, &p.scores, 10)?;
        plot::reliability_diagram(&dir.join("reliability.png"), &cal, "Reliability diagram")?;
    }
    if args.flag("json") {
        let r = &report;
        let mut out = json!({
            "n": r.n, "accuracy": r.accuracy, "precision": r.precision, "recall": r.recall,
            "f1": r.f1, "roc_auc": r.roc_auc, "average_precision": r.average_precision,
            "log_loss": r.log_loss, "eer": r.eer.map(|e| e.rate), "ece": r.ece,
        });
        if let Some((v, _)) = &video {
            out["video_roc_auc"] = json!(v.roc_auc);
        }
        if p.groups.is_some() {
            out["groups"] = Value::Object(groups);
        }
        println!("{out}");
    } else {
        print_report("frames", &report);
        if let Some((v, scores)) = &video {
            print_report(&format!("videos (mean of frame scores, {} videos)", scores.ids.len()), v);
        }
        if let Some((acc, f1, auc)) = &breakdown {
            println!("== groups (accuracy gap {}, ROC-AUC gap {}) ==", opt(acc.gap), opt(auc.gap));
            for ((a, f), u) in acc.groups.iter().zip(&f1.groups).zip(&auc.groups) {
                println!(
                    "{:<16} n {:<7} accuracy {}  F1 {}  ROC-AUC {}",
                    a.group,
                    a.n,
                    opt(a.value),
                    opt(f.value),
                    opt(u.value)
                );
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(&Args::from_env(&["json"])) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
