//! Losses that stay finite for any logit.
//!
//! candle's `binary_cross_entropy_with_logit` computes `log(sigmoid(x))`, which overflows near
//! |x| = 50 in f32; here the log-sum-exp form `max(x, 0) - x t + log(1 + exp(-|x|))` is used.

use candle_core::{DType, Tensor};

use crate::{Error, Result};

fn same_shape(a: &Tensor, b: &Tensor, what: &str) -> Result<()> {
    if a.shape() != b.shape() {
        return Err(Error::Shape(format!("{what}: {:?} vs {:?}", a.dims(), b.dims())));
    }
    Ok(())
}

/// Element-wise binary cross-entropy of `logits` against 0/1 (or soft) `targets`, unreduced.
pub fn bce_with_logits_elementwise(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    same_shape(logits, targets, "bce_with_logits")?;
    let targets = targets.to_dtype(logits.dtype())?;
    let softplus_neg_abs = logits.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?;
    Ok((logits.relu()? - (logits * &targets)?)?.add(&softplus_neg_abs)?)
}

/// Mean binary cross-entropy with logits.
pub fn bce_with_logits(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    Ok(bce_with_logits_elementwise(logits, targets)?.mean_all()?)
}

/// Mean binary cross-entropy with logits where positives weigh `pos_weight` and negatives
/// `neg_weight` (class weights; `balance::class_weights` gives sklearn's "balanced" pair). Soft
/// targets interpolate the weight linearly.
pub fn weighted_bce_with_logits(
    logits: &Tensor,
    targets: &Tensor,
    neg_weight: f64,
    pos_weight: f64,
) -> Result<Tensor> {
    let elementwise = bce_with_logits_elementwise(logits, targets)?;
    let weight = targets.to_dtype(logits.dtype())?.affine(pos_weight - neg_weight, neg_weight)?;
    Ok((elementwise * weight)?.mean_all()?)
}

/// Binary focal loss with logits (Lin et al.; torchvision's `sigmoid_focal_loss` with
/// `reduction="mean"`): `alpha_t (1 - p_t)^gamma BCE`, `alpha` weighting positives (a negative
/// `alpha` disables the weighting, as in torchvision).
pub fn focal_loss_with_logits(
    logits: &Tensor,
    targets: &Tensor,
    alpha: f64,
    gamma: f64,
) -> Result<Tensor> {
    let ce = bce_with_logits_elementwise(logits, targets)?;
    let t = targets.to_dtype(logits.dtype())?;
    let p = candle_nn::ops::sigmoid(logits)?;
    // p_t = p t + (1 - p)(1 - t) = 1 - t - p + 2 p t
    let p_t = ((&p * &t)?.affine(2.0, 0.0)? - &p)?.sub(&t)?.affine(1.0, 1.0)?;
    // gamma = 0 is plain (alpha-weighted) BCE: the factor is 1 and is left out, because
    // powf's backward, gamma * x^(gamma - 1), is 0 * inf = NaN where 1 - p_t is exactly 0 (a
    // saturated correct prediction), whereas torch's pow backward gives 0 for a zero exponent.
    let mut loss =
        if gamma == 0.0 { ce } else { (ce * p_t.affine(-1.0, 1.0)?.relu()?.powf(gamma)?)? };
    if alpha >= 0.0 {
        loss = (loss * t.affine(2.0 * alpha - 1.0, 1.0 - alpha)?)?;
    }
    Ok(loss.mean_all()?)
}

/// Mean multi-class cross-entropy of `logits (N, C)` against class indices `targets (N,)`,
/// through a log-softmax so large logits stay finite.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let (n, _c) = logits.dims2()?;
    if targets.dims() != [n] {
        return Err(Error::Shape(format!(
            "cross_entropy: logits {:?} vs targets {:?}",
            logits.dims(),
            targets.dims()
        )));
    }
    let log_p = candle_nn::ops::log_softmax(logits, 1)?;
    let picked = log_p.gather(&targets.to_dtype(candle_core::DType::U32)?.unsqueeze(1)?, 1)?;
    Ok(picked.neg()?.mean_all()?)
}

/// Mean squared error (the DFDC report's L2 loss on probabilities).
pub fn mse(predictions: &Tensor, targets: &Tensor) -> Result<Tensor> {
    same_shape(predictions, targets, "mse")?;
    let d = (predictions - targets.to_dtype(predictions.dtype())?)?;
    Ok(d.sqr()?.mean_all()?)
}

