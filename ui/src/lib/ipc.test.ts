import { describe, expect, it } from "vitest";
import { asIpcError } from "./ipc";

describe("asIpcError", () => {
  it("keeps an error the Rust side sent", () => {
    expect(asIpcError({ code: "mailbox", message: "The mailbox refused the password." })).toEqual({
      code: "mailbox",
      message: "The mailbox refused the password.",
    });
  });

  it("turns anything else into an internal error with a message", () => {
    expect(asIpcError(new Error("boom"))).toEqual({ code: "internal", message: "boom" });
    expect(asIpcError("command search not allowed")).toEqual({
      code: "internal",
      message: "command search not allowed",
    });
    expect(asIpcError({ code: 3 }).code).toBe("internal");
    expect(asIpcError("").message).not.toBe("");
  });
});
