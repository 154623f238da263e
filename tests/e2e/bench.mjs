// Benchmark of the lab page in headless Chromium: decode tokens/s and the time of a sweep (by default
// the page's default sweep: lengths 256:1024:3 x 5 depths, 32 new tokens, the San Francisco needle in
// the KJV haystack) on WebGPU and on the WebAssembly CPU path, side by side.
//
//   node tests/e2e/bench.mjs [--lengths 256:1024:3] [--depths 5] [--max-new 32]
//
// Headless Chromium's WebGPU here is SwiftShader, a Vulkan implementation on the CPU: its figures are
// CPU figures, not those of a real GPU.
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { serve, launch, openLab, runSweep, labState } from './lib.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : dflt;
};
const sweep = { lengths: arg('lengths', '256:1024:3'), depths: Number(arg('depths', '5')), maxNew: Number(arg('max-new', '32')) };

const srv = await serve(process.env.HEADSCOPE_DIST ?? path.join(ROOT, 'dist'));
const { browser, close } = await launch();
const rows = [];
try {
  for (const backend of ['gpu', 'cpu']) {
    const t0 = Date.now();
    const lab = await openLab(browser, srv.url, backend);
    const model = (await labState(lab.page)).model;
    const pageLoad = (Date.now() - t0) / 1000;
    if (backend === 'gpu' && !model.gpu) {
      rows.push({ backend: `WebGPU unavailable (${model.fallback_reason ?? 'no adapter'})` });
      await lab.page.close();
      continue;
    }
    const s = await runSweep(lab.page, { ...sweep, log: lab.log, timeout: 3_600_000 });
    const passed = s.tests.filter((t) => t.recall >= 0.5).length;
    rows.push({
      backend: model.backend,
      load: model.load_seconds,
      page: pageLoad,
      sweep: s.sweep.seconds,
      decode: s.sweep.decode_tokens_per_second,
      prefill: s.sweep.prefill_tokens_per_second,
      tests: s.sweep.tests,
      passed,
    });
    await lab.page.close();
  }
} finally {
  await close();
  srv.close();
}

let chromium = '';
try {
  chromium = execFileSync(process.env.CHROMIUM ?? '/usr/bin/chromium', ['--version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
} catch {
  chromium = 'chromium';
}
console.log(`\nHeadScope lab benchmark: ${chromium}, headless, bundled lab model`);
console.log(`sweep: lengths ${sweep.lengths} x ${sweep.depths} depths, ${sweep.maxNew} new tokens, San Francisco needle, KJV John haystack\n`);
const header = ['backend', 'model load s', 'sweep s', 'decode tok/s', 'prefill tok/s', 'tests passed'];
const table = rows.map((r) => (r.sweep === undefined
  ? [r.backend, '-', '-', '-', '-', '-']
  : [r.backend, r.load.toFixed(2), r.sweep.toFixed(1), r.decode.toFixed(1), r.prefill.toFixed(0), `${r.passed}/${r.tests}`]));
const widths = header.map((h, i) => Math.max(h.length, ...table.map((r) => String(r[i]).length)));
const line = (cells) => `| ${cells.map((c, i) => String(c).padEnd(widths[i])).join(' | ')} |`;
console.log(line(header));
console.log(`|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`);
for (const r of table) console.log(line(r));
