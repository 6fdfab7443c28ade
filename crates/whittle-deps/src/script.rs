//! `#!` lines, parsed the way the kernel's `binfmt_script` does, and the command line of
//! `/usr/bin/env` in them.
//!
//! Why it matters: a script's interpreter is as much a dependency as a `DT_NEEDED` library,
//! and `#!/usr/bin/env python3` hides the real one behind a PATH lookup that happens at run
//! time with the image's `PATH`.

/// The kernel reads this many bytes of a script to find the `#!` line (`BINPRM_BUF_SIZE`).
pub const BINPRM_BUF_SIZE: usize = 256;

/// A parsed `#!` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shebang {
    /// The interpreter path as written.
    pub interpreter: String,
    /// The optional single argument (the kernel passes the rest of the line as one word).
    pub arg: Option<String>,
}

/// Why a `#!` line would make `execve` fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShebangError {
    /// `#!` with nothing after it.
    Empty,
    /// The interpreter path does not fit in the kernel's buffer.
    TooLong,
    /// Not UTF-8 (whittle keeps paths as strings).
    NotUtf8,
}

/// Parses the start of a file that begins with `#!`. Returns `None` if it does not.
pub fn parse_shebang(head: &[u8]) -> Option<Result<Shebang, ShebangError>> {
    if !head.starts_with(b"#!") {
        return None;
    }
    let buf = &head[..head.len().min(BINPRM_BUF_SIZE)];
    let (line, complete) = match buf.iter().position(|&b| b == b'\n') {
        Some(i) => (&buf[2..i], true),
        None => (&buf[2..], buf.len() < BINPRM_BUF_SIZE),
    };
    // A NUL ends the line for the kernel too.
    let line = match line.iter().position(|&b| b == 0) {
        Some(i) => &line[..i],
        None => line,
    };
    let is_blank = |b: &u8| *b == b' ' || *b == b'\t';
    let start = line.iter().position(|b| !is_blank(b)).unwrap_or(line.len());
    let line = &line[start..];
    let end = line.iter().rposition(|b| !is_blank(b)).map_or(0, |i| i + 1);
    let line = &line[..end];
    if line.is_empty() {
        return Some(Err(ShebangError::Empty));
    }
    let interp_end = line.iter().position(is_blank).unwrap_or(line.len());
    // Since Linux 5.1 a truncated interpreter name is ENOEXEC rather than a wrong path.
    if !complete && interp_end == line.len() {
        return Some(Err(ShebangError::TooLong));
    }
    let Ok(interpreter) = std::str::from_utf8(&line[..interp_end]) else {
        return Some(Err(ShebangError::NotUtf8));
    };
    let rest = &line[interp_end..];
    let rest_start = rest.iter().position(|b| !is_blank(b)).unwrap_or(rest.len());
    let arg = &rest[rest_start..];
    let arg = if arg.is_empty() {
        None
    } else {
        match std::str::from_utf8(arg) {
            Ok(a) => Some(a.to_owned()),
            Err(_) => return Some(Err(ShebangError::NotUtf8)),
        }
    };
    Some(Ok(Shebang {
        interpreter: interpreter.to_owned(),
        arg,
    }))
}

/// The command `env` runs, given its arguments (after `argv[0]`), following GNU coreutils
/// and busybox: options (`-i`, `-0`, `-v`, `-u NAME`, `-C DIR`, `-P PATH`, `-S STRING` and
/// their long forms), then `NAME=value` assignments, then the command. `-S` splits its
/// string like a simplified shell (quotes and backslashes, no variable expansion).
pub fn env_command(args: &[String]) -> Option<String> {
    let mut queue: std::collections::VecDeque<String> = args.iter().cloned().collect();
    while let Some(a) = queue.pop_front() {
        if a == "--" {
            return queue.into_iter().find(|w| !is_assignment(w));
        }
        if let Some(s) = a
            .strip_prefix("--split-string=")
            .or_else(|| a.strip_prefix("-S"))
        {
            let s = if s.is_empty() {
                queue.pop_front().unwrap_or_default()
            } else {
                s.to_owned()
            };
            for (i, w) in split_s(&s).into_iter().enumerate() {
                queue.insert(i, w);
            }
            continue;
        }
        if a == "--split-string" {
            let s = queue.pop_front().unwrap_or_default();
            for (i, w) in split_s(&s).into_iter().enumerate() {
                queue.insert(i, w);
            }
            continue;
        }
        if a.starts_with("--") {
            // Long options with a separate argument.
            if matches!(a.as_str(), "--unset" | "--chdir") {
                queue.pop_front();
            }
            continue;
        }
        if a.starts_with('-') && a.len() > 1 {
            // Short options; -u, -C and -P take an argument (attached or next word).
            let opts = &a[1..];
            if let Some(i) = opts.find(['u', 'C', 'P']) {
                if i + 1 == opts.len() {
                    queue.pop_front();
                }
            }
            continue;
        }
        if a == "-" {
            continue;
        }
        if is_assignment(&a) {
            continue;
        }
        return Some(a);
    }
    None
}

