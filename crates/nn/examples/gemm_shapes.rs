//! Single-core throughput of the `gemm` crate's f32 kernels on convolution-shaped products
//! `(O, K) x (K, P)`, whole and cut into column bands: the ceiling an `im2col` + GEMM
//! convolution can reach on this CPU, and why `gemm_conv` multiplies L2-sized bands.
//!
//! `cargo run --release -p deeprecog-nn --example gemm_shapes` prints GFLOP/s per shape; the
//! PyTorch line for the same shapes is in `benches/NOTES.md`.

use std::time::Instant;

/// `out (O, P) = w (O, K) x col (K, P)` over column bands of `band` (the whole width when
/// `band >= P`), each band's columns a separate contiguous `(K, band)` block as `im2col` writes
/// it; GFLOP/s, median of 9 timings of 10 products after warm-up.
fn gflops(o: usize, k: usize, p: usize, band: usize) -> f64 {
    let w: Vec<f32> = (0..o * k).map(|i| (i % 7) as f32 * 0.1).collect();
    let cols: Vec<f32> = (0..k * p).map(|i| (i % 5) as f32 * 0.1).collect();
    let mut out = vec![0f32; o * p];
    let mut product = || {
        let mut start = 0;
        while start < p {
            let n = band.min(p - start);
            let col_rs = if band >= p { p } else { n };
            // SAFETY: `w` is O x K (row stride K), the band's columns are the first K x n
            // values of `cols` (row stride `col_rs` >= n, K * col_rs <= K * P values), the
            // destination is rows 0..O, columns start..start + n of `out` (row stride P); all
            // three lie inside their vectors and the destination does not alias the sources.
            #[allow(unsafe_code)]
            unsafe {
                gemm::gemm(
                    o,
                    n,
                    k,
                    out.as_mut_ptr().add(start),
                    1,
                    p as isize,
                    false,
                    w.as_ptr(),
                    1,
                    k as isize,
                    cols.as_ptr(),
                    1,
                    col_rs as isize,
                    0.0f32,
                    1.0f32,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            start += n;
        }
    };
    for _ in 0..3 {
        product();
    }
    let mut times: Vec<f64> = (0..9)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..10 {
                product();
            }
            t.elapsed().as_secs_f64() / 10.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    2.0 * (o * k * p) as f64 / times[4] / 1e9
}

fn main() {
    println!("(O, K, P): GFLOP/s on one core, whole / bands of 1024 / 512 / 256 / 128 columns");
    for (o, k, p) in [
        (1024, 1024, 1024),
        (32, 27, 16384),
        (32, 288, 4096),
        (64, 288, 4096),
        (64, 576, 3136),
        (128, 576, 1024),
        (64, 64, 3136),
        (256, 64, 3136),
        (512, 4608, 49),
    ] {
        let rates: Vec<String> = [usize::MAX, 1024, 512, 256, 128]
            .iter()
            .map(|&b| format!("{:.0}", gflops(o, k, p, b)))
            .collect();
        println!("({o}, {k}, {p}): {}", rates.join(" / "));
    }
}
