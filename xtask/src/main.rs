//! Project automation, run as `cargo xtask <command>`.
//!
//! - `test`: what CI runs. Installs the Debian packages the tests need, then
//!   rustfmt check, clippy with warnings denied, every test, and each fuzz
//!   target for a few seconds.
//! - `demo`: the server on embedded defaults, one secure message stored,
//!   delivered and retrieved, each step printed; `demo --gui` opens the
//!   desktop app on that stack instead.
//! - `fuzz`: builds the fuzz targets on the stable toolchain and runs each
//!   for a while ([`fuzz`]).
//! - `bench`: release builds measured on the real stack beside their floors
//!   and peers; one table, written to `target/bench/`.
//! - `soak`: the bench's load section (a thousand connections of mixed
//!   traffic) on release builds for minutes, memory sampled over the run;
//!   written to `target/soak/`.
//! - `ui`: the desktop app's front end (`ui/`): npm install, type check,
//!   Vitest, build. `test` runs it before anything compiles the app, which
//!   embeds `ui/dist`.
//! - `installers`: the desktop `.deb`/`.rpm` and the server `.deb` from a
//!   release build, and the checks of the Windows and macOS installer
//!   sources that cannot be built here ([`installers`]).
//! - `ipc-types`: rewrites `ui/src/lib/ipc-types.ts` from the app's Rust
//!   IPC types; a test fails while the checked-in file is behind.
//!
//! Every child command runs from the repository root with inherited stdio.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

mod fuzz;
mod installers;

/// Debian packages the build, the tests and the demo need. Later parts of the
/// system (PostgreSQL) append theirs here.
const DEBIAN_PACKAGES: &[&str] = &[
    "build-essential",
    "pkg-config",
    "ca-certificates",
    "git",
    "curl",
    "openssl",
    // The real mail stack the tests and the demo run: Postfix in front of Dovecot.
    "dovecot-core",
    "dovecot-imapd",
    "dovecot-lmtpd",
    "postfix",
    // Independent checks of what the server sends: DKIM verification and spam scoring.
    "python3-dkim",
    "spamassassin",
    // The shared database of several server instances, one per test.
    "postgresql",
    // A DNS server on loopback with the test domains' SPF and DMARC records,
    // so the server checks arriving mail as it does in production.
    "dnsmasq-base",
    // The agent keeps its secrets in the OS keyring: a private session bus
    // with GNOME Keyring's Secret Service in the agent tests.
    "dbus-daemon",
    "dbus-bin",
    "gnome-keyring",
    // The peers the benchmarks measure against (`bench --quick` runs in CI).
    "nginx",
    "notmuch",
    "python3-notmuch2",
    // The desktop app (Tauri 2 on WebKitGTK).
    "libwebkit2gtk-4.1-dev",
    "libxdo-dev",
    "librsvg2-dev",
    // Its tray icon (loaded at run time; without it the app runs without a tray).
    "libayatana-appindicator3-dev",
    // The app's end-to-end test: a private X display, WebKit's WebDriver and
    // a notification daemon to read the app's notifications from.
    "xvfb",
    "webkit2gtk-driver",
    "dunst",
    // The Secure Message Center's browser tests: Chromium driven through ChromeDriver.
    "chromium",
    "chromium-driver",
    // Building and checking the packages: dpkg-shlibdeps, the .rpm reader,
    // desktop-entry, shell-script and systemd-unit checks.
    "dpkg-dev",
    "rpm",
    "desktop-file-utils",
    "shellcheck",
    "systemd",
];

/// The WebDriver front for Tauri apps the desktop end-to-end test drives the
/// app through; installed into `target/tools` when missing.
const TAURI_DRIVER: (&str, &str) = ("tauri-driver", "2.1.0");

/// Builds the binaries that tests and the demo run as child processes; the
/// desktop app (which embeds the built front end) only when asked.
fn binaries_build(with_app: bool) -> Vec<&'static str> {
    let mut args = vec!["build", "--locked", "-p", "sealpost-server", "-p", "sealpost-agent-cli"];
    if with_app {
        args.extend(["-p", "sealpost-app"]);
    }
    args
}

