//! Sizes for people: every report of every command prints bytes the same way.

/// `0 B`, `999 B`, `1.0 KiB`, `9.5 MiB`, … (binary units, one decimal).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn units() {
        assert_eq!(super::human_bytes(999), "999 B");
        assert_eq!(super::human_bytes(1024), "1.0 KiB");
        assert_eq!(super::human_bytes(9_929_216), "9.5 MiB");
    }
}
