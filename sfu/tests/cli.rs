//! The `sfu` command line: token minting, help, and configuration
//! precedence and errors (file < environment < flags), run as a process.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use signaling::auth::{KeySet, Permission};

fn sfu() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sfu"));
    // Start from a clean environment for SFU_* keys.
    for (k, _) in std::env::vars() {
        if k.starts_with("SFU_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[test]
fn token_is_signed_with_the_configured_key_and_grants_what_was_asked() -> TestResult {
    let out = sfu()
        .args([
            "token",
            "--room",
            "stage",
            "--identity",
            "obs",
            "--publish",
            "--ttl",
            "2h",
        ])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout)?.trim().to_string();
    let grant = KeySet::new([("devkey".into(), "secret".into())]).verify(&token)?;
    assert_eq!(grant.identity, "obs");
    grant.require("stage", Permission::Publish)?;
    assert!(grant.require("stage", Permission::Subscribe).is_err());
    assert!(grant.require("other", Permission::Publish).is_err());

    // With a real key from the environment, the token is signed with it.
    let out = sfu()
        .env("SFU_API_KEY", "prod")
        .env("SFU_API_SECRET", "s3cr3t")
        .args(["token", "--room", "r", "--identity", "v", "--subscribe"])
        .output()?;
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout)?.trim().to_string();
    let grant = KeySet::new([("prod".into(), "s3cr3t".into())]).verify(&token)?;
    grant.require("r", Permission::Subscribe)?;
    Ok(())
}

#[test]
fn help_documents_options_and_environment() -> TestResult {
    let out = sfu().args(["serve", "--help"]).output()?;
    let help = String::from_utf8(out.stdout)?;
    for needle in [
        "--http-addr",
        "SFU_HTTP_ADDR",
        "--media-addr",
        "--public-ip",
        "--workers",
        "--api-key",
        "--session-timeout-secs",
        "--max-rooms",
        "--max-participants-per-room",
        "--max-body-bytes",
        "--config",
    ] {
        assert!(help.contains(needle), "help lacks {needle}:\n{help}");
    }
    Ok(())
}

#[test]
fn configuration_errors_name_the_key_and_flags_override_env_and_file() -> TestResult {
    // Environment: invalid value, named.
    let out = sfu()
        .env("SFU_SESSION_TIMEOUT_SECS", "0")
        .args(["token", "--room", "r", "--identity", "i"])
        .output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("session_timeout_secs"));
    // A flag overrides the environment.
    let out = sfu()
        .env("SFU_SESSION_TIMEOUT_SECS", "0")
        .args([
            "token",
            "--room",
            "r",
            "--identity",
            "i",
            "--session-timeout-secs",
            "5",
        ])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // File: an unknown key is named; a valid file is overridden by the environment.
    let dir = std::env::temp_dir().join(format!("sfu-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "http_adress = \"127.0.0.1:1\"\n")?;
    let out = sfu()
        .args([
            "--config",
            bad.to_str().ok_or("path")?,
            "token",
            "--room",
            "r",
            "--identity",
            "i",
        ])
        .output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("http_adress"));
    let good = dir.join("good.toml");
    std::fs::write(&good, "workers = 0\n")?;
    let out = sfu()
        .args([
            "--config",
            good.to_str().ok_or("path")?,
            "token",
            "--room",
            "r",
            "--identity",
            "i",
        ])
        .output()?;
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("workers"),
        "file value is validated"
    );
    let out = sfu()
        .env("SFU_WORKERS", "2")
        .args([
            "--config",
            good.to_str().ok_or("path")?,
            "token",
            "--room",
            "r",
            "--identity",
            "i",
        ])
        .output()?;
    assert!(
        out.status.success(),
        "env overrides the file: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Development credentials never leave loopback.
    let out = sfu().args(["serve", "--http-addr", "0.0.0.0:0"]).output()?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("http_addr") && err.contains("development credentials"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn logs_into_a_pipe_are_plain_text() -> TestResult {
    let mut child = sfu()
        .env_remove("NO_COLOR")
        .args([
            "serve",
            "--http-addr",
            "127.0.0.1:0",
            "--media-addr",
            "127.0.0.1",
        ])
        .args(["--media-port", "0", "--workers", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let lines: Vec<String> = BufReader::new(stdout).lines().take(3).flatten().collect();
        let _ = tx.send(lines);
    });
    let lines = rx.recv_timeout(Duration::from_secs(20));
    child.kill()?;
    child.wait()?;
    let lines = lines?;
    assert_eq!(lines.len(), 3, "the server logs its start: {lines:?}");
    assert!(
        lines.iter().all(|l| !l.contains('\x1b')),
        "escape codes in a piped log: {lines:?}"
    );
    Ok(())
}
