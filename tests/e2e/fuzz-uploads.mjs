// The page under fuzzed uploads. Every upload path (a model folder with one file mutated, needles JSONL,
// a haystack, a head-score file) gets mutants of the repository's own files, written by
// `cargo run -p headscope-fuzz --example write_uploads` with the stable tests' mutator. Each must end as
// an accepted input or a message in the page: never a panic (which would restart the worker), a page
// error, or a page that stops answering. Accepted needles and haystacks are run (one short test), so
// that what the page accepted goes through the worker too. At the end, with the seed files back, the
// bundled model still runs a sweep in the same page.
//   node fuzz-uploads.mjs DIR        (scripts/web.sh fuzz writes DIR: UPLOAD_MUTANTS per kind)
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { serve, launch, openLab, waitState, labState } from './lib.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const DIR = process.argv[2];

/** Waits until the page is idle (ready or without a model) on two polls in a row; throws after `ms`. */
async function settle(page, ms = 60_000) {
  const started = Date.now();
  let idle = 0;
  while (idle < 2) {
    const state = await page.evaluate(() => document.body.dataset.state);
    idle = state === 'ready' || state === 'no-model' ? idle + 1 : 0;
    if (Date.now() - started > ms) throw new Error(`the page stopped answering (state ${state} for ${ms / 1000} s)`);
    await page.waitForTimeout(100);
  }
}

/** The page's error line, closed before each upload (as a user closes it) so that a new message can be
 * told from an old one; the page empties it when closed. */
const errorText = (page) => page.evaluate(() => document.getElementById('error-text').textContent.trim());
const clearError = (page) => page.evaluate(() => {
  if (!document.getElementById('error').hidden) document.getElementById('error-close').click();
});

async function main() {
  if (!DIR || !fs.existsSync(DIR)) throw new Error('usage: node fuzz-uploads.mjs DIR (a folder written by the write_uploads example)');
  const srv = await serve(path.join(ROOT, 'dist'));
  const { browser, close } = await launch();
  const failures = [];
  const counts = {};
  try {
    const { page, log } = await openLab(browser, srv.url, 'cpu');
    await page.fill('#lengths', '256');
    await page.fill('#depths', '1');
    await page.fill('#max-new', '4');
    // One upload: sets the file, waits for the page, runs a test when `run` and the input was taken,
    // and files the outcome under `kind`.
    const upload = async (kind, input, file, run) => {
      const logged = log.length;
      await clearError(page);
      let outcome;
      try {
        await page.setInputFiles(input, file);
        await page.waitForTimeout(50);
        await settle(page);
        let message = await errorText(page);
        if (!message && run) {
          await page.click('#run');
          // Started (no longer ready) or refused at once, before waiting for it to end.
          await page.waitForFunction(() => document.body.dataset.state !== 'ready'
            || document.getElementById('error-text').textContent.trim() !== '', null, { timeout: 5_000 }).catch(() => {});
          await settle(page, 120_000);
          message = await errorText(page);
        }
        if (message.includes('worker')) throw new Error(`the worker failed: ${message.slice(0, 300)}`);
        outcome = message ? 'refused' : 'accepted';
      } catch (e) {
        outcome = 'stuck';
        failures.push(`${path.relative(DIR, file)}: ${e.message}`);
      }
      const bad = log.slice(logged).filter((l) => l.includes('panicked') || l.includes('[pageerror]') || l.includes('worker was restarted')
        || l.includes('worker failed'));
      if (bad.length) {
        failures.push(`${path.relative(DIR, file)}: ${bad.join(' | ').slice(0, 400)}`);
        await settle(page, 120_000).catch(() => {}); // let a restarted worker come back before the next upload
      }
      counts[kind] ??= { accepted: 0, refused: 0, stuck: 0 };
      counts[kind][outcome] += 1;
    };
    const files = (sub) => fs.readdirSync(path.join(DIR, sub)).sort().map((f) => path.join(DIR, sub, f));
    for (const f of files('scores')) await upload('head scores', '#import-scores', f, false);
    for (const f of files('haystack')) await upload('haystack', '#haystack-file', f, true);
    for (const f of files('needles')) await upload('needles', '#needles-file', f, true);
    // Model folders last: a refused one leaves the page without a model.
    for (const f of files('model')) await upload(`model (${path.basename(f).replace(/-\d+$/, '')})`, '#model-files', f, false);

    for (const [kind, c] of Object.entries(counts)) {
      console.log(`${kind}: ${c.accepted} accepted, ${c.refused} refused with a message, ${c.stuck} stuck`);
      // Any text is a haystack (only an empty one is refused): there the test must have run the mutants.
      if (kind === 'haystack' ? c.accepted === 0 : c.refused === 0) {
        failures.push(`${kind}: no mutant was ${kind === 'haystack' ? 'run' : 'refused'}, so the test did not reach the code under test`);
      }
    }

    // The same page, seed inputs back, runs a sweep on the bundled model.
    await clearError(page);
    await page.setInputFiles('#needles-file', path.join(ROOT, 'public/needles/heldout.jsonl'));
    await page.setInputFiles('#haystack-file', path.join(ROOT, 'public/haystacks/village.txt'));
    await page.click('#load-bundled');
    await waitState(page, ['ready'], 120_000, log).catch((e) => failures.push(`the bundled model did not load again: ${e.message}`));
    await page.click('#run');
    await page.waitForFunction(() => document.body.dataset.state !== 'ready', null, { timeout: 5_000 }).catch(() => {});
    await settle(page, 300_000).catch((e) => failures.push(e.message));
    const s = await labState(page);
    if (!(s.sweep && s.tests.length >= 1)) failures.push(`the final sweep did not run: ${await errorText(page)}`);
    else console.log(`final sweep on the bundled model: ${s.tests.length} tests`);
  } finally {
    await close();
    srv.close();
  }
  if (failures.length) {
    console.log(`\n${failures.length} upload(s) failed:\n${failures.join('\n')}`);
    process.exit(1);
  }
  console.log('\nno fuzzed upload panicked, broke the page or stopped it');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
