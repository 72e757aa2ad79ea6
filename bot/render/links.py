"""Links that cannot deceive: the one rule for every link the bot shows, classic or native.

A link hides its target behind its label. That is fine for "reset your password", but not when
the label itself reads as an address: ``[billing.powabase.ai](https://evil.example)`` would show
one host and open another, under the bot's trusted name. The rule:

* a label **names a host** when it holds something that reads as a domain, a URL, an e-mail
  address or an IPv4 address (``billing.powabase.ai``, ``www.x.com/path``, ``HTTPS://X.COM``,
  ``<x.com>.``, ``help@x.com``, ``bücher.de`` / ``xn--bcher-kva.de``, the ``user@`` part of
  ``https://billing.powabase.ai@evil.example``, ...), after undoing the tricks that make text look
  like a host it is not: compatibility forms (full-width letters and dots), dot look-alikes
  (``。`` ``．`` ``․``), and invisible characters (zero-width spaces, soft hyphens, combining
  marks) that would otherwise split a host in two for a parser but not for a reader;
* a link **deceives** when its label names a host other than the host a browser would open
  (compared case-insensitively, without a trailing dot or a leading ``www.``, IDN and punycode
  forms as one), or when the target has no such host at all (relative, ``//x``, odd schemes);
* a deceptive link is never a link whose target is hidden: the classic renderer shows
  ``label (<target>)``; native streaming breaks the Markdown link syntax so Slack shows the
  label and the bare target as text (see :func:`guard_markdown`).

Labels that name no host ("reset your password", "Section 2.1") always stay normal links.
A label naming the target's own host stays a link too. When in doubt the rule unlinks: the
worst a false alarm does is show a target next to its label.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import unquote

ZWSP = "\u200b"
LINK_SCHEMES = ("http", "https", "mailto")
MAX_LABEL = 1000  # longer labels are unlinked rather than analysed (bounded work per link)
MAX_TARGET = 4096  # how much of a Markdown link target native streaming reads

# Characters a reader takes for a dot between host labels (NFKC maps most full-width forms).
_DOT_LIKES = re.compile("[\u3002\uff0e\uff61\u2024\u2027\u00b7\u2219\u22c5\u30fb\u0701\u0702]")
_HOSTLIKE = re.compile(r"[\w-]+(?:\.[\w-]+)+")
_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_INVISIBLE_CATEGORIES = frozenset({"Cf", "Mn", "Me", "Cc"})


# --- hosts --------------------------------------------------------------------------------------


def normalise_host(host: str) -> str:
    """One spelling per host: NFKC, lower case, no trailing dot, no ``www.``, IDN as Unicode."""
    host = _reader_text(host).strip().rstrip(".").lower()
    labels = []
    for label in host.split("."):
        if label.startswith("xn--"):
            try:
                label = label[4:].encode("ascii").decode("punycode").lower()
            except (UnicodeError, ValueError):
                pass
        labels.append(label)
    host = ".".join(labels)
    return host[4:] if host.startswith("www.") and host.count(".") >= 2 else host


def target_host(url: str) -> str | None:
    """The host a browser opens for ``url`` (normalised), or None when it has none we trust.

    Parsed the way browsers do (WHATWG): tabs and newlines dropped, ``\\`` read as ``/``, any
    number of slashes after ``http:``, userinfo up to the *last* ``@``, the port dropped, the host
    percent-decoded. ``mailto:`` yields the host of its first address.
    """
    url = re.sub(r"[\t\n\r]", "", url).strip()
    match = _SCHEME.match(url)
    if match is None:
        return None  # relative, protocol-relative or empty: no host the reader can check
    scheme, rest = match.group(1).lower(), url[match.end() :]
    if scheme == "mailto":
        address = unquote(re.split(r"[?#,]", rest, maxsplit=1)[0])
        return _checked_host(address.rpartition("@")[2]) if "@" in address else None
    if scheme not in ("http", "https"):
        return None
    rest = rest.replace("\\", "/").lstrip("/")
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    host = authority.rpartition("@")[2]
    if host.startswith("["):
        host = host[: host.find("]") + 1] if "]" in host else ""
    else:
        host = host.partition(":")[0]
    return _checked_host(unquote(host))


def _checked_host(host: str) -> str | None:
    if not host or any(ch.isspace() for ch in host):
        return None
    return normalise_host(host)


# --- labels -------------------------------------------------------------------------------------


def label_hosts(label: str) -> set[str]:
    """Every host the label's text makes a reader think of (normalised); empty for prose."""
    text = _reader_text(label)
    hosts: set[str] = set()
    for match in _HOSTLIKE.finditer(text):
        candidate = match.group(0).strip("-_")
        if not _looks_like_host(candidate):
            continue
        before, after = text[: match.start()], text[match.end() :]
        local = re.match(r"[\w.+%-]*@", after) and re.fullmatch(r"[\w.+%-]*", _run_before(before))
        if local:
            continue  # the local part of an e-mail address: its host follows the @
        if _in_path(before):
            continue  # a file name in a path (``x.com/guide/setup.html``), not a host
        hosts.add(normalise_host(candidate))
    return hosts


