//! bf16 matrix products on host memory: bf16 operands, f32 accumulation.
//!
//! What PyTorch's CPU autocast computes for a linear layer, and what
//! [`Precision::Bf16`](crate::Precision::Bf16) means everywhere: both operands rounded to
//! bf16 (round to nearest even), their products summed in f32, the result rounded to bf16
//! once more and handed back as f32.
//!
//! Three kernels compute it, chosen once per process ([`kernel`]):
//! - [`Bf16Kernel::Amx`]: Intel AMX tiles (`tdpbf16ps`, a 16x16 f32 block += 16x32 by 32x16
//!   bf16 per instruction, about 1.8 TFLOP/s a core on a Sapphire Rapids core against
//!   about 0.19 for f32 FMA).
//! - [`Bf16Kernel::Avx512Bf16`]: `vdpbf16ps` (16 f32 lanes += 16 bf16 pairs · 16 bf16
//!   pairs per instruction) on CPUs with `avx512_bf16` but no AMX (AMD Zen 4 and later,
//!   Intel Cooper Lake), reading the same packed operands as the AMX kernel.
//! - [`Bf16Kernel::Emulated`]: the rounded operands multiplied by the f32 GEMM. Products of
//!   two bf16 values are exact in f32, so this is the same sum at f32 GEMM speed; every CPU
//!   has it.
//!
//! Operands are converted into 1 KiB tiles of bf16 pairs; a right-hand side used by many
//! products is converted once ([`pack_b`], [`PackedB`], [`pack_b_reused`] for weights that
//! stay frozen, [`pack_b_trained`] for weights that train).
//! `SWEELOL_BF16_KERNEL=emulated` (or `avx512`) forces a kernel: comparisons, and CPUs
//! where a faster one misbehaves.

use std::sync::{Arc, Mutex, OnceLock};

use rayon::prelude::*;

use crate::kernels::gemm::gemm_f32;

/// Which code computes bf16 products on this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bf16Kernel {
    /// AMX tiles (`amx_bf16`, granted by the kernel).
    Amx,
    /// AVX-512 `vdpbf16ps` (`avx512_bf16`).
    Avx512Bf16,
    /// Rounded operands through the f32 GEMM.
    Emulated,
}

impl Bf16Kernel {
    pub fn name(self) -> &'static str {
        match self {
            Bf16Kernel::Amx => "amx",
            Bf16Kernel::Avx512Bf16 => "avx512-bf16",
            Bf16Kernel::Emulated => "emulated",
        }
    }

    /// Whether the CPU multiplies bf16 itself (faster than f32), rather than through f32.
    pub fn is_native(self) -> bool {
        self != Bf16Kernel::Emulated
    }
}

/// What this CPU offers for bf16 products (each checked by a self-test before it counts).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bf16Hardware {
    pub amx: bool,
    pub avx512_bf16: bool,
}

/// The kernel for a CPU with `hw`, unless `forced` names one: `"emulated"` always wins,
/// `"avx512"` where the CPU has `avx512_bf16`, and otherwise the fastest the CPU has.
pub fn select(hw: Bf16Hardware, forced: Option<&str>) -> Bf16Kernel {
    match forced.map(str::trim) {
        Some("emulated") => Bf16Kernel::Emulated,
        Some("avx512") if hw.avx512_bf16 => Bf16Kernel::Avx512Bf16,
        _ if hw.amx => Bf16Kernel::Amx,
        _ if hw.avx512_bf16 => Bf16Kernel::Avx512Bf16,
        _ => Bf16Kernel::Emulated,
    }
}

/// The kernel this process uses (detected once: CPUID, the OS's permission to use AMX
/// tile data, self-tests, then `SWEELOL_BF16_KERNEL`).
pub fn kernel() -> Bf16Kernel {
    static KERNEL: OnceLock<Bf16Kernel> = OnceLock::new();
    *KERNEL.get_or_init(|| select(x86::hardware(), std::env::var("SWEELOL_BF16_KERNEL").ok().as_deref()))
}

/// `x` rounded to the nearest bf16 (ties to even), as f32. NaN stays NaN.
#[inline(always)]
pub fn round_bf16(x: f32) -> f32 {
    f32::from_bits((bf16_bits(x) as u32) << 16)
}

/// The bits of `x` rounded to the nearest bf16 (ties to even); NaN becomes a quiet NaN.
#[inline(always)]
pub fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) as u16) | 0x0040;
    }
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// A matrix in a slice: `rows x cols`, element `(i, j)` at `i * rs + j * cs`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub cs: isize,
    pub rs: isize,
}

impl<'a> MatRef<'a> {
    /// A row-major `rows x cols` matrix.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        MatRef { data, rows, cols, cs: 1, rs: cols as isize }
    }

    /// The transpose, without a copy.
    pub fn t(self) -> Self {
        MatRef { data: self.data, rows: self.cols, cols: self.rows, cs: self.rs, rs: self.cs }
    }

    #[inline(always)]
    fn at(&self, i: usize, j: usize) -> f32 {
        self.data[(i as isize * self.rs + j as isize * self.cs) as usize]
    }

    fn check(&self, what: &str) {
        if self.rows > 0 && self.cols > 0 {
            let last = (self.rows as isize - 1) * self.rs + (self.cols as isize - 1) * self.cs;
            assert!(self.rs >= 0 && self.cs >= 0 && last < self.data.len() as isize, "gemm_bf16: {what} too small");
        }
    }

    /// The matrix rounded to bf16, row-major (the emulated kernel's operand).
    fn rounded(&self) -> Vec<f32> {
        let mut out = vec![0.0f32; self.rows * self.cols];
        out.par_chunks_mut(self.cols.max(1)).enumerate().for_each(|(i, row)| {
            if self.cs == 1 {
                let start = (i as isize * self.rs) as usize;
                for (o, &x) in row.iter_mut().zip(&self.data[start..start + self.cols]) {
                    *o = round_bf16(x);
                }
            } else {
                for (j, o) in row.iter_mut().enumerate() {
                    *o = round_bf16(self.at(i, j));
                }
            }
        });
        out
    }
}

/// The right-hand operand `[k, n]` converted once for [`gemm_bf16`], so that a weight
/// several products read is rounded and laid out once.
#[derive(Debug)]
pub struct PackedB {
    k: usize,
    n: usize,
    layout: Packed,
}

#[derive(Debug)]
enum Packed {
    /// Tiles of bf16 pairs for the AMX and AVX512-BF16 kernels: see [`x86::pack_b`].
    Tiles(x86::Tiles),
    /// Row-major `[k, n]`, rounded to bf16 values.
    Rounded(Vec<f32>),
}

impl PackedB {
    /// Bytes it holds.
    fn bytes(&self) -> usize {
        match &self.layout {
            Packed::Tiles(t) => t.bytes(),
            Packed::Rounded(v) => v.len() * 4,
        }
    }

