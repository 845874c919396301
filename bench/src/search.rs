//! Local search: a generated mailbox indexed by the agent's search index
//! and by notmuch, then the same queries asked of both, the way a person
//! asks them: `sealpost-agent search` beside `notmuch search`.
//!
//! Both commands start a process, open the index, find the best 50 and
//! print them as JSON, so their wall times compare like with like; the
//! in-process figures show what the index itself costs.

mod corpus;
mod notmuch;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use sealpost_agent::config::{AgentConfig, AgentPaths, ImapSettings, ServerSettings};
use sealpost_agent::index::{IndexedMessage, SearchIndex};
use sealpost_agent::secrets::SecretStoreKind;
use sealpost_proto::api::MailSecurity;
use tokio::process::Command;

use self::corpus::{Corpus, OWNER_ADDRESS, Prose, Query};
use self::notmuch::Notmuch;
use crate::report::{Figure, Row, Target};
use crate::stats::{median, percentile};
use crate::{Context, Outcome};

/// The mailbox is the same in every run.
const SEED: u64 = 0x5ea1_9057;
/// Results a search shows, as a mail client's list would.
const LIMIT: u32 = 50;
/// Timed runs of each query per tool, after one untimed run.
const REPEATS: usize = 5;
/// When the messages were indexed, for the index's bookkeeping.
const INDEXED_AT: i64 = 1_800_000_000;
/// Messages per `SearchIndex::add_all` in the build: what the agent's
/// rebuild fetches from the mailbox at a time.
const REBUILD_BATCH: usize = 50;

pub async fn run(context: &Context) -> Result<Outcome> {
    let notmuch_version = Notmuch::version().await?;
    let prose = Prose::read()?;
    let count = context.sizes.search_corpus;
    // Messages swapped in one at a time once the mailbox is indexed.
    let swapped_count = (count / 100).clamp(20, 1_000);
    let (prose, corpus, swapped) = tokio::task::spawn_blocking(move || {
        let corpus = corpus::generate(&prose, count, SEED);
        let swapped = corpus::generate(&prose, swapped_count, SEED + 1);
        (prose, Arc::new(corpus), swapped)
    })
    .await?;
    let queries = corpus.queries(&prose, context.sizes.search_queries);
    let dir = tempfile::Builder::new().prefix("sealpost-bench-search-").tempdir()?;
    let mut notes = vec![format!(
        "{count} generated messages, {:.1} MiB (a quarter of them replies in threads, one in \
         eight with a text attachment), their text drawn from {} words of prose in {} files; \
         seed {SEED:#x}; {notmuch_version}.",
        mib(corpus.bytes() as u64),
        prose.word_count(),
        prose.sources.len(),
    )];

    let paths = AgentPaths::new(dir.path().join("agent"));
    register_offline(&paths)?;
    let index = SearchIndex::open(&paths.index_db()).await?;
    let ours_build = index_corpus(&index, &corpus).await?;
    let ours_bytes = index_bytes(&paths.index_db())?;
    let notmuch = {
        let (dir, corpus) = (dir.path().to_owned(), corpus.clone());
        tokio::task::spawn_blocking(move || Notmuch::prepare(&dir, &corpus.messages)).await??
    };
    drop(corpus);
    let notmuch_build = notmuch.index().await?;
    let notmuch_bytes = notmuch.database_bytes()?;

    let hits = hit_counts(&index, &notmuch, &queries).await?;
    let stemmed_only = matched_by_stemming_only(&notmuch, &queries, &hits).await?;
    notes.push(check_hits(&queries, &hits, &stemmed_only)?);
    let ours_in_process = in_process_medians(&index, &queries).await?;
    let notmuch_queries: Vec<&str> = queries.iter().map(|query| query.notmuch.as_str()).collect();
    let notmuch_in_process = notmuch.in_process_medians(&notmuch_queries, LIMIT, REPEATS).await?;
    index.close().await;

    let cli = AgentSearch { binary: context.binaries.agent.clone(), paths: paths.clone() };
    let (ours_cli, notmuch_cli) = command_medians(&cli, &notmuch, &queries, &hits).await?;
    // Only now, so that both tools searched the same messages.
    let index = SearchIndex::open(&paths.index_db()).await?;
    let adds = add_one_by_one(&index, &swapped).await?;
    index.close().await;

    notes.push(format!(
        "Query times: per query the median of {REPEATS} runs (after one untimed run; the tools \
         take turns), then p50 and p95 over the {} queries. Commands: `sealpost-agent search \
         QUERY --json --limit {LIMIT}` and `notmuch search --format=json --limit={LIMIT} QUERY`; \
         in-process: `SearchIndex::search` and the same search through python3-notmuch2.",
        queries.len()
    ));
    notes.push(
        "Index build: ours through `SearchIndex::add_all`, a transaction per batch as a rebuild \
         fetches them; notmuch's is `notmuch new` over a maildir (tags and flag \
         synchronisation off). Index add: `SearchIndex::add` of one more message, as a swap \
         does, after the queries. Sizes after the build: index.db with its -wal and -shm; \
         notmuch's .notmuch/."
            .to_owned(),
    );
    if notmuch_in_process.is_none() {
        notes.push("python3-notmuch2 is not installed: no in-process figure for notmuch.".into());
    }
    let figures = Figures {
        count,
        queries: queries.len(),
        ours_cli,
        notmuch_cli,
        ours_in_process,
        notmuch_in_process,
        ours_build,
        notmuch_build,
        adds,
        ours_bytes,
        notmuch_bytes,
    };
    Ok(Outcome { rows: figures.rows(), notes })
}

