//! A deterministic mailbox of realistic messages, and the queries a person
//! would type into it.
//!
//! The text comes from real English prose read at run time: sentences are
//! walked word to word along the prose's own word pairs, with jumps to a
//! word drawn by its frequency, so word frequencies keep the prose's Zipf
//! shape. Mail adds what prose lacks: people, companies, project code names
//! that only a few messages mention, threads, signatures and attachments.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use data_encoding::BASE64;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use sealpost_proto::ids::MessageId;

/// Where the prose comes from: the repository's own documents, so the
/// corpus is the same wherever the benchmark runs.
const PROSE_SOURCES: [&str; 4] =
    ["README.md", "ARCHITECTURE.md", "proto/NOTIFICATION.md", "desktop/README.md"];

/// The mailbox owner every message is addressed to.
pub const OWNER_NAME: &str = "Alice Martin";
pub const OWNER_ADDRESS: &str = "alice.martin@example.org";

/// Words a query never consists of: too common to search for, or
/// operators in notmuch's query syntax.
const STOPWORDS: &[&str] = &[
    "about", "after", "also", "and", "adj", "been", "before", "being", "both", "but", "can",
    "could", "does", "each", "even", "every", "for", "from", "have", "here", "into", "its", "just",
    "like", "many", "more", "most", "much", "must", "near", "need", "never", "not", "once", "only",
    "other", "over", "same", "should", "some", "such", "than", "that", "their", "them", "then",
    "there", "these", "they", "this", "those", "through", "under", "very", "what", "when", "where",
    "which", "while", "will", "with", "within", "without", "would", "xor", "your", "yours",
];

const FIRST_NAMES: &[&str] = &[
    "James", "Maria", "Wei", "Fatima", "Lars", "Priya", "Tomás", "Ingrid", "Kwame", "Yuki",
    "Olivia", "Mateo", "Amara", "Jonas", "Chloé", "Rahul", "Sofia", "Dmitri", "Grace", "Hassan",
    "Elena", "Noah", "Zoë", "Arjun", "Hannah", "Kofi", "Lucía", "Pieter", "Mei", "Samuel", "Aisha",
    "Erik", "Camille", "Diego", "Nadia", "Oliver", "Leila", "Marcus", "Sarita", "Tim", "Rosa",
    "Jürgen", "Anika", "Felix", "Imani", "Victor", "Hiroshi", "Clara", "Omar", "Beatriz",
];

#[rustfmt::skip]
const LAST_NAMES: &[&str] = &[
    "Okafor", "Lindqvist", "Chen", "Haddad", "Novak", "Sharma", "Fernández", "Kowalski", "Mensah",
    "Tanaka", "Brennan", "Rossi", "Dubois", "Schneider", "Patel", "Ivanova", "Walsh", "Nakamura",
    "Silva", "Jørgensen", "Murphy", "Abdullah", "Van Dijk", "Kim", "Moreau", "Castillo", "Hughes",
    "Becker", "Nguyen", "Osei", "Markande", "Larsen", "Costa", "Fischer", "Reyes", "Whitfield",
    "Horvath", "Ali", "Sato", "Müller", "Garrison", "Eze", "Lambert", "Quinn", "Petrov", "Alvarez",
    "Kaur", "Holm", "Duarte", "Ferreira",
];

/// Companies the owner corresponds with, by mail domain.
const COMPANIES: &[(&str, &str)] = &[
    ("Northwind Health", "northwind-health.example"),
    ("Brightwater Legal", "brightwater.example"),
    ("Almabase", "almabase.example"),
    ("Kestrel Logistics", "kestrel-logistics.example"),
    ("Harbor & Finch", "harborfinch.example"),
    ("Meridian Bank", "meridianbank.example"),
    ("Orchard Labs", "orchardlabs.example"),
    ("Regency Academy", "regencyacademy.example"),
    ("Bluepeak Insurance", "bluepeak.example"),
    ("Cobalt Accounting", "cobalt-accounting.example"),
    ("Ferrous Engineering", "ferrous.example"),
    ("Greenline Clinics", "greenline.example"),
    ("Lumen Architects", "lumen-arch.example"),
    ("Stonebridge Partners", "stonebridge.example"),
    ("Tidewater Realty", "tidewater.example"),
    ("Vantage Payroll", "vantagepayroll.example"),
];

const TITLES: &[&str] = &[
    "Account Manager",
    "Office Manager",
    "Senior Counsel",
    "Practice Nurse",
    "Head of Operations",
    "Financial Adviser",
    "Project Lead",
    "Claims Handler",
    "HR Business Partner",
    "Compliance Officer",
];

const GREETINGS: &[&str] =
    &["Hi Alice,", "Hello Alice,", "Dear Alice,", "Hi all,", "Good morning,"];
