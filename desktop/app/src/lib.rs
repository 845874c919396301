//! `sealpost`, the desktop app: a thin Tauri shell over the agent library.
//!
//! The app runs the agent in its own process once the computer is
//! registered, unless another agent (the headless service) already holds
//! the mailbox's lock; then it only shows what that agent does. Every
//! behaviour lives in `sealpost-agent`; this crate turns it into commands
//! for the window ([`commands`]) whose types are in [`ipc`], a tray icon
//! and desktop notifications ([`background`]).

pub mod background;
pub mod commands;
pub mod deep_link;
pub mod ipc;
pub mod outgoing;
mod shell;

pub use shell::Shell;

use std::time::Duration;

use sealpost_agent::AgentPaths;
use sealpost_agent::policy::Policy;
use tauri::menu::{Menu, MenuItem, PredefinedMenuItem};
use tauri::tray::{TrayIcon, TrayIconBuilder};
use tauri::{AppHandle, Emitter, Manager, RunEvent, WindowEvent, Wry};
use tauri_plugin_notification::NotificationExt;

use crate::background::{Announcer, TrayState};
use crate::ipc::Prefill;

/// Given by the login item: start with the window hidden, in the tray.
const MINIMIZED_ARG: &str = "--minimized";
/// How often the tray and notifications look at the agent's state.
const LOOK_EVERY: Duration = Duration::from_secs(2);
/// The event that tells the window a registration link arrived.
const PREFILL_EVENT: &str = "prefill";

/// Opens the window and, when registered, starts watching the mailbox.
pub fn run() -> Result<(), String> {
    init_logging();
    let paths = AgentPaths::from_environment().map_err(|error| error.to_string())?;
    let shell = Shell::new(paths);
    let args: Vec<String> = std::env::args().collect();
    if let Some(prefill) = deep_link::prefill_from_args(&args) {
        shell.set_prefill(prefill);
    }
    let minimized = args.iter().any(|arg| arg == MINIMIZED_ARG);
    let app = tauri::Builder::default()
        // First: a second start hands its arguments (a registration link)
        // to this one and exits before anything else starts.
        .plugin(tauri_plugin_single_instance::init(|app, args, _cwd| {
            show_window(app);
            if let Some(prefill) = deep_link::prefill_from_args(&args) {
                offer_prefill(app, prefill);
            }
        }))
        .plugin(tauri_plugin_deep_link::init())
        .plugin(tauri_plugin_notification::init())
        .plugin(tauri_plugin_autostart::init(
            tauri_plugin_autostart::MacosLauncher::LaunchAgent,
            Some(vec![MINIMIZED_ARG]),
        ))
        .manage(shell)
        .invoke_handler(tauri::generate_handler![
            commands::overview,
            commands::status,
            commands::register,
            commands::search,
            commands::open_message,
            commands::save_attachment,
            commands::settings,
            commands::mailbox_folders,
            commands::change_settings,
            commands::sign_out,
            commands::retry,
            commands::set_paused,
            outgoing::send_message,
            outgoing::reply_draft,
            outgoing::forward_draft,
            outgoing::sent_messages,
            outgoing::delivery_slip,
            outgoing::recall_message,
        ])
        .setup(move |app| {
            let handle = app.handle().clone();
            enforce_start_at_login(&handle);
            let tray = create_tray(&handle);
            if minimized && tray.is_some() {
                hide_window(&handle);
            }
            let shell = app.state::<Shell>().inner().clone();
            tauri::async_runtime::spawn(async move {
                shell.start_watching().await;
                look_after(handle, tray).await;
            });
            Ok(())
        })
        .on_window_event(|window, event| {
            // With a tray, closing the window keeps Sealpost watching.
            if let WindowEvent::CloseRequested { api, .. } = event
                && window.app_handle().tray_by_id(TRAY_ID).is_some()
            {
                api.prevent_close();
                let _ = window.hide();
            }
        })
        .build(tauri::generate_context!())
        .map_err(|error| format!("cannot open the window: {error}"))?;
    app.run(|app, event| {
        if let RunEvent::Exit = event {
            app.state::<Shell>().quit();
        }
    });
    Ok(())
}

const TRAY_ID: &str = "sealpost";
const MENU_OPEN: &str = "open";
const MENU_PAUSE: &str = "pause";
const MENU_QUIT: &str = "quit";

/// The tray's menu entries that change with the state.
struct Tray {
    icon: TrayIcon,
    state: MenuItem<Wry>,
    pause: MenuItem<Wry>,
}

