//! Scale-out: the mixed load of the scale-out tests (16 clients registering
//! with a code from the relay, sending 2 KB and 200 KB messages to one to
//! three recipients with the server mailing the notifications, retrieving
//! them byte-checked, reading delivery slips, signing in on one instance
//! and going on on another) for a fixed time against one instance on
//! SQLite, one on PostgreSQL, and two on one PostgreSQL with the clients
//! spreading their requests over both as a load balancer would.
//!
//! All three deployments run at once (idle between their turns) so their
//! rounds interleave; each round waits until every notification of the
//! round has reached the relay, so no round pays for another's outbox.
//! Where the time goes is read from `/proc`: the CPU the server processes,
//! PostgreSQL (its postmaster and backends) and the load generator (this
//! process) used over each measured stretch.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use sealpost_harness::{
    ClusterDatabase, ClusterOptions, LoadReport, MixedLoad, RequestKind, ServerCluster, StartOrder,
};

use crate::report::{Figure, Row, Target};
use crate::retrieval::load::{LoadFigures, median_figures};
use crate::stats::{median, percentile};
use crate::{Context, Outcome};

/// Clients at once, each one request at a time (as in the tests).
const CLIENTS: usize = 16;
/// Unmeasured start of every round: the clients' first requests; in the
/// first round, the first users' registrations.
const WARM_UP: Duration = Duration::from_secs(2);
/// How long a round's notifications may take to reach the relay after it.
const NOTIFIED_WITHIN: Duration = Duration::from_secs(120);

/// A deployment measured.
struct Setup {
    label: &'static str,
    database: ClusterDatabase,
    instances: usize,
}

const SETUPS: [Setup; 3] = [
    Setup { label: "1 instance on SQLite", database: ClusterDatabase::Sqlite, instances: 1 },
    Setup { label: "1 instance on PostgreSQL", database: ClusterDatabase::Postgres, instances: 1 },
    Setup { label: "2 instances on PostgreSQL", database: ClusterDatabase::Postgres, instances: 2 },
];

/// One round of one deployment.
#[derive(Debug, Clone, Copy)]
struct RoundFigures {
    load: LoadFigures,
    uploads_per_second: f64,
    retrievals_per_second: f64,
    cpu: CpuShares,
}

/// CPU used over a measured stretch, in cores (CPU seconds per second).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct CpuShares {
    servers: f64,
    postgres: f64,
    load_generator: f64,
    /// Everything on the machine, these included.
    machine: f64,
}

