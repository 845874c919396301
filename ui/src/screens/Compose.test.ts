import { fireEvent, render, screen } from "@testing-library/svelte";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { ComposeForm, SentView } from "../lib/ipc";
import Compose from "./Compose.svelte";

const invoke = vi.hoisted(() => vi.fn());
vi.mock("@tauri-apps/api/core", () => ({ invoke, Channel: class {} }));

afterEach(() => invoke.mockReset());

function sentView(changes: Partial<SentView>): SentView {
  return {
    message_id: "msg_9",
    subject: "Your lab results",
    state: "sent",
    error: null,
    created_at: 1_795_428_000,
    retry_at: null,
    recipients: [
      { address: "sam@clinic.example", notified_at: 1_795_428_001, error: null },
      { address: "kim@clinic.example", notified_at: 1_795_428_001, error: null },
    ],
    ...changes,
  };
}

function field(id: string) {
  return document.getElementById(id) as HTMLInputElement;
}

async function type(id: string, value: string) {
  await fireEvent.input(field(id), { target: { value } });
}

async function attach(...files: File[]) {
  const input = field("compose-attachments");
  Object.defineProperty(input, "files", { value: files, configurable: true });
  await fireEvent.change(input);
}

async function send() {
  await fireEvent.click(screen.getByRole("button", { name: "Send securely" }));
}

