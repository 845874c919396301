import { fireEvent, render, screen } from "@testing-library/svelte";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { RegisterProgress } from "../lib/ipc";
import Wizard from "./Wizard.svelte";

const invoke = vi.hoisted(() => vi.fn());
vi.mock("@tauri-apps/api/core", () => ({
  invoke,
  Channel: class {
    onmessage: (message: unknown) => void = () => {};
  },
}));

afterEach(() => invoke.mockReset());

async function fill(email: string, password: string) {
  await fireEvent.input(screen.getByLabelText("Email address"), { target: { value: email } });
  await fireEvent.input(screen.getByLabelText("Mailbox password"), { target: { value: password } });
  await fireEvent.click(screen.getByRole("button", { name: "Set up this computer" }));
}

describe("Wizard", () => {
  it("asks for a whole address before calling anything", async () => {
    render(Wizard, { preset: { server_url: null, folders: null, source: null }, onRegistered: () => {} });
    await fill("dana", "secret");
    expect(screen.getByText("Enter the whole address, like name@example.org.")).toBeTruthy();
    expect(invoke).not.toHaveBeenCalled();
  });

  it("shows each step as it starts, then hands over", async () => {
    const onRegistered = vi.fn();
    invoke.mockImplementation(async (_command: string, args: { onProgress: { onmessage: (p: RegisterProgress) => void } }) => {
      args.onProgress.onmessage({ step: "discovering", detail: null, elapsed_ms: 5 });
      args.onProgress.onmessage({ step: "discovered", detail: "server https://s.example, mailbox imap.example:993", elapsed_ms: 40 });
      args.onProgress.onmessage({ step: "waiting_for_code", detail: null, elapsed_ms: 900 });
      return { email: "dana@example.org", server: "https://s.example", elapsed_ms: 1500 };
    });
    render(Wizard, { preset: { server_url: null, folders: null, source: null }, onRegistered });
    await fill(" dana@example.org ", "secret");
    await vi.waitFor(() =>
      expect(onRegistered).toHaveBeenCalledWith({ email: "dana@example.org", server: "https://s.example", elapsed_ms: 1500 }),
    );
    expect(invoke).toHaveBeenCalledWith("register", {
      form: { email: "dana@example.org", password: "secret", server: null },
      onProgress: expect.anything(),
    });
    const steps = screen.getAllByRole("listitem").map((step) => step.className);
    expect(steps.slice(0, 4)).toEqual(["done", "done", "done", "done"]);
    expect(screen.getByText(/server https:\/\/s.example/)).toBeTruthy();
  });

  it("marks the failed step and says what to do", async () => {
    invoke.mockImplementation(async (_command: string, args: { onProgress: { onmessage: (p: RegisterProgress) => void } }) => {
      args.onProgress.onmessage({ step: "mailbox_login", detail: null, elapsed_ms: 30 });
      throw { code: "mailbox", message: "The mailbox refused the password; check it and try again." };
    });
    render(Wizard, { preset: { server_url: null, folders: null, source: null }, onRegistered: () => {} });
    await fill("dana@example.org", "wrong");
    await vi.waitFor(() => expect(screen.getByRole("alert").textContent).toMatch(/refused the password/));
    expect(screen.getAllByRole("listitem")[1].className).toBe("failed");
    expect(screen.getByRole("button", { name: "Set up this computer" })).toBeTruthy();
  });

  it("shows a server set by the organization instead of asking", () => {
    render(Wizard, {
      preset: { server_url: "https://sealpost.example.org", folders: null, source: "/etc/sealpost/policy.toml" },
      onRegistered: () => {},
    });
    expect(screen.queryByLabelText(/Sealpost server/)).toBeNull();
    expect(screen.getByText("https://sealpost.example.org")).toBeTruthy();
  });

  it("is filled in by a registration link but still asks for the password", async () => {
    render(Wizard, {
      preset: { server_url: null, folders: null, source: null },
      prefill: { email: "dana@example.org", server: "https://sealpost.example.org" },
      onRegistered: () => {},
    });
    expect((screen.getByLabelText("Email address") as HTMLInputElement).value).toBe("dana@example.org");
    expect((screen.getByLabelText(/Sealpost server/) as HTMLInputElement).value).toBe("https://sealpost.example.org");
    expect((screen.getByLabelText("Mailbox password") as HTMLInputElement).value).toBe("");
  });
});
