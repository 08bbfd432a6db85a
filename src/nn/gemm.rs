//! Single-precision matrix product `C ← α·A·B + β·C` on strided views, with two interchangeable
//! implementations: our own AVX-512 kernel (`avx512.rs`) and `matrixmultiply`'s `sgemm`.
//!
//! Everything in `nn` multiplies matrices through [`gemm`], so swapping or adding an
//! implementation touches this file only. A transposed operand is a view with its strides swapped
//! ([`MatRef::t`]), never a copy: the backward pass computes `dW = Xᵀ·dY` and `dX = dY·Wᵀ` on
//! the same buffers the forward pass used. The product is single-threaded on purpose: the trainer
//! runs one work item per core with rayon, and a GEMM that spawned threads of its own would
//! oversubscribe the two cores (`rust-notes.md` §3.1).

#[cfg(target_arch = "x86_64")]
use super::avx512;

/// A read-only matrix view: element `(i, j)` is `data[i * row_stride + j * col_stride]`.
///
/// The constructor checks once that every element lies inside `data`, which is what lets the
/// kernels read through raw pointers without further checks.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

/// A writable matrix view, laid out like [`MatRef`].
#[derive(Debug)]
pub struct MatMut<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

/// Whether a `rows × cols` view with these strides stays inside a buffer of `len` elements.
fn fits(len: usize, rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> bool {
    if rows == 0 || cols == 0 {
        return true;
    }
    let last = (rows - 1)
        .checked_mul(row_stride)
        .and_then(|r| (cols - 1).checked_mul(col_stride).and_then(|c| r.checked_add(c)));
    last.is_some_and(|last| last < len)
}

impl<'a> MatRef<'a> {
    /// A strided view. Panics if an element would fall outside `data` (a caller bug, not data).
    pub fn new(data: &'a [f32], rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> MatRef<'a> {
        assert!(
            fits(data.len(), rows, cols, row_stride, col_stride),
            "a {rows}x{cols} view with strides ({row_stride}, {col_stride}) does not fit in {} elements",
            data.len()
        );
        MatRef { data, rows, cols, row_stride, col_stride }
    }

    /// The dense row-major `rows × cols` matrix at the start of `data`.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> MatRef<'a> {
        MatRef::new(data, rows, cols, cols, 1)
    }

    /// The transpose, as a view of the same elements.
    pub fn t(self) -> MatRef<'a> {
        MatRef { rows: self.cols, cols: self.rows, row_stride: self.col_stride, col_stride: self.row_stride, ..self }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Rows `..at` and `at..` as two views. Panics if `at > rows`.
    pub fn split_rows(self, at: usize) -> (MatRef<'a>, MatRef<'a>) {
        assert!(at <= self.rows, "cannot split {} rows at {at}", self.rows);
        let start = if at < self.rows { at * self.row_stride } else { self.data.len() };
        let bottom = MatRef { data: &self.data[start..], rows: self.rows - at, ..self };
        (MatRef { rows: at, ..self }, bottom)
    }

    /// Columns `..at` and `at..` as two views. Panics if `at > cols`.
    pub fn split_cols(self, at: usize) -> (MatRef<'a>, MatRef<'a>) {
        let (left, right) = self.t().split_rows(at);
        (left.t(), right.t())
    }

    /// Element `(i, j)`; panics outside the view.
    pub fn at(&self, i: usize, j: usize) -> f32 {
        assert!(i < self.rows && j < self.cols, "({i}, {j}) is outside a {}x{} view", self.rows, self.cols);
        self.data[i * self.row_stride + j * self.col_stride]
    }
}

impl<'a> MatMut<'a> {
    /// A strided view. Panics if an element would fall outside `data`.
    pub fn new(data: &'a mut [f32], rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> MatMut<'a> {
        assert!(
            fits(data.len(), rows, cols, row_stride, col_stride),
            "a {rows}x{cols} view with strides ({row_stride}, {col_stride}) does not fit in {} elements",
            data.len()
        );
        MatMut { data, rows, cols, row_stride, col_stride }
    }

    /// The dense row-major `rows × cols` matrix at the start of `data`.
    pub fn row_major(data: &'a mut [f32], rows: usize, cols: usize) -> MatMut<'a> {
        MatMut::new(data, rows, cols, cols, 1)
    }

    /// The transpose, as a view of the same elements.
    pub fn t(self) -> MatMut<'a> {
        MatMut {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Rows `..at` and `at..` as two views that can be written at the same time, or the view
    /// back if its rows interleave in the buffer (a column stride as large as the row stride).
    /// Panics if `at > rows`.
    pub fn split_rows(self, at: usize) -> Result<(MatMut<'a>, MatMut<'a>), MatMut<'a>> {
        assert!(at <= self.rows, "cannot split {} rows at {at}", self.rows);
        let row_span = self.cols.saturating_sub(1) * self.col_stride;
        if self.rows > 1 && self.cols > 0 && row_span >= self.row_stride {
            return Err(self);
        }
        let MatMut { data, rows, cols, row_stride, col_stride } = self;
        let start = if at < rows { at * row_stride } else { data.len() };
        let (top, bottom) = data.split_at_mut(start);
        Ok((
            MatMut { data: top, rows: at, cols, row_stride, col_stride },
            MatMut { data: bottom, rows: rows - at, cols, row_stride, col_stride },
        ))
    }
}

/// Which implementation computes a product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// `matrixmultiply::sgemm`: portable, about 60 GFLOP/s on one AVX-512 core.
    Matrixmultiply,
    /// Our packed AVX-512 kernel; falls back to `Matrixmultiply` on a CPU without AVX-512F.
    Avx512,
}

impl Kernel {
    pub const ALL: [Kernel; 2] = [Kernel::Matrixmultiply, Kernel::Avx512];

    /// Whether this CPU can run the kernel itself rather than its fallback.
    pub fn is_available(self) -> bool {
        match self {
            Kernel::Matrixmultiply => true,
            Kernel::Avx512 => avx512_available(),
        }
    }

    /// The kernel [`gemm`] uses: the fastest available one, chosen by `examples/gemm_bench.rs`.
    pub fn preferred() -> Kernel {
        if Kernel::Avx512.is_available() { Kernel::Avx512 } else { Kernel::Matrixmultiply }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kernel::Matrixmultiply => "matrixmultiply",
            Kernel::Avx512 => "avx512",
        }
    }
}

fn avx512_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    return avx512::available();
    #[cfg(not(target_arch = "x86_64"))]
    return false;
}

