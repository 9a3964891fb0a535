"""KgCLUE knowledge-base QA as "Seq2Seq + prefix tree" (kexue.fm/archives/8802): the
official files, the knowledge base streamed into a prefix trie of answer keys, and
the official metric (CLUEbenchmark/KgCLUE ``evaluate_f1_em.py``).

The metric is written here because no maintained package computes it: EM and F1
(``2*LCS/(len a + len b)``, characters, after lower-casing and whitespace
normalisation) on S, P, O and S+P+O; the score is ``0.5*EM(O) + 0.5*F1(O)``.
"""
import itertools
import json
import os
import time


# ----------------------------------------------------------------------- metric
def normalize(text):
    """The official normalisation: lower case, whitespace runs -> one space."""
    return " ".join(text.lower().split())


def lcs_length(a, b):
    """Length of the longest common subsequence of two strings (characters)."""
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for ca in a:
        cur = [0]
        for j, cb in enumerate(b):
            cur.append(prev[j] + 1 if ca == cb else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def f1_sim(text_a, text_b):
    """``2*LCS/(len a + len b)``; 0 when both are empty (as the official script)."""
    if not text_a and not text_b:
        return 0.0
    return 2.0 * lcs_length(text_a, text_b) / (len(text_a) + len(text_b))


def kgclue_metrics(predictions, references):
    """Official KgCLUE metrics, in percent, over ``(S, P, O)`` string triples.

    >>> m = kgclue_metrics([("a", "b", "xyz")], [("a", "c", "xy")])
    >>> m["EM_S"], m["EM_P"], m["EM_O"], m["F1_O"], m["score"]
    (100.0, 0.0, 0.0, 80.0, 40.0)
    """
    if len(predictions) != len(references) or not references:
        raise ValueError(f"need as many predictions as references (>0), got "
                         f"{len(predictions)} and {len(references)}")
    m = {f"{a}_{b}": 0.0 for a in ("EM", "F1") for b in ("All", "S", "P", "O")}
    for pred, ref in zip(predictions, references):
        ps, pp, po = map(normalize, pred)
        rs, rp, ro = map(normalize, ref)
        m["EM_S"] += ps == rs
        m["EM_P"] += pp == rp
        m["EM_O"] += po == ro
        m["EM_All"] += (ps, pp, po) == (rs, rp, ro)
        m["F1_S"] += f1_sim(ps, rs)
        m["F1_P"] += f1_sim(pp, rp)
        m["F1_O"] += f1_sim(po, ro)
        m["F1_All"] += f1_sim(ps + pp + po, rs + rp + ro)
    m = {k: 100.0 * v / len(references) for k, v in m.items()}
    m["score"] = 0.5 * m["EM_O"] + 0.5 * m["F1_O"]
    return m


# ------------------------------------------------------------------------- data
def subject_split(s):
    """``'龙晶（游戏）' -> ('龙晶', '游戏')``; ``('s', '')`` without a disambiguation."""
    if s.endswith("）") and "（" in s:
        i = s.index("（")
        return s[:i], s[i + 1 : -1]
    return s, ""


def split_answer(answer, where):
    parts = answer.split(" ||| ")
    if len(parts) != 3:
        raise ValueError(f"{where}: answer must be 'S ||| P ||| O', got {answer!r}")
    return tuple(parts)


def read_questions(path, limit=None):
    """``[(id, question, (S, P, O) or None)]`` from a KgCLUE json-lines file."""
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                qid, question = d["id"], d["question"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{lineno}: not a KgCLUE record ({e!r}): {line[:80]!r}") from None
            answer = d.get("answer")
            out.append((qid, question, None if answer is None else split_answer(answer, f"{path}:{lineno}")))
            if limit is not None and len(out) >= limit:
                break
    return out


class KeyEncoder:
    """Token ids of ``S [SEP] P [SEP] M [SEP]`` keys, batched through the tokenizer."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.sep = tokenizer.end_id

    def content_ids(self, texts):
        return [ids[1:-1] for ids, _ in self.tokenizer.encode_batch(list(texts))]

    def encode(self, triples):
        """Keys for ``(S, P, ...)`` tuples (the full subject with its disambiguation)."""
        subj, meaning = zip(*(subject_split(t[0]) for t in triples)) if triples else ((), ())
        sep = [self.sep]
        return [
            s + sep + p + sep + m + sep
            for s, p, m in zip(
                self.content_ids(subj), self.content_ids([t[1] for t in triples]), self.content_ids(meaning)
            )
        ]


def iter_kb(path, limit=None, skip_bad=False, stats=None):
    """Stream ``(S, P, O)`` from an ``S<TAB>P<TAB>O`` file (O whitespace-normalised)."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if limit is not None and lineno > limit:
                break
            parts = line.rstrip("\r\n").split("\t")
            if len(parts) != 3 or not parts[0] or not parts[1]:
                if skip_bad:
                    if stats is not None:
                        stats["bad_lines"] = stats.get("bad_lines", 0) + 1
                    continue
                raise ValueError(f"{path}:{lineno}: expected 'S<TAB>P<TAB>O', got {line[:80]!r} "
                                 "(use --skip-bad-kb-lines to skip such lines)")
            yield parts[0], parts[1], " ".join(parts[2].split())


def rss_mb():
    """Resident memory of this process in MB (from /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def peak_rss_mb():
    """Peak resident memory of this process so far, in MB (``ru_maxrss``)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_kb_trie(path, key_encoder, max_key_len, limit=None, skip_bad=False, chunk=20000, log=print):
    """Stream the knowledge base into a Trie: key ``S [SEP] P [SEP] M [SEP]`` ->
    value ``'S<TAB>P<TAB>O'`` (the original strings, so answers are exact KB text).

    Returns ``(trie, stats)``; keys longer than ``max_key_len`` tokens (which the
    decoder could never finish) are skipped and counted.
    """
    from tqdm import tqdm

    from kerasnlp_plus.generation import Trie

    stats = {"triples": 0, "too_long": 0}
    rss0, start = rss_mb(), time.perf_counter()
    trie = Trie()
    it = iter_kb(path, limit, skip_bad, stats)
    with tqdm(desc=f"trie over {os.path.basename(path)}", unit=" triples", mininterval=2) as bar:
        while True:
            triples = list(itertools.islice(it, chunk))
            if not triples:
                break
            for key, (s, p, o) in zip(key_encoder.encode(triples), triples):
                if len(key) > max_key_len:
                    stats["too_long"] += 1
                    continue
                trie.add(key, f"{s}\t{p}\t{o}")
            stats["triples"] += len(triples)
            bar.update(len(triples))
    stats["add_seconds"] = time.perf_counter() - start
    trie.compile()
    stats["total_seconds"] = time.perf_counter() - start
    stats["compile_seconds"] = stats["total_seconds"] - stats["add_seconds"]
    stats["keys"] = len(trie)
    stats["trie_bytes"] = trie.memory_usage()["total"]
    stats["rss_growth_mb"] = rss_mb() - rss0
    stats["peak_rss_mb"] = peak_rss_mb()
    log(f"trie: {stats['triples']:,} triples -> {stats['keys']:,} keys in {stats['total_seconds']:.1f} s "
        f"(tokenize+add {stats['add_seconds']:.1f} s, compile {stats['compile_seconds']:.1f} s); "
        f"{stats['trie_bytes'] / 2**20:.1f} MiB compiled, process RSS +{stats['rss_growth_mb']:.0f} MB"
        + (f"; {stats['too_long']} keys over {max_key_len} tokens skipped" if stats["too_long"] else "")
        + (f"; {stats['bad_lines']} malformed lines skipped" if stats.get("bad_lines") else ""))
    return trie, stats