/// Everything measured; per-query figures are medians in milliseconds.
struct Figures {
    count: usize,
    queries: usize,
    ours_cli: Vec<f64>,
    notmuch_cli: Vec<f64>,
    ours_in_process: Vec<f64>,
    notmuch_in_process: Option<Vec<f64>>,
    ours_build: Duration,
    notmuch_build: Duration,
    /// Milliseconds per message added on its own.
    adds: Vec<f64>,
    ours_bytes: u64,
    notmuch_bytes: u64,
}

impl Figures {
    fn rows(&self) -> Vec<Row> {
        let in_process = Figure::ms(median(&self.ours_in_process));
        vec![
            Row::against(
                format!("query p50 ({} queries, {LIMIT} results, command)", self.queries),
                Figure::ms(median(&self.ours_cli)),
                "notmuch search",
                Figure::ms(median(&self.notmuch_cli)),
                Target::BelowReference,
            ),
            Row::against(
                "query p95 (command)",
                Figure::ms(percentile(&self.ours_cli, 95.0)),
                "notmuch search",
                Figure::ms(percentile(&self.notmuch_cli, 95.0)),
                Target::None,
            ),
            match &self.notmuch_in_process {
                Some(theirs) => Row::against(
                    "query p50 (in-process)",
                    in_process,
                    "notmuch2 (Python)",
                    Figure::ms(median(theirs)),
                    Target::None,
                ),
                None => Row::alone("query p50 (in-process)", in_process, Target::None),
            },
            Row::against(
                format!("index build, {} messages in batches of {REBUILD_BATCH}", self.count),
                Figure::seconds(self.ours_build.as_secs_f64()),
                "notmuch new",
                Figure::seconds(self.notmuch_build.as_secs_f64()),
                Target::None,
            ),
            Row::alone(
                format!("index add, one message into {} (p50 of {})", self.count, self.adds.len()),
                Figure::ms(median(&self.adds)),
                Target::None,
            ),
            Row::against(
                "index size",
                Figure::mib(mib(self.ours_bytes)),
                "notmuch database",
                Figure::mib(mib(self.notmuch_bytes)),
                Target::None,
            ),
        ]
    }
}

/// The note listing the queries with how many messages each index finds;
/// an error when the counts show a broken corpus or index.
fn check_hits(queries: &[Query], hits: &[(usize, usize)], stemmed_only: &[bool]) -> Result<String> {
    let unmatched: Vec<&str> = queries
        .iter()
        .zip(hits)
        .zip(stemmed_only)
        .filter(|((_, (ours, theirs)), stemmed)| *ours == 0 && *theirs > 0 && !**stemmed)
        .map(|((query, _), _)| query.text.as_str())
        .collect();
    if !unmatched.is_empty() {
        bail!("the index finds nothing for {unmatched:?}, which notmuch matches");
    }
    let empty = hits.iter().filter(|(ours, theirs)| *ours == 0 || *theirs == 0).count();
    if empty * 4 > queries.len() {
        bail!("{empty} of {} queries match nothing in one of the indexes", queries.len());
    }
    let listed: Vec<String> = queries
        .iter()
        .zip(hits)
        .map(|(query, (ours, theirs))| {
            format!("{} \"{}\" {ours}/{theirs}", query.kind.label(), query.notmuch)
        })
        .collect();
    Ok(format!(
        "Queries (ours as typed, each word a prefix; notmuch's in its syntax), with the \
         messages each matches, ours/notmuch (notmuch stems words, ours does not): {}.",
        listed.join(", ")
    ))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1024.0 / 1024.0
}

