"""Readers and writers for standard dataset formats (COCO captions, Karpathy splits, VQAv2, ScienceQA)
and the official result formats. Readers return :class:`vlbridge.data.sample.Sample` objects; the
LLaVA conversation JSON reader lives in :mod:`vlbridge.data.llava_json`."""
