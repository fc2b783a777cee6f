"""The `report` stage's library: load every stage's metrics, then pure functions to tables, figures and text.

`load` reads the artifacts (tolerating missing ones, which the tables mark with "—" and a footnote), `tables`,
`protocol` and `summary` turn loaded dicts into markdown, `figures` into seaborn PNGs, `anchors` holds the
paper-scale numbers shown beside (never mixed into) the study's own.
"""