const SIGN_OFFS: &[&str] = &["Best regards,", "Thanks,", "Kind regards,", "Cheers,", "Best,"];
const FOLDERS: &[(&str, u32)] = &[("INBOX", 70), ("Archive", 20), ("Clients", 10)];
const WEEKDAYS: &[&str] = &["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"];
#[rustfmt::skip]
const MONTHS: &[&str] = &[
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
];
const TIME_ZONES: &[&str] = &["+0000", "+0100", "+0200", "-0500", "-0800", "+0530", "+0900"];

/// Project code names in the mailbox; most are mentioned rarely.
const CODE_NAMES: usize = 3_000;
const CONTACTS: usize = 400;
/// The first message's date (2023-01-02) and the span the mailbox covers.
const FIRST_DATE: i64 = 1_672_617_600;
const SPAN_SECONDS: i64 = 3 * 365 * 86_400;
/// How far back a reply looks for the message it answers.
const RECENT_MESSAGES: usize = 400;
const MAX_REFERENCES: usize = 10;

/// English prose as word sequences, one per sentence.
pub struct Prose {
    /// Every word as written, sentence after sentence.
    words: Vec<String>,
    /// Whether `words[i + 1]` continues the sentence `words[i]` is in.
    continues: Vec<bool>,
    /// The positions of each word (lowercased) in `words`.
    positions: HashMap<String, Vec<usize>>,
    /// Positions that start a sentence.
    starts: Vec<usize>,
    pub sources: Vec<PathBuf>,
}

impl Prose {
    /// Reads the repository's documents.
    pub fn read() -> Result<Self> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let sources: Vec<PathBuf> = PROSE_SOURCES.iter().map(|name| root.join(name)).collect();
        let mut texts = Vec::new();
        for path in &sources {
            texts.push(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading prose from {}", path.display()))?,
            );
        }
        let mut prose = Self::from_texts(&texts)?;
        prose.sources = sources;
        Ok(prose)
    }

    pub fn from_texts(texts: &[String]) -> Result<Self> {
        let mut words = Vec::new();
        let mut continues = Vec::new();
        let mut starts = Vec::new();
        for text in texts {
            for sentence in sentences_of(text) {
                let sentence_words = words_of(&sentence);
                if sentence_words.len() < 3 {
                    continue;
                }
                let start = words.len();
                starts.push(start);
                continues.extend(std::iter::repeat_n(true, sentence_words.len() - 1));
                continues.push(false);
                words.extend(sentence_words);
            }
        }
        if words.len() < 200 {
            bail!("too little prose to build messages from ({} words)", words.len());
        }
        let mut positions: HashMap<String, Vec<usize>> = HashMap::new();
        for (position, word) in words.iter().enumerate() {
            positions.entry(word.to_lowercase()).or_default().push(position);
        }
        Ok(Self { words, continues, positions, starts, sources: Vec::new() })
    }

    pub fn word_count(&self) -> usize {
        self.words.len()
    }

    /// A sentence of `length` words: mostly the prose's own word pairs,
    /// sometimes a jump to a word drawn by frequency.
    fn sentence(&self, rng: &mut impl Rng, length: usize) -> Vec<&str> {
        let mut position = if rng.random_bool(0.5) {
            *self.starts.choose(rng).unwrap_or(&0)
        } else {
            rng.random_range(0..self.words.len())
        };
        let mut sentence = Vec::with_capacity(length);
        while sentence.len() < length {
            sentence.push(self.words[position].as_str());
            let follows = self.continues[position] && rng.random_bool(0.8);
            position = if follows {
                // Any occurrence of this word, then the word after it: the
                // pair's own frequency decides what comes next.
                let same = &self.positions[&self.words[position].to_lowercase()];
                let from = *same.choose(rng).unwrap_or(&position);
                if self.continues[from] { from + 1 } else { position + 1 }
            } else {
                rng.random_range(0..self.words.len())
            };
        }
        sentence
    }

    /// Words a person might search for (lowercase ASCII letters, not a
    /// stopword), most frequent first, with their counts.
    fn searchable_words(&self) -> Vec<(String, usize)> {
        let mut words: Vec<(String, usize)> = self
            .positions
            .iter()
            .filter(|(word, _)| searchable(word))
            .map(|(word, positions)| (word.clone(), positions.len()))
            .collect();
        words.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        words
    }

    /// Adjacent searchable word pairs, most frequent first.
    fn searchable_pairs(&self) -> Vec<((String, String), usize)> {
        let mut pairs: BTreeMap<(String, String), usize> = BTreeMap::new();
        for position in 0..self.words.len() - 1 {
            if !self.continues[position] {
                continue;
            }
            let first = self.words[position].to_lowercase();
            let second = self.words[position + 1].to_lowercase();
            if searchable(&first) && searchable(&second) && first != second {
                *pairs.entry((first, second)).or_default() += 1;
            }
        }
        let mut pairs: Vec<_> = pairs.into_iter().collect();
        pairs.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
        pairs
    }
}

