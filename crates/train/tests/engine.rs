#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The engine with a toy GAN step (two models, two optimizers, alternating updates): a run
//! stopped mid-epoch and resumed matches an uninterrupted one bit for bit; callbacks, early
//! stopping, non-finite losses and the skipped-samples list.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::{Init, VarMap};
use deeprecog_nn::init::{init_tensor, seeded_var_builder};
use deeprecog_nn::loss::bce_with_logits;
use deeprecog_nn::optim::{AdamConfig, BoxedOptimizer, OptimizerConfig, RmsPropConfig};
use deeprecog_train::callbacks::{BestCheckpoint, EarlyStopping, Every};
use deeprecog_train::{
    Checkpointable, Engine, EngineConfig, InMemoryBatches, Monitor, StepContext, StepOutput,
    TrainStep, ValidStep,
};

/// Generator: z (4) -> 2-d point; discriminator: point -> logit. Linear layers by hand.
struct ToyGan {
    g: VarMap,
    d: VarMap,
    g_opt: BoxedOptimizer,
    d_opt: BoxedOptimizer,
}

fn vars(varmap: &VarMap) -> Vec<Var> {
    let data = varmap.data().lock().unwrap();
    let mut named: Vec<_> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named.into_iter().map(|(_, v)| v).collect()
}

fn linear(varmap: &VarMap, x: &Tensor) -> Tensor {
    let data = varmap.data().lock().unwrap();
    let (w, b) = (data["fc.weight"].as_tensor(), data["fc.bias"].as_tensor());
    x.matmul(&w.t().unwrap()).unwrap().broadcast_add(b).unwrap()
}

impl ToyGan {
    fn new(seed: u64) -> ToyGan {
        let (g, d) = (VarMap::new(), VarMap::new());
        let vb = seeded_var_builder(&g, seed, DType::F32, &Device::Cpu);
        candle_nn::linear(4, 2, vb.pp("fc")).unwrap();
        let vb = seeded_var_builder(&d, seed + 1, DType::F32, &Device::Cpu);
        candle_nn::linear(2, 1, vb.pp("fc")).unwrap();
        let adam = OptimizerConfig::Adam(AdamConfig { lr: 2e-2, beta1: 0.5, ..Default::default() });
        let rms = OptimizerConfig::RmsProp(RmsPropConfig { lr: 1e-2, ..RmsPropConfig::keras() });
        let g_opt = adam.build(vars(&g)).unwrap();
        let d_opt = rms.build(vars(&d)).unwrap();
        ToyGan { g, d, g_opt, d_opt }
    }

    fn weights(&self) -> Vec<u32> {
        vars(&self.g)
            .iter()
            .chain(&vars(&self.d))
            .flat_map(|v| v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap())
            .map(f32::to_bits)
            .collect()
    }
}

impl Checkpointable for ToyGan {
    fn models(&self) -> Vec<(String, &VarMap)> {
        vec![("generator".into(), &self.g), ("discriminator".into(), &self.d)]
    }

    fn optimizers(&mut self) -> Vec<(String, &mut BoxedOptimizer)> {
        vec![
            ("generator_optimizer".into(), &mut self.g_opt),
            ("discriminator_optimizer".into(), &mut self.d_opt),
        ]
    }
}

