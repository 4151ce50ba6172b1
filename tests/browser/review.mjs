// Drives the review page in Debian's headless chromium with playwright-core.
// Run by crates/cli/tests/review.rs, which makes the cases, starts
// `delineate review`, and checks what this script reports and what the page
// wrote. Environment:
//   REVIEW_URL   page of a case with three proposals (link printed by delineate review)
//   FP_ID        the false positive's lesion id; FP_SLICE its axial slice (0-based)
//   SHOT         where to save the screenshot
//   TIMING_URL   (optional) a case with ten proposals: keyboard triage is timed
// Prints one JSON object.
import { chromium } from "playwright-core";

const env = process.env;
const out = {};
const browser = await chromium.launch({
  executablePath: env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1440, height: 860 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
  page.on("response", (r) => r.status() >= 400 && errors.push(`${r.status()} ${r.url()}`));
  await page.goto(env.REVIEW_URL);
  await page.waitForFunction(() => document.querySelectorAll("#lesions li").length > 0);
  out.token_removed_from_url = !page.url().includes("token");
  out.list = await page.$$eval("#lesions li", (els) =>
    els.map((e) => ({ id: +e.dataset.id, p: +e.dataset.p, state: e.dataset.state, text: e.innerText })));
  // The first lesion is selected and drawn at start.
  await page.waitForFunction(() => document.querySelector("#axial").dataset.slice !== undefined);
  out.initial_slice = +(await page.$eval("#axial", (c) => c.dataset.slice));
  // The reviewer is the signed-in account, shown and not editable.
  out.reviewer_shown = await page.inputValue("#reviewer");
  out.reviewer_readonly = await page.$eval("#reviewer", (e) => e.readOnly);

  // Click the false positive: the views jump to it; reject it with the key.
  const fp = env.FP_ID;
  await page.click(`#lesions li[data-id="${fp}"]`);
  await page.waitForFunction((s) => document.querySelector("#axial").dataset.slice === s, env.FP_SLICE, { timeout: 10000 })
    .catch(() => {});
  out.slice_after_click = +(await page.$eval("#axial", (c) => c.dataset.slice));
  out.selected_after_click = +(await page.$eval("#lesions li.selected", (e) => e.dataset.id));
  await page.keyboard.press("r");
  await page.waitForSelector(`#lesions li[data-id="${fp}"][data-state="rejected"]`);
  // Accept the others, each selected by a click.
  for (const l of out.list.filter((l) => String(l.id) !== fp)) {
    await page.click(`#lesions li[data-id="${l.id}"]`);
    await page.keyboard.press("a");
    await page.waitForSelector(`#lesions li[data-id="${l.id}"][data-state="accepted"]`);
  }
  await page.waitForFunction(() => /saved: 3 of 3/.test(document.querySelector("#status").textContent));
  await page.keyboard.press("e");
  await page.waitForFunction(() => document.querySelector("#status").dataset.exported !== undefined, null, { timeout: 30000 });
  out.exported = +(await page.$eval("#status", (e) => e.dataset.exported));
  out.states = await page.$$eval("#lesions li", (els) => els.map((e) => [+e.dataset.id, e.dataset.state]));
  // The screenshot: the first accepted lesion selected, contours on.
  await page.click(`#lesions li[data-id="${out.list[0].id}"]`);
  await page.waitForTimeout(500);
  await page.screenshot({ path: env.SHOT });

  if (env.TIMING_URL) {
    // Keyboard triage of ten proposals: each key press decides one lesion
    // and moves to the next, whose three slices must be drawn before the
    // next key (what a reader waits for).
    const p2 = await browser.newPage({ viewport: { width: 1440, height: 860 } });
    await p2.goto(env.TIMING_URL);
    await p2.waitForFunction(() => document.querySelectorAll("#lesions li").length === 10);
    const centres = await p2.evaluate(async () => (await (await fetch("api/meta", {
      headers: { Authorization: "Bearer " + sessionStorage.getItem("delineate-token") } })).json()).lesions.map((l) => l.centre));
    const t0 = Date.now();
    const per = [];
    for (let n = 0; n < 10; n++) {
      const t = Date.now();
      await p2.keyboard.press(n % 3 === 2 ? "r" : "a");
      const next = centres[Math.min(n + 1, 9)];
      await p2.waitForFunction(([k, j, i]) => {
        const s = (id) => document.querySelector(id).dataset.slice;
        return s("#axial") === String(k) && s("#coronal") === String(j) && s("#sagittal") === String(i);
      }, [next[2], next[1], next[0]], { timeout: 10000 });
      per.push(Date.now() - t);
    }
    await p2.waitForFunction(() => /saved: 10 of 10/.test(document.querySelector("#status").textContent));
    await p2.keyboard.press("e");
    await p2.waitForFunction(() => document.querySelector("#status").dataset.exported !== undefined, null, { timeout: 30000 });
    out.timing = { ten_lesions_ms: Date.now() - t0, per_key_ms: per, exported: +(await p2.$eval("#status", (e) => e.dataset.exported)) };
  }
  out.errors = errors;
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
