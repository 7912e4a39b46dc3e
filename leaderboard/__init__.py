"""The leaderboard: what a result file is, which files are accepted, and how they are ranked and shown.

* :mod:`~protobench.leaderboard.schema`: the result-file JSON Schema (``result.schema.json``) and its version;
* :mod:`~protobench.leaderboard.validate`: schema checks, then every figure recomputed from the evidence;
* :mod:`~protobench.leaderboard.identity`: a method configuration, the key of a leaderboard row;
* :mod:`~protobench.leaderboard.compare`: paired comparison of two results on identical episodes;
* :mod:`~protobench.leaderboard.submit`: accepting validated files into a results folder;
* :mod:`~protobench.leaderboard.ranking`: per-benchmark ranks (Meta-Dataset tie rule), average rank, Markdown;
* :mod:`~protobench.leaderboard.page`: the self-contained static HTML page.

The accepted files themselves live in a leaderboard repository's ``leaderboard/results/`` folder,
not in the installed package.
"""