fn searchable(word: &str) -> bool {
    word.len() >= 4
        && word.bytes().all(|byte| byte.is_ascii_lowercase())
        && !STOPWORDS.contains(&word)
}

/// Splits prose into sentences: at sentence ends, and at line breaks that
/// end headings, list items and table rows. Code blocks are not prose.
fn sentences_of(text: &str) -> Vec<String> {
    let mut sentences = Vec::new();
    let mut in_code = false;
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        let structural = trimmed.is_empty()
            || trimmed.starts_with('#')
            || trimmed.starts_with('|')
            || trimmed.starts_with("- ")
            || trimmed.starts_with("* ")
            || trimmed.chars().next().is_some_and(|c| c.is_ascii_digit());
        if in_code || structural {
            sentences.push(std::mem::take(&mut current));
        }
        if in_code {
            continue;
        }
        for character in trimmed.chars() {
            current.push(character);
            if matches!(character, '.' | '!' | '?' | ':' | ';') {
                sentences.push(std::mem::take(&mut current));
            }
        }
        current.push(' ');
    }
    sentences.push(current);
    sentences.retain(|sentence| !sentence.trim().is_empty());
    sentences
}

/// The words of a sentence, stripped of markup and punctuation; tokens
/// that are not words (addresses, paths, code) are dropped.
fn words_of(sentence: &str) -> Vec<String> {
    sentence
        .split_whitespace()
        .map(|token| token.trim_matches(|c: char| !c.is_alphanumeric()))
        .filter(|token| {
            !token.is_empty()
                && token.len() <= 24
                && token.chars().any(char::is_alphabetic)
                && token.chars().all(|c| c.is_alphanumeric() || c == '\'' || c == '-')
        })
        .map(str::to_owned)
        .collect()
}

/// Someone who writes to the owner.
#[derive(Debug, Clone)]
pub struct Contact {
    pub first: String,
    pub last: String,
    pub address: String,
    company: usize,
    title: &'static str,
}

impl Contact {
    pub fn name(&self) -> String {
        format!("{} {}", self.first, self.last)
    }
}

/// One generated message, as the agent receives it from the server.
#[derive(Debug, Clone)]
pub struct Message {
    /// The Sealpost message id.
    pub message_id: String,
    pub folder: &'static str,
    pub uid: u32,
    /// Seconds since the Unix epoch, from the Date header.
    pub date: i64,
    /// The message, CRLF line endings.
    pub raw: Vec<u8>,
}

/// What a query is built from, for the notes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryKind {
    Common,
    Mid,
    /// Once in the prose, so in a few percent of the messages.
    Uncommon,
    /// In a handful of messages.
    Rare,
    Sender,
    Prefix,
    Mixed,
}

impl QueryKind {
    pub fn label(self) -> &'static str {
        match self {
            QueryKind::Common => "common",
            QueryKind::Mid => "mid",
            QueryKind::Uncommon => "uncommon",
            QueryKind::Rare => "rare",
            QueryKind::Sender => "sender",
            QueryKind::Prefix => "prefix",
            QueryKind::Mixed => "words",
        }
    }
}

/// One search, as each tool is asked it.
#[derive(Debug, Clone)]
pub struct Query {
    pub kind: QueryKind,
    /// What the person types into Sealpost (every word a prefix).
    pub text: String,
    /// The same search in notmuch's syntax: words as typed, a prefix search
    /// marked with `*`.
    pub notmuch: String,
}

/// A generated mailbox, and what its queries draw on.
pub struct Corpus {
    pub messages: Vec<Message>,
    pub contacts: Vec<Contact>,
    /// How many messages mention each code name.
    code_name_uses: BTreeMap<String, usize>,
    /// How many messages each contact sent.
    sender_counts: Vec<usize>,
}

impl Corpus {
    pub fn bytes(&self) -> usize {
        self.messages.iter().map(|message| message.raw.len()).sum()
    }

