//! `sealpost`, the desktop app: a thin Tauri shell over the agent library.
//!
//! The app runs the agent in its own process once the computer is
//! registered, unless another agent (the headless service) already holds
//! the mailbox's lock; then it only shows what that agent does. Every
//! behaviour lives in `sealpost-agent`; this crate turns it into commands
//! for the window ([`commands`]) whose types are in [`ipc`].

pub mod commands;
pub mod ipc;
mod shell;

pub use shell::Shell;

use sealpost_agent::AgentPaths;
use tauri::{Manager, RunEvent};

/// Opens the window and, when registered, starts watching the mailbox.
pub fn run() -> Result<(), String> {
    init_logging();
    let paths = AgentPaths::from_environment().map_err(|error| error.to_string())?;
    let app = tauri::Builder::default()
        .manage(Shell::new(paths))
        .invoke_handler(tauri::generate_handler![
            commands::overview,
            commands::status,
            commands::register,
            commands::search,
            commands::open_message,
            commands::save_attachment,
        ])
        .setup(|app| {
            let shell = app.state::<Shell>();
            let shell = shell.inner().clone();
            tauri::async_runtime::spawn(async move { shell.start_watching().await });
            Ok(())
        })
        .build(tauri::generate_context!())
        .map_err(|error| format!("cannot open the window: {error}"))?;
    app.run(|app, event| {
        if let RunEvent::Exit = event {
            app.state::<Shell>().stop();
        }
    });
    Ok(())
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
