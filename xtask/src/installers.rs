//! `cargo xtask installers`: the Linux packages, built from the workspace's
//! binaries.
//!
//! - the desktop `.deb` and `.rpm` (app, headless agent, its systemd user
//!   unit, desktop entry, icons) from the Tauri bundler, run through the npm
//!   `@tauri-apps/cli` pinned in `installers/desktop`;
//! - the server `.deb`, assembled with `dpkg-deb` from `installers/server`:
//!   the binary, a hardened system unit, a commented configuration and the
//!   maintainer scripts that create the `sealpost` user.
//!
//! Windows and macOS packages cannot be built here; their sources in
//! `installers/` are checked by the tests in `tests/tests/installers.rs`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::{command, npm_install_locked, repo_root, require_npm, run};

/// The build the packages take their binaries from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// What IT deploys.
    Release,
    /// The test build, packaged in seconds for the install tests.
    Debug,
}

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Profile::Release => "release",
            Profile::Debug => "debug",
        }
    }
}

/// What [`build`] made.
pub struct Packages {
    pub files: Vec<PathBuf>,
}

/// The `cargo build` arguments for the binaries the packages hold.
pub fn binaries_build(profile: Profile) -> Vec<&'static str> {
    let mut args = vec!["build", "--locked"];
    if profile == Profile::Release {
        args.push("--release");
    }
    args.extend(["-p", "sealpost-app", "-p", "sealpost-agent-cli", "-p", "sealpost-server"]);
    args
}

