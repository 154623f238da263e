// The teacher's bundle (`scripts/web.sh bundle`): served from a subfolder of a static host, as a
// school's web space would, the page loads the bundled model and runs a sweep, and the zip holds the
// same files as the folder.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { serve, launch, openLab, runSweep } from './lib.mjs';

const root = path.resolve(process.argv[2] ?? 'bundle');
const folder = path.join(root, 'headscope-lab');
let failures = 0;
function check(ok, what, detail = '') {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}${detail ? `: ${detail}` : ''}`);
  if (!ok) failures += 1;
}

const files = (dir) => fs.readdirSync(dir, { recursive: true })
  .filter((f) => fs.statSync(path.join(dir, f)).isFile()).map((f) => `headscope-lab/${f}`).sort();
const zipped = execFileSync('python3', ['-c',
  'import sys, zipfile; print("\\n".join(zipfile.ZipFile(sys.argv[1]).namelist()))', path.join(root, 'headscope-lab.zip')],
{ encoding: 'utf8' })
  .split('\n').filter((l) => l && !l.endsWith('/')).sort();
check(JSON.stringify(zipped) === JSON.stringify(files(folder)), 'the zip holds the folder', `${zipped.length} files`);
const html = fs.readFileSync(path.join(folder, 'index.html'), 'utf8');
const absolute = [...html.matchAll(/(?:href|src)="(\/[^"]*)"|from '(\/[^']*)'/g)].map((m) => m[1] ?? m[2]);
check(absolute.length === 0, 'every path in index.html is relative', absolute.join(', '));

const server = await serve(root);
const { browser, close } = await launch();
try {
  const { page, log } = await openLab(browser, `${server.url}headscope-lab/`, 'cpu');
  const s = await runSweep(page, { lengths: '256', depths: 2, maxNew: 16, log });
  check(s.tests.length === 2, 'a sweep runs from the subfolder', `${s.tests.length} tests`);
  check(server.requests('GET', '/headscope-lab/models/lab/model.safetensors') >= 1, 'the model came from the subfolder');
} finally {
  await close();
  server.close();
}
if (failures > 0) { console.log(`${failures} check(s) failed`); process.exit(1); }
console.log('the bundle works from a subfolder');