    pub fn k(&self) -> usize {
        self.k
    }

    pub fn n(&self) -> usize {
        self.n
    }
}

/// Packs `b` (`[k, n]`) for the process's kernel.
pub fn pack_b(b: MatRef) -> PackedB {
    pack_b_for(kernel(), b)
}

fn pack_b_for(kernel: Bf16Kernel, b: MatRef) -> PackedB {
    b.check("rhs");
    let layout = match kernel {
        Bf16Kernel::Amx | Bf16Kernel::Avx512Bf16 => Packed::Tiles(x86::pack_b(&b)),
        Bf16Kernel::Emulated => Packed::Rounded(b.rounded()),
    };
    PackedB { k: b.rows, n: b.cols, layout }
}

/// [`pack_b`] of a weight that does not change while it is used (a frozen base weight of
/// LoRA or prompt tuning, a frozen embedding table, any weight during evaluation): packed
/// once, then reused while it stays among the most recently used 1.5 GiB of packed weights. A weight is known by its
/// address, shape, strides and the bits of 1024 of its values, so one changed in place or
/// freed and replaced is packed again. [`forget_packed`] empties the cache.
pub fn pack_b_reused(b: MatRef) -> Arc<PackedB> {
    let key = PackKey::of(&b);
    let mut cache = PACKED.lock().unwrap_or_else(|e| e.into_inner());
    cache.clock += 1;
    let now = cache.clock;
    if let Some(entry) = cache.entries.iter_mut().find(|e| e.key == key) {
        entry.used = now;
        return entry.packed.clone();
    }
    let packed = Arc::new(pack_b(b));
    let bytes = packed.bytes();
    while cache.bytes + bytes > PACKED_BYTES && !cache.entries.is_empty() {
        let oldest = (0..cache.entries.len()).min_by_key(|&i| cache.entries[i].used).expect("not empty");
        let gone = cache.entries.swap_remove(oldest);
        cache.bytes -= gone.packed.bytes();
    }
    cache.bytes += bytes;
    cache.entries.push(Kept { key, packed: packed.clone(), created: now, used: now });
    packed
}

/// Empties [`pack_b_reused`]'s cache (a run's end).
pub fn forget_packed() {
    let mut cache = PACKED.lock().unwrap_or_else(|e| e.into_inner());
    cache.entries.clear();
    cache.bytes = 0;
}

/// While this guard lives, weights packed by [`pack_b_reused`] for the first time are
/// dropped from its cache when the guard goes; weights packed before stay. For a forward
/// pass over weights that change right after it (a held-out loss between optimizer steps):
/// their packings would never be used again, yet stay cached until evicted, 0.5 GB per
/// held-out loss of Gemma-3-270m (its table and decoder weights), up to the cache's
/// [`PACKED_BYTES`] on top of a training step's peak.
pub struct PackedWhileFrozen {
    since: u64,
}

/// Starts a [`PackedWhileFrozen`] scope.
pub fn packed_while_frozen() -> PackedWhileFrozen {
    PackedWhileFrozen { since: PACKED.lock().unwrap_or_else(|e| e.into_inner()).clock }
}

impl Drop for PackedWhileFrozen {
    fn drop(&mut self) {
        let mut cache = PACKED.lock().unwrap_or_else(|e| e.into_inner());
        let since = self.since;
        cache.entries.retain(|e| e.created <= since);
        cache.bytes = cache.entries.iter().map(|e| e.packed.bytes()).sum();
    }
}

/// [`pack_b`] of a weight that trains: packed once per optimizer step while a
/// [`OneStep`] scope is open (the trainer opens one around a step's micro-batches, and the
/// weights change only after them), afresh on every call otherwise. A step whose
/// micro-batch trains in parts then packs the 262144 x 640 table once, not once per part.
/// Within a step a weight is known as [`pack_b_reused`] knows it.
pub fn pack_b_trained(b: MatRef) -> Arc<PackedB> {
    let key = PackKey::of(&b);
    if let Some(packed) = STEP_PACKED.with_borrow(|step| step.as_ref()?.iter().find(|e| e.0 == key).map(|e| e.1.clone())) {
        return packed;
    }
    let packed = Arc::new(pack_b(b));
    STEP_PACKED.with_borrow_mut(|step| {
        if let Some(kept) = step {
            kept.push((key, packed.clone()));
        }
    });
    packed
}

/// Packed weights by key.
type Packings = Vec<(PackKey, Arc<PackedB>)>;

thread_local! {
    /// The packings [`pack_b_trained`] shares within this thread's optimizer step; `None`
    /// outside one. Per thread, so that runs training side by side (tests) never share one.
    static STEP_PACKED: std::cell::RefCell<Option<Packings>> = const { std::cell::RefCell::new(None) };
}

/// While this guard lives, [`pack_b_trained`] on this thread packs each weight once; its
/// packings go with it. Open it only where no trained weight changes (before the optimizer
/// step).
pub struct OneStep {
    _scope: (),
}

/// Starts a [`OneStep`] scope on this thread (one at a time).
pub fn packed_for_one_step() -> OneStep {
    STEP_PACKED.with_borrow_mut(|step| {
        assert!(step.is_none(), "one optimizer step's packing scope at a time");
        *step = Some(Vec::new());
    });
    OneStep { _scope: () }
}

impl Drop for OneStep {
    fn drop(&mut self) {
        STEP_PACKED.with_borrow_mut(|step| step.take());
    }
}

/// Whether [`pack_b_reused`] holds a packing of exactly `b` now.
#[cfg(test)]
fn is_packed(b: MatRef) -> bool {
    let key = PackKey::of(&b);
    PACKED.lock().unwrap_or_else(|e| e.into_inner()).entries.iter().any(|e| e.key == key)
}

/// Packed weights kept at most (bytes): a frozen 262144 x 640 table in both layouts (671
/// MB) and Gemma-3-270m's frozen decoder weights as `w` and `wᵀ` (about 400 MB) fit.
const PACKED_BYTES: usize = 3 << 29;

static PACKED: Mutex<PackCache> = Mutex::new(PackCache { entries: Vec::new(), bytes: 0, clock: 0 });

struct PackCache {
    entries: Vec<Kept>,
    bytes: usize,
    clock: u64,
}