impl TrainStep<Tensor> for ToyGan {
    fn step(&mut self, real: &Tensor, ctx: &StepContext) -> deeprecog_train::Result<StepOutput> {
        let n = real.dim(0)?;
        // Noise from (seed, step): nothing to carry across a resume.
        let z = init_tensor(
            Init::Randn { mean: 0.0, stdev: 1.0 },
            &Shape::from((n, 4)),
            ctx.seed,
            &format!("z.{}", ctx.step),
            DType::F32,
            &Device::Cpu,
        )?;
        let ones = Tensor::ones((n, 1), DType::F32, &Device::Cpu)?;
        let zeros = Tensor::zeros((n, 1), DType::F32, &Device::Cpu)?;
        // D on real and (detached) fake.
        let fake = linear(&self.g, &z).detach();
        let d_loss = (bce_with_logits(&linear(&self.d, real), &ones)?
            + bce_with_logits(&linear(&self.d, &fake), &zeros)?)?;
        self.d_opt.backward_step(&d_loss)?;
        // G through D with all-real targets; only G's optimizer steps.
        let g_loss = bce_with_logits(&linear(&self.d, &linear(&self.g, &z)), &ones)?;
        self.g_opt.backward_step(&g_loss)?;
        let scalar = |t: &Tensor| -> f64 { f64::from(t.to_scalar::<f32>().unwrap()) };
        Ok(StepOutput::new(n).mean("d_loss", scalar(&d_loss)).mean("loss", scalar(&g_loss)))
    }
}

fn real_batches() -> InMemoryBatches<Tensor> {
    let batches = (0..4)
        .map(|i| {
            let t = init_tensor(
                Init::Randn { mean: 3.0, stdev: 0.5 },
                &Shape::from((8, 2)),
                99,
                &format!("real.{i}"),
                DType::F32,
                &Device::Cpu,
            );
            t.unwrap()
        })
        .collect();
    InMemoryBatches(batches)
}

fn config(out: &Path) -> EngineConfig {
    EngineConfig {
        epochs: 3,
        seed: 5,
        out_dir: out.to_path_buf(),
        monitor: Monitor::min("train_loss"),
        ..Default::default()
    }
}

fn metrics(h: &deeprecog_train::History) -> Vec<BTreeMap<String, f64>> {
    h.epochs.iter().map(|r| r.metrics.clone()).collect()
}

#[test]
fn a_gan_stopped_mid_epoch_and_resumed_matches_an_uninterrupted_run_bit_for_bit() {
    let data = real_batches();
    let whole = tempfile::tempdir().unwrap();
    let mut reference = ToyGan::new(1);
    let before = reference.weights();
    let full = Engine::new(config(whole.path())).fit(&mut reference, &data).unwrap();
    assert_eq!(full.epochs.len(), 3);
    assert_ne!(before, reference.weights(), "training changed nothing");

    // Killed after 6 steps: in the middle of the second epoch.
    let split = tempfile::tempdir().unwrap();
    let mut first = ToyGan::new(1);
    let cfg = EngineConfig { max_steps: Some(6), ..config(split.path()) };
    let partial = Engine::new(cfg).fit(&mut first, &data).unwrap();
    assert_eq!(partial.epochs.len(), 1);
    let run = deeprecog_nn::checkpoint::read_run(split.path().join("last")).unwrap();
    assert_eq!((run.epoch, run.step), (1, 6));
    assert_eq!(run.parts.models, ["generator", "discriminator"]);
    assert_eq!(run.parts.optimizers.len(), 2);
    drop(first);

    // A new process: fresh models with other initial weights, everything from the checkpoint.
    let mut resumed = ToyGan::new(77);
    let rest = Engine::new(config(split.path())).fit(&mut resumed, &data).unwrap();
    assert_eq!(rest.resumed_from_step, Some(6));
    assert_eq!(reference.weights(), resumed.weights());
    assert_eq!(metrics(&full), metrics(&rest));
    assert_eq!(
        reference.g_opt.state().unwrap().step,
        resumed.g_opt.state().unwrap().step,
        "optimizer step counts"
    );
}

