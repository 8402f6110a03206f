// Browser tests of grit serve's web UI (issue 14). Starts a real `grit serve` on a free port
// with a temporary store and tests/ui/demo.toml (a parameter, a step that fails for `bad`, one
// that runs long for `slow`), drives Debian's Chromium through playwright-core, runs axe-core
// on every page (no serious or critical violation allowed), and writes screenshots of every
// page, light and dark, to docs/screenshots/.
//
//   node tests/ui/run.mjs          (GRIT_BIN: the grit binary, default target/release/grit;
//                                   CHROMIUM: the browser, default /usr/bin/chromium)
//
// Exits non-zero on the first failure, with the server's log.

import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, copyFileSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, "../..");
const grit = process.env.GRIT_BIN || join(repo, "target/release/grit");
const browserPath = process.env.CHROMIUM || "/usr/bin/chromium";
const shots = join(repo, "docs/screenshots");
const axeSource = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");
const TIMEOUT = 30_000;

let server;
let serverLog = "";
const work = mkdtempSync(join(tmpdir(), "grit-ui-"));

function fail(message) {
  throw new Error(message);
}

async function startServer() {
  copyFileSync(join(here, "demo.toml"), join(work, "demo.toml"));
  server = spawn(grit, ["serve", "-m", join(work, "demo.toml"), "--db", join(work, "db"),
    "--listen", "127.0.0.1:0", "--no-sandbox"], { stdio: ["ignore", "ignore", "pipe"] });
  return await new Promise((ok, ko) => {
    const timer = setTimeout(() => ko(new Error(`grit serve did not start:\n${serverLog}`)), TIMEOUT);
    server.stderr.on("data", (chunk) => {
      serverLog += chunk;
      const m = serverLog.match(/listening on (http:\/\/\S+)/);
      if (m) { clearTimeout(timer); ok(m[1]); }
    });
    server.on("exit", (code) => ko(new Error(`grit serve exited (${code}):\n${serverLog}`)));
  });
}

const token = (role) =>
  execFileSync(grit, ["token", "--role", role, "--db", join(work, "db")]).toString().trim();

/** axe-core on the page as it is: fails on serious or critical violations. */
async function axe(page, name) {
  await page.addScriptTag({ content: axeSource });
  const result = await page.evaluate(async () =>
    await window.axe.run(document, { resultTypes: ["violations"] }));
  const bad = result.violations.filter((v) => ["serious", "critical"].includes(v.impact));
  if (bad.length) {
    fail(`axe on ${name}: ` + bad.map((v) => `${v.id} (${v.impact}): ${v.help} — ` +
      v.nodes.slice(0, 3).map((n) => n.target.join(" ")).join(", ")).join("\n"));
  }
}

/** Check a page (axe, light and dark; fits 360 px) and screenshot it in both schemes. */
async function visit(page, name) {
  await page.waitForLoadState("domcontentloaded");
  for (const scheme of ["light", "dark"]) {
    await page.emulateMedia({ colorScheme: scheme });
    await axe(page, `${name} (${scheme})`);
    await page.screenshot({ path: join(shots, `${name}-${scheme}.png`), fullPage: true });
  }
  await page.emulateMedia({ colorScheme: "light" });
  // Usable at 360 px: nothing makes the page itself scroll sideways (tables scroll inside).
  const size = page.viewportSize();
  await page.setViewportSize({ width: 360, height: 740 });
  const wide = await page.evaluate(() => document.documentElement.scrollWidth);
  await page.setViewportSize(size);
  if (wide > 362) fail(`${name} is ${wide}px wide at a 360px viewport`);
  console.log(`ok   ${name}`);
}

async function stateOf(page) {
  return (await page.locator("#run-state").innerText()).trim();
}

async function signIn(page, base, role) {
  await page.goto(`${base}/ui/`);
  if (!page.url().includes("/ui/login")) fail(`signed out, /ui/ did not lead to the login page: ${page.url()}`);
  await page.getByLabel("Token").fill(token(role));
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL(`${base}/ui/`);
}

async function triggerFromForm(page, base, region) {
  await page.goto(`${base}/ui/`);
  await page.getByRole("link", { name: "Run demo" }).click();
  const field = page.getByLabel("region");
  if ((await field.inputValue()) !== "eu") fail("the Run form does not fill in the default `eu`");
  await field.fill(region);
  await page.getByRole("button", { name: "Queue the run" }).click();
  await page.waitForURL(/\/ui\/runs\/demo\.\d+$/);
  return page.url();
}

