//! Seed derivation: one well-mixed 64-bit seed from a tuple of integers.
//!
//! Every random stream in the data pipeline (a split, an image, an epoch's shuffle, one view of
//! one sample) gets its own seed derived from the values that identify it, so the output never
//! depends on the order in which threads happen to run.

/// SplitMix64 finaliser (Steele, Lea & Flood 2014): a bijective mix with full avalanche.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Mixes an ordered tuple of values into one seed. Order matters: `[a, b] != [b, a]`.
pub fn mix_seeds(parts: &[u64]) -> u64 {
    parts.iter().fold(0x6A09_E667_F3BC_C908, |h, &p| {
        splitmix64(h.rotate_left(23) ^ splitmix64(p))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixing_is_order_sensitive_and_spreads_neighbours() {
        assert_ne!(mix_seeds(&[1, 2]), mix_seeds(&[2, 1]));
        assert_ne!(mix_seeds(&[0, 0]), mix_seeds(&[0]));
        assert_eq!(mix_seeds(&[7, 8, 9]), mix_seeds(&[7, 8, 9]));
        // Neighbouring inputs should differ in about half of their bits.
        let d = (mix_seeds(&[5, 100]) ^ mix_seeds(&[5, 101])).count_ones();
        assert!((16..=48).contains(&d), "poor avalanche: {d} bits differ");
    }
}
