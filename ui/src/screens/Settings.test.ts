import { fireEvent, render, screen } from "@testing-library/svelte";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { SettingsView } from "../lib/ipc";
import Settings from "./Settings.svelte";

const invoke = vi.hoisted(() => vi.fn());
vi.mock("@tauri-apps/api/core", () => ({ invoke, Channel: class {} }));

afterEach(() => invoke.mockReset());

function view(changes: Partial<SettingsView>): SettingsView {
  return {
    email: "dana@example.org",
    device_name: "laptop (Sealpost app)",
    folders: ["INBOX"],
    folders_locked: false,
    notifications: true,
    notifications_locked: false,
    autostart: false,
    autostart_locked: false,
    policy: [],
    policy_source: null,
    ...changes,
  };
}

async function settle() {
  await new Promise((resolve) => setTimeout(resolve, 0));
}

describe("Settings", () => {
  it("offers the mailbox's folders and saves a new choice", async () => {
    invoke.mockImplementation(async (command: string, args?: { change?: { folders: string[] } }) => {
      if (command === "settings") return view({});
      if (command === "mailbox_folders") return ["INBOX", "Archive", "Sent"];
      if (command === "change_settings") return view({ folders: args!.change!.folders });
      throw new Error(command);
    });
    render(Settings, { onSignedOut: () => {} });
    await settle();
    const save = screen.getByRole("button", { name: "Save folders" }) as HTMLButtonElement;
    expect(save.disabled).toBe(true);
    await fireEvent.click(screen.getByRole("checkbox", { name: "Archive" }));
    expect(save.disabled).toBe(false);
    await fireEvent.click(save);
    await settle();
    expect(invoke).toHaveBeenCalledWith("change_settings", {
      change: { folders: ["INBOX", "Archive"], notifications: null, autostart: null },
    });
    expect(screen.getByRole("status").textContent).toBe("Folders saved; watching them now.");
  });

  it("shows what the organization set, without a way to change it", async () => {
    invoke.mockResolvedValue(
      view({
        folders: ["INBOX", "Projects"],
        folders_locked: true,
        notifications: false,
        notifications_locked: true,
        policy: [{ name: "Sealpost server", value: "https://sealpost.example.org" }],
        policy_source: "/etc/sealpost/policy.toml",
      }),
    );
    render(Settings, { onSignedOut: () => {} });
    await settle();
    expect(screen.getByText("INBOX, Projects")).toBeTruthy();
    expect(screen.queryByRole("button", { name: "Save folders" })).toBeNull();
    const notify = screen.getByRole("checkbox", { name: /Tell me when a secure message arrives/ }) as HTMLInputElement;
    expect([notify.checked, notify.disabled]).toEqual([false, true]);
    const login = screen.getByRole("checkbox", { name: /Start Sealpost when I log in/ }) as HTMLInputElement;
    expect(login.disabled).toBe(false);
    expect(screen.getByText("https://sealpost.example.org")).toBeTruthy();
    expect(screen.getByText(/From \/etc\/sealpost\/policy.toml/)).toBeTruthy();
    expect(invoke).not.toHaveBeenCalledWith("mailbox_folders", undefined);
  });

  it("asks before signing out and offers this computer only when the server cannot be told", async () => {
    const onSignedOut = vi.fn();
    invoke.mockImplementation(async (command: string, args?: { thisComputerOnly?: boolean }) => {
      if (command === "settings") return view({});
      if (command === "mailbox_folders") return ["INBOX"];
      if (command === "sign_out" && !args?.thisComputerOnly) {
        throw { code: "server", message: "The Sealpost server could not revoke this computer." };
      }
      if (command === "sign_out") return { email: "dana@example.org", revoked_on_server: false };
      throw new Error(command);
    });
    render(Settings, { onSignedOut });
    await settle();
    await fireEvent.click(screen.getByRole("button", { name: "Sign out…" }));
    await fireEvent.click(screen.getByRole("button", { name: "Sign out of this computer" }));
    await settle();
    expect(screen.getByRole("alert").textContent).toBe("The Sealpost server could not revoke this computer.");
    expect(onSignedOut).not.toHaveBeenCalled();
    await fireEvent.click(screen.getByRole("button", { name: "Sign out on this computer only" }));
    await settle();
    expect(invoke).toHaveBeenLastCalledWith("sign_out", { thisComputerOnly: true });
    expect(onSignedOut).toHaveBeenCalled();
  });
});
