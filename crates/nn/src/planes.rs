//! A register-blocked f32 product written straight into output planes, with the bias and
//! activation applied in registers: `dst[i][j] = act(bias[i] + sum_p a[i, p] b[p, j])`.
//!
//! A convolution's forward product `W (O, K) x X (K, P)` has the NCHW output's planes as its
//! rows. Through the `gemm` crate each call packed `X` into the micro-kernel's layout, wrote
//! the planes, and a second pass over them (from L3 or memory for a 56x56 plane of 256
//! channels) added the bias and applied the activation; the output was cleared before all of
//! that. Here `X`'s rows are read where they lie (vectors along the pixels, the weights
//! broadcast from their rows), each register block of outputs gets its bias and activation
//! before its only store, and nothing is cleared.

use std::mem::MaybeUninit;
use std::ops::Range;

use crate::conv::Activation;

/// Columns the vector loops cover at a time: one AVX-512 register, two AVX2 ones. Columns past
/// the last multiple go through a zero-padded copy.
const COL_STEP: usize = 16;

/// Rows of `b` per pass when the depth is larger: 512 rows of 48 columns are 96 KiB, an L2
/// resident panel that every row block of `a` sweeps.
#[cfg(target_arch = "x86_64")]
const DEPTH: usize = 512;

/// What a finished output gets: `act(v + bias + residual)`.
#[derive(Clone, Copy)]
pub(crate) struct Epilogue<'a> {
    /// One value per row of `dst` (from its first), or none.
    pub bias: Option<&'a [f32]>,
    /// Values added after the bias, one row per row of `dst` (from its first), indexed by the
    /// same columns: a residual connection's input.
    pub residual: Option<&'a [&'a [f32]]>,
    pub act: Activation,
}

impl<'a> Epilogue<'a> {
    /// The bias and activation alone.
    pub fn new(bias: Option<&'a [f32]>, act: Activation) -> Epilogue<'a> {
        Epilogue { bias, residual: None, act }
    }

    /// The epilogue of rows `first..` of this one's.
    fn rows_from(self, first: usize) -> Epilogue<'a> {
        Epilogue {
            bias: self.bias.map(|b| &b[first..]),
            residual: self.residual.map(|r| &r[first..]),
            act: self.act,
        }
    }

    /// What the register blocks apply: with a residual, the bias alone (the residual and
    /// activation follow over each column block while it is in cache).
    #[cfg(target_arch = "x86_64")]
    fn in_registers(self) -> Epilogue<'a> {
        match self.residual {
            Some(_) => Epilogue::new(self.bias, Activation::Identity),
            None => self,
        }
    }
}

thread_local! {
    /// The zero-padded last columns of `b` and their products.
    static TAIL: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The kernel a product runs on this CPU.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Isa {
    /// AVX-512F: 8 rows by up to 48 columns per register block.
    #[cfg(target_arch = "x86_64")]
    Wide,
    /// AVX2 and FMA: 6 rows by 16 columns.
    #[cfg(target_arch = "x86_64")]
    Narrow,
    /// Neither: element by element, in the same order of sums.
    Portable,
}

impl Isa {
    fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Isa::Wide;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Isa::Narrow;
            }
        }
        Isa::Portable
    }

    /// Rows per register block, the height of [`pack`]'s blocks.
    fn rows(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Wide => WIDE_ROWS,
            #[cfg(target_arch = "x86_64")]
            Isa::Narrow => NARROW_ROWS,
            Isa::Portable => 1,
        }
    }
}

/// `a (m, k)` row-major in the layout [`product`] reads on this CPU: blocks of as many rows as
/// a register block has (the last padded with zeros), each block `k` groups of its rows'
/// values of one column, so that a register block's broadcasts come from one contiguous run.
/// A constant weight is packed once and kept.
pub(crate) fn pack(a: &[f32], (m, k): (usize, usize)) -> Vec<f32> {
    pack_for(Isa::detect(), a, (m, k))
}

fn pack_for(isa: Isa, a: &[f32], (m, k): (usize, usize)) -> Vec<f32> {
    use rayon::prelude::*;
    let rows = isa.rows();
    let len = m.div_ceil(rows) * rows * k;
    if k == 0 {
        return Vec::new();
    }
    // Block `block`'s values column after column, each column's `rows` values side by side
    // (reading the rows in step), the rows past `m` zero.
    let fill = |(block, dst): (usize, &mut [MaybeUninit<f32>])| {
        let live = rows.min(m - block * rows);
        let src = &a[block * rows * k..(block * rows + live) * k];
        for (p, column) in dst.chunks_exact_mut(rows).enumerate() {
            for (r, d) in column.iter_mut().enumerate() {
                d.write(if r < live { src[r * k + p] } else { 0.0 });
            }
        }
    };
    let mut packed = Vec::with_capacity(len);
    let spare = &mut packed.spare_capacity_mut()[..len];
    if len >= PARALLEL_PACK {
        // A weight of megabytes (DCGAN's 512 x 4096) packed on one thread kept the others
        // waiting for a training step's convolution to start.
        spare.par_chunks_exact_mut(rows * k).enumerate().for_each(fill);
    } else {
        spare.chunks_exact_mut(rows * k).enumerate().for_each(fill);
    }
    // SAFETY: the blocks cover the first `len` slots (`len` is a multiple of `rows * k`) and
    // `fill` wrote every value of each; `f32` needs no drop and the capacity is `len`.
    #[allow(unsafe_code)]
    unsafe {
        packed.set_len(len);
    }
    packed
}

/// Values from which [`pack`] runs on all threads.
const PARALLEL_PACK: usize = 1 << 16;

/// `dst[i][j] = act(bias[i] + sum_p a[i, p] * b[p * b_rs + j] + residual[i][j])` for every row
/// `i` of `dst` and `j < n` (the bias and residual when the epilogue has them): `a` is
/// `(dst.len(), k)` as [`pack`] lays it out, `b`'s rows are `b_rs` apart. Single-threaded;
/// callers give each thread its own rows or columns.
///
/// # Panics
/// Never for consistent sizes; debug assertions check them (the callers own the buffers).
pub(crate) fn product(
    dst: &mut [&mut [MaybeUninit<f32>]],
    packed: &[f32],
    b: &[f32],
    nkr: (usize, usize, usize),
    epilogue: Epilogue<'_>,
) {
    product_on(Isa::detect(), dst, packed, b, nkr, epilogue);
}

