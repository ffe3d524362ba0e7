// Tool calling through `lmd-run serve` with the official openai client. The model speaks scripted
// answers (LMD_TEST_SCRIPT, t/README) in the qwen template's format; the client runs the seeds' loop.
//   node serve-tools.mjs script          the answers the server needs, in the order the checks use them
//   node serve-tools.mjs BASE MODEL CHECK
//   node serve-tools.mjs script-pieces PARSER   answers in PARSER's format (internlm, qwen, llama3) for pieces
// CHECK: loop, loop-stream (add, then multiply, then the answer), forced (required, a named function,
// none), malformed (an unknown function and bad arguments stay content), bad-requests (400s),
// pieces (streamed, each call's arguments arrive in several pieces that concatenate to its JSON).
import OpenAI from 'openai';
import assert from 'node:assert/strict';

const call = (name, args) => `<tool_call>\n${JSON.stringify({ name, arguments: args })}\n</tool_call>`;
const SCRIPT = [
	// loop, then loop-stream
	call('add', { a: 3, b: 5 }), 'Let me multiply now.\n' + call('multiply', { a: 8, b: 2 }), '(3 + 5) \u00d7 2 = 16.',
	call('add', { a: 3, b: 5 }), 'Let me multiply now.\n' + call('multiply', { a: 8, b: 2 }), '(3 + 5) \u00d7 2 = 16.',
	// forced: required (the prompt ends with '<tool_call>\n{"name": "'), named (... '"arguments": '), none
	'add", "arguments": {"a": 1, "b": 2}}\n</tool_call>',
	'{"a": 2, "b": 3}}\n</tool_call>',
	call('add', { a: 4, b: 4 }),
	// malformed: unknown function, arguments that are not JSON; then one good call after a bad one
	call('subtract', { a: 1, b: 2 }),
	'<tool_call>\n{"name": "add", "arguments": {a: 1}}\n</tool_call>',
	'<tool_call>{"name": "nope"}</tool_call>\n' + call('multiply', { a: 6, b: 7 }),
];

// For pieces: two calls with arguments long enough to come in many tokens, in each parser's format.
const PIECES = [
	['add', { a: 3, b: 5, note: 'the first of two calls, with a longer string argument' }],
	['multiply', { a: 8, b: 2, nested: { list: [1, 2.5, true, null], text: 'x \u00d7 y' } }],
];
const FORMATS = {
	qwen: (calls) => calls.map(([name, args]) => `<tool_call>\n${JSON.stringify({ name, arguments: args })}\n</tool_call>`).join('\n'),
	internlm: (calls) => calls.map(([name, args]) => `<|action_start|><|plugin|>\n${JSON.stringify({ name, parameters: args })}<|action_end|>`).join(''),
	llama3: (calls) => calls.map(([name, args]) => JSON.stringify({ name, parameters: args }, null, 1)).join('; '),
};

const [base, model, check] = process.argv.slice(2);
if (base === 'script') {
	process.stdout.write(JSON.stringify(SCRIPT) + '\n');
	process.exit(0);
}
if (base === 'script-pieces') {
	process.stdout.write(JSON.stringify([FORMATS[model](PIECES)]) + '\n');
	process.exit(0);
}
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'none', maxRetries: 0 });

const fn = (name, description) => ({
	type: 'function',
	function: {
		name, description,
		parameters: { type: 'object', properties: { a: { type: 'integer' }, b: { type: 'integer' } }, required: ['a', 'b'] },
	},
});
const tools = [fn('add', 'Add two integers.'), fn('multiply', 'Multiply two integers.')];
const run = { add: ({ a, b }) => a + b, multiply: ({ a, b }) => a * b };

// One turn, streamed or not, as the message the client gets back (and the finish reason).
async function turn(messages, stream, extra = {}) {
	const req = { model, messages, tools, temperature: 0, max_tokens: 200, ...extra };
	if (!stream) {
		const r = await client.chat.completions.create(req);
		return { msg: r.choices[0].message, finish: r.choices[0].finish_reason };
	}
	const s = await client.chat.completions.create({ ...req, stream: true });
	const msg = { role: 'assistant', content: '', tool_calls: [] };
	const pieces = [];
	let finish = null;
	for await (const chunk of s) {
		const ch = chunk.choices[0];
		if (!ch) continue;
		if (ch.delta.content) msg.content += ch.delta.content;
		for (const d of ch.delta.tool_calls ?? []) {
			const t = msg.tool_calls[d.index];
			if (!t) {  // a call opens with its id, type and name, before any argument
				assert.ok(d.id && d.type === 'function' && d.function.name, `first delta of a call: ${JSON.stringify(d)}`);
				msg.tool_calls[d.index] = { id: d.id, type: 'function', function: { name: d.function.name, arguments: d.function.arguments ?? '' } };
			} else {
				assert.ok(!d.function.name, 'the name comes once');
				t.function.arguments += d.function.arguments ?? '';
				pieces[d.index] = (pieces[d.index] ?? 0) + 1;
			}
		}
		if (ch.finish_reason) finish = ch.finish_reason;
	}
	if (!msg.tool_calls.length) delete msg.tool_calls;
	if (!msg.content) msg.content = null;
	return { msg, finish, pieces };
}

