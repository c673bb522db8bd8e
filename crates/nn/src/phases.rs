//! The input gradient of a strided convolution (so also a strided transposed convolution's
//! forward pass) as one stride-1 product per output phase.
//!
//! With stride `s`, the input positions `iy = s a + r` of one residue `r` (a phase) receive
//! contributions from one fixed subset of the kernel rows only, `i = i0 + s m` with
//! `i0 = (r + p) mod s`, each from output row `a + q - m` (`q = (r + p - i0) / s`). So each
//! of the `s^2` phases of the input gradient is a small stride-1 correlation of the output
//! gradient with a sub-kernel: its columns are runs of the output gradient's rows (padded once
//! with zeros so that no run crosses an edge), its product runs on [`crate::planes`], and its
//! result is interleaved into the gradient, every value written once. The alternative
//! (`W^T dY`, then every output position's `C kh kw` values added back into the image) moved
//! four to sixteen times the image's size through read-modify-write passes: a tenth of a
//! DCGAN training step.

use std::mem::MaybeUninit;

use candle_core::Result;
use rayon::prelude::*;

use crate::conv::{Activation, Window};
use crate::planes;

/// One phase along one axis: the input positions `s a + r`, `a < len`.
#[derive(Debug, Clone)]
struct AxisPhase {
    r: usize,
    /// The kernel taps (rows or columns) that reach it, in order.
    taps: Vec<usize>,
    /// Tap `m` reads output position `a + q - m`.
    q: usize,
    len: usize,
}

/// The phases of an axis of `size` input positions under `kernel`, `stride`, `padding`
/// (dilation 1).
fn axis_phases(size: usize, kernel: usize, stride: usize, padding: usize) -> Vec<AxisPhase> {
    (0..stride.min(size))
        .map(|r| {
            let i0 = (r + padding) % stride;
            AxisPhase {
                r,
                taps: (i0..kernel).step_by(stride).collect(),
                q: (r + padding - i0) / stride,
                len: (size - r).div_ceil(stride),
            }
        })
        .collect()
}

/// Zero rows (or columns) an axis of `out` output positions needs before and after it so that
/// every phase's taps read inside: tap `m` of a phase reads `a + q - m` for `a < len`.
fn margins(phases: &[AxisPhase], out: usize) -> (usize, usize) {
    let before = phases.iter().map(|ph| (ph.taps.len().max(1) - 1).saturating_sub(ph.q));
    let after = phases.iter().map(|ph| (ph.len + ph.q).saturating_sub(out));
    (before.max().unwrap_or(0), after.max().unwrap_or(0))
}

/// The shapes of one strided convolution whose input gradient is computed by phases.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shapes {
    /// Input `(C, H, W)`.
    pub input: (usize, usize, usize),
    /// Output `(O, OH, OW)`.
    pub output: (usize, usize, usize),
    pub groups: usize,
    pub win: Window,
}

/// Narrowest phase rows (input columns / stride) computed by phases: DCGAN's 4x4 stride-2
/// layers with 8x8 inputs (phase rows of 4) measured 1.4 to 2 times slower by phases than by
/// `W^T dY` and `row2im` (`benches/NOTES.md`).
const MIN_PHASE_WIDTH: usize = 8;

/// Whether [`PhasedWeight`] computes this input gradient: a stride above 1, no dilation, at
/// least a register block of input channels per group (narrower products leave most of the
/// kernel's rows empty), phase rows of at least [`MIN_PHASE_WIDTH`].
pub(crate) fn applies(s: &Shapes) -> bool {
    let (c, _, w) = s.input;
    s.win.stride > 1
        && w.div_ceil(s.win.stride) >= MIN_PHASE_WIDTH
        && s.win.dilation == 1
        && s.groups > 0
        && c % s.groups == 0
        && c / s.groups >= planes::block_rows()
}