fn product_on(
    isa: Isa,
    dst: &mut [&mut [MaybeUninit<f32>]],
    packed: &[f32],
    b: &[f32],
    (n, k, b_rs): (usize, usize, usize),
    epilogue: Epilogue<'_>,
) {
    let m = dst.len();
    debug_assert!(packed.len() >= m.div_ceil(isa.rows()) * isa.rows() * k);
    debug_assert!(dst.iter().all(|r| r.len() >= n));
    debug_assert!(k == 0 || b.len() >= (k - 1) * b_rs + n);
    debug_assert!(epilogue.bias.is_none_or(|bias| bias.len() >= m));
    debug_assert!(epilogue.residual.is_none_or(|r| r.len() >= m && r.iter().all(|r| r.len() >= n)));
    let whole = n / COL_STEP * COL_STEP;
    if whole > 0 {
        kernel(isa, dst, packed, b, (whole, k, b_rs), epilogue, false);
    }
    if whole == n {
        return;
    }
    let tail = n - whole;
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Wide {
        // SAFETY: `Isa::Wide` is detected only where AVX-512F is present.
        #[allow(unsafe_code)]
        unsafe {
            wide_tail(dst, packed, b, (whole..n, k, b_rs), epilogue)
        };
        return;
    }
    // The last columns, zero-padded to one step, through the same kernel.
    TAIL.with(|buf| {
        let mut buf = buf.borrow_mut();
        buf.clear();
        buf.resize((k + m) * COL_STEP, 0.0);
        let (cols, out) = buf.split_at_mut(k * COL_STEP);
        for (p, row) in cols.chunks_exact_mut(COL_STEP).enumerate() {
            row[..tail].copy_from_slice(&b[p * b_rs + whole..p * b_rs + n]);
        }
        let mut rows: Vec<&mut [MaybeUninit<f32>]> =
            out.chunks_exact_mut(COL_STEP).map(uninit).collect();
        // A residual's last columns are added here, before the activation, in the kernels'
        // order: `(v + bias) + residual`.
        let Some(residual) = epilogue.residual else {
            kernel(isa, &mut rows, packed, cols, (COL_STEP, k, COL_STEP), epilogue, false);
            drop(rows);
            for (d, r) in dst.iter_mut().zip(out.chunks_exact(COL_STEP)) {
                for (x, &v) in d[whole..n].iter_mut().zip(&r[..tail]) {
                    x.write(v);
                }
            }
            return;
        };
        let shifted = Epilogue::new(epilogue.bias, Activation::Identity);
        kernel(isa, &mut rows, packed, cols, (COL_STEP, k, COL_STEP), shifted, false);
        drop(rows);
        for ((d, r), res) in dst.iter_mut().zip(out.chunks_exact(COL_STEP)).zip(residual) {
            for ((x, &v), &a) in d[whole..n].iter_mut().zip(&r[..tail]).zip(&res[whole..n]) {
                x.write(epilogue.act.apply(v + a));
            }
        }
    });
}

/// `n` a multiple of [`COL_STEP`]; the sums started from `dst`'s values when `accumulate`
/// (`dst` then holds initialised values).
fn kernel(
    isa: Isa,
    dst: &mut [&mut [MaybeUninit<f32>]],
    packed: &[f32],
    b: &[f32],
    nkr: (usize, usize, usize),
    epilogue: Epilogue<'_>,
    accumulate: bool,
) {
    match isa {
        // SAFETY: `Isa::detect` found the instruction set these functions are compiled for.
        #[cfg(target_arch = "x86_64")]
        #[allow(unsafe_code)]
        Isa::Wide => unsafe { product_wide(dst, packed, b, nkr, epilogue, accumulate) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        #[allow(unsafe_code)]
        Isa::Narrow => unsafe { product_narrow(dst, packed, b, nkr, epilogue, accumulate) },
        Isa::Portable => portable(dst, packed, b, nkr, epilogue, accumulate),
    }
}

/// `dst[i][j] += sum_p a[i, p] * b[p * b_rs + j]` for every row `i` of `dst` and `j < n`, in
/// the order [`product`] sums (from `dst`'s value, then over `p`): a running sum over several
/// products, such as a weight gradient's over chunks of images. `a` is `(dst.len(), k)` as
/// [`pack`] lays it out.
///
/// # Panics
/// If `n` is not a multiple of 16 (the vector kernels' column step; callers pad their columns).
pub(crate) fn accumulate(
    dst: &mut [&mut [f32]],
    packed: &[f32],
    b: &[f32],
    (n, k, b_rs): (usize, usize, usize),
) {
    accumulate_on(Isa::detect(), dst, packed, b, (n, k, b_rs));
}

fn accumulate_on(
    isa: Isa,
    dst: &mut [&mut [f32]],
    packed: &[f32],
    b: &[f32],
    (n, k, b_rs): (usize, usize, usize),
) {
    assert!(n.is_multiple_of(COL_STEP), "planes::accumulate: {n} columns, not a multiple of 16");
    let m = dst.len();
    debug_assert!(packed.len() >= m.div_ceil(isa.rows()) * isa.rows() * k);
    debug_assert!(dst.iter().all(|r| r.len() >= n));
    debug_assert!(k == 0 || b.len() >= (k - 1) * b_rs + n);
    if n == 0 || k == 0 {
        return;
    }
    let mut rows: Vec<&mut [MaybeUninit<f32>]> = dst.iter_mut().map(|r| uninit(r)).collect();
    let epilogue = Epilogue::new(None, Activation::Identity);
    kernel(isa, &mut rows, packed, b, (n, k, b_rs), epilogue, true);
}

/// `(images, m, p)` blocks (an NCHW tensor's images, `m` planes of `p` values each) packed as
/// [`pack`] packs the `(m, images * p)` matrix whose row `i` is plane `i` of every image in
/// turn: a chunk's output gradient as the left operand of its weight gradient, without the
/// row-major copy in between, into `packed` (its old values dropped). On the calling thread.
pub(crate) fn pack_planes_into(
    src: &[f32],
    (images, m, p): (usize, usize, usize),
    packed: &mut Vec<f32>,
) {
    pack_planes_for(Isa::detect(), src, (images, m, p), packed);
}

fn pack_planes_for(
    isa: Isa,
    src: &[f32],
    (images, m, p): (usize, usize, usize),
    packed: &mut Vec<f32>,
) {
    let rows = isa.rows();
    let k = images * p;
    debug_assert!(src.len() >= images * m * p);
    packed.clear();
    packed.resize(m.div_ceil(rows) * rows * k, 0.0);
    if k == 0 {
        return;
    }
    for (block, dst) in packed.chunks_exact_mut(rows * k).enumerate() {
        let live = rows.min(m - block * rows);
        for img in 0..images {
            let dst = &mut dst[img * p * rows..(img + 1) * p * rows];
            for r in 0..live {
                let plane = &src[(img * m + block * rows + r) * p..][..p];
                for (column, &v) in dst.chunks_exact_mut(rows).zip(plane) {
                    column[r] = v;
                }
            }
        }
    }
}

/// An initialised buffer as the kernels' destination type. Sound because nothing in this
/// module writes an uninitialised value through it.
pub(crate) fn uninit(values: &mut [f32]) -> &mut [MaybeUninit<f32>] {
    // SAFETY: `MaybeUninit<f32>` has the layout of `f32`; the returned slice borrows `values`
    // exclusively, and every write through it (the kernels' stores, `MaybeUninit::write`)
    // stores an initialised `f32`, so `values` stays initialised.
    #[allow(unsafe_code)]
    unsafe {
        &mut *(std::ptr::from_mut(values) as *mut [MaybeUninit<f32>])
    }
}

/// Values of a packed `(m, k)` operand ([`pack`]).
pub(crate) fn packed_len(m: usize, k: usize) -> usize {
    let r = Isa::detect().rows();
    m.div_ceil(r) * r * k
}

/// Rows per register block on this CPU: [`pack`]'s block height, and the granularity at which
/// callers split a packed operand's rows between threads.
pub(crate) fn block_rows() -> usize {
    Isa::detect().rows()
}

/// [`product`] over rows `0..m` of a row-major `dst` (row stride `rs`), columns `cols` of
/// each: `b`'s rows (`b_rs` apart) hold those columns' inputs from their first value. A
/// `residual` has `dst`'s layout. The rows are split over rayon's threads, in whole register
/// blocks, when `parallel`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn product_rows(
    dst: &mut [MaybeUninit<f32>],
    (m, rs): (usize, usize),
    cols: Range<usize>,
    packed: &[f32],
    b: &[f32],
    (k, b_rs): (usize, usize),
    (bias, residual, act): (Option<&[f32]>, Option<&[f32]>, Activation),
    parallel: bool,
) {
    use rayon::prelude::*;
    let n = cols.len();
    if m == 0 || n == 0 {
        return;
    }
    let run = |first: usize, dst: &mut [MaybeUninit<f32>], rows: usize| {
        let mut views: Vec<&mut [MaybeUninit<f32>]> =
            dst.chunks_mut(rs).take(rows).map(|row| &mut row[cols.clone()]).collect();
        let packed = &packed[first * k..];
        let res: Option<Vec<&[f32]>> = residual.map(|res| {
            (first..first + rows).map(|r| &res[r * rs + cols.start..r * rs + cols.end]).collect()
        });
        let bias = bias.map(|bias| &bias[first..]);
        let epilogue = Epilogue { bias, residual: res.as_deref(), act };
        product(&mut views, packed, b, (n, k, b_rs), epilogue);
    };
    let threads = rayon::current_num_threads().max(1);
    let r = block_rows();
    let block = m.div_ceil(threads).next_multiple_of(r);
    if !parallel || threads == 1 || block >= m {
        return run(0, dst, m);
    }
    dst.par_chunks_mut(block * rs).enumerate().for_each(|(i, part)| {
        let first = i * block;
        if first < m {
            run(first, part, block.min(m - first));
        }
    });
}

