import { fireEvent, render, screen } from "@testing-library/svelte";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { StatusView } from "../lib/ipc";
import Status from "./Status.svelte";

const invoke = vi.hoisted(() => vi.fn());
vi.mock("@tauri-apps/api/core", () => ({ invoke, Channel: class {} }));

afterEach(() => invoke.mockReset());

function view(changes: Partial<StatusView>): StatusView {
  return {
    email: "dana@example.org",
    server: "https://sealpost.example.org",
    connected: true,
    watcher: { kind: "this_app" },
    folders: [{ name: "INBOX", state: "connected", detail: null }],
    swapped_total: 3,
    recent: [],
    pending: [],
    failed: [],
    rejected: 0,
    indexed: 3,
    sending: 0,
    not_sent: [],
    not_sent_total: 0,
    outbox_folder: "Sealpost Outbox",
    ...changes,
  };
}

describe("Status", () => {
  it("shows the connection, the folders and the recent secure messages", async () => {
    invoke.mockResolvedValue(
      view({
        recent: [
          { message_id: "msg_1", folder: "INBOX", subject: "Your lab results", sender: "Dr Sam", swapped_at: 0 },
        ],
      }),
    );
    render(Status);
    expect(await screen.findByText("Watching your mailbox")).toBeTruthy();
    expect(screen.getByText("dana@example.org")).toBeTruthy();
    expect(screen.getByText(/INBOX: connected/)).toBeTruthy();
    expect(screen.getByText(/Your lab results/)).toBeTruthy();
    expect(invoke).toHaveBeenCalledWith("status", undefined);
  });

  it("lists what waits and what failed, with the reasons", async () => {
    invoke.mockResolvedValue(
      view({
        connected: false,
        watcher: { kind: "other_agent" },
        folders: [{ name: "INBOX", state: "reconnecting", detail: "connection refused" }],
        pending: [{ message_id: "msg_2", folder: "INBOX", uid: 9, reason: "the server is unavailable", attempts: 4 }],
        failed: [{ message_id: "msg_3", folder: "INBOX", uid: 12, reason: "the message was revoked", attempts: 1 }],
        rejected: 2,
        sending: 1,
        not_sent: [{ subject: "Invoice", reason: "every recipient was refused", at: 0 }],
        not_sent_total: 1,
      }),
    );
    render(Status);
    expect(await screen.findByText("Not connected to your mailbox")).toBeTruthy();
    expect(screen.getByText(/1 on the way/)).toBeTruthy();
    expect(screen.getByText(/Invoice: every recipient was refused/)).toBeTruthy();
    expect(screen.getByText(/Sealpost service on this computer/)).toBeTruthy();
    expect(screen.getByText(/connection refused/)).toBeTruthy();
    expect(screen.getByText(/the server is unavailable/)).toBeTruthy();
    expect(screen.getByText(/the message was revoked/)).toBeTruthy();
    expect(screen.getByText(/2 suspicious notification/)).toBeTruthy();
  });

  it("shows an error the agent reports", async () => {
    invoke.mockRejectedValue({ code: "not_registered", message: "This computer is not registered yet." });
    render(Status);
    expect((await screen.findByRole("alert")).textContent).toBe("This computer is not registered yet.");
  });

  it("confirms a registration that just finished, with its time", async () => {
    invoke.mockResolvedValue(view({}));
    render(Status, { welcome: { email: "dana@example.org", server: "https://s.example", elapsed_ms: 1450 } });
    expect((await screen.findByRole("status")).textContent).toContain(
      "This computer is registered for dana@example.org, set up in 1.4 s.",
    );
  });

  it("retries a kept placeholder at once and says when it cannot", async () => {
    const kept = { message_id: "msg_3", folder: "INBOX", uid: 12, reason: "the message was revoked", attempts: 1 };
    invoke.mockImplementation(async (command: string) => {
      if (command === "status") return view({ failed: [kept] });
      if (command === "retry") throw { code: "gone", message: "Nothing is waiting in INBOX as #12 any more." };
      throw new Error(command);
    });
    render(Status);
    const button = await screen.findByRole("button", { name: "Retry INBOX #12" });
    await fireEvent.click(button);
    await vi.waitFor(() => expect(screen.getByRole("alert").textContent).toBe("Nothing is waiting in INBOX as #12 any more."));
    expect(invoke).toHaveBeenCalledWith("retry", { folder: "INBOX", uid: 12 });
  });

  it("pauses and resumes watching", async () => {
    let paused = false;
    invoke.mockImplementation(async (command: string, args?: { paused: boolean }) => {
      if (command === "set_paused") paused = args!.paused;
      return command === "status" ? view({ watcher: paused ? { kind: "paused" } : { kind: "this_app" } }) : undefined;
    });
    render(Status);
    await fireEvent.click(await screen.findByRole("button", { name: "Pause watching" }));
    expect(await screen.findByText("Paused")).toBeTruthy();
    expect(invoke).toHaveBeenCalledWith("set_paused", { paused: true });
    await fireEvent.click(screen.getByRole("button", { name: "Resume watching" }));
    expect(await screen.findByText("Watching your mailbox")).toBeTruthy();
  });
});
