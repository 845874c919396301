// Generated from desktop/app/src/ipc.rs by `cargo xtask ipc-types`; do not edit.

export type IpcError = { code: ErrorCode, message: string, };

export type ErrorCode = "not_registered" | "discovery" | "mailbox" | "server" | "keyring" | "code_timeout" | "already_running" | "policy" | "gone" | "invalid" | "not_sent" | "internal";

export type Overview = { registered: boolean, preset: Preset, 
/**
 * From a `sealpost://register?…` link: fills in the wizard.
 */
prefill: Prefill | null, };

export type Prefill = { email: string | null, server: string | null, };

export type Preset = { server_url: string | null, folders: Array<string> | null, 
/**
 * The policy file they come from.
 */
source: string | null, };

export type RegisterForm = { email: string, password: string, 
/**
 * Only when no policy presets one; otherwise found from the address.
 */
server: string | null, };

export type RegisterStepKind = "discovering" | "discovered" | "mailbox_login" | "requesting_code" | "waiting_for_code" | "enrolling" | "storing_secrets";

export type RegisterProgress = { step: RegisterStepKind, 
/**
 * For `discovered`: where the server and the mailbox were found.
 */
detail: string | null, 
/**
 * Since the registration began.
 */
elapsed_ms: number, };

export type Registration = { email: string, server: string, elapsed_ms: number, };

export type StatusView = { email: string, server: string, 
/**
 * Every watched folder has a live connection.
 */
connected: boolean, 
/**
 * Who watches the mailbox: this app, another agent (the service), or
 * nobody, with the reason.
 */
watcher: Watcher, folders: Array<FolderView>, swapped_total: number, 
/**
 * Newest first.
 */
recent: Array<RecentMessage>, 
/**
 * Placeholders the agent keeps retrying.
 */
pending: Array<KeptView>, 
/**
 * Placeholders that will not be swapped, with the reason.
 */
failed: Array<KeptView>, 
/**
 * Notifications left alone as possible phishing.
 */
rejected: number, indexed: number, 
/**
 * Secure messages on their way out.
 */
sending: number, 
/**
 * The newest that could not be sent, with the reason (the Sent screen
 * has them all); and how many there are.
 */
not_sent: Array<NotSentView>, not_sent_total: number, 
/**
 * Drafts saved or moved here by any mail program are sent securely.
 */
outbox_folder: string, };

export type Watcher = { "kind": "this_app" } | { "kind": "other_agent" } | { "kind": "paused" } | { "kind": "stopped", reason: string, };

export type FolderView = { name: string, 
/**
 * `connected`, `reconnecting` or `not watched`.
 */
state: string, detail: string | null, };

export type RecentMessage = { message_id: string, folder: string, subject: string, sender: string, swapped_at: number, };

export type KeptView = { message_id: string, folder: string, uid: number, reason: string, attempts: number, };

export type SearchResult = { message_id: string, folder: string, uid: number, sender: string, subject: string, 
/**
 * Seconds since the Unix epoch.
 */
date: number | null, 
/**
 * The text around the match, in order; matched words have `matched`.
 */
snippet: Array<SnippetPart>, };

export type SnippetPart = { text: string, matched: boolean, };

export type MessageView = { message_id: string, folder: string, subject: string, from: string, to: string, cc: string, date: number | null, body: MessageBody, attachments: Array<AttachmentView>, };

export type MessageBody = { "kind": "html", "content": string } | { "kind": "text", "content": string };

export type AttachmentView = { 
/**
 * What `save_attachment` takes.
 */
index: number, name: string, content_type: string, size: number, };

export type SavedAttachment = { path: string, };

export type SettingsView = { email: string, device_name: string, 
/**
 * The folders watched now.
 */
folders: Array<string>, 
/**
 * The IT policy decides the folders: shown, not editable.
 */
folders_locked: boolean, notifications: boolean, 
/**
 * The IT policy decides `notifications`.
 */
notifications_locked: boolean, 
/**
 * Starts with the desktop session.
 */
autostart: boolean, 
/**
 * The IT policy decides `autostart`.
 */
autostart_locked: boolean, 
/**
 * Every value the IT policy sets, shown as set by the organization.
 */
policy: Array<PolicyValue>, 
/**
 * The policy file, when there is one.
 */
policy_source: string | null, };

export type PolicyValue = { name: string, value: string, };

export type SettingsChange = { 
/**
 * Only when the policy does not decide them; at least one.
 */
folders: Array<string> | null, notifications: boolean | null, autostart: boolean | null, };

export type SignOutResult = { email: string, 
/**
 * False when only this computer forgot the registration.
 */
revoked_on_server: boolean, };

export type ComposeForm = { to: string, cc: string, bcc: string, subject: string, body: string, attachments: Array<AttachmentUpload>, 
/**
 * Days until nobody can open it; `None`: the organization's choice.
 */
expires_in_days: number | null, 
/**
 * Readable until recalled, whatever the organization's default.
 */
never_expires: boolean, 
/**
 * The secure message this answers, for threading.
 */
reply_to: ReplyTarget | null, 
/**
 * The secure message this forwards: its attachments go along.
 */
forward_of: ReplyTarget | null, };

export type AttachmentUpload = { name: string, content_type: string, 
/**
 * The bytes in standard base64.
 */
data_base64: string, };

export type ReplyTarget = { message_id: string, folder: string, };

export type ComposeDraft = { to: string, cc: string, subject: string, 
/**
 * The original, quoted, below an empty line for the answer.
 */
body: string, reply_to: ReplyTarget | null, 
/**
 * For a forward: the original, whose attachments go along.
 */
forward_of: ReplyTarget | null, 
/**
 * The names of those attachments, to show.
 */
forwarded_attachments: Array<string>, };

export type SentView = { 
/**
 * The Sealpost id, once the server stored it.
 */
message_id: string | null, subject: string, 
/**
 * `sending`, `retrying`, `sent`, `failed`, or `handed_over` (the
 * service sends it and has not finished yet).
 */
state: string, 
/**
 * Why it failed, or why the last attempt stopped.
 */
error: string | null, created_at: number, retry_at: number | null, recipients: Array<SentRecipient>, };

export type NotSentView = { subject: string, reason: string, at: number, };

export type SentRecipient = { address: string, notified_at: number | null, error: string | null, };

export type SlipView = { message_id: string, recalled_at: number | null, expires_at: number | null, recipients: Array<SlipLine>, };

export type SlipLine = { address: string, 
/**
 * `waiting`, `queued`, `notified`, `failed`, `bounced` or `retrieved`.
 */
state: string, notified_at: number | null, retrieved_at: number | null, 
/**
 * `desktop app` or `Secure Message Center`.
 */
retrieved_with: string | null, replied_at: number | null, error: string | null, };