/// The tray icon with its menu, or `None` where the desktop has no tray
/// (or no AppIndicator library): the window then closes the app as usual.
fn create_tray(app: &AppHandle) -> Option<Tray> {
    // The Linux tray loads libayatana-appindicator when first used and
    // panics without it; a missing tray must not stop the app.
    let created = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| build_tray(app)));
    match created {
        Ok(Ok(tray)) => Some(tray),
        Ok(Err(error)) => {
            tracing::warn!(%error, "no tray icon");
            None
        }
        Err(_) => {
            tracing::warn!(
                "no tray icon: the AppIndicator library is missing (Debian: libayatana-appindicator3-1)"
            );
            None
        }
    }
}

fn build_tray(app: &AppHandle) -> tauri::Result<Tray> {
    let state = MenuItem::with_id(app, "state", TrayState::NotSetUp.label(), false, None::<&str>)?;
    let open = MenuItem::with_id(app, MENU_OPEN, "Open Sealpost", true, None::<&str>)?;
    let pause = MenuItem::with_id(app, MENU_PAUSE, "Pause watching", true, None::<&str>)?;
    let quit = MenuItem::with_id(app, MENU_QUIT, "Quit Sealpost", true, None::<&str>)?;
    let separator = PredefinedMenuItem::separator(app)?;
    let menu = Menu::with_items(app, &[&state, &separator, &open, &pause, &separator, &quit])?;
    let mut builder = TrayIconBuilder::with_id(TRAY_ID)
        .menu(&menu)
        .tooltip(TrayState::NotSetUp.label())
        .on_menu_event(|app, event| match event.id().as_ref() {
            MENU_OPEN => show_window(app),
            MENU_PAUSE => {
                let shell = app.state::<Shell>().inner().clone();
                tauri::async_runtime::spawn(async move {
                    let paused = !shell.paused();
                    shell.set_paused(paused).await;
                });
            }
            MENU_QUIT => app.exit(0),
            _ => {}
        });
    if let Some(icon) = app.default_window_icon() {
        builder = builder.icon(icon.clone());
    }
    let icon = builder.build(app)?;
    Ok(Tray { icon, state, pause })
}

/// Keeps the tray's state current and announces new secure messages,
/// until the app closes.
async fn look_after(app: AppHandle, tray: Option<Tray>) {
    let mut announcer = Announcer::default();
    // The first look is at once: an app started unregistered must know it
    // before the wizard can finish, or the first swaps after registration
    // would be taken for what was there already.
    let mut looks = tokio::time::interval(LOOK_EVERY);
    looks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        looks.tick().await;
        let shell = app.state::<Shell>().inner().clone();
        let registered = shell.registered();
        let status = if registered { Some(commands::status_of(&shell).await) } else { None };
        if let Some(tray) = &tray {
            let state = match &status {
                Some(status) => TrayState::of(true, shell.paused(), status.as_ref()),
                None => TrayState::NotSetUp,
            };
            let label = state.label();
            let _ = tray.icon.set_tooltip(Some(&label));
            let _ = tray.state.set_text(&label);
            let _ = tray.pause.set_text(if shell.paused() {
                "Resume watching"
            } else {
                "Pause watching"
            });
        }
        if !registered {
            announcer.unregistered();
        }
        let Some(Ok(view)) = status else { continue };
        let announcements = announcer.announce(&view);
        let policy = Policy::load_system().ok().flatten();
        if !commands::notifications_wanted(&shell, policy.as_ref()) {
            continue;
        }
        for announcement in announcements {
            let shown = app
                .notification()
                .builder()
                .title(&announcement.title)
                .body(&announcement.body)
                .show();
            if let Err(error) = shown {
                tracing::warn!(%error, "cannot show a desktop notification");
            }
        }
    }
}

/// Adds or removes the login item as the IT policy says, when it says.
fn enforce_start_at_login(app: &AppHandle) {
    let wanted = match Policy::load_system() {
        Ok(policy) => policy.and_then(|policy| policy.start_at_login),
        Err(error) => {
            tracing::error!(%error, "cannot read the IT policy");
            None
        }
    };
    if let Some(on) = wanted
        && let Err(error) = commands::set_autostart(app, on)
    {
        tracing::error!(%error, on, "cannot apply the IT policy's start at login");
    }
}

fn main_window(app: &AppHandle) -> Option<tauri::WebviewWindow> {
    app.get_webview_window("main")
}

fn show_window(app: &AppHandle) {
    if let Some(window) = main_window(app) {
        let _ = window.unminimize();
        let _ = window.show();
        let _ = window.set_focus();
    }
}

fn hide_window(app: &AppHandle) {
    if let Some(window) = main_window(app) {
        let _ = window.hide();
    }
}

/// Keeps a registration link's values for the wizard and tells the window.
fn offer_prefill(app: &AppHandle, prefill: Prefill) {
    app.state::<Shell>().set_prefill(prefill.clone());
    if let Err(error) = app.emit(PREFILL_EVENT, prefill) {
        tracing::warn!(%error, "cannot pass the registration link to the window");
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
