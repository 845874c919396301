//! `cargo xtask fuzz`: the libFuzzer targets of `fuzz/` (`sealpost-fuzz`),
//! built and run on the stable toolchain.
//!
//! cargo-fuzz needs a nightly toolchain only for its address sanitizer;
//! the coverage instrumentation libFuzzer steers by is made of stable
//! `-C` flags, so this builds the targets with the flags cargo-fuzz passes
//! (minus the sanitizer: the code under test forbids `unsafe`) into
//! `target/fuzz`, and runs the binaries itself. Each target's committed
//! seeds (`fuzz/corpus/<target>/`, and the fixtures named below) are read
//! only: what a run finds goes to `target/fuzz/corpus/<target>/`, crashes
//! to `target/fuzz/artifacts/<target>/`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// One fuzz target: a `[[bin]]` of `fuzz/Cargo.toml`.
pub struct Target {
    pub name: &'static str,
    /// Seed directories besides `fuzz/corpus/<name>/`, from the repository root.
    extra_seeds: &'static [&'static str],
    /// Largest input tried, in bytes: room for the largest seeds.
    max_len: usize,
}

pub const TARGETS: &[Target] = &[
    Target { name: "notification", extra_seeds: &["proto/tests/corpus"], max_len: 16 * 1024 },
    Target {
        name: "mime",
        extra_seeds: &[
            "tests/fixtures/hostile",
            "tests/fixtures/routing",
            "server/tests/fixtures/bounces",
        ],
        max_len: 32 * 1024,
    },
    Target { name: "smtp_session", extra_seeds: &[], max_len: 8 * 1024 },
    Target { name: "api_json", extra_seeds: &[], max_len: 4 * 1024 },
];

/// How long `cargo xtask test` runs each target.
pub const CI_SECONDS: u64 = 20;

/// Flags of `cargo fuzz build` (sancov instrumentation, `cfg(fuzzing)`,
/// checked arithmetic and assertions), all stable.
const RUSTFLAGS: &[&str] = &[
    "-Cpasses=sancov-module",
    "-Cllvm-args=-sanitizer-coverage-level=4",
    "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
    "-Cllvm-args=-sanitizer-coverage-pc-table",
    "-Cllvm-args=-sanitizer-coverage-trace-compares",
    "--cfg",
    "fuzzing",
    "-Cdebug-assertions",
    "-Coverflow-checks",
];

/// The release profile, changed for the instrumented build, which CI makes
/// from nothing every time: thin LTO across the server's whole dependency
/// graph would cost minutes at every link and find nothing more, and
/// optimising all of that graph (database, HTTP, DNS and mail clients)
/// would double the build for code no target reaches. Our crates and what
/// every input goes through (the parsers, signatures, tokio, axum, rustls)
/// are optimised; the rest is built as quickly as possible.
const PROFILE: &[&str] = &[
    "profile.release.lto=false",
    "profile.release.opt-level=1",
    "profile.release.package.\"*\".opt-level=0",
    // libFuzzer itself (C++, built by libfuzzer-sys at this level): at -O0
    // its bookkeeping of rare features takes most of every execution.
    "profile.release.package.libfuzzer-sys.opt-level=3",
];

/// The dependencies optimised despite [`PROFILE`]: unoptimised, an
/// Ed25519 check alone takes milliseconds, and the targets' executions a
/// second drop tenfold and more.
const OPTIMISED: &[&str] = &[
    "ammonia",
    "axum",
    "axum-core",
    "bytes",
    "curve25519-dalek",
    "ed25519-dalek",
    "encoding_rs",
    "html5ever",
    "http",
    "http-body-util",
    "mail-parser",
    "markup5ever",
    "memchr",
    "rustls",
    "serde_json",
    "sha2",
    "smtp-proto",
    "tokio",
];

/// A run longer than this on one input is a hang, reported as a crash.
const TIMEOUT_SECONDS: u64 = 10;

fn root() -> PathBuf {
    super::repo_root()
}

/// The host's target triple: with `--target`, cargo keeps RUSTFLAGS away
/// from build scripts and proc macros, which cannot link the
/// instrumentation's runtime.
fn host_triple() -> Result<String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(&rustc).arg("-vV").output().context("could not run rustc -vV")?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find_map(|line| line.strip_prefix("host: "))
        .map(str::to_owned)
        .context("rustc -vV names no host triple")
}

/// Where the built targets are.
fn binaries(triple: &str) -> PathBuf {
    root().join("target/fuzz").join(triple).join("release")
}

