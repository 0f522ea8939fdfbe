//! GGUF reading on small files written by the test: metadata, shapes, every dequantizer
//! against values from the reference implementation, and error reporting on bad input.

mod common;

use common::{GgufBuilder, TempFile};
use half::{bf16, f16};
use sweelol_gguf::{GgmlType, GgufError, GgufFile, MetaValue};

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn open_err(tag: &str, bytes: &[u8]) -> (String, GgufError) {
    let f = TempFile::new(tag, bytes);
    let err = GgufFile::open(f.path()).expect_err("expected the file to be rejected");
    let msg = err.to_string();
    assert!(
        msg.contains(&f.name()),
        "error does not name the file: {msg}"
    );
    (msg, err)
}

#[test]
fn reads_metadata_shapes_and_plain_float_tensors() {
    let a: Vec<f32> = (0..6).map(|i| i as f32 * 0.5 - 1.0).collect();
    let h: Vec<u8> = [1.5f32, -2.25, 65504.0, 0.0]
        .iter()
        .flat_map(|&x| f16::from_f32(x).to_bits().to_le_bytes())
        .collect();
    let b: Vec<u8> = [3.0f32, -0.125]
        .iter()
        .flat_map(|&x| bf16::from_f32(x).to_bits().to_le_bytes())
        .collect();
    let bytes = GgufBuilder::new()
        .kv_str("general.architecture", "toy")
        .kv_u32("toy.block_count", 3)
        .kv_i32("toy.signed", -4)
        .kv_u64("toy.big", 1 << 40)
        .kv_f32("toy.eps", 1e-6)
        .kv_f64("toy.theta", 10000.0)
        .kv_bool("toy.flag", true)
        .kv_str_array("toy.names", &["a", "b▁c"])
        .kv_nested("toy.nested", &[&[1, 2], &[]])
        .tensor("a", &[3, 2], 0, f32_bytes(&a))
        .tensor("h", &[4], 1, h)
        .tensor("b", &[1, 2, 1], 30, b)
        .build();
    let f = TempFile::new("meta", &bytes);
    let g = GgufFile::open(f.path()).unwrap();
    assert_eq!(g.architecture().unwrap(), "toy");
    assert_eq!(g.get_u32("toy.block_count").unwrap(), 3);
    assert_eq!(g.get_usize("toy.block_count").unwrap(), 3);
    assert_eq!(g.get_u64("toy.big").unwrap(), 1 << 40);
    assert_eq!(g.get_f32("toy.eps").unwrap(), 1e-6);
    assert_eq!(g.get_f32("toy.theta").unwrap(), 10000.0);
    assert!(g.get_bool("toy.flag").unwrap());
    assert_eq!(g.get_str_array("toy.names").unwrap(), vec!["a", "b▁c"]);
    assert_eq!(
        g.metadata()["toy.nested"],
        MetaValue::Array(vec![
            MetaValue::Array(vec![MetaValue::U8(1), MetaValue::U8(2)]),
            MetaValue::Array(vec![])
        ])
    );

    // Errors name the file and the key.
    let msg = g.get_u32("toy.signed").unwrap_err().to_string();
    assert!(
        msg.contains(&f.name()) && msg.contains("'toy.signed'") && msg.contains("i32"),
        "{msg}"
    );
    let msg = g.get_u32("toy.big").unwrap_err().to_string();
    assert!(msg.contains("'toy.big'"), "{msg}");
    let msg = g.get_str("toy.absent").unwrap_err().to_string();
    assert!(
        msg.contains(&f.name()) && msg.contains("'toy.absent' is missing"),
        "{msg}"
    );
    let msg = g.tensor_f32("nope").unwrap_err().to_string();
    assert!(msg.contains(&f.name()) && msg.contains("'nope'"), "{msg}");

    let names: Vec<&str> = g.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["a", "h", "b"]);
    assert_eq!(g.tensor_f32("a").unwrap(), (vec![2, 3], a));
    assert_eq!(
        g.tensor_f32("h").unwrap(),
        (vec![4], vec![1.5, -2.25, 65504.0, 0.0])
    );
    assert_eq!(
        g.tensor_f32("b").unwrap(),
        (vec![1, 2, 1], vec![3.0, -0.125])
    );
    let info = g.tensor_info("h").unwrap();
    assert_eq!(
        (
            info.ggml_type,
            info.n_elements,
            info.n_bytes,
            info.offset % 32
        ),
        (GgmlType::F16, 4, 8, 0)
    );
}

