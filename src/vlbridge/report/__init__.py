"""Every bridge side by side in one report (``vlbridge report``; docs/report.md).

Each registered preset and a list of notable connector -> injection pairs are trained between the same frozen LM
and encoder on the same Shapes data for the same steps, then measured: trainable parameters, LM FLOPs per sample
(analytic and counted by torch), train-step time, 1-token latency, generation tokens/s, peak memory, and accuracy
at equal steps (short answers, multiple choice by likelihood, caption CIDEr-D, each with its standard error).

- :mod:`~vlbridge.report.bridges`: which bridges, trained with which settings;
- :mod:`~vlbridge.report.settings`: the report's options, each bridge's recipe, the signature of a stored result;
- :mod:`~vlbridge.report.accuracy`, :mod:`~vlbridge.report.costs`, :mod:`~vlbridge.report.memory`: the measures;
- :mod:`~vlbridge.report.runner`: training and measuring each bridge, storing and reusing results;
- :mod:`~vlbridge.report.render`, :mod:`~vlbridge.report.plots`: report.json, report.md, report.html, the PNGs.

Entry points: :func:`vlbridge.report.runner.run_report` with :class:`vlbridge.report.settings.ReportSettings`. (Nothing
is imported here, so the command line reads the defaults without loading the models' code.)
"""
