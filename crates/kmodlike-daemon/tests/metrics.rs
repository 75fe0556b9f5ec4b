//! Metrics: the daemon serves io.systemd.Metrics (List, Describe, both requiring `more`) on its
//! socket, and `kmodctl metrics` prints OpenMetrics text with loads, unloads, calls, crashes per
//! module and signal, quarantines, calls in flight, connections, taint and a latency histogram.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// Send one request and read replies until one without `continues`.
fn exchange(socket: &std::path::Path, request: Value) -> Vec<Value> {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request.to_string().as_bytes()).unwrap();
    s.write_all(b"\0").unwrap();
    let mut replies = Vec::new();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        while let Some(end) = buf.iter().position(|&b| b == 0) {
            let msg: Vec<u8> = buf.drain(..=end).collect();
            let v: Value = serde_json::from_slice(&msg[..end]).unwrap();
            let more = v["continues"] == true;
            replies.push(v);
            if !more {
                return replies;
            }
        }
        let n = s.read(&mut chunk).expect("a reply");
        assert!(n > 0, "the daemon closed the connection: {replies:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[test]
fn the_systemd_metrics_interface_lists_and_describes_with_more() {
    let d = Daemon::start(&[], &[]);
    let e = exchange(&d.socket, json!({ "method": "io.systemd.Metrics.List" }));
    assert_eq!(e[0]["error"], "org.varlink.service.ExpectedMore");

    let described =
        exchange(&d.socket, json!({ "method": "io.systemd.Metrics.Describe", "more": true }));
    assert!(described.len() > 5, "{described:?}");
    assert!(described[..described.len() - 1].iter().all(|r| r["continues"] == true));
    assert!(described.last().unwrap().get("continues").is_none_or(|c| c == false));
    for r in &described {
        let p = &r["parameters"];
        assert!(p["name"].as_str().unwrap().starts_with("io.kmodlike.Loader."), "{p}");
        assert!(!p["description"].as_str().unwrap().is_empty());
        assert!(p["type"] == "counter" || p["type"] == "gauge", "{p}");
    }
    let listed = exchange(&d.socket, json!({ "method": "io.systemd.Metrics.List", "more": true }));
    let connections = listed
        .iter()
        .find(|r| r["parameters"]["name"] == "io.kmodlike.Loader.connections")
        .expect("the connections gauge");
    // This connection at least (earlier ones may not be reaped yet).
    assert!(connections["parameters"]["value"].as_u64().unwrap() >= 1, "{connections}");

    let info = exchange(&d.socket, json!({ "method": "org.varlink.service.GetInfo" }));
    assert_eq!(info[0]["parameters"]["interfaces"][2], "io.systemd.Metrics");
    let desc = exchange(
        &d.socket,
        json!({ "method": "org.varlink.service.GetInterfaceDescription",
                "parameters": { "interface": "io.systemd.Metrics" } }),
    );
    let text = desc[0]["parameters"]["description"].as_str().unwrap();
    assert!(text.contains("interface io.systemd.Metrics"), "{text}");
    assert!(text.contains("method Describe() -> ("), "{text}");
    assert!(text.contains("error NoSuchMetric ()"), "{text}");
}

#[test]
fn kmodctl_metrics_prints_openmetrics_for_loads_calls_crashes_and_latency() {
    let hello = hello_module();
    let segv = crash_module("metrics_segv", libc::SIGSEGV, &[]);
    let d = Daemon::start(
        &[(&hello, "hello.so"), (&segv, "metrics_segv.so")],
        &["--crash-loop-max", "1"],
    );
    d.ctl(&["load", "hello"]).ok();
    d.ctl(&["call", "hello", "mod_hello"]).ok();
    d.ctl(&["call", "hello", "mod_hello"]).ok();
    d.ctl(&["load", "metrics_segv"]).ok();
    assert_eq!(d.ctl(&["call", "metrics_segv", "crash"]).code(), 1);
    d.ctl(&["unload", "hello"]).ok();

    let out = d.ctl(&["metrics"]);
    let text = out.ok();
    for line in [
        "# TYPE kmodlike_loads counter",
        "kmodlike_loads_total{module=\"hello\"} 1",
        "kmodlike_unloads_total{module=\"hello\"} 1",
        "kmodlike_calls_total{module=\"hello\"} 2",
        "kmodlike_calls_total{module=\"metrics_segv\"} 1",
        "kmodlike_crashes_total{module=\"metrics_segv\",signal=\"SIGSEGV\"} 1",
        "kmodlike_quarantines_total{module=\"metrics_segv\"} 1",
        "kmodlike_calls_in_flight{module=\"hello\"} 0",
        "kmodlike_tainted 0",
        "# TYPE kmodlike_call_duration_seconds histogram",
        "kmodlike_call_duration_seconds_bucket{module=\"hello\",le=\"+Inf\"} 2",
        "kmodlike_call_duration_seconds_count{module=\"hello\"} 2",
    ] {
        assert!(text.lines().any(|l| l == line), "no line {line:?} in:\n{text}");
    }
    assert!(text.ends_with("# EOF\n"), "{text}");
    let conns = text.lines().find_map(|l| l.strip_prefix("kmodlike_connections ")).unwrap();
    assert!(conns.parse::<u64>().unwrap() >= 1, "{text}");
    // Buckets are cumulative: each at most the next.
    let buckets: Vec<u64> = text
        .lines()
        .filter(|l| l.starts_with("kmodlike_call_duration_seconds_bucket{module=\"hello\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(buckets.len(), 9, "{text}");
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");

    let j = d.ctl(&["--json", "metrics"]).json();
    assert!(j["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["name"] == "io.kmodlike.Loader.callsTotal"
            && m["object"] == "hello"
            && m["value"] == 2));
}
