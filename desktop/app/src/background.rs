//! What the app does with or without its window: the tray icon shows the
//! state (watching, offline, paused, error) and offers Open, Pause and
//! Quit, and a desktop notification announces each new secure message,
//! whether this app or the Sealpost service swapped it in, and each secure
//! message that could not be sent.

use crate::ipc::{IpcError, StatusView, Watcher};

/// At most this many messages get a notification each; more at once (a
/// backlog after a holiday) get one that counts them.
const ANNOUNCED_ONE_BY_ONE: u64 = 3;

/// What the tray shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrayState {
    NotSetUp,
    Watching,
    /// The Sealpost service watches; this app only shows it.
    WatchedByService,
    /// Registered and meant to watch, but a folder has no connection.
    Offline,
    Paused,
    Error(String),
}

impl TrayState {
    pub fn of(registered: bool, paused: bool, status: Result<&StatusView, &IpcError>) -> Self {
        if !registered {
            return Self::NotSetUp;
        }
        if paused {
            return Self::Paused;
        }
        let view = match status {
            Ok(view) => view,
            Err(error) => return Self::Error(error.message.clone()),
        };
        match &view.watcher {
            Watcher::Paused => Self::Paused,
            Watcher::Stopped { reason } => Self::Error(reason.clone()),
            _ if !view.connected => Self::Offline,
            Watcher::OtherAgent => Self::WatchedByService,
            Watcher::ThisApp => Self::Watching,
        }
    }

    /// The tray's tooltip and the first, disabled line of its menu.
    pub fn label(&self) -> String {
        match self {
            Self::NotSetUp => "Sealpost: not set up yet".to_owned(),
            Self::Watching => "Sealpost: watching your mailbox".to_owned(),
            Self::WatchedByService => {
                "Sealpost: the Sealpost service watches your mailbox".to_owned()
            }
            Self::Offline => "Sealpost: offline, reconnecting".to_owned(),
            Self::Paused => "Sealpost: paused".to_owned(),
            Self::Error(reason) => format!("Sealpost: stopped ({reason})"),
        }
    }
}

/// A desktop notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    pub title: String,
    pub body: String,
}

/// Finds the secure messages swapped in since it last looked.
#[derive(Debug, Default)]
pub struct Announcer {
    seen: Seen,
}

#[derive(Debug, Default)]
enum Seen {
    /// Not looked yet: what is there already is not news.
    #[default]
    Nothing,
    /// The computer was not registered: everything after registration is news.
    Unregistered,
    /// The account, its swap count and its count of messages not sent at
    /// the last look.
    Account { email: String, total: u64, not_sent: u64 },
}

impl Announcer {
    /// Notes that the computer is not registered (now).
    pub fn unregistered(&mut self) {
        self.seen = Seen::Unregistered;
    }

    /// What to announce in `view`. The first look, and the first after the
    /// account changed, only takes note: what was there is not news.
    pub fn announce(&mut self, view: &StatusView) -> Vec<Announcement> {
        let now = Seen::Account {
            email: view.email.clone(),
            total: view.swapped_total,
            not_sent: view.not_sent_total,
        };
        let (total, not_sent) = match std::mem::replace(&mut self.seen, now) {
            Seen::Nothing => return Vec::new(),
            Seen::Unregistered => (0, 0),
            Seen::Account { email, total, not_sent } if email == view.email => (total, not_sent),
            Seen::Account { .. } => return Vec::new(),
        };
        let mut announced = Self::not_sent(view, not_sent);
        announced.extend(Self::swapped(view, total));
        announced
    }

    /// The messages that could not be sent since the last look.
    fn not_sent(view: &StatusView, before: u64) -> Vec<Announcement> {
        let new = view.not_sent_total.saturating_sub(before);
        view.not_sent
            .iter()
            .take(usize::try_from(new.min(ANNOUNCED_ONE_BY_ONE)).unwrap_or(0))
            .map(|record| Announcement {
                title: format!("Not sent: {}", record.subject),
                body: record.reason.clone(),
            })
            .collect()
    }

