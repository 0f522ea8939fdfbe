//! Dequantization of ggml blocks to f32, following the block layouts and arithmetic of ggml's
//! reference (`dequantize_row_*`) implementations, so results match llama.cpp bit for bit up to
//! f32 rounding.

use half::{bf16, f16};

use crate::GgmlType;

/// Decodes one block: `block.len() == type_size`, `out.len() == block_size`.
pub(crate) type BlockFn = fn(block: &[u8], out: &mut [f32]);

/// The block decoder for `ty`, or `None` if there is none.
pub(crate) fn block_fn(ty: GgmlType) -> Option<BlockFn> {
    Some(match ty {
        GgmlType::F32 => |b, o| o[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        GgmlType::F16 => |b, o| o[0] = f16_at(b, 0),
        GgmlType::BF16 => |b, o| o[0] = bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32(),
        GgmlType::F64 => {
            |b, o| o[0] = f64::from_le_bytes(b[..8].try_into().expect("8 bytes")) as f32
        }
        GgmlType::Q4_0 => q4_0,
        GgmlType::Q4_1 => q4_1,
        GgmlType::Q5_0 => q5_0,
        GgmlType::Q5_1 => q5_1,
        GgmlType::Q8_0 => q8_0,
        GgmlType::Q2_K => q2_k,
        GgmlType::Q3_K => q3_k,
        GgmlType::Q4_K => q4_k,
        GgmlType::Q5_K => q5_k,
        GgmlType::Q6_K => q6_k,
        GgmlType::Q8_K => q8_k,
        _ => return None,
    })
}

/// Below this many elements a tensor is decoded on the calling thread; spawning costs more.
const PARALLEL_MIN_ELEMENTS: usize = 1 << 18;

/// Decodes `data` (whole blocks of `ty`) into `out`, splitting the work over the available cores
/// for large tensors (the Gemma embedding alone is 168M values).
pub(crate) fn dequantize(ty: GgmlType, f: BlockFn, data: &[u8], out: &mut [f32]) {
    let (bs, ts) = (ty.block_size(), ty.type_size());
    debug_assert_eq!(data.len() / ts * bs, out.len());
    let n_blocks = out.len() / bs;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads <= 1 || out.len() < PARALLEL_MIN_ELEMENTS {
        decode_blocks(f, bs, ts, data, out);
        return;
    }
    let blocks_per_chunk = n_blocks.div_ceil(threads);
    std::thread::scope(|s| {
        for (d, o) in data
            .chunks(blocks_per_chunk * ts)
            .zip(out.chunks_mut(blocks_per_chunk * bs))
        {
            s.spawn(move || decode_blocks(f, bs, ts, d, o));
        }
    });
}

fn decode_blocks(f: BlockFn, bs: usize, ts: usize, data: &[u8], out: &mut [f32]) {
    for (block, o) in data.chunks_exact(ts).zip(out.chunks_exact_mut(bs)) {
        f(block, o);
    }
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

// ---- 32-element blocks -------------------------------------------------------------------------

/// block_q4_0 { f16 d; u8 qs[16] }: low nibbles are elements 0..16, high nibbles 16..32.
fn q4_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let qs = &b[2..18];
    for j in 0..16 {
        y[j] = ((qs[j] & 0x0F) as i32 - 8) as f32 * d;
        y[j + 16] = ((qs[j] >> 4) as i32 - 8) as f32 * d;
    }
}

/// block_q4_1 { f16 d; f16 m; u8 qs[16] }.
fn q4_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let qs = &b[4..20];
    for j in 0..16 {
        y[j] = (qs[j] & 0x0F) as f32 * d + m;
        y[j + 16] = (qs[j] >> 4) as f32 * d + m;
    }
}

/// block_q5_0 { f16 d; u8 qh[4]; u8 qs[16] }: bit j of qh is the 5th bit of element j.
fn q5_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let qs = &b[6..22];
    for j in 0..16 {
        let xh0 = (((qh >> j) << 4) & 0x10) as u8;
        let xh1 = ((qh >> (j + 12)) & 0x10) as u8;
        y[j] = (((qs[j] & 0x0F) | xh0) as i32 - 16) as f32 * d;
        y[j + 16] = (((qs[j] >> 4) | xh1) as i32 - 16) as f32 * d;
    }
}

