#!/usr/bin/env node
// A scripted OpenAI-compatible server, for the tests of lmd-run client and lmd-bench serve only (no npm
// packages). It speaks the wire format of ../shared/docs/peers.md Part 3: GET /v1/models; POST
// /v1/chat/completions and /v1/completions, streamed (a role chunk, one chunk per token, a finish chunk,
// with stream_options.include_usage a usage chunk with "choices": [] and "usage": null before it, then
// data: [DONE]) or not; OpenAI error objects (401 bad key, 400 bad request, 404 unknown model or path).
// A "token" is a word: usage counts words. Scripted by the last user message / prompt:
//   "please fail"  -> 400 error object          "please cut"   -> two tokens, then the connection is cut
//   "please error" -> two tokens, then an error event and [DONE]
// otherwise the answer repeats the message and counts the turns: "you said: <words> (turn N, system: S)".
// Options: --port N (0: any; "listening PORT" on stdout), --api-key K, --delay MS between tokens,
// --split (send every event in random pieces, to test parsers across chunk boundaries), --cut-every N
// (cut every Nth generation request after its first token), --tokenizer encode|tokenize|none,
// --log FILE (one JSON line per request: t (ms), method, path, authorization, requests in flight, body).
'use strict';
const http = require('http');
const fs = require('fs');

const opt = { port: 0, apiKey: null, delay: 5, split: false, cutEvery: 0, tokenizer: 'encode', log: null };
for (let i = 2; i < process.argv.length; i++) {
	const a = process.argv[i], v = process.argv[i + 1];
	if (a === '--port') opt.port = +v, i++;
	else if (a === '--api-key') opt.apiKey = v, i++;
	else if (a === '--delay') opt.delay = +v, i++;
	else if (a === '--split') opt.split = true;
	else if (a === '--cut-every') opt.cutEvery = +v, i++;
	else if (a === '--tokenizer') opt.tokenizer = v, i++;
	else if (a === '--log') opt.log = v, i++;
	else { console.error(`mock-oai: unknown option ${a}`); process.exit(2); }
}

const MODELS = ['mock-a', 'mock-b'];
const words = (s) => String(s).split(/\s+/).filter((w) => w.length);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let seq = 0, generations = 0, inflight = 0;

function sendJSON(res, status, obj) {
	const b = JSON.stringify(obj);
	res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(b) });
	res.end(b);
}
function sendError(res, status, message, type, param, code) {
	sendJSON(res, status, { error: { message, type, param: param ?? null, code: code ?? null } });
}

// Write one SSE event, in random pieces with --split (a piece may end mid-line or mid-character).
async function event(res, data) {
	const buf = Buffer.from(`data: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`);
	if (!opt.split) return void res.write(buf);
	let at = 0;
	while (at < buf.length) {
		const n = 1 + Math.floor(Math.random() * Math.min(7, buf.length - at));
		res.write(buf.subarray(at, at + n));
		at += n;
		await sleep(1);
	}
}

function contentText(c) {
	if (typeof c === 'string') return c;
	if (Array.isArray(c)) return c.filter((p) => p && p.type === 'text').map((p) => p.text).join('');
	return null;
}

