// The official openai client against `lmd-run serve`: node serve-api.mjs BASE_URL MODEL CHECK [ARG]
// (t/lmd-run-serve.bats runs one CHECK per test). Prints what it compared; exits 1 on a mismatch.
import OpenAI from 'openai';
import assert from 'node:assert/strict';

const [base, model, check, arg] = process.argv.slice(2);
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: process.env.LMD_KEY || 'none', maxRetries: 0 });
const hello = [{ role: 'system', content: 'You tell short stories.' }, { role: 'user', content: 'Once upon a time, a little cat' }];

async function chat(extra) {
	return client.chat.completions.create({ model, messages: hello, max_tokens: 24, temperature: 0, ...extra });
}

async function collect(stream) {
	const chunks = [];
	for await (const c of stream) chunks.push(c);
	return chunks;
}

// The text of each choice of a stream, and its finish reasons.
function join(chunks, field) {
	const text = [], finish = [];
	for (const c of chunks)
		for (const ch of c.choices) {
			const piece = field === 'text' ? ch.text : ch.delta.content;
			text[ch.index] = (text[ch.index] ?? '') + (piece ?? '');
			if (ch.finish_reason) finish[ch.index] = ch.finish_reason;
		}
	return { text, finish };
}

function usageOk(u) {
	assert.ok(u.prompt_tokens > 0 && u.completion_tokens > 0, JSON.stringify(u));
	assert.equal(u.total_tokens, u.prompt_tokens + u.completion_tokens);
}

// An error of the client's class with this status.
async function rejects(promise, cls, status) {
	try {
		await promise;
	} catch (e) {
		assert.ok(e instanceof cls, `expected ${cls.name}, got ${e.constructor.name}: ${e.message}`);
		assert.equal(e.status, status);
		assert.ok(e.error?.message || e.message, 'an error message');
		return e;
	}
	assert.fail(`expected ${cls.name}`);
}

