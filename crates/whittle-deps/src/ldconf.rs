//! The loader's configuration files inside the image: `/etc/ld.so.conf` (with its `include`
//! globs), `/etc/ld-musl-ARCH.path`, `/etc/ld.so.preload` and `/etc/nsswitch.conf`.
//!
//! Why `ld.so.conf` and not `/etc/ld.so.cache`: glibc looks libraries up in the cache,
//! which `ldconfig` builds from `ld.so.conf`. An image's cache may be stale or absent (a
//! layer added libraries without running `ldconfig`), and the slim image keeps the cache
//! file as it is; searching the configured directories in order is what the cache encodes
//! when it is current, and finds a superset when it is not. One more superset case: the
//! cache only indexes files by their SONAME link, so a `DT_NEEDED` naming a file that is
//! not a SONAME (an unversioned `libfoo.so`) is found here in a configured directory where
//! ld.so would only look in its default directories.

use crate::resolve::{absolutize, parent, Resolver};

/// Include nesting beyond this is treated as a loop (ldconfig has no limit, but a loop
/// would make it recurse forever).
const MAX_INCLUDE_DEPTH: usize = 16;

/// Reads a small text file of the image (following symlinks), `None` if absent/unreadable.
pub(crate) fn read_text(res: &Resolver<'_>, path: &str, max: usize) -> Option<String> {
    let r = res.resolve(path, "/", true).ok()?;
    if !r.node.is_file() {
        return None;
    }
    let bytes = res.fs().read_head(&r.path, max).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// The directories `/etc/ld.so.conf` names, in order, with includes expanded (relative
/// include patterns are relative to the including file's directory, glob results sorted).
pub fn ld_so_conf_dirs(res: &Resolver<'_>) -> Vec<String> {
    let mut dirs = Vec::new();
    parse_conf(res, "/etc/ld.so.conf", 0, &mut dirs);
    let mut seen = std::collections::HashSet::new();
    dirs.retain(|d| seen.insert(d.clone()));
    dirs
}

fn parse_conf(res: &Resolver<'_>, file: &str, depth: usize, out: &mut Vec<String>) {
    if depth > MAX_INCLUDE_DEPTH {
        return;
    }
    let Some(text) = read_text(res, file, 1 << 20) else {
        return;
    };
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("include") {
            if rest.starts_with([' ', '\t']) {
                for pat in rest.split([' ', '\t']).filter(|p| !p.is_empty()) {
                    let pat = if pat.starts_with('/') {
                        pat.to_owned()
                    } else {
                        absolutize(pat, parent(file))
                    };
                    for f in glob(res, &pat) {
                        parse_conf(res, &f, depth + 1, out);
                    }
                }
                continue;
            }
        }
        if line.len() > 5
            && line[..5].eq_ignore_ascii_case("hwcap")
            && line[5..].starts_with([' ', '\t'])
        {
            continue;
        }
        // ldconfig's add_dir: an optional "=TYPE" suffix, trailing slashes removed.
        let dir = line.split('=').next().unwrap_or("").trim_end();
        let dir = dir.trim_end_matches('/');
        if dir.starts_with('/') {
            out.push(absolutize(dir, "/"));
        } else if dir.is_empty() && line.starts_with('/') {
            out.push("/".to_owned());
        }
    }
}

/// Expands a glob (`*`, `?`, `[...]` in any component) against the image, like glob(3):
/// sorted results, `*` does not match a leading dot.
pub fn glob(res: &Resolver<'_>, pattern: &str) -> Vec<String> {
    let comps: Vec<&str> = pattern.split('/').filter(|c| !c.is_empty()).collect();
    let mut current = vec![String::from("/")];
    for (i, comp) in comps.iter().enumerate() {
        let last = i + 1 == comps.len();
        let mut next = Vec::new();
        for base in &current {
            if !has_magic(comp) {
                let p = absolutize(comp, base);
                if res.resolve(&p, "/", !last).is_ok() {
                    next.push(p);
                }
                continue;
            }
            let Ok(dir) = res.resolve(base, "/", true) else {
                continue;
            };
            if !dir.node.is_dir() {
                continue;
            }
            let Ok(mut names) = res.fs().read_dir(&dir.path) else {
                continue;
            };
            names.sort();
            for n in names {
                if fnmatch(comp, &n) {
                    next.push(absolutize(&n, base));
                }
            }
        }
        current = next;
    }
    current
}