pub async fn run(context: &Context) -> Result<Outcome> {
    let sizes = &context.sizes;
    let measure = Duration::from_secs(sizes.scale_seconds);
    let mut deployments = Vec::new();
    for setup in &SETUPS {
        let options = ClusterOptions {
            instances: setup.instances,
            database: setup.database,
            start: StartOrder::Together,
            ..ClusterOptions::default()
        };
        let cluster = Arc::new(
            ServerCluster::start(options)
                .await
                .with_context(|| format!("starting {}", setup.label))?,
        );
        let load = MixedLoad::new(cluster.clone(), CLIENTS)?;
        deployments.push((setup, cluster, load));
    }

    let mut rounds: Vec<Vec<RoundFigures>> = SETUPS.iter().map(|_| Vec::new()).collect();
    let mut problems = Vec::new();
    for round in 1..=sizes.scale_rounds {
        for (index, (setup, cluster, load)) in deployments.iter().enumerate() {
            let (report, stretch) = tokio::join!(load.run(WARM_UP, measure), async {
                // The measured stretch only: after the warm-up, until its end.
                tokio::time::sleep(WARM_UP).await;
                let start = CpuSample::take(cluster).await;
                tokio::time::sleep(measure).await;
                (start, CpuSample::take(cluster).await)
            });
            let (start, end) = (stretch.0?, stretch.1?);
            let tally = load.wait_until_notified(NOTIFIED_WITHIN).await;
            if !tally.missing.is_empty() {
                bail!(
                    "{}: {} notifications of round {round} did not reach the relay within {NOTIFIED_WITHIN:?}",
                    setup.label,
                    tally.missing.len()
                );
            }
            if report.requests() == 0 {
                bail!(
                    "{}: no request succeeded in round {round}: {}",
                    setup.label,
                    report.errors.first().map_or("no error recorded", String::as_str)
                );
            }
            if !report.errors.is_empty() {
                problems.push(format!(
                    "{}: {} requests failed in round {round} (first: {})",
                    setup.label,
                    report.errors.len(),
                    report.errors[0]
                ));
            }
            let figures = round_figures(&report, end.since(&start));
            println!(
                "    round {round}, {}: {:.0} requests/s (uploads {:.1}/s, retrievals {:.1}/s), \
                 p50 {:.0} ms, p99 {:.0} ms; CPU cores: servers {:.2}, PostgreSQL {:.2}, \
                 load generator {:.2}, machine {:.2}",
                setup.label,
                figures.load.requests_per_second,
                figures.uploads_per_second,
                figures.retrievals_per_second,
                figures.load.p50_ms,
                figures.load.p99_ms,
                figures.cpu.servers,
                figures.cpu.postgres,
                figures.cpu.load_generator,
                figures.cpu.machine,
            );
            rounds[index].push(figures);
        }
    }

    let medians: Vec<(LoadFigures, f64, f64, CpuShares)> = rounds
        .iter()
        .map(|figures| {
            let loads: Vec<LoadFigures> = figures.iter().map(|f| f.load).collect();
            let of = |pick: fn(&RoundFigures) -> f64| {
                median(&figures.iter().map(pick).collect::<Vec<_>>())
            };
            let cpu = CpuShares {
                servers: of(|f| f.cpu.servers),
                postgres: of(|f| f.cpu.postgres),
                load_generator: of(|f| f.cpu.load_generator),
                machine: of(|f| f.cpu.machine),
            };
            (
                median_figures(&loads),
                of(|f| f.uploads_per_second),
                of(|f| f.retrievals_per_second),
                cpu,
            )
        })
        .collect();
    let rows = rows(&medians);

    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let mut notes = vec![format!(
        "{CLIENTS} clients, each one request at a time over keep-alive HTTPS, spreading their \
         requests over the running instances in turn; the mix: registration (code mailed to the \
         relay, account, device) 8%, upload with the server mailing the notifications 30% \
         (1-3 recipients; 3 in 4 about 2 KB, kept in the database, 1 in 4 about 200 KB, kept \
         in a content directory all instances share), retrieval by a recipient (SHA-256 checked) \
         30%, delivery slip 12%, Secure Message Center sign-in on one instance and mailbox on \
         another 12%, device sign-in on one instance and device list with its token on another \
         8%. {} rounds of {} s per deployment, interleaved, each after {} s of warm-up and \
         followed by waiting for its notifications; medians over rounds. A request counts when \
         answered as expected within the stretch.",
        sizes.scale_rounds,
        sizes.scale_seconds,
        WARM_UP.as_secs()
    )];
    for ((setup, _, load), (_, _, _, cpu)) in deployments.iter().zip(&medians) {
        let (large, small) = load.uploads_by_place();
        notes.push(format!(
            "{}: CPU in use over the measured stretch, in cores of the {cores}: servers {:.2}, \
             PostgreSQL {:.2}, load generator {:.2}, whole machine {:.2}; {} users, {small} small \
             and {large} large messages by the end.",
            setup.label,
            cpu.servers,
            cpu.postgres,
            cpu.load_generator,
            cpu.machine,
            load.users()
        ));
    }
    notes.push(format!(
        "Everything runs on the same {cores} cores: the two instances share them with each \
         other, PostgreSQL, the relay sink and the load generator, so the two-instance figure \
         shows what coordinating through PostgreSQL costs, not what a second machine adds."
    ));
    notes.extend(problems);
    Ok(Outcome { rows, notes })
}

