//! Our AVX-512 SGEMM: packed, cache-blocked, with an 8×48 register-blocked FMA microkernel.
//!
//! Why it exists: `matrixmultiply` reaches about 60 GFLOP/s on one core here, a third of what
//! the core can do (its AVX-512 tile of 16 × 16 issues 16 broadcasts and a load per 16 FMAs, so
//! the load ports, not the FMA units, set its pace), and the trainer's update is mostly GEMMs of
//! a few fixed shapes (16–960 rows × 512 × 512), which are what this kernel is tuned for. Call it only
//! through [`super::gemm`], which checks shapes and bounds and falls back to `matrixmultiply` on
//! CPUs without AVX-512F.
//!
//! The layout follows BLIS. `C` is cut into tiles of `MR` rows × `NR` columns; the microkernel
//! keeps one tile in 24 zmm registers and, for each `p` along `k`, loads three 16-lane vectors of
//! `B[p, j..j+48]` and broadcasts the eight values `A[i..i+8, p]`, which is 24 FMAs for 11 loads.
//! Around it, `k` is split into blocks of `KC` and `A` and `B` are copied ("packed") into the
//! order the microkernel reads them, so its loads are sequential whatever the strides of the
//! operands were; a transposed operand therefore costs a repack, not a slower kernel.
//!
//! Two shortcuts serve batches of few rows, where a packed element of `B` would be used too few
//! times to repay its copy: `B` is read in place when its rows are contiguous (the forward
//! `X·W`), and `dY·Wᵀ`, whose `B` would need a full transpose, is computed as dot products of
//! rows ([`dot_tiles`]). Every threshold below was chosen by `examples/gemm_bench.rs`.

use super::aligned::AlignedVec;
use std::arch::x86_64::*;
use std::cell::RefCell;

/// Tile rows: 8 broadcasts of `A` per step along `k`.
const MR: usize = 8;
/// Tile columns, as 16-lane vectors: 8 × 3 = 24 accumulators + 3 vectors of `B` fit in 32 zmm.
const NV: usize = 3;
const NR: usize = 16 * NV;
/// Most steps along `k` per block (blocks are evened out, see [`even_block`]). 128, 192 and 256
/// measured the same; 256 keeps the trainer's depths, 252 and 512, in one or two whole blocks.
const KC: usize = 256;
/// Most rows of `A` packed at once (`MC × KC` floats = 192 KiB, inside the 1.25 MiB L2).
const MC: usize = 192;
/// Columns of `B` packed at once (`KC × NC` floats = 1 MiB); the trainer's `n` is at most 512.
const NC: usize = 1024;
/// Up to this many rows of `C`, `B` is read in place when its rows are contiguous, because each
/// packed element would be used too few times to repay the copy. Measured at `m × 512 × 512`:
/// 16 rows 130 GFLOP/s in place against 80 packed, 128 rows 145 against 128, and 960 rows even.
/// Not for large `m`: rows of `B` 2 KiB apart map to few L1 sets, so a panel read in place does
/// not stay in L1 across many tiles of `A`.
const DIRECT_B_MAX_ROWS: usize = 192;

/// An operand as the kernel reads it: element `(i, j)` at `ptr + i·row_stride + j·col_stride`.
#[derive(Clone, Copy)]
pub(super) struct Operand {
    pub ptr: *const f32,
    pub row_stride: usize,
    pub col_stride: usize,
}

/// The output, laid out like [`Operand`].
#[derive(Clone, Copy)]
pub(super) struct Output {
    pub ptr: *mut f32,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl Operand {
    /// The transpose, as a view of the same elements.
    fn t(self) -> Operand {
        Operand { row_stride: self.col_stride, col_stride: self.row_stride, ..self }
    }

    /// The operand with its origin moved to element `(i, j)`.
    ///
    /// # Safety
    /// `(i, j)` must be an element of the operand.
    unsafe fn at(self, i: usize, j: usize) -> Operand {
        // SAFETY: the caller keeps (i, j) inside the operand.
        Operand { ptr: unsafe { self.ptr.add(i * self.row_stride + j * self.col_stride) }, ..self }
    }
}

impl Output {
    fn t(self) -> Output {
        Output { row_stride: self.col_stride, col_stride: self.row_stride, ..self }
    }