fn is_assignment(w: &str) -> bool {
    match w.split_once('=') {
        Some((name, _)) => !name.is_empty() && !name.contains('/'),
        None => false,
    }
}

/// Splits an `env -S` string: whitespace separates, single and double quotes group,
/// backslash escapes; `#` at the start of a word ends the string.
fn split_s(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '#' if !in_word => break,
            '\'' => {
                in_word = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    cur.push(c);
                }
            }
            '"' => {
                in_word = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => {
                            if let Some(n) = chars.next() {
                                cur.push(n);
                            }
                        }
                        _ => cur.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(n) = chars.next() {
                    match n {
                        '_' => {
                            words.push(std::mem::take(&mut cur));
                            in_word = false;
                        }
                        'c' => break,
                        _ => cur.push(n),
                    }
                }
            }
            _ => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

/// For an entrypoint like `sh -c "exec nginx -g 'daemon off;'"` (Docker's shell form),
/// the first command of the script when it is a plain word: after `exec` and leading
/// `NAME=value` assignments, and only if it has no shell syntax that would make the
/// guess unreliable.
pub fn shell_c_command(script: &str) -> Option<String> {
    let mut words = script.split_whitespace();
    let mut word = words.next()?;
    loop {
        if word == "exec" || is_assignment(word) {
            word = words.next()?;
            continue;
        }
        break;
    }
    let plain = word
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+@%,:".contains(c));
    (plain && !word.is_empty()).then(|| word.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sb(s: &str) -> Shebang {
        parse_shebang(s.as_bytes()).unwrap().unwrap()
    }

    #[test]
    fn kernel_style_shebangs() {
        assert_eq!(
            sb("#!/bin/sh\necho"),
            Shebang {
                interpreter: "/bin/sh".into(),
                arg: None
            }
        );
        assert_eq!(
            sb("#! /usr/bin/env  python3 -u  \n"),
            Shebang {
                interpreter: "/usr/bin/env".into(),
                arg: Some("python3 -u".into())
            }
        );
        assert_eq!(sb("#!/bin/sh\0junk\n").interpreter, "/bin/sh");
        assert_eq!(sb("#!/usr/bin/perl -w\r\n").arg.as_deref(), Some("-w\r"));
        assert!(parse_shebang(b"#!\n").unwrap().is_err());
        assert!(parse_shebang(b"\x7fELF").is_none());
        let long = format!("#!/{}", "a".repeat(300));
        assert_eq!(
            parse_shebang(long.as_bytes()).unwrap(),
            Err(ShebangError::TooLong)
        );
    }

    #[test]
    fn env_command_lines() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(env_command(&v(&["python3"])).as_deref(), Some("python3"));
        // Without -S the kernel's single argument is one (odd) command name.
        assert_eq!(
            env_command(&v(&["python3 -u"])).as_deref(),
            Some("python3 -u")
        );
        assert_eq!(
            env_command(&v(&["-S python3 -u"])).as_deref(),
            Some("python3")
        );
        assert_eq!(
            env_command(&v(&["-S A=1 'my tool' x"])).as_deref(),
            Some("my tool")
        );
        assert_eq!(
            env_command(&v(&["-i", "-u", "X", "A=b", "node"])).as_deref(),
            Some("node")
        );
        assert_eq!(
            env_command(&v(&["--split-string=ruby -w"])).as_deref(),
            Some("ruby")
        );
        assert_eq!(env_command(&v(&["-i"])), None);
    }

    #[test]
    fn shell_form_entrypoints() {
        assert_eq!(
            shell_c_command("exec nginx -g 'daemon off;'").as_deref(),
            Some("nginx")
        );
        assert_eq!(
            shell_c_command("A=1 /app/run.sh").as_deref(),
            Some("/app/run.sh")
        );
        assert_eq!(shell_c_command("$(which x)"), None);
    }
}
