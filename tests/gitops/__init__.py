"""Tests of the GitHub Action, the example workflows, the GitLab template and their scripts."""