async function generate(req, res, body, chat) {
	if (typeof body.model !== 'string' || !MODELS.includes(body.model))
		return sendError(res, 404, `the model '${body.model}' does not exist`, 'invalid_request_error', 'model',
			'model_not_found');
	let text, promptTokens, answer;
	if (chat) {
		if (!Array.isArray(body.messages) || !body.messages.length)
			return sendError(res, 400, "'messages' must be a non-empty array", 'invalid_request_error', 'messages');
		for (const m of body.messages)
			if (!m || !['system', 'developer', 'user', 'assistant', 'tool'].includes(m.role) || contentText(m.content) === null)
				return sendError(res, 400, 'a message has a bad role or content', 'invalid_request_error', 'messages');
		const user = body.messages.filter((m) => m.role === 'user');
		const sys = body.messages.find((m) => m.role === 'system');
		text = contentText(user.length ? user[user.length - 1].content : '');
		promptTokens = body.messages.reduce((n, m) => n + words(contentText(m.content)).length, 0);
		answer = `you said: ${text} (turn ${user.length}, system: ${sys ? contentText(sys.content) : 'none'})`;
	} else {
		if (typeof body.prompt !== 'string')
			return sendError(res, 400, "'prompt' must be a string", 'invalid_request_error', 'prompt');
		text = body.prompt;
		promptTokens = words(text).length;
		answer = `you said: ${text}`;
	}
	const max = body.max_completion_tokens ?? body.max_tokens ?? (chat ? 1 << 20 : 16);
	if (!Number.isInteger(max) || max < 1)
		return sendError(res, 400, "'max_tokens' must be a positive integer", 'invalid_request_error', 'max_tokens');
	if (/please fail/.test(text))
		return sendError(res, 400, 'mock: you asked for a bad request', 'invalid_request_error', 'messages');
	let toks = words(answer).map((w, i) => (i ? ' ' : '') + w);
	if (body.ignore_eos) while (toks.length < max) toks.push(` t${toks.length}`);
	const finish = toks.length > max ? 'length' : 'stop';
	toks = toks.slice(0, max);
	const usage = { prompt_tokens: promptTokens, completion_tokens: toks.length, total_tokens: promptTokens + toks.length };
	const id = `${chat ? 'chatcmpl' : 'cmpl'}-mock${++seq}`, created = Math.floor(Date.now() / 1000);
	const object = chat ? 'chat.completion.chunk' : 'text_completion';
	const n = ++generations;
	if (!body.stream) {
		await sleep(opt.delay * toks.length);
		const choice = chat ? { index: 0, message: { role: 'assistant', content: toks.join(''), refusal: null }, logprobs: null, finish_reason: finish }
			: { index: 0, text: toks.join(''), logprobs: null, finish_reason: finish };
		return sendJSON(res, 200, { id, object: chat ? 'chat.completion' : 'text_completion', created, model: body.model, choices: [choice], usage });
	}
	const withUsage = !!(body.stream_options && body.stream_options.include_usage);
	const chunk = (choice) => Object.assign({ id, object, created, model: body.model, choices: [choice] }, withUsage ? { usage: null } : {});
	res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache', Connection: 'keep-alive' });
	let closed = false;
	res.on('close', () => { closed = true; });
	const cutAfter = /please cut/.test(text) ? 2 : opt.cutEvery && n % opt.cutEvery === 0 ? 1 : -1;
	for (let i = 0; i < toks.length && !closed; i++) {
		await sleep(opt.delay);
		if (chat && i === 0) await event(res, chunk({ index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }));
		const last = i === toks.length - 1 && !chat;
		await event(res, chunk(chat ? { index: 0, delta: { content: toks[i] }, logprobs: null, finish_reason: null }
			: { index: 0, text: toks[i], logprobs: null, finish_reason: last ? finish : null }));
		if (i + 1 === cutAfter) return void setTimeout(() => res.socket.destroy(), 20);  // the chunk leaves first
		if (i + 1 === 2 && /please error/.test(text)) {
			await event(res, { error: { message: 'mock: the engine failed mid-stream', type: 'internal_error', param: null, code: null } });
			await event(res, '[DONE]');
			return void res.end();
		}
	}
	if (closed) return;
	if (chat) await event(res, chunk({ index: 0, delta: {}, logprobs: null, finish_reason: finish }));
	if (withUsage) await event(res, { id, object, created, model: body.model, choices: [], usage });
	await event(res, '[DONE]');
	res.end();
}

function tokenize(res, body, kind) {
	const text = kind === 'encode' ? body.input : body.prompt;
	if (typeof text !== 'string') return sendError(res, 400, 'no text to tokenize', 'invalid_request_error', kind === 'encode' ? 'input' : 'prompt');
	const ids = words(text).map((w, i) => 3 + i);
	if (kind === 'encode') sendJSON(res, 200, { input_ids: ids, length: ids.length });
	else sendJSON(res, 200, { count: ids.length, max_model_len: 4096, tokens: ids });
}

const server = http.createServer((req, res) => {
	let raw = '';
	req.setEncoding('utf8');
	req.on('data', (d) => { raw += d; });
	req.on('end', () => {
		const path = req.url.split('?')[0];
		inflight++;
		res.on('close', () => { inflight--; });
		if (opt.log) fs.appendFileSync(opt.log, JSON.stringify({ t: performance.now(), method: req.method, path, authorization: req.headers.authorization ?? null, inflight, body: raw }) + '\n');
		if (opt.apiKey !== null && req.headers.authorization !== `Bearer ${opt.apiKey}`)
			return sendError(res, 401, 'mock: invalid API key', 'invalid_request_error', null, 'invalid_api_key');
		if (req.method === 'GET' && path === '/v1/models')
			return sendJSON(res, 200, { object: 'list', data: MODELS.map((id) => ({ id, object: 'model', created: 0, owned_by: 'mock' })) });
		const routes = {
			'/v1/chat/completions': (b) => generate(req, res, b, true),
			'/v1/completions': (b) => generate(req, res, b, false),
		};
		if (opt.tokenizer === 'encode') routes['/v1/encode'] = (b) => tokenize(res, b, 'encode');
		if (opt.tokenizer === 'tokenize') routes['/tokenize'] = (b) => tokenize(res, b, 'tokenize');
		if (!routes[path]) return sendError(res, 404, `no route '${path}'`, 'invalid_request_error', null, 'not_found');
		if (req.method !== 'POST') return sendError(res, 405, `'${path}' takes POST`, 'invalid_request_error');
		let body;
		try { body = JSON.parse(raw); } catch (e) { return sendError(res, 400, `the body is not JSON: ${e.message}`, 'invalid_request_error'); }
		if (!body || typeof body !== 'object' || Array.isArray(body)) return sendError(res, 400, 'the body must be a JSON object', 'invalid_request_error');
		Promise.resolve(routes[path](body)).catch((e) => { console.error(e); res.destroy(); });
	});
});
server.keepAliveTimeout = 5000;
server.listen(opt.port, '127.0.0.1', () => { process.stdout.write(`listening ${server.address().port}\n`); });
process.on('SIGTERM', () => { server.close(); process.exit(0); });