    /// `count` queries over the range of frequencies: common, mid and rare
    /// words, names of senders, prefixes and several words together.
    pub fn queries(&self, prose: &Prose, count: usize) -> Vec<Query> {
        let words = prose.searchable_words();
        let pairs = prose.searchable_pairs();
        let word = |rank: usize| {
            words
                .get(rank.min(words.len().saturating_sub(1)))
                .map_or("mail", |(word, _)| word)
                .to_owned()
        };
        let pair = |rank: usize| match pairs.get(rank.min(pairs.len().saturating_sub(1))) {
            Some(((first, second), _)) => format!("{first} {second}"),
            None => format!("{} {}", word(rank), word(rank + 1)),
        };
        let rare_words: Vec<&String> =
            words.iter().filter(|(_, count)| *count == 1).map(|(word, _)| word).collect();
        let rare = |index: usize| {
            rare_words
                .get(index * rare_words.len() / 3)
                .map_or_else(|| word(words.len() - 1 - index), |word| (*word).clone())
        };
        let mut code_names: Vec<(&String, &usize)> =
            self.code_name_uses.iter().filter(|(_, uses)| **uses > 0).collect();
        code_names.sort_by(|a, b| a.1.cmp(b.1).then_with(|| a.0.cmp(b.0)));
        let code_name = |quantile: f64| {
            let index = ((code_names.len() as f64 - 1.0) * quantile).round() as usize;
            code_names
                .get(index)
                .map_or_else(|| "project".to_owned(), |(name, _)| name.to_lowercase())
        };
        let mut senders: Vec<(usize, usize)> =
            self.sender_counts.iter().copied().enumerate().filter(|(_, sent)| *sent > 0).collect();
        senders.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let ascii_sender = |from: usize| {
            senders[from.min(senders.len().saturating_sub(1))..]
                .iter()
                .map(|(index, _)| &self.contacts[*index])
                .find(|contact| contact.name().is_ascii() && !contact.last.contains(' '))
                .unwrap_or(&self.contacts[0])
        };
        let middle = words.len() / 2;
        let quarter = words.len() / 4;
        let busy_sender = ascii_sender(0);
        let quiet_sender = ascii_sender(senders.len() / 2);
        let prefix_of = |word: String, keep: usize| word.chars().take(keep).collect::<String>();

        let plain = |kind, text: String| Query { kind, notmuch: text.clone(), text };
        let prefix =
            |text: String| Query { kind: QueryKind::Prefix, notmuch: format!("{text}*"), text };
        let catalogue = [
            plain(QueryKind::Common, word(0)),
            plain(QueryKind::Common, word(2)),
            plain(QueryKind::Common, word(5)),
            plain(QueryKind::Mid, word(quarter)),
            plain(QueryKind::Mid, word(words.len() / 3)),
            plain(QueryKind::Mid, word(middle)),
            plain(QueryKind::Uncommon, rare(0)),
            plain(QueryKind::Uncommon, rare(1)),
            plain(QueryKind::Rare, code_name(0.0)),
            plain(QueryKind::Mid, code_name(0.5)),
            plain(QueryKind::Sender, quiet_sender.last.to_lowercase()),
            plain(QueryKind::Sender, busy_sender.name()),
            prefix(prefix_of(word(1), 4)),
            prefix(prefix_of(word(quarter), 5)),
            plain(QueryKind::Mixed, pair(0)),
            plain(QueryKind::Mixed, pair(pairs.len() / 4)),
            plain(QueryKind::Mixed, format!("{} {}", word(3), rare(2))),
            plain(QueryKind::Mixed, format!("{} {}", pair(1), word(quarter / 2))),
            plain(QueryKind::Mixed, format!("{} {}", busy_sender.first.to_lowercase(), word(4))),
            plain(QueryKind::Mixed, format!("{} {}", code_name(0.9), word(6))),
        ];
        catalogue.into_iter().cycle().take(count).collect()
    }
}

/// Generates `count` messages from `prose`; the same seed gives the same bytes.
pub fn generate(prose: &Prose, count: usize, seed: u64) -> Corpus {
    let mut rng = StdRng::seed_from_u64(seed);
    let contacts = contacts(&mut rng);
    let code_names = code_names(&mut rng);
    let mut writer = Writer {
        prose,
        contacts: &contacts,
        code_names: &code_names,
        code_name_uses: code_names.iter().map(|name| (name.clone(), 0)).collect(),
        sender_counts: vec![0; contacts.len()],
        recent: Vec::with_capacity(RECENT_MESSAGES),
        uids: BTreeMap::new(),
    };
    let step = (SPAN_SECONDS / i64::try_from(count.max(1)).unwrap_or(1)).max(1);
    let messages = (0..count)
        .map(|sequence| {
            let date = FIRST_DATE
                + step * i64::try_from(sequence).unwrap_or(0)
                + rng.random_range(0..step);
            writer.message(&mut rng, sequence, date)
        })
        .collect();
    let Writer { code_name_uses, sender_counts, .. } = writer;
    Corpus { messages, contacts, code_name_uses, sender_counts }
}

fn contacts(rng: &mut StdRng) -> Vec<Contact> {
    let mut seen = BTreeSet::new();
    let mut contacts = Vec::with_capacity(CONTACTS);
    while contacts.len() < CONTACTS {
        let first = *FIRST_NAMES.choose(rng).unwrap_or(&"Sam");
        let last = *LAST_NAMES.choose(rng).unwrap_or(&"Smith");
        if !seen.insert((first, last)) {
            continue;
        }
        let company = rng.random_range(0..COMPANIES.len());
        let local = format!("{}.{}", ascii_fold(first), ascii_fold(last)).replace(' ', "");
        contacts.push(Contact {
            first: first.to_owned(),
            last: last.to_owned(),
            address: format!("{local}@{}", COMPANIES[company].1),
            company,
            title: TITLES.choose(rng).unwrap_or(&TITLES[0]),
        });
    }
    contacts
}

