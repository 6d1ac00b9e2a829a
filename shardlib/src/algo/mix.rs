//! Deterministic building blocks shared by the placement algorithms.
//!
//! Everything here is integer arithmetic or IEEE-754 binary64 `+ - * /`
//! (each exactly rounded, round-to-nearest-even), so a Go, Java or Python
//! client computes the same bits on every platform. The platform's `ln`/`exp`
//! are never called: they differ between C libraries. Never fuse a multiply
//! and an add (Rust and Java never do; in Go, which may fuse `a*b + c` on some
//! CPUs, write `float64(a*b) + c`; in C, compile with `-ffp-contract=off`).
//!
//! All arithmetic on `u64` below is modulo 2⁶⁴; `>>` is a logical shift.
//!
//! # `mix64`: a 64-bit finalizer
//!
//! The output function of SplitMix64 (Steele, Lea & Flood, "Fast Splittable
//! Pseudorandom Number Generators", OOPSLA 2014), which is David Stafford's
//! "Mix13" variant of MurmurHash3's `fmix64`:
//!
//! ```text
//! z = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9
//! z = (z ^ (z >> 27)) * 0x94D049BB133111EB
//! mix64(x) = z ^ (z >> 31)
//! ```
//!
//! It is a bijection with full avalanche. The SplitMix64 generator seeded with
//! `s` yields `mix64(s + GOLDEN_GAMMA)`, `mix64(s + 2·GOLDEN_GAMMA)`, … with
//! [`GOLDEN_GAMMA`] `= 0x9E3779B97F4A7C15`; seeded with 0 it starts
//! `0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F`.
//!
//! # `node_hash`
//!
//! `xxh3_64` (seed 0) of the node name's UTF-8 bytes.
//!
//! # `unit_interval` and `neg_ln_unit`: an exponential variate from a hash
//!
//! `unit_interval(h) = (2·(h >> 12) + 1) · 2⁻⁵³`, an odd multiple of 2⁻⁵³ in
//! the open interval (0, 1), exact in binary64.
//!
//! `neg_ln_unit(h)` is −ln(`unit_interval(h)`) computed in 57-bit fixed point
//! so that it is *monotone*: a larger `h >> 12` never gives a larger result.
//! Rendezvous hashing relies on that (its equal-weight fast path compares raw
//! hashes). With `x = 2·(h >> 12) + 1` (an odd integer below 2⁵³):
//!
//! ```text
//! e = ⌊log2 x⌋                     (63 − leading_zeros(x))
//! f = x · 2⁻ᵉ                      (exact, in [1, 2))
//! if f ≥ SQRT2 { f = f / 2; e = e + 1 }        SQRT2 = 0x3FF6A09E667F3BCD ≈ 1.4142135623730951
//! p = ln_kernel(f)                  (≈ ln f, f in [SQRT2/2, SQRT2))
//! P = trunc(p · 2⁵⁷)                (binary64 → signed integer, toward zero)
//! P = min(max(P, H − LN2_FIX), H)
//! E = 53·LN2_FIX − (e·LN2_FIX + P)  (an integer ≥ 0)
//! neg_ln_unit(h) = binary64(E) · 2⁻⁵⁷   (nearest binary64, then an exact scaling)
//! ```
//!
//! where `LN2_FIX = ⌊ln 2 · 2⁵⁷⌋ = 99893036290645747` and
//! `H = ⌊LN2_FIX / 2⌋ = 49946518145322873`. The kernel is the atanh series
//! `ln f = 2·(t + t³/3 + t⁵/5 + … + t²¹/21)`, with the polynomial in `z = t²`
//! evaluated by Estrin's scheme; each line is one rounded binary64 operation
//! per `+`, `·` or `/`, evaluated left to right:
//!
//! ```text
//! t  = (f − 1) / (f + 1)            (|t| < 0.1716)
//! z  = t · t;   z2 = z · z;   z4 = z2 · z2;   z8 = z4 · z4
//! a0 = c0 + c1·z;   a1 = c2 + c3·z;   a2 = c4 + c5·z;   a3 = c6 + c7·z;   a4 = c8 + c9·z
//! b0 = a0 + a1·z2;  b1 = a2 + a3·z2;  b2 = a4 + c10·z2
//! q  = (b0 + b1·z4) + b2·z8
//! ln_kernel(f) = (2·t) · q          where c_k = 1 / (2k + 1), a rounded division
//! ```
//!
//! The clamp to `[H − LN2_FIX, H]` only bites where the kernel's range is
//! split (for f ≥ 1, P ≥ 0; for f < 1, P ≤ 0). Every step is a monotone
//! function of the previous ones (correctly rounded operations are monotone,
//! all coefficients are positive and z ≥ 0, and `t` grows with `f`), and the
//! clamp makes the pieces meet without a step backwards where `e` changes, so
//! `neg_ln_unit` is monotone non-increasing in `h >> 12`. Its absolute error is
//! below 10⁻¹⁵ (the truncated series contributes < 10⁻¹⁸).
//!
//! [`ln`] uses the same kernel for any positive finite binary64.

