//! The benchmark table: each row our figure, the floor or peer measured in
//! the same run, their ratio and the target; printed, and written as
//! Markdown and JSON.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Ms,
    Seconds,
    PerSecond,
    MiB,
    /// Things counted: connections, requests, errors.
    Count,
}

impl Unit {
    fn suffix(self) -> &'static str {
        match self {
            Unit::Ms => "ms",
            Unit::Seconds => "s",
            Unit::PerSecond => "/s",
            Unit::MiB => "MiB",
            Unit::Count => "",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Figure {
    pub value: f64,
    pub unit: Unit,
}

impl Figure {
    pub fn ms(value: f64) -> Self {
        Self { value, unit: Unit::Ms }
    }
    pub fn seconds(value: f64) -> Self {
        Self { value, unit: Unit::Seconds }
    }
    pub fn per_second(value: f64) -> Self {
        Self { value, unit: Unit::PerSecond }
    }
    pub fn mib(value: f64) -> Self {
        Self { value, unit: Unit::MiB }
    }
    pub fn count(value: usize) -> Self {
        Self { value: value as f64, unit: Unit::Count }
    }
}

impl std::fmt::Display for Figure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let value = self.value;
        let digits = if value.abs() >= 100.0 {
            0
        } else if value.abs() >= 10.0 {
            1
        } else {
            2
        };
        write!(f, "{value:.digits$} {}", self.unit.suffix())
    }
}

/// The floor or peer a figure stands beside.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reference {
    /// What was measured: "IDLE client", "nginx", "notmuch".
    pub name: String,
    pub figure: Figure,
}

/// What a row must reach.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum Target {
    /// Our figure minus the floor's, at most this (in our unit).
    AboveFloorAtMost(f64),
    /// Our figure over the reference's, at least this (throughput).
    RatioAtLeast(f64),
    /// Our figure over the reference's, at most this (latency, size).
    RatioAtMost(f64),
    /// Our figure below the reference's.
    BelowReference,
    /// Our figure below this absolute value (in our unit).
    Below(f64),
    /// Reported for comparison only.
    None,
}

impl Target {
    /// The target in words, naming the reference (`reference`: its name).
    fn describe(self, unit: Unit, reference: Option<&str>) -> String {
        let suffix = unit.suffix();
        let reference = reference.unwrap_or("the reference");
        match self {
            Target::AboveFloorAtMost(limit) => format!("floor + ≤ {limit} {suffix}"),
            Target::RatioAtLeast(ratio) => format!("≥ {:.0}% of {reference}", ratio * 100.0),
            Target::RatioAtMost(ratio) => format!("≤ {ratio}× {reference}"),
            Target::BelowReference => format!("below {reference}"),
            Target::Below(limit) => format!("< {limit} {suffix}"),
            Target::None => "—".to_owned(),
        }
    }