/// splitmix64, shared with the script that produced the reference values below.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

const BLOCKS: usize = 8;

/// Pseudo-random blocks of `ty`, with each f16 scale field (at `f16_offsets`) replaced by a
/// finite value in ±[2^-7, 2^2) so that results are comparable.
fn random_blocks(ty: GgmlType, f16_offsets: &[usize]) -> Vec<u8> {
    let mut rng = Rng(ty.id() as u64 * 1000 + 7);
    let mut out = Vec::new();
    for _ in 0..BLOCKS {
        let mut block = Vec::new();
        while block.len() < ty.type_size() {
            block.extend_from_slice(&rng.next().to_le_bytes());
        }
        block.truncate(ty.type_size());
        for &o in f16_offsets {
            let x = rng.next();
            let bits = ((x & 1) << 15) | ((8 + (x >> 1) % 9) << 10) | ((x >> 8) & 0x3FF);
            block[o..o + 2].copy_from_slice(&(bits as u16).to_le_bytes());
        }
        out.extend_from_slice(&block);
    }
    out
}

/// (type, f16 field offsets in a block, Σ y[i]·(1 + i mod 7), samples (i, y[i])), computed by
/// the `gguf` Python package's numpy dequantizers (gguf 0.x from llama.cpp's gguf-py) on the
/// same bytes.
#[allow(clippy::type_complexity)]
const REFERENCE: &[(GgmlType, &[usize], f64, &[(usize, f64)])] = &[
    (
        GgmlType::Q4_0,
        &[0],
        937.1276245117188,
        &[
            (0, -0.1065826416015625),
            (37, 0.2373046875),
            (74, 10.7392578125),
            (111, 1.013671875),
            (148, -0.11187744140625),
            (185, 19.6875),
            (222, -0.0),
            (3, -0.0),
            (40, -0.2373046875),
            (77, 7.6708984375),
            (114, 0.5068359375),
            (151, 0.0745849609375),
            (188, -2.8125),
            (225, -0.0),
            (6, 0.0639495849609375),
            (43, -0.31640625),
        ],
    ),
    (
        GgmlType::Q4_1,
        &[0, 2],
        -208.45651245117188,
        &[
            (0, 0.167236328125),
            (37, -0.0107574462890625),
            (74, -4.1611328125),
            (111, 1.218017578125),
            (148, -0.28099822998046875),
            (185, -0.36114501953125),
            (222, -0.02398681640625),
            (3, 0.233612060546875),
            (40, 0.0789031982421875),
            (77, -2.25390625),
            (114, 1.48681640625),
            (151, -0.40724945068359375),
            (188, -0.209075927734375),
            (225, -0.7552490234375),
            (6, 0.1119232177734375),
            (43, -0.0555877685546875),
        ],
    ),
    (
        GgmlType::Q5_0,
        &[0],
        1427.1432342529297,
        &[
            (0, 0.41064453125),
            (37, 27.58984375),
            (74, 18.34765625),
            (111, 4.392578125),
            (148, 5.55419921875),
            (185, 8.4912109375),
            (222, 0.406494140625),
            (3, -1.437255859375),
            (40, 27.58984375),
            (77, 15.7265625),
            (114, -5.40625),
            (151, -2.13623046875),
            (188, 10.189453125),
            (225, -0.06927490234375),
            (6, 1.437255859375),
            (43, -55.1796875),
        ],
    ),
    (
        GgmlType::Q5_1,
        &[0, 2],
        3123.720260620117,
        &[
            (0, -41.779022216796875),
            (37, -0.3305511474609375),
            (74, -9.53741455078125),
            (111, 2.45404052734375),
            (148, -13.3505859375),
            (185, 77.208984375),
            (222, 5.942138671875),
            (3, -35.595428466796875),
            (40, -0.0163421630859375),
            (77, -12.89776611328125),
            (114, -0.6490478515625),
            (151, -5.5234375),
            (188, 96.49609375),
            (225, 44.846923828125),
            (6, -41.779022216796875),
            (43, -0.8542327880859375),
        ],
    ),
    (
        GgmlType::Q8_0,
        &[0],
        -4934.139266967773,
        &[
            (0, -16.5164794921875),
            (37, -20.49609375),
            (74, 1.46405029296875),
            (111, -25.09228515625),
            (148, 3.269287109375),
            (185, -0.0485687255859375),
            (222, 5.12109375),
            (3, -3.3310546875),
            (40, -43.55419921875),
            (77, -0.12347412109375),
            (114, 23.59423828125),
            (151, -4.962310791015625),
            (188, -0.5990142822265625),
            (225, -94.9921875),
            (6, -15.4061279296875),
            (43, 102.48046875),
        ],
    ),
    (
        GgmlType::Q2_K,
        &[80, 82],
        4750.666595458984,
        &[
            (0, 0.4016876220703125),
            (37, -1.0909423828125),
            (74, 0.024169921875),
            (111, -1.375762939453125),
            (148, 0.12359619140625),
            (185, -0.137054443359375),
            (222, -0.1303253173828125),
            (259, -1.2578125),
            (296, 2.65234375),
            (333, 0.408203125),
            (370, 3.740234375),
            (407, -3.1875),
            (444, 8.228515625),
            (481, 1.49609375),
            (518, -15.03125),
            (555, -16.5836181640625),
        ],
    ),
    (
        GgmlType::Q3_K,
        &[108],
        -1245.3566284179688,
        &[
            (0, -8.923828125),
            (37, 0.0),
            (74, -11.526611328125),
            (111, 11.15478515625),
            (148, 24.54052734375),
            (185, -4.833740234375),
            (222, -21.194091796875),
            (259, 5.33203125),
            (296, -14.21875),
            (333, -5.33203125),
            (370, 5.33203125),
            (407, -24.8828125),
            (444, 55.986328125),
            (481, -85.3125),
            (518, 0.0),
            (555, -0.0),
        ],
    ),
    (
        GgmlType::Q4_K,
        &[0, 2],
        -179876.9805908203,
        &[
            (0, -132.6204833984375),
            (37, -72.97166442871094),
            (74, -1.121429443359375),
            (111, -158.0597686767578),
            (148, -54.72355651855469),
            (185, -134.09686279296875),
            (222, -14.153152465820312),
            (259, 15.0439453125),
            (296, 9.73199462890625),
            (333, 10.0343017578125),
            (370, 5.71197509765625),
            (407, 22.05078125),
            (444, 11.261505126953125),
            (481, 4.3719482421875),
            (518, -0.94049072265625),
            (555, -27.95263671875),
        ],
    ),
    (
        GgmlType::Q5_K,
        &[0, 2],
        4948017.826217651,
        &[
            (0, -577.024169921875),
            (37, -12.190673828125),
            (74, -64.977783203125),
            (111, -59.1728515625),
            (148, -135.760498046875),
            (185, -28.739501953125),
            (222, -789.24658203125),
            (259, 2.32177734375),
            (296, 1.21380615234375),
            (333, 10.91436767578125),
            (370, 12.744232177734375),
            (407, -1.5272674560546875),
            (444, 11.571304321289062),
            (481, 1.6777191162109375),
            (518, 0.1253204345703125),
            (555, -0.663299560546875),
        ],
    ),
    (
        GgmlType::Q6_K,
        &[208],
        -155048.29878997803,
        &[
            (0, 10.3133544921875),
            (37, -17.240234375),
            (74, 34.316917419433594),
            (111, 4.1368865966796875),
            (148, -2.3378219604492188),
            (185, 8.485427856445312),
            (222, -4.84881591796875),
            (259, 5438.630859375),
            (296, -849.03515625),
            (333, 6664.125),
            (370, -790.296875),
            (407, 7045.923828125),
            (444, -1241.513671875),
            (481, -1201.46484375),
            (518, 1.49853515625),
            (555, -102.4453125),
        ],
    ),
];