describe("Compose", () => {
  it("sends the form with the attachments in base64 and the expiry chosen", async () => {
    invoke.mockResolvedValue(sentView({}));
    const onSent = vi.fn();
    render(Compose, { onSent });
    await type("compose-to", "sam@clinic.example, Kim <kim@clinic.example>");
    await type("compose-bcc", "records@example.org");
    await type("compose-subject", "Your lab results");
    await type("compose-body", "Attached.");
    await attach(
      new File(["hello"], "note.txt", { type: "text/plain" }),
      new File([new Uint8Array([0, 255, 1])], "scan.bin"),
    );
    expect(screen.getByText("note.txt")).toBeTruthy();
    await fireEvent.change(field("compose-expiry"), { target: { value: "30" } });
    await send();
    await vi.waitFor(() => expect(onSent).toHaveBeenCalledWith(sentView({})));
    const form: ComposeForm = {
      to: "sam@clinic.example, Kim <kim@clinic.example>",
      cc: "",
      bcc: "records@example.org",
      subject: "Your lab results",
      body: "Attached.",
      attachments: [
        { name: "note.txt", content_type: "text/plain", data_base64: "aGVsbG8=" },
        { name: "scan.bin", content_type: "application/octet-stream", data_base64: "AP8B" },
      ],
      expires_in_days: 30,
      never_expires: false,
      reply_to: null,
      forward_of: null,
    };
    expect(invoke).toHaveBeenCalledWith("send_message", { form });
    const result = document.getElementById("compose-result")!;
    expect(result.getAttribute("role")).toBe("status");
    expect(result.textContent).toBe("Sent securely to 2 recipients.");
    // A sent message leaves an empty form.
    expect(field("compose-to").value).toBe("");
    expect(field("compose-subject").value).toBe("");
    expect(screen.queryByText("note.txt")).toBeNull();
  });

  it("maps the expiry choices", async () => {
    invoke.mockResolvedValue(sentView({}));
    render(Compose, { onSent: () => {} });
    const sentWith = async (expiry: string) => {
      await type("compose-to", "sam@clinic.example");
      await fireEvent.change(field("compose-expiry"), { target: { value: expiry } });
      await send();
      await vi.waitFor(() => expect(document.getElementById("compose-result")).toBeTruthy());
      const form = invoke.mock.lastCall![1].form as ComposeForm;
      return [form.expires_in_days, form.never_expires];
    };
    expect(await sentWith("never")).toEqual([null, true]);
    expect(await sentWith("")).toEqual([null, false]);
    expect(await sentWith("365")).toEqual([365, false]);
  });

  it("drops an attachment removed before sending", async () => {
    invoke.mockResolvedValue(sentView({}));
    render(Compose, { onSent: () => {} });
    await type("compose-to", "sam@clinic.example");
    await attach(new File(["a"], "a.txt", { type: "text/plain" }), new File(["b"], "b.txt", { type: "text/plain" }));
    await fireEvent.click(screen.getByRole("button", { name: "Remove a.txt" }));
    await send();
    await vi.waitFor(() => expect(invoke).toHaveBeenCalled());
    const form = invoke.mock.lastCall![1].form as ComposeForm;
    expect(form.attachments.map((attachment) => attachment.name)).toEqual(["b.txt"]);
  });

  it("says a message waits for another try, or went to the service", async () => {
    invoke.mockResolvedValueOnce(sentView({ state: "retrying", error: "the server is unavailable", retry_at: 1 }));
    const onSent = vi.fn();
    render(Compose, { onSent });
    await type("compose-to", "sam@clinic.example");
    await send();
    expect((await screen.findByRole("status")).textContent).toBe(
      "Not sent yet: the server is unavailable. Sealpost tries again automatically.",
    );
    expect(onSent).toHaveBeenCalledTimes(1);

    invoke.mockResolvedValueOnce(sentView({ message_id: null, state: "handed_over", recipients: [] }));
    await type("compose-to", "sam@clinic.example");
    await send();
    await vi.waitFor(() =>
      expect(screen.getByRole("status").textContent).toBe("Handed to the Sealpost service, which is sending it."),
    );
  });

  it("keeps what was typed when sending fails", async () => {
    invoke.mockRejectedValueOnce({ code: "invalid", message: "\"sam\" is not an email address such as alice@example.org." });
    const onSent = vi.fn();
    render(Compose, { onSent });
    await type("compose-to", "sam");
    await type("compose-subject", "Lab");
    await type("compose-body", "The text.");
    await attach(new File(["hello"], "note.txt", { type: "text/plain" }));
    await send();
    const alert = await screen.findByRole("alert");
    expect(alert.id).toBe("compose-error");
    expect(alert.textContent).toBe("\"sam\" is not an email address such as alice@example.org.");
    expect(field("compose-to").value).toBe("sam");
    expect(field("compose-subject").value).toBe("Lab");
    expect(field("compose-body").value).toBe("The text.");
    expect(screen.getByText("note.txt")).toBeTruthy();
    expect(onSent).not.toHaveBeenCalled();

    // A message the server refused for good: an error too, the form kept.
    invoke.mockResolvedValueOnce(sentView({ state: "failed", error: "the recipient's domain refuses Sealpost" }));
    await type("compose-to", "sam@clinic.example");
    await send();
    await vi.waitFor(() =>
      expect(screen.getByRole("alert").textContent).toBe("Not sent: the recipient's domain refuses Sealpost."),
    );
    expect(document.getElementById("compose-result")).toBeNull();
    expect(field("compose-subject").value).toBe("Lab");
    expect(onSent).not.toHaveBeenCalled();
  });

  it("shows Sending… while the message is on its way", async () => {
    let finish: (sent: SentView) => void = () => {};
    invoke.mockReturnValue(new Promise<SentView>((resolve) => (finish = resolve)));
    render(Compose, { onSent: () => {} });
    await type("compose-to", "sam@clinic.example");
    await send();
    const button = document.getElementById("compose-send") as HTMLButtonElement;
    await vi.waitFor(() => expect(button.textContent).toBe("Sending…"));
    expect(button.disabled).toBe(true);
    finish(sentView({}));
    await vi.waitFor(() => expect(button.textContent).toBe("Send securely"));
    expect(button.disabled).toBe(false);
  });

  it("starts from a reply draft and sends it as a reply", async () => {
    invoke.mockResolvedValue(sentView({}));
    const draft = {
      to: "sam@clinic.example",
      cc: "kim@clinic.example",
      subject: "Re: Your lab results",
      body: "\n\n> Results normal.",
      reply_to: { message_id: "msg_1", folder: "INBOX" },
      forward_of: null,
      forwarded_attachments: [],
    };
    render(Compose, { draft, onSent: () => {} });
    expect(field("compose-to").value).toBe("sam@clinic.example");
    expect(field("compose-cc").value).toBe("kim@clinic.example");
    expect(field("compose-subject").value).toBe("Re: Your lab results");
    expect(field("compose-body").value).toBe("\n\n> Results normal.");
    expect(document.activeElement).toBe(field("compose-body"));
    await type("compose-body", "Thanks!\n\n> Results normal.");
    await send();
    await vi.waitFor(() => expect(invoke).toHaveBeenCalled());
    expect(invoke).toHaveBeenCalledWith("send_message", {
      form: expect.objectContaining({
        to: "sam@clinic.example",
        cc: "kim@clinic.example",
        body: "Thanks!\n\n> Results normal.",
        reply_to: { message_id: "msg_1", folder: "INBOX" },
        expires_in_days: null,
        never_expires: false,
      }),
    });
  });

  it("forwards with the original's attachments named, and says so", async () => {
    invoke.mockResolvedValue(sentView({}));
    const draft = {
      to: "",
      cc: "",
      subject: "Fwd: Your lab results",
      body: "\n\n---------- Forwarded message ----------\nResults normal.",
      reply_to: null,
      forward_of: { message_id: "msg_1", folder: "INBOX" },
      forwarded_attachments: ["results.pdf"],
    };
    render(Compose, { draft, onSent: () => {} });
    expect(screen.getByRole("heading").textContent?.trim()).toBe("Forward securely");
    expect(document.getElementById("forwarded")!.textContent).toContain("results.pdf");
    await type("compose-to", "gp@clinic.example");
    await send();
    await vi.waitFor(() => expect(invoke).toHaveBeenCalled());
    expect(invoke).toHaveBeenCalledWith("send_message", {
      form: expect.objectContaining({
        to: "gp@clinic.example",
        subject: "Fwd: Your lab results",
        reply_to: null,
        forward_of: { message_id: "msg_1", folder: "INBOX" },
      }),
    });
  });
});