/// A band of columns of a row-major destination, handed to one task by [`par_column_bands`]:
/// its `rows x cols` elements (row stride `rs`) belong to it alone.
pub(crate) struct ColumnBand<'a> {
    ptr: *mut MaybeUninit<f32>,
    rows: usize,
    cols: usize,
    rs: usize,
    _dst: std::marker::PhantomData<&'a mut [MaybeUninit<f32>]>,
}

// SAFETY: a band is a set of elements no other band or reference touches (see
// `par_column_bands`), so moving its pointer to another thread shares nothing.
#[allow(unsafe_code)]
unsafe impl Send for ColumnBand<'_> {}

impl ColumnBand<'_> {
    /// The band's rows, each as a slice of its `cols` values.
    pub fn rows(&mut self) -> Vec<&mut [MaybeUninit<f32>]> {
        (0..self.rows)
            .map(|r| {
                // SAFETY: row r's `cols` values lie inside the destination (checked when the
                // band was made), belong to this band alone and are distinct from every other
                // row's (cols <= rs); `&mut self` keeps these the only views of them while
                // they live.
                #[allow(unsafe_code)]
                unsafe {
                    std::slice::from_raw_parts_mut(self.ptr.add(r * self.rs), self.cols)
                }
            })
            .collect()
    }
}