use xxhash_rust::xxh3::xxh3_64;

/// The SplitMix64 increment `0x9E3779B97F4A7C15`: the odd integer nearest 2⁶⁴/φ.
pub const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// ⌊ln 2 · 2⁵⁷⌋, the fixed-point ln 2 of [`neg_ln_unit`].
pub const LN2_FIX: i64 = 99_893_036_290_645_747;

/// The binary64 nearest √2 (`0x3FF6A09E667F3BCD`), where the kernel's range is split.
const SQRT2: f64 = std::f64::consts::SQRT_2;

/// ln 2 in two parts (fdlibm's split): `LN2_HI` has 32 trailing zero bits, so
/// `e · LN2_HI` is exact for every binary64 exponent `e`.
const LN2_HI: f64 = f64::from_bits(0x3FE6_2E42_FEE0_0000);
const LN2_LO: f64 = f64::from_bits(0x3DEA_39EF_3579_3C76);

/// A strong 64-bit finalizer: SplitMix64's output function (Stafford's Mix13).
///
/// A bijection on `u64` with full avalanche; see the [module docs](self) for
/// the exact formula.
#[inline]
pub const fn mix64(x: u64) -> u64 {
    let z = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The identity hash of a node (a shard): `xxh3_64` with seed 0 of the name's UTF-8 bytes.
#[inline]
pub fn node_hash(name: &str) -> u64 {
    xxh3_64(name.as_bytes())
}

/// Maps a hash to `(2·(h >> 12) + 1) · 2⁻⁵³`, a binary64 strictly inside (0, 1).
///
/// Only the top 52 bits of `h` are used. The result is exact, and
/// `1 − unit_interval(h)` is exactly `unit_interval(!h)`.
#[inline]
pub fn unit_interval(h: u64) -> f64 {
    let x = ((h >> 12) << 1) | 1;
    x as f64 * f64::from_bits(0x3CA0_0000_0000_0000) // 2⁻⁵³
}

/// −ln([`unit_interval`]`(h)`), deterministic and monotone.
///
/// The result is in (0, 37): an exponentially distributed variate when `h` is
/// uniform. It never increases when `h >> 12` increases. The exact
/// fixed-point recipe is in the [module docs](self).
#[inline]
pub fn neg_ln_unit(h: u64) -> f64 {
    let x = ((h >> 12) << 1) | 1;
    let mut e = 63 - i64::from(x.leading_zeros());
    // x < 2⁵³ is exact in binary64, and so is the scaling by a power of two.
    let f = x as f64 * f64::from_bits(((1023 - e) as u64) << 52);
    // f ≥ √2: halve f (exact) and bump e; branch-free, as the outcome is random.
    let big = f >= SQRT2;
    let f = f * f64::from_bits((1023 - u64::from(big)) << 52);
    e += i64::from(big);
    let scaled = ln_kernel(f) * f64::from_bits((1023 + 57) << 52); // · 2⁵⁷, exact
    let half = LN2_FIX / 2;
    let p = (scaled as i64).clamp(half - LN2_FIX, half);
    let fixed = 53 * LN2_FIX - (e * LN2_FIX + p);
    debug_assert!(fixed >= 0);
    fixed as f64 * f64::from_bits((1023 - 57) << 52) // · 2⁻⁵⁷, exact
}

/// The natural logarithm of a positive finite `x`, from basic operations only.
///
/// `x = f · 2ᵉ` with `f` in [√2/2, √2), then `e·LN2_HI + (e·LN2_LO + ln_kernel(f))`
/// (constants and kernel in the [module docs](self)); subnormals are first
/// scaled by 2⁵⁴. Accurate to about one unit in the last place, and the same
/// on every platform. Returns NaN for negative or NaN input, −∞ for ±0 and +∞
/// for +∞.
pub fn ln(x: f64) -> f64 {
    if x.is_nan() || x < 0.0 {
        return f64::NAN;
    }
    if x == 0.0 {
        return f64::NEG_INFINITY;
    }
    if x == f64::INFINITY {
        return x;
    }
    let (mut bits, mut e) = (x.to_bits(), 0i64);
    if bits >> 52 == 0 {
        // subnormal: scale into the normal range first
        bits = (x * f64::from_bits((1023 + 54) << 52)).to_bits();
        e = -54;
    }
    e += ((bits >> 52) as i64) - 1023;
    let mut f = f64::from_bits((bits & ((1 << 52) - 1)) | (1023 << 52));
    if f >= SQRT2 {
        f *= 0.5;
        e += 1;
    }
    let e = e as f64;
    e * LN2_HI + (e * LN2_LO + ln_kernel(f))
}

/// ln f for f in [√2/2, √2): `2·atanh(t)` with `t = (f − 1)/(f + 1)`, series to
/// t²¹ by Estrin's scheme (a short dependency chain; see the module docs).
#[inline]
fn ln_kernel(f: f64) -> f64 {
    let t = (f - 1.0) / (f + 1.0);
    let z = t * t;
    let z2 = z * z;
    let z4 = z2 * z2;
    let z8 = z4 * z4;
    let a0 = 1.0 + (1.0 / 3.0) * z;
    let a1 = 1.0 / 5.0 + (1.0 / 7.0) * z;
    let a2 = 1.0 / 9.0 + (1.0 / 11.0) * z;
    let a3 = 1.0 / 13.0 + (1.0 / 15.0) * z;
    let a4 = 1.0 / 17.0 + (1.0 / 19.0) * z;
    let b0 = a0 + a1 * z2;
    let b1 = a2 + a3 * z2;
    let b2 = a4 + (1.0 / 21.0) * z2;
    let q = (b0 + b1 * z4) + b2 * z8;
    (2.0 * t) * q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix64_is_the_splitmix64_output_function() {
        // SplitMix64 seeded with 0: the published reference outputs.
        assert_eq!(mix64(GOLDEN_GAMMA), 0xE220_A839_7B1D_CDAF);
        assert_eq!(mix64(GOLDEN_GAMMA.wrapping_mul(2)), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(mix64(GOLDEN_GAMMA.wrapping_mul(3)), 0x06C4_5D18_8009_454F);
        assert_eq!(mix64(0), 0);
    }

    #[test]
    fn node_hash_is_xxh3_of_the_name() {
        // xxh3_64 of the empty input is a published constant.
        assert_eq!(node_hash(""), 0x2D06_8005_38D3_94C2);
        assert_eq!(node_hash("shard-1"), xxh3_64(b"shard-1"));
    }

    #[test]
    fn constants_are_what_the_docs_say() {
        assert_eq!(SQRT2.to_bits(), 0x3FF6_A09E_667F_3BCD);
        assert_eq!(LN2_HI + LN2_LO, std::f64::consts::LN_2);
        // LN2_FIX / 2^57 is ln 2 to within 2^-57.
        let approx = LN2_FIX as f64 / (1u64 << 57) as f64;
        assert!((approx - std::f64::consts::LN_2).abs() < 1e-16);
    }

    #[test]
    fn unit_interval_is_open_and_symmetric() {
        assert_eq!(unit_interval(0), f64::from_bits(0x3CA0_0000_0000_0000));
        assert_eq!(unit_interval(u64::MAX), 1.0 - unit_interval(0));
        for h in [0u64, 1 << 12, 12345 << 20, u64::MAX / 3, u64::MAX] {
            let u = unit_interval(h);
            assert!(u > 0.0 && u < 1.0);
            assert_eq!(1.0 - u, unit_interval(!h));
        }
    }

    #[test]
    fn ln_matches_the_platform_within_an_ulp_or_two() {
        let mut h = 1u64;
        for _ in 0..20_000 {
            h = mix64(h.wrapping_add(GOLDEN_GAMMA));
            let x = f64::from_bits(h >> 1); // any positive binary64
            if !x.is_finite() || x == 0.0 {
                continue;
            }
            let (ours, libm) = (ln(x), x.ln());
            assert!((ours - libm).abs() <= 2.5 * f64::EPSILON * libm.abs().max(1e-300), "ln({x:e})");
        }
        assert_eq!(ln(1.0), 0.0);
        assert_eq!(ln(0.0), f64::NEG_INFINITY);
        assert!(ln(-1.0).is_nan());
        assert_eq!(ln(f64::INFINITY), f64::INFINITY);
        assert!((ln(f64::from_bits(1)) - (-744.4400719213812)).abs() < 1e-12);
    }

    #[test]
    fn neg_ln_unit_is_accurate() {
        let mut h = 7u64;
        for _ in 0..20_000 {
            h = mix64(h.wrapping_add(GOLDEN_GAMMA));
            let exact = -unit_interval(h).ln();
            assert!((neg_ln_unit(h) - exact).abs() < 1e-15, "h = {h:#x}");
        }
        assert!((neg_ln_unit(0) - 53.0 * std::f64::consts::LN_2).abs() < 1e-14);
        assert!(neg_ln_unit(u64::MAX) > 0.0 && neg_ln_unit(u64::MAX) < 2e-16);
    }

    #[test]
    fn neg_ln_unit_never_steps_backwards() {
        // Walk consecutive inputs around every place where the pieces meet: the
        // powers of two (e changes) and the √2 splits, plus random spots.
        let mut starts = Vec::new();
        for e in 0..53u32 {
            let pow = 1u64 << e;
            starts.push(pow.saturating_sub(40));
            starts.push(((pow as f64 * SQRT2) as u64).saturating_sub(40));
        }
        let mut h = 3u64;
        for _ in 0..200 {
            h = mix64(h.wrapping_add(GOLDEN_GAMMA));
            starts.push(h >> 11);
        }
        for start in starts {
            // x = 2m + 1 = start (roughly), so m = start / 2.
            let m0 = (start / 2).min((1 << 52) - 81);
            let mut prev = neg_ln_unit(m0 << 12);
            for m in m0 + 1..m0 + 80 {
                let cur = neg_ln_unit(m << 12);
                assert!(cur <= prev, "m = {m}: {cur} > {prev}");
                prev = cur;
            }
        }
    }

    #[test]
    fn golden_values() {
        // Pinned outputs: a change here changes rendezvous routing.
        assert_eq!(neg_ln_unit(0x0123_4567_89AB_CDEF).to_bits(), 0x4015_AA16_394D_4834);
        assert_eq!(neg_ln_unit(0x8000_0000_0000_0000).to_bits(), 0x3FE6_2E42_FEFA_39ED);
    }
}
