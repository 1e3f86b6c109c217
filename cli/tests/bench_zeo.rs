//! `zodbrs bench zeo`, the load generator both servers are measured with,
//! against Python's `runzeo` and `zodbrs serve`, in both encodings: its
//! loads count what the server answered (revisions, and `POSKeyError`s
//! for oids the database lacks), and they keep reading while another
//! connection commits, whose invalidations arrive between the replies.
//!
//! Without Python the `runzeo` half skips with a notice (under `CI=true`
//! it fails instead).

#![allow(clippy::unwrap_used, reason = "tests")]

mod run;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use zodb_it::zeo::{ServerKind, ServerOptions, ZeoServer};

/// `(ops, misses)` from a `bench zeo` line such as `… (1234 ops, 5
/// POSKeyErrors)`.
fn counts(line: &str) -> (u64, u64) {
    let tail = line
        .rsplit_once('(')
        .unwrap_or_else(|| panic!("no counts in {line:?}"))
        .1;
    let mut words = tail.split_whitespace();
    let ops = words.next().unwrap().parse().unwrap();
    assert_eq!(words.next(), Some("ops,"), "{line:?}");
    let misses = words.next().unwrap().parse().unwrap();
    (ops, misses)
}

fn bench(server: &ZeoServer, extra: &[&str]) -> (u64, u64) {
    let addr = format!("127.0.0.1:{}", server.port());
    let mut args = vec!["bench", "zeo", "-a", &addr, "--clients", "2"];
    args.extend_from_slice(extra);
    let out = run::text(&args);
    counts(out.trim())
}

fn servers(opts: &ServerOptions) -> Vec<ZeoServer> {
    let db = zodb_it::project_fixtures().join("history/Data.fs");
    let ours = ServerKind::Zodbrs(PathBuf::from(env!("CARGO_BIN_EXE_zodbrs")));
    [ServerKind::RunZeo, ours]
        .into_iter()
        .filter_map(|k| ZeoServer::start(k, Some(&db), opts))
        .collect()
}

#[test]
fn loads_count_revisions_and_missing_oids() {
    for msgpack in [false, true] {
        let opts = ServerOptions {
            msgpack,
            ..Default::default()
        };
        for server in servers(&opts) {
            let what = format!("{:?}, msgpack {msgpack}", server.kind());
            // Oid 0, the root, is always there.
            let (ops, misses) = bench(&server, &["--seconds", "0.3", "--oids", "1"]);
            assert!(ops > 0, "{what}: no loads");
            assert_eq!(misses, 0, "{what}: the root was missing");
            // The fixture has a few dozen objects: most of a million oids
            // are POSKeyErrors, and some are not.
            let (ops, misses) = bench(&server, &["--seconds", "0.3", "--oids", "1000000"]);
            assert!(misses > 0, "{what}: no POSKeyError in {ops} loads");
            assert!(
                misses < ops || ops < 50,
                "{what}: every one of {ops} loads missed"
            );
        }
    }
}

#[test]
fn loads_read_on_while_another_connection_commits() {
    for server in servers(&Default::default()) {
        let what = format!("{:?}", server.kind());
        let addr = format!("127.0.0.1:{}", server.port());
        let writer = Command::new(env!("CARGO_BIN_EXE_zodbrs"))
            .args(["bench", "zeo", "-a", &addr, "--clients", "2"])
            .args(["--seconds", "1.5", "--write"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The loads start while the writer commits (it runs longer).
        std::thread::sleep(std::time::Duration::from_millis(100));
        let loads = std::thread::spawn({
            let addr = addr.clone();
            move || {
                run::text(&[
                    "bench",
                    "zeo",
                    "-a",
                    &addr,
                    "--clients",
                    "2",
                    "--seconds",
                    "0.8",
                    "--oids",
                    "1",
                ])
            }
        });
        let (ops, misses) = counts(loads.join().unwrap().trim());
        assert!(ops > 0, "{what}: no loads");
        assert_eq!(misses, 0, "{what}");
        let writer = writer.wait_with_output().unwrap();
        assert!(
            writer.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&writer.stderr)
        );
        let (commits, _) = counts(String::from_utf8_lossy(&writer.stdout).trim());
        assert!(commits > 0, "{what}: nothing committed");
    }
}