function oneCall(t, name, args) {
	assert.equal(t.finish, 'tool_calls');
	assert.equal(t.msg.tool_calls.length, 1);
	const c = t.msg.tool_calls[0];
	assert.match(c.id, /^call_[A-Za-z0-9]{24}$/);
	assert.equal(c.type, 'function');
	assert.equal(c.function.name, name);
	assert.equal(typeof c.function.arguments, 'string');
	assert.deepEqual(JSON.parse(c.function.arguments), args);
	return c;
}

async function loop(stream) {
	const messages = [{ role: 'user', content: 'What is (3 + 5) \u00d7 2?' }];
	const ids = new Set();
	let t = await turn(messages, stream);
	let c = oneCall(t, 'add', { a: 3, b: 5 });
	assert.equal(t.msg.content, null);
	ids.add(c.id);
	messages.push(t.msg, { role: 'tool', tool_call_id: c.id, content: String(run.add(JSON.parse(c.function.arguments))) });
	t = await turn(messages, stream);
	c = oneCall(t, 'multiply', { a: 8, b: 2 });
	assert.equal(t.msg.content, 'Let me multiply now.', 'text before a call stays content');
	ids.add(c.id);
	messages.push(t.msg, { role: 'tool', tool_call_id: c.id, content: String(run.multiply(JSON.parse(c.function.arguments))) });
	assert.equal(messages.at(-1).content, '16');
	t = await turn(messages, stream);
	assert.equal(t.finish, 'stop');
	assert.equal(t.msg.tool_calls, undefined);
	assert.equal(t.msg.content, '(3 + 5) \u00d7 2 = 16.');
	assert.equal(ids.size, 2);
	console.log(`loop (${stream ? 'streamed' : 'whole'}): add -> 8, multiply -> 16, "${t.msg.content}"`);
}

async function rejects400(p, what) {
	await assert.rejects(p, (e) => e instanceof OpenAI.BadRequestError && e.status === 400 && !!e.error?.message, what);
}

const checks = {
	loop: () => loop(false),
	'loop-stream': () => loop(true),
	async forced() {
		const q = [{ role: 'user', content: 'Add something.' }];
		oneCall(await turn(q, false, { tool_choice: 'required' }), 'add', { a: 1, b: 2 });
		oneCall(await turn(q, true, { tool_choice: { type: 'function', function: { name: 'multiply' } } }), 'multiply', { a: 2, b: 3 });
		const t = await turn(q, false, { tool_choice: 'none' });
		assert.equal(t.finish, 'stop');
		assert.equal(t.msg.tool_calls, undefined);
		assert.equal(t.msg.content, call('add', { a: 4, b: 4 }), 'with tool_choice none nothing is parsed');
		console.log('forced: required, named and none');
	},
	async malformed() {
		const q = [{ role: 'user', content: 'Subtract.' }];
		let t = await turn(q, false);
		assert.equal(t.finish, 'stop');
		assert.equal(t.msg.content, call('subtract', { a: 1, b: 2 }), 'an unknown function stays content');
		t = await turn(q, true);
		assert.equal(t.finish, 'stop');
		assert.equal(t.msg.content, '<tool_call>\n{"name": "add", "arguments": {a: 1}}\n</tool_call>');
		t = await turn(q, true);
		oneCall(t, 'multiply', { a: 6, b: 7 });
		assert.equal(t.msg.content, '<tool_call>{"name": "nope"}</tool_call>');
		console.log('malformed calls are content');
	},
	async pieces() {
		const t = await turn([{ role: 'user', content: 'Add, then multiply.' }], true, { max_tokens: 400 });
		assert.equal(t.finish, 'tool_calls');
		assert.equal(t.msg.content, null);
		assert.equal(t.msg.tool_calls.length, PIECES.length);
		PIECES.forEach(([name, args], i) => {
			const c = t.msg.tool_calls[i];
			assert.equal(c.function.name, name);
			assert.deepEqual(JSON.parse(c.function.arguments), args, `call ${i}: the pieces concatenate to its JSON`);
			assert.ok(t.pieces[i] > 1, `call ${i}: its arguments came in ${t.pieces[i]} piece(s)`);
		});
		console.log(`pieces: ${t.pieces.join(' and ')} argument pieces`);
	},
	async 'bad-requests'() {
		const q = [{ role: 'user', content: 'x' }];
		await rejects400(client.chat.completions.create({ model, messages: q, tool_choice: 'required' }), 'required without tools');
		await rejects400(client.chat.completions.create({ model, messages: q, tools, tool_choice: { type: 'function', function: { name: 'div' } } }), 'unknown named');
		await rejects400(client.chat.completions.create({ model, messages: q, tools, tool_choice: 'sometimes' }), 'bad tool_choice');
		await rejects400(client.chat.completions.create({ model, messages: q, tools: [{ type: 'function', function: { name: 'a b' } }] }), 'bad name');
		await rejects400(client.chat.completions.create({ model, messages: q, tools: { add: 1 } }), 'tools not a list');
		await rejects400(client.chat.completions.create({
			model, tools, messages: [...q, { role: 'assistant', content: null, tool_calls: [{ id: 'x', type: 'function', function: { name: 'add' } }] }],
		}), 'a call without arguments');
		console.log('bad tool requests are 400');
	},
};

await checks[check]();