/// Cuts a row-major `dst` (`rows x cols`, row stride `rs`) into the column `bands` (sorted,
/// disjoint, inside its columns) and runs `f(band index, band)` for each, one rayon task per
/// band: products that write straight into their columns of every row (an image's output
/// planes cut into bands of output rows) instead of into separate blocks copied in afterwards.
///
/// # Errors
/// A destination shorter than its shape, bands out of order or range; the first error of `f`.
pub(crate) fn par_column_bands(
    dst: &mut [MaybeUninit<f32>],
    (rows, cols, rs): (usize, usize, usize),
    bands: &[Range<usize>],
    f: impl Fn(usize, ColumnBand<'_>) -> candle_core::Result<()> + Sync,
) -> candle_core::Result<()> {
    use rayon::prelude::*;
    if rs < cols || (rows > 0 && dst.len() < (rows - 1) * rs + cols) {
        candle_core::bail!(
            "planes: a {rows}x{cols} destination of row stride {rs} in {} values",
            dst.len()
        );
    }
    let ordered = bands.windows(2).all(|w| w[0].end <= w[1].start);
    if !ordered || bands.iter().any(|b| b.start > b.end || b.end > cols) {
        candle_core::bail!(
            "planes: column bands {bands:?} of {cols} columns overlap or leave them"
        );
    }
    let base = dst.as_mut_ptr();
    let views: Vec<ColumnBand<'_>> = bands
        .iter()
        .map(|b| ColumnBand {
            // SAFETY: with rows, `b.start <= cols <= len` (checked above), so the offset stays
            // within (or one past) the destination's allocation; without, nothing is ever
            // read or written through the pointer.
            #[allow(unsafe_code)]
            ptr: if rows == 0 { base } else { unsafe { base.add(b.start) } },
            rows,
            cols: b.len(),
            rs,
            _dst: std::marker::PhantomData,
        })
        .collect();
    views.into_par_iter().enumerate().try_for_each(|(i, band)| f(i, band))
}

/// The portable kernel (`a` packed in blocks of one row: row-major).
fn portable(
    dst: &mut [&mut [MaybeUninit<f32>]],
    a: &[f32],
    b: &[f32],
    (n, k, b_rs): (usize, usize, usize),
    epilogue: Epilogue<'_>,
    accumulate: bool,
) {
    for (i, row) in dst.iter_mut().enumerate() {
        let shift = epilogue.bias.map_or(0.0, |bias| bias[i]);
        let res = epilogue.residual.map(|rows| rows[i]);
        for (j, out) in row[..n].iter_mut().enumerate() {
            // SAFETY: with `accumulate`, `accumulate_on`'s caller handed initialised values.
            #[allow(unsafe_code)]
            let start = if accumulate { unsafe { out.assume_init() } } else { 0.0 };
            let dot = (0..k).fold(start, |acc, p| a[i * k + p].mul_add(b[p * b_rs + j], acc));
            let v = res.map_or(dot + shift, |res| dot + shift + res[j]);
            out.write(epilogue.act.apply(v));
        }
    }
}

/// Rows per register block of the AVX-512 and the AVX2 blockings.
#[cfg(target_arch = "x86_64")]
const WIDE_ROWS: usize = 8;
#[cfg(target_arch = "x86_64")]
const NARROW_ROWS: usize = 6;

/// Eight rows by 48 columns per register block on AVX-512: 24 accumulators, three loads of
/// `b` and eight broadcasts per 24 multiply-adds (channel counts are multiples of 8).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn product_wide(
    dst: &mut [&mut [MaybeUninit<f32>]],
    a: &[f32],
    b: &[f32],
    (n, k, b_rs): (usize, usize, usize),
    epilogue: Epilogue<'_>,
    accumulate: bool,
) {
    let shape = (n, k, WIDE_ROWS, 48);
    each_block(
        dst,
        a,
        shape,
        epilogue,
        accumulate,
        |rows, block, cols, depth, flags, e| {
            let mut j = cols.start;
            while j < cols.end {
                let w = match cols.end - j {
                    w if w >= 48 => 48,
                    32 => 32,
                    _ => 16,
                };
                let d = depth.clone();
                match w {
                    48 => wide::tile::<3>(rows, block, b, (j, b_rs), d, flags, e),
                    32 => wide::tile::<2>(rows, block, b, (j, b_rs), d, flags, e),
                    _ => wide::tile::<1>(rows, block, b, (j, b_rs), d, flags, e),
                }
                j += w;
            }
        },
        |dst, res, cols, act| wide::add_residual(dst, res, cols, act),
    );
}

/// The last `cols` (fewer than 16) of every row on AVX-512, a column at a time with the eight
/// rows of a register block as one vector: a padded 16-wide step would spend eight 16-lane
/// multiply-adds per depth step on them, these spend one 8-lane one per column (a 7x7 plane's
/// 49th column cost as much as its first 16).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn wide_tail(
    dst: &mut [&mut [MaybeUninit<f32>]],
    a: &[f32],
    b: &[f32],
    (cols, k, b_rs): (Range<usize>, usize, usize),
    epilogue: Epilogue<'_>,
) {
    // A column's sum is a chain of dependent multiply-adds: a few columns of one register
    // block would wait on their latency, so fewer columns go with more register blocks (up to
    // four, 32 rows, whose packed values stay in cache while their columns go by).
    for (g, group) in dst.chunks_mut(4 * WIDE_ROWS).enumerate() {
        let first = g * 4 * WIDE_ROWS;
        let mut j = cols.start;
        while j < cols.end {
            let c = (cols.end - j).min(8);
            let want = if c <= 2 {
                4
            } else if c <= 4 {
                2
            } else {
                1
            };
            let mut r0 = 0;
            while r0 < group.len() {
                let blocks = if (group.len() - r0).div_ceil(WIDE_ROWS) >= want { want } else { 1 };
                let end = (r0 + blocks * WIDE_ROWS).min(group.len());
                let rows = &mut group[r0..end];
                let (a, e) = (&a[(first + r0) * k..], epilogue.rows_from(first + r0));
                let at = (j, k, b_rs);
                match (c, blocks) {
                    (1, 4) => wide::columns::<1, 4>(rows, a, b, at, e),
                    (2, 4) => wide::columns::<2, 4>(rows, a, b, at, e),
                    (3, 2) => wide::columns::<3, 2>(rows, a, b, at, e),
                    (4, 2) => wide::columns::<4, 2>(rows, a, b, at, e),
                    (1, _) => wide::columns::<1, 1>(rows, a, b, at, e),
                    (2, _) => wide::columns::<2, 1>(rows, a, b, at, e),
                    (3, _) => wide::columns::<3, 1>(rows, a, b, at, e),
                    (4, _) => wide::columns::<4, 1>(rows, a, b, at, e),
                    (5, _) => wide::columns::<5, 1>(rows, a, b, at, e),
                    (6, _) => wide::columns::<6, 1>(rows, a, b, at, e),
                    (7, _) => wide::columns::<7, 1>(rows, a, b, at, e),
                    _ => wide::columns::<8, 1>(rows, a, b, at, e),
                }
                r0 = end;
            }
            j += c;
        }
    }
}

/// Six rows by 16 columns on AVX2: twelve accumulators, two loads and a broadcast (15 of the
/// 16 registers).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn product_narrow(
    dst: &mut [&mut [MaybeUninit<f32>]],
    a: &[f32],
    b: &[f32],
    (n, k, b_rs): (usize, usize, usize),
    epilogue: Epilogue<'_>,
    accumulate: bool,
) {
    let shape = (n, k, NARROW_ROWS, COL_STEP);
    each_block(
        dst,
        a,
        shape,
        epilogue,
        accumulate,
        |rows, block, cols, depth, flags, e| {
            for j in cols.step_by(COL_STEP) {
                narrow::tile(rows, block, b, (j, b_rs), depth.clone(), flags, e);
            }
        },
        |dst, res, cols, act| narrow::add_residual(dst, res, cols, act),
    );
}

/// Values of `b` a column block may hold (256 KiB): it stays in L2 while every row block of
/// `a` sweeps it, and each row block's packed values (8 x 512 at most, 16 KiB) stay in L1
/// while it sweeps the column block.
#[cfg(target_arch = "x86_64")]
const COLUMN_BLOCK_VALUES: usize = 64 * 1024;

