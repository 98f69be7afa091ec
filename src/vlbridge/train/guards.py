"""Guards that keep one bad record or one bad step from silently ruining (or silently killing) a run.

- :class:`BadRecords`: under ``data.on_bad_record=skip`` a record that cannot be read, tokenized or
  whose image cannot be decoded is left out where it is met (reading, encoding images, a batch) and
  remembered; the run reports how many and which at the end (file, position, id, stage, reason). Under
  ``raise`` the first one stops the run with an error naming it. A record is the one a :class:`DataError`
  names, and it is told apart from others by its file and position, never by its id alone: records may
  share an id, and a good one must not be left out with a bad one.
- :func:`nonfinite_message` / :class:`NonFiniteError`: a NaN or infinite loss or gradient norm stops
  the run (``train.on_nonfinite=stop``) or skips that update (``skip``); either way the message names
  the step and the samples of the batch.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

from vlbridge.data.sample import Sample
from vlbridge.errors import ConfigError, DataError, VLBridgeError

BAD_RECORD_POLICIES = ("raise", "skip")
NONFINITE_POLICIES = ("stop", "skip")


class NonFiniteError(VLBridgeError):
    """A loss or gradient norm was NaN or infinite and ``train.on_nonfinite`` is ``stop``."""


def record_key(file: str, position: int | str | None, record_id: str | None) -> str:
    """What tells one record from every other: its file and position (``train.json#3``). Records that share an
    id stay apart; a sample not read from a file (no position) falls back to its id."""
    return f"{file}#{position}" if position is not None else f"{file}:{record_id}"


class BadRecords:
    """The records left out of a run, each once, in order met, as
    ``{"record": key, "file", "position", "id", "stage", "reason"}`` (``record`` is :func:`record_key`)."""

    def __init__(self, policy: str):
        if policy not in BAD_RECORD_POLICIES:
            raise ConfigError(f"data.on_bad_record={policy!r}; valid: {list(BAD_RECORD_POLICIES)}")
        self.policy = policy
        self.entries: list[dict] = []
        self._seen: set[str] = set()

    def add(self, *, file: str, position: int | str | None, id: str | None, stage: str, reason: str) -> None:
        key = record_key(file, position, id)
        if key not in self._seen:
            self._seen.add(key)
            self.entries.append({"record": key, "file": file, "position": position, "id": id, "stage": stage,
                                 "reason": reason})

    def add_sample(self, sample: Sample, stage: str, reason: str) -> None:
        self.add(file=sample.source, position=sample.position, id=sample.id, stage=stage, reason=reason)

    def add_skipped_on_read(self, split: str, skipped) -> None:
        """Records a reader left out (:class:`vlbridge.data.llava_json.SkippedRecord`)."""
        for s in skipped:
            self.add(file=s.file or split, position=s.where, id=s.id, stage=f"read {split}", reason=s.message)

    def keep_going(self, fn: Callable[[list[Sample]], object], samples: Sequence[Sample], stage: str):
        """``fn(samples)``, leaving out (under ``skip``) each record a :class:`DataError` names, until it
        succeeds. Returns ``(result, samples kept)``; ``(None, [])`` when every sample was bad.

        An error names a record by its id (and file). When no sample, or more than one, fits that name (a lower
        layer that only knows an image path; records sharing an id), each candidate is tried alone to find the
        culprit(s): only records that fail themselves are left out."""
        samples = list(samples)
        while samples:
            try:
                return fn(samples), samples
            except DataError as error:
                if self.policy == "raise":
                    raise
                named = [s for s in samples if s.id == error.record
                         and (error.file is None or not s.source or str(error.file) == s.source)]
                if len(named) == 1:
                    bad = {id(named[0]): str(error)}
                else:
                    bad = {id(s): message for s in (named or samples) if (message := self._fails(fn, s)) is not None}
                    if not bad:
                        raise  # no single record reproduces it: not a bad record
                for s in samples:
                    if id(s) in bad:
                        self.add_sample(s, stage, bad[id(s)])
                samples = [s for s in samples if id(s) not in bad]
        return None, []

    @staticmethod
    def _fails(fn, sample: Sample) -> str | None:
        try:
            fn([sample])
        except DataError as error:
            return str(error)
        return None

    def state_dict(self) -> list[dict]:
        return list(self.entries)

    def load_state_dict(self, entries: list[dict]) -> None:
        for entry in entries:
            if "reason" in entry:
                self.add(file=entry["file"], position=entry["position"], id=entry["id"], stage=entry["stage"],
                         reason=entry["reason"])
            else:  # a checkpoint written before records were told apart by file and position: keyed by id
                self._seen.add(entry["record"])
                self.entries.append({"record": entry["record"], "file": None, "position": None, "id": entry["record"],
                                     "stage": entry["stage"], "reason": entry["message"]})

    def summary(self) -> str:
        return self.summarise(self.entries)

    @staticmethod
    def summarise(entries: list[dict], shown: int = 20) -> str:
        """How many records were left out and, one line each (the first ``shown``), which and why."""
        lines = [f"skipped {len(entries)} bad record(s) (data.on_bad_record=skip):"]
        for e in entries[:shown]:
            lines.append(f"  {e['file']} position {e['position']}, id {e['id']!r} ({e['stage']}): {e['reason']}")
        if len(entries) > shown:
            lines.append(f"  and {len(entries) - shown} more")
        return "\n".join(lines)


def is_finite(*values: float) -> bool:
    return all(math.isfinite(v) for v in values)


def nonfinite_message(step: int, loss: float, grad_norm: float, offenders: list[dict], step_samples: list[str],
                      policy: str) -> str:
    """Names the step and the batch. ``offenders``: micro-batches whose own loss was not finite, as
    ``{"process", "micro_batch", "loss", "samples"}``; when the loss was finite everywhere (an infinite
    gradient), every sample of the step is listed."""
    what = "loss" if not math.isfinite(loss) else "gradient norm"
    lines = [f"step {step}: non-finite {what} (loss {loss}, gradient norm {grad_norm})"]
    for o in offenders:
        lines.append(f"  micro-batch {o['micro_batch']} on process {o['process']} has loss {o['loss']}; "
                     f"samples {o['samples']}")
    if not offenders:
        lines.append(f"  samples of this step: {step_samples}")
    lines.append("  the update was skipped (train.on_nonfinite=skip)" if policy == "skip" else
                 "  stopped (train.on_nonfinite=stop); resume from the last checkpoint, or set "
                 "train.on_nonfinite=skip to skip such updates")
    return "\n".join(lines)
