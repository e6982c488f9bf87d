"""Side-by-side benchmarks against the tools users would pick instead (`make bench-peers`).

Each peer module (`opentofu`, `dvc`, `serving`) installs or builds its peer into
``.tools/peers/<name>`` (gitignored: nothing of theirs is committed) and runs mlform and
the peer on the same work in the same run, interleaved, at least five repetitions,
printing one JSON line per figure with both values and the ratio (`_common.compare`).
"""