    /// The messages swapped in since the last look.
    fn swapped(view: &StatusView, total: u64) -> Vec<Announcement> {
        if view.swapped_total <= total {
            return Vec::new();
        }
        let new = view.swapped_total - total;
        if new > ANNOUNCED_ONE_BY_ONE {
            return vec![Announcement {
                title: format!("{new} new secure messages"),
                body: "They are in your mailbox now.".to_owned(),
            }];
        }
        view.recent
            .iter()
            .take(usize::try_from(new).unwrap_or(usize::MAX))
            .map(|message| Announcement {
                title: if message.sender.is_empty() {
                    "New secure message".to_owned()
                } else {
                    format!("Secure message from {}", message.sender)
                },
                body: if message.subject.is_empty() {
                    "(no subject)".to_owned()
                } else {
                    message.subject.clone()
                },
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::{ErrorCode, RecentMessage};

    fn view(total: u64, subjects: &[&str]) -> StatusView {
        StatusView {
            email: "dana@example.org".into(),
            server: "https://sealpost.example.org".into(),
            connected: true,
            watcher: Watcher::ThisApp,
            folders: Vec::new(),
            swapped_total: total,
            recent: subjects
                .iter()
                .map(|subject| RecentMessage {
                    message_id: format!("msg_{subject}"),
                    folder: "INBOX".into(),
                    subject: (*subject).into(),
                    sender: "Dr Sam".into(),
                    swapped_at: 0,
                })
                .collect(),
            pending: Vec::new(),
            failed: Vec::new(),
            rejected: 0,
            indexed: total,
            sending: 0,
            not_sent: Vec::new(),
            not_sent_total: 0,
            outbox_folder: "Sealpost Outbox".into(),
        }
    }

    #[test]
    fn a_message_that_could_not_be_sent_is_announced_once() {
        let mut announcer = Announcer::default();
        announcer.announce(&view(1, &["old"]));
        let mut failed = view(1, &["old"]);
        failed.not_sent = vec![crate::ipc::NotSentView {
            subject: "Results".into(),
            reason: "every recipient was refused".into(),
            at: 0,
        }];
        failed.not_sent_total = 1;
        assert_eq!(
            announcer.announce(&failed),
            [Announcement {
                title: "Not sent: Results".into(),
                body: "every recipient was refused".into()
            }]
        );
        assert!(announcer.announce(&failed).is_empty());
    }

    #[test]
    fn only_messages_swapped_since_the_last_look_are_announced() {
        let mut announcer = Announcer::default();
        assert!(announcer.announce(&view(5, &["old"])).is_empty(), "the first look takes note");
        assert!(announcer.announce(&view(5, &["old"])).is_empty());
        let announced = announcer.announce(&view(7, &["newest", "new", "old"]));
        assert_eq!(
            announced,
            [
                Announcement { title: "Secure message from Dr Sam".into(), body: "newest".into() },
                Announcement { title: "Secure message from Dr Sam".into(), body: "new".into() },
            ]
        );
        let backlog = announcer.announce(&view(20, &["a", "b", "c", "d"]));
        assert_eq!(backlog.len(), 1);
        assert_eq!(backlog[0].title, "13 new secure messages");
    }

    #[test]
    fn after_a_registration_every_message_is_news() {
        let mut announcer = Announcer::default();
        announcer.unregistered();
        assert_eq!(announcer.announce(&view(1, &["first"])).len(), 1);
        assert!(announcer.announce(&view(1, &["first"])).is_empty());
    }

    #[test]
    fn another_account_starts_over() {
        let mut announcer = Announcer::default();
        announcer.announce(&view(5, &[]));
        let mut other = view(9, &["theirs"]);
        other.email = "sam@example.org".into();
        assert!(announcer.announce(&other).is_empty());
    }

    #[test]
    fn the_tray_tells_watching_offline_paused_and_stopped_apart() {
        let watching = view(0, &[]);
        assert_eq!(TrayState::of(true, false, Ok(&watching)), TrayState::Watching);
        assert_eq!(TrayState::of(true, true, Ok(&watching)), TrayState::Paused);
        assert_eq!(TrayState::of(false, false, Ok(&watching)), TrayState::NotSetUp);
        let offline = StatusView { connected: false, ..view(0, &[]) };
        assert_eq!(TrayState::of(true, false, Ok(&offline)), TrayState::Offline);
        let service = StatusView { watcher: Watcher::OtherAgent, ..view(0, &[]) };
        assert_eq!(TrayState::of(true, false, Ok(&service)), TrayState::WatchedByService);
        let stopped = StatusView {
            watcher: Watcher::Stopped { reason: "bad password".into() },
            ..view(0, &[])
        };
        let state = TrayState::of(true, false, Ok(&stopped));
        assert_eq!(state.label(), "Sealpost: stopped (bad password)");
        let error = IpcError::new(ErrorCode::Keyring, "The keyring is locked.");
        assert_eq!(
            TrayState::of(true, false, Err(&error)),
            TrayState::Error("The keyring is locked.".into())
        );
    }
}