fn has_magic(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Shell-style matching of one path component.
pub fn fnmatch(pattern: &str, name: &str) -> bool {
    if name.starts_with('.') && !pattern.starts_with('.') {
        return false;
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    matches(&p, &n)
}

fn matches(p: &[char], n: &[char]) -> bool {
    // Iterative matcher with single-star backtracking (linear in practice).
    let (mut pi, mut ni) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi, ni));
                    pi += 1;
                    continue;
                }
                '?' => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                '[' => {
                    if let Some((ok, len)) = class(&p[pi..], n[ni]) {
                        if ok {
                            pi += len;
                            ni += 1;
                            continue;
                        }
                    } else if n[ni] == '[' {
                        pi += 1;
                        ni += 1;
                        continue;
                    }
                }
                '\\' if pi + 1 < p.len() && p[pi + 1] == n[ni] => {
                    pi += 2;
                    ni += 1;
                    continue;
                }
                c if c == n[ni] => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, sn)) => {
                pi = sp + 1;
                ni = sn + 1;
                star = Some((sp, sn + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Matches a `[...]` class at the start of `p`; returns (matched, pattern length).
fn class(p: &[char], c: char) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(p.get(i), Some('!') | Some('^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < p.len() {
        if p[i] == ']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
            if p[i] <= c && c <= p[i + 2] {
                matched = true;
            }
            i += 3;
        } else {
            if p[i] == c {
                matched = true;
            }
            i += 1;
        }
    }
    None
}

/// Splits a colon/whitespace separated path list as musl does for its `.path` file.
pub fn musl_path_file(text: &str) -> Vec<String> {
    text.split([':', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Names in `/etc/ld.so.preload` (separated by blanks, newlines or colons).
pub fn preload_names(text: &str) -> Vec<String> {
    text.split([' ', '\t', '\n', ':'])
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The service names `/etc/nsswitch.conf` lists, in order of first appearance. Action
/// items (`[NOTFOUND=return]`) are skipped.
pub fn nss_services(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let Some((_db, rest)) = line.split_once(':') else {
            continue;
        };
        let mut in_action = false;
        for word in rest.split_whitespace() {
            if in_action || word.starts_with('[') {
                in_action = !word.ends_with(']');
                continue;
            }
            let ok = word
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if ok && !out.iter().any(|s| s == word) {
                out.push(word.to_owned());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootfs::DirRootFs;
    use std::os::unix::fs::symlink;

    #[test]
    fn fnmatch_basics() {
        assert!(fnmatch("*.conf", "libc.conf"));
        assert!(!fnmatch("*.conf", ".hidden.conf"));
        assert!(!fnmatch("*.conf", "libc.conf.bak"));
        assert!(fnmatch("lib[a-c]?.so", "libb1.so"));
        assert!(!fnmatch("lib[!a-c]?.so", "libb1.so"));
        assert!(fnmatch("*a*b*", "xxaxxbxx"));
        assert!(fnmatch("a[", "a["));
    }

    #[test]
    fn ld_so_conf_with_nested_relative_includes() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        std::fs::create_dir_all(r.join("etc/ld.so.conf.d/sub")).unwrap();
        std::fs::create_dir_all(r.join("conf")).unwrap();
        std::fs::write(
            r.join("etc/ld.so.conf"),
            "# comment\n/opt/first/\ninclude ld.so.conf.d/*.conf\nhwcap 0 nosegneg\ninclude /conf/x.conf\n/opt/last=libc6\n",
        )
        .unwrap();
        std::fs::write(r.join("etc/ld.so.conf.d/b.conf"), "/usr/local/lib\n").unwrap();
        std::fs::write(
            r.join("etc/ld.so.conf.d/a.conf"),
            "/opt/a # trailing\ninclude sub/*\n",
        )
        .unwrap();
        std::fs::write(r.join("etc/ld.so.conf.d/sub/s"), "/opt/sub\n").unwrap();
        std::fs::write(r.join("etc/ld.so.conf.d/.hidden.conf"), "/opt/hidden\n").unwrap();
        std::fs::write(r.join("conf/real.conf"), "/opt/abs\n").unwrap();
        symlink("/conf/real.conf", r.join("conf/x.conf")).unwrap();
        let fs = DirRootFs::new(r).unwrap();
        let res = Resolver::new(&fs);
        assert_eq!(
            ld_so_conf_dirs(&res),
            vec![
                "/opt/first",
                "/opt/a",
                "/opt/sub",
                "/usr/local/lib",
                "/opt/abs",
                "/opt/last"
            ]
        );
    }

    #[test]
    fn nsswitch_services() {
        let text = "passwd: files systemd\ngroup: files [SUCCESS=merge] systemd\nhosts: files mdns4_minimal [NOTFOUND=return] dns myhostname # x\n#shadow: ldap\n";
        assert_eq!(
            nss_services(text),
            vec!["files", "systemd", "mdns4_minimal", "dns", "myhostname"]
        );
    }
}