/// Builds every target, instrumented; returns the directory of the binaries.
pub fn build() -> Result<PathBuf> {
    let triple = host_triple()?;
    let mut flags: Vec<String> = RUSTFLAGS.iter().map(|flag| (*flag).to_owned()).collect();
    // Flags a developer set are kept, as cargo-fuzz keeps them.
    if let Some(extra) = std::env::var_os("RUSTFLAGS") {
        flags.extend(extra.to_string_lossy().split_whitespace().map(str::to_owned));
    }
    let mut cargo = super::cargo();
    cargo.args(["build", "--release", "--locked", "--bins", "-p", "sealpost-fuzz"]);
    for setting in PROFILE {
        cargo.args(["--config", setting]);
    }
    for package in OPTIMISED {
        cargo.arg("--config").arg(format!("profile.release.package.{package}.opt-level=1"));
    }
    cargo
        .args(["--target", &triple])
        // Its own target directory: the instrumented build shares nothing
        // with the main one.
        .env("CARGO_TARGET_DIR", root().join("target/fuzz"))
        .env("RUSTFLAGS", flags.join(" "));
    super::run(&mut cargo)?;
    Ok(binaries(&triple))
}

/// What one run did.
struct Outcome {
    target: &'static str,
    seconds: f64,
    executions: u64,
    coverage: u64,
    corpus: u64,
    crashes: Vec<PathBuf>,
    log: PathBuf,
}

/// Builds, then runs each of `names` (all targets when empty) for
/// `seconds`, and prints a table. Fails naming each crash's input and the
/// command that reproduces it.
pub fn fuzz(names: &[String], seconds: u64) -> Result<()> {
    let chosen: Vec<&Target> = if names.is_empty() {
        TARGETS.iter().collect()
    } else {
        names
            .iter()
            .map(|name| {
                TARGETS.iter().find(|target| target.name == name).with_context(|| {
                    let known: Vec<&str> = TARGETS.iter().map(|target| target.name).collect();
                    format!("no fuzz target {name:?}; the targets are {}", known.join(", "))
                })
            })
            .collect::<Result<_>>()?
    };
    let started = Instant::now();
    let bin = build()?;
    println!("fuzz targets built in {:.1} s", started.elapsed().as_secs_f64());
    let mut outcomes = Vec::new();
    for target in chosen {
        println!("\n==> fuzzing {} for {seconds} s", target.name);
        outcomes.push(run_target(&bin, target, seconds)?);
    }
    print_table(&outcomes);
    let crashed: Vec<&Outcome> =
        outcomes.iter().filter(|outcome| !outcome.crashes.is_empty()).collect();
    if crashed.is_empty() {
        return Ok(());
    }
    let mut message = String::from("fuzzing found inputs that crash or hang:\n");
    for outcome in crashed {
        for crash in &outcome.crashes {
            let binary = bin.join(outcome.target);
            message.push_str(&format!(
                "  {}: {}\n    reproduce: {} {}\n",
                outcome.target,
                crash.display(),
                relative(&binary).display(),
                relative(crash).display()
            ));
        }
        message.push_str(&format!("    log: {}\n", relative(&outcome.log).display()));
    }
    message.push_str(
        "Fix the code the input reaches, add a regression test for it, then run the target again.",
    );
    bail!(message)
}

fn relative(path: &Path) -> &Path {
    path.strip_prefix(root()).unwrap_or(path)
}

