//! `sealpost-agent`: the headless Sealpost desktop agent.
//!
//! Wiring only: every behaviour lives in the `sealpost-agent` library, which
//! the desktop app drives the same way.

use std::io::{BufRead, IsTerminal};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use sealpost_agent::agent::SendOutcome;
use sealpost_agent::discover::DiscoveryRequest;
use sealpost_agent::journal::{ExpiryChoice, OutgoingRecord, OutgoingState};
use sealpost_agent::policy::Policy;
use sealpost_agent::register::{
    CODE_WAIT, RegisterRequest, TrustedCa, default_device_name, register,
};
use sealpost_agent::send::{Answer, Draft, DraftAttachment, NewDraft};
use sealpost_agent::{Agent, AgentConfig, AgentError, AgentPaths, AgentState, Secrets, Status};
use sealpost_proto::api::{MailEndpoint, MailSecurity};
use tokio_util::sync::CancellationToken;

mod output;

/// Exit status of `run --once` when placeholders wait for the server.
const EXIT_PENDING: u8 = 75;
/// Exit status when another agent (the desktop app) already watches the
/// mailbox; the systemd unit does not restart on it.
const EXIT_ALREADY_RUNNING: u8 = 73;
/// Exit status when the computer is not registered or the IT policy cannot
/// be used: someone has to act first, so restarting cannot help.
const EXIT_CONFIGURATION: u8 = 78;

