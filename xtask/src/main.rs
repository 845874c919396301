//! Project automation, run as `cargo xtask <command>`.
//!
//! - `test`: what CI runs. Installs the Debian packages the tests need, then
//!   rustfmt check, clippy with warnings denied, every test, and the fuzz
//!   target build.
//! - `demo`: the server on embedded defaults, one secure message stored and
//!   retrieved, each step printed.
//! - `fuzz`: runs the notification parser's fuzz target for a while.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

/// Debian packages the build and the tests need. Later parts of the system
/// (mail stack, PostgreSQL, desktop app, browser tests) add theirs here.
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
];

/// Answers for packages that would otherwise ask questions during install.
const DEBCONF_SELECTIONS: &[&str] = &["postfix postfix/main_mailer_type select No configuration"];

#[derive(Parser)]
#[command(about = "Sealpost project tasks", disable_help_subcommand = true)]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install missing system packages, then rustfmt, clippy, every test and the fuzz build (what CI runs).
    Test {
        /// Do not check or install Debian packages.
        #[arg(long)]
        no_install: bool,
        /// Skip clippy and the fuzz-target build: formatting and tests only.
        #[arg(long)]
        quick: bool,
    },
    /// Start the server on embedded defaults, store a secure message and retrieve it, printing each step.
    Demo {
        /// Passed to the demo program.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Fuzz the notification parser with libFuzzer (needs `cargo install cargo-fuzz`).
    Fuzz {
        /// How long to run, in seconds.
        #[arg(default_value_t = 60)]
        seconds: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Task::Test { no_install, quick } => test(no_install, quick),
        Task::Demo { args } => demo(&args),
        Task::Fuzz { seconds } => fuzz(seconds),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("\nxtask: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the repository root")
        .to_owned()
}

/// The cargo that runs this task, so toolchain overrides carry through.
fn cargo() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(repo_root());
    command
}

fn run(mut command: Command) -> Result<()> {
    let description = format!("{command:?}");
    let status = command.status().with_context(|| format!("could not start {description}"))?;
    if !status.success() {
        bail!("{description} failed ({status})");
    }
    Ok(())
}

/// Runs the named steps in order, timing each, and stops at the first failure
/// with the command that reruns it alone.
struct Steps {
    started: Instant,
    timings: Vec<(&'static str, f64)>,
}

impl Steps {
    fn new() -> Self {
        Self { started: Instant::now(), timings: Vec::new() }
    }