/// Packages the already built binaries of `profile` into `out`.
pub fn build(profile: Profile, out: &Path) -> Result<Packages> {
    let root = repo_root();
    let binaries = root.join("target").join(profile.name());
    for binary in ["sealpost", "sealpost-agent", "sealpost-server"] {
        if !binaries.join(binary).exists() {
            bail!(
                "{} is missing; build it first: cargo {}",
                binaries.join(binary).display(),
                binaries_build(profile).join(" ")
            );
        }
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut files = desktop_packages(profile, &binaries, out)?;
    files.push(server_deb(profile, &binaries, out)?);
    Ok(Packages { files })
}

/// The Tauri CLI from `installers/desktop`, installed as locked when missing.
fn tauri_cli() -> Result<PathBuf> {
    let dir = repo_root().join("installers/desktop");
    require_npm("building the desktop packages")?;
    npm_install_locked(&dir)?;
    Ok(dir.join("node_modules/.bin/tauri"))
}

/// The desktop `.deb` and `.rpm`: the bundler's configuration is in
/// `desktop/app/tauri.conf.json`; the headless agent's path depends on the
/// profile, so it is added here.
fn desktop_packages(profile: Profile, binaries: &Path, out: &Path) -> Result<Vec<PathBuf>> {
    let tauri = tauri_cli()?;
    let mut agent = binaries.join("sealpost-agent");
    if profile == Profile::Release {
        // The bundler takes the app from the target directory (and patches it
        // there anyway); the agent goes in as a stripped copy, so that the
        // target directory keeps its symbols for profiling.
        strip(&binaries.join("sealpost"))?;
        let stripped = out.join("stage/sealpost-agent");
        std::fs::create_dir_all(out.join("stage"))?;
        std::fs::copy(&agent, &stripped)?;
        strip(&stripped)?;
        agent = stripped;
    }
    let files = serde_json::json!({ "/usr/bin/sealpost-agent": agent.display().to_string() });
    let config = serde_json::json!({
        "bundle": { "linux": { "deb": { "files": files }, "rpm": { "files": files } } }
    });
    let bundle_dir = binaries.join("bundle");
    // Stale bundles of an earlier version must not be picked up below.
    let _ = std::fs::remove_dir_all(&bundle_dir);
    let mut bundle = command(&tauri);
    bundle
        .current_dir(repo_root().join("desktop/app"))
        .args(["bundle", "--ci", "--bundles", "deb,rpm", "--config"])
        .arg(config.to_string());
    if profile == Profile::Debug {
        bundle.arg("--debug");
    }
    run(&mut bundle)?;
    let mut built = Vec::new();
    for (kind, extension) in [("deb", "deb"), ("rpm", "rpm")] {
        let dir = bundle_dir.join(kind);
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?;
        for entry in entries {
            let path = entry?.path();
            if path.extension().is_some_and(|ext| ext == extension) {
                let name = path.file_name().context("a bundle without a name")?;
                let target = out.join(name);
                std::fs::rename(&path, &target)
                    .or_else(|_| std::fs::copy(&path, &target).map(|_| ()))
                    .with_context(|| format!("moving {} to {}", path.display(), out.display()))?;
                built.push(target);
            }
        }
    }
    if built.len() != 2 {
        bail!("the Tauri bundler made {} packages instead of a .deb and an .rpm", built.len());
    }
    Ok(built)
}

/// The server's `.deb`, laid out in a staging tree and built by `dpkg-deb`.
fn server_deb(profile: Profile, binaries: &Path, out: &Path) -> Result<PathBuf> {
    let root = repo_root();
    let sources = root.join("installers/server");
    let version = workspace_version()?;
    let architecture = command_output(command("dpkg").arg("--print-architecture"))?;
    let stage = out.join("stage/sealpost-server");
    let _ = std::fs::remove_dir_all(&stage);
    let place = |from: &Path, to: &str, mode: u32| -> Result<()> {
        let target = stage.join(to);
        std::fs::create_dir_all(target.parent().context("a path without a parent")?)?;
        std::fs::copy(from, &target)
            .with_context(|| format!("copying {} to {}", from.display(), target.display()))?;
        set_mode(&target, mode)
    };
    // (source, place in the package, mode)
    let layout = [
        (binaries.join("sealpost-server"), "usr/bin/sealpost-server", 0o755),
        (
            sources.join("sealpost-server.service"),
            "usr/lib/systemd/system/sealpost-server.service",
            0o644,
        ),
        (sources.join("server.toml"), "etc/sealpost/server.toml", 0o640),
        (
            root.join("server/sealpost.example.toml"),
            "usr/share/doc/sealpost-server/sealpost.example.toml",
            0o644,
        ),
    ];
    for (from, to, mode) in &layout {
        place(from, to, *mode)?;
    }
    for snippet in ["main.cf", "master.cf", "transport"] {
        place(
            &root.join("installers/postfix").join(snippet),
            &format!("usr/share/doc/sealpost-server/postfix/{snippet}"),
            0o644,
        )?;
    }
    for script in ["postinst", "prerm", "postrm"] {
        place(&sources.join("debian").join(script), &format!("DEBIAN/{script}"), 0o755)?;
    }
    std::fs::write(stage.join("DEBIAN/conffiles"), "/etc/sealpost/server.toml\n")?;
    if profile == Profile::Release {
        strip(&stage.join("usr/bin/sealpost-server"))?;
    }
    let depends = shared_library_depends(&stage.join("usr/bin/sealpost-server"))?;
    let installed_kib = directory_size(&stage.join("usr"))? / 1024;
    let control = format!(
        "Package: sealpost-server\n\
         Version: {version}\n\
         Architecture: {architecture}\n\
         Maintainer: Sealpost <packages@sealpost.example>\n\
         Installed-Size: {installed_kib}\n\
         Depends: {depends}, adduser\n\
         Recommends: postfix\n\
         Section: mail\n\
         Priority: optional\n\
         Homepage: https://example.invalid/sealpost\n\
         Description: Sealpost secure message server\n \
         Stores secure messages and sends ordinary email notifications in their\n \
         place; recipients read them through the Sealpost desktop agent or the\n \
         Secure Message Center. Runs as the sealpost user with its state in\n \
         /var/lib/sealpost and its configuration in /etc/sealpost/server.toml.\n"
    );
    std::fs::write(stage.join("DEBIAN/control"), control)?;
    let package = out.join(format!("sealpost-server_{version}_{architecture}.deb"));
    // xz for what is shipped; the test build's large binary packs in a
    // second with gzip instead of a minute.
    let compression: &[&str] =
        if profile == Profile::Release { &["-Zxz"] } else { &["-Zgzip", "-z1"] };
    run(command("dpkg-deb")
        .arg("--root-owner-group")
        .args(compression)
        .arg("--build")
        .arg(&stage)
        .arg(&package))?;
    let _ = std::fs::remove_dir_all(out.join("stage"));
    Ok(package)
}

/// Drops the symbol table of a shipped binary (a quarter of its size); the
/// build keeps no debug information in release anyway.
fn strip(binary: &Path) -> Result<()> {
    run(command("strip").arg("--strip-unneeded").arg(binary))
}

/// The shared libraries `binary` needs, as Debian package relations
/// (`dpkg-shlibdeps`, which wants a `debian/control` beside it).
fn shared_library_depends(binary: &Path) -> Result<String> {
    let scratch = binary.parent().context("a binary without a folder")?.join("shlibdeps");
    std::fs::create_dir_all(scratch.join("debian"))?;
    std::fs::write(
        scratch.join("debian/control"),
        "Source: sealpost\n\nPackage: sealpost-server\nArchitecture: any\n",
    )?;
    let output =
        command_output(command("dpkg-shlibdeps").current_dir(&scratch).arg("-O").arg(binary))?;
    std::fs::remove_dir_all(&scratch)?;
    output
        .strip_prefix("shlibs:Depends=")
        .map(str::to_owned)
        .with_context(|| format!("dpkg-shlibdeps printed {output:?}"))
}

fn command_output(command: &mut std::process::Command) -> Result<String> {
    let output = command.output().with_context(|| format!("running {command:?}"))?;
    if !output.status.success() {
        bail!("{command:?} failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn workspace_version() -> Result<String> {
    let manifest = std::fs::read_to_string(repo_root().join("Cargo.toml"))?;
    manifest
        .lines()
        .skip_while(|line| line.trim() != "[workspace.package]")
        .find_map(|line| line.trim().strip_prefix("version = "))
        .map(|version| version.trim_matches('"').to_owned())
        .context("no version in [workspace.package] of Cargo.toml")
}

fn directory_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let metadata = entry.metadata()?;
        total += if metadata.is_dir() { directory_size(&entry.path())? } else { metadata.len() };
    }
    Ok(total)
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> Result<()> {
    bail!("the Linux packages are built on Linux")
}
