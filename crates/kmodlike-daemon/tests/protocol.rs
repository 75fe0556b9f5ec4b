//! The wire: raw Varlink over the socket, bad input of every kind, connection pressure, and
//! clients nobody here wrote (socat, the PyPI `varlink` package).

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::*;

const MIB: usize = 1 << 20;

fn connect(socket: &Path) -> UnixStream {
    let s = UnixStream::connect(socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn send(s: &mut UnixStream, v: &Value) {
    let mut bytes = serde_json::to_vec(v).unwrap();
    bytes.push(0);
    s.write_all(&bytes).unwrap();
}

/// Read one NUL-terminated reply (fails the test after the read timeout).
fn reply(s: &mut UnixStream) -> Value {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        let n = s.read(&mut byte).expect("a reply before the timeout");
        assert_eq!(
            n,
            1,
            "connection closed before a complete reply: {:?}",
            String::from_utf8_lossy(&buf)
        );
        if byte[0] == 0 {
            return serde_json::from_slice(&buf).expect("a JSON reply");
        }
        buf.push(byte[0]);
    }
}

/// Whether the daemon closes `s` within `deadline` (EOF, or a reset when it closed with our
/// unread bytes still queued), discarding anything else it sends.
fn closed_within(s: &mut UnixStream, deadline: Duration) -> bool {
    s.set_read_timeout(Some(deadline)).unwrap();
    let mut sink = Vec::new();
    match s.read_to_end(&mut sink) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

fn call(method: &str, parameters: Value) -> Value {
    json!({ "method": format!("io.kmodlike.Loader.{method}"), "parameters": parameters })
}

/// A normal client is served, and quickly.
fn assert_served_at_once(d: &Daemon) {
    let started = Instant::now();
    d.ctl(&["ping"]).ok();
    assert!(started.elapsed() < Duration::from_secs(5), "ping took {:?}", started.elapsed());
}

#[test]
fn invalid_json_gets_invalid_parameter_and_the_connection_goes_on() {
    let d = Daemon::start(&[], &[]);
    let mut s = connect(&d.socket);
    s.write_all(b"{\"method\": io.kmodlike\0").unwrap();
    let r = reply(&mut s);
    assert_eq!(r["error"], "org.varlink.service.InvalidParameter");
    assert_eq!(r["parameters"]["parameter"], "request");
    s.write_all(b"[1,2,3]\0").unwrap();
    assert_eq!(reply(&mut s)["error"], "org.varlink.service.InvalidParameter");
    send(&mut s, &call("Ping", json!({})));
    assert_eq!(reply(&mut s)["parameters"]["pid"], d.pid());
    assert_served_at_once(&d);
}

#[test]
fn unknown_methods_and_interfaces() {
    let d = Daemon::start(&[], &[]);
    let mut s = connect(&d.socket);
    send(&mut s, &call("Explode", json!({})));
    let r = reply(&mut s);
    assert_eq!(r["error"], "org.varlink.service.MethodNotFound");
    assert_eq!(r["parameters"]["method"], "io.kmodlike.Loader.Explode");
    send(&mut s, &json!({"method": "com.example.Nothing.Here"}));
    let r = reply(&mut s);
    assert_eq!(r["error"], "org.varlink.service.InterfaceNotFound");
    assert_eq!(r["parameters"]["interface"], "com.example.Nothing");
    send(&mut s, &call("Monitor", json!({})));
    assert_eq!(reply(&mut s)["error"], "org.varlink.service.ExpectedMore");
    assert_served_at_once(&d);
}

#[test]
fn wrong_parameter_types_name_the_parameter() {
    let d = Daemon::start(&[], &[]);
    let mut s = connect(&d.socket);
    let cases = [
        (call("Load", json!({"spec": 5})), "spec"),
        (call("Load", json!({})), "spec"),
        (call("Unload", json!({"module": "x", "force": "yes"})), "force"),
        (
            call(
                "Call",
                json!({"module": "x", "symbol": "f", "signature": "int(int)", "arg": "seven"}),
            ),
            "arg",
        ),
        (
            call(
                "Call",
                json!({"module": "x", "symbol": "f", "signature": "int(int)", "arg": 1u64 << 33}),
            ),
            "arg",
        ),
        (
            call("Call", json!({"module": "x", "symbol": "f", "signature": "double(char*)"})),
            "signature",
        ),
        (
            call("Call", json!({"module": "x", "symbol": "f", "signature": "void()", "arg": 1})),
            "arg",
        ),
        (call("List", json!({"verbose": true})), "verbose"),
        (json!({"method": "io.kmodlike.Loader.Ping", "parameters": "none"}), "parameters"),
        (json!({"method": "io.kmodlike.Loader.Ping", "more": 1}), "more"),
    ];
    for (request, parameter) in cases {
        send(&mut s, &request);
        let r = reply(&mut s);
        assert_eq!(r["error"], "org.varlink.service.InvalidParameter", "{request} -> {r}");
        assert_eq!(r["parameters"]["parameter"], parameter, "{request} -> {r}");
    }
    assert_served_at_once(&d);
}

#[test]
fn oneway_runs_the_call_and_sends_nothing() {
    let hello = hello_module();
    let mut d = Daemon::start(&[(&hello, "hello.so")], &[]);
    let mut s = connect(&d.socket);
    let mut req = call("Load", json!({"spec": "hello"}));
    req["oneway"] = json!(true);
    send(&mut s, &req);
    send(&mut s, &call("Ping", json!({})));
    let r = reply(&mut s);
    assert_eq!(r["parameters"]["pid"], d.pid(), "the first reply is Ping's: {r}");
    d.wait_log("module initializing", Duration::from_secs(10));
}

/// Write `bytes` from another thread (the daemon stops reading and closes mid-way, so the
/// write may fail: that is expected).
fn write_in_background(s: &UnixStream, bytes: Vec<u8>) -> std::thread::JoinHandle<()> {
    let mut w = s.try_clone().unwrap();
    std::thread::spawn(move || {
        let _ = w.write_all(&bytes);
    })
}

#[test]
fn message_over_one_mib_gets_request_too_large_then_a_close() {
    let d = Daemon::start(&[], &[]);
    let mut s = connect(&d.socket);
    let mut big =
        serde_json::to_vec(&call("Load", json!({"spec": "x".repeat(MIB + MIB / 2)}))).unwrap();
    big.push(0);
    let w = write_in_background(&s, big);
    let r = reply(&mut s);
    assert_eq!(r["error"], "io.kmodlike.Loader.RequestTooLarge");
    assert_eq!(r["parameters"]["limit"], MIB);
    assert!(closed_within(&mut s, Duration::from_secs(10)));
    w.join().unwrap();
    assert_served_at_once(&d);
}

#[test]
fn no_nul_before_the_limit_gets_request_too_large_then_a_close() {
    let d = Daemon::start(&[], &[]);
    let mut s = connect(&d.socket);
    let w = write_in_background(&s, vec![b' '; MIB + 4096]);
    let r = reply(&mut s);
    assert_eq!(r["error"], "io.kmodlike.Loader.RequestTooLarge");
    assert!(closed_within(&mut s, Duration::from_secs(10)));
    w.join().unwrap();
    assert_served_at_once(&d);
}

#[test]
fn stalled_half_message_is_closed_after_the_read_timeout_and_costs_others_nothing() {
    let d = Daemon::start(&[], &["--read-timeout", "2"]);
    let mut s = connect(&d.socket);
    let started = Instant::now();
    s.write_all(b"{\"method\":\"io.kmodlike.Loader.Pi").unwrap();
    // While it stalls, others are served at once.
    assert_served_at_once(&d);
    assert!(started.elapsed() < Duration::from_secs(2), "served before the stall timed out");
    assert!(closed_within(&mut s, Duration::from_secs(10)), "the stalled client is closed");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1900), "closed by the timeout, after {waited:?}");
    assert!(waited < Duration::from_secs(8), "closed by the timeout, after {waited:?}");
}