    fn run(
        &mut self,
        name: &'static str,
        rerun: &str,
        step: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        println!("\n==> {name}");
        let started = Instant::now();
        step().with_context(|| format!("step `{name}` failed; rerun it alone with: {rerun}"))?;
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

fn test(no_install: bool, quick: bool) -> Result<()> {
    let root = repo_root();
    let fuzz_manifest = root.join("proto/fuzz/Cargo.toml");
    let mut steps = Steps::new();

    if !no_install {
        steps.run("system packages", "cargo xtask test", install_debian_packages)?;
    }
    steps.run("rustfmt", "cargo fmt --all -- --check", || {
        let mut workspace = cargo();
        workspace.args(["fmt", "--all", "--", "--check"]);
        run(workspace)?;
        let mut fuzz = cargo();
        fuzz.arg("fmt").arg("--manifest-path").arg(&fuzz_manifest).args(["--", "--check"]);
        run(fuzz)
    })?;
    if !quick {
        steps.run(
            "clippy",
            "cargo clippy --workspace --all-targets --locked -- -D warnings",
            || {
                let mut clippy = cargo();
                clippy.args([
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--locked",
                    "--",
                    "-D",
                    "warnings",
                ]);
                run(clippy)
            },
        )?;
    }
    steps.run("tests", "cargo nextest run --workspace --locked", || {
        let mut tests = cargo();
        if nextest_available() {
            tests.args(["nextest", "run", "--workspace", "--locked"]);
        } else {
            println!("cargo-nextest is not installed; using cargo test (install it with `cargo install cargo-nextest`)");
            tests.args(["test", "--workspace", "--locked"]);
        }
        run(tests)
    })?;
    steps.run("doc tests", "cargo test --workspace --doc --locked", || {
        let mut doc_tests = cargo();
        doc_tests.args(["test", "--workspace", "--doc", "--locked"]);
        run(doc_tests)
    })?;
    if !quick {
        steps.run(
            "fuzz target build",
            "cargo build --manifest-path proto/fuzz/Cargo.toml --locked",
            || {
                // Its own target directory: the fuzz crate is a separate
                // workspace and would otherwise rebuild the main one's
                // dependencies with different features on every switch.
                let mut build = cargo();
                build.arg("build").arg("--manifest-path").arg(&fuzz_manifest).arg("--locked");
                build.env("CARGO_TARGET_DIR", root.join("target/fuzz"));
                run(build)
            },
        )?;
    }
    steps.summary();
    Ok(())
}

fn nextest_available() -> bool {
    cargo().args(["nextest", "--version"]).output().is_ok_and(|output| output.status.success())
}

fn package_installed(package: &str) -> bool {
    Command::new("dpkg-query").args(["-W", "-f=${Status}", package]).output().is_ok_and(|output| {
        String::from_utf8_lossy(&output.stdout).contains("install ok installed")
    })
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

fn install_debian_packages() -> Result<()> {
    if Command::new("dpkg-query").arg("--version").output().is_err() {
        println!(
            "not a Debian system (no dpkg-query): make sure these are installed: {}",
            DEBIAN_PACKAGES.join(" ")
        );
        return Ok(());
    }
    let missing: Vec<&str> =
        DEBIAN_PACKAGES.iter().copied().filter(|package| !package_installed(package)).collect();
    if missing.is_empty() {
        println!("all {} packages present", DEBIAN_PACKAGES.len());
        return Ok(());
    }
    let install_command =
        format!("apt-get install -y --no-install-recommends {}", missing.join(" "));
    if !running_as_root() {
        bail!(
            "missing Debian packages: {}. Install them with:\n  sudo apt-get update && sudo {install_command}",
            missing.join(" ")
        );
    }
    println!("installing {}", missing.join(" "));
    let mut preseed = Command::new("debconf-set-selections");
    preseed.stdin(std::process::Stdio::piped());
    let mut child = preseed.spawn().context("could not start debconf-set-selections")?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().context("debconf-set-selections has no stdin")?;
        stdin.write_all(format!("{}\n", DEBCONF_SELECTIONS.join("\n")).as_bytes())?;
    }
    if !child.wait()?.success() {
        bail!("debconf-set-selections failed");
    }
    let mut update = Command::new("apt-get");
    update.arg("update").env("DEBIAN_FRONTEND", "noninteractive");
    run(update)?;
    let mut install = Command::new("apt-get");
    install
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive");
    run(install)
}

fn demo(args: &[String]) -> Result<()> {
    let mut demo = cargo();
    demo.args([
        "run",
        "--quiet",
        "--locked",
        "-p",
        "sealpost-harness",
        "--bin",
        "sealpost-demo",
        "--",
    ])
    .args(args);
    run(demo)
}

fn fuzz(seconds: u64) -> Result<()> {
    let has_cargo_fuzz =
        cargo().args(["fuzz", "--version"]).output().is_ok_and(|output| output.status.success());
    if !has_cargo_fuzz {
        bail!(
            "cargo-fuzz is not installed. Install it with `cargo install cargo-fuzz`; \
             it needs nightly features, which this task enables on the stable toolchain with RUSTC_BOOTSTRAP=1"
        );
    }
    let proto = repo_root().join("proto");
    let found = proto.join("fuzz/corpus/parse_notification");
    std::fs::create_dir_all(&found)
        .with_context(|| format!("could not create {}", found.display()))?;
    let mut fuzz = cargo();
    fuzz.current_dir(&proto)
        .env("RUSTC_BOOTSTRAP", "1")
        // New inputs go to the first directory; the golden corpus only seeds.
        .args([
            "fuzz",
            "run",
            "parse_notification",
            "fuzz/corpus/parse_notification",
            "tests/corpus",
            "--",
        ])
        .arg(format!("-max_total_time={seconds}"));
    run(fuzz)
}
