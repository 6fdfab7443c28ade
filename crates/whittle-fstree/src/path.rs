//! Paths inside an image: byte strings relative to the root (no leading `/`, `""` is the
//! root), since tar names need not be UTF-8.

/// Normalizes a tar member name: strips leading `/` and `./`, folds `.` and `..`. A `..` that
/// would climb above the root, an empty component in the middle or a NUL byte is an error:
/// those names only occur in hostile archives.
pub fn normalize(name: &[u8]) -> Result<Vec<u8>, String> {
    if name.contains(&0) {
        return Err("name contains a NUL byte".into());
    }
    let mut parts: Vec<&[u8]> = Vec::new();
    for comp in name.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                if parts.pop().is_none() {
                    return Err("name climbs above the root with '..'".into());
                }
            }
            c => parts.push(c),
        }
    }
    Ok(parts.join(&b'/'))
}

/// The parent of a normalized path (`""` for top-level names and for the root).
pub fn parent_of(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => &path[..i],
        None => b"",
    }
}

pub fn base_name(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

pub fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        return name.to_vec();
    }
    let mut v = Vec::with_capacity(dir.len() + 1 + name.len());
    v.extend_from_slice(dir);
    v.push(b'/');
    v.extend_from_slice(name);
    v
}

/// `/usr/bin/x` form for people and reports.
pub fn display_path(path: &[u8]) -> String {
    format!("/{}", String::from_utf8_lossy(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes() {
        assert_eq!(normalize(b"./usr/bin/").unwrap(), b"usr/bin");
        assert_eq!(normalize(b"/etc//passwd").unwrap(), b"etc/passwd");
        assert_eq!(normalize(b"a/../b").unwrap(), b"b");
        assert_eq!(normalize(b"./").unwrap(), b"");
        assert!(normalize(b"../etc").is_err());
        assert!(normalize(b"a/../../etc").is_err());
        assert_eq!(parent_of(b"a/b/c"), b"a/b");
        assert_eq!(parent_of(b"a"), b"");
        assert_eq!(base_name(b"a/b"), b"b");
    }
}
