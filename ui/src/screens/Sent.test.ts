import { fireEvent, render, screen } from "@testing-library/svelte";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { SentView, SlipView } from "../lib/ipc";
import Sent from "./Sent.svelte";

const invoke = vi.hoisted(() => vi.fn());
vi.mock("@tauri-apps/api/core", () => ({ invoke, Channel: class {} }));

afterEach(() => invoke.mockReset());

const NOW = Math.floor(Date.now() / 1000);

function sent(subject: string, changes: Partial<SentView>): SentView {
  return {
    message_id: `msg_${subject}`,
    subject,
    state: "sent",
    error: null,
    created_at: NOW - 3600,
    retry_at: null,
    recipients: [{ address: "sam@clinic.example", notified_at: NOW - 3600, error: null }],
    ...changes,
  };
}

const SENT = [
  sent("older", { created_at: NOW - 7200 }),
  sent("bounced", {
    message_id: null,
    state: "failed",
    error: "the server refused the recipients",
    created_at: NOW - 60,
  }),
  sent("newest", {
    created_at: NOW - 10,
    recipients: [
      { address: "sam@clinic.example", notified_at: NOW - 10, error: null },
      { address: "kim@clinic.example", notified_at: NOW - 10, error: null },
    ],
  }),
];

function slip(changes: Partial<SlipView>): SlipView {
  return {
    message_id: "msg_newest",
    recalled_at: null,
    expires_at: null,
    recipients: [
      {
        address: "sam@clinic.example",
        state: "retrieved",
        notified_at: NOW - 10,
        retrieved_at: NOW - 5 * 60,
        retrieved_with: "desktop app",
        replied_at: NOW - 2 * 3600,
        error: null,
      },
      {
        address: "kim@clinic.example",
        state: "notified",
        notified_at: NOW - 10,
        retrieved_at: null,
        retrieved_with: null,
        replied_at: null,
        error: null,
      },
    ],
    ...changes,
  };
}

function serve(slips: { slip?: SlipView; recalled?: SlipView }) {
  invoke.mockImplementation(async (command: string) => {
    if (command === "sent_messages") return SENT;
    if (command === "delivery_slip") return slips.slip;
    if (command === "recall_message") return slips.recalled;
    throw new Error(`unexpected ${command}`);
  });
}

async function items() {
  await screen.findByText("newest");
  return [...document.querySelectorAll(".sent-item")] as HTMLElement[];
}

describe("Sent", () => {
  it("lists what was sent, newest first, with the failures' reasons", async () => {
    serve({});
    render(Sent);
    const listed = await items();
    expect(invoke).toHaveBeenCalledWith("sent_messages", undefined);
    expect(listed.map((item) => item.querySelector(".subject")!.textContent)).toEqual(["newest", "bounced", "older"]);
    expect(listed.map((item) => item.dataset.messageId)).toEqual(["msg_newest", undefined, "msg_older"]);
    expect(listed[0].textContent).toContain("2 recipients");
    expect(listed[0].textContent).toContain("just now");
    expect(listed[1].textContent).toContain("Failed");
    expect(listed[1].textContent).toContain("the server refused the recipients");
    expect(listed[2].textContent).toContain("2 hours ago");

    await fireEvent.click(screen.getByRole("button", { name: "Refresh" }));
    await vi.waitFor(() => expect(invoke).toHaveBeenCalledTimes(2));
  });

  it("shows the delivery slip of the message chosen", async () => {
    serve({ slip: slip({ expires_at: NOW + 30 * 86400 }) });
    render(Sent);
    const [newest] = await items();
    await fireEvent.click(newest);
    const table = await vi.waitFor(() => document.getElementById("slip")!);
    expect(invoke).toHaveBeenCalledWith("delivery_slip", { messageId: "msg_newest" });
    expect(newest.getAttribute("aria-current")).toBe("true");
    const lines = [...table.querySelectorAll("tr.slip-line")] as HTMLElement[];
    expect(lines.map((line) => [line.dataset.address, line.dataset.state])).toEqual([
      ["sam@clinic.example", "retrieved"],
      ["kim@clinic.example", "notified"],
    ]);
    const cells = (line: HTMLElement) => [...line.querySelectorAll("td")].map((cell) => cell.textContent!.trim());
    expect(cells(lines[0])).toEqual(["sam@clinic.example", "retrieved with the desktop app", "5 minutes ago", "replied 2 hours ago"]);
    expect(cells(lines[1])).toEqual(["kim@clinic.example", "notified", "just now", ""]);
    expect(table.querySelector("caption")!.textContent!.trim()).toMatch(/^Readable until .+\.$/);

    await fireEvent.click(document.getElementById("slip-refresh")!);
    await vi.waitFor(() => expect(invoke.mock.calls.filter(([command]) => command === "delivery_slip")).toHaveLength(2));
  });

  it("recalls only once confirmed, then shows the recalled slip", async () => {
    serve({ slip: slip({}), recalled: slip({ recalled_at: NOW - 1 }) });
    render(Sent);
    const [newest] = await items();
    await fireEvent.click(newest);
    const recall = await vi.waitFor(() => document.getElementById("recall")!);
    expect(recall.textContent).toBe("Recall…");

    await fireEvent.click(recall);
    expect(invoke).not.toHaveBeenCalledWith("recall_message", expect.anything());
    await fireEvent.click(screen.getByRole("button", { name: "Cancel" }));
    expect(document.getElementById("recall-confirm")).toBeNull();

    await fireEvent.click(document.getElementById("recall")!);
    const confirm = document.getElementById("recall-confirm")!;
    expect(confirm.textContent!.trim()).toBe("Recall: nobody can open it any more");
    expect(invoke).not.toHaveBeenCalledWith("recall_message", expect.anything());
    await fireEvent.click(confirm);
    await vi.waitFor(() =>
      expect(document.getElementById("slip")!.textContent).toContain("Recalled just now. Nobody can open it any more."),
    );
    expect(invoke).toHaveBeenCalledWith("recall_message", { messageId: "msg_newest" });
    expect(document.getElementById("recall")).toBeNull();
    expect(document.getElementById("recall-confirm")).toBeNull();
  });

  it("says why the slip or a recall could not be had", async () => {
    invoke.mockImplementation(async (command: string) => {
      if (command === "sent_messages") return SENT;
      if (command === "delivery_slip") return slip({});
      if (command === "recall_message") throw { code: "server", message: "The server could not be reached." };
      throw new Error(command);
    });
    render(Sent);
    const [newest] = await items();
    await fireEvent.click(newest);
    await fireEvent.click(await vi.waitFor(() => document.getElementById("recall")!));
    await fireEvent.click(document.getElementById("recall-confirm")!);
    expect((await screen.findByRole("alert")).textContent).toBe("The server could not be reached.");
    // Still offered, to try again.
    expect(document.getElementById("recall-confirm")).toBeTruthy();
  });

  it("confirms the message just sent", async () => {
    serve({});
    render(Sent, { justSent: SENT[2] });
    const status = screen.getByRole("status");
    expect(status.id).toBe("compose-result");
    expect(status.textContent).toBe("Sent securely to 2 recipients.");
  });
});