def deceives(label: str, url: str) -> bool:
    """Whether a link showing ``label`` and opening ``url`` would mislead about where it goes.

    A label longer than ``MAX_LABEL`` is not analysed: it is unlinked (no reader needs it linked).
    """
    if len(label) > MAX_LABEL:
        return True
    hosts = label_hosts(label)
    if not hosts:
        return False
    target = target_host(url)
    return target is None or any(host != target for host in hosts)


def is_linkable(url: str) -> bool:
    """Whether ``url`` may be a clickable target at all (http, https, mailto)."""
    match = _SCHEME.match(url.strip())
    return match is not None and match.group(1).lower() in LINK_SCHEMES


def _reader_text(text: str) -> str:
    """``text`` as a reader sees it: compatibility forms folded, look-alike dots as ``.``,
    invisible characters gone."""
    folded = _DOT_LIKES.sub(".", unicodedata.normalize("NFKC", text))
    folded = re.sub(r"\s", " ", folded)  # line breaks and tabs still separate words
    return "".join(ch for ch in folded if unicodedata.category(ch) not in _INVISIBLE_CATEGORIES)


def _looks_like_host(candidate: str) -> bool:
    if _IPV4.fullmatch(candidate):
        return True
    labels = candidate.split(".")
    if any(not label for label in labels):
        return False
    tld = labels[-1].lower()
    return tld.startswith("xn--") or (len(tld) >= 2 and tld.isalpha())


def _run_before(before: str) -> str:
    """The unbroken run of URL-ish characters that ends where a host-like match starts."""
    match = re.search(r"[^\s<>()\[\]{}\"'`|,;]*$", before)
    return match.group(0) if match else ""


def _in_path(before: str) -> bool:
    """Whether a host-like match sits in the path or query of a URL whose host came before it
    (``x.com/guide/setup.html``). A leading ``/x.com`` or ``a/x.com`` still counts as a host."""
    rest = re.sub(r"^(?:[A-Za-z][A-Za-z0-9+.-]*:)?[/\\]*", "", _run_before(before))
    separator = re.search(r"[/\\?#]", rest)
    if separator is None:
        return False
    authority = rest[: separator.start()]
    return any(_looks_like_host(m.group(0).strip("-_")) for m in _HOSTLIKE.finditer(authority))


# --- native streaming: Markdown text Slack renders itself -----------------------------------------

_CLOSER = re.compile(r"\]\(")
_REFERENCE_DEFINITION = re.compile(r"^ {0,3}\[[^\]\n]+\](?=:)", re.MULTILINE)
_ANGLE_LINK = re.compile(r"<([A-Za-z][A-Za-z0-9+.-]*:[^\s|<>]*)(?:\|([^<>\n]*))?")


