import { fireEvent, render, screen } from "@testing-library/svelte";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { MessageView } from "../lib/ipc";
import Reader from "./Reader.svelte";

const invoke = vi.hoisted(() => vi.fn());
vi.mock("@tauri-apps/api/core", () => ({ invoke, Channel: class {} }));

const HTML_MESSAGE: MessageView = {
  message_id: "msg_1",
  folder: "INBOX",
  subject: "Your lab results",
  from: "Dr Sam <sam@clinic.example>",
  to: "alice@example.test",
  cc: "",
  date: 1_795_428_000,
  body: { kind: "html", content: "<p>Results <b>normal</b>.</p>" },
  attachments: [{ index: 0, name: "results.pdf", content_type: "application/pdf", size: 14_200 }],
};

async function settle() {
  await new Promise((resolve) => setTimeout(resolve, 0));
}

describe("Reader", () => {
  afterEach(() => invoke.mockReset());

  it("shows HTML in a frame without any sandbox permission and lists attachments", async () => {
    invoke.mockResolvedValue(HTML_MESSAGE);
    render(Reader, { messageId: "msg_1", folder: "INBOX", onClose: () => {} });
    await settle();
    expect(invoke).toHaveBeenCalledWith("open_message", { messageId: "msg_1", folder: "INBOX" });
    expect(screen.getByRole("heading", { level: 1 }).textContent).toBe("Your lab results");
    const frame = screen.getByTitle("Message text") as HTMLIFrameElement;
    expect(frame.getAttribute("sandbox")).toBe("");
    expect(frame.getAttribute("srcdoc")).toBe("<p>Results <b>normal</b>.</p>");
    expect(screen.getByText("application/pdf, 14 KB")).toBeTruthy();
  });

  it("saves an attachment and says where", async () => {
    invoke.mockResolvedValueOnce(HTML_MESSAGE).mockResolvedValueOnce({ path: "/home/alice/Downloads/results.pdf" });
    render(Reader, { messageId: "msg_1", folder: "INBOX", onClose: () => {} });
    await settle();
    await fireEvent.click(screen.getByRole("button", { name: "Save results.pdf" }));
    await settle();
    expect(invoke).toHaveBeenLastCalledWith("save_attachment", { messageId: "msg_1", folder: "INBOX", index: 0 });
    expect(screen.getByRole("status").textContent).toBe("Saved to /home/alice/Downloads/results.pdf");
  });

  it("asks for a reply draft and hands it on", async () => {
    const draft = {
      to: "sam@clinic.example",
      cc: "",
      subject: "Re: Your lab results",
      body: "\n\n> Results normal.",
      reply_to: { message_id: "msg_1", folder: "INBOX" },
      forward_of: null,
      forwarded_attachments: [],
    };
    invoke
      .mockResolvedValueOnce(HTML_MESSAGE)
      .mockResolvedValueOnce(draft)
      .mockResolvedValueOnce(draft)
      .mockResolvedValueOnce(draft);
    const onReply = vi.fn();
    render(Reader, { messageId: "msg_1", folder: "INBOX", onClose: () => {}, onReply });
    await settle();
    await fireEvent.click(screen.getByRole("button", { name: "Reply" }));
    await settle();
    expect(invoke).toHaveBeenLastCalledWith("reply_draft", { messageId: "msg_1", folder: "INBOX", all: false });
    expect(onReply).toHaveBeenLastCalledWith(draft);
    await fireEvent.click(screen.getByRole("button", { name: "Reply all" }));
    await settle();
    expect(invoke).toHaveBeenLastCalledWith("reply_draft", { messageId: "msg_1", folder: "INBOX", all: true });
    await fireEvent.click(screen.getByRole("button", { name: "Forward" }));
    await settle();
    expect(invoke).toHaveBeenLastCalledWith("forward_draft", { messageId: "msg_1", folder: "INBOX" });
    expect(onReply).toHaveBeenCalledTimes(3);
  });

  it("says what went wrong and offers to try again", async () => {
    invoke
      .mockRejectedValueOnce({ code: "gone", message: "The message is no longer in INBOX." })
      .mockResolvedValueOnce(HTML_MESSAGE);
    const onClose = vi.fn();
    render(Reader, { messageId: "msg_1", folder: "INBOX", onClose });
    await settle();
    expect(screen.getByRole("alert").textContent).toBe("The message is no longer in INBOX.");
    await fireEvent.click(screen.getByRole("button", { name: "Try again" }));
    await settle();
    expect(screen.getByRole("heading", { level: 1 }).textContent).toBe("Your lab results");
    await fireEvent.click(screen.getByRole("button", { name: "← Back to results" }));
    expect(onClose).toHaveBeenCalled();
  });
});
