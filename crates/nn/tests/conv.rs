//! `conv::conv2d` against direct loops (forward and both gradients) and candle's forward on odd
//! shapes, strides, padding, dilation, groups and batch 1 (the Winograd path among them); `im2col` /
//! `col2im` as adjoints; a finite-difference check in f64; the gradient functions against the
//! backward pass and direct loops.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use candle_core::{DType, Device, Tensor, Var};
use deeprecog_nn::conv::{
    col2im, conv2d, conv2d_input_grad, conv2d_weight_grad, conv_transpose2d, im2col, Conv2dParams,
    ConvTranspose2dParams, Window,
};

mod common;
use common::max_diff;

fn randn(shape: &[usize], name: &str, dtype: DType) -> Tensor {
    common::randn(7, shape, name, dtype)
}

/// (n, c, h, w, o, (kh, kw), stride, padding, dilation, groups)
type Case = (usize, usize, usize, usize, usize, (usize, usize), usize, usize, usize, usize);

const CASES: [Case; 41] = [
    (2, 3, 7, 9, 4, (3, 3), 1, 1, 1, 1),
    // One image through a 1x1 layer: the product writes the output directly.
    (1, 5, 6, 7, 4, (1, 1), 1, 0, 1, 1),
    (1, 4, 8, 8, 6, (3, 3), 2, 1, 1, 2),
    (3, 6, 5, 6, 6, (3, 3), 1, 1, 1, 6),
    (2, 3, 9, 7, 5, (1, 1), 1, 0, 1, 1),
    (2, 5, 9, 7, 4, (1, 1), 2, 0, 1, 1),
    (2, 2, 11, 10, 3, (3, 3), 1, 2, 2, 1),
    (2, 2, 8, 7, 3, (3, 2), 2, 0, 1, 1),
    (1, 3, 13, 13, 8, (7, 7), 2, 3, 1, 1),
    (4, 8, 6, 5, 8, (3, 3), 2, 1, 1, 8),
    (2, 4, 10, 9, 4, (5, 5), 2, 2, 1, 4),
    (1, 3, 7, 4, 3, (3, 3), 1, 0, 1, 3),
    // Batches whose small outputs put several images in one GEMM chunk, a short last chunk,
    // pointwise and grouped chunks.
    (8, 3, 5, 4, 5, (3, 3), 1, 1, 1, 1),
    (7, 4, 3, 3, 6, (1, 1), 1, 0, 1, 2),
    (5, 6, 6, 7, 4, (3, 3), 2, 1, 1, 2),
    (9, 5, 2, 3, 3, (1, 1), 1, 0, 1, 1),
    // Images whose columns exceed a band (64Ki values), computed in bands of output rows:
    // one image (bands side by side), several (bands in turn), grouped, strided, dilated.
    (1, 8, 40, 36, 5, (3, 3), 1, 1, 1, 1),
    (3, 16, 70, 40, 6, (3, 3), 2, 1, 1, 2),
    (1, 4, 90, 50, 3, (3, 3), 1, 2, 2, 1),
    (1, 8, 40, 36, 6, (3, 3), 1, 1, 1, 2),
    // 3x3 stride-1 windows with 16 or more channels both ways (Winograd F(2x2, 3x3), forward
    // and input gradient): odd and even output sizes, padding 0 to 2, an input one row high,
    // tile rows of several images in one block, and an image cut into many blocks.
    (1, 16, 13, 11, 17, (3, 3), 1, 1, 1, 1),
    (6, 17, 7, 6, 16, (3, 3), 1, 0, 1, 1),
    (2, 16, 5, 8, 18, (3, 3), 1, 2, 1, 1),
    (20, 20, 1, 3, 16, (3, 3), 1, 1, 1, 1),
    (1, 24, 40, 30, 16, (3, 3), 1, 1, 1, 1),
    // More than 128 output channels: the Winograd products on the `gemm` crate instead of the
    // panel kernel.
    (1, 16, 24, 23, 130, (3, 3), 1, 1, 1, 1),
    // 4x4 stride-2 layers of 16 or more channels and 64 or more 2x2 output tiles: F(2x2, 2x2)
    // over the stride's phases, 17 images per thread on two (one 16 x 16 register transpose
    // and a tail), an odd output height with padding 2, and 64 tiles an image over 4 images a
    // task, enough for the weight gradient too.
    (34, 16, 8, 8, 16, (4, 4), 2, 1, 1, 1),
    (4, 17, 17, 15, 18, (4, 4), 2, 2, 1, 1),
    (8, 16, 32, 32, 16, (4, 4), 2, 1, 1, 1),
    // One image through a 1x1 layer of 24 channels (three register blocks of rows, uneven
    // over two threads): split by columns instead, 196 columns (a 4-column tail).
    (1, 12, 14, 14, 24, (1, 1), 1, 0, 1, 1),
    // Chunks of two images of 144 output pixels, each image's product written into its own
    // block: a 1x1 layer reading its input in place, a grouped strided 3x3 one from columns.
    (4, 6, 12, 12, 10, (1, 1), 1, 0, 1, 1),
    (4, 6, 24, 23, 10, (3, 3), 2, 1, 1, 2),
    // Strided windows over 8 or more input channels per group and 8 or more columns per
    // phase row, whose input gradients are one stride-1 product per phase: DCGAN's 4x4
    // stride 2, 9 channels (a register block and a row), 1x1 stride 2 (phases no tap
    // reaches), stride 3 with groups, several images per chunk.
    (2, 8, 12, 17, 16, (4, 4), 2, 1, 1, 1),
    (3, 9, 7, 19, 5, (3, 3), 2, 1, 1, 1),
    (2, 10, 9, 16, 7, (1, 1), 2, 0, 1, 1),
    (2, 16, 11, 25, 6, (5, 5), 3, 2, 1, 2),
    (12, 8, 4, 16, 8, (4, 4), 2, 1, 1, 1),
    // Weight gradients on `planes`, one 48-column panel of `im2row` at a time (192 or more
    // columns, 64 or more output positions, 256 or more per thread): DCGAN's 4x4 stride 2
    // (four whole panels), a 3x3 stride-2 one of 198 columns (a last panel of 6 live columns
    // in 16), a narrow 3x3 stride-1 one of 216 columns (a last panel of 24 in 32), and 289
    // output positions per image (groups of 4 images, a run of 5 on two threads).
    (12, 12, 16, 16, 9, (4, 4), 2, 1, 1, 1),
    (9, 22, 17, 19, 10, (3, 3), 2, 1, 1, 1),
    (9, 24, 10, 10, 7, (3, 3), 1, 1, 1, 1),
    (10, 16, 34, 34, 8, (4, 4), 2, 1, 1, 1),
];