/// Calls `tile(rows of dst, packed block of a, columns, depth, last, epilogue of those rows)`
/// for each depth block, each column block within it (whole multiples of `panel` columns
/// holding at most [`COLUMN_BLOCK_VALUES`] of `b`) and each block of `r` rows (`a` packed by
/// [`pack`] for `r`): `a` streams once per column block, not once per panel. With a residual,
/// the tiles apply the bias alone and `finish(dst, residual, columns, act)` adds the residual
/// and applies the activation over each finished column block while it is in cache (in the
/// tiles, the residual's loads made the compiler keep the accumulators in memory).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn each_block<'e>(
    dst: &mut [&mut [MaybeUninit<f32>]],
    a: &[f32],
    (n, k, r, panel): (usize, usize, usize, usize),
    epilogue: Epilogue<'e>,
    accumulate: bool,
    mut tile: impl FnMut(
        &mut [&mut [MaybeUninit<f32>]],
        &[f32],
        Range<usize>,
        Range<usize>,
        (bool, bool),
        Epilogue<'e>,
    ),
    mut finish: impl FnMut(&mut [&mut [MaybeUninit<f32>]], &[&[f32]], Range<usize>, Activation),
) {
    let mut p = 0;
    loop {
        let depth = p..(p + DEPTH).min(k);
        let last = depth.end == k;
        let load = accumulate || depth.start > 0;
        let width = (COLUMN_BLOCK_VALUES / depth.len().max(1)).max(panel) / panel * panel;
        let mut c = 0;
        while c < n {
            let cols = c..(c + width).min(n);
            for (i, rows) in dst.chunks_mut(r).enumerate() {
                let block = &a[i * r * k + depth.start * r..i * r * k + depth.end * r];
                let e = epilogue.in_registers().rows_from(i * r);
                tile(rows, block, cols.clone(), depth.clone(), (load, last), e);
            }
            if let (true, Some(residual)) = (last, epilogue.residual) {
                finish(dst, residual, cols.clone(), epilogue.act);
            }
            c = cols.end;
        }
        p = depth.end;
        if last {
            return;
        }
    }
}

/// The register blocks as AVX-512 code.
#[cfg(target_arch = "x86_64")]
mod wide {
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;
    use std::ops::Range;

    use super::{Epilogue, WIDE_ROWS as R};
    use crate::conv::Activation;

    /// Columns `j..j + 16 NV` of `dst`'s rows (at most `R`): `a`'s packed block over `depth`
    /// times those columns of `b`'s rows, added to `dst` when `load` (past the first depth
    /// block, or from the first for [`super::accumulate`]), the epilogue applied after the last.
    // Rows and vectors by constant index (loops the compiler unrolls), so that the
    // accumulators stay in registers; iterator adaptors over `acc` kept them in memory.
    #[allow(clippy::needless_range_loop)]
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) fn tile<const NV: usize>(
        dst: &mut [&mut [MaybeUninit<f32>]],
        a: &[f32],
        b: &[f32],
        (j, b_rs): (usize, usize),
        depth: Range<usize>,
        (load, last): (bool, bool),
        epilogue: Epilogue<'_>,
    ) {
        let w = 16 * NV;
        let mut acc = [[_mm512_setzero_ps(); NV]; R];
        let rows = dst.len().min(R);
        if load {
            for r in 0..R {
                if r < rows {
                    let d = &dst[r][j..j + w];
                    for v in 0..NV {
                        // SAFETY: `d` holds `16 * NV` values, so 16 from `16 * v` are inside it.
                        #[allow(unsafe_code)]
                        let loaded =
                            unsafe { _mm512_loadu_ps(d.as_ptr().cast::<f32>().add(16 * v)) };
                        acc[r][v] = loaded;
                    }
                }
            }
        }
        let (a, b) = (&a[..depth.len() * R], &b[depth.start * b_rs..]);
        for (p, a_p) in a.chunks_exact(R).enumerate() {
            let b_p = &b[p * b_rs + j..p * b_rs + j + w];
            let bv: [__m512; NV] = std::array::from_fn(|v| {
                // SAFETY: `b_p` holds `16 * NV` values, so 16 from `16 * v` are inside it.
                #[allow(unsafe_code)]
                unsafe {
                    _mm512_loadu_ps(b_p.as_ptr().add(16 * v))
                }
            });
            for r in 0..R {
                let s = _mm512_set1_ps(a_p[r]);
                for v in 0..NV {
                    acc[r][v] = _mm512_fmadd_ps(s, bv[v], acc[r][v]);
                }
            }
        }
        let (zero, six) = (_mm512_setzero_ps(), _mm512_set1_ps(6.0));
        for r in 0..R {
            if r >= rows {
                continue;
            }
            let d = &mut dst[r][j..j + w];
            let shift = _mm512_set1_ps(epilogue.bias.map_or(0.0, |bias| bias[r]));
            for v in 0..NV {
                let mut x = acc[r][v];
                if last {
                    // `max(x, 0)` returns 0 for a NaN `x`, as `f32::max` does.
                    x = match epilogue.act {
                        Activation::Identity => _mm512_add_ps(x, shift),
                        Activation::Relu => _mm512_max_ps(_mm512_add_ps(x, shift), zero),
                        Activation::Relu6 => {
                            _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(x, shift), zero), six)
                        }
                    };
                }
                // SAFETY: `d` holds `16 * NV` values, so 16 from `16 * v` are inside it.
                #[allow(unsafe_code)]
                unsafe {
                    _mm512_storeu_ps(d.as_mut_ptr().cast::<f32>().add(16 * v), x)
                };
            }
        }
    }

    /// Columns `j..j + C` of `dst`'s rows over the whole depth `k`, `B` register blocks of `R`
    /// rows at most (or one when `B` is 1, of fewer rows if `dst` has fewer), `a` packed from
    /// the first: the product with those columns of `b`, each column's `R` rows one 8-lane
    /// vector (a row of a packed block), the sums in the tiles' order; then
    /// `act((v + bias) + residual)`, as the tiles and [`add_residual`] apply it. With `B > 1`
    /// `dst` holds more than `(B - 1) R` rows (the last block's absent rows are computed as
    /// zeros and not stored).
    #[allow(clippy::needless_range_loop)]
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) fn columns<const C: usize, const B: usize>(
        dst: &mut [&mut [MaybeUninit<f32>]],
        a: &[f32],
        b: &[f32],
        (j, k, b_rs): (usize, usize, usize),
        epilogue: Epilogue<'_>,
    ) {
        let mut acc = [[_mm256_setzero_ps(); C]; B];
        let blocks: [&[f32]; B] = std::array::from_fn(|i| &a[i * R * k..(i + 1) * R * k]);
        for p in 0..k {
            let b_p = &b[p * b_rs + j..p * b_rs + j + C];
            for i in 0..B {
                let a_p = &blocks[i][p * R..p * R + R];
                // SAFETY: `a_p` holds `R` (8) values.
                #[allow(unsafe_code)]
                let w = unsafe { _mm256_loadu_ps(a_p.as_ptr()) };
                for c in 0..C {
                    acc[i][c] = _mm256_fmadd_ps(w, _mm256_set1_ps(b_p[c]), acc[i][c]);
                }
            }
        }
        let mut sums = [[[0f32; R]; C]; B];
        for i in 0..B {
            for c in 0..C {
                // SAFETY: `sums[i][c]` holds 8 values.
                #[allow(unsafe_code)]
                unsafe {
                    _mm256_storeu_ps(sums[i][c].as_mut_ptr(), acc[i][c])
                };
            }
        }
        for (r, row) in dst.iter_mut().enumerate().take(B * R) {
            let shift = epilogue.bias.map_or(0.0, |bias| bias[r]);
            for c in 0..C {
                let mut v = sums[r / R][c][r % R] + shift;
                if let Some(residual) = epilogue.residual {
                    v += residual[r][j + c];
                }
                // The vector kernels' activation: `max(v, 0)` is 0 for a NaN `v` (`clamp`
                // would keep the NaN).
                #[allow(clippy::manual_clamp)]
                row[j + c].write(match epilogue.act {
                    Activation::Identity => v,
                    Activation::Relu => v.max(0.0),
                    Activation::Relu6 => v.max(0.0).min(6.0),
                });
            }
        }
    }

    /// `dst = act(dst + residual)` over `cols` (a multiple of 16 wide) of every row, values the
    /// tiles have just written.
    #[target_feature(enable = "avx512f")]
    pub(super) fn add_residual(
        dst: &mut [&mut [MaybeUninit<f32>]],
        residual: &[&[f32]],
        cols: Range<usize>,
        act: Activation,
    ) {
        let (zero, six) = (_mm512_setzero_ps(), _mm512_set1_ps(6.0));
        for (d, r) in dst.iter_mut().zip(residual) {
            let (d, r) = (&mut d[cols.clone()], &r[cols.clone()]);
            for (d, r) in d.chunks_exact_mut(16).zip(r.chunks_exact(16)) {
                // SAFETY: both chunks hold 16 values; the tiles wrote `d` (initialised).
                #[allow(unsafe_code)]
                let (v, a) = unsafe {
                    (_mm512_loadu_ps(d.as_ptr().cast::<f32>()), _mm512_loadu_ps(r.as_ptr()))
                };
                let x = _mm512_add_ps(v, a);
                let x = match act {
                    Activation::Identity => x,
                    Activation::Relu => _mm512_max_ps(x, zero),
                    Activation::Relu6 => _mm512_min_ps(_mm512_max_ps(x, zero), six),
                };
                // SAFETY: `d` holds 16 values.
                #[allow(unsafe_code)]
                unsafe {
                    _mm512_storeu_ps(d.as_mut_ptr().cast::<f32>(), x)
                };
            }
        }
    }
}