async function main() {
  mkdirSync(shots, { recursive: true });
  const base = await startServer();
  const browser = await chromium.launch({ executablePath: browserPath, args: ["--no-sandbox"] });
  try {
    const context = await browser.newContext({ viewport: { width: 1200, height: 800 } });
    context.setDefaultTimeout(TIMEOUT);
    const page = await context.newPage();

    // Log in.
    await page.goto(`${base}/ui/login`);
    await visit(page, "login");
    await signIn(page, base, "operator");

    // A long run, then a run with a parameter from the form that waits behind it.
    const slowRun = await triggerFromForm(page, base, "slow");
    await page.locator("#run-state", { hasText: "running" }).waitFor();
    // Its first task's log, followed live while it runs.
    const slowTask = page.locator("table a[href^='/ui/tasks/']").first();
    await page.locator("table a[href^='/ui/tasks/']").first().waitFor();
    const taskPage = await context.newPage();
    await taskPage.goto(base + (await slowTask.getAttribute("href")));
    await taskPage.locator("#log", { hasText: "fetching slowly" }).waitFor();
    console.log("ok   a running task's log follows live");
    await visit(taskPage, "task-running");
    await taskPage.close();

    const usRun = await triggerFromForm(page, base, "us");
    if ((await stateOf(page)) !== "queued") fail(`the run behind the long one is ${await stateOf(page)}`);
    await page.evaluate(() => { window.__notReloaded = true; });

    // Cancel the long run from its page; it shows cancelled.
    const other = await context.newPage();
    await other.goto(slowRun);
    await visit(other, "run-running");
    await other.getByRole("button", { name: "Cancel" }).click();
    await other.locator("#run-state", { hasText: "cancelled" }).waitFor();
    console.log("ok   a long run is cancelled from its page");
    await other.close();

    // The waiting run's page follows it to succeeded without reloading.
    await page.locator("#run-state", { hasText: "succeeded" }).waitFor();
    if (!(await page.evaluate(() => window.__notReloaded === true))) fail("the run page reloaded");
    console.log("ok   the run page reached succeeded live, without reloading");
    await visit(page, "run-succeeded");

    // A failed task and its log line.
    const badRun = await triggerFromForm(page, base, "bad");
    await page.locator("#run-state", { hasText: "failed" }).waitFor();
    await visit(page, "run-failed");
    const firstRow = page.locator("table").nth(1).locator("tbody tr").first();
    if (!(await firstRow.innerText()).includes("failed")) fail("failed tasks are not listed first");
    await firstRow.locator("a").first().click();
    await page.locator("#log", { hasText: "check failed: no such region bad" }).waitFor();
    console.log("ok   a failed task's page shows its log line");
    await visit(page, "task-failed");

    // The pages.
    await page.goto(`${base}/ui/`);
    await visit(page, "pipelines");
    await page.getByRole("link", { name: "demo", exact: true }).first().click();
    await page.locator("svg").first().waitFor();
    await visit(page, "pipeline");
    await page.goto(`${base}/ui/pipelines/demo/run`);
    await visit(page, "run-form");
    await page.goto(`${base}/ui/runs`);
    await page.getByLabel("State").selectOption("failed");
    await page.getByRole("button", { name: "Filter" }).click();
    await page.waitForURL(/status=failed/);
    if (!(await page.locator(`a[href='${new URL(badRun).pathname}']`).count())) fail("the failed run is not under state=failed");
    await page.goto(`${base}/ui/runs`);
    await visit(page, "runs");

    // A resource's provenance, followed back to a source.
    await page.goto(`${base}/ui/resources`);
    await visit(page, "resources");
    await page.getByLabel("Name or hash prefix").fill("loud_row_1");
    await page.getByRole("button", { name: "Search" }).click();
    await page.getByRole("link", { name: "loud_row_1.txt", exact: true }).click();
    await page.locator("h1", { hasText: "loud_row_1.txt" }).waitFor();
    await visit(page, "resource");
    await page.locator("ol.chain").getByRole("link", { name: "row_1.txt", exact: true }).click();
    await page.locator("h1", { hasText: "row_1.txt" }).waitFor();
    const chain = await page.locator("ol.chain").innerText();
    if (!/of step fetch \(source/.test(chain) || !chain.includes("source")) fail(`row_1.txt does not lead to the source: ${chain}`);
    console.log("ok   provenance followed back to the source step");

    // Log out.
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.waitForURL(/\/ui\/login/);
    await page.goto(`${base}/ui/runs`);
    if (!page.url().includes("/ui/login")) fail("after signing out, pages still open");
    console.log("ok   sign out");
    await context.close();

    // A viewer: no Run or Cancel, and a forged POST is refused.
    const viewerContext = await browser.newContext();
    viewerContext.setDefaultTimeout(TIMEOUT);
    const viewer = await viewerContext.newPage();
    await signIn(viewer, base, "viewer");
    if (await viewer.getByRole("link", { name: "Run demo" }).count()) fail("a viewer sees a Run button");
    if (!(await viewer.getByRole("link", { name: "demo", exact: true }).count())) fail("a viewer does not see the pipeline");
    await viewer.goto(usRun);
    if (await viewer.getByRole("button", { name: /Cancel|Run again/ }).count()) fail("a viewer sees run controls");
    const csrf = await viewer.locator("input[name=csrf]").first().inputValue();
    const forged = await viewer.request.post(`${base}/ui/pipelines/demo/runs`,
      { form: { csrf, "param.region": "us" }, maxRedirects: 0 });
    if (forged.status() !== 403) fail(`a viewer's forged POST got ${forged.status()}`);
    console.log("ok   a viewer sees no Run button and a forged POST is 403");
    await viewerContext.close();

    // Without JavaScript the pages read the same.
    const noJs = await browser.newContext({ javaScriptEnabled: false });
    noJs.setDefaultTimeout(TIMEOUT);
    const plain = await noJs.newPage();
    await signIn(plain, base, "viewer");
    await plain.goto(badRun);
    await plain.locator("#run-state", { hasText: "failed" }).waitFor();
    await plain.locator(".error-line").first().waitFor();
    await plain.goto(`${base}/ui/pipelines/demo`);
    await plain.locator("svg").first().waitFor();
    console.log("ok   pages render with JavaScript disabled");
    await noJs.close();
  } finally {
    await browser.close();
  }
}

let code = 0;
try {
  await main();
  console.log("browser tests passed");
} catch (error) {
  console.error(`FAILED: ${error.stack || error}\n--- grit serve log ---\n${serverLog}`);
  code = 1;
} finally {
  if (server && server.exitCode === null) server.kill("SIGTERM");
  await new Promise((ok) => (server && server.exitCode === null ? server.on("exit", ok) : ok()));
  rmSync(work, { recursive: true, force: true });
}
process.exit(code);