const checks = {
	async models() {
		const list = await client.models.list();
		assert.deepEqual(list.data.map((m) => m.id), [model]);
		assert.equal(list.data[0].object, 'model');
	},

	async chat() {
		const r = await chat();
		assert.match(r.id, /^chatcmpl-/);
		assert.equal(r.object, 'chat.completion');
		assert.equal(r.choices.length, 1);
		assert.equal(r.choices[0].message.role, 'assistant');
		assert.ok(r.choices[0].message.content.length > 0);
		assert.ok(['stop', 'length'].includes(r.choices[0].finish_reason));
		usageOk(r.usage);
		assert.ok(r.usage.completion_tokens <= 24);
		console.log(JSON.stringify(r.choices[0].message.content));
	},

	// Streamed: the same text as not streamed; the role first, one id, usage last when asked.
	async 'chat-stream'() {
		const whole = await chat();
		const chunks = await collect(await chat({ stream: true, stream_options: { include_usage: true } }));
		assert.equal(chunks[0].choices[0].delta.role, 'assistant');
		assert.ok(chunks.slice(1).every((c) => !c.choices[0]?.delta?.role), 'role only in the first chunk');
		assert.ok(chunks.every((c) => c.id === chunks[0].id && c.object === 'chat.completion.chunk'));
		const last = chunks.at(-1);
		assert.deepEqual(last.choices, []);
		assert.deepEqual(last.usage, whole.usage);
		assert.ok(chunks.slice(0, -1).every((c) => c.usage === null), 'usage null before the last chunk');
		const { text, finish } = join(chunks, 'content');
		assert.equal(text[0], whole.choices[0].message.content);
		assert.equal(finish[0], whole.choices[0].finish_reason);
		// without include_usage: no usage chunk
		const plain = await collect(await chat({ stream: true }));
		assert.ok(plain.every((c) => c.choices.length === 1 && c.usage === undefined));
	},

	async completions() {
		const prompt = 'Once upon a time';
		const r = await client.completions.create({ model, prompt, max_tokens: 12, temperature: 0 });
		assert.equal(r.object, 'text_completion');
		usageOk(r.usage);
		const text = r.choices[0].text;
		assert.ok(text.length > 0);
		const chunks = await collect(await client.completions.create({ model, prompt, max_tokens: 12, temperature: 0,
			stream: true, stream_options: { include_usage: true } }));
		assert.equal(join(chunks, 'text').text[0], text);
		assert.deepEqual(chunks.at(-1).usage, r.usage);
		const echo = await client.completions.create({ model, prompt, max_tokens: 12, temperature: 0, echo: true });
		assert.equal(echo.choices[0].text, prompt + text);
		const two = await client.completions.create({ model, prompt: [prompt, 'The dog'], max_tokens: 6, temperature: 0 });
		assert.deepEqual(two.choices.map((c) => c.index), [0, 1]);
		assert.equal(two.choices[0].text, (await client.completions.create({ model, prompt, max_tokens: 6,
			temperature: 0 })).choices[0].text);
		console.log(JSON.stringify(text));
	},

	// n: 2 choices, each its own stream of chunks; the usage counts both.
	async n2() {
		const r = await chat({ n: 2, temperature: 1, seed: 7 });
		assert.deepEqual(r.choices.map((c) => c.index), [0, 1]);
		usageOk(r.usage);
		const chunks = await collect(await chat({ n: 2, temperature: 1, seed: 7, stream: true,
			stream_options: { include_usage: true } }));
		const { text } = join(chunks, 'content');
		assert.deepEqual(text, r.choices.map((c) => c.message.content));
		assert.deepEqual(chunks.at(-1).usage, r.usage);
		assert.notEqual(r.choices[0].message.content, r.choices[1].message.content, 'two choices, two texts');
	},

	// A stop string cut from the middle of the greedy text (several tokens long): the text ends before it.
	async stop() {
		const full = (await chat({ max_tokens: 48, ignore_eos: true })).choices[0].message.content;
		const at = Math.floor(full.length / 2), stop = full.slice(at, at + 6);
		const before = full.slice(0, full.indexOf(stop));
		for (const stream of [false, true]) {
			const req = { max_tokens: 48, ignore_eos: true, stop: ['@@never@@', stop] };
			let text, finish;
			if (stream) ({ text: [text], finish: [finish] } = join(await collect(await chat({ ...req, stream })), 'content'));
			else ({ message: { content: text }, finish_reason: finish } = (await chat(req)).choices[0]);
			assert.equal(text, before, `stop ${JSON.stringify(stop)} stream ${stream}`);
			assert.equal(finish, 'stop');
		}
		console.log(JSON.stringify({ stop, before }));
	},

	async seed() {
		const a = await chat({ temperature: 1, seed: 1234, max_tokens: 32 });
		const b = await chat({ temperature: 1, seed: 1234, max_tokens: 32 });
		const c = await chat({ temperature: 1, seed: 4321, max_tokens: 32 });
		assert.equal(a.choices[0].message.content, b.choices[0].message.content);
		assert.notEqual(a.choices[0].message.content, c.choices[0].message.content);
		const s = join(await collect(await chat({ temperature: 1, seed: 1234, max_tokens: 32, stream: true })), 'content');
		assert.equal(s.text[0], a.choices[0].message.content);
	},

	// Greedy: each token is the best of its top_logprobs; log-probabilities are <= 0, sorted, and sum below 1.
	async logprobs() {
		const r = await chat({ logprobs: true, top_logprobs: 3, max_tokens: 12, ignore_eos: true });
		const lp = r.choices[0].logprobs.content;
		assert.equal(lp.length, r.usage.completion_tokens);
		for (const t of lp) {
			assert.ok(t.logprob <= 0);
			assert.equal(t.top_logprobs.length, 3);
			assert.equal(t.top_logprobs[0].token, t.token);
			assert.ok(Math.abs(t.top_logprobs[0].logprob - t.logprob) < 1e-6);
			for (let k = 1; k < 3; k++) assert.ok(t.top_logprobs[k].logprob <= t.top_logprobs[k - 1].logprob);
			assert.ok(t.top_logprobs.reduce((s, x) => s + Math.exp(x.logprob), 0) <= 1 + 1e-5);
			assert.deepEqual(t.bytes, [...Buffer.from(t.token, 'utf8')]);
		}
		const special = /<\/?s>/g;  // lmd-tiny's BOS and EOS: in the tokens, not in the text (skip_special_tokens)
		assert.equal(lp.map((t) => t.token).join('').replace(special, '').trimStart(),
			r.choices[0].message.content.trimStart());
		// streamed: the same entries, spread over the chunks
		const chunks = await collect(await chat({ logprobs: true, top_logprobs: 3, max_tokens: 12, ignore_eos: true,
			stream: true }));
		const slp = chunks.flatMap((c) => c.choices[0]?.logprobs?.content ?? []);
		assert.deepEqual(slp, lp);
		// sampled: the chosen token's log-probability is the model's, whatever the temperature
		const s = await chat({ logprobs: true, max_tokens: 8, temperature: 0.8, seed: 3, ignore_eos: true });
		assert.equal(s.choices[0].logprobs.content.length, 8);
		assert.ok(s.choices[0].logprobs.content.every((t) => t.logprob <= 0 && t.top_logprobs.length === 0));
		// the completion API's shape
		const c = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 6, temperature: 0,
			logprobs: 2, ignore_eos: true });
		const l = c.choices[0].logprobs;
		assert.equal(l.tokens.length, 6);
		assert.equal(l.tokens.join(''), c.choices[0].text);
		assert.ok(l.top_logprobs.every((o) => Object.keys(o).length <= 2));
		assert.deepEqual(l.text_offset[0], 0);
	},

	// Greedy chat over HTTP equals `lmd-run generate` on the same messages (the text is in ARG).
	async 'same-as-generate'() {
		const r = await chat({ max_tokens: 32, ignore_eos: true });
		assert.equal(r.choices[0].message.content, arg);
		console.log(JSON.stringify(arg));
	},

	async 'bad-requests'() {
		const bad = [
			{ messages: undefined },
			{ messages: [] },
			{ messages: [{ role: 'wizard', content: 'hi' }] },
			{ messages: [{ role: 'user', content: 42 }] },
			{ messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'x' } }] }] },
			{ temperature: 'hot' },
			{ temperature: 5 },
			{ top_p: 0 },
			{ max_tokens: 0 },
			{ max_tokens: 1e6 },
			{ n: 0 },
			{ n: 1000 },
			{ top_logprobs: 3 },
			{ logprobs: true, top_logprobs: 99 },
			{ stop: [1, 2] },
			{ seed: 'x' },
			{ presence_penalty: 3 },
			{ stream_options: 'yes', stream: true },
		];
		for (const b of bad) {
			const e = await rejects(chat(b), OpenAI.BadRequestError, 400);
			assert.equal(e.type, 'invalid_request_error', JSON.stringify(b));
		}
		// too long for the session: the error names both counts
		const e = await rejects(chat({ max_tokens: 1 << 20 }), OpenAI.BadRequestError, 400);
		assert.match(e.message, /max_tokens/);
		const long = await rejects(client.completions.create({ model, prompt: 'word '.repeat(5000), max_tokens: 10 }),
			OpenAI.BadRequestError, 400);
		assert.match(long.message, /\d+ tokens.*session length \d+/);
		await rejects(client.completions.create({ model, prompt: [999999999] }), OpenAI.BadRequestError, 400);
		const nf = await rejects(client.chat.completions.create({ model: 'no-such-model', messages: hello }),
			OpenAI.NotFoundError, 404);
		assert.equal(nf.code, 'model_not_found');
		// below the client: bad JSON, unknown path, wrong method, a body too large
		const post = (path, body, headers = {}) => fetch(`${base}${path}`, { method: 'POST', body,
			headers: { 'content-type': 'application/json', authorization: `Bearer ${process.env.LMD_KEY || 'none'}`, ...headers } });
		for (const body of ['{', 'null', '[1]', '{"messages": [{"role": "user", "content": "x"}]', '\u0000'])
			assert.equal((await post('/v1/chat/completions', body)).status, 400, body);
		const j = await (await post('/v1/chat/completions', '{')).json();
		assert.deepEqual(Object.keys(j.error).sort(), ['code', 'message', 'param', 'type']);
		assert.equal((await post('/v1/nothing', '{}')).status, 404);
		assert.equal((await fetch(`${base}/v1/chat/completions`)).status, 405);
		assert.equal((await post('/v1/chat/completions', 'x'.repeat(9 << 20))).status, 413);
	},

	async 'wrong-key'() {
		const bad = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'wrong', maxRetries: 0 });
		await rejects(bad.models.list(), OpenAI.AuthenticationError, 401);
		await rejects(bad.chat.completions.create({ model, messages: hello }), OpenAI.AuthenticationError, 401);
		assert.equal((await fetch(`${base}/v1/models`)).status, 401);
		assert.equal((await fetch(`${base}/health`)).status, 200);
		const good = await client.models.list();
		assert.equal(good.data[0].id, model);
	},

	// Two requests at once with room for one: the second gets 429 and Retry-After.
	async 'queue-full'() {
		const slow = chat({ max_tokens: 400, ignore_eos: true, stream: true });
		const s = await slow;
		const it = s[Symbol.asyncIterator]();
		await it.next();
		const r = await fetch(`${base}/v1/chat/completions`, { method: 'POST',
			body: JSON.stringify({ model, messages: hello, max_tokens: 2 }) });
		assert.equal(r.status, 429);
		assert.equal(r.headers.get('retry-after'), '1');
		s.controller.abort();
	},

	async encode() {
		const r = await (await fetch(`${base}/v1/encode`, { method: 'POST',
			body: JSON.stringify({ input: 'Once upon a time' }) })).json();
		assert.equal(r.length, r.input_ids.length);
		const l = await (await fetch(`${base}/v1/encode`, { method: 'POST',
			body: JSON.stringify({ input: ['a', 'b c'], add_bos: false }) })).json();
		assert.equal(l.input_ids.length, 2);
		console.log(JSON.stringify(r.input_ids));
	},
};

try {
	if (!checks[check]) throw new Error(`no check '${check}'`);
	await checks[check]();
	console.log(`ok ${check}`);
} catch (e) {
	console.error(`FAIL ${check}: ${e.stack || e}`);
	process.exit(1);
}
