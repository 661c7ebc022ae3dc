// Keeps one debug console open in headless Chromium until SIGTERM/SIGINT, for
// scripts/bench-console. Usage: node scripts/console-viewer.mjs URL TOKEN [APP_ID]
// Prints "ready" once the page's live feed is connected.
import { chromium } from 'playwright-core';

const [url, token, appId = '1'] = process.argv.slice(2);
if (!url || !token) {
  console.error('usage: node scripts/console-viewer.mjs URL TOKEN [APP_ID]');
  process.exit(2);
}
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
await page.goto(`${url}/console`);
await page.fill('#token', token);
await Promise.all([page.waitForURL(`${url}/console`), page.click('button[type=submit]')]);
await page.waitForSelector(`#app option[value="${appId}"]`, { state: 'attached' });
if ((await page.inputValue('#app')) !== appId) await page.selectOption('#app', appId);
await page.waitForSelector('#feed-state[data-state="live"]');
console.log('ready');
const stop = async () => {
  await browser.close().catch(() => {});
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