/// Pronounceable names that are in no dictionary: the rare words of a mailbox.
fn code_names(rng: &mut StdRng) -> Vec<String> {
    const ONSETS: &[&str] =
        &["b", "k", "d", "l", "m", "n", "r", "s", "t", "v", "z", "br", "tr", "st", "gr", "qu"];
    const VOWELS: &[&str] = &["a", "e", "i", "o", "u", "ai", "ea", "io"];
    const CODAS: &[&str] = &["", "n", "r", "l", "s", "x", "th"];
    let mut names = BTreeSet::new();
    let mut ordered = Vec::with_capacity(CODE_NAMES);
    while ordered.len() < CODE_NAMES {
        let mut name = String::new();
        for _ in 0..rng.random_range(2..=3) {
            name.push_str(ONSETS.choose(rng).unwrap_or(&"k"));
            name.push_str(VOWELS.choose(rng).unwrap_or(&"a"));
        }
        name.push_str(CODAS.choose(rng).unwrap_or(&""));
        let name = capitalized(&name);
        if names.insert(name.clone()) {
            ordered.push(name);
        }
    }
    ordered
}

/// What a reply needs from the message it answers.
struct Sent {
    header_id: String,
    references: String,
    subject: String,
    from: String,
    date: i64,
    opening: Vec<String>,
}

struct Writer<'a> {
    prose: &'a Prose,
    contacts: &'a [Contact],
    code_names: &'a [String],
    code_name_uses: BTreeMap<String, usize>,
    sender_counts: Vec<usize>,
    recent: Vec<Sent>,
    uids: BTreeMap<&'static str, u32>,
}