/// Strided layers with outputs of 64 pixels or fewer and output channels a multiple of 16, run
/// by `direct` (register blocks of 4 pixels by up to 96 channels, over depth blocks of about
/// 1,024 steps), forward and, with input channels a multiple of 16 and kernels that the stride
/// divides, input gradient (one pass per phase of the stride): 70 input channels (two depth
/// blocks), 112 output channels (a block of 96 and one of 16), 32, 80 and 48, pixel counts
/// that leave a partial block (25), stride 3 (nine phases of one tap), non-square kernels,
/// dilation 2 (phases no tap reaches), and runs of uneven length on 2 and 3 threads.
const SMALL_STRIDED: [Case; 5] = [
    (4, 70, 9, 8, 112, (3, 3), 2, 1, 1, 1),
    (3, 32, 11, 10, 32, (3, 3), 3, 2, 1, 1),
    (2, 16, 13, 9, 80, (4, 4), 2, 2, 2, 1),
    (5, 16, 8, 8, 48, (4, 4), 2, 1, 1, 1),
    (4, 48, 10, 8, 32, (4, 2), 2, 1, 1, 1),
];

/// `SMALL_STRIDED` forward with a bias and a ReLU6, and input gradients, against direct loops,
/// on pools of 1 to 3 threads; then the same layer over constant tensors, first with one image
/// (on `planes`, which keeps its packed weight) and then with the batch (on `direct`, which must
/// not read that buffer as its own layout); and its gradients through the backward pass.
#[test]
fn small_strided_outputs_match_direct_loops_on_any_thread_count() {
    use deeprecog_nn::conv::{conv2d_act, Activation};
    use deeprecog_nn::layers::Conv2d;
    for (i, &(n, c, h, w, o, (kh, kw), stride, padding, dilation, groups)) in
        SMALL_STRIDED.iter().enumerate()
    {
        let p = Conv2dParams { stride, padding, dilation, groups };
        let x = Var::from_tensor(&randn(&[n, c, h, w], &format!("sx{i}"), DType::F32)).unwrap();
        let wt = Var::from_tensor(&randn(&[o, c, kh, kw], &format!("sw{i}"), DType::F32)).unwrap();
        let b = randn(&[o], &format!("sb{i}"), DType::F32);
        let (x, wt) = (x.as_tensor(), wt.as_tensor());
        let y = conv2d(x, wt, None, p).unwrap();
        let r = randn(y.dims(), &format!("sr{i}"), DType::F32);
        let (plain, dx, dw) = naive(x, wt, &r, p);
        let per = plain.len() / (n * o);
        let bias = b.to_vec1::<f32>().unwrap();
        let want: Vec<f64> = plain
            .iter()
            .enumerate()
            .map(|(j, v)| (v + f64::from(bias[j / per % o])).clamp(0.0, 6.0))
            .collect();
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let y = pool.install(|| conv2d_act(x, wt, Some(&b), p, Activation::Relu6)).unwrap();
            let err = max_rel(&y, &want);
            assert!(err < 1e-5, "case {i} on {threads} threads: forward {err:e}");
            let gx = pool.install(|| conv2d_input_grad(&r, wt, x.dims4().unwrap(), p)).unwrap();
            let err = max_rel(&gx, &dx);
            assert!(err < 1e-5, "case {i} on {threads} threads: input gradient {err:e}");
        }
        let layer = Conv2d::new(wt.detach(), Some(b.clone()), p);
        let one = layer.forward_act(&x.narrow(0, 0, 1).unwrap(), Activation::Relu6).unwrap();
        let err = max_rel(&one, &want[..o * per]);
        assert!(err < 1e-5, "case {i}: one image over constants {err:e}");
        for round in 0..2 {
            let all = layer.forward_act(&x.detach(), Activation::Relu6).unwrap();
            let err = max_rel(&all, &want);
            assert!(err < 1e-5, "case {i}: the batch over constants, call {round}: {err:e}");
        }
        let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let gx = max_rel(grads.get(x).unwrap(), &dx);
        let gw = max_rel(grads.get(wt).unwrap(), &dw);
        assert!(gx < 1e-5 && gw < 1e-5, "case {i}: input gradient {gx:e}, weight {gw:e}");
    }
}

/// Direct loops in f64: the output, and the input / weight gradients of `sum(y * r)`.
#[allow(clippy::type_complexity)]
fn naive(x: &Tensor, w: &Tensor, r: &Tensor, p: Conv2dParams) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (n, c, h, wd) = x.dims4().unwrap();
    let (o, cg, kh, kw) = w.dims4().unwrap();
    let xv = x.flatten_all().unwrap().to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap();
    let wv = w.flatten_all().unwrap().to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap();
    let rv = r.flatten_all().unwrap().to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap();
    let oh = (h + 2 * p.padding - p.dilation * (kh - 1) - 1) / p.stride + 1;
    let ow = (wd + 2 * p.padding - p.dilation * (kw - 1) - 1) / p.stride + 1;
    let og = o / p.groups;
    let (mut y, mut dx, mut dw) =
        (vec![0.0; n * o * oh * ow], vec![0.0; xv.len()], vec![0.0; wv.len()]);
    for b in 0..n {
        for oc in 0..o {
            let g = oc / og;
            for oy in 0..oh {
                for ox in 0..ow {
                    let yi = ((b * o + oc) * oh + oy) * ow + ox;
                    for ci in 0..cg {
                        let ic = g * cg + ci;
                        for i in 0..kh {
                            for j in 0..kw {
                                let sy =
                                    (oy * p.stride + i * p.dilation) as isize - p.padding as isize;
                                let sx =
                                    (ox * p.stride + j * p.dilation) as isize - p.padding as isize;
                                if sy < 0 || sx < 0 || sy as usize >= h || sx as usize >= wd {
                                    continue;
                                }
                                let xi = ((b * c + ic) * h + sy as usize) * wd + sx as usize;
                                let wi = ((oc * cg + ci) * kh + i) * kw + j;
                                y[yi] += xv[xi] * wv[wi];
                                dx[xi] += rv[yi] * wv[wi];
                                dw[wi] += rv[yi] * xv[xi];
                            }
                        }
                    }
                }
            }
        }
    }
    (y, dx, dw)
}

fn max_rel(a: &Tensor, b: &[f64]) -> f64 {
    let a = a.flatten_all().unwrap().to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap();
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max) / scale
}

