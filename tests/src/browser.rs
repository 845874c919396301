//! A real web browser for tests: [`Browser`] runs headless Chromium through
//! ChromeDriver, so that tests use the server's web pages as a person would,
//! reading what is shown and saving what is downloaded.
//!
//! The browser trusts the test server's self-signed certificate by its key
//! alone (Chromium's `--ignore-certificate-errors-spki-list`), never by
//! ignoring certificate errors: a page that only loads because trust checks
//! are off would prove nothing about TLS.
//!
//! Also the page helpers every WebDriver session in the harness shares (the
//! desktop app's too): finding, waiting for text, screenshots.

use std::future::Future;
use std::io::Write;
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use tempfile::TempDir;

use crate::process::{
    GroupChild, free_ports, spawn_in_group, start_with_retries, wait_until_ready,
};

/// How long a page may take to show what a test waits for. Generous: a cold
/// Chromium start on a loaded two-core machine takes seconds.
pub const PAGE_TIMEOUT: Duration = Duration::from_secs(30);
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const INSTALL_HINT: &str =
    "Debian packages chromium and chromium-driver; `cargo xtask test` installs them";

/// Headless Chromium in a WebDriver session, with its own profile and
/// downloads directory. Everything stops in field order when dropped: the
/// session, ChromeDriver with every browser process it started, then the
/// profile and downloads are deleted.
pub struct Browser {
    pub client: Client,
    _chromedriver: GroupChild,
    downloads: TempDir,
    _profile: TempDir,
    artifacts: PathBuf,
}

impl Browser {
    /// Starts a browser that trusts the server whose certificate is
    /// `server_cert_pem` (its first certificate) and nothing self-signed
    /// else. Screenshots go to `artifacts`, created if needed.
    pub async fn launch(server_cert_pem: &[u8], artifacts: &Path) -> Result<Self> {
        for (program, what) in [(CHROMIUM, "Chromium"), (CHROMEDRIVER, "ChromeDriver")] {
            if !Path::new(program).exists() {
                bail!("{what} ({program}) is missing ({INSTALL_HINT})");
            }
        }
        let pin = spki_pin(server_cert_pem)?;
        std::fs::create_dir_all(artifacts)
            .with_context(|| format!("creating {}", artifacts.display()))?;
        // ChromeDriver and the first session together, each attempt on a
        // fresh port and profile: another test's server may take the port
        // between our probe and ChromeDriver's bind, and then only the
        // session request tells.
        let (chromedriver, client, profile, downloads) = start_with_retries(|| {
            let pin = pin.clone();
            async move {
                let profile = scratch_dir("sealpost-chromium-profile")?;
                let downloads = scratch_dir("sealpost-chromium-downloads")?;
                let capabilities = capabilities(&pin, profile.path(), downloads.path());
                let (chromedriver, port) = start_chromedriver()?;
                let chromedriver = GroupChild(chromedriver);
                let client =
                    connect_webdriver(port, capabilities, "Chromium through ChromeDriver").await?;
                Ok((chromedriver, client, profile, downloads))
            }
        })
        .await?;
        Ok(Self {
            client,
            _chromedriver: chromedriver,
            downloads,
            _profile: profile,
            artifacts: artifacts.to_owned(),
        })
    }

    /// Opens `url` and waits until it has loaded.
    pub async fn goto(&self, url: &str) -> Result<()> {
        self.client.goto(url).await.with_context(|| format!("opening {url}"))
    }

    /// The element `css` selects, once it is shown (within [`PAGE_TIMEOUT`]).
    pub async fn find(&self, css: &str) -> Result<Element> {
        find_within(&self.client, css, PAGE_TIMEOUT).await
    }

    /// Every element `css` selects now, none if nothing matches yet: wait
    /// for the first with [`Browser::find`].
    pub async fn find_all(&self, css: &str) -> Result<Vec<Element>> {
        self.client
            .find_all(Locator::Css(css))
            .await
            .with_context(|| format!("looking for `{css}`"))
    }

    /// Waits until the text of an element `css` selects contains `text`;
    /// returns that element's text.
    pub async fn wait_for_text(&self, css: &str, text: &str) -> Result<String> {
        wait_for_text_in(&self.client, css, text, PAGE_TIMEOUT, self.evidence()).await
    }

    /// Replaces what the input `css` selects holds with `value`, typed.
    pub async fn fill(&self, css: &str, value: &str) -> Result<()> {
        let input = self.find(css).await?;
        input.clear().await.with_context(|| format!("clearing `{css}`"))?;
        input.send_keys(value).await.with_context(|| format!("typing into `{css}`"))
    }