#[test]
fn two_hundred_idle_connections_do_not_lock_out_a_new_client() {
    let d = Daemon::start(&[], &[]);
    let mut idle: Vec<UnixStream> = (0..200).map(|_| connect(&d.socket)).collect();
    assert_served_at_once(&d);
    // Room was made by closing the connections idle the longest.
    assert!(closed_within(&mut idle[0], Duration::from_secs(5)), "the oldest idle one was closed");
    let status = d.ctl(&["--json", "status"]).json();
    assert!(status["connections"].as_u64().unwrap() <= 64, "{status}");
    // A recent idle connection still works.
    let last = idle.last_mut().unwrap();
    send(last, &call("Ping", json!({})));
    assert_eq!(reply(last)["parameters"]["pid"], d.pid());
}

/// Run socat with `input` on its stdin; returns the NUL-separated replies.
fn socat_exchange(socat: &Path, socket: &Path, input: &[u8]) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let input_file = dir.path().join("input");
    std::fs::write(&input_file, input).unwrap();
    let mut cmd = Command::new(socat);
    // -t 3: after stdin ends, wait up to 3 s for the replies before closing.
    cmd.args(["-t", "3", "STDIO"]).arg(format!("UNIX-CONNECT:{}", socket.display()));
    cmd.stdin(std::fs::File::open(&input_file).unwrap());
    let mut child = cmd.stdout(std::process::Stdio::piped()).spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        out
    });
    let status = wait_deadline(&mut child, Duration::from_secs(30)).expect("socat finishes");
    assert!(status.success());
    let out = reader.join().unwrap();
    out.split(|b| *b == 0)
        .filter(|m| !m.is_empty())
        .map(|m| serde_json::from_slice(m).expect("a JSON reply"))
        .collect()
}

