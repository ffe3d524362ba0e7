// The chat page (share/web) in a real browser: Debian's chromium driven by playwright-core, headless,
// against `lmd-run serve` whose model speaks scripted answers (LMD_TEST_SCRIPT, see t/README).
//   node web-chat.mjs script CHECK    prints the script the server needs for CHECK (its answers, in order)
//   node web-chat.mjs BASE chat       load, stream, tokens/s, stop, second turn, <script> as text, new chat
//   node web-chat.mjs BASE key KEY    a server with --api-keys: the key field, a wrong key, the right one
//   node web-chat.mjs BASE stale KEY  the page's first /v1/models answers (a 401) come late, after an answer
//                                     streamed with the right key: the page keeps what it last learnt
//   node web-chat.mjs BASE down PID   the server dies (kill PID): a clear message
// Exits 1 (with what differed) when a check fails.
import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const FIRST = 'Hello! Here is **bold**, `code` and a list:\n\n- one\n- two\n\nThe end.';
const LONG = 'Counting: ' + Array.from({ length: 300 }, (_, i) => i + 1).join(' ') + '.';
const EVIL = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"> & <b>not bold</b>';
const SCRIPTS = {
	chat: [{ text: FIRST, delay_ms: 40 }, { text: LONG, delay_ms: 40 }, { text: EVIL }, { text: 'Fresh start.' }],
	key: [{ text: 'The key worked.' }],
	stale: [{ text: 'Answered first.' }],
};

const [base, check, arg] = process.argv.slice(2);
if (base === 'script') {
	process.stdout.write(JSON.stringify(SCRIPTS[check] || []) + '\n');
	process.exit(0);
}

const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'lmd-chromium-'));
const ctx = await chromium.launchPersistentContext(profile, {
	executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
	headless: true,
	args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
		'--disable-component-update', '--disable-sync'],
});
const page = ctx.pages()[0] || (await ctx.newPage());
const outside = [], bodies = [], errors = [];
page.on('request', (r) => {
	if (!r.url().startsWith(base + '/')) outside.push(r.url());
	if (r.url().endsWith('/v1/chat/completions')) bodies.push(JSON.parse(r.postData()));
});
page.on('pageerror', (e) => errors.push(e.message));
page.on('console', (m) => m.type() === 'error' && !/Failed to load resource/.test(m.text()) && errors.push(m.text()));

const last = () => page.locator('.msg.assistant').last();
const idle = () => page.waitForFunction(() => !document.getElementById('send').disabled, null, { timeout: 60000 });

async function send(text) {
	await page.fill('#input', text);
	await page.press('#input', 'Enter');
}

// Record every length the last answer's text goes through while it streams.
async function watch() {
	await page.evaluate(() => {
		window.__lengths = [];
		const box = document.getElementById('messages');
		new MutationObserver(() => {
			const m = box.querySelectorAll('.msg.assistant');
			if (m.length) window.__lengths.push(m[m.length - 1].querySelector('.body').textContent.length);
		}).observe(box, { childList: true, subtree: true, characterData: true });
	});
}