impl Writer<'_> {
    fn message(&mut self, rng: &mut StdRng, sequence: usize, date: i64) -> Message {
        // A few correspondents write most of the mail.
        let sender_index = skewed(rng, self.contacts.len(), 2.0);
        let sender = &self.contacts[sender_index];
        self.sender_counts[sender_index] += 1;
        // Most code names come up rarely, a few all the time.
        let code_name = rng
            .random_bool(0.6)
            .then(|| self.code_names[skewed(rng, self.code_names.len(), 3.0)].clone());
        if let Some(name) = &code_name {
            *self.code_name_uses.entry(name.clone()).or_default() += 1;
        }
        let answering = (!self.recent.is_empty() && rng.random_bool(0.25))
            .then(|| rng.random_range(0..self.recent.len()));

        let paragraphs = self.paragraphs(rng, code_name.as_deref());
        let subject = match answering {
            Some(index) => {
                let original = &self.recent[index].subject;
                format!("Re: {}", original.strip_prefix("Re: ").unwrap_or(original))
            }
            None => self.subject(rng, code_name.as_deref()),
        };
        let mut body = String::new();
        let _ = write!(body, "{}\r\n\r\n", GREETINGS.choose(rng).unwrap_or(&GREETINGS[0]));
        for paragraph in &paragraphs {
            for line in wrap(paragraph, 72) {
                let _ = write!(body, "{line}\r\n");
            }
            body.push_str("\r\n");
        }
        let _ = write!(
            body,
            "{}\r\n{}\r\n",
            SIGN_OFFS.choose(rng).unwrap_or(&SIGN_OFFS[0]),
            sender.first
        );
        if rng.random_bool(0.5) {
            let company = COMPANIES[sender.company].0;
            let _ = write!(
                body,
                "\r\n-- \r\n{}\r\n{} | {company}\r\n+44 20 7946 {:04}\r\n",
                sender.name(),
                sender.title,
                rng.random_range(0..10_000)
            );
        }
        if let Some(index) = answering {
            let original = &self.recent[index];
            let _ = write!(body, "\r\nOn {}, {} wrote:\r\n", rfc2822(original.date), original.from);
            for line in &original.opening {
                let _ = write!(body, "> {line}\r\n");
            }
        }

        let domain = COMPANIES[sender.company].1;
        let header_id = format!("<{:016x}.{sequence}@{domain}>", rng.random::<u64>());
        // Mail clients keep the thread's root and its latest messages.
        let references = answering.map(|index| {
            let original = &self.recent[index];
            let mut chain: Vec<&str> = original.references.split_whitespace().collect();
            chain.push(&original.header_id);
            if chain.len() > MAX_REFERENCES {
                chain.drain(1..chain.len() - (MAX_REFERENCES - 1));
            }
            chain.join(" ")
        });
        let mut headers = String::new();
        let _ = write!(headers, "From: {}\r\n", mailbox(&sender.name(), &sender.address));
        let _ = write!(headers, "To: {}\r\n", mailbox(OWNER_NAME, OWNER_ADDRESS));
        if rng.random_bool(0.2) {
            let copied = &self.contacts[rng.random_range(0..self.contacts.len())];
            let _ = write!(headers, "Cc: {}\r\n", mailbox(&copied.name(), &copied.address));
        }
        let _ = write!(headers, "Subject: {}\r\n", encoded_word(&subject));
        let _ = write!(headers, "Date: {}\r\n", rfc2822(date));
        let _ = write!(headers, "Message-ID: {header_id}\r\n");
        if let (Some(index), Some(references)) = (answering, &references) {
            let _ = write!(headers, "In-Reply-To: {}\r\n", self.recent[index].header_id);
            let folded = references.replace(' ', "\r\n ");
            let _ = write!(headers, "References: {folded}\r\n");
        }
        headers.push_str("MIME-Version: 1.0\r\n");

        let text_part_headers = format!(
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: {}\r\n",
            if body.is_ascii() { "7bit" } else { "8bit" }
        );
        let raw = if rng.random_bool(0.12) {
            let (name, content) = self.attachment(rng, code_name.as_deref(), date);
            let boundary = format!("=_sealpost_{:016x}", rng.random::<u64>());
            format!(
                "{headers}Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n\
                 This is a multi-part message in MIME format.\r\n\r\n\
                 --{boundary}\r\n{text_part_headers}\r\n{body}\r\n\
                 --{boundary}\r\nContent-Type: text/plain; charset=utf-8; name=\"{name}\"\r\n\
                 Content-Disposition: attachment; filename=\"{name}\"\r\n\
                 Content-Transfer-Encoding: 8bit\r\n\r\n{content}\r\n--{boundary}--\r\n"
            )
        } else {
            format!("{headers}{text_part_headers}\r\n{body}")
        };

        let (folder, uid) = self.place(rng);
        let sent = Sent {
            header_id,
            references: references.unwrap_or_default(),
            subject,
            from: sender.name(),
            date,
            opening: paragraphs.first().map(|first| wrap(first, 70)).unwrap_or_default(),
        };
        if self.recent.len() == RECENT_MESSAGES {
            self.recent.remove(0);
        }
        self.recent.push(sent);
        Message {
            message_id: MessageId::from_random_bytes(rng.random()).to_string(),
            folder,
            uid,
            date,
            raw: raw.into_bytes(),
        }
    }

    /// One to five paragraphs, short messages the most common.
    fn paragraphs(&self, rng: &mut StdRng, code_name: Option<&str>) -> Vec<String> {
        let count = 1 + skewed(rng, 5, 1.6);
        let mut paragraphs: Vec<String> = (0..count)
            .map(|_| {
                let sentences = rng.random_range(2..=5);
                (0..sentences).map(|_| self.sentence(rng)).collect::<Vec<_>>().join(" ")
            })
            .collect();
        if let Some(name) = code_name {
            let mention = match rng.random_range(0..4) {
                0 => format!("Any news on {name}?"),
                1 => format!("This is about the {name} project."),
                2 => format!("The {name} files are attached to the shared folder."),
                _ => format!("Let me know before {} whether {name} is on track.", weekday(rng)),
            };
            paragraphs[0] = format!("{mention} {}", paragraphs[0]);
        }
        paragraphs
    }

    fn sentence(&self, rng: &mut StdRng) -> String {
        let length = rng.random_range(5..=22);
        let mut words: Vec<String> =
            self.prose.sentence(rng, length).into_iter().map(str::to_owned).collect();
        // What mail has and documentation lacks: days, months, names, sums.
        if rng.random_bool(0.25) {
            let extra = match rng.random_range(0..4) {
                0 => format!("on {}", weekday(rng)),
                1 => format!("in {}", MONTHS.choose(rng).unwrap_or(&MONTHS[0])),
                2 => self.contacts[rng.random_range(0..self.contacts.len())].first.clone(),
                _ => format!("€{},{:03}", rng.random_range(1..90), rng.random_range(0..1000)),
            };
            let at = rng.random_range(1..=words.len());
            words.insert(at, extra);
        }
        let mut sentence = capitalized(&words.join(" "));
        sentence.push(if rng.random_bool(0.1) { '?' } else { '.' });
        sentence
    }

    fn subject(&self, rng: &mut StdRng, code_name: Option<&str>) -> String {
        let length = rng.random_range(2..=7);
        let words = self.prose.sentence(rng, length).join(" ");
        match code_name {
            Some(name) if rng.random_bool(0.5) => format!("{name}: {words}"),
            _ => capitalized(&words),
        }
    }

    /// A text attachment: notes, minutes or a small table.
    fn attachment(&self, rng: &mut StdRng, code_name: Option<&str>, date: i64) -> (String, String) {
        let day = time::OffsetDateTime::from_unix_timestamp(date)
            .map(|date| date.date().to_string())
            .unwrap_or_default();
        let topic = code_name.map_or_else(|| "project".to_owned(), str::to_lowercase);
        if rng.random_bool(0.3) {
            let mut table = String::from("item,owner,amount,status\r\n");
            for _ in 0..rng.random_range(5..40) {
                let owner = &self.contacts[rng.random_range(0..self.contacts.len())];
                let item = self.prose.sentence(rng, 3).join(" ");
                let _ = write!(
                    table,
                    "{item},{},{}.{:02},{}\r\n",
                    owner.last,
                    rng.random_range(10..5000),
                    rng.random_range(0..100),
                    ["open", "done", "late"].choose(rng).unwrap_or(&"open")
                );
            }
            return (format!("{topic}-figures-{day}.csv"), table);
        }
        let paragraphs = self.paragraphs(rng, code_name);
        let mut text = String::new();
        for paragraph in paragraphs {
            for line in wrap(&paragraph, 76) {
                let _ = write!(text, "{line}\r\n");
            }
            text.push_str("\r\n");
        }
        let name = if rng.random_bool(0.5) { "minutes" } else { "notes" };
        (format!("{topic}-{name}-{day}.txt"), text)
    }

    /// The folder the message is filed in and its UID there.
    fn place(&mut self, rng: &mut StdRng) -> (&'static str, u32) {
        let total: u32 = FOLDERS.iter().map(|(_, weight)| weight).sum();
        let mut pick = rng.random_range(0..total);
        let mut folder = FOLDERS[0].0;
        for (name, weight) in FOLDERS {
            if pick < *weight {
                folder = name;
                break;
            }
            pick -= weight;
        }
        let uid = self.uids.entry(folder).or_insert(0);
        *uid += 1;
        (folder, *uid)
    }
}