/// A data directory with `agent.toml`, as registration leaves it: the
/// search command reads it before it opens the index.
fn register_offline(paths: &AgentPaths) -> Result<()> {
    let config = AgentConfig {
        email: OWNER_ADDRESS.to_owned(),
        device_id: "dev_bench_search".to_owned(),
        device_name: "search benchmark".to_owned(),
        registered_at: "2027-01-15T08:00:00Z".to_owned(),
        server: ServerSettings {
            url: "https://sealpost.example.org".to_owned(),
            origin: "https://sealpost.example.org".to_owned(),
            signing_keys: Vec::new(),
        },
        imap: ImapSettings {
            host: "imap.example.org".to_owned(),
            port: 993,
            security: MailSecurity::Tls,
            username: OWNER_ADDRESS.to_owned(),
        },
        smtp: None,
        folders: vec!["INBOX".to_owned(), "Archive".to_owned(), "Clients".to_owned()],
        outbox_folder: None,
        sent_folder: None,
        ca_file: None,
        secret_store: SecretStoreKind::Keyring,
    };
    config.save(paths).context("writing agent.toml")
}

/// Indexes every message the way the agent's rebuild does.
async fn index_corpus(index: &SearchIndex, corpus: &Corpus) -> Result<Duration> {
    let started = Instant::now();
    for batch in corpus.messages.chunks(REBUILD_BATCH) {
        let entries: Vec<IndexedMessage<'_>> = batch.iter().map(indexed).collect();
        index.add_all(&entries, INDEXED_AT).await?;
    }
    let elapsed = started.elapsed();
    let indexed = index.count().await?;
    if usize::try_from(indexed).ok() != Some(corpus.messages.len()) {
        bail!("the index holds {indexed} of {} messages", corpus.messages.len());
    }
    Ok(elapsed)
}

/// Adds each of `swapped` on its own, as the agent does when it swaps one
/// in: how long each took, in milliseconds.
async fn add_one_by_one(index: &SearchIndex, swapped: &Corpus) -> Result<Vec<f64>> {
    let mut samples = Vec::with_capacity(swapped.messages.len());
    for message in &swapped.messages {
        let started = Instant::now();
        index.add(&indexed(message), INDEXED_AT).await?;
        samples.push(ms(started.elapsed()));
    }
    Ok(samples)
}

fn indexed(message: &corpus::Message) -> IndexedMessage<'_> {
    IndexedMessage {
        message_id: &message.message_id,
        folder: message.folder,
        uid: message.uid,
        raw: &message.raw,
    }
}

/// The index file with its write-ahead log and shared memory.
fn index_bytes(db: &Path) -> Result<u64> {
    let mut total =
        std::fs::metadata(db).with_context(|| format!("reading {}", db.display()))?.len();
    for suffix in ["-wal", "-shm"] {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        total += std::fs::metadata(PathBuf::from(name)).map_or(0, |metadata| metadata.len());
    }
    Ok(total)
}

/// Messages each query matches in each index: ours, notmuch's.
async fn hit_counts(
    index: &SearchIndex,
    notmuch: &Notmuch,
    queries: &[Query],
) -> Result<Vec<(usize, usize)>> {
    let mut counts = Vec::with_capacity(queries.len());
    for query in queries {
        let ours = index.search(&query.text, u32::MAX).await?.len();
        let theirs = notmuch.count(&query.notmuch).await?;
        counts.push((ours, theirs));
    }
    Ok(counts)
}

/// For each query ours finds nothing for and notmuch finds something:
/// whether notmuch found it only through its English stemming (`secure`
/// matching "Security"), which ours, taking every word as typed, rightly
/// does not. Quoted, a word is not stemmed.
async fn matched_by_stemming_only(
    notmuch: &Notmuch,
    queries: &[Query],
    hits: &[(usize, usize)],
) -> Result<Vec<bool>> {
    let mut stemmed_only = Vec::with_capacity(queries.len());
    for (query, (ours, theirs)) in queries.iter().zip(hits) {
        let only = if *ours == 0 && *theirs > 0 {
            let as_typed: Vec<String> = query
                .notmuch
                .split_whitespace()
                .map(
                    |word| {
                        if word.ends_with('*') { word.to_owned() } else { format!("\"{word}\"") }
                    },
                )
                .collect();
            notmuch.count(&as_typed.join(" ")).await? == 0
        } else {
            false
        };
        stemmed_only.push(only);
    }
    Ok(stemmed_only)
}

/// Per-query medians, in milliseconds, of `SearchIndex::search` itself.
async fn in_process_medians(index: &SearchIndex, queries: &[Query]) -> Result<Vec<f64>> {
    let mut medians = Vec::with_capacity(queries.len());
    for query in queries {
        index.search(&query.text, LIMIT).await?;
        let mut samples = Vec::with_capacity(REPEATS);
        for _ in 0..REPEATS {
            let started = Instant::now();
            index.search(&query.text, LIMIT).await?;
            samples.push(ms(started.elapsed()));
        }
        medians.push(median(&samples));
    }
    Ok(medians)
}