#[test]
fn quantized_types_match_reference_dequantizer() {
    for &(ty, f16_offsets, checksum, samples) in REFERENCE {
        let bs = ty.block_size() as u64;
        let data = random_blocks(ty, f16_offsets);
        // Two rows of four blocks: shape [2, 4·bs].
        let bytes = GgufBuilder::new()
            .tensor("w", &[4 * bs, 2], ty.id(), data)
            .build();
        let f = TempFile::new("quant", &bytes);
        let g = GgufFile::open(f.path()).unwrap();
        let (shape, y) = g.tensor_f32("w").unwrap();
        assert_eq!(shape, vec![2, 4 * bs as usize], "{ty}");
        let sum: f64 = y
            .iter()
            .enumerate()
            .map(|(i, &v)| v as f64 * (1 + i % 7) as f64)
            .sum();
        assert!(
            (sum - checksum).abs() <= 1e-6 * checksum.abs().max(1.0),
            "{ty}: checksum {sum} vs {checksum}"
        );
        for &(i, expected) in samples {
            let tol = 1e-6 * expected.abs().max(1.0);
            assert!(
                (y[i] as f64 - expected).abs() <= tol,
                "{ty}[{i}] = {} expected {expected}",
                y[i]
            );
        }
    }
}

#[test]
fn q8_k_and_f64_decode() {
    // Q8_K: f32 scale, 256 signed bytes, 16 i16 block sums (ignored when decoding).
    let mut block = 0.25f32.to_le_bytes().to_vec();
    block.extend((0..256).map(|i: i32| (i - 128) as i8 as u8));
    block.extend([0u8; 32]);
    let f64s: Vec<u8> = [1.5f64, -1e-3]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let bytes = GgufBuilder::new()
        .tensor("k", &[256], GgmlType::Q8_K.id(), block)
        .tensor("d", &[2], GgmlType::F64.id(), f64s)
        .build();
    let f = TempFile::new("q8k", &bytes);
    let g = GgufFile::open(f.path()).unwrap();
    let (_, y) = g.tensor_f32("k").unwrap();
    let expected: Vec<f32> = (0..256).map(|i| (i as f32 - 128.0) * 0.25).collect();
    assert_eq!(y, expected);
    assert_eq!(g.tensor_f32("d").unwrap().1, vec![1.5, -1e-3]);
}