/// An index below `len`, low ones far likelier: `len * u^power`.
fn skewed(rng: &mut impl Rng, len: usize, power: f64) -> usize {
    let u: f64 = rng.random();
    ((len as f64 * u.powf(power)) as usize).min(len - 1)
}

fn weekday(rng: &mut impl Rng) -> &'static str {
    WEEKDAYS.choose(rng).unwrap_or(&WEEKDAYS[0])
}

fn capitalized(text: &str) -> String {
    let mut characters = text.chars();
    match characters.next() {
        Some(first) => first.to_uppercase().chain(characters).collect(),
        None => String::new(),
    }
}

/// Letters without their accents, for mail addresses.
fn ascii_fold(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            'á' | 'à' => 'a',
            'é' | 'è' | 'ë' => 'e',
            'í' => 'i',
            'ó' | 'ø' => 'o',
            'ú' | 'ü' => 'u',
            'ñ' => 'n',
            other => other,
        })
        .flat_map(char::to_lowercase)
        .filter(char::is_ascii)
        .collect()
}

/// Words to lines of at most `width` characters.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// `Name <address>`, the name as an RFC 2047 encoded word when it is not ASCII.
fn mailbox(name: &str, address: &str) -> String {
    if name.is_ascii() {
        format!("\"{name}\" <{address}>")
    } else {
        format!("{} <{address}>", encoded_word(name))
    }
}

/// Header text, as an RFC 2047 encoded word when it is not ASCII.
fn encoded_word(text: &str) -> String {
    if text.is_ascii() {
        text.to_owned()
    } else {
        format!("=?utf-8?b?{}?=", BASE64.encode(text.as_bytes()))
    }
}

