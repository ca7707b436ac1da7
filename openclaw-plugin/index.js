// peersync's OpenClaw plugin: `/sync …` as a plugin command (handled by the Gateway, no LLM turn)
// and a heartbeat tick when a session starts or ends.  Thin like handler.sh, which it runs: it only
// finds the agent's workspace (OpenClaw's own resolution) and passes the words on; every decision
// is peersync's (Python).
import { execFile, spawn } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";

const MAX_REPLY = 3500; // characters: chat surfaces cut long messages

// `now mac-mini "/path with spaces"` → ["now", "mac-mini", "/path with spaces"] (no shell involved).
function words(text) {
  const out = [];
  for (const m of (text ?? "").matchAll(/"([^"]*)"|'([^']*)'|(\S+)/g)) out.push(m[1] ?? m[2] ?? m[3]);
  return out;
}

export default {
  id: "peersync",
  name: "peersync",
  description: "/sync commands and session syncs for peersync",
  register(api) {
    // The plugin folder sits inside peersync's skill folder, beside handler.sh.  OpenClaw may
    // load a captured copy of this file, so the folder comes from api.rootDir (the linked path).
    const root = api.rootDir ?? path.dirname(fileURLToPath(import.meta.url));
    const HANDLER = path.join(root, "..", "handler.sh");
    const settings = () => api.pluginConfig ?? {};
    const workspaceOf = (cfg, agentId) => api.runtime.agent.resolveAgentWorkspaceDir(cfg, agentId ?? "main");
    // Where peersync and the openclaw CLI are (a Gateway service often has a thin PATH).
    const env = () => {
      const out = { ...process.env };
      if (settings().peersync) out.PEERSYNC = settings().peersync;
      if (settings().openclaw) out.PEERSYNC_OPENCLAW = settings().openclaw;
      return out;
    };

    api.registerCommand({
      name: "sync",
      description: "peersync: /sync [status|now [peer]|push|pull|diff|add|remove|history|auto on|off|conflicts|trash|discover|setup|backup]",
      acceptsArgs: true,
      handler: (ctx) => new Promise((resolve) => {
        const argv = ["-w", workspaceOf(ctx.config, ctx.agentId), ...words(ctx.args)];
        const timeout = 1000 * (settings().timeoutSeconds ?? 600);
        execFile(HANDLER, argv, { env: env(), timeout, maxBuffer: 4 << 20 }, (err, stdout, stderr) => {
          let text = [stdout, stderr].map((s) => (s ?? "").trim()).filter(Boolean).join("\n");
          if (!text) text = err ? `❌ peersync failed (${err.killed ? "timed out" : `exit ${err.code}`})` : "✅ Done.";
          if (text.length > MAX_REPLY) text = text.slice(0, MAX_REPLY) + "\n…";
          resolve({ text });
        });
      }),
    });

    // Session hooks never wait for a sync: peersync decides whether one is due (auto.on_session_*)
    // and gives up within its own time limit.  Whatever it says goes to the Gateway log.
    const tick = (reason) => (event, ctx) => {
      const workspace = workspaceOf(api.runtime.config.current(), ctx?.agentId);
      const child = spawn(HANDLER, ["-w", workspace, "heartbeat", "--reason", reason],
                          { env: env(), stdio: ["ignore", "pipe", "pipe"] });
      let out = "";
      child.stdout.on("data", (d) => { out += d; });
      child.stderr.on("data", (d) => { out += d; });
      child.on("error", (e) => api.logger.warn(`peersync ${reason}: ${e.message}`));
      child.on("close", (code) => {
        if (out.trim() || code) api.logger.info(`peersync ${reason} (exit ${code}): ${out.trim()}`);
      });
    };
    api.on("session_start", tick("session-start"));
    api.on("session_end", tick("session-end"));
  },
};