/// The figures of one round: rates over the measured stretch, and the CPU
/// `cpu` used in it.
fn round_figures(report: &LoadReport, cpu: CpuShares) -> RoundFigures {
    RoundFigures {
        load: LoadFigures {
            requests_per_second: report.requests_per_second(),
            p50_ms: percentile(&report.latencies_ms, 50.0),
            p99_ms: percentile(&report.latencies_ms, 99.0),
        },
        uploads_per_second: report.per_second(RequestKind::Upload),
        retrievals_per_second: report.per_second(RequestKind::Content),
        cpu,
    }
}

/// Per deployment (in [`SETUPS`] order): requests/s, p99, uploads/s and
/// retrievals/s; the two instances beside the one on PostgreSQL.
fn rows(medians: &[(LoadFigures, f64, f64, CpuShares)]) -> Vec<Row> {
    let mut rows = Vec::new();
    let one_on_postgres = medians.get(1).copied();
    for (setup, (load, uploads, retrievals, _)) in SETUPS.iter().zip(medians) {
        let label = setup.label;
        let beside = |ours: Figure, reference: Figure, target: Target, what: &str| {
            if setup.instances > 1 {
                Row::against(format!("{label}: {what}"), ours, SETUPS[1].label, reference, target)
            } else {
                Row::alone(format!("{label}: {what}"), ours, Target::None)
            }
        };
        let Some((reference, reference_uploads, reference_retrievals, _)) = one_on_postgres else {
            continue;
        };
        rows.push(beside(
            Figure::per_second(load.requests_per_second),
            Figure::per_second(reference.requests_per_second),
            Target::RatioAtLeast(0.9),
            "requests/s",
        ));
        rows.push(beside(
            Figure::ms(load.p99_ms),
            Figure::ms(reference.p99_ms),
            Target::RatioAtMost(1.5),
            "p99",
        ));
        rows.push(beside(
            Figure::per_second(*uploads),
            Figure::per_second(reference_uploads),
            Target::None,
            "uploads/s",
        ));
        rows.push(beside(
            Figure::per_second(*retrievals),
            Figure::per_second(reference_retrievals),
            Target::None,
            "retrievals/s",
        ));
    }
    rows
}

/// Cumulative CPU times at one moment, in clock ticks.
struct CpuSample {
    at: Instant,
    servers: u64,
    postgres: u64,
    load_generator: u64,
    /// Busy ticks of the whole machine, over all cores.
    machine: u64,
}

impl CpuSample {
    async fn take(cluster: &ServerCluster) -> Result<Self> {
        let postmaster = match cluster.postgres() {
            Some(_) => Some(postmaster_pid(cluster).await?),
            None => None,
        };
        let servers =
            (0..cluster.len()).filter_map(|index| cluster.pid(index)).map(process_ticks).sum();
        let postgres = postmaster.map_or(0, |pid| {
            // The postmaster with its children reaped so far, and those alive.
            process_ticks_with_reaped(pid)
                + children_of(pid).into_iter().map(process_ticks).sum::<u64>()
        });
        Ok(Self {
            at: Instant::now(),
            servers,
            postgres,
            load_generator: process_ticks(std::process::id()),
            machine: machine_busy_ticks(),
        })
    }

    /// The cores each used from `earlier` to this sample.
    fn since(&self, earlier: &Self) -> CpuShares {
        let seconds = (self.at - earlier.at).as_secs_f64() * ticks_per_second();
        let share = |now: u64, then: u64| now.saturating_sub(then) as f64 / seconds;
        CpuShares {
            servers: share(self.servers, earlier.servers),
            postgres: share(self.postgres, earlier.postgres),
            load_generator: share(self.load_generator, earlier.load_generator),
            machine: share(self.machine, earlier.machine),
        }
    }
}