#[test]
fn socat_sends_pipelined_raw_requests() {
    let Some(socat) = socat() else { return };
    let hello = hello_module();
    let d = Daemon::start(&[(&hello, "hello.so")], &["hello"]);
    let mut input = Vec::new();
    for req in [
        call("Ping", json!({})),
        json!({"method": "org.varlink.service.GetInfo"}),
        call("List", json!({})),
        call("Call", json!({"module": "hello", "symbol": "mod_hello", "signature": "void()"})),
        call("Nope", json!({})),
    ] {
        input.extend(serde_json::to_vec(&req).unwrap());
        input.push(0);
    }
    let replies = socat_exchange(&socat, &d.socket, &input);
    assert_eq!(replies.len(), 5, "{replies:?}");
    assert_eq!(replies[0]["parameters"]["pid"], d.pid());
    assert_eq!(
        replies[1]["parameters"]["interfaces"],
        json!(["org.varlink.service", "io.kmodlike.Loader", "io.systemd.Metrics"])
    );
    assert_eq!(replies[2]["parameters"]["modules"][0]["name"], "hello");
    assert_eq!(replies[3]["parameters"]["result"], Value::Null);
    assert_eq!(replies[4]["error"], "org.varlink.service.MethodNotFound");
}

fn python(py: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(py);
    cmd.args(args);
    run_with_deadline(&mut cmd, Duration::from_secs(60))
}

