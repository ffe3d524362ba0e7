#!/usr/bin/env python3
"""Render the chat conversations of t/golden/chat/*.json through each family's own Hugging Face
Jinja chat template, read from ../shared/tokenizers/*/tokenizer_config.json now, and write what it
renders next to them as NAME.TEMPLATE.txt (or NAME.TEMPLATE.err when the template refuses).
The C renderer (common/chat.c) must match these byte for byte (t/unit/test-chat.c). Also writes
floats.txt: doubles and Python's json.dumps of them, for common/pyjson.c.

Run from the repository root: python3 t/golden/make-chat-goldens.py [SHARED]   (Debian python3-jinja2)

The Jinja environment is the one Hugging Face transformers renders chat templates in:
ImmutableSandboxedEnvironment(trim_blocks, lstrip_blocks, loopcontrols), tojson =
json.dumps(ensure_ascii=False, sort_keys=False), raise_exception. strftime_now is left out on
purpose, so Llama 3.x's date is the template's own fixed default ("26 Jul 2024").

A case file holds what an OpenAI client sends: {"messages": [...], "tools": [...]} with each
tool call's "arguments" a JSON string. Like vLLM, the arguments are decoded into an object before
the template sees them (the templates write them with tojson); arguments that are not JSON stay a
string. A case lists the templates it is for in "templates".
"""
import glob
import json
import os
import sys

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

SHARED = sys.argv[1] if len(sys.argv) > 1 else "../shared"
TEMPLATES = {  # our template name -> the tokenizer_config.json whose chat_template it follows
    "qwen": "tokenizers/qwen2/tokenizer_config.json",                       # Qwen2.5-7B-Instruct
    "qwen2": "tokenizers/qwen2/Qwen2-Instruct/tokenizer_config.json",
    "llama3_1": "tokenizers/llama3/tokenizer_config.json",                   # Llama-3.2-3B-Instruct
    "llama3": "tokenizers/llama3/Meta-Llama-3-8B-Instruct/tokenizer_config.json",
    "internlm2": "tokenizers/internlm2/tokenizer_config.json",               # no tool support
}


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def token(v):
    return v.get("content") if isinstance(v, dict) else v


def for_template(messages):
    out = []
    for m in messages:
        m = dict(m)
        if m.get("tool_calls"):
            calls = []
            for c in m["tool_calls"]:
                c = json.loads(json.dumps(c))
                try:
                    c["function"]["arguments"] = json.loads(c["function"]["arguments"])
                except (ValueError, TypeError):
                    pass
                calls.append(c)
            m["tool_calls"] = calls
        out.append(m)
    return out


def floats(path):
    """Doubles as %.17g (exact) and as json.dumps writes them (Python's repr): pyjson.c's oracle."""
    import random
    import struct
    rng = random.Random(15)
    xs = [0.0, -0.0, 1.0, 0.1, 2.5, 1e-07, 1e16, 1e15, 123456789.125, 1e-05, 0.0001, 5e-324, 1.7976931348623157e308]
    xs += [struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0] for _ in range(1000)]
    xs += [rng.uniform(-1, 1) * 10 ** rng.randint(-8, 20) for _ in range(1000)]
    xs += [round(rng.uniform(-1e6, 1e6), rng.randint(0, 6)) for _ in range(500)]
    with open(path, "w") as f:
        for x in xs:
            if x == x and abs(x) != float("inf"):
                f.write("%.17g %s\n" % (x, json.dumps(x)))


def main():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "chat")
    floats(os.path.join(os.path.dirname(here), "floats.txt"))
    for path in sorted(glob.glob(os.path.join(here, "*.json"))):
        case = json.load(open(path, encoding="utf-8"))
        base = path[:-5]
        for name in case["templates"]:
            cfg = json.load(open(os.path.join(SHARED, TEMPLATES[name]), encoding="utf-8"))
            tmpl = env.from_string(cfg["chat_template"])
            for ext in (".txt", ".err"):
                if os.path.exists(f"{base}.{name}{ext}"):
                    os.remove(f"{base}.{name}{ext}")
            try:
                text = tmpl.render(messages=for_template(case["messages"]), tools=case.get("tools"),
                                   add_generation_prompt=True, bos_token=token(cfg.get("bos_token")) or "",
                                   eos_token=token(cfg.get("eos_token")) or "")
                ext = ".txt"
            except jinja2.exceptions.TemplateError as e:
                text, ext = str(e) + "\n", ".err"
            with open(f"{base}.{name}{ext}", "w", encoding="utf-8", newline="") as f:
                f.write(text)
            print(f"{os.path.basename(base)}.{name}{ext}")


main()
