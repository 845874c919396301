use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sealpost_server::app::SHUTDOWN_GRACE;
use sealpost_server::settings::{LogFormat, Settings};
use sealpost_server::signing::{self, SigningKeys};
use sealpost_server::{Application, install_crypto_provider, store};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "sealpost-server", version, about = "Sealpost secure message server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve HTTPS. With no configuration: https://127.0.0.1:8443, data in ./sealpost-data.
    Serve {
        /// TOML configuration file (template: server/sealpost.example.toml).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Generate a new notification-signing key and make it the active one.
    /// Older keys stay published so existing notifications still verify.
    RotateKey {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match &cli.command {
        Command::Serve { config } | Command::RotateKey { config } => config.clone(),
    };
    let settings = match Settings::load(config.as_deref()) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("sealpost-server: {error}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Serve { .. } => serve(settings),
        Command::RotateKey { .. } => rotate_key(&settings),
    }
}

fn rotate_key(settings: &Settings) -> ExitCode {
    install_crypto_provider();
    let rotated = tokio::runtime::Runtime::new()
        .map_err(|error| format!("cannot start the async runtime: {error}"))
        .and_then(|runtime| {
            runtime.block_on(async {
                let url = settings.database_url();
                let store =
                    store::open(&url, 1).await.map_err(|error| format!("database: {error}"))?;
                // The keys an earlier version kept as files come first.
                SigningKeys::load_or_generate(&*store, &settings.server.data_dir)
                    .await
                    .map_err(|error| error.to_string())?;
                signing::rotate(&*store).await.map_err(|error| error.to_string())
            })
        });
    match rotated {
        Ok(key_id) => {
            println!(
                "new active signing key {key_id}; restart every server instance to sign with it"
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("sealpost-server: {error}");
            ExitCode::FAILURE
        }
    }
}

fn serve(settings: Settings) -> ExitCode {
    install_crypto_provider();
    init_logging(&settings);
    // A socket per connection, a few files per database connection, and
    // the data directory's files besides.
    let files = [
        settings.server.max_connections,
        settings.inbound.max_connections,
        4 * usize::try_from(settings.database.max_connections).unwrap_or(usize::MAX),
        256,
    ];
    let needed = files.iter().fold(0u64, |sum, n| sum.saturating_add(*n as u64));
    if let Some(warning) = sealpost_server::connections::raise_open_file_limit(needed) {
        tracing::warn!("{warning}");
        eprintln!("sealpost-server: warning: {warning}");
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("sealpost-server: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let data_dir = settings.server.data_dir.clone();
        let database = settings.database_url_for_display();
        let app = match Application::build(settings).await {
            Ok(app) => app,
            Err(error) => {
                eprintln!("sealpost-server: cannot start: {error}");
                return ExitCode::FAILURE;
            }
        };
        let tls = app.tls();
        println!("Sealpost server {}", env!("CARGO_PKG_VERSION"));
        println!("  listening    https://{}", app.local_addr());
        println!("  origin       {}", app.origin());
        println!("  data         {}", data_dir.display());
        println!("  database     {database}");
        println!(
            "  certificate  {}{}",
            tls.cert_file.display(),
            if tls.self_signed { " (self-signed)" } else { "" }
        );
        println!("  fingerprint  SHA-256 {}", tls.fingerprint);
        println!("  signing key  {}", app.active_key_id());
        match app.dkim_record() {
            Some((name, value)) => println!("  dkim         publish TXT {name} \"{value}\""),
            None => println!("  dkim         off (notifications are not DKIM-signed; see [dkim])"),
        }
        println!("  mail         {}", app.mail_description());
        let handle = app.handle();
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("stopping: finishing requests in flight");
            handle.graceful_shutdown(Some(SHUTDOWN_GRACE));
        });
        match app.run_until_stopped().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("sealpost-server: {error}");
                ExitCode::FAILURE
            }
        }
    })
}

fn init_logging(settings: &Settings) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.log.filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match settings.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => return interrupt.await.unwrap_or(()),
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
