// Peer benchmark: nodemailer with a pool of reused connections, into the same smtp-sink.
//
// node nodemailer-bench.mjs --port P --count N --connections C --mode raw|compose --templates F
//
// raw: every message is composed first (not timed), then sent as raw bytes;
// compose: each message is built by nodemailer from the templates while sending.
// Prints one JSON line: {"sent", "failed", "seconds", "cpu", "maxrss_mb", "mode"}; seconds
// and cpu cover the send phase (pool creation to the last message), like bench/reference.py.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const nodemailer = require("nodemailer");
const MailComposer = require("nodemailer/lib/mail-composer");

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => {
    if (arg.startsWith("--")) pairs.push([arg.slice(2), all[i + 1]]);
    return pairs;
  }, []),
);
const port = Number(args.port);
const count = Number(args.count ?? 20000);
const connections = Number(args.connections ?? 32);
const mode = args.mode ?? "compose";
const t = JSON.parse(readFileSync(args.templates, "utf8"));

function fill(template, values) {
  return template.replace(/\{\{ (\w+) \}\}/g, (_, key) => values[key] ?? "");
}

function mail(i) {
  const values = t.rows[i % t.rows.length];
  const email = `user${String(i).padStart(7, "0")}@example.com`;
  const row = { ...values, email };
  return {
    from: { name: t.from_name, address: t.from_addr },
    to: { name: fill(t.name, row), address: email },
    replyTo: t.reply_to,
    subject: fill(t.subject, row),
    headers: { "X-Campaign": t.campaign },
    text: fill(t.text, row),
    html: fill(t.html, row),
    envelope: { from: t.from_addr, to: [email] },
  };
}

async function main() {
  let prepared = null;
  if (mode === "raw") {
    prepared = [];
    for (let i = 0; i < count; i++) {
      const m = mail(i);
      const raw = await new MailComposer(m).compile().build();
      prepared.push({ raw, envelope: m.envelope });
    }
  }
  const transporter = nodemailer.createTransport({
    host: "127.0.0.1",
    port,
    secure: false,
    ignoreTLS: true,
    pool: true,
    maxConnections: connections,
    maxMessages: Infinity,
  });
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  let sent = 0;
  let failed = 0;
  // At most 2 messages per connection waiting: the pool's queue is an array it shifts
  // from, which gets slow (quadratic) with tens of thousands of messages queued at once.
  let next = 0;
  async function lane() {
    while (next < count) {
      const i = next++;
      const message = prepared ? prepared[i] : mail(i);
      try {
        await transporter.sendMail(message);
        sent++;
      } catch {
        failed++;
      }
    }
  }
  await Promise.all(Array.from({ length: connections * 2 }, lane));
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  transporter.close();
  const result = {
    mode,
    sent,
    failed,
    seconds: Math.round(seconds * 1e4) / 1e4,
    cpu: Math.round(((cpu.user + cpu.system) / 1e6) * 1e4) / 1e4,
    maxrss_mb: Math.round((process.resourceUsage().maxRSS / 1024) * 10) / 10,
    nodemailer: require("nodemailer/package.json").version,
  };
  console.log(JSON.stringify(result));
  process.exit(failed === 0 && sent === count ? 0 : 1);
}

main().catch((err) => {
  console.error(err);
  process.exit(2);
});
