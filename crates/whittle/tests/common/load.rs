//! A paced HTTP/1.1 load generator for loopback addresses: some threads keep one connection
//! alive, others open a new connection per request, and every non-2xx answer and every socket
//! error is counted (with the first few kept for the failure message).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the load saw.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub ok: u64,
    pub non_2xx: u64,
    pub errors: u64,
    /// The first failures, for the assertion message.
    pub first: Vec<String>,
}

impl Tally {
    fn add(&mut self, o: Tally) {
        self.ok += o.ok;
        self.non_2xx += o.non_2xx;
        self.errors += o.errors;
        self.first.extend(o.first);
        self.first.truncate(10);
    }
    fn fail(&mut self, what: String, status: bool) {
        if status {
            self.non_2xx += 1;
        } else {
            self.errors += 1;
        }
        if self.first.len() < 10 {
            self.first.push(what);
        }
    }
}

/// Running load; [`Load::stop`] ends it and sums up.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Tally>>,
}

impl Load {
    /// `rate` requests per second in total to `http://ADDR/`, spread over `keepalive`
    /// threads that reuse one connection and `fresh` threads that connect for each request.
    pub fn start(addr: &str, rate: u32, keepalive: usize, fresh: usize) -> Load {
        assert!(
            addr.starts_with("127."),
            "load goes to loopback only, not {addr}"
        );
        let stop = Arc::new(AtomicBool::new(false));
        let n = (keepalive + fresh).max(1);
        let gap = Duration::from_secs_f64(n as f64 / f64::from(rate.max(1)));
        let mut threads = Vec::new();
        for i in 0..n {
            let stop = stop.clone();
            let addr = addr.to_string();
            let keep = i < keepalive;
            threads.push(std::thread::spawn(move || worker(&addr, keep, gap, &stop)));
        }
        Load { stop, threads }
    }

    pub fn stop(self) -> Tally {
        self.stop.store(true, Ordering::SeqCst);
        let mut t = Tally::default();
        for h in self.threads {
            t.add(h.join().expect("load thread"));
        }
        t
    }
}

fn worker(addr: &str, keep: bool, gap: Duration, stop: &AtomicBool) -> Tally {
    let mut t = Tally::default();
    let mut conn: Option<BufReader<TcpStream>> = None;
    let mut next = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        if conn.is_none() {
            match TcpStream::connect(addr) {
                Ok(s) => {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(15)));
                    let _ = s.set_nodelay(true);
                    conn = Some(BufReader::new(s));
                }
                Err(e) => {
                    t.fail(format!("connect: {e}"), false);
                    conn = None;
                }
            }
        }
        if let Some(c) = conn.as_mut() {
            match request(c, addr, keep) {
                Ok((status, close)) => {
                    if (200..300).contains(&status) {
                        t.ok += 1;
                    } else {
                        t.fail(format!("HTTP {status}"), true);
                    }
                    if close || !keep {
                        conn = None;
                    }
                }
                Err(e) => {
                    t.fail(
                        format!("{}: {e}", if keep { "keep-alive" } else { "new" }),
                        false,
                    );
                    conn = None;
                }
            }
        }
        next += gap;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
    t
}

/// One GET; returns the status and whether the server closes the connection.
fn request(c: &mut BufReader<TcpStream>, addr: &str, keep: bool) -> std::io::Result<(u16, bool)> {
    let conn = if keep { "keep-alive" } else { "close" };
    write!(
        c.get_mut(),
        "GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: {conn}\r\n\r\n"
    )?;
    let mut line = String::new();
    if c.read_line(&mut line)? == 0 {
        return Err(std::io::Error::other("connection closed before a response"));
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut len = 0usize;
    let mut close = false;
    loop {
        line.clear();
        if c.read_line(&mut line)? == 0 {
            return Err(std::io::Error::other("connection closed in the headers"));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let lower = l.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("connection:") && lower.contains("close") {
            close = true;
        }
    }
    let mut body = vec![0u8; len];
    c.read_exact(&mut body)?;
    Ok((status, close))
}
