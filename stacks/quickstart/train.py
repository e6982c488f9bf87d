"""Training entrypoint of the quickstart pipeline.

Its content is part of the pipeline's run fingerprint: editing this file makes
the next plan re-run the pipeline.  (The `local` provider runs it for real.)
"""