/// An RFC 5322 date in one of a few time zones, chosen by the time itself
/// so that the same instant always reads the same.
fn rfc2822(unix: i64) -> String {
    let zone = TIME_ZONES[usize::try_from(unix.rem_euclid(TIME_ZONES.len() as i64)).unwrap_or(0)];
    let sign = if zone.starts_with('-') { -1 } else { 1 };
    let hours: i64 = zone[1..3].parse().unwrap_or(0);
    let minutes: i64 = zone[3..5].parse().unwrap_or(0);
    let offset_seconds = sign * (hours * 3600 + minutes * 60);
    let Ok(utc) = time::OffsetDateTime::from_unix_timestamp(unix) else {
        return "Thu, 01 Jan 1970 00:00:00 +0000".to_owned();
    };
    let offset = time::UtcOffset::from_whole_seconds(i32::try_from(offset_seconds).unwrap_or(0))
        .unwrap_or(time::UtcOffset::UTC);
    utc.to_offset(offset)
        .format(&time::format_description::well_known::Rfc2822)
        .unwrap_or_else(|_| "Thu, 01 Jan 1970 00:00:00 +0000".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::{MessageParser, MimeHeaders};

    fn prose() -> Prose {
        let text = "Sealpost keeps secure messages on the server and sends a notification \
            by email. The agent on the desktop swaps the notification for the real message. \
            Every message is signed, and the agent checks the signature against pinned keys.\n\n\
            # Search\n\nThe local search index finds swapped messages by sender, subject and \
            body text. Results appear as you type, ranked by relevance with a snippet.\n\
            - Each word matches as a prefix.\n- Attachments are found by their names.\n";
        Prose::from_texts(&vec![text.to_owned(); 8]).expect("enough prose")
    }

    #[test]
    fn the_same_seed_gives_the_same_mailbox() {
        let prose = prose();
        let first = generate(&prose, 50, 7);
        let second = generate(&prose, 50, 7);
        let other = generate(&prose, 50, 8);
        for (a, b) in first.messages.iter().zip(&second.messages) {
            assert_eq!((&a.message_id, &a.raw, a.uid), (&b.message_id, &b.raw, b.uid));
        }
        assert_ne!(first.messages[0].raw, other.messages[0].raw);
        let queries = |corpus: &Corpus| -> Vec<String> {
            corpus.queries(&prose, 20).into_iter().map(|query| query.text).collect()
        };
        assert_eq!(queries(&first), queries(&second));
    }

    #[test]
    fn messages_are_valid_mail_the_agent_parser_reads() {
        let prose = prose();
        let corpus = generate(&prose, 300, 1);
        let mut attachments = 0;
        let mut replies = 0;
        for message in &corpus.messages {
            assert!(MessageId::parse(&message.message_id).is_ok(), "{}", message.message_id);
            let raw = &message.raw;
            assert!(
                raw.windows(2).all(|pair| pair[1] != b'\n' || pair[0] == b'\r') && raw[0] != b'\n',
                "bare LF in message {}",
                message.message_id
            );
            let text = std::str::from_utf8(raw).expect("UTF-8");
            let (headers, _) = text.split_once("\r\n\r\n").expect("header and body");
            assert!(headers.is_ascii(), "8-bit headers: {headers}");
            assert!(headers.lines().all(|line| line.len() <= 998));

            let parsed = MessageParser::default().parse(raw).expect("parses");
            let from = parsed.from().and_then(|from| from.first()).expect("From");
            assert!(from.address().is_some_and(|address| address.contains('@')));
            assert!(from.name().is_some_and(|name| !name.contains("=?")), "decoded name");
            assert!(parsed.to().is_some());
            assert!(parsed.subject().is_some_and(|subject| !subject.is_empty()));
            assert_eq!(parsed.date().map(|date| date.to_timestamp()), Some(message.date));
            assert!(parsed.message_id().is_some());
            let body = parsed.body_text(0).expect("a text body");
            assert!(body.split_whitespace().count() >= 10, "{body}");
            attachments +=
                parsed.attachments().filter(|part| part.attachment_name().is_some()).count();
            replies += usize::from(parsed.in_reply_to().as_text().is_some());
        }
        assert!((10..100).contains(&attachments), "{attachments} attachments");
        assert!((30..130).contains(&replies), "{replies} replies");
        let dates: Vec<i64> = corpus.messages.iter().map(|message| message.date).collect();
        assert!(dates.windows(2).all(|pair| pair[0] < pair[1]), "dates ascend");
    }

    #[test]
    fn queries_span_the_frequencies_and_name_real_senders() {
        let prose = prose();
        let corpus = generate(&prose, 400, 3);
        let queries = corpus.queries(&prose, 20);
        assert_eq!(queries.len(), 20);
        let mailbox = String::from_utf8_lossy(
            &corpus.messages.iter().flat_map(|message| message.raw.clone()).collect::<Vec<_>>(),
        )
        .to_lowercase();
        for query in &queries {
            assert!(!query.text.trim().is_empty());
            for word in query.text.split_whitespace() {
                assert!(mailbox.contains(&word.to_lowercase()), "{word:?} of {query:?}");
            }
        }
        for kind in [QueryKind::Common, QueryKind::Rare, QueryKind::Sender, QueryKind::Prefix] {
            assert!(queries.iter().any(|query| query.kind == kind), "{kind:?}");
        }
        let prefix = queries.iter().find(|query| query.kind == QueryKind::Prefix).expect("prefix");
        assert_eq!(prefix.notmuch, format!("{}*", prefix.text));
    }

    #[test]
    fn prose_splits_into_words_without_markup() {
        let prose = Prose::from_texts(&["The `agent` swaps **real** messages (see [docs](x)). \
            Run sealpost-agent now; it's fine to run.\n```\nfn code() {}\n```\n"
            .repeat(40)])
        .expect("prose");
        let words: BTreeSet<&str> = prose.words.iter().map(String::as_str).collect();
        assert!(words.contains("agent") && words.contains("sealpost-agent"));
        assert!(words.contains("it's") && words.contains("real"));
        assert!(!words.iter().any(|word| word.contains('`') || word.contains('*')));
        assert!(!words.contains("fn") && !words.contains("code"));
        assert_eq!(wrap("a bb ccc dddd", 6), ["a bb", "ccc", "dddd"]);
    }
}