#[test]
fn large_tensors_decode_identically_across_threads() {
    // 2^19 Q4_0 values: big enough to be split over threads; every block gets its own scale
    // and nibble pattern so a misplaced chunk would show.
    let n_blocks = (1 << 19) / 32;
    let mut data = Vec::with_capacity(n_blocks * 18);
    for b in 0..n_blocks {
        data.extend_from_slice(
            &f16::from_f32((b % 97) as f32 / 64.0 + 0.5)
                .to_bits()
                .to_le_bytes(),
        );
        data.extend((0..16).map(|j| ((b + j) % 256) as u8));
    }
    let bytes = GgufBuilder::new()
        .tensor("big", &[1024, 512], 2, data)
        .build();
    let f = TempFile::new("big", &bytes);
    let (_, y) = GgufFile::open(f.path()).unwrap().tensor_f32("big").unwrap();
    assert_eq!(y.len(), 1 << 19);
    for b in (0..n_blocks).step_by(331).chain([n_blocks - 1]) {
        let d = f16::from_f32((b % 97) as f32 / 64.0 + 0.5).to_f32();
        for j in 0..16 {
            let q = ((b + j) % 256) as i32;
            assert_eq!(
                y[b * 32 + j],
                ((q & 15) - 8) as f32 * d,
                "block {b} elem {j}"
            );
            assert_eq!(
                y[b * 32 + j + 16],
                ((q >> 4) - 8) as f32 * d,
                "block {b} elem {}",
                j + 16
            );
        }
    }
}