    /// # Safety
    /// `(i, j)` must be an element of the output.
    unsafe fn at(self, i: usize, j: usize) -> Output {
        // SAFETY: the caller keeps (i, j) inside the output.
        Output { ptr: unsafe { self.ptr.add(i * self.row_stride + j * self.col_stride) }, ..self }
    }
}

pub(super) fn available() -> bool {
    is_x86_feature_detected!("avx512f")
}

/// Packing buffers, kept per thread so that a product allocates only the first time a thread
/// meets a larger shape. Aligned, so packed panels start on a cache line and every vector load
/// touches one line.
#[derive(Default)]
struct Scratch {
    a: AlignedVec,
    b: AlignedVec,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

fn grow(buf: &mut AlignedVec, floats: usize) -> *mut f32 {
    if buf.len() < floats {
        buf.resize(floats);
    }
    buf.as_mut_ptr()
}

/// `C ← α·A·B + β·C` for an `m×k` `A` and a `k×n` `B`; with `β = 0`, `C` is not read.
///
/// # Safety
/// AVX-512F must be available, every element `(i, j)` of the three operands must be inside its
/// allocation, and `C` must not overlap `A` or `B`.
#[allow(clippy::too_many_arguments)] // the BLAS argument list
pub(super) unsafe fn gemm(m: usize, k: usize, n: usize, alpha: f32, a: Operand, b: Operand, beta: f32, c: Output) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 || alpha == 0.0 {
        // SAFETY: as for this function.
        unsafe { scale(m, n, beta, c) };
        return;
    }
    if a.col_stride == 1 && b.row_stride == 1 && m <= DOT_MAX_ROWS && k >= DOT_MIN_DEPTH {
        // SAFETY: as for this function.
        unsafe { dot_tiles(m, k, n, alpha, a, b, beta, c) };
        return;
    }
    if n <= NARROW_MAX_COLS && m > NARROW_MAX_COLS {
        // A tile 16·V columns wide would compute mostly padding (a value head has one output).
        if a.col_stride == 1 && k >= DOT_MIN_DEPTH {
            // Rows of A against columns of B, copied to run along k if they do not already.
            let columns: Vec<f32>;
            let b = if b.row_stride == 1 {
                b
            } else {
                // SAFETY: (p, j) is in B for p < k, j < n.
                columns = (0..n).flat_map(|j| (0..k).map(move |p| unsafe { *b.at(p, j).ptr })).collect();
                Operand { ptr: columns.as_ptr(), row_stride: 1, col_stride: k }
            };
            // SAFETY: as for this function; `columns` holds B's k × n values when it is used.
            unsafe { dot_tiles(m, k, n, alpha, a, b, beta, c) };
            return;
        }
        if a.row_stride == 1 {
            // Cᵀ = Bᵀ·Aᵀ: the narrow side becomes the rows, which a tile wastes less of, and Aᵀ
            // (a row-major matrix, for a weight gradient hᵀ·δ) is read in place.
            // SAFETY: as for this function, on the same elements.
            unsafe { gemm(n, k, m, alpha, b.t(), a.t(), beta, c.t()) };
            return;
        }
    }
    SCRATCH.with(|scratch| {
        // A product never calls another one, so the borrow is always free; a fresh buffer keeps
        // this panic-free even if that changes.
        let mut fresh = Scratch::default();
        let mut held = scratch.try_borrow_mut();
        let scratch = match held.as_deref_mut() {
            Ok(s) => s,
            Err(_) => &mut fresh,
        };
        // SAFETY: as for this function.
        unsafe { blocked(m, k, n, alpha, a, b, beta, c, scratch) }
    });
}

/// `C ← β·C`, writing zeros when `β = 0` so that NaN in `C` does not survive.
///
/// # Safety
/// As for [`gemm`].
unsafe fn scale(m: usize, n: usize, beta: f32, c: Output) {
    for i in 0..m {
        for j in 0..n {
            // SAFETY: (i, j) is an element of C.
            unsafe {
                let p = c.at(i, j).ptr;
                *p = if beta == 0.0 { 0.0 } else { beta * *p };
            }
        }
    }
}

/// The blocked loops around the microkernel: `n` in blocks of `NC`, `k` in blocks of `KC` (the
/// first block applies `β`, later ones accumulate), `m` in blocks of `MC`, then tiles.
///
/// # Safety
/// As for [`gemm`], with `m, n, k > 0`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
unsafe fn blocked(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: Operand,
    b: Operand,
    beta: f32,
    c: Output,
    scratch: &mut Scratch,
) {
    let direct_b = b.col_stride == 1 && m <= DIRECT_B_MAX_ROWS;
    // Blocks of even size: 300 steps make two blocks of 150 rather than 256 and a sliver of 44,
    // which would load and store every tile of C again for a few steps.
    let kc_max = even_block(k, KC, 1);
    let mc_max = even_block(m, MC, MR);
    let a_pack = grow(&mut scratch.a, mc_max * kc_max);
    let b_pack =
        if direct_b { std::ptr::null_mut() } else { grow(&mut scratch.b, kc_max * NC.min(n).next_multiple_of(16)) };
    for jc in (0..n).step_by(NC) {
        let nc = NC.min(n - jc);
        for pc in (0..k).step_by(kc_max) {
            let kc = kc_max.min(k - pc);
            let beta = if pc == 0 { beta } else { 1.0 };
            if !direct_b {
                // SAFETY: (pc, jc) is in B, and the pack holds kc × nc rounded up to 16.
                unsafe { pack_b(kc, nc, b.at(pc, jc), b_pack) };
            }
            for ic in (0..m).step_by(mc_max) {
                let mc = mc_max.min(m - ic);
                // SAFETY: (ic, pc) is in A, and the pack holds mc rounded up to MR × kc.
                unsafe { pack_a(mc, kc, a.at(ic, pc), a_pack) };
                // Each panel of B serves every tile of this block of A before the next is read.
                for jr in (0..nc).step_by(NR) {
                    let cols = NR.min(nc - jr);
                    let vectors = cols.div_ceil(16);
                    // Packed panels before this one are NR wide, and this one is `vectors` wide.
                    let (b_panel, b_step) = if direct_b {
                        // SAFETY: (pc, jc + jr) is in B.
                        (unsafe { b.at(pc, jc + jr).ptr }, b.row_stride)
                    } else {
                        // SAFETY: inside the pack.
                        (unsafe { b_pack.add(jr * kc) }.cast_const(), 16 * vectors)
                    };
                    for ir in (0..mc).step_by(MR) {
                        let tile = Tile {
                            kc,
                            // SAFETY: panel ir / MR of the pack.
                            a: unsafe { a_pack.add(ir * kc) },
                            b: b_panel,
                            b_step,
                            // SAFETY: (ic + ir, jc + jr) is in C.
                            c: unsafe { c.at(ic + ir, jc + jr) },
                            rows: MR.min(mc - ir),
                            cols,
                            alpha,
                            beta,
                        };
                        // SAFETY: the tile's pointers cover kc steps of its panels and its part of C.
                        unsafe {
                            tile.prefetch_c(vectors);
                            match vectors {
                                1 => tile.run::<1>(),
                                2 => tile.run::<2>(),
                                _ => tile.run::<NV>(),
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The size of the blocks that cut `total` into as few pieces of at most `max` as possible,
/// evenly, rounded up to a multiple of `unit`.
fn even_block(total: usize, max: usize, unit: usize) -> usize {
    total.div_ceil(total.div_ceil(max)).next_multiple_of(unit)
}

/// One `rows × cols` tile of `C` (at most `MR × 16·V`) over `kc` steps along `k`.
struct Tile {
    kc: usize,
    /// Packed `A`: `MR` values per step, rows past `rows` are zero.
    a: *const f32,
    /// `B`: `16·V` values per step (the last vector masked to `cols`), `b_step` apart.
    b: *const f32,
    b_step: usize,
    c: Output,
    rows: usize,
    cols: usize,
    alpha: f32,
    beta: f32,
}

impl Tile {
    /// Asks for the tile's lines of `C` ahead of the kernel, which touches them only after its
    /// `kc` steps: a large `C` (960 × 512 is 2 MiB) is not in L2, and the kernel would otherwise
    /// wait for it at the end of every tile. Worth 5–10% at 400 and 960 rows (measured in
    /// alternation with and without, on every large shape).
    ///
    /// # Safety
    /// AVX-512F; the tile of `C` is inside its allocation.
    #[target_feature(enable = "avx512f")]
    unsafe fn prefetch_c(&self, vectors: usize) {
        for i in 0..self.rows {
            for v in 0..vectors {
                // SAFETY: the first element of each vector is a column of the tile.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(self.c.at(i, 16 * v).ptr.cast()) };
            }
        }
    }

    /// The microkernel, `V` vectors wide.
    ///
    /// Kept out of line: inlined into the blocked loops, LLVM once chose to write all 24
    /// accumulators to the stack on every step, which cost two thirds of the speed.
    ///
    /// # Safety
    /// AVX-512F; `a` holds `kc·MR` floats, `b` holds `kc` steps of `cols` floats, and the tile of
    /// `C` is inside its allocation.
    #[inline(never)]
    #[target_feature(enable = "avx512f")]
    unsafe fn run<const V: usize>(&self) {
        let tail = self.cols - 16 * (V - 1);
        let tail_mask: __mmask16 = if tail >= 16 { 0xffff } else { (1u16 << tail) - 1 };
        let mut acc = [[_mm512_setzero_ps(); V]; MR];
        let (mut a, mut b) = (self.a, self.b);
        for _ in 0..self.kc {
            let mut bv = [_mm512_setzero_ps(); V];
            for (v, bv) in bv.iter_mut().enumerate() {
                // SAFETY: inside this step's `cols` values of B; masked lanes are not read.
                *bv = unsafe {
                    if v + 1 == V {
                        _mm512_maskz_loadu_ps(tail_mask, b.add(16 * v))
                    } else {
                        _mm512_loadu_ps(b.add(16 * v))
                    }
                };
            }
            for (i, row) in acc.iter_mut().enumerate() {
                // SAFETY: MR packed values per step.
                let ai = _mm512_set1_ps(unsafe { *a.add(i) });
                for (acc, &bv) in row.iter_mut().zip(&bv) {
                    *acc = _mm512_fmadd_ps(ai, bv, *acc);
                }
            }
            // SAFETY: one past the last step at most.
            unsafe {
                a = a.add(MR);
                b = b.add(self.b_step);
            }
        }
        // SAFETY: the tile of C is inside its allocation.
        unsafe { self.store::<V>(acc, tail_mask) };
    }

    /// `C ← α·acc + β·C` on the tile.
    ///
    /// # Safety
    /// As for [`Tile::run`].
    #[target_feature(enable = "avx512f")]
    unsafe fn store<const V: usize>(&self, acc: [[__m512; V]; MR], tail_mask: __mmask16) {
        let alpha = _mm512_set1_ps(self.alpha);
        let beta = _mm512_set1_ps(self.beta);
        if self.c.col_stride == 1 {
            for (i, row) in acc.iter().enumerate().take(self.rows) {
                for (v, &x) in row.iter().enumerate() {
                    let mask = if v + 1 == V { tail_mask } else { 0xffff };
                    // SAFETY: the first lane of every vector is a column of the tile, and masked
                    // lanes are neither read nor written.
                    unsafe {
                        let p = self.c.at(i, 16 * v).ptr;
                        let mut r = _mm512_mul_ps(alpha, x);
                        if self.beta != 0.0 {
                            r = _mm512_fmadd_ps(beta, _mm512_maskz_loadu_ps(mask, p), r);
                        }
                        _mm512_mask_storeu_ps(p, mask, r);
                    }
                }
            }
        } else {
            let mut lanes = [[0.0f32; 16]; V];
            for (i, row) in acc.iter().enumerate().take(self.rows) {
                for (lane, &x) in lanes.iter_mut().zip(row) {
                    // SAFETY: `lane` holds 16 floats.
                    unsafe { _mm512_storeu_ps(lane.as_mut_ptr(), x) };
                }
                for j in 0..self.cols {
                    // SAFETY: (i, j) is in the tile.
                    unsafe {
                        let p = self.c.at(i, j).ptr;
                        let old = if self.beta == 0.0 { 0.0 } else { self.beta * *p };
                        *p = self.alpha * lanes[j / 16][j % 16] + old;
                    }
                }
            }
        }
    }
}

/// Up to this many rows of `C`, a product whose `B` is a transposed row-major matrix goes to
/// [`dot_tiles`] (measured at 16 × 512 × 512: 88 GFLOP/s there against 74 packed; at 128 rows
/// packing wins, 126 against 70).
const DOT_MAX_ROWS: usize = 32;
/// Below this depth the dot-product path's final reductions would cost more than its products.
const DOT_MIN_DEPTH: usize = 64;
/// Products with at most this many columns of `C` (and more rows) take the dot-product path or
/// are computed transposed, where the packed kernel's 16-lane tiles would be mostly padding:
/// measured by `gemm_bench` on one thread, 5 GFLOP/s packed at both 640 × 512 × 2 (a head's
/// forward pass) and 512 × 640 × 2 (its weight gradient), against 24 and 17 this way.
const NARROW_MAX_COLS: usize = 8;

/// `C ← α·A·B + β·C` when `A`'s rows and `B`'s columns are both contiguous along `k` (the input
/// gradient `dY·Wᵀ` of a layer), by dot products in 4 × 4 tiles, reading both operands in place.
///
/// The packed path would have to transpose all of `B` first, which for few rows of `C` costs
/// as much as the product itself. Here each of the 16 accumulators holds 16 partial sums of one
/// element of `C`, and one transposing reduction per tile sums them.
///
/// # Safety
/// As for [`gemm`], with `m, n, k > 0`, `a.col_stride == 1` and `b.row_stride == 1`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
unsafe fn dot_tiles(m: usize, k: usize, n: usize, alpha: f32, a: Operand, b: Operand, beta: f32, c: Output) {
    // B's four columns stay in L1 while all rows of A pass by.
    for j0 in (0..n).step_by(4) {
        let cols = 4.min(n - j0);
        // Missing columns and rows of an edge tile repeat the last one and are not stored.
        let b_cols: [*const f32; 4] = std::array::from_fn(|j| {
            // SAFETY: (0, j0 + min(j, cols − 1)) is in B.
            unsafe { b.at(0, j0 + j.min(cols - 1)).ptr }
        });
        for i0 in (0..m).step_by(4) {
            let rows = 4.min(m - i0);
            let a_rows: [*const f32; 4] = std::array::from_fn(|i| {
                // SAFETY: (i0 + min(i, rows − 1), 0) is in A.
                unsafe { a.at(i0 + i.min(rows - 1), 0).ptr }
            });
            // SAFETY: every pointer starts a run of k floats.
            let sums = unsafe { dot4x4(k, a_rows, b_cols) };
            for (i, row) in sums.iter().enumerate().take(rows) {
                for (j, &sum) in row.iter().enumerate().take(cols) {
                    // SAFETY: (i0 + i, j0 + j) is in C.
                    unsafe {
                        let p = c.at(i0 + i, j0 + j).ptr;
                        let old = if beta == 0.0 { 0.0 } else { beta * *p };
                        *p = alpha * sum + old;
                    }
                }
            }
        }
    }
}

/// The 16 dot products `a_rows[i] · b_cols[j]` over `k` floats each.
///
/// # Safety
/// AVX-512F; each pointer starts `k` readable floats.
#[target_feature(enable = "avx512f")]
unsafe fn dot4x4(k: usize, a_rows: [*const f32; 4], b_cols: [*const f32; 4]) -> [[f32; 4]; 4] {
    // acc[4j + i] accumulates row i times column j, so that the reduction below leaves row i's
    // four sums in 128-bit lane i.
    let mut acc = [_mm512_setzero_ps(); 16];
    let mut p = 0;
    while p < k {
        let mask: __mmask16 = if k - p >= 16 { 0xffff } else { (1u16 << (k - p)) - 1 };
        // SAFETY: lanes p.. p + 16 masked to k; masked lanes are not read.
        let av: [__m512; 4] = std::array::from_fn(|i| unsafe { _mm512_maskz_loadu_ps(mask, a_rows[i].add(p)) });
        for (j, &col) in b_cols.iter().enumerate() {
            // SAFETY: as above.
            let bv = unsafe { _mm512_maskz_loadu_ps(mask, col.add(p)) };
            for (i, &av) in av.iter().enumerate() {
                acc[4 * j + i] = _mm512_fmadd_ps(av, bv, acc[4 * j + i]);
            }
        }
        p += 16;
    }
    // Sum each vector's 16 lanes while interleaving: 16 vectors → 8 holding 8 partial sums of two
    // products each → 4 holding 4 partials of four → 2 → 1 holding all 16 sums.
    let mut w = [_mm512_setzero_ps(); 8];
    for (r, w) in w.iter_mut().enumerate() {
        let (x, y) = (acc[2 * r], acc[2 * r + 1]);
        *w = _mm512_add_ps(_mm512_shuffle_f32x4::<0b01_00_01_00>(x, y), _mm512_shuffle_f32x4::<0b11_10_11_10>(x, y));
    }
    let mut x = [_mm512_setzero_ps(); 4];
    for (r, x) in x.iter_mut().enumerate() {
        let (u, v) = (w[2 * r], w[2 * r + 1]);
        *x = _mm512_add_ps(_mm512_shuffle_f32x4::<0b10_00_10_00>(u, v), _mm512_shuffle_f32x4::<0b11_01_11_01>(u, v));
    }
    let pd = _mm512_castps_pd;
    let mut y = [_mm512_setzero_ps(); 2];
    for (r, y) in y.iter_mut().enumerate() {
        let (u, v) = (pd(x[2 * r]), pd(x[2 * r + 1]));
        *y = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(u, v)), _mm512_castpd_ps(_mm512_unpackhi_pd(u, v)));
    }
    let z = _mm512_add_ps(_mm512_shuffle_ps::<0x88>(y[0], y[1]), _mm512_shuffle_ps::<0xdd>(y[0], y[1]));
    let mut lanes = [0.0f32; 16];
    // SAFETY: 16 floats.
    unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), z) };
    std::array::from_fn(|i| std::array::from_fn(|j| lanes[4 * i + j]))
}

/// Packs an `mc × kc` block of `A` into panels of `MR` rows: panel `q` holds, for each `p`, the
/// values `A[q·MR .. q·MR + MR, p]`, zero past the last row.
///
/// # Safety
/// AVX-512F; the block is inside `A`, and `dst` holds `mc` rounded up to `MR`, times `kc`, floats.
#[target_feature(enable = "avx512f")]
unsafe fn pack_a(mc: usize, kc: usize, a: Operand, dst: *mut f32) {
    let mut i0 = 0;
    // Row-major A: transpose 16 rows × 16 steps at a time, two panels at once.
    if a.col_stride == 1 {
        while i0 + 16 <= mc {
            let mut p0 = 0;
            while p0 + 16 <= kc {
                // SAFETY: rows i0..i0+16 and steps p0..p0+16 are in the block.
                let cols = unsafe { transpose16(a.at(i0, p0).ptr, a.row_stride) };
                for (p, col) in cols.iter().enumerate() {
                    // SAFETY: panels i0 / MR and i0 / MR + 1, step p0 + p.
                    unsafe {
                        let d = dst.add(i0 * kc + (p0 + p) * MR);
                        _mm256_storeu_ps(d, _mm512_castps512_ps256(*col));
                        let upper = _mm512_extractf64x4_pd::<1>(_mm512_castps_pd(*col));
                        _mm256_storeu_ps(d.add(MR * kc), _mm256_castpd_ps(upper));
                    }
                }
                p0 += 16;
            }
            // SAFETY: the remaining steps of these 16 rows.
            unsafe {
                pack_a_scalar(i0, i0 + 16, p0, kc, kc, a, dst);
            }
            i0 += 16;
        }
    }
    // SAFETY: the remaining rows.
    unsafe { pack_a_scalar(i0, mc, 0, kc, kc, a, dst) };
}

/// Packs rows `i_start..i_end` (rounded up to whole panels, zero-filled) and steps `p_start..p_end`
/// of a block whose panels are `kc` steps long, one element at a time.
///
/// # Safety
/// As for [`pack_a`].
#[target_feature(enable = "avx512f")]
unsafe fn pack_a_scalar(
    i_start: usize,
    i_end: usize,
    p_start: usize,
    p_end: usize,
    kc: usize,
    a: Operand,
    dst: *mut f32,
) {
    let mut i0 = i_start;
    while i0 < i_end {
        let rows = MR.min(i_end - i0);
        if a.row_stride == 1 && rows == MR {
            // Column-major A: each step's MR values are contiguous.
            for p in p_start..p_end {
                // SAFETY: (i0..i0+MR, p) are in the block; the panel step is in dst.
                unsafe { _mm256_storeu_ps(dst.add(i0 * kc + p * MR), _mm256_loadu_ps(a.at(i0, p).ptr)) };
            }
        } else {
            for p in p_start..p_end {
                for i in 0..MR {
                    // SAFETY: (i0 + i, p) is in the block when i < rows; the panel step is in dst.
                    unsafe { *dst.add(i0 * kc + p * MR + i) = if i < rows { *a.at(i0 + i, p).ptr } else { 0.0 } };
                }
            }
        }
        i0 += MR;
    }
}

/// Packs a `kc × nc` block of `B` into panels of `NR` columns (the last one rounded up to whole
/// vectors and zero-filled): panel `q` holds, for each `p`, `B[p, q·NR ..]` as `16·vectors` floats.
///
/// # Safety
/// AVX-512F; the block is inside `B`, and `dst` holds `kc` times `nc` rounded up to 16 floats.
#[target_feature(enable = "avx512f")]
unsafe fn pack_b(kc: usize, nc: usize, b: Operand, dst: *mut f32) {
    for j0 in (0..nc).step_by(NR) {
        let cols = NR.min(nc - j0);
        let width = 16 * cols.div_ceil(16);
        // SAFETY: panel j0 / NR starts after j0 / NR full panels.
        let panel = unsafe { dst.add(j0 * kc) };
        if b.col_stride == 1 {
            for p in 0..kc {
                for v in 0..width / 16 {
                    let lanes = (cols - 16 * v).min(16);
                    let mask: __mmask16 = if lanes == 16 { 0xffff } else { (1u16 << lanes) - 1 };
                    // SAFETY: `lanes` columns from 16·v are in the block; the rest is zero-filled.
                    unsafe {
                        let x = _mm512_maskz_loadu_ps(mask, b.at(p, j0 + 16 * v).ptr);
                        _mm512_storeu_ps(panel.add(p * width + 16 * v), x);
                    }
                }
            }
            continue;
        }
        // Column-major B (a transposed row-major matrix): transpose 16 × 16 blocks.
        let mut p0 = 0;
        if b.row_stride == 1 && cols == width {
            while p0 + 16 <= kc {
                for v in 0..width / 16 {
                    // SAFETY: columns j0 + 16v .. +16 and steps p0 .. p0 + 16 are in the block.
                    let rows = unsafe { transpose16(b.at(p0, j0 + 16 * v).ptr, b.col_stride) };
                    for (p, row) in rows.iter().enumerate() {
                        // SAFETY: step p0 + p, vector v of the panel.
                        unsafe { _mm512_storeu_ps(panel.add((p0 + p) * width + 16 * v), *row) };
                    }
                }
                p0 += 16;
            }
        }
        for p in p0..kc {
            for j in 0..width {
                // SAFETY: (p, j0 + j) is in the block when j < cols; the panel step is in dst.
                unsafe { *panel.add(p * width + j) = if j < cols { *b.at(p, j0 + j).ptr } else { 0.0 } };
            }
        }
    }
}

/// Reads 16 contiguous floats from each of 16 rows, row `r` at `src + r·stride`, and returns the
/// 16 columns: `out[p][r] = src[r·stride + p]`.
///
/// # Safety
/// AVX-512F; each row must have 16 readable floats.
#[target_feature(enable = "avx512f")]
unsafe fn transpose16(src: *const f32, stride: usize) -> [__m512; 16] {
    let mut r = [_mm512_setzero_ps(); 16];
    for (i, r) in r.iter_mut().enumerate() {
        // SAFETY: the caller guarantees 16 floats at each row.
        *r = unsafe { _mm512_loadu_ps(src.add(i * stride)) };
    }
    // Interleave pairs of rows (32-bit), then pairs of pairs (64-bit): each 128-bit lane then holds
    // one column of a group of four rows.
    let mut t = [_mm512_setzero_ps(); 16];
    for q in 0..8 {
        t[2 * q] = _mm512_unpacklo_ps(r[2 * q], r[2 * q + 1]);
        t[2 * q + 1] = _mm512_unpackhi_ps(r[2 * q], r[2 * q + 1]);
    }
    let mut u = [_mm512_setzero_ps(); 16];
    for g in 0..4 {
        let (lo0, hi0, lo1, hi1) = (t[4 * g], t[4 * g + 1], t[4 * g + 2], t[4 * g + 3]);
        let pd = _mm512_castps_pd;
        u[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(lo0), pd(lo1)));
        u[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(lo0), pd(lo1)));
        u[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(hi0), pd(hi1)));
        u[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(hi0), pd(hi1)));
    }
    // u[4g + c] holds, in its 128-bit lane l, column c + 4l of rows 4g..4g+4. Gather the lanes:
    // first rows 0-7 and 8-15 separately, then both halves.
    let mut v = [_mm512_setzero_ps(); 16];
    for c in 0..4 {
        v[c] = _mm512_shuffle_f32x4::<0x88>(u[c], u[4 + c]);
        v[4 + c] = _mm512_shuffle_f32x4::<0xdd>(u[c], u[4 + c]);
        v[8 + c] = _mm512_shuffle_f32x4::<0x88>(u[8 + c], u[12 + c]);
        v[12 + c] = _mm512_shuffle_f32x4::<0xdd>(u[8 + c], u[12 + c]);
    }
    let mut out = [_mm512_setzero_ps(); 16];
    for c in 0..8 {
        out[c] = _mm512_shuffle_f32x4::<0x88>(v[c], v[8 + c]);
        out[8 + c] = _mm512_shuffle_f32x4::<0xdd>(v[c], v[8 + c]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose16_transposes() {
        if !available() {
            return;
        }
        let m: Vec<f32> = (0..256).map(|x| x as f32).collect();
        // SAFETY: AVX-512F is available and every row has 16 floats.
        let cols = unsafe { transpose16(m.as_ptr(), 16) };
        for (p, col) in cols.iter().enumerate() {
            let mut lanes = [0.0f32; 16];
            // SAFETY: 16 floats.
            unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), *col) };
            for (r, &x) in lanes.iter().enumerate() {
                assert_eq!(x, m[16 * r + p], "column {p}, row {r}");
            }
        }
    }
}