thread_local! {
    /// Per-thread buffer for a chunk's output gradient with zero margins (taken out while in
    /// use, so that a call that rayon runs on this thread meanwhile gets its own).
    static PADDED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The weight `(O, C/G, kh, kw)` as each phase's packed left operand: per phase, per group,
/// the `(C/G, O/G * taps_y * taps_x)` matrix of its sub-kernel, transposed.
pub(crate) struct PhasedWeight {
    shapes: Shapes,
    ys: Vec<AxisPhase>,
    xs: Vec<AxisPhase>,
    /// Phase `(py, px)`'s packed groups, at `py * xs.len() + px`.
    packed: Vec<Vec<Vec<f32>>>,
}

impl PhasedWeight {
    pub(crate) fn new(s: Shapes, wt: &[f32]) -> PhasedWeight {
        let (c, h, w) = s.input;
        let (o, ..) = s.output;
        let (kh, kw) = s.win.kernel;
        let (cg, og) = (c / s.groups, o / s.groups);
        let ys = axis_phases(h, kh, s.win.stride, s.win.padding);
        let xs = axis_phases(w, kw, s.win.stride, s.win.padding);
        let mut packed = Vec::with_capacity(ys.len() * xs.len());
        for py in &ys {
            for px in &xs {
                let taps = py.taps.len() * px.taps.len();
                let k = og * taps;
                let groups = (0..s.groups)
                    .map(|g| {
                        let mut m = vec![0f32; cg * k];
                        for (ci, row) in m.chunks_exact_mut(k.max(1)).enumerate() {
                            for ol in 0..og {
                                let base = ((g * og + ol) * cg + ci) * kh;
                                for (ti, &i) in py.taps.iter().enumerate() {
                                    for (tj, &j) in px.taps.iter().enumerate() {
                                        let at = (ol * py.taps.len() + ti) * px.taps.len() + tj;
                                        row[at] = wt[(base + i) * kw + j];
                                    }
                                }
                            }
                        }
                        planes::pack(&m, (cg, k))
                    })
                    .collect();
                packed.push(groups);
            }
        }
        PhasedWeight { shapes: s, ys, xs, packed }
    }

    /// Scratch values a chunk of `b` images needs: the largest phase's columns, then its
    /// product.
    pub(crate) fn scratch_len(&self, b: usize) -> (usize, usize) {
        let (c, ..) = self.shapes.input;
        let og = self.shapes.output.0 / self.shapes.groups;
        let (mut cols, mut out) = (0, 0);
        for py in &self.ys {
            for px in &self.xs {
                let n = b * py.len * px.len;
                cols = cols.max(og * py.taps.len() * px.taps.len() * n);
                out = out.max(c / self.shapes.groups * n);
            }
        }
        (cols, out)
    }

    /// The input gradient of `b` images into `dx` (`(b, C, H, W)`, every value written once)
    /// from their output gradient `gy` (`(b, O, OH, OW)`), with scratch buffers of at least
    /// [`Self::scratch_len`]; the columns and products split over rayon's threads when
    /// `parallel`.
    pub(crate) fn input_grad(
        &self,
        gy: &[f32],
        b: usize,
        dx: &mut [MaybeUninit<f32>],
        (cols, out): (&mut [f32], &mut [f32]),
        parallel: bool,
    ) -> Result<()> {
        let s = &self.shapes;
        let (c, h, w) = s.input;
        let (o, oh, ow) = s.output;
        if gy.len() != b * o * oh * ow || dx.len() != b * c * h * w || oh * ow * h * w == 0 {
            candle_core::bail!(
                "conv2d input gradient: {} and {} values for {b} images",
                gy.len(),
                dx.len()
            );
        }
        // The output gradient with zero margins: each tap's phase rows are then plain runs.
        let (top, bottom) = margins(&self.ys, oh);
        let (left, right) = margins(&self.xs, ow);
        let (hp, wp) = (oh + top + bottom, ow + left + right);
        let mut buf = PADDED.with(|buf| std::mem::take(&mut *buf.borrow_mut()));
        // Every value is written below (margins cleared, rows copied): the buffer is only
        // grown, never cleared, between calls.
        if buf.len() < b * o * hp * wp {
            buf.resize(b * o * hp * wp, 0.0);
        }
        let padded = &mut buf[..b * o * hp * wp];
        crate::conv::pad_planes_margins_into(
            gy,
            (b * o, oh, ow),
            [top, bottom, left, right],
            padded,
        );
        let done = self.phase_products(padded, (b, hp, wp, top, left), dx, (cols, out), parallel);
        PADDED.with(|slot| *slot.borrow_mut() = buf);
        done
    }

    /// [`Self::input_grad`]'s products from the output gradient `padded` with zero margins
    /// (`(b, O, hp, wp)`, the rows from row `top` and column `left`).
    fn phase_products(
        &self,
        padded: &[f32],
        (b, hp, wp, top, left): (usize, usize, usize, usize, usize),
        dx: &mut [MaybeUninit<f32>],
        (cols, out): (&mut [f32], &mut [f32]),
        parallel: bool,
    ) -> Result<()> {
        let s = &self.shapes;
        let (c, h, w) = s.input;
        let o = s.output.0;
        let (cg, og) = (c / s.groups, o / s.groups);
        let stride = s.win.stride;
        for (pi, py) in self.ys.iter().enumerate() {
            for (pj, px) in self.xs.iter().enumerate() {
                let pp = py.len * px.len;
                let n = b * pp;
                let taps = py.taps.len() * px.taps.len();
                let k = og * taps;
                for g in 0..s.groups {
                    let out = &mut out[..cg * n];
                    if k == 0 {
                        out.fill(0.0);
                    } else {
                        let cols = &mut cols[..k * n];
                        let fill = |(row, dst): (usize, &mut [f32])| {
                            let (ol, m, t) =
                                (row / taps, row % taps / px.taps.len(), row % px.taps.len());
                            // Phase row `a` reads padded row `a + q - m + top` from column
                            // `q - t + left`.
                            let first = (py.q + top - m) * wp + px.q + left - t;
                            for (img, block) in dst.chunks_exact_mut(pp).enumerate() {
                                let plane = &padded[(img * o + g * og + ol) * hp * wp..];
                                for (a, row) in block.chunks_exact_mut(px.len).enumerate() {
                                    let at = first + a * wp;
                                    crate::simd::copy_short(row, &plane[at..at + px.len]);
                                }
                            }
                        };
                        if parallel {
                            cols.par_chunks_mut(n).enumerate().for_each(fill);
                        } else {
                            cols.chunks_mut(n).enumerate().for_each(fill);
                        }
                        planes::product_rows(
                            planes::uninit(out),
                            (cg, n),
                            0..n,
                            &self.packed[pi * self.xs.len() + pj][g],
                            cols,
                            (k, n),
                            (None, None, Activation::Identity),
                            parallel,
                        );
                    }
                    // Interleave the phase into the images.
                    let out = &*out;
                    let place = |(plane_idx, plane): (usize, &mut [MaybeUninit<f32>])| {
                        let (img, ci) = (plane_idx / cg, plane_idx % cg);
                        let src = &out[ci * n + img * pp..][..pp];
                        for (a, vals) in src.chunks_exact(px.len).enumerate() {
                            let row = &mut plane[(stride * a + py.r) * w..][..w];
                            if stride == 2 {
                                crate::simd::scatter_stride2(&mut row[px.r..], vals);
                                continue;
                            }
                            for (d, &v) in row[px.r..].iter_mut().step_by(stride).zip(vals) {
                                d.write(v);
                            }
                        }
                    };
                    let planes_of_group = dx.chunks_exact_mut(c * h * w).flat_map(|image| {
                        image[g * cg * h * w..(g + 1) * cg * h * w].chunks_exact_mut(h * w)
                    });
                    if parallel {
                        planes_of_group.enumerate().par_bridge().for_each(place);
                    } else {
                        planes_of_group.enumerate().for_each(place);
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every (input position, kernel tap) pair that a strided window links is in exactly one
    /// phase, with the output position the window gives it.
    #[test]
    fn phases_partition_the_window() {
        let shapes: [(usize, usize, usize, usize); 5] =
            [(32, 4, 2, 1), (9, 3, 2, 1), (8, 1, 2, 0), (11, 5, 3, 2), (7, 3, 3, 0)];
        for (size, k, s, p) in shapes {
            let out = (size + 2 * p - k) / s + 1;
            let mut linked = Vec::new();
            for oy in 0..out {
                for i in 0..k {
                    if let Some(iy) = (oy * s + i).checked_sub(p).filter(|&iy| iy < size) {
                        linked.push((iy, i, oy));
                    }
                }
            }
            let mut from_phases = Vec::new();
            for ph in axis_phases(size, k, s, p) {
                for a in 0..ph.len {
                    for (m, &i) in ph.taps.iter().enumerate() {
                        if let Some(oy) = (a + ph.q).checked_sub(m).filter(|&oy| oy < out) {
                            from_phases.push((s * a + ph.r, i, oy));
                        }
                    }
                }
            }
            linked.sort_unstable();
            from_phases.sort_unstable();
            assert_eq!(linked, from_phases, "size {size} kernel {k} stride {s} padding {p}");
        }
    }
}
