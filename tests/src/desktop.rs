//! The desktop app in a real window: [`DesktopApp`] starts a private X
//! server (Xvfb), `tauri-driver` with WebKitGTK's `WebKitWebDriver` on it,
//! and opens the real `sealpost` binary in a WebDriver session that tests
//! drive as a person would: typing, clicking, reading what is shown.
//!
//! The desktop's notification daemon (dunst) runs on the app's session bus,
//! so tests read the notifications the app showed.
//!
//! Every process runs in its own process group and is killed with
//! everything it started when the app is dropped.

use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use fantoccini::elements::Element;
use fantoccini::{Client, Locator};

use crate::browser::{body_text, find_within, save_screenshot, wait_for_text_in};
use crate::process::{GroupChild, free_ports, spawn_in_group, wait_until_ready, workspace_binary};

/// How long a screen may take to show what a test waits for. Generous: a
/// cold WebKit start on a loaded two-core machine takes seconds.
pub const SCREEN_TIMEOUT: Duration = Duration::from_secs(30);
const NATIVE_DRIVER: &str = "/usr/bin/WebKitWebDriver";

/// The real app in a window on a private display. Its processes stop in
/// field order when dropped: the driver (and the app), dunst, the display.
pub struct DesktopApp {
    pub client: Client,
    _driver: GroupChild,
    /// The desktop's notification daemon (dunst), on the app's session bus.
    _notifications: GroupChild,
    _display: GroupChild,
    app: PathBuf,
    display_name: String,
    env: Vec<(String, String)>,
    screenshots: PathBuf,
}

impl DesktopApp {
    /// Opens the app with `env` added to its environment (data directory,
    /// policy file, and the session bus, which must be in it: the desktop's
    /// notification daemon is started there). Screenshots go to `screenshots`.
    pub async fn launch(env: &[(String, String)], screenshots: &Path) -> Result<Self> {
        let app = workspace_binary("SEALPOST_APP_BIN", "sealpost-app", "sealpost")?;
        let tauri_driver = std::env::var_os("SEALPOST_TAURI_DRIVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("tauri-driver"));
        if !Path::new(NATIVE_DRIVER).exists() {
            bail!(
                "{NATIVE_DRIVER} is missing (Debian package webkit2gtk-driver; `cargo xtask test` installs it)"
            );
        }
        let (display, display_name) = start_display()?;
        let display = GroupChild(display);
        let notifications = GroupChild(start_notification_daemon(&display_name, env)?);
        let capabilities = serde_json::json!({
            "tauri:options": { "application": app.display().to_string() }
        });
        let serde_json::Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object literal")
        };
        // The driver and the first session together, each attempt on fresh
        // ports: another test's server may take a port between our probe and
        // the driver's bind, and then only the session request tells.
        let (driver, client) = crate::start_with_retries(|| {
            let tauri_driver = tauri_driver.clone();
            let display_name = display_name.clone();
            let capabilities = capabilities.clone();
            let app = app.clone();
            async move {
                let (driver, port) = start_driver(&tauri_driver, &display_name, env)?;
                let driver = GroupChild(driver);
                let what = format!("{} through tauri-driver", app.display());
                let client = crate::browser::connect_webdriver(port, capabilities, &what).await?;
                Ok((driver, client))
            }
        })
        .await?;
        std::fs::create_dir_all(screenshots)?;
        Ok(Self {
            client,
            _driver: driver,
            _notifications: notifications,
            _display: display,
            app,
            display_name,
            env: env.to_vec(),
            screenshots: screenshots.to_owned(),
        })
    }

    /// The element `css` selects, once it is shown.
    pub async fn find(&self, css: &str) -> Result<Element> {
        find_within(&self.client, css, SCREEN_TIMEOUT).await
    }

    /// Waits until the text of the element `css` selects contains `text`;
    /// returns that text.
    pub async fn wait_for_text(&self, css: &str, text: &str) -> Result<String> {
        self.wait_for_text_within(css, text, SCREEN_TIMEOUT).await
    }

