// Small formatting helpers shared by the screens.
import type { SentView } from "./ipc-types";

const MINUTE = 60;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

/** "just now", "5 minutes ago", "3 hours ago", else the date. */
export function ago(unixSeconds: number, nowMs: number = Date.now()): string {
  const seconds = Math.floor(nowMs / 1000) - unixSeconds;
  if (seconds < 45) return "just now";
  if (seconds < HOUR) return plural(Math.round(seconds / MINUTE), "minute") + " ago";
  if (seconds < DAY) return plural(Math.round(seconds / HOUR), "hour") + " ago";
  return new Date(unixSeconds * 1000).toLocaleDateString();
}

function plural(count: number, unit: string): string {
  return `${count} ${unit}${count === 1 ? "" : "s"}`;
}

/** Milliseconds as "850 ms" or "4.2 s". */
export function duration(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
}

/** Why an email address cannot be registered, or null if it looks usable. */
export function emailProblem(email: string): string | null {
  const trimmed = email.trim();
  if (trimmed === "") return "Enter your email address.";
  const at = trimmed.lastIndexOf("@");
  if (at < 1 || at === trimmed.length - 1 || trimmed.includes(" ")) {
    return "Enter the whole address, like name@example.org.";
  }
  if (!trimmed.slice(at + 1).includes(".")) return "The part after @ must be a domain, like example.org.";
  return null;
}

/** Bytes as "812 B", "14 KB" or "2.3 MB". */
export function size(bytes: number): string {
  if (bytes < 1000) return `${bytes} B`;
  if (bytes < 1_000_000) return `${Math.round(bytes / 1000)} KB`;
  return `${(bytes / 1_000_000).toFixed(1)} MB`;
}

/** A moment, past or future, as the local date and time. */
export function dateTime(unixSeconds: number): string {
  return new Date(unixSeconds * 1000).toLocaleString();
}

/** What became of a message just sent, in a sentence ("failed" included). */
export function sentOutcome(sent: SentView): string {
  switch (sent.state) {
    case "sent":
      return `Sent securely to ${plural(sent.recipients.length, "recipient")}.`;
    case "retrying":
      return `Not sent yet: ${sent.error ?? "the server did not answer"}. Sealpost tries again automatically.`;
    case "handed_over":
      return "Handed to the Sealpost service, which is sending it.";
    case "failed":
      return sent.error ? `Not sent: ${sent.error}.` : "Not sent.";
    default:
      return "Sending; Sealpost finishes it automatically.";
  }
}
