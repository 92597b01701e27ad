//! The `sfu` command: `sfu serve` (the default) runs the media server,
//! `sfu token` mints an access token with the configured API key.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use sfu::config::{Config, ConfigArgs};
use signaling::auth::{mint_with_secret, VideoGrant};

/// A WebRTC selective forwarding unit: WHIP ingest, WHEP playback, rooms.
///
/// Configuration comes from a TOML file (--config), SFU_* environment
/// variables and flags; flags override the environment, which overrides the file.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, short, env = "SFU_CONFIG", global = true)]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Cmd>,

    #[command(flatten)]
    options: ConfigArgs,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the server (the default).
    Serve {
        #[command(flatten)]
        options: ConfigArgs,
    },
    /// Print an access token signed with the configured API key.
    Token {
        /// Room the token is valid for.
        #[arg(long)]
        room: String,
        /// Participant identity (the token's `sub`).
        #[arg(long)]
        identity: String,
        /// Allow publishing (WHIP).
        #[arg(long)]
        publish: bool,
        /// Allow subscribing (WHEP).
        #[arg(long)]
        subscribe: bool,
        /// Allow room administration.
        #[arg(long)]
        admin: bool,
        /// Lifetime, e.g. 30m, 1h, 7d.
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        ttl: Duration,
        #[command(flatten)]
        options: ConfigArgs,
    },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("invalid duration '{s}'"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return Err(format!("invalid duration unit in '{s}' (use s, m, h or d)")),
    };
    Ok(Duration::from_secs(secs))
}

fn load_config(path: Option<&PathBuf>, args: ConfigArgs) -> Result<Config, String> {
    let file = match path {
        Some(p) => ConfigArgs::from_file(p).map_err(|e| e.to_string())?,
        None => ConfigArgs::default(),
    };
    Config::resolve(args, file).map_err(|e| format!("configuration error: {e}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => serve(cli.config.as_ref(), cli.options),
        Some(Cmd::Serve { options }) => serve(cli.config.as_ref(), options),
        Some(Cmd::Token {
            room,
            identity,
            publish,
            subscribe,
            admin,
            ttl,
            options,
        }) => token(
            cli.config.as_ref(),
            options,
            room,
            identity,
            [publish, subscribe, admin],
            ttl,
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("sfu: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn token(
    path: Option<&PathBuf>,
    options: ConfigArgs,
    room: String,
    identity: String,
    [publish, subscribe, admin]: [bool; 3],
    ttl: Duration,
) -> Result<(), String> {
    let config = load_config(path, options)?;
    let (key, secret) = config
        .api_keys
        .iter()
        .next()
        .ok_or("no API key configured")?;
    let grant = VideoGrant {
        room: Some(room),
        room_join: true,
        can_publish: Some(publish),
        can_subscribe: Some(subscribe),
        can_publish_data: Some(publish),
        room_admin: admin,
        ..Default::default()
    };
    let token = mint_with_secret(key, secret, &identity, grant, ttl).map_err(|e| e.to_string())?;
    println!("{token}");
    Ok(())
}

fn serve(path: Option<&PathBuf>, options: ConfigArgs) -> Result<(), String> {
    let config = load_config(path, options)?;
    let telemetry = sfu::telemetry::init(
        &config.log,
        config.otlp_endpoint.as_deref(),
        &config.node_id,
    )?;
    if telemetry.exporting() {
        tracing::info!("exporting traces over OTLP");
    }
    if config.uses_dev_credentials() {
        tracing::warn!(
            "!!! DEVELOPMENT CREDENTIALS: API key 'devkey' / secret 'secret' are enabled and \
             /dev/token mints tokens for anyone. Loopback only. Set --api-key/--api-secret \
             (or [api_keys] in the config file) for any real deployment. !!!"
        );
    }
    match serde_json::to_string(&config) {
        Ok(json) => tracing::info!(config = %json, "configuration"),
        Err(e) => tracing::warn!(error = %e, "cannot print configuration"),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start runtime: {e}"))?;
    let served = runtime.block_on(async move {
        let stop = sfu::Stop::default();
        let signal = stop.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("signal received: draining");
            signal.drain.cancel();
            wait_for_signal().await;
            tracing::info!("second signal: shutting down now");
            signal.shutdown.cancel();
        });
        sfu::run_until(config, stop, |started| {
            tracing::info!(
                "open http://{}/ to publish, http://{}/play to watch",
                started.http_addr,
                started.http_addr
            );
        })
        .await
        .map_err(|e| e.to_string())
    });
    // The runtime's tasks are done; export the spans still buffered.
    drop(runtime);
    telemetry.shutdown();
    served
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
