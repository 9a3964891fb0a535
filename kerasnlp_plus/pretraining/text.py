"""Reading raw pretraining text: documents, with bad lines reported and skipped.

Two layouts are read:

- ``'lines'``: one document per line (blank lines are ignored);
- ``'blank'``: one sentence or paragraph per line, a blank line between documents
  (Google BERT's ``create_pretraining_data`` layout);
- ``'pairs'``: one ``target<TAB>source`` pair per line (UniLM seq2seq pretraining:
  title or headline, then the text it summarizes); a line without exactly two
  non-empty fields is reported and skipped.

A line that is not valid UTF-8, or that is mostly control characters, is reported
(file and 1-based line number) and skipped; it never stops the run. Isolated control
characters inside an otherwise good line are removed.
"""
import logging
import unicodedata

logger = logging.getLogger("kerasnlp_plus.pretraining")

DOC_FORMATS = ("lines", "blank", "pairs")
#: A line where more than this fraction of the characters are control characters is garbage.
MAX_CONTROL_FRACTION = 0.1


class BadLine:
    """A skipped line: where it is and why."""

    __slots__ = ("path", "lineno", "reason")

    def __init__(self, path, lineno, reason):
        self.path, self.lineno, self.reason = str(path), int(lineno), reason

    def __str__(self):
        return f"{self.path}:{self.lineno}: skipped: {self.reason}"

    def __repr__(self):
        return f"BadLine({self.path!r}, {self.lineno}, {self.reason!r})"


def _is_control(ch):
    return ch not in "\t\n\r" and unicodedata.category(ch) in ("Cc", "Cs", "Co", "Cn")


def clean_line(raw, path, lineno):
    """Decode and clean one raw line. Returns ``(text, bad)``: ``bad`` is a
    :class:`BadLine` (and ``text`` None) when the line must be skipped."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, BadLine(path, lineno, f"invalid UTF-8 at byte {e.start}: {raw[e.start:e.start + 4]!r}")
    text = text.rstrip("\r\n")
    if text.startswith("\ufeff"):
        text = text[1:]
    n_control = sum(1 for ch in text if _is_control(ch))
    if n_control:
        if n_control > MAX_CONTROL_FRACTION * len(text):
            return None, BadLine(
                path, lineno, f"{n_control} of {len(text)} characters are control characters"
            )
        text = "".join(ch for ch in text if not _is_control(ch))
    return text, None


def read_documents(paths, doc_format="lines", on_bad_line=None):
    """Yield ``(source, text)`` for every document in ``paths``, in order.

    Args:
        paths: text files (UTF-8).
        doc_format: ``'lines'`` (one document per line) or ``'blank'`` (blank line
            between documents; a document's lines are joined with ``'\\n'``).
        on_bad_line: called with a :class:`BadLine` for every skipped line; by default
            it is logged as a warning.

    ``source`` is ``'path:first_line'`` of the document, for messages.
    """
    if doc_format not in DOC_FORMATS:
        raise ValueError(f"doc_format must be one of {DOC_FORMATS}, got {doc_format!r}")
    report = on_bad_line or (lambda bad: logger.warning("%s", bad))
    for path in paths:
        lines, start = [], None
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                text, bad = clean_line(raw, path, lineno)
                if bad is not None:
                    report(bad)
                    continue
                if doc_format == "pairs":
                    fields = text.strip().split("\t")
                    if len(fields) != 2 or not fields[0].strip() or not fields[1].strip():
                        report(BadLine(path, lineno, f"expected target<TAB>source, got {len(fields)} field(s)"))
                    else:
                        yield f"{path}:{lineno}", text.strip()
                    continue
                if doc_format == "lines":
                    if text.strip():
                        yield f"{path}:{lineno}", text.strip()
                    continue
                if text.strip():
                    if start is None:
                        start = lineno
                    lines.append(text.strip())
                elif lines:
                    yield f"{path}:{start}", "\n".join(lines)
                    lines, start = [], None
        if lines:
            yield f"{path}:{start}", "\n".join(lines)