/// PostgreSQL's postmaster: the parent of its checkpointer, which lives as
/// long as the server.
async fn postmaster_pid(cluster: &ServerCluster) -> Result<u32> {
    let checkpointer: u32 = cluster
        .psql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'")
        .await?
        .parse()
        .context("no checkpointer process id")?;
    stat_fields(checkpointer)
        .and_then(|fields| fields.get(1)?.parse().ok())
        .context("the checkpointer's parent process")
}

/// The fields of `/proc/PID/stat` after the command name: state is [0],
/// the parent [1], utime [11], stime [12], cutime [13], cstime [14].
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// User and system ticks of a process (0 once it is gone).
fn process_ticks(pid: u32) -> u64 {
    ticks(pid, &[11, 12])
}

/// User and system ticks of a process and of the children it reaped.
fn process_ticks_with_reaped(pid: u32) -> u64 {
    ticks(pid, &[11, 12, 13, 14])
}

fn ticks(pid: u32, fields: &[usize]) -> u64 {
    stat_fields(pid).map_or(0, |values| {
        fields.iter().filter_map(|at| values.get(*at)?.parse::<u64>().ok()).sum()
    })
}

/// The processes whose parent is `parent`.
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            stat_fields(*pid)
                .and_then(|fields| fields.get(1)?.parse::<u32>().ok())
                .is_some_and(|ppid| ppid == parent)
        })
        .collect()
}

/// Busy ticks of all cores together: all time but idle and I/O wait.
fn machine_busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = stat.lines().find(|line| line.starts_with("cpu ")) else { return 0 };
    let values: Vec<u64> =
        cpu.split_whitespace().skip(1).filter_map(|value| value.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal ...
    values.iter().take(8).enumerate().filter(|(at, _)| *at != 3 && *at != 4).map(|(_, v)| v).sum()
}

/// Clock ticks per second in `/proc`: Linux's USER_HZ, 100 on every
/// architecture it runs on here (`getconf CLK_TCK`).
fn ticks_per_second() -> f64 {
    100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_instances_stand_beside_the_one_on_postgresql() {
        let figures =
            |rps: f64, p99: f64| LoadFigures { requests_per_second: rps, p50_ms: 1.0, p99_ms: p99 };
        let cpu = CpuShares::default();
        let medians = [
            (figures(300.0, 100.0), 30.0, 40.0, cpu),
            (figures(200.0, 120.0), 20.0, 30.0, cpu),
            (figures(190.0, 200.0), 19.0, 25.0, cpu),
        ];
        let rows = rows(&medians);
        assert_eq!(rows.len(), 12);
        let two: Vec<_> = rows[8..]
            .iter()
            .map(|row| {
                (row.measurement.as_str(), row.reference.as_ref().map(|r| r.name.as_str()), row.met)
            })
            .collect();
        assert_eq!(
            two,
            [
                (
                    "2 instances on PostgreSQL: requests/s",
                    Some("1 instance on PostgreSQL"),
                    Some(true)
                ),
                ("2 instances on PostgreSQL: p99", Some("1 instance on PostgreSQL"), Some(false)),
                ("2 instances on PostgreSQL: uploads/s", Some("1 instance on PostgreSQL"), None),
                ("2 instances on PostgreSQL: retrievals/s", Some("1 instance on PostgreSQL"), None),
            ]
        );
        assert!(rows[..8].iter().all(|row| row.reference.is_none()));
    }

    #[test]
    fn stat_fields_skip_a_command_name_with_spaces() {
        let fields = stat_fields(std::process::id()).expect("our own stat");
        assert!(["R", "S"].contains(&fields[0].as_str()), "{fields:?}");
        assert!(process_ticks(std::process::id()) < u64::MAX);
        assert!(ticks_per_second() > 0.0);
    }
}
