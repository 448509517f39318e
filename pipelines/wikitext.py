"""Wikitext -> plain text plus the character spans of its article links.

One left-to-right scan builds the output, so every link span is an offset into the returned text.

What is kept / dropped (the stated choices):
- `[[T|a]]` -> `a`, `[[T]]` -> `T` (as written); a link trail of lower-case ASCII letters (`[[bus]]es`)
  joins the anchor, as MediaWiki renders it. Link targets are normalised by `normalize_title`.
- dropped with their content: templates `{{...}}` (nested), tables `{| ... |}`, HTML comments,
  `<ref>...</ref>` / `<ref .../>` and other non-prose tags (`DROP_CONTENT_TAGS`), `[[File:]]`/`[[Image:]]`
  (nested caption links included), `[[Category:]]`, interlanguage links `[[de:...]]`, magic words.
- headings `== H ==` are DROPPED (the line stays, empty, so a heading also ends a paragraph);
  list / indent markers at a line start (`*#:;`) and `----` rules are dropped.
- `''`/`'''` markup is dropped; `[http://x label]` -> `label` (no label -> nothing);
  links into other namespaces or interwiki (`[[Wikipedia:X|y]]`, `[[:fr:X|y]]`) -> their text, no link.
- HTML formatting tags (`<small>`, `<span>`, `<onlyinclude>`...) are removed and their inner text kept;
  `<br>` becomes a newline; `<nowiki>x</nowiki>` -> `x` taken literally; unknown `<tags>` stay as text.
- character entities ending in `;` are unescaped; no-break spaces (`&nbsp;`, U+00A0) become plain spaces.
- whitespace is otherwise left as it is (blank-line runs, leading spaces), so offsets stay simple.

Broken markup never raises: an unclosed `{{`, `{|`, `<!--` or dropped tag removes text up to the end of its
paragraph; an unclosed `[[` loses its brackets and keeps its text. Each repair is listed in `problems`.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from urllib.parse import unquote

DROP_CONTENT_TAGS = frozenset({
    "ref", "references", "gallery", "math", "chem", "ce", "timeline", "imagemap", "score", "syntaxhighlight",
    "source", "pre", "templatedata", "templatestyles", "graph", "mapframe", "maplink", "includeonly", "hiero",
    "inputbox", "categorytree", "charinsert", "indicator", "section", "style", "script",
})
KEEP_CONTENT_TAGS = frozenset({
    "small", "big", "sup", "sub", "span", "div", "center", "font", "b", "i", "u", "s", "em", "strong", "code",
    "tt", "blockquote", "abbr", "cite", "del", "ins", "mark", "q", "p", "onlyinclude", "noinclude", "poem",
    "var", "kbd", "samp", "dfn", "bdi", "bdo", "ruby", "rt", "rp", "wbr", "hr", "li", "ul", "ol", "dl", "dt",
    "dd", "strike", "caption", "table", "tr", "td", "th", "tbody", "thead", "time", "data", "nowiki",
})
DROP_NAMESPACES = frozenset({"file", "image", "media", "category"})
TEXT_NAMESPACES = frozenset({
    "wikipedia", "wp", "project", "help", "portal", "template", "t", "user", "talk", "draft", "special",
    "module", "book", "mediawiki", "timedtext", "gadget", "topic", "education program", "h",
    "wikt", "wiktionary", "commons", "c", "wikisource", "s", "wikiquote", "q", "wikibooks", "b", "wikinews",
    "n", "wikiversity", "v", "wikivoyage", "voy", "wikidata", "d", "species", "wikispecies", "meta", "m",
    "mediawikiwiki", "mw", "w", "foundation", "wmf", "phabricator", "phab", "outreach", "incubator",
})
_LANG_CODE = re.compile(r"^(?:[a-z]{2,3}(?:-[a-z0-9]+)*|simple)$")
_TOKEN = re.compile(
    r"""(?P<comment><!--)
       |(?P<tmpl>\{\{)
       |(?P<table>^[ \t:]*\{\|)
       |(?P<link>\[\[)
       |(?P<ext>\[(?=(?:https?:|ftp:|mailto:|//)))
       |(?P<quotes>'{2,})
       |(?P<tag></?(?P<tagname>[A-Za-z][A-Za-z0-9]*)(?:\s[^<>]*?)?\s*/?>)
       |(?P<entity>&(?:\#[0-9]{1,7}|\#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});)
       |(?P<heading>^=+[^\n]*=[ \t]*$)
       |(?P<list>^[*#:;]+[ \t]*)
       |(?P<hr>^-{4,})
       |(?P<magic>__[A-Z]{2,}__)""",
    re.M | re.X,
)
_BRACES = re.compile(r"\{\{|\}\}|^[ \t:]*\{\||^[ \t]*\|\}", re.M)
_BRACKETS = re.compile(r"\[\[|\]\]")
_EXT_CLOSE = re.compile(r"\[\[|\]\]|\]")
_LINK_TRAIL = re.compile(r"[a-z]+")
_SPACES = re.compile(r"[ _\t\u00a0]+")
_PERCENT = re.compile(r"%[0-9A-Fa-f]{2}")
_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
_MAX_PROBLEMS = 50


@dataclass(frozen=True, slots=True)
class Link:
    """An article link: normalised target title, its anchor text, and [start, end) in the plain text."""

    target: str
    anchor: str
    start: int
    end: int


@dataclass(slots=True)
class CleanText:
    text: str
    links: list[Link] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # broken markup that was repaired ("what at offset")


def unescape_entities(text: str) -> str:
    """Unescape `&name;`/`&#n;` entities only (a bare `&` stays); no-break spaces become plain spaces."""
    if "&" in text:
        text = _ENTITY.sub(lambda m: html.unescape(m.group(0)), text)
    return text.replace("\u00a0", " ")


def normalize_title(raw: str) -> str:
    """MediaWiki-style title: entities and %XX decoded, `#section` dropped, `_` -> space, runs of spaces
    collapsed, stripped, first letter upper-cased. '' when nothing is left (e.g. `#Section` links)."""
    title = unescape_entities(raw)
    if "%" in title and _PERCENT.search(title):
        title = unquote(title)
    title = title.split("#", 1)[0]
    title = _SPACES.sub(" ", title).strip()
    if title.startswith(":"):
        title = title[1:].lstrip()
    return title[:1].upper() + title[1:] if title else ""


def link_kind(target: str) -> str:
    """'article', 'drop' (file/category/interlanguage: nothing rendered) or 'text' (other namespace or
    interwiki: the text is shown, no entity link)."""
    stripped = target.strip()
    leading_colon = stripped.startswith(":")
    if leading_colon:
        stripped = stripped[1:].lstrip()
    if stripped.startswith("#"):
        return "text"
    prefix, colon, _ = stripped.partition(":")
    if not colon:
        return "article"
    prefix = _SPACES.sub(" ", prefix).strip().lower()
    if prefix in DROP_NAMESPACES:
        return "text" if leading_colon else "drop"
    if prefix in TEXT_NAMESPACES or prefix.endswith(" talk"):
        return "text"
    if _LANG_CODE.match(prefix):
        return "text" if leading_colon else "drop"
    return "article"


class _Renderer:
    def __init__(self, src: str) -> None:
        self.src = src
        self.parts: list[str] = []
        self.length = 0
        self.links: list[Link] = []
        self.problems: list[str] = []

    # -- output -------------------------------------------------------------------------------------
    def emit(self, text: str) -> None:
        if text:
            self.parts.append(text)
            self.length += len(text)

    def problem(self, what: str, offset: int) -> None:
        if len(self.problems) < _MAX_PROBLEMS:
            snippet = self.src[offset:offset + 40].replace("\n", " ")
            self.problems.append(f"{what} at {offset}: {snippet!r}")

    def paragraph_end(self, pos: int, hi: int) -> int:
        end = self.src.find("\n\n", pos, hi)
        return hi if end < 0 else end

    # -- scanning -----------------------------------------------------------------------------------
    def render(self, lo: int, hi: int, links: bool = True) -> None:
        src, pos = self.src, lo
        while pos < hi:
            m = _TOKEN.search(src, pos, hi)
            if m is None:
                self.emit(src[pos:hi])
                return
            self.emit(src[pos:m.start()])
            pos = getattr(self, "_on_" + m.lastgroup)(m, hi, links)

    def _on_comment(self, m: re.Match, hi: int, links: bool) -> int:
        end = self.src.find("-->", m.end(), hi)
        if end >= 0:
            return end + 3
        self.problem("unclosed <!--", m.start())
        return self.paragraph_end(m.start(), hi)

    def _on_tmpl(self, m: re.Match, hi: int, links: bool) -> int:
        end = self._match_braces(m.start(), hi)
        if end is not None:
            return end
        self.problem("unclosed {{" if m.lastgroup == "tmpl" else "unclosed {|", m.start())
        return self.paragraph_end(m.start(), hi)

    _on_table = _on_tmpl

    def _match_braces(self, start: int, hi: int) -> int | None:
        stack: list[str] = []
        for b in _BRACES.finditer(self.src, start, hi):
            tok = b.group(0)
            if tok == "{{":
                stack.append("T")
            elif tok == "}}":
                if stack and stack[-1] == "T":
                    stack.pop()
            elif tok.endswith("{|"):
                stack.append("B")
            elif "B" in stack:  # |}
                while stack.pop() != "B":
                    pass
            if not stack:
                return b.end()
        return None

    def _on_link(self, m: re.Match, hi: int, links: bool) -> int:
        src, start = self.src, m.start()
        if src.startswith("[", m.end()):  # "[[[T]]": the first bracket is literal text
            self.emit("[")
            return start + 1
        para_end = self.paragraph_end(start, hi)
        depth, close = 0, -1
        for b in _BRACKETS.finditer(src, start, para_end):
            depth += 1 if b.group(0) == "[[" else -1
            if depth == 0:
                close = b.start()
                break
        if close < 0:
            self.problem("unclosed [[", start)
            return m.end()
        inner_lo = m.end()
        target, sep, _ = src[inner_lo:close].partition("|")
        kind = link_kind(target)
        if kind == "drop":
            return close + 2
        if src.find("[[", inner_lo, close) >= 0:
            self.problem("link inside link", start)
            return m.end()  # outer brackets dropped, the content is rendered as text
        if not links:
            kind = "text"
        first_part, link_start = len(self.parts), self.length
        if not sep:
            lo = inner_lo + (len(target) - len(target.lstrip()))
            self.render(lo + 1 if src.startswith(":", lo) else lo, close, links=False)
        elif not src[inner_lo + len(target) + 1:close].strip():  # pipe trick: [[Foo (bar)|]] -> Foo
            self.emit(re.sub(r"\s*(\(.*\)|,.*)$", "", target.strip().lstrip(":")))
        else:
            self.render(inner_lo + len(target) + 1, close, links=False)
        pos = close + 2
        if kind != "article":
            return pos
        trail = _LINK_TRAIL.match(src, pos, hi)
        if trail:
            self.emit(trail.group(0))
            pos = trail.end()
        title = normalize_title(target)
        rendered = "".join(self.parts[first_part:])
        anchor = rendered.strip()
        if title and anchor:
            s = link_start + len(rendered) - len(rendered.lstrip())
            self.links.append(Link(title, anchor, s, s + len(anchor)))
        return pos

    def _on_ext(self, m: re.Match, hi: int, links: bool) -> int:
        line_end = self.src.find("\n", m.end(), hi)
        line_end = hi if line_end < 0 else line_end
        depth, close = 0, -1
        for b in _EXT_CLOSE.finditer(self.src, m.end(), line_end):  # "]" not inside a [[link]]
            tok = b.group(0)
            if tok != "[[" and depth == 0:
                close = b.start()
                break
            depth += 1 if tok == "[[" else -1 if tok == "]]" else 0
        if close < 0:
            self.emit("[")
            return m.end()
        url_end = m.end() + len(re.match(r"[^\s\]]*", self.src[m.end():close]).group(0))
        label = self.src[url_end:close]
        if label.strip():
            self.render(url_end + len(label) - len(label.lstrip()), close, links)
        return close + 1

    def _on_quotes(self, m: re.Match, hi: int, links: bool) -> int:
        n = len(m.group(0))
        if n == 4:
            self.emit("'")
        elif n > 5:
            self.emit("'" * (n - 5))
        return m.end()

    def _on_tag(self, m: re.Match, hi: int, links: bool) -> int:
        raw, name = m.group("tag"), m.group("tagname").lower()
        closing, self_closing = raw.startswith("</"), raw.endswith("/>")
        if name == "br":
            self.emit("\n")
            return m.end()
        if name in DROP_CONTENT_TAGS:
            if closing or self_closing:
                return m.end()
            close = re.compile(rf"</{name}\s*>", re.I).search(self.src, m.end(), hi)
            if close:
                return close.end()
            self.problem(f"unclosed <{name}>", m.start())
            return self.paragraph_end(m.start(), hi)
        if name == "nowiki" and not closing and not self_closing:
            close = re.compile(r"</nowiki\s*>", re.I).search(self.src, m.end(), hi)
            if close:
                self.emit(unescape_entities(self.src[m.end():close.start()]))
                return close.end()
            return m.end()
        if name in KEEP_CONTENT_TAGS:
            return m.end()
        self.emit(raw)  # not an HTML tag we know: literal text such as "a <b> c"
        return m.end()

    def _on_entity(self, m: re.Match, hi: int, links: bool) -> int:
        self.emit(unescape_entities(m.group(0)))
        return m.end()

    def _on_heading(self, m: re.Match, hi: int, links: bool) -> int:
        return m.end()

    _on_list = _on_heading
    _on_hr = _on_heading
    _on_magic = _on_heading


def clean_wikitext(wikitext: str) -> CleanText:
    """Plain text, article links (spans into that text) and the repairs made to broken markup."""
    renderer = _Renderer(wikitext)
    renderer.render(0, len(wikitext))
    return CleanText("".join(renderer.parts), renderer.links, renderer.problems)