/// block_q5_1 { f16 d; f16 m; u8 qh[4]; u8 qs[16] }.
fn q5_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let qs = &b[8..24];
    for j in 0..16 {
        let xh0 = (((qh >> j) << 4) & 0x10) as u8;
        let xh1 = ((qh >> (j + 12)) & 0x10) as u8;
        y[j] = ((qs[j] & 0x0F) | xh0) as f32 * d + m;
        y[j + 16] = ((qs[j] >> 4) | xh1) as f32 * d + m;
    }
}

/// block_q8_0 { f16 d; i8 qs[32] }.
fn q8_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for (yi, &q) in y.iter_mut().zip(&b[2..34]) {
        *yi = q as i8 as f32 * d;
    }
}

// ---- 256-element super-blocks (k-quants) -------------------------------------------------------

/// Unpacks the j-th 6-bit (scale, min) pair of the 12-byte k-quant scale field: pairs 0..4 are
/// the low 6 bits of bytes 0..4 / 4..8; pairs 4..8 take 4 bits from bytes 8..12 and their top
/// two bits from the spare high bits of bytes 0..8.
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// block_q2_K { u8 scales[16]; u8 qs[64]; f16 d; f16 dmin }: 16 sub-blocks of 16 with 4-bit
/// scale (low nibble) and min (high nibble).
fn q2_k(b: &[u8], y: &mut [f32]) {
    let scales = &b[0..16];
    let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
    let mut out = 0;
    let mut is = 0;
    for n in 0..2 {
        let q = &b[16 + 32 * n..16 + 32 * (n + 1)];
        for shift in [0, 2, 4, 6] {
            for half in 0..2 {
                let sc = scales[is];
                is += 1;
                let (dl, ml) = (d * (sc & 0x0F) as f32, dmin * (sc >> 4) as f32);
                for &qv in &q[16 * half..16 * (half + 1)] {
                    y[out] = dl * ((qv >> shift) & 3) as f32 - ml;
                    out += 1;
                }
            }
        }
    }
}

/// block_q3_K { u8 hmask[32]; u8 qs[64]; u8 scales[12]; f16 d }: 2 low bits in qs, the third
/// (inverted: set means "no -4") in hmask, and sixteen 6-bit scales biased by 32.
fn q3_k(b: &[u8], y: &mut [f32]) {
    let hm = &b[0..32];
    let d_all = f16_at(b, 108);
    let scales = q3_k_scales(&b[96..108]);
    let mut out = 0;
    let mut is = 0;
    let mut m = 1u8;
    for n in 0..2 {
        let q = &b[32 + 32 * n..32 + 32 * (n + 1)];
        for shift in [0, 2, 4, 6] {
            for half in 0..2 {
                let dl = d_all * (scales[is] as i32 - 32) as f32;
                is += 1;
                for l in 16 * half..16 * (half + 1) {
                    let low = ((q[l] >> shift) & 3) as i32;
                    let sub = if hm[l] & m != 0 { 0 } else { 4 };
                    y[out] = dl * (low - sub) as f32;
                    out += 1;
                }
            }
            m <<= 1;
        }
    }
}

/// Unpacks Q3_K's 12 scale bytes into sixteen 6-bit values: the low 4 bits come from nibbles of
/// bytes 0..8, the high 2 bits from bytes 8..12.
fn q3_k_scales(s: &[u8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        let low = if i < 8 { s[i] & 0x0F } else { s[i - 8] >> 4 };
        let high = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
        *o = low | (high << 4);
    }
    out
}