/// `C ← α·A·B + β·C` with the preferred kernel.
///
/// With `β = 0` the old contents of `C` are never read, so `C` may hold anything, NaN included.
/// Panics if the shapes disagree (`A` is `m×k`, `B` is `k×n`, `C` is `m×n`).
pub fn gemm(alpha: f32, a: MatRef, b: MatRef, beta: f32, c: MatMut) {
    gemm_with(Kernel::preferred(), alpha, a, b, beta, c);
}

/// [`gemm`] with the rows of `A` and `C` halved (at multiples of 8 rows) into rayon tasks until
/// a part has fewer than `2·min_rows` rows.
///
/// For a large product on a thread pool with nothing else to do; the trainer normally runs one
/// work item per core and calls [`gemm`] in each. A `C` whose rows interleave in memory is not
/// split.
pub fn gemm_parallel(alpha: f32, a: MatRef, b: MatRef, beta: f32, c: MatMut, min_rows: usize) {
    let rows = c.rows;
    // Halves are cut at multiples of 8 rows, the kernel's tile height.
    let half = (rows / 2).next_multiple_of(8);
    if rows < 2 * min_rows.max(1) && a.rows == rows && b.rows == a.cols {
        return gemm_split_columns(alpha, a, b, beta, c);
    }
    if half >= rows || a.rows != rows {
        return gemm(alpha, a, b, beta, c);
    }
    match c.split_rows(half) {
        Ok((c_top, c_bottom)) => {
            let (a_top, a_bottom) = a.split_rows(half);
            rayon::join(
                || gemm_parallel(alpha, a_top, b, beta, c_top, min_rows),
                || gemm_parallel(alpha, a_bottom, b, beta, c_bottom, min_rows),
            );
        }
        Err(c) => gemm(alpha, a, b, beta, c),
    }
}

/// Columns of `C` below which a product of few rows is not split: each half must still be wide
/// enough to fill the kernel's tiles.
const SPLIT_MIN_COLS: usize = 256;
/// Multiply-adds below which a product is not split: a rayon task costs a few microseconds.
const SPLIT_MIN_WORK: usize = 1 << 20;

