//! Shannon entropy of a byte slice, in bits per byte (0.0 ..= 8.0).

/// Entropy in bits per byte; 0.0 for an empty slice.
pub fn shannon(data: &[u8]) -> f64 {
    if data.is_empty() {
        return 0.0;
    }
    // Four tables break the dependency between neighbouring equal bytes
    // (the histogram runs over every byte of every executable's sections).
    let mut tables = [[0u64; 256]; 4];
    let mut quads = data.chunks_exact(4);
    for q in &mut quads {
        for (table, &b) in tables.iter_mut().zip(q) {
            table[b as usize] = table[b as usize].wrapping_add(1);
        }
    }
    for &b in quads.remainder() {
        tables[0][b as usize] = tables[0][b as usize].wrapping_add(1);
    }
    let counts: Vec<u64> = (0..256).map(|i| tables.iter().map(|t| t[i]).sum()).collect();
    let len = data.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / len;
            -p * p.log2()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::shannon;

    #[test]
    fn bounds() {
        assert_eq!(shannon(b""), 0.0);
        assert_eq!(shannon(&[7u8; 4096]), 0.0);
        let all: Vec<u8> = (0..=255u8).collect();
        assert!((shannon(&all) - 8.0).abs() < 1e-9);
        assert!((shannon(b"abab") - 1.0).abs() < 1e-9);
        assert!((shannon(b"ababa") - 0.970_950_594_454_668_5).abs() < 1e-9, "remainder bytes count");
    }
}
