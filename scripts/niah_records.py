"""The records `headscope niah` and `detect` write (tests.jsonl, one JSON object a test), as the scripts
beside this one read them: gzipped (.gz) or not, blank lines skipped."""
import gzip
import json


def records(path):
    """The tests of one records file, as a list of dicts."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        return [json.loads(line) for line in f if line.strip()]