/// block_q4_K { f16 d; f16 dmin; u8 scales[12]; u8 qs[128] }: 8 sub-blocks of 32 with 6-bit
/// scale and min; each 32-byte run of qs holds two sub-blocks (low then high nibbles).
fn q4_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let scales = &b[4..16];
    let qs = &b[16..144];
    for j in 0..4 {
        let (sc1, m1) = scale_min_k4(2 * j, scales);
        let (sc2, m2) = scale_min_k4(2 * j + 1, scales);
        let (d1, m1) = (d * sc1 as f32, dmin * m1 as f32);
        let (d2, m2) = (d * sc2 as f32, dmin * m2 as f32);
        let q = &qs[32 * j..32 * (j + 1)];
        let out = &mut y[64 * j..64 * (j + 1)];
        for l in 0..32 {
            out[l] = d1 * (q[l] & 0x0F) as f32 - m1;
            out[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
        }
    }
}

/// block_q5_K { f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128] }: like Q4_K plus a 5th
/// bit per element in qh (bit 2j for the low-nibble sub-block, 2j+1 for the high one).
fn q5_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let scales = &b[4..16];
    let qh = &b[16..48];
    let qs = &b[48..176];
    for j in 0..4 {
        let (sc1, m1) = scale_min_k4(2 * j, scales);
        let (sc2, m2) = scale_min_k4(2 * j + 1, scales);
        let (d1, m1) = (d * sc1 as f32, dmin * m1 as f32);
        let (d2, m2) = (d * sc2 as f32, dmin * m2 as f32);
        let (u1, u2) = (1u8 << (2 * j), 2u8 << (2 * j));
        let q = &qs[32 * j..32 * (j + 1)];
        let out = &mut y[64 * j..64 * (j + 1)];
        for l in 0..32 {
            let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
            let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
            out[l] = d1 * ((q[l] & 0x0F) + h1) as f32 - m1;
            out[l + 32] = d2 * ((q[l] >> 4) + h2) as f32 - m2;
        }
    }
}

/// block_q6_K { u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d }: 6-bit values (4 low bits in ql,
/// 2 high bits in qh) biased by 32, sixteen sub-blocks of 16 with signed 8-bit scales.
fn q6_k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 208);
    for n in 0..2 {
        let ql = &b[64 * n..64 * (n + 1)];
        let qh = &b[128 + 32 * n..128 + 32 * (n + 1)];
        let sc = &b[192 + 8 * n..192 + 8 * (n + 1)];
        let out = &mut y[128 * n..128 * (n + 1)];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            let s = |k: usize| d * sc[is + k] as i8 as f32;
            out[l] = s(0) * q1 as f32;
            out[l + 32] = s(2) * q2 as f32;
            out[l + 64] = s(4) * q3 as f32;
            out[l + 96] = s(6) * q4 as f32;
        }
    }
}

/// block_q8_K { f32 d; i8 qs[256]; i16 bsums[16] } (bsums only speed up dot products).
fn q8_k(b: &[u8], y: &mut [f32]) {
    let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    for (yi, &q) in y.iter_mut().zip(&b[4..260]) {
        *yi = d * q as i8 as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The generic Q3_K scale unpacking must equal ggml's kmask formulation.
    #[test]
    fn q3_k_scales_match_kmask_formulation() {
        let mut s = [0u8; 12];
        let mut x = 0x1234_5678_9abc_def0u64;
        for round in 0..200 {
            for b in s.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = (x >> 24) as u8;
            }
            let mut aux = [0u32; 4];
            for i in 0..3 {
                aux[i] = u32::from_le_bytes(s[4 * i..4 * i + 4].try_into().unwrap());
            }
            let (k1, k2) = (0x0303_0303u32, 0x0f0f_0f0fu32);
            let tmp = aux[2];
            aux[2] = ((aux[0] >> 4) & k2) | (((tmp >> 4) & k1) << 4);
            aux[3] = ((aux[1] >> 4) & k2) | (((tmp >> 6) & k1) << 4);
            aux[0] = (aux[0] & k2) | ((tmp & k1) << 4);
            aux[1] = (aux[1] & k2) | (((tmp >> 2) & k1) << 4);
            let expected: Vec<u8> = aux.iter().flat_map(|a| a.to_le_bytes()).collect();
            assert_eq!(q3_k_scales(&s).to_vec(), expected, "round {round}");
        }
    }
}
