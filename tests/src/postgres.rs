//! A real PostgreSQL (Debian's) per test: its own cluster in a temporary
//! directory, on a free loopback port, with an empty `sealpost` database
//! owned by the superuser `sealpost` (trust authentication on loopback).
//!
//! `initdb` takes about a second, so it runs once per machine into a
//! template cluster under the temporary directory (made under a file lock,
//! since tests run as separate processes); each server starts from a copy.
//! PostgreSQL refuses to run as root, so it runs as the `postgres` user the
//! package creates. Durability is switched off: tests never outlive a crash.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use tempfile::TempDir;

use crate::process::{
    GroupChild, free_ports, spawn_in_group, start_with_retries, wait_until_ready,
};

/// The user PostgreSQL runs as.
const OS_USER: &str = "postgres";
/// The superuser, who owns the database.
pub const DATABASE_USER: &str = "sealpost";
pub const DATABASE: &str = "sealpost";

/// Stops and deletes its cluster when dropped.
pub struct PostgresServer {
    address: SocketAddr,
    bin: PathBuf,
    _child: GroupChild,
    _dir: TempDir,
}

impl PostgresServer {
    pub async fn start() -> anyhow::Result<Self> {
        start_with_retries(|| async {
            tokio::task::spawn_blocking(Self::start_once).await.context("starting PostgreSQL")?
        })
        .await
    }

    fn start_once() -> anyhow::Result<Self> {
        let bin = bin_dir()?;
        let template = template(&bin)?;
        let dir = tempfile::Builder::new().prefix("sealpost-postgres-").tempdir()?;
        let data = dir.path().join("data");
        copy_tree(&template, &data)?;
        chown_to_postgres(dir.path())?;
        let [port] = free_ports::<1>()?;
        let mut command = as_postgres(&bin.join("postgres"));
        command
            .arg("-D")
            .arg(&data)
            .arg("-p")
            .arg(port.to_string())
            .arg("-k")
            .arg(dir.path())
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]);
        let log = std::fs::File::create(dir.path().join("postgres.log"))?;
        let mut child = spawn_in_group(&mut command, Stdio::from(log), "cannot start postgres")?;
        let pg_isready = bin.join("pg_isready");
        wait_until_ready(&mut child, "postgres", || {
            Command::new(&pg_isready)
                .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string(), "-d", DATABASE])
                .args(["-U", DATABASE_USER])
                .status()
                .is_ok_and(|status| status.success())
        })
        .with_context(|| {
            let log = std::fs::read_to_string(dir.path().join("postgres.log")).unwrap_or_default();
            format!("postgres log:\n{log}")
        })?;
        Ok(Self {
            address: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            bin,
            _child: GroupChild(child),
            _dir: dir,
        })
    }

    /// `postgres://sealpost@127.0.0.1:PORT/sealpost`.
    pub fn url(&self) -> String {
        format!("postgres://{DATABASE_USER}@{}/{DATABASE}", self.address)
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Everything stored in the database, as `pg_dump` writes its data.
    pub async fn dump(&self) -> anyhow::Result<String> {
        let output = tokio::process::Command::new(self.bin.join("pg_dump"))
            .args(["--data-only", "-d", &self.url()])
            .output()
            .await
            .context("running pg_dump")?;
        if !output.status.success() {
            bail!("pg_dump failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Runs `sql` with psql; returns what it printed (unaligned, tuples only).
    pub async fn psql(&self, sql: &str) -> anyhow::Result<String> {
        let output = tokio::process::Command::new(self.bin.join("psql"))
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", &self.url(), "-c", sql])
            .output()
            .await
            .context("running psql")?;
        if !output.status.success() {
            bail!("psql {sql:?} failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }
}

/// The newest installed PostgreSQL's programs.
fn bin_dir() -> anyhow::Result<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context(
            "PostgreSQL is missing: apt-get install postgresql (cargo xtask test installs it)",
        )?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).context("no initdb under /usr/lib/postgresql/*/bin")
}

/// The template cluster for this PostgreSQL version, made once.
fn template(bin: &Path) -> anyhow::Result<PathBuf> {
    let version = bin.parent().and_then(Path::file_name).and_then(|v| v.to_str()).unwrap_or("x");
    // Under the system's temporary directory: the postgres user must be
    // able to reach it, which a checkout under a private home may not allow.
    let root = std::env::temp_dir().join("sealpost-postgres");
    std::fs::create_dir_all(&root)?;
    let template = root.join(format!("postgres-{version}-template"));
    if template.join("PG_VERSION").exists() {
        return Ok(template);
    }
    let lock = std::fs::File::create(root.join(format!("postgres-{version}-template.lock")))?;
    lock.lock().context("locking the PostgreSQL template")?;
    if template.join("PG_VERSION").exists() {
        return Ok(template);
    }
    let building = root.join(format!("postgres-{version}-template.partial"));
    let _ = std::fs::remove_dir_all(&building);
    std::fs::create_dir_all(&building)?;
    chown_to_postgres(&building)?;
    let data = building.join("data");
    let initdb = as_postgres(&bin.join("initdb"))
        .arg("-D")
        .arg(&data)
        .args(["--auth=trust", "-U", DATABASE_USER, "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"])
        .output()
        .context("running initdb")?;
    if !initdb.status.success() {
        bail!("initdb failed: {}", String::from_utf8_lossy(&initdb.stderr));
    }
    // The database, made without starting a server.
    let mut single = as_postgres(&bin.join("postgres"))
        .args(["--single", "-D"])
        .arg(&data)
        .arg("postgres")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running postgres --single")?;
    {
        use std::io::Write;
        let mut stdin = single.stdin.take().context("postgres --single's input")?;
        writeln!(stdin, "CREATE DATABASE {DATABASE} OWNER {DATABASE_USER};")?;
    }
    let created = single.wait_with_output()?;
    if !created.status.success() {
        bail!("creating the database failed: {}", String::from_utf8_lossy(&created.stderr));
    }
    std::fs::rename(&data, &template).context("putting the template in place")?;
    let _ = std::fs::remove_dir_all(&building);
    Ok(template)
}

/// A command that runs `program` as the `postgres` user.
fn as_postgres(program: &Path) -> Command {
    let mut command = Command::new("setpriv");
    command.args(["--reuid", OS_USER, "--regid", OS_USER, "--init-groups", "--"]).arg(program);
    command
}

/// `cp -a`: the copy keeps the owner and the modes PostgreSQL insists on.
fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    let status = Command::new("cp").arg("-a").arg(from).arg(to).status().context("running cp")?;
    if !status.success() {
        bail!("copying {} to {} failed", from.display(), to.display());
    }
    Ok(())
}

fn chown_to_postgres(path: &Path) -> anyhow::Result<()> {
    let status = Command::new("chown")
        .arg("-R")
        .arg(format!("{OS_USER}:{OS_USER}"))
        .arg(path)
        .status()
        .context("running chown")?;
    if !status.success() {
        bail!("chown {OS_USER} {} failed (the tests run as root)", path.display());
    }
    Ok(())
}