/// A packed weight and when (by the cache's clock) it was packed and last used.
struct Kept {
    key: PackKey,
    packed: Arc<PackedB>,
    created: u64,
    used: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PackKey {
    ptr: usize,
    shape: (usize, usize),
    strides: (isize, isize),
    sample: u64,
}

impl PackKey {
    fn of(b: &MatRef) -> Self {
        let n = b.rows * b.cols;
        let step = (n / 1024).max(1);
        let sample = (0..n)
            .step_by(step)
            .map(|i| b.at(i / b.cols, i % b.cols).to_bits() as u64)
            .fold(0xcbf2_9ce4_8422_2325u64, |h, x| (h ^ x).wrapping_mul(0x100_0000_01b3));
        PackKey { ptr: b.data.as_ptr() as usize, shape: (b.rows, b.cols), strides: (b.rs, b.cs), sample }
    }
}

/// Where a product goes: `dst[i * rs + j * cs]`, overwritten or, with `accumulate`,
/// added to.
pub struct Dst<'a> {
    pub data: &'a mut [f32],
    pub cs: isize,
    pub rs: isize,
    pub accumulate: bool,
}

impl<'a> Dst<'a> {
    /// A row-major `[m, n]` output, overwritten.
    pub fn row_major(data: &'a mut [f32], n: usize) -> Self {
        Dst { data, cs: 1, rs: n as isize, accumulate: false }
    }
}

/// `dst (+)= round_bf16(bf16(a) · bf16(b))` with f32 sums: `a` is `[m, k]`, `b` `[k, n]`.
pub fn gemm_bf16(dst: Dst, a: MatRef, b: MatRef) {
    let kernel = kernel();
    let packed = pack_b_for(kernel, b);
    gemm_bf16_packed_with(kernel, dst, a, &packed);
}

/// [`gemm_bf16`] with a right-hand side packed beforehand.
pub fn gemm_bf16_packed(dst: Dst, a: MatRef, b: &PackedB) {
    gemm_bf16_packed_with(kernel(), dst, a, b)
}

fn gemm_bf16_packed_with(kernel: Bf16Kernel, dst: Dst, a: MatRef, b: &PackedB) {
    let (m, k, n) = (a.rows, a.cols, b.n);
    assert_eq!(k, b.k, "gemm_bf16: [{m}, {k}] · [{}, {n}]", b.k);
    a.check("lhs");
    if m == 0 || n == 0 {
        return;
    }
    let last = (m as isize - 1) * dst.rs + (n as isize - 1) * dst.cs;
    assert!(dst.rs >= 0 && dst.cs >= 0 && last < dst.data.len() as isize, "gemm_bf16: dst too small");
    match (&b.layout, kernel) {
        (Packed::Tiles(tiles), Bf16Kernel::Amx) => x86::gemm(x86::Engine::Amx, dst, &a, tiles, (m, n, k)),
        (Packed::Tiles(tiles), Bf16Kernel::Avx512Bf16) => x86::gemm(x86::Engine::Avx512, dst, &a, tiles, (m, n, k)),
        (Packed::Rounded(rb), _) => emulated(dst, &a, rb, (m, n, k)),
        (Packed::Tiles(_), Bf16Kernel::Emulated) => unreachable!("tiles packed for the emulated kernel"),
    }
}

/// The emulated kernel: rounded operands through the f32 GEMM, the result rounded.
fn emulated(dst: Dst, a: &MatRef, rb: &[f32], (m, n, k): (usize, usize, usize)) {
    let ra = a.rounded();
    let mut c = vec![0.0f32; m * n];
    gemm_f32((m, n, k), &mut c, (1, n as isize), false, &ra, (1, k as isize), rb, (1, n as isize));
    let Dst { data, cs, rs, accumulate } = dst;
    for i in 0..m {
        for j in 0..n {
            let o = &mut data[(i as isize * rs + j as isize * cs) as usize];
            let v = round_bf16(c[i * n + j]);
            *o = if accumulate { *o + v } else { v };
        }
    }
}

/// Elsewhere than x86-64 there are neither AMX tiles nor `vdpbf16ps`: [`kernel`] never
/// picks them.
#[cfg(not(target_arch = "x86_64"))]
mod x86 {
    use super::{Bf16Hardware, Dst, MatRef};

    #[derive(Debug)]
    pub struct Tiles;

    impl Tiles {
        pub fn bytes(&self) -> usize {
            0
        }
    }

    pub enum Engine {
        Amx,
        Avx512,
    }

    pub fn hardware() -> Bf16Hardware {
        Bf16Hardware::default()
    }

    pub fn pack_b(_: &MatRef) -> Tiles {
        unreachable!("bf16 tiles are x86-64 only; their kernels are never selected here")
    }

    pub fn gemm(_: Engine, _: Dst, _: &MatRef, _: &Tiles, _: (usize, usize, usize)) {
        unreachable!("bf16 tiles are x86-64 only; their kernels are never selected here")
    }
}