fn valid_file() -> Vec<u8> {
    GgufBuilder::new()
        .kv_str("general.architecture", "toy")
        .kv_str_array("toy.list", &["x", "yy", "zzz"])
        .tensor("first", &[4], 0, f32_bytes(&[1.0, 2.0, 3.0, 4.0]))
        .tensor("second", &[32, 2], 8, vec![0u8; 68])
        .build()
}

#[test]
fn bad_magic_names_the_file() {
    let mut bytes = valid_file();
    bytes[..4].copy_from_slice(b"GGML");
    let (msg, err) = open_err("badmagic", &bytes);
    assert!(matches!(err, GgufError::BadMagic { .. }), "{err:?}");
    assert!(
        msg.contains("not a GGUF file: it starts with \"GGML\""),
        "{msg}"
    );
    let (msg, _) = open_err("empty", b"");
    assert!(msg.contains("not a GGUF file"), "{msg}");
}

#[test]
fn unsupported_version_names_the_file() {
    let mut bytes = valid_file();
    bytes[4..8].copy_from_slice(&1u32.to_le_bytes());
    let (msg, _) = open_err("v1", &bytes);
    assert!(msg.contains("unsupported GGUF version 1"), "{msg}");
    // Big-endian files show a byte-swapped version.
    bytes[4..8].copy_from_slice(&3u32.to_be_bytes());
    let (msg, _) = open_err("bigendian", &bytes);
    assert!(msg.contains("unsupported GGUF version 50331648"), "{msg}");
}

#[test]
fn every_truncation_is_an_error_naming_file_and_offset() {
    let bytes = valid_file();
    // Data section: 16 bytes of "first" padded to 32, then 68 bytes of "second" padded to 96.
    let data_start = bytes.len() - 128;
    for cut in 0..bytes.len() {
        let f = TempFile::new("trunc", &bytes[..cut]);
        match GgufFile::open(f.path()) {
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains(&f.name()), "cut {cut}: {msg}");
                if cut < 4 {
                    assert!(matches!(e, GgufError::BadMagic { .. }), "cut {cut}: {e:?}");
                } else if cut + 32 <= data_start {
                    // Inside the header (which ends within 32 bytes of the aligned data start).
                    assert!(matches!(e, GgufError::Truncated { .. }), "cut {cut}: {e:?}");
                    assert!(msg.contains("byte offset"), "cut {cut}: {msg}");
                } else if cut >= data_start {
                    assert!(
                        matches!(e, GgufError::TensorDataPastEof { .. }),
                        "cut {cut}: {e:?}"
                    );
                }
            }
            // Only the padding after the last tensor may be cut off.
            Ok(_) => assert!(cut >= bytes.len() - 28, "cut {cut} was accepted"),
        }
    }
    let f = TempFile::new("trunc", &bytes[..bytes.len() - 40]);
    let msg = GgufFile::open(f.path()).unwrap_err().to_string();
    assert!(
        msg.contains("tensor 'second'") && msg.contains("past the end of the file"),
        "{msg}"
    );
}

#[test]
fn unknown_ggml_type_names_file_tensor_and_id() {
    let bytes = GgufBuilder::new()
        .tensor("weird.weight", &[32], 77, vec![0u8; 64])
        .build();
    let (msg, err) = open_err("unknowntype", &bytes);
    assert!(
        matches!(err, GgufError::UnknownGgmlType { type_id: 77, .. }),
        "{err:?}"
    );
    assert!(
        msg.contains("'weird.weight'") && msg.contains("type id 77"),
        "{msg}"
    );
}

#[test]
fn known_but_undecodable_type_fails_only_on_read() {
    let bytes = GgufBuilder::new()
        .tensor("iq", &[256], GgmlType::IQ2_XXS.id(), vec![0u8; 66])
        .build();
    let f = TempFile::new("iq", &bytes);
    let g = GgufFile::open(f.path()).unwrap();
    assert_eq!(g.tensor_bytes("iq").unwrap().len(), 66);
    let msg = g.tensor_f32("iq").unwrap_err().to_string();
    assert!(
        msg.contains(&f.name()) && msg.contains("'iq'") && msg.contains("IQ2_XXS"),
        "{msg}"
    );
}