/// [`gemm`] for a product with too few rows to halve, such as one step of a rollout (16 rows
/// against a 512 × 512 layer): the columns of `B` and `C` are halved instead, and each half is
/// computed in place by its own task. Each element is computed exactly as without the split.
fn gemm_split_columns(alpha: f32, a: MatRef, b: MatRef, beta: f32, c: MatMut) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    // At a multiple of 16 columns, the kernel's vector width.
    let half = (n / 2).next_multiple_of(16);
    // The halves write disjoint elements only if no two elements of `C` share an address.
    let distinct = (c.col_stride >= 1 && c.row_stride >= n * c.col_stride)
        || (c.row_stride >= 1 && c.col_stride >= m * c.row_stride);
    let kernel = Kernel::preferred();
    if n < SPLIT_MIN_COLS || half >= n || m.saturating_mul(k).saturating_mul(n) < SPLIT_MIN_WORK || !distinct {
        return gemm_with(kernel, alpha, a, b, beta, c);
    }
    let (b_left, b_right) = b.split_cols(half);
    let (rs, cs) = (c.row_stride, c.col_stride);
    let left = Raw(c.data.as_mut_ptr());
    // SAFETY: column `half` of `C` is inside its slice (half < n), so the offset stays in it.
    let right = Raw(unsafe { c.data.as_mut_ptr().add(half * cs) });
    // SAFETY: the views' constructors checked that every element of `A`, `B` and `C` lies inside
    // its slice; the two calls write the disjoint column ranges `..half` and `half..` of `C`
    // (`distinct`), which `c`'s exclusive borrow keeps from everyone else until both return.
    rayon::join(
        || unsafe { raw_gemm(kernel, m, k, half, alpha, a, b_left, beta, { left }.0, rs, cs) },
        || unsafe { raw_gemm(kernel, m, k, n - half, alpha, a, b_right, beta, { right }.0, rs, cs) },
    );
}

/// A pointer into `C` handed to another thread; see [`gemm_split_columns`].
struct Raw(*mut f32);
// SAFETY: only used for the disjoint halves of one exclusively borrowed output.
unsafe impl Send for Raw {}

/// [`gemm`] with a chosen kernel, for benchmarks and for tests that compare the two.
pub fn gemm_with(kernel: Kernel, alpha: f32, a: MatRef, b: MatRef, beta: f32, c: MatMut) {
    assert!(
        a.cols == b.rows && a.rows == c.rows && b.cols == c.cols,
        "gemm shapes disagree: A is {}x{}, B is {}x{}, C is {}x{}",
        a.rows,
        a.cols,
        b.rows,
        b.cols,
        c.rows,
        c.cols
    );
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: the views' constructors checked that every element they address lies inside its
    // slice, and `c` is borrowed mutably, so nothing aliases it.
    unsafe { raw_gemm(kernel, m, k, n, alpha, a, b, beta, c.data.as_mut_ptr(), c.row_stride, c.col_stride) }
}