fn ms(elapsed: Duration) -> f64 {
    elapsed.as_secs_f64() * 1000.0
}

/// `sealpost-agent search`, run as a person runs it.
struct AgentSearch {
    binary: PathBuf,
    paths: AgentPaths,
}

impl AgentSearch {
    /// Its wall time and how many hits it printed.
    async fn search(&self, query: &str) -> Result<(Duration, usize)> {
        let limit = LIMIT.to_string();
        let started = Instant::now();
        let output = Command::new(&self.binary)
            .args(["search", "--json", "--limit", &limit, "--", query])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(sealpost_agent::config::DATA_DIR_ENV, &self.paths.dir)
            // The machine's own policy must not steer the measurement.
            .env(sealpost_agent::policy::POLICY_FILE_ENV, self.paths.dir.join("no-policy.toml"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output()
            .await
            .context("running sealpost-agent search")?;
        let elapsed = started.elapsed();
        if !output.status.success() {
            bail!(
                "`sealpost-agent search {query}` failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let mut hits = 0;
        for line in output.stdout.split(|byte| *byte == b'\n').filter(|line| !line.is_empty()) {
            serde_json::from_slice::<serde_json::Value>(line).with_context(|| {
                format!("`sealpost-agent search {query}` printed a line that is not JSON")
            })?;
            hits += 1;
        }
        Ok((elapsed, hits))
    }
}

/// Per-query medians, in milliseconds, of both commands: each query once
/// untimed (checking it shows what the index holds), then the tools take turns.
async fn command_medians(
    ours: &AgentSearch,
    notmuch: &Notmuch,
    queries: &[Query],
    hits: &[(usize, usize)],
) -> Result<(Vec<f64>, Vec<f64>)> {
    let shown = |matching: usize| matching.min(LIMIT as usize);
    for (query, (ours_hits, notmuch_hits)) in queries.iter().zip(hits) {
        let (_, printed) = ours.search(&query.text).await?;
        if printed != shown(*ours_hits) {
            bail!("`sealpost-agent search {}` showed {printed} of {ours_hits} hits", query.text);
        }
        let (_, threads) = notmuch.search(&query.notmuch, LIMIT).await?;
        if (threads == 0) != (*notmuch_hits == 0) || threads > shown(*notmuch_hits) {
            bail!(
                "`notmuch search {}` showed {threads} threads for {notmuch_hits} messages",
                query.notmuch
            );
        }
    }
    let mut ours_samples = vec![Vec::with_capacity(REPEATS); queries.len()];
    let mut notmuch_samples = vec![Vec::with_capacity(REPEATS); queries.len()];
    for repeat in 0..REPEATS {
        for (index, query) in queries.iter().enumerate() {
            // Alternating who goes first keeps either from always running
            // right after the other has warmed or cooled the caches.
            let ours_first = (repeat + index) % 2 == 0;
            if ours_first {
                ours_samples[index].push(ms(ours.search(&query.text).await?.0));
            }
            notmuch_samples[index].push(ms(notmuch.search(&query.notmuch, LIMIT).await?.0));
            if !ours_first {
                ours_samples[index].push(ms(ours.search(&query.text).await?.0));
            }
        }
    }
    let medians = |samples: Vec<Vec<f64>>| samples.iter().map(|s| median(s)).collect();
    Ok((medians(ours_samples), medians(notmuch_samples)))
}

#[cfg(test)]
mod tests {
    use super::corpus::QueryKind;
    use super::*;

    fn query(text: &str) -> Query {
        Query { kind: QueryKind::Common, text: text.to_owned(), notmuch: text.to_owned() }
    }

    #[test]
    fn a_query_only_notmuch_answers_fails_the_section() {
        let queries: Vec<Query> = ["mail", "secure", "kofi", "invoice"].map(query).into();
        let none = [false; 4];
        let note = check_hits(&queries, &[(9, 9), (5, 7), (3, 3), (0, 0)], &none).expect("fine");
        assert!(note.contains("common \"secure\" 5/7"), "{note}");
        let broken = [(9, 9), (0, 7), (3, 3), (1, 1)];
        let error = check_hits(&queries, &broken, &none).expect_err("broken");
        assert!(error.to_string().contains("secure"), "{error}");
        // Found by notmuch only as "security", through its stemming.
        let stemmed = [false, true, false, false];
        check_hits(&queries, &broken, &stemmed).expect("a stemming difference is no fault");
        let error =
            check_hits(&queries, &[(9, 9), (0, 0), (3, 3), (0, 0)], &none).expect_err("empty");
        assert!(error.to_string().contains("2 of 4"), "{error}");
    }
}
