// Load and faults against `lmd-run serve`: node serve-load.mjs BASE_URL MODEL SERVER_PID [REQUESTS] [CONCURRENCY]
// REQUESTS (default 400) at CONCURRENCY (default 32): a tenth malformed, a quarter of the streams cut by the
// client after their first chunk, the rest streamed or not, chat or completion, through the official client.
// Prints one JSON line: status counts, the server's resident memory after request 100 and at the end, and
// the KV blocks /metrics says are in use once the server is idle. Exits 1 on a 5xx or a wrong answer.
import OpenAI from 'openai';
import { readFileSync } from 'node:fs';

const [base, model, pid, total = '400', conc = '32'] = process.argv.slice(2);
const N = +total, C = +conc;
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'none', maxRetries: 0, timeout: 60000 });
const status = {};
const problems = [];
let done = 0, rss100 = 0, cuts = 0;

const rss = () => +readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/)[1];
const count = (s) => { status[s] = (status[s] ?? 0) + 1; };

// Malformed requests of several kinds; each must be answered with a 4xx.
const malformed = [
	'{', '[]', '{"messages": "hi"}', '{"messages": [{"role": "x", "content": "y"}]}',
	'{"messages": [{"role": "user", "content": "y"}], "max_tokens": -1}',
	'{"messages": [{"role": "user", "content": "y"}], "temperature": "warm"}',
	'{"prompt": {"a": 1}}', '{"messages": [{"role": "user", "content": "y"}], "n": 0}',
];

async function one(i) {
	const messages = [{ role: 'user', content: `Story ${i}: once upon a time` }];
	const temperature = i % 3 ? 0 : 0.9;
	if (i % 10 === 0) {
		const body = malformed[(i / 10) % malformed.length];
		const path = body.includes('prompt') ? '/v1/completions' : '/v1/chat/completions';
		const r = await fetch(`${base}${path}`, { method: 'POST', body, headers: { 'content-type': 'application/json' } });
		count(r.status);
		await r.text();
		if (r.status < 400 || r.status >= 500) problems.push(`malformed ${body}: ${r.status}`);
		return;
	}
	const stream = i % 2 === 1;
	if (stream && i % 4 === 1) {  // a quarter of the streams: cut after the first chunk
		const s = await client.chat.completions.create({ model, messages, max_tokens: 64, ignore_eos: true,
			temperature, stream: true });
		for await (const c of s) {
			void c;
			break;  // leaving the loop aborts the request: the connection closes
		}
		count('cut');
		cuts++;
		return;
	}
	try {
		if (i % 5 === 2) {
			const r = await client.completions.create({ model, prompt: `Story ${i}`, max_tokens: 8, temperature, stream });
			if (stream) for await (const c of r) void c;
		} else {
			const r = await client.chat.completions.create({ model, messages, max_tokens: 8 + (i % 8), temperature,
				stream, stream_options: stream ? { include_usage: true } : undefined });
			if (stream) {
				let usage = null;
				for await (const c of r) usage = c.usage ?? usage;
				if (!usage || usage.completion_tokens < 1) problems.push(`request ${i}: no usage at the end of the stream`);
			} else if (r.usage.completion_tokens < 1) {
				problems.push(`request ${i}: no tokens`);
			}
		}
		count(200);
	} catch (e) {
		count(e.status ?? 'error');
		problems.push(`request ${i}: ${e.status} ${e.message}`);
	}
}

let next = 0;
async function worker() {
	while (next < N) {
		const i = next++;
		await one(i);
		if (++done === 100) rss100 = rss();
	}
}
await Promise.all(Array.from({ length: C }, worker));

// The server is idle once its queue drains: then no request holds a KV block.
let metrics = '';
const gauge = (name) => +(metrics.match(new RegExp(`^lmd:${name}\\{[^}]*\\} (\\S+)`, 'm'))?.[1] ?? NaN);
for (let t = 0; t < 100; t++) {
	metrics = await (await fetch(`${base}/metrics`)).text();
	if (gauge('num_requests_running') === 0 && gauge('num_requests_waiting') === 0) break;
	await new Promise((r) => setTimeout(r, 100));
}
const rssEnd = rss();
const out = { status, cuts, rss100, rssEnd, growth: (rssEnd - rss100) / rss100,
	blocksUsed: gauge('kv_cache_blocks_used'), running: gauge('num_requests_running'),
	cancelled: +(metrics.match(/finished_reason="cancelled"\} (\d+)/)?.[1] ?? NaN), problems };
console.log(JSON.stringify(out));
if (problems.length || Object.keys(status).some((s) => +s >= 500)) process.exit(1);