    pub async fn wait_for_text_within(
        &self,
        css: &str,
        text: &str,
        timeout: Duration,
    ) -> Result<String> {
        wait_for_text_in(&self.client, css, text, timeout, self.evidence()).await
    }

    /// Starts the app binary again with `args`, on the same display and
    /// session bus, as the desktop does when a `sealpost://` link is opened;
    /// returns how that second start ended.
    pub async fn start_again(&self, args: &[&str]) -> Result<std::process::ExitStatus> {
        let mut again = tokio::process::Command::new(&self.app);
        again
            .args(args)
            .env("DISPLAY", &self.display_name)
            .envs(self.env.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let started = again.spawn().context("starting the app again")?;
        tokio::time::timeout(SCREEN_TIMEOUT, started.wait_with_output())
            .await
            .context("the second start did not end")?
            .map(|output| output.status)
            .context("waiting for the second start")
    }

    /// Waits until the input `css` selects holds `value`.
    pub async fn wait_for_value(&self, css: &str, value: &str) -> Result<()> {
        let started = Instant::now();
        loop {
            let input = self.find(css).await?;
            let shown = input.prop("value").await?.unwrap_or_default();
            if shown == value {
                return Ok(());
            }
            if started.elapsed() > SCREEN_TIMEOUT {
                let evidence = self.evidence().await;
                bail!("`{css}` holds “{shown}”, not “{value}”\n{evidence}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What the window shows, for a failure's message: its text, and a
    /// screenshot saved as `failure.png`.
    pub async fn evidence(&self) -> String {
        let text = body_text(&self.client).await;
        let screenshot = match self.screenshot("failure").await {
            Ok(path) => format!("screenshot: {}", path.display()),
            Err(error) => format!("no screenshot: {error:#}"),
        };
        format!("the window shows:\n{text}\n{screenshot}")
    }

    /// Clicks the button whose text is `label`.
    pub async fn click_button(&self, label: &str) -> Result<()> {
        let xpath = format!("//button[normalize-space(.)='{label}']");
        let button = self
            .client
            .wait()
            .at_most(SCREEN_TIMEOUT)
            .for_element(Locator::XPath(&xpath))
            .await
            .with_context(|| format!("no button “{label}” appeared"))?;
        button.click().await.with_context(|| format!("clicking “{label}”"))?;
        Ok(())
    }

    /// Saves what the window shows as `name`.png; returns the file.
    pub async fn screenshot(&self, name: &str) -> Result<PathBuf> {
        save_screenshot(&self.client, &self.screenshots, name).await
    }

    /// Ends the session (the app quits), then stops the driver and display.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

/// One desktop notification as the daemon received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub app_name: String,
    pub summary: String,
    pub body: String,
}

impl DesktopApp {
    /// Waits until the desktop has shown at least `count` notifications and
    /// returns them all, oldest first.
    pub async fn wait_for_notifications(&self, count: usize) -> Result<Vec<Notification>> {
        let started = Instant::now();
        loop {
            // Shown notifications reach the history once closed.
            self.dunstctl(&["close-all"]).await?;
            let history = self.dunstctl(&["history"]).await?;
            let mut shown = parse_history(&history)?;
            if shown.len() >= count {
                shown.reverse();
                return Ok(shown);
            }
            if started.elapsed() > SCREEN_TIMEOUT {
                bail!(
                    "{} of {count} notifications shown within {SCREEN_TIMEOUT:?}: {shown:?}",
                    shown.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn dunstctl(&self, args: &[&str]) -> Result<String> {
        let output = tokio::process::Command::new("dunstctl")
            .args(args)
            .envs(self.env.iter().map(|(key, value)| (key, value)))
            .output()
            .await
            .context("running dunstctl (Debian package dunst; `cargo xtask test` installs it)")?;
        if !output.status.success() {
            bail!("dunstctl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

/// `dunstctl history`: `{"data": [[{"summary": {"data": …}, …}, …]]}`, newest first.
fn parse_history(json: &str) -> Result<Vec<Notification>> {
    let history: serde_json::Value = serde_json::from_str(json).context("dunstctl history")?;
    let entries = history["data"][0].as_array().cloned().unwrap_or_default();
    let text = |entry: &serde_json::Value, key: &str| {
        entry[key]["data"].as_str().unwrap_or_default().to_owned()
    };
    Ok(entries
        .iter()
        .map(|entry| Notification {
            app_name: text(entry, "appname"),
            summary: text(entry, "summary"),
            body: text(entry, "body"),
        })
        .collect())
}

/// dunst on `display` and the session bus in `env`, once it owns the
/// notification service's name.
fn start_notification_daemon(display: &str, env: &[(String, String)]) -> Result<Child> {
    if !env.iter().any(|(key, _)| key == "DBUS_SESSION_BUS_ADDRESS") {
        bail!("the app's environment has no DBUS_SESSION_BUS_ADDRESS (a KeyringSession's env)");
    }
    let mut child = spawn_in_group(
        Command::new("dunst").env("DISPLAY", display).envs(env.iter().map(|(k, v)| (k, v))),
        Stdio::null(),
        "cannot start dunst (Debian package dunst; `cargo xtask test` installs it)",
    )?;
    wait_until_ready(&mut child, "dunst", || {
        Command::new("dunstctl")
            .arg("is-paused")
            .envs(env.iter().map(|(key, value)| (key, value)))
            .output()
            .is_ok_and(|output| output.status.success())
    })?;
    Ok(child)
}

/// An X server of its own on a free display number.
fn start_display() -> Result<(Child, String)> {
    let mut last_error = None;
    for _ in 0..20 {
        let number = 100 + rand::random_range(0..900u32);
        if Path::new(&format!("/tmp/.X{number}-lock")).exists() {
            continue;
        }
        let socket = PathBuf::from(format!("/tmp/.X11-unix/X{number}"));
        let mut child = spawn_in_group(
            Command::new("Xvfb").arg(format!(":{number}")).args([
                "-screen",
                "0",
                "1280x800x24",
                "-nolisten",
                "tcp",
            ]),
            Stdio::null(),
            "cannot start Xvfb (Debian package xvfb; `cargo xtask test` installs it)",
        )?;
        // Most likely to fail because another server took the number first.
        match wait_until_ready(&mut child, &format!("Xvfb :{number}"), || socket.exists()) {
            Ok(()) => return Ok((child, format!(":{number}"))),
            Err(error) => last_error = Some(error),
        }
    }
    match last_error {
        Some(error) => Err(error.context("no free X display")),
        None => bail!("no free X display"),
    }
}

/// tauri-driver on `display`, listening on a free port, which it returns.
fn start_driver(
    tauri_driver: &Path,
    display: &str,
    env: &[(String, String)],
) -> Result<(Child, u16)> {
    let [port, native_port] = free_ports::<2>()?;
    let cannot = format!(
        "cannot start {} (`cargo xtask test` installs it; by hand: cargo install tauri-driver)",
        tauri_driver.display()
    );
    let mut child = spawn_in_group(
        Command::new(tauri_driver)
            .args(["--port", &port.to_string(), "--native-port", &native_port.to_string()])
            .args(["--native-driver", NATIVE_DRIVER])
            .env("DISPLAY", display)
            // No desktop session: keep GTK from looking for accessibility and
            // portal services that are not there.
            .env("NO_AT_BRIDGE", "1")
            .env("GTK_USE_PORTAL", "0")
            .envs(env.iter().map(|(key, value)| (key, value))),
        // The app's log, shown with a failing test's output.
        Stdio::inherit(),
        &cannot,
    )?;
    wait_until_ready(&mut child, "tauri-driver", || {
        TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok()
    })?;
    Ok((child, port))
}