/// `conv2d_input_grad` / `conv2d_weight_grad` are the backward pass's kernels in f32 (equal
/// values) and go through autograd in f64 (the direct loops' values).
#[test]
fn gradient_functions_match_the_backward_pass() {
    for (i, &(n, c, h, w, o, (kh, kw), stride, padding, dilation, groups)) in
        CASES.iter().enumerate().step_by(3)
    {
        let p = Conv2dParams { stride, padding, dilation, groups };
        for dtype in [DType::F32, DType::F64] {
            let x = Var::from_tensor(&randn(&[n, c, h, w], &format!("gx{i}"), dtype)).unwrap();
            let wt = Var::from_tensor(&randn(&[o, c / groups, kh, kw], &format!("gw{i}"), dtype))
                .unwrap();
            let y = conv2d(x.as_tensor(), wt.as_tensor(), None, p).unwrap();
            let r = randn(y.dims(), &format!("gr{i}"), dtype);
            let dx = conv2d_input_grad(&r, wt.as_tensor(), (n, c, h, w), p).unwrap();
            let dw = conv2d_weight_grad(x.as_tensor(), &r, (o, c / groups, kh, kw), p).unwrap();
            assert_eq!((dx.dims(), dw.dims()), (x.dims(), wt.dims()), "case {i} {dtype:?}");
            if dtype == DType::F32 {
                let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
                let same = |a: &Tensor, b: &Tensor| max_diff(a, b) == 0.0;
                assert!(same(&dx, grads.get(x.as_tensor()).unwrap()), "case {i}: input gradient");
                assert!(same(&dw, grads.get(wt.as_tensor()).unwrap()), "case {i}: weight gradient");
            } else {
                let (_, want_dx, want_dw) = naive(x.as_tensor(), wt.as_tensor(), &r, p);
                let (gx, gw) = (max_rel(&dx, &want_dx), max_rel(&dw, &want_dw));
                assert!(gx < 1e-10 && gw < 1e-10, "case {i}: f64 gradients {gx:e}, {gw:e}");
            }
        }
    }
    let g = Tensor::zeros((1, 4, 3, 3), DType::F32, &Device::Cpu).unwrap();
    let w = Tensor::zeros((4, 2, 3, 3), DType::F32, &Device::Cpu).unwrap();
    let p = Conv2dParams::default();
    assert!(conv2d_input_grad(&g, &w, (1, 2, 6, 6), p).is_err(), "gradient of the wrong size");
}

/// The weight gradient's panel path (images split over two or three threads) against the
/// direct loops and against one thread's `gemm` path: the same sums in another order.
#[test]
fn weight_gradient_panels_match_direct_loops_on_any_thread_count() {
    for (i, &(n, c, h, w, o, (kh, kw), stride, padding, dilation, groups)) in
        CASES.iter().enumerate().skip(CASES.len() - 4)
    {
        let p = Conv2dParams { stride, padding, dilation, groups };
        let x = randn(&[n, c, h, w], &format!("px{i}"), DType::F32);
        let wt = randn(&[o, c, kh, kw], &format!("pw{i}"), DType::F32);
        let y = conv2d(&x, &wt, None, p).unwrap();
        let r = randn(y.dims(), &format!("pr{i}"), DType::F32);
        let (_, _, want) = naive(&x, &wt, &r, p);
        let mut by_threads = Vec::new();
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let dw = pool.install(|| conv2d_weight_grad(&x, &r, (o, c, kh, kw), p)).unwrap();
            let err = max_rel(&dw, &want);
            assert!(err < 1e-5, "case {i} on {threads} threads: weight gradient {err:e}");
            by_threads.push(dw);
        }
        let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        let spread = max_diff(&by_threads[1], &by_threads[2]) / scale;
        assert!(spread < 1e-5, "case {i}: two and three threads differ by {spread:e} (relative)");
    }
}