    /// Whether `ours` meets the target; `None` where there is nothing to meet
    /// or the reference is missing.
    fn met(self, ours: f64, reference: Option<f64>) -> Option<bool> {
        match (self, reference) {
            (Target::AboveFloorAtMost(limit), Some(floor)) => Some(ours - floor <= limit),
            (Target::RatioAtLeast(ratio), Some(floor)) => Some(ours >= floor * ratio),
            (Target::RatioAtMost(ratio), Some(peer)) => Some(ours <= peer * ratio),
            (Target::BelowReference, Some(peer)) => Some(ours < peer),
            (Target::Below(limit), _) => Some(ours < limit),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub measurement: String,
    pub ours: Figure,
    pub reference: Option<Reference>,
    pub target: Target,
    /// Our figure over the reference's.
    pub ratio: Option<f64>,
    pub met: Option<bool>,
}

impl Row {
    pub fn new(
        measurement: impl Into<String>,
        ours: Figure,
        reference: Option<Reference>,
        target: Target,
    ) -> Self {
        let reference_value = reference.as_ref().map(|r| r.figure.value);
        let ratio = reference_value.filter(|value| *value != 0.0).map(|value| ours.value / value);
        let met = target.met(ours.value, reference_value);
        Self { measurement: measurement.into(), ours, reference, target, ratio, met }
    }

    /// A row with a floor or peer beside it.
    pub fn against(
        measurement: impl Into<String>,
        ours: Figure,
        reference_name: &str,
        reference: Figure,
        target: Target,
    ) -> Self {
        let reference = Reference { name: reference_name.to_owned(), figure: reference };
        Self::new(measurement, ours, Some(reference), target)
    }

    /// A row that stands alone.
    pub fn alone(measurement: impl Into<String>, ours: Figure, target: Target) -> Self {
        Self::new(measurement, ours, None, target)
    }
}

/// A benchmark section's rows, or why it could not run.
#[derive(Debug, Clone, Serialize)]
pub struct Section {
    pub name: String,
    pub rows: Vec<Row>,
    /// Context worth keeping beside the figures: sizes, index sizes, repeats.
    pub notes: Vec<String>,
    pub error: Option<String>,
    pub seconds: f64,
}

/// The machine the figures come from.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub os: String,
}

impl Machine {
    pub fn describe() -> Self {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("model name"))
            .map(|rest| rest.trim_start_matches([' ', '\t', ':']).trim().to_owned())
            .unwrap_or_else(|| "unknown".to_owned());
        let memory_kib: f64 = read("/proc/meminfo")
            .lines()
            .find_map(|line| line.strip_prefix("MemTotal:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        let os = read("/etc/os-release")
            .lines()
            .find_map(|line| line.strip_prefix("PRETTY_NAME="))
            .map(|name| name.trim_matches('"').to_owned())
            .unwrap_or_else(|| std::env::consts::OS.to_owned());
        Self {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            memory_gib: memory_kib / 1024.0 / 1024.0,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            os,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// RFC 3339, UTC.
    pub started_at: String,
    pub machine: Machine,
    /// `release`, or `debug` for the quick run that only proves the bench works.
    pub profile: String,
    pub quick: bool,
    pub sections: Vec<Section>,
}

impl Report {
    /// The table as Markdown: one header, a row per figure, then notes.
    pub fn markdown(&self) -> String {
        let machine = &self.machine;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Measured {} on {} ({} cores, {:.0} GiB, {}, kernel {}); {} build{}.\n",
            self.started_at,
            machine.cpu,
            machine.cores,
            machine.memory_gib,
            machine.os,
            machine.kernel,
            self.profile,
            if self.quick { ", quick sizes" } else { "" }
        );
        out.push_str("| measurement | ours | floor or peer | ratio | target | met |\n");
        out.push_str("|---|---:|---:|---:|---|:-:|\n");
        for section in &self.sections {
            for row in &section.rows {
                let reference = row.reference.as_ref().map_or_else(
                    || "—".to_owned(),
                    |reference| format!("{} ({})", reference.figure, reference.name),
                );
                let ratio = row.ratio.map_or_else(|| "—".to_owned(), |ratio| format!("{ratio:.2}"));
                let met = match row.met {
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "",
                };
                let _ = writeln!(
                    out,
                    "| {}: {} | {} | {reference} | {ratio} | {} | {met} |",
                    section.name,
                    row.measurement,
                    row.ours,
                    row.target.describe(
                        row.ours.unit,
                        row.reference.as_ref().map(|reference| reference.name.as_str()),
                    ),
                );
            }
            if let Some(error) = &section.error {
                // One table cell: no line breaks, no column separators.
                let error =
                    error.split_whitespace().collect::<Vec<_>>().join(" ").replace('|', "/");
                let _ =
                    writeln!(out, "| {}: could not run | {error} | | | | **no** |", section.name);
            }
        }
        let notes: Vec<String> = self
            .sections
            .iter()
            .flat_map(|section| {
                let took = format!("{}: took {:.0} s.", section.name, section.seconds);
                section
                    .notes
                    .iter()
                    .map(|note| format!("{}: {note}", section.name))
                    .chain(std::iter::once(took))
            })
            .collect();
        if !notes.is_empty() {
            out.push('\n');
            for note in notes {
                let _ = writeln!(out, "- {note}");
            }
        }
        out
    }

    /// Writes `bench.md` and `bench.json` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let markdown = dir.join("bench.md");
        std::fs::write(&markdown, self.markdown())
            .with_context(|| format!("writing {}", markdown.display()))?;
        let json = dir.join("bench.json");
        std::fs::write(&json, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", json.display()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_compare_against_the_reference() {
        let swap = Row::against(
            "p50",
            Figure::ms(425.0),
            "IDLE client",
            Figure::ms(400.0),
            Target::AboveFloorAtMost(30.0),
        );
        assert_eq!(swap.met, Some(true));
        let slow = Row::against(
            "rate",
            Figure::per_second(400.0),
            "APPEND",
            Figure::per_second(1000.0),
            Target::RatioAtLeast(0.5),
        );
        assert_eq!((slow.met, slow.ratio), (Some(false), Some(0.4)));
        let alone = Row::alone("idle", Figure::mib(30.0), Target::Below(25.0));
        assert_eq!(alone.met, Some(false));
        let info = Row::alone("size", Figure::mib(30.0), Target::None);
        assert_eq!(info.met, None);
    }

    #[test]
    fn markdown_names_every_row_and_failure() {
        let report = Report {
            started_at: "2026-11-23T10:00:00Z".into(),
            machine: Machine::describe(),
            profile: "release".into(),
            quick: false,
            sections: vec![
                Section {
                    name: "swap latency".into(),
                    rows: vec![Row::alone("p50", Figure::ms(12.5), Target::Below(30.0))],
                    notes: vec!["100 messages".into()],
                    error: None,
                    seconds: 3.0,
                },
                Section {
                    name: "search".into(),
                    rows: vec![],
                    notes: vec![],
                    error: Some("notmuch is not installed".into()),
                    seconds: 0.0,
                },
            ],
        };
        let text = report.markdown();
        assert!(text.contains("| swap latency: p50 | 12.5 ms | — | — | < 30 ms | yes |"), "{text}");
        assert!(text.contains("search: could not run | notmuch is not installed"), "{text}");
        assert!(text.contains("- swap latency: 100 messages"), "{text}");
    }
}
