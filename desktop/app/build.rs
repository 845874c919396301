//! The app's own commands are listed here, so each needs a permission in
//! `capabilities/` before the window may call it: nothing is reachable by
//! default.

fn main() {
    let commands = tauri_build::AppManifest::new().commands(sealpost_commands());
    if let Err(error) =
        tauri_build::try_build(tauri_build::Attributes::new().app_manifest(commands))
    {
        eprintln!("{error:#}");
        std::process::exit(1);
    }
}

/// Every command `src/lib.rs` registers.
fn sealpost_commands() -> &'static [&'static str] {
    &[
        "overview",
        "status",
        "register",
        "search",
        "open_message",
        "save_attachment",
        "settings",
        "mailbox_folders",
        "change_settings",
        "sign_out",
        "retry",
        "set_paused",
        "send_message",
        "reply_draft",
        "forward_draft",
        "sent_messages",
        "delivery_slip",
        "recall_message",
    ]
}