/// Whether a scalar loss is finite (NaN and infinities are what training must stop on).
pub fn is_finite(loss: &Tensor) -> Result<bool> {
    let v = loss.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    Ok(v.iter().all(|x| x.is_finite()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    // Reference: the textbook definition -(t log s + (1-t) log(1-s)), s = 1/(1+e^-x), in
    // float64 Python where it is representable, and log1p for the tails:
    //   python3 -c "import math; print([max(x,0)-x*t+math.log1p(math.exp(-abs(x)))
    //     for x,t in zip([-100,-3,0,2.5,60],[1,0,1,0.3,1])])"
    // gives [100.0, 0.0485873515737, 0.69314718056, 1.82888973429, 8.76e-27]; the direct
    // formula agrees (0.0485873515737, 0.69314718056, 1.82888973429) where it does not overflow.
    #[test]
    fn matches_pytorch_including_extreme_logits() {
        let d = Device::Cpu;
        let x = Tensor::new(&[-100.0f32, -3.0, 0.0, 2.5, 60.0], &d).unwrap();
        let t = Tensor::new(&[1.0f32, 0.0, 1.0, 0.3, 1.0], &d).unwrap();
        let got = bce_with_logits_elementwise(&x, &t).unwrap().to_vec1::<f32>().unwrap();
        let want = [100.0f32, 0.048_587_352, std::f32::consts::LN_2, 1.828_889_7, 0.0];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "{got:?}");
        }
        assert!(is_finite(&bce_with_logits(&x, &t).unwrap()).unwrap());
        assert!(bce_with_logits(&x, &t.narrow(0, 0, 2).unwrap()).is_err());
    }

    // Reference values from Python's math module in float64:
    //   ce:    logits [[2,-1,.5],[-100,100,0],[0,0,0]], targets [0,0,2]
    //          -> per row log-sum-exp minus the target logit = [0.2413113, 200, 1.0986123], mean 67.1133079
    //   focal: x [-3,0,2.5,60], t [1,0,1,0], alpha .25, gamma 2 -> mean 11.4554122
    //   wbce:  same x, t, weights neg .5 / pos 2 -> mean 9.1503819
    #[test]
    fn cross_entropy_focal_and_weighted_match_python() {
        let d = Device::Cpu;
        let logits =
            Tensor::new(&[[2.0f32, -1.0, 0.5], [-100.0, 100.0, 0.0], [0.0, 0.0, 0.0]], &d).unwrap();
        let classes = Tensor::new(&[0u32, 0, 2], &d).unwrap();
        let ce = cross_entropy(&logits, &classes).unwrap().to_scalar::<f32>().unwrap();
        assert!((ce - 67.113_31).abs() < 1e-3, "{ce}");
        assert!(cross_entropy(&logits, &classes.narrow(0, 0, 2).unwrap()).is_err());

        let x = Tensor::new(&[-3.0f32, 0.0, 2.5, 60.0], &d).unwrap();
        let t = Tensor::new(&[1.0f32, 0.0, 1.0, 0.0], &d).unwrap();
        let focal = focal_loss_with_logits(&x, &t, 0.25, 2.0).unwrap().to_scalar::<f32>().unwrap();
        assert!((focal - 11.455_412).abs() < 1e-4, "{focal}");
        // gamma 0 and no alpha is plain BCE.
        let plain = focal_loss_with_logits(&x, &t, -1.0, 0.0).unwrap().to_scalar::<f32>().unwrap();
        let bce = bce_with_logits(&x, &t).unwrap().to_scalar::<f32>().unwrap();
        assert!((plain - bce).abs() < 1e-5);
        let w = weighted_bce_with_logits(&x, &t, 0.5, 2.0).unwrap().to_scalar::<f32>().unwrap();
        assert!((w - 9.150_382).abs() < 1e-4, "{w}");
    }

    #[test]
    fn mse_and_finiteness() {
        let d = Device::Cpu;
        let p = Tensor::new(&[0.0f32, 1.0], &d).unwrap();
        let t = Tensor::new(&[1.0f32, 1.0], &d).unwrap();
        assert_eq!(mse(&p, &t).unwrap().to_scalar::<f32>().unwrap(), 0.5);
        let nan = Tensor::new(f32::NAN, &d).unwrap();
        assert!(!is_finite(&nan).unwrap());
    }
}