fn run_target(bin: &Path, target: &Target, seconds: u64) -> Result<Outcome> {
    let root = root();
    let work = root.join("target/fuzz/corpus").join(target.name);
    let artifacts = root.join("target/fuzz/artifacts").join(target.name);
    let logs = root.join("target/fuzz/logs");
    for dir in [&work, &artifacts, &logs] {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("could not create {}", dir.display()))?;
    }
    let before = files_in(&artifacts);
    let log = logs.join(format!("{}.log", target.name));
    let log_file = std::fs::File::create(&log)
        .with_context(|| format!("could not create {}", log.display()))?;
    let mut command = Command::new(bin.join(target.name));
    command
        .current_dir(&root)
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={TIMEOUT_SECONDS}"))
        .arg(format!("-max_len={}", target.max_len))
        .arg("-rss_limit_mb=2048")
        .arg("-print_final_stats=1")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        // New inputs go to the first directory; the seeds are only read.
        .arg(&work)
        .arg(root.join("fuzz/corpus").join(target.name));
    for seeds in target.extra_seeds {
        command.arg(root.join(seeds));
    }
    // libFuzzer reports on stderr, a line every few seconds: kept in the
    // log, read back for the table.
    command.stdout(Stdio::null()).stderr(log_file);
    let started = Instant::now();
    let status = command
        .status()
        .with_context(|| format!("could not start {}", bin.join(target.name).display()))?;
    let elapsed = started.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    // libFuzzer names what it leaves by what happened; slow units are only noted.
    let failures = ["crash-", "timeout-", "oom-", "leak-"];
    let mut crashes: Vec<PathBuf> = files_in(&artifacts)
        .into_iter()
        .filter(|file| !before.contains(file))
        .filter(|file| {
            let name = file.file_name().unwrap_or_default().to_string_lossy();
            failures.iter().any(|prefix| name.starts_with(prefix))
        })
        .collect();
    crashes.sort();
    if !status.success() && crashes.is_empty() {
        // Stopped without leaving an input behind: show why.
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        for line in tail.iter().rev() {
            eprintln!("{line}");
        }
        bail!("fuzz target {} failed ({status}); its log is {}", target.name, log.display());
    }
    let outcome = Outcome {
        target: target.name,
        seconds: elapsed,
        executions: stat(&text, "stat::number_of_executed_units:").unwrap_or(0),
        coverage: last_field(&text, "cov:").unwrap_or(0),
        corpus: last_field(&text, "corp:").unwrap_or(0),
        crashes,
        log,
    };
    println!(
        "{}: {} executions in {:.0} s, {} crash(es)",
        outcome.target,
        outcome.executions,
        outcome.seconds,
        outcome.crashes.len()
    );
    Ok(outcome)
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|entry| entry.ok().map(|entry| entry.path())).collect())
        .unwrap_or_default()
}

/// `stat::name: N` from libFuzzer's final statistics.
fn stat(log: &str, name: &str) -> Option<u64> {
    log.lines().rev().find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
}

/// The number after `field` (`cov:`, `corp:`) in the last status line with it.
fn last_field(log: &str, field: &str) -> Option<u64> {
    log.lines().rev().find_map(|line| {
        let (_, after) = line.split_once(field)?;
        let digits: String = after.trim_start().chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    })
}

fn print_table(outcomes: &[Outcome]) {
    println!(
        "\n{:<14} {:>8} {:>12} {:>9} {:>9} {:>8} {:>8}",
        "target", "seconds", "executions", "exec/s", "coverage", "corpus", "crashes"
    );
    for outcome in outcomes {
        let per_second = outcome.executions as f64 / outcome.seconds.max(0.001);
        println!(
            "{:<14} {:>8.0} {:>12} {:>9.0} {:>9} {:>8} {:>8}",
            outcome.target,
            outcome.seconds,
            outcome.executions,
            per_second,
            outcome.coverage,
            outcome.corpus,
            outcome.crashes.len()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "INFO: Seed: 1\n\
#2\tINITED cov: 1203 ft: 1500 corp: 40/31Kb exec/s: 0 rss: 40Mb\n\
#1024\tpulse  cov: 1250 ft: 1700 corp: 52/40Kb lim: 4096 exec/s: 512 rss: 41Mb\n\
#155882\tDONE   cov: 1301 ft: 1888 corp: 61/44Kb lim: 4096 exec/s: 14171 rss: 41Mb\n\
Done 155882 runs in 11 second(s)\n\
stat::number_of_executed_units: 155882\n\
stat::average_exec_per_sec:     14171\n";

    #[test]
    fn the_table_reads_libfuzzers_final_statistics() {
        assert_eq!(stat(LOG, "stat::number_of_executed_units:"), Some(155_882));
        assert_eq!(last_field(LOG, "cov:"), Some(1301));
        assert_eq!(last_field(LOG, "corp:"), Some(61));
        assert_eq!(stat("", "stat::number_of_executed_units:"), None);
    }

    #[test]
    fn every_target_is_a_binary_with_committed_seeds() {
        let manifest = std::fs::read_to_string(root().join("fuzz/Cargo.toml")).expect("manifest");
        for target in TARGETS {
            assert!(
                manifest.contains(&format!("name = \"{}\"", target.name)),
                "{} is no [[bin]] of fuzz/Cargo.toml",
                target.name
            );
            let seeds = root().join("fuzz/corpus").join(target.name);
            assert!(!files_in(&seeds).is_empty(), "{} has no seeds", seeds.display());
            for extra in target.extra_seeds {
                assert!(root().join(extra).is_dir(), "{extra} is gone");
            }
        }
    }
}
