// Faults against `lmd-run serve`: node serve-faults.mjs BASE_URL MODEL CHECK
//   stall   a client that asks for a long stream and never reads: the server drops it after its --timeout,
//           cancels the sequence and frees its KV blocks, and answers others meanwhile
//   drain   (the test sends SIGTERM after "streaming" is printed) the stream in flight finishes whole
import OpenAI from 'openai';
import assert from 'node:assert/strict';
import net from 'node:net';

const [base, model, check] = process.argv.slice(2);
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'none', maxRetries: 0 });
const url = new URL(base);
const messages = [{ role: 'user', content: 'Once upon a time' }];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function metric(name) {
	const text = await (await fetch(`${base}/metrics`)).text();
	return +(text.match(new RegExp(`^lmd:${name}(\\{[^}]*\\})? (\\S+)`, 'm'))?.[2] ?? NaN);
}

const checks = {
	async stall() {
		// 8 choices with 20 alternatives a token: megabytes a second, more than any socket buffer holds
		const body = JSON.stringify({ model, messages, max_tokens: 1500, ignore_eos: true, stream: true, n: 8,
			logprobs: true, top_logprobs: 20 });
		const sock = net.connect({ host: url.hostname, port: +url.port });
		await new Promise((r) => sock.on('connect', r));
		sock.pause();  // never read: the window closes, the server's sends block
		sock.write(`POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n` +
			`Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
		let closed = false;
		sock.on('close', () => { closed = true; });
		sock.on('error', () => { closed = true; });
		const before = await metric('request_success_total{model_name="[^"]*",finished_reason="cancelled"}');
		// others are served meanwhile
		for (let i = 0; i < 3; i++) {
			const r = await client.chat.completions.create({ model, messages, max_tokens: 4 });
			assert.ok(r.choices[0].finish_reason);
		}
		let cancelled = before;
		for (let t = 0; t < 150 && cancelled === before; t++) {
			await sleep(100);
			cancelled = await metric('request_success_total{model_name="[^"]*",finished_reason="cancelled"}');
		}
		assert.ok(cancelled > before, 'the stalled stream was cancelled');
		assert.equal(await metric('kv_cache_blocks_used'), 0);
		assert.equal(await metric('num_requests_running'), 0);
		sock.resume();  // what was sent, then the end
		for (let t = 0; t < 50 && !closed; t++) await sleep(100);
		assert.ok(closed, 'the server closed the connection');
	},

	async drain() {
		const s = await client.chat.completions.create({ model, messages, max_tokens: 300, ignore_eos: true,
			stream: true, stream_options: { include_usage: true } });
		let usage = null, finish = null, first = true;
		for await (const c of s) {
			if (first) console.log('streaming');  // the test sends SIGTERM now
			first = false;
			usage = c.usage ?? usage;
			finish = c.choices[0]?.finish_reason ?? finish;
		}
		assert.equal(finish, 'length');
		assert.equal(usage.completion_tokens, 300);
	},
};

try {
	await checks[check]();
	console.log(`ok ${check}`);
} catch (e) {
	console.error(`FAIL ${check}: ${e.stack || e}`);
	process.exit(1);
}