def guard_markdown(markdown: str) -> str:
    """Model Markdown with every deceptive or unsafe link broken into visible text.

    Slack renders native ``markdown_text`` itself, so the rule is applied to the source: a
    ZERO WIDTH SPACE between ``]`` and ``(`` of a deceptive ``[label](target)`` (Slack then shows
    ``[label](target)`` as text, the target bare), after the ``]`` of a reference definition
    (model text never needs one, and it could point a ``[label]`` elsewhere), and after the ``<``
    of a raw ``<url|label>`` that deceives or whose label has a space (classic shows that as text
    too), and of an autolink whose scheme is not http(s)/mailto. Targets with such schemes
    (``javascript:``, ``data:``) are broken like deceptive ones.

    Append-only: the text only ever *gains* invisible characters, each at a place chosen from the
    text before it plus the link target, and a target is complete once whitespace follows it.
    Streaming sends text up to the last whitespace, so every break is decided before the text
    around it is ever sent: a ``](`` target and a ``<url|label>`` without spaces are complete by
    then, and a ``<url|label`` with a space, like a ``](<target>)`` with one, is broken whatever
    follows.
    """
    inserts: set[int] = set()
    for match in _CLOSER.finditer(markdown):
        close = match.start()
        start = _label_start(markdown, close)
        label = markdown[start:close] if start is not None else None
        target, spaced = _markdown_target(markdown, match.end())
        unsafe = _SCHEME.match(target) is not None and not is_linkable(target)
        # ``[x.com]( target)``, ``[x.com](<x.com .y>)``: the space may be streamed before the
        # target is known.
        if label is None or unsafe or deceives(label, target) or (spaced and label_hosts(label)):
            inserts.add(close + 1)
    for match in _REFERENCE_DEFINITION.finditer(markdown):
        inserts.add(match.end())
    for match in _ANGLE_LINK.finditer(markdown):
        url, label = match.group(1), match.group(2)
        if label is not None and (re.search(r"\s", label) or deceives(label, url)):
            inserts.add(match.start() + 1)  # a label with a space is text in classic too
        elif not is_linkable(url):
            inserts.add(match.start() + 1)
    if not inserts:
        return markdown
    parts, last = [], 0
    for at in sorted(inserts):
        parts += [markdown[last:at], ZWSP]
        last = at
    parts.append(markdown[last:])
    return "".join(parts)


def _label_start(markdown: str, close: int) -> int | None:
    """Just after the ``[`` that a ``]`` at ``close`` closes (bracket-balanced, escapes skipped);
    failing that, the start of its paragraph, so the label is never taken too short. None when
    that is more than ``MAX_LABEL`` characters back (the link is then broken unexamined)."""
    depth = 1
    i = close - 1
    floor = close - MAX_LABEL - 1
    while i >= 0:
        if i < floor:
            return None
        ch = markdown[i]
        if ch == "\n" and markdown[max(i - 1, 0)] == "\n":
            return i + 1
        escaped = i > 0 and markdown[i - 1] == "\\"
        if not escaped and ch == "]":
            depth += 1
        elif not escaped and ch == "[":
            depth -= 1
            if depth == 0:
                return i + 1
        i -= 1
    return 0


def _markdown_target(markdown: str, start: int) -> tuple[str, bool]:
    """The link destination after ``](`` (possibly still incomplete while streaming), and
    whether whitespace comes before it or, in a ``<…>`` destination, inside it.

    Streaming sends text up to the last whitespace, so a space inside ``<https://x.com .y>``
    would let the link go out judged on ``https://x.com`` alone, before the rest of the target
    could show it deceives; reporting it as spaced breaks such a link as soon as the space
    arrives."""
    lead = re.match(r"[ \t]*\n?[ \t]*", markdown[start : start + 200])
    spaced = bool(lead and lead.end())
    begin = start + (lead.end() if lead else 0)
    rest = markdown[begin : begin + MAX_TARGET]  # a host comes early; longer targets are cut
    if rest.startswith("<"):
        end = re.search(r"[>\n]", rest)
        target = rest[1 : end.start()] if end else rest[1:]
        return target, spaced or re.search(r"\s", target) is not None
    depth = 0
    for i, ch in enumerate(rest):
        if ch.isspace():
            return rest[:i], spaced
        if ch == "(":
            depth += 1
        elif ch == ")":
            if depth == 0:
                return rest[:i], spaced
            depth -= 1
    return rest, spaced