#[test]
fn periodic_callbacks_and_checkpoints_fire_where_asked() {
    let data = real_batches();
    let out = tempfile::tempdir().unwrap();
    let mut gan = ToyGan::new(3);
    let mut at_steps = Vec::new();
    let mut at_epochs = Vec::new();
    let cfg = EngineConfig { checkpoint_every_steps: Some(5), ..config(out.path()) };
    Engine::new(cfg)
        .callback(Every::steps(5, |ctx| {
            at_steps.push(ctx.position.step);
            Ok(())
        }))
        .callback(Every::epochs(2, |ctx| {
            at_epochs.push(ctx.position.epoch);
            Ok(())
        }))
        .fit(&mut gan, &data)
        .unwrap();
    assert_eq!(at_steps, [5, 10]);
    assert_eq!(at_epochs, [2]);
    assert!(out.path().join("last/generator.safetensors").is_file());
    assert!(out.path().join("history.json").is_file());
    // No staging or previous folders are left behind.
    let names: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
}

/// A step whose loss is NaN from the third step on, and a validation metric that never improves.
struct Broken {
    varmap: VarMap,
    opt: BoxedOptimizer,
    nan_from: u64,
}

impl Checkpointable for Broken {
    fn models(&self) -> Vec<(String, &VarMap)> {
        vec![("model".into(), &self.varmap)]
    }
    fn optimizers(&mut self) -> Vec<(String, &mut BoxedOptimizer)> {
        vec![("optimizer".into(), &mut self.opt)]
    }
}

impl TrainStep<Tensor> for Broken {
    fn step(&mut self, x: &Tensor, ctx: &StepContext) -> deeprecog_train::Result<StepOutput> {
        let loss = if ctx.step >= self.nan_from { f64::NAN } else { 1.0 };
        Ok(StepOutput::new(x.dim(0)?).mean("loss", loss))
    }
}

impl ValidStep<Tensor> for Broken {
    type Output = usize;
    fn valid_step(&mut self, x: &Tensor) -> deeprecog_train::Result<usize> {
        Ok(x.dim(0)?)
    }
    fn valid_metrics(
        &mut self,
        outputs: Vec<usize>,
    ) -> deeprecog_train::Result<BTreeMap<String, f64>> {
        Ok([("count".to_string(), outputs.iter().sum::<usize>() as f64)].into())
    }
}

fn broken(nan_from: u64) -> Broken {
    let varmap = VarMap::new();
    varmap.get(1, "w", Init::Const(0.0), DType::F32, &Device::Cpu).unwrap();
    let opt = OptimizerConfig::default().build(vars(&varmap)).unwrap();
    Broken { varmap, opt, nan_from }
}

#[test]
fn a_nan_loss_is_an_error_naming_the_batch_and_keeps_earlier_checkpoints() {
    let data = real_batches();
    let out = tempfile::tempdir().unwrap();
    let err = Engine::new(config(out.path())).fit(&mut broken(6), &data).unwrap_err();
    match err {
        deeprecog_train::Error::NonFinite { epoch, batch, metric, .. } => {
            assert_eq!((epoch, batch, metric.as_str()), (2, 2, "loss"));
        }
        other => panic!("expected NonFinite, got {other}"),
    }
    let run = deeprecog_nn::checkpoint::read_run(out.path().join("last")).unwrap();
    assert_eq!(run.epoch, 1, "the first epoch's checkpoint is kept");
}

#[test]
fn early_stopping_stops_and_the_best_checkpoint_is_written() {
    let data = real_batches();
    let out = tempfile::tempdir().unwrap();
    let cfg = EngineConfig { epochs: 10, monitor: Monitor::max("val_count"), ..config(out.path()) };
    let stop = EarlyStopping { patience: 2, monitor: cfg.monitor.clone() };
    let history = Engine::new(cfg)
        .callback(BestCheckpoint)
        .callback(stop)
        .fit_validated(&mut broken(u64::MAX), &data, &data)
        .unwrap();
    assert_eq!(history.epochs.len(), 3);
    assert!(history.stopped_early);
    assert_eq!(history.best_epoch, Some(1));
    assert_eq!(history.epochs[0].get("val_count"), Some(32.0));
    let best = deeprecog_nn::checkpoint::read_run(out.path().join("best")).unwrap();
    assert_eq!(best.epoch, 1);
    assert!(best.parts.optimizers.is_empty());
}