#[test]
fn malformed_headers_are_errors() {
    // Innermost dimension not a whole number of blocks.
    let bytes = GgufBuilder::new()
        .tensor("odd", &[33], 8, vec![0u8; 68])
        .build();
    let (msg, _) = open_err("oddshape", &bytes);
    assert!(
        msg.contains("'odd'") && msg.contains("block size 32"),
        "{msg}"
    );
    // Unknown metadata value type.
    let bytes = GgufBuilder::new().raw_kv("bad.kv", 42, vec![0; 8]).build();
    let (msg, _) = open_err("badkv", &bytes);
    assert!(
        msg.contains("'bad.kv'") && msg.contains("unknown value type 42"),
        "{msg}"
    );
    // An array claiming more elements than the file could hold must not allocate them.
    let mut huge = 4u32.to_le_bytes().to_vec();
    huge.extend_from_slice(&(u64::MAX / 2).to_le_bytes());
    let bytes = GgufBuilder::new().raw_kv("huge.array", 9, huge).build();
    let (msg, err) = open_err("hugearray", &bytes);
    assert!(
        matches!(err, GgufError::Truncated { .. }) && msg.contains("'huge.array'"),
        "{msg}"
    );
    // Invalid UTF-8 in a string.
    let bytes = GgufBuilder::new()
        .raw_kv("s", 8, [&2u64.to_le_bytes()[..], &[0xff, 0xfe]].concat())
        .build();
    let (msg, _) = open_err("utf8", &bytes);
    assert!(msg.contains("not valid UTF-8"), "{msg}");
    // Duplicate tensor names.
    let bytes = GgufBuilder::new()
        .tensor("t", &[1], 0, vec![0; 4])
        .tensor("t", &[1], 0, vec![0; 4])
        .build();
    let (msg, _) = open_err("dup", &bytes);
    assert!(msg.contains("'t' appears twice"), "{msg}");
    // Too many dimensions; element-count overflow.
    let bytes = GgufBuilder::new()
        .tensor("t", &[1, 1, 1, 1, 1], 0, vec![0; 4])
        .build();
    let (msg, _) = open_err("dims", &bytes);
    assert!(msg.contains("5 dimensions"), "{msg}");
    let bytes = GgufBuilder::new()
        .tensor("t", &[u64::MAX, 4], 0, vec![0; 4])
        .build();
    let (msg, _) = open_err("overflow", &bytes);
    assert!(msg.contains("overflows"), "{msg}");
    // Non power-of-two alignment.
    let bytes = GgufBuilder::new().kv_u32("general.alignment", 48).build();
    let (msg, _) = open_err("align", &bytes);
    assert!(msg.contains("general.alignment"), "{msg}");
}

#[test]
fn custom_alignment_is_honoured() {
    let mut b = GgufBuilder::new()
        .kv_u32("general.alignment", 64)
        .tensor("x", &[3], 0, f32_bytes(&[1.0, 2.0, 3.0]))
        .tensor("y", &[2], 0, f32_bytes(&[4.0, 5.0]));
    b.alignment = 64;
    let f = TempFile::new("align64", &b.build());
    let g = GgufFile::open(f.path()).unwrap();
    assert_eq!(g.tensor_info("y").unwrap().offset % 64, 0);
    assert_eq!(g.tensor_f32("y").unwrap().1, vec![4.0, 5.0]);
}

/// Random corruption must produce `Ok` or `Err`, never a panic, and whatever opens must decode.
#[test]
fn corrupted_files_never_panic() {
    let base = valid_file();
    let mut rng = Rng(99);
    for round in 0..3000 {
        let mut bytes = base.clone();
        for _ in 0..1 + round % 4 {
            let at = (rng.next() % bytes.len() as u64) as usize;
            bytes[at] = rng.next() as u8;
        }
        let f = TempFile::new("fuzz", &bytes);
        if let Ok(g) = GgufFile::open(f.path()) {
            for t in g.tensors() {
                let _ = g.tensor_f32(&t.name);
            }
        }
    }
}
