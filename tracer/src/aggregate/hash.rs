//! Hashing for the collector's per-record lookups.
//!
//! The keys come from the kernel (raw return addresses, task names, ids), not
//! from an adversary choosing collisions, so fast non-cryptographic hashes
//! serve; `SipHash`, the standard library's default, costs several times more
//! per word.

/// Builds Fx hashers (`rustc-hash`) for the maps worked on once per new
/// row: fixed-size row keys.
pub type FxBuild = rustc_hash::FxBuildHasher;

/// Odd constants with well-spread bits (wyhash's).
const K: [u64; 5] = [
    0xa076_1d64_78bd_642f,
    0xe703_7ed1_a0b4_28db,
    0x8ebc_6af0_9c88_c6e3,
    0x5899_65cc_7537_4cc3,
    0x1d8e_4e27_c47d_124f,
];

/// The 128-bit product of `a` and `b`, folded to 64 bits: every output bit
/// depends on every input bit.
#[expect(
    clippy::inline_always,
    reason = "per-event hot path: one multiply, measured with `cargo xtask bench`"
)]
#[inline(always)]
#[expect(
    clippy::cast_possible_truncation,
    reason = "folding keeps the low and the high 64 bits on purpose"
)]
fn fold_mul(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

/// Hash of a sequence of words, all of whose bits are well mixed (hash tables
/// take the bucket from the low bits and a tag from the high ones).
///
/// Four independent lanes of rotate-xor-multiply (Fx's step, a bijection of
/// the lane, so a difference in one word is never lost; the rotation carries
/// the well-mixed high bits of one step into the low bits of the next), so
/// the multiplies of a 40-frame stack overlap instead of each waiting for the
/// one before; then one 128-bit multiply mixes the lanes into every output
/// bit.
#[inline]
#[must_use]
pub fn hash_words(words: &[u64]) -> u64 {
    let mut lanes = [K[0], K[1], K[2], K[3]];
    let mut chunks = words.chunks_exact(4);
    for chunk in &mut chunks {
        for ((lane, &w), &k) in lanes.iter_mut().zip(chunk).zip(&K) {
            *lane = (lane.rotate_left(26) ^ w).wrapping_mul(k);
        }
    }
    for ((lane, &w), &k) in lanes.iter_mut().zip(chunks.remainder()).zip(&K) {
        *lane = (lane.rotate_left(26) ^ w).wrapping_mul(k);
    }
    fold_mul(
        lanes[0] ^ lanes[2].rotate_left(32) ^ words.len() as u64,
        lanes[1] ^ lanes[3].rotate_left(32) ^ K[4],
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn word_hashes_tell_apart_order_length_and_single_bits() {
        let base: Vec<u64> = (0..40)
            .map(|i| 0xffff_ffff_8100_0000 + i * 0x1234)
            .collect();
        let mut seen = HashSet::new();
        assert!(seen.insert(hash_words(&base)));
        assert!(seen.insert(hash_words(&[])));
        for len in 1..base.len() {
            assert!(seen.insert(hash_words(&base[..len])), "prefix {len}");
        }
        for i in 0..base.len() {
            for bit in [0, 1, 7, 31, 63] {
                let mut v = base.clone();
                v[i] ^= 1 << bit;
                assert!(seen.insert(hash_words(&v)), "frame {i} bit {bit}");
            }
        }
        let mut swapped = base.clone();
        swapped.swap(0, 1);
        assert!(seen.insert(hash_words(&swapped)));
        let mut zero_extended = base.clone();
        zero_extended.push(0);
        assert!(seen.insert(hash_words(&zero_extended)));
    }
}