#[derive(Parser)]
#[command(
    name = "sealpost-agent",
    version,
    about = "The Sealpost desktop agent: swaps secure-message notifications in your mailbox for the real messages"
)]
struct Cli {
    /// The agent's data directory [default: the per-user data folder + /sealpost]
    #[arg(long, global = true, env = "SEALPOST_AGENT_DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Register this computer: finds the server and mailbox, reads the
    /// verification code from the inbox itself, stores secrets in the keyring
    Register(RegisterArgs),
    /// Watch the mailbox and swap notifications as they arrive
    Run {
        /// Process what is pending, then exit (75 when some placeholders wait for the server)
        #[arg(long)]
        once: bool,
    },
    /// Search the swapped messages on this computer
    Search {
        /// Words to find (each matches as a prefix)
        query: String,
        /// Print JSON lines for machines
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Show the registration, connection, last swap, pending and failed messages
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Rebuild the search index from the swapped messages in the mailbox
    Reindex,
    /// Send a secure message through your own mail server: the content goes
    /// to the Sealpost server, each recipient gets a notification, and the
    /// real message is filed in your Sent folder
    Send(SendArgs),
    /// List the secure messages sent from this computer, or show one's
    /// delivery slip (notified, retrieved, replied) from the server
    Sent {
        /// The Sealpost message id whose delivery slip to show
        message_id: Option<String>,
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Recall a secure message you sent: nobody can open it from now on
    Recall {
        /// The Sealpost message id (from `sealpost-agent sent`)
        message_id: String,
    },
    /// Show the IT policy this computer applies, or check a policy before deploying it
    Policy {
        /// Check this file instead: policy.toml, a registry export (.reg),
        /// managed preferences (.plist) or a configuration profile (.mobileconfig)
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

#[derive(Args)]
struct SendArgs {
    /// A recipient (repeat for several, or separate with commas)
    #[arg(long, value_delimiter = ',')]
    to: Vec<String>,
    #[arg(long, value_delimiter = ',')]
    cc: Vec<String>,
    /// Recipients nobody else sees
    #[arg(long, value_delimiter = ',')]
    bcc: Vec<String>,
    #[arg(long, default_value = "")]
    subject: String,
    /// The text of the message
    #[arg(long, conflicts_with = "body_file")]
    body: Option<String>,
    /// Read the text from this file (`-` for standard input)
    #[arg(long)]
    body_file: Option<PathBuf>,
    /// A file to attach (repeat for several)
    #[arg(long = "attach")]
    attachments: Vec<PathBuf>,
    /// Send this complete message (.eml) as it is, instead of writing one;
    /// its To, Cc and Bcc are the recipients
    #[arg(long, conflicts_with_all = ["to", "cc", "bcc", "body", "body_file", "attachments", "reply_to", "forward"])]
    eml: Option<PathBuf>,
    /// Answer this secure message (its Sealpost id, as in `search --json`):
    /// to its sender, `Re:`, quoted and threaded; --to and --cc add people
    #[arg(long, value_name = "MESSAGE_ID", conflicts_with = "forward")]
    reply_to: Option<String>,
    /// With --reply-to: its other recipients too
    #[arg(long, requires = "reply_to")]
    reply_all: bool,
    /// Forward this secure message with its attachments (give --to)
    #[arg(long, value_name = "MESSAGE_ID")]
    forward: Option<String>,
    /// Days after which nobody can open it [default: the organization's choice]
    #[arg(long, conflicts_with = "never_expires")]
    expires_in_days: Option<u32>,
    /// Readable until recalled, whatever the organization's default
    #[arg(long)]
    never_expires: bool,
    /// How long to follow a message handed to the running agent, in seconds
    #[arg(long, default_value_t = 120)]
    wait: u64,
}

#[derive(Args)]
#[command(args_override_self = true)]
struct RegisterArgs {
    /// Your email address
    #[arg(long)]
    email: String,
    /// Read the mailbox password from the first line of standard input
    /// (otherwise it is asked for, or taken from SEALPOST_MAILBOX_PASSWORD)
    #[arg(long)]
    password_stdin: bool,
    /// The Sealpost server, when it cannot be discovered
    #[arg(long)]
    server: Option<String>,
    /// IMAP server host, when it cannot be discovered
    #[arg(long)]
    imap_host: Option<String>,
    #[arg(long, default_value_t = 993, requires = "imap_host")]
    imap_port: u16,
    /// `tls` (implicit, usually port 993) or `starttls` (usually 143)
    #[arg(long, default_value = "tls", value_parser = parse_security, requires = "imap_host")]
    imap_security: MailSecurity,
    /// SMTP server host for sending
    #[arg(long)]
    smtp_host: Option<String>,
    #[arg(long, default_value_t = 465, requires = "smtp_host")]
    smtp_port: u16,
    /// `tls` (implicit, usually port 465) or `starttls` (usually 587)
    #[arg(long, default_value = "tls", value_parser = parse_security, requires = "smtp_host")]
    smtp_security: MailSecurity,
    /// A folder to watch (repeat for several) [default: INBOX]
    #[arg(long = "folder")]
    folders: Vec<String>,
    /// The name this computer gets in your device list
    #[arg(long)]
    device_name: Option<String>,
    /// A PEM file of certificate authorities to trust instead of the system's
    /// [default: the IT policy's ca_file, if any]
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Use ADDRESS for HOST during discovery, like curl's --resolve (HOST=IP:PORT)
    #[arg(long, value_parser = parse_resolve)]
    resolve: Vec<(String, SocketAddr)>,
    /// How long to wait for the verification email, in seconds
    #[arg(long, default_value_t = CODE_WAIT.as_secs())]
    code_wait: u64,
}

fn parse_security(text: &str) -> Result<MailSecurity, String> {
    match text.to_ascii_lowercase().as_str() {
        "tls" | "ssl" => Ok(MailSecurity::Tls),
        "starttls" | "start_tls" => Ok(MailSecurity::StartTls),
        _ => Err("expected tls or starttls (plain text is never used)".into()),
    }
}

fn parse_resolve(text: &str) -> Result<(String, SocketAddr), String> {
    let (host, address) = text.split_once('=').ok_or("expected HOST=IP:PORT")?;
    let address = address.parse().map_err(|error| format!("{address}: {error}"))?;
    Ok((host.to_ascii_lowercase(), address))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            exit_code_for(&error)
        }
    }
}

fn exit_code_for(error: &anyhow::Error) -> ExitCode {
    use sealpost_agent::config::ConfigError;
    use sealpost_agent::policy::PolicyError;
    if error.downcast_ref::<PolicyError>().is_some() {
        return ExitCode::from(EXIT_CONFIGURATION);
    }
    match error.downcast_ref::<AgentError>() {
        Some(AgentError::AlreadyRunning(_)) => ExitCode::from(EXIT_ALREADY_RUNNING),
        Some(
            AgentError::Policy(_)
            | AgentError::Config(ConfigError::NotRegistered(_))
            | AgentError::PinnedKeys(..),
        ) => ExitCode::from(EXIT_CONFIGURATION),
        _ if matches!(error.downcast_ref::<ConfigError>(), Some(ConfigError::NotRegistered(_))) => {
            ExitCode::from(EXIT_CONFIGURATION)
        }
        _ => ExitCode::FAILURE,
    }
}

async fn execute(cli: Cli) -> anyhow::Result<ExitCode> {
    let paths = match cli.data_dir {
        Some(dir) => AgentPaths::new(dir),
        None => AgentPaths::from_environment()?,
    };
    let _log_guard = output::init_logging(&paths, matches!(cli.command, Command::Run { .. }))?;
    match cli.command {
        Command::Register(args) => register_command(&paths, args).await,
        Command::Run { once } => run_command(&paths, once).await,
        Command::Search { query, json, limit } => {
            AgentConfig::load(&paths)?;
            let index = sealpost_agent::open_search_index(&paths).await?;
            output::print_hits(&index.search(&query, limit).await?, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { json } => {
            output::print_status(&Status::read(&paths).await?, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Reindex => {
            let agent = open_agent(&paths).await?;
            let count = agent
                .rebuild_index(&|done, total| eprintln!("indexed {done} of {total} messages"))
                .await?;
            println!("search index rebuilt: {count} messages");
            Ok(ExitCode::SUCCESS)
        }
        Command::Send(args) => send_command(&paths, args).await,
        Command::Sent { message_id: None, json, limit } => {
            let state = AgentState::open(&paths.state_db()).await?;
            let records = state.recent_outgoing(limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&records)?);
            } else if records.is_empty() {
                println!("No secure message was sent from this computer yet.");
            }
            if !json {
                records.iter().for_each(output::print_outgoing);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Sent { message_id: Some(id), json, .. } => {
            let report = server_client(&paths).await?.deliveries(&id).await?;
            output::print_slip(&report, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Recall { message_id } => {
            let info = server_client(&paths).await?.recall(&message_id).await?;
            let at = info.lifecycle.recalled_at.map(|at| at.to_string()).unwrap_or_default();
            println!("Recalled {message_id} ({at}): nobody can open it from now on.");
            Ok(ExitCode::SUCCESS)
        }
        Command::Policy { file } => {
            let (policy, origin) = match file {
                Some(file) => (Some(Policy::load(&file)?), file.display().to_string()),
                None => (Policy::load_system()?, Policy::system_origin()),
            };
            match policy {
                Some(policy) => print!("# The IT policy in {origin}\n{}", policy.to_toml()),
                None => println!("No IT policy applies on this computer: {origin} does not exist."),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn open_agent(paths: &AgentPaths) -> anyhow::Result<Agent> {
    let config = AgentConfig::load(paths)?;
    let secrets = Secrets::os_keyring(&config.email).await?;
    Ok(Agent::open(paths, config, secrets).await?)
}

/// The server client of this registration, for one request.
async fn server_client(paths: &AgentPaths) -> anyhow::Result<sealpost_agent::ServerClient> {
    let config = AgentConfig::load(paths)?;
    let secrets = Secrets::os_keyring(&config.email).await?;
    Ok(sealpost_agent::agent::server_client(&config, &secrets).await?)
}

async fn send_command(paths: &AgentPaths, args: SendArgs) -> anyhow::Result<ExitCode> {
    let config = AgentConfig::load(paths)?;
    let draft = match &args.eml {
        Some(file) => {
            let raw = std::fs::read(file)
                .with_context(|| format!("cannot read the message {}", file.display()))?;
            Draft::parse(raw)?
        }
        None => write_draft(&config, &args).await?,
    };
    eprintln!("sending to {} recipient(s)…", draft.recipients.len());
    let wait = Duration::from_secs(args.wait);
    match sealpost_agent::agent::send_draft(paths, None, &draft, wait).await? {
        SendOutcome::Done(record) => Ok(report_sent(&record)),
        SendOutcome::HandedOver { .. } => {
            println!(
                "Handed to the running Sealpost agent, which is still sending it; `sealpost-agent sent` shows how it goes."
            );
            Ok(ExitCode::from(EXIT_PENDING))
        }
    }
}

fn report_sent(record: &OutgoingRecord) -> ExitCode {
    output::print_outgoing(record);
    match record.state {
        OutgoingState::Sent => ExitCode::SUCCESS,
        OutgoingState::Queued => {
            println!(
                "Kept, and sent as soon as possible by `sealpost-agent run` or the Sealpost app."
            );
            ExitCode::from(EXIT_PENDING)
        }
        OutgoingState::Failed => ExitCode::FAILURE,
    }
}

async fn write_draft(config: &AgentConfig, args: &SendArgs) -> anyhow::Result<Draft> {
    let body = match (&args.body, &args.body_file) {
        (Some(body), _) => body.clone(),
        (None, Some(path)) if path.as_os_str() == "-" => std::io::read_to_string(std::io::stdin())
            .context("cannot read the text from standard input")?,
        (None, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the text from {}", path.display()))?,
        (None, None) => String::new(),
    };
    let mut attachments = Vec::new();
    for path in &args.attachments {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot attach {}", path.display()))?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        attachments.push(DraftAttachment {
            content_type: media_type_of(&name).to_owned(),
            name,
            bytes,
        });
    }
    let expiry = match (args.expires_in_days, args.never_expires) {
        (_, true) => ExpiryChoice::Never,
        (Some(days), false) => {
            ExpiryChoice::At(sealpost_agent::state::now_unix() + i64::from(days.max(1)) * 24 * 3600)
        }
        (None, false) => ExpiryChoice::Default,
    };
    let answered = match (&args.reply_to, &args.forward) {
        (Some(id), _) => {
            let answer = if args.reply_all { Answer::ReplyAll } else { Answer::Reply };
            Some(NewDraft::answering(&original(config, id).await?, &config.email, answer))
        }
        (None, Some(id)) => {
            Some(NewDraft::answering(&original(config, id).await?, &config.email, Answer::Forward))
        }
        (None, None) => None,
    };
    let mut new = answered
        .unwrap_or_else(|| NewDraft { from: (None, config.email.clone()), ..NewDraft::default() });
    for address in &args.to {
        if !new.to.contains(address) {
            new.to.push(address.clone());
        }
    }
    for address in &args.cc {
        if !new.cc.contains(address) {
            new.cc.push(address.clone());
        }
    }
    new.bcc.clone_from(&args.bcc);
    if !args.subject.is_empty() {
        new.subject.clone_from(&args.subject);
    }
    // The answer above the quote or the forwarded message.
    new.body = format!("{body}{}", new.body);
    new.attachments.extend(attachments);
    new.expiry = expiry;
    Ok(new.write()?)
}

/// The swapped message `message_id` from the watched folders.
async fn original(config: &AgentConfig, message_id: &str) -> anyhow::Result<Vec<u8>> {
    let secrets = Secrets::os_keyring(&config.email).await?;
    let account = config.imap_account(secrets.mailbox_password().await?)?;
    let mut config = config.clone();
    if let Some(policy) = Policy::load_system()? {
        policy.apply(&mut config);
    }
    for folder in &config.folders {
        match sealpost_agent::reader::fetch(&account, folder, message_id).await {
            Ok(raw) => return Ok(raw),
            Err(sealpost_agent::reader::ReadError::Gone { .. }) => continue,
            Err(error) => return Err(error.into()),
        }
    }
    bail!(
        "no secure message {message_id} in {}: `sealpost-agent search --json` shows the ids of the swapped messages",
        config.folders.join(", ")
    )
}

/// A file's media type from its extension, for the common kinds.
fn media_type_of(name: &str) -> &'static str {
    let extension = name.rsplit('.').next().unwrap_or_default().to_ascii_lowercase();
    match extension.as_str() {
        "pdf" => "application/pdf",
        "txt" => "text/plain",
        "csv" => "text/csv",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "zip" => "application/zip",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "doc" => "application/msword",
        "xls" => "application/vnd.ms-excel",
        _ => "application/octet-stream",
    }
}

async fn run_command(paths: &AgentPaths, once: bool) -> anyhow::Result<ExitCode> {
    let agent = open_agent(paths).await?;
    if once {
        let report = agent.run_once().await?;
        let pending = output::print_reports(&report);
        return Ok(if pending { ExitCode::from(EXIT_PENDING) } else { ExitCode::SUCCESS });
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    tracing::info!(email = %agent.config.email, folders = ?agent.config.folders, "watching the mailbox");
    agent.run(shutdown).await?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut terminate) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
            shutdown.cancel();
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    shutdown.cancel();
}

async fn register_command(paths: &AgentPaths, args: RegisterArgs) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let policy = Policy::load_system()?;
    // Checked first: without a keyring nothing can be stored, so nothing is asked of the server.
    let secrets = Secrets::os_keyring(&args.email).await?;
    secrets.check_writable().await?;
    let password = read_password(args.password_stdin)?;
    let trusted = TrustedCa::choose(args.ca_file.as_deref(), policy.as_ref())?;
    let endpoint = |host: Option<String>, port: u16, security: MailSecurity| {
        host.map(|host| MailEndpoint { host, port, security })
    };
    let request = RegisterRequest {
        discovery: DiscoveryRequest {
            email: args.email.trim().to_owned(),
            server_url: args.server,
            imap: endpoint(args.imap_host, args.imap_port, args.imap_security),
            smtp: endpoint(args.smtp_host, args.smtp_port, args.smtp_security),
            policy,
            ca_pem: trusted.as_ref().map(|ca| ca.pem.clone()),
            resolve: args.resolve,
        },
        password,
        device_name: args.device_name.unwrap_or_else(|| default_device_name("sealpost-agent")),
        folders: (!args.folders.is_empty()).then_some(args.folders),
        ca_file: trusted.map(|ca| ca.path),
        code_wait: Duration::from_secs(args.code_wait),
    };
    let registered = register(paths, &secrets, request, &|step| {
        println!("[{:>6.0} ms] {step}", started.elapsed().as_secs_f64() * 1000.0);
    })
    .await?;
    let config = &registered.config;
    println!(
        "[{:>6.0} ms] registered {} as device {} with {}; watching {}",
        started.elapsed().as_secs_f64() * 1000.0,
        config.email,
        config.device_id,
        config.server.url,
        config.folders.join(", ")
    );
    println!("Next: `sealpost-agent run` watches the mailbox (or start the Sealpost app).");
    Ok(ExitCode::SUCCESS)
}

fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    let password = if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    } else if let Ok(password) = std::env::var("SEALPOST_MAILBOX_PASSWORD") {
        password
    } else if std::io::stdin().is_terminal() {
        rpassword::prompt_password("Mailbox password: ").context("reading the password")?
    } else {
        bail!(
            "no mailbox password: pass --password-stdin and pipe it, or run in a terminal to be asked"
        )
    };
    if password.is_empty() {
        bail!("the mailbox password is empty");
    }
    Ok(password)
}