#[test]
fn forward_and_gradients_match_direct_loops() {
    for (i, &(n, c, h, w, o, (kh, kw), stride, padding, dilation, groups)) in
        CASES.iter().enumerate()
    {
        let x = Var::from_tensor(&randn(&[n, c, h, w], &format!("x{i}"), DType::F32)).unwrap();
        let wt = Var::from_tensor(&randn(&[o, c / groups, kh, kw], &format!("w{i}"), DType::F32))
            .unwrap();
        let b = Var::from_tensor(&randn(&[o], &format!("b{i}"), DType::F32)).unwrap();
        let p = Conv2dParams { stride, padding, dilation, groups };
        let ours = conv2d(x.as_tensor(), wt.as_tensor(), Some(b.as_tensor()), p).unwrap();
        let nobias = conv2d(x.as_tensor(), wt.as_tensor(), None, p).unwrap();
        // candle's forward is right (its backward is what is slow, and wrong for some grouped
        // strided shapes: the input gradient of the last case comes back 6x6 for a 6x5 input).
        let candle =
            x.as_tensor().conv2d(wt.as_tensor(), padding, stride, dilation, groups).unwrap();
        assert!(max_diff(&nobias, &candle) < 1e-4, "case {i}: forward differs from candle's");
        // A loss that weights every output differently, so every gradient entry is tested.
        let r = randn(ours.dims(), &format!("r{i}"), DType::F32);
        let (y, dx, dw) = naive(x.as_tensor(), wt.as_tensor(), &r, p);
        assert!(max_rel(&nobias, &y) < 1e-5, "case {i}: forward differs from the direct loops");
        let grads = (&ours * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let gx = max_rel(grads.get(x.as_tensor()).unwrap(), &dx);
        let gw = max_rel(grads.get(wt.as_tensor()).unwrap(), &dw);
        assert!(
            gx < 1e-5 && gw < 1e-5,
            "case {i}: input gradient {gx:e}, weight gradient {gw:e} (relative)"
        );
        let db: Vec<f64> = (0..o)
            .map(|oc| {
                let rv = r
                    .to_dtype(DType::F64)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f64>()
                    .unwrap();
                let per = rv.len() / (n * o);
                (0..n).flat_map(|bb| rv[(bb * o + oc) * per..][..per].to_vec()).sum()
            })
            .collect();
        assert!(max_rel(grads.get(b.as_tensor()).unwrap(), &db) < 1e-5, "case {i}: bias gradient");
    }
}

/// `im2col` against its definition: outputs up to 16 wide (gathered a plane at a time through
/// a table), stride 2 from 8 wide (de-interleaved rows of a padded plane), other strides and
/// dilations row by row; padded, non-square.
#[test]
fn im2col_matches_its_definition() {
    let cases = [
        ([2, 3, 7, 6], Window { kernel: (3, 2), stride: 2, padding: 1, dilation: 1 }),
        ([2, 2, 12, 16], Window { kernel: (4, 4), stride: 2, padding: 1, dilation: 1 }),
        ([3, 2, 8, 8], Window { kernel: (4, 4), stride: 2, padding: 1, dilation: 1 }),
        ([1, 3, 8, 7], Window { kernel: (1, 1), stride: 2, padding: 0, dilation: 1 }),
        ([2, 2, 11, 9], Window { kernel: (5, 5), stride: 3, padding: 2, dilation: 1 }),
        ([1, 1, 5, 4], Window { kernel: (3, 3), stride: 2, padding: 3, dilation: 1 }),
        ([2, 1, 9, 10], Window { kernel: (2, 3), stride: 4, padding: 0, dilation: 1 }),
        ([1, 2, 6, 6], Window { kernel: (3, 3), stride: 1, padding: 1, dilation: 1 }),
        ([1, 2, 9, 40], Window { kernel: (3, 3), stride: 2, padding: 1, dilation: 1 }),
        ([1, 2, 9, 40], Window { kernel: (4, 4), stride: 1, padding: 2, dilation: 2 }),
        // Stride-2 outputs 8 to 16 wide (de-interleaved rows of a padded plane): 16, 14, 11,
        // 10 and 15 wide, padding 0 to 2, non-square kernels.
        ([2, 2, 9, 32], Window { kernel: (4, 4), stride: 2, padding: 1, dilation: 1 }),
        ([1, 3, 10, 27], Window { kernel: (3, 3), stride: 2, padding: 1, dilation: 1 }),
        ([2, 1, 7, 23], Window { kernel: (3, 3), stride: 2, padding: 0, dilation: 1 }),
        ([1, 2, 6, 20], Window { kernel: (2, 5), stride: 2, padding: 2, dilation: 1 }),
        ([3, 2, 5, 30], Window { kernel: (1, 1), stride: 2, padding: 0, dilation: 1 }),
        // Wider stride-2 rows, in pieces of 16: 32 and 40 wide, a 7x7 stem's padding of 3.
        ([2, 3, 6, 64], Window { kernel: (4, 4), stride: 2, padding: 1, dilation: 1 }),
        ([1, 3, 9, 79], Window { kernel: (7, 7), stride: 2, padding: 3, dilation: 1 }),
    ];
    for (case, (dims, win)) in cases.into_iter().enumerate() {
        let [n, c, h, w] = dims;
        let x = randn(&dims, &format!("def.x{case}"), DType::F32);
        let cols = im2col(&x, win).unwrap().to_vec2::<f32>().unwrap();
        let xv = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (oh, ow) = win.out_hw(h, w).unwrap();
        let (kh, kw) = win.kernel;
        let at = |pos: usize, tap: usize| {
            (pos * win.stride + tap * win.dilation).checked_sub(win.padding)
        };
        for (row, values) in cols.iter().enumerate() {
            let (ch, i, j) = (row / (kh * kw), row / kw % kh, row % kw);
            for (col, &got) in values.iter().enumerate() {
                let (img, y, xx) = (col / (oh * ow), col / ow % oh, col % ow);
                let want = match (at(y, i).filter(|&v| v < h), at(xx, j).filter(|&v| v < w)) {
                    (Some(sy), Some(sx)) => xv[((img * c + ch) * h + sy) * w + sx],
                    _ => 0.0,
                };
                assert_eq!(got, want, "case {case}: row {row}, column {col}");
            }
        }
        assert_eq!(cols.len(), c * kh * kw);
        assert!(cols.iter().all(|r| r.len() == n * oh * ow));
    }
}

#[test]
fn im2col_and_col2im_are_adjoint() {
    for (dims, win) in [
        ([2, 3, 7, 6], Window { kernel: (3, 2), stride: 2, padding: 1, dilation: 1 }),
        ([1, 2, 9, 40], Window { kernel: (3, 3), stride: 2, padding: 1, dilation: 1 }),
    ] {
        adjoint(dims, win);
    }
}

fn adjoint(dims: [usize; 4], win: Window) {
    let [n, c, h, w] = dims;
    let x = randn(&dims, "adj.x", DType::F64);
    let cols = im2col(&x, win).unwrap();
    let (oh, ow) = win.out_hw(h, w).unwrap();
    let (kh, kw) = win.kernel;
    assert_eq!(cols.dims(), &[c * kh * kw, n * oh * ow]);
    let r = randn(cols.dims(), "adj.c", DType::F64);
    let back = col2im(&r, win, (n, c, h, w)).unwrap();
    let lhs = (&cols * &r).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap();
    let rhs = (&x * &back).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap();
    assert!(
        (lhs - rhs).abs() < 1e-10 * lhs.abs().max(1.0),
        "<im2col x, c> = {lhs}, <x, col2im c> = {rhs}"
    );
    // col2im's own gradient is im2col: differentiate through both.
    let v = Var::from_tensor(&r).unwrap();
    let g = col2im(v.as_tensor(), win, (n, c, h, w))
        .unwrap()
        .mul(&x)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert!(max_diff(g.get(v.as_tensor()).unwrap(), &cols) < 1e-12);
}

#[test]
fn finite_differences_in_f64() {
    let p = Conv2dParams { stride: 2, padding: 1, dilation: 1, groups: 1 };
    let x = randn(&[1, 2, 5, 4], "fd.x", DType::F64);
    let w = Var::from_tensor(&randn(&[3, 2, 3, 3], "fd.w", DType::F64)).unwrap();
    let loss = |wt: &Tensor| conv2d(&x, wt, None, p).unwrap().sqr().unwrap().sum_all().unwrap();
    let grads = loss(w.as_tensor()).backward().unwrap();
    let analytic =
        grads.get(w.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let base = w.as_tensor().flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let eps = 1e-6;
    for k in [0, 7, 20, 53] {
        let mut plus = base.clone();
        plus[k] += eps;
        let mut minus = base.clone();
        minus[k] -= eps;
        let t = |v: Vec<f64>| Tensor::from_vec(v, (3, 2, 3, 3), &Device::Cpu).unwrap();
        let numeric = (loss(&t(plus)).to_scalar::<f64>().unwrap()
            - loss(&t(minus)).to_scalar::<f64>().unwrap())
            / (2.0 * eps);
        assert!(
            (numeric - analytic[k]).abs() < 1e-6 * numeric.abs().max(1.0),
            "weight {k}: {numeric} vs {}",
            analytic[k]
        );
    }
}

#[test]
fn bad_shapes_are_errors() {
    let x = randn(&[1, 4, 5, 5], "bad.x", DType::F32);
    let w = randn(&[6, 3, 3, 3], "bad.w", DType::F32);
    assert!(
        conv2d(&x, &w, None, Conv2dParams::default()).is_err(),
        "3 weight channels for 4 input channels"
    );
    let w = randn(&[6, 4, 7, 7], "bad.w2", DType::F32);
    assert!(conv2d(&x, &w, None, Conv2dParams::default()).is_err(), "a 7x7 kernel on a 5x5 input");
    let w = randn(&[6, 2, 3, 3], "bad.w3", DType::F32);
    assert!(conv2d(&x, &w, None, Conv2dParams { groups: 3, ..Default::default() }).is_err());
}

/// Direct loops for the transposed convolution in f64: every input pixel scatters its
/// weighted kernel into the output; the output and the gradients of `sum(y * r)`.
#[allow(clippy::type_complexity)]
fn naive_transpose(
    x: &Tensor,
    w: &Tensor,
    r: &Tensor,
    p: ConvTranspose2dParams,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (n, c, h, wd) = x.dims4().unwrap();
    let (_, og, kh, kw) = w.dims4().unwrap();
    let (_, o, oh, ow) = r.dims4().unwrap();
    let cg = c / p.groups;
    let xv = x.flatten_all().unwrap().to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap();
    let wv = w.flatten_all().unwrap().to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap();
    let rv = r.flatten_all().unwrap().to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap();
    let (mut y, mut dx, mut dw) =
        (vec![0.0; n * o * oh * ow], vec![0.0; xv.len()], vec![0.0; wv.len()]);
    for b in 0..n {
        for ic in 0..c {
            let g = ic / cg;
            for iy in 0..h {
                for ix in 0..wd {
                    let xi = ((b * c + ic) * h + iy) * wd + ix;
                    for oc in 0..og {
                        for i in 0..kh {
                            for j in 0..kw {
                                let yy =
                                    (iy * p.stride + i * p.dilation) as isize - p.padding as isize;
                                let yx =
                                    (ix * p.stride + j * p.dilation) as isize - p.padding as isize;
                                if yy < 0 || yx < 0 || yy as usize >= oh || yx as usize >= ow {
                                    continue;
                                }
                                let yi =
                                    ((b * o + g * og + oc) * oh + yy as usize) * ow + yx as usize;
                                let wi = ((ic * og + oc) * kh + i) * kw + j;
                                y[yi] += xv[xi] * wv[wi];
                                dx[xi] += rv[yi] * wv[wi];
                                dw[wi] += rv[yi] * xv[xi];
                            }
                        }
                    }
                }
            }
        }
    }
    (y, dx, dw)
}

#[test]
fn transposed_convolution_matches_direct_loops() {
    // (n, c, h, w, o, (kh, kw), stride, padding, output_padding, dilation, groups)
    let cases = [
        (2, 3, 4, 5, 4, (4, 4), 2, 1, 0, 1, 1),
        (1, 6, 1, 1, 5, (4, 4), 1, 0, 0, 1, 1),
        (2, 4, 3, 3, 6, (3, 3), 2, 1, 1, 1, 2),
        (2, 2, 5, 4, 3, (3, 2), 1, 1, 0, 2, 1),
        (3, 2, 3, 4, 2, (5, 5), 3, 2, 2, 1, 1),
        // Several images per GEMM chunk (small inputs), a short last chunk.
        (6, 4, 2, 3, 5, (4, 4), 2, 1, 0, 1, 1),
        (7, 4, 3, 3, 6, (3, 3), 2, 1, 1, 1, 2),
        // Inputs large enough for the adjoint convolution to run in bands of rows.
        (1, 8, 40, 40, 4, (4, 4), 2, 1, 0, 1, 1),
        (3, 4, 36, 36, 4, (4, 4), 2, 1, 0, 1, 1),
        // 8 or more output channels per group, outputs 16 or more wide (24 for stride 3): the
        // forward pass by phases (see the conv2d cases), with output padding, groups, stride 3,
        // several images per chunk.
        (2, 6, 5, 8, 8, (4, 4), 2, 1, 0, 1, 1),
        (1, 4, 9, 8, 16, (3, 3), 2, 1, 1, 1, 2),
        (2, 3, 4, 8, 10, (5, 5), 3, 2, 2, 1, 1),
        (1, 4, 6, 8, 8, (1, 1), 2, 0, 1, 1, 1),
        (6, 5, 3, 8, 9, (4, 4), 2, 1, 0, 1, 1),
        // 16 and 32 output channels from 3x4, 4x3 and 9x9 inputs: the input gradient of the
        // convolution it is the adjoint of, phase by phase on `direct`; a non-square window
        // with output padding, 3 images (runs of 2 and 1).
        (2, 6, 3, 4, 16, (4, 4), 2, 1, 0, 1, 1),
        (3, 5, 4, 3, 32, (4, 2), 2, 1, 1, 1, 1),
        // 81 input positions (above the forward pass's 64, within the input gradient's 256).
        (2, 8, 9, 9, 16, (4, 4), 2, 1, 0, 1, 1),
    ];
    for (i, &(n, c, h, w, o, (kh, kw), stride, padding, output_padding, dilation, groups)) in
        cases.iter().enumerate()
    {
        let x = Var::from_tensor(&randn(&[n, c, h, w], &format!("tx{i}"), DType::F32)).unwrap();
        let wt = Var::from_tensor(&randn(&[c, o / groups, kh, kw], &format!("tw{i}"), DType::F32))
            .unwrap();
        let p = ConvTranspose2dParams { stride, padding, output_padding, dilation, groups };
        let y = conv_transpose2d(x.as_tensor(), wt.as_tensor(), None, p).unwrap();
        let full = |s: usize, k: usize| (s - 1) * stride + dilation * (k - 1) + output_padding + 1;
        assert_eq!(
            y.dims(),
            [n, o, full(h, kh) - 2 * padding, full(w, kw) - 2 * padding],
            "case {i}: PyTorch's output size"
        );
        if groups == 1 {
            let candle = x
                .as_tensor()
                .conv_transpose2d(wt.as_tensor(), padding, output_padding, stride, dilation)
                .unwrap();
            assert!(max_diff(&y, &candle) < 1e-4, "case {i}: forward differs from candle's");
        }
        let r = randn(y.dims(), &format!("tr{i}"), DType::F32);
        let (want, dx, dw) = naive_transpose(x.as_tensor(), wt.as_tensor(), &r, p);
        assert!(max_rel(&y, &want) < 1e-5, "case {i}: forward differs from the direct loops");
        let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let gx = max_rel(grads.get(x.as_tensor()).unwrap(), &dx);
        let gw = max_rel(grads.get(wt.as_tensor()).unwrap(), &dw);
        assert!(gx < 1e-5 && gw < 1e-5, "case {i}: input gradient {gx:e}, weight {gw:e}");
    }
    let x = randn(&[1, 2, 3, 3], "bad", DType::F32);
    let w = randn(&[2, 2, 3, 3], "badw", DType::F32);
    let bad = ConvTranspose2dParams { stride: 2, output_padding: 2, ..Default::default() };
    assert!(conv_transpose2d(&x, &w, None, bad).is_err(), "output padding >= stride");
    let w3 = randn(&[3, 2, 3, 3], "badw3", DType::F32);
    assert!(conv_transpose2d(&x, &w3, None, Default::default()).is_err(), "channel mismatch");
}

/// `Conv2d::forward_relu` (bias and ReLU fused) against the convolution without a bias, then
/// candle's broadcast addition of the bias and candle's ReLU: output and all three gradients.
#[test]
fn fused_bias_relu_matches_separate_ops() {
    use deeprecog_nn::layers::Conv2d;
    let cases = [
        ([2, 3, 6, 7], true),
        ([6, 3, 4, 5], true),
        ([3, 3, 5, 5], false),
        // One image whose columns exceed a band: bands side by side, each given its bias and
        // activation as it is written.
        ([1, 8, 40, 36], true),
    ];
    for (i, (dims, with_bias)) in cases.into_iter().enumerate() {
        let c = dims[1];
        let x = Var::from_tensor(&randn(&dims, &format!("fx{i}"), DType::F32)).unwrap();
        let w = Var::from_tensor(&randn(&[4, c, 3, 3], &format!("fw{i}"), DType::F32)).unwrap();
        let b = Var::from_tensor(&randn(&[4], &format!("fb{i}"), DType::F32)).unwrap();
        let p = Conv2dParams { padding: 1, ..Default::default() };
        let layer = Conv2d::new(w.as_tensor().clone(), with_bias.then(|| b.as_tensor().clone()), p);
        let fused = layer.forward_relu(x.as_tensor()).unwrap();
        // The bias as candle's broadcast addition, after a convolution without one.
        let mut separate = conv2d(x.as_tensor(), w.as_tensor(), None, p).unwrap();
        if with_bias {
            separate =
                separate.broadcast_add(&b.as_tensor().reshape((1, 4, 1, 1)).unwrap()).unwrap();
        }
        let separate = separate.relu().unwrap();
        let d = max_diff(&fused, &separate);
        assert!(d < 1e-5, "case {i}: outputs differ by {d}");
        let r = randn(fused.dims(), &format!("fr{i}"), DType::F32);
        let g1 = (&fused * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (&separate * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let vars = if with_bias { vec![&x, &w, &b] } else { vec![&x, &w] };
        for v in vars {
            let d = max_diff(g1.get(v.as_tensor()).unwrap(), g2.get(v.as_tensor()).unwrap());
            assert!(d < 1e-4, "case {i}: gradient differs by {d}");
        }
    }
}

/// `Conv2d::forward_bn_t` in evaluation mode (the BatchNorm folded into the convolution, the
/// activation in its epilogue) against the convolution, then the BatchNorm, then candle's
/// activation: outputs and the gradients of the input, the convolution's weight and bias and
/// the BatchNorm's weight and bias; dense, strided and depthwise, each activation.
#[test]
fn folded_batch_norm_matches_separate_layers() {
    use candle_core::{Module, ModuleT};
    use deeprecog_nn::conv::Activation;
    use deeprecog_nn::layers::Conv2d;
    use deeprecog_nn::norm::{BatchNorm, BatchNormConfig};
    let cases = [
        ([2, 3, 6, 7], 4, 1, Activation::Relu, true),
        ([3, 4, 5, 5], 4, 4, Activation::Relu6, false),
        ([1, 3, 9, 8], 5, 1, Activation::Identity, true),
    ];
    for (i, (dims, o, groups, act, with_bias)) in cases.into_iter().enumerate() {
        let c = dims[1];
        let v = |shape: &[usize], name: &str| {
            Var::from_tensor(&randn(shape, &format!("bn{i}{name}"), DType::F32)).unwrap()
        };
        let (x, w, b) = (v(&dims, "x"), v(&[o, c / groups, 3, 3], "w"), v(&[o], "b"));
        let bw = Var::from_tensor(&(randn(&[o], &format!("bn{i}bw"), DType::F32) + 2.0).unwrap())
            .unwrap();
        let bb = v(&[o], "bb");
        let rm = randn(&[o], &format!("bn{i}rm"), DType::F32);
        let rv = (randn(&[o], &format!("bn{i}rv"), DType::F32).abs().unwrap() + 0.5).unwrap();
        let cfg = BatchNormConfig { eps: 1e-5, momentum: 0.1 };
        let bn =
            BatchNorm::new(bw.as_tensor().clone(), bb.as_tensor().clone(), rm, rv, cfg).unwrap();
        let p = Conv2dParams { stride: 1 + i % 2, padding: 1, groups, ..Default::default() };
        let conv = Conv2d::new(w.as_tensor().clone(), with_bias.then(|| b.as_tensor().clone()), p);
        let folded = conv.forward_bn_t(x.as_tensor(), &bn, false, act).unwrap();
        let separate = act
            .tensor(bn.forward_t(&conv.forward(x.as_tensor()).unwrap(), false).unwrap())
            .unwrap();
        let d = max_diff(&folded, &separate);
        assert!(d < 1e-4, "case {i}: outputs differ by {d}");
        let r = randn(folded.dims(), &format!("bn{i}r"), DType::F32);
        let g1 = (&folded * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (&separate * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let mut vars = vec![&x, &w, &bw, &bb];
        if with_bias {
            vars.push(&b);
        }
        for (j, var) in vars.into_iter().enumerate() {
            let d = max_diff(g1.get(var.as_tensor()).unwrap(), g2.get(var.as_tensor()).unwrap());
            assert!(d < 1e-3, "case {i}: gradient {j} differs by {d}");
        }
    }
}

/// A BatchNorm over constant tensors (`name` seeds them): scale near 2, variance at least
/// 0.5, momentum 0.5 so that one training pass moves the running statistics visibly.
fn constant_batch_norm(o: usize, name: &str) -> deeprecog_nn::norm::BatchNorm {
    use deeprecog_nn::norm::{BatchNorm, BatchNormConfig};
    let bw = (randn(&[o], &format!("{name}bw"), DType::F32) + 2.0).unwrap();
    let bb = randn(&[o], &format!("{name}bb"), DType::F32);
    let rm = randn(&[o], &format!("{name}rm"), DType::F32);
    let rv = (randn(&[o], &format!("{name}rv"), DType::F32).abs().unwrap() + 0.5).unwrap();
    BatchNorm::new(bw, bb, rm, rv, BatchNormConfig { eps: 1e-5, momentum: 0.5 }).unwrap()
}

/// Over constant tensors (an inference model's), the folded weights are computed once and
/// kept, and recomputed after the BatchNorm's running statistics change (a training pass):
/// each evaluation equals the separate convolution and BatchNorm of that moment.
#[test]
fn folded_constants_follow_the_batch_norm_state() {
    use candle_core::{Module, ModuleT};
    use deeprecog_nn::conv::Activation;
    use deeprecog_nn::layers::Conv2d;
    let (c, o) = (3, 4);
    let x = randn(&[2, c, 6, 5], "fcx", DType::F32);
    let w = randn(&[o, c, 3, 3], "fcw", DType::F32);
    let b = randn(&[o], "fcb", DType::F32);
    let bn = constant_batch_norm(o, "fc");
    let p = Conv2dParams { padding: 1, ..Default::default() };
    let conv = Conv2d::new(w, Some(b), p);
    let separate = || {
        let y = bn.forward_t(&conv.forward(&x).unwrap(), false).unwrap();
        Activation::Relu.tensor(y).unwrap()
    };
    let before = separate();
    for _ in 0..2 {
        let d = max_diff(&conv.forward_bn_t(&x, &bn, false, Activation::Relu).unwrap(), &before);
        assert!(d < 1e-4, "cached fold differs by {d}");
    }
    // A training pass moves the running statistics (momentum 0.5 on a shifted batch).
    let shifted = ((conv.forward(&x).unwrap() * 3.0).unwrap() + 1.0).unwrap();
    bn.forward_t(&shifted, true).unwrap();
    let after = separate();
    assert!(max_diff(&after, &before) > 1e-2, "the statistics should have moved");
    let d = max_diff(&conv.forward_bn_t(&x, &bn, false, Activation::Relu).unwrap(), &after);
    assert!(d < 1e-4, "the fold after a training pass differs by {d}");
}

/// A constant 3x3 layer computed by Winograd's algorithm keeps its transformed weight (and a
/// folded BatchNorm's, per state of the BatchNorm) after the first call: every call equals the
/// free function's, which transforms each time, bit for bit (plain, fused with the pooling,
/// folded before and after the statistics move). A layer over a variable keeps nothing and
/// follows the variable's updates.
#[test]
fn kept_winograd_transform_matches_a_fresh_one() {
    use candle_core::{Module, ModuleT};
    use deeprecog_nn::conv::{conv2d_act, conv2d_act_max_pool2, Activation};
    use deeprecog_nn::layers::Conv2d;
    let (c, o) = (16, 18);
    let x = randn(&[2, c, 9, 8], "kwx", DType::F32);
    let w = randn(&[o, c, 3, 3], "kww", DType::F32);
    let b = randn(&[o], "kwb", DType::F32);
    let p = Conv2dParams { padding: 1, ..Default::default() };
    let conv = Conv2d::new(w.clone(), Some(b.clone()), p);
    let kept = |layer: &Conv2d| format!("{layer:?}").contains("KeptBuffer(\"Winograd\")");
    assert!(!kept(&conv));
    let fresh = conv2d(&x, &w, Some(&b), p).unwrap();
    for call in 0..2 {
        assert_eq!(max_diff(&conv.forward(&x).unwrap(), &fresh), 0.0, "call {call}");
        assert!(kept(&conv), "call {call}: the transform should be kept");
    }
    let pooled = conv2d_act_max_pool2(&x, &w, Some(&b), p, Activation::Relu).unwrap();
    let d = max_diff(&conv.forward_act_max_pool2(&x, Activation::Relu).unwrap(), &pooled);
    assert_eq!(d, 0.0, "fused pooling");

    let bn = constant_batch_norm(o, "kw");
    let folded_fresh = || {
        let (scale, shift) = bn.eval_scale_shift().unwrap();
        let wf = w.broadcast_mul(&scale.reshape((o, 1, 1, 1)).unwrap()).unwrap();
        let bf = ((&b * &scale).unwrap() + &shift).unwrap();
        conv2d_act(&x, &wf, Some(&bf), p, Activation::Relu6).unwrap()
    };
    let before = folded_fresh();
    for call in 0..2 {
        let y = conv.forward_bn_t(&x, &bn, false, Activation::Relu6).unwrap();
        assert_eq!(max_diff(&y, &before), 0.0, "folded call {call}");
    }
    let shifted = ((conv.forward(&x).unwrap() * 3.0).unwrap() + 1.0).unwrap();
    bn.forward_t(&shifted, true).unwrap();
    let after = folded_fresh();
    assert!(max_diff(&after, &before) > 1e-2, "the statistics should have moved");
    let y = conv.forward_bn_t(&x, &bn, false, Activation::Relu6).unwrap();
    assert_eq!(max_diff(&y, &after), 0.0, "the fold after a training pass");

    let var = Var::from_tensor(&w).unwrap();
    let trained = Conv2d::new(var.as_tensor().clone(), Some(b.clone()), p);
    assert_eq!(max_diff(&trained.forward(&x).unwrap(), &fresh), 0.0);
    assert!(!kept(&trained), "a variable's transform is not kept");
    let w2 = randn(&[o, c, 3, 3], "kww2", DType::F32);
    var.set(&w2).unwrap();
    let d = max_diff(&trained.forward(&x).unwrap(), &conv2d(&x, &w2, Some(&b), p).unwrap());
    assert_eq!(d, 0.0, "after the variable's update");
}

/// A constant layer's forward pass takes Winograd's algorithm with fewer output tiles than a
/// trained one's (its transform is paid once): 64 channels at 7x7 (ResNet's last stage in
/// miniature) over 2 images is 32 tiles, Winograd for the constant layer and `im2col` + GEMM
/// for the free function and for a layer over a variable, with the same output; one image (16
/// tiles) stays on the GEMM path for both.
#[test]
fn constant_layers_take_winograd_with_fewer_tiles() {
    use candle_core::Module;
    use deeprecog_nn::layers::Conv2d;
    let c = 64;
    let w = randn(&[c, c, 3, 3], "kfw", DType::F32);
    let b = randn(&[c], "kfb", DType::F32);
    let p = Conv2dParams { padding: 1, ..Default::default() };
    let layout = |layer: &Conv2d| {
        let debug = format!("{layer:?}");
        ["Winograd", "Planes", "Direct"]
            .into_iter()
            .find(|l| debug.contains(&format!("KeptBuffer(\"{l}\")")))
    };
    for (n, expected) in [(2, "Winograd"), (1, "Planes")] {
        let x = randn(&[n, c, 7, 7], &format!("kfx{n}"), DType::F32);
        let reference = conv2d(&x, &w, Some(&b), p).unwrap();
        let constant = Conv2d::new(w.clone(), Some(b.clone()), p);
        let y = constant.forward(&x).unwrap();
        assert_eq!(layout(&constant), Some(expected), "{n} images");
        let d = max_diff(&y, &reference);
        assert!(d < 2e-4 * 24.0, "{n} images: the constant layer differs by {d}");
        if expected == "Winograd" {
            assert!(d > 0.0, "{n} images: a transformed sum should round differently");
        }
        let var = Var::from_tensor(&w).unwrap();
        let trained = Conv2d::new(var.as_tensor().clone(), Some(b.clone()), p);
        assert_eq!(max_diff(&trained.forward(&x).unwrap(), &reference), 0.0, "{n} images");
        assert_eq!(layout(&trained), None, "{n} images: a variable's packing is not kept");
    }
}

/// `conv2d_act_max_pool2` over constants (the fused op: the pooling applied as each chunk or
/// Winograd tile is written) against the convolution and then the pooling op, bit for bit: the
/// `im2col` + GEMM path with one image banded, several chunked and grouped; the Winograd path
/// with odd output sizes; every activation, with and without a bias. Over variables it is the
/// two ops and their gradients.
#[test]
fn fused_max_pool_matches_separate_ops_bit_for_bit() {
    use deeprecog_nn::conv::{conv2d_act, conv2d_act_max_pool2, Activation};
    use deeprecog_nn::pool::max_pool2d;
    // (x dims, O, groups, padding, activation, bias)
    let cases = [
        ([1, 3, 128, 96], 8, 1, 1, Activation::Relu, true),
        ([5, 4, 9, 11], 6, 2, 1, Activation::Identity, false),
        ([3, 3, 7, 7], 5, 1, 0, Activation::Relu6, true),
        ([1, 16, 13, 15], 18, 1, 1, Activation::Relu, true),
        ([4, 20, 10, 9], 16, 1, 2, Activation::Identity, true),
        ([2, 3, 4, 5], 4, 1, 0, Activation::Relu, false),
    ];
    for (i, (dims, o, groups, padding, act, with_bias)) in cases.into_iter().enumerate() {
        let c = dims[1];
        let x = randn(&dims, &format!("px{i}"), DType::F32);
        let w = randn(&[o, c / groups, 3, 3], &format!("pw{i}"), DType::F32);
        let b = randn(&[o], &format!("pb{i}"), DType::F32);
        let bias = with_bias.then_some(&b);
        let p = Conv2dParams { padding, groups, ..Default::default() };
        let fused = conv2d_act_max_pool2(&x, &w, bias, p, act).unwrap();
        let separate = max_pool2d(&conv2d_act(&x, &w, bias, p, act).unwrap(), 2, 2, 0).unwrap();
        assert_eq!(fused.dims(), separate.dims(), "case {i}");
        let bits = |t: &Tensor| {
            t.flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect::<Vec<_>>()
        };
        assert_eq!(bits(&fused), bits(&separate), "case {i}: values differ");
    }
    let x = Var::from_tensor(&randn(&[2, 16, 8, 8], "pvx", DType::F32)).unwrap();
    let w = Var::from_tensor(&randn(&[16, 16, 3, 3], "pvw", DType::F32)).unwrap();
    let p = Conv2dParams { padding: 1, ..Default::default() };
    let y = conv2d_act_max_pool2(x.as_tensor(), w.as_tensor(), None, p, Activation::Relu).unwrap();
    assert_eq!(y.dims(), [2, 16, 4, 4]);
    let grads = y.sum_all().unwrap().backward().unwrap();
    assert!(grads.get(x.as_tensor()).is_some() && grads.get(w.as_tensor()).is_some());
    // A 1x1 convolution output has no 2x2 window: an error on both paths.
    let tiny = Var::from_tensor(&randn(&[1, 3, 3, 3], "ptiny", DType::F32)).unwrap();
    let w3 = randn(&[4, 3, 3, 3], "pw3", DType::F32);
    let d = Conv2dParams::default();
    for input in [tiny.as_tensor().clone(), tiny.as_tensor().detach()] {
        assert!(conv2d_act_max_pool2(&input, &w3, None, d, Activation::Relu).is_err());
    }
}

/// Each operand in turn as a plain tensor (an image batch, a frozen weight or bias, a detached
/// feature map): the backward pass leaves it without a gradient and gives every tracked operand
/// the same gradient, bit for bit, as when all are variables. Dense, depthwise, transposed and
/// linear layers.
#[test]
fn untracked_operands_get_no_gradient_and_change_no_other() {
    type Layer = fn(&[Tensor; 3]) -> Tensor;
    let dense: Layer = |[x, w, b]| {
        let p = Conv2dParams { stride: 2, padding: 1, ..Default::default() };
        conv2d(x, w, Some(b), p).unwrap()
    };
    let depthwise: Layer = |[x, w, b]| {
        let p = Conv2dParams { padding: 1, groups: 4, ..Default::default() };
        conv2d(x, &w.narrow(1, 0, 1).unwrap(), Some(b), p).unwrap()
    };
    let transposed: Layer = |[x, w, b]| {
        let p = ConvTranspose2dParams { stride: 2, padding: 1, ..Default::default() };
        conv_transpose2d(x, w, Some(b), p).unwrap()
    };
    let linear: Layer = |[x, w, b]| {
        let w = w.flatten_from(1).unwrap().narrow(1, 0, 5).unwrap();
        deeprecog_nn::linear::linear(
            &x.flatten_from(1).unwrap().narrow(1, 0, 5).unwrap(),
            &w,
            Some(b),
        )
        .unwrap()
    };
    for (name, layer) in
        [("dense", dense), ("depthwise", depthwise), ("transposed", transposed), ("linear", linear)]
    {
        let values = [
            randn(&[2, 4, 6, 5], &format!("ux{name}"), DType::F32),
            randn(&[4, 4, 3, 3], &format!("uw{name}"), DType::F32),
            randn(&[4], &format!("ub{name}"), DType::F32),
        ];
        let grads = |tracked: [bool; 3]| {
            let vars: Vec<Var> = values.iter().map(|v| Var::from_tensor(v).unwrap()).collect();
            let operands: [Tensor; 3] = std::array::from_fn(|i| {
                if tracked[i] {
                    vars[i].as_tensor().clone()
                } else {
                    values[i].clone()
                }
            });
            let y = layer(&operands);
            let r = randn(y.dims(), &format!("ur{name}"), DType::F32);
            let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            operands.map(|t| g.get(&t).map(|d| d.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        };
        let all = grads([true; 3]);
        assert!(all.iter().all(Option::is_some), "{name}: every variable has a gradient");
        for plain in 0..3 {
            let mut tracked = [true; 3];
            tracked[plain] = false;
            let some = grads(tracked);
            for i in 0..3 {
                if i == plain {
                    assert!(some[i].is_none(), "{name}: operand {i} untracked but has a gradient");
                } else {
                    assert_eq!(some[i], all[i], "{name}: operand {i} with {plain} untracked");
                }
            }
        }
    }
}

/// A residual added in the convolution's epilogue equals the convolution followed by
/// `add_act`, bit for bit, on every path of the forward pass: one image through a 1x1 layer,
/// single-image chunks, several images per chunk, a lone image's parallel bands, groups, a
/// Winograd layer (which runs the two ops); operands that record gradients take the two ops
/// too; a residual of another shape is an error.
#[test]
fn residual_in_the_epilogue_matches_conv_then_add() {
    use deeprecog_nn::activation::add_act;
    use deeprecog_nn::conv::{conv2d_act, conv2d_residual_act, Activation};
    // (n, c, h, w, o, k, stride, padding, groups)
    let cases = [
        (1, 24, 9, 11, 40, 1, 1, 0, 1),
        (3, 16, 20, 20, 24, 1, 1, 0, 1),
        (8, 32, 7, 7, 48, 1, 1, 0, 1),
        (1, 8, 40, 40, 16, 3, 2, 1, 1),
        (2, 12, 17, 13, 20, 3, 2, 1, 2),
        (2, 64, 12, 12, 64, 3, 1, 1, 1),
        (4, 10, 6, 6, 20, 1, 2, 0, 1),
        (1, 16, 14, 14, 24, 1, 1, 0, 1),
        (4, 16, 12, 12, 24, 1, 1, 0, 1),
        (4, 8, 24, 24, 16, 3, 2, 1, 1),
    ];
    for (i, &(n, c, h, w, o, k, stride, padding, groups)) in cases.iter().enumerate() {
        let seed = 100 + 4 * i as u64;
        let x = common::randn(seed, &[n, c, h, w], "x", DType::F32);
        let wt = (common::randn(seed + 1, &[o, c / groups, k, k], "w", DType::F32) * 0.2).unwrap();
        let bias = common::randn(seed + 2, &[o], "b", DType::F32);
        let p = Conv2dParams { stride, padding, groups, ..Default::default() };
        let y = conv2d_act(&x, &wt, Some(&bias), p, Activation::Identity).unwrap();
        let residual = common::randn(seed + 3, y.dims(), "r", DType::F32);
        for act in [Activation::Relu, Activation::Identity, Activation::Relu6] {
            let want = add_act(&y, &residual, act).unwrap();
            let got = conv2d_residual_act(&x, &wt, Some(&bias), &residual, p, act).unwrap();
            let bits = |t: &Tensor| -> Vec<u32> {
                t.flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect()
            };
            assert_eq!(bits(&got), bits(&want), "case {i} {act:?}");
        }
        // Tracked operands: the two ops, the same values, and a gradient reaches the residual.
        let var = Var::from_tensor(&residual).unwrap();
        let tracked = conv2d_residual_act(&x, &wt, Some(&bias), &var, p, Activation::Relu).unwrap();
        let want = add_act(&y, &residual, Activation::Relu).unwrap();
        assert_eq!(max_diff(&tracked, &want), 0.0, "case {i}");
        let grads = tracked.sum_all().unwrap().backward().unwrap();
        assert!(grads.get(&var).is_some(), "case {i}: no gradient for the residual");
    }
    let x = common::randn(9, &[1, 4, 5, 5], "x", DType::F32);
    let wt = common::randn(10, &[6, 4, 1, 1], "w", DType::F32);
    let wrong = common::randn(11, &[1, 6, 5, 4], "r", DType::F32);
    let p = Conv2dParams::default();
    assert!(conv2d_residual_act(&x, &wt, None, &wrong, p, deeprecog_nn::conv::Activation::Relu)
        .is_err());
}
