"""pipelines.wikitext: markup removal, link spans, broken markup, title normalisation; pipelines.sentences."""

from __future__ import annotations

import pytest

from pipelines.sentences import locate, make_passages, split_sentences
from pipelines.wikitext import clean_wikitext, link_kind, normalize_title

CASES = [
    # (wikitext, plain text, [(target, anchor)])
    ("{{Infobox person|name={{nowrap|A [[B]]}}|x={{y|{{z}}}}}}Hello [[World|the world]].",
     "Hello the world.", [("World", "the world")]),
    ("a<ref>cite {{web|url=x}} [[Q]]</ref> b<ref name=\"n\"/> c<REF group=x>z</REF>.", "a b c.", []),
    ("x\n{| class=\"wikitable\"\n|-\n| [[A]] || {{b}}\n|}\ny [[C]]", "x\n\ny C", [("C", "C")]),
    ("[[File:X.jpg|thumb|A [[caption]] with [[nested|links]] and {{t}}]]Text [[Image:Y.png]]end",
     "Text end", []),
    ("Foo.[[Category:Things]][[Category:Other|sort]]\n[[de:Foo]][[fr:Foo]]", "Foo.\n", []),
    ("'''Bold''' and ''italic'' and '''''both''''' [[X|''X'']]", "Bold and italic and both X", [("X", "X")]),
    ("see [http://example.org the site] or [https://x.org] or [[Y]]", "see the site or  or Y", [("Y", "Y")]),
    ("== History ==\nText [[Z_z#Sec|here]].\n=== Sub ===\nMore", "\nText here.\n\nMore", [("Z z", "here")]),
    ("a<!-- hidden [[L]] -->b &nbsp;c&amp;d &lt;e&gt; R&D", "ab  c&d <e> R&D", []),
    ("x<br>y<br/>z <small>small [[S]]</small> <span style=\"a\">s</span>", "x\ny\nz small S s", [("S", "S")]),
    ("[[bus]]es and [[Bus|car]]s", "buses and cars", [("Bus", "buses"), ("Bus", "cars")]),
    ("[[Foo (band)|]] [[:Category:Cats|cats]] [[wikt:word|word]] [[Wikipedia:About]]",
     "Foo cats word Wikipedia:About", [("Foo (band)", "Foo")]),
    ("[[Seven Years: 1998–2005]] [[lower case]]", "Seven Years: 1998–2005 lower case",
     [("Seven Years: 1998–2005", "Seven Years: 1998–2005"), ("Lower case", "lower case")]),
    ("[[[Ray Dixon|Ray]] will]", "[Ray will]", [("Ray Dixon", "Ray")]),
    ("* item [[A]]\n# two\n: indent\n----\n__NOTOC__ done", "item A\ntwo\nindent\n\n done", [("A", "A")]),
    ("<nowiki>[[not a link]] ''x''</nowiki> y", "[[not a link]] ''x'' y", []),
]


@pytest.mark.parametrize(("wikitext", "plain", "links"), CASES)
def test_clean(wikitext: str, plain: str, links: list[tuple[str, str]]):
    result = clean_wikitext(wikitext)
    assert result.text == plain
    assert [(link.target, link.anchor) for link in result.links] == links
    for link in result.links:
        assert result.text[link.start:link.end] == link.anchor
    assert result.problems == []


BROKEN = [
    ("Good [[A]]. {{unclosed template\n| x = [[B]]\n\nNext para [[C]].", "Good A. \n\nNext para C.", ["A", "C"]),
    ("Start [[unclosed link and more text\n\nthen [[D]]", "Start unclosed link and more text\n\nthen D", ["D"]),
    ("a <!-- never closed\n\nb [[E]]", "a \n\nb E", ["E"]),
    ("a <ref>never closed [[F]]\n\nb", "a \n\nb", []),
    ("{| table without end\n| cell\n\nafter [[G]]", "\n\nafter G", ["G"]),
    ("x [[Outer [[Inner]] text]] y", "x Outer Inner text]] y", ["Inner"]),
    ("}} stray |} closers ]] here", "}} stray |} closers ]] here", []),
    ("[[", "", []),
    ("{{", "", []),
    ("'''", "", []),
]


@pytest.mark.parametrize(("wikitext", "plain", "targets"), BROKEN)
def test_broken_markup_never_crashes(wikitext: str, plain: str, targets: list[str]):
    result = clean_wikitext(wikitext)
    assert result.text == plain
    assert [link.target for link in result.links] == targets
    for link in result.links:
        assert result.text[link.start:link.end] == link.anchor
    if "[[" in wikitext or "{" in wikitext or "<" in wikitext:
        assert result.problems or wikitext in ("'''",) or "stray" in wikitext


@pytest.mark.parametrize(("raw", "title"), [
    ("foo_bar", "Foo bar"), ("Foo#History", "Foo"), ("  spaced   out ", "Spaced out"), ("#Only", ""),
    ("AT&amp;T", "AT&T"), ("Caf%C3%A9", "Café"), ("über", "Über"), (":Foo", "Foo"),
])
def test_normalize_title(raw: str, title: str):
    assert normalize_title(raw) == title


@pytest.mark.parametrize(("target", "kind"), [
    ("Paris", "article"), ("File:x.jpg", "drop"), ("image:x.jpg", "drop"), ("Category:X", "drop"),
    (":Category:X", "text"), ("de:Paris", "drop"), (":fr:Paris", "text"), ("wikt:word", "text"),
    ("Wikipedia:About", "text"), ("User talk:X", "text"), ("Star Wars: A New Hope", "article"),
])
def test_link_kind(target: str, kind: str):
    assert link_kind(target) == kind


def test_sentences_and_passages_keep_links_whole():
    text = "Dr. Smith visited the U.S. Army base. He met J. R. R. Tolkien, e.g. at home! \"Quoted.\" Then more.\n\nP2."
    sents = [text[s:e] for s, e in split_sentences(text)]
    assert sents == ["Dr. Smith visited the U.S. Army base.", "He met J. R. R. Tolkien, e.g. at home!",
                     "\"Quoted.\"", "Then more.", "P2."]
    link = (text.index("base. He"), text.index("base. He") + 8)  # a span across a sentence end
    passages = make_passages(text, 40, [link])
    assert locate(passages, *link) is not None
    assert all(e - s <= 40 or text[s:e].count(" ") < 2 for s, e in passages)
    assert all("\n\n" not in text[s:e] for s, e in passages)
    long_text = " ".join(["word"] * 300)
    assert all(e - s <= 100 for s, e in make_passages(long_text, 100))