#[test]
fn the_pypi_varlink_client_calls_the_daemon() {
    let Some(py) = varlink_python() else { return };
    let hello = hello_module();
    let segv = crash_module("py_segv", libc::SIGSEGV, &[]);
    let d = Daemon::start(&[(&hello, "hello.so"), (&segv, "py_segv.so")], &[]);
    let address = format!("unix:{}", d.socket.display());

    // GetInfo.
    let out = python(&py, &["-m", "varlink.cli", "info", &address]);
    assert!(out.stderr.is_empty(), "{out:?}");
    assert!(
        out.stdout.contains("io.kmodlike.Loader") && out.stdout.contains("kmodlike"),
        "{out:?}"
    );

    // GetInterfaceDescription, parsed by the client's own interface parser.
    let out = python(&py, &["-m", "varlink.cli", "help", &format!("{address}/io.kmodlike.Loader")]);
    assert!(out.stderr.is_empty(), "{out:?}");
    assert!(
        out.stdout.contains("method Call(") && out.stdout.contains("error ModuleCrashed"),
        "{out:?}"
    );

    // Load, List, Call through the CLI; it prints the reply parameters as JSON.
    let call = |method: &str, params: Value| {
        python(
            &py,
            &[
                "-m",
                "varlink.cli",
                "call",
                &format!("{address}/io.kmodlike.Loader.{method}"),
                &params.to_string(),
            ],
        )
    };
    let out = call("Load", json!({"spec": "hello"}));
    assert!(out.stderr.is_empty(), "{out:?}");
    let loaded: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(loaded["module"]["name"], "hello");
    assert_eq!(loaded["hello_called"], true);
    let out = call("List", json!({}));
    assert!(out.stderr.is_empty(), "{out:?}");
    assert_eq!(serde_json::from_str::<Value>(&out.stdout).unwrap()["modules"][0]["name"], "hello");
    let out =
        call("Call", json!({"module": "hello", "symbol": "mod_hello", "signature": "void()"}));
    assert!(out.stderr.is_empty(), "{out:?}");

    // An error reply: the CLI exits 0, so look at stderr.
    call("Load", json!({"spec": "py_segv"}));
    let out = call("Call", json!({"module": "py_segv", "symbol": "crash", "signature": "int()"}));
    assert!(out.stderr.contains("io.kmodlike.Loader.ModuleCrashed"), "{out:?}");
    assert!(out.stderr.contains("SIGSEGV"), "{out:?}");

    // The client library proper: typed calls checked against our interface description.
    let script = format!(
        r#"
import varlink
with varlink.Client.new_with_address("{address}") as client:
    with client.open("io.kmodlike.Loader") as loader:
        print(loader.Ping()["pid"])
        # A null optional field is left out by this client.
        print(loader.Call("hello", "mod_hello", "void()").get("result"))
        try:
            loader.Unload("no_such_module")
        except varlink.VarlinkError as e:
            print(e.error(), e.parameters()["module"])
"#
    );
    let out = python(&py, &["-c", &script]);
    assert!(out.stderr.is_empty(), "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], d.pid().to_string(), "{out:?}");
    assert_eq!(lines[1], "None");
    assert_eq!(lines[2], "io.kmodlike.Loader.ModuleNotLoaded no_such_module");
}

#[test]
fn the_pypi_varlink_client_sees_the_backtrace_fields_and_clear_taint() {
    let Some(py) = varlink_python() else { return };
    let segv = crash_module("py_bt_segv", libc::SIGSEGV, &[]);
    let d = Daemon::start(&[(&segv, "py_bt_segv.so")], &["py_bt_segv"]);
    let address = format!("unix:{}", d.socket.display());

    // The client's own interface parser accepts the new types, and shows them.
    let out = python(&py, &["-m", "varlink.cli", "help", &format!("{address}/io.kmodlike.Loader")]);
    assert!(out.stderr.is_empty(), "{out:?}");
    for decl in [
        "type CrashFrame",
        "frames: ?[]CrashFrame",
        "called: ?string",
        "probe_pid: ?int",
        "abort_message: ?string",
        "method ClearTaint() -> (acknowledged: TaintAck)",
        "taint_acks: ?[]TaintAck",
        "error NotTainted",
    ] {
        assert!(out.stdout.contains(decl), "{decl} missing: {out:?}");
    }

    // Typed calls: a crash report carries the fields (the client leaves a null optional field
    // out, so present means set); frames, when set, are CrashFrame objects.
    let script = format!(
        r#"
import varlink
with varlink.Client.new_with_address("{address}") as client:
    with client.open("io.kmodlike.Loader") as loader:
        try:
            loader.Call("py_bt_segv", "crash", "int()")
        except varlink.VarlinkError as e:
            report = e.parameters()["report"]
            print(e.error(), report["module"])
        crash = loader.Crashes()["crashes"][0]
        frames = crash.get("frames") or []
        print(len(frames), all(f["pc"].startswith("0x") and "guessed" in f for f in frames))
        print(crash.get("called", "-"), crash.get("probe_pid", "-"))
        print(loader.Status()["taint_acks"])
        try:
            loader.ClearTaint()
        except varlink.VarlinkError as e:
            print(e.error())
"#
    );
    let out = python(&py, &["-c", &script]);
    assert!(out.stderr.is_empty(), "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "io.kmodlike.Loader.ModuleCrashed py_bt_segv", "{out:?}");
    assert!(lines[1].ends_with(" True"), "{out:?}");
    let called = lines[2].split(' ').next().unwrap();
    assert!(called == "-" || called == "crash", "{out:?}");
    assert!(lines[2].ends_with(" -"), "a call crash has no probe pid: {out:?}");
    assert_eq!(lines[3], "[]");
    assert_eq!(lines[4], "io.kmodlike.Loader.NotTainted");
}
