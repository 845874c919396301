import { describe, expect, it } from "vitest";
import { ago, duration, emailProblem, sentOutcome, size } from "./format";

describe("ago", () => {
  const now = Date.UTC(2026, 10, 23, 12, 0, 0);
  const at = (secondsBefore: number) => now / 1000 - secondsBefore;

  it("says just now, minutes and hours", () => {
    expect(ago(at(10), now)).toBe("just now");
    expect(ago(at(60), now)).toBe("1 minute ago");
    expect(ago(at(5 * 60), now)).toBe("5 minutes ago");
    expect(ago(at(3 * 3600), now)).toBe("3 hours ago");
  });

  it("falls back to the date after a day", () => {
    expect(ago(at(3 * 86400), now)).toBe(new Date((now / 1000 - 3 * 86400) * 1000).toLocaleDateString());
  });
});

describe("duration", () => {
  it("uses milliseconds below a second", () => {
    expect(duration(850)).toBe("850 ms");
    expect(duration(4210)).toBe("4.2 s");
  });
});

describe("emailProblem", () => {
  it("accepts an ordinary address", () => {
    expect(emailProblem(" dana@example.org ")).toBeNull();
  });

  it("says what is wrong", () => {
    expect(emailProblem("")).toMatch(/Enter your email/);
    expect(emailProblem("dana")).toMatch(/whole address/);
    expect(emailProblem("dana@")).toMatch(/whole address/);
    expect(emailProblem("dana@localhost")).toMatch(/domain/);
    expect(emailProblem("da na@example.org")).toMatch(/whole address/);
  });
});

describe("size", () => {
  it("counts in decimal units", () => {
    expect(size(812)).toBe("812 B");
    expect(size(14_200)).toBe("14 KB");
    expect(size(2_345_678)).toBe("2.3 MB");
  });
});

describe("sentOutcome", () => {
  const base = { message_id: "msg_1", subject: "Lab", error: null, created_at: 0, retry_at: null, recipients: [] };
  const recipient = (address: string) => ({ address, notified_at: 1, error: null });

  it("counts the recipients of a sent message", () => {
    expect(sentOutcome({ ...base, state: "sent", recipients: [recipient("a@x.org")] })).toBe(
      "Sent securely to 1 recipient.",
    );
    expect(sentOutcome({ ...base, state: "sent", recipients: [recipient("a@x.org"), recipient("b@x.org")] })).toBe(
      "Sent securely to 2 recipients.",
    );
  });

  it("says why a message waits and who sends a handed-over one", () => {
    expect(sentOutcome({ ...base, state: "retrying", error: "the server is unavailable" })).toBe(
      "Not sent yet: the server is unavailable. Sealpost tries again automatically.",
    );
    expect(sentOutcome({ ...base, message_id: null, state: "handed_over" })).toBe(
      "Handed to the Sealpost service, which is sending it.",
    );
  });
});