/// The register blocks as AVX2 code.
#[cfg(target_arch = "x86_64")]
mod narrow {
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;
    use std::ops::Range;

    use super::{Epilogue, COL_STEP, NARROW_ROWS as R};
    use crate::conv::Activation;

    /// As `wide::tile`, for columns `j..j + 16` in two 8-lane halves.
    #[allow(clippy::needless_range_loop)]
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn tile(
        dst: &mut [&mut [MaybeUninit<f32>]],
        a: &[f32],
        b: &[f32],
        (j, b_rs): (usize, usize),
        depth: Range<usize>,
        (load, last): (bool, bool),
        epilogue: Epilogue<'_>,
    ) {
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        let rows = dst.len().min(R);
        if load {
            for r in 0..R {
                if r < rows {
                    let d = &dst[r][j..j + COL_STEP];
                    for v in 0..2 {
                        // SAFETY: `d` holds 16 values, so 8 from `8 * v` (v < 2) are inside it.
                        #[allow(unsafe_code)]
                        let loaded =
                            unsafe { _mm256_loadu_ps(d.as_ptr().cast::<f32>().add(8 * v)) };
                        acc[r][v] = loaded;
                    }
                }
            }
        }
        let (a, b) = (&a[..depth.len() * R], &b[depth.start * b_rs..]);
        for (p, a_p) in a.chunks_exact(R).enumerate() {
            let b_p = &b[p * b_rs + j..p * b_rs + j + COL_STEP];
            // SAFETY: `b_p` holds 16 values: 8 from 0 and 8 from 8 are inside it.
            #[allow(unsafe_code)]
            let bv =
                unsafe { [_mm256_loadu_ps(b_p.as_ptr()), _mm256_loadu_ps(b_p.as_ptr().add(8))] };
            for r in 0..R {
                let s = _mm256_set1_ps(a_p[r]);
                for v in 0..2 {
                    acc[r][v] = _mm256_fmadd_ps(s, bv[v], acc[r][v]);
                }
            }
        }
        let (zero, six) = (_mm256_setzero_ps(), _mm256_set1_ps(6.0));
        for r in 0..R {
            if r >= rows {
                continue;
            }
            let d = &mut dst[r][j..j + COL_STEP];
            let shift = _mm256_set1_ps(epilogue.bias.map_or(0.0, |bias| bias[r]));
            for v in 0..2 {
                let mut x = acc[r][v];
                if last {
                    x = match epilogue.act {
                        Activation::Identity => _mm256_add_ps(x, shift),
                        Activation::Relu => _mm256_max_ps(_mm256_add_ps(x, shift), zero),
                        Activation::Relu6 => {
                            _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(x, shift), zero), six)
                        }
                    };
                }
                // SAFETY: `d` holds 16 values, so 8 from `8 * v` (v < 2) are inside it.
                #[allow(unsafe_code)]
                unsafe {
                    _mm256_storeu_ps(d.as_mut_ptr().cast::<f32>().add(8 * v), x)
                };
            }
        }
    }

    /// `dst = act(dst + residual)` over `cols` (a multiple of 8 wide) of every row, values the
    /// tiles have just written.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn add_residual(
        dst: &mut [&mut [MaybeUninit<f32>]],
        residual: &[&[f32]],
        cols: Range<usize>,
        act: Activation,
    ) {
        let (zero, six) = (_mm256_setzero_ps(), _mm256_set1_ps(6.0));
        for (d, r) in dst.iter_mut().zip(residual) {
            let (d, r) = (&mut d[cols.clone()], &r[cols.clone()]);
            for (d, r) in d.chunks_exact_mut(8).zip(r.chunks_exact(8)) {
                // SAFETY: both chunks hold 8 values; the tiles wrote `d` (initialised).
                #[allow(unsafe_code)]
                let (v, a) = unsafe {
                    (_mm256_loadu_ps(d.as_ptr().cast::<f32>()), _mm256_loadu_ps(r.as_ptr()))
                };
                let x = _mm256_add_ps(v, a);
                let x = match act {
                    Activation::Identity => x,
                    Activation::Relu => _mm256_max_ps(x, zero),
                    Activation::Relu6 => _mm256_min_ps(_mm256_max_ps(x, zero), six),
                };
                // SAFETY: `d` holds 8 values.
                #[allow(unsafe_code)]
                unsafe {
                    _mm256_storeu_ps(d.as_mut_ptr().cast::<f32>(), x)
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1).
    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// Every kernel this machine can run.
    fn isas_here() -> Vec<Isa> {
        let mut isas = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                isas.push(Isa::Narrow);
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                isas.push(Isa::Wide);
            }
        }
        isas
    }

    #[test]
    fn products_match_an_f64_triple_loop_with_their_epilogue() {
        // Row counts around the 8-, 6-, 4- and 2-row blocks; column counts over every panel
        // width and with tails; depths past one depth block; row strides past the columns.
        let cases = [
            (1, 16, 1, 16, Activation::Identity),
            (3, 21, 5, 40, Activation::Relu),
            (8, 48, 7, 48, Activation::Relu6),
            (9, 64, 16, 70, Activation::Identity),
            (13, 83, 3, 83, Activation::Relu),
            (17, 100, 600, 101, Activation::Relu6),
            (7, 5, 1030, 9, Activation::Identity),
            (2, 160, 9, 170, Activation::Relu),
            // Several column blocks (128 columns each at a depth of 512), two depth blocks.
            (9, 400, 520, 400, Activation::Relu),
            // Column tails of 1, 9 and 15 (7x7 planes, 5x5 planes, a tail past 8 columns).
            (10, 49, 530, 49, Activation::Relu6),
            (16, 25, 40, 27, Activation::Relu),
            (6, 31, 20, 33, Activation::Identity),
            // Tails of 2, 3 and 1 column over four, two and one register blocks at a time
            // (the last block partial).
            (27, 50, 33, 50, Activation::Relu),
            (13, 19, 21, 19, Activation::Relu6),
            (40, 65, 17, 66, Activation::Identity),
        ];
        for (case, &(m, n, k, b_rs, act)) in cases.iter().enumerate() {
            let a = values(m * k, 3 * case as u64 + 1);
            let b = values(k * b_rs, 3 * case as u64 + 2);
            let bias = values(m, 3 * case as u64 + 3);
            // Rows longer than `n`: the values past it stay untouched.
            let mut out = vec![f32::NAN; m * (n + 3)];
            let mut rows: Vec<_> = out.chunks_exact_mut(n + 3).map(uninit).collect();
            let with_bias = case % 2 == 0;
            // Most cases add a residual (rows of `n + 3`, like the destination's).
            let residual = values(m * (n + 3), 3 * case as u64 + 4);
            let res_rows: Vec<&[f32]> = residual.chunks_exact(n + 3).collect();
            let with_residual = case % 4 != 0;
            let epilogue = Epilogue {
                bias: with_bias.then_some(&bias[..]),
                residual: with_residual.then_some(&res_rows[..]),
                act,
            };
            product(&mut rows, &pack(&a, (m, k)), &b, (n, k, b_rs), epilogue);
            for i in 0..m {
                for j in 0..n {
                    let dot: f64 =
                        (0..k).map(|p| f64::from(a[i * k + p]) * f64::from(b[p * b_rs + j])).sum();
                    let shifted = dot
                        + if with_bias { f64::from(bias[i]) } else { 0.0 }
                        + if with_residual { f64::from(res_rows[i][j]) } else { 0.0 };
                    let want = match act {
                        Activation::Identity => shifted,
                        Activation::Relu => shifted.max(0.0),
                        Activation::Relu6 => shifted.clamp(0.0, 6.0),
                    };
                    let got = f64::from(out[i * (n + 3) + j]);
                    assert!(
                        (got - want).abs() < 1e-5 * (1.0 + k as f64),
                        "{m}x{n}x{k} ({i}, {j}): {got} vs {want}"
                    );
                }
                assert!(out[i * (n + 3) + n..(i + 1) * (n + 3)].iter().all(|v| v.is_nan()));
            }
            // Every kernel this machine has agrees bit for bit (the same sums in the same order).
            let isas = isas_here();
            for isa in isas {
                let mut other = vec![f32::NAN; m * (n + 3)];
                let mut rows: Vec<_> = other.chunks_exact_mut(n + 3).map(uninit).collect();
                product_on(isa, &mut rows, &pack_for(isa, &a, (m, k)), &b, (n, k, b_rs), epilogue);
                for i in 0..m {
                    let row = i * (n + 3)..(i + 1) * (n + 3);
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(
                        bits(&other[row.clone()]),
                        bits(&out[row]),
                        "{isa:?} {m}x{n}x{k}: row {i}"
                    );
                }
            }
        }
    }

    /// `accumulate` adds the product to what the rows hold, in [`product`]'s order: within
    /// rounding of an f64 triple loop, and bit for bit the same on every kernel this machine
    /// has; the values past `n` stay untouched.
    #[test]
    fn accumulating_products_add_to_what_the_rows_hold() {
        // (m, n, k, b_rs): row counts around the register blocks, every panel width, depths
        // past one depth block.
        let cases = [(1, 16, 1, 16), (9, 48, 33, 48), (17, 32, 600, 40), (6, 96, 1030, 96)];
        for (case, &(m, n, k, b_rs)) in cases.iter().enumerate() {
            let a = values(m * k, 5 * case as u64 + 1);
            let b = values(k * b_rs, 5 * case as u64 + 2);
            let start = values(m * (n + 3), 5 * case as u64 + 3);
            let isas = isas_here();
            let mut results = Vec::new();
            for isa in isas {
                let mut out = start.clone();
                let mut rows: Vec<&mut [f32]> = out.chunks_exact_mut(n + 3).collect();
                accumulate_on(isa, &mut rows, &pack_for(isa, &a, (m, k)), &b, (n, k, b_rs));
                for i in 0..m {
                    for j in 0..n + 3 {
                        let at = i * (n + 3) + j;
                        if j >= n {
                            assert_eq!(out[at].to_bits(), start[at].to_bits(), "{isa:?} past n");
                            continue;
                        }
                        let dot: f64 = (0..k)
                            .map(|p| f64::from(a[i * k + p]) * f64::from(b[p * b_rs + j]))
                            .sum();
                        let want = f64::from(start[at]) + dot;
                        let got = f64::from(out[at]);
                        assert!(
                            (got - want).abs() < 1e-5 * (1.0 + k as f64),
                            "{isa:?} {m}x{n}x{k} ({i}, {j}): {got} vs {want}"
                        );
                    }
                }
                results.push((isa, out));
            }
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            for (isa, out) in &results[1..] {
                assert_eq!(bits(out), bits(&results[0].1), "{isa:?} against the portable sums");
            }
        }
    }

    #[test]
    #[should_panic(expected = "not a multiple of 16")]
    fn accumulating_needs_whole_column_steps() {
        let mut out = [0f32; 20];
        let mut rows: Vec<&mut [f32]> = vec![&mut out[..]];
        accumulate(&mut rows, &pack(&[1.0], (1, 1)), &[0.0; 20], (20, 1, 20));
    }

    /// Images' planes pack as the `(m, images * p)` matrix of each plane's rows image after
    /// image.
    #[test]
    fn planes_of_several_images_pack_as_their_rows_side_by_side() {
        for isa in [Isa::Portable, Isa::detect()] {
            for (images, m, p) in [(1, 3, 5), (3, 13, 7), (4, 16, 64)] {
                let src = values(images * m * p, (images * m * p) as u64);
                let mut rows = vec![0f32; m * images * p];
                for img in 0..images {
                    for i in 0..m {
                        let from = &src[(img * m + i) * p..][..p];
                        rows[i * images * p + img * p..][..p].copy_from_slice(from);
                    }
                }
                let mut packed = vec![f32::NAN; 3];
                pack_planes_for(isa, &src, (images, m, p), &mut packed);
                let want = pack_for(isa, &rows, (m, images * p));
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&packed), bits(&want), "{isa:?} {images}x{m}x{p}");
            }
        }
    }

    /// Packed blocks hold each column's rows side by side and zeros past the last row, on one
    /// thread and (from `PARALLEL_PACK` values) on all of them.
    #[test]
    fn packing_lays_out_blocks_of_rows_column_by_column() {
        for isa in [Isa::Portable, Isa::detect()] {
            let rows = isa.rows();
            for (m, k) in [(1, 3), (13, 7), (2 * rows + 3, 5000), (rows, super::PARALLEL_PACK)] {
                let a = values(m * k, (m * k) as u64);
                let packed = pack_for(isa, &a, (m, k));
                assert_eq!(packed.len(), m.div_ceil(rows) * rows * k, "{m} x {k}");
                for (i, &v) in packed.iter().enumerate() {
                    let (block, p, r) = (i / (rows * k), i / rows % k, i % rows);
                    let row = block * rows + r;
                    let want = if row < m { a[row * k + p] } else { 0.0 };
                    assert_eq!(v.to_bits(), want.to_bits(), "{m} x {k}: value {i}");
                }
            }
        }
    }
}

