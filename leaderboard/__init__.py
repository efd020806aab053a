"""The leaderboard: a static site and LEADERBOARD.md built from the committed condition tables only.

    harness leaderboard [--results-dir results] [--out leaderboard]

`build.build_leaderboard` is the entry point. Modules: `load` (tables and exclusions), `columns` (what each
column means), `board` (one table per suite, protocol version and suite config), `plots` (SVG at build
time), `render` (jinja2 pages and Markdown). Nothing here imports torch or re-runs anything.
"""
