// Calls into the app's Rust side. Every command fails with an IpcError
// ({ code, message }); anything else that reaches here is turned into one so
// the screens have a single shape to show.
import { Channel, invoke } from "@tauri-apps/api/core";
import type {
  ComposeDraft,
  ComposeForm,
  ErrorCode,
  IpcError,
  MessageView,
  Overview,
  RegisterForm,
  RegisterProgress,
  Registration,
  SavedAttachment,
  SearchResult,
  SentView,
  SettingsChange,
  SettingsView,
  SignOutResult,
  SlipView,
  StatusView,
} from "./ipc-types";

export type * from "./ipc-types";

export function asIpcError(error: unknown): IpcError {
  if (typeof error === "object" && error !== null && "code" in error && "message" in error) {
    const { code, message } = error as Record<string, unknown>;
    // The Rust side only sends codes of ErrorCode.
    if (typeof code === "string" && typeof message === "string") return { code: code as ErrorCode, message };
  }
  const message = error instanceof Error ? error.message : String(error);
  return { code: "internal", message: message || "Something went wrong in the app." };
}

async function call<T>(command: string, args?: Record<string, unknown>): Promise<T> {
  try {
    return await invoke<T>(command, args);
  } catch (error) {
    throw asIpcError(error);
  }
}

export function overview(): Promise<Overview> {
  return call("overview");
}

export function status(): Promise<StatusView> {
  return call("status");
}

export function register(
  form: RegisterForm,
  onProgress: (progress: RegisterProgress) => void,
): Promise<Registration> {
  const channel = new Channel<RegisterProgress>();
  channel.onmessage = onProgress;
  return call("register", { form, onProgress: channel });
}

export function search(query: string, limit = 50): Promise<SearchResult[]> {
  return call("search", { query, limit });
}

export function openMessage(messageId: string, folder: string): Promise<MessageView> {
  return call("open_message", { messageId, folder });
}

export function saveAttachment(messageId: string, folder: string, index: number): Promise<SavedAttachment> {
  return call("save_attachment", { messageId, folder, index });
}

export function settings(): Promise<SettingsView> {
  return call("settings");
}

export function mailboxFolders(): Promise<string[]> {
  return call("mailbox_folders");
}

export function changeSettings(change: SettingsChange): Promise<SettingsView> {
  return call("change_settings", { change });
}

export function signOut(thisComputerOnly: boolean): Promise<SignOutResult> {
  return call("sign_out", { thisComputerOnly });
}

export function retry(folder: string, uid: number): Promise<void> {
  return call("retry", { folder, uid });
}

export function setPaused(paused: boolean): Promise<void> {
  return call("set_paused", { paused });
}

/** Sends securely; answers once sent, given up on, kept for a retry or handed to the service. */
export function sendMessage(form: ComposeForm): Promise<SentView> {
  return call("send_message", { form });
}

/** A forward of a swapped message, prefilled; its attachments go along. */
export function forwardDraft(messageId: string, folder: string): Promise<ComposeDraft> {
  return call("forward_draft", { messageId, folder });
}

/** A reply to a swapped message, prefilled; `all` adds its other recipients. */
export function replyDraft(messageId: string, folder: string, all: boolean): Promise<ComposeDraft> {
  return call("reply_draft", { messageId, folder, all });
}

/** The secure messages sent from this computer, newest first. */
export function sentMessages(): Promise<SentView[]> {
  return call("sent_messages");
}

export function deliverySlip(messageId: string): Promise<SlipView> {
  return call("delivery_slip", { messageId });
}

/** Nobody can open the message any more; answers its slip as it is now. */
export function recallMessage(messageId: string): Promise<SlipView> {
  return call("recall_message", { messageId });
}
