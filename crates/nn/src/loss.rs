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
