//! notmuch, the peer: the same messages as a maildir, indexed by
//! `notmuch new` and searched with `notmuch search`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::process::Command;

use super::corpus::{Message, OWNER_ADDRESS, OWNER_NAME};

const NOTMUCH: &str = "notmuch";
/// The Python that Debian's `python3-notmuch2` binds to.
const SYSTEM_PYTHON: &str = "/usr/bin/python3";

/// What `notmuch search` prints per thread, in-process: how long each of
/// `queries` takes (threads newest first, up to `limit`, with their authors,
/// subject and date read), the median of `repeats` runs, in milliseconds.
const IN_PROCESS_SCRIPT: &str = r#"
import json, statistics, sys, time
import notmuch2
config, limit, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
queries = json.load(sys.stdin)
database = notmuch2.Database(config=config)
def search(query):
    threads = database.threads(query, sort=notmuch2.Database.SORT.NEWEST_FIRST,
                               omit_excluded=notmuch2.Database.EXCLUDE.FALSE)
    for count, thread in enumerate(threads):
        if count == limit:
            break
        thread.authors, thread.subject, thread.last, thread.matched
medians = []
for query in queries:
    search(query)
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        search(query)
        samples.append((time.perf_counter() - started) * 1000.0)
    medians.append(statistics.median(samples))
print(json.dumps(medians))
"#;

/// A maildir with its notmuch configuration, in a directory of its own.
pub struct Notmuch {
    config: PathBuf,
    maildir: PathBuf,
    home: PathBuf,
}

impl Notmuch {
    /// The installed version, or why notmuch cannot be used.
    pub async fn version() -> Result<String> {
        let output = Command::new(NOTMUCH)
            .arg("--version")
            .output()
            .await
            .context("notmuch is not installed (the Debian package `notmuch`)")?;
        if !output.status.success() {
            bail!("`notmuch --version` failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    /// Writes `messages` as a maildir under `dir`, and a configuration that
    /// adds no tags and leaves maildir flags alone: indexing only.
    pub fn prepare(dir: &Path, messages: &[Message]) -> Result<Self> {
        let maildir = dir.join("mail");
        for sub in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(maildir.join(sub))?;
        }
        for (sequence, message) in messages.iter().enumerate() {
            // Delivered and read: `cur/`, with the Seen flag.
            let name = format!("{}.M{sequence}P1.bench:2,S", message.date);
            std::fs::write(maildir.join("cur").join(name), &message.raw)
                .context("writing the maildir")?;
        }
        let config = dir.join("notmuch-config");
        let text = format!(
            "[database]\npath={}\n\n[user]\nname={OWNER_NAME}\nprimary_email={OWNER_ADDRESS}\n\n\
             [new]\ntags=\nignore=\n\n[search]\nexclude_tags=\n\n\
             [maildir]\nsynchronize_flags=false\n",
            maildir.display()
        );
        std::fs::write(&config, text)?;
        let home = dir.join("notmuch-home");
        std::fs::create_dir_all(&home)?;
        Ok(Self { config, maildir, home })
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(NOTMUCH);
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .env("NOTMUCH_CONFIG", &self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    async fn run(&self, args: &[&str]) -> Result<(Duration, Vec<u8>)> {
        let started = Instant::now();
        let output = self.command(args).output().await.context("running notmuch")?;
        let elapsed = started.elapsed();
        if !output.status.success() {
            bail!(
                "`notmuch {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok((elapsed, output.stdout))
    }

    /// `notmuch new`: indexes the whole maildir.
    pub async fn index(&self) -> Result<Duration> {
        Ok(self.run(&["new", "--quiet"]).await?.0)
    }

    /// Bytes of the database (`.notmuch/` in the maildir).
    pub fn database_bytes(&self) -> Result<u64> {
        let database = self.maildir.join(".notmuch");
        if !database.is_dir() {
            bail!("notmuch put no database at {}", database.display());
        }
        directory_bytes(&database)
    }

    /// How many messages match.
    pub async fn count(&self, query: &str) -> Result<usize> {
        let (_, stdout) = self.run(&["count", "--", query]).await?;
        String::from_utf8_lossy(&stdout)
            .trim()
            .parse()
            .with_context(|| format!("`notmuch count {query}` printed no number"))
    }

    /// `notmuch search --format=json --limit=LIMIT QUERY`: its wall time
    /// and how many threads it printed.
    pub async fn search(&self, query: &str, limit: u32) -> Result<(Duration, usize)> {
        let limit = format!("--limit={limit}");
        let (elapsed, stdout) = self.run(&["search", "--format=json", &limit, "--", query]).await?;
        let threads: Vec<serde_json::Value> = serde_json::from_slice(&stdout)
            .with_context(|| format!("`notmuch search {query}` printed no JSON array"))?;
        Ok((elapsed, threads.len()))
    }

    /// Per-query medians in milliseconds of the same search in-process
    /// (through `python3-notmuch2`), or `None` when that is not installed.
    pub async fn in_process_medians(
        &self,
        queries: &[&str],
        limit: u32,
        repeats: usize,
    ) -> Result<Option<Vec<f64>>> {
        let probe = Command::new(SYSTEM_PYTHON)
            .args(["-c", "import notmuch2"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
        if !probe.is_ok_and(|status| status.success()) {
            return Ok(None);
        }
        let mut child = Command::new(SYSTEM_PYTHON)
            .args(["-c", IN_PROCESS_SCRIPT])
            .arg(&self.config)
            .arg(limit.to_string())
            .arg(repeats.to_string())
            .env("HOME", &self.home)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting python3")?;
        if let Some(mut stdin) = child.stdin.take() {
            use tokio::io::AsyncWriteExt as _;
            stdin.write_all(&serde_json::to_vec(queries)?).await?;
        }
        let output = child.wait_with_output().await?;
        if !output.status.success() {
            bail!(
                "searching notmuch in-process failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let medians: Vec<f64> = serde_json::from_slice(&output.stdout)
            .context("the in-process notmuch search printed no JSON list")?;
        if medians.len() != queries.len() {
            bail!(
                "the in-process notmuch search timed {} of {} queries",
                medians.len(),
                queries.len()
            );
        }
        Ok(Some(medians))
    }
}

/// Bytes of every file under `dir`.
pub fn directory_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let metadata = entry.metadata()?;
        total += if metadata.is_dir() { directory_bytes(&entry.path())? } else { metadata.len() };
    }
    Ok(total)
}
