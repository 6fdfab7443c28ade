//! The sandbox against real images: recording accuracy (strace as the oracle), isolation,
//! limits, bad input, and cleanup after every run.

mod common;

use std::time::Duration;

use common::*;
use whittle_sandbox::{run, Options, Outcome, Probe};

fn opts() -> Options {
    Options {
        timeout: Duration::from_secs(60),
        grace: Duration::from_secs(3),
        ..Options::default()
    }
}

#[test]
fn nginx_get_root() {
    require_root();
    let _g = serial();
    let img = prepared("nginx");
    let before = snapshot();
    let rep = run(img, &opts()).unwrap();
    assert_eq!(rep.outcome, Outcome::Ok, "{:?}", rep.error);
    assert_eq!(rep.probes.len(), 1);
    assert_eq!(rep.probes[0].status, Some(200));
    let _ = Probe::Exec(String::new());
    assert_clean(&before);
}