/// Builds the benchmark program and the binaries it measures, in `profile`.
fn bench_build(profile: BenchProfile) -> Vec<&'static str> {
    let mut args = vec!["build", "--locked"];
    if profile == BenchProfile::Release {
        args.push("--release");
    }
    args.extend(["-p", "sealpost-server", "-p", "sealpost-agent-cli", "-p", "sealpost-bench"]);
    args
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BenchProfile {
    /// What the figures in the docs come from.
    Release,
    /// `--quick`: proves every section runs, reusing the test build.
    Debug,
}

impl BenchProfile {
    fn name(self) -> &'static str {
        match self {
            BenchProfile::Release => "release",
            BenchProfile::Debug => "debug",
        }
    }
}

/// `debconf-set-selections` lines applied before installing, so that no
/// package stops to ask a question.
const DEBCONF_SELECTIONS: &[&str] = &["postfix postfix/main_mailer_type select No configuration"];

#[derive(Parser)]
#[command(
    bin_name = "cargo xtask",
    about = "Sealpost project tasks",
    disable_help_subcommand = true
)]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install missing system packages, then rustfmt, clippy, every test and a short run of each fuzz target (what CI runs).
    Test {
        /// Do not check or install Debian packages.
        #[arg(long)]
        no_install: bool,
        /// Skip clippy and fuzzing: formatting and tests only.
        #[arg(long)]
        quick: bool,
    },
    /// Start a mail stack and the server on embedded defaults, store a secure message, deliver its notification and retrieve it, printing each step; `--gui` opens the desktop app on that stack instead.
    Demo {
        /// Do not check or install Debian packages.
        #[arg(long)]
        no_install: bool,
        /// Passed to the demo program.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build in release mode, start the real mail stack and server, measure every speed and memory target beside its floor or peer, print one table and write it to target/bench/.
    Bench {
        /// Do not check or install Debian packages.
        #[arg(long)]
        no_install: bool,
        /// Small sizes on the debug build: proves every section still runs.
        #[arg(long)]
        quick: bool,
        /// Passed to the benchmark program (`--only SECTION`, `--out DIR`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build in release mode and run the load section (1,000 connections of mixed traffic against the real server) for minutes: requests, errors, p50/p99 latency and the server's memory over the run, written to target/soak/.
    Soak {
        /// How long the load runs, in minutes.
        #[arg(long, default_value_t = 10)]
        minutes: u64,
    },
    /// Install the front end's npm packages (when the lock file changed), type-check it, run its Vitest tests and build it into ui/dist.
    Ui,
    /// Build the Linux packages (desktop .deb and .rpm, server .deb) into target/installers/, and check the Windows and macOS installer sources.
    Installers {
        /// Do not check or install Debian packages.
        #[arg(long)]
        no_install: bool,
        /// Package the debug build instead of a release build (quick; for tests).
        #[arg(long)]
        debug: bool,
    },
    /// Rewrite ui/src/lib/ipc-types.ts from the app's IPC types in desktop/app/src/ipc.rs.
    IpcTypes,
    /// Build the fuzz targets (fuzz/) with libFuzzer on the stable toolchain and run each for a while; print executions, coverage and crashes per target.
    Fuzz {
        /// Targets to run (notification, mime, smtp_session, api_json); all when none is named.
        targets: Vec<String>,
        /// How long to run each target, in seconds.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
}

fn main() -> ExitCode {
    let outcome = match Cli::parse().command {
        Task::Test { no_install, quick } => test(no_install, quick).map(|()| ExitCode::SUCCESS),
        Task::Demo { no_install, args } => demo(no_install, &args),
        Task::Fuzz { targets, seconds } => {
            fuzz::fuzz(&targets, seconds).map(|()| ExitCode::SUCCESS)
        }
        Task::Ui => front_end().map(|()| ExitCode::SUCCESS),
        Task::Installers { no_install, debug } => {
            build_installers(no_install, debug).map(|()| ExitCode::SUCCESS)
        }
        Task::IpcTypes => ipc_types().map(|()| ExitCode::SUCCESS),
        Task::Bench { no_install, quick, args } => {
            bench(no_install, quick, &args).map(|()| ExitCode::SUCCESS)
        }
        Task::Soak { minutes } => soak(minutes).map(|()| ExitCode::SUCCESS),
    };
    outcome.unwrap_or_else(|error| {
        eprintln!("\nxtask: {error:#}");
        ExitCode::FAILURE
    })
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the repository root")
        .to_owned()
}

/// A command that runs from the repository root.
fn command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new(program);
    command.current_dir(repo_root());
    command
}

/// The cargo that runs this task, so toolchain overrides carry through.
fn cargo() -> Command {
    let mut cargo = command(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    // Every xtask build is a whole build, checked or measured once:
    // incremental caches would only add gigabytes to target/.
    if std::env::var_os("CARGO_INCREMENTAL").is_none() {
        cargo.env("CARGO_INCREMENTAL", "0");
    }
    cargo
}

/// Runs a command to completion and returns its exit status.
fn status(command: &mut Command) -> Result<(String, ExitStatus)> {
    let description = format!("{command:?}");
    let status = command.status().with_context(|| format!("could not start {description}"))?;
    Ok((description, status))
}

/// Runs a command and fails unless it succeeds.
fn run(command: &mut Command) -> Result<()> {
    let (description, status) = status(command)?;
    if !status.success() {
        bail!("{description} failed ({status})");
    }
    Ok(())
}

/// Whether a command that only reports (`--version`, `dpkg-query`) succeeds.
fn succeeds(command: &mut Command) -> bool {
    command.output().is_ok_and(|output| output.status.success())
}

/// Runs the named steps in order, timing each, and stops at the first failure
/// with the command that reruns it alone.
struct Steps {
    started: Instant,
    timings: Vec<(&'static str, f64)>,
}

impl Steps {
    fn run(
        &mut self,
        name: &'static str,
        rerun: &str,
        step: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        println!("\n==> {name}");
        let started = Instant::now();
        // The cause first, then which step failed and how to run only it.
        step().map_err(|error| {
            anyhow::anyhow!("{error:#}\n\nstep `{name}` failed; rerun it alone with: {rerun}")
        })?;
        let seconds = started.elapsed().as_secs_f64();
        println!("==> {name}: ok in {seconds:.1} s");
        self.timings.push((name, seconds));
        Ok(())
    }

    fn summary(&self) {
        println!("\nAll steps passed in {:.1} s:", self.started.elapsed().as_secs_f64());
        for (name, seconds) in &self.timings {
            println!("  {name:<28} {seconds:>7.1} s");
        }
    }
}

/// Test modules that start no server of their own, or that test the
/// desktop, the packages or the harness itself: run once, not per database.
const NOT_PER_DATABASE: &[&str] = &[
    "desktop_app",
    "installers",
    "mailstack",
    "postgres",
    // Always on PostgreSQL: several instances need it.
    "scale_out",
    "server_binary",
    "store",
];

/// The end-to-end tests that run the server, for a second run on PostgreSQL.
fn postgres_tests_command(nextest: bool) -> Vec<String> {
    // `--workspace` as in the first run: with `-p` alone cargo would unify
    // features differently and build much of the workspace again.
    let mut args: Vec<String> = if nextest {
        ["nextest", "run", "--workspace", "--locked", "-E"].map(String::from).to_vec()
    } else {
        ["test", "--workspace", "--locked", "--test", "end_to_end", "--"].map(String::from).to_vec()
    };
    if nextest {
        let skipped: Vec<String> =
            NOT_PER_DATABASE.iter().map(|module| format!("test(/^{module}::/)")).collect();
        args.push(format!("binary(end_to_end) & not ({})", skipped.join(" | ")));
    } else {
        for module in NOT_PER_DATABASE {
            args.extend(["--skip".to_owned(), format!("{module}::")]);
        }
    }
    args
}

fn test(no_install: bool, quick: bool) -> Result<()> {
    let root = repo_root();
    let mut steps = Steps { started: Instant::now(), timings: Vec::new() };

    if !no_install {
        let rerun = "cargo xtask test (this step runs first; --no-install skips it)";
        steps.run("system packages", rerun, install_debian_packages)?;
    }
    // Before anything compiles the app: it embeds the built front end.
    steps.run("front end (ui/)", "cargo xtask ui", front_end)?;
    steps.run("rustfmt", "cargo fmt --all -- --check", || {
        run(cargo().args(["fmt", "--all", "--", "--check"]))
    })?;
    if !quick {
        let clippy = ["clippy", "--workspace", "--all-targets", "--locked", "--", "-D", "warnings"];
        steps.run(
            "clippy",
            &format!("cargo {}", clippy.join(" ")),
            || run(cargo().args(clippy)),
        )?;
    }
    let tests: &[&str] = if succeeds(cargo().args(["nextest", "--version"])) {
        &["nextest", "run", "--workspace", "--locked"]
    } else {
        println!(
            "\ncargo-nextest is not installed; using cargo test (`cargo install cargo-nextest`)"
        );
        &["test", "--workspace", "--locked"]
    };
    // Tests that run the real server and agent binaries get them from here:
    // built once, with the features `cargo build` gives them, instead of
    // each test rebuilding them.
    let binaries = binaries_build(true);
    steps.run("binaries", &format!("cargo {}", binaries.join(" ")), || {
        run(cargo().args(&binaries))
    })?;
    // The install tests take the packages of the test build: the same
    // binaries, packaged in seconds.
    let packages = root.join("target/installers/debug");
    steps.run("packages (debug build)", "cargo xtask installers --debug --no-install", || {
        installers::build(installers::Profile::Debug, &packages).map(|_| ())
    })?;
    let tauri_driver = tauri_driver_path();
    steps.run("tauri-driver", &tauri_driver_install().join(" "), install_tauri_driver)?;
    let with_binaries = |command: &mut Command| {
        command
            .env("SEALPOST_SERVER_BIN", root.join("target/debug/sealpost-server"))
            .env("SEALPOST_AGENT_BIN", root.join("target/debug/sealpost-agent"))
            .env("SEALPOST_APP_BIN", root.join("target/debug/sealpost"))
            .env("SEALPOST_PACKAGES_DIR", &packages)
            .env("SEALPOST_TAURI_DRIVER", &tauri_driver);
    };
    steps.run("tests", &format!("cargo {}", tests.join(" ")), || {
        let mut command = cargo();
        command.args(tests);
        with_binaries(&mut command);
        run(&mut command)
    })?;
    // The API tests again, each server on a PostgreSQL of its own (the
    // store's own tests already run on both databases).
    let on_postgres = postgres_tests_command(tests[0] == "nextest");
    steps.run(
        "API tests on PostgreSQL",
        &format!("SEALPOST_TEST_DATABASE=postgres cargo {}", on_postgres.join(" ")),
        || {
            let mut command = cargo();
            command.args(&on_postgres).env("SEALPOST_TEST_DATABASE", "postgres");
            with_binaries(&mut command);
            run(&mut command)
        },
    )?;
    let quick_bench = "cargo xtask bench --quick --no-install";
    steps.run("benchmarks (quick sizes)", quick_bench, || run_bench(BenchProfile::Debug, &[]))?;
    // nextest does not run doc tests.
    steps.run("doc tests", "cargo test --workspace --doc --locked", || {
        run(cargo().args(["test", "--workspace", "--doc", "--locked"]))
    })?;
    if !quick {
        // Short runs: they prove every target builds and runs, and catch
        // what the committed seeds and a few seconds of mutation reach.
        let seconds = fuzz::CI_SECONDS;
        // Named once per run, so it may live as long as the steps.
        let name: &'static str = Box::leak(format!("fuzz ({seconds} s each)").into_boxed_str());
        steps.run(name, &format!("cargo xtask fuzz --seconds {seconds}"), || {
            fuzz::fuzz(&[], seconds)
        })?;
    }
    steps.summary();
    Ok(())
}

/// Where [`install_tauri_driver`] puts tauri-driver.
fn tauri_driver_path() -> PathBuf {
    repo_root().join("target/tools/bin").join(TAURI_DRIVER.0)
}

fn tauri_driver_install() -> Vec<String> {
    let (name, version) = TAURI_DRIVER;
    let root = repo_root().join("target/tools").display().to_string();
    ["cargo", "install", "--locked", "--version", version, "--root", &root, name]
        .map(str::to_owned)
        .to_vec()
}

/// Installs tauri-driver into `target/tools` unless that version is there.
fn install_tauri_driver() -> Result<()> {
    let installed = command(tauri_driver_path()).arg("--help").output().is_ok();
    let receipt = repo_root().join("target/tools/.crates.toml");
    let wanted = format!("{} {}", TAURI_DRIVER.0, TAURI_DRIVER.1);
    if installed && std::fs::read_to_string(&receipt).is_ok_and(|text| text.contains(&wanted)) {
        println!("{wanted} present");
        return Ok(());
    }
    let install = tauri_driver_install();
    run(cargo().args(&install[1..]))
}

/// The desktop app's front end: npm packages as locked, then type check,
/// unit tests and the build the app embeds.
fn front_end() -> Result<()> {
    let ui = repo_root().join("ui");
    require_npm("the desktop app's front end")?;
    let npm = |args: &[&str]| {
        let mut npm = command("npm");
        npm.current_dir(&ui).args(args);
        npm
    };
    npm_install_locked(&ui)?;
    run(&mut npm(&["run", "check"]))?;
    run(&mut npm(&["test"]))?;
    run(&mut npm(&["run", "build"]))
}

fn require_npm(what: &str) -> Result<()> {
    if !succeeds(command("npm").arg("--version")) {
        bail!(
            "npm is not installed; {what} needs Node.js 20 or later with npm \
             (Debian: apt-get install nodejs npm)"
        );
    }
    Ok(())
}

/// Installs the npm packages of `dir` as its lock file pins them, unless
/// they are installed already.
fn npm_install_locked(dir: &Path) -> Result<()> {
    // npm records what it installed in node_modules/.package-lock.json:
    // the same as the lock file means nothing to install.
    let installed = std::fs::read(dir.join("node_modules/.package-lock.json")).ok();
    let lock = dir.join("package-lock.json");
    let locked = std::fs::read(&lock).with_context(|| format!("reading {}", lock.display()))?;
    if installed.is_some_and(|installed| same_packages(&installed, &locked)) {
        return Ok(());
    }
    // `npm install` with the lock, not `npm ci`: the registry here lacks
    // some other platforms' optional packages, which the lock then leaves
    // out and `npm ci` refuses.
    run(command("npm").current_dir(dir).args(["install", "--no-audit", "--no-fund", "--no-save"]))
}

/// Whether npm's record of installed packages lists the same packages as
/// the lock file (the record leaves out the root package and the header).
fn same_packages(installed: &[u8], locked: &[u8]) -> bool {
    let packages = |bytes: &[u8]| -> Option<serde_json::Value> {
        let mut packages =
            serde_json::from_slice::<serde_json::Value>(bytes).ok()?.get("packages")?.clone();
        packages.as_object_mut()?.remove("");
        Some(packages)
    };
    matches!((packages(installed), packages(locked)), (Some(a), Some(b)) if a == b)
}

fn ipc_types() -> Result<()> {
    run(cargo()
        .args(["test", "--locked", "-p", "sealpost-app", "--lib", "ipc::tests"])
        .env("SEALPOST_WRITE_IPC_TYPES", "1"))?;
    println!("wrote ui/src/lib/ipc-types.ts");
    Ok(())
}

fn package_installed(package: &str) -> bool {
    command("dpkg-query").args(["-W", "-f=${Status}", package]).output().is_ok_and(|output| {
        String::from_utf8_lossy(&output.stdout).contains("install ok installed")
    })
}

fn running_as_root() -> bool {
    command("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

/// Installs whichever of `DEBIAN_PACKAGES` are missing (as root), or fails
/// with the exact command to run (as anyone else).
fn install_debian_packages() -> Result<()> {
    if !succeeds(command("dpkg-query").arg("--version")) {
        println!("not a Debian system (no dpkg-query); make sure these are installed:");
        println!("  {}", DEBIAN_PACKAGES.join(" "));
        return Ok(());
    }
    let missing: Vec<&str> =
        DEBIAN_PACKAGES.iter().copied().filter(|package| !package_installed(package)).collect();
    if missing.is_empty() {
        println!("all {} Debian packages present", DEBIAN_PACKAGES.len());
        return Ok(());
    }
    if !running_as_root() {
        bail!(
            "missing Debian packages: {missing}. Install them with:\n  \
             sudo apt-get update && sudo apt-get install -y --no-install-recommends {missing}\n\
             (or skip this check with --no-install)",
            missing = missing.join(" ")
        );
    }
    println!("installing {}", missing.join(" "));
    if !DEBCONF_SELECTIONS.is_empty() {
        let mut preseed = command("debconf-set-selections")
            .stdin(Stdio::piped())
            .spawn()
            .context("could not start debconf-set-selections")?;
        let lines = format!("{}\n", DEBCONF_SELECTIONS.join("\n"));
        preseed
            .stdin
            .take()
            .context("debconf-set-selections has no stdin")?
            .write_all(lines.as_bytes())
            .context("could not write to debconf-set-selections")?;
        if !preseed.wait()?.success() {
            bail!("debconf-set-selections refused: {}", DEBCONF_SELECTIONS.join("; "));
        }
    }
    run(command("apt-get").arg("update"))?;
    run(command("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing))
}

/// Builds the Linux packages and checks the other systems' installer sources.
fn build_installers(no_install: bool, debug: bool) -> Result<()> {
    if !no_install {
        install_debian_packages()?;
    }
    let profile = if debug { installers::Profile::Debug } else { installers::Profile::Release };
    front_end()?;
    run(cargo().args(installers::binaries_build(profile)))?;
    let out = repo_root().join("target/installers").join(profile.name());
    let packages = installers::build(profile, &out)?;
    // The Windows (WiX, ADMX/ADML) and macOS (pkgbuild, profile) sources.
    run(cargo().args([
        "test",
        "--locked",
        "-p",
        "sealpost-harness",
        "--test",
        "installers",
        "templates::",
    ]))?;
    println!("\nBuilt in {}:", out.display());
    for file in &packages.files {
        let size = std::fs::metadata(file).map(|metadata| metadata.len()).unwrap_or_default();
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        println!("  {name:<44} {:>8.1} MiB", size as f64 / 1_048_576.0);
    }
    println!("Windows MSI and macOS pkg: built on those systems, see docs/deploy-desktop.md");
    Ok(())
}

/// Runs the demo program, passing its arguments and exit status through.
fn demo(no_install: bool, args: &[String]) -> Result<ExitCode> {
    // The demo runs a real Postfix and Dovecot.
    if !no_install {
        install_debian_packages()?;
    }
    // `--gui` opens the desktop app, which embeds the built front end.
    let gui = args.iter().any(|arg| arg == "--gui");
    if gui {
        front_end()?;
    }
    // Built before the demo starts, so that no step's time includes a build.
    run(cargo().args(binaries_build(gui)))?;
    let root = repo_root();
    let mut demo = cargo();
    demo.args(["run", "--quiet", "--locked", "-p", "sealpost-harness", "--bin", "sealpost-demo"])
        .arg("--")
        .args(args)
        .env("SEALPOST_SERVER_BIN", root.join("target/debug/sealpost-server"))
        .env("SEALPOST_AGENT_BIN", root.join("target/debug/sealpost-agent"))
        .env("SEALPOST_APP_BIN", root.join("target/debug/sealpost"));
    let (description, status) = status(&mut demo)?;
    match status.code() {
        Some(code) => Ok(ExitCode::from(u8::try_from(code).unwrap_or(1))),
        None => bail!("{description} was stopped ({status})"),
    }
}

fn bench(no_install: bool, quick: bool, args: &[String]) -> Result<()> {
    if !no_install {
        install_debian_packages()?;
    }
    let profile = if quick { BenchProfile::Debug } else { BenchProfile::Release };
    run_bench(profile, args)
}

/// The load section for `minutes`, on release builds. It needs neither the
/// mail stack nor the peers, so no Debian packages are checked.
fn soak(minutes: u64) -> Result<()> {
    if minutes == 0 {
        bail!("--minutes must be at least 1");
    }
    let seconds = minutes.saturating_mul(60).to_string();
    let args = ["--only", "load", "--load-seconds", &seconds, "--out", "target/soak"];
    run_bench(BenchProfile::Release, &args.map(str::to_owned))
}

/// Builds, then runs the benchmark program on the binaries of `profile`.
/// Missing a target is reported, never an error; a section that cannot run is.
fn run_bench(profile: BenchProfile, args: &[String]) -> Result<()> {
    run(cargo().args(bench_build(profile)))?;
    let target = repo_root().join("target").join(profile.name());
    let mut bench = command(target.join("sealpost-bench"));
    bench
        .args(["--profile", profile.name()])
        .args(args)
        .env("SEALPOST_SERVER_BIN", target.join("sealpost-server"))
        .env("SEALPOST_AGENT_BIN", target.join("sealpost-agent"));
    if profile == BenchProfile::Debug {
        bench.arg("--quick");
    }
    run(&mut bench)
}