    /// Clicks the element `css` selects, once it is shown.
    pub async fn click(&self, css: &str) -> Result<()> {
        let element = self.find(css).await?;
        element.click().await.with_context(|| format!("clicking `{css}`"))
    }

    /// The address of the page shown.
    pub async fn current_url(&self) -> Result<String> {
        let url = self.client.current_url().await.context("reading the page's address")?;
        Ok(url.to_string())
    }

    /// The page's text as shown (the body's `innerText`).
    pub async fn page_text(&self) -> Result<String> {
        let text = self
            .execute("return document.body ? document.body.innerText : '';", Vec::new())
            .await
            .context("reading the page's text")?;
        Ok(text.as_str().unwrap_or_default().to_owned())
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page
    /// and returns what it returns.
    pub async fn execute(
        &self,
        script: &str,
        args: Vec<serde_json::Value>,
    ) -> Result<serde_json::Value> {
        self.client.execute(script, args).await.context("running a script in the page")
    }

    /// Saves what the page shows as `name`.png in the artifacts directory;
    /// returns the file.
    pub async fn screenshot(&self, name: &str) -> Result<PathBuf> {
        save_screenshot(&self.client, &self.artifacts, name).await
    }

    /// Waits until the browser has finished downloading `file_name` (it
    /// exists and no partial `.crdownload` remains) and returns its bytes.
    pub async fn downloaded(&self, file_name: &str, timeout: Duration) -> Result<Vec<u8>> {
        let path = self.downloads.path().join(file_name);
        let started = Instant::now();
        loop {
            let present = self.downloads_present()?;
            let partial = present.iter().any(|name| name.ends_with(".crdownload"));
            if path.exists() && !partial {
                return std::fs::read(&path).with_context(|| format!("reading {}", path.display()));
            }
            if started.elapsed() > timeout {
                let evidence = self.evidence().await;
                bail!(
                    "{file_name} was not downloaded within {timeout:?}; the downloads \
                     directory holds {present:?}\n{evidence}"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Resizes the window, to see the pages as a phone shows them.
    pub async fn set_window_size(&self, width: u32, height: u32) -> Result<()> {
        self.client
            .set_window_size(width, height)
            .await
            .with_context(|| format!("resizing the window to {width}×{height}"))
    }

    /// What the page shows, for a failure's message: its address and text,
    /// and a screenshot saved as `failure.png`.
    pub async fn evidence(&self) -> String {
        let url = match self.client.current_url().await {
            Ok(url) => url.to_string(),
            Err(error) => format!("(no address: {error})"),
        };
        let text = body_text(&self.client).await;
        let screenshot = match self.screenshot("failure").await {
            Ok(path) => format!("screenshot: {}", path.display()),
            Err(error) => format!("no screenshot: {error:#}"),
        };
        format!("the page at {url} shows:\n{text}\n{screenshot}")
    }

    /// Ends the session (Chromium quits), then stops ChromeDriver.
    pub async fn close(self) -> Result<()> {
        self.client.clone().close().await.context("ending the browser session")
    }

    fn downloads_present(&self) -> Result<Vec<String>> {
        let dir = self.downloads.path();
        let entries =
            std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
        Ok(entries
            .filter_map(|entry| entry.ok())
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect())
    }
}

/// What ChromeDriver is asked for: headless Chromium with a fresh profile,
/// downloads saved without asking, and `pin` as its only exception to
/// certificate checks.
fn capabilities(
    pin: &str,
    profile: &Path,
    downloads: &Path,
) -> serde_json::Map<String, serde_json::Value> {
    let capabilities = serde_json::json!({
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless=new",
                // Containers and CI runners rarely allow the sandbox's namespaces.
                "--no-sandbox",
                "--disable-gpu",
                // Nothing but the pages under test on the network, over TCP.
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                // /dev/shm is small in containers; a full one crashes tabs.
                "--disable-dev-shm-usage",
                // Chromium honours the pin only with a profile of its own.
                format!("--user-data-dir={}", profile.display()),
                "--window-size=1280,900",
                format!("--ignore-certificate-errors-spki-list={pin}"),
            ],
            "prefs": {
                "download.default_directory": downloads.display().to_string(),
                "download.prompt_for_download": false,
            },
        }
    });
    let serde_json::Value::Object(capabilities) = capabilities else {
        unreachable!("a JSON object literal")
    };
    capabilities
}

/// ChromeDriver listening on a free loopback port, which it returns.
fn start_chromedriver() -> Result<(std::process::Child, u16)> {
    let [port] = free_ports::<1>()?;
    let mut child = spawn_in_group(
        Command::new(CHROMEDRIVER).arg(format!("--port={port}")),
        // ChromeDriver's and Chromium's complaints, shown with a failing
        // test's output.
        Stdio::inherit(),
        &format!("cannot start {CHROMEDRIVER} ({INSTALL_HINT})"),
    )?;
    wait_until_ready(&mut child, "chromedriver", || {
        TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok()
    })?;
    Ok((child, port))
}

fn scratch_dir(prefix: &str) -> Result<TempDir> {
    tempfile::Builder::new().prefix(prefix).tempdir().context("creating a temporary directory")
}

/// Chromium's pin for a certificate: the base64 of the SHA-256 of its
/// SubjectPublicKeyInfo (DER), for the first certificate in `cert_pem`.
fn spki_pin(cert_pem: &[u8]) -> Result<String> {
    let public_key_pem = openssl(&["x509", "-pubkey", "-noout"], cert_pem)
        .context("reading the server certificate's public key")?;
    let public_key_der = openssl(&["pkey", "-pubin", "-outform", "der"], &public_key_pem)
        .context("encoding the server certificate's public key")?;
    let digest = openssl(&["dgst", "-sha256", "-binary"], &public_key_der)
        .context("hashing the server certificate's public key")?;
    if digest.len() != 32 {
        bail!("openssl dgst -sha256 gave {} bytes, not 32", digest.len());
    }
    Ok(data_encoding::BASE64.encode(&digest))
}

/// Runs the `openssl` command line tool with `args`, `input` on its
/// standard input; returns its standard output.
fn openssl(args: &[&str], input: &[u8]) -> Result<Vec<u8>> {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run openssl (Debian package openssl)")?;
    let mut stdin = child.stdin.take().context("openssl's standard input")?;
    // Written from another thread: openssl may fill its output pipe before
    // it has read all of its input.
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output().context("waiting for openssl")?;
    let written = writer.join().map_err(|_| anyhow::anyhow!("writing to openssl panicked"))?;
    if !output.status.success() {
        bail!("openssl {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim());
    }
    written.context("writing to openssl")?;
    Ok(output.stdout)
}

/// The element `css` selects, once it is shown (within `timeout`).
pub(crate) async fn find_within(client: &Client, css: &str, timeout: Duration) -> Result<Element> {
    client
        .wait()
        .at_most(timeout)
        .for_element(Locator::Css(css))
        .await
        .with_context(|| format!("nothing matching `{css}` appeared"))
}

/// Waits until the text of an element `css` selects contains `text`, and
/// returns that text; else fails with what was shown and `evidence` (only
/// awaited then).
pub(crate) async fn wait_for_text_in(
    client: &Client,
    css: &str,
    text: &str,
    timeout: Duration,
    evidence: impl Future<Output = String>,
) -> Result<String> {
    let started = Instant::now();
    let mut last = String::new();
    loop {
        if let Ok(elements) = client.find_all(Locator::Css(css)).await {
            for element in elements {
                if let Ok(shown) = element.text().await {
                    if shown.contains(text) {
                        return Ok(shown);
                    }
                    last = shown;
                }
            }
        }
        if started.elapsed() > timeout {
            let shown = evidence.await;
            bail!("`{css}` did not show “{text}” within {timeout:?}; it showed “{last}”\n{shown}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The page body's text, or why there is none, for a failure's message.
pub(crate) async fn body_text(client: &Client) -> String {
    match client.find(Locator::Css("body")).await {
        Ok(body) => body.text().await.unwrap_or_default(),
        Err(error) => format!("(no page: {error})"),
    }
}

/// Saves what `client` shows as `dir`/`name`.png; returns the file.
pub(crate) async fn save_screenshot(client: &Client, dir: &Path, name: &str) -> Result<PathBuf> {
    let png = client.screenshot().await.context("taking a screenshot")?;
    let path = dir.join(format!("{name}.png"));
    std::fs::write(&path, png).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// A WebDriver session on the driver listening on `port`; `what` names the
/// browser and driver for the error.
pub(crate) async fn connect_webdriver(
    port: u16,
    capabilities: serde_json::Map<String, serde_json::Value>,
    what: &str,
) -> Result<Client> {
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .map_err(|error| anyhow::anyhow!("cannot open {what}: {error}"))
}
