// No console window behind the app on Windows.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

use std::process::ExitCode;

const USAGE: &str = "\
Usage: sealpost [--minimized] [sealpost://register?email=…&server=…]

The Sealpost desktop app: secure messages, right in your mailbox.

  --minimized   start in the tray, without opening the window
  -V, --version print the version and exit
  -h, --help    print this help and exit

The headless agent is `sealpost-agent`; `sealpost-agent policy` shows the IT
policy this computer applies.";

fn main() -> ExitCode {
    // Answered before any window or display is needed, so that scripts and
    // package checks can ask on a machine without a desktop session.
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "-V" | "--version" => {
                println!("sealpost {}", env!("CARGO_PKG_VERSION"));
                return ExitCode::SUCCESS;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            _ => {}
        }
    }
    match sealpost_app::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