/// `C ← α·A·B + β·C` on an `m × n` output at `c` with strides `(rs, cs)`.
///
/// # Safety
/// Every element `(i, j)`, `i < m`, `j < n`, of the output lies in one allocation that nothing
/// else reads or writes during the call, and the views `a` and `b` cover `m × k` and `k × n`.
#[allow(clippy::too_many_arguments)] // the BLAS argument list
unsafe fn raw_gemm(
    kernel: Kernel,
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: MatRef,
    b: MatRef,
    beta: f32,
    c: *mut f32,
    rs: usize,
    cs: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if kernel == Kernel::Avx512 && avx512::available() {
        // SAFETY: AVX-512F is present; the rest is this function's contract.
        unsafe {
            avx512::gemm(
                m,
                k,
                n,
                alpha,
                avx512::Operand { ptr: a.data.as_ptr(), row_stride: a.row_stride, col_stride: a.col_stride },
                avx512::Operand { ptr: b.data.as_ptr(), row_stride: b.row_stride, col_stride: b.col_stride },
                beta,
                avx512::Output { ptr: c, row_stride: rs, col_stride: cs },
            );
        }
        return;
    }
    // A stride along a dimension of length 1 is never used to step, but matrixmultiply takes
    // isize; every stride that is used fits, because `(len − 1)·stride` lies inside a slice.
    let s = |len: usize, stride: usize| if len <= 1 { 0 } else { stride as isize };
    // SAFETY: this function's contract; matrixmultiply is built without its `threading`
    // feature, so this runs on the calling thread only.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            alpha,
            a.data.as_ptr(),
            s(m, a.row_stride),
            s(k, a.col_stride),
            b.data.as_ptr(),
            s(k, b.row_stride),
            s(n, b.col_stride),
            beta,
            c,
            s(m, rs),
            s(n, cs),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::ChaCha8Rng;
    use rand::{RngExt, SeedableRng};

    /// How an operand is stored: row-major, column-major (a transposed row-major matrix), or
    /// with gaps between rows and columns.
    #[derive(Clone, Copy, Debug)]
    enum Layout {
        RowMajor,
        ColMajor,
        Padded,
    }

    /// A `rows × cols` buffer of random values in `layout`, with its strides.
    fn matrix(rows: usize, cols: usize, layout: Layout, rng: &mut ChaCha8Rng) -> (Vec<f32>, usize, usize) {
        let (rs, cs, len) = match layout {
            Layout::RowMajor => (cols, 1, rows * cols),
            Layout::ColMajor => (1, rows, rows * cols),
            Layout::Padded => (2 * cols + 3, 2, rows * (2 * cols + 3)),
        };
        let data = (0..len.max(1)).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        (data, rs, cs)
    }

    /// The product by the definition, in f64.
    fn naive(alpha: f32, a: MatRef, b: MatRef, beta: f32, c: &MatMut) -> Vec<f64> {
        let mut out = vec![0.0; a.rows() * b.cols()];
        for i in 0..a.rows() {
            for j in 0..b.cols() {
                let dot: f64 = (0..a.cols()).map(|p| a.at(i, p) as f64 * b.at(p, j) as f64).sum();
                let old =
                    if beta == 0.0 { 0.0 } else { beta as f64 * c.data[i * c.row_stride + j * c.col_stride] as f64 };
                out[i * b.cols() + j] = alpha as f64 * dot + old;
            }
        }
        out
    }

    /// Checks one product against the definition, with `C` first filled with NaN when `β = 0`
    /// (it must be overwritten) and with random values otherwise.
    fn check(kernel: Kernel, (m, k, n): (usize, usize, usize), layouts: [Layout; 3], alpha: f32, beta: f32) {
        let mut rng = ChaCha8Rng::seed_from_u64((m * 1_000_000 + k * 1000 + n) as u64);
        let (a, ars, acs) = matrix(m, k, layouts[0], &mut rng);
        let (b, brs, bcs) = matrix(k, n, layouts[1], &mut rng);
        let (mut c, crs, ccs) = matrix(m, n, layouts[2], &mut rng);
        if beta == 0.0 {
            c.fill(f32::NAN);
        }
        let outside: Vec<(usize, f32)> = c.iter().copied().enumerate().collect();
        let (a, b) = (MatRef::new(&a, m, k, ars, acs), MatRef::new(&b, k, n, brs, bcs));
        let expected = naive(alpha, a, b, beta, &MatMut::new(&mut c.clone(), m, n, crs, ccs));
        gemm_with(kernel, alpha, a, b, beta, MatMut::new(&mut c, m, n, crs, ccs));
        let mut written = vec![false; c.len()];
        for i in 0..m {
            for j in 0..n {
                let at = i * crs + j * ccs;
                written[at] = true;
                let (got, want) = (c[at] as f64, expected[i * n + j]);
                let tolerance = 1e-5 * (1.0 + k as f64).sqrt() * (1.0 + want.abs());
                assert!(
                    (got - want).abs() <= tolerance,
                    "{kernel:?} {m}x{k}x{n} {layouts:?} α={alpha} β={beta}: C[{i},{j}] = {got}, want {want}"
                );
            }
        }
        for (at, old) in outside {
            if !written[at] {
                assert!(c[at].to_bits() == old.to_bits(), "{kernel:?} {m}x{k}x{n} {layouts:?} wrote outside C at {at}");
            }
        }
    }

    const SHAPES: [(usize, usize, usize); 15] = [
        // Narrow outputs: dot products, or the product computed transposed (`avx512::gemm`).
        (96, 130, 2),
        (130, 70, 1),
        (40, 20, 3),
        (1, 1, 1),
        (17, 33, 5),
        (5, 33, 17),
        (8, 16, 48),
        (9, 17, 49),
        (16, 512, 64),
        (33, 300, 97),
        (200, 7, 130),
        (3, 257, 1),
        (1, 600, 40),
        (40, 2, 1100),
        (193, 260, 50),
    ];

    #[test]
    fn every_kernel_matches_the_definition_on_odd_shapes_and_layouts() {
        use Layout::*;
        let layouts = [
            [RowMajor, RowMajor, RowMajor],
            [ColMajor, RowMajor, RowMajor],
            [RowMajor, ColMajor, RowMajor],
            [ColMajor, ColMajor, ColMajor],
            [Padded, Padded, Padded],
            [RowMajor, Padded, ColMajor],
        ];
        for kernel in Kernel::ALL {
            for shape in SHAPES {
                for layout in layouts {
                    for (alpha, beta) in [(1.0, 0.0), (1.0, 1.0), (-0.5, 2.0)] {
                        check(kernel, shape, layout, alpha, beta);
                    }
                }
            }
        }
    }

    #[test]
    fn an_empty_inner_dimension_scales_c() {
        for kernel in Kernel::ALL {
            let mut c = vec![f32::NAN, f32::NAN];
            gemm_with(
                kernel,
                1.0,
                MatRef::row_major(&[], 2, 0),
                MatRef::row_major(&[], 0, 1),
                0.0,
                MatMut::row_major(&mut c, 2, 1),
            );
            assert_eq!(c, [0.0, 0.0], "{kernel:?}");
            let mut c = vec![1.0, 2.0];
            gemm_with(
                kernel,
                1.0,
                MatRef::row_major(&[], 2, 0),
                MatRef::row_major(&[], 0, 1),
                3.0,
                MatMut::row_major(&mut c, 2, 1),
            );
            assert_eq!(c, [3.0, 6.0], "{kernel:?}");
        }
    }

    #[test]
    fn the_parallel_split_computes_the_same_product() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (m, k, n) = (301, 70, 45);
        let (a, _, _) = matrix(m, k, Layout::RowMajor, &mut rng);
        let (b, _, _) = matrix(k, n, Layout::RowMajor, &mut rng);
        let (a, b) = (MatRef::row_major(&a, m, k), MatRef::row_major(&b, k, n));
        let mut serial = vec![0.0; m * n];
        gemm(1.0, a, b, 0.0, MatMut::row_major(&mut serial, m, n));
        let mut parallel = vec![f32::NAN; m * n];
        gemm_parallel(1.0, a, b, 0.0, MatMut::row_major(&mut parallel, m, n), 16);
        for (s, p) in serial.iter().zip(&parallel) {
            assert!((s - p).abs() <= 1e-5 * (1.0 + s.abs()), "{s} vs {p}");
        }
        let interleaved = MatMut::new(&mut parallel, 2, 2, 1, 1);
        assert!(interleaved.split_rows(1).is_err(), "rows sharing elements must not be split");
    }

    /// A product of few rows is split by columns instead, and gives exactly the serial result,
    /// with `β = 1` and `B` read as a transpose (the rollout's `dY·Wᵀ`).
    #[test]
    fn the_column_split_computes_the_same_product() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        for (m, k, n, transposed) in [(16, 250, 512, false), (16, 512, 250, true), (5, 700, 301, false)] {
            let (a, _, _) = matrix(m, k, Layout::RowMajor, &mut rng);
            let (w, _, _) =
                matrix(if transposed { n } else { k }, if transposed { k } else { n }, Layout::RowMajor, &mut rng);
            let a = MatRef::row_major(&a, m, k);
            let b = if transposed { MatRef::row_major(&w, n, k).t() } else { MatRef::row_major(&w, k, n) };
            let (start, _, _) = matrix(m, n, Layout::RowMajor, &mut rng);
            let mut serial = start.clone();
            gemm(0.5, a, b, 1.0, MatMut::row_major(&mut serial, m, n));
            let mut split = start.clone();
            gemm_parallel(0.5, a, b, 1.0, MatMut::row_major(&mut split, m, n), 64);
            assert_eq!(serial, split, "{m}x{k}x{n}");
        }
    }

    #[test]
    #[should_panic(expected = "does not fit")]
    fn a_view_past_its_buffer_is_refused() {
        MatRef::new(&[0.0; 5], 2, 3, 3, 1);
    }

    #[test]
    #[should_panic(expected = "shapes disagree")]
    fn mismatched_shapes_are_refused() {
        let mut c = [0.0; 4];
        gemm(
            1.0,
            MatRef::row_major(&[0.0; 6], 2, 3),
            MatRef::row_major(&[0.0; 4], 2, 2),
            0.0,
            MatMut::row_major(&mut c, 2, 2),
        );
    }
}