#[cfg(test)]
mod band_tests {
    use super::*;

    /// Column bands of a padded row-major destination, each the product of the whole weight
    /// with that band's columns (as a band's `im2col` would give them), in two row groups (a
    /// grouped convolution's): equal to the whole product, padding untouched, every row given
    /// once per band; overlapping or unordered bands refused.
    #[test]
    fn column_bands_write_their_columns_of_the_product() {
        let vals = |n: usize, seed: usize| -> Vec<f32> {
            (0..n).map(|i| ((i * 7919 + seed * 104_729) % 211) as f32 / 105.0 - 1.0).collect()
        };
        for (m, k, n, bands) in [
            (6, 5, 10, vec![0..3, 3..7, 7..10]),
            (4, 3, 9, vec![0..4, 4..9]),
            (2, 0, 4, vec![0..1, 1..4]),
            (5, 4, 7, vec![0..2, 2..2, 2..7]),
        ] {
            let (a, b) = (vals(m * k, 3), vals(k * n, 4));
            let rs = n + 2;
            let mut dst = vec![f32::NAN; m * rs];
            let visits = std::sync::atomic::AtomicUsize::new(0);
            let half = m / 2;
            let (top, bottom) =
                (pack(&a[..half * k], (half, k)), pack(&a[half * k..], (m - half, k)));
            par_column_bands(uninit(&mut dst), (m, n, rs), &bands, |i, mut band| {
                let cols = bands[i].clone();
                let rhs: Vec<f32> =
                    (0..k).flat_map(|r| b[r * n + cols.start..r * n + cols.end].to_vec()).collect();
                let mut rows = band.rows();
                assert_eq!(rows.len(), m);
                visits.fetch_add(rows.len(), std::sync::atomic::Ordering::Relaxed);
                let e = Epilogue::new(None, Activation::Identity);
                let (upper, lower) = rows.split_at_mut(half);
                product(upper, &top, &rhs, (cols.len(), k, cols.len()), e);
                product(lower, &bottom, &rhs, (cols.len(), k, cols.len()), e);
                Ok(())
            })
            .unwrap();
            assert_eq!(visits.into_inner(), m * bands.len());
            for r in 0..m {
                for c in 0..rs {
                    let g = dst[r * rs + c];
                    if c < n {
                        let want: f32 = (0..k).map(|p| a[r * k + p] * b[p * n + c]).sum();
                        assert!((g - want).abs() < 1e-4, "{m}x{k}x{n} ({r}, {c}): {g}");
                    } else {
                        assert!(g.is_nan(), "padding ({r}, {c}) written");
                    }
                }
            }
        }
        let mut dst = vec![0f32; 12];
        for bands in [vec![0..3, 2..4], vec![2..4, 0..2], vec![0..2, 3..5]] {
            let result = par_column_bands(uninit(&mut dst), (3, 4, 4), &bands, |_, _| Ok(()));
            assert!(result.is_err(), "{bands:?}");
        }
        let whole = std::slice::from_ref(&(0..4));
        assert!(par_column_bands(uninit(&mut dst), (4, 4, 4), whole, |_, _| Ok(())).is_err());
    }
}
