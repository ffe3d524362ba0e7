// A small Markdown renderer for model answers that builds DOM nodes: text only ever goes in
// through createTextNode, so nothing the model writes can become HTML (no innerHTML anywhere).
// Fenced code, headings, lists, quotes, paragraphs; inline code, bold, italic and http(s) links.
"use strict";

(function () {
  function el(tag, cls) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    return e;
  }

  // Inline spans of one line: `code`, **bold**, *italic* / _italic_, [text](http://...).
  const INLINE = /(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)|\*\*([^*]+)\*\*|(?<!\w)__([^_\s](?:[^_]*[^_\s])?)__(?!\w)|\*([^*\s][^*]*)\*|(?<!\w)_([^_\s](?:[^_]*[^_\s])?)_(?!\w)|\[([^\]]+)\]\(([^)\s]+)\)/g;

  function inline(parent, text) {
    let last = 0;
    for (const m of text.matchAll(INLINE)) {
      if (m.index > last) parent.appendChild(document.createTextNode(text.slice(last, m.index)));
      let node;
      if (m[1]) {
        node = el("code");
        node.textContent = m[2];
      } else if (m[3] !== undefined || m[4] !== undefined) {
        node = el("strong");
        inline(node, m[3] !== undefined ? m[3] : m[4]);
      } else if (m[5] !== undefined || m[6] !== undefined) {
        node = el("em");
        inline(node, m[5] !== undefined ? m[5] : m[6]);
      } else {
        let url = null;
        try {
          const u = new URL(m[8]);
          if (u.protocol === "http:" || u.protocol === "https:") url = u.href;
        } catch (e) { /* not a URL: plain text */ }
        if (url) {
          node = el("a");
          node.setAttribute("href", url);
          node.setAttribute("rel", "noopener noreferrer nofollow");
          node.setAttribute("target", "_blank");
          inline(node, m[7]);
        } else {
          node = document.createTextNode(m[0]);
        }
      }
      parent.appendChild(node);
      last = m.index + m[0].length;
    }
    if (last < text.length) parent.appendChild(document.createTextNode(text.slice(last)));
  }

  // Lines with <br> between them.
  function lines(parent, ls) {
    ls.forEach(function (l, i) {
      if (i) parent.appendChild(el("br"));
      inline(parent, l);
    });
  }

  function render(text) {
    const out = document.createDocumentFragment();
    const ls = String(text).replace(/\r\n?/g, "\n").split("\n");
    let i = 0;
    while (i < ls.length) {
      const line = ls[i];
      let m;
      if ((m = /^\s*(```+|~~~+)\s*([\w+-]*)\s*$/.exec(line))) {  // fenced code (may be unclosed while streaming)
        const fence = m[1], body = [];
        for (i++; i < ls.length && !(ls[i].trim().startsWith(fence) && ls[i].trim().replace(/[`~]/g, "") === ""); i++)
          body.push(ls[i]);
        i++;
        const pre = el("pre"), code = el("code");
        if (m[2]) code.setAttribute("data-lang", m[2]);
        code.textContent = body.join("\n");
        pre.appendChild(code);
        out.appendChild(pre);
      } else if ((m = /^(#{1,6})\s+(.*)$/.exec(line))) {
        const h = el("h" + Math.min(6, m[1].length + 2));
        inline(h, m[2]);
        out.appendChild(h);
        i++;
      } else if (/^\s*([-*+]|\d+[.)])\s+/.test(line)) {
        const ordered = /^\s*\d/.test(line), list = el(ordered ? "ol" : "ul");
        for (; i < ls.length && (m = /^\s*([-*+]|\d+[.)])\s+(.*)$/.exec(ls[i])); i++) {
          if (/^\d/.test(m[1]) !== ordered) break;
          const li = el("li");
          inline(li, m[2]);
          list.appendChild(li);
        }
        out.appendChild(list);
      } else if (/^\s*>/.test(line)) {
        const q = el("blockquote"), body = [];
        for (; i < ls.length && /^\s*>/.test(ls[i]); i++) body.push(ls[i].replace(/^\s*>\s?/, ""));
        lines(q, body);
        out.appendChild(q);
      } else if (line.trim() === "") {
        i++;
      } else {
        const p = el("p"), body = [];
        for (; i < ls.length && ls[i].trim() !== "" && !/^\s*(```|~~~|#{1,6}\s|>|([-*+]|\d+[.)])\s)/.test(ls[i]); i++)
          body.push(ls[i]);
        if (!body.length) body.push(ls[i++]);
        lines(p, body);
        out.appendChild(p);
      }
    }
    return out;
  }

  window.lmdMarkdown = { render: render };
})();
