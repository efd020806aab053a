"""The leaderboard: a static site and LEADERBOARD.md built from the committed condition tables only.

    harness leaderboard [--results-dir results] [--out leaderboard]

`build.build_leaderboard` is the entry point. Modules: `load` (tables, exclusions, the valid records' provenance),
`columns` (what each column means), `board` (one table per suite, protocol version and suite config; numbers and
ranks from `harness.results.summary`), `views` (what a template shows of a number, a row, a board), `render` (the
jinja2 pages, the runs pages, the records copied into the site), `tuning` (a tuning log as a table and a Pareto
plot), `downloads` (CSV and JSON of every table), `plots` (SVG at build time), `markdown` (LEADERBOARD.md),
`plugin_docs` (what a plugin says of itself, read from its source), `browser` (chromium for tests and
screenshots). Nothing here imports torch or re-runs anything.
"""
