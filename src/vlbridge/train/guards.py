"""Guards that keep one bad record or one bad step from silently ruining (or silently killing) a run.

- :class:`BadRecords`: under ``data.on_bad_record=skip`` a record that cannot be read, tokenized or
  whose image cannot be decoded is left out where it is met (reading, encoding images, a batch) and
  remembered; the run reports how many and which at the end. Under ``raise`` the first one stops the
  run with an error naming it. A record is identified by the :class:`DataError` that names it.
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


class BadRecords:
    """The records left out of a run, each once: ``{"record", "stage", "message"}`` in order met."""

    def __init__(self, policy: str):
        if policy not in BAD_RECORD_POLICIES:
            raise ConfigError(f"data.on_bad_record={policy!r}; valid: {list(BAD_RECORD_POLICIES)}")
        self.policy = policy
        self.entries: list[dict] = []
        self._seen: set[str] = set()

    def add(self, record: str, stage: str, message: str) -> None:
        if record not in self._seen:
            self._seen.add(record)
            self.entries.append({"record": record, "stage": stage, "message": message})

    def add_skipped_on_read(self, split: str, skipped) -> None:
        """Records the LLaVA reader left out (:class:`vlbridge.data.llava_json.SkippedRecord`)."""
        for s in skipped:
            self.add(s.id if s.id is not None else f"{split}#{s.index}", f"read {split}", s.message)

    def keep_going(self, fn: Callable[[list[Sample]], object], samples: Sequence[Sample], stage: str):
        """``fn(samples)``, leaving out (under ``skip``) each record a :class:`DataError` names, until it
        succeeds. Returns ``(result, samples kept)``; ``(None, [])`` when every sample was bad.

        When an error does not name one of ``samples`` (a lower layer that only knows an image path),
        each sample is tried alone to find the culprit(s)."""
        samples = list(samples)
        while samples:
            try:
                return fn(samples), samples
            except DataError as error:
                if self.policy == "raise":
                    raise
                bad = {id(s): str(error) for s in samples if s.id == error.record}
                if not bad:
                    bad = {id(s): message for s in samples if (message := self._fails(fn, s)) is not None}
                    if not bad:
                        raise  # no single record reproduces it: not a bad record
                for s in samples:
                    if id(s) in bad:
                        self.add(s.id, stage, bad[id(s)])
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
            self.add(entry["record"], entry["stage"], entry["message"])

    def summary(self) -> str:
        return self.summarise(self.entries)

    @staticmethod
    def summarise(entries: list[dict], shown: int = 20) -> str:
        ids = [e["record"] for e in entries]
        more = f" and {len(ids) - shown} more" if len(ids) > shown else ""
        return f"skipped {len(ids)} bad record(s) (data.on_bad_record=skip): {ids[:shown]}{more}"


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
