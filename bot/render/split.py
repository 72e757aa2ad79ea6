"""Cut a long Markdown answer into pieces that each render to at most ``budget`` characters.

The cut happens on the *source* (Markdown), and each piece is converted on its own, so a piece
that is not the last one never changes again while the answer keeps streaming in: its source is
final and its end was chosen from facts that more text cannot change. That is what lets the
publisher leave earlier Slack messages alone and edit only the last one.

How a piece's end is chosen, best first, among positions whose cost fits the budget:

1. a paragraph boundary (after a blank line, outside fenced code), unless it leaves the piece
   less than half full and a line boundary further on fits;
2. a line boundary outside fenced code (e.g. between list items, just before a code fence);
3. a line boundary inside fenced code: the piece gets a closing fence and the next piece reopens
   the fence with the same info string (language);
4. after a space;
5. any grapheme-cluster boundary (never inside an emoji ZWJ sequence, flag, keycap or a letter
   with combining marks).

The cost of a slice is an upper bound of its rendered length that only grows as text is appended
(escapes, broadcast neutralising, list indentation, table padding are all counted generously), so
a decision "this does not fit" can never be undone by later text. The real rendered length is
still checked, and wins, if the bound ever underestimates. Pieces are exact consecutive slices of
the source: nothing is lost, only fence lines are added around cuts inside code.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import accumulate

PIECE_OVERHEAD = 16  # a closing fence markdown-it adds to an unclosed block, and similar
_LINE_EXTRA = 4  # per newline: lazy blockquote markers, list renumbering, fence lines
_EXTRA = {"&": 4, "<": 3, ">": 3, "@": 1, "|": 11, "]": 1}  # "]": a link may become "label (<url>)"

_OPEN = re.compile(r"[ \t]*(`{3,}|~{3,})(.*)")
_ZWJ = "\u200d"


@dataclass(frozen=True)
class Piece:
    """``source[start:end]``, wrapped in ``reopen``/``close`` fence lines when cut inside code."""

    start: int
    end: int
    reopen: str = ""
    close: str = ""

    def markdown(self, source: str) -> str:
        return self.reopen + source[self.start : self.end] + self.close


@dataclass(frozen=True)
class _Line:
    start: int
    end: int  # after its newline (or at the end of the text)
    complete: bool
    blank: bool
    fence: str | None  # the opener line of the fence this line starts inside of, if any
    kind: str  # "open", "close" or "text"


def _weights(source: str) -> list[int]:
    weights: list[int] = []
    at_line_start = True
    for ch in source:
        w = 1 + _EXTRA.get(ch, 0)
        if ord(ch) > 0xFFFF:
            w += 1  # counts as two UTF-16 units, which is how some clients measure
        if ch == "\n":
            w += _LINE_EXTRA
            at_line_start = True
        elif at_line_start and ch in " \t":
            w += 1 if ch == " " else 3  # nested-list indentation may widen in the output
        else:
            at_line_start = False
        weights.append(w)
    return weights


def _scan(source: str) -> list[_Line]:
    lines: list[_Line] = []
    fence: str | None = None
    marker = ""
    pos = 0
    while pos < len(source):
        nl = source.find("\n", pos)
        end = len(source) if nl == -1 else nl + 1
        body = source[pos : nl if nl != -1 else len(source)]
        kind = "text"
        if fence is None:
            m = _OPEN.fullmatch(body)
            if m and not (m.group(1)[0] == "`" and "`" in m.group(2)):
                kind, marker = "open", m.group(1)
        elif body.strip() and set(body.strip()) == {marker[0]} and len(body.strip()) >= len(marker):
            kind = "close"
        lines.append(_Line(pos, end, nl != -1, not body.strip(), fence, kind))
        if kind == "open":
            fence = body.strip()
        elif kind == "close":
            fence = None
        pos = end
    return lines


def _closer(opener: str) -> str:
    char = opener[0]
    return char * (len(opener) - len(opener.lstrip(char)))


def is_grapheme_boundary(text: str, i: int) -> bool:
    """Whether a cut before ``text[i]`` keeps every user-perceived character whole."""
    if i <= 0 or i >= len(text):
        return True
    a, b = text[i - 1], text[i]
    if a == "\r" and b == "\n":
        return False
    if a == _ZWJ or _extends(b):
        return False
    if _regional(a) and _regional(b):
        run = 0
        j = i - 1
        while j >= 0 and _regional(text[j]):
            run += 1
            j -= 1
        return run % 2 == 0
    return not (_jamo(a) and _jamo(b))


def _extends(ch: str) -> bool:
    cp = ord(ch)
    return (
        ch == _ZWJ
        or unicodedata.category(ch) in ("Mn", "Me", "Mc")
        or 0xFE00 <= cp <= 0xFE0F  # variation selectors
        or 0x1F3FB <= cp <= 0x1F3FF  # skin tones
        or 0xE0020 <= cp <= 0xE007F  # tag sequences (subdivision flags)
        or 0xE0100 <= cp <= 0xE01EF
    )


def _regional(ch: str) -> bool:
    return 0x1F1E6 <= ord(ch) <= 0x1F1FF


def _jamo(ch: str) -> bool:
    cp = ord(ch)
    return 0x1100 <= cp <= 0x11FF or 0xA960 <= cp <= 0xA97F or 0xD7B0 <= cp <= 0xD7FF


def split_markdown(
    source: str,
    budget: int,
    render: Callable[[str], str] | None = None,
    *,
    max_pieces: int | None = None,
    last_budget: int | None = None,
) -> list[Piece]:
    """Pieces covering ``source`` in order; each renders (via ``render``) to ≤ ``budget`` chars.

    With ``max_pieces``, at most that many pieces are cut, the last of them to ``last_budget``
    (default ``budget``): the pieces then cover a prefix of ``source`` when it is too long
    (``pieces[-1].end < len(source)``). The cut is as stable as any other: the last piece only
    ever grows until the text overflows it, then stays as it is. Only the first
    ``max_pieces × budget`` characters are looked at (no piece holds more), so the work stays
    bounded however long the source grows.
    """
    if budget < 64 or (last_budget is not None and last_budget < 64):
        raise ValueError(
            f"split_markdown: budgets must be at least 64 characters, got {budget}/{last_budget}"
        )
    if max_pieces is not None and max_pieces < 1:
        raise ValueError(f"split_markdown: max_pieces must be at least 1, got {max_pieces}")
    if not source:
        return [Piece(0, 0)]
    full = source
    if max_pieces is not None and len(source) > max_pieces * budget + 1:
        source = source[: max_pieces * budget + 1]  # a piece covers ≤ budget characters
    weights = _weights(source)
    prefix = [0, *accumulate(weights)]
    lines = _scan(source)

    def cost(start: int, end: int, extra: str) -> int:
        return prefix[end] - prefix[start] + sum(_weights(extra)) + PIECE_OVERHEAD

    starts = [line.start for line in lines]

    def fence_at(pos: int) -> str | None:
        """The fence a cut at ``pos`` is inside of (within an opener line counts as outside)."""
        if pos >= len(source):
            return None  # only reached when a piece runs to the end: markdown-it closes it
        line = lines[bisect_right(starts, pos) - 1]
        return None if line.kind == "open" else line.fence

    pieces: list[Piece] = []
    pos = 0
    while pos < len(source):
        final = max_pieces is not None and len(pieces) == max_pieces - 1
        limit = last_budget if final and last_budget is not None else budget

        def fits(piece: Piece, limit: int = limit) -> bool:
            if render is None:
                return True
            return len(render(piece.markdown(full))) <= limit

        opener = fence_at(pos)
        reopen = opener + "\n" if opener else ""
        last = Piece(pos, len(source), reopen)
        if len(source) == len(full) and cost(pos, len(source), reopen) <= limit and fits(last):
            pieces.append(last)
            break
        piece = _best_cut(source, pos, reopen, lines, limit, cost, fence_at, fits)
        pieces.append(piece)
        pos = piece.end
        if final:
            break
    return pieces


def _best_cut(
    source: str,
    pos: int,
    reopen: str,
    lines: Sequence[_Line],
    budget: int,
    cost: Callable[[int, int, str], int],
    fence_at: Callable[[int], str | None],
    fits: Callable[[Piece], bool],
) -> Piece:
    def piece_to(end: int) -> Piece:
        opener = fence_at(end)
        close = ""
        if opener:
            close = ("" if source[end - 1] == "\n" else "\n") + _closer(opener)
        return Piece(pos, end, reopen, close)

    def affordable(end: int) -> bool:
        p = piece_to(end)
        return cost(p.start, p.end, p.reopen + p.close) <= budget

    paragraph: list[int] = []
    line_out: list[int] = []
    line_in: list[int] = []
    for i, line in enumerate(lines):
        if line.start <= pos or not affordable(line.start):
            if line.start > pos:
                break  # costs only grow from here on
            continue
        previous = lines[i - 1]
        if line.fence is None or line.kind == "close":
            if line.fence is None and previous.blank and previous.complete:
                paragraph.append(line.start)
            if line.fence is None:
                line_out.append(line.start)
        elif line.kind != "close":
            line_in.append(line.start)

    ordered: list[int] = []
    if paragraph and (
        cost(pos, paragraph[-1], reopen) * 2 >= budget or line_out[-1] <= paragraph[-1]
    ):
        ordered += reversed(paragraph)
    ordered += reversed(line_out)
    ordered += reversed(line_in)
    for end in dict.fromkeys(ordered):
        candidate = piece_to(end)
        if fits(candidate):
            return candidate

    limit = pos + 1
    while limit < len(source) and affordable(limit + 1):
        limit += 1
    for end in range(limit, pos, -1):
        if source[end - 1] == " " and affordable(end) and fits(piece_to(end)):
            return piece_to(end)
    for end in range(limit, pos, -1):
        if is_grapheme_boundary(source, end) and fits(piece_to(end)):
            return piece_to(end)
    end = pos + 1
    while end < len(source) and not is_grapheme_boundary(source, end):
        end += 1
    return piece_to(end)  # a single grapheme over budget: send it rather than loop forever
