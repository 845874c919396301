import { fireEvent, render, screen } from "@testing-library/svelte";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { MessageBody, MessageView, SearchResult } from "../lib/ipc";
import Search from "./Search.svelte";

const invoke = vi.hoisted(() => vi.fn());
vi.mock("@tauri-apps/api/core", () => ({ invoke, Channel: class {} }));

function result(subject: string, snippet: [string, boolean][]): SearchResult {
  return {
    message_id: `msg_${subject}`,
    folder: "INBOX",
    uid: 7,
    sender: "Dr Sam <sam@clinic.example>",
    subject,
    date: null,
    snippet: snippet.map(([text, matched]) => ({ text, matched })),
  };
}

describe("Search", () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => {
    vi.useRealTimers();
    invoke.mockReset();
  });

  async function type(text: string) {
    const box = screen.getByRole("combobox");
    await fireEvent.input(box, { target: { value: text } });
    await vi.advanceTimersByTimeAsync(200);
    return box;
  }

  it("shows results as you type with the matched words marked", async () => {
    invoke.mockResolvedValue([
      result("Your lab results", [["…your ", false], ["lab", true], [" results are in", false]]),
      result("Lab booking", [["", false], ["Lab", true]]),
    ]);
    const { container } = render(Search);
    await type("lab");
    expect(invoke).toHaveBeenCalledWith("search", { query: "lab", limit: 50 });
    expect(screen.getByText("Your lab results")).toBeTruthy();
    const marks = [...container.querySelectorAll("mark")].map((mark) => mark.textContent);
    expect(marks).toEqual(["lab", "Lab"]);
  });

  it("moves the selection with the arrow keys", async () => {
    invoke.mockResolvedValue([result("one", [["one", true]]), result("two", [["two", true]])]);
    render(Search);
    const box = await type("o");
    const options = () => screen.getAllByRole("option").map((option) => option.getAttribute("aria-selected"));
    expect(options()).toEqual(["true", "false"]);
    await fireEvent.keyDown(box, { key: "ArrowDown" });
    expect(options()).toEqual(["false", "true"]);
    await fireEvent.keyDown(box, { key: "ArrowDown" });
    expect(options()).toEqual(["false", "true"]);
    await fireEvent.keyDown(box, { key: "ArrowUp" });
    expect(options()).toEqual(["true", "false"]);
  });

  it("says when nothing matches and shows errors", async () => {
    invoke.mockResolvedValueOnce([]);
    render(Search);
    await type("zebra");
    expect(screen.getByText("Nothing matches “zebra”.")).toBeTruthy();
    invoke.mockRejectedValueOnce({ code: "internal", message: "The search index: disk I/O error." });
    await type("zebras");
    expect(screen.getByRole("alert").textContent).toBe("The search index: disk I/O error.");
  });

  it("does not ask the index about an empty query", async () => {
    render(Search);
    await type("   ");
    expect(invoke).not.toHaveBeenCalled();
  });

  it("opens the selected result with Enter and comes back with Escape", async () => {
    invoke.mockImplementation(async (command: string) => {
      if (command === "search") return [result("one", [["one", true]]), result("two", [["two", true]])];
      if (command === "open_message") return message({ kind: "text", content: "The text of two." });
      throw new Error(`unexpected ${command}`);
    });
    render(Search);
    const box = await type("o");
    await fireEvent.keyDown(box, { key: "ArrowDown" });
    await fireEvent.keyDown(box, { key: "Enter" });
    await vi.advanceTimersByTimeAsync(0);
    expect(invoke).toHaveBeenCalledWith("open_message", { messageId: "msg_two", folder: "INBOX" });
    expect(screen.getByText("The text of two.")).toBeTruthy();
    await fireEvent.keyDown(screen.getByRole("article"), { key: "Escape" });
    await vi.advanceTimersByTimeAsync(0);
    expect(screen.getAllByRole("option")).toHaveLength(2);
    expect(document.activeElement).toBe(screen.getByRole("combobox"));
  });
});

function message(body: MessageBody): MessageView {
  return {
    message_id: "msg_two",
    folder: "INBOX",
    subject: "two",
    from: "Dr Sam <sam@clinic.example>",
    to: "alice@example.test",
    cc: "",
    date: null,
    body,
    attachments: [],
  };
}