/// The x86 kernels: AMX tiles (1 KiB tiles of 16 rows x 64 bytes, `tdpbf16ps`) and AVX-512
/// `vdpbf16ps`, reading the same packed operands.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use std::arch::x86_64::{__m512bh, _mm512_dpbf16_ps, _mm512_loadu_si512, _mm512_set1_epi32, _mm512_setzero_ps, _mm512_storeu_ps};

    /// Rows of a tile, bf16 values in one tile row (one row of A, or 16 column pairs of B).
    const TM: usize = 16;
    const TK: usize = 32;
    /// u16 elements per tile.
    const TILE: usize = TM * TK;

    /// Which instructions multiply the tiles.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Engine {
        Amx,
        Avx512,
    }

    /// Tiles aligned to 64 bytes (one cache line per tile row).
    #[derive(Clone, Copy)]
    #[repr(C, align(64))]
    struct Line([u16; 32]);

    /// A matrix in tiles: `[outer][k_tiles][16][32]` bf16, padded with zeros to whole tiles
    /// and to an even number of outer tiles (the kernels work on 2x2 blocks of tiles).
    #[derive(Debug)]
    pub struct Tiles {
        lines: Vec<Line>,
        pub outer: usize,
        pub k_tiles: usize,
    }

    impl Line {
        /// The line as 16 bf16 pairs (a `u32` each, the first of the pair in the low half,
        /// as x86 stores it).
        #[inline(always)]
        fn pairs_mut(&mut self) -> &mut [u32; 16] {
            // SAFETY: 32 u16 are 64 bytes, aligned to 64; any bits are a valid u32.
            unsafe { &mut *(self.0.as_mut_ptr() as *mut [u32; 16]) }
        }
    }

    /// `lines` set to zero, as initialised lines.
    fn zeroed(lines: &mut [std::mem::MaybeUninit<Line>]) -> &mut [Line] {
        for line in lines.iter_mut() {
            line.write(Line([0; 32]));
        }
        // SAFETY: every element was just written; `MaybeUninit<Line>` has `Line`'s layout.
        unsafe { &mut *(lines as *mut [std::mem::MaybeUninit<Line>] as *mut [Line]) }
    }

    impl std::fmt::Debug for Line {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Line")
        }
    }

    impl Tiles {
        /// `outer` lines of the matrix (its rows for A, its columns for B) over `depth`,
        /// each group of 16 zeroed (the padding) and filled by `fill(group, its lines)` in
        /// parallel.
        ///
        /// Each group is zeroed by the thread that fills it: `vec![line; n]` wrote the whole
        /// buffer on the calling thread first, and for a fresh mapping (the trained table's
        /// packings, 335 MB each, a logit gradient's) that thread alone took every page
        /// fault while the others waited: a sixth of the main thread's time in a
        /// Full-Finetune step at 512 tokens (`docs/perf.md`).
        ///
        /// SAFETY (for `fill`): the engines run only where AVX-512 F, BW and VL are
        /// (`hardware`), and the fill functions are compiled for them.
        fn packed(outer: usize, depth: usize, fill: impl Fn(usize, &mut [Line]) + Sync) -> Self {
            let (outer, k_tiles) = (outer.div_ceil(2 * TM) * 2, depth.div_ceil(TK));
            let mut lines: Vec<std::mem::MaybeUninit<Line>> = Vec::with_capacity(outer * k_tiles * TM);
            // SAFETY: `MaybeUninit` needs no initialisation, and the capacity is there.
            unsafe { lines.set_len(outer * k_tiles * TM) };
            lines.par_chunks_mut((k_tiles * TM).max(1)).enumerate().for_each(|(group, lines)| {
                let lines = zeroed(lines);
                fill(group, lines)
            });
            let mut lines = std::mem::ManuallyDrop::new(lines);
            let (ptr, len, capacity) = (lines.as_mut_ptr().cast::<Line>(), lines.len(), lines.capacity());
            // SAFETY: every line was written by `zeroed` above, and `MaybeUninit<Line>` has
            // `Line`'s size and alignment, so the allocation is a `Vec<Line>`'s.
            let lines = unsafe { Vec::from_raw_parts(ptr, len, capacity) };
            Tiles { lines, outer, k_tiles }
        }

        pub fn bytes(&self) -> usize {
            self.lines.len() * std::mem::size_of::<Line>()
        }

        fn ptr(&self, o: usize, kt: usize) -> *const u16 {
            self.lines[(o * self.k_tiles + kt) * TM].0.as_ptr()
        }
    }

    /// What this CPU and OS let this process use, each engine checked by a self-test.
    pub fn hardware() -> Bf16Hardware {
        let avx512 = std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512bf16");
        Bf16Hardware {
            amx: avx512 && amx_granted() && self_test(Engine::Amx),
            avx512_bf16: avx512 && self_test(Engine::Avx512),
        }
    }

    /// Whether the CPU has AMX-BF16 and the kernel lets this process use tile data.
    fn amx_granted() -> bool {
        #[cfg(target_os = "linux")]
        {
            // CPUID.(EAX=7, ECX=0):EDX bit 22 AMX-BF16, bit 24 AMX-TILE.
            let leaf = std::arch::x86_64::__cpuid_count(7, 0);
            if leaf.edx & (1 << 22) == 0 || leaf.edx & (1 << 24) == 0 {
                return false;
            }
            // ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA: Linux grants tile state to a process
            // only on request (all its threads share the grant).
            const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
            const XFEATURE_XTILEDATA: libc::c_long = 18;
            unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 }
        }
        #[cfg(not(target_os = "linux"))]
        {
            false
        }
    }

    /// One small product against the emulated kernel, so a CPU whose bf16 units misbehave
    /// is never used.
    fn self_test(engine: Engine) -> bool {
        let (m, k, n) = (33, 70, 35);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 13) as f32 - 6.0) / 4.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 5 % 11) as f32 - 5.0) / 8.0).collect();
        let (a, b) = (MatRef::row_major(&a, m, k), MatRef::row_major(&b, k, n));
        let mut want = vec![0.0f32; m * n];
        emulated(Dst::row_major(&mut want, n), &a, &b.rounded(), (m, n, k));
        let mut got = vec![0.0f32; m * n];
        gemm(engine, Dst::row_major(&mut got, n), &a, &pack_b(&b), (m, n, k));
        // Small integers over powers of two: every sum is exact either way.
        got == want
    }

    /// `a` (`[m, k]`) as tiles of 16 rows x 32 depths.
    pub fn pack_a(a: &MatRef) -> Tiles {
        // SAFETY: see `Tiles::packed`.
        Tiles::packed(a.rows, a.cols, |mt, lines| unsafe { pack_a_tile(a, mt, lines) })
    }

    /// Rows `16·mt ..` of `a` into their tiles (`lines`: `k_tiles` tiles of 16 lines).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn pack_a_tile(a: &MatRef, mt: usize, lines: &mut [Line]) {
        let (m, k) = (a.rows, a.cols);
        let i0 = mt * TM;
        if i0 >= m {
            return;
        }
        let rows = TM.min(m - i0);
        if a.rs == 1 && a.cs != 1 {
            // Columns of `a` are contiguous (a transposed row-major matrix, e.g. `xᵀ` for a
            // weight's gradient): depth pair `kp` of every row is two runs of the source
            // interleaved, then a 16 x 16 transpose of the pairs puts each row in its line.
            let run = |p: usize| -> &[f32] {
                let start = (p as isize * a.cs) as usize + i0;
                &a.data[start..start + rows]
            };
            for (kt, tile) in lines.chunks_exact_mut(TM).enumerate() {
                let mut pairs = [[0u32; 16]; 16];
                for (kp, pair) in pairs.iter_mut().enumerate() {
                    let p = kt * TK + 2 * kp;
                    if p >= k {
                        break;
                    }
                    let second = (p + 1 < k).then(|| run(p + 1));
                    interleave(run(p), second, pair);
                }
                transpose_into(&pairs, tile);
            }
            return;
        }
        for r in 0..rows {
            let i = i0 + r;
            for kt in 0..lines.len() / TM {
                let line = &mut lines[kt * TM + r].0;
                let p0 = kt * TK;
                let len = TK.min(k - p0);
                if a.cs == 1 {
                    let start = (i as isize * a.rs) as usize + p0;
                    for (o, &x) in line.iter_mut().zip(&a.data[start..start + len]) {
                        *o = bf16_bits(x);
                    }
                } else {
                    for (c, o) in line.iter_mut().enumerate().take(len) {
                        *o = bf16_bits(a.at(i, p0 + c));
                    }
                }
            }
        }
    }

    /// `b` (`[k, n]`) as tiles of 16 depth pairs x 16 columns, each column's pair adjacent
    /// (`[k/2][n][2]`, the layout `tdpbf16ps` reads).
    pub fn pack_b(b: &MatRef) -> Tiles {
        // SAFETY: see `Tiles::packed`.
        Tiles::packed(b.cols, b.rows, |nt, lines| unsafe { pack_b_tile(b, nt, lines) })
    }

    /// Columns `16·nt ..` of `b` into their tiles.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn pack_b_tile(b: &MatRef, nt: usize, lines: &mut [Line]) {
        let (k, n) = (b.rows, b.cols);
        let j0 = nt * TM;
        if j0 >= n {
            return;
        }
        let cols = TM.min(n - j0);
        for (kt, tile) in lines.chunks_exact_mut(TM).enumerate() {
            let p0 = kt * TK;
            if b.rs == 1 && b.cs != 1 {
                // Columns of `b` are contiguous (a transposed weight, `wᵀ`): each column's 32
                // depths become its 16 pairs, then a 16 x 16 transpose lays them out by pair.
                let mut pairs = [[0u32; 16]; 16];
                for (c, pair) in pairs.iter_mut().enumerate().take(cols) {
                    let start = ((j0 + c) as isize * b.cs) as usize + p0;
                    column_pairs(&b.data[start..start + TK.min(k - p0)], pair);
                }
                transpose_into(&pairs, tile);
            } else if b.cs == 1 {
                // Row-major: line `kp` interleaves rows `2kp` and `2kp + 1`.
                for (kp, line) in tile.iter_mut().enumerate() {
                    let p = p0 + 2 * kp;
                    if p >= k {
                        break;
                    }
                    let run = |p: usize| {
                        let start = (p as isize * b.rs) as usize + j0;
                        &b.data[start..start + cols]
                    };
                    let second = (p + 1 < k).then(|| run(p + 1));
                    interleave(run(p), second, line.pairs_mut());
                }
            } else {
                for (kp, line) in tile.iter_mut().enumerate() {
                    for q in 0..2 {
                        let p = p0 + 2 * kp + q;
                        if p >= k {
                            break;
                        }
                        for c in 0..cols {
                            line.0[2 * c + q] = bf16_bits(b.at(p, j0 + c));
                        }
                    }
                }
            }
        }
    }

    /// `out[c] = bf16(first[c]) | bf16(second[c]) << 16` (a zero where `second` is absent,
    /// past the depth).
    #[inline(always)]
    fn interleave(first: &[f32], second: Option<&[f32]>, out: &mut [u32; 16]) {
        match second {
            Some(second) => {
                for ((o, &x), &y) in out.iter_mut().zip(first).zip(second) {
                    *o = bf16_bits(x) as u32 | (bf16_bits(y) as u32) << 16;
                }
            }
            None => {
                for (o, &x) in out.iter_mut().zip(first) {
                    *o = bf16_bits(x) as u32;
                }
            }
        }
    }

    /// Up to 32 consecutive depths of one column as 16 pairs (`out[kp]` = depths `2kp`,
    /// `2kp + 1`).
    #[inline(always)]
    fn column_pairs(run: &[f32], out: &mut [u32; 16]) {
        if run.len() == TK {
            for (kp, o) in out.iter_mut().enumerate() {
                *o = bf16_bits(run[2 * kp]) as u32 | (bf16_bits(run[2 * kp + 1]) as u32) << 16;
            }
        } else {
            for (p, &x) in run.iter().enumerate() {
                out[p / 2] |= (bf16_bits(x) as u32) << (16 * (p % 2));
            }
        }
    }

    /// `tile[i].pairs[j] = pairs[j][i]`.
    #[inline(always)]
    fn transpose_into(pairs: &[[u32; 16]; 16], tile: &mut [Line]) {
        for (i, line) in tile.iter_mut().enumerate() {
            let out = line.pairs_mut();
            for (j, o) in out.iter_mut().enumerate() {
                *o = pairs[j][i];
            }
        }
    }

    /// The tile configuration: palette 1, all eight tiles 16 rows x 64 bytes.
    #[repr(C, align(64))]
    struct Config {
        palette: u8,
        start_row: u8,
        reserved: [u8; 14],
        colsb: [u16; 16],
        rows: [u8; 16],
    }

    const CONFIG: Config = Config {
        palette: 1,
        start_row: 0,
        reserved: [0; 14],
        colsb: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
        rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
    };

    /// A raw pointer that tasks writing disjoint blocks share.
    #[derive(Clone, Copy)]
    struct SharedDst {
        ptr: *mut f32,
        cs: isize,
        rs: isize,
        accumulate: bool,
    }
    unsafe impl Send for SharedDst {}
    unsafe impl Sync for SharedDst {}

    /// Where a task's finished 32 x 32 blocks go: rounded into the destination, or (the
    /// product's depth split into slabs) added unrounded to an f32 buffer of whole blocks,
    /// `ld` wide, rounded into the destination once every slab is in.
    #[derive(Clone, Copy)]
    enum Sink {
        Out(SharedDst, (usize, usize)),
        Partial { ptr: *mut f32, ld: usize },
    }
    unsafe impl Send for Sink {}
    unsafe impl Sync for Sink {}

    impl Sink {
        /// SAFETY: `(i0, j0)` is a block of the product, and no other thread writes it now.
        #[inline(always)]
        unsafe fn put(self, acc: &[f32; 1024], (i0, j0): (usize, usize)) {
            match self {
                Sink::Out(out, mn) => unsafe { store(acc, out, (i0, j0), mn) },
                Sink::Partial { ptr, ld } => {
                    for (r, src) in acc.chunks_exact(32).enumerate() {
                        // SAFETY: the buffer holds whole blocks (caller).
                        let d = unsafe { std::slice::from_raw_parts_mut(ptr.add((i0 + r) * ld + j0), 32) };
                        d.iter_mut().zip(src).for_each(|(d, &v)| *d += v);
                    }
                }
            }
        }
    }

    /// Depth of a task's blocks in bytes of packed panel: about a quarter of L2 each for
    /// the left and right panels a task revisits.
    const PANEL_BYTES: usize = 384 * 1024;

    /// Depth tiles a task multiplies at once when the product is more than twice as deep (a
    /// logit gradient times the table: 262144 deep): cut into slabs of this many, a task
    /// still revisits each panel for at least 4 x 4 blocks from L2 instead of streaming
    /// 16 MiB panels from memory for every block. Shallower products (the decoder's, at
    /// most 2048 deep) keep whole-depth blocks, rounded once, with no partial sums.
    const SLAB_TILES: usize = PANEL_BYTES / (4 * 2 * TILE * 2);

    pub fn gemm(engine: Engine, dst: Dst, a: &MatRef, b: &Tiles, (m, n, k): (usize, usize, usize)) {
        let a = pack_a(a);
        debug_assert_eq!(a.k_tiles, b.k_tiles);
        let Dst { data, cs, rs, accumulate } = dst;
        let out = SharedDst { ptr: data.as_mut_ptr(), cs, rs, accumulate };
        // Blocks of 2x2 tiles (32 x 32 outputs), grouped into tasks whose panels stay in L2.
        let (m_blocks, n_blocks) = (a.outer / 2, b.outer / 2);
        let slab = if a.k_tiles > 2 * SLAB_TILES { SLAB_TILES } else { a.k_tiles.max(1) };
        let block_bytes = 2 * TILE * 2 * slab;
        let per_task = (PANEL_BYTES / block_bytes).max(1);
        let (m_tasks, n_tasks) = (m_blocks.div_ceil(per_task), n_blocks.div_ceil(per_task));
        let tasks = m_tasks * n_tasks;
        let parallel = tasks > 1 && m * n * k >= 128 * 128 * 128;
        let run_slab = |kts: std::ops::Range<usize>, sink: Sink| {
            let run = |task: usize| {
                let (mt, nt) = (task % m_tasks, task / m_tasks);
                let ms = mt * per_task..((mt + 1) * per_task).min(m_blocks);
                let ns = nt * per_task..((nt + 1) * per_task).min(n_blocks);
                // SAFETY: the CPU has the engine's instructions and the process may use
                // them (`hardware`); tasks write disjoint output blocks, each inside the
                // destination (checked by the caller) or the partial buffer.
                unsafe {
                    match engine {
                        Engine::Amx => amx_blocks(&a, b, sink, ms, ns, kts.clone()),
                        Engine::Avx512 => avx512_blocks(&a, b, sink, ms, ns, kts.clone()),
                    }
                }
            };
            if parallel {
                (0..tasks).into_par_iter().for_each(run);
            } else {
                (0..tasks).for_each(run);
            }
        };
        if a.k_tiles <= slab {
            run_slab(0..a.k_tiles, Sink::Out(out, (m, n)));
            return;
        }
        let ld = 32 * n_blocks;
        let mut partial = vec![0.0f32; 32 * m_blocks * ld];
        let sink = Sink::Partial { ptr: partial.as_mut_ptr(), ld };
        for start in (0..a.k_tiles).step_by(slab) {
            run_slab(start..(start + slab).min(a.k_tiles), sink);
        }
        partial.par_chunks(32 * ld).enumerate().for_each(|(mb, rows)| {
            let mut acc = [0.0f32; 1024];
            for nb in 0..n_blocks {
                for (r, line) in acc.chunks_exact_mut(32).enumerate() {
                    line.copy_from_slice(&rows[r * ld + 32 * nb..r * ld + 32 * nb + 32]);
                }
                // SAFETY: each row of blocks goes to its own rows of the destination.
                unsafe { store(&acc, out, (32 * mb, 32 * nb), (m, n)) };
            }
        });
    }

    /// The 2x2-tile blocks `ms x ns` of the product over depth tiles `kts` on AMX, on this
    /// thread (compiled for AVX-512, which every AMX CPU has, so the stores are vectorised).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn amx_blocks(
        a: &Tiles,
        b: &Tiles,
        sink: Sink,
        ms: std::ops::Range<usize>,
        ns: std::ops::Range<usize>,
        kts: std::ops::Range<usize>,
    ) {
        let mut acc = [0.0f32; 32 * 32];
        unsafe {
            std::arch::asm!("ldtilecfg [{}]", in(reg) &CONFIG as *const Config, options(nostack, readonly));
            for mb in ms {
                for nb in ns.clone() {
                    amx_block(a, b, (2 * mb, 2 * nb), kts.clone(), &mut acc);
                    sink.put(&acc, (32 * mb, 32 * nb));
                }
            }
            std::arch::asm!("tilerelease", options(nostack, nomem));
        }
    }

    /// The 2x2-tile blocks `ms x ns` of the product over depth tiles `kts` with
    /// `vdpbf16ps`, on this thread.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    unsafe fn avx512_blocks(
        a: &Tiles,
        b: &Tiles,
        sink: Sink,
        ms: std::ops::Range<usize>,
        ns: std::ops::Range<usize>,
        kts: std::ops::Range<usize>,
    ) {
        let mut acc = [0.0f32; 32 * 32];
        for mb in ms {
            for nb in ns.clone() {
                for rows in 0..4 {
                    unsafe { avx512_rows(a, b, (2 * mb, 8 * rows), 2 * nb, kts.clone(), &mut acc[256 * rows..256 * (rows + 1)]) };
                }
                unsafe { sink.put(&acc, (32 * mb, 32 * nb)) };
            }
        }
    }

    /// `acc [8, 32]` = rows `r0 .. r0 + 8` of A's tile pair `mt, mt + 1` (counted across
    /// both) times B's tiles `nt, nt + 1`, over depth tiles `kts`: 16 accumulators of 16 lanes,
    /// each step two 16-column pairs of B against one broadcast pair of each row.
    #[inline(always)]
    unsafe fn avx512_rows(a: &Tiles, b: &Tiles, (mt, r0): (usize, usize), nt: usize, kts: std::ops::Range<usize>, acc: &mut [f32]) {
        let (mt, r0) = (mt + r0 / TM, r0 % TM);
        let mut sums = [unsafe { _mm512_setzero_ps() }; 16];
        for kt in kts {
            // SAFETY: every pointer stays inside its tile (16 lines of 16 pairs), and
            // `__m512bh` is 32 bf16 with any bits valid.
            unsafe {
                let rows = (a.ptr(mt, kt) as *const u32).add(r0 * 16);
                let (b0, b1) = (b.ptr(nt, kt) as *const u32, b.ptr(nt + 1, kt) as *const u32);
                for kp in 0..16 {
                    let x0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b0.add(kp * 16).cast()));
                    let x1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b1.add(kp * 16).cast()));
                    for r in 0..8 {
                        let y: __m512bh = std::mem::transmute(_mm512_set1_epi32(*rows.add(r * 16 + kp) as i32));
                        sums[2 * r] = _mm512_dpbf16_ps(sums[2 * r], y, x0);
                        sums[2 * r + 1] = _mm512_dpbf16_ps(sums[2 * r + 1], y, x1);
                    }
                }
            }
        }
        for (r, pair) in sums.chunks_exact(2).enumerate() {
            // SAFETY: `acc` holds 8 rows of 32.
            unsafe {
                let row = acc.as_mut_ptr().add(32 * r);
                _mm512_storeu_ps(row, pair[0]);
                _mm512_storeu_ps(row.add(16), pair[1]);
            }
        }
    }

    /// `acc [32, 32] = A[mt..mt+2] · B[nt..nt+2]` over depth tiles `kts`, on AMX.
    #[inline(always)]
    unsafe fn amx_block(a: &Tiles, b: &Tiles, (mt, nt): (usize, usize), kts: std::ops::Range<usize>, acc: &mut [f32; 1024]) {
        const STRIDE: usize = 64;
        unsafe {
            std::arch::asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack, nomem));
            for kt in kts {
                std::arch::asm!(
                    "tileloadd tmm4, [{a0} + {s}*1]",
                    "tileloadd tmm5, [{a1} + {s}*1]",
                    "tileloadd tmm6, [{b0} + {s}*1]",
                    "tileloadd tmm7, [{b1} + {s}*1]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    a0 = in(reg) a.ptr(mt, kt),
                    a1 = in(reg) a.ptr(mt + 1, kt),
                    b0 = in(reg) b.ptr(nt, kt),
                    b1 = in(reg) b.ptr(nt + 1, kt),
                    s = in(reg) STRIDE,
                    options(nostack, readonly),
                );
            }
            let c = acc.as_mut_ptr();
            std::arch::asm!(
                "tilestored [{c0} + {s}*1], tmm0",
                "tilestored [{c1} + {s}*1], tmm1",
                "tilestored [{c2} + {s}*1], tmm2",
                "tilestored [{c3} + {s}*1], tmm3",
                c0 = in(reg) c,
                c1 = in(reg) c.add(16),
                c2 = in(reg) c.add(16 * 32),
                c3 = in(reg) c.add(16 * 32 + 16),
                s = in(reg) 128usize,
                options(nostack),
            );
        }
    }

    /// The block's outputs inside `[m, n]`, rounded to bf16, into the destination.
    #[inline(always)]
    unsafe fn store(acc: &[f32; 1024], out: SharedDst, (i0, j0): (usize, usize), (m, n): (usize, usize)) {
        let rows = 32.min(m - i0);
        let cols = 32.min(n - j0);
        for r in 0..rows {
            let base = (i0 + r) as isize * out.rs;
            let src = &acc[r * 32..r * 32 + cols];
            unsafe {
                if out.cs == 1 {
                    let d = std::slice::from_raw_parts_mut(out.ptr.offset(base + j0 as isize), cols);
                    if out.accumulate {
                        d.iter_mut().zip(src).for_each(|(d, &v)| *d += round_bf16(v));
                    } else {
                        d.iter_mut().zip(src).for_each(|(d, &v)| *d = round_bf16(v));
                    }
                } else {
                    for (c, &v) in src.iter().enumerate() {
                        let d = &mut *out.ptr.offset(base + (j0 + c) as isize * out.cs);
                        *d = if out.accumulate { *d + round_bf16(v) } else { round_bf16(v) };
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n).map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed.wrapping_mul(97)) % 4001) as f32 / 1333.7 - 1.5).collect()
    }

    /// The exact product of the bf16-rounded operands, in f64.
    fn reference(a: &MatRef, b: &MatRef) -> Vec<f64> {
        let (m, k, n) = (a.rows, a.cols, b.cols);
        let r = |x: f32| half::bf16::from_f32(x).to_f64();
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| r(a.at(i, p)) * r(b.at(p, j))).sum();
            }
        }
        c
    }

    /// Within one bf16 rounding of the result plus f32 accumulation error over `k` terms.
    fn assert_close(got: &[f32], want: &[f64], k: usize, abs_sum: &[f64], what: &str) {
        for (idx, ((&g, &w), &s)) in got.iter().zip(want).zip(abs_sum).enumerate() {
            let tol = w.abs() * 2f64.powi(-8) + s * k as f64 * 2f64.powi(-23) + 1e-30;
            assert!((g as f64 - w).abs() <= tol, "{what} [{idx}]: {g} vs {w} (tolerance {tol})");
        }
    }

    fn abs_sums(a: &MatRef, b: &MatRef) -> Vec<f64> {
        let (m, k, n) = (a.rows, a.cols, b.cols);
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| (a.at(i, p) as f64 * b.at(p, j) as f64).abs()).sum();
            }
        }
        c
    }

    #[test]
    fn rounding_is_to_nearest_even() {
        assert_eq!(round_bf16(1.0), 1.0);
        // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties to the even neighbour (1).
        assert_eq!(round_bf16(1.0 + 2f32.powi(-8)), 1.0);
        assert_eq!(round_bf16(1.0 + 3.0 * 2f32.powi(-8)), 1.0 + 2.0 * 2f32.powi(-7));
        assert!(round_bf16(f32::NAN).is_nan());
        assert_eq!(round_bf16(f32::INFINITY), f32::INFINITY);
        for x in values(1000, 9) {
            assert_eq!(round_bf16(x), half::bf16::from_f32(x).to_f32(), "{x}");
        }
    }

    /// Shapes below, at and across the tiles' edges (16 rows, 32 depths, 2x2-tile blocks),
    /// across the threading threshold and across depth slabs (1536 deep, from 3073); operands plain
    /// and transposed.
    #[test]
    fn products_equal_the_exact_product_of_rounded_operands() {
        let shapes = [(1, 1, 1), (5, 33, 7), (16, 32, 16), (17, 31, 33), (32, 64, 32), (33, 65, 47), (130, 300, 150), (40, 3400, 70)];
        for kernel in [vec![Bf16Kernel::Emulated], native_kernels()].concat() {
            for &(m, k, n) in &shapes {
                for transposed in [false, true] {
                    let (av, bv) = (values(m * k, 1), values(k * n, 2));
                    let (a, b) = if transposed {
                        (MatRef::row_major(&av, k, m).t(), MatRef::row_major(&bv, n, k).t())
                    } else {
                        (MatRef::row_major(&av, m, k), MatRef::row_major(&bv, k, n))
                    };
                    let want = reference(&a, &b);
                    let sums = abs_sums(&a, &b);
                    let mut got = vec![f32::NAN; m * n];
                    let packed = pack_b_for(kernel, b);
                    gemm_bf16_packed_with(kernel, Dst::row_major(&mut got, n), a, &packed);
                    assert_close(&got, &want, k, &sums, &format!("{kernel:?} [{m}, {k}]·[{k}, {n}] transposed={transposed}"));
                    // Accumulating adds the same rounded product.
                    let mut acc = vec![1.0f32; m * n];
                    gemm_bf16_packed_with(kernel, Dst { data: &mut acc, cs: 1, rs: n as isize, accumulate: true }, a, &packed);
                    for (x, g) in acc.iter().zip(&got) {
                        assert_eq!(*x, 1.0 + g);
                    }
                }
            }
        }
    }

    #[test]
    fn a_strided_destination_receives_the_transpose() {
        let (m, k, n) = (20, 40, 36);
        let (av, bv) = (values(m * k, 3), values(k * n, 4));
        let (a, b) = (MatRef::row_major(&av, m, k), MatRef::row_major(&bv, k, n));
        let mut plain = vec![0.0f32; m * n];
        gemm_bf16(Dst::row_major(&mut plain, n), a, b);
        let mut t = vec![0.0f32; n * m];
        gemm_bf16(Dst { data: &mut t, cs: m as isize, rs: 1, accumulate: false }, a, b);
        for i in 0..m {
            for j in 0..n {
                assert_eq!(plain[i * n + j], t[j * m + i]);
            }
        }
    }

    #[test]
    fn the_dispatcher_takes_the_fallback_without_bf16_units_or_when_told() {
        let none = Bf16Hardware::default();
        let avx512 = Bf16Hardware { amx: false, avx512_bf16: true };
        let both = Bf16Hardware { amx: true, avx512_bf16: true };
        assert_eq!(select(none, None), Bf16Kernel::Emulated);
        assert_eq!(select(none, Some("amx")), Bf16Kernel::Emulated);
        assert_eq!(select(none, Some("avx512")), Bf16Kernel::Emulated);
        assert_eq!(select(avx512, None), Bf16Kernel::Avx512Bf16);
        assert_eq!(select(avx512, Some("amx")), Bf16Kernel::Avx512Bf16);
        assert_eq!(select(avx512, Some("emulated")), Bf16Kernel::Emulated);
        assert_eq!(select(both, None), Bf16Kernel::Amx);
        assert_eq!(select(both, Some("avx512")), Bf16Kernel::Avx512Bf16);
        assert_eq!(select(both, Some("emulated")), Bf16Kernel::Emulated);
        assert_eq!(select(both, Some("anything")), Bf16Kernel::Amx);
    }

    /// The native kernels this CPU has (an empty list on CPUs without bf16 units).
    fn native_kernels() -> Vec<Bf16Kernel> {
        let hw = x86::hardware();
        [(hw.amx, Bf16Kernel::Amx), (hw.avx512_bf16, Bf16Kernel::Avx512Bf16)]
            .into_iter()
            .filter_map(|(has, k)| has.then_some(k))
            .collect()
    }

    /// Where the CPU has bf16 units, each native kernel gives the emulated kernel's numbers
    /// on real-sized operands (the sums' order differs: within accumulation error).
    #[test]
    fn native_and_emulated_kernels_agree_where_both_run() {
        let natives = native_kernels();
        if natives.is_empty() {
            eprintln!("skipped: this CPU has neither AMX nor avx512_bf16");
        }
        let (m, k, n) = (96, 640, 200);
        let (av, bv) = (values(m * k, 5), values(k * n, 6));
        let (a, b) = (MatRef::row_major(&av, m, k), MatRef::row_major(&bv, k, n));
        let mut y = vec![0.0f32; m * n];
        gemm_bf16_packed_with(Bf16Kernel::Emulated, Dst::row_major(&mut y, n), a, &pack_b_for(Bf16Kernel::Emulated, b));
        let sums = abs_sums(&a, &b);
        let want: Vec<f64> = y.iter().map(|&v| v as f64).collect();
        for native in natives {
            let mut x = vec![0.0f32; m * n];
            gemm_bf16_packed_with(native, Dst::row_major(&mut x, n), a, &pack_b_for(native, b));
            assert_close(&x, &want, k, &sums, &format!("{native:?} vs emulated"));
        }
    }

    #[test]
    fn a_reused_packing_is_kept_until_its_weight_changes() {
        let (k, n) = (40, 50);
        let mut w = values(k * n, 8);
        let first = pack_b_reused(MatRef::row_major(&w, k, n));
        let again = pack_b_reused(MatRef::row_major(&w, k, n));
        assert!(Arc::ptr_eq(&first, &again), "the same weight is packed once");
        let transposed = pack_b_reused(MatRef::row_major(&w, n, k).t());
        assert!(!Arc::ptr_eq(&first, &transposed), "another view is another packing");
        w.iter_mut().for_each(|x| *x += 0.5);
        let changed = pack_b_reused(MatRef::row_major(&w, k, n));
        assert!(!Arc::ptr_eq(&first, &changed), "a weight changed in place is packed again");
        // And the product reads the new values.
        assert_packed_is_plain(&changed, &w, (k, n), 9, "the repacked weight computes the plain product");
    }

    /// A product through `packed` equals the plain product with the row-major `w [k, n]`
    /// it was packed from, for a `[3, k]` left-hand side drawn with `seed`.
    fn assert_packed_is_plain(packed: &PackedB, w: &[f32], (k, n): (usize, usize), seed: u32, what: &str) {
        let x = values(3 * k, seed);
        let (mut got, mut want) = (vec![0.0f32; 3 * n], vec![0.0f32; 3 * n]);
        gemm_bf16_packed(Dst::row_major(&mut got, n), MatRef::row_major(&x, 3, k), packed);
        gemm_bf16(Dst::row_major(&mut want, n), MatRef::row_major(&x, 3, k), MatRef::row_major(w, k, n));
        assert_eq!(got, want, "{what}");
    }

    #[test]
    fn a_trained_weight_is_packed_once_per_step_and_afresh_outside() {
        let (k, n) = (24, 40);
        let w = values(k * n, 12);
        let outside = (pack_b_trained(MatRef::row_major(&w, k, n)), pack_b_trained(MatRef::row_major(&w, k, n)));
        assert!(!Arc::ptr_eq(&outside.0, &outside.1), "no scope: packed on every call");
        let first = {
            let _step = packed_for_one_step();
            let a = pack_b_trained(MatRef::row_major(&w, k, n));
            let b = pack_b_trained(MatRef::row_major(&w, k, n));
            assert!(Arc::ptr_eq(&a, &b), "one packing per step");
            let t = pack_b_trained(MatRef::row_major(&w, k, n).t());
            assert_eq!((t.k(), t.n()), (n, k), "the transposed view is a weight of its own");
            a
        };
        // A key samples at most 1,024 of a weight's values, so an optimizer step that changed
        // none of them would go unseen: the next step packs afresh whatever the key says.
        let _step = packed_for_one_step();
        let next = pack_b_trained(MatRef::row_major(&w, k, n));
        assert!(!Arc::ptr_eq(&first, &next), "the last step's packing was dropped with its scope");
        assert_packed_is_plain(&next, &w, (k, n), 13, "the shared packing computes the plain product");
    }

    #[test]
    fn packings_made_while_frozen_go_with_the_scope() {
        let (k, n) = (24, 40);
        let (frozen, trained) = (values(k * n, 10), values(k * n, 11));
        pack_b_reused(MatRef::row_major(&frozen, k, n));
        {
            let _scope = packed_while_frozen();
            pack_b_reused(MatRef::row_major(&frozen, k, n));
            pack_b_reused(MatRef::row_major(&trained, k, n));
            assert!(is_packed(MatRef::row_major(&trained, k, n)), "kept while the scope lives");
        }
        assert!(!is_packed(MatRef::row_major(&trained, k, n)), "packed first in the scope: dropped");
        assert!(is_packed(MatRef::row_major(&frozen, k, n)), "packed before the scope: kept");
    }
}
