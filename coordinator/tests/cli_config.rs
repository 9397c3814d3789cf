//! Role settings as an SRE gives them: the real binary with a config file,
//! flags and `STRATA_*` variables. Each case stops at a check that runs
//! before anything connects, so which error comes out shows which value won.

use std::process::Command;

fn strata(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata"));
    cmd.args(args);
    // No setting of the host's leaks in.
    for (key, _) in std::env::vars() {
        if key.starts_with("STRATA_") {
            cmd.env_remove(key);
        }
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().expect("running strata");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn flags_and_variables_beat_the_file_which_beats_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("coordinator.toml");
    std::fs::write(
        &config,
        "store = \"file:///nonexistent/strata\"\n[queue]\nreplicas = 9\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();

    // The file's bad value is used (over the default of 1) and rejected.
    let (code, stderr) = strata(&["coordinator", "--config", config], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("replicas must be 1 to 5"), "{stderr}");

    // A flag or a variable beats it: the next check (no database) speaks.
    for (args, env) in [
        (vec!["coordinator", "--config", config, "--replicas", "3"], vec![]),
        (
            vec!["coordinator", "--config", config],
            vec![("STRATA_REPLICAS", "3")],
        ),
        (
            vec!["coordinator"],
            vec![("STRATA_CONFIG", config), ("STRATA_REPLICAS", "3")],
        ),
    ] {
        let (code, stderr) = strata(&args, &env);
        assert_eq!(code, Some(2), "{args:?} {env:?}: {stderr}");
        assert!(
            stderr.contains("no vulnerability database"),
            "{args:?} {env:?}: {stderr}"
        );
    }
}

#[test]
fn bad_files_are_one_line_errors_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "worker",
            "concurrency = 0\nstore = \"file:///tmp\"\n",
            "concurrency must be 1 to 256",
        ),
        ("worker", "bogus = true\n", "unknown key bogus"),
        (
            "serve",
            "[security]\nallow_remote = \"yes\"\n",
            "security.allow_remote",
        ),
        // Security keys moved into their table: a top-level one is unknown.
        (
            "serve",
            "token_file = \"/etc/strata/tokens\"\n",
            "unknown key token_file",
        ),
        ("coordinator", "[queue]\nmax_deliver = -1\n", "queue.max_deliver"),
        (
            "coordinator",
            "listen = [\"a\"]\n",
            "listen: invalid type: sequence, expected a string",
        ),
        ("coordinator", "nats = \n", "coordinator.toml"),
    ];
    for (role, text, want) in cases {
        let path = dir.path().join(format!("{role}.toml"));
        std::fs::write(&path, text).unwrap();
        let (code, stderr) = strata(&[role, "--config", path.to_str().unwrap()], &[]);
        assert_eq!(code, Some(2), "{role} {text:?}: {stderr}");
        assert!(stderr.contains(want), "{role} {text:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{role} {text:?}: {stderr}");
    }
}

/// Two processes of one role on a host collide on its default metrics
/// port: the error says so and how out; port 0 picks a free port, logged
/// before anything connects.
#[test]
fn a_taken_metrics_port_is_explained_and_port_zero_picks_a_free_one() {
    use std::io::{BufRead as _, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}", dir.path().display());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let at = taken.local_addr().unwrap().to_string();
    // NATS is never reached: the metrics address is bound first.
    let nats = "nats://127.0.0.1:1";
    let (code, stderr) = strata(
        &[
            "worker",
            "--nats",
            nats,
            "--store",
            &store,
            "--metrics-listen",
            &at,
        ],
        &[],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("binding the metrics address {at}")),
        "{stderr}"
    );
    assert!(stderr.contains("port 0 for a free one"), "{stderr}");

    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args([
            "worker",
            "--nats",
            nats,
            "--store",
            &store,
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .env_remove("STRATA_LOG")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut found = None;
    for line in BufReader::new(stderr).lines().take(50) {
        let line = line.unwrap();
        if line.contains("metrics and health listening") {
            found = Some(line);
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let line = found.expect("no line giving the metrics address");
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("metrics="))
        .unwrap_or_else(|| panic!("no metrics= in {line:?}"));
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    assert_ne!(port, 0, "{line}");
}