const checks = {
	async chat() {
		await page.goto(base + '/');
		await page.waitForFunction(() => document.getElementById('model').textContent.startsWith('model: '));
		await page.fill('#system', 'You are terse.');
		await page.fill('#temperature', '0.5');
		await page.fill('#max-tokens', '600');
		await watch();
		await send('Hi');
		await idle();
		// streamed: the text grew through many lengths before the end, and Markdown became elements
		const lengths = await page.evaluate(() => [...new Set(window.__lengths)]);
		const final = (await last().locator('.body').textContent()).length;
		assert.ok(lengths.filter((n) => n > 0 && n < final).length >= 5, `streamed lengths ${lengths}`);
		assert.equal(await last().locator('strong').textContent(), 'bold');
		assert.equal(await last().locator('code').textContent(), 'code');
		assert.equal(await last().locator('li').count(), 2);
		assert.match(await page.textContent('#speed'), /tokens\/s/);
		assert.equal(bodies[0].messages[0].role, 'system');
		assert.equal(bodies[0].messages[0].content, 'You are terse.');
		assert.equal(bodies[0].temperature, 0.5);
		assert.equal(bodies[0].max_tokens, 600);
		assert.equal(bodies[0].stream, true);

		// stop in the middle: the text stops growing, the answer is marked and kept
		await send('Count to 300.');
		await page.waitForFunction(() => {
			const m = document.querySelectorAll('.msg.assistant');
			return m[m.length - 1].textContent.includes('Counting: 1 2 3 4 5');
		}, null, { timeout: 60000 });
		await page.click('#stop');
		await idle();
		const stopped = await last().locator('.body').textContent();
		await page.waitForTimeout(600);
		assert.equal(await last().locator('.body').textContent(), stopped, 'the text grew after Stop');
		assert.ok(stopped.length < LONG.length, 'stopped before the end');
		assert.ok(await last().evaluate((e) => e.classList.contains('stopped')));
		assert.match(await page.textContent('#speed'), /stopped/);

		// a second turn carries the history, the stopped answer included; a <script> answer is text
		await send('And now?');
		await idle();
		const h = bodies[2].messages.map((m) => m.role).join(',');
		assert.equal(h, 'system,user,assistant,user,assistant,user');
		assert.equal(bodies[2].messages[4].content.trim(), stopped.trim());
		assert.equal((await last().locator('.body').textContent()).trim(), EVIL);
		assert.equal(await page.locator('#messages script, #messages img, #messages b').count(), 0);
		assert.equal(await page.evaluate(() => window.__pwned), undefined);

		// new chat: empty page, no history sent
		await page.click('#new-chat');
		assert.equal(await page.locator('.msg').count(), 0);
		await send('Again');
		await idle();
		assert.equal(bodies[3].messages.map((m) => m.role).join(','), 'system,user');
		assert.equal((await last().locator('.body').textContent()).trim(), 'Fresh start.');
		assert.equal((await page.textContent('#status')).trim(), '');
	},

	async key() {
		await page.goto(base + '/');
		await page.waitForSelector('#key-box:not([hidden])');
		assert.match(await page.textContent('#status'), /API key/);
		await page.fill('#api-key', 'wrong');
		await send('Hi');
		await idle();
		assert.match(await page.textContent('#status'), /refused/);
		assert.equal(await page.inputValue('#input'), 'Hi', 'the question is given back');
		await page.fill('#api-key', arg);
		await page.dispatchEvent('#api-key', 'change');
		await page.waitForFunction(() => document.getElementById('model').textContent.startsWith('model: '));
		await page.press('#input', 'Enter');
		await idle();
		assert.equal((await last().locator('.body').textContent()).trim(), 'The key worked.');
	},

	async stale() {
		const held = [];  // the /v1/models requests, answered only once the chat's answer is in
		await page.route('**/v1/models', (route) => held.push(route));
		await page.goto(base + '/');
		await send('Hi');  // no key yet: the send's own 401 asks for it
		await idle();
		assert.match(await page.textContent('#status'), /API key/);
		await page.fill('#api-key', arg);
		await page.dispatchEvent('#api-key', 'change');
		await page.press('#input', 'Enter');
		await idle();
		assert.equal((await last().locator('.body').textContent()).trim(), 'Answered first.');
		assert.equal((await page.textContent('#status')).trim(), '');
		assert.ok(held.length >= 2, `the page asked for /v1/models ${held.length} time(s)`);
		for (const r of held) await r.continue();  // the first answers 401 (no key then), late
		await page.unroute('**/v1/models');
		await page.waitForTimeout(500);
		assert.equal((await page.textContent('#status')).trim(), '', 'a stale 401 changed the status');
		assert.equal(await page.evaluate(() => document.activeElement.id), 'input', 'a stale 401 took the focus');
	},

	async down() {
		await page.goto(base + '/');
		await page.waitForFunction(() => document.getElementById('model').textContent.startsWith('model: '));
		process.kill(Number(arg), 'SIGKILL');
		await new Promise((r) => setTimeout(r, 300));
		await send('Anyone there?');
		await idle();
		assert.match(await page.textContent('#status'), /Cannot reach the server/);
		assert.equal(await page.locator('.msg').count(), 0);
	},
};

let rc = 0;
try {
	await checks[check]();
	assert.deepEqual(outside, [], 'requests that left the server');
	assert.deepEqual(errors, [], 'errors in the page');
	console.log(`web ${check}: ok`);
} catch (e) {
	console.log(`web ${check}: ${e.stack || e}`);
	console.log(`page errors: ${JSON.stringify(errors)}; status: ${await page.textContent('#status').catch(() => '?')}`);
	rc = 1;
}
await ctx.close();
fs.rmSync(profile, { recursive: true, force: true });
process.exit(rc);
